#!/usr/bin/env python3
"""Train the fraud-scoring example's model and write models/fraud/.

Run from the repository root:

    python3 scripts/make_fraud_model.py            # rewrites models/fraud/ (README.md included)
    python3 scripts/make_fraud_model.py --verify   # re-runs ONNX Runtime on the committed files only

Generates card transactions with scripts/fraud_data.py (seeded; fresh cards
for every set), trains a LightGBM gradient-boosted tree classifier on them,
converts it to ONNX with onnxmltools (one FP32 input [N, F]; outputs `label`
[N] and `probabilities` [N, 2], no ZipMap), picks the decision threshold that
maximizes F1 on a validation stream, and measures the model with ONNX Runtime
on a held-out test stream (committed) and on two larger streams (not
committed): one like the test stream, one a year later with drift.

Files written to models/fraud/:

    fraud_gbdt.onnx           the model
    fraud_test.csv            the test stream: features, label, pattern and
                              ORT's fraud probability (ort_p_fraud) per row
    fraud_gbdt.input.json     a fixed subset of the test stream as an Open
    fraud_gbdt.expected.json  Inference Protocol request, and ORT's outputs for
                              it (the tree zoo's form, models/trees/README.md)
    fraud_gbdt.metrics.json   threshold and figures, for tests and the example
    README.md                 provenance and figures

Deterministic: two runs give byte-identical files (one thread everywhere,
seeded generators, LightGBM in deterministic mode, the converter's random
graph name replaced, protobuf serialized deterministically).
"""

import os

# One thread for BLAS/OpenMP: LightGBM's and numpy's results then do not depend on the machine.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import lightgbm  # noqa: E402
import onnx  # noqa: E402
import onnxmltools  # noqa: E402
import onnxruntime as ort  # noqa: E402
import sklearn  # noqa: E402
from onnx import helper  # noqa: E402
from onnxmltools import convert_lightgbm  # noqa: E402
from onnxmltools.convert.common.data_types import FloatTensorType  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fraud_data as fd  # noqa: E402
# The zoo's JSON conventions (float32 as repr of the widened value, NaN as null) and ORT session.
from make_tree_models import oip_tensor, ort_session, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "models" / "fraud"
NAME = "fraud_gbdt"
PRODUCER = "cordon scripts/make_fraud_model.py"
COMMAND = "python3 scripts/make_fraud_model.py"

# The streams: fresh cards (own seed) for each. Training covers days 0-59, the others follow it.
STREAMS = {
    "train": dict(seed=101, n_cards=6000, days=60, start_day=0),
    "valid": dict(seed=102, n_cards=2000, days=60, start_day=60),
    "test": dict(seed=103, n_cards=1200, days=14, start_day=60),
    "eval": dict(seed=104, n_cards=12000, days=14, start_day=60),
    "drift": dict(seed=105, n_cards=6000, days=14, start_day=365, drift=1.0),
}
LGBM_PARAMS = dict(n_estimators=300, num_leaves=31, max_depth=6, learning_rate=0.05, min_child_samples=50,
                   colsample_bytree=0.8, subsample=0.8, subsample_freq=1, reg_lambda=1.0,
                   random_state=0, n_jobs=1, deterministic=True, force_row_wise=True, verbose=-1)
ONNXMLTOOLS_TARGET_OPSET = 15   # highest onnxmltools 1.16 accepts (as in make_tree_models.py)
THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)
REFERENCE_ROWS = 200            # rows of the test stream in fraud_gbdt.input.json
MAX_BYTES = 3_000_000           # budget for the whole directory


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ort_run(sess, X):
    label, prob = sess.run(["label", "probabilities"], {"input": X})
    return np.asarray(label), np.asarray(prob)


def confusion(y, p, threshold):
    """Counts at `p >= threshold` (the example's rule)."""
    pred = p >= np.float32(threshold)
    return dict(tp=int((pred & (y == 1)).sum()), fp=int((pred & (y == 0)).sum()),
                fn=int((~pred & (y == 1)).sum()), tn=int((~pred & (y == 0)).sum()))


def figures(y, p, threshold):
    c = confusion(y, p, threshold)
    precision = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 0.0
    recall = c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(rows=int(y.size), fraud=int(y.sum()), fraud_rate=round(float(y.mean()), 6), **c,
                precision=round(precision, 6), recall=round(recall, 6), f1=round(f1, 6),
                pr_auc=round(float(average_precision_score(y, p)), 6),
                roc_auc=round(float(roc_auc_score(y, p)), 6))


def best_threshold(y, p):
    """The grid threshold with the highest F1 (the lowest such threshold on ties)."""
    return float(max(THRESHOLDS, key=lambda t: (figures_f1(y, p, t), -t)))


def figures_f1(y, p, t):
    c = confusion(y, p, t)
    return 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] else 0.0


def tidy(model, threshold):
    """Deterministic bytes and a self-describing model."""
    model.graph.name = NAME  # onnxmltools names the graph with a random UUID
    seen = {}
    for o in model.opset_import:
        seen[o.domain] = max(seen.get(o.domain, 0), o.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(seen.items()))
    # onnxmltools declares the label output as [1]; it is one label per row.
    for out in model.graph.output:
        if out.name == "label":
            dims = out.type.tensor_type.shape.dim
            del dims[:]
            dims.add().dim_param = "N"
    model.producer_name = PRODUCER
    model.producer_version = fd.GENERATOR_VERSION
    model.doc_string = ("Card-fraud scorer for Cordon's fraud-scoring example: LightGBM GBDT on synthetic "
                        "transactions from scripts/fraud_data.py. Not for real payments.")
    meta = {
        "description": model.doc_string,
        "input": f"input: float32 [N, {fd.N_FEATURES}]: " + ", ".join(n for n, _ in fd.FEATURES),
        "outputs": "label: int64 [N] (1 = fraud at LightGBM's 0.5); probabilities: float32 [N, 2] "
                   "(column 1 = P(fraud))",
        "threshold": repr(threshold),
        "generator": f"scripts/fraud_data.py version {fd.GENERATOR_VERSION}",
        "lightgbm_version": lightgbm.__version__,
        "onnxmltools_version": onnxmltools.__version__,
    }
    del model.metadata_props[:]
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def reference_rows(test, p):
    """The rows of fraud_gbdt.input.json: every fraudulent or fraud-labelled row, the legitimate
    rows ORT scores highest (the false-positive side), then evenly spaced rows, in stream order."""
    chosen = set(np.flatnonzero((test.label == 1) | (test.pattern > 0)).tolist())
    legit = np.flatnonzero((test.label == 0) & (test.pattern == 0))
    chosen |= set(legit[np.argsort(-p[legit], kind="stable")[:30]].tolist())
    for i in np.linspace(0, test.label.size - 1, REFERENCE_ROWS).astype(int):
        if len(chosen) >= REFERENCE_ROWS:
            break
        chosen.add(int(i))
    return np.array(sorted(chosen)[:REFERENCE_ROWS])


def table(rows):
    head = "| stream | rows | fraud | TP | FP | FN | TN | precision | recall | F1 | PR-AUC | ROC-AUC |"
    lines = [head, "|" + "---|" * 12]
    for name, f in rows:
        lines.append(f"| {name} | {f['rows']} | {f['fraud']} ({f['fraud_rate']:.3%}) | {f['tp']} | {f['fp']} | "
                     f"{f['fn']} | {f['tn']} | {f['precision']:.4f} | {f['recall']:.4f} | {f['f1']:.4f} | "
                     f"{f['pr_auc']:.4f} | {f['roc_auc']:.4f} |")
    return "\n".join(lines)


def stream_doc(name):
    s = STREAMS[name]
    return (f"`generate(seed={s['seed']}, n_cards={s['n_cards']}, days={s['days']}, "
            f"start_day={s['start_day']}" + (f", drift={s['drift']}" if "drift" in s else "") + ")`")


def readme(info):
    m = info["metrics"]
    t = info["threshold"]
    feats = "\n".join(f"| {i} | `{n}` | {d} |" for i, (n, d) in enumerate(fd.FEATURES))
    pats = "\n".join(f"| {fd.PATTERNS[k]} | " + " | ".join(str(info["patterns"][s][k]) for s in ("test", "eval"))
                     + " | " + (f"{info['pattern_recall'][k]:.3f}" if k else "-") + " |"
                     for k in range(len(fd.PATTERNS)))
    files = "\n".join(f"| `{f}` | {b} | `{h}` |" for f, (b, h) in info["files"].items())
    streams = "\n".join(f"| {k} | {stream_doc(k)} | {info['rows'][k]} |" for k in STREAMS)
    v = info["versions"]
    return f"""# Fraud-scoring model

A gradient-boosted tree model that scores card transactions, for Cordon's
fraud-scoring example (`crates/cordon-client/examples/fraud_scoring.rs`). The
data are **synthetic**: made by `scripts/fraud_data.py` (generator version
{fd.GENERATOR_VERSION}), not taken from any real cardholder. The model exists to test and
demonstrate confidential inference. It is **not** a fraud control for real
payments.

Everything in this directory, this README included, is written by
`{COMMAND}`. Do not edit by hand.

## Files

| file | bytes | sha256 |
|---|---|---|
{files}

- `fraud_gbdt.onnx`: LightGBM `LGBMClassifier` converted by onnxmltools
  (ai.onnx opset {info['opsets']['']}, ai.onnx.ml opset {info['opsets']['ai.onnx.ml']}, IR version
  {info['ir_version']}). Ops: {', '.join(info['ops'])}. {info['trees']} trees, {info['nodes']} nodes.
  - input `input`: float32 `[N, {fd.N_FEATURES}]`, the features below in order; NaN is a
    missing value (the trees route it).
  - output `label`: int64 `[N]`, LightGBM's own label (1 when P(fraud) > 0.5).
  - output `probabilities`: float32 `[N, 2]`; column 1 is P(fraud). Decisions
    in this README and the example use column 1 against the threshold below.
- `fraud_test.csv`: the held-out test stream ({m['test']['rows']} transactions of
  {info['test_cards']} cards over {STREAMS['test']['days']} days, in time order). Header, then one row each:
  the {fd.N_FEATURES} features, `label` (1 = reported fraud), `pattern` (the generator's
  ground truth: 0 = legitimate, {', '.join(f'{i} = {p}' for i, p in enumerate(fd.PATTERNS) if i)}),
  and `ort_p_fraud` (ONNX Runtime {v['onnxruntime']}'s P(fraud) for the row). Numbers are the
  shortest decimal that reads back as the same float32, whether parsed as
  float32 or as float64 then rounded; an empty field is NaN.
- `fraud_gbdt.input.json`, `fraud_gbdt.expected.json`: {info['reference_rows']} rows of the test
  stream (every fraudulent or fraud-labelled row, the 30 legitimate rows ORT
  scores highest, then evenly spaced rows; their indices are in the metrics
  file) as an Open Inference Protocol request, and ORT's outputs for them, in
  the tree zoo's form (`../trees/README.md`: float32 as the repr of the
  widened value, NaN as `null`). Cordon's tree engine must match them: labels
  exactly, probabilities within 1e-5 relative
  (`crates/cordon-trees/tests/conformance.rs`).
- `fraud_gbdt.metrics.json`: the threshold, the figures below, the reference
  rows, and the seeds, for tests and the example.

## Features

| # | name | meaning |
|---|---|---|
{feats}

History features are computed per card over everything it did before the
transaction (a 30-day warm-up included, fraud included), as an issuer sees it
at authorization time.

## Data

Five streams, each from fresh cards (its own seed), from
`fraud_data.generate(seed, n_cards, days, start_day, warmup_days=30,
fraud_rate=0.002, drift=0.0)`:

| stream | call | rows |
|---|---|---|
{streams}

The generator keeps card profiles (spending rate, amounts, merchant-category
preferences and favourite merchants, online share, contactless habit,
travel), draws legitimate transactions per card over time (with bursts of
small in-app purchases and rides), and adds fraud incidents on victim cards
until about 0.2% of the rows are labelled fraud. Labels carry noise: 5% of
fraudulent rows are never reported (label 0), and 0.01% of legitimate rows are
disputed (label 1). `scripts/fraud_data.py --help` and its module docstring
describe every pattern.

| pattern | test rows | eval rows | eval recall at the threshold |
|---|---|---|---|
{pats}

## Model

`lightgbm.LGBMClassifier({', '.join(f'{k}={v!r}' for k, v in LGBM_PARAMS.items())})`,
fitted on the train stream's float32 features and labels, then
`onnxmltools.convert_lightgbm(model, initial_types=[("input", FloatTensorType([None, {fd.N_FEATURES}]))],
target_opset={ONNXMLTOOLS_TARGET_OPSET}, zipmap=False)`. The script renames the graph (onnxmltools
names it with a random UUID), sorts the opset imports, declares the `label`
output as `[N]` (onnxmltools writes `[1]`), and sets the metadata.

ONNX Runtime against LightGBM itself on the test stream: {info['ort_vs_lgbm']['label_mismatches']} label
mismatches; P(fraud) differs by more than 1e-5 on {info['ort_vs_lgbm']['rows_over_1e5']} of {m['test']['rows']} rows, by
{info['ort_vs_lgbm']['max_abs_diff']:.3g} at most. LightGBM's thresholds are float64 and the ONNX model
stores them as float32, so a row whose feature lies between the two takes the
other branch of that split. ORT's outputs are the reference here.

**Threshold: {t}**, the value in 0.01, 0.02, ..., 0.99 with the highest F1 on
the valid stream (ORT's probabilities). A transaction is flagged when
P(fraud) ≥ {t}.

## Figures

All computed from ONNX Runtime {v['onnxruntime']}'s P(fraud) (single thread), at the
threshold {t}. PR-AUC is the average precision (scikit-learn's
`average_precision_score`). `valid` is the stream the threshold was chosen
on. `test` is the committed stream; `eval` is a
larger stream from the same distribution (not committed), so its figures move
less with a few incidents; `drift` is a stream a year later generated with
`drift=1.0` (more spending online, larger amounts, fraud shifted to account
takeover and stealth with cleaner devices): the model was not trained for it.

{table([(k, m[k]) for k in ('test', 'valid', 'eval', 'drift')])}

Stealth fraud is designed to look like the holder's own spending: the model
catches almost none of it, as intended.

## Regenerating

```
pip install -r scripts/requirements-trees.txt
{COMMAND}            # about a minute on 2 cores
{COMMAND} --verify   # re-runs ORT on the committed files
```

Environment used: Python {v['python']} on Linux x86_64, numpy {v['numpy']},
scikit-learn {v['scikit-learn']}, lightgbm {v['lightgbm']}, onnxmltools {v['onnxmltools']}, onnx
{v['onnx']}, onnxruntime {v['onnxruntime']} (pinned in `scripts/requirements-trees.txt`).
Two runs give byte-identical files. Other package versions may train
different trees, and so give different files and figures.

The script exits non-zero if ORT and LightGBM disagree by more than 0.05 on a
probability or by more than 1e-5 on over 1% of the test rows, if the
reference subset's ORT outputs differ from the whole stream's, or if the
directory exceeds {MAX_BYTES} bytes.
"""


def verify():
    """Re-run ORT on the committed model against the committed outputs."""
    sess = ort_session((OUT / f"{NAME}.onnx").read_bytes())
    failures = []
    # the reference subset, read as a client would
    req = json.loads((OUT / f"{NAME}.input.json").read_text(encoding="utf-8"))["inputs"][0]
    X = np.array([np.nan if v is None else v for v in req["data"]], dtype=np.float32).reshape(req["shape"])
    label, prob = ort_run(sess, X)
    exp = {o["name"]: o for o in json.loads((OUT / f"{NAME}.expected.json").read_text(encoding="utf-8"))["outputs"]}
    if label.tolist() != exp["label"]["data"]:
        failures.append("labels differ from fraud_gbdt.expected.json")
    if not np.array_equal(prob.reshape(-1), np.array(exp["probabilities"]["data"], dtype=np.float32)):
        failures.append("probabilities differ from fraud_gbdt.expected.json")
    # the test stream's recorded probabilities
    rows = [line.split(",") for line in (OUT / "fraud_test.csv").read_text(encoding="ascii").splitlines()[1:]]
    X = np.array([[float(v) if v else np.nan for v in r[:fd.N_FEATURES]] for r in rows], dtype=np.float32)
    recorded = np.array([float(r[-1]) for r in rows], dtype=np.float32)
    _, prob = ort_run(sess, X)
    if not np.array_equal(prob[:, 1], recorded):
        failures.append("ort_p_fraud in fraud_test.csv differs from ORT")
    metrics = json.loads((OUT / f"{NAME}.metrics.json").read_text(encoding="utf-8"))
    y = np.array([int(r[fd.N_FEATURES]) for r in rows])
    if figures(y, prob[:, 1], metrics["threshold"]) != metrics["metrics"]["test"]:
        failures.append("test figures differ from fraud_gbdt.metrics.json")
    for f in failures:
        print("FAIL:", f)
    print(f"{NAME}: {len(rows)} test rows and {req['shape'][0]} reference rows against ORT {ort.__version__}: "
          + ("OK" if not failures else "FAILED"))
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verify", action="store_true", help="only re-run ORT on the committed files")
    args = ap.parse_args()
    if args.verify:
        sys.exit(0 if verify() else 1)

    data = {k: fd.generate(**v) for k, v in STREAMS.items()}
    for k, tx in data.items():
        print(f"{k}: {fd.summary(tx)}")
    train = data["train"]
    est = lightgbm.LGBMClassifier(**LGBM_PARAMS)
    est.fit(train.X, train.label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert_lightgbm(est, initial_types=[("input", FloatTensorType([None, fd.N_FEATURES]))],
                                 target_opset=ONNXMLTOOLS_TARGET_OPSET, zipmap=False)
    sess = ort_session(model.SerializeToString())
    p = {k: ort_run(sess, tx.X)[1][:, 1] for k, tx in data.items()}
    threshold = best_threshold(data["valid"].label, p["valid"])
    model = tidy(model, threshold)
    sess = ort_session(model.SerializeToString(deterministic=True))
    failures = []

    test = data["test"]
    label, prob = ort_run(sess, test.X)
    if not np.array_equal(prob[:, 1], p["test"]):
        failures.append("tidying the graph changed ORT's outputs")
    lgbm_p = est.predict_proba(test.X)[:, 1]
    diff = np.abs(lgbm_p - prob[:, 1])
    ort_vs_lgbm = dict(label_mismatches=int((label != est.predict(test.X)).sum()),
                       rows_over_1e5=int((diff > 1e-5).sum()), max_abs_diff=float(diff.max()))
    # The converter rounds LightGBM's float64 thresholds to float32, so a row whose feature sits
    # between the two takes the other branch of that split: small, rare differences are expected.
    # Large or frequent ones mean a broken conversion.
    if ort_vs_lgbm["max_abs_diff"] > 0.05 or ort_vs_lgbm["rows_over_1e5"] > test.label.size // 100:
        failures.append(f"ORT and LightGBM disagree: {ort_vs_lgbm}")

    OUT.mkdir(parents=True, exist_ok=True)
    for f in OUT.iterdir():  # the directory is fully generated
        f.unlink()
    (OUT / f"{NAME}.onnx").write_bytes(model.SerializeToString(deterministic=True))
    fd.write_csv(OUT / "fraud_test.csv", test, {"ort_p_fraud": prob[:, 1]})
    ref = reference_rows(test, prob[:, 1])
    ref_label, ref_prob = ort_run(sess, test.X[ref])
    if not (np.array_equal(ref_label, label[ref]) and np.array_equal(ref_prob, prob[ref])):
        failures.append("ORT's outputs on the reference rows differ from those on the whole stream")
    write_json(OUT / f"{NAME}.input.json", {"inputs": [oip_tensor("input", test.X[ref])]})
    write_json(OUT / f"{NAME}.expected.json",
               {"outputs": [oip_tensor("label", ref_label.astype(np.int64)),
                            oip_tensor("probabilities", ref_prob.astype(np.float32))]})

    metrics = {k: figures(data[k].label, p[k], threshold) for k in ("test", "valid", "eval", "drift")}
    ev = data["eval"]
    flagged = p["eval"] >= np.float32(threshold)
    pattern_recall = {k: float(flagged[ev.pattern == k].mean()) if (ev.pattern == k).any() else 0.0
                      for k in range(1, len(fd.PATTERNS))}
    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                "lightgbm": lightgbm.__version__, "onnxmltools": onnxmltools.__version__,
                "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    write_json(OUT / f"{NAME}.metrics.json", {
        "model": f"{NAME}.onnx",
        "generator": f"scripts/fraud_data.py version {fd.GENERATOR_VERSION}",
        "command": COMMAND,
        "versions": versions,
        "streams": STREAMS,
        "features": [n for n, _ in fd.FEATURES],
        "probability_output": "probabilities[:, 1]",
        "threshold": threshold,
        "rule": "fraud when probabilities[:, 1] >= threshold (float32 comparison)",
        "metrics": metrics,
        "reference_rows": ref.tolist(),
    })

    tree = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    attrs = {a.name: helper.get_attribute_value(a) for a in tree.attribute}
    files = {}
    for f in sorted(OUT.iterdir()):
        files[f.name] = (f.stat().st_size, sha256(f))
    info = dict(
        metrics=metrics, threshold=threshold, versions=versions, files=files, rows={k: int(v.label.size) for k, v in
                                                                                    data.items()},
        opsets={o.domain: o.version for o in model.opset_import}, ir_version=model.ir_version,
        ops=sorted({n.op_type for n in model.graph.node}), trees=len(set(attrs["nodes_treeids"])),
        nodes=len(attrs["nodes_treeids"]), test_cards=int(np.unique(test.card).size),
        reference_rows=int(ref.size), ort_vs_lgbm=ort_vs_lgbm, pattern_recall=pattern_recall,
        patterns={k: [int((data[k].pattern == i).sum()) for i in range(len(fd.PATTERNS))] for k in ("test", "eval")},
    )
    (OUT / "README.md").write_text(readme(info), encoding="utf-8", newline="\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"threshold {threshold}; test: {metrics['test']}")
    print(f"wrote {len(list(OUT.iterdir()))} files, {total} bytes")
    if total > MAX_BYTES:
        failures.append(f"models/fraud is {total} bytes, over the {MAX_BYTES} budget")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
