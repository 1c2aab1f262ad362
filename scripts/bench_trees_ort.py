#!/usr/bin/env python3
"""Time ONNX Runtime on the tree-ensemble zoo (models/trees/), as the baseline
for Cordon's tree engine.

    python3 scripts/bench_trees_ort.py models/trees [--models a,b] [--rows 1024] [--json]

For each model: one ONNX Runtime CPU session with intra_op_num_threads=1,
inter_op_num_threads=1 and sequential execution, fed from the model's
NAME.input.json (null = NaN):

* single-row latency: --warmup calls, then --calls timed calls of one row each,
  cycling through the rows of the input set; p50 and p99 in microseconds of
  the session.run call (all graph outputs fetched, so a ZipMap graph pays for
  building its maps);
* batch throughput: the input rows tiled (repeated in order) to --rows rows;
  3 warm-up runs, then timed runs until both --batch-runs runs and
  --batch-seconds seconds are reached; rows / median run time.

stdout carries exactly one JSON document (the contract the Rust benchmark
parses):

    {"engine": "onnxruntime", "version": "1.32.0",
     "models": {"NAME": {"p50_us": ..., "p99_us": ..., "batch_rows_per_s": ...}, ...}}

Without --json a human-readable table also goes to stderr; with --json stderr
stays quiet unless something fails.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

NP_OF_OIP = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}


def read_input(path):
    req = json.loads(Path(path).read_text(encoding="utf-8"))["inputs"][0]
    data = [float("nan") if v is None else v for v in req["data"]]
    return req["name"], np.array(data, dtype=NP_OF_OIP[req["datatype"]]).reshape(req["shape"])


def model_names(model_dir):
    manifest = model_dir / "manifest.json"
    if manifest.exists():
        return [m["name"] for m in json.loads(manifest.read_text(encoding="utf-8"))["models"]]
    return sorted(p.name[:-len(".onnx")] for p in model_dir.glob("*.onnx")
                  if (model_dir / (p.name[:-len(".onnx")] + ".input.json")).exists())


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_model(model_dir, name, args):
    sess = session(model_dir / f"{name}.onnx")
    input_name, X = read_input(model_dir / f"{name}.input.json")
    n = X.shape[0]
    singles = [{input_name: np.ascontiguousarray(X[i:i + 1])} for i in range(n)]
    run = sess.run

    for i in range(args.warmup):
        run(None, singles[i % n])
    times = np.empty(args.calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(args.calls):
        feed = singles[i % n]
        t0 = clock()
        run(None, feed)
        times[i] = clock() - t0
    us = times / 1000.0

    batch = {input_name: np.ascontiguousarray(X[np.arange(args.rows) % n])}
    for _ in range(3):
        run(None, batch)
    runs = []
    start = time.perf_counter()
    while len(runs) < args.batch_runs or time.perf_counter() - start < args.batch_seconds:
        t0 = clock()
        run(None, batch)
        runs.append(clock() - t0)
    median_s = statistics.median(runs) / 1e9
    return {
        "p50_us": round(float(np.percentile(us, 50)), 3),
        "p99_us": round(float(np.percentile(us, 99)), 3),
        "batch_rows_per_s": round(args.rows / median_s, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--models", help="comma-separated model names (default: all in the manifest)")
    parser.add_argument("--rows", type=int, default=1024, help="batch size for the throughput run (default 1024)")
    parser.add_argument("--calls", type=int, default=2000, help="timed single-row calls (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed single-row calls first (default 200)")
    parser.add_argument("--batch-runs", type=int, default=20, help="at least this many timed batch runs")
    parser.add_argument("--batch-seconds", type=float, default=0.5, help="and at least this long (default 0.5)")
    parser.add_argument("--json", action="store_true", help="only the JSON document (on stdout), no table")
    args = parser.parse_args()

    names = args.models.split(",") if args.models else model_names(args.model_dir)
    results = {}
    if not args.json:
        print(f"{'model':34} {'p50 us':>10} {'p99 us':>10} {'rows/s @' + str(args.rows):>16}", file=sys.stderr)
    for name in names:
        r = bench_model(args.model_dir, name, args)
        results[name] = r
        if not args.json:
            print(f"{name:34} {r['p50_us']:10.2f} {r['p99_us']:10.2f} {r['batch_rows_per_s']:16.0f}",
                  file=sys.stderr)
    json.dump({"engine": "onnxruntime", "version": ort.__version__, "models": results}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
