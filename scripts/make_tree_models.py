#!/usr/bin/env python3
"""Build the tree-ensemble reference zoo in models/trees/.

Run from the repository root:

    python3 scripts/make_tree_models.py

It writes, for every model NAME:

    models/trees/NAME.onnx           the model
    models/trees/NAME.input.json     a fixed input set, Open Inference Protocol
                                     request form {"inputs":[{name,shape,datatype,data}]}
    models/trees/NAME.expected.json  ONNX Runtime's outputs for that input, OIP
                                     response form {"outputs":[...]}
    models/trees/NAME.spec.json      (only where ORT deviates from the ONNX spec)
                                     what the spec says the outputs should be

plus models/trees/manifest.json, which describes every model.

Two families of models:

* Real models trained on scikit-learn's bundled datasets (breast cancer:
  binary, 30 features; diabetes: regression, 10 features; wine: 3 classes,
  13 features) with scikit-learn, XGBoost and LightGBM, converted with
  skl2onnx / onnxmltools. Some are trained and tested with 10% of the cells
  set to NaN. Three are rewrites: a fitted random forest rebuilt as
  TreeEnsembleRegressor ai.onnx.ml 3 with float64 *_as_tensor attributes and
  as TreeEnsemble (ai.onnx.ml 5), and a converted HistGradientBoosting model
  rewritten as TreeEnsemble.
* Hand-built models (onnx.helper, opsets chosen explicitly) that exercise one
  attribute or behaviour of TreeEnsembleClassifier / TreeEnsembleRegressor
  (ai.onnx.ml 1-3) and TreeEnsemble (ai.onnx.ml 5) each, with input sets that
  hit thresholds exactly, on either side, and with NaN.

Every model is also evaluated by an independent implementation of the ONNX
spec written in this file (ReferenceEnsemble, float64 numpy). Each model
declares whether ONNX Runtime is expected to agree with it; the script exits
non-zero if what it observes differs from what is declared, so a new ORT
version that fixes or introduces a deviation is noticed. Real models are also
checked against the library that trained them (labels, max |diff|, recorded
in the manifest).

JSON conventions: NaN is written as null (JSON has no NaN); float32 values are
written as the shortest repr of the float32 value widened to float64, so both
parsing as f64 then casting to f32, and parsing as f32 directly, give the
same bits. No input or output is infinite.

Output is deterministic: two runs give byte-identical files.
"""

import os

# Single-threaded BLAS/OpenMP keeps training bit-reproducible run to run.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import scipy  # noqa: E402
import scipy.special  # noqa: E402
import sklearn  # noqa: E402
import skl2onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine  # noqa: E402
from sklearn.ensemble import (ExtraTreesClassifier, GradientBoostingClassifier,  # noqa: E402
                              GradientBoostingRegressor, HistGradientBoostingClassifier,
                              HistGradientBoostingRegressor, RandomForestClassifier,
                              RandomForestRegressor)
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402

try:  # optional: XGBoost / LightGBM models through onnxmltools
    import onnxmltools  # noqa: E402
    import xgboost  # noqa: E402
    import lightgbm  # noqa: E402
    from onnxmltools import convert_lightgbm, convert_xgboost  # noqa: E402
    from onnxmltools.convert.common.data_types import FloatTensorType as MltFloatTensorType  # noqa: E402
    HAVE_BOOSTERS = True
except ImportError as _e:  # pragma: no cover - depends on the environment
    HAVE_BOOSTERS = False
    _BOOSTER_IMPORT_ERROR = str(_e)

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "models" / "trees"
PRODUCER = "cordon scripts/make_tree_models.py"

SPLIT_SEED = 42          # train_test_split random_state
TEST_SIZE = 0.25
MODEL_SEED = 0           # random_state of every estimator
NAN_FRACTION = 0.10      # share of cells set to NaN in the *_nan datasets
NAN_SEEDS = {"bc": 1, "diab": 2, "wine": 3}
MAX_ROWS = 200
# Tolerance used when comparing ORT with the spec reference evaluator and
# with the training library (the Rust tests use 1e-5 relative).
RTOL = 1e-5
ATOL = 1e-6

# skl2onnx: the ONNX (core) opset of converted models. It picks the lowest
# ai.onnx.ml opset that has the ops it needs (1 for the tree ops).
SKL2ONNX_TARGET_OPSET = 17
ONNXMLTOOLS_TARGET_OPSET = 15   # highest onnxmltools 1.16 accepts

MODES6 = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
V5_MODE = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3,
           "BRANCH_EQ": 4, "BRANCH_NEQ": 5, "BRANCH_MEMBER": 6}
V5_MODE_NAME = {v: k for k, v in V5_MODE.items()}
V5_AGG = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
V5_POST = {"NONE": 0, "SOFTMAX": 1, "LOGISTIC": 2, "SOFTMAX_ZERO": 3, "PROBIT": 4}

OIP_DTYPE = {np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
             np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}
ONNX_DTYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32}


def f32(x):
    return float(np.float32(x))


def next_up32(x):
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


def next_down32(x):
    return float(np.nextafter(np.float32(x), np.float32(-np.inf)))


# ---------------------------------------------------------------------------
# skl2onnx 1.20 + onnx 1.23: HistGradientBoosting leaves pass a Python bool as
# nodes_missing_value_tracks_true, which onnx.helper.make_attribute now
# rejects ("Expected an int, got a boolean"). Cast it to int; the value is
# unchanged.
# ---------------------------------------------------------------------------
def _patch_skl2onnx():
    import skl2onnx.common.tree_ensemble as te
    if getattr(te.add_node, "_cordon_patched", False):
        return
    original = te.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    add_node._cordon_patched = True
    te.add_node = add_node


_patch_skl2onnx()


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------
def _dump(obj, indent=0):
    """Compact-but-diffable JSON (same layout as scripts/make_models.py): a
    list of scalars goes on one line, anything holding containers gets one
    element per line."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        items = [f"{inner}{_dump(v, indent + 1)}" for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    return json.dumps(obj, separators=(", ", ": "), allow_nan=False, ensure_ascii=False)


def write_json(path, obj):
    text = _dump(obj) + "\n"
    assert json.loads(text) == obj
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def json_values(arr):
    """Flattened row-major list: float -> repr of the (float32 widened) value,
    NaN -> None, ints -> int, strings -> str."""
    arr = np.asarray(arr)
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f":
        out = []
        for v in flat.astype(np.float64):
            if math.isnan(v):
                out.append(None)
            else:
                assert math.isfinite(v), "infinite values cannot be written to JSON"
                out.append(float(v))
        return out
    if arr.dtype.kind in "iu":
        return [int(v) for v in flat]
    if arr.dtype.kind in "OUS":
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
    raise TypeError(arr.dtype)


def oip_tensor(name, arr, datatype=None):
    arr = np.asarray(arr)
    if datatype is None:
        datatype = "BYTES" if arr.dtype.kind in "OUS" else OIP_DTYPE[arr.dtype]
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": json_values(arr)}


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------------
# Spec reference evaluator
# ---------------------------------------------------------------------------
def _attrs(node):
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if a.type == onnx.AttributeProto.TENSOR:
            v = numpy_helper.to_array(v)
        elif isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


class ReferenceEnsemble:
    """The semantics of TreeEnsembleClassifier / TreeEnsembleRegressor (ai.onnx.ml
    1 and 3) and TreeEnsemble (ai.onnx.ml 5) as the ONNX operator documents
    state them, evaluated in float64:

    * a node sends x to its true branch when the comparison holds
      (BRANCH_LEQ x <= v, LT x < v, GTE x >= v, GT x > v, EQ x == v,
      NEQ x != v, MEMBER x in set); when x is NaN the branch is chosen by
      nodes_missing_value_tracks_true alone (1: true, 0 or absent: false);
    * a leaf adds all its votes (target/class id, weight); the votes of one
      tree for a target are added;
    * aggregate_function over trees: SUM, AVERAGE (sum / number of trees),
      MIN / MAX (over the trees that voted for that target); a target no tree
      voted for scores 0; base_values are added after aggregation;
    * post_transform: SOFTMAX and SOFTMAX_ZERO over the targets/classes of a
      row (SOFTMAX_ZERO leaves exact zeros at 0), LOGISTIC and PROBIT (the
      exact inverse normal CDF) element-wise;
    * classifier label: the class with the largest score (after base_values,
      before post_transform), first one on ties.

    Where the spec says nothing, ORT's convention is used: a binary
    classifier (2 labels) whose weights all go to class id 0 carries one score
    s for the positive class; label = labels[1] iff s > 0.5 (all weights >= 0)
    or s > 0 (some weight < 0); scores = [1-s, s] or [-s, s], and
    [logistic(-s), logistic(s)] under LOGISTIC.
    """

    def __init__(self, node, input_dtype):
        a = _attrs(node)
        self.op = node.op_type
        self.classifier = self.op == "TreeEnsembleClassifier"
        self.labels = None
        if self.op == "TreeEnsemble":
            self._parse_v5(a)
        else:
            self._parse_v1(a, input_dtype)

    # -- parsing -----------------------------------------------------------
    def _parse_v1(self, a, input_dtype):
        if "nodes_values_as_tensor" in a:
            values = np.asarray(a["nodes_values_as_tensor"], dtype=np.float64)
        else:
            values = np.asarray(a.get("nodes_values", []), dtype=np.float32).astype(np.float64)
        prefix = "class" if self.classifier else "target"
        if f"{prefix}_weights_as_tensor" in a:
            weights = np.asarray(a[f"{prefix}_weights_as_tensor"], dtype=np.float64)
        else:
            weights = np.asarray(a[f"{prefix}_weights"], dtype=np.float32).astype(np.float64)
        if "base_values_as_tensor" in a:
            base = np.asarray(a["base_values_as_tensor"], dtype=np.float64)
        else:
            base = np.asarray(a.get("base_values", []), dtype=np.float32).astype(np.float64)
        if self.classifier:
            self.labels = a.get("classlabels_strings") or a.get("classlabels_int64s")
            self.n_targets = len(self.labels)
            self.aggregate = "SUM"
            ids = a["class_ids"]
        else:
            self.n_targets = a.get("n_targets", 1)
            self.aggregate = a.get("aggregate_function", "SUM")
            ids = a["target_ids"]
        self.post = a.get("post_transform", "NONE")
        self.base = base
        self.all_weights = weights
        self.class_ids = list(ids)
        treeids, nodeids = a["nodes_treeids"], a["nodes_nodeids"]
        tracks = a.get("nodes_missing_value_tracks_true", [0] * len(nodeids))
        index = {}
        nodes = []
        for i, (t, n) in enumerate(zip(treeids, nodeids)):
            index[(t, n)] = i
            mode = a["nodes_modes"][i]
            nodes.append({"tree": t, "leaf": mode == "LEAF", "mode": mode, "feature": a["nodes_featureids"][i],
                          "thr": values[i], "tracks": bool(tracks[i]), "votes": []})
        for i, node in enumerate(nodes):
            if not node["leaf"]:
                node["t"] = index[(node["tree"], a["nodes_truenodeids"][i])]
                node["f"] = index[(node["tree"], a["nodes_falsenodeids"][i])]
        for t, n, k, w in zip(a[f"{prefix}_treeids"], a[f"{prefix}_nodeids"], ids, weights):
            node = nodes[index[(t, n)]]
            assert node["leaf"], "vote on an interior node"
            node["votes"].append((int(k), float(w)))
        children = {nodes[i][c] for i in range(len(nodes)) if not nodes[i]["leaf"] for c in ("t", "f")}
        roots = {}
        for i, node in enumerate(nodes):
            if i not in children:
                assert node["tree"] not in roots, f"tree {node['tree']} has two roots"
                roots[node["tree"]] = i
        self.nodes = nodes
        self.roots = [roots[t] for t in sorted(roots)]

    def _parse_v5(self, a):
        self.n_targets = a.get("n_targets", 1)
        self.aggregate = {v: k for k, v in V5_AGG.items()}[a.get("aggregate_function", 1)]
        self.post = {v: k for k, v in V5_POST.items()}[a.get("post_transform", 0)]
        self.base = np.zeros(0)
        splits = np.asarray(a["nodes_splits"]).astype(np.float64)
        modes = [int(m) for m in np.asarray(a["nodes_modes"]).reshape(-1)]
        members = list(np.asarray(a.get("membership_values", np.zeros(0))).astype(np.float64))
        tracks = a.get("nodes_missing_value_tracks_true", [0] * len(modes))
        leaf_w = np.asarray(a["leaf_weights"]).astype(np.float64)
        leaf_t = a["leaf_targetids"]
        self.all_weights = leaf_w
        nodes = []
        leaf_base = len(modes)
        for i, m in enumerate(modes):
            node = {"leaf": False, "mode": V5_MODE_NAME[m], "feature": a["nodes_featureids"][i],
                    "thr": splits[i], "tracks": bool(tracks[i])}
            if m == V5_MODE["BRANCH_MEMBER"]:
                s = []
                while not math.isnan(members[0]):
                    s.append(members.pop(0))
                members.pop(0)
                node["members"] = set(s)
            node["t"] = (leaf_base if a["nodes_trueleafs"][i] else 0) + a["nodes_truenodeids"][i]
            node["f"] = (leaf_base if a["nodes_falseleafs"][i] else 0) + a["nodes_falsenodeids"][i]
            nodes.append(node)
        assert not members, "unused membership_values"
        for t, w in zip(leaf_t, leaf_w):
            nodes.append({"leaf": True, "votes": [(int(t), float(w))]})
        self.nodes = nodes
        self.roots = list(a["tree_roots"])

    # -- evaluation --------------------------------------------------------
    @staticmethod
    def _goes_true(node, x):
        if math.isnan(x):
            return node["tracks"]
        mode, v = node["mode"], node["thr"]
        if mode == "BRANCH_LEQ":
            return x <= v
        if mode == "BRANCH_LT":
            return x < v
        if mode == "BRANCH_GTE":
            return x >= v
        if mode == "BRANCH_GT":
            return x > v
        if mode == "BRANCH_EQ":
            return x == v
        if mode == "BRANCH_NEQ":
            return x != v
        if mode == "BRANCH_MEMBER":
            return x in node["members"]
        raise ValueError(mode)

    def leaf_votes(self, row):
        for root in self.roots:
            i = root
            while not self.nodes[i]["leaf"]:
                node = self.nodes[i]
                i = node["t"] if self._goes_true(node, float(row[node["feature"]])) else node["f"]
            yield self.nodes[i]["votes"]

    def raw_scores(self, X):
        X = np.asarray(X, dtype=np.float64)
        T = self.n_targets
        out = np.zeros((X.shape[0], T))
        n_trees = len(self.roots)
        for r, row in enumerate(X):
            per_tree = []
            for votes in self.leaf_votes(row):
                acc = {}
                for k, w in votes:
                    acc[k] = acc.get(k, 0.0) + w
                per_tree.append(acc)
            for k in range(T):
                vals = [acc[k] for acc in per_tree if k in acc]
                if not vals:
                    s = 0.0
                elif self.aggregate == "SUM":
                    s = math.fsum(vals)
                elif self.aggregate == "AVERAGE":
                    s = math.fsum(vals) / n_trees
                elif self.aggregate == "MIN":
                    s = min(vals)
                elif self.aggregate == "MAX":
                    s = max(vals)
                else:
                    raise ValueError(self.aggregate)
                out[r, k] = s
        return out

    @staticmethod
    def post_transform(post, s):
        s = np.array(s, dtype=np.float64)
        if post == "NONE":
            return s
        if post == "LOGISTIC":
            return 1.0 / (1.0 + np.exp(-s))
        if post == "PROBIT":
            return scipy.special.ndtri(s)
        if post == "SOFTMAX":
            e = np.exp(s - s.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        if post == "SOFTMAX_ZERO":
            out = np.zeros_like(s)
            for r in range(s.shape[0]):
                nz = s[r] != 0
                if nz.any():
                    e = np.exp(s[r, nz] - s[r, nz].max())
                    out[r, nz] = e / e.sum()
            return out
        raise ValueError(post)

    def run(self, X):
        """Returns (labels or None, scores [N, T or C])."""
        raw = self.raw_scores(X)
        if not self.classifier:
            if self.base.size:
                raw = raw + self.base.reshape(1, -1)
            return None, self.post_transform(self.post, raw)
        labels = self.labels
        ids = set(self.class_ids)
        if len(labels) == 2 and len(ids) == 1:
            if ids != {0}:
                raise NotImplementedError("binary classifier with weights on class 1 only")
            if self.post == "PROBIT":
                raise NotImplementedError("binary single-column PROBIT")
            if self.base.size > 1:
                raise NotImplementedError("binary single-column with 2 base_values")
            s = raw[:, 0] + (self.base[0] if self.base.size else 0.0)
            positive = bool(np.all(self.all_weights >= 0))
            win = s > 0.5 if positive else s > 0
            out_labels = [labels[1] if w else labels[0] for w in win]
            if self.post == "LOGISTIC":
                scores = np.stack([1.0 / (1.0 + np.exp(s)), 1.0 / (1.0 + np.exp(-s))], axis=1)
            elif positive:
                scores = np.stack([1.0 - s, s], axis=1)
            else:
                scores = np.stack([-s, s], axis=1)
            return out_labels, scores
        if self.base.size:
            raw = raw + self.base.reshape(1, -1)
        idx = np.argmax(raw, axis=1)  # first maximum on ties
        return [labels[i] for i in idx], self.post_transform(self.post, raw)


def tree_nodes(model):
    return [n for n in model.graph.node if n.op_type in ("TreeEnsembleClassifier", "TreeEnsembleRegressor",
                                                         "TreeEnsemble")]


def count_trees(node):
    a = _attrs(node)
    if node.op_type == "TreeEnsemble":
        return len(a["tree_roots"])
    return len(set(a["nodes_treeids"]))


# ---------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------
def ort_session(model_bytes):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


def zipmap_keys(model):
    for n in model.graph.node:
        if n.op_type == "ZipMap":
            a = _attrs(n)
            return a.get("classlabels_strings") or a.get("classlabels_int64s")
    return None


def ort_outputs(model, X, input_name):
    """Run ORT; returns [(name, ndarray, is_zipmap)] in graph output order."""
    sess = ort_session(model.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    res = sess.run(names, {input_name: X})
    out = []
    for name, value in zip(names, res):
        if isinstance(value, list):  # ZipMap: seq(map(key, float))
            keys = zipmap_keys(model)
            arr = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
            out.append((name, arr, True))
        else:
            out.append((name, np.asarray(value), False))
    return out


def node_only_model(model, node, input_dtype, n_features):
    """A model holding just `node` (fed by the graph input), for comparing the
    tree operator alone with the reference evaluator."""
    a = _attrs(node)
    if node.op_type == "TreeEnsembleClassifier":
        lab = TensorProto.STRING if "classlabels_strings" in a else TensorProto.INT64
        n_cls = len(a.get("classlabels_strings") or a.get("classlabels_int64s"))
        outs = [helper.make_tensor_value_info(node.output[0], lab, ["N"]),
                helper.make_tensor_value_info(node.output[1], TensorProto.FLOAT, ["N", n_cls])]
    else:
        out_t = ONNX_DTYPE[np.dtype(input_dtype)] if node.op_type == "TreeEnsemble" else TensorProto.FLOAT
        outs = [helper.make_tensor_value_info(node.output[0], out_t, ["N", a.get("n_targets", 1)])]
    g = helper.make_graph([node], "node_only",
                          [helper.make_tensor_value_info(node.input[0], ONNX_DTYPE[np.dtype(input_dtype)],
                                                         ["N", n_features])], outs)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def compare(ort_labels, ort_scores, ref_labels, ref_scores):
    """Returns (n_label_mismatch, n_score_rows_mismatch, max_abs, max_rel)."""
    n_lab = 0
    if ref_labels is not None:
        ol = [v.decode() if isinstance(v, bytes) else v for v in np.asarray(ort_labels).tolist()]
        n_lab = sum(1 for a, b in zip(ol, ref_labels) if a != b)
    o = np.asarray(ort_scores, dtype=np.float64).reshape(ref_scores.shape)
    r = np.asarray(ref_scores, dtype=np.float64)
    both_nan = np.isnan(o) & np.isnan(r)
    diff = np.where(both_nan, 0.0, np.abs(o - r))
    diff = np.where(np.isnan(diff), np.inf, diff)
    bad = diff > (ATOL + RTOL * np.maximum(np.abs(o), np.abs(r)))
    rows_bad = int(np.sum(bad.any(axis=1)))
    rel = diff / np.maximum(np.maximum(np.abs(o), np.abs(r)), 1e-30)
    return n_lab, rows_bad, float(np.max(diff)) if diff.size else 0.0, float(np.max(rel)) if rel.size else 0.0


# ---------------------------------------------------------------------------
# Hand-built trees: a tiny DSL
# ---------------------------------------------------------------------------
def L(*votes):
    """Leaf: votes are (target or class id, weight)."""
    return ("L", list(votes))


def B(feature, mode, thr, true_branch, false_branch, miss=0):
    """Branch. thr is a number, or a list of members for BRANCH_MEMBER (v5)."""
    return ("B", feature, mode, thr, true_branch, false_branch, miss)


def v1_attrs(trees, classifier, as_tensor=False, tracks="auto", hitrates=False):
    """TreeEnsembleClassifier/Regressor attributes, nodes numbered in preorder
    from 0 within each tree. tracks: 'auto' (attribute present iff some node
    has miss=1), 'present' or 'absent'."""
    n = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes", "values",
                         "nodes_truenodeids", "nodes_falsenodeids", "tracks")}
    votes = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}

    def emit(tree_id, t, counter):
        my_id = counter[0]
        counter[0] += 1
        i = len(n["nodes_nodeids"])
        n["nodes_treeids"].append(tree_id)
        n["nodes_nodeids"].append(my_id)
        if t[0] == "L":
            n["nodes_featureids"].append(0)
            n["nodes_modes"].append("LEAF")
            n["values"].append(0.0)
            n["nodes_truenodeids"].append(0)
            n["nodes_falsenodeids"].append(0)
            n["tracks"].append(0)
            for k, w in t[1]:
                votes["treeids"].append(tree_id)
                votes["nodeids"].append(my_id)
                votes["ids"].append(k)
                votes["weights"].append(w)
            return my_id
        _, feature, mode, thr, tb, fb, miss = t
        assert mode in MODES6
        n["nodes_featureids"].append(feature)
        n["nodes_modes"].append(mode)
        n["values"].append(thr)
        n["nodes_truenodeids"].append(None)
        n["nodes_falsenodeids"].append(None)
        n["tracks"].append(miss)
        n["nodes_truenodeids"][i] = emit(tree_id, tb, counter)
        n["nodes_falsenodeids"][i] = emit(tree_id, fb, counter)
        return my_id

    for tree_id, t in enumerate(trees):
        emit(tree_id, t, [0])
    attrs = {k: n[k] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_modes",
                               "nodes_truenodeids", "nodes_falsenodeids")}
    if as_tensor:
        attrs["nodes_values_as_tensor"] = numpy_helper.from_array(np.array(n["values"], dtype=np.float64))
    else:
        attrs["nodes_values"] = [f32(v) for v in n["values"]]
    if tracks == "present" or (tracks == "auto" and any(n["tracks"])):
        attrs["nodes_missing_value_tracks_true"] = n["tracks"]
    if hitrates:
        h = [1.0 / (1 + i % 3) for i in range(len(n["values"]))]
        if as_tensor:
            attrs["nodes_hitrates_as_tensor"] = numpy_helper.from_array(np.array(h, dtype=np.float64))
        else:
            attrs["nodes_hitrates"] = h
    p = "class" if classifier else "target"
    attrs[f"{p}_treeids"] = votes["treeids"]
    attrs[f"{p}_nodeids"] = votes["nodeids"]
    attrs[f"{p}_ids"] = votes["ids"]
    if as_tensor:
        attrs[f"{p}_weights_as_tensor"] = numpy_helper.from_array(np.array(votes["weights"], dtype=np.float64))
    else:
        attrs[f"{p}_weights"] = [f32(w) for w in votes["weights"]]
    return attrs


def v5_attrs(trees, dtype, n_targets, aggregate, post, tracks=True, hitrates=False):
    """TreeEnsemble (ai.onnx.ml 5) attributes. Interior nodes and leaves are
    numbered in preorder across the ensemble. A tree that is a single leaf is
    one nodes_* entry whose two branches point at the same leaf."""
    nodes = {k: [] for k in ("featureids", "modes", "splits", "truenodeids", "trueleafs",
                             "falsenodeids", "falseleafs", "tracks")}
    leaf_t, leaf_w, members, roots = [], [], [], []

    def leaf(t):
        assert len(t[1]) == 1, "a TreeEnsemble leaf has exactly one target"
        (k, w), = t[1]
        leaf_t.append(k)
        leaf_w.append(w)
        return len(leaf_t) - 1

    def emit(t):
        i = len(nodes["modes"])
        _, feature, mode, thr, tb, fb, miss = t
        nodes["featureids"].append(feature)
        nodes["modes"].append(V5_MODE[mode])
        if mode == "BRANCH_MEMBER":
            nodes["splits"].append(0.0)
            members.extend(list(thr) + [float("nan")])
        else:
            nodes["splits"].append(thr)
        nodes["tracks"].append(miss)
        for key in ("truenodeids", "trueleafs", "falsenodeids", "falseleafs"):
            nodes[key].append(None)
        for side, sub in (("true", tb), ("false", fb)):
            if sub[0] == "L":
                nodes[f"{side}nodeids"][i] = leaf(sub)
                nodes[f"{side}leafs"][i] = 1
            else:
                nodes[f"{side}nodeids"][i] = emit(sub)
                nodes[f"{side}leafs"][i] = 0
        return i

    for t in trees:
        if t[0] == "L":
            i = len(nodes["modes"])
            li = leaf(t)
            for key, v in (("featureids", 0), ("modes", 0), ("splits", 0.0), ("truenodeids", li),
                           ("trueleafs", 1), ("falsenodeids", li), ("falseleafs", 1), ("tracks", 0)):
                nodes[key].append(v)
            roots.append(i)
        else:
            roots.append(emit(t))
    attrs = {
        "n_targets": n_targets,
        "aggregate_function": V5_AGG[aggregate],
        "post_transform": V5_POST[post],
        "tree_roots": roots,
        "nodes_featureids": nodes["featureids"],
        "nodes_modes": numpy_helper.from_array(np.array(nodes["modes"], dtype=np.uint8), name="nodes_modes"),
        "nodes_splits": numpy_helper.from_array(np.array(nodes["splits"], dtype=dtype), name="nodes_splits"),
        "nodes_truenodeids": nodes["truenodeids"],
        "nodes_trueleafs": nodes["trueleafs"],
        "nodes_falsenodeids": nodes["falsenodeids"],
        "nodes_falseleafs": nodes["falseleafs"],
        "leaf_targetids": leaf_t,
        "leaf_weights": numpy_helper.from_array(np.array(leaf_w, dtype=dtype), name="leaf_weights"),
    }
    if tracks:
        attrs["nodes_missing_value_tracks_true"] = nodes["tracks"]
    if members:
        attrs["membership_values"] = numpy_helper.from_array(np.array(members, dtype=dtype),
                                                             name="membership_values")
    if hitrates:
        attrs["nodes_hitrates"] = numpy_helper.from_array(
            np.array([1.0 / (1 + i % 3) for i in range(len(nodes["modes"]))], dtype=dtype), name="nodes_hitrates")
    return attrs


def hand_model(name, op, attrs, in_dtype, n_features, outputs, ml_opset, description):
    """outputs: list of (name, onnx elem type, shape)."""
    node = helper.make_node(op, ["X"], [o[0] for o in outputs], domain="ai.onnx.ml", name=name, **attrs)
    graph = helper.make_graph(
        [node], name,
        [helper.make_tensor_value_info("X", ONNX_DTYPE[np.dtype(in_dtype)], ["N", n_features])],
        [helper.make_tensor_value_info(o[0], o[1], o[2]) for o in outputs],
        doc_string=description)
    core = 21 if ml_opset >= 5 else 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", core),
                                                    helper.make_opsetid("ai.onnx.ml", ml_opset)],
                              producer_name=PRODUCER, producer_version="1", doc_string=description)
    model.ir_version = 10 if ml_opset >= 5 else 8
    return model


def grid(*axes):
    """Cartesian product of per-feature value lists, rows in lexicographic order."""
    mesh = np.meshgrid(*[np.array(a, dtype=np.float64) for a in axes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


NAN = float("nan")


def manifest_versions():
    """The library versions a manifest records (this zoo's and scripts/make_tree_zoo2.py's)."""
    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                "scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__,
                "onnxruntime": ort.__version__}
    if HAVE_BOOSTERS:
        versions.update({"onnxmltools": onnxmltools.__version__, "xgboost": xgboost.__version__,
                         "lightgbm": lightgbm.__version__})
    return versions


def manifest_conventions():
    """The file conventions a manifest states (shared with scripts/make_tree_zoo2.py)."""
    return {
        "input": "NAME.input.json: {\"inputs\":[{name, shape [N,F], datatype FP32|FP64|INT64|INT32, data}]}, "
                 "data flattened row-major",
        "nan": "null in data means NaN (inputs and outputs)",
        "float32": "FP32 values are the float32 value widened to float64 and printed with repr",
        "expected": "NAME.expected.json: ONNX Runtime's outputs in graph output order, "
                    "{\"outputs\":[{name, shape, datatype, data}]}; labels INT64 or BYTES (strings), "
                    "scores FP32 (FP64 for TreeEnsemble with float64 input)",
        "zipmap": "a ZipMap output (seq(map)) is written as an FP32 tensor [N, n_classes] whose columns follow "
                  "zipmap_keys; the output object and the document carry \"zipmap\": true",
        "spec": "NAME.spec.json (same form) only where ORT deviates from the ONNX spec; see ort_deviation",
        "tolerance": "labels exact; scores within 1e-5 relative (the generator checks ORT against the spec "
                     f"evaluator with |a-b| <= {ATOL} + {RTOL}*max(|a|,|b|))",
    }


# ---------------------------------------------------------------------------
# The zoo
# ---------------------------------------------------------------------------
class Zoo:
    def __init__(self, out_dir, generator="scripts/make_tree_models.py"):
        self.out = out_dir
        self.generator = generator  # recorded in each model's metadata_props
        self.entries = []
        self.failures = []

    def add(self, name, model, X, input_name, *, source, covers, ort_deviation=None, library=None, notes=None,
            check_full=True):
        """Write NAME.onnx/.input.json/.expected.json (and .spec.json), check
        ORT against the reference evaluator, record the manifest entry.

        ort_deviation: None if ORT must agree with the spec evaluator on this
        model, else a sentence saying how it deviates (it must then deviate).
        library: (labels or None, scores) of the training library on X, to
        record how far ORT is from it.
        """
        X = np.asarray(X)
        assert X.ndim == 2 and X.shape[0] <= MAX_ROWS, X.shape
        # tidy the converter's opset list: skl2onnx may list the same domain
        # twice, and its order follows Python's string hashing (PYTHONHASHSEED)
        seen = {}
        for o in model.opset_import:
            seen[o.domain] = max(seen.get(o.domain, 0), o.version)
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(seen.items()))
        # skl2onnx and onnxmltools name the graph with a random uuid; the only
        # nondeterministic byte in their output
        model.graph.name = name
        if not model.doc_string:
            model.doc_string = source.get("description", "")
        meta = {p.key: p.value for p in model.metadata_props}
        meta.update({"cordon_zoo_name": name, "cordon_generator": self.generator})
        del model.metadata_props[:]
        helper.set_model_props(model, meta)
        onnx.checker.check_model(model, full_check=check_full)

        path = self.out / f"{name}.onnx"
        path.write_bytes(model.SerializeToString(deterministic=True))
        write_json(self.out / f"{name}.input.json",
                   {"inputs": [oip_tensor(input_name, X)]})

        outs = ort_outputs(model, X, input_name)
        zipmap = any(z for _, _, z in outs)
        trees = tree_nodes(model)
        assert len(trees) == 1, f"{name}: expected exactly one tree-ensemble node"
        tnode = trees[0]

        # ORT vs the spec reference evaluator, on the tree node alone.
        spec_status = "not checked"
        ref = ReferenceEnsemble(tnode, X.dtype)
        spec_files = None
        if tnode.input[0] == input_name:
            alone = node_only_model(model, tnode, X.dtype, X.shape[1])
            node_out = [v for _, v, _ in ort_outputs(alone, X, input_name)]
            ref_labels, ref_scores = ref.run(X)
            if ref.classifier:
                n_lab, n_rows, max_abs, max_rel = compare(node_out[0], node_out[1], ref_labels, ref_scores)
            else:
                n_lab, n_rows, max_abs, max_rel = compare(None, node_out[0], None, ref_scores)
            differs = bool(n_lab or n_rows)
            spec_status = {"agrees": not differs, "label_mismatches": n_lab, "score_rows_outside_tolerance": n_rows,
                           "max_abs_diff": max_abs, "max_rel_diff": max_rel}
            if ort_deviation is None and differs:
                self.failures.append(f"{name}: ORT disagrees with the spec evaluator ({spec_status})")
            if ort_deviation is not None and not differs:
                self.failures.append(f"{name}: declared ORT deviation not observed: {ort_deviation}")
            if differs:
                # whole-graph == the tree node for every hand-built model
                assert len(model.graph.node) == 1
                spec_outs = []
                if ref.classifier:
                    lab_arr = np.array(ref_labels, dtype=object if isinstance(ref_labels[0], str) else np.int64)
                    spec_outs.append(oip_tensor(model.graph.output[0].name, lab_arr))
                    spec_outs.append(oip_tensor(model.graph.output[1].name,
                                                ref_scores.astype(np.float32), "FP32"))
                else:
                    dt = np.float64 if (tnode.op_type == "TreeEnsemble" and X.dtype == np.float64) else np.float32
                    spec_outs.append(oip_tensor(model.graph.output[0].name, ref_scores.astype(dt)))
                write_json(self.out / f"{name}.spec.json", {"outputs": spec_outs})
                spec_files = f"{name}.spec.json"
        else:
            assert ort_deviation is None

        doc = {"outputs": []}
        for out_name, arr, is_zip in outs:
            t = oip_tensor(out_name, arr.astype(np.float32) if is_zip else arr)
            if is_zip:
                t["zipmap"] = True
                t["zipmap_keys"] = list(zipmap_keys(model))
            doc["outputs"].append(t)
        if zipmap:
            doc["zipmap"] = True
        write_json(self.out / f"{name}.expected.json", doc)

        lib_status = None
        if library is not None:
            lib_labels, lib_scores = library
            lab_out = next((v for n_, v, _ in outs if v.dtype.kind in "iOUS" and v.ndim == 1), None)
            score_out = [v for n_, v, _ in outs if v.dtype.kind == "f"][0]
            n_lab = 0
            if lib_labels is not None:
                ol = [v.decode() if isinstance(v, bytes) else v for v in lab_out.tolist()]
                n_lab = sum(1 for a, b in zip(ol, list(lib_labels)) if a != b)
            d = np.abs(score_out.astype(np.float64).reshape(np.shape(lib_scores)) - lib_scores)
            lib_status = {"label_mismatches": n_lab, "max_abs_diff": float(d.max()),
                          "rows_abs_diff_over_1e-3": int(np.sum(d.reshape(len(d), -1).max(axis=1) > 1e-3))}

        def tinfo(vi):
            tt = vi.type
            if tt.HasField("tensor_type"):
                dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                        for d in tt.tensor_type.shape.dim]
                elem = TensorProto.DataType.Name(tt.tensor_type.elem_type).lower()
                return {"name": vi.name, "type": f"tensor({elem})", "shape": dims}
            return {"name": vi.name, "type": "seq(map(...))" if tt.HasField("sequence_type") else str(tt)}

        tattrs = _attrs(tnode)
        if tnode.op_type == "TreeEnsemble":
            modes = [V5_MODE_NAME[int(v)] for v in np.asarray(tattrs["nodes_modes"]).ravel()]
        else:
            modes = tattrs["nodes_modes"]
        entry = {
            "name": name,
            "files": {
                "model": path.name,
                "input": f"{name}.input.json",
                "expected": f"{name}.expected.json",
                "spec": spec_files,
            },
            "sha256": {
                "model": sha256(path),
                "input": sha256(self.out / f"{name}.input.json"),
                "expected": sha256(self.out / f"{name}.expected.json"),
                "spec": sha256(self.out / spec_files) if spec_files else None,
            },
            "bytes": path.stat().st_size,
            "source": source,
            "opset_import": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "ir_version": model.ir_version,
            "ops": list(dict.fromkeys(f"{n.domain or 'ai.onnx'}:{n.op_type}" for n in model.graph.node)),
            "tree_op": f"ai.onnx.ml:{tnode.op_type}",
            "n_features": int(X.shape[1]),
            "n_trees": count_trees(tnode),
            "n_targets_or_classes": ref.n_targets,
            "aggregate_function": ref.aggregate if not ref.classifier else None,
            "post_transform": ref.post,
            "node_modes": sorted(set(modes)),
            "missing_value_tracks": "nodes_missing_value_tracks_true" in tattrs
                                    and any(tattrs["nodes_missing_value_tracks_true"]),
            "nan_inputs": bool(X.dtype.kind == "f" and np.isnan(X).any()),
            "n_rows": int(X.shape[0]),
            "inputs": [tinfo(i) for i in model.graph.input],
            "outputs": [tinfo(o) for o in model.graph.output],
            "zipmap": zipmap,
            "covers": covers,
            "ort_vs_spec": spec_status,
            "ort_deviation": ort_deviation,
        }
        if lib_status is not None:
            entry["ort_vs_library"] = lib_status
        if notes:
            entry["notes"] = notes
        self.entries.append(entry)
        if isinstance(spec_status, str):
            verdict = spec_status
        else:
            verdict = "agrees" if spec_status["agrees"] else "DEVIATES (declared)"
        print(f"{name}: {entry['bytes']} B, {entry['n_trees']} trees, {X.shape[0]} rows, "
              f"ops {entry['ops']}, ORT vs spec {verdict}"
              + (f", vs library {lib_status}" if lib_status else ""))


# ---------------------------------------------------------------------------
# Real models
# ---------------------------------------------------------------------------
def datasets():
    """float32-rounded features (the models see float32), fixed splits."""
    out = {}
    for key, loader, stratify in (("bc", load_breast_cancer, True), ("diab", load_diabetes, False),
                                  ("wine", load_wine, True)):
        d = loader()
        X = d.data.astype(np.float32).astype(np.float64)
        y = d.target
        Xn = X.copy()
        rng = np.random.default_rng(NAN_SEEDS[key])
        Xn[rng.random(X.shape) < NAN_FRACTION] = np.nan
        idx = np.arange(len(y))
        tr, te = train_test_split(idx, test_size=TEST_SIZE, random_state=SPLIT_SEED,
                                  stratify=y if stratify else None)
        out[key] = {"X": X, "Xn": Xn, "y": y, "tr": tr, "te": te,
                    "feature_names": [str(f) for f in d.feature_names],
                    "target_names": [str(t) for t in getattr(d, "target_names", [])]}
    return out


DATASET_DOC = {
    "bc": "sklearn.datasets.load_breast_cancer (UCI Breast Cancer Wisconsin (Diagnostic), 569 rows, 30 features, "
          "binary: 0=malignant, 1=benign)",
    "diab": "sklearn.datasets.load_diabetes (Efron et al. 2004 diabetes data, 442 rows, 10 standardised features, "
            "regression target: disease progression after one year)",
    "wine": "sklearn.datasets.load_wine (UCI Wine recognition, 178 rows, 13 features, 3 classes)",
}


def split_doc(key, nan):
    s = (f"features cast to float32; train_test_split(test_size={TEST_SIZE}, random_state={SPLIT_SEED}"
         + (", stratify=y)" if key != "diab" else ")"))
    if nan:
        s += (f"; before splitting, each cell set to NaN with probability {NAN_FRACTION} "
              f"(numpy default_rng({NAN_SEEDS[key]}).random(X.shape) < {NAN_FRACTION})")
    return s


def est_params(est):
    keys = ("n_estimators", "max_depth", "max_iter", "max_leaf_nodes", "num_leaves", "learning_rate",
            "random_state", "early_stopping", "tree_method", "n_jobs", "deterministic", "force_row_wise",
            "min_child_samples")
    p = est.get_params(deep=False)
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in p.items()
            if k in keys}


def skl_convert(est, n_features, zipmap=False, name="input"):
    options = None
    target = est
    if isinstance(est, Pipeline):
        target = est.steps[-1][1]
    if hasattr(target, "predict_proba"):
        options = {id(target): {"zipmap": zipmap}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_sklearn(est, initial_types=[(name, FloatTensorType([None, n_features]))],
                               target_opset=SKL2ONNX_TARGET_OPSET, options=options)


def build_real(zoo, data):
    bc, diab, wine = data["bc"], data["diab"], data["wine"]
    conv = {"skl2onnx": skl2onnx.__version__}

    def split(d, nan=False):
        X = d["Xn"] if nan else d["X"]
        return X[d["tr"]], d["y"][d["tr"]], X[d["te"]].astype(np.float32), d["y"][d["te"]]

    def source(key, est, nan, converter, extra=None):
        s = {"kind": type(est).__module__.split(".")[0], "estimator": type(est).__name__,
             "params": est_params(est) if not isinstance(est, Pipeline) else
             {"steps": [f"{n}: {type(e).__name__}({est_params(e)})" for n, e in est.steps]},
             "dataset": DATASET_DOC[key], "split": split_doc(key, nan), "converter": converter}
        if extra:
            s.update(extra)
        s["description"] = f"{type(est).__name__} on {key}" + (" with NaN" if nan else "")
        return s

    def clf(name, key, est, covers, nan=False, zipmap=False, labels=None):
        d = data[key]
        Xtr, ytr, Xte, yte = split(d, nan)
        if labels is not None:
            ytr = np.array(labels)[ytr]
        est.fit(Xtr, ytr)
        model = skl_convert(est, Xte.shape[1], zipmap=zipmap)
        lib = (est.predict(Xte), est.predict_proba(Xte))
        zoo.add(name, model, Xte, "input", source=source(key, est, nan, {"skl2onnx": conv["skl2onnx"],
                                                                         "options": {"zipmap": zipmap}}),
                covers=covers, library=lib)
        return est

    def reg(name, key, est, covers, nan=False):
        d = data[key]
        Xtr, ytr, Xte, yte = split(d, nan)
        est.fit(Xtr, ytr)
        model = skl_convert(est, Xte.shape[1])
        zoo.add(name, model, Xte, "input", source=source(key, est, nan, {"skl2onnx": conv["skl2onnx"]}),
                covers=covers, library=(None, est.predict(Xte).reshape(-1, 1)))
        return est, model

    R = MODEL_SEED
    clf("bc_rf_clf", "bc", RandomForestClassifier(n_estimators=100, max_depth=6, random_state=R),
        ["binary single weight column (probabilities, all weights >= 0, pre-scaled by 1/n_trees)", "BRANCH_LEQ"])
    clf("bc_et_clf", "bc", ExtraTreesClassifier(n_estimators=100, max_depth=6, random_state=R),
        ["binary single weight column", "random thresholds"])
    clf("bc_gb_clf", "bc", GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=R),
        ["binary single weight column with mixed-sign weights", "base_values (1 value)", "post LOGISTIC",
         "Identity before the tree node"])
    clf("bc_dt_clf", "bc", DecisionTreeClassifier(random_state=R),
        ["single unpruned tree", "binary single weight column"])
    clf("bc_hgb_clf_nan", "bc", HistGradientBoostingClassifier(max_iter=100, max_leaf_nodes=15,
                                                               early_stopping=False, random_state=R),
        ["NaN inputs", "nodes_missing_value_tracks_true", "binary, LOGISTIC, base_values"], nan=True)
    pipe = Pipeline([("scaler", StandardScaler()),
                     ("rf", RandomForestClassifier(n_estimators=50, max_depth=5, random_state=R))])
    clf("bc_scaler_rf_clf", "bc", pipe,
        ["whole graph: ai.onnx.ml Scaler before the trees", "tree node not fed by the graph input"])
    clf("wine_gb_clf", "wine", GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=R),
        ["multiclass (3)", "post SOFTMAX", "base_values (3 values)", "Identity before the tree node"])
    clf("wine_rf_clf_zipmap", "wine", RandomForestClassifier(n_estimators=50, max_depth=5, random_state=R),
        ["whole graph: TreeEnsembleClassifier -> Identity -> ZipMap (seq(map(string, float)))",
         "classlabels_strings", "multiclass (3)"], zipmap=True, labels=wine["target_names"])
    clf("wine_hgb_clf_nan", "wine", HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=8,
                                                                   early_stopping=False, random_state=R),
        ["NaN inputs", "multiclass HistGradientBoosting, SOFTMAX, base_values"], nan=True)

    rf_reg, _ = reg("diab_rf_reg", "diab",
                               RandomForestRegressor(n_estimators=100, max_depth=6, random_state=R),
                               ["regressor, 1 target, aggregate SUM of leaf values pre-scaled by 1/n_trees"])
    reg("diab_gb_reg", "diab", GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=R),
        ["regressor SUM with base_values"])
    reg("diab_dt_reg", "diab", DecisionTreeRegressor(random_state=R),
        ["single unpruned deep tree (regression)"])
    hgb_reg, hgb_reg_model = reg("diab_hgb_reg_nan", "diab",
                                 HistGradientBoostingRegressor(max_iter=100, max_leaf_nodes=15, early_stopping=False,
                                                               random_state=R),
                                 ["NaN inputs", "nodes_missing_value_tracks_true", "base_values"], nan=True)

    # ---- rewrites of converted regressors -------------------------------------------------------
    Xtr, ytr, Xte, yte = split(diab)
    f64 = rf_to_f64_model(rf_reg)
    zoo.add("diab_rf_reg_f64", f64, Xte.astype(np.float64), "input",
            source={"kind": "rewrite", "of": "diab_rf_reg",
                    "description": "the diab_rf_reg forest rebuilt from the fitted sklearn trees as "
                                   "TreeEnsembleRegressor ai.onnx.ml 3 with float64 *_as_tensor attributes: "
                                   "sklearn's float64 thresholds, leaf values unscaled, aggregate AVERAGE; "
                                   "float64 input (the float32 test rows)",
                    "dataset": DATASET_DOC["diab"], "split": split_doc("diab", False)},
            covers=["float64 input", "nodes_values_as_tensor / target_weights_as_tensor / base_values_as_tensor "
                    "(float64)", "ai.onnx.ml opset 3", "aggregate AVERAGE at realistic size"],
            library=(None, rf_reg.predict(Xte.astype(np.float64)).reshape(-1, 1)),
            notes=["skl2onnx 1.20 cannot produce this itself: with a DoubleTensorType input it emits "
                   "ai.onnx.ml opset 1 with a double output, which ORT rejects."])
    zoo.add("diab_rf_reg_v5", rf_to_v5_model(rf_reg), Xte, "input",
            source={"kind": "rewrite", "of": "diab_rf_reg",
                    "description": "the diab_rf_reg forest rebuilt from the fitted sklearn trees as TreeEnsemble "
                                   "(ai.onnx.ml 5): float32 splits (sklearn's thresholds rounded towards -inf), "
                                   "leaf values unscaled, aggregate AVERAGE",
                    "dataset": DATASET_DOC["diab"], "split": split_doc("diab", False)},
            covers=["TreeEnsemble opset 5 at realistic size", "TreeEnsemble aggregate AVERAGE"],
            library=(None, rf_reg.predict(Xte).reshape(-1, 1)))
    Xtr, ytr, Xte_n, yte = split(diab, nan=True)
    zoo.add("diab_hgb_reg_nan_v5", v1_to_v5(hgb_reg_model), Xte_n, "input",
            source={"kind": "rewrite", "of": "diab_hgb_reg_nan",
                    "description": "diab_hgb_reg_nan's TreeEnsembleRegressor rewritten as TreeEnsemble "
                                   "(ai.onnx.ml 5); its base_values (which v5 does not have) become one extra "
                                   "tree that is a single leaf",
                    "dataset": DATASET_DOC["diab"], "split": split_doc("diab", True)},
            covers=["TreeEnsemble opset 5 with NaN inputs and missing-value tracks", "single-leaf tree (base value)"],
            library=(None, hgb_reg.predict(Xte_n).reshape(-1, 1)))

    if not HAVE_BOOSTERS:
        print(f"xgboost/lightgbm/onnxmltools not importable ({_BOOSTER_IMPORT_ERROR}): skipping those models")
        return
    mlt = {"onnxmltools": onnxmltools.__version__}

    def boost(name, key, est, converter, covers, nan, regression=False):
        d = data[key]
        Xtr, ytr, Xte, yte = split(d, nan)
        est.fit(Xtr.astype(np.float32), ytr)
        kw = {} if converter is convert_xgboost or regression else {"zipmap": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = converter(est, initial_types=[("input", MltFloatTensorType([None, Xte.shape[1]]))],
                              target_opset=ONNXMLTOOLS_TARGET_OPSET, **kw)
        lib = (None, est.predict(Xte).reshape(-1, 1)) if regression else (est.predict(Xte), est.predict_proba(Xte))
        kind = type(est).__module__.split(".")[0]
        zoo.add(name, model, Xte, "input",
                source=dict(source(key, est, nan, dict(mlt, options=kw)),
                            **{kind: getattr(sys.modules[kind], "__version__")}),
                covers=covers, library=lib,
                notes=["LightGBM thresholds are float64; the converter stores them as float32, so a row can "
                       "fall on the other side of a split than in LightGBM itself (see ort_vs_library).",
                       "As written by onnxmltools: IR version 4, and for classifiers the label output is declared "
                       "with shape [1] although it is [N] (ORT warns and returns [N])."]
                if kind == "lightgbm" else None)

    xgb_params = dict(n_estimators=100, max_depth=4, learning_rate=0.1, random_state=R, n_jobs=1, tree_method="hist")
    lgb_params = dict(n_estimators=100, num_leaves=15, learning_rate=0.1, random_state=R, n_jobs=1,
                      deterministic=True, force_row_wise=True, verbose=-1)
    boost("bc_xgb_clf_nan", "bc", xgboost.XGBClassifier(**xgb_params), convert_xgboost,
          ["NaN inputs", "BRANCH_LT", "missing tracks", "binary LOGISTIC with base_values"], nan=True)
    boost("bc_lgbm_clf_nan", "bc", lightgbm.LGBMClassifier(**lgb_params), convert_lightgbm,
          ["NaN inputs", "whole graph: Cast/Identity/Mul around the tree node", "binary LOGISTIC"], nan=True)
    boost("wine_xgb_clf", "wine", xgboost.XGBClassifier(**xgb_params), convert_xgboost,
          ["multiclass SOFTMAX with base_values", "BRANCH_LT"], nan=False)
    boost("wine_lgbm_clf", "wine", lightgbm.LGBMClassifier(**lgb_params), convert_lightgbm,
          ["multiclass SOFTMAX", "whole graph with Cast/Identity/Mul"], nan=False)
    boost("diab_xgb_reg_nan", "diab", xgboost.XGBRegressor(**xgb_params), convert_xgboost,
          ["NaN inputs", "regressor with base_values", "BRANCH_LT"], nan=True, regression=True)
    boost("diab_lgbm_reg_nan", "diab", lightgbm.LGBMRegressor(**lgb_params), convert_lightgbm,
          ["NaN inputs", "regressor", "Identity after the tree node"], nan=True, regression=True)


def forest_trees(forest, split_dtype):
    """The trees of a fitted RandomForestRegressor in the DSL, leaf value =
    the tree's prediction. With float32 splits, each threshold is rounded
    towards -inf: sklearn tests float32(x) <= threshold64, which for float32
    x is the same as x <= (largest float32 <= threshold64)."""
    trees = []
    for est in forest.estimators_:
        t = est.tree_

        def split(v):
            if split_dtype == np.float64:
                return float(v)
            v32 = np.float32(v)
            if float(v32) > v:
                v32 = np.nextafter(v32, np.float32(-np.inf))
            return float(v32)

        def walk(i):
            if t.children_left[i] == -1:
                return L((0, float(t.value[i][0][0])))
            return B(int(t.feature[i]), "BRANCH_LEQ", split(t.threshold[i]),
                     walk(t.children_left[i]), walk(t.children_right[i]))
        trees.append(walk(0))
    return trees


def rf_to_f64_model(forest):
    """TreeEnsembleRegressor (ai.onnx.ml 3), aggregate AVERAGE, float64
    *_as_tensor attributes, built directly from a fitted RandomForestRegressor."""
    attrs = v1_attrs(forest_trees(forest, np.float64), classifier=False, as_tensor=True, tracks="absent")
    attrs.update(n_targets=1, aggregate_function="AVERAGE", post_transform="NONE",
                 base_values_as_tensor=numpy_helper.from_array(np.array([0.0]), name="base_values_as_tensor"))
    n_features = forest.n_features_in_
    node = helper.make_node("TreeEnsembleRegressor", ["input"], ["variable"], domain="ai.onnx.ml",
                            name="TreeEnsembleRegressor", **attrs)
    graph = helper.make_graph([node], "diab_rf_reg_f64",
                              [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["N", n_features])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 8
    return model


def rf_to_v5_model(forest):
    """TreeEnsemble (ai.onnx.ml 5), aggregate AVERAGE, float32, built directly
    from a fitted RandomForestRegressor."""
    attrs = v5_attrs(forest_trees(forest, np.float32), np.float32, 1, "AVERAGE", "NONE", tracks=False)
    n_features = forest.n_features_in_
    node = helper.make_node("TreeEnsemble", ["input"], ["variable"], domain="ai.onnx.ml", name="TreeEnsemble", **attrs)
    graph = helper.make_graph([node], "diab_rf_reg_v5",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n_features])],
                              [helper.make_tensor_value_info("variable", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)],
                              producer_name=PRODUCER, producer_version="1")
    model.ir_version = 10
    return model


def v1_to_v5(model):
    """Rewrite a single-target TreeEnsembleRegressor model as TreeEnsemble
    (ai.onnx.ml 5); base_values become an extra single-leaf tree."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    node = tree_nodes(model)[0]
    assert node.op_type == "TreeEnsembleRegressor"
    ref = ReferenceEnsemble(node, np.float32)
    assert ref.n_targets == 1 and ref.post == "NONE"

    def to_dsl(i):
        n = ref.nodes[i]
        if n["leaf"]:
            assert len(n["votes"]) == 1
            return L(n["votes"][0])
        return B(n["feature"], n["mode"], float(n["thr"]), to_dsl(n["t"]), to_dsl(n["f"]), miss=int(n["tracks"]))
    trees = [to_dsl(r) for r in ref.roots]
    aggregate = ref.aggregate
    if ref.base.size:
        assert aggregate == "SUM"
        trees.append(L((0, float(ref.base[0]))))
    attrs = v5_attrs(trees, np.float32, 1, aggregate, "NONE",
                     tracks=any(n.get("tracks") for n in ref.nodes))
    new = helper.make_node("TreeEnsemble", list(node.input), list(node.output), domain="ai.onnx.ml",
                           name="TreeEnsemble", **attrs)
    nodes = [new if n is node else n for n in model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])
    model.ir_version = 10
    return model


# ---------------------------------------------------------------------------
# Hand-built models
# ---------------------------------------------------------------------------
def build_hand(zoo):
    F, D = np.float32, np.float64
    TF = TensorProto.FLOAT

    def hb(name, op, attrs, X, n_out, ml, description, covers, deviation=None, classifier_labels=None,
           in_dtype=F, out_type=TF):
        X = np.asarray(X, dtype=in_dtype)
        if op == "TreeEnsembleClassifier":
            lab_type = TensorProto.STRING if isinstance(classifier_labels[0], str) else TensorProto.INT64
            outputs = [("Y", lab_type, ["N"]), ("Z", TF, ["N", n_out])]
        else:
            outputs = [("Y", out_type, ["N", n_out])]
        model = hand_model(name, op, attrs, in_dtype, X.shape[1], outputs, ml, description)
        zoo.add(name, model, X, "X",
                source={"kind": "hand-built", "description": description, "builder": "onnx.helper"},
                covers=covers, ort_deviation=deviation)

    def ter(trees, n_targets, aggregate="SUM", post="NONE", base=None, **kw):
        a = v1_attrs(trees, classifier=False, **kw)
        a.update(n_targets=n_targets, aggregate_function=aggregate, post_transform=post)
        if base is not None:
            if kw.get("as_tensor"):
                a["base_values_as_tensor"] = numpy_helper.from_array(np.array(base, dtype=np.float64))
            else:
                a["base_values"] = [f32(b) for b in base]
        return a

    def tec(trees, labels, post="NONE", base=None, **kw):
        a = v1_attrs(trees, classifier=True, **kw)
        a["post_transform"] = post
        if isinstance(labels[0], str):
            a["classlabels_strings"] = list(labels)
        else:
            a["classlabels_int64s"] = list(labels)
        if base is not None:
            if kw.get("as_tensor"):
                a["base_values_as_tensor"] = numpy_helper.from_array(np.array(base, dtype=np.float64))
            else:
                a["base_values"] = [f32(b) for b in base]
        return a

    half_edges = [-2.0, 0.0, next_down32(0.5), 0.5, next_up32(0.5), 1.0, 3.0e38, -3.0e38]

    # ---- node modes -------------------------------------------------------------------------------
    mode_trees = [B(0, m, 0.5, L((0, 2.0 ** k)), L((0, 0.0))) for k, m in enumerate(MODES6)]
    deep = B(1, "BRANCH_LEQ", 1.0,
             B(1, "BRANCH_LT", -1.0, L((1, 1.0)), B(1, "BRANCH_GTE", 0.0, L((1, 2.0)), L((1, 3.0)))),
             B(1, "BRANCH_GT", 3.0, B(1, "BRANCH_NEQ", 4.0, L((1, 4.0)), L((1, 5.0))),
               B(1, "BRANCH_EQ", 2.0, L((1, 6.0)), L((1, 7.0)))))
    x1_edges = [-3.0, -1.0, -0.5, -0.0, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0]
    Xm = grid(half_edges, x1_edges)
    hb("hb_modes_reg", "TreeEnsembleRegressor", ter(mode_trees + [deep], 2), Xm, 2, 1,
       "Every node mode. Target 0: six one-split trees on x0 with threshold 0.5 and modes LEQ, LT, GTE, GT, EQ, NEQ; "
       "tree k's true leaf is 2^k, its false leaf 0, so target 0 is a bitmask of the comparisons that held. "
       "Target 1: one depth-3 tree on x1 mixing all six modes (leaves 1..7). Inputs on, just below and just above "
       "each threshold (float32 neighbours), -0.0, and +-3e38. No nodes_missing_value_tracks_true attribute.",
       ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ", "LEAF",
        "threshold equality and float32 neighbours", "mixed modes in one tree", "multi-target (2)",
        "ai.onnx.ml opset 1"])

    # ---- missing-value tracks -------------------------------------------------------------------
    tracked = [B(0, m, 0.5, L((0, 2.0 ** k)), L((0, 0.0)), miss=1) for k, m in enumerate(MODES6)]
    untracked = [B(0, m, 0.5, L((1, 2.0 ** k)), L((1, 0.0)), miss=0) for k, m in enumerate(MODES6[:5])]
    nested = B(0, "BRANCH_LT", 0.25,
               B(1, "BRANCH_GTE", 2.0, L((2, 1.0)), L((2, 2.0)), miss=1),
               B(1, "BRANCH_LEQ", 2.0, L((2, 3.0)), L((2, 4.0)), miss=0), miss=0)
    Xmiss = grid([NAN, 0.0, 0.5, 1.0], [NAN, 1.0, 2.0, 3.0])
    hb("hb_missing_reg", "TreeEnsembleRegressor", ter(tracked + untracked + [nested], 3, tracks="present"),
       Xmiss, 3, 3,
       "nodes_missing_value_tracks_true. Target 0: the six one-split mode trees with tracks=1 (NaN goes to the "
       "true branch). Target 1: LEQ/LT/GTE/GT/EQ trees with tracks=0 (NaN goes to the false branch; NEQ with "
       "tracks=0 is in hb_quirk_neq_nan_reg). Target 2: a depth-2 tree whose root (x0) and children (x1) have "
       "different tracks. ai.onnx.ml opset 3 with plain float attributes.",
       ["nodes_missing_value_tracks_true = 1 and 0", "NaN inputs", "NaN at root and at depth 2",
        "ai.onnx.ml opset 3 without *_as_tensor"])

    # ---- aggregate functions (TreeEnsembleRegressor) ---------------------------------------------
    def agg_trees(multivote):
        leaf1 = [(0, 4.0), (2, -3.0)] + ([(0, 0.5)] if multivote else [])
        return [
            B(0, "BRANCH_LEQ", 0.0, L((0, 1.5), (1, -2.0), (2, 0.25)),
              B(1, "BRANCH_GT", 1.0, L((0, -0.5), (1, 3.0), (2, 1.0)), L((0, 2.5), (1, 0.75), (2, -1.5)))),
            B(2, "BRANCH_LT", 0.5, L(*leaf1), L((0, -1.0), (2, 2.0))),
            L((1, 1.25)),
            B(1, "BRANCH_GTE", 0.0,
              B(0, "BRANCH_GT", 2.0, L((0, 0.125), (1, -0.375), (2, 5.0)), L((0, -2.25), (1, 1.0), (2, 0.5))),
              L((0, 3.0), (1, -4.0), (2, -0.625))),
        ]
    Xagg = grid([-1.0, 0.0, 1.0, 3.0], [-1.0, 0.0, 1.0, 2.0], [0.0, 0.5, 1.0])
    for agg in ("SUM", "AVERAGE", "MIN", "MAX"):
        multivote = agg in ("SUM", "AVERAGE")
        hb(f"hb_agg_{agg.lower()}_reg", "TreeEnsembleRegressor",
           ter(agg_trees(multivote), 3, aggregate=agg, base=[0.5, -1.25, 2.0]), Xagg, 3, 1,
           f"aggregate_function={agg}, 3 targets, base_values [0.5, -1.25, 2.0], 4 trees: one votes for all "
           "targets at every leaf, one for targets 0 and 2 only, one is a single leaf voting for target 1, one "
           "for all targets" + (" ; one leaf votes twice for target 0 (votes add)" if multivote else "")
           + ". Every target receives at least one vote on every row.",
           [f"aggregate {agg}", "base_values", "multi-target (3)", "sparse votes", "single-leaf tree"]
           + (["several votes for one target in one leaf"] if multivote else []))

    # ---- post transforms (regressor, 3 targets) ---------------------------------------------------
    post_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 0.5), (1, -0.25), (2, 1.0)), L((0, -1.5), (1, 2.0), (2, 0.0))),
        B(1, "BRANCH_GT", 0.0, L((0, 0.25), (1, 0.25), (2, -1.0)), L((0, 1.0), (1, -0.75), (2, 0.0))),
    ]
    probit_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 0.125), (1, 0.25), (2, 0.375)), L((0, 0.3125), (1, 0.0625), (2, 0.1875))),
        B(1, "BRANCH_GT", 0.0, L((0, 0.25), (1, 0.125), (2, 0.0625)), L((0, 0.0625), (1, 0.375), (2, 0.25))),
    ]
    Xpost = grid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])
    probit_note = ("ORT computes PROBIT as sqrt(2) * ErfInv(2p - 1) with a float32 Winitzki approximation "
                   "(a = 0.147) of ErfInv, about 1e-4 relative error; the spec means the exact inverse normal CDF.")
    for post in ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"):
        probit = post == "PROBIT"
        hb(f"hb_post_{post.lower()}_reg", "TreeEnsembleRegressor",
           ter(probit_trees if probit else post_trees, 3, post=post,
               base=[0.0625, 0.125, 0.25] if probit else [0.125, -0.25, 0.0]), Xpost, 3, 1,
           f"post_transform={post} on a 3-target regressor (2 trees, base_values)."
           + (" Scores stay in (0, 1) so PROBIT is finite." if probit else
              " Target 2 sums to exactly 0 on some rows (votes that cancel), for SOFTMAX_ZERO."),
           [f"post {post}", "regressor", "base_values"], deviation=probit_note if probit else None)
    one_target = [B(0, "BRANCH_LEQ", 0.0, L((0, 0.125)), L((0, 0.3125))),
                  B(1, "BRANCH_GT", 0.0, L((0, 0.25)), L((0, 0.0625)))]
    hb("hb_post_probit_1target_reg", "TreeEnsembleRegressor",
       ter(one_target, 1, post="PROBIT", base=[0.0625]), Xpost, 1, 1,
       "post_transform=PROBIT on a single-target regressor (ORT applies it on this path too).",
       ["post PROBIT", "single target"], deviation=probit_note)

    # ---- ORT quirks, each isolated ---------------------------------------------------------------
    hb("hb_quirk_logistic_1target_reg", "TreeEnsembleRegressor",
       ter(one_target, 1, post="LOGISTIC", base=[0.0625]), Xpost, 1, 1,
       "post_transform=LOGISTIC on a single-target regressor.",
       ["post LOGISTIC", "single target"],
       deviation="ORT ignores LOGISTIC (and SOFTMAX, SOFTMAX_ZERO) when n_targets == 1 and returns the raw score; "
                 "only PROBIT is applied on that path (onnxruntime issue #26596, PR #26896).")
    hb("hb_quirk_multivote_1target_reg", "TreeEnsembleRegressor",
       ter([B(0, "BRANCH_LEQ", 0.0, L((0, 1.0), (0, 2.0)), L((0, 4.0))), L((0, 8.0))], 1), Xpost, 1, 1,
       "Single-target regressor whose leaf has two votes (1 and 2) for target 0.",
       ["several votes for one target in one leaf", "single target"],
       deviation="With n_targets == 1 ORT only uses the first vote of a leaf (row x0 <= 0 scores 1+8=9, "
                 "the spec gives 1+2+8=11).")
    hb("hb_quirk_novote_base_reg", "TreeEnsembleRegressor",
       ter([B(0, "BRANCH_LEQ", 0.0, L((0, -1.0)), L((1, 2.0))), L((0, 0.5))], 2, base=[0.5, 0.25]), Xpost, 2, 1,
       "Two targets with base_values [0.5, 0.25]; target 1 gets no vote at all when x0 <= 0.",
       ["target without votes", "base_values"],
       deviation="ORT outputs 0 for a target that no leaf voted for, without adding its base value (the spec "
                 "adds base_values after aggregation: 0.25).")
    hb("hb_quirk_neq_nan_reg", "TreeEnsembleRegressor",
       ter([B(0, "BRANCH_NEQ", 0.5, L((0, 1.0)), L((0, 2.0)))], 1), [[NAN], [0.5], [0.0]], 1, 1,
       "BRANCH_NEQ with no nodes_missing_value_tracks_true attribute, and a NaN input.",
       ["BRANCH_NEQ with NaN", "default missing tracks"],
       deviation="ORT evaluates NaN != 0.5 as true and takes the true branch; the spec says a NaN goes to the "
                 "false branch unless nodes_missing_value_tracks_true is 1.")

    # ---- float64: *_as_tensor and double input --------------------------------------------------
    third = 1.0 / 3.0
    f64_trees = [
        B(0, "BRANCH_LEQ", 0.1, L((0, 0.1), (1, third)),
          B(0, "BRANCH_LT", third, L((0, 1e-10), (1, -2.0 / 3.0)), L((0, 2.5), (1, 0.2)), miss=1)),
        B(1, "BRANCH_GTE", 2.0000000000000004, L((0, -0.3), (1, 0.7)),
          B(1, "BRANCH_GT", 1e-300, L((0, 0.05), (1, 0.15)), L((0, -0.05), (1, 0.45))), miss=1),
    ]
    x0_64 = [0.1, float(np.nextafter(0.1, -1)), float(np.nextafter(0.1, 1)), f32(0.1), third,
             float(np.nextafter(third, 1)), float(np.nextafter(third, -1)), NAN]
    x1_64 = [2.0, 2.0000000000000004, 2.000000000000001, 1e-300, 5e-324, 0.0, NAN]
    X64 = grid(x0_64, x1_64)
    hb("hb_as_tensor_f64_reg", "TreeEnsembleRegressor",
       ter(f64_trees, 2, base=[0.01, -0.02], as_tensor=True, hitrates=True), X64, 2, 3,
       "ai.onnx.ml opset 3, float64 input; nodes_values_as_tensor, target_weights_as_tensor, base_values_as_tensor "
       "and nodes_hitrates_as_tensor (all float64). Thresholds 0.1, 1/3, 2.0000000000000004 and 1e-300 are not "
       "float32 values; inputs are their float64 neighbours, float32(0.1), subnormals and NaN.",
       ["*_as_tensor (float64)", "float64 input", "double-precision thresholds", "ai.onnx.ml opset 3",
        "nodes_hitrates_as_tensor"], in_dtype=D)
    hb("hb_input_f64_reg", "TreeEnsembleRegressor",
       ter([B(0, "BRANCH_LEQ", 0.1, L((0, 1.0)), L((0, 2.0))),
            B(1, "BRANCH_LT", third, L((0, 4.0)), L((0, 8.0)))], 1), grid(
           [0.1, f32(0.1), float(np.nextafter(f32(0.1), 1)), 0.2],
           [third, f32(third), float(np.nextafter(f32(third), -1)), 0.0]), 1, 1,
       "float64 input with plain float attributes (ai.onnx.ml 1): thresholds are float32(0.1) and float32(1/3) "
       "and are compared in float64; rows include the float64 neighbours of those float32 values, which a "
       "narrowing of the input to float32 would get wrong.",
       ["float64 input with float32 thresholds (threshold widened, input not narrowed)"], in_dtype=D)

    # ---- classifiers: post transforms -----------------------------------------------------------
    for post in ("NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"):
        probit = post == "PROBIT"
        hb(f"hb_post_{post.lower()}_clf", "TreeEnsembleClassifier",
           tec(probit_trees if probit else post_trees, [0, 1, 2], post=post,
               base=[0.0625, 0.125, 0.25] if probit else [0.125, -0.25, 0.0]), Xpost, 3, 1,
           f"post_transform={post} on a 3-class classifier (int64 labels 0,1,2; 2 trees; base_values). "
           "Label = argmax of the raw scores.",
           [f"post {post}", "classifier", "base_values"], deviation=probit_note if probit else None,
           classifier_labels=[0, 1, 2])

    # ---- labels ---------------------------------------------------------------------------------
    lab_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 1.0), (1, 2.0), (2, 2.0), (3, 0.0)), L((0, 3.0), (1, 0.5), (2, 1.0), (3, 1.0))),
        B(1, "BRANCH_GT", 0.0, L((0, 0.0), (1, 1.0), (2, 0.0), (3, 4.0)), L((0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0))),
    ]
    str_labels = ["cat", "dog", "π", "mouse"]
    hb("hb_labels_str_clf", "TreeEnsembleClassifier", tec(lab_trees, str_labels), Xpost, 4, 2,
       "classlabels_strings ['cat', 'dog', 'π', 'mouse'] (one non-ASCII label), 4 classes, post NONE; some rows tie "
       "between 'dog' and 'π' (first wins). Imports ai.onnx.ml opset 2.",
       ["classlabels_strings", "UTF-8 label", "ties (first class wins)", "ai.onnx.ml opset 2"],
       classifier_labels=str_labels)
    int_labels = [-7, 0, 3, 1 << 40]
    hb("hb_labels_int_clf", "TreeEnsembleClassifier",
       tec(lab_trees, int_labels, post="SOFTMAX", base=[0.0, 0.5, -0.5, 0.25]), Xpost, 4, 1,
       "classlabels_int64s [-7, 0, 3, 2^40], 4 classes, SOFTMAX, base_values.",
       ["classlabels_int64s (negative, large)", "post SOFTMAX", "base_values"], classifier_labels=int_labels)

    # ---- binary classifiers ---------------------------------------------------------------------
    prob_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 0.0625)), L((0, 0.1875))),
        B(1, "BRANCH_LEQ", 0.0, L((0, 0.125)), L((0, 0.25))),
        L((0, 0.125)),
        B(0, "BRANCH_GT", 0.5, L((0, 0.25)), L((0, 0.0625))),
    ]
    Xbin = grid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])
    hb("hb_binary_1col_prob_clf", "TreeEnsembleClassifier", tec(prob_trees, [0, 1]), Xbin, 2, 1,
       "Binary classifier in the RandomForest form: 2 labels, every weight on class id 0 (the positive class's "
       "probability), all weights >= 0, post NONE, one single-leaf tree. ORT outputs [1-p, p] and label 1 iff "
       "p > 0.5; some rows have p exactly 0.5 (label 0).",
       ["binary single weight column, weights >= 0", "threshold 0.5 (strict)", "single-leaf tree"],
       classifier_labels=[0, 1])
    mixed_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, -0.75)), L((0, 0.5))),
        B(1, "BRANCH_GT", 0.0, L((0, 0.5)), L((0, -0.25))),
        L((0, 0.5)),
    ]
    hb("hb_binary_1col_logistic_clf", "TreeEnsembleClassifier",
       tec(mixed_trees, ["no", "yes"], post="LOGISTIC", base=[-0.25]), Xbin, 2, 1,
       "Binary classifier in the GradientBoosting form: string labels ['no', 'yes'], one weight column with "
       "mixed signs, base_values [-0.25] (one value), LOGISTIC, one single-leaf tree. ORT outputs "
       "[logistic(-s), logistic(s)] and 'yes' iff s > 0; one row has s exactly 0.",
       ["binary single weight column, mixed signs", "post LOGISTIC", "base_values (1 value)", "string labels",
        "score exactly 0"], classifier_labels=["no", "yes"])
    hb("hb_binary_1col_pos_logistic_clf", "TreeEnsembleClassifier",
       tec(prob_trees, [0, 1], post="LOGISTIC"), Xbin, 2, 1,
       "Binary classifier, one weight column, all weights >= 0, LOGISTIC, with a single-leaf tree "
       "(the case of onnxruntime issue #27533, fixed in ORT 1.26). Label threshold stays 0.5 on the raw score.",
       ["binary single weight column, weights >= 0, LOGISTIC", "single-leaf tree"], classifier_labels=[0, 1])
    hb("hb_binary_1col_raw_clf", "TreeEnsembleClassifier", tec(mixed_trees, [0, 1]), Xbin, 2, 1,
       "Binary classifier, one weight column with mixed signs, post NONE: ORT outputs [-s, s], label 1 iff s > 0.",
       ["binary single weight column, mixed signs, raw scores"], classifier_labels=[0, 1])
    hb("hb_quirk_binary_2col_clf", "TreeEnsembleClassifier",
       tec([B(0, "BRANCH_LEQ", 0.0, L((0, 0.5), (1, 0.25)), L((0, -0.75), (1, 1.0)))], [3, 9]), Xbin, 2, 1,
       "Binary classifier with weights on both class ids (0 and 1) and labels [3, 9].",
       ["binary classifier with two weight columns"], classifier_labels=[3, 9],
       deviation="ORT returns label 1 if the class-1 score is > 0, else 0 - the literal integers, not "
                 "classlabels_int64s[0/1], and not the argmax (a row with scores [0.5, 0.25] gets 1).")
    hb("hb_quirk_novote_class_clf", "TreeEnsembleClassifier",
       tec([B(0, "BRANCH_LEQ", 0.0, L((0, -1.0), (2, -2.0)), L((0, 1.0), (1, 0.5), (2, 0.25)))], [0, 1, 2]),
       Xbin, 3, 1,
       "3 classes, no base_values; when x0 <= 0 class 1 gets no vote and the others are negative.",
       ["class without votes"], classifier_labels=[0, 1, 2],
       deviation="ORT's argmax skips classes that received no vote (label 0 with score -1), though their score "
                 "is 0 and is the largest (the spec's argmax gives class 1).")

    hb("hb_as_tensor_f64_clf", "TreeEnsembleClassifier",
       tec([B(0, "BRANCH_LEQ", 0.1, L((0, 0.1), (1, third), (2, 0.0)),
              B(0, "BRANCH_LT", third, L((0, 0.2), (1, 0.0), (2, 0.3)), L((0, 0.0), (1, 0.5), (2, 0.25)),
                miss=1)),
            B(1, "BRANCH_GTE", 2.0000000000000004, L((0, 0.05), (1, 0.0), (2, 0.1)),
              L((0, 0.0), (1, 0.15), (2, 0.05)))],
           [0, 1, 2], post="SOFTMAX", base=[0.01, 0.02, 0.03], as_tensor=True, tracks="present"),
       X64, 3, 3,
       "ai.onnx.ml opset 3 classifier, float64 input, nodes_values_as_tensor / class_weights_as_tensor / "
       "base_values_as_tensor (float64), SOFTMAX.",
       ["*_as_tensor (float64) classifier", "float64 input", "ai.onnx.ml opset 3"], in_dtype=D,
       classifier_labels=[0, 1, 2])
    int_trees = [
        B(0, "BRANCH_EQ", 3.0, L((0, 1.0), (1, 0.0), (2, 0.0)),
          B(0, "BRANCH_LEQ", 2.5, L((0, 0.0), (1, 1.0), (2, 0.0)), L((0, 0.0), (1, 0.0), (2, 1.0)))),
        B(1, "BRANCH_GT", -1.0, L((0, 0.25), (1, 0.5), (2, 0.0)), L((0, 0.0), (1, 0.0), (2, 0.75))),
    ]
    Xint = grid([-5, 0, 2, 3, 4, 1000000], [-2, -1, 0, 7])
    for dt, tag in ((np.int64, "i64"), (np.int32, "i32")):
        hb(f"hb_input_{tag}_clf", "TreeEnsembleClassifier", tec(int_trees, [0, 1, 2]), Xint, 3, 1,
           f"{np.dtype(dt).name} input to a classifier (ORT accepts int64/int32 input for TreeEnsembleClassifier "
           "but not for TreeEnsembleRegressor); EQ/LEQ/GT on integer values, thresholds 3, 2.5, -1.",
           [f"{np.dtype(dt).name} input"], in_dtype=dt, classifier_labels=[0, 1, 2])

    # ---- TreeEnsemble (ai.onnx.ml 5) ------------------------------------------------------------
    v5_modes_trees = [B(0, m, 0.5, L((0, 2.0 ** k)), L((0, 0.0)), miss=int(m in ("BRANCH_LEQ", "BRANCH_GTE",
                                                                                   "BRANCH_EQ", "BRANCH_NEQ")))
                      for k, m in enumerate(MODES6)]
    v5_modes_trees += [
        B(1, "BRANCH_MEMBER", [1.0, 3.0, 4.0], L((1, 1.0)), L((1, 2.0)), miss=1),
        B(1, "BRANCH_MEMBER", [-2.0, 7.0, 40.0, 1000.0], L((1, 4.0)), L((1, 8.0)), miss=0),
        L((1, 0.5)),
        B(2, "BRANCH_GT", 0.0, B(1, "BRANCH_MEMBER", [0.0, 2.0], L((0, 64.0)), L((1, 16.0))),
          B(2, "BRANCH_LEQ", -1.0, L((1, 32.0)), L((0, 128.0)))),
    ]
    x1v5 = [NAN, -2.0, 0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 7.0, 40.0, 1000.0, 1001.0]
    rows = []
    x0v5 = [NAN, 0.0, 0.5, 1.0, next_up32(0.5)]
    for i, (x1, x2) in enumerate((a, b) for a in x1v5 for b in (-2.0, -1.0, 0.5)):
        rows.append([x0v5[i % len(x0v5)], x1, x2])
    Xv5 = np.array(rows)
    hb("hb_v5_modes", "TreeEnsemble",
       v5_attrs(v5_modes_trees, np.float32, 2, "SUM", "NONE", tracks=True, hitrates=True), Xv5, 2, 5,
       "TreeEnsemble (ai.onnx.ml 5): the six comparison modes on x0 (tracks 1 for LEQ/GTE/EQ/NEQ, 0 for LT/GT), "
       "BRANCH_MEMBER with a small set {1,3,4} and a large one {-2,7,40,1000} (ORT implements sets of <31 "
       "values in [0,30] and other sets differently), a member node below the root, a single-leaf tree, "
       "nodes_hitrates, 2 targets, SUM.",
       ["TreeEnsemble opset 5", "nodes_modes tensor (uint8)", "BRANCH_MEMBER", "membership_values",
        "nodes_splits", "leaf_targetids / leaf_weights", "tree_roots", "single-leaf tree (both branches to one "
        "leaf)", "missing tracks", "nodes_hitrates", "NaN inputs"])
    v5_agg_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 1.5)), L((0, -0.5))),
        B(1, "BRANCH_LT", 0.0, L((1, 2.0)), L((1, -1.25))),
        B(0, "BRANCH_GT", 0.5, L((1, 4.0)), B(1, "BRANCH_GTE", 1.0, L((0, 3.0)), L((1, -2.5)))),
        L((0, 0.75)),
    ]
    Xv5a = grid([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0, 2.0])
    for agg in ("AVERAGE", "MIN", "MAX"):
        hb(f"hb_v5_agg_{agg.lower()}", "TreeEnsemble",
           v5_attrs(v5_agg_trees, np.float32, 2, agg, "NONE", tracks=False), Xv5a, 2, 5,
           f"TreeEnsemble aggregate_function={agg} ({V5_AGG[agg]}), 2 targets, 4 trees (one a single leaf); each "
           "target gets at least one vote on every row. No nodes_missing_value_tracks_true attribute.",
           [f"TreeEnsemble aggregate {agg}"])
    v5_post_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 0.125)), L((0, 0.375))),
        B(1, "BRANCH_GT", 0.0, L((1, 0.25)), L((1, 0.0625))),
        B(0, "BRANCH_LT", 1.0, L((2, 0.3125)), L((2, 0.125))),
        B(1, "BRANCH_LEQ", -0.5, L((2, 0.0625)), L((0, 0.25))),
    ]
    v5_zero_trees = [
        B(0, "BRANCH_LEQ", 0.0, L((0, 0.5)), L((0, -1.5))),
        B(1, "BRANCH_GT", 0.0, L((1, 0.25)), L((1, 1.0))),
        B(0, "BRANCH_LT", 1.0, L((2, 1.0)), L((2, 0.25))),
        B(1, "BRANCH_LEQ", 0.0, L((2, -1.0)), L((0, 0.25))),
    ]
    for post in ("SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO", "PROBIT"):
        dev = None
        if post in ("SOFTMAX", "LOGISTIC"):
            dev = ("ORT swaps SOFTMAX (1) and LOGISTIC (2) in TreeEnsemble: it casts the integer to its own "
                   "POST_EVAL_TRANSFORM enum (NONE, LOGISTIC, SOFTMAX, SOFTMAX_ZERO, PROBIT).")
        elif post == "PROBIT":
            dev = probit_note
        hb(f"hb_v5_post_{post.lower()}", "TreeEnsemble",
           v5_attrs(v5_zero_trees if post == "SOFTMAX_ZERO" else v5_post_trees, np.float32, 3, "SUM", post,
                    tracks=False), Xpost, 3, 5,
           f"TreeEnsemble post_transform={post} ({V5_POST[post]}), 3 targets, 4 trees"
           + (" ; target 2 sums to exactly 0 on some rows." if post == "SOFTMAX_ZERO" else
              " ; scores in (0, 1)."),
           [f"TreeEnsemble post {post}"], deviation=dev)
    v5_f64_trees = [
        B(0, "BRANCH_LEQ", 0.1, L((0, 0.1)), B(0, "BRANCH_LT", third, L((0, third)), L((0, 2.5)), miss=1)),
        B(1, "BRANCH_MEMBER", [2.0000000000000004, 1e-300], L((0, -0.3)), L((0, 0.7)), miss=1),
        B(1, "BRANCH_GTE", 2.0, L((0, 1e-10)), L((0, -1e-10))),
    ]
    hb("hb_v5_f64", "TreeEnsemble", v5_attrs(v5_f64_trees, np.float64, 1, "SUM", "NONE", tracks=True), X64, 1, 5,
       "TreeEnsemble with float64 input, float64 nodes_splits / leaf_weights / membership_values and a float64 "
       "output; thresholds and members that are not float32 values.",
       ["TreeEnsemble float64", "float64 output", "BRANCH_MEMBER with float64 members"], in_dtype=D,
       out_type=TensorProto.DOUBLE)


# ---------------------------------------------------------------------------
NP_OF_OIP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def read_oip_tensor(t):
    """An OIP tensor from JSON as numpy (null -> NaN), as a client would parse it."""
    if t["datatype"] == "BYTES":
        return np.array(t["data"], dtype=object).reshape(t["shape"])
    data = [float("nan") if v is None else v for v in t["data"]]
    return np.array(data, dtype=NP_OF_OIP[t["datatype"]]).reshape(t["shape"])


def _run_first_input(out_dir, entry, inputs):
    """ORT on the model's one input: [(name, array, is_zipmap)] in graph output order."""
    model = onnx.load(str(out_dir / entry["files"]["model"]))
    return ort_outputs(model, read_oip_tensor(inputs[0]), inputs[0]["name"])


def _floats_close(a, b):
    """This zoo's tolerance, NaN where NaN: (ok, largest |a-b|)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    nan_same = np.array_equal(np.isnan(a), np.isnan(b))
    d = np.abs(np.nan_to_num(a) - np.nan_to_num(b))
    ok = nan_same and bool(np.all(d <= ATOL + RTOL * np.maximum(np.abs(np.nan_to_num(a)), np.abs(np.nan_to_num(b)))))
    return ok, float(d.max()) if d.size else 0.0


def verify(out_dir, run=_run_first_input, floats_close=_floats_close):
    """Re-run ORT on the committed files only: parse NAME.input.json, run
    NAME.onnx, compare with NAME.expected.json (labels exact, scores within
    the tolerance), and check the manifest's sha256 sums. Other zoos pass how
    they run a model (`run(out_dir, entry, inputs)` -> [(name, array,
    is_zipmap)]) and their tolerance (`floats_close(got, want)` -> (ok, worst))."""
    manifest = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    failures = 0
    for e in manifest["models"]:
        for kind, fname in e["files"].items():
            if fname and sha256(out_dir / fname) != e["sha256"][kind]:
                print(f"FAIL {e['name']}: sha256 of {fname} differs from the manifest")
                failures += 1
        req = json.loads((out_dir / e["files"]["input"]).read_text(encoding="utf-8"))["inputs"]
        exp = json.loads((out_dir / e["files"]["expected"]).read_text(encoding="utf-8"))["outputs"]
        got = run(out_dir, e, req)
        worst = 0.0
        for (name, arr, is_zip), want in zip(got, exp):
            w = read_oip_tensor(want)
            ok = name == want["name"] and list(arr.shape) == want["shape"] and bool(is_zip) == bool(want.get("zipmap"))
            if w.dtype == object:
                ok = ok and [v.decode() if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()] == \
                    w.reshape(-1).tolist()
            elif w.dtype.kind in "iu":
                ok = ok and np.array_equal(arr.astype(np.int64), w.astype(np.int64))
            else:
                close, d = floats_close(arr, w)
                worst = max(worst, d)
                ok = ok and close
            if not ok:
                print(f"FAIL {e['name']}: output {name} differs from {e['files']['expected']}")
                failures += 1
        print(f"{e['name']}: {len(exp)} outputs match, max |diff| {worst:.3g}")
    print(f"verified {len(manifest['models'])} models against ORT {ort.__version__}: "
          + ("OK" if not failures else f"{failures} FAILURES"))
    return failures == 0


def zoo_command_line(doc, default_out, verify_zoo=verify):
    """The zoo scripts' command line: `--out DIR`, and `--verify` (check the
    committed files, then exit). Returns the output directory, emptied of its
    generated files (README.md stays) for a fresh generation."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=default_out,
                        help=f"output directory (default {default_out.relative_to(REPO)})")
    parser.add_argument("--verify", action="store_true",
                        help="do not generate: re-run ONNX Runtime on the files in the output directory and "
                             "compare with the .expected.json files and the manifest's sha256 sums")
    args = parser.parse_args()
    out = args.out
    if args.verify:
        sys.exit(0 if verify_zoo(out) else 1)
    out.mkdir(parents=True, exist_ok=True)
    for p in out.iterdir():  # the directory is fully generated, README.md aside
        if p.suffix in (".onnx", ".json"):
            p.unlink()
    return out


# ---------------------------------------------------------------------------
def main():
    out = zoo_command_line(__doc__, OUT)

    zoo = Zoo(out)
    build_real(zoo, datasets())
    build_hand(zoo)

    manifest = {
        "generator": "scripts/make_tree_models.py",
        "command": "python3 scripts/make_tree_models.py",
        "versions": manifest_versions(),
        "conventions": manifest_conventions(),
        "models": zoo.entries,
    }
    write_json(out / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    biggest = max(e["bytes"] for e in zoo.entries)
    print(f"{len(zoo.entries)} models, largest .onnx {biggest} B, directory {total} B")
    if biggest > 1_500_000 or total > 12_000_000:
        zoo.failures.append(f"size budget exceeded: largest {biggest} B, total {total} B")
    if zoo.failures:
        for msg in zoo.failures:
            print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)
    print("OK: every model's ORT output agrees with the spec evaluator, except the declared deviations")


if __name__ == "__main__":
    main()
