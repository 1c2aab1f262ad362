//! Attestation for Cordon: evidence formats → verified [`Claims`]; [`Policy`] → [`Verdict`].
//!
//! Two steps, kept apart on purpose (RATS, RFC 9334):
//! - [`verify`] checks the cryptography of a piece of evidence against endorsements (trust anchors,
//!   vendor certificates) at an explicit time and returns typed claims. It never touches the network or
//!   the clock.
//! - [`appraise`] applies a policy (reference values and rules) to claims and names every failed check.
//!
//! This crate depends on no other Cordon crate and does no I/O.

mod claims;
pub mod dcap;
mod error;
pub mod eventlog;
mod evidence;
#[doc(hidden)]
pub mod fuzzing;
mod hexser;
mod policy;
pub mod sim;
pub mod snp;
mod timefmt;

pub use claims::{Claims, Platform, TcbClaims, EMULATED_ROOT_CLAIM};
pub use error::{EvidenceError, PolicyError};
pub use evidence::{
    decode_evidence, detect, inspect, verify, Endorsements, EvidenceKind, ShippedEndorsements,
    Verifier, EVENT_LOG_CLAIM, EVENT_LOG_ERROR_CLAIM,
};
pub use policy::{appraise, AppraisalFailure, MinTcbFloor, Policy, PolicyDocument, Verdict};
