"""The stock Triton / KServe v2 Python HTTP client (tritonclient.http, from PyPI) on its default
settings against `cordon proxy`: run by crates/cordon/tests/stock_clients.rs with the proxy's
address. Every check that fails raises; the last line printed is a JSON summary.

By default the client sends tensors with the binary tensor data extension and asks for binary
outputs; with binary_data=False it sends JSON, writing NaN as the literal `NaN`.
"""

import json
import math
import sys
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, demo_input_path, fraud_input_path = sys.argv[1], sys.argv[2], sys.argv[3]
client = httpclient.InferenceServerClient(url=url)


def plain_json(model, body):
    """The same request as JSON through the proxy, with urllib: the reference answer."""
    req = urllib.request.Request(
        f"http://{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return {o["name"]: o for o in json.load(r)["outputs"]}


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
demo = json.load(open(demo_input_path))
row = np.array(demo["inputs"][0]["data"], dtype=np.float32).reshape(1, 30)
batch = np.repeat(row, 4, axis=0)
reference = plain_json(
    "breast-cancer-lr",
    {"inputs": [{"name": "input", "shape": [4, 30], "datatype": "FP32",
                 "data": batch.flatten().tolist()}]},
)
for binary in (True, False):
    inp = httpclient.InferInput("input", list(batch.shape), "FP32")
    inp.set_data_from_numpy(batch, binary_data=binary)
    outs = [httpclient.InferRequestedOutput("label", binary_data=binary),
            httpclient.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("breast-cancer-lr", [inp], outputs=outs)
    labels = result.as_numpy("label")
    probs = result.as_numpy("probabilities")
    assert labels.tolist() == reference["label"]["data"], (binary, labels)
    assert np.allclose(probs.flatten(), reference["probabilities"]["data"], atol=1e-6), binary
    summary[f"lr_binary_{binary}"] = labels.tolist()

# The fraud GBDT with missing values as np.nan: binary (NaN bits) and JSON (the `NaN` literal),
# against the JSON request with null.
fraud = json.load(open(fraud_input_path))
rows = fraud["inputs"][0]["data"][: 8 * 20]
assert any(v is None for v in rows)
x = np.array([math.nan if v is None else v for v in rows], dtype=np.float32).reshape(8, 20)
reference = plain_json(
    "fraud-gbdt",
    {"inputs": [{"name": "input", "shape": [8, 20], "datatype": "FP32", "data": rows}]},
)
for binary in (True, False):
    inp = httpclient.InferInput("input", [8, 20], "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("fraud-gbdt", [inp])
    for name, ref in reference.items():
        got = result.as_numpy(name)
        assert got is not None, (binary, name, result.get_response())
        if ref["datatype"] in ("FP32", "FP64"):
            assert np.allclose(got.flatten(), ref["data"], atol=1e-6), (binary, name)
        else:
            assert got.flatten().tolist() == ref["data"], (binary, name, got)
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
