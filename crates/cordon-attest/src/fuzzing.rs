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

const SNP_REPORT: &[u8] =
    include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin");
const TDX_QUOTE: &[u8] = include_bytes!("../../../testdata/attestation/tdx/tdx_quote");

/// Claims that policies are appraised against: the real claims of the SNP and TDX fixtures (so SNP
/// TCB components, DCAP status, advisories and RTMRs are all present), and a simulated platform's.
fn fixed_claims() -> &'static [crate::Claims] {
    static CLAIMS: std::sync::OnceLock<Vec<crate::Claims>> = std::sync::OnceLock::new();
    CLAIMS.get_or_init(|| {
        let mut claims: Vec<crate::Claims> = [SNP_REPORT, TDX_QUOTE]
            .iter()
            .filter_map(|e| verifier().verify(e, fixed_time()).ok())
            .collect();
        claims.push(crate::Claims {
            platform: crate::Platform::Sim,
            hardware_backed: false,
            launch_measurement: vec![0x11; 48],
            signer_measurement: None,
            workload_data: vec![0x22; 32],
            runtime_measurements: Vec::new(),
            report_data: [0x33; 64],
            debug: true,
            tcb: None,
            platform_id: None,
            attestation_key: vec![0x44; 32],
            raw: serde_json::Value::Null,
        });
        claims
    })
}

/// Policy files: parsing as a release policy and as a client's policy document (UTF-8 only: the
/// callers read policy files as strings, so other bytes must be refused before parsing), a round trip
/// through TOML, and appraisal of real claims with whatever parsed.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(policy) = crate::Policy::from_toml(text) {
        for claims in fixed_claims() {
            let verdict = crate::appraise(claims, &policy);
            let _ = verdict.reasons();
        }
        // What we write must read back as the same policy.
        let again = crate::Policy::from_toml(&policy.to_toml());
        assert_eq!(again.as_ref().ok(), Some(&policy), "policy TOML round trip");
    }
    if let Ok(doc) = crate::PolicyDocument::from_toml(text) {
        for claims in fixed_claims() {
            let _ = crate::appraise(claims, &doc.policy).is_accepted();
        }
        let again = crate::PolicyDocument::from_toml(&doc.to_toml());
        assert_eq!(
            again.as_ref().ok(),
            Some(&doc),
            "policy document TOML round trip"
        );
    }
}

/// TDX event logs (CCEL): parsing, replay, the event claims, and the RTMR check both against the
/// log's own replay (which must pass) and against the live TD's quote values.
pub fn eventlog(data: &[u8]) {
    use crate::eventlog;
    if let Ok(log) = eventlog::parse(data) {
        let replayed = log.replay();
        let claims = log.claims();
        assert_eq!(claims.len(), log.events.len(), "one claim per event");
        let checked = eventlog::check_rtmrs(data, &replayed);
        assert_eq!(checked.ok(), Some(claims), "a log matches its own replay");
    }
    let _ = eventlog::check_rtmrs(data, &[[0u8; 48]; 4]);
}
