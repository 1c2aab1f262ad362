#!/usr/bin/env python3
"""Build the two demo ONNX models shipped in models/.

Run from the repository root:

    python3 scripts/make_models.py

It trains a logistic regression and a small MLP on scikit-learn's copy of the
UCI Breast Cancer Wisconsin (Diagnostic) dataset and exports them as ONNX
graphs that use only core ``ai.onnx`` operators (opset 13, IR version 8), so
engines without the ``ai.onnx.ml`` domain (e.g. tract-onnx) can run them. The
graphs are built by hand with ``onnx.helper`` from the fitted parameters; the
feature standardisation is part of each graph, so clients send the 30 raw
features.

Interface of both models:
    input          float32 [N, 30]  raw features, in load_breast_cancer() order
    label          int64   [N]      0 = malignant, 1 = benign (as sklearn)
    probabilities  float32 [N, 2]   columns: class 0, class 1

The script checks the exported graphs with onnxruntime (and, if its Python
package is installed, tract) against sklearn on the whole test split, exits
non-zero on any mismatch, and writes reference data
under models/reference/ plus a KServe v2 request in models/demo_input.json.
Output is deterministic: two runs give byte-identical files.
"""

import os

# Single-threaded BLAS keeps training bit-reproducible run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sklearn  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

OPSET = 13
IR_VERSION = 8
PRODUCER = "cordon scripts/make_models.py"
N_FEATURES = 30
PROBA_ATOL = 1e-5

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
REFERENCE = MODELS / "reference"


def f32(a):
    return np.asarray(a, dtype=np.float32)


def init(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name=name)


def scaler_nodes(scaler):
    """input -> (input - mean) / scale  ==> 'x_scaled'."""
    nodes = [
        helper.make_node("Sub", ["input", "scaler_mean"], ["x_centered"], name="scaler_sub"),
        helper.make_node("Div", ["x_centered", "scaler_scale"], ["x_scaled"], name="scaler_div"),
    ]
    inits = [
        init("scaler_mean", scaler.mean_.reshape(1, N_FEATURES)),
        init("scaler_scale", scaler.scale_.reshape(1, N_FEATURES)),
    ]
    return nodes, inits


def binary_head_nodes(logit):
    """Turn a [N,1] logit z into the 'label' and 'probabilities' outputs.

    predict_proba is [1 - sigmoid(z), sigmoid(z)] for both estimators.
    sklearn predicts class 1 iff z > 0 (LogisticRegression: decision > 0;
    MLPClassifier with a logistic output: p > 0.5). ArgMax over [-z, z]
    (ties go to index 0) reproduces that exactly, without rounding through
    the sigmoid, and yields int64 natively: no Cast, which tract-onnx would
    turn into its TDim type for int64 targets.

    The nodes producing graph outputs are named like the outputs, because
    tract names a model's outputs after the nodes that produce them.
    """
    nodes = [
        helper.make_node("Sigmoid", [logit], ["p1"], name="sigmoid"),
        helper.make_node("Sub", ["one", "p1"], ["p0"], name="complement"),
        helper.make_node("Concat", ["p0", "p1"], ["probabilities"], axis=1, name="probabilities"),
        helper.make_node("Neg", [logit], ["neg_logit"], name="negate"),
        helper.make_node("Concat", ["neg_logit", logit], ["pair_logits"], axis=1, name="pair_logits"),
        helper.make_node("ArgMax", ["pair_logits"], ["label"], axis=1, keepdims=0, name="label"),
    ]
    inits = [init("one", [1.0])]
    return nodes, inits


def build_model(graph_name, scaler, body_nodes, body_inits, logit, description):
    s_nodes, s_inits = scaler_nodes(scaler)
    h_nodes, h_inits = binary_head_nodes(logit)
    graph = helper.make_graph(
        nodes=s_nodes + body_nodes + h_nodes,
        name=graph_name,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", N_FEATURES])],
        outputs=[
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2]),
        ],
        initializer=s_inits + body_inits + h_inits,
        doc_string=description,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=description,
    )
    model.ir_version = IR_VERSION
    meta = {
        "description": description,
        "dataset": "sklearn.datasets.load_breast_cancer (UCI Breast Cancer Wisconsin (Diagnostic))",
        "split": "train_test_split(test_size=0.25, random_state=42, stratify=y)",
        "sklearn_version": sklearn.__version__,
        "onnx_version": onnx.__version__,
        "input": "input: float32 [N,30] raw features in load_breast_cancer().feature_names order",
        "outputs": "label: int64 [N] (0=malignant, 1=benign); probabilities: float32 [N,2] (class 0, class 1)",
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    domains = {n.domain for n in model.graph.node}
    assert domains <= {"", "ai.onnx"}, f"non-core op domains used: {domains}"
    assert [o.domain for o in model.opset_import] == [""], "only the core opset may be imported"
    return model


def lr_model(scaler, lr):
    assert lr.coef_.shape == (1, N_FEATURES) and lr.intercept_.shape == (1,)
    nodes = [helper.make_node("Gemm", ["x_scaled", "lr_coef", "lr_intercept"], ["logit"], name="linear")]
    inits = [init("lr_coef", lr.coef_.T), init("lr_intercept", lr.intercept_.reshape(1, 1))]
    desc = ("Breast cancer (Wisconsin diagnostic) classifier: StandardScaler + "
            "LogisticRegression(max_iter=5000), scikit-learn " + sklearn.__version__
            + ", exported with core ONNX ops only. Class 0 = malignant, 1 = benign.")
    return build_model("breast_cancer_lr", scaler, nodes, inits, "logit", desc)


def mlp_model(scaler, mlp):
    assert mlp.activation == "relu" and mlp.out_activation_ == "logistic"
    assert len(mlp.coefs_) == 2 and mlp.coefs_[1].shape[1] == 1
    nodes = [
        helper.make_node("Gemm", ["x_scaled", "mlp_w1", "mlp_b1"], ["h1_pre"], name="hidden"),
        helper.make_node("Relu", ["h1_pre"], ["h1"], name="relu"),
        helper.make_node("Gemm", ["h1", "mlp_w2", "mlp_b2"], ["logit"], name="output"),
    ]
    inits = [
        init("mlp_w1", mlp.coefs_[0]),
        init("mlp_b1", mlp.intercepts_[0].reshape(1, -1)),
        init("mlp_w2", mlp.coefs_[1]),
        init("mlp_b2", mlp.intercepts_[1].reshape(1, -1)),
    ]
    desc = ("Breast cancer (Wisconsin diagnostic) classifier: StandardScaler + "
            "MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0), "
            "scikit-learn " + sklearn.__version__
            + ", exported with core ONNX ops only. Class 0 = malignant, 1 = benign.")
    return build_model("breast_cancer_mlp", scaler, nodes, inits, "logit", desc)


def floats(a):
    """Nested lists of Python floats (float32 values widened exactly)."""
    return np.asarray(a, dtype=np.float64).tolist()


def _dump(obj, indent=0):
    """Compact-but-diffable JSON: a list of scalars goes on one line,
    anything holding containers gets one element per line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k)}: {_dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{inner}{_dump(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _dump(obj) + "\n"
    assert json.loads(text) == obj
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def check_with_tract(onnx_path, X, sk_labels, sk_proba):
    """Optional cross-check with tract (the engine the project embeds), via
    its Python bindings, if installed. Returns a failure message or None."""
    try:
        import tract
    except ImportError:
        print(f"  (tract Python package not installed: skipping tract check of {onnx_path.name})")
        return None
    runnable = tract.onnx().load(str(onnx_path)).into_model().into_runnable()
    labels, proba = (t.to_numpy() for t in runnable.run([X]))
    if labels.dtype != np.int64 or labels.shape != sk_labels.shape:
        return f"{onnx_path.name}: tract label output is {labels.dtype}{labels.shape}"
    if proba.dtype != np.float32 or proba.shape != sk_proba.shape:
        return f"{onnx_path.name}: tract probabilities output is {proba.dtype}{proba.shape}"
    n_diff = int(np.sum(labels != sk_labels))
    err = float(np.max(np.abs(proba.astype(np.float64) - sk_proba)))
    print(f"  tract {tract.version()}: label mismatches {n_diff}, max |proba diff| {err:.3e}")
    if n_diff or not err <= PROBA_ATOL:
        return f"{onnx_path.name}: tract disagrees with sklearn ({n_diff} labels, proba err {err:.3e})"
    return None


def main():
    data = load_breast_cancer()
    X, y = data.data, data.target
    assert list(data.target_names) == ["malignant", "benign"]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=42, stratify=y)

    scaler = StandardScaler().fit(X_train)
    Xs_train = scaler.transform(X_train)
    lr = LogisticRegression(max_iter=5000).fit(Xs_train, y_train)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=0).fit(Xs_train, y_train)
    assert list(lr.classes_) == [0, 1] and list(mlp.classes_) == [0, 1]

    # The reference inputs are the float32 values a client would send.
    X_test32 = f32(X_test)
    test_inputs = floats(X_test32)
    assert np.array_equal(f32(test_inputs), X_test32)

    MODELS.mkdir(parents=True, exist_ok=True)
    REFERENCE.mkdir(parents=True, exist_ok=True)
    write_json(REFERENCE / "breast_cancer_test.json", {
        "feature_names": [str(n) for n in data.feature_names],
        "inputs": test_inputs,
        "labels_true": [int(v) for v in y_test],
    })
    write_json(MODELS / "demo_input.json", {
        "inputs": [{"name": "input", "shape": [1, N_FEATURES], "datatype": "FP32",
                    "data": test_inputs[0]}],
    })

    failures = []
    for name, est, builder in (("breast_cancer_lr", lr, lr_model), ("breast_cancer_mlp", mlp, mlp_model)):
        model = builder(scaler, est)
        onnx_path = MODELS / f"{name}.onnx"
        onnx_path.write_bytes(model.SerializeToString(deterministic=True))

        pipe = make_pipeline(scaler, est)
        sk_labels = pipe.predict(X_test32)
        sk_proba = pipe.predict_proba(X_test32)

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        ort_labels, ort_proba = sess.run(["label", "probabilities"], {"input": X_test32})

        assert ort_labels.dtype == np.int64 and ort_labels.shape == (len(y_test),), ort_labels.shape
        assert ort_proba.dtype == np.float32 and ort_proba.shape == (len(y_test), 2), ort_proba.shape
        n_label_diff = int(np.sum(ort_labels != sk_labels))
        max_err = float(np.max(np.abs(ort_proba.astype(np.float64) - sk_proba)))
        accuracy = float(np.mean(sk_labels == y_test))
        ort_accuracy = float(np.mean(ort_labels == y_test))
        print(f"{name}: test accuracy {accuracy:.6f} ({int(np.sum(sk_labels == y_test))}/{len(y_test)}), "
              f"onnxruntime accuracy {ort_accuracy:.6f}, label mismatches {n_label_diff}, "
              f"max |proba diff| {max_err:.3e}, {onnx_path.stat().st_size} bytes")
        if n_label_diff:
            failures.append(f"{name}: {n_label_diff} labels differ between onnxruntime and sklearn")
        if not max_err <= PROBA_ATOL:
            failures.append(f"{name}: probabilities differ by {max_err:.3e} > {PROBA_ATOL}")

        tract_failure = check_with_tract(onnx_path, X_test32, sk_labels, sk_proba)
        if tract_failure:
            failures.append(tract_failure)

        write_json(REFERENCE / f"{name}.expected.json", {
            "model": f"{name}.onnx",
            "sklearn_labels": [int(v) for v in sk_labels],
            "sklearn_probabilities": floats(sk_proba),
            "onnxruntime_labels": [int(v) for v in ort_labels],
            "onnxruntime_probabilities": floats(ort_proba),
            "accuracy": accuracy,
        })

    if failures:
        for msg in failures:
            print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)
    print(f"OK: onnxruntime (and tract, if installed) match sklearn on all {len(y_test)} test rows for both models")


if __name__ == "__main__":
    main()
