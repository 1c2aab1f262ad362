#!/usr/bin/env python3
"""llama.cpp reference for Cordon's greedy-decoding equality test of Gemma 3 270M Q4_K_M.

Writes testdata/llm/gemma3-270m-q4km-llamacpp-greedy.json: for five fixed prompts (wrapped in
Gemma 3's chat template, written out below), the prompt's tokens, exactly 32 greedily decoded
tokens (argmax over the vocabulary, ties to the lowest id, never stopping at <end_of_turn>/EOS),
the top-1 minus top-2 logit margin at each step (so a test can tell near-ties apart), and the
tokens of each prompt's raw text alone, plus ten tokenizer-only cases.

Needs the model (scripts/fetch-gemma3.sh puts it in ${CORDON_LLM_CACHE:-~/.cache/cordon}) and
llama-cpp-python built from scripts/requirements-llm.txt:

    python3 -m venv /tmp/llm-venv
    CMAKE_BUILD_PARALLEL_LEVEL=2 \
    CMAKE_ARGS="-DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
      /tmp/llm-venv/bin/pip install --no-cache-dir -r scripts/requirements-llm.txt
    # (without the CMAKE_ARGS, ggml's AMX matmul segfaults on this project's VMs: see that file)
    /tmp/llm-venv/bin/python scripts/llm_reference.py            # (re)write the JSON
    /tmp/llm-venv/bin/python scripts/llm_reference.py --check    # regenerate in memory, compare

--check exits 1 on any difference in tokens, texts or metadata, or a margin off by more than
MARGIN_TOLERANCE (margins are floats from a CPU build of llama.cpp and may move in the last
digits between machines). --metadata prints the GGUF metadata of interest and exits.
"""

import argparse
import hashlib
import json
import os
import re
import sys
import time

import llama_cpp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "testdata", "llm", "gemma3-270m-q4km-llamacpp-greedy.json")
MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
MODEL_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
BOS_ID = 2
N_GENERATE = 32
MARGIN_TOLERANCE = 1e-2

# Gemma 3's chat template for one user turn, ending where the model's turn starts. The <bos> is
# part of the text, so the prompt is tokenized with add_bos=False and special=True.
TEMPLATE = "<bos><start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"

PROMPTS = [
    "Summarise this note: 54-year-old patient with chest pain radiating to the left arm, "
    "troponin elevated.",
    "Résume en une phrase : « Le café était déjà très chaud à 8 h 30, même l'été à Montréal. » 🙂",
    "What does this print?\n```python\nx = [i * i for i in range(10)]\nprint(sum(x) % 7, 0x1F)\n```",
    "List   three colours:\n\n  - red\n  - green\n\n\nand   one more?  Thanks.",
    "Hi",
]

# Tokenizer-only cases: text tokenized alone with add_bos=False, special=False.
TOKENIZER_CASES = [
    "   leading spaces",
    "double  spaces  between  words",
    "tab\tseparated\tvalues\t",
    "\n\n\n",
    "naïve café 東京 🙂",
    "1234567",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Hello, world!!!",
    "",
    "<start_of_turn>",
]


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_path():
    cache = os.environ.get("CORDON_LLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "cordon")
    path = os.path.join(cache, MODEL_NAME)
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: run scripts/fetch-gemma3.sh first")
    return path


def load(path):
    return llama_cpp.Llama(
        model_path=path, n_ctx=512, n_threads=2, seed=0, logits_all=False, verbose=False
    )


def last_logits(llm):
    # In llama-cpp-python 0.3.36, eval() with logits_all=False no longer copies any logits into
    # llm.scores (sampling moved into llama.cpp's sampler), so read the last output position's
    # logits straight from the context: llama_get_logits_ith(ctx, -1), a copy of n_vocab floats.
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).astype(np.float32, copy=True)


def greedy(llm, prompt_tokens):
    llm.reset()
    llm.eval(prompt_tokens)
    tokens, margins = [], []
    start = time.perf_counter()
    for step in range(N_GENERATE):
        logits = last_logits(llm)
        tok = int(np.argmax(logits))  # first maximum: ties go to the lowest id
        top2 = np.partition(logits, -2)[-2:]
        margins.append(round(float(top2[1] - top2[0]), 4))
        tokens.append(tok)
        if step + 1 < N_GENERATE:
            llm.eval([tok])
    elapsed = time.perf_counter() - start
    return tokens, margins, elapsed


def generate(llm, digest):
    prompts, total_time, total_tokens = [], 0.0, 0
    for text in PROMPTS:
        prompt = TEMPLATE.format(text=text)
        prompt_tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if prompt_tokens[0] != BOS_ID or (len(prompt_tokens) > 1 and prompt_tokens[1] == BOS_ID):
            sys.exit(f"prompt must start with exactly one <bos> ({BOS_ID}): {prompt_tokens[:4]}")
        tokens, margins, elapsed = greedy(llm, prompt_tokens)
        total_time += elapsed
        total_tokens += N_GENERATE - 1  # evals after the prompt's
        prompts.append(
            {
                "text": text,
                "text_tokens": llm.tokenize(text.encode("utf-8"), add_bos=False, special=False),
                "prompt_tokens": prompt_tokens,
                "generated_tokens": tokens,
                "margins": margins,
                "generated_text": llm.detokenize(tokens, special=True).decode("utf-8", "replace"),
            }
        )
        print(
            f"{len(prompt_tokens):3d} prompt tokens, min margin {min(margins):.4f}, "
            f"{N_GENERATE} tokens in {elapsed:.3f}s: {prompts[-1]['generated_text']!r}",
            file=sys.stderr,
        )
    print(f"decode: {total_tokens / total_time:.1f} tokens/s (single-token evals, 2 threads)", file=sys.stderr)
    return {
        "model": MODEL_NAME,
        "model_sha256": digest,
        "llama_cpp_python": llama_cpp.__version__,
        "n_ctx": 512,
        "n_threads": 2,
        "n_generate": N_GENERATE,
        "decoding": "greedy: argmax of the last logits, ties to the lowest id; never stops at EOS or <end_of_turn>",
        "margin": "top-1 logit minus top-2 logit at each step, rounded to 4 decimals",
        "generated_text": "llm.detokenize(generated_tokens, special=True), UTF-8 with replacement",
        "template": TEMPLATE,
        "prompt_tokenize": "llm.tokenize(TEMPLATE.format(text=text), add_bos=False, special=True)",
        "text_tokenize": "llm.tokenize(text, add_bos=False, special=False)",
        "prompts": prompts,
        "tokenizer_cases": [
            {"text": t, "tokens": llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)}
            for t in TOKENIZER_CASES
        ],
    }


def dumps(data):
    """JSON with indent 1, but every list of numbers on one line."""
    text = json.dumps(data, indent=1, ensure_ascii=False)
    return re.sub(
        r"\[\s*([-0-9.e, \n]*?)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]",
        text,
    ) + "\n"


def compare(expected, actual):
    problems = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if k not in a or k not in b:
                    problems.append(f"{where}.{k}: only in {'committed' if k in a else 'regenerated'}")
                else:
                    walk(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):
                problems.append(f"{where}: length {len(a)} != {len(b)}")
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{where}[{i}]")
        elif isinstance(a, float) or isinstance(b, float):
            if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or abs(a - b) > MARGIN_TOLERANCE:
                problems.append(f"{where}: committed {a!r}, regenerated {b!r}")
        elif a != b:
            problems.append(f"{where}: committed {a!r}, regenerated {b!r}")

    walk(expected, actual, "$")
    return problems


def print_metadata(llm):
    meta = llm.metadata
    for key in sorted(meta):
        if key.startswith(("general.", "gemma3.", "tokenizer.")) and key != "tokenizer.chat_template":
            print(f"{key} = {meta[key]}")
    print("tokenizer.chat_template =")
    print(meta.get("tokenizer.chat_template", "(none)"))
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    print(
        f"n_vocab = {llm.n_vocab()}, bos = {llm.token_bos()}, eos = {llm.token_eos()}, "
        f"eot = {llama_cpp.llama_vocab_eot(vocab)}"
    )
    for special in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"):
        print(f"{special} -> {llm.tokenize(special.encode(), add_bos=False, special=True)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate in memory and compare with the committed JSON")
    ap.add_argument("--metadata", action="store_true", help="print the GGUF metadata of interest and exit")
    args = ap.parse_args()

    path = model_path()
    digest = sha256_file(path)
    if digest != MODEL_SHA256:
        sys.exit(f"{path} has sha256 {digest}, expected {MODEL_SHA256}")
    llm = load(path)
    if args.metadata:
        print_metadata(llm)
        return 0
    data = generate(llm, digest)
    if args.check:
        with open(OUT, encoding="utf-8") as f:
            committed = json.load(f)
        problems = compare(committed, data)
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        print(f"{os.path.relpath(OUT, REPO)}: {'MISMATCH' if problems else 'OK'}", file=sys.stderr)
        return 1 if problems else 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".tmp", "w", encoding="utf-8") as f:
        f.write(dumps(data))
    os.replace(OUT + ".tmp", OUT)
    print(f"wrote {os.path.relpath(OUT, REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
