//! Endorsements shipped with evidence: input, never trust. A verifier with none of its own verifies
//! with them; its own come first; a shipped certificate that does not chain to a pinned root, or
//! collateral that does not match the quote, gets nothing through.

use cordon_attest::dcap::DcapCollateral;
use cordon_attest::{Endorsements, ShippedEndorsements, Verifier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SNP_REPORT: &[u8] =
    include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin");
const SNP_VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der");
const OTHER_VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/gosev_vcek.der");
const TDX_QUOTE: &[u8] = include_bytes!("../../../testdata/attestation/tdx/tdx_quote");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../../testdata/attestation/tdx/tdx_quote_collateral.json");
const OUTDATED_COLLATERAL: &[u8] =
    include_bytes!("../../../testdata/attestation/tdx/tdx_quote_outdated_collateral.json");

/// 2025-07-01T00:00:00Z: inside the TDX quote's collateral window and the trustee VCEK's validity.
fn in_window() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_751_328_000)
}

#[test]
fn a_shipped_vcek_verifies_a_report_the_verifier_has_no_certificate_for() {
    let verifier = Verifier::new(Endorsements::default());
    assert!(verifier.verify(SNP_REPORT, in_window()).is_err());
    let shipped = ShippedEndorsements {
        snp_certs: vec![SNP_VCEK.to_vec()],
        ..Default::default()
    };
    let claims = verifier
        .verify_shipped(SNP_REPORT, &shipped, in_window())
        .unwrap();
    assert!(claims.hardware_backed);
    assert!(!claims.is_emulated());
    // Another chip's VCEK, shipped: the report is not signed by it.
    let wrong = ShippedEndorsements {
        snp_certs: vec![OTHER_VCEK.to_vec()],
        ..Default::default()
    };
    let err = verifier
        .verify_shipped(SNP_REPORT, &wrong, in_window())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("signature") || err.contains("chip id"),
        "{err}"
    );
    // A shipped "certificate" that is not one: a clear error, no panic.
    let junk = ShippedEndorsements {
        snp_certs: vec![b"not a certificate".to_vec()],
        ..Default::default()
    };
    assert!(verifier
        .verify_shipped(SNP_REPORT, &junk, in_window())
        .is_err());
    // A verifier with VCEKs of its own accepts those chips only: a host shipping the VCEK of the
    // chip it actually runs on does not get past that pin.
    let pinned_other = Verifier::new(Endorsements {
        snp_certs: vec![OTHER_VCEK.to_vec()],
        ..Default::default()
    });
    let genuine = ShippedEndorsements {
        snp_certs: vec![SNP_VCEK.to_vec()],
        ..Default::default()
    };
    assert!(pinned_other
        .verify_shipped(SNP_REPORT, &genuine, in_window())
        .is_err());
    // The verifier's own VCEK still works with junk shipped beside it.
    let own = Verifier::new(Endorsements {
        snp_certs: vec![SNP_VCEK.to_vec()],
        ..Default::default()
    });
    assert!(own.verify_shipped(SNP_REPORT, &junk, in_window()).is_ok());
}

#[test]
fn shipped_collateral_is_used_only_when_the_verifier_has_none() {
    let good = DcapCollateral::from_json(TDX_COLLATERAL).unwrap();
    // The JSON a runtime ships reads back to the same collateral.
    assert_eq!(DcapCollateral::from_json(&good.to_json()).unwrap(), good);
    let shipped = ShippedEndorsements {
        dcap_collateral: Some(good.clone()),
        ..Default::default()
    };
    let none = Verifier::new(Endorsements::default());
    let err = none.verify(TDX_QUOTE, in_window()).unwrap_err().to_string();
    assert!(err.contains("collateral"), "{err}");
    let claims = none
        .verify_shipped(TDX_QUOTE, &shipped, in_window())
        .unwrap();
    assert!(claims.hardware_backed);
    // A verifier with collateral of its own uses it, whatever is shipped: here its own is for
    // another platform, so the quote fails although the shipped collateral would pass it.
    let own = Verifier::new(Endorsements {
        dcap_collateral: Some(DcapCollateral::from_json(OUTDATED_COLLATERAL).unwrap()),
        ..Default::default()
    });
    assert!(own
        .verify_shipped(TDX_QUOTE, &shipped, in_window())
        .is_err());
    // Shipped collateral for another platform does not verify the quote either.
    let wrong = ShippedEndorsements {
        dcap_collateral: Some(DcapCollateral::from_json(OUTDATED_COLLATERAL).unwrap()),
        ..Default::default()
    };
    assert!(none.verify_shipped(TDX_QUOTE, &wrong, in_window()).is_err());
}
