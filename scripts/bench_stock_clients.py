"""Single-row latency and batch throughput of the stock Triton / KServe v2 Python clients through
`cordon proxy`, side by side in one run: HTTP with JSON tensors, HTTP with binary tensors (the
client's default), and gRPC (--grpc-listen). The client library's own cost is in every figure alike.

Usage (docs/benchmarks.md gives the whole sequence):
    PY=$(scripts/fetch-python-clients.sh /tmp/cordon-python-clients)
    $PY scripts/bench_stock_clients.py HTTP_ADDR GRPC_ADDR [--model breast-cancer-lr] [--calls 2000]
"""

import argparse
import json
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

parser = argparse.ArgumentParser()
parser.add_argument("http")
parser.add_argument("grpc")
parser.add_argument("--model", default="breast-cancer-lr")
parser.add_argument("--features", type=int, default=30)
parser.add_argument("--calls", type=int, default=2000)
parser.add_argument("--batch-rows", type=int, default=1024)
args = parser.parse_args()

http = httpclient.InferenceServerClient(url=args.http)
grpc = grpcclient.InferenceServerClient(url=args.grpc)
rng = np.random.default_rng(7)


def http_call(binary):
    def call(x):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        return http.infer(args.model, [inp], outputs=[out]).as_numpy("probabilities")
    return call


def grpc_call(x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = grpcclient.InferRequestedOutput("probabilities")
    return grpc.infer(args.model, [inp], outputs=[out]).as_numpy("probabilities")


paths = [("http_json", http_call(False)), ("http_binary", http_call(True)), ("grpc", grpc_call)]
rows = rng.random((args.calls, args.features), dtype=np.float32)
batch = rng.random((args.batch_rows, args.features), dtype=np.float32)
results = {}
for name, call in paths:
    for i in range(100):
        call(rows[i : i + 1])
    times = []
    for i in range(args.calls):
        t = time.perf_counter()
        call(rows[i : i + 1])
        times.append(time.perf_counter() - t)
    times.sort()
    call(batch)
    runs, t = 0, time.perf_counter()
    while runs < 5 or time.perf_counter() - t < 1.0:
        call(batch)
        runs += 1
    elapsed = time.perf_counter() - t
    results[name] = {
        "p50_us": times[len(times) // 2] * 1e6,
        "p99_us": times[int(len(times) * 0.99)] * 1e6,
        "batch_rows_per_s": runs * args.batch_rows / elapsed,
    }

print(f"| path | p50 µs | p99 µs | batch-{args.batch_rows} rows/s | p50 vs http_json |")
print("|---|---|---|---|---|")
base = results["http_json"]["p50_us"]
for name, r in results.items():
    print(f"| {name} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['batch_rows_per_s']:.0f} | "
          f"{r['p50_us'] / base:.2f} |")
print(json.dumps(results))
