//! Replays the committed fuzz corpora (fuzz/corpus/*) through the fuzz entry points: a fast check
//! in CI that no known input panics. Long fuzzing runs use `cargo fuzz` (see fuzz/README.md).

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::replay;

#[test]
fn snp_report_corpus_never_panics() {
    assert!(replay("snp_report", cordon_attest::fuzzing::snp_report) >= 3);
}

#[test]
fn evidence_corpus_never_panics() {
    assert!(replay("evidence", cordon_attest::fuzzing::evidence) >= 6);
}

#[test]
fn policy_corpus_never_panics() {
    assert!(replay("policy", cordon_attest::fuzzing::policy) >= 9);
}
