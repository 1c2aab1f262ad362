#!/usr/bin/env python3
"""Build models/oip/datatypes.onnx: one Identity per Open Inference Protocol datatype.

Run from the repository root:

    python3 scripts/make_datatype_model.py

The model has one input per tensor type the runtime maps to an OIP datatype
(BOOL, INT8..INT64, UINT8..UINT64, FP16, FP32, FP64, BYTES), each of shape
[-1, 2], and one output per input (`out_<type>`) equal to it. The runtime's
conformance test (crates/cordon-runtime/tests/serving.rs) sends every datatype
through the encrypted channel and checks that each comes back unchanged, and
that values outside a datatype's range are refused.

Deterministic: the same onnx version writes the same bytes (no random
initializers, fixed producer fields).
"""

from pathlib import Path

import onnx
from onnx import TensorProto, helper

TYPES = [
    ("bool", TensorProto.BOOL),
    ("int8", TensorProto.INT8),
    ("int16", TensorProto.INT16),
    ("int32", TensorProto.INT32),
    ("int64", TensorProto.INT64),
    ("uint8", TensorProto.UINT8),
    ("uint16", TensorProto.UINT16),
    ("uint32", TensorProto.UINT32),
    ("uint64", TensorProto.UINT64),
    ("fp16", TensorProto.FLOAT16),
    ("fp32", TensorProto.FLOAT),
    ("fp64", TensorProto.DOUBLE),
    ("bytes", TensorProto.STRING),
]


def main():
    inputs, outputs, nodes = [], [], []
    for name, elem in TYPES:
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, ["N", 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, ["N", 2]))
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"], name=f"id_{name}"))
    graph = helper.make_graph(nodes, "oip_datatypes", inputs, outputs)
    model = helper.make_model(
        graph,
        producer_name="cordon scripts/make_datatype_model.py",
        producer_version="1",
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    out = Path("models/oip/datatypes.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(model.SerializeToString())
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
