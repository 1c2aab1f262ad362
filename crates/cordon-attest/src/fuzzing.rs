//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test that CI runs
//! (`tests/fuzz_corpus.rs`). Each must return normally for any input.

use crate::{decode_evidence, detect, inspect, snp, Endorsements, Verifier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../../testdata/attestation/tdx/tdx_quote_collateral.json");

fn verifier() -> &'static Verifier {
    static VERIFIER: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| {
        Verifier::new(Endorsements {
            snp_certs: vec![VCEK.to_vec()],
            dcap_collateral: crate::dcap::DcapCollateral::from_json(TDX_COLLATERAL).ok(),
            ..Endorsements::default()
        })
    })
}

fn fixed_time() -> SystemTime {
    // 2025-07-01T00:00:00Z: inside the windows of the VCEK and of the TDX collateral.
    UNIX_EPOCH + Duration::from_secs(1_751_328_000)
}

/// SNP report parsing, inspection and verification.
pub fn snp_report(data: &[u8]) {
    let _ = snp::inspect(data);
    let _ = snp::verify(data, &[VCEK.to_vec()], fixed_time());
    // The same bytes as a certificate.
    let _ = snp::parse_certificate(data).map(snp::endorsement_key);
}

/// Detection (with hex decoding), inspection and verification of any evidence (with a VCEK and the
/// TDX fixture's collateral, at a time inside both their windows, so that SNP and DCAP verification
/// code is reached).
pub fn evidence(data: &[u8]) {
    let bytes = decode_evidence(data);
    if detect(&bytes).is_ok() {
        let _ = inspect(&bytes);
        let _ = verifier().verify(&bytes, fixed_time());
    }
}
