//! SNP verification against real reports (testdata/attestation/README.md has their provenance).

use super::*;
use crate::{appraise, MinTcbFloor, Policy};

const TRUSTEE_REPORT: &[u8] =
    include_bytes!("../../../../testdata/attestation/snp/trustee_test-report.bin");
const TRUSTEE_VCEK: &[u8] =
    include_bytes!("../../../../testdata/attestation/snp/trustee_test-vcek.der");
const GOSEV_REPORT: &[u8] =
    include_bytes!("../../../../testdata/attestation/snp/gosev_attestation.bin");
const GOSEV_VCEK: &[u8] = include_bytes!("../../../../testdata/attestation/snp/gosev_vcek.der");
const VLEK_REPORT: &[u8] =
    include_bytes!("../../../../testdata/attestation/snp/trustee_test-vlek-report.bin");
const VLEK: &[u8] = include_bytes!("../../../../testdata/attestation/snp/trustee_test-vlek.der");

/// Noon UTC of a day, to keep the tests readable.
fn date(y: u16, m: u8, d: u8) -> SystemTime {
    der::DateTime::new(y, m, d, 12, 0, 0)
        .unwrap()
        .to_system_time()
}

fn v(report: &[u8], cert: &[u8], at: SystemTime) -> Result<Claims, SnpError> {
    verify(report, &[cert.to_vec()], at)
}

#[test]
fn trustee_report_verifies_and_claims_match_the_abi_offsets() {
    let c = v(TRUSTEE_REPORT, TRUSTEE_VCEK, date(2025, 1, 1)).unwrap();
    assert_eq!(c.platform, Platform::Snp);
    assert!(c.hardware_backed);
    // Offsets from the SNP ABI spec's ATTESTATION_REPORT table, read here independently.
    assert_eq!(c.report_data, TRUSTEE_REPORT[0x50..0x90]);
    assert_eq!(c.launch_measurement, TRUSTEE_REPORT[0x90..0xC0]);
    assert_eq!(c.workload_data, TRUSTEE_REPORT[0xC0..0xE0]);
    assert_eq!(
        c.platform_id.as_deref(),
        Some(&TRUSTEE_REPORT[0x1A0..0x1E0])
    );
    let policy = u64::from_le_bytes(TRUSTEE_REPORT[8..16].try_into().unwrap());
    assert_eq!(policy, 0x3001f);
    assert!(!c.debug);
    let tcb = c.tcb.as_ref().unwrap();
    let reported = TRUSTEE_REPORT[0x180..0x188].to_vec();
    assert_eq!(tcb.components["bootloader"], u64::from(reported[0]));
    assert_eq!(tcb.components["tee"], u64::from(reported[1]));
    assert_eq!(tcb.components["snp"], u64::from(reported[6]));
    assert_eq!(tcb.components["microcode"], u64::from(reported[7]));
    assert_eq!(c.raw["product"], "Milan");
    assert_eq!(c.raw["migrate_ma"], false);
    // A report of 2023 (SEV firmware 1.52.4, REPORTED_TCB bootloader 3, SNP SPL 8, microcode 115):
    // below the default Milan floor of snp::floor, which the inspection default applies too. Every
    // other check passes, and dropping the floor explicitly accepts it.
    let verdict = appraise(&c, &Policy::hardware_default());
    let reasons = verdict.reasons();
    assert_eq!(verdict.failures.len(), 3, "{reasons}");
    for needle in [
        "tcb.bootloader: 3 is below the default minimum 4 for Milan",
        "tcb.snp: 8 is below the default minimum 27 for Milan (AMD-SB-3020",
        "tcb.microcode: 115 is below the default minimum 222 for Milan",
    ] {
        assert!(reasons.contains(needle), "{needle} missing from {reasons}");
    }
    let no_floor = Policy {
        min_tcb_floor: MinTcbFloor::None,
        ..Policy::hardware_default()
    };
    assert!(appraise(&c, &no_floor).is_accepted());
}

#[test]
fn debug_guest_verifies_but_fails_the_default_policy() {
    let c = v(GOSEV_REPORT, GOSEV_VCEK, date(2025, 1, 1)).unwrap();
    assert!(c.debug, "policy 0xb0000 has bit 19 set");
    let verdict = appraise(&c, &Policy::hardware_default());
    assert!(verdict.reasons().contains("debug"), "{}", verdict.reasons());
}

#[test]
fn vlek_report_verifies_inside_its_window_and_expires_after() {
    let c = v(VLEK_REPORT, VLEK, date(2025, 6, 1)).unwrap();
    assert_eq!(c.raw["endorsement_key"], "Vlek");
    assert_eq!(c.raw["version"], 3);
    // Version 3 names its CPU: Milan B1 (19h/01h/1), whose microcode floor is 0xDE. Its TCB
    // (bootloader 4, SNP SPL 24, microcode 217 = 0xD9, SEV firmware 1.55.29) predates AMD-SB-3020.
    assert_eq!(
        (
            &c.raw["cpuid_fam_id"],
            &c.raw["cpuid_mod_id"],
            &c.raw["cpuid_step"]
        ),
        (
            &serde_json::json!(0x19),
            &serde_json::json!(1),
            &serde_json::json!(1)
        )
    );
    let verdict = appraise(&c, &Policy::hardware_default());
    let reasons = verdict.reasons();
    assert_eq!(verdict.failures.len(), 2, "{reasons}");
    assert!(
        reasons.contains("tcb.snp: 24 is below the default minimum 27"),
        "{reasons}"
    );
    assert!(
        reasons.contains("tcb.microcode: 217 is below the default minimum 222"),
        "{reasons}"
    );
    let err = v(VLEK_REPORT, VLEK, date(2026, 1, 1)).unwrap_err();
    assert!(
        matches!(err, SnpError::Expired { cert: "VLEK", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("2025-12-10"), "{err}");
}

#[test]
fn outside_the_window_names_what_expired() {
    let err = v(TRUSTEE_REPORT, TRUSTEE_VCEK, date(2031, 1, 1)).unwrap_err();
    assert!(
        matches!(err, SnpError::Expired { cert: "VCEK", .. }),
        "{err}"
    );
    let err = v(TRUSTEE_REPORT, TRUSTEE_VCEK, date(2022, 1, 1)).unwrap_err();
    assert!(matches!(err, SnpError::NotYetValid { .. }), "{err}");
    let err = v(GOSEV_REPORT, GOSEV_VCEK, date(2030, 1, 1)).unwrap_err();
    assert!(
        err.to_string().contains("VCEK expired at 2029-09-24"),
        "{err}"
    );
}

#[test]
fn swapping_the_vcek_for_another_real_one_is_rejected() {
    let err = v(TRUSTEE_REPORT, GOSEV_VCEK, date(2025, 1, 1)).unwrap_err();
    assert!(matches!(err, SnpError::BadSignature { .. }), "{err}");
    let err = v(GOSEV_REPORT, TRUSTEE_VCEK, date(2025, 1, 1)).unwrap_err();
    assert!(matches!(err, SnpError::BadSignature { .. }), "{err}");
}

#[test]
fn the_signing_key_field_decides_which_key_is_acceptable() {
    let err = v(VLEK_REPORT, TRUSTEE_VCEK, date(2025, 6, 1)).unwrap_err();
    assert_eq!(err, SnpError::MissingKey { needed: "VLEK" });
    let err = v(TRUSTEE_REPORT, VLEK, date(2025, 6, 1)).unwrap_err();
    assert_eq!(err, SnpError::MissingKey { needed: "VCEK" });
    assert_eq!(
        verify(TRUSTEE_REPORT, &[], date(2025, 6, 1)).unwrap_err(),
        SnpError::MissingKey { needed: "VCEK" }
    );
    // Several certificates: the matching one is used, wherever it is in the list.
    let both = [VLEK.to_vec(), TRUSTEE_VCEK.to_vec()];
    assert!(verify(TRUSTEE_REPORT, &both, date(2025, 6, 1)).is_ok());
    let two_chips = [GOSEV_VCEK.to_vec(), TRUSTEE_VCEK.to_vec()];
    assert!(verify(TRUSTEE_REPORT, &two_chips, date(2025, 6, 1)).is_ok());
    assert!(verify(GOSEV_REPORT, &two_chips, date(2025, 6, 1)).is_ok());
}

#[test]
fn pem_certificates_are_accepted() {
    let b64 = base64_encode(TRUSTEE_VCEK);
    let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
    assert!(v(TRUSTEE_REPORT, pem.as_bytes(), date(2025, 1, 1)).is_ok());
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out.as_bytes()
        .chunks(64)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_flipped_byte_of_report_or_signature_is_rejected() {
    let verifier = Verifier::default();
    let certs = [TRUSTEE_VCEK.to_vec()];
    let at = date(2025, 1, 1);
    assert!(verifier.verify(TRUSTEE_REPORT, &certs, at).is_ok());
    for i in 0..REPORT_LEN {
        let mut bad = TRUSTEE_REPORT.to_vec();
        bad[i] ^= 0x01;
        assert!(
            verifier.verify(&bad, &certs, at).is_err(),
            "flipped byte {i:#x} accepted"
        );
    }
    for len in [0, 1, 4, 0x2A0, REPORT_LEN - 1] {
        assert!(matches!(
            verifier.verify(&TRUSTEE_REPORT[..len], &certs, at),
            Err(SnpError::Length { .. })
        ));
    }
}

#[test]
fn report_signature_check_alone_agrees_with_p384_and_rejects_flips() {
    use p384::ecdsa::signature::Verifier as _;
    for (report, cert, name) in [
        (TRUSTEE_REPORT, TRUSTEE_VCEK, "VCEK"),
        (GOSEV_REPORT, GOSEV_VCEK, "VCEK"),
        (VLEK_REPORT, VLEK, "VLEK"),
    ] {
        let key = endorsement_key(parse_certificate(cert).unwrap()).unwrap();
        let r = AttestationReport::parse(report).unwrap();
        verify_report_signature(report, &r, &key).unwrap();
        // A second implementation (RustCrypto) accepts the same big-endian r and s.
        let sig = p384::ecdsa::Signature::from_scalars(r.signature_r, r.signature_s).unwrap();
        key.public_key.verify(&report[..SIGNED_LEN], &sig).unwrap();
        for i in 0..SIGNED_LEN {
            let mut bad = report.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                verify_report_signature(&bad, &r, &key),
                Err(SnpError::BadSignature { key: name }),
                "flipped signed byte {i:#x} accepted"
            );
        }
        // Every bit of R and S, through the whole verifier: the signature check itself refuses.
        let verifier = Verifier::default();
        let certs = [cert.to_vec()];
        assert!(verifier.verify(report, &certs, date(2025, 6, 1)).is_ok());
        for off in (0x2A0..0x2A0 + 48).chain(0x2E8..0x2E8 + 48) {
            for bit in 0..8 {
                let mut bad = report.to_vec();
                bad[off] ^= 1 << bit;
                assert_eq!(
                    verifier.verify(&bad, &certs, date(2025, 6, 1)).unwrap_err(),
                    SnpError::BadSignature { key: name },
                    "{name}: flipped signature bit {bit} of byte {off:#x}"
                );
            }
        }
        // R and S swapped, and a signature of zeros.
        let mut swapped = r.clone();
        std::mem::swap(&mut swapped.signature_r, &mut swapped.signature_s);
        assert!(verify_report_signature(report, &swapped, &key).is_err());
        let mut zero = r.clone();
        zero.signature_r = [0; 48];
        zero.signature_s = [0; 48];
        assert!(verify_report_signature(report, &zero, &key).is_err());
        assert!(matches!(
            verify_report_signature(&report[..SIGNED_LEN - 1], &r, &key),
            Err(SnpError::Length { .. })
        ));
    }
}

#[test]
fn every_flipped_byte_of_the_vcek_is_rejected() {
    let at = date(2025, 1, 1);
    for i in 0..TRUSTEE_VCEK.len() {
        let mut bad = TRUSTEE_VCEK.to_vec();
        bad[i] ^= 0x01;
        // A fresh verifier each time: nothing cached.
        assert!(
            v(TRUSTEE_REPORT, &bad, at).is_err(),
            "flipped VCEK byte {i} accepted"
        );
    }
}

#[test]
fn version_5_and_reserved_fields_are_checked() {
    let mut r = TRUSTEE_REPORT.to_vec();
    r[0x4C] = 1;
    assert!(matches!(
        AttestationReport::parse(&r),
        Err(SnpError::Reserved { offset: 0x4C, .. })
    ));
    let mut r = TRUSTEE_REPORT.to_vec();
    r[0] = 4;
    assert_eq!(AttestationReport::parse(&r), Err(SnpError::Version(4)));
    let mut r = TRUSTEE_REPORT.to_vec();
    r[0] = 5;
    let parsed = AttestationReport::parse(&r).unwrap();
    assert_eq!(parsed.launch_mit_vector, Some(0));
    let mut r = TRUSTEE_REPORT.to_vec();
    r[0x48] = 0b111 << 2;
    assert!(matches!(
        verify(&r, &[TRUSTEE_VCEK.to_vec()], date(2025, 1, 1)),
        Err(SnpError::Unsigned)
    ));
}

#[test]
fn product_comes_from_cpuid_in_v3_reports() {
    let r = AttestationReport::parse(VLEK_REPORT).unwrap();
    assert_eq!((r.cpuid_fam_id, r.cpuid_mod_id), (0x19, 0x01));
    assert_eq!(r.product_from_cpuid(), Some(Product::Milan));
    assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
    assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
    assert_eq!(
        TcbVersion::decode(0x0807_0000_0000_0302, Product::Turin).fmc,
        Some(0x02)
    );
}

#[test]
fn inspect_reads_without_verifying() {
    let j = inspect(GOSEV_REPORT).unwrap();
    assert_eq!(j["version"], 2);
    assert_eq!(j["debug"], true);
    assert_eq!(j["measurement"], hex::encode(&GOSEV_REPORT[0x90..0xC0]));
}

mod crl {
    use super::*;
    use der::asn1::{BitString, UtcTime};
    use der::{Decode, Encode};
    use rsa::signature::{RandomizedSigner, SignatureEncoding};
    use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::time::Time;

    fn utc(t: SystemTime) -> Time {
        Time::UtcTime(UtcTime::from_system_time(t).unwrap())
    }

    /// A CRL in AMD's form (RSASSA-PSS SHA-384, the ARK's algorithm identifier and name), signed by
    /// `key`. AMD's own CRLs cannot be re-signed here, so the checks are exercised with a test key.
    fn make_crl(
        key: &rsa::RsaPrivateKey,
        revoked: &[&SerialNumber],
        next_update: SystemTime,
    ) -> Vec<u8> {
        let ark = &pinned_roots().unwrap()[0].ark;
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: ark.signature_algorithm.clone(),
            issuer: ark.tbs_certificate.subject.clone(),
            this_update: utc(date(2024, 1, 1)),
            next_update: Some(utc(next_update)),
            revoked_certificates: (!revoked.is_empty()).then(|| {
                revoked
                    .iter()
                    .map(|s| RevokedCert {
                        serial_number: (*s).clone(),
                        revocation_date: utc(date(2024, 6, 1)),
                        crl_entry_extensions: None,
                    })
                    .collect()
            }),
            crl_extensions: None,
        };
        let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(key.clone());
        let sig = signer.sign_with_rng(&mut rsa::rand_core::OsRng, &tbs.to_der().unwrap());
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: ark.signature_algorithm.clone(),
            signature: BitString::from_bytes(&sig.to_bytes()).unwrap(),
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn crl_checks_signature_window_issuer_and_revoked_serials() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let public = key.to_public_key();
        let ark = &pinned_roots().unwrap()[0].ark;
        let name = &ark.tbs_certificate.subject;
        let vcek = parse_certificate(TRUSTEE_VCEK).unwrap();
        let serial = &vcek.tbs_certificate.serial_number;
        let other = SerialNumber::new(&[0x42]).unwrap();
        let serials = [("VCEK", serial)];
        let at = date(2025, 1, 1);

        let clean = parse_crl(&make_crl(&key, &[&other], date(2026, 1, 1))).unwrap();
        assert_eq!(check_crl(&clean, name, &public, &serials, at), Ok(()));

        let revoking = parse_crl(&make_crl(&key, &[&other, serial], date(2026, 1, 1))).unwrap();
        let err = check_crl(&revoking, name, &public, &serials, at).unwrap_err();
        assert!(
            matches!(err, SnpError::Revoked { cert: "VCEK", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("2024-06-01"), "{err}");

        let stale = parse_crl(&make_crl(&key, &[], date(2024, 12, 1))).unwrap();
        let err = check_crl(&stale, name, &public, &serials, at).unwrap_err();
        assert!(
            matches!(err, SnpError::Expired { cert: "CRL", .. }),
            "{err}"
        );
        let err = check_crl(&clean, name, &public, &serials, date(2023, 6, 1)).unwrap_err();
        assert!(
            matches!(err, SnpError::NotYetValid { cert: "CRL", .. }),
            "{err}"
        );

        let stranger = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let forged = parse_crl(&make_crl(&stranger, &[], date(2026, 1, 1))).unwrap();
        assert!(matches!(
            check_crl(&forged, name, &public, &serials, at),
            Err(SnpError::Crl(_))
        ));
        assert!(matches!(
            check_crl(&clean, &vcek.tbs_certificate.subject, &public, &serials, at),
            Err(SnpError::Crl(m)) if m.contains("issued by")
        ));

        let der = make_crl(&key, &[&other], date(2026, 1, 1));
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0x01;
            let ok = parse_crl(&bad).and_then(|c| check_crl(&c, name, &public, &serials, at));
            assert!(ok.is_err(), "flipped CRL byte {i} accepted");
        }
        assert!(CertificateList::from_der(&der).is_ok());
    }

    #[test]
    fn revocation_uses_the_pinned_ark_and_needs_a_crl_for_the_product() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let forged = make_crl(&key, &[], date(2026, 1, 1));
        let certs = [TRUSTEE_VCEK.to_vec()];
        // A CRL naming the Milan ARK but not signed by it is refused.
        let err = Verifier::default()
            .verify_with_crls(TRUSTEE_REPORT, &certs, &[forged], date(2025, 1, 1))
            .unwrap_err();
        assert!(
            matches!(err, SnpError::Crl(ref m) if m.contains("ARK")),
            "{err}"
        );
        // CRLs that are not for this product line are no substitute.
        let ek = endorsement_key(parse_certificate(TRUSTEE_VCEK).unwrap()).unwrap();
        assert_eq!(
            check_revocation(&ek, &[], date(2025, 1, 1)),
            Err(SnpError::NoCrlForProduct { product: "Milan" })
        );
        // Without CRLs, verification does not check revocation.
        assert!(Verifier::default()
            .verify_with_crls(TRUSTEE_REPORT, &certs, &[], date(2025, 1, 1))
            .is_ok());
    }
}
