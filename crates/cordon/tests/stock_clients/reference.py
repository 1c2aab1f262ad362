"""What both stock-client checks compare with: the same request as plain JSON (urllib, no client
library) to the runtime's plaintext development route, and the shared inputs."""

import json
import math
import urllib.request

import numpy as np


def plain_json(http_url, model, body):
    """The outputs of `body` (a JSON infer request) by name: the reference answer."""
    req = urllib.request.Request(
        f"http://{http_url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return {o["name"]: o for o in json.load(r)["outputs"]}


def demo_batch(demo_input_path, rows=4):
    """The demo row of the breast-cancer models, repeated: a float32 array [rows, 30]."""
    demo = json.load(open(demo_input_path))
    row = np.array(demo["inputs"][0]["data"], dtype=np.float32).reshape(1, 30)
    return np.repeat(row, rows, axis=0)


def fraud_rows(fraud_input_path, rows=8):
    """The first rows of the fraud GBDT's input, with missing values: as JSON (null) and as a
    float32 array (np.nan)."""
    fraud = json.load(open(fraud_input_path))
    data = fraud["inputs"][0]["data"][: rows * 20]
    assert any(v is None for v in data), "no missing value to send"
    x = np.array([math.nan if v is None else v for v in data], dtype=np.float32)
    return data, x.reshape(rows, 20)


def json_request(name, array, data=None):
    """An FP32 JSON infer request for `array` (or `data`, its JSON form)."""
    return {"inputs": [{"name": name, "shape": list(array.shape), "datatype": "FP32",
                        "data": data if data is not None else array.flatten().tolist()}]}


def same_outputs(got, reference, where):
    """`got(name)` (a numpy array) equals each reference output."""
    for name, ref in reference.items():
        value = got(name)
        assert value is not None, (where, name)
        if ref["datatype"] in ("FP32", "FP64"):
            assert np.allclose(value.flatten(), ref["data"], atol=1e-6), (where, name)
        else:
            assert value.flatten().tolist() == ref["data"], (where, name, value)
