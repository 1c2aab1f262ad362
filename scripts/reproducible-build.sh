#!/usr/bin/env bash
# Builds the `cordon` binary (which is also the runtime) twice from scratch and compares the two
# binaries' SHA-384. Same source and toolchain → same bytes, so anyone can rebuild a release and
# check it is the binary a `sim` launch measurement (`cordon runtime measure`) or a hardware
# reference value was computed from.
#
#   scripts/reproducible-build.sh [TARGET_DIR]      (default: target/repro)
#
# The flags that make the build reproducible:
# - `--locked`: exactly the dependency versions of Cargo.lock; no build step downloads anything.
# - `--remap-path-prefix` for the checkout and for CARGO_HOME: no absolute path of this machine
#   ends up in the binary (panic locations, debug info), so a different checkout path or user
#   gives the same bytes.
# - `SOURCE_DATE_EPOCH` = the commit's time: C code built by build scripts (aws-lc-sys) sees a
#   fixed __DATE__/__TIME__.
# - `CARGO_INCREMENTAL=0`, the release profile of Cargo.toml (no debug info), and the same
#   TARGET_DIR path for both builds (build scripts' OUT_DIR paths are then equal as well).
# The toolchain is part of the input: `rustc -V` is printed with the result.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${1:-target/repro}"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
export CARGO_INCREMENTAL=0
export SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
export RUSTFLAGS="--remap-path-prefix=$PWD=/cordon --remap-path-prefix=$cargo_home=/cargo-home"

build() {
    rm -rf "$target_dir"
    cargo build --release --locked -p cordon --target-dir "$target_dir" >&2
    sha384sum "$target_dir/release/cordon" | cut -d' ' -f1
}

# The script builds the working tree: it must not change between the two builds.
state() { git rev-parse HEAD 2>/dev/null; git status --porcelain 2>/dev/null | grep -v '^??' || true; }
before="$(state)"

echo "toolchain: $(rustc -V)"
echo "commit:    $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
first=$(build)
cp "$target_dir/release/cordon" /tmp/cordon-repro-first
second=$(build)
if [ "$(state)" != "$before" ]; then
    echo "the source changed between the two builds: no conclusion; run again on an untouched tree" >&2
    exit 2
fi
echo "build 1 SHA-384: $first"
echo "build 2 SHA-384: $second"
if [ "$first" != "$second" ]; then
    echo "NOT reproducible: the two builds differ" >&2
    cmp /tmp/cordon-repro-first "$target_dir/release/cordon" | head -5 >&2 || true
    exit 1
fi
echo "reproducible: both builds are byte-identical ($(stat -c %s "$target_dir/release/cordon") bytes)"
