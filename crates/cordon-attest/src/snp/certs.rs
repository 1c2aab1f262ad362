//! AMD's key hierarchy for SEV-SNP: ARK (root) → ASK (or ASVK for VLEKs) → VCEK (or VLEK), RSA-PSS
//! with SHA-384 up to the VCEK, whose P-384 key signs reports. The ARK and ASK/ASVK of each product
//! line are pinned in this binary. VCEK extensions: AMD "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification" (publication 57230), table "VCEK Certificate
//! Extensions".
//!
//! Tests only: a VCEK whose issuer is no pinned ASK may chain, through an ASK and a self-signed ARK
//! given with it, to an *emulated* root that the caller names by the SHA-256 of its DER
//! ([`endorsement_key_among`]). Such a key is marked emulated and its claims are not hardware-backed.

use super::report::Product;
use super::SnpError;
use der::asn1::{Ia5StringRef, OctetStringRef};
use der::{Decode, Encode};
use sha2::{Digest, Sha256, Sha384};
use std::sync::OnceLock;
use std::time::SystemTime;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// VCEK or VLEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum KeyKind {
    Vcek,
    Vlek,
}

/// One product line's pinned intermediate and root.
pub struct AmdRoots {
    pub product: Product,
    pub kind: KeyKind,
    pub ask: Certificate,
    pub ark: Certificate,
}

const PINNED: &[(Product, KeyKind, &str)] = &[
    (
        Product::Milan,
        KeyKind::Vcek,
        include_str!("../../amd/ask_ark_milan.pem"),
    ),
    (
        Product::Milan,
        KeyKind::Vlek,
        include_str!("../../amd/ask_ark_milan_vlek.pem"),
    ),
    (
        Product::Genoa,
        KeyKind::Vcek,
        include_str!("../../amd/ask_ark_genoa.pem"),
    ),
    (
        Product::Genoa,
        KeyKind::Vlek,
        include_str!("../../amd/ask_ark_genoa_vlek.pem"),
    ),
    (
        Product::Turin,
        KeyKind::Vcek,
        include_str!("../../amd/ask_ark_turin_vcek.pem"),
    ),
    (
        Product::Turin,
        KeyKind::Vlek,
        include_str!("../../amd/ask_ark_turin_vlek.pem"),
    ),
];

/// The pinned roots, parsed and their own chain (ARK self-signed, ASK by ARK) verified once.
pub fn pinned_roots() -> Result<&'static [AmdRoots], SnpError> {
    static ROOTS: OnceLock<Result<Vec<AmdRoots>, SnpError>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            PINNED
                .iter()
                .map(|(product, kind, pem)| {
                    let chain = Certificate::load_pem_chain(pem.as_bytes())
                        .map_err(|e| SnpError::PinnedRoots(format!("{}: {e}", product.name())))?;
                    let [ask, ark]: [Certificate; 2] = chain.try_into().map_err(|_| {
                        SnpError::PinnedRoots(format!("{}: expected ASK then ARK", product.name()))
                    })?;
                    verify_signed_by(&ark, &ark, "ARK")?;
                    verify_signed_by(&ask, &ark, "ASK")?;
                    Ok(AmdRoots {
                        product: *product,
                        kind: *kind,
                        ask,
                        ark,
                    })
                })
                .collect()
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// Parses a certificate given as DER or PEM. Only canonical DER is accepted: signatures are checked
/// over the re-encoded TBSCertificate, so an encoding the parser tolerates but does not reproduce
/// (a flipped bit in a lenient spot) must not slip through.
pub fn parse_certificate(bytes: &[u8]) -> Result<Certificate, SnpError> {
    let trimmed = bytes.trim_ascii_start();
    let der = if trimmed.starts_with(b"-----BEGIN") {
        let (label, der) = der::pem::decode_vec(trimmed)
            .map_err(|e| SnpError::Certificate(format!("PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(SnpError::Certificate(format!(
                "PEM label is {label}, expected CERTIFICATE"
            )));
        }
        der
    } else {
        bytes.to_vec()
    };
    let cert =
        Certificate::from_der(&der).map_err(|e| SnpError::Certificate(format!("DER: {e}")))?;
    match cert.to_der() {
        Ok(again) if again == der => Ok(cert),
        _ => Err(SnpError::Certificate("not canonical DER".into())),
    }
}

/// Verifies that `issuer` signed `cert` (RSASSA-PSS, SHA-384, salt 48, as AMD's KDS issues).
pub fn verify_signed_by(
    cert: &Certificate,
    issuer: &Certificate,
    what: &'static str,
) -> Result<(), SnpError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::signature::Verifier;
    // RFC 5280 4.1.1.2: the outer algorithm must equal the signed one (the outer is not signed).
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(SnpError::ChainSignature {
            cert: what,
            reason: "outer signature algorithm differs from the signed one".into(),
        });
    }
    // A signature is whole bytes; unused bits would let one certificate have several encodings.
    if cert.signature.unused_bits() != 0 {
        return Err(SnpError::ChainSignature {
            cert: what,
            reason: "signature BIT STRING has unused bits".into(),
        });
    }
    if cert.signature_algorithm.oid.to_string() != OID_RSASSA_PSS {
        return Err(SnpError::ChainSignature {
            cert: what,
            reason: format!(
                "signature algorithm {} is not RSASSA-PSS",
                cert.signature_algorithm.oid
            ),
        });
    }
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let key =
        rsa::RsaPublicKey::from_pkcs1_der(spki.subject_public_key.raw_bytes()).map_err(|e| {
            SnpError::ChainSignature {
                cert: what,
                reason: format!("issuer key is not RSA: {e}"),
            }
        })?;
    let tbs = cert
        .tbs_certificate
        .to_der()
        .map_err(|e| SnpError::ChainSignature {
            cert: what,
            reason: format!("re-encoding: {e}"),
        })?;
    let sig = rsa::pss::Signature::try_from(cert.signature.raw_bytes()).map_err(|e| {
        SnpError::ChainSignature {
            cert: what,
            reason: e.to_string(),
        }
    })?;
    rsa::pss::VerifyingKey::<Sha384>::new(key)
        .verify(&tbs, &sig)
        .map_err(|_| SnpError::ChainSignature {
            cert: what,
            reason: "signature does not verify".into(),
        })
}

/// Checks `now` is inside the certificate's validity window.
pub fn check_validity(
    cert: &Certificate,
    what: &'static str,
    now: SystemTime,
) -> Result<(), SnpError> {
    let v = &cert.tbs_certificate.validity;
    let not_before = v.not_before.to_system_time();
    let not_after = v.not_after.to_system_time();
    if now < not_before {
        return Err(SnpError::NotYetValid {
            cert: what,
            not_before: fmt_time(not_before),
            now: fmt_time(now),
        });
    }
    if now > not_after {
        return Err(SnpError::Expired {
            cert: what,
            not_after: fmt_time(not_after),
            now: fmt_time(now),
        });
    }
    Ok(())
}

/// RFC 3339 UTC, for messages.
pub fn fmt_time(t: SystemTime) -> String {
    crate::timefmt::rfc3339(t)
}

/// TCB component versions a VCEK certifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CertifiedTcb {
    pub bootloader: Option<u8>,
    pub tee: Option<u8>,
    pub snp: Option<u8>,
    pub microcode: Option<u8>,
    pub fmc: Option<u8>,
}

/// A VCEK or VLEK whose chain to a pinned AMD root has been verified.
pub struct EndorsementKey {
    pub kind: KeyKind,
    pub product: Product,
    pub product_name: Option<String>,
    /// The chip identity a VCEK certifies (absent in VLEKs).
    pub hw_id: Option<Vec<u8>>,
    pub tcb: CertifiedTcb,
    pub public_key: p384::ecdsa::VerifyingKey,
    /// The same key, SEC1 uncompressed.
    pub sec1: Vec<u8>,
    /// The same key parsed once by aws-lc-rs for the report signature check (ECDSA P-384/SHA-384,
    /// r‖s big-endian), so a cached key is not parsed again per report.
    pub(super) report_key: aws_lc_rs::signature::ParsedPublicKey,
    /// SHA-384 of the SEC1 public key: what claims name as the attestation key.
    pub key_digest: [u8; 48],
    pub cert: Certificate,
    /// Tests only: the emulated ASK and ARK this key chains to instead of a pinned AMD root.
    pub emulated: Option<EmulatedChain>,
}

/// An ASK and self-signed ARK, given with an endorsement key, whose ARK the caller named as an
/// emulated root (tests only; see [`endorsement_key_among`]).
pub struct EmulatedChain {
    pub ask: Certificate,
    pub ark: Certificate,
    /// SHA-256 of the ARK's DER: the fingerprint the caller named.
    pub root: [u8; 32],
}

/// Whether `cert` holds an RSA key: an ASK, ASVK or ARK, never an endorsement key (P-384).
pub fn is_rsa_certificate(cert: &Certificate) -> bool {
    cert.tbs_certificate
        .subject_public_key_info
        .algorithm
        .oid
        .to_string()
        == OID_RSA_ENCRYPTION
}

/// The emulated chain above `cert`: an ASK among `others` whose subject is `cert`'s issuer and that
/// signed it, and a self-signed ARK among `others` that signed the ASK, all RSA-PSS SHA-384 as
/// AMD's, accepted only if the ARK's SHA-256 is in `emulated_roots`. Validity windows are checked
/// later, at `now` ([`EndorsementKey::check_validity`]).
fn emulated_chain(
    cert: &Certificate,
    others: &[Certificate],
    emulated_roots: &[[u8; 32]],
) -> Result<EmulatedChain, SnpError> {
    let issuer = &cert.tbs_certificate.issuer;
    let mut first_error = None;
    for ask in others
        .iter()
        .filter(|c| &c.tbs_certificate.subject == issuer && is_rsa_certificate(c))
    {
        let ask_issuer = &ask.tbs_certificate.issuer;
        let arks = others.iter().filter(|c| {
            &c.tbs_certificate.subject == ask_issuer
                && c.tbs_certificate.issuer == c.tbs_certificate.subject
        });
        let mut found_ark = false;
        for ark in arks {
            found_ark = true;
            // The root is judged by its fingerprint first: no signature of a chain to a root
            // nobody named is ever checked (with no emulated root named, in production, none).
            let der = ark
                .to_der()
                .map_err(|e| SnpError::Certificate(format!("ARK re-encoding: {e}")))?;
            let root: [u8; 32] = Sha256::digest(&der).into();
            if !emulated_roots.contains(&root) {
                first_error.get_or_insert(SnpError::UnnamedRoot {
                    fingerprint: hex::encode(root),
                    subject: ark.tbs_certificate.subject.to_string(),
                });
                continue;
            }
            let checked = verify_signed_by(ark, ark, "ARK")
                .and_then(|()| verify_signed_by(ask, ark, "ASK"))
                .and_then(|()| verify_signed_by(cert, ask, "VCEK"));
            match checked {
                Ok(()) => {
                    return Ok(EmulatedChain {
                        ask: ask.clone(),
                        ark: ark.clone(),
                        root,
                    })
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if !found_ark {
            first_error.get_or_insert(SnpError::Certificate(format!(
                "ASK {} was given without a self-signed ARK named {ask_issuer}",
                ask.tbs_certificate.subject
            )));
        }
    }
    Err(first_error.unwrap_or_else(|| SnpError::UnknownIssuer(issuer.to_string())))
}

/// The product line an emulated VCEK names in its productName extension (`Milan-B0`, `Genoa-B1`,
/// `Turin-C1`: the line before the stepping).
fn product_from_name(name: Option<&str>) -> Result<Product, SnpError> {
    let line = name.and_then(|n| n.split('-').next()).unwrap_or("");
    match line {
        "Milan" => Ok(Product::Milan),
        "Genoa" => Ok(Product::Genoa),
        "Turin" => Ok(Product::Turin),
        _ => Err(SnpError::Certificate(format!(
            "endorsement key under an emulated root names no known product line (productName {})",
            name.unwrap_or("absent")
        ))),
    }
}

/// Verifies `cert` chains to a pinned root (any product line) and reads its extensions.
/// Validity windows are checked separately, at `now`, by [`EndorsementKey::check_validity`].
pub fn endorsement_key(cert: Certificate) -> Result<EndorsementKey, SnpError> {
    endorsement_key_among(cert, &[], &[])
}

/// [`endorsement_key`], and when `cert`'s issuer is no pinned ASK/ASVK: a chain through an ASK and
/// a self-signed ARK among `others`, accepted only if the ARK's SHA-256 is in `emulated_roots`
/// (tests only). Such a key is a VCEK of the product line its productName names, and is marked
/// [`EndorsementKey::emulated`]. A chain to any other root fails with [`SnpError::UnnamedRoot`].
pub fn endorsement_key_among(
    cert: Certificate,
    others: &[Certificate],
    emulated_roots: &[[u8; 32]],
) -> Result<EndorsementKey, SnpError> {
    let roots = pinned_roots()?;
    let issuer = &cert.tbs_certificate.issuer;
    let (kind, pinned_product, emulated) = match roots
        .iter()
        .find(|r| &r.ask.tbs_certificate.subject == issuer)
    {
        Some(root) => {
            verify_signed_by(
                &cert,
                &root.ask,
                match root.kind {
                    KeyKind::Vcek => "VCEK",
                    KeyKind::Vlek => "VLEK",
                },
            )?;
            (root.kind, Some(root.product), None)
        }
        None => (
            KeyKind::Vcek,
            None,
            Some(emulated_chain(&cert, others, emulated_roots)?),
        ),
    };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid.to_string() != OID_EC_PUBLIC_KEY {
        return Err(SnpError::Certificate(format!(
            "endorsement key algorithm {} is not EC",
            spki.algorithm.oid
        )));
    }
    if spki.subject_public_key.unused_bits() != 0 {
        return Err(SnpError::Certificate(
            "endorsement key BIT STRING has unused bits".into(),
        ));
    }
    let sec1 = spki.subject_public_key.raw_bytes();
    let public_key = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
        .map_err(|_| SnpError::Certificate("endorsement key is not a P-384 point".into()))?;
    let sec1_uncompressed = public_key.to_encoded_point(false).as_bytes().to_vec();
    let report_key = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
        &sec1_uncompressed,
    )
    .map_err(|e| SnpError::Certificate(format!("endorsement key rejected by aws-lc-rs: {e}")))?;
    let mut tcb = CertifiedTcb::default();
    let mut hw_id = None;
    let mut product_name = None;
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        let value = ext.extn_value.as_bytes();
        match ext.extn_id.to_string().as_str() {
            OID_BL_SPL => tcb.bootloader = Some(spl(value, "blSPL")?),
            OID_TEE_SPL => tcb.tee = Some(spl(value, "teeSPL")?),
            OID_SNP_SPL => tcb.snp = Some(spl(value, "snpSPL")?),
            OID_UCODE_SPL => tcb.microcode = Some(spl(value, "ucodeSPL")?),
            OID_FMC_SPL => tcb.fmc = Some(spl(value, "fmcSPL")?),
            OID_HW_ID => hw_id = Some(hw_id_bytes(value)),
            OID_PRODUCT_NAME => {
                product_name = Ia5StringRef::from_der(value).ok().map(|s| s.to_string());
            }
            _ => {}
        }
    }
    let product = match pinned_product {
        Some(p) => p,
        None => product_from_name(product_name.as_deref())?,
    };
    Ok(EndorsementKey {
        kind,
        product,
        product_name,
        hw_id,
        tcb,
        public_key,
        sec1: sec1_uncompressed,
        report_key,
        key_digest: Sha384::digest(sec1).into(),
        cert,
        emulated,
    })
}

impl EndorsementKey {
    /// The ASK (or ASVK) and ARK above this key: its emulated chain, or the pinned roots of its
    /// product line.
    pub fn chain(&self) -> Result<(&Certificate, &Certificate), SnpError> {
        if let Some(e) = &self.emulated {
            return Ok((&e.ask, &e.ark));
        }
        let root = pinned_roots()?
            .iter()
            .find(|r| r.product == self.product && r.kind == self.kind)
            .ok_or_else(|| SnpError::PinnedRoots("no root for the key's product line".into()))?;
        Ok((&root.ask, &root.ark))
    }

    /// Checks the VCEK/VLEK and its ASK/ARK (pinned, or emulated) are valid at `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), SnpError> {
        let (ask, ark) = self.chain()?;
        let name = match self.kind {
            KeyKind::Vcek => "VCEK",
            KeyKind::Vlek => "VLEK",
        };
        check_validity(&self.cert, name, now)?;
        check_validity(
            ask,
            if self.kind == KeyKind::Vcek {
                "ASK"
            } else {
                "ASVK"
            },
            now,
        )?;
        check_validity(ark, "ARK", now)
    }
}

/// An SPL extension: a DER INTEGER (0..=255).
fn spl(value: &[u8], name: &'static str) -> Result<u8, SnpError> {
    u8::from_der(value)
        .map_err(|e| SnpError::Certificate(format!("{name} extension is not a small INTEGER: {e}")))
}

/// hwID: normally a DER OCTET STRING of 64 bytes; some KDS versions issued the 64 bytes bare.
fn hw_id_bytes(value: &[u8]) -> Vec<u8> {
    match OctetStringRef::from_der(value) {
        Ok(os) => os.as_bytes().to_vec(),
        Err(_) => value.to_vec(),
    }
}

/// Parses a CRL given as DER or PEM (`X509 CRL`), canonical DER only (see [`parse_certificate`]).
pub fn parse_crl(bytes: &[u8]) -> Result<CertificateList, SnpError> {
    let trimmed = bytes.trim_ascii_start();
    let der = if trimmed.starts_with(b"-----BEGIN") {
        let (label, der) =
            der::pem::decode_vec(trimmed).map_err(|e| SnpError::Crl(format!("PEM: {e}")))?;
        if label != "X509 CRL" {
            return Err(SnpError::Crl(format!(
                "PEM label is {label}, expected X509 CRL"
            )));
        }
        der
    } else {
        bytes.to_vec()
    };
    let crl = CertificateList::from_der(&der).map_err(|e| SnpError::Crl(format!("DER: {e}")))?;
    match crl.to_der() {
        Ok(again) if again == der => Ok(crl),
        _ => Err(SnpError::Crl("not canonical DER".into())),
    }
}

/// Checks a CRL issued by `issuer` (AMD's KDS CRLs are signed by the ARK with RSASSA-PSS SHA-384):
/// signature, algorithm identifiers, issuer name, thisUpdate/nextUpdate at `now`, and that none of
/// `serials` (with the name of the certificate each belongs to) is revoked.
pub fn check_crl(
    crl: &CertificateList,
    issuer_name: &x509_cert::name::Name,
    issuer_key: &rsa::RsaPublicKey,
    serials: &[(&'static str, &x509_cert::serial_number::SerialNumber)],
    now: SystemTime,
) -> Result<(), SnpError> {
    use rsa::signature::Verifier;
    let tbs = &crl.tbs_cert_list;
    if &tbs.issuer != issuer_name {
        return Err(SnpError::Crl(format!(
            "issued by {}, expected {issuer_name}",
            tbs.issuer
        )));
    }
    if crl.signature_algorithm != tbs.signature
        || crl.signature_algorithm.oid.to_string() != OID_RSASSA_PSS
        || crl.signature.unused_bits() != 0
    {
        return Err(SnpError::Crl(
            "signature algorithm is not the signed RSASSA-PSS one".into(),
        ));
    }
    let der = tbs
        .to_der()
        .map_err(|e| SnpError::Crl(format!("re-encoding: {e}")))?;
    let sig = rsa::pss::Signature::try_from(crl.signature.raw_bytes())
        .map_err(|e| SnpError::Crl(e.to_string()))?;
    rsa::pss::VerifyingKey::<Sha384>::new(issuer_key.clone())
        .verify(&der, &sig)
        .map_err(|_| SnpError::Crl("signature does not verify with the ARK".into()))?;
    let this_update = tbs.this_update.to_system_time();
    if now < this_update {
        return Err(SnpError::NotYetValid {
            cert: "CRL",
            not_before: fmt_time(this_update),
            now: fmt_time(now),
        });
    }
    if let Some(next) = tbs.next_update.map(|t| t.to_system_time()) {
        if now > next {
            return Err(SnpError::Expired {
                cert: "CRL",
                not_after: fmt_time(next),
                now: fmt_time(now),
            });
        }
    }
    for revoked in tbs.revoked_certificates.iter().flatten() {
        for (name, serial) in serials {
            if &revoked.serial_number == *serial {
                return Err(SnpError::Revoked {
                    cert: name,
                    serial: hex::encode(serial.as_bytes()),
                    since: fmt_time(revoked.revocation_date.to_system_time()),
                });
            }
        }
    }
    Ok(())
}

/// The RSA public key of a certificate (the ARK, for CRLs).
pub fn rsa_key(cert: &Certificate) -> Result<rsa::RsaPublicKey, SnpError> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    rsa::RsaPublicKey::from_pkcs1_der(
        cert.tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes(),
    )
    .map_err(|e| SnpError::Crl(format!("issuer key is not RSA: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_roots_verify() {
        let roots = pinned_roots().unwrap();
        assert_eq!(roots.len(), 6);
    }

    #[test]
    fn hw_id_is_read_from_every_encoding() {
        let expected: Vec<u8> = (0u8..64).collect();
        for der in [
            &include_bytes!(
                "../../../../testdata/attestation/snp/trustee_test-vcek-invalid-legacy.der"
            )[..],
            &include_bytes!(
                "../../../../testdata/attestation/snp/trustee_test-vcek-invalid-new.der"
            )[..],
        ] {
            let cert = parse_certificate(der).unwrap();
            let ext = cert
                .tbs_certificate
                .extensions
                .iter()
                .flatten()
                .find(|e| e.extn_id.to_string() == OID_HW_ID)
                .unwrap();
            assert_eq!(hw_id_bytes(ext.extn_value.as_bytes()), expected);
        }
    }
}
