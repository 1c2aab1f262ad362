//! Endorsements on the wire: what a runtime (or a KBS, for its identity) ships with its evidence so
//! that a verifier without endorsements of its own can check it: an SNP VCEK/VLEK (and its ASK and
//! ARK, where the platform gives them) or DCAP collateral.
//!
//! They are input, never trust: the verifier checks every certificate up to the AMD or Intel root
//! it pins (`cordon_attest::Verifier::verify_shipped`), and prefers its own DCAP collateral. What a
//! hostile host can do with them is limited to sending bytes that fail those checks, so the only
//! rules here are sizes, against a verifier being made to parse megabytes.

use cordon_attest::dcap::DcapCollateral;
use cordon_attest::ShippedEndorsements;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// At most this many certificates are shipped (VCEK, ASK, ARK, and room for a VLEK chain).
pub const MAX_SHIPPED_CERTS: usize = 8;
/// Largest shipped certificate (AMD's ARK, RSA-4096, is about 1.6 KiB).
pub const MAX_SHIPPED_CERT_LEN: usize = 16 * 1024;
/// Largest shipped DCAP collateral (Intel's JSON with CRLs and chains is 10-20 KiB).
pub const MAX_SHIPPED_COLLATERAL_LEN: usize = 1024 * 1024;
/// Largest shipped TDX event log (real CCEL logs are 2-25 KiB).
pub const MAX_SHIPPED_EVENT_LOG_LEN: usize = 1024 * 1024;

/// Endorsements as they travel next to evidence: certificates as base64 DER (or PEM), collateral as
/// base64 of the JSON bundle `DcapCollateral::from_json` reads. Absent fields mean none shipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEndorsements {
    #[serde(
        default,
        with = "crate::b64::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub snp_certs: Vec<Vec<u8>>,
    #[serde(
        default,
        with = "crate::b64::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub dcap_collateral: Option<Vec<u8>>,
    /// TDX: the TD's event log (CCEL data), replayed by the verifier against the quote's RTMRs.
    #[serde(
        default,
        with = "crate::b64::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub tdx_event_log: Option<Vec<u8>>,
}

/// Why shipped endorsements were refused before verification.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EndorsementsError {
    #[error(
        "shipped endorsements: {found} certificates, at most {MAX_SHIPPED_CERTS} are accepted"
    )]
    TooManyCertificates { found: usize },
    #[error("shipped endorsements: certificate {index} is {len} bytes, at most {MAX_SHIPPED_CERT_LEN} are accepted")]
    CertificateTooLarge { index: usize, len: usize },
    #[error("shipped endorsements: DCAP collateral is {len} bytes, at most {MAX_SHIPPED_COLLATERAL_LEN} are accepted")]
    CollateralTooLarge { len: usize },
    #[error("shipped endorsements: DCAP collateral: {0}")]
    Collateral(String),
    #[error("shipped endorsements: the TDX event log is {len} bytes, at most {MAX_SHIPPED_EVENT_LOG_LEN} are accepted")]
    EventLogTooLarge { len: usize },
}

impl WireEndorsements {
    pub fn is_empty(&self) -> bool {
        self.snp_certs.is_empty() && self.dcap_collateral.is_none() && self.tdx_event_log.is_none()
    }

    /// The wire form of `shipped`.
    pub fn from_shipped(shipped: &ShippedEndorsements) -> WireEndorsements {
        WireEndorsements {
            snp_certs: shipped.snp_certs.clone(),
            dcap_collateral: shipped
                .dcap_collateral
                .as_ref()
                .map(DcapCollateral::to_json),
            tdx_event_log: shipped.tdx_event_log.clone(),
        }
    }

    /// Checks the sizes and parses the collateral. Certificates are parsed by the verifier.
    pub fn decode(&self) -> Result<ShippedEndorsements, EndorsementsError> {
        if self.snp_certs.len() > MAX_SHIPPED_CERTS {
            return Err(EndorsementsError::TooManyCertificates {
                found: self.snp_certs.len(),
            });
        }
        if let Some((index, c)) = self
            .snp_certs
            .iter()
            .enumerate()
            .find(|(_, c)| c.len() > MAX_SHIPPED_CERT_LEN)
        {
            return Err(EndorsementsError::CertificateTooLarge {
                index,
                len: c.len(),
            });
        }
        let dcap_collateral = match &self.dcap_collateral {
            None => None,
            Some(json) if json.len() > MAX_SHIPPED_COLLATERAL_LEN => {
                return Err(EndorsementsError::CollateralTooLarge { len: json.len() })
            }
            Some(json) => Some(
                DcapCollateral::from_json(json)
                    .map_err(|e| EndorsementsError::Collateral(e.to_string()))?,
            ),
        };
        if let Some(log) = self
            .tdx_event_log
            .as_ref()
            .filter(|l| l.len() > MAX_SHIPPED_EVENT_LOG_LEN)
        {
            return Err(EndorsementsError::EventLogTooLarge { len: log.len() });
        }
        Ok(ShippedEndorsements {
            snp_certs: self.snp_certs.clone(),
            dcap_collateral,
            tdx_event_log: self.tdx_event_log.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLLATERAL: &[u8] =
        include_bytes!("../../../testdata/attestation/tdx/tdx_quote_collateral.json");

    #[test]
    fn round_trips_and_is_absent_when_empty() {
        let shipped = ShippedEndorsements {
            snp_certs: vec![vec![1, 2, 3]],
            dcap_collateral: Some(DcapCollateral::from_json(COLLATERAL).unwrap()),
            tdx_event_log: Some(vec![4, 5, 6]),
        };
        let wire = WireEndorsements::from_shipped(&shipped);
        let json = serde_json::to_string(&wire).unwrap();
        let back: WireEndorsements = serde_json::from_str(&json).unwrap();
        assert_eq!(back.decode().unwrap(), shipped);
        assert_eq!(
            serde_json::to_string(&WireEndorsements::default()).unwrap(),
            "{}"
        );
        assert!(serde_json::from_str::<WireEndorsements>(r#"{"vcek":"AA=="}"#).is_err());
    }

    #[test]
    fn sizes_and_bad_collateral_are_refused_before_verification() {
        let many = WireEndorsements {
            snp_certs: vec![vec![0]; MAX_SHIPPED_CERTS + 1],
            ..Default::default()
        };
        assert_eq!(
            many.decode(),
            Err(EndorsementsError::TooManyCertificates {
                found: MAX_SHIPPED_CERTS + 1
            })
        );
        let large = WireEndorsements {
            snp_certs: vec![vec![0], vec![0; MAX_SHIPPED_CERT_LEN + 1]],
            ..Default::default()
        };
        assert!(matches!(
            large.decode(),
            Err(EndorsementsError::CertificateTooLarge { index: 1, .. })
        ));
        let huge = WireEndorsements {
            dcap_collateral: Some(vec![b' '; MAX_SHIPPED_COLLATERAL_LEN + 1]),
            ..Default::default()
        };
        assert!(matches!(
            huge.decode(),
            Err(EndorsementsError::CollateralTooLarge { .. })
        ));
        let truncated = WireEndorsements {
            dcap_collateral: Some(COLLATERAL[..COLLATERAL.len() / 2].to_vec()),
            ..Default::default()
        };
        assert!(matches!(
            truncated.decode(),
            Err(EndorsementsError::Collateral(_))
        ));
        let long_log = WireEndorsements {
            tdx_event_log: Some(vec![0; MAX_SHIPPED_EVENT_LOG_LEN + 1]),
            ..Default::default()
        };
        assert!(matches!(
            long_log.decode(),
            Err(EndorsementsError::EventLogTooLarge { .. })
        ));
    }
}
