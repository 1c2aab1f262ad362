//! Cordon's wire protocol, shared by client, runtime and key broker. Holds no server state.
//!
//! - [`auth`]: signed HTTP requests (signer, audience, time, nonce), for parties, training
//!   runtimes and the KBS administrator.
//! - [`binding`]: how report_data binds a verifier's nonce and every public key the runtime uses.
//! - [`channel`]: the HPKE (RFC 9180) encrypted request/response channel, in the manner of Oblivious
//!   HTTP (RFC 9458), and single-shot HPKE sealing of keys.
//! - [`session`]: session mode of the channel: one HPKE setup, then AEAD per message with
//!   sequence numbers, for high-rate streams.
//! - [`job`]: collaborative training jobs: spec and hash, approvals with expiry, the
//!   report_data of a job, output sealing and signed receipts.
//! - [`merkle`]: the RFC 9162 Merkle Tree Hash, inclusion and consistency proofs.
//! - [`checkpoint`]: signed checkpoints (size, Merkle root) of the KBS audit log, verified offline.
//! - [`kbs`], [`runtime`], [`oip`]: JSON message types.
//!
//! `docs/protocol.md` describes every message and binding byte for byte.

pub mod auth;
mod b64;
pub mod binding;
pub mod channel;
pub mod checkpoint;
pub mod endorsements;
#[doc(hidden)]
pub mod fuzzing;
pub mod job;
pub mod kbs;
pub mod merkle;
pub mod oip;
pub mod runtime;
pub mod session;

pub use binding::{report_data, ModelBinding, RuntimeKeys};
pub use channel::{ChannelError, ClientResponseContext, ServerResponseContext, ServiceKeyPair};
pub use endorsements::{EndorsementsError, WireEndorsements};
