//! AMD's key hierarchy for SEV-SNP: ARK (root) → ASK (or ASVK for VLEKs) → VCEK (or VLEK), RSA-PSS
//! with SHA-384 up to the VCEK, whose P-384 key signs reports. The ARK and ASK/ASVK of each product
//! line are pinned in this binary. VCEK extensions: AMD "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification" (publication 57230), table "VCEK Certificate
//! Extensions".

use super::report::Product;
use super::SnpError;
use der::asn1::{Ia5StringRef, OctetStringRef};
use der::{Decode, Encode};
use sha2::{Digest, Sha384};
use std::sync::OnceLock;
use std::time::SystemTime;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
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
}

/// Verifies `cert` chains to a pinned root (any product line) and reads its extensions.
/// Validity windows are checked separately, at `now`, by [`EndorsementKey::check_validity`].
pub fn endorsement_key(cert: Certificate) -> Result<EndorsementKey, SnpError> {
    let roots = pinned_roots()?;
    let issuer = &cert.tbs_certificate.issuer;
    let root = roots
        .iter()
        .find(|r| &r.ask.tbs_certificate.subject == issuer)
        .ok_or_else(|| SnpError::UnknownIssuer(issuer.to_string()))?;
    verify_signed_by(
        &cert,
        &root.ask,
        match root.kind {
            KeyKind::Vcek => "VCEK",
            KeyKind::Vlek => "VLEK",
        },
    )?;
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
    Ok(EndorsementKey {
        kind: root.kind,
        product: root.product,
        product_name,
        hw_id,
        tcb,
        public_key,
        sec1: sec1_uncompressed,
        report_key,
        key_digest: Sha384::digest(sec1).into(),
        cert,
    })
}

impl EndorsementKey {
    /// Checks the VCEK/VLEK and its pinned ASK/ARK are valid at `now`.
    pub fn check_validity(&self, now: SystemTime) -> Result<(), SnpError> {
        let roots = pinned_roots()?;
        let root = roots
            .iter()
            .find(|r| r.product == self.product && r.kind == self.kind)
            .ok_or_else(|| SnpError::PinnedRoots("root vanished".into()))?;
        let name = match self.kind {
            KeyKind::Vcek => "VCEK",
            KeyKind::Vlek => "VLEK",
        };
        check_validity(&self.cert, name, now)?;
        check_validity(
            &root.ask,
            if self.kind == KeyKind::Vcek {
                "ASK"
            } else {
                "ASVK"
            },
            now,
        )?;
        check_validity(&root.ark, "ARK", now)
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
