#!/usr/bin/env bash
# Puts ONNX Runtime's shared library where Cordon's tests and tools look for it
# (target/onnxruntime/libonnxruntime.so.1.32.0), from the pinned, hash-checked `onnxruntime`
# wheel on PyPI (scripts/requirements-onnxruntime.txt). Only the library is extracted: nothing is
# installed into Python and nothing is built. Prints the library's path. Idempotent.
#
# The runtime never looks for the library itself: its configuration names the file and pins its
# SHA-256 (`[onnxruntime]`, docs/architecture.md). This is for `cargo test`, `cordon bench serve`
# and `cordon dev up --onnxruntime-library`.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/onnxruntime
lib="$dest/libonnxruntime.so.1.32.0"
if [ ! -f "$lib" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --require-hashes -r scripts/requirements-onnxruntime.txt -d "$tmp" >&2
    python3 - "$tmp" "$dest" <<'PY'
import glob, os, sys, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    name = "onnxruntime/capi/libonnxruntime.so.1.32.0"
    with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)) + ".part", "wb") as out:
        out.write(src.read())
os.replace(os.path.join(dest, "libonnxruntime.so.1.32.0.part"), os.path.join(dest, "libonnxruntime.so.1.32.0"))
PY
fi
echo "$PWD/$lib"
