"""The stock Triton / KServe v2 Python HTTP client (tritonclient.http, from PyPI) on its default
settings against `cordon proxy`: run by crates/cordon/tests/dev_up.rs with the proxy's address
and the runtime's (whose plaintext development route answers the reference requests). Every check
that fails raises; the last line printed is a JSON summary.

By default the client sends tensors with the binary tensor data extension and asks for binary
outputs; with binary_data=False it sends JSON, writing NaN as the literal `NaN`.
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from reference import demo_batch, fraud_rows, json_request, plain_json, same_outputs

url, reference_url, demo_input_path, fraud_input_path = sys.argv[1:5]
client = httpclient.InferenceServerClient(url=url)

summary = {}

# Server and model metadata, readiness, the repository index.
assert client.is_server_live() and client.is_server_ready()
meta = client.get_server_metadata()
assert "model_repository" in meta["extensions"], meta
index = client.get_model_repository_index()
names = sorted(m["name"] for m in index)
assert names == ["breast-cancer-lr", "breast-cancer-mlp", "fraud-gbdt"], index
assert all(m["state"] == "READY" for m in index), index
assert client.is_model_ready("breast-cancer-lr")
m = client.get_model_metadata("breast-cancer-lr")
assert m["inputs"][0]["datatype"] == "FP32", m
summary["models"] = names

# Breast cancer, a batch of the demo row repeated: binary in and out (the defaults), then JSON.
batch = demo_batch(demo_input_path)
reference = plain_json(reference_url, "breast-cancer-lr", json_request("input", batch))
for binary in (True, False):
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    outs = [httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("breast-cancer-lr", [inp], outputs=outs)
    same_outputs(result.as_numpy, reference, f"lr binary={binary}")
    summary[f"lr_binary_{binary}"] = result.as_numpy("label").tolist()

# The fraud GBDT with missing values as np.nan: binary (NaN bits) and JSON (the `NaN` literal),
# against the JSON request with null.
data, x = fraud_rows(fraud_input_path)
reference = plain_json(reference_url, "fraud-gbdt", json_request("input", x, data))
for binary in (True, False):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("fraud-gbdt", [inp])
    same_outputs(result.as_numpy, reference, f"fraud binary={binary}")
    summary[f"fraud_binary_{binary}"] = sorted(reference)

# An error answer reaches the client as an exception with the runtime's message.
try:
    inp = httpclient.InferInput("input", [1, 29], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 29), dtype=np.float32))
    client.infer("breast-cancer-lr", [inp])
    raise AssertionError("a wrong shape was accepted")
except InferenceServerException as e:
    assert "shape" in str(e), str(e)
    summary["error"] = str(e)

print(json.dumps(summary))
