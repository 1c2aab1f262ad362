//! Replay refusal for what arrives outside a session's sequence numbers: one-shot encrypted
//! requests and session setups (by their HPKE `enc`, unique to each), attestation nonces, and the
//! nonces of party-signed requests.
//!
//! Each message carries the sender's clock (`sent_at`, or the signed request's time); the runtime
//! refuses one outside `±window` of its own clock, and remembers every identifier it accepted for
//! twice the window, measured on the monotonic clock (the host sets the wall clock: moving it does
//! not make the runtime forget). A replay within the window is refused by the memory, one after it
//! by the time check. The memory is bounded: when full of live entries, new messages are refused
//! (503), never an old entry evicted early, so a flood cannot open a replay gap.

use sha2::{Digest, Sha256};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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

/// The identifiers accepted recently, with when each may be forgotten.
pub struct ReplayGuard {
    window: Duration,
    max: usize,
    /// Most identifiers one sender (see [`ReplayGuard::remember_from`]) may have remembered.
    max_per_sender: usize,
    inner: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<u128>,
    /// In acceptance order, with the sender's key; every entry lives the same time, so expiry
    /// order is this order.
    order: VecDeque<(Instant, u128, Option<u128>)>,
    /// Live identifiers per sender.
    per_sender: std::collections::HashMap<u128, usize>,
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
    pub fn new(window: Duration, max: usize) -> ReplayGuard {
        ReplayGuard::with_sender_limit(window, max, max)
    }

    /// A guard that also bounds what one sender may have remembered at once, so that one key
    /// cannot take the whole memory.
    pub fn with_sender_limit(window: Duration, max: usize, max_per_sender: usize) -> ReplayGuard {
        ReplayGuard {
            window,
            max,
            max_per_sender,
            inner: Mutex::new(Seen::default()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Refuses a time stamp outside `±window` of `now`.
    pub fn check_time(
        &self,
        what: &'static str,
        sent_at: u64,
        now: SystemTime,
    ) -> Result<(), ReplayError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
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

    /// Records `id` (in the namespace `what`) as received at `now`; refuses it if it was
    /// received within the last two windows. Call only after the message authenticated (and was
    /// authorized), so that forgeries and strangers cannot fill the memory or block a real
    /// message's identifier.
    pub fn remember(&self, what: &'static str, id: &[u8], now: Instant) -> Result<(), ReplayError> {
        self.insert(what, None, id, now)
    }

    /// [`ReplayGuard::remember`] for a message from `sender` (its public key), within the
    /// sender's own bound.
    pub fn remember_from(
        &self,
        what: &'static str,
        sender: &[u8],
        id: &[u8],
        now: Instant,
    ) -> Result<(), ReplayError> {
        self.insert(what, Some(key_of("sender", sender)), id, now)
    }

    fn insert(
        &self,
        what: &'static str,
        sender: Option<u128>,
        id: &[u8],
        now: Instant,
    ) -> Result<(), ReplayError> {
        let key = key_of(what, id);
        // A poisoned lock still holds a consistent set.
        let mut seen = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(expires, old, old_sender)) = seen.order.front() {
            if expires > now {
                break;
            }
            seen.order.pop_front();
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
        seen.order.push_back((now + 2 * self.window, key, sender));
        Ok(())
    }

    /// Identifiers remembered now, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ids
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_is_refused_within_two_windows_and_forgotten_after() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        let t0 = Instant::now();
        g.remember("setup", b"a", t0).unwrap();
        assert_eq!(
            g.remember("setup", b"a", t0 + Duration::from_secs(19)),
            Err(ReplayError::Replayed { what: "setup" })
        );
        // Namespaces do not collide.
        g.remember("request", b"a", t0).unwrap();
        // After two windows the identifier is forgotten: by then its time stamp is refused.
        g.remember("setup", b"a", t0 + Duration::from_secs(21))
            .unwrap();
    }

    #[test]
    fn times_outside_the_window_are_refused() {
        let g = ReplayGuard::new(Duration::from_secs(10), 100);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        g.check_time("request", 990, now).unwrap();
        g.check_time("request", 1_010, now).unwrap();
        assert!(matches!(
            g.check_time("request", 989, now),
            Err(ReplayError::OutsideWindow { skew: 11, .. })
        ));
        assert!(g.check_time("request", 1_011, now).is_err());
    }

    #[test]
    fn one_sender_cannot_take_the_whole_memory() {
        let g = ReplayGuard::with_sender_limit(Duration::from_secs(10), 100, 2);
        let t0 = Instant::now();
        g.remember_from("r", b"alice", b"1", t0).unwrap();
        g.remember_from("r", b"alice", b"2", t0).unwrap();
        assert_eq!(
            g.remember_from("r", b"alice", b"3", t0),
            Err(ReplayError::SenderFull { what: "r", max: 2 })
        );
        // Others still have room; alice again once her entries expire.
        g.remember_from("r", b"bob", b"3", t0).unwrap();
        g.remember_from("r", b"alice", b"3", t0 + Duration::from_secs(20))
            .unwrap();
        // A replay is a replay whoever sends it.
        assert_eq!(
            g.remember_from("r", b"bob", b"3", t0 + Duration::from_secs(21)),
            Err(ReplayError::Replayed { what: "r" })
        );
    }

    #[test]
    fn a_full_memory_refuses_new_messages_and_never_forgets_early() {
        let g = ReplayGuard::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        g.remember("x", b"1", t0).unwrap();
        g.remember("x", b"2", t0).unwrap();
        assert_eq!(
            g.remember("x", b"3", t0 + Duration::from_secs(1)),
            Err(ReplayError::Full { what: "x", max: 2 })
        );
        // The refused message did not push an old one out.
        assert!(g.remember("x", b"1", t0 + Duration::from_secs(2)).is_err());
        // Once the old entries expire there is room again.
        g.remember("x", b"3", t0 + Duration::from_secs(20)).unwrap();
        assert_eq!(g.len(), 1);
    }
}
