#!/usr/bin/env bash
# The test command (README.md, .ci/run): fetches ONNX Runtime's shared library for the optional
# onnxruntime engine's tests (scripts/fetch-onnxruntime.sh: the pinned, hash-checked wheel from
# PyPI, only the library extracted, once), then runs every test of the workspace, then builds the
# Python SDK from source and runs its pytest suite against a `cordon dev up` deployment
# (scripts/test-python-sdk.sh). Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CORDON_ONNXRUNTIME_LIB:-}" ]; then
    CORDON_ONNXRUNTIME_LIB="$(scripts/fetch-onnxruntime.sh)"
    export CORDON_ONNXRUNTIME_LIB
fi
cargo test --workspace --locked "$@"
scripts/test-python-sdk.sh
