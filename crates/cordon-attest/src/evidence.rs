//! Evidence detection and the single entry point for verification.

use crate::error::EvidenceError;
use crate::{sim, Claims};
use std::time::SystemTime;

/// The evidence formats Cordon knows, detected from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    /// Cordon's simulated TEE evidence (`CORDNSIM` magic).
    Sim,
}

/// Endorsements: what vouches for the keys that sign evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endorsements {
    /// Ed25519 public keys of simulated "hardware" trusted to sign sim evidence.
    pub sim_trust_anchors: Vec<[u8; 32]>,
}

/// Detects the evidence format from its bytes.
pub fn detect(bytes: &[u8]) -> Result<EvidenceKind, EvidenceError> {
    if bytes.is_empty() {
        return Err(EvidenceError::Empty);
    }
    if bytes.starts_with(sim::MAGIC) {
        return Ok(EvidenceKind::Sim);
    }
    let head = hex::encode(&bytes[..bytes.len().min(8)]);
    Err(EvidenceError::UnknownFormat(format!(
        "{} bytes starting with {head}: not Cordon sim evidence",
        bytes.len()
    )))
}

/// Verifies evidence at time `now` against `endorsements` and returns its claims.
///
/// Sim evidence carries no validity window; `now` is part of the signature of this function because
/// hardware endorsements (certificates, collateral) expire, and verification never reads the clock.
pub fn verify(
    bytes: &[u8],
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<Claims, EvidenceError> {
    let _ = now;
    match detect(bytes)? {
        EvidenceKind::Sim => sim::verify(bytes, &endorsements.sim_trust_anchors),
    }
}
