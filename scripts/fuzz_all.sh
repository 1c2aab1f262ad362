#!/usr/bin/env bash
# Runs fuzz targets one after another (never in parallel: the development machine has two shared
# cores), each for SECONDS, through scripts/fuzz.sh. Without target names, runs every target.
# Usage: scripts/fuzz_all.sh SECONDS [TARGET...]
set -uo pipefail
seconds=${1:?usage: scripts/fuzz_all.sh SECONDS [TARGET...]}
shift
here=$(dirname "$0")
if [ $# -eq 0 ]; then
    set -- $(cd "$here/../fuzz" && cargo +nightly fuzz list)
fi
for target in "$@"; do
    "$here/fuzz.sh" "$target" "$seconds" || echo "=== $target exited with $?"
done
