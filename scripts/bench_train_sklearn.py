#!/usr/bin/env python3
"""scikit-learn side of `cordon bench train`: train on the same synthetic CSV, print JSON.

    python3 scripts/bench_train_sklearn.py --csv table.csv --algorithms logistic_regression,gbdt

Only training is timed (loading and splitting are not). One thread (OMP/BLAS), as Cordon's
trainer uses one: the figures compare algorithms, not core counts. For gbdt it runs
HistGradientBoostingClassifier (histograms, like Cordon's GBDT) and, up to 200k rows,
GradientBoostingClassifier (exact splits; the reference for the parity tests).
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--algorithms", default="logistic_regression,gbdt")
    ap.add_argument("--test-fraction", type=float, default=0.25)
    a = ap.parse_args()
    data = np.loadtxt(a.csv, delimiter=",", skiprows=1, dtype=np.float32)
    x, y = data[:, :-1], data[:, -1].astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=a.test_fraction, random_state=1)
    models = []
    for name in a.algorithms.split(","):
        if name == "logistic_regression":
            models.append(("make_pipeline(StandardScaler(), LogisticRegression(C=1.0))",
                           make_pipeline(StandardScaler(), LogisticRegression(C=1.0))))
        elif name == "gbdt":
            models.append(("HistGradientBoostingClassifier(100 iter, depth 3)",
                           HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_depth=3,
                                                          early_stopping=False, random_state=0)))
            if len(y) <= 200_000:
                models.append(("GradientBoostingClassifier(100, depth 3)",
                               GradientBoostingClassifier(n_estimators=100, learning_rate=0.1,
                                                          max_depth=3, random_state=0)))
        else:
            raise SystemExit(f"unknown algorithm {name}")
    results = []
    for label, model in models:
        t = time.perf_counter()
        model.fit(xtr, ytr)
        train_s = time.perf_counter() - t
        results.append({"model": label, "train_s": train_s,
                        "test_accuracy": float(accuracy_score(yte, model.predict(xte)))})
    print(json.dumps({"version": sklearn.__version__, "rows": int(len(y)), "results": results}))


if __name__ == "__main__":
    main()
