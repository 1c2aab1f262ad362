//! Intel PCS API v4 (or a PCCS, which serves the same paths): DCAP collateral for a TDX or SGX
//! quote, written as the directory of raw responses that `DcapCollateral::from_dir` reads.
//!
//! | request | file(s) |
//! |---|---|
//! | `GET {pcs}/{tdx,sgx}/certification/v4/tcb?fmspc={FMSPC}` | `tcb_info.json`; `tcb_info_issuer_chain.pem` from `TCB-Info-Issuer-Chain` (or `SGX-TCB-Info-Issuer-Chain`) |
//! | `GET {pcs}/{tdx,sgx}/certification/v4/qe/identity` | `qe_identity.json`; `qe_identity_issuer_chain.pem` from `SGX-Enclave-Identity-Issuer-Chain` |
//! | `GET {pcs}/sgx/certification/v4/pckcrl?ca={processor,platform}&encoding=der` | `pck_crl.der`; `pck_crl_issuer_chain.pem` from `SGX-PCK-CRL-Issuer-Chain` |
//! | root CA CRL ([`INTEL_ROOT_CA_CRL_URL`], or a PCCS's `/sgx/certification/v4/rootcacrl`) | `root_ca_crl.der` (a PCCS answers hex text; it is decoded) |
//!
//! Issuer chains come URL-percent-encoded in the headers; they are decoded and must be PEM
//! certificates and nothing else. FMSPC and CA come from the PCK certificate the quote carries
//! (certification data type 5): its Intel SGX extension (OID 1.2.840.113741.1.13.1, FMSPC
//! 1.2.840.113741.1.13.1.4) and its issuer's name.

use crate::http::{Freshness, Response};
use crate::{
    create_out_dir, trim_base, write_output, Endorsement, FetchError, Fetcher, Source,
    INTEL_PCS_URL,
};
use der::Decode;
use std::path::Path;
use x509_cert::Certificate;

/// The Intel SGX Root CA CRL: the CRL distribution point named in the Intel SGX Root CA
/// certificate.
pub const INTEL_ROOT_CA_CRL_URL: &str =
    "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

const TCB_CHAIN_HEADERS: [&str; 2] = ["TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"];
const QE_CHAIN_HEADER: &str = "SGX-Enclave-Identity-Issuer-Chain";
const PCK_CRL_CHAIN_HEADER: &str = "SGX-PCK-CRL-Issuer-Chain";

/// Decodes `%XX` escapes (as PCS encodes the PEM chains in its headers; `+` is left alone, since
/// base64 uses it). The result must be UTF-8.
pub fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let digit = |j: usize| bytes.get(j).and_then(|&c| (c as char).to_digit(16));
            match (digit(i + 1), digit(i + 2)) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(format!("invalid percent escape at byte {i}")),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| format!("not UTF-8 once decoded: {e}"))
}

/// Checks that `text` is one or more PEM `CERTIFICATE` blocks, each an X.509 certificate, with only
/// whitespace around them; returns their DER.
pub fn parse_issuer_chain(text: &str) -> Result<Vec<Vec<u8>>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let ws: &[char] = &[' ', '\t', '\r', '\n'];
    let mut certs = Vec::new();
    let mut rest = text.trim_start_matches(ws);
    while !rest.is_empty() {
        let at = text.len() - rest.len();
        if !rest.starts_with(BEGIN) {
            return Err(format!("expected {BEGIN} at byte {at}"));
        }
        let end = rest
            .find(END)
            .ok_or_else(|| format!("no {END} after byte {at}"))?
            + END.len();
        let (label, der) = der::pem::decode_vec(&rest.as_bytes()[..end])
            .map_err(|e| format!("certificate {}: PEM: {e}", certs.len() + 1))?;
        if label != "CERTIFICATE" {
            return Err(format!("certificate {}: label {label}", certs.len() + 1));
        }
        Certificate::from_der(&der).map_err(|e| format!("certificate {}: {e}", certs.len() + 1))?;
        certs.push(der);
        rest = rest[end..].trim_start_matches(ws);
    }
    if certs.is_empty() {
        return Err("no certificate".into());
    }
    Ok(certs)
}

/// The PCS base URL: no trailing slash, no `/{sgx,tdx}/certification/v4` suffix.
fn pcs_base(url: &str) -> &str {
    let base = trim_base(url);
    let base = base
        .strip_suffix("/sgx/certification/v4")
        .or_else(|| base.strip_suffix("/tdx/certification/v4"))
        .unwrap_or(base);
    trim_base(base)
}

/// What the quote says about where its collateral lives.
struct QuoteInfo {
    tee: &'static str,
    fmspc: String,
    ca: &'static str,
}

fn quote_info(bytes: &[u8]) -> Result<QuoteInfo, FetchError> {
    let evidence = |reason: String| FetchError::Evidence(reason);
    let quote =
        dcap_qvl::quote::Quote::parse(bytes).map_err(|e| evidence(format!("DCAP quote: {e}")))?;
    let tee = if quote.header.is_sgx() { "sgx" } else { "tdx" };
    if quote.inner_cert_type() != 5 {
        return Err(evidence(format!(
            "the DCAP quote carries certification data type {}, not a PCK certificate chain \
             (type 5): its FMSPC cannot be read, and fetching its PCK certificate (encrypted \
             PPID) is not supported",
            quote.inner_cert_type()
        )));
    }
    let chain = dcap_qvl::intel::extract_cert_chain(&quote)
        .map_err(|e| evidence(format!("the quote's PCK certificate chain: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| evidence("the quote's PCK certificate chain is empty".into()))?;
    let extension = dcap_qvl::intel::parse_pck_extension(leaf)
        .map_err(|e| evidence(format!("the PCK certificate's SGX extension: {e}")))?;
    let cert = Certificate::from_der(leaf)
        .map_err(|e| evidence(format!("the quote's PCK certificate: {e}")))?;
    let issuer = cert.tbs_certificate.issuer.to_string();
    let ca = if issuer.contains("Intel SGX PCK Processor CA") {
        "processor"
    } else if issuer.contains("Intel SGX PCK Platform CA") {
        "platform"
    } else {
        return Err(evidence(format!(
            "the PCK certificate is issued by {issuer}, neither the Intel SGX PCK Processor CA \
             nor the Platform CA"
        )));
    };
    Ok(QuoteInfo {
        tee,
        fmspc: hex::encode_upper(extension.fmspc),
        ca,
    })
}

fn bad_body(r: &Response, reason: impl Into<String>) -> FetchError {
    FetchError::BadBody {
        url: r.url.clone(),
        reason: reason.into(),
    }
}

/// The issuer chain in the first of `names` that the response has, decoded and checked.
fn issuer_chain(r: &Response, names: &[&'static str]) -> Result<String, FetchError> {
    let (name, value) = names
        .iter()
        .find_map(|&n| r.header(n).map(|v| (n, v)))
        .ok_or_else(|| FetchError::MissingHeader {
            url: r.url.clone(),
            header: names.first().copied().unwrap_or_default(),
        })?;
    let bad = |reason: String| FetchError::BadHeader {
        url: r.url.clone(),
        header: name,
        reason,
    };
    let text = percent_decode(value).map_err(bad)?;
    parse_issuer_chain(&text).map_err(bad)?;
    Ok(text)
}

/// A signed JSON body `{"<key>": {…}, "signature": "…"}` (its exact shape is checked when the
/// directory is loaded).
fn signed_json(r: &Response, key: &str) -> Result<Vec<u8>, FetchError> {
    let value: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| bad_body(r, format!("not JSON: {e}")))?;
    if !value.get(key).is_some_and(serde_json::Value::is_object)
        || !value
            .get("signature")
            .is_some_and(serde_json::Value::is_string)
    {
        return Err(bad_body(
            r,
            format!("expected {{\"{key}\": {{…}}, \"signature\": \"…\"}}"),
        ));
    }
    Ok(r.body.clone())
}

fn der_crl(r: &Response, body: &[u8]) -> Result<(), FetchError> {
    x509_cert::crl::CertificateList::from_der(body)
        .map(|_| ())
        .map_err(|e| bad_body(r, format!("not a DER CRL: {e}")))
}

/// The root CA CRL: DER, or (from a PCCS) the hex text of DER.
fn root_crl(r: &Response) -> Result<Vec<u8>, FetchError> {
    let text = r.body.trim_ascii();
    let der = if !text.is_empty() && text.iter().all(u8::is_ascii_hexdigit) {
        hex::decode(text).map_err(|e| bad_body(r, format!("hex: {e}")))?
    } else {
        r.body.clone()
    };
    der_crl(r, &der)?;
    Ok(der)
}

pub(crate) async fn fetch(
    fetcher: &Fetcher,
    quote: &[u8],
    out: &Path,
    sources: &mut Vec<Source>,
) -> Result<Endorsement, FetchError> {
    let QuoteInfo { tee, fmspc, ca } = quote_info(quote)?;
    let base = pcs_base(&fetcher.opts.pcs_url);
    let http = &fetcher.http;

    let tcb_url = format!("{base}/{tee}/certification/v4/tcb?fmspc={fmspc}");
    let (tcb_info, tcb_chain) = http
        .get(&tcb_url, Freshness::MaxAge, sources, |r| {
            Ok((
                signed_json(r, "tcbInfo")?,
                issuer_chain(r, &TCB_CHAIN_HEADERS)?,
            ))
        })
        .await?;
    let qe_url = format!("{base}/{tee}/certification/v4/qe/identity");
    let (qe_identity, qe_chain) = http
        .get(&qe_url, Freshness::MaxAge, sources, |r| {
            Ok((
                signed_json(r, "enclaveIdentity")?,
                issuer_chain(r, &[QE_CHAIN_HEADER])?,
            ))
        })
        .await?;
    let pck_crl_url = format!("{base}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der");
    let (pck_crl, pck_crl_chain) = http
        .get(&pck_crl_url, Freshness::MaxAge, sources, |r| {
            der_crl(r, &r.body)?;
            Ok((r.body.clone(), issuer_chain(r, &[PCK_CRL_CHAIN_HEADER])?))
        })
        .await?;
    let root_url = match &fetcher.opts.root_ca_crl_url {
        Some(url) => url.clone(),
        None if base == INTEL_PCS_URL => INTEL_ROOT_CA_CRL_URL.to_string(),
        None => format!("{base}/sgx/certification/v4/rootcacrl"),
    };
    let root_ca_crl = http
        .get(&root_url, Freshness::MaxAge, sources, root_crl)
        .await?;

    create_out_dir(out)?;
    for (name, bytes) in [
        ("tcb_info.json", tcb_info.as_slice()),
        ("tcb_info_issuer_chain.pem", tcb_chain.as_bytes()),
        ("qe_identity.json", qe_identity.as_slice()),
        ("qe_identity_issuer_chain.pem", qe_chain.as_bytes()),
        ("pck_crl.der", pck_crl.as_slice()),
        ("pck_crl_issuer_chain.pem", pck_crl_chain.as_bytes()),
        ("root_ca_crl.der", root_ca_crl.as_slice()),
    ] {
        write_output(out, name, bytes)?;
    }
    cordon_attest::dcap::DcapCollateral::from_dir(out).map_err(|e| FetchError::Collateral {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Endorsement::Dcap {
        tee,
        fmspc,
        ca,
        dir: out.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%0A+c%2b").unwrap(), "a b\n+c+");
        assert!(percent_decode("%2").is_err());
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn pcs_base_drops_the_api_path() {
        for url in [
            "https://pccs:8081",
            "https://pccs:8081/",
            "https://pccs:8081/sgx/certification/v4",
            "https://pccs:8081/tdx/certification/v4/",
        ] {
            assert_eq!(pcs_base(url), "https://pccs:8081", "{url}");
        }
    }

    #[test]
    fn issuer_chain_must_be_only_certificates() {
        assert!(parse_issuer_chain("").is_err());
        assert!(parse_issuer_chain("hello").is_err());
        assert!(parse_issuer_chain("-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(parse_issuer_chain(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        .is_err());
    }
}
