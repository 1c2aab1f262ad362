//! Turning dcap-qvl's verification errors into [`DcapError`]s that say what expired and when.
//!
//! dcap-qvl decides; this only explains. Its errors are text (anyhow), so they are recognised by
//! their wording, pinned by the tests; anything unrecognised is passed on as
//! [`DcapError::Verification`] with the library's text.

use super::{DcapCollateral, DcapError};
use dcap_qvl::quote::Quote;
use der::Decode;
use x509_cert::crl::CertificateList;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// Explains a dcap-qvl error `text` for `quote` verified against `collateral` at `now` (Unix seconds).
pub(super) fn verification_error(
    text: &str,
    quote: &Quote,
    collateral: &DcapCollateral,
    now: u64,
) -> DcapError {
    let c = collateral.inner();
    let now_text = rfc3339(now);
    let expired = |item: String, at: String| DcapError::Expired {
        item,
        expired_at: at,
        now: now_text.clone(),
    };
    let not_yet = |item: String, from: String| DcapError::NotYetValid {
        item,
        valid_from: from,
        now: now_text.clone(),
    };
    if text.contains("TCBInfo expired") {
        return expired("TCB info".into(), json_date(&c.tcb_info, "nextUpdate"));
    }
    if text.contains("TCBInfo issue date is in the future") {
        return not_yet("TCB info".into(), json_date(&c.tcb_info, "issueDate"));
    }
    if text.contains("QE Identity expired") {
        return expired(
            "QE identity".into(),
            json_date(&c.qe_identity, "nextUpdate"),
        );
    }
    if text.contains("QE Identity issue date is in the future") {
        return not_yet("QE identity".into(), json_date(&c.qe_identity, "issueDate"));
    }
    if let Some(next_update) = webpki_time(text, "CrlExpired", "next_update") {
        return expired(crl_name(collateral, next_update), rfc3339(next_update));
    }
    if let Some(not_after) = webpki_time(text, "CertExpired", "not_after") {
        return expired(
            cert_name(quote, |v| v.not_after, not_after),
            rfc3339(not_after),
        );
    }
    if let Some(not_before) = webpki_time(text, "CertNotValidYet", "not_before") {
        return not_yet(
            cert_name(quote, |v| v.not_before, not_before),
            rfc3339(not_before),
        );
    }
    if text.contains("No matching TCB level found") {
        return DcapError::NoMatchingTcbLevel {
            fmspc: dcap_qvl::intel::quote_fmspc(quote)
                .map(hex::encode)
                .unwrap_or_else(|_| "unknown".into()),
            detail: text.into(),
        };
    }
    DcapError::Verification(text.into())
}

/// A date field of the TCB info or QE identity JSON, as written there.
fn json_date(json: &str, field: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("its {field} (unreadable)"))
}

/// The Unix time in webpki's `Variant { …, field: UnixTime(n) }`, as dcap-qvl passes it on.
pub(super) fn webpki_time(text: &str, variant: &str, field: &str) -> Option<u64> {
    let after = text.split_once(variant)?.1;
    let after = after.split_once(&format!("{field}: UnixTime("))?.1;
    after.split_once(')')?.0.parse().ok()
}

/// Which CRL has this nextUpdate.
fn crl_name(collateral: &DcapCollateral, next_update: u64) -> String {
    let c = collateral.inner();
    let next = |der: &[u8]| {
        CertificateList::from_der(der)
            .ok()
            .and_then(|crl| crl.tbs_cert_list.next_update)
            .map(|t| t.to_unix_duration().as_secs())
    };
    if next(&c.root_ca_crl) == Some(next_update) {
        "the root CA CRL (root_ca_crl)".into()
    } else if next(&c.pck_crl) == Some(next_update) {
        "the PCK CRL (pck_crl)".into()
    } else {
        "a CRL".into()
    }
}

/// Names the certificate of the quote's PCK chain with this validity bound; otherwise it is one of
/// the collateral's issuer chains (whose only certificate outside the PCK chain is Intel's TCB
/// signing certificate).
fn cert_name(quote: &Quote, bound: fn(&Validity) -> Time, value: u64) -> String {
    let chain = dcap_qvl::intel::extract_cert_chain(quote).unwrap_or_default();
    chain
        .iter()
        .filter_map(|der| Certificate::from_der(der).ok())
        .find(|cert| {
            bound(&cert.tbs_certificate.validity)
                .to_unix_duration()
                .as_secs()
                == value
        })
        .map(|cert| {
            format!(
                "certificate {} of the quote's PCK chain",
                cert.tbs_certificate.subject
            )
        })
        .unwrap_or_else(|| "a certificate of the collateral's issuer chains".into())
}

/// RFC 3339 UTC text for Unix seconds.
pub(super) fn rfc3339(secs: u64) -> String {
    crate::timefmt::rfc3339_secs(secs)
}
