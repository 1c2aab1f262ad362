#!/usr/bin/env bash
# Builds the Python SDK from this repository and runs its tests (part of scripts/test.sh, so of CI).
#
# 1. A virtual environment (target/python-sdk/, or CORDON_PYTHON_SDK_DIR) gets the pinned tools of
#    scripts/requirements-python-sdk.txt from PyPI (wheels only; kept while the pins are the same).
# 2. `pip install crates/cordon-python`, the one command README.md gives, builds the SDK's wheel
#    from source with maturin (the `dev` profile here, which shares the tests' compiled crates;
#    users get `release`) and installs it. Nothing of Cordon is downloaded prebuilt.
# 3. pytest runs crates/cordon-python/pytests/ against a `cordon dev up` deployment it starts
#    (target/debug/cordon, built here if missing), refusal cases included.
# Arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
req="$repo/scripts/requirements-python-sdk.txt"
out="${CORDON_PYTHON_SDK_DIR:-$repo/target/python-sdk}"
mkdir -p "$out"
pins="$(sha256sum "$req" | cut -d' ' -f1)"
venv="$out/venv-$pins"
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
        --only-binary=:all: -r "$req" \
        || { echo "test-python-sdk: pip could not install $req from PyPI" >&2; exit 1; }
    touch "$venv/.complete"
fi
py="$venv/bin/python"

cargo build --locked --quiet -p cordon --bin cordon
# The tools are pinned above, so the build does not fetch its own (no build isolation).
PATH="$venv/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" "$py" -m pip install --quiet --disable-pip-version-check \
    --no-build-isolation --no-deps --force-reinstall "$repo/crates/cordon-python"

CORDON_BIN="$repo/target/debug/cordon" CORDON_REPO="$repo" \
    "$py" -m pytest -q -p no:cacheprovider "$repo/crates/cordon-python/pytests" "$@"
