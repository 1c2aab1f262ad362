"""The stock Triton / KServe v2 Python gRPC client (tritonclient.grpc, from PyPI) on its default
settings against `cordon proxy --grpc-listen`: run by crates/cordon/tests/dev_up.rs with the
proxy's gRPC address and the runtime's. Answers are compared with the same request as JSON to the
runtime's plaintext development route. Every check that fails raises; the last line printed is a
JSON summary.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from reference import demo_batch, fraud_rows, json_request, plain_json, same_outputs

grpc_url, reference_url, demo_input_path, fraud_input_path = sys.argv[1:5]
client = grpcclient.InferenceServerClient(url=grpc_url)

summary = {}

assert client.is_server_live() and client.is_server_ready()
meta = client.get_server_metadata(as_json=True)
assert meta["name"] == "cordon-runtime", meta
assert client.is_model_ready("breast-cancer-lr")
m = client.get_model_metadata("breast-cancer-lr", as_json=True)
assert m["inputs"][0]["datatype"] == "FP32", m
assert [int(d) for d in m["inputs"][0]["shape"]] == [-1, 30], m
summary["metadata"] = m["name"]

# Breast cancer, a batch: raw tensors (the client's default) in, raw out.
batch = demo_batch(demo_input_path)
reference = plain_json(reference_url, "breast-cancer-lr", json_request("input", batch))
inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
inp.set_data_from_numpy(batch)
result = client.infer("breast-cancer-lr", [inp])
same_outputs(result.as_numpy, reference, "lr")
summary["lr_labels"] = result.as_numpy("label").tolist()

# Only the requested output comes back.
result = client.infer("breast-cancer-lr", [inp],
                      outputs=[grpcclient.InferRequestedOutput("label")])
assert result.as_numpy("probabilities") is None
assert result.as_numpy("label").tolist() == reference["label"]["data"]

# The fraud GBDT with missing values as np.nan (NaN bits in the raw tensor).
data, x = fraud_rows(fraud_input_path)
reference = plain_json(reference_url, "fraud-gbdt", json_request("input", x, data))
inp = grpcclient.InferInput("input", list(x.shape), "FP32")
inp.set_data_from_numpy(x)
result = client.infer("fraud-gbdt", [inp])
same_outputs(result.as_numpy, reference, "fraud")
summary["fraud_outputs"] = sorted(reference)

# Errors: a wrong shape (INVALID_ARGUMENT) and an unknown model (NOT_FOUND), with the message.
try:
    bad = grpcclient.InferInput("input", [1, 29], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 29), dtype=np.float32))
    client.infer("breast-cancer-lr", [bad])
    raise AssertionError("a wrong shape was accepted")
except InferenceServerException as e:
    assert "INVALID_ARGUMENT" in str(e.status()) and "shape" in e.message(), str(e)
    summary["error"] = e.message()
try:
    client.get_model_metadata("no-such-model")
    raise AssertionError("an unknown model was found")
except InferenceServerException as e:
    assert "NOT_FOUND" in str(e.status()), str(e)

print(json.dumps(summary))
