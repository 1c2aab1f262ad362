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

#[test]
fn eventlog_corpus_never_panics() {
    assert!(replay("eventlog", cordon_attest::fuzzing::eventlog) >= 5);
}

#[test]
fn eventlog_seeds_parse() {
    // The named seeds are real CCEL logs (and one synthetic): the target must get past parsing.
    for seed in [
        "ccel_live_2200.bin",
        "trustee_CCEL_data_grub.bin",
        "trustee_CCEL_AAEL_alibabacloud.bin",
        "trustee_CCEL_data_grub_gke.bin",
        "synthetic_two_banks.bin",
    ] {
        let data = std::fs::read(replay::corpus("eventlog").join(seed)).unwrap();
        let log = cordon_attest::eventlog::parse(&data).unwrap_or_else(|e| panic!("{seed}: {e}"));
        assert!(!log.events.is_empty(), "{seed}");
    }
}
