#!/usr/bin/env python3
"""Build the training test data and reference numbers in testdata/training/.

Run from the repository root:

    python3 scripts/make_training_data.py

From scikit-learn's copy of the UCI Breast Cancer Wisconsin (Diagnostic)
dataset (label 0 = malignant, 1 = benign, as sklearn) it writes:

- breast_cancer_train.csv / breast_cancer_test.csv: a fixed stratified split
  (test_size 0.25). Header: the 30 feature names in snake_case, then `label`.
- hospital_{a,b,c}.csv: a disjoint, skewed partition of the TRAIN rows among
  three data owners: hospital_a is a referral oncology centre (mostly
  malignant), hospital_b a screening clinic (mostly benign), hospital_c a small
  mixed practice. hospital_c also as hospital_c.parquet (pyarrow defaults:
  snappy) when pyarrow is installed.
- reference.json: scikit-learn's figures on the test split, for the whole
  train split and for each hospital alone: StandardScaler + LogisticRegression
  (C=1) and GradientBoostingClassifier(100, 0.1, depth 3, random_state=0).
- linear/: ONNX `LinearClassifier` conformance models for crates/cordon-trees:
  skl2onnx exports (binary breast cancer pipeline, 3-class iris) and small
  hand-built nodes covering every post transform, string labels and ONNX
  Runtime's binary one-row layout, each with an input set and ONNX Runtime's
  outputs (OIP JSON tensors, as models/trees/).

Output is deterministic: two runs give byte-identical files (the parquet file
may depend on the pyarrow version, which it records in its metadata).
"""

import os

# Single-threaded BLAS keeps training bit-reproducible run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_iris  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

try:
    import pyarrow  # noqa: E402
    import pyarrow.parquet as pq  # noqa: E402
except ImportError:  # optional: without it no parquet fixture
    pyarrow = None

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "testdata" / "training"
LINEAR = OUT / "linear"
SPLIT_SEED = 42
PARTITION_SEED = 7
TARGET_OPSET = {"": 13, "ai.onnx.ml": 3}


def snake(name):
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def write_csv(path, names, X, y):
    lines = [",".join(names + ["label"])]
    for row, label in zip(X, y):
        # repr of the float64 gives the shortest text that reads back exactly.
        lines.append(",".join(repr(float(v)) for v in row) + f",{int(label)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def figures(y_test, proba):
    return {
        "accuracy": float(accuracy_score(y_test, (proba > 0.5).astype(int))),
        "auc": float(roc_auc_score(y_test, proba)),
        "log_loss": float(log_loss(y_test, proba)),
    }


def fit_both(X, y, X_test, y_test):
    lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=10000))
    lr.fit(X, y)
    gb = GradientBoostingClassifier(n_estimators=100, learning_rate=0.1, max_depth=3,
                                    random_state=0)
    gb.fit(X, y)
    return {
        "rows": int(len(y)),
        "malignant": int((y == 0).sum()),
        "benign": int((y == 1).sum()),
        "logistic_regression": figures(y_test, lr.predict_proba(X_test)[:, 1]),
        "gbdt": figures(y_test, gb.predict_proba(X_test)[:, 1]),
    }


# ---------------------------------------------------------------------------
# LinearClassifier conformance fixtures
# ---------------------------------------------------------------------------
def json_values(arr):
    arr = np.asarray(arr)
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f":
        return [None if math.isnan(v) else float(v) for v in flat.astype(np.float64)]
    if arr.dtype.kind in "iu":
        return [int(v) for v in flat]
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]


def oip_tensor(name, arr):
    arr = np.asarray(arr)
    if arr.dtype.kind in "OUS":
        dt = "BYTES"
    else:
        dt = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}[arr.dtype]
    return {"name": name, "shape": list(arr.shape), "datatype": dt, "data": json_values(arr)}


def save_fixture(name, model, X):
    LINEAR.mkdir(parents=True, exist_ok=True)
    # skl2onnx names the graph with a random uuid and may list a domain twice, in an order
    # that follows Python's string hashing: tidy both so the bytes are reproducible.
    seen = {}
    for o in model.opset_import:
        seen[o.domain] = max(seen.get(o.domain, 0), o.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(seen.items()))
    model.graph.name = name
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (LINEAR / f"{name}.onnx").write_bytes(data)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"input": X})
    names = [o.name for o in sess.get_outputs()]
    write_json(LINEAR / f"{name}.input.json", {"inputs": [oip_tensor("input", X)]})
    write_json(LINEAR / f"{name}.expected.json",
               {"outputs": [oip_tensor(n, o) for n, o in zip(names, outs)]})


def linear_node_model(coefs, intercepts, labels, post, n_features, multi_class=None):
    attrs = {"coefficients": [float(c) for c in coefs], "post_transform": post}
    if intercepts is not None:
        attrs["intercepts"] = [float(b) for b in intercepts]
    strings = isinstance(labels[0], str)
    attrs["classlabels_strings" if strings else "classlabels_ints"] = labels
    if multi_class is not None:
        attrs["multi_class"] = multi_class
    node = helper.make_node("LinearClassifier", ["input"], ["label", "probabilities"],
                            domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph(
        [node], "linear_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
        [helper.make_tensor_value_info("label", TensorProto.STRING if strings else TensorProto.INT64,
                                       ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", None])])
    model = helper.make_model(graph, producer_name="cordon scripts/make_training_data.py",
                              opset_imports=[helper.make_opsetid("", 13),
                                             helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def linear_fixtures(X_train, y_train, X_test):
    # skl2onnx: the reference pipeline (Scaler + LinearClassifier, 2 coefficient rows).
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=10000))
    pipe.fit(X_train, y_train)
    n = X_train.shape[1]
    onx = convert_sklearn(pipe, initial_types=[("input", FloatTensorType([None, n]))],
                          options={id(pipe[-1]): {"zipmap": False}}, target_opset=TARGET_OPSET)
    save_fixture("lc_bc_skl2onnx", onx, X_test.astype(np.float32))

    # skl2onnx: multinomial 3-class (LinearClassifier SOFTMAX, then Normalizer).
    Xi, yi = load_iris(return_X_y=True)
    iris = LogisticRegression(max_iter=10000).fit(Xi, yi)
    onx = convert_sklearn(iris, initial_types=[("input", FloatTensorType([None, 4]))],
                          options={id(iris): {"zipmap": False}}, target_opset=TARGET_OPSET)
    save_fixture("lc_iris_skl2onnx", onx, Xi.astype(np.float32))

    # Hand-built nodes: every post transform, in ONNX Runtime's binary one-row layout
    # (one coefficient row, two labels) and with three classes.
    rng = np.random.RandomState(3)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    X[0] = 0.0  # zero scores: the label tie and SOFTMAX_ZERO's zero rule
    w1 = [0.5, -0.25, 1.0, 0.125]
    w3 = [0.5, -0.25, 1.0, 0.125, -1.0, 0.0, 0.2, 0.3, 0.0, 0.75, -0.5, 0.25]
    for post in ["NONE", "LOGISTIC", "SOFTMAX", "SOFTMAX_ZERO"]:
        tag = post.lower()
        save_fixture(f"lc_binary_1row_{tag}",
                     linear_node_model(w1, [0.1], [3, 7], post, 4), X)
        save_fixture(f"lc_3class_{tag}",
                     linear_node_model(w3, [0.1, 0.0, -0.2], [0, 1, 2], post, 4), X)
    save_fixture("lc_binary_1row_strings",
                 linear_node_model(w1, [0.0], ["benign", "malignant"], "LOGISTIC", 4), X)
    save_fixture("lc_3class_strings_multi_class",
                 linear_node_model(w3, [0.0, 0.5, 0.0], ["a", "b", "c"], "SOFTMAX", 4,
                                   multi_class=1), X)
    save_fixture("lc_binary_2rows",
                 linear_node_model([-v for v in w1] + w1, [-0.1, 0.1], [0, 1], "LOGISTIC", 4), X)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    data = load_breast_cancer()
    names = [snake(n) for n in data.feature_names]
    assert len(set(names)) == len(names)
    X, y = data.data, data.target
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=SPLIT_SEED, stratify=y)
    write_csv(OUT / "breast_cancer_train.csv", names, X_train, y_train)
    write_csv(OUT / "breast_cancer_test.csv", names, X_test, y_test)

    # Skewed partition: each row's hospital drawn with class-dependent odds.
    rng = np.random.RandomState(PARTITION_SEED)
    odds = {0: [0.75, 0.12, 0.13],   # malignant: mostly the oncology centre
            1: [0.15, 0.75, 0.10]}   # benign: mostly the screening clinic
    owner = np.array([rng.choice(3, p=odds[int(label)]) for label in y_train])
    hospitals = {}
    for i, h in enumerate("abc"):
        rows = np.flatnonzero(owner == i)
        hospitals[h] = (X_train[rows], y_train[rows])
        write_csv(OUT / f"hospital_{h}.csv", names, X_train[rows], y_train[rows])
    if pyarrow is not None:
        Xc, yc = hospitals["c"]
        cols = {n: pyarrow.array(Xc[:, j]) for j, n in enumerate(names)}
        cols["label"] = pyarrow.array(yc.astype(np.int64))
        pq.write_table(pyarrow.table(cols), OUT / "hospital_c.parquet")

    reference = {
        "generated_by": "scripts/make_training_data.py",
        "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                     "skl2onnx": skl2onnx.__version__, "onnxruntime": ort.__version__,
                     "pyarrow": pyarrow.__version__ if pyarrow is not None else None},
        "split": {"test_size": 0.25, "random_state": SPLIT_SEED, "stratify": True,
                  "train_rows": int(len(y_train)), "test_rows": int(len(y_test))},
        "models": {
            "logistic_regression": "make_pipeline(StandardScaler(), LogisticRegression(C=1.0))",
            "gbdt": "GradientBoostingClassifier(n_estimators=100, learning_rate=0.1, "
                    "max_depth=3, random_state=0)",
        },
        "metrics": "on the test split; accuracy at probability > 0.5",
        "whole_train": fit_both(X_train, y_train, X_test, y_test),
        "hospitals": {f"hospital_{h}": fit_both(Xh, yh, X_test, y_test)
                      for h, (Xh, yh) in hospitals.items()},
    }
    write_json(OUT / "reference.json", reference)
    linear_fixtures(X_train, y_train, X_test)
    print(json.dumps(reference["whole_train"], indent=1))
    for h, r in reference["hospitals"].items():
        print(h, r["rows"], r["malignant"], r["benign"],
              "LR acc", round(r["logistic_regression"]["accuracy"], 4),
              "GBDT auc", round(r["gbdt"]["auc"], 4))


if __name__ == "__main__":
    main()
