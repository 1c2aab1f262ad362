"""Every KServe v2 datatype, BYTES included, from the stock Triton Python clients (tritonclient from
PyPI) through `cordon proxy` to the Identity model of every datatype (models/oip/datatypes.onnx):
HTTP with binary tensors (the default), HTTP with JSON tensors, and gRPC (raw contents, the
default). Run by crates/cordon/tests/proxy.rs with the proxy's HTTP and gRPC addresses. Every
check that fails raises; the last line printed is a JSON summary.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

http_url, grpc_url = sys.argv[1:3]

CASES = [
    ("bool", "BOOL", np.array([[True, False], [False, True]])),
    ("int8", "INT8", np.array([[-128, 127], [0, 5]], dtype=np.int8)),
    ("int16", "INT16", np.array([[-32768, 32767], [-1, 2]], dtype=np.int16)),
    ("int32", "INT32", np.array([[-(2**31), 2**31 - 1], [0, 7]], dtype=np.int32)),
    ("int64", "INT64", np.array([[-(2**63), 2**63 - 1], [0, -9]], dtype=np.int64)),
    ("uint8", "UINT8", np.array([[0, 255], [1, 2]], dtype=np.uint8)),
    ("uint16", "UINT16", np.array([[0, 65535], [3, 4]], dtype=np.uint16)),
    ("uint32", "UINT32", np.array([[0, 2**32 - 1], [5, 6]], dtype=np.uint32)),
    ("uint64", "UINT64", np.array([[0, 2**64 - 1], [7, 8]], dtype=np.uint64)),
    ("fp16", "FP16", np.array([[0.5, -2.0], [65504.0, 0.375]], dtype=np.float16)),
    ("fp32", "FP32", np.array([[1.5, -0.25], [np.nan, np.inf]], dtype=np.float32)),
    ("fp64", "FP64", np.array([[0.1, 1e300], [-3.5, 0.0]], dtype=np.float64)),
    ("bytes", "BYTES", np.array([[b"a", "\u00fc".encode()], [b"", b"x y"]], dtype=np.object_)),
]


def same(got, want, name):
    if want.dtype == np.object_:
        got = [g if isinstance(g, bytes) else str(g).encode() for g in got.ravel()]
        assert got == list(want.ravel()), (name, got)
    else:
        assert got.dtype == want.dtype, (name, got.dtype)
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert list(got.shape if hasattr(got, "shape") else want.shape) == list(want.shape), name


def run(module, client, binary=None):
    inputs, outputs = [], []
    for name, datatype, array in CASES:
        i = module.InferInput(f"in_{name}", list(array.shape), datatype)
        if binary is None:
            i.set_data_from_numpy(array)
            outputs.append(module.InferRequestedOutput(f"out_{name}"))
        else:
            i.set_data_from_numpy(array, binary_data=binary)
            outputs.append(module.InferRequestedOutput(f"out_{name}", binary_data=binary))
        inputs.append(i)
    result = client.infer("dt", inputs, outputs=outputs)
    checked = []
    for name, datatype, array in CASES:
        got = result.as_numpy(f"out_{name}")
        assert got is not None, name
        same(got, array, name)
        out = result.get_output(f"out_{name}")
        found = out["datatype"] if isinstance(out, dict) else out.datatype
        assert found == datatype, (name, found)
        checked.append(name)
    return checked


summary = {}
http = httpclient.InferenceServerClient(url=http_url)
summary["http_binary"] = run(httpclient, http, binary=True)
summary["http_json"] = run(httpclient, http, binary=False)
summary["grpc"] = run(grpcclient, grpcclient.InferenceServerClient(url=grpc_url))
print(json.dumps(summary))
