//! Cordon's wire protocol, shared by client, runtime and key broker. Holds no server state.
//!
//! - [`auth`]: signed HTTP requests (signer, audience, time, nonce), for parties, training
//!   runtimes and the KBS administrator.
//! - [`binding`]: how report_data binds a verifier's nonce and every public key the runtime uses.
//! - [`channel`]: the HPKE (RFC 9180) encrypted request/response channel, in the manner of Oblivious
//!   HTTP (RFC 9458), and single-shot HPKE sealing of keys.
//! - [`session`]: session mode of the channel: one HPKE setup, then AEAD per message with
//!   sequence numbers, for high-rate streams.
//! - [`stream`]: sealed answer streams (a chat completion token by token): frames in order, the
//!   last marked, so cuts, reordering and repeats are detected.
//! - [`job`]: collaborative training jobs: spec and hash, approvals with expiry, the
//!   report_data of a job, output sealing and signed receipts.
//! - [`merkle`]: the RFC 9162 Merkle Tree Hash, inclusion and consistency proofs.
//! - [`checkpoint`]: signed checkpoints (size, Merkle root) of the KBS audit log, verified offline.
//! - [`kbs`], [`runtime`], [`oip`], [`openai`]: JSON message types.
//!
//! `docs/protocol.md` describes every message and binding byte for byte.

mod aead;
pub mod auth;
mod b64;
pub mod binding;
pub mod channel;
pub mod checkpoint;
pub mod endorsements;
#[doc(hidden)]
pub mod fuzzing;
mod hpke_base;
pub mod job;
pub mod kbs;
pub mod merkle;
pub mod oip;
pub mod oip_binary;
pub mod oip_json;
pub mod openai;
pub mod runtime;
pub mod session;
pub mod stream;

pub use binding::{report_data, ModelBinding, RuntimeKeys};

/// A time in Unix seconds (as the wire types carry it) as RFC 3339 in UTC, e.g.
/// `2025-06-01T12:00:00Z`: how every time is shown to people. A value beyond year 9999 is shown
/// as the number it is.
pub fn rfc3339(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix_secs} (Unix seconds)"))
}
pub use channel::{ChannelError, ClientResponseContext, ServerResponseContext, ServiceKeyPair};
pub use endorsements::{EndorsementsError, WireEndorsements};

#[cfg(test)]
mod time_tests {
    #[test]
    fn times_are_shown_as_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_748_779_200), "2025-06-01T12:00:00Z");
        assert_eq!(
            super::rfc3339(u64::MAX),
            "18446744073709551615 (Unix seconds)"
        );
    }
}
