//! Replays the committed fuzz corpora (fuzz/corpus/*) through the fuzz entry points: a fast check
//! in CI that no known input panics. Long fuzzing runs use `cargo fuzz` (see fuzz/README.md).

use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        f(&data);
        // Truncations and a flipped byte of every corpus entry, too.
        for len in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            f(&data[..len]);
        }
        let mut flipped = data.clone();
        if let Some(b) = flipped.get_mut(data.len() / 3) {
            *b ^= 0xff;
        }
        f(&flipped);
        n += 1;
    }
    n
}

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
