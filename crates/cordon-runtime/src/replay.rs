//! Replay refusal for what arrives outside a session's sequence numbers: one-shot encrypted
//! requests and session setups (by their HPKE `enc`, unique to each), and the nonces of
//! party-signed requests.
//!
//! Each message carries the sender's clock (`sent_at`, or the signed request's time); the runtime
//! refuses one outside `±window` of its own clock, and remembers every identifier it accepted
//! until that time stamp has left the window (`sent_at + window`, plus a second for rounding),
//! which is also when a replay would be refused by the time check. The runtime's clock is the
//! wall clock read once at boot and advanced by the monotonic clock
//! ([`crate::RuntimeState::now`]): the host cannot move it back to make a forgotten time stamp
//! fresh again. Remembering each message only as long as its own time stamp is fresh (not a fixed
//! two windows) lets the memory sustain `max / (window + 1)` messages per second: about 8,700 for
//! the defaults (2^20, 120 s). The memory is bounded: when full of live entries, new messages are
//! refused (503), never an old entry evicted early, so a flood cannot open a replay gap.

use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Why a message was refused. Safe to send in clear: it names no content.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplayError {
    #[error("{what} was already received: replayed message")]
    Replayed { what: &'static str },
    #[error("{what} is stamped {sent_at}, {skew}s from the runtime's clock ({now}); at most {window}s are accepted (check the clocks)")]
    OutsideWindow {
        what: &'static str,
        sent_at: u64,
        now: u64,
        skew: u64,
        window: u64,
    },
    #[error("{what}: {max} recent messages are remembered already; retry shortly")]
    Full { what: &'static str, max: usize },
    #[error("{what}: this sender has {max} recent messages remembered already; retry shortly")]
    SenderFull { what: &'static str, max: usize },
}

impl ReplayError {
    /// The HTTP status of the refusal: 409 replayed, 400 stale, 503 while the memory is full.
    pub(crate) fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ReplayError::Replayed { .. } => StatusCode::CONFLICT,
            ReplayError::OutsideWindow { .. } => StatusCode::BAD_REQUEST,
            ReplayError::Full { .. } | ReplayError::SenderFull { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// The identifiers accepted recently, with when each may be forgotten.
pub(crate) struct ReplayGuard {
    window: Duration,
    max: usize,
    /// Most identifiers one sender (see [`ReplayGuard::accept_from`]) may have remembered.
    max_per_sender: usize,
    inner: Mutex<Seen>,
}

/// One remembered identifier: when it may be forgotten (runtime clock, Unix seconds), its key,
/// and its sender's.
type Entry = (u64, u128, Option<u128>);

#[derive(Default)]
struct Seen {
    ids: HashSet<u128>,
    /// Soonest expiry first.
    expiry: BinaryHeap<Reverse<Entry>>,
    /// Live identifiers per sender.
    per_sender: HashMap<u128, usize>,
}

fn key_of(what: &str, bytes: &[u8]) -> u128 {
    let mut h = Sha256::new();
    h.update(what.as_bytes());
    h.update([0]);
    h.update(bytes);
    let digest = h.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(key)
}

impl ReplayGuard {
    /// A guard accepting times within `±window` and remembering at most `max` identifiers.
    pub(crate) fn new(window: Duration, max: usize) -> ReplayGuard {
        ReplayGuard::with_sender_limit(window, max, max)
    }

    /// A guard that also bounds what one sender may have remembered at once, so that one key
    /// cannot take the whole memory.
    pub(crate) fn with_sender_limit(
        window: Duration,
        max: usize,
        max_per_sender: usize,
    ) -> ReplayGuard {
        ReplayGuard {
            window,
            max,
            max_per_sender,
            inner: Mutex::new(Seen::default()),
        }
    }

    /// Refuses a time stamp outside `±window` of `now`.
    pub(crate) fn check_time(
        &self,
        what: &'static str,
        sent_at: u64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        let now = cordon_proto::auth::unix(now);
        let skew = now.abs_diff(sent_at);
        if skew > self.window.as_secs() {
            return Err(ReplayError::OutsideWindow {
                what,
                sent_at,
                now,
                skew,
                window: self.window.as_secs(),
            });
        }
        Ok(())
    }

    /// Accepts message `id` (in the namespace `what`) stamped `sent_at`, at the runtime's time
    /// `now`: refuses it when the stamp is outside the window or the identifier was accepted
    /// while that stamp is still fresh; else remembers it. Anyone who can encrypt to the runtime
    /// can reach this, so the memory is bounded (and a full memory refuses, never forgets).
    pub(crate) fn accept(
        &self,
        what: &'static str,
        id: &[u8],
        sent_at: u64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        self.insert(what, None, id, sent_at, now)
    }

    /// [`ReplayGuard::accept`] for a message from `sender` (whose share it takes), within the
    /// sender's own bound. Call it once the sender is authenticated and authorized, so that
    /// strangers take no share.
    pub(crate) fn accept_from(
        &self,
        what: &'static str,
        sender: &[u8],
        id: &[u8],
        sent_at: u64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        self.insert(what, Some(key_of("sender", sender)), id, sent_at, now)
    }

    fn insert(
        &self,
        what: &'static str,
        sender: Option<u128>,
        id: &[u8],
        sent_at: u64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        self.check_time(what, sent_at, now)?;
        let now = cordon_proto::auth::unix(now);
        let key = key_of(what, id);
        // A poisoned lock still holds a consistent set.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let seen = &mut *guard;
        while let Some(&Reverse((expires, old, old_sender))) = seen.expiry.peek() {
            if expires > now {
                break;
            }
            seen.expiry.pop();
            seen.ids.remove(&old);
            if let Some(o) = old_sender {
                if let std::collections::hash_map::Entry::Occupied(mut e) = seen.per_sender.entry(o)
                {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
            }
        }
        if seen.ids.contains(&key) {
            return Err(ReplayError::Replayed { what });
        }
        if seen.ids.len() >= self.max {
            return Err(ReplayError::Full {
                what,
                max: self.max,
            });
        }
        if let Some(o) = sender {
            let n = seen.per_sender.entry(o).or_insert(0);
            if *n >= self.max_per_sender {
                return Err(ReplayError::SenderFull {
                    what,
                    max: self.max_per_sender,
                });
            }
            *n += 1;
        }
        seen.ids.insert(key);
        // Until the stamp leaves the window: `check_time` accepts a skew of exactly `window`.
        let expires = sent_at
            .saturating_add(self.window.as_secs())
            .saturating_add(1);
        seen.expiry.push(Reverse((expires, key, sender)));
        Ok(())
    }

    /// Identifiers remembered now, expired ones not yet swept included.
    pub(crate) fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn an_identifier_is_refused_while_its_stamp_is_fresh_and_forgotten_after() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        g.accept("setup", b"a", 1_000, at(1_000)).unwrap();
        assert_eq!(
            g.accept("setup", b"a", 1_000, at(1_010)),
            Err(ReplayError::Replayed { what: "setup" })
        );
        // Namespaces do not collide.
        g.accept("request", b"a", 1_000, at(1_000)).unwrap();
        // Once the stamp is out of the window the time check refuses it, and the memory has let
        // it go: well within two windows.
        assert!(matches!(
            g.accept("setup", b"a", 1_000, at(1_011)),
            Err(ReplayError::OutsideWindow { skew: 11, .. })
        ));
        // A stamp from the future is remembered until it, too, has left the window.
        g.accept("setup", b"f", 1_020, at(1_011)).unwrap();
        assert_eq!(
            g.len(),
            1,
            "the identifiers stamped 1,000 are forgotten at 1,011"
        );
        assert_eq!(
            g.accept("setup", b"f", 1_020, at(1_030)),
            Err(ReplayError::Replayed { what: "setup" })
        );
    }

    #[test]
    fn times_outside_the_window_are_refused() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        let now = at(1_000);
        g.check_time("request", 990, now).unwrap();
        g.check_time("request", 1_010, now).unwrap();
        assert!(matches!(
            g.check_time("request", 989, now),
            Err(ReplayError::OutsideWindow { skew: 11, .. })
        ));
        assert!(g.check_time("request", 1_011, now).is_err());
        // And nothing stale is remembered.
        assert!(g.accept("request", b"x", 989, now).is_err());
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn one_sender_cannot_take_the_whole_memory() {
        let g = ReplayGuard::with_sender_limit(Duration::from_secs(10), 100, 2);
        g.accept_from("r", b"alice", b"1", 1_000, at(1_000))
            .unwrap();
        g.accept_from("r", b"alice", b"2", 1_000, at(1_000))
            .unwrap();
        assert_eq!(
            g.accept_from("r", b"alice", b"3", 1_000, at(1_000)),
            Err(ReplayError::SenderFull { what: "r", max: 2 })
        );
        // Others still have room; alice again once her entries expire.
        g.accept_from("r", b"bob", b"3", 1_000, at(1_000)).unwrap();
        g.accept_from("r", b"alice", b"3", 1_011, at(1_011))
            .unwrap();
        // A replay is a replay whoever sends it.
        assert_eq!(
            g.accept_from("r", b"bob", b"3", 1_011, at(1_011)),
            Err(ReplayError::Replayed { what: "r" })
        );
    }

    #[test]
    fn a_full_memory_refuses_new_messages_and_never_forgets_early() {
        let g = ReplayGuard::new(Duration::from_secs(10), 2);
        g.accept("x", b"1", 1_000, at(1_000)).unwrap();
        g.accept("x", b"2", 1_000, at(1_000)).unwrap();
        assert_eq!(
            g.accept("x", b"3", 1_001, at(1_001)),
            Err(ReplayError::Full { what: "x", max: 2 })
        );
        // The refused message did not push an old one out.
        assert!(g.accept("x", b"1", 1_000, at(1_002)).is_err());
        // Once the old entries expire there is room again.
        g.accept("x", b"3", 1_011, at(1_011)).unwrap();
        assert_eq!(g.len(), 1);
    }

    /// Entries stamped in any order expire by their own stamps, not in arrival order.
    #[test]
    fn entries_expire_by_their_own_stamps() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        g.accept("x", b"late", 1_009, at(1_000)).unwrap();
        g.accept("x", b"early", 991, at(1_000)).unwrap();
        // At 1,002 the early stamp (991) is out of the window and forgotten; the late one is not.
        g.accept("x", b"probe", 1_002, at(1_002)).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.accept("x", b"late", 1_009, at(1_019)),
            Err(ReplayError::Replayed { what: "x" })
        );
    }

    /// The sustained rate a memory of `max` identifiers admits is `max / (window + 1)` per
    /// second: at that rate, steady state, nothing is refused.
    #[test]
    fn a_memory_sustains_max_over_window_messages_per_second() {
        let g = ReplayGuard::new(Duration::from_secs(10), 110);
        let mut n = 0u32;
        for t in 1_000..1_100u64 {
            for _ in 0..10 {
                n += 1;
                g.accept("x", &n.to_be_bytes(), t, at(t)).unwrap();
            }
        }
        // Twice the rate fills it.
        let g = ReplayGuard::new(Duration::from_secs(10), 110);
        let refused = (1_000..1_100u64)
            .flat_map(|t| (0..20u32).map(move |i| (t, i)))
            .filter(|&(t, i)| {
                g.accept("x", &(t * 100 + u64::from(i)).to_be_bytes(), t, at(t))
                    .is_err()
            })
            .count();
        assert!(refused > 900, "{refused}");
    }
}
