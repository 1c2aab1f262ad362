//! AMD SEV-SNP: attestation reports verified against AMD's pinned roots.
//!
//! [`verify`] checks, in order: the report's structure (length, version 2/3/5, signature algorithm,
//! reserved fields); that a VCEK or VLEK was given as the SIGNING_KEY field requires; that key's
//! RSA-PSS chain to the pinned ASK/ASVK and ARK of its product line; every certificate's validity at
//! `now`; when CRLs are given, revocation of the key and its ASK/ASVK; the product line agreeing with
//! the report's CPUID (v3+); the report's ECDSA P-384 signature;
//! the VCEK's hwID against CHIP_ID (unless masked); the certified TCB against REPORTED_TCB.
//!
//! Tests only: a VCEK may instead chain to an emulated ARK given among the certificates, if the
//! caller names that ARK's SHA-256 ([`Verifier::verify_with_roots`], fed from
//! [`crate::Endorsements::emulated_roots`]). Every other check is the same; the claims are marked
//! not hardware-backed and name the root under [`crate::EMULATED_ROOT_CLAIM`].

mod certs;
pub mod floor;
mod report;

pub use certs::{
    check_crl, endorsement_key, endorsement_key_among, is_rsa_certificate, parse_certificate,
    parse_crl, pinned_roots, EmulatedChain, EndorsementKey, KeyKind,
};
pub use report::{
    AttestationReport, Product, SigningKey, TcbVersion, POLICY_DEBUG, POLICY_MIGRATE_MA,
    REPORT_LEN, SIGNED_LEN,
};

use crate::{Claims, Platform, TcbClaims, EMULATED_ROOT_CLAIM};
use sha2::{Digest, Sha384};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use thiserror::Error;

/// Why an SNP report was refused. Each names the field or certificate and both values.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SnpError {
    #[error("SNP report: expected {expected} bytes, got {found}")]
    Length { expected: usize, found: usize },
    #[error("SNP report: version {0} is not supported (2, 3 and 5 are)")]
    Version(u32),
    #[error("SNP report: signature algorithm {0} is not ECDSA P-384 with SHA-384 (1)")]
    SignatureAlgorithm(u32),
    #[error("SNP report: SIGNING_KEY field {0} is reserved")]
    SigningKeyField(u32),
    #[error("SNP report: {field} at offset {offset:#x} must be zero")]
    Reserved { field: &'static str, offset: usize },
    #[error("SNP report is not signed (SIGNING_KEY = none)")]
    Unsigned,
    #[error("SNP report is signed by a {needed}, and no {needed} certificate was given (--cert)")]
    MissingKey { needed: &'static str },
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("certificate issued by {0}, which is not a pinned AMD ASK or ASVK")]
    UnknownIssuer(String),
    /// The endorsement key chains to a self-signed root that is neither AMD's nor named by the
    /// caller as an emulated root.
    #[error(
        "certificate chain ends at root {fingerprint} ({subject}), which is not a pinned AMD root \
         nor a named emulated root (SHA-256 of its DER not in emulated_roots)"
    )]
    UnnamedRoot {
        fingerprint: String,
        subject: String,
    },
    #[error("{cert} signature: {reason}")]
    ChainSignature { cert: &'static str, reason: String },
    #[error("{cert} expired at {not_after} (verification time {now})")]
    Expired {
        cert: &'static str,
        not_after: String,
        now: String,
    },
    #[error("{cert} is not valid before {not_before} (verification time {now})")]
    NotYetValid {
        cert: &'static str,
        not_before: String,
        now: String,
    },
    #[error("pinned AMD roots are unusable: {0}")]
    PinnedRoots(String),
    #[error("product line: the report's CPUID says {report}, the endorsement key is for {key}")]
    ProductMismatch {
        report: &'static str,
        key: &'static str,
    },
    #[error("SNP report signature does not verify with the {key} (report altered, or signed by another chip)")]
    BadSignature { key: &'static str },
    #[error("chip id: VCEK hwID is {vcek}, report CHIP_ID is {report}")]
    ChipIdMismatch { vcek: String, report: String },
    #[error("CRL: {0}")]
    Crl(String),
    #[error("{cert} (serial {serial}) is revoked by AMD's CRL since {since}")]
    Revoked {
        cert: &'static str,
        serial: String,
        since: String,
    },
    #[error("no CRL among those given is issued by the {product} ARK")]
    NoCrlForProduct { product: &'static str },
    #[error("TCB: VCEK certifies {component} = {certified}, report's REPORTED_TCB has {reported}")]
    TcbMismatch {
        component: &'static str,
        certified: u8,
        reported: u8,
    },
}

/// At most this many verified endorsement keys are cached (a KBS serves far fewer chips); past it,
/// the cache starts again.
const MAX_CACHED_KEYS: usize = 4096;

/// Verifies SNP reports, caching endorsement keys whose chain has been verified (by the SHA-384 of
/// the certificate's DER). Validity windows are still checked at every call's `now`. A cached key
/// under an emulated root is used only by calls that name that root.
#[derive(Default)]
pub struct Verifier {
    keys: Mutex<HashMap<[u8; 48], Arc<EndorsementKey>>>,
}

/// Verifies an SNP report with the given VCEK/VLEK certificates (DER or PEM) at `now`.
pub fn verify(report: &[u8], certs: &[Vec<u8>], now: SystemTime) -> Result<Claims, SnpError> {
    Verifier::default().verify(report, certs, now)
}

/// Checks the endorsement key and its ASK/ASVK against AMD CRLs (DER or PEM, as AMD KDS serves them at
/// `/vcek/v1/{product}/crl`): a CRL issued by the key's product-line ARK must be among `crls`.
pub fn check_revocation(
    key: &EndorsementKey,
    crls: &[Vec<u8>],
    now: SystemTime,
) -> Result<(), SnpError> {
    let (ask, ark) = key.chain()?;
    let ark_name = &ark.tbs_certificate.subject;
    let ark_key = certs::rsa_key(ark)?;
    let mut found = false;
    for bytes in crls {
        let crl = parse_crl(bytes)?;
        if &crl.tbs_cert_list.issuer != ark_name {
            continue;
        }
        found = true;
        let serials = [
            (
                if key.kind == KeyKind::Vcek {
                    "ASK"
                } else {
                    "ASVK"
                },
                &ask.tbs_certificate.serial_number,
            ),
            (
                if key.kind == KeyKind::Vcek {
                    "VCEK"
                } else {
                    "VLEK"
                },
                &key.cert.tbs_certificate.serial_number,
            ),
        ];
        check_crl(&crl, ark_name, &ark_key, &serials, now)?;
    }
    if !found {
        return Err(SnpError::NoCrlForProduct {
            product: key.product.name(),
        });
    }
    Ok(())
}

/// Whether `bytes` look like a raw SNP report (length and version), for evidence detection.
pub fn is_snp_report(bytes: &[u8]) -> bool {
    bytes.len() == REPORT_LEN
        && matches!(
            u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            2 | 3 | 5
        )
}

/// Parses a report without verifying anything, for `cordon attest inspect`.
pub fn inspect(report: &[u8]) -> Result<serde_json::Value, SnpError> {
    let r = AttestationReport::parse(report)?;
    let mut v = serde_json::to_value(&r).map_err(|e| SnpError::Certificate(e.to_string()))?;
    if let Some(p) = r.product_from_cpuid() {
        v["product_from_cpuid"] = serde_json::json!(p.name());
    }
    v["debug"] = serde_json::json!(r.debug());
    v["migrate_ma"] = serde_json::json!(r.migrate_ma());
    Ok(v)
}

impl Verifier {
    /// The endorsement key of `der_or_pem` (one of `certs`), or `None` for an RSA certificate (a
    /// chain link). On a cache miss the chain is verified, to a pinned root or to an emulated root
    /// among `certs` named in `emulated_roots`; a cached emulated key is used only if its root is
    /// named by this call too (otherwise it is verified again, and refused).
    fn key_for(
        &self,
        der_or_pem: &[u8],
        certs: &[Vec<u8>],
        emulated_roots: &[[u8; 32]],
    ) -> Result<Option<Arc<EndorsementKey>>, SnpError> {
        let id: [u8; 48] = Sha384::digest(der_or_pem).into();
        if let Some(k) = self.keys.lock().ok().and_then(|m| m.get(&id).cloned()) {
            if k.emulated
                .as_ref()
                .is_none_or(|e| emulated_roots.contains(&e.root))
            {
                return Ok(Some(k));
            }
        }
        let cert = parse_certificate(der_or_pem)?;
        if is_rsa_certificate(&cert) {
            // A chain link (an ASK or ARK given with the key) is not cached: it is unverified
            // input, and caching it would let anyone grow the cache with certificates of their own.
            return Ok(None);
        }
        // Only a key under no pinned ASK needs the others; they are parsed on this miss alone.
        let others: Vec<_> = certs
            .iter()
            .filter(|c| c.as_slice() != der_or_pem)
            .filter_map(|c| parse_certificate(c).ok())
            .filter(is_rsa_certificate)
            .collect();
        let key = Arc::new(endorsement_key_among(cert, &others, emulated_roots)?);
        if let Ok(mut m) = self.keys.lock() {
            // Only keys whose chain verified get here; still, the cache stays bounded.
            if m.len() >= MAX_CACHED_KEYS {
                m.clear();
            }
            m.insert(id, key.clone());
        }
        Ok(Some(key))
    }

    /// Verifies `report` at `now`; see the module documentation for the checks and their order.
    pub fn verify(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Claims, SnpError> {
        self.verify_with_crls(report, certs, &[], now)
    }

    /// [`Verifier::verify`], and when `crls` is not empty, revocation of the endorsement key and its
    /// ASK/ASVK checked against them (see [`check_revocation`]).
    pub fn verify_with_crls(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        crls: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<Claims, SnpError> {
        self.verify_with_roots(report, certs, crls, &[], now)
    }

    /// [`Verifier::verify_with_crls`], and (tests only) a VCEK under no pinned ASK accepted when it
    /// chains through an ASK and ARK among `certs` to a root whose SHA-256 is in `emulated_roots`.
    /// Claims of such a report are not hardware-backed and name the root (see the module
    /// documentation).
    pub fn verify_with_roots(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        crls: &[Vec<u8>],
        emulated_roots: &[[u8; 32]],
        now: SystemTime,
    ) -> Result<Claims, SnpError> {
        let r = AttestationReport::parse(report)?;
        let (needed_kind, needed) = match r.signing_key {
            SigningKey::Vcek => (KeyKind::Vcek, "VCEK"),
            SigningKey::Vlek => (KeyKind::Vlek, "VLEK"),
            SigningKey::None => return Err(SnpError::Unsigned),
        };
        // Several certificates may be given (several chips, or one chip before and after a TCB
        // update): each of the right kind is tried, and the first that verifies everything wins.
        let mut first_error = None;
        for c in certs {
            let result = self.key_for(c, certs, emulated_roots).and_then(|key| {
                let Some(key) = key.filter(|k| k.kind == needed_kind) else {
                    return Ok(None);
                };
                check_with_key(report, &r, &key, crls, now, needed).map(Some)
            });
            match result {
                Ok(Some(claims)) => return Ok(claims),
                Ok(None) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(SnpError::MissingKey { needed }))
    }
}

/// Every check that needs the endorsement key, in the order of the module documentation.
fn check_with_key(
    report: &[u8],
    r: &AttestationReport,
    key: &EndorsementKey,
    crls: &[Vec<u8>],
    now: SystemTime,
    needed: &'static str,
) -> Result<Claims, SnpError> {
    key.check_validity(now)?;
    if !crls.is_empty() {
        check_revocation(key, crls, now)?;
    }
    if let Some(p) = r.product_from_cpuid() {
        if p != key.product {
            return Err(SnpError::ProductMismatch {
                report: p.name(),
                key: key.product.name(),
            });
        }
    }
    verify_signature(report, r, key, needed)?;
    if key.kind == KeyKind::Vcek && !r.mask_chip_key {
        check_chip_id(r, key)?;
    }
    let tcb = TcbVersion::decode(r.reported_tcb, key.product);
    check_tcb(&tcb, &key.tcb)?;
    Ok(claims(r, key, &tcb))
}

/// The report's ECDSA P-384/SHA-384 signature over its first [`SIGNED_LEN`] bytes, alone: the check
/// [`Verifier::verify`] runs, public so that benchmarks can time it. `r` must be `report` parsed.
///
/// aws-lc-rs (AWS-LC) verifies it, with the key parsed once per [`EndorsementKey`]: about 3.9x faster
/// than ring's P-384 and 6x faster than RustCrypto's on the machine of docs/benchmarks.md. The key
/// was first parsed and checked as a P-384 point by `p384`. The report stores R and S as 72-byte
/// little-endian fields; [`AttestationReport`] holds them as 48-byte big-endian scalars (the upper
/// 24 bytes must be zero), which is the fixed r‖s encoding verified here.
pub fn verify_report_signature(
    report: &[u8],
    r: &AttestationReport,
    key: &EndorsementKey,
) -> Result<(), SnpError> {
    let name = match key.kind {
        KeyKind::Vcek => "VCEK",
        KeyKind::Vlek => "VLEK",
    };
    verify_signature(report, r, key, name)
}

fn verify_signature(
    report: &[u8],
    r: &AttestationReport,
    key: &EndorsementKey,
    name: &'static str,
) -> Result<(), SnpError> {
    let signed = report.get(..SIGNED_LEN).ok_or(SnpError::Length {
        expected: REPORT_LEN,
        found: report.len(),
    })?;
    let mut sig = [0u8; 96];
    sig[..48].copy_from_slice(&r.signature_r);
    sig[48..].copy_from_slice(&r.signature_s);
    key.report_key
        .verify_sig(signed, &sig)
        .map_err(|_| SnpError::BadSignature { key: name })
}

fn check_chip_id(r: &AttestationReport, key: &EndorsementKey) -> Result<(), SnpError> {
    let Some(hw_id) = &key.hw_id else {
        return Err(SnpError::Certificate("VCEK has no hwID extension".into()));
    };
    // Turin VCEKs certify the first 8 bytes of CHIP_ID; earlier lines all 64.
    let matches = match hw_id.len() {
        64 => hw_id.as_slice() == r.chip_id.as_slice(),
        8 => hw_id.as_slice() == &r.chip_id[..8],
        _ => false,
    };
    if !matches {
        return Err(SnpError::ChipIdMismatch {
            vcek: hex::encode(hw_id),
            report: hex::encode(r.chip_id),
        });
    }
    Ok(())
}

fn check_tcb(reported: &TcbVersion, certified: &certs::CertifiedTcb) -> Result<(), SnpError> {
    let pairs = [
        (
            "bootloader",
            certified.bootloader,
            Some(reported.bootloader),
        ),
        ("tee", certified.tee, Some(reported.tee)),
        ("snp", certified.snp, Some(reported.snp)),
        ("microcode", certified.microcode, Some(reported.microcode)),
        ("fmc", certified.fmc, reported.fmc),
    ];
    for (component, certified, reported) in pairs {
        if let (Some(c), Some(r)) = (certified, reported) {
            if c != r {
                return Err(SnpError::TcbMismatch {
                    component,
                    certified: c,
                    reported: r,
                });
            }
        }
    }
    Ok(())
}

fn claims(r: &AttestationReport, key: &EndorsementKey, tcb: &TcbVersion) -> Claims {
    let mut components = BTreeMap::new();
    components.insert("bootloader".to_string(), u64::from(tcb.bootloader));
    components.insert("tee".to_string(), u64::from(tcb.tee));
    components.insert("snp".to_string(), u64::from(tcb.snp));
    components.insert("microcode".to_string(), u64::from(tcb.microcode));
    if let Some(fmc) = tcb.fmc {
        components.insert("fmc".to_string(), u64::from(fmc));
    }
    let mut raw = serde_json::to_value(r).unwrap_or_default();
    raw["product"] = serde_json::json!(key.product.name());
    raw["endorsement_key"] = serde_json::json!(key.kind);
    // For readers (`debug` is a claim of its own); appraisal reads the bit from `policy` itself.
    raw["migrate_ma"] = serde_json::json!(r.migrate_ma());
    if let Some(name) = &key.product_name {
        raw["vcek_product_name"] = serde_json::json!(name);
    }
    if let Some(e) = &key.emulated {
        raw[EMULATED_ROOT_CLAIM] = serde_json::json!(hex::encode(e.root));
    }
    Claims {
        platform: Platform::Snp,
        hardware_backed: key.emulated.is_none(),
        launch_measurement: r.measurement.to_vec(),
        signer_measurement: None,
        workload_data: r.host_data.to_vec(),
        runtime_measurements: Vec::new(),
        report_data: r.report_data,
        debug: r.debug(),
        tcb: Some(TcbClaims {
            status: None,
            advisory_ids: Vec::new(),
            components,
        }),
        platform_id: (!r.mask_chip_key).then(|| r.chip_id.to_vec()),
        attestation_key: key.key_digest.to_vec(),
        raw,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cache_tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// Certificates shipped beside a VCEK (here AMD's own ASK and ARK, as a host would ship them)
    /// are chain links, not keys: none of them is cached, so shipping certificates cannot grow the
    /// cache; only the VCEK whose chain verified is.
    #[test]
    fn shipped_chain_links_are_not_cached() {
        let report = include_bytes!("../../../../testdata/attestation/snp/trustee_test-report.bin");
        let vcek = include_bytes!("../../../../testdata/attestation/snp/trustee_test-vcek.der");
        let chain = x509_cert::Certificate::load_pem_chain(
            include_str!("../../amd/ask_ark_milan.pem").as_bytes(),
        )
        .unwrap();
        let mut certs: Vec<Vec<u8>> = chain
            .iter()
            .map(|c| der::Encode::to_der(c).unwrap())
            .collect();
        certs.push(vcek.to_vec());
        let verifier = Verifier::default();
        let at = UNIX_EPOCH + Duration::from_secs(1_751_328_000);
        for _ in 0..3 {
            verifier.verify(report, &certs, at).unwrap();
        }
        assert_eq!(verifier.keys.lock().unwrap().len(), 1);
    }
}
