//! Which root a DCAP quote is verified under: the Intel SGX Root CA, or (tests only) an emulated
//! root that the endorsements name by the SHA-256 of its DER ([`crate::Endorsements::emulated_roots`]).
//!
//! The quote's PCK chain (certification data type 5) names the root it claims as its last
//! certificate. Intel's root is the production anchor, byte for byte. Any other root is refused
//! unless its fingerprint is listed; then dcap-qvl runs every one of its checks with that root as
//! the trust anchor (`QuoteVerifier::new_with_config`), and the claims say the evidence is not
//! hardware-backed. The collateral's own chains (TCB info and QE identity signing chains, the PCK
//! CRL issuer chain) must end at the same root, so that a collateral from one PKI never vouches
//! for a quote from another.

use super::structure::{pck_chain_root, INTEL_SGX_ROOT_CA};
use super::{DcapCollateral, DcapError};
use dcap_qvl::quote::Quote;
use sha2::{Digest, Sha256};

/// The root a quote is verified under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Anchor {
    /// The Intel SGX Root CA that dcap-qvl pins.
    Intel,
    /// A test root named by the endorsements: its DER and the SHA-256 of it.
    Emulated { der: Vec<u8>, fingerprint: [u8; 32] },
}

impl Anchor {
    /// The root certificate (DER).
    pub(super) fn der(&self) -> &[u8] {
        match self {
            Anchor::Intel => INTEL_SGX_ROOT_CA,
            Anchor::Emulated { der, .. } => der,
        }
    }

    /// SHA-256 of the root's DER.
    pub(super) fn fingerprint(&self) -> [u8; 32] {
        match self {
            Anchor::Intel => Sha256::digest(INTEL_SGX_ROOT_CA).into(),
            Anchor::Emulated { fingerprint, .. } => *fingerprint,
        }
    }

    /// Whether a call naming `emulated_roots` accepts this root: Intel's always, an emulated
    /// root only when named (as [`anchor`] decides).
    pub(super) fn accepted_with(&self, emulated_roots: &[[u8; 32]]) -> bool {
        match self {
            Anchor::Intel => true,
            Anchor::Emulated { fingerprint, .. } => emulated_roots.contains(fingerprint),
        }
    }

    pub(super) fn is_emulated(&self) -> bool {
        matches!(self, Anchor::Emulated { .. })
    }
}

/// The anchor for `quote`: Intel's root when its chain ends there (or it carries no chain), an
/// emulated root when the chain ends at one whose fingerprint is in `emulated_roots`; any other
/// root is refused, naming its fingerprint.
pub(super) fn anchor(quote: &Quote, emulated_roots: &[[u8; 32]]) -> Result<Anchor, DcapError> {
    let Some(root) = pck_chain_root(quote)? else {
        return Ok(Anchor::Intel);
    };
    if root == INTEL_SGX_ROOT_CA {
        return Ok(Anchor::Intel);
    }
    let fingerprint: [u8; 32] = Sha256::digest(&root).into();
    if emulated_roots.contains(&fingerprint) {
        return Ok(Anchor::Emulated {
            der: root,
            fingerprint,
        });
    }
    Err(DcapError::UnknownRoot {
        fingerprint: hex::encode(fingerprint),
    })
}

/// The collateral's issuer chains (PEM, root last) must each end at `anchor`'s root.
pub(super) fn check_collateral_roots(
    collateral: &DcapCollateral,
    anchor: &Anchor,
) -> Result<(), DcapError> {
    for (field, last) in &collateral.facts().chain_roots {
        let last = last.clone().map_err(|reason| DcapError::CollateralField {
            field: (*field).into(),
            reason,
        })?;
        let found = match &last {
            Some(cert) if cert.as_slice() == anchor.der() => continue,
            Some(cert) => hex::encode(Sha256::digest(cert)),
            None => "no certificate".into(),
        };
        return Err(DcapError::CollateralRoot {
            field: (*field).into(),
            found,
            expected: hex::encode(anchor.fingerprint()),
        });
    }
    Ok(())
}

/// The DER of the last `CERTIFICATE` block of a PEM chain (`None` when it has none).
pub(super) fn last_pem_certificate(chain: &str) -> Result<Option<Vec<u8>>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let Some(end) = chain.rfind(END) else {
        return Ok(None);
    };
    let block_end = end + END.len();
    let begin = chain
        .get(..end)
        .and_then(|head| head.rfind("-----BEGIN CERTIFICATE-----"))
        .ok_or_else(|| "a certificate's END line has no BEGIN line".to_string())?;
    let block = chain
        .get(begin..block_end)
        .ok_or_else(|| "certificate block out of range".to_string())?;
    let (label, der) =
        der::pem::decode_vec(block.as_bytes()).map_err(|e| format!("bad PEM block: {e}"))?;
    if label != "CERTIFICATE" {
        return Err(format!("PEM block labelled {label:?}, not CERTIFICATE"));
    }
    Ok(Some(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TDX_COLLATERAL: &[u8] =
        include_bytes!("../../../../testdata/attestation/tdx/tdx_quote_collateral.json");

    fn pem(der: &[u8]) -> String {
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der).unwrap()
    }

    #[test]
    fn intel_collateral_chains_end_at_the_intel_root_only() {
        let c = DcapCollateral::from_json(TDX_COLLATERAL).unwrap();
        assert_eq!(check_collateral_roots(&c, &Anchor::Intel), Ok(()));
        let other = Anchor::Emulated {
            der: b"another root".to_vec(),
            fingerprint: [9; 32],
        };
        let err = check_collateral_roots(&c, &other).unwrap_err();
        let intel: [u8; 32] = Sha256::digest(INTEL_SGX_ROOT_CA).into();
        assert_eq!(
            err,
            DcapError::CollateralRoot {
                field: "tcb_info_issuer_chain".into(),
                found: hex::encode(intel),
                expected: hex::encode([9; 32]),
            }
        );
        assert_eq!(Anchor::Intel.fingerprint(), intel);
        assert!(!Anchor::Intel.is_emulated() && other.is_emulated());
    }

    #[test]
    fn last_pem_certificate_takes_the_last_block_and_names_bad_ones() {
        assert_eq!(last_pem_certificate(""), Ok(None));
        assert_eq!(last_pem_certificate("no pem here"), Ok(None));
        let two = format!("{}{}", pem(b"first"), pem(b"second"));
        assert_eq!(last_pem_certificate(&two), Ok(Some(b"second".to_vec())));
        let err = last_pem_certificate("-----END CERTIFICATE-----").unwrap_err();
        assert!(err.contains("no BEGIN"), "{err}");
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(last_pem_certificate(broken)
            .unwrap_err()
            .contains("bad PEM"));
        // Truncations and odd bytes never panic.
        for end in 0..two.len() {
            if let Some(prefix) = two.get(..end) {
                let _ = last_pem_certificate(prefix);
            }
        }
    }
}
