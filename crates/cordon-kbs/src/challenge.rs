//! Challenge nonces that cost no write to issue.
//!
//! A challenge nonce carries its own expiry and a MAC under a key derived from the KBS's identity
//! seed (which every replica shares, wrapped in the store):
//!
//! ```text
//! nonce = expires_at (u64, big-endian) || random (8 bytes) || HMAC-SHA256(challenge key,
//!         "cordon kbs challenge v1" || expires_at || random)[..16]
//! challenge key = HKDF-SHA256(salt = none, ikm = identity seed, info = CHALLENGE_KEY_INFO)
//! ```
//!
//! Issuing one is therefore a random draw and a MAC, with nothing stored; any replica checks any
//! replica's nonce. What the store keeps is the set of nonces already *spent* (until they
//! expire), written in the same transaction as the audit events of the attestation that spent
//! it; see `KeyStore::commit_attestations` and docs/protocol.md §9.3.
//!
//! The host cannot mint nonces (it does not hold the identity seed), nor move one's expiry (the
//! MAC covers it). Spent nonces are pruned only below a *floor* kept in the store that never
//! goes down, and a nonce that expires below the floor is refused whatever the clock says: a
//! clock set back cannot bring a pruned nonce back.

use hkdf::hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Bytes of a challenge nonce.
pub const CHALLENGE_NONCE_LEN: usize = 32;
/// HKDF info of the challenge key: independent of the HPKE and audit keys from the same seed.
pub const CHALLENGE_KEY_INFO: &[u8] = b"cordon kbs challenge key v1";
const MAC_LABEL: &[u8] = b"cordon kbs challenge v1";
const TAG_LEN: usize = 16;

/// The key that makes and checks challenge nonces. Never printed.
pub struct ChallengeKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeKey(..)")
    }
}

/// Why a presented nonce is not one of this KBS's challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// Not 32 bytes, or its MAC does not verify: never issued by this KBS (or altered).
    Unknown,
    /// Issued here, but expired at `expired_at`.
    Expired { expired_at: u64 },
}

impl ChallengeKey {
    /// The challenge key of the KBS whose identity seed is `seed`.
    pub fn derive(seed: &[u8; 32]) -> ChallengeKey {
        let hk = hkdf::Hkdf::<Sha256>::new(None, seed);
        let mut okm = Zeroizing::new([0u8; 32]);
        // Expand fails only for outputs over 255 × 32 bytes: 32 bytes cannot fail.
        let _ = hk.expand(CHALLENGE_KEY_INFO, okm.as_mut());
        ChallengeKey(okm)
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut tag = [0u8; TAG_LEN];
        // HMAC takes a key of any length: new_from_slice cannot fail.
        if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.0.as_ref()) {
            mac.update(MAC_LABEL);
            mac.update(body);
            tag.copy_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        }
        tag
    }

    /// A fresh nonce that expires at `expires_at` (Unix seconds).
    pub fn issue(&self, expires_at: u64) -> [u8; CHALLENGE_NONCE_LEN] {
        let mut nonce = [0u8; CHALLENGE_NONCE_LEN];
        nonce[..8].copy_from_slice(&expires_at.to_be_bytes());
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut nonce[8..16]);
        let tag = self.tag(&nonce[..16]);
        nonce[16..].copy_from_slice(&tag);
        nonce
    }

    /// The expiry of `nonce` if this key issued it (MAC compared in constant time), without
    /// looking at the clock.
    pub fn expiry(&self, nonce: &[u8]) -> Option<u64> {
        let nonce: &[u8; CHALLENGE_NONCE_LEN] = nonce.try_into().ok()?;
        let tag = self.tag(&nonce[..16]);
        if !bool::from(tag.ct_eq(&nonce[16..])) {
            return None;
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&nonce[..8]);
        Some(u64::from_be_bytes(expiry))
    }
}

/// Checks `nonce` against the KBS's challenge keys (the current identity's, and the retired
/// one's during its overlap) at `now`: its expiry, or why it is refused.
pub fn check(keys: &[&ChallengeKey], nonce: &[u8], now: u64) -> Result<u64, ChallengeRefusal> {
    let expires_at = keys
        .iter()
        .find_map(|k| k.expiry(nonce))
        .ok_or(ChallengeRefusal::Unknown)?;
    if expires_at < now {
        return Err(ChallengeRefusal::Expired {
            expired_at: expires_at,
        });
    }
    Ok(expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_checks_under_its_key_until_it_expires() {
        let key = ChallengeKey::derive(&[7; 32]);
        let n = key.issue(1_000);
        assert_eq!(check(&[&key], &n, 999), Ok(1_000));
        assert_eq!(check(&[&key], &n, 1_000), Ok(1_000));
        assert_eq!(
            check(&[&key], &n, 1_001),
            Err(ChallengeRefusal::Expired { expired_at: 1_000 })
        );
        // Two nonces with one expiry differ.
        assert_ne!(n, key.issue(1_000));
    }

    #[test]
    fn forged_altered_or_foreign_nonces_are_unknown() {
        let key = ChallengeKey::derive(&[7; 32]);
        let other = ChallengeKey::derive(&[8; 32]);
        let n = key.issue(1_000);
        // Another KBS's nonce.
        assert_eq!(
            check(&[&key], &other.issue(1_000), 0),
            Err(ChallengeRefusal::Unknown)
        );
        // The expiry moved later, or any byte changed.
        for i in 0..CHALLENGE_NONCE_LEN {
            let mut m = n;
            m[i] ^= 1;
            assert_eq!(check(&[&key], &m, 0), Err(ChallengeRefusal::Unknown), "{i}");
        }
        // Truncated, extended, empty.
        assert_eq!(check(&[&key], &n[..31], 0), Err(ChallengeRefusal::Unknown));
        assert_eq!(
            check(&[&key], &[n.as_slice(), &[0]].concat(), 0),
            Err(ChallengeRefusal::Unknown)
        );
        assert_eq!(check(&[&key], &[], 0), Err(ChallengeRefusal::Unknown));
        // Accepted under either of two keys (an identity rotation's overlap).
        assert_eq!(check(&[&other, &key], &n, 0), Ok(1_000));
    }

    #[test]
    fn the_key_is_never_printed() {
        let key = ChallengeKey::derive(&[7; 32]);
        assert_eq!(format!("{key:?}"), "ChallengeKey(..)");
    }
}
