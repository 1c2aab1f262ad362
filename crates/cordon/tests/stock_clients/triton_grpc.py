"""The stock Triton / KServe v2 Python gRPC client (tritonclient.grpc, from PyPI) on its default
settings against `cordon proxy --grpc-listen`: run by crates/cordon/tests/dev_up.rs with the
proxy's gRPC and HTTP addresses. Answers are compared with the same request as JSON over the
proxy's HTTP surface. Every check that fails raises; the last line printed is a JSON summary.
"""

import json
import math
import sys
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

grpc_url, http_url, demo_input_path, fraud_input_path = sys.argv[1:5]
client = grpcclient.InferenceServerClient(url=grpc_url)


def plain_json(model, body):
    """The same request as JSON through the proxy's HTTP surface: the reference answer."""
    req = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return {o["name"]: o for o in json.load(r)["outputs"]}


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
demo = json.load(open(demo_input_path))
row = np.array(demo["inputs"][0]["data"], dtype=np.float32).reshape(1, 30)
batch = np.repeat(row, 4, axis=0)
reference = plain_json(
    "breast-cancer-lr",
    {"inputs": [{"name": "input", "shape": [4, 30], "datatype": "FP32",
                 "data": batch.flatten().tolist()}]},
)
inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
inp.set_data_from_numpy(batch)
result = client.infer("breast-cancer-lr", [inp])
assert result.as_numpy("label").tolist() == reference["label"]["data"]
assert np.allclose(result.as_numpy("probabilities").flatten(),
                   reference["probabilities"]["data"], atol=1e-6)
summary["lr_labels"] = result.as_numpy("label").tolist()

# Only the requested output comes back.
result = client.infer("breast-cancer-lr", [inp],
                      outputs=[grpcclient.InferRequestedOutput("label")])
assert result.as_numpy("probabilities") is None
assert result.as_numpy("label").tolist() == reference["label"]["data"]

# The fraud GBDT with missing values as np.nan (NaN bits in the raw tensor).
fraud = json.load(open(fraud_input_path))
rows = fraud["inputs"][0]["data"][: 8 * 20]
x = np.array([math.nan if v is None else v for v in rows], dtype=np.float32).reshape(8, 20)
reference = plain_json(
    "fraud-gbdt",
    {"inputs": [{"name": "input", "shape": [8, 20], "datatype": "FP32", "data": rows}]},
)
inp = grpcclient.InferInput("input", [8, 20], "FP32")
inp.set_data_from_numpy(x)
result = client.infer("fraud-gbdt", [inp])
for name, ref in reference.items():
    got = result.as_numpy(name)
    if ref["datatype"] in ("FP32", "FP64"):
        assert np.allclose(got.flatten(), ref["data"], atol=1e-6), name
    else:
        assert got.flatten().tolist() == ref["data"], (name, got)
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
