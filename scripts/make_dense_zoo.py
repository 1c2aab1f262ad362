#!/usr/bin/env python3
"""Build the dense (MLP) reference zoo in models/dense/.

Run from the repository root:

    python3 scripts/make_dense_zoo.py            # rewrites models/dense/*.onnx, *.json (not README.md)
    python3 scripts/make_dense_zoo.py --verify   # re-runs ORT on the committed files only

For every model NAME it writes NAME.onnx, NAME.input.json (an Open Inference
Protocol request, {"inputs":[{name, shape, datatype, data}]}, one tensor per
graph input) and NAME.expected.json (ONNX Runtime's outputs for it in graph
output order), plus manifest.json, in the layout of the tree zoos
(models/trees/, models/trees2/). The JSON writer, the OIP tensor encoding,
sha256, the ORT session settings (one thread) and the manifest's versions and
conventions are imported from make_tree_models.py, not copied.

All models are multilayer perceptrons trained with scikit-learn
(MLPClassifier / MLPRegressor, one LogisticRegression) on scikit-learn's
bundled datasets (breast cancer, diabetes, wine, digits) and on two
synthetic wide datasets (make_classification with 200 features,
make_regression with 100 features and 3 targets). Input: float32 [N, F],
N symbolic ("N"). Three graph styles:

* "gemm" (sklearn-by-hand, as scripts/make_models.py builds the demo
  models): opset 13, StandardScaler as Sub + Div, Gemm with B [K, N]
  (transB=0) and C [1, N];
* "torch" (the graphs torch.onnx.export writes for nn.Linear stacks, built
  by hand, no torch needed): opset 17, Gemm with transB=1 and the weight
  stored [out, in], or MatMul + Add with a 1-D bias; Flatten, Identity,
  Concat of two inputs, Mul / Add by constants (0-d and [T]), LeakyRelu;
* "skl2onnx": Pipeline(StandardScaler, MLPClassifier) and MLPRegressor as
  skl2onnx converts them (ai.onnx.ml Scaler, ArrayFeatureExtractor, ...).

Checks (the script exits non-zero if one fails): onnx.checker on every
model; ONNX Runtime (one thread) against an independent float64 numpy forward
pass over the same float32 weights (hand-built models) or against
scikit-learn's predict / predict_proba in float64 (skl2onnx models): float
outputs within |a-b| <= 1e-5*max(1,|ref|), labels equal (a label may differ
only where the reference's top two scores are within 1e-6: counted, and
none is allowed); hand-built models are also compared with the
scikit-learn estimator their weights come from; size budget.

Output is deterministic: two runs give byte-identical files.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Importing the tree zoo's generator pins BLAS/OpenMP to one thread before
# numpy loads (training is then bit-reproducible run to run).
import make_tree_models as base  # noqa: E402

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import scipy.special  # noqa: E402
import sklearn  # noqa: E402
import skl2onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

REPO = base.REPO
OUT = REPO / "models" / "dense"
GENERATOR = "scripts/make_dense_zoo.py"
PRODUCER = "cordon " + GENERATOR
SEED = 0                  # random_state of every estimator
IR_VERSION = 8
OPSET_GEMM = 13           # as scripts/make_models.py
OPSET_TORCH = 17          # torch.onnx.export's default opset
RTOL = 1e-5               # |ort - ref| <= RTOL * max(1, |ref|)
TIE_GAP = 1e-6            # a label may differ only where the top two scores are closer than this
SKLEARN_TOL = 1e-4        # hand-built graph vs the estimator it comes from (float64, own scaler)
# ORT's float32 result must be closer than this to the float64 reference (scaled like RTOL), so that another
# float32 engine, with its own rounding, stays within RTOL of ORT: every model must leave that headroom.
ROUNDING_BUDGET = 2e-6
MAX_DIR_BYTES = 4_000_000
QUANTUM = 1.0 / 32.0      # synthetic features are rounded to multiples of this (exact, short JSON)
LEAKY_ALPHA = 0.01


# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------
SYNTHETIC = {
    "syn200": ("make_classification(n_samples=2000, n_features=200, n_informative=40, n_redundant=20, "
               "n_classes=4, n_clusters_per_class=2, class_sep=1.5, random_state=0): 4 classes, 200 features",
               lambda: make_classification(n_samples=2000, n_features=200, n_informative=40, n_redundant=20,
                                           n_classes=4, n_clusters_per_class=2, class_sep=1.5, random_state=0),
               True),
    # bias=1500 keeps every target far from 0 (they span about +-1100 around the bias): a float32 output
    # of that scale near 0 is off the exact value by more than 1e-5 absolute (cancellation in the last
    # Add), which the tolerance 1e-5*max(1,|b|) does not allow for.
    "reg100": ("make_regression(n_samples=1500, n_features=100, n_informative=30, n_targets=3, bias=1500.0, "
               "noise=5.0, random_state=0): regression, 3 targets (about 440 to 2700), 100 features",
               lambda: make_regression(n_samples=1500, n_features=100, n_informative=30, n_targets=3, bias=1500.0,
                                       noise=5.0, random_state=0),
               False),
}
SYN_TEST_ROWS = 200


def datasets():
    """bc / diab / wine split exactly as in the tree zoos; digits and the
    synthetic sets split likewise. Features are float32 values (held as
    float64)."""
    out = {}
    for key, d in base.datasets().items():
        out[key] = {k: d[k] for k in ("X", "y", "tr", "te")}
        out[key]["doc"] = base.DATASET_DOC[key]
        out[key]["split"] = base.split_doc(key, False)
    dg = load_digits()
    idx = np.arange(len(dg.target))
    tr, te = train_test_split(idx, test_size=base.TEST_SIZE, random_state=base.SPLIT_SEED, stratify=dg.target)
    out["digits"] = {"X": dg.data.astype(np.float32).astype(np.float64), "y": dg.target, "tr": tr, "te": te,
                     "doc": "sklearn.datasets.load_digits (UCI optical recognition of handwritten digits, 8x8 "
                            "images, 1797 rows, 64 features with integer values 0..16, 10 classes)",
                     "split": f"features cast to float32; train_test_split(test_size={base.TEST_SIZE}, "
                              f"random_state={base.SPLIT_SEED}, stratify=y)"}
    for key, (doc, make, classification) in SYNTHETIC.items():
        X, y = make()
        X = (np.round(X / QUANTUM) * QUANTUM).astype(np.float32).astype(np.float64)
        idx = np.arange(len(y))
        tr, te = train_test_split(idx, test_size=SYN_TEST_ROWS, random_state=base.SPLIT_SEED,
                                  stratify=y if classification else None)
        out[key] = {"X": X, "y": y, "tr": tr, "te": te, "doc": "synthetic, sklearn.datasets." + doc,
                    "split": f"features rounded to multiples of {QUANTUM} and cast to float32; "
                             f"train_test_split(test_size={SYN_TEST_ROWS}, random_state={base.SPLIT_SEED}"
                             + (", stratify=y)" if classification else ")")}
    return out


def input_rows(d, n):
    """The input set: the held-out rows, then training rows if the test split
    has fewer than n, the first n of them."""
    order = np.concatenate([d["te"], d["tr"]])[:n]
    return d["X"][order].astype(np.float32)


def input_targets(d, n):
    return d["y"][np.concatenate([d["te"], d["tr"]])[:n]]


def quality(got, y_true):
    """Accuracy of ORT's labels, or R^2 of ORT's regression output (per target, averaged), on the input rows."""
    if "label" in got:
        return {"accuracy": float(np.mean(got["label"] == y_true))}
    pred = next(iter(got.values())).astype(np.float64).reshape(len(y_true), -1)
    yt = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    r2 = 1.0 - ((pred - yt) ** 2).sum(axis=0) / ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    return {"r2": float(np.mean(r2))}


def rows_doc(d, n):
    n_te = min(n, len(d["te"]))
    s = f"the first {n_te} held-out (test) rows"
    if n > n_te:
        s += f", then the first {n - n_te} training rows"
    return s


def fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def est_params(est):
    keys = ("hidden_layer_sizes", "activation", "solver", "max_iter", "alpha", "learning_rate_init",
            "batch_size", "early_stopping", "n_iter_no_change", "random_state", "C")
    p = est.get_params(deep=False)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items() if k in keys}


def f32(a):
    return np.asarray(a, dtype=np.float32)


# ---------------------------------------------------------------------------
# Hand-built graphs: one spec, two consumers (the ONNX emitter and the float64
# numpy forward pass)
# ---------------------------------------------------------------------------
# spec keys:
#   inputs     [(name, n_features)]; several are concatenated (axis 1) in order
#   flatten    Flatten(axis=1) on the (concatenated) input
#   prescale   float: x * prescale (a 0-d constant)
#   scaler     (mean [F], scale [F], "div" | "mul"): (x - mean) / scale or (x - mean) * (1/scale)
#   layers     [{"W": [in, out] float32, "b": [out] float32, "op": "gemm" | "gemm_t" | "matmul" | "matmul_badd",
#                "identity": bool}] ; the activation follows every layer but the last
#   act        relu | tanh | logistic | leaky_relu
#   head       binary | softmax | regression
#   softmax_axis, argmax_of ("logits" | "probabilities") for softmax heads
#   post       (mul, add) float32 arrays (0-d or [T]) applied to a regression output
#   opset


def spec_layers(coefs, intercepts, ops, identity_after=()):
    assert len(coefs) == len(intercepts) == len(ops), (len(coefs), len(ops))
    return [{"W": f32(W), "b": f32(b), "op": op, "identity": i in identity_after}
            for i, (W, b, op) in enumerate(zip(coefs, intercepts, ops))]


class GraphBuilder:
    def __init__(self):
        self.nodes, self.inits = [], []

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(f32(value), name=name))
        return name

    def node(self, op, inputs, output, name=None, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=name or output, **attrs))
        return output


ACT_OP = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid", "leaky_relu": "LeakyRelu"}


def build_dense(name, spec, description):
    g = GraphBuilder()
    torch = spec["opset"] == OPSET_TORCH
    names = [n for n, _ in spec["inputs"]]
    x = names[0]
    if len(names) > 1:
        x = g.node("Concat", names, "x_concat", axis=1)
    if spec.get("flatten"):
        x = g.node("Flatten", [x], "x_flat", axis=1)
    if spec.get("prescale") is not None:
        x = g.node("Mul", [x, g.const("input_scale", np.float32(spec["prescale"]))], "x_prescaled")
    if spec.get("scaler") is not None:
        mean, scale, how = spec["scaler"]
        shape = (-1,) if torch else (1, -1)
        x = g.node("Sub", [x, g.const("scaler_mean", f32(mean).reshape(shape))], "x_centered", name="scaler_sub")
        if how == "div":
            x = g.node("Div", [x, g.const("scaler_scale", f32(scale).reshape(shape))], "x_scaled",
                       name="scaler_div")
        else:
            inv = (1.0 / f32(scale).astype(np.float64)).astype(np.float32)
            x = g.node("Mul", [x, g.const("scaler_inv_scale", inv.reshape(shape))], "x_scaled", name="scaler_mul")
    head = spec["head"]
    n_layers = len(spec["layers"])
    for i, layer in enumerate(spec["layers"]):
        last = i == n_layers - 1
        k = i + 1
        out = f"fc{k}"
        if last and head == "regression" and spec.get("post") is None:
            out = "output"
        W, b, op = layer["W"], layer["b"], layer["op"]
        if op == "gemm":     # sklearn-by-hand: B [in, out], C [1, out]
            x = g.node("Gemm", [x, g.const(f"fc{k}.weight", W), g.const(f"fc{k}.bias", b.reshape(1, -1))], out)
        elif op == "gemm_t":  # torch nn.Linear: B [out, in] with transB=1, C [out]
            x = g.node("Gemm", [x, g.const(f"fc{k}.weight", W.T), g.const(f"fc{k}.bias", b)], out,
                       alpha=1.0, beta=1.0, transB=1)
        elif op in ("matmul", "matmul_badd"):  # MatMul by [in, out] then Add of a 1-D bias
            mm = g.node("MatMul", [x, g.const(f"fc{k}.weight_t", W)], f"fc{k}_matmul")
            bias = g.const(f"fc{k}.bias", b)
            x = g.node("Add", [mm, bias] if op == "matmul" else [bias, mm], out)
        else:
            raise ValueError(op)
        if not last:
            act = spec["act"]
            attrs = {"alpha": LEAKY_ALPHA} if act == "leaky_relu" else {}
            x = g.node(ACT_OP[act], [x], f"act{k}", **attrs)
            if layer.get("identity"):
                x = g.node("Identity", [x], f"dropout{k}")
    logits = x
    F = sum(f for _, f in spec["inputs"])
    n_out = spec["layers"][-1]["W"].shape[1]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", f]) for n, f in spec["inputs"]]
    if head == "binary":  # the head of scripts/make_models.py
        p1 = g.node("Sigmoid", [logits], "p1", name="sigmoid")
        p0 = g.node("Sub", [g.const("one", [1.0]), p1], "p0", name="complement")
        g.node("Concat", [p0, p1], "probabilities", axis=1)
        neg = g.node("Neg", [logits], "neg_logit", name="negate")
        pair = g.node("Concat", [neg, logits], "pair_logits", axis=1)
        g.node("ArgMax", [pair], "label", axis=1, keepdims=0)
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])]
    elif head == "softmax":
        g.node("Softmax", [logits], "probabilities", axis=spec["softmax_axis"])
        src = logits if spec["argmax_of"] == "logits" else "probabilities"
        g.node("ArgMax", [src], "label", axis=1, keepdims=0)
        outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
                   helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", n_out])]
    else:
        if spec.get("post") is not None:
            mul, add = spec["post"]
            y = g.node("Mul", [logits, g.const("target_scale", mul)], "output_scaled")
            g.node("Add", [y, g.const("target_mean", add)], "output")
        outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out])]
    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits, doc_string=description)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", spec["opset"])],
                              producer_name=PRODUCER, producer_version="1", doc_string=description)
    model.ir_version = IR_VERSION
    assert F == spec["layers"][0]["W"].shape[0]
    return model


def act64(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "logistic":
        return scipy.special.expit(z)
    if name == "leaky_relu":
        return np.where(z >= 0.0, z, float(np.float32(LEAKY_ALPHA)) * z)
    raise ValueError(name)


def softmax64(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def forward64(spec, feeds):
    """The spec's function in float64, from the float32 parameters the graph
    stores. Returns {output name: array} and the scores labels come from."""
    x = np.concatenate([feeds[n].astype(np.float64) for n, _ in spec["inputs"]], axis=1)
    if spec.get("prescale") is not None:
        x = x * float(np.float32(spec["prescale"]))
    if spec.get("scaler") is not None:
        mean, scale, how = spec["scaler"]
        x = x - f32(mean).astype(np.float64)
        if how == "div":
            x = x / f32(scale).astype(np.float64)
        else:
            x = x * (1.0 / f32(scale).astype(np.float64)).astype(np.float32).astype(np.float64)
    for i, layer in enumerate(spec["layers"]):
        x = x @ layer["W"].astype(np.float64) + layer["b"].astype(np.float64)
        if i < len(spec["layers"]) - 1:
            x = act64(spec["act"], x)
    if spec["head"] == "binary":
        p1 = scipy.special.expit(x)
        proba = np.concatenate([1.0 - p1, p1], axis=1)
        return {"label": (x[:, 0] > 0).astype(np.int64), "probabilities": proba}, np.concatenate([-x, x], axis=1)
    if spec["head"] == "softmax":
        proba = softmax64(x)
        return {"label": np.argmax(x, axis=1).astype(np.int64), "probabilities": proba}, x
    if spec.get("post") is not None:
        mul, add = spec["post"]
        x = x * f32(mul).astype(np.float64) + f32(add).astype(np.float64)
    return {"output": x}, None


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
def top2_gap(scores):
    s = np.sort(np.asarray(scores, dtype=np.float64), axis=1)
    return s[:, -1] - s[:, -2]


def compare_outputs(got, ref, ref_scores):
    """got: {name: ORT array}; ref: {name: float64 / int64 array}.
    Returns a dict of the comparison."""
    res = {"max_abs_diff": 0.0, "max_scaled_diff": 0.0, "values_outside_tolerance": 0,
           "label_mismatches": 0, "label_mismatches_at_near_ties": 0, "near_ties": 0}
    for name, r in ref.items():
        a = got[name]
        if r.dtype.kind in "iu":
            diff = a.astype(np.int64) != r.astype(np.int64).reshape(a.shape)
            gap = top2_gap(ref_scores)
            tie = gap < TIE_GAP
            res["near_ties"] = int(np.sum(tie))
            res["label_mismatches"] = int(np.sum(diff & ~tie))
            res["label_mismatches_at_near_ties"] = int(np.sum(diff & tie))
        else:
            a64 = a.astype(np.float64)
            r64 = np.asarray(r, dtype=np.float64).reshape(a.shape)
            d = np.abs(a64 - r64)
            scaled = d / np.maximum(1.0, np.abs(r64))
            res["max_abs_diff"] = max(res["max_abs_diff"], float(d.max()))
            res["max_scaled_diff"] = max(res["max_scaled_diff"], float(scaled.max()))
            res["values_outside_tolerance"] += int(np.sum(scaled > RTOL))
    return res


def check_failures(res, what):
    msgs = []
    if res["values_outside_tolerance"]:
        msgs.append(f"{what}: {res['values_outside_tolerance']} values outside {RTOL}*max(1,|ref|) "
                    f"(max |diff| {res['max_abs_diff']:.3g})")
    if res["label_mismatches"] or res["label_mismatches_at_near_ties"]:
        msgs.append(f"{what}: {res['label_mismatches']} labels differ ({res['label_mismatches_at_near_ties']} "
                    f"more at near ties)")
    if res["near_ties"]:
        msgs.append(f"{what}: {res['near_ties']} rows whose top two scores are within {TIE_GAP}")
    return msgs


def ops_of(model):
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
                   for n in model.graph.node})


def tinfo(vi):
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
    return {"name": vi.name, "type": f"tensor({TensorProto.DataType.Name(tt.elem_type).lower()})", "shape": dims}


def name_batch_dim(model):
    """skl2onnx leaves the batch dimension unnamed; call it N like the rest."""
    for vi in list(model.graph.input) + list(model.graph.output):
        d = vi.type.tensor_type.shape.dim[0]
        if not d.HasField("dim_value") and not d.dim_param:
            d.dim_param = "N"


def ort_run(model_bytes, feeds):
    sess = base.ort_session(model_bytes)
    names = [o.name for o in sess.get_outputs()]
    return names, sess.run(names, feeds)


# ---------------------------------------------------------------------------
# The zoo
# ---------------------------------------------------------------------------
class DenseZoo:
    def __init__(self, out_dir, data):
        self.out = out_dir
        self.data = data
        self.entries = []
        self.failures = []
        self.table = []

    def add(self, name, model, feeds, *, style, key, rows, hidden, activation, head, source, covers,
            reference, sklearn_ref=None, n_params=None, notes=None):
        """reference: (outputs {name: array}, scores for ties) the ORT outputs
        must match; sklearn_ref: the same from the scikit-learn estimator, for
        hand-built graphs (recorded, and checked with SKLEARN_TOL)."""
        # tidy (skl2onnx: opset order, uuid graph name, unnamed batch dim)
        seen = {}
        for o in model.opset_import:
            seen[o.domain] = max(seen.get(o.domain, 0), o.version)
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(dm, v) for dm, v in sorted(seen.items()))
        model.graph.name = name
        name_batch_dim(model)
        if not model.doc_string:
            model.doc_string = source["description"]
        meta = {p.key: p.value for p in model.metadata_props}
        meta.update({"cordon_zoo_name": name, "cordon_generator": GENERATOR})
        del model.metadata_props[:]
        helper.set_model_props(model, meta)
        onnx.checker.check_model(model, full_check=True)

        data = model.SerializeToString(deterministic=True)
        path = self.out / f"{name}.onnx"
        path.write_bytes(data)
        assert [i.name for i in model.graph.input] == list(feeds)
        base.write_json(self.out / f"{name}.input.json",
                        {"inputs": [base.oip_tensor(n, v) for n, v in feeds.items()]})
        out_names, outs = ort_run(data, feeds)
        got = dict(zip(out_names, outs))
        base.write_json(self.out / f"{name}.expected.json",
                        {"outputs": [base.oip_tensor(n, v) for n, v in zip(out_names, outs)]})

        n_rows = next(iter(feeds.values())).shape[0]
        for n, v in got.items():
            want = np.int64 if n == "label" else np.float32
            if v.dtype != want or v.shape[0] != n_rows:
                self.failures.append(f"{name}: ORT output {n} is {v.dtype}{v.shape}")
        ref_out, ref_scores = reference
        res = compare_outputs(got, ref_out, ref_scores)
        self.failures += [f"{name}: " + m for m in check_failures(res, "ORT vs reference")]
        if res["max_scaled_diff"] > ROUNDING_BUDGET:
            self.failures.append(f"{name}: ORT is {res['max_scaled_diff']:.3g} (scaled) from the float64 reference, "
                                 f"more than the rounding budget {ROUNDING_BUDGET}")
        sk = None
        if sklearn_ref is not None:
            sk = compare_outputs(got, *sklearn_ref)
            sk = {k: sk[k] for k in ("max_abs_diff", "max_scaled_diff", "label_mismatches",
                                     "label_mismatches_at_near_ties")}
            if sk["max_scaled_diff"] > SKLEARN_TOL or sk["label_mismatches"]:
                self.failures.append(f"{name}: ORT vs scikit-learn {sk}")

        inits = {t.name for t in model.graph.initializer}
        if n_params is None:
            n_params = int(sum(np.prod(t.dims) for t in model.graph.initializer))
        d = self.data[key]
        entry = {
            "name": name,
            "files": {"model": path.name, "input": f"{name}.input.json", "expected": f"{name}.expected.json"},
            "sha256": {"model": base.sha256(path), "input": base.sha256(self.out / f"{name}.input.json"),
                       "expected": base.sha256(self.out / f"{name}.expected.json")},
            "bytes": path.stat().st_size,
            "description": source["description"],
            "style": style,
            "dataset": d["doc"],
            "split": d["split"],
            "rows": rows_doc(d, n_rows),
            "n_rows": int(n_rows),
            "n_features": int(sum(v.shape[1] for v in feeds.values())),
            "inputs": [tinfo(i) for i in model.graph.input],
            "outputs": [tinfo(o) for o in model.graph.output],
            "opset_import": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "ir_version": model.ir_version,
            "ops": ops_of(model),
            "n_nodes": len(model.graph.node),
            "n_initializers": len(inits),
            "n_parameters": n_params,
            "layers": list(hidden),
            "depth": len(hidden),
            "activation": activation,
            "head": head,
            "source": source,
            "covers": covers,
            "ort_vs_reference": res,
            "ort_vs_sklearn": sk,
            "quality_on_input_rows": quality(got, input_targets(d, n_rows)),
        }
        if notes:
            entry["notes"] = notes
        self.entries.append(entry)
        self.table.append((name, ",".join(entry["ops"]), "x".join(map(str, hidden)) or "-", n_rows,
                           res["max_abs_diff"], res["max_scaled_diff"], entry["bytes"]))

    def hand(self, name, key, spec, n_rows, *, est, est_forward, description, covers, style, hidden, activation,
             extra_source=None, feeds_of=None, notes=None):
        d = self.data[key]
        X = input_rows(d, n_rows)
        feeds = feeds_of(X) if feeds_of else {spec["inputs"][0][0]: X}
        model = build_dense(name, spec, description)
        source = {"kind": "hand-built (onnx.helper) from fitted scikit-learn parameters",
                  "estimator": type(est).__name__, "params": est_params(est),
                  "scikit-learn": sklearn.__version__, "description": description}
        if extra_source:
            source.update(extra_source)
        sk_ref = None
        if est_forward is not None:
            sk_ref = est_forward(X.astype(np.float64))
        head = {"binary": "binary: Sigmoid, probabilities [1-p, p], label ArgMax over [-z, z]",
                "softmax": f"Softmax(axis={spec.get('softmax_axis')}), label ArgMax(axis=1, keepdims=0) over "
                           f"the {spec.get('argmax_of')}",
                "regression": "regression, linear output"
                + (", then Mul and Add by constants" if spec.get("post") is not None else "")}[spec["head"]]
        n_params = int(sum(L["W"].size + L["b"].size for L in spec["layers"]))
        self.add(name, model, feeds, style=style, key=key, rows=n_rows, hidden=hidden, activation=activation,
                 head=head, source=source, covers=covers, reference=forward64(spec, feeds), sklearn_ref=sk_ref,
                 n_params=n_params, notes=notes)

    def skl(self, name, key, est, n_rows, *, description, covers, classifier):
        d = self.data[key]
        X = input_rows(d, n_rows)
        model = base.skl_convert(est, X.shape[1])
        X64 = X.astype(np.float64)
        if classifier:
            proba = est.predict_proba(X64)
            ref = ({"label": est.predict(X64).astype(np.int64), "probabilities": proba}, proba)
            head = "skl2onnx classifier head (zipmap disabled)"
        else:
            ref = ({"variable": est.predict(X64).reshape(len(X), -1)}, None)
            head = "skl2onnx regressor head"
        mlp = est.steps[-1][1] if isinstance(est, Pipeline) else est
        source = {"kind": "sklearn", "estimator": type(est).__name__,
                  "params": ({"steps": [f"{n}: {type(e).__name__}({est_params(e)})" for n, e in est.steps]}
                             if isinstance(est, Pipeline) else est_params(est)),
                  "scikit-learn": sklearn.__version__,
                  "converter": {"skl2onnx": skl2onnx.__version__, "target_opset": base.SKL2ONNX_TARGET_OPSET,
                                "options": {"zipmap": False} if classifier else {}},
                  "description": description}
        self.add(name, model, {"input": X}, style="skl2onnx", key=key, rows=n_rows,
                 hidden=list(mlp.hidden_layer_sizes), activation=mlp.activation, head=head, source=source,
                 covers=covers, reference=ref,
                 notes=["The batch dimension, unnamed in skl2onnx's output, is named N; otherwise the graph is "
                        "skl2onnx's (graph name and opset_import order made deterministic)."])


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def build(zoo, data):
    def tr(key):
        d = data[key]
        return d["X"][d["tr"]], d["y"][d["tr"]]

    def mlp_forward(scaler, est, pre=None, post=None, proba=True):
        """scikit-learn's own float64 answer on raw rows (dataset feature
        order), in the form of forward64's result."""
        def f(X):
            Z = X if pre is None else pre(X)
            Z = scaler.transform(Z) if scaler is not None else Z
            if proba:
                p = est.predict_proba(Z)
                return {"label": est.predict(Z).astype(np.int64), "probabilities": p}, p
            y = est.predict(Z).reshape(len(Z), -1)
            if post is not None:
                y = y * post[0] + post[1]
            return {"output": y}, None
        return f

    def scaler_of(X):
        return StandardScaler().fit(X)

    # ---- style (a): sklearn-by-hand, Gemm transB=0, opset 13 ---------------------------------------------------
    def gemm_spec(F, scaler, est, head, act, softmax_axis=1, argmax_of="logits", prescale=None):
        coefs = est.coefs_ if hasattr(est, "coefs_") else [est.coef_.T]
        inters = est.intercepts_ if hasattr(est, "intercepts_") else [est.intercept_]
        return {"inputs": [("input", F)], "scaler": (scaler.mean_, scaler.scale_, "div"),
                "layers": spec_layers(coefs, inters, ["gemm"] * len(coefs)), "act": act, "head": head,
                "softmax_axis": softmax_axis, "argmax_of": argmax_of, "opset": OPSET_GEMM, "prescale": prescale}

    X, y = tr("bc")
    sc = scaler_of(X)
    lr = fit(LogisticRegression(max_iter=5000), sc.transform(X), y)
    zoo.hand("d_bc_gemm_lr", "bc", gemm_spec(30, sc, lr, "binary", None), 143, est=lr,
             est_forward=mlp_forward(sc, lr), style="gemm", hidden=[], activation=None,
             description="Breast cancer: StandardScaler + LogisticRegression(max_iter=5000), no hidden layer; the "
                         "graph of models/breast_cancer_lr.onnx (Sub, Div, Gemm, binary head).",
             covers=["demo model style (breast_cancer_lr)", "no hidden layer", "Gemm with one output column"])
    m = fit(MLPClassifier(hidden_layer_sizes=(16,), max_iter=2000, random_state=SEED), sc.transform(X), y)
    zoo.hand("d_bc_gemm_16_relu", "bc", gemm_spec(30, sc, m, "binary", "relu"), 143, est=m,
             est_forward=mlp_forward(sc, m), style="gemm", hidden=[16], activation="relu",
             description="Breast cancer: StandardScaler + MLPClassifier((16,), relu); the graph of "
                         "models/breast_cancer_mlp.onnx.",
             covers=["demo model style (breast_cancer_mlp)", "1 hidden layer", "width 16", "relu"])
    m = fit(MLPClassifier(hidden_layer_sizes=(64, 64), activation="tanh", max_iter=500, random_state=SEED),
            sc.transform(X), y)
    zoo.hand("d_bc_gemm_64x64_tanh", "bc", gemm_spec(30, sc, m, "binary", "tanh"), 143, est=m,
             est_forward=mlp_forward(sc, m), style="gemm", hidden=[64, 64], activation="tanh",
             description="Breast cancer: StandardScaler + MLPClassifier((64, 64), tanh), binary head.",
             covers=["2 hidden layers", "width 64", "tanh"])

    X, y = tr("wine")
    sc = scaler_of(X)
    m = fit(MLPClassifier(hidden_layer_sizes=(8,), activation="logistic", max_iter=3000, random_state=SEED),
            sc.transform(X), y)
    zoo.hand("d_wine_gemm_8_logistic", "wine", gemm_spec(13, sc, m, "softmax", "logistic"), 128, est=m,
             est_forward=mlp_forward(sc, m), style="gemm", hidden=[8], activation="logistic",
             description="Wine: StandardScaler + MLPClassifier((8,), logistic), 3 classes, Softmax(axis=1), "
                         "ArgMax over the logits.",
             covers=["width 8", "logistic (Sigmoid) hidden activation", "3-class Softmax axis=1"])

    X, y = tr("digits")
    sc = scaler_of(X)
    m = fit(MLPClassifier(hidden_layer_sizes=(128, 128, 64), max_iter=200, random_state=SEED), sc.transform(X), y)
    zoo.hand("d_digits_gemm_128x128x64_relu", "digits", gemm_spec(64, sc, m, "softmax", "relu"), 200, est=m,
             est_forward=mlp_forward(sc, m), style="gemm", hidden=[128, 128, 64], activation="relu",
             description="Digits: StandardScaler + MLPClassifier((128, 128, 64), relu), 10 classes, "
                         "Softmax(axis=1), ArgMax over the logits.",
             covers=["3 hidden layers", "width 128", "10-class Softmax", "constant features (scale 1)"])

    X, y = tr("diab")
    sc = scaler_of(X)
    m = fit(MLPRegressor(hidden_layer_sizes=(16, 16), learning_rate_init=0.01, max_iter=3000, early_stopping=True,
                         n_iter_no_change=50, random_state=SEED), sc.transform(X), y)
    zoo.hand("d_diab_gemm_16x16_relu_reg", "diab", gemm_spec(10, sc, m, "regression", "relu"), 128, est=m,
             est_forward=mlp_forward(sc, m, proba=False), style="gemm", hidden=[16, 16], activation="relu",
             description="Diabetes: StandardScaler + MLPRegressor((16, 16), relu, adam with early stopping) on the "
                         "raw target; "
                         "output [N, 1] straight from the last Gemm.",
             covers=["regression [N,1]", "outputs of order 100"])

    X, y = tr("syn200")
    sc = scaler_of(X)
    m = fit(MLPClassifier(hidden_layer_sizes=(512,), max_iter=40, random_state=SEED), sc.transform(X), y)
    zoo.hand("d_syn200_gemm_512_relu", "syn200", gemm_spec(200, sc, m, "softmax", "relu"), 96, est=m,
             est_forward=mlp_forward(sc, m), style="gemm", hidden=[512], activation="relu",
             description="Synthetic 200 features, 4 classes: StandardScaler + MLPClassifier((512,), relu, "
                         "max_iter=40), Softmax(axis=1).",
             covers=["200 input features", "width 512", "4-class Softmax"])

    # ---- style (b): torch-style, opset 17 ------------------------------------------------------------------------
    def torch_spec(F, est, ops, head, act, scaler=None, **kw):
        s = {"inputs": [("input", F)], "scaler": scaler, "layers": spec_layers(est.coefs_, est.intercepts_, ops,
                                                                              kw.pop("identity_after", ())),
             "act": act, "head": head, "opset": OPSET_TORCH, "softmax_axis": -1, "argmax_of": "probabilities"}
        s.update(kw)
        return s

    X, y = tr("bc")
    sc = scaler_of(X)
    m = fit(MLPClassifier(hidden_layer_sizes=(64, 64, 64), activation="tanh", max_iter=300, random_state=SEED),
            sc.transform(X), y)
    zoo.hand("d_bc_torch_64x64x64_tanh", "bc",
             torch_spec(30, m, ["gemm_t"] * 4, "binary", "tanh", scaler=(sc.mean_, sc.scale_, "mul")), 143, est=m,
             est_forward=mlp_forward(sc, m), style="torch", hidden=[64, 64, 64], activation="tanh",
             description="Breast cancer: MLPClassifier((64, 64, 64), tanh) as nn.Linear layers: Gemm transB=1 with "
                         "weights [out, in] and 1-D biases; normalisation as Sub then Mul by 1/scale; binary head.",
             covers=["Gemm transB=1, weight [out,in], 1-D bias", "Mul by a [F] constant", "3 hidden layers"])

    # two inputs: the 10 "mean" and 10 "worst" features in one tensor, the 10 "error" features in the other
    perm = np.r_[0:10, 20:30, 10:20]
    m = fit(MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=1000, random_state=SEED), sc.transform(X), y)
    spec = torch_spec(30, m, ["matmul", "matmul_badd", "gemm_t"], "binary", "relu",
                      scaler=(sc.mean_[perm], sc.scale_[perm], "div"), inputs=[("mean_worst", 20), ("error", 10)])
    spec["layers"][0]["W"] = spec["layers"][0]["W"][perm]
    zoo.hand("d_bc_2in_32x32_relu", "bc", spec, 143, est=m, est_forward=mlp_forward(sc, m),
             feeds_of=lambda Xr: {"mean_worst": np.ascontiguousarray(Xr[:, perm[:20]]),
                                  "error": np.ascontiguousarray(Xr[:, perm[20:]])},
             style="torch", hidden=[32, 32], activation="relu",
             extra_source={"inputs": "mean_worst = features 0-9 and 20-29 (mean, worst), error = features 10-19 "
                                     "(standard error), in load_breast_cancer() order; the graph concatenates "
                                     "them (Concat axis=1) and its first layer's rows follow that order"},
             description="Breast cancer with two inputs (20 + 10 features) joined by Concat(axis=1): "
                         "MLPClassifier((32, 32), relu); MatMul + Add(x, b), MatMul + Add(b, x), then Gemm "
                         "transB=1; binary head.",
             covers=["two graph inputs", "Concat axis=1 of inputs", "MatMul + Add with the bias first",
                     "mixed layer styles"])

    X, y = tr("digits")
    m = fit(MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=100, random_state=SEED), X / 16.0, y)
    zoo.hand("d_digits_torch_256x256_relu", "digits",
             torch_spec(64, m, ["matmul"] * 3, "softmax", "relu", flatten=True, prescale=1.0 / 16.0,
                        identity_after=(0,)), 200,
             est=m, est_forward=mlp_forward(None, m, pre=lambda Z: Z / 16.0), style="torch", hidden=[256, 256],
             activation="relu",
             description="Digits: pixels / 16 (Mul by a 0-d constant) into MLPClassifier((256, 256), relu) "
                         "exported torch-style: Flatten(axis=1), MatMul + Add, an Identity (dropout in eval) "
                         "after the first activation, Softmax(axis=-1), ArgMax over the probabilities.",
             covers=["Flatten axis=1", "Identity", "Mul by a 0-d constant", "width 256", "Softmax axis=-1",
                     "ArgMax over probabilities"])

    X, y = tr("wine")
    sc = scaler_of(X)
    m = fit(MLPClassifier(hidden_layer_sizes=(16, 16), max_iter=2000, random_state=SEED), sc.transform(X), y)
    zoo.hand("d_wine_torch_16x16_leakyrelu", "wine",
             torch_spec(13, m, ["gemm_t"] * 3, "softmax", "leaky_relu", scaler=(sc.mean_, sc.scale_, "div"),
                        softmax_axis=1, argmax_of="logits"), 128,
             est=m, est_forward=None, style="torch", hidden=[16, 16], activation="leaky_relu",
             description="Wine: the weights of a trained MLPClassifier((16, 16), relu) with LeakyRelu(alpha=0.01) "
                         "in place of Relu (so not the estimator's function); Gemm transB=1, Softmax(axis=1), "
                         "ArgMax over the logits.",
             covers=["LeakyRelu alpha 0.01", "2 hidden layers", "width 16"],
             notes=["LeakyRelu changes the function, so there is no scikit-learn comparison (ort_vs_sklearn "
                    "null); ORT is checked against the float64 forward pass with LeakyRelu."])

    X, y = tr("syn200")
    m = fit(MLPClassifier(hidden_layer_sizes=(256, 128, 64, 16), activation="tanh", max_iter=60,
                          random_state=SEED), X, y)
    zoo.hand("d_syn200_torch_256x128x64x16_tanh", "syn200",
             torch_spec(200, m, ["matmul_badd", "gemm_t", "matmul", "gemm_t", "matmul"], "softmax", "tanh"), 96,
             est=m, est_forward=mlp_forward(None, m), style="torch", hidden=[256, 128, 64, 16], activation="tanh",
             description="Synthetic 200 features, 4 classes: MLPClassifier((256, 128, 64, 16), tanh) on the raw "
                         "features (no scaler), layers alternating MatMul + Add and Gemm transB=1, "
                         "Softmax(axis=-1), ArgMax over the probabilities.",
             covers=["4 hidden layers", "200 input features", "no normalisation", "mixed layer styles"])

    X, y = tr("reg100")
    sc = scaler_of(X)
    ysc = StandardScaler().fit(y)
    m = fit(MLPRegressor(hidden_layer_sizes=(128, 64, 32), max_iter=200, random_state=SEED), sc.transform(X),
            ysc.transform(y))
    post = (f32(ysc.scale_), f32(ysc.mean_))
    zoo.hand("d_reg100_torch_128x64x32_relu_reg3", "reg100",
             torch_spec(100, m, ["gemm_t"] * 4, "regression", "relu", scaler=(sc.mean_, sc.scale_, "div"),
                        post=post), 128,
             est=m, est_forward=mlp_forward(sc, m, proba=False, post=post), style="torch", hidden=[128, 64, 32],
             activation="relu",
             description="Synthetic regression, 100 features, 3 targets: MLPRegressor((128, 64, 32), relu) on "
                         "standardised targets; the graph un-standardises with Mul by a [3] constant and Add of a "
                         "[3] constant; output [N, 3].",
             covers=["multi-output regression [N,3]", "Mul / Add by [T] constants", "width 128", "100 features"])

    X, y = tr("diab")
    sc = scaler_of(X)
    ym, ys = float(np.mean(y)), float(np.std(y))
    m = fit(MLPRegressor(hidden_layer_sizes=(32, 8), activation="logistic", solver="lbfgs", alpha=1.0,
                         max_iter=3000, random_state=SEED), sc.transform(X), (y - ym) / ys)
    post = (np.float32(ys), np.float32(ym))
    zoo.hand("d_diab_torch_32x8_logistic_reg", "diab",
             torch_spec(10, m, ["matmul", "matmul_badd", "matmul"], "regression", "logistic", scaler=(sc.mean_, sc.scale_, "div"),
                        post=post, identity_after=(1,)), 128,
             est=m, est_forward=mlp_forward(sc, m, proba=False, post=(float(post[0]), float(post[1]))),
             style="torch", hidden=[32, 8], activation="logistic",
             description="Diabetes: MLPRegressor((32, 8), logistic, lbfgs) on the standardised target; the graph "
                         "multiplies by a 0-d constant (target std) and adds a 0-d constant (target mean); "
                         "MatMul + Add layers, output [N, 1].",
             covers=["Mul by a 0-d constant", "Add of a 0-d constant", "logistic hidden activation", "width 8"])

    # ---- style (c): skl2onnx ------------------------------------------------------------------------------------
    X, y = tr("bc")
    pipe = fit(Pipeline([("scaler", StandardScaler()),
                         ("mlp", MLPClassifier(hidden_layer_sizes=(32, 32), max_iter=1000, random_state=SEED))]),
               X, y)
    zoo.skl("d_bc_skl2onnx_32x32_relu", "bc", pipe, 143, classifier=True,
            description="Breast cancer: Pipeline(StandardScaler, MLPClassifier((32, 32), relu)) converted by "
                        "skl2onnx (zipmap off).",
            covers=["skl2onnx binary MLP", "ai.onnx.ml Scaler", "ArrayFeatureExtractor label"])
    X, y = tr("digits")
    pipe = fit(Pipeline([("scaler", StandardScaler()),
                         ("mlp", MLPClassifier(hidden_layer_sizes=(64,), activation="logistic", max_iter=300,
                                               random_state=SEED))]), X, y)
    zoo.skl("d_digits_skl2onnx_64_logistic", "digits", pipe, 200, classifier=True,
            description="Digits: Pipeline(StandardScaler, MLPClassifier((64,), logistic)) converted by skl2onnx "
                        "(zipmap off), 10 classes.",
            covers=["skl2onnx multiclass MLP", "Softmax as skl2onnx emits it", "width 64"])
    X, y = tr("diab")
    reg = fit(MLPRegressor(hidden_layer_sizes=(64, 32), activation="tanh", solver="lbfgs", alpha=1.0,
                           max_iter=3000, random_state=SEED), X, y)
    zoo.skl("d_diab_skl2onnx_64x32_tanh_reg", "diab", reg, 128, classifier=False,
            description="Diabetes: MLPRegressor((64, 32), tanh, lbfgs) on the raw (already centred and scaled) "
                        "features, converted by skl2onnx; output 'variable' [N, 1].",
            covers=["skl2onnx MLPRegressor", "Cast and Reshape as skl2onnx emits them"])


# ---------------------------------------------------------------------------
def _run_all_inputs(out_dir, entry, inputs):
    """ORT on every input of the model: [(name, array, False)] in graph output order."""
    feeds = {t["name"]: base.read_oip_tensor(t) for t in inputs}
    names, outs = ort_run((out_dir / entry["files"]["model"]).read_bytes(), feeds)
    return [(n, a, False) for n, a in zip(names, outs)]


def _floats_close(a, w):
    """This zoo's tolerance, 1e-5*max(1,|expected|): (ok, largest |a-w|)."""
    d = np.abs(a.astype(np.float64) - w.astype(np.float64))
    return bool(np.all(d <= RTOL * np.maximum(1.0, np.abs(w.astype(np.float64))))), float(d.max())


def verify(out_dir):
    """Re-run ORT on the committed files: every input tensor of NAME.input.json,
    compared with NAME.expected.json (labels exact, floats within
    1e-5*max(1,|expected|)), and the manifest's sha256 sums."""
    return base.verify(out_dir, run=_run_all_inputs, floats_close=_floats_close)


def main():
    out = base.zoo_command_line(__doc__, OUT, verify)

    data = datasets()
    zoo = DenseZoo(out, data)
    build(zoo, data)

    conventions = {
        **base.manifest_conventions(),
        "input": "NAME.input.json: {\"inputs\":[{name, shape [N,F], datatype FP32, data}]}, one tensor per graph "
                 "input in graph input order, data flattened row-major",
        "expected": "NAME.expected.json: ONNX Runtime's outputs in graph output order, "
                    "{\"outputs\":[{name, shape, datatype, data}]}; labels INT64, scores and regression outputs "
                    "FP32",
        "nan": "no NaN or infinity anywhere in this zoo",
        "zipmap": "not used in this zoo (skl2onnx classifiers converted with zipmap disabled)",
        "spec": "no NAME.spec.json in this zoo: ORT agrees with the float64 reference on every model",
        "tolerance": f"labels exact; scores within 1e-5 relative: |a-b| <= {RTOL}*max(1,|b|), b the expected "
                     "(ORT) value; the generator checks ORT against a float64 forward pass (hand-built models) "
                     "or scikit-learn (skl2onnx models) with this bound, and that no row's top two scores are "
                     f"within {TIE_GAP} (ort_vs_reference.near_ties is 0 everywhere)",
        "ops": "sorted distinct op_type of the graph's nodes, prefixed with the domain where it is not ai.onnx",
        "layers": "widths of the hidden layers, input side first ([] for logistic regression); depth = their number",
        "style": "gemm: sklearn-by-hand (Gemm B [K,N], transB=0, scaler Sub+Div, opset 13); torch: torch.onnx-like "
                 "(Gemm transB=1 with weight [out,in], MatMul+Add, 1-D biases, opset 17); skl2onnx: converter "
                 "output",
    }
    manifest = {"generator": GENERATOR, "command": f"python3 {GENERATOR}",
                "versions": base.manifest_versions(), "conventions": conventions, "models": zoo.entries}
    base.write_json(out / "manifest.json", manifest)

    w = max(len(r[0]) for r in zoo.table)
    print(f"{'model':<{w}}  {'layers':<16} {'rows':>4}  {'max|diff|':>9}  {'scaled':>8}  {'bytes':>7}  ops")
    for name, ops, layers, rows, diff, scaled, size in zoo.table:
        print(f"{name:<{w}}  {layers:<16} {rows:>4}  {diff:9.2e}  {scaled:8.2e}  {size:>7}  {ops}")
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"{len(zoo.entries)} models, directory {total} B")
    if total > MAX_DIR_BYTES:
        zoo.failures.append(f"size budget exceeded: directory {total} B > {MAX_DIR_BYTES} B")
    if zoo.failures:
        for msg in zoo.failures:
            print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)
    print("OK: ORT agrees with the float64 reference (and scikit-learn) on every model")


if __name__ == "__main__":
    main()
