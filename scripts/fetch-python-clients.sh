#!/usr/bin/env bash
# Makes a Python virtual environment in OUTDIR with the stock KServe v2 / Triton clients (HTTP, gRPC) and
# OpenAI's Python client from
# PyPI, pinned in scripts/requirements-python-clients.txt (idempotent: a complete environment with
# the same pins is kept). Prints the path of its python. Needs python3 with venv and pip.
set -euo pipefail
if [ "$#" -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
req="$repo/scripts/requirements-python-clients.txt"
mkdir -p "$1"
out="$(cd "$1" && pwd)"
# One run at a time per OUTDIR (test binaries may run it concurrently).
exec 9>"$out/.lock"
flock 9
pins="$(sha256sum "$req" | cut -d' ' -f1)"
venv="$out/venv-$pins"
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: -r "$req" >&2 \
        || { echo "fetch-python-clients: pip could not install $req from PyPI" >&2; exit 1; }
    "$venv/bin/python" -c "import tritonclient.http, tritonclient.grpc, numpy, openai" >&2
    touch "$venv/.complete"
fi
echo "$venv/bin/python"
