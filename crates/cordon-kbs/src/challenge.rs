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
//! MAC covers it). A nonce whose expiry lies further ahead than this KBS issues (one issued while
//! the clock was set ahead) is refused, so no nonce outlives its TTL by more than
//! [`MAX_CLOCK_SKEW`] on the clock that checks it. The retired identity's key (after a rotation)
//! checks nonces only until the end of its overlap. When spent nonces are pruned their expiries
//! are kept as ranges ([`merge_pruned`]) that are never deleted, and a nonce whose expiry falls in
//! one is refused whatever the clock says: a clock set back cannot bring a pruned nonce back.

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

/// How far replicas' clocks may disagree: a nonce may expire up to this much later than its TTL
/// from now, as another replica's clock issued it.
pub const MAX_CLOCK_SKEW: u64 = 60;

/// Why a presented nonce is not one of this KBS's challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeRefusal {
    /// Not 32 bytes, or its MAC does not verify (never issued by this KBS, or altered), or MACed
    /// under the retired identity's key after its overlap.
    Unknown,
    /// Issued here, but expired at `expired_at`.
    Expired { expired_at: u64 },
    /// Expires further ahead than a nonce issued now could (`latest`): issued while the clock
    /// was ahead, or minted.
    TooFarAhead { expires_at: u64, latest: u64 },
}

/// The keys a KBS checks challenge nonces with, and the TTL it issues them with.
#[derive(Debug)]
pub struct ChallengeKeys {
    current: ChallengeKey,
    /// The retired identity's key, and the end of its overlap: its nonces were issued before the
    /// rotation.
    retired: Option<(ChallengeKey, u64)>,
    ttl: u64,
}

impl ChallengeKeys {
    pub fn new(current: ChallengeKey, retired: Option<(ChallengeKey, u64)>, ttl: u64) -> Self {
        ChallengeKeys {
            current,
            retired,
            ttl,
        }
    }

    /// A fresh nonce issued at `now`, and its expiry.
    pub fn issue(&self, now: u64) -> ([u8; CHALLENGE_NONCE_LEN], u64) {
        let expires_at = now.saturating_add(self.ttl);
        (self.current.issue(expires_at), expires_at)
    }

    /// Checks `nonce` at `now`: its expiry, or why it is refused.
    pub fn check(&self, nonce: &[u8], now: u64) -> Result<u64, ChallengeRefusal> {
        let expires_at = self
            .current
            .expiry(nonce)
            .or_else(|| match &self.retired {
                Some((key, until)) if now <= *until => key.expiry(nonce),
                _ => None,
            })
            .ok_or(ChallengeRefusal::Unknown)?;
        if expires_at < now {
            return Err(ChallengeRefusal::Expired {
                expired_at: expires_at,
            });
        }
        let latest = now.saturating_add(self.ttl).saturating_add(MAX_CLOCK_SKEW);
        if expires_at > latest {
            return Err(ChallengeRefusal::TooFarAhead { expires_at, latest });
        }
        Ok(expires_at)
    }
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

/// Spent nonces whose expiries lie within this many seconds of each other are forgotten as one
/// range ([`merge_pruned`]). A clock stepped further ahead than this and back leaves the
/// expiries spent meanwhile in a range of their own, apart from the present's: fresh challenges
/// still pass. A smaller step can refuse fresh challenges for at most about this long.
pub const PRUNED_RANGE_GAP: u64 = 3_600;

/// The ranges of forgotten expiries after `pruned` (the expiries of the spent nonces just
/// deleted, in any order) are added to `existing` (the stored ranges near them, disjoint): the
/// ranges to store in their place. Expiries within [`PRUNED_RANGE_GAP`] of each other, or of a
/// range, join it; every pruned expiry ends up inside a range, so a nonce whose expiry falls in
/// none was never pruned.
pub fn merge_pruned(existing: &[(u64, u64)], pruned: &[u64]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = existing.to_vec();
    all.extend(pruned.iter().map(|&e| (e, e)));
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in all {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(PRUNED_RANGE_GAP) => {
                last.1 = last.1.max(hi);
            }
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8, retired: Option<(u8, u64)>) -> ChallengeKeys {
        ChallengeKeys::new(
            ChallengeKey::derive(&[seed; 32]),
            retired.map(|(s, until)| (ChallengeKey::derive(&[s; 32]), until)),
            60,
        )
    }

    #[test]
    fn a_nonce_checks_under_its_key_until_it_expires() {
        let keys = keys(7, None);
        let (n, expires_at) = keys.issue(940);
        assert_eq!(expires_at, 1_000);
        assert_eq!(keys.check(&n, 999), Ok(1_000));
        assert_eq!(keys.check(&n, 1_000), Ok(1_000));
        assert_eq!(
            keys.check(&n, 1_001),
            Err(ChallengeRefusal::Expired { expired_at: 1_000 })
        );
        // Two nonces with one expiry differ.
        assert_ne!(n, keys.issue(940).0);
    }

    /// A nonce issued while the clock was ahead (or minted with a far expiry) is refused once
    /// the clock is right: no nonce outlives its TTL by more than the skew allowed.
    #[test]
    fn a_nonce_from_a_clock_set_ahead_is_refused() {
        let keys = keys(7, None);
        let (n, expires_at) = keys.issue(10_000);
        assert_eq!(keys.check(&n, 10_000 - MAX_CLOCK_SKEW), Ok(expires_at));
        assert_eq!(
            keys.check(&n, 10_000 - MAX_CLOCK_SKEW - 1),
            Err(ChallengeRefusal::TooFarAhead {
                expires_at,
                latest: expires_at - 1
            })
        );
        let far = ChallengeKey::derive(&[7; 32]).issue(u64::MAX);
        assert!(matches!(
            keys.check(&far, 0),
            Err(ChallengeRefusal::TooFarAhead { .. })
        ));
    }

    /// The retired identity's key checks nonces until the end of its overlap, and no longer.
    #[test]
    fn the_retired_key_checks_nonces_only_during_its_overlap() {
        let keys = keys(7, Some((8, 5_000)));
        let old = ChallengeKey::derive(&[8; 32]).issue(5_030);
        assert_eq!(keys.check(&old, 5_000), Ok(5_030));
        assert_eq!(keys.check(&old, 5_001), Err(ChallengeRefusal::Unknown));
        // The current key is not bound by the overlap.
        let (n, e) = keys.issue(6_000);
        assert_eq!(keys.check(&n, 6_000), Ok(e));
    }

    #[test]
    fn forged_altered_or_foreign_nonces_are_unknown() {
        let keys = keys(7, None);
        let other = ChallengeKey::derive(&[8; 32]);
        let (n, _) = keys.issue(940);
        // Another KBS's nonce.
        assert_eq!(
            keys.check(&other.issue(1_000), 940),
            Err(ChallengeRefusal::Unknown)
        );
        // The expiry moved later, or any byte changed.
        for i in 0..CHALLENGE_NONCE_LEN {
            let mut m = n;
            m[i] ^= 1;
            assert_eq!(keys.check(&m, 940), Err(ChallengeRefusal::Unknown), "{i}");
        }
        // Truncated, extended, empty.
        assert_eq!(keys.check(&n[..31], 940), Err(ChallengeRefusal::Unknown));
        assert_eq!(
            keys.check(&[n.as_slice(), &[0]].concat(), 940),
            Err(ChallengeRefusal::Unknown)
        );
        assert_eq!(keys.check(&[], 940), Err(ChallengeRefusal::Unknown));
    }

    #[test]
    fn pruned_expiries_join_near_ranges_and_stay_apart_from_far_ones() {
        // The present's range grows with each prune.
        let r = merge_pruned(&[(1_000, 2_000)], &[2_100, 2_050, 2_300]);
        assert_eq!(r, [(1_000, 2_300)]);
        // Expiries spent while the clock was a day ahead: a range of their own.
        let day = 86_400;
        let r = merge_pruned(&[(1_000, 2_300)], &[2_400 + day, 2_500 + day, 2_360]);
        assert_eq!(r, [(1_000, 2_360), (2_400 + day, 2_500 + day)]);
        // A gap filled joins two ranges; every pruned expiry is covered.
        let r = merge_pruned(&[(0, 10), (5_000, 6_000)], &[3_000]);
        assert_eq!(r, [(0, 6_000)]);
        let r = merge_pruned(&[], &[7, 7, 3]);
        assert_eq!(r, [(3, 7)]);
        assert_eq!(merge_pruned(&[(1, 2)], &[]), [(1, 2)]);
        assert_eq!(
            merge_pruned(&[], &[u64::MAX, 0]),
            [(0, 0), (u64::MAX, u64::MAX)]
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let key = ChallengeKey::derive(&[7; 32]);
        assert_eq!(format!("{key:?}"), "ChallengeKey(..)");
    }
}
