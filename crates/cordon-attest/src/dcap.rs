//! Intel TDX and SGX DCAP quotes → verified [`Claims`].
//!
//! Verification is done by the [`dcap_qvl`] crate (pure Rust, RustCrypto backend, Intel SGX Root
//! CA pinned inside it); this module parses the quote header itself so that malformed evidence gets a
//! typed error, adds the gates the library leaves to callers, and normalizes the result.
//!
//! # Who checks what
//!
//! [`verify`] runs `dcap_qvl::verify::QuoteVerifier` (production root, `RustCryptoConfig`) at the
//! caller's `now`. That is the same verification as `dcap_qvl::verify::verify` except that the TD /
//! enclave debug attribute is reported as a claim instead of refused (`allow_debug(true)`): appraisal
//! refuses debug TEEs unless a policy says `allow_debug = true`. The library checks:
//!
//! - the header (version 3 for SGX, 4 or 5 for TDX; ECDSA-256 key; Intel QE vendor id);
//! - both CRLs (root CA CRL signed by the pinned root; revocation of every chain certificate, with
//!   expired CRLs refused), the TCB info and QE identity signatures and signing chains, and the PCK
//!   chain carried in the quote (certification data type 5), all at `now`;
//! - the TCB info and QE identity validity windows (`issueDate` ..= `nextUpdate`) at `now`;
//! - the QE report (signed by the PCK key, binding the attestation key, matching the QE identity)
//!   and the quote's signature over header and body by the attestation key;
//! - the TCB level: the platform's SVNs (PCK certificate CPUSVN/PCESVN, TDX `TEE_TCB_SVN` and module
//!   identity) must meet one of the TCB info's levels, else `No matching TCB level found`;
//! - TD attributes: reserved bits, `MIGRATABLE`, `SERVTD_EXT`, a non-zero `MRSERVICETD` and a missing
//!   `SEPT_VE_DISABLE` are refused.
//!
//! **TCB status:** dcap-qvl 0.7 refuses `Revoked` itself (`TCB status is invalid: Revoked`), for the
//! platform, the QE and a TD 1.5's current TCB. Every other status (`OutOfDate`,
//! `OutOfDateConfigurationNeeded`, `ConfigurationNeeded`, `SWHardeningNeeded`,
//! `ConfigurationAndSWHardeningNeeded`, `TDRelaunchAdvised…`) is returned with its advisories, and
//! [`verify`] returns claims for it: gating statuses and advisories is appraisal's job
//! ([`crate::Policy::tcb_statuses`], [`crate::Policy::allowed_advisories`]).
//!
//! This module adds:
//!
//! - typed header errors (length, version, attestation key type, TEE type) before the library runs,
//!   and [`is_dcap_quote`] for evidence detection;
//! - one encoding per quote: length fields must add up, a v4/v5 quote's outer certification data
//!   must have type 6, and only zero padding may follow the signature data (dcap-qvl ignores slack
//!   and trailing bytes; the TDX fixture carries 70 bytes of zero padding);
//! - a PCK chain carried in the quote must be plain PEM (no stray bytes between or inside blocks)
//!   and end with the Intel SGX Root CA, byte for byte (dcap-qvl anchors at its own pinned root and
//!   ignores the copy), or with an emulated root the caller names (see below); the collateral's
//!   TCB info, QE identity and PCK CRL issuer chains must end with the same root;
//! - the QE vendor id gate, naming both values (the library only says "Unknown QE vendor ID");
//! - errors that name what expired or is not yet valid (TCB info, QE identity, which CRL, a
//!   certificate) and when;
//! - normalized claims, with every parsed field in [`Claims::raw`].
//!
//! # Emulated roots (tests only)
//!
//! [`verify_with_roots`] (and [`Verifier::verify_with_roots`], which `crate::Verifier` calls with
//! `Endorsements::emulated_roots`) also accepts a quote whose PCK chain ends at a test root whose
//! SHA-256 (of its DER) is listed: dcap-qvl then runs every check with that root as its trust
//! anchor (`QuoteVerifier::new_with_config`), the collateral's issuer chains must end at the same
//! root, and the claims are `hardware_backed = false` with `raw.emulated_root` = the fingerprint.
//! A chain ending at an unlisted root is refused ([`DcapError::UnknownRoot`], naming it); so is a
//! collateral whose chains end elsewhere ([`DcapError::CollateralRoot`]), for Intel's root too.
//!
//! # Caching
//!
//! [`Verifier`] gives the same result as [`verify`] (claims or error, word for word) and remembers
//! dcap-qvl's result per collateral and platform endorsement (header, the platform's TCB fields,
//! attestation key, QE report, PCK chain). A quote whose endorsement it has seen under the same
//! collateral costs this module's gates, the validity window at `now` and one ECDSA verification
//! of the quote signature; see the `cache` module's documentation for why that is the same
//! verdict, and for what dcap-qvl's API does not allow (checking a new platform's PCK chain
//! against collateral checked earlier).
//!
//! # Collateral
//!
//! [`DcapCollateral::from_json`] reads dcap-qvl's `QuoteCollateralV3` JSON bundle (byte fields as hex).
//! [`DcapCollateral::from_dir`] reads a directory of raw Intel PCS (or PCCS) responses, one file each:
//!
//! | file | what (Intel PCS API v4) | collateral field |
//! |---|---|---|
//! | `pck_crl.der` | `GET /sgx/certification/v4/pckcrl?ca=platform\|processor&encoding=der`, body | `pck_crl` |
//! | `pck_crl_issuer_chain.pem` | its `SGX-PCK-CRL-Issuer-Chain` header, URL-decoded | `pck_crl_issuer_chain` |
//! | `root_ca_crl.der` | Intel SGX Root CA CRL, <https://certificates.trustedservices.intel.com/IntelSGXRootCA.der> | `root_ca_crl` |
//! | `tcb_info.json` | `GET /{sgx,tdx}/certification/v4/tcb?fmspc=…`, body `{"tcbInfo":…,"signature":…}` | `tcb_info`, `tcb_info_signature` |
//! | `tcb_info_issuer_chain.pem` | its `TCB-Info-Issuer-Chain` header, URL-decoded | `tcb_info_issuer_chain` |
//! | `qe_identity.json` | `GET /{sgx,tdx}/certification/v4/qe/identity`, body `{"enclaveIdentity":…,"signature":…}` | `qe_identity`, `qe_identity_signature` |
//! | `qe_identity_issuer_chain.pem` | its `SGX-Enclave-Identity-Issuer-Chain` header, URL-decoded | `qe_identity_issuer_chain` |
//! | `pck_certificate_chain.pem` (optional) | PCK certificate, then its issuer chain, for quotes that carry no chain | `pck_certificate_chain` |
//!
//! CRLs are DER (convert a PEM CRL with `openssl crl -outform der`). Intel signs the exact bytes of
//! `tcbInfo` and `enclaveIdentity` as they appear in the body, so those are taken verbatim from the
//! files, never re-serialized.
//!
//! # Claims
//!
//! | claim | TDX | SGX |
//! |---|---|---|
//! | `launch_measurement` | MRTD (48) | MRENCLAVE (32) |
//! | `signer_measurement` | — | MRSIGNER (32) |
//! | `workload_data` | MRCONFIGID (48) | CONFIGID (64) |
//! | `runtime_measurements` | RTMR0..3 | — |
//! | `debug` | any TUD bit of TD_ATTRIBUTES (7:0: DEBUG, profiling) | ATTRIBUTES.FLAGS bit 1 (DEBUG) |
//! | `tcb.components` | `tee_tcb_svn_00`..`_15` (and `tee_tcb_svn2_*` for TD 1.5) | `isv_svn`, `config_svn` |
//!
//! Both: `report_data` (64); `tcb.status` and `tcb.advisory_ids` as dcap-qvl converges them over
//! platform, QE (and TDX module); `tcb.components` also `cpu_svn_00`..`_15` and `pce_svn` from the
//! PCK certificate (what TCB levels are matched against) and `qe_isv_svn`; `platform_id` = FMSPC
//! (6 bytes, from the PCK certificate); `attestation_key` = the quote's ECDSA P-256 attestation key
//! (64 bytes, x ‖ y); `raw` = `{"quote": inspect(quote), "verification": {TCB levels, PCK
//! certificate fields, CRL numbers, collateral dates}}`.

mod anchor;
mod cache;
mod collateral;
mod explain;
mod inspect;
mod structure;
#[cfg(test)]
mod tests;

use crate::{Claims, Platform, TcbClaims, EMULATED_ROOT_CLAIM};
use anchor::Anchor;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::quote::{Quote, Report};
use dcap_qvl::verify::QuoteVerifier;
use dcap_qvl::{QuoteClaims, QuotePolicy, INTEL_QE_VENDOR_ID};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

pub use cache::{CacheStats, Verifier};
pub use collateral::DcapCollateral;
pub use inspect::inspect;

/// Why a DCAP quote or its collateral was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DcapError {
    #[error("DCAP quote: {found} bytes, too short for {what} ({needed} bytes)")]
    TooShort {
        what: &'static str,
        needed: usize,
        found: usize,
    },
    #[error("DCAP quote: unsupported quote version {0} (supported: 3, 4, 5)")]
    UnsupportedVersion(u16),
    #[error("DCAP quote: attestation key type {0} is not ECDSA-256-with-P-256 (2)")]
    AttestationKeyType(u16),
    #[error("DCAP quote: TEE type {0:#010x} is neither SGX (0x00000000) nor TDX (0x00000081)")]
    TeeType(u32),
    #[error("DCAP quote: version 3 quotes carry SGX reports only, TEE type is {0:#010x}")]
    VersionTeeMismatch(u32),
    #[error("DCAP quote: malformed ({len} bytes): {reason}")]
    Malformed { len: usize, reason: String },
    #[error("DCAP quote: PCK certificate chain: {0}")]
    PckChain(String),
    /// The quote's PCK chain ends at a root that is neither the Intel SGX Root CA nor an emulated
    /// root the endorsements name.
    #[error(
        "DCAP quote: the PCK certificate chain ends at a root that is not the Intel SGX Root CA \
         (SHA-256 of its DER {fingerprint}); a test root is trusted only when the endorsements \
         name it (emulated_roots)"
    )]
    UnknownRoot { fingerprint: String },
    /// A collateral issuer chain ends at another root than the quote's PCK chain.
    #[error(
        "DCAP collateral: `{field}` ends at root {found} (SHA-256), not at the quote's root {expected}"
    )]
    CollateralRoot {
        field: String,
        found: String,
        expected: String,
    },
    #[error("DCAP quote: QE vendor id {found} is not Intel's {expected}")]
    QeVendorId { found: String, expected: String },
    #[error("DCAP collateral: not valid JSON: {0}")]
    CollateralJson(String),
    #[error("DCAP collateral: `{field}`: {reason}")]
    CollateralField { field: String, reason: String },
    #[error("DCAP collateral directory: missing file {path}")]
    CollateralFileMissing { path: String },
    #[error("DCAP collateral directory: cannot read {path}: {reason}")]
    CollateralFileUnreadable { path: String, reason: String },
    #[error("DCAP verification: the verification time is before 1970")]
    TimeBeforeEpoch,
    #[error("DCAP verification: {item} expired at {expired_at} (verification time {now})")]
    Expired {
        item: String,
        expired_at: String,
        now: String,
    },
    #[error(
        "DCAP verification: {item} is not valid before {valid_from} (verification time {now})"
    )]
    NotYetValid {
        item: String,
        valid_from: String,
        now: String,
    },
    #[error("DCAP verification: no TCB level of the TCB info matches the platform (FMSPC {fmspc}); dcap-qvl: {detail}")]
    NoMatchingTcbLevel { fmspc: String, detail: String },
    #[error(
        "DCAP collateral is for {collateral} (its TCB info and QE identity say so), but the \
         quote is from {quote}: give the collateral of this quote's platform (`cordon attest \
         fetch` gets it)"
    )]
    CollateralForOtherTee {
        quote: &'static str,
        collateral: &'static str,
    },
    #[error("DCAP verification failed: {0}")]
    Verification(String),
}

/// Quote header (Intel TDX DCAP Quote Generation Library, "Quote Header" table; SGX ECDSA Quote
/// Library API, appendix A.4): the fields this module reads itself, little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// Offset 0, 2 bytes.
    version: u16,
    /// Offset 2, 2 bytes: 2 = ECDSA-256-with-P-256.
    attestation_key_type: u16,
    /// Offset 4, 4 bytes: 0x00000000 SGX, 0x00000081 TDX (reserved, zero, in version 3).
    tee_type: u32,
    /// Offset 12, 16 bytes.
    qe_vendor_id: [u8; 16],
}

const HEADER_LEN: usize = 48;
const ECDSA_P256: u16 = 2;
const TEE_SGX: u32 = 0x0000_0000;
const TEE_TDX: u32 = 0x0000_0081;

fn read<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

impl Header {
    /// Reads the header fields, without judging them.
    fn read(bytes: &[u8]) -> Option<Header> {
        Some(Header {
            version: u16::from_le_bytes(read(bytes, 0)?),
            attestation_key_type: u16::from_le_bytes(read(bytes, 2)?),
            tee_type: u32::from_le_bytes(read(bytes, 4)?),
            qe_vendor_id: read(bytes, 12)?,
        })
    }

    /// Reads and checks the header: what [`is_dcap_quote`] sniffs, with a typed error for each field.
    fn parse(bytes: &[u8]) -> Result<Header, DcapError> {
        let header = Header::read(bytes)
            .filter(|_| bytes.len() >= HEADER_LEN)
            .ok_or(DcapError::TooShort {
                what: "a quote header",
                needed: HEADER_LEN,
                found: bytes.len(),
            })?;
        if !matches!(header.version, 3..=5) {
            return Err(DcapError::UnsupportedVersion(header.version));
        }
        if header.attestation_key_type != ECDSA_P256 {
            return Err(DcapError::AttestationKeyType(header.attestation_key_type));
        }
        if header.tee_type != TEE_SGX && header.tee_type != TEE_TDX {
            return Err(DcapError::TeeType(header.tee_type));
        }
        if header.version == 3 && header.tee_type != TEE_SGX {
            return Err(DcapError::VersionTeeMismatch(header.tee_type));
        }
        Ok(header)
    }
}

/// Whether `bytes` start like a DCAP quote: version 3, 4 or 5, ECDSA-256-with-P-256 attestation key,
/// TEE type SGX or TDX. For evidence detection; [`verify`] checks the rest.
pub fn is_dcap_quote(bytes: &[u8]) -> bool {
    Header::parse(bytes).is_ok()
}

/// Parses a quote after checking its header; its length fields must add up, with nothing but zero
/// padding after it.
fn parse_quote(bytes: &[u8]) -> Result<(Header, Quote), DcapError> {
    let header = Header::parse(bytes)?;
    let quote = Quote::parse(bytes).map_err(|e| DcapError::Malformed {
        len: bytes.len(),
        reason: format!("{e:#}"),
    })?;
    structure::check_layout(bytes, &quote)?;
    Ok((header, quote))
}

/// Verifies a DCAP quote against `collateral` at time `now` and returns its claims.
///
/// Refuses what the cryptography or Intel's collateral refuses (see the module docs); returns
/// claims for any TCB status dcap-qvl reports (all but `Revoked`), and for debug TEEs: appraisal
/// judges both. Checks everything at every call; [`Verifier`] caches what a collateral and a
/// platform's endorsement of its attestation key established.
pub fn verify(
    quote: &[u8],
    collateral: &DcapCollateral,
    now: SystemTime,
) -> Result<Claims, DcapError> {
    verify_with_roots(quote, collateral, &[], now)
}

/// [`verify`], also accepting a quote whose PCK chain ends at one of `emulated_roots` (SHA-256 of
/// a test root's DER, [`crate::Endorsements::emulated_roots`]): every check is the same, with that
/// root as the trust anchor, and the claims are not hardware-backed and name the root
/// ([`crate::EMULATED_ROOT_CLAIM`]). A chain ending at any other root is refused
/// ([`DcapError::UnknownRoot`]).
pub fn verify_with_roots(
    quote: &[u8],
    collateral: &DcapCollateral,
    emulated_roots: &[[u8; 32]],
    now: SystemTime,
) -> Result<Claims, DcapError> {
    let now_secs = unix_secs(now)?;
    let (parsed, anchor) = checked_quote(quote, collateral, emulated_roots)?;
    let verified = verify_with_dcap_qvl(quote, &parsed, &anchor, collateral, now_secs)?;
    claims(&parsed, &anchor, &verified)
}

fn unix_secs(now: SystemTime) -> Result<u64, DcapError> {
    Ok(now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| DcapError::TimeBeforeEpoch)?
        .as_secs())
}

/// This module's own gates, which every verification runs first: the header, one encoding per
/// quote, Intel's QE vendor id, a plain PEM PCK chain ending with the Intel SGX Root CA or a named
/// emulated root, and collateral chains ending at that same root.
fn checked_quote(
    quote: &[u8],
    collateral: &DcapCollateral,
    emulated_roots: &[[u8; 32]],
) -> Result<(Quote, Anchor), DcapError> {
    let parsed = gated_quote(quote, collateral)?;
    let anchor = checked_anchor(&parsed, collateral, emulated_roots)?;
    Ok((parsed, anchor))
}

/// The first of [`checked_quote`]'s gates: the quote parsed in its one encoding, Intel's QE vendor
/// id, and collateral issued for its TEE type.
fn gated_quote(quote: &[u8], collateral: &DcapCollateral) -> Result<Quote, DcapError> {
    let (header, parsed) = parse_quote(quote)?;
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(DcapError::QeVendorId {
            found: hex::encode(header.qe_vendor_id),
            expected: hex::encode(INTEL_QE_VENDOR_ID),
        });
    }
    check_collateral_tee(header.tee_type, collateral)?;
    Ok(parsed)
}

/// The rest of [`checked_quote`]'s gates: the root the quote's PCK chain ends with (plain PEM,
/// Intel's or a named emulated root), and the collateral's chains ending with the same root.
fn checked_anchor(
    parsed: &Quote,
    collateral: &DcapCollateral,
    emulated_roots: &[[u8; 32]],
) -> Result<Anchor, DcapError> {
    let anchor = anchor::anchor(parsed, emulated_roots)?;
    anchor::check_collateral_roots(collateral, &anchor)?;
    Ok(anchor)
}

/// Collateral is issued per TEE type (Intel PCS API v4: TCB info `id` "SGX" or "TDX", QE identity
/// `id` "QE" or "TD_QE"). A mismatch would fail deep in dcap-qvl with a message about QE versions;
/// it is the caller's mix-up, so it is named as such. Collateral without ids (older versions) is
/// left to dcap-qvl.
fn check_collateral_tee(tee_type: u32, collateral: &DcapCollateral) -> Result<(), DcapError> {
    let name = |tdx: bool| if tdx { "TDX" } else { "SGX" };
    match collateral.facts().issued_for_tdx {
        Some(collateral_tdx) if collateral_tdx != (tee_type == TEE_TDX) => {
            Err(DcapError::CollateralForOtherTee {
                quote: name(tee_type == TEE_TDX),
                collateral: name(collateral_tdx),
            })
        }
        _ => Ok(()),
    }
}

/// dcap-qvl's whole verification of `quote` (already through [`checked_quote`]) at `now_secs`.
fn verify_with_dcap_qvl(
    quote: &[u8],
    parsed: &Quote,
    anchor: &Anchor,
    collateral: &DcapCollateral,
    now_secs: u64,
) -> Result<QuoteClaims, DcapError> {
    let verifier = match anchor {
        Anchor::Intel => QuoteVerifier::new_prod().with_config::<RustCryptoConfig>(),
        Anchor::Emulated { der, .. } => {
            QuoteVerifier::<RustCryptoConfig>::new_with_config(der.clone())
        }
    };
    verifier
        .allow_debug(true)
        .verify_with_policy(
            quote,
            collateral.inner(),
            now_secs,
            &QuotePolicy::claims_only(now_secs),
        )
        .map_err(|e| explain::verification_error(&format!("{e:#}"), parsed, collateral, now_secs))
}

/// What a report body measures, per platform (see [`Claims`] for each field's meaning).
struct Measurements {
    platform: Platform,
    launch: Vec<u8>,
    signer: Option<Vec<u8>>,
    workload: Vec<u8>,
    runtime: Vec<Vec<u8>>,
    report_data: [u8; 64],
    debug: bool,
}

/// SGX: MRENCLAVE, MRSIGNER, CONFIGID; TDX: MRTD, MRCONFIGID, RTMR0..3. Adds the report's own SVNs
/// to `components`.
fn measurements(report: &Report, components: &mut BTreeMap<String, u64>) -> Option<Measurements> {
    if let Report::SgxEnclave(r) = report {
        components.insert("isv_svn".into(), r.isv_svn.into());
        components.insert("config_svn".into(), inspect::sgx_config_svn(r).into());
        return Some(Measurements {
            platform: Platform::Sgx,
            launch: r.mr_enclave.to_vec(),
            signer: Some(r.mr_signer.to_vec()),
            workload: inspect::sgx_config_id(r).to_vec(),
            runtime: Vec::new(),
            report_data: r.report_data,
            debug: inspect::sgx_debug(r),
        });
    }
    let td = report.as_td10()?;
    put_svns(components, "tee_tcb_svn", &td.tee_tcb_svn);
    if let Some(td15) = report.as_td15() {
        put_svns(components, "tee_tcb_svn2", &td15.tee_tcb_svn2);
    }
    Some(Measurements {
        platform: Platform::Tdx,
        launch: td.mr_td.to_vec(),
        signer: None,
        workload: td.mr_config_id.to_vec(),
        runtime: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3]
            .iter()
            .map(|m| m.to_vec())
            .collect(),
        report_data: td.report_data,
        debug: inspect::td_debug(td),
    })
}

/// Normalizes dcap-qvl's verified claims. The report comes from the library's verified result; the
/// attestation key (not part of it) from the same quote bytes, parsed before verification.
fn claims(quote: &Quote, anchor: &Anchor, verified: &QuoteClaims) -> Result<Claims, DcapError> {
    claims_with_raw(quote, anchor, verified, raw_claims(quote, anchor, verified))
}

/// [`Claims::raw`]: the quote as parsed and what dcap-qvl established, and the emulated root.
fn raw_claims(quote: &Quote, anchor: &Anchor, verified: &QuoteClaims) -> serde_json::Value {
    let mut raw = serde_json::json!({
        "quote": inspect::quote_json(quote),
        "verification": inspect::verification_json(verified),
    });
    if let (Anchor::Emulated { fingerprint, .. }, Some(map)) = (anchor, raw.as_object_mut()) {
        map.insert(EMULATED_ROOT_CLAIM.into(), hex::encode(fingerprint).into());
    }
    raw
}

/// [`claims`] with `raw` already made ([`raw_claims`]).
fn claims_with_raw(
    quote: &Quote,
    anchor: &Anchor,
    verified: &QuoteClaims,
    raw: serde_json::Value,
) -> Result<Claims, DcapError> {
    let pck = &verified.platform.pck;
    let mut components = BTreeMap::new();
    put_svns(&mut components, "cpu_svn", &pck.cpu_svn);
    components.insert("pce_svn".into(), pck.pce_svn.into());
    components.insert("qe_isv_svn".into(), verified.qe.report.isv_svn.into());
    let m = measurements(&verified.report, &mut components)
        .ok_or_else(|| DcapError::Verification("report body of an unknown kind".into()))?;
    Ok(Claims {
        platform: m.platform,
        hardware_backed: !anchor.is_emulated(),
        launch_measurement: m.launch,
        signer_measurement: m.signer,
        workload_data: m.workload,
        runtime_measurements: m.runtime,
        report_data: m.report_data,
        debug: m.debug,
        tcb: Some(TcbClaims {
            status: Some(verified.tcb.status.to_string()),
            advisory_ids: verified.tcb.advisory_ids.clone(),
            components,
        }),
        platform_id: Some(pck.fmspc.to_vec()),
        attestation_key: inspect::attestation_key(quote).to_vec(),
        raw,
    })
}

/// `name_00` .. `name_15`: one entry per SVN byte.
fn put_svns(components: &mut BTreeMap<String, u64>, name: &str, svns: &[u8; 16]) {
    for (i, svn) in svns.iter().enumerate() {
        components.insert(format!("{name}_{i:02}"), (*svn).into());
    }
}
