//! Tests against real quotes and collateral. testdata/attestation/README.md gives their provenance,
//! validity windows and the verdicts checked here.

use super::*;
use crate::{appraise, Policy};
use std::time::Duration;

const TDX_QUOTE: &[u8] = include_bytes!("../../../../testdata/attestation/tdx/tdx_quote");
const TDX_COLLATERAL: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/tdx_quote_collateral.json");
const SGX_QUOTE: &[u8] = include_bytes!("../../../../testdata/attestation/sgx/sgx_quote");
const SGX_COLLATERAL: &[u8] =
    include_bytes!("../../../../testdata/attestation/sgx/sgx_quote_collateral.json");
const OUTDATED_QUOTE: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/tdx_quote_outdated");
const OUTDATED_COLLATERAL: &[u8] =
    include_bytes!("../../../../testdata/attestation/tdx/tdx_quote_outdated_collateral.json");

/// Inside the TDX window (2025-06-19T10:32:27Z .. 2025-07-19T10:00:35Z) and the SGX window
/// (2025-06-19T10:56:11Z .. 2025-07-19T10:01:18Z).
const IN_WINDOW: &str = "2025-07-01T00:00:00Z";
/// Inside the outdated quote's collateral window (2026-02-18T10:58:51Z .. 2026-03-20T10:41:15Z).
const OUTDATED_TIME: &str = "2026-03-01T00:00:00Z";

/// `YYYY-MM-DDTHH:MM:SSZ` → SystemTime, via days_from_civil (H. Hinnant), the inverse of
/// `explain::rfc3339`, which it checks on the way.
fn at(text: &str) -> SystemTime {
    let n = |range: std::ops::Range<usize>| -> i64 { text[range].parse().unwrap() };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs =
        u64::try_from(days * 86_400 + n(11..13) * 3_600 + n(14..16) * 60 + n(17..19)).unwrap();
    assert_eq!(explain::rfc3339(secs), text);
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn tdx_collateral() -> DcapCollateral {
    DcapCollateral::from_json(TDX_COLLATERAL).unwrap()
}

fn sgx_collateral() -> DcapCollateral {
    DcapCollateral::from_json(SGX_COLLATERAL).unwrap()
}

fn tdx_claims() -> Claims {
    verify(TDX_QUOTE, &tdx_collateral(), at(IN_WINDOW)).unwrap()
}

fn sgx_claims() -> Claims {
    verify(SGX_QUOTE, &sgx_collateral(), at(IN_WINDOW)).unwrap()
}

/// Collateral of the other TEE type is named as a mix-up, both ways, before anything else is
/// judged (not as dcap-qvl's "Unsupported QE Identity id/version").
#[test]
fn collateral_of_the_other_tee_type_is_named() {
    for (quote, collateral, quote_tee, collateral_tee) in [
        (SGX_QUOTE, tdx_collateral(), "SGX", "TDX"),
        (TDX_QUOTE, sgx_collateral(), "TDX", "SGX"),
    ] {
        let e = verify(quote, &collateral, at(IN_WINDOW)).unwrap_err();
        assert!(
            matches!(
                e,
                DcapError::CollateralForOtherTee { quote, collateral }
                    if quote == quote_tee && collateral == collateral_tee
            ),
            "{e}"
        );
        assert!(e.to_string().contains("but the quote is from"), "{e}");
    }
}

/// `len` bytes of `bytes` at `offset`.
fn slice(bytes: &[u8], offset: usize, len: usize) -> Vec<u8> {
    bytes[offset..offset + len].to_vec()
}

// ---- verdicts of testdata/attestation/README.md ----

#[test]
fn tdx_v4_quote_is_up_to_date_inside_its_window() {
    let claims = tdx_claims();
    assert_eq!(claims.platform, Platform::Tdx);
    assert!(claims.hardware_backed);
    assert!(!claims.debug);
    let tcb = claims.tcb.as_ref().unwrap();
    assert_eq!(tcb.status.as_deref(), Some("UpToDate"));
    assert!(tcb.advisory_ids.is_empty(), "{:?}", tcb.advisory_ids);
    assert_eq!(
        claims.platform_id,
        Some(hex::decode("b0c06f000000").unwrap())
    );
    assert!(appraise(&claims, &Policy::hardware_default()).is_accepted());
}

#[test]
fn sgx_v3_quote_needs_configuration_and_sw_hardening() {
    let claims = sgx_claims();
    assert_eq!(claims.platform, Platform::Sgx);
    assert!(!claims.debug);
    let tcb = claims.tcb.as_ref().unwrap();
    assert_eq!(
        tcb.status.as_deref(),
        Some("ConfigurationAndSWHardeningNeeded")
    );
    assert_eq!(tcb.advisory_ids, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    assert_eq!(
        claims.platform_id,
        Some(hex::decode("00a067110000").unwrap())
    );

    let verdict = appraise(&claims, &Policy::hardware_default());
    assert!(verdict.is_accepted(), "{}", verdict.reasons());
    let strict = Policy {
        tcb_statuses: Some(vec!["UpToDate".into()]),
        ..Policy::hardware_default()
    };
    let verdict = appraise(&claims, &strict);
    assert!(!verdict.is_accepted());
    assert!(
        verdict
            .reasons()
            .contains("tcb.status: ConfigurationAndSWHardeningNeeded"),
        "{}",
        verdict.reasons()
    );
}

#[test]
fn tdx_v5_outdated_quote_has_no_matching_tcb_level() {
    let collateral = DcapCollateral::from_json(OUTDATED_COLLATERAL).unwrap();
    let err = verify(OUTDATED_QUOTE, &collateral, at(OUTDATED_TIME)).unwrap_err();
    match &err {
        DcapError::NoMatchingTcbLevel { fmspc, detail } => {
            assert_eq!(fmspc, "90c06f000000");
            assert!(detail.contains("No matching TCB level found"), "{detail}");
        }
        other => panic!("expected NoMatchingTcbLevel, got {other:?}"),
    }
    assert!(err.to_string().contains("no TCB level"), "{err}");
}

// ---- validity windows ----

/// `(fixture, time, expected error)`: just outside each window, the item that bounds it is named.
#[test]
fn fixtures_outside_their_windows_name_what_expired() {
    let tdx = tdx_collateral();
    let sgx = sgx_collateral();
    let expired = |item: &str, at: &str, now: &str| DcapError::Expired {
        item: item.into(),
        expired_at: at.into(),
        now: now.into(),
    };
    let not_yet = |item: &str, from: &str, now: &str| DcapError::NotYetValid {
        item: item.into(),
        valid_from: from.into(),
        now: now.into(),
    };
    // CRL dates checked with `openssl crl -nextupdate`.
    let cases: [(&[u8], &DcapCollateral, &str, DcapError); 7] = [
        (
            TDX_QUOTE,
            &tdx,
            "2025-06-19T10:00:00Z",
            not_yet("TCB info", "2025-06-19T10:16:03Z", "2025-06-19T10:00:00Z"),
        ),
        (
            TDX_QUOTE,
            &tdx,
            "2025-06-19T10:20:00Z",
            not_yet(
                "QE identity",
                "2025-06-19T10:32:27Z",
                "2025-06-19T10:20:00Z",
            ),
        ),
        (
            TDX_QUOTE,
            &tdx,
            "2025-07-20T00:00:00Z",
            expired("TCB info", "2025-07-19T10:16:03Z", "2025-07-20T00:00:00Z"),
        ),
        (
            TDX_QUOTE,
            &tdx,
            "2025-07-19T10:10:00Z",
            expired(
                "the PCK CRL (pck_crl)",
                "2025-07-19T10:00:35Z",
                "2025-07-19T10:10:00Z",
            ),
        ),
        (
            SGX_QUOTE,
            &sgx,
            "2025-07-19T10:30:00Z",
            expired(
                "QE identity",
                "2025-07-19T10:01:18Z",
                "2025-07-19T10:30:00Z",
            ),
        ),
        (
            SGX_QUOTE,
            &sgx,
            "2025-06-01T00:00:00Z",
            not_yet("TCB info", "2025-06-19T10:56:11Z", "2025-06-01T00:00:00Z"),
        ),
        (
            SGX_QUOTE,
            &sgx,
            "2026-05-01T00:00:00Z",
            expired(
                "the root CA CRL (root_ca_crl)",
                "2026-04-03T11:21:57Z",
                "2026-05-01T00:00:00Z",
            ),
        ),
    ];
    for (quote, collateral, now, expected) in cases {
        let err = verify(quote, collateral, at(now)).unwrap_err();
        assert_eq!(err, expected, "at {now}");
        let text = err.to_string();
        assert!(
            text.contains("expired") || text.contains("not valid before"),
            "{text}"
        );
    }
}

#[test]
fn webpki_time_errors_are_read() {
    let text = "Failed to verify certificate chain: CertExpired { time: UnixTime(1893456000), \
                not_after: UnixTime(1775215317) }";
    assert_eq!(
        explain::webpki_time(text, "CertExpired", "not_after"),
        Some(1_775_215_317)
    );
    assert_eq!(
        explain::webpki_time(text, "CrlExpired", "next_update"),
        None
    );
    assert_eq!(explain::rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(explain::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    at("2024-12-31T23:59:59Z");
    // A certificate of the quote's own chain is named by its subject.
    let (_, quote) = parse_quote(TDX_QUOTE).unwrap();
    let chain = dcap_qvl::intel::extract_cert_chain(&quote).unwrap();
    let leaf = <x509_cert::Certificate as der::Decode>::from_der(&chain[0]).unwrap();
    let not_after = leaf
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    let text =
        format!("CertExpired {{ time: UnixTime(2000000000), not_after: UnixTime({not_after}) }}");
    let err = explain::verification_error(&text, &quote, &tdx_collateral(), 2_000_000_000);
    assert!(
        matches!(&err, DcapError::Expired { item, .. } if item.contains("Intel SGX PCK Certificate")),
        "{err}"
    );
}

// ---- claims against bytes read at the specification's offsets ----

/// Quote header: 48 bytes. TD quote body (v4) from offset 48: MRTD @136, MRCONFIGID @184,
/// RTMR0..3 @328/376/424/472, REPORTDATA @520, TDATTRIBUTES @120, TEE_TCB_SVN @0. The signature
/// data follows the body (offset 632): length (4), ECDSA signature (64), attestation key (64).
#[test]
fn tdx_claims_match_bytes_at_spec_offsets() {
    let q = TDX_QUOTE;
    let body = 48;
    let claims = tdx_claims();
    assert_eq!(u16::from_le_bytes([q[0], q[1]]), 4);
    assert_eq!(claims.launch_measurement, slice(q, body + 136, 48));
    assert_eq!(claims.workload_data, slice(q, body + 184, 48));
    let rtmrs: Vec<Vec<u8>> = (0..4).map(|i| slice(q, body + 328 + 48 * i, 48)).collect();
    assert_eq!(claims.runtime_measurements, rtmrs);
    assert_eq!(claims.report_data.to_vec(), slice(q, body + 520, 64));
    assert_eq!(claims.signer_measurement, None);
    assert_eq!(claims.debug, q[body + 120] & 1 != 0);
    assert_eq!(claims.attestation_key, slice(q, 632 + 4 + 64, 64));
    // Values as printed by hand from the fixture, so a wrong offset on both sides cannot agree.
    assert!(hex::encode(&claims.launch_measurement).starts_with("91eb2b44d141d4ec"));
    let c = &claims.tcb.as_ref().unwrap().components;
    for i in 0..16 {
        assert_eq!(c[&format!("tee_tcb_svn_{i:02}")], u64::from(q[body + i]));
    }
    // From the PCK certificate's SGX extension (openssl asn1parse): PCESVN 11, CPUSVN 0303020204010005….
    assert_eq!(c["pce_svn"], 11);
    assert_eq!(
        (c["cpu_svn_00"], c["cpu_svn_04"], c["cpu_svn_07"]),
        (3, 4, 5)
    );
    assert_eq!(
        claims.raw["quote"]["body"]["mr_td"],
        hex::encode(slice(q, body + 136, 48))
    );
    assert_eq!(claims.raw["verification"]["pck"]["fmspc"], "b0c06f000000");
}

/// SGX report body (v3) from offset 48: ATTRIBUTES @48, MRENCLAVE @64, MRSIGNER @128, CONFIGID @192,
/// ISVSVN @258, REPORTDATA @320; signature data from 432.
#[test]
fn sgx_claims_match_bytes_at_spec_offsets() {
    let q = SGX_QUOTE;
    let body = 48;
    let claims = sgx_claims();
    assert_eq!(u16::from_le_bytes([q[0], q[1]]), 3);
    assert_eq!(claims.launch_measurement, slice(q, body + 64, 32));
    assert_eq!(claims.signer_measurement, Some(slice(q, body + 128, 32)));
    assert_eq!(claims.workload_data, slice(q, body + 192, 64));
    assert_eq!(claims.report_data.to_vec(), slice(q, body + 320, 64));
    assert!(claims.runtime_measurements.is_empty());
    assert_eq!(claims.debug, q[body + 48] & 2 != 0);
    assert_eq!(claims.attestation_key, slice(q, 432 + 4 + 64, 64));
    let c = &claims.tcb.as_ref().unwrap().components;
    assert_eq!(
        c["isv_svn"],
        u64::from(u16::from_le_bytes([q[body + 258], q[body + 259]]))
    );
    // PCK certificate: PCESVN 13, CPUSVN 0b0b0202ff01….
    assert_eq!(
        (c["pce_svn"], c["cpu_svn_00"], c["cpu_svn_04"]),
        (13, 11, 255)
    );
    assert_eq!(
        claims.raw["quote"]["body"]["mr_signer"],
        hex::encode(slice(q, body + 128, 32))
    );
}

/// Quote v5: header, then body type (2) and size (4), then the TD 1.5 body from offset 54.
#[test]
fn inspect_reads_every_version() {
    let v5 = inspect(OUTDATED_QUOTE).unwrap();
    assert_eq!(v5["header"]["version"], 5);
    let body = 54;
    assert_eq!(
        u16::from_le_bytes([OUTDATED_QUOTE[48], OUTDATED_QUOTE[49]]),
        3,
        "TD 1.5 body"
    );
    assert_eq!(v5["body"]["type"], "td15");
    assert_eq!(
        v5["body"]["mr_td"],
        hex::encode(slice(OUTDATED_QUOTE, body + 136, 48))
    );
    assert_eq!(
        v5["body"]["tee_tcb_svn2"],
        hex::encode(slice(OUTDATED_QUOTE, body + 584, 16))
    );
    let v4 = inspect(TDX_QUOTE).unwrap();
    assert_eq!(v4["header"]["tee"], "tdx");
    assert_eq!(
        v4["header"]["qe_vendor_id"],
        "939a7233f79c4ca9940a0db3957f0607"
    );
    assert_eq!(
        v4["body"]["rtmr3"],
        hex::encode(slice(TDX_QUOTE, 48 + 472, 48))
    );
    assert_eq!(v4["auth_data"]["certification_data_type"], 6);
    let pem = v4["auth_data"]["pck_certification_data"].as_str().unwrap();
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 3);
    let v3 = inspect(SGX_QUOTE).unwrap();
    assert_eq!(v3["body"]["type"], "sgx_enclave");
    assert_eq!(
        v3["body"]["mr_enclave"],
        hex::encode(slice(SGX_QUOTE, 48 + 64, 32))
    );
    assert_eq!(v3["auth_data"]["qe_report"]["isv_prod_id"], 1);
}

#[test]
fn debug_attributes_are_claims() {
    let (_, quote) = parse_quote(TDX_QUOTE).unwrap();
    let mut td = *quote.report.as_td10().unwrap();
    assert!(!inspect::td_debug(&td));
    td.td_attributes[0] |= 1;
    assert!(inspect::td_debug(&td));
    let (_, quote) = parse_quote(SGX_QUOTE).unwrap();
    let mut enclave = *quote.report.as_sgx().unwrap();
    assert!(!inspect::sgx_debug(&enclave));
    enclave.attributes[0] |= 2;
    assert!(inspect::sgx_debug(&enclave));
}

// ---- header sniffing and typed header errors ----

#[test]
fn header_is_sniffed_and_each_field_named() {
    assert!(is_dcap_quote(TDX_QUOTE) && is_dcap_quote(SGX_QUOTE) && is_dcap_quote(OUTDATED_QUOTE));
    assert!(!is_dcap_quote(&TDX_QUOTE[..47]));
    assert!(!is_dcap_quote(b""));
    assert!(!is_dcap_quote(crate::sim::MAGIC));
    let with = |offset: usize, bytes: &[u8]| {
        let mut q = TDX_QUOTE.to_vec();
        q[offset..offset + bytes.len()].copy_from_slice(bytes);
        q
    };
    let cases = [
        (with(0, &[6, 0]), DcapError::UnsupportedVersion(6)),
        (with(2, &[3, 0]), DcapError::AttestationKeyType(3)),
        (with(4, &[0x80, 0, 0, 0]), DcapError::TeeType(0x80)),
        (with(0, &[3, 0]), DcapError::VersionTeeMismatch(0x81)),
    ];
    for (quote, expected) in cases {
        assert!(!is_dcap_quote(&quote));
        assert_eq!(inspect(&quote).unwrap_err(), expected);
        assert_eq!(
            verify(&quote, &tdx_collateral(), at(IN_WINDOW)).unwrap_err(),
            expected
        );
    }
    assert_eq!(
        verify(&TDX_QUOTE[..10], &tdx_collateral(), at(IN_WINDOW)).unwrap_err(),
        DcapError::TooShort {
            what: "a quote header",
            needed: 48,
            found: 10
        }
    );
    assert_eq!(
        verify(
            TDX_QUOTE,
            &tdx_collateral(),
            UNIX_EPOCH - Duration::from_secs(1)
        )
        .unwrap_err(),
        DcapError::TimeBeforeEpoch
    );
}

#[test]
fn foreign_qe_vendor_id_is_named() {
    let mut q = TDX_QUOTE.to_vec();
    q[12] ^= 0xff;
    let err = verify(&q, &tdx_collateral(), at(IN_WINDOW)).unwrap_err();
    assert_eq!(
        err,
        DcapError::QeVendorId {
            found: "6c9a7233f79c4ca9940a0db3957f0607".into(),
            expected: "939a7233f79c4ca9940a0db3957f0607".into(),
        }
    );
}

// ---- mutations: never accepted, never a panic ----

/// Flips bit `i % 8` of byte `i` for each `i` in `positions` and asserts every result is refused.
fn assert_flips_refused(
    quote: &[u8],
    collateral: &DcapCollateral,
    positions: impl Iterator<Item = usize>,
) -> usize {
    let now = at(IN_WINDOW);
    let mut count = 0;
    for i in positions {
        let mut q = quote.to_vec();
        q[i] ^= 1 << (i % 8);
        assert!(
            verify(&q, collateral, now).is_err(),
            "flip of byte {i} accepted"
        );
        count += 1;
    }
    count
}

/// Where the TDX quote's PCK chain (PEM) starts: signed part (632), length (4), signature (64),
/// key (64), certification data header (6), QE report (384), its signature (64), QE auth data
/// (2 + 32), PCK certification data header (6).
const TDX_PEM_START: usize = 632 + 4 + 64 + 64 + 6 + 384 + 64 + 2 + 32 + 6;

#[test]
fn tdx_header_and_body_mutations_are_refused() {
    // Every byte that the attestation key signs (header and TD report body).
    assert_eq!(
        assert_flips_refused(TDX_QUOTE, &tdx_collateral(), 0..632),
        632
    );
}

#[test]
fn tdx_signature_data_mutations_are_refused() {
    // Every byte of the signature, attestation key, QE report, its signature, QE auth data and all
    // length and type fields.
    assert_eq!(TDX_QUOTE[TDX_PEM_START], b'-');
    assert_flips_refused(TDX_QUOTE, &tdx_collateral(), 632..TDX_PEM_START);
}

#[test]
fn tdx_certification_data_mutations_are_refused() {
    // Every byte of the PCK chain and the zero padding after it (about 4 ms a verification in a
    // debug build, so this test takes some seconds).
    let n = assert_flips_refused(TDX_QUOTE, &tdx_collateral(), TDX_PEM_START..TDX_QUOTE.len());
    assert!(n > 3600);
}

#[test]
fn sgx_mutations_are_refused() {
    // The v3 layout: every byte of header and body, signature data and certification data.
    let c = sgx_collateral();
    assert_flips_refused(SGX_QUOTE, &c, 0..SGX_QUOTE.len());
}

#[test]
fn truncated_and_padded_quotes() {
    let c = tdx_collateral();
    let now = at(IN_WINDOW);
    for len in [
        0, 1, 47, 48, 100, 631, 632, 635, 636, 700, 1000, 1257, 2000, 4000, 4935,
    ] {
        let err = verify(&TDX_QUOTE[..len], &c, now).unwrap_err();
        assert!(
            matches!(
                err,
                DcapError::TooShort { .. } | DcapError::Malformed { .. }
            ),
            "{len}: {err}"
        );
        assert!(inspect(&TDX_QUOTE[..len]).is_err());
    }
    // The fixture ends with 70 bytes of zero padding; without them, or with more, it verifies.
    assert!(verify(&TDX_QUOTE[..4936], &c, now).is_ok());
    let mut padded = TDX_QUOTE.to_vec();
    padded.extend([0; 100]);
    assert!(verify(&padded, &c, now).is_ok());
    padded.push(1);
    let err = verify(&padded, &c, now).unwrap_err();
    assert!(err.to_string().contains("not zero padding"), "{err}");
}

#[test]
fn replaced_root_copy_is_refused() {
    // The chain's last certificate replaced by another of the same length (its intermediate's
    // first bytes) is a PEM-valid chain that dcap-qvl alone would accept: its own root is pinned.
    let text = std::str::from_utf8(&TDX_QUOTE[TDX_PEM_START..4936]).unwrap();
    let begins: Vec<usize> = text.match_indices("-----BEGIN").map(|(i, _)| i).collect();
    let mut q = TDX_QUOTE.to_vec();
    let root_b64 = TDX_PEM_START + begins[2] + 28;
    q[root_b64..root_b64 + 64].copy_from_slice(&TDX_QUOTE[TDX_PEM_START + begins[1] + 28..][..64]);
    let err = verify(&q, &tdx_collateral(), at(IN_WINDOW)).unwrap_err();
    assert!(matches!(err, DcapError::UnknownRoot { .. }), "{err}");
}

#[test]
fn collateral_mutations_are_refused() {
    let good = tdx_collateral();
    let now = at(IN_WINDOW);
    let with = |f: &dyn Fn(&mut dcap_qvl::QuoteCollateralV3)| {
        let mut c = good.inner().clone();
        f(&mut c);
        DcapCollateral::from(c)
    };
    let flip_text = |s: &mut String, at: usize| {
        let mut b = std::mem::take(s).into_bytes();
        b[at] ^= 0x01;
        *s = String::from_utf8(b).unwrap();
    };
    let cases: Vec<(&str, DcapCollateral)> = vec![
        // "tcbEvaluationDataNumber":17 → 16, a digit of a TCB level's SVN, the FMSPC.
        (
            "tcb_info byte 40",
            with(&|c| flip_text(&mut c.tcb_info, 40)),
        ),
        (
            "tcb_info middle",
            with(&|c| {
                let n = c.tcb_info.len() / 2;
                flip_text(&mut c.tcb_info, n)
            }),
        ),
        (
            "tcb_info_signature",
            with(&|c| c.tcb_info_signature[10] ^= 0x01),
        ),
        (
            "qe_identity",
            with(&|c| {
                let n = c.qe_identity.len() / 2;
                flip_text(&mut c.qe_identity, n)
            }),
        ),
        (
            "qe_identity_signature",
            with(&|c| c.qe_identity_signature[63] ^= 0x80),
        ),
        (
            "pck_crl",
            with(&|c| {
                let n = c.pck_crl.len() / 2;
                c.pck_crl[n] ^= 0x01
            }),
        ),
        (
            "root_ca_crl",
            with(&|c| {
                let n = c.root_ca_crl.len() - 5;
                c.root_ca_crl[n] ^= 0x01
            }),
        ),
        (
            "tcb_info_issuer_chain",
            with(&|c| flip_text(&mut c.tcb_info_issuer_chain, 300)),
        ),
    ];
    for (what, collateral) in cases {
        let result = verify(TDX_QUOTE, &collateral, now);
        assert!(result.is_err(), "{what}: a mutated collateral was accepted");
    }
    let err = verify(TDX_QUOTE, &with(&|c| c.tcb_info_signature[0] ^= 1), now).unwrap_err();
    assert!(err.to_string().contains("tcb_info"), "{err}");
}

// ---- collateral formats ----

#[test]
fn collateral_json_errors_name_the_field() {
    let bundle: serde_json::Value = serde_json::from_slice(TDX_COLLATERAL).unwrap();
    let edited = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut v = bundle.clone();
        edit(v.as_object_mut().unwrap());
        DcapCollateral::from_json(v.to_string().as_bytes()).unwrap_err()
    };
    let field_of = |err: DcapError| match err {
        DcapError::CollateralField { field, reason } => format!("{field}: {reason}"),
        other => panic!("{other:?}"),
    };
    let err = edited(&|m| {
        m.insert("pck_crl".into(), "zz".into());
    });
    assert!(field_of(err).starts_with("pck_crl: invalid hex"));
    let err = edited(&|m| {
        m.remove("qe_identity");
    });
    assert_eq!(field_of(err), "qe_identity: missing");
    let err = edited(&|m| {
        m.insert("tcb_info".into(), 5.into());
    });
    assert_eq!(field_of(err), "tcb_info: expected a string, found 5");
    assert!(matches!(
        DcapCollateral::from_json(b"[1]"),
        Err(DcapError::CollateralJson(_))
    ));
    assert!(matches!(
        DcapCollateral::from_json(b"{"),
        Err(DcapError::CollateralJson(_))
    ));
}

/// Writes the bundle's collateral as raw PCS responses, the way `from_dir` documents them.
fn write_pcs_dir(dir: &Path, c: &dcap_qvl::QuoteCollateralV3) {
    std::fs::create_dir_all(dir).unwrap();
    let put = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    put("pck_crl.der", &c.pck_crl);
    put(
        "pck_crl_issuer_chain.pem",
        c.pck_crl_issuer_chain.as_bytes(),
    );
    put("root_ca_crl.der", &c.root_ca_crl);
    // Compact, as Intel's PCS serves it.
    let tcb = format!(
        r#"{{"tcbInfo":{},"signature":"{}"}}"#,
        c.tcb_info,
        hex::encode(&c.tcb_info_signature)
    );
    put("tcb_info.json", tcb.as_bytes());
    put(
        "tcb_info_issuer_chain.pem",
        c.tcb_info_issuer_chain.as_bytes(),
    );
    // With whitespace around the members: the signed text must still be taken verbatim.
    let qe = format!(
        "{{\n  \"signature\" : \"{}\",\n  \"enclaveIdentity\" : {}\n}}\n",
        hex::encode(&c.qe_identity_signature),
        c.qe_identity
    );
    put("qe_identity.json", qe.as_bytes());
    put(
        "qe_identity_issuer_chain.pem",
        c.qe_identity_issuer_chain.as_bytes(),
    );
}

fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cordon-dcap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

use std::path::Path;

#[test]
fn collateral_dir_of_pcs_responses_gives_the_same_verdict() {
    for (name, quote, bundle) in [
        ("tdx", TDX_QUOTE, TDX_COLLATERAL),
        ("sgx", SGX_QUOTE, SGX_COLLATERAL),
    ] {
        let from_json = DcapCollateral::from_json(bundle).unwrap();
        let dir = scratch_dir(name);
        write_pcs_dir(&dir, from_json.inner());
        let from_dir = DcapCollateral::from_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(from_dir, from_json);
        assert_eq!(
            verify(quote, &from_dir, at(IN_WINDOW)).unwrap(),
            verify(quote, &from_json, at(IN_WINDOW)).unwrap()
        );
    }
}

#[test]
fn collateral_dir_missing_or_bad_file_is_named() {
    let c = tdx_collateral();
    let dir = scratch_dir("missing");
    write_pcs_dir(&dir, c.inner());
    std::fs::remove_file(dir.join("qe_identity_issuer_chain.pem")).unwrap();
    let err = DcapCollateral::from_dir(&dir).unwrap_err();
    assert!(
        matches!(&err, DcapError::CollateralFileMissing { path } if path.ends_with("qe_identity_issuer_chain.pem")),
        "{err}"
    );
    std::fs::write(dir.join("tcb_info.json"), br#"{"tcbInfo":{"id":"TDX"}}"#).unwrap();
    let err = DcapCollateral::from_dir(&dir).unwrap_err();
    assert!(
        err.to_string().contains("tcb_info.json") && err.to_string().contains("signature"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let err = DcapCollateral::from_dir(&dir).unwrap_err();
    assert!(
        matches!(err, DcapError::CollateralFileMissing { .. }),
        "{err}"
    );
}

#[test]
fn raw_members_keep_the_signed_text() {
    let text = " { \"a\" : {\"x\": [1, 2.50, \"}\"]} , \"b\":\"s\" }\n";
    let members = collateral::raw_members(text).unwrap();
    assert_eq!(
        members,
        [
            ("a".to_string(), "{\"x\": [1, 2.50, \"}\"]}"),
            ("b".to_string(), "\"s\"")
        ]
    );
    assert_eq!(collateral::raw_members("{}"), Some(vec![]));
    for bad in [
        "",
        "[]",
        "{\"a\":1",
        "{\"a\":1}x",
        "{\"a\" 1}",
        "{\"a\":1,}",
    ] {
        assert_eq!(collateral::raw_members(bad), None, "{bad}");
    }
}

// ---- the collateral cache (`Verifier`) gives the uncached result ----

/// Verifies at each time with `cached` and with `verify`, asserting the same claims or error.
fn assert_cached_agrees(
    cached: &Verifier,
    quote: &[u8],
    collateral: &DcapCollateral,
    times: &[u64],
) {
    for &secs in times {
        let now = UNIX_EPOCH + Duration::from_secs(secs);
        let uncached = verify(quote, collateral, now);
        let from_cache = cached.verify(quote, collateral, now);
        assert_eq!(
            from_cache,
            uncached,
            "at {} ({secs})",
            explain::rfc3339(secs)
        );
    }
}

fn secs(text: &str) -> u64 {
    at(text).duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[test]
fn cached_and_uncached_agree_for_every_fixture_inside_and_outside_the_windows() {
    let tdx = tdx_collateral();
    let sgx = sgx_collateral();
    let outdated = DcapCollateral::from_json(OUTDATED_COLLATERAL).unwrap();
    // Each list starts inside the window (the entry is stored there), then leaves it on both
    // sides (naming what expired, as `fixtures_outside_their_windows_name_what_expired` pins),
    // and comes back.
    let cases: [(&str, &[u8], &DcapCollateral, Vec<&str>); 3] = [
        (
            "TDX v4",
            TDX_QUOTE,
            &tdx,
            vec![
                IN_WINDOW,
                "2025-06-19T10:00:00Z",
                "2025-06-19T10:20:00Z",
                "2025-07-19T10:10:00Z",
                "2025-07-20T00:00:00Z",
                "2025-06-25T12:00:00Z",
                IN_WINDOW,
            ],
        ),
        (
            "SGX v3",
            SGX_QUOTE,
            &sgx,
            vec![
                IN_WINDOW,
                "2025-06-01T00:00:00Z",
                "2025-07-19T10:30:00Z",
                "2026-05-01T00:00:00Z",
                "2025-07-10T08:00:00Z",
                IN_WINDOW,
            ],
        ),
        (
            "TDX v5 outdated",
            OUTDATED_QUOTE,
            &outdated,
            vec![
                OUTDATED_TIME,
                "2026-02-01T00:00:00Z",
                "2026-04-01T00:00:00Z",
                OUTDATED_TIME,
            ],
        ),
    ];
    for (name, quote, collateral, times) in cases {
        let times: Vec<u64> = times.into_iter().map(secs).collect();
        // Warm: stored at the first time, then answered from the entry where its window allows.
        let cached = Verifier::new();
        assert_cached_agrees(&cached, quote, collateral, &times);
        // Cold: the first call falls outside the window, so nothing is stored until later.
        let cold = Verifier::new();
        let mut reversed = times.clone();
        reversed.reverse();
        assert_cached_agrees(&cold, quote, collateral, &reversed);
        let stats = cached.stats();
        if name == "TDX v5 outdated" {
            // Refused: nothing to cache, every call is dcap-qvl's.
            assert_eq!((stats.hits, stats.entries), (0, 0), "{name}");
        } else {
            assert_eq!(stats.entries, 1, "{name}");
            assert!(stats.hits >= 2, "{name}: {stats:?}");
        }
    }
}

#[test]
fn cached_window_edges_agree_with_the_uncached_verdict() {
    for (quote, collateral) in [(TDX_QUOTE, tdx_collateral()), (SGX_QUOTE, sgx_collateral())] {
        let cached = Verifier::new();
        cached.verify(quote, &collateral, at(IN_WINDOW)).unwrap();
        let windows = cached.windows();
        assert_eq!(windows.len(), 1);
        let (start, end) = windows[0];
        let edges = [start - 1, start, start + 1, end - 1, end, end + 1];
        assert_cached_agrees(&cached, quote, &collateral, &edges);
        // The first and last second of the window are answered from the entry, and accepted.
        let before = cached.stats().hits;
        for s in [start, end - 1] {
            let now = UNIX_EPOCH + Duration::from_secs(s);
            assert!(cached.verify(quote, &collateral, now).is_ok());
        }
        assert_eq!(cached.stats().hits, before + 2);
    }
}

#[test]
fn cached_verifier_refuses_every_flip_of_signed_bytes_and_signature_data() {
    // The sweeps of `tdx_header_and_body_mutations_are_refused`,
    // `tdx_signature_data_mutations_are_refused` and `sgx_mutations_are_refused` (header and
    // body), run through a verifier that holds the genuine quote's entry: every flip is refused
    // with the uncached path's error.
    for (quote, collateral, range) in [
        (TDX_QUOTE, tdx_collateral(), 0..TDX_PEM_START),
        (SGX_QUOTE, sgx_collateral(), 0..432),
    ] {
        let now = at(IN_WINDOW);
        let cached = Verifier::new();
        cached.verify(quote, &collateral, now).unwrap();
        for i in range {
            let mut q = quote.to_vec();
            q[i] ^= 1 << (i % 8);
            let err = cached.verify(&q, &collateral, now).unwrap_err();
            assert_eq!(err, verify(&q, &collateral, now).unwrap_err(), "byte {i}");
        }
        // The genuine quote is still answered from its entry.
        let hits = cached.stats().hits;
        assert!(cached.verify(quote, &collateral, now).is_ok());
        assert_eq!(cached.stats().hits, hits + 1);
    }
}

#[test]
fn endorsement_key_masks_only_measurements_and_the_quote_signature() {
    let c = tdx_collateral();
    // `None` where the quote fails this module's gates (before any cache lookup).
    let key = |q: &[u8]| cache::key_for_tests(q, &c);
    let flipped = |q: &[u8], i: usize| {
        let mut q = q.to_vec();
        q[i] ^= 1;
        q
    };
    let genuine = key(TDX_QUOTE);
    assert!(genuine.is_some());
    let body = 48;
    // TD quote body: MRTD @136, RTMR3 @472, REPORTDATA @520..584; quote signature @636..700.
    for i in [body + 136, body + 472, body + 583, 636, 699] {
        assert_eq!(
            key(&flipped(TDX_QUOTE, i)),
            genuine,
            "byte {i} is per quote"
        );
    }
    // Header, TEE_TCB_SVN @0, MRSIGNERSEAM @64, TDATTRIBUTES @120, XFAM @128, the attestation key
    // @700, the QE report @770, its signature @1154, the QE authentication data @1220 and the PCK
    // chain all select the entry.
    for i in [
        12,
        body,
        body + 64,
        body + 120,
        body + 135,
        700,
        800,
        1160,
        1230,
        TDX_PEM_START + 100,
    ] {
        assert_ne!(key(&flipped(TDX_QUOTE, i)), genuine, "byte {i}");
    }
    // Another collateral is another entry.
    let mut other = c.inner().clone();
    other.pck_crl[10] ^= 1;
    assert_ne!(
        cache::key_for_tests(TDX_QUOTE, &DcapCollateral::from(other)),
        genuine
    );
    // SGX: MRENCLAVE @64 and REPORTDATA @320 are per quote, ATTRIBUTES @48 is not.
    let s = sgx_collateral();
    let sgx_key = |q: &[u8]| cache::key_for_tests(q, &s).unwrap();
    let sgx = sgx_key(SGX_QUOTE);
    assert_eq!(sgx_key(&flipped(SGX_QUOTE, body + 64)), sgx);
    assert_eq!(sgx_key(&flipped(SGX_QUOTE, body + 320)), sgx);
    assert_ne!(sgx_key(&flipped(SGX_QUOTE, body + 48)), sgx);
    // A flipped measurement finds the entry, fails the quote signature there, and is refused
    // with the uncached error.
    let cached = Verifier::new();
    let now = at(IN_WINDOW);
    cached.verify(TDX_QUOTE, &c, now).unwrap();
    let q = flipped(TDX_QUOTE, body + 136);
    let err = cached.verify(&q, &c, now).unwrap_err();
    assert_eq!(err, verify(&q, &c, now).unwrap_err());
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn cached_verifier_refuses_mutated_collateral() {
    let good = tdx_collateral();
    let now = at(IN_WINDOW);
    let cached = Verifier::new();
    cached.verify(TDX_QUOTE, &good, now).unwrap();
    let mutated = |f: &dyn Fn(&mut dcap_qvl::QuoteCollateralV3)| {
        let mut c = good.inner().clone();
        f(&mut c);
        DcapCollateral::from(c)
    };
    let cases = [
        mutated(&|c| c.tcb_info_signature[10] ^= 0x01),
        mutated(&|c| c.qe_identity_signature[63] ^= 0x80),
        mutated(&|c| {
            let n = c.pck_crl.len() / 2;
            c.pck_crl[n] ^= 0x01
        }),
        mutated(&|c| {
            let n = c.root_ca_crl.len() - 5;
            c.root_ca_crl[n] ^= 0x01
        }),
        mutated(&|c| c.tcb_info = c.tcb_info.replacen("UpToDate", "OutOfDate", 1)),
    ];
    for collateral in cases {
        assert_ne!(collateral.digest(), good.digest());
        let err = cached.verify(TDX_QUOTE, &collateral, now).unwrap_err();
        assert_eq!(err, verify(TDX_QUOTE, &collateral, now).unwrap_err());
    }
    assert_eq!(cached.stats().entries, 1);
}

#[test]
fn collateral_digest_covers_every_field() {
    let good = tdx_collateral();
    let edits: [&dyn Fn(&mut dcap_qvl::QuoteCollateralV3); 10] = [
        &|c| c.pck_crl_issuer_chain.push(' '),
        &|c| c.root_ca_crl.push(0),
        &|c| c.pck_crl.push(0),
        &|c| c.tcb_info_issuer_chain.push(' '),
        &|c| c.tcb_info.push(' '),
        &|c| c.tcb_info_signature.push(0),
        &|c| c.qe_identity_issuer_chain.push(' '),
        &|c| c.qe_identity.push(' '),
        &|c| c.qe_identity_signature.push(0),
        &|c| c.pck_certificate_chain = Some(String::new()),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut c = good.inner().clone();
        edit(&mut c);
        assert_ne!(DcapCollateral::from(c).digest(), good.digest(), "field {i}");
    }
    assert_eq!(
        DcapCollateral::from_json(TDX_COLLATERAL).unwrap().digest(),
        good.digest()
    );
}

#[test]
fn evidence_verifier_caches_dcap_collateral() {
    let endorsements = crate::Endorsements {
        dcap_collateral: Some(tdx_collateral()),
        ..Default::default()
    };
    let verifier = crate::Verifier::new(endorsements);
    let now = at(IN_WINDOW);
    for _ in 0..3 {
        assert_eq!(verifier.verify(TDX_QUOTE, now).unwrap(), tdx_claims());
    }
    let stats = verifier.dcap_stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 2, 1));
    let late = at("2025-07-20T00:00:00Z");
    assert!(verifier.verify(TDX_QUOTE, late).is_err());
}

#[test]
fn cached_signature_check_agrees_with_dcap_qvl() {
    // The cache checks the quote signature with aws-lc-rs, dcap-qvl with RustCrypto: the same
    // verdict on the genuine quotes and on a flipped bit in each of the signed bytes (header and
    // body) and of the signature itself.
    for (quote, collateral) in [
        (TDX_QUOTE, tdx_collateral()),
        (SGX_QUOTE, sgx_collateral()),
        (
            OUTDATED_QUOTE,
            DcapCollateral::from_json(OUTDATED_COLLATERAL).unwrap(),
        ),
    ] {
        assert_eq!(
            cache::signature_checks_for_tests(quote, &collateral),
            Some((true, true))
        );
        let signed = dcap_qvl::quote::Quote::parse(quote)
            .unwrap()
            .signed_length();
        let signature_at = signed + 4;
        let flips = (0..signed).chain(signature_at..signature_at + 64);
        let mut refused = 0;
        for i in flips {
            let mut q = quote.to_vec();
            q[i] ^= 1 << (i % 8);
            // `None`: the flip fails this module's gates before any signature check.
            if let Some((ours, theirs)) = cache::signature_checks_for_tests(&q, &collateral) {
                assert_eq!(ours, theirs, "byte {i}");
                assert!(
                    !ours,
                    "byte {i} of {} flipped and still verified",
                    quote.len()
                );
                refused += 1;
            }
        }
        assert!(refused > 400, "{refused}");
    }
}

#[test]
fn a_cache_hit_reads_the_report_body_of_its_own_quote() {
    // Two quotes that share an endorsement (here: MRTD, REPORTDATA and the signature flipped,
    // which the entry's key masks) get the raw claims the uncached path would give the second, not the first's.
    let c = tdx_collateral();
    let now = secs(IN_WINDOW);
    let mut other = TDX_QUOTE.to_vec();
    other[48 + 136] ^= 0x55;
    other[48 + 560] ^= 0xaa;
    other[636 + 10] ^= 0x0f; // the quote signature
    let (hit, fresh) = cache::raw_for_hit_for_tests(TDX_QUOTE, &other, &c, now).unwrap();
    assert_eq!(hit, fresh);
    let (own, _) = cache::raw_for_hit_for_tests(TDX_QUOTE, TDX_QUOTE, &c, now).unwrap();
    assert_ne!(hit["quote"]["body"], own["quote"]["body"]);
    assert_ne!(
        hit["quote"]["auth_data"]["ecdsa_signature"],
        own["quote"]["auth_data"]["ecdsa_signature"]
    );
    assert_eq!(hit["quote"]["header"], own["quote"]["header"]);
    // SGX: MRENCLAVE flipped.
    let s = sgx_collateral();
    let mut other = SGX_QUOTE.to_vec();
    other[48 + 64] ^= 1;
    let (hit, fresh) = cache::raw_for_hit_for_tests(SGX_QUOTE, &other, &s, now).unwrap();
    assert_eq!(hit, fresh);
}
