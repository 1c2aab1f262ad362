#!/usr/bin/env python3
"""Build the second tree-ensemble zoo in models/trees2/.

Run from the repository root:

    python3 scripts/make_tree_zoo2.py            # rewrites models/trees2/*.onnx, *.json (not README.md)
    python3 scripts/make_tree_zoo2.py --verify   # re-runs ORT on the committed files only

The first zoo (models/trees/, scripts/make_tree_models.py) holds the shapes
the tree engine was developed on: binary and 3-class models on three small
datasets, trees of depth at most 6 (a few unpruned single trees aside).
This zoo holds families the engine was never tuned on:

* ExtraTreesClassifier multiclass (3, 6 and 8 classes), shallow, unpruned,
  and with NaN inputs;
* RandomForestRegressor unpruned (diabetes), depth 10 and 14 on 60 and 80
  features, and with NaN inputs;
* RandomForestClassifier unpruned, 200 trees;
* HistGradientBoostingClassifier, 5 classes, NaN;
* LightGBM multiclass with NaN (3 and 6 classes) and a 127-leaf regressor;
* XGBoost 7-class with NaN and a depth-10 regressor.

Same files and conventions as the first zoo (see models/trees/README.md):
NAME.onnx, NAME.input.json (OIP request), NAME.expected.json (ONNX Runtime's
outputs; NaN is null; float32 values are the repr of the widened float32;
labels INT64, scores FP32; zipmap disabled), and manifest.json in the same
schema, plus one extra field per model, "tree_shape" (max depth, nodes,
leaves). The machinery (JSON writer, spec evaluator ReferenceEnsemble, the
Zoo class that writes and checks each model, --verify) is imported from
make_tree_models.py, not copied.

Every model is checked against the training library (labels equal, largest
score difference recorded as ort_vs_library) and against the spec evaluator
(ort_vs_spec); the script exits non-zero if ORT disagrees with the spec
evaluator where no deviation is declared, if a regressor's ORT output is not
the float32 sum in tree order bit for bit, or if a size budget (1.5 MB per
model, 12 MB in all) is exceeded.

Two things the first zoo hid, found here (models/trees2/README.md):
skl2onnx 1.20 ignores scikit-learn's per-node NaN direction
(tree_.missing_go_to_left) for RandomForest/ExtraTrees, so the two forests
trained with NaN get their missing-value tracks set from the fitted trees
(add_sklearn_missing_tracks); and on z2_reg80_rf_reg_nan ORT's float32
accumulation of leaf values that nearly cancel is off the exact sum by more
than the tolerance (declared as its ort_deviation, exact sum in .spec.json).

Output is deterministic: two runs give byte-identical files.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Importing the first zoo's generator pins BLAS/OpenMP to one thread (before
# numpy loads) and patches skl2onnx's HistGradientBoosting bool attribute.
import make_tree_models as base  # noqa: E402

import warnings  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import scipy  # noqa: E402
import sklearn  # noqa: E402
import skl2onnx  # noqa: E402
from onnx import helper  # noqa: E402
from sklearn.datasets import make_classification, make_friedman1, make_regression  # noqa: E402
from sklearn.ensemble import (ExtraTreesClassifier, HistGradientBoostingClassifier,  # noqa: E402
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.model_selection import train_test_split  # noqa: E402

REPO = base.REPO
OUT = REPO / "models" / "trees2"
GENERATOR = "scripts/make_tree_zoo2.py"
R = base.MODEL_SEED
SYN_TEST_ROWS = 200      # held-out rows of the synthetic datasets (= base.MAX_ROWS)
MAX_MODEL_BYTES = 1_500_000
MAX_DIR_BYTES = 12_000_000

# ---------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------
# Synthetic datasets: (generator call, kind, NaN seed). Features are cast to
# float32 (the models see float32); the split holds out SYN_TEST_ROWS rows.
SYNTHETIC = {
    "syn8": (lambda: make_classification(n_samples=1000, n_features=50, n_informative=20, n_redundant=10,
                                         n_classes=8, n_clusters_per_class=1, random_state=0),
             "make_classification(n_samples=1000, n_features=50, n_informative=20, n_redundant=10, n_classes=8, "
             "n_clusters_per_class=1, random_state=0): 8 classes, 50 features", True, 18),
    "syn6": (lambda: make_classification(n_samples=1500, n_features=40, n_informative=16, n_redundant=8,
                                         n_classes=6, n_clusters_per_class=2, random_state=1),
             "make_classification(n_samples=1500, n_features=40, n_informative=16, n_redundant=8, n_classes=6, "
             "n_clusters_per_class=2, random_state=1): 6 classes, 40 features", True, 16),
    "syn7": (lambda: make_classification(n_samples=1500, n_features=55, n_informative=20, n_redundant=10,
                                         n_classes=7, n_clusters_per_class=1, random_state=2),
             "make_classification(n_samples=1500, n_features=55, n_informative=20, n_redundant=10, n_classes=7, "
             "n_clusters_per_class=1, random_state=2): 7 classes, 55 features", True, 17),
    "syn5": (lambda: make_classification(n_samples=1500, n_features=60, n_informative=25, n_redundant=10,
                                         n_classes=5, n_clusters_per_class=2, random_state=3),
             "make_classification(n_samples=1500, n_features=60, n_informative=25, n_redundant=10, n_classes=5, "
             "n_clusters_per_class=2, random_state=3): 5 classes, 60 features", True, 15),
    "fried60": (lambda: make_friedman1(n_samples=4000, n_features=60, noise=1.0, random_state=0),
                "make_friedman1(n_samples=4000, n_features=60, noise=1.0, random_state=0): regression, "
                "60 features of which 5 are informative", False, 60),
    "reg80": (lambda: make_regression(n_samples=1200, n_features=80, n_informative=30, noise=10.0,
                                      random_state=0),
              "make_regression(n_samples=1200, n_features=80, n_informative=30, noise=10.0, random_state=0): "
              "regression, 80 features of which 30 are informative", False, 80),
}


def datasets():
    """bc/diab/wine exactly as the first zoo splits them, plus the synthetic sets."""
    out = base.datasets()
    for key, (make, _doc, classification, nan_seed) in SYNTHETIC.items():
        X, y = make()
        X = X.astype(np.float32).astype(np.float64)
        Xn = X.copy()
        rng = np.random.default_rng(nan_seed)
        Xn[rng.random(X.shape) < base.NAN_FRACTION] = np.nan
        idx = np.arange(len(y))
        tr, te = train_test_split(idx, test_size=SYN_TEST_ROWS, random_state=base.SPLIT_SEED,
                                  stratify=y if classification else None)
        out[key] = {"X": X, "Xn": Xn, "y": y, "tr": tr, "te": te}
    return out


def dataset_doc(key):
    if key in base.DATASET_DOC:
        return base.DATASET_DOC[key]
    return f"synthetic, sklearn.datasets.{SYNTHETIC[key][1]}"


def split_doc(key, nan):
    if key in base.DATASET_DOC:
        return base.split_doc(key, nan)
    s = (f"features cast to float32; train_test_split(test_size={SYN_TEST_ROWS}, random_state={base.SPLIT_SEED}"
         + (", stratify=y)" if SYNTHETIC[key][2] else ")"))
    if nan:
        s += (f"; before splitting, each cell set to NaN with probability {base.NAN_FRACTION} "
              f"(numpy default_rng({SYNTHETIC[key][3]}).random(X.shape) < {base.NAN_FRACTION})")
    return s


PARAM_KEYS = ("n_estimators", "max_depth", "min_samples_leaf", "max_features", "max_iter", "max_leaf_nodes",
              "num_leaves", "min_child_samples", "learning_rate", "random_state", "early_stopping", "tree_method",
              "n_jobs", "deterministic", "force_row_wise")


def est_params(est):
    """base.est_params with a few more keys (min_samples_leaf, max_features)."""
    p = est.get_params(deep=False)
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in p.items()
            if k in PARAM_KEYS}


# Declared for z2_reg80_rf_reg_nan, whose ORT output differs from the spec
# evaluator's exact (float64) sum by more than the tolerance on a few rows.
F32_CANCELLATION = (
    "Not a departure from the operator's semantics but from exact arithmetic: ORT adds the trees' leaf values "
    "(already scaled by 1/n_trees) in float32, in tree order (see 'Accumulation precision' in "
    "models/trees/README.md). The leaf values here have both signs and magnitudes up to a few tens, and on the "
    "rows whose prediction is close to 0 they nearly cancel, so the float32 sum is off the exact sum by more "
    "than the 1e-5 relative tolerance. NAME.spec.json holds the exact sum; ort_vs_float32_tree_order_sum shows "
    "that a float32 sum in tree order reproduces ORT bit for bit.")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def tree_shape(model):
    """max depth (edges from root to the deepest leaf), nodes and leaves of
    the model's tree node (ai.onnx.ml 1-3 attributes)."""
    a = base._attrs(base.tree_nodes(model)[0])
    index = {(t, n): i for i, (t, n) in enumerate(zip(a["nodes_treeids"], a["nodes_nodeids"]))}
    modes = a["nodes_modes"]
    kids = {}
    for i, m in enumerate(modes):
        if m != "LEAF":
            t = a["nodes_treeids"][i]
            kids[i] = (index[(t, a["nodes_truenodeids"][i])], index[(t, a["nodes_falsenodeids"][i])])
    children = {c for pair in kids.values() for c in pair}
    depth = 0
    for root in (i for i in range(len(modes)) if i not in children):
        stack = [(root, 0)]
        while stack:
            i, d = stack.pop()
            depth = max(depth, d)
            stack.extend((c, d + 1) for c in kids.get(i, ()))
    return {"max_depth": depth, "n_nodes": len(modes), "n_leaves": sum(1 for m in modes if m == "LEAF")}


def add_sklearn_missing_tracks(model, forest):
    """skl2onnx 1.20 ignores the missing-value direction of scikit-learn's
    DecisionTree/RandomForest/ExtraTrees nodes (tree_.missing_go_to_left): a
    NaN then always takes the false (right) branch of BRANCH_LEQ. Set
    nodes_missing_value_tracks_true from the fitted trees, so that ORT sends
    NaN where scikit-learn does. Returns how many branch nodes send NaN left."""
    node = base.tree_nodes(model)[0]
    a = base._attrs(node)
    tracks = []
    for t, n, m in zip(a["nodes_treeids"], a["nodes_nodeids"], a["nodes_modes"]):
        tree = forest.estimators_[t].tree_
        tracks.append(int(m != "LEAF" and bool(tree.missing_go_to_left[n])))
    new = helper.make_attribute("nodes_missing_value_tracks_true", tracks)
    attrs = [new if x.name == new.name else x for x in node.attribute]
    if new.name not in a:
        attrs.append(new)
    del node.attribute[:]
    node.attribute.extend(attrs)
    return sum(tracks)


def float32_tree_order_sum(model, X):
    """A regressor's output as ORT computes it with float input (see
    "Accumulation precision" in models/trees/README.md): each tree's leaf
    value added to a float32 accumulator in tree order, then the base value
    in float32. Only for post_transform NONE."""
    ref = base.ReferenceEnsemble(base.tree_nodes(model)[0], np.float32)
    assert not ref.classifier and ref.post == "NONE" and ref.aggregate == "SUM"
    out = np.zeros((X.shape[0], ref.n_targets), dtype=np.float32)
    for r, row in enumerate(np.asarray(X, dtype=np.float64)):
        acc = np.zeros(ref.n_targets, dtype=np.float32)
        for votes in ref.leaf_votes(row):
            for k, w in votes:
                acc[k] = np.float32(acc[k] + np.float32(w))
        if ref.base.size:
            acc = (acc + ref.base.astype(np.float32)).astype(np.float32)
        out[r] = acc
    return out


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def build(zoo, data):
    notes_lgbm = ["LightGBM thresholds are float64; the converter stores them as float32, so a row can fall on the "
                  "other side of a split than in LightGBM itself (see ort_vs_library).",
                  "As written by onnxmltools: IR version 4, and for classifiers the label output is declared with "
                  "shape [1] although it is [N] (ORT warns and returns [N])."]

    def split(key, nan=False):
        d = data[key]
        X = d["Xn"] if nan else d["X"]
        return X[d["tr"]], d["y"][d["tr"]], X[d["te"]].astype(np.float32), d["y"][d["te"]]

    def source(key, est, nan, converter, extra=None):
        s = {"kind": type(est).__module__.split(".")[0], "estimator": type(est).__name__,
             "params": est_params(est), "dataset": dataset_doc(key), "split": split_doc(key, nan),
             "converter": converter}
        if extra:
            s.update(extra)
        s["description"] = f"{type(est).__name__} on {key}" + (" with NaN" if nan else "")
        return s

    def add(name, model, Xte, src, covers, lib, notes=None, deviation=None):
        zoo.add(name, model, Xte, "input", source=src, covers=covers, library=lib, notes=notes,
                ort_deviation=deviation)
        entry = zoo.entries[-1]
        entry["tree_shape"] = tree_shape(model)
        if base.tree_nodes(model)[0].op_type != "TreeEnsembleRegressor":
            return
        # regressors: ORT's output is the float32 sum in tree order, bit for bit
        got = base.ort_outputs(model, Xte, "input")[0][1]
        want = float32_tree_order_sum(model, Xte)
        same = bool(np.array_equal(got.view(np.uint32), want.view(np.uint32)))
        entry["ort_vs_float32_tree_order_sum"] = {
            "bitwise_equal": same, "max_abs_diff": float(np.max(np.abs(got.astype(np.float64) - want)))}
        if not same:
            zoo.failures.append(f"{name}: ORT's output is not the float32 sum in tree order")

    conv = {"skl2onnx": skl2onnx.__version__, "options": {"zipmap": False}}

    def skl_clf(name, key, est, covers, nan=False, tracks=False):
        Xtr, ytr, Xte, _ = split(key, nan)
        est.fit(Xtr, ytr)
        model = base.skl_convert(est, Xte.shape[1])
        extra, notes = None, None
        if tracks:
            # what skl2onnx alone gives, for the record
            plain = base.ort_outputs(model, Xte, "input")
            off = int(np.sum(plain[0][1] != est.predict(Xte)))
            n_left = add_sklearn_missing_tracks(model, est)
            extra = {"rewrite": "nodes_missing_value_tracks_true set from the fitted trees' missing_go_to_left "
                                "(skl2onnx 1.20 ignores it)"}
            notes = [f"{n_left} branch nodes send NaN to the true (left) branch.",
                     f"Without the rewrite (skl2onnx's output as is), ORT's label differs from scikit-learn's on "
                     f"{off} of the {len(Xte)} test rows."]
        add(name, model, Xte, source(key, est, nan, conv, extra), covers,
            (est.predict(Xte), est.predict_proba(Xte)), notes)

    def skl_reg(name, key, est, covers, nan=False, tracks=False, deviation=None):
        Xtr, ytr, Xte, _ = split(key, nan)
        est.fit(Xtr, ytr)
        model = base.skl_convert(est, Xte.shape[1])
        extra, notes = None, None
        if tracks:
            # what skl2onnx alone gives, for the record
            plain = base.ort_outputs(model, Xte, "input")[0][1].astype(np.float64).ravel()
            off = int(np.sum(np.abs(plain - est.predict(Xte)) > 1e-3))
            n_left = add_sklearn_missing_tracks(model, est)
            extra = {"rewrite": "nodes_missing_value_tracks_true set from the fitted trees' missing_go_to_left "
                                "(skl2onnx 1.20 ignores it)"}
            notes = [f"{n_left} branch nodes send NaN to the true (left) branch.",
                     f"Without the rewrite (skl2onnx's output as is), ORT differs from scikit-learn by more than "
                     f"1e-3 on {off} of the {len(Xte)} test rows."]
        add(name, model, Xte, source(key, est, nan, {"skl2onnx": skl2onnx.__version__}, extra), covers,
            (None, est.predict(Xte).reshape(-1, 1)), notes, deviation)

    # ---- scikit-learn --------------------------------------------------------------------------------------
    skl_clf("z2_wine_et_clf_d6", "wine", ExtraTreesClassifier(n_estimators=100, max_depth=6, random_state=R),
            ["ExtraTrees multiclass (3): 3 probability weights per leaf, pre-scaled by 1/n_trees"])
    skl_clf("z2_wine_et_clf_deep", "wine", ExtraTreesClassifier(n_estimators=100, max_depth=None, random_state=R),
            ["ExtraTrees multiclass (3), unpruned trees (pure leaves)"])
    skl_clf("z2_syn8_et_clf_d6", "syn8", ExtraTreesClassifier(n_estimators=100, max_depth=6, random_state=R),
            ["ExtraTrees multiclass (8 classes)", "50 features"])
    skl_clf("z2_syn8_et_clf_deep", "syn8",
            ExtraTreesClassifier(n_estimators=8, max_depth=None, min_samples_leaf=2, random_state=R),
            ["ExtraTrees multiclass (8 classes), unpruned deep trees", "50 features"])
    skl_clf("z2_syn6_et_clf_nan", "syn6",
            ExtraTreesClassifier(n_estimators=25, max_depth=14, min_samples_leaf=3, random_state=R),
            ["ExtraTrees multiclass (6 classes) with NaN inputs", "missing-value tracks on a forest", "depth 14"],
            nan=True, tracks=True)
    skl_clf("z2_bc_rf_clf_deep", "bc", RandomForestClassifier(n_estimators=200, max_depth=None, random_state=R),
            ["RandomForest binary, 200 unpruned trees", "binary single weight column summed over 200 trees"])
    skl_reg("z2_diab_rf_reg_deep", "diab", RandomForestRegressor(n_estimators=40, max_depth=None, random_state=R),
            ["RandomForest regressor, unpruned trees (depth > 16)", "SUM of leaf values pre-scaled by 1/n_trees"])
    skl_reg("z2_fried60_rf_reg_d10", "fried60",
            RandomForestRegressor(n_estimators=40, max_depth=10, min_samples_leaf=5, random_state=R),
            ["RandomForest regressor, depth 10", "60 features"])
    skl_reg("z2_reg80_rf_reg_nan", "reg80",
            RandomForestRegressor(n_estimators=30, max_depth=14, min_samples_leaf=3, max_features=0.5,
                                  random_state=R),
            ["RandomForest regressor with NaN inputs", "missing-value tracks on a random forest", "80 features",
             "float32 accumulation: leaf values of both signs that nearly cancel"],
            nan=True, tracks=True, deviation=F32_CANCELLATION)
    skl_clf("z2_syn5_hgb_clf_nan", "syn5",
            HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=31, early_stopping=False, random_state=R),
            ["HistGradientBoosting multiclass (5 classes), SOFTMAX, base_values", "NaN inputs", "60 features"],
            nan=True)

    if not base.HAVE_BOOSTERS:
        print(f"xgboost/lightgbm/onnxmltools not importable ({base._BOOSTER_IMPORT_ERROR}): skipping those models")
        return
    mlt = {"onnxmltools": base.onnxmltools.__version__}

    def boost(name, key, est, converter, covers, nan, regression=False):
        Xtr, ytr, Xte, _ = split(key, nan)
        est.fit(Xtr.astype(np.float32), ytr)
        kw = {} if converter is base.convert_xgboost or regression else {"zipmap": False}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = converter(est, initial_types=[("input", base.MltFloatTensorType([None, Xte.shape[1]]))],
                              target_opset=base.ONNXMLTOOLS_TARGET_OPSET, **kw)
        lib = (None, est.predict(Xte).reshape(-1, 1)) if regression else (est.predict(Xte), est.predict_proba(Xte))
        kind = type(est).__module__.split(".")[0]
        add(name, model, Xte,
            dict(source(key, est, nan, dict(mlt, options=kw)), **{kind: getattr(sys.modules[kind], "__version__")}),
            covers, lib, notes_lgbm if kind == "lightgbm" else None)

    lgb, xgb = base.lightgbm, base.xgboost
    lgb_common = dict(learning_rate=0.1, random_state=R, n_jobs=1, deterministic=True, force_row_wise=True,
                      verbose=-1)
    xgb_common = dict(learning_rate=0.1, random_state=R, n_jobs=1, tree_method="hist")
    boost("z2_wine_lgbm_clf_nan", "wine",
          lgb.LGBMClassifier(n_estimators=60, num_leaves=31, min_child_samples=5, **lgb_common),
          base.convert_lightgbm, ["LightGBM multiclass (3), SOFTMAX", "NaN inputs", "whole graph with Cast/Identity/Mul"],
          nan=True)
    boost("z2_syn6_lgbm_clf_nan", "syn6",
          lgb.LGBMClassifier(n_estimators=40, num_leaves=31, **lgb_common),
          base.convert_lightgbm, ["LightGBM multiclass (6 classes), 240 trees", "NaN inputs", "40 features"],
          nan=True)
    boost("z2_fried60_lgbm_reg_l127", "fried60",
          lgb.LGBMRegressor(n_estimators=40, num_leaves=127, **lgb_common),
          base.convert_lightgbm, ["LightGBM regressor with 127 leaves per tree (unbalanced, deep trees)",
                                  "60 features"], nan=False, regression=True)
    boost("z2_syn7_xgb_clf_nan", "syn7", xgb.XGBClassifier(n_estimators=40, max_depth=5, **xgb_common),
          base.convert_xgboost, ["XGBoost multiclass (7 classes), 280 trees, SOFTMAX with base_values",
                                 "NaN inputs", "BRANCH_LT", "55 features"], nan=True)
    boost("z2_fried60_xgb_reg_d10", "fried60", xgb.XGBRegressor(n_estimators=30, max_depth=10, **xgb_common),
          base.convert_xgboost, ["XGBoost regressor, depth 10", "BRANCH_LT", "60 features"],
          nan=False, regression=True)


# ---------------------------------------------------------------------------
def main():
    out = base.zoo_command_line(__doc__, OUT)

    zoo = base.Zoo(out, generator=GENERATOR)
    build(zoo, datasets())

    conventions = {
        **base.manifest_conventions(),
        "tree_shape": "this zoo only: max_depth (edges from a root to its deepest leaf, over all trees), n_nodes "
                      "and n_leaves (over all trees) of the tree-ensemble node",
    }
    manifest = {"generator": GENERATOR, "command": f"python3 {GENERATOR}",
                "versions": base.manifest_versions(), "conventions": conventions, "models": zoo.entries}
    base.write_json(out / "manifest.json", manifest)
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    biggest = max(e["bytes"] for e in zoo.entries)
    print(f"{len(zoo.entries)} models, largest .onnx {biggest} B, directory {total} B")
    if biggest > MAX_MODEL_BYTES or total > MAX_DIR_BYTES:
        zoo.failures.append(f"size budget exceeded: largest {biggest} B, total {total} B")
    if zoo.failures:
        for msg in zoo.failures:
            print("FAIL:", msg, file=sys.stderr)
        sys.exit(1)
    print("OK: every model's ORT output agrees with the spec evaluator and the manifest is written")


if __name__ == "__main__":
    main()
