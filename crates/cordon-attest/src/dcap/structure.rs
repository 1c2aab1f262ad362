//! Strictness dcap-qvl leaves out: one encoding per quote, so that no byte escapes both the parser
//! and the signatures.
//!
//! dcap-qvl reads the length-prefixed parts of the signature data but does not check that the
//! lengths add up, that the outer certification data of a v4/v5 quote has type 6, what follows the
//! signature data, how the PCK chain's PEM is framed, or the root CA copy at the end of the chain
//! (it uses its own pinned root). These checks do.

use super::DcapError;
use dcap_qvl::quote::{AuthData, QEReportCertificationData, Quote};

/// Sizes from the Intel quote format specifications ("Quote Signature Data Structure", v3; "QE
/// Report Certification Data", v4/v5).
const ECDSA_SIGNATURE: usize = 64;
const ECDSA_KEY: usize = 64;
const QE_REPORT: usize = 384;
const QE_AUTH_DATA_SIZE: usize = 2;
/// Certification data type (2) and size (4).
const CERT_DATA_HEADER: usize = 6;
/// Certification data type 6: QE report certification data (v4/v5 outer certification data).
const QE_REPORT_CERTIFICATION_DATA: u16 = 6;
/// Certification data type 5: concatenated PCK certificate chain (PEM: PCK, PCK CA, root CA).
const PCK_CERT_CHAIN: u16 = 5;

/// The Intel SGX Root CA (DER; SHA-256 44a0196b…fab674d3), the same bytes dcap-qvl 0.7.1 pins
/// (`src/TrustedRootCA.der`), published by Intel at
/// <https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.cer>.
pub(super) const INTEL_SGX_ROOT_CA: &[u8] = include_bytes!("intel_sgx_root_ca.der");

fn malformed(bytes: &[u8], reason: String) -> DcapError {
    DcapError::Malformed {
        len: bytes.len(),
        reason,
    }
}

/// Length fields must equal the sizes of what they contain; after the signature data, only zero
/// padding (quotes read from fixed-size buffers carry some).
pub(super) fn check_layout(bytes: &[u8], quote: &Quote) -> Result<(), DcapError> {
    let start = quote.signed_length();
    let declared = super::read::<4>(bytes, start)
        .map(u32::from_le_bytes)
        .ok_or_else(|| malformed(bytes, "no signature data length".into()))?;
    let parts = auth_data_len(&quote.auth_data).map_err(|e| malformed(bytes, e))?;
    if usize::try_from(declared).ok() != Some(parts) {
        let reason = format!("signature data declares {declared} bytes, its parts take {parts}");
        return Err(malformed(bytes, reason));
    }
    let end = start.saturating_add(4).saturating_add(parts);
    let padding = bytes.get(end..).unwrap_or_default();
    if let Some(at) = padding.iter().position(|b| *b != 0) {
        let reason = format!(
            "{} bytes follow the signature data, and byte {} of them is not zero padding",
            padding.len(),
            at
        );
        return Err(malformed(bytes, reason));
    }
    Ok(())
}

fn qe_certification_len(q: &QEReportCertificationData) -> usize {
    QE_REPORT
        + ECDSA_SIGNATURE
        + QE_AUTH_DATA_SIZE
        + q.qe_auth_data.data.len()
        + CERT_DATA_HEADER
        + q.certification_data.body.data.len()
}

/// The size the parsed signature data takes when encoded.
fn auth_data_len(auth: &AuthData) -> Result<usize, String> {
    match auth {
        AuthData::V3(a) => Ok(ECDSA_SIGNATURE
            + ECDSA_KEY
            + QE_REPORT
            + ECDSA_SIGNATURE
            + QE_AUTH_DATA_SIZE
            + a.qe_auth_data.data.len()
            + CERT_DATA_HEADER
            + a.certification_data.body.data.len()),
        AuthData::V4(a) => {
            let outer = &a.certification_data;
            if outer.cert_type != QE_REPORT_CERTIFICATION_DATA {
                return Err(format!(
                    "certification data type {}, where 6 (QE report certification data) is required",
                    outer.cert_type
                ));
            }
            let inner = qe_certification_len(&a.qe_report_data);
            if outer.body.data.len() != inner {
                return Err(format!(
                    "QE report certification data declares {} bytes, its parts take {inner}",
                    outer.body.data.len()
                ));
            }
            Ok(ECDSA_SIGNATURE + ECDSA_KEY + CERT_DATA_HEADER + inner)
        }
    }
}

/// A PCK chain carried in the quote (type 5) must be plain PEM certificates; returns its last
/// certificate (DER), the root the chain claims, which [`super::anchor`] judges. Other types carry
/// no chain (`None`): dcap-qvl then takes it from the collateral, under the Intel root.
pub(super) fn pck_chain_root(quote: &Quote) -> Result<Option<Vec<u8>>, DcapError> {
    if quote.inner_cert_type() != PCK_CERT_CHAIN {
        return Ok(None);
    }
    let chain_error = |reason: String| DcapError::PckChain(reason);
    check_pem(quote.inner_cert_data()).map_err(chain_error)?;
    let chain =
        dcap_qvl::intel::extract_cert_chain(quote).map_err(|e| chain_error(format!("{e:#}")))?;
    match chain.into_iter().last() {
        Some(root) => Ok(Some(root)),
        None => Err(chain_error("no certificate".into())),
    }
}

/// PEM `CERTIFICATE` blocks, lines ending in `\n` or `\r\n`, blank lines between blocks, and the
/// NUL terminator Intel's quoting enclaves append; nothing else.
fn check_pem(body: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(body.strip_suffix(b"\0").unwrap_or(body))
        .map_err(|e| format!("not text: {e}"))?;
    let is_base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    let (mut in_block, mut blocks) = (false, 0);
    for (n, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match (in_block, line) {
            (false, "-----BEGIN CERTIFICATE-----") => in_block = true,
            (false, "") => {}
            (true, "-----END CERTIFICATE-----") => (in_block, blocks) = (false, blocks + 1),
            (true, l) if !l.is_empty() && l.bytes().all(is_base64) => {}
            _ => return Err(format!("PEM line {}: unexpected {line:?}", n + 1)),
        }
    }
    match (in_block, blocks) {
        (true, _) => Err("PEM: unterminated certificate".into()),
        (false, 0) => Err("PEM: no certificate".into()),
        _ => Ok(()),
    }
}
