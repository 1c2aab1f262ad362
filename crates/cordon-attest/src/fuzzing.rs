//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test that CI runs
//! (`tests/fuzz_corpus.rs`). Each must return normally for any input.

use crate::{decode_evidence, detect, inspect, snp, Endorsements, Verifier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der");

fn fixed_time() -> SystemTime {
    // 2025-01-01T00:00:00Z: inside the fixtures' windows.
    UNIX_EPOCH + Duration::from_secs(1_735_689_600)
}

/// SNP report parsing, inspection and verification.
pub fn snp_report(data: &[u8]) {
    let _ = snp::inspect(data);
    let _ = snp::verify(data, &[VCEK.to_vec()], fixed_time());
    // The same bytes as a certificate.
    let _ = snp::parse_certificate(data).map(snp::endorsement_key);
}

/// Detection (with hex decoding), inspection and verification of any evidence.
pub fn evidence(data: &[u8]) {
    let bytes = decode_evidence(data);
    if detect(&bytes).is_ok() {
        let _ = inspect(&bytes);
        let endorsements = Endorsements {
            snp_certs: vec![VCEK.to_vec()],
            ..Endorsements::default()
        };
        let _ = Verifier::new(endorsements).verify(&bytes, fixed_time());
    }
}
