#!/usr/bin/env bash
# Minimizes a target's corpus with the already-built fuzz binary (what `cargo fuzz cmin` does, without
# rebuilding, so it can run while another target is being built or fuzzed), then puts the named seeds
# back. Usage: scripts/fuzz_cmin.sh TARGET
set -euo pipefail
target=${1:?usage: scripts/fuzz_cmin.sh TARGET}
cd "$(dirname "$0")/../fuzz"
bin=target/x86_64-unknown-linux-gnu/release/$target
tmp=$(mktemp -d)
mkdir "$tmp/min"
# Named seeds (not 40-hex-digit names) are kept as they are: they document where the corpus started.
find "corpus/$target" -type f -regextype posix-extended ! -regex '.*/[0-9a-f]{40}' -exec cp {} "$tmp/" \;
"$bin" -merge=1 "$tmp/min" "corpus/$target" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true
rm -rf "corpus/$target"
mkdir "corpus/$target"
cp "$tmp"/min/* "corpus/$target/" 2>/dev/null || true
find "$tmp" -maxdepth 1 -type f -exec cp {} "corpus/$target/" \;
rm -rf "$tmp"
echo "corpus/$target: $(ls "corpus/$target" | wc -l) files"
