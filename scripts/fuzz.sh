#!/usr/bin/env bash
# Runs one cargo-fuzz target for a set time from its committed corpus and prints what libFuzzer
# reported: executions, exec/s, final coverage, corpus size, and whether a crash artifact appeared.
# Usage: scripts/fuzz.sh TARGET SECONDS     (needs a nightly toolchain and cargo-fuzz)
# One target at a time, no -jobs/-workers: the development machine has two shared cores.
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
seconds=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
cd "$(dirname "$0")/../fuzz"
mkdir -p logs "corpus/$target"
log="logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"
# Artifacts that were already there are not this run's crashes.
before=$(find "artifacts/$target" -type f 2>/dev/null | wc -l || true)
started=$(date +%s)
set +e
cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))
after=$(find "artifacts/$target" -type f 2>/dev/null | wc -l || true)
echo "=== $target: exit $status, wall ${elapsed}s (build included), log $log"
grep -E '^stat::number_of_executed_units|^stat::average_exec_per_sec|^stat::peak_rss_mb' "$log" || true
grep -E '^#[0-9]+.*DONE' "$log" | tail -1 || true
echo "final cov: $(grep -E '^#[0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+' || echo '?')"
echo "corpus files: $(ls "corpus/$target" | wc -l)"
if [ "$after" -gt "$before" ]; then
    echo "CRASH: new artifact(s) in fuzz/artifacts/$target:"
    ls -t "artifacts/$target" | head -n $((after - before))
else
    echo "crash artifacts: none new"
fi
exit "$status"
