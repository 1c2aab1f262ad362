//! The runtime's table of open sessions (session mode of the channel, `cordon_proto::session`).
//!
//! Bounded three ways: a maximum number of sessions (expired ones are swept when the table is
//! full; then a new session is refused, never an old one evicted, so a flood of setups cannot
//! cut live streams), a lifetime, and a maximum number of messages per session.

use cordon_proto::session::{SessionGrant, SessionId, SessionKeys, SESSION_ID_LEN};
use rand::RngCore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Limits of the session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    pub max_sessions: usize,
    pub lifetime: Duration,
    /// Highest sequence number accepted in one session.
    pub max_messages: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: 4096,
            lifetime: Duration::from_secs(600),
            max_messages: 1 << 32,
        }
    }
}

/// Why a session message or setup was refused. The messages are safe to send in clear: they name
/// no key material and no request content.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("session table is full ({max} sessions); retry later")]
    Full { max: usize },
    #[error("unknown session (never opened, expired and swept, or the runtime restarted): open a new session")]
    Unknown,
    #[error("session expired: open a new session")]
    Expired,
    #[error("sequence number {found} is not above {last}, the highest accepted: replayed or reordered message")]
    Replayed { found: u64, last: u64 },
    #[error(
        "sequence number {found} is past the session's limit of {max} messages: open a new session"
    )]
    Exhausted { found: u64, max: u64 },
}

/// One open session.
pub struct Session {
    keys: SessionKeys,
    expires: Instant,
    last_seq: Mutex<u64>,
    max_messages: u64,
}

impl Session {
    pub fn keys(&self) -> &SessionKeys {
        &self.keys
    }

    /// Accepts `seq` if it is above every number accepted so far. Call only after the message
    /// authenticated, so that forged messages cannot move the window.
    pub fn accept_seq(&self, seq: u64) -> Result<(), SessionError> {
        if seq > self.max_messages {
            return Err(SessionError::Exhausted {
                found: seq,
                max: self.max_messages,
            });
        }
        // The lock guards one integer; a poisoned lock still holds a valid one.
        let mut last = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        if seq <= *last {
            return Err(SessionError::Replayed {
                found: seq,
                last: *last,
            });
        }
        *last = seq;
        Ok(())
    }
}

pub struct SessionTable {
    limits: SessionLimits,
    sessions: Mutex<HashMap<SessionId, Arc<Session>>>,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> SessionTable {
        SessionTable {
            limits,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session with `keys`; returns the grant, the session (whose keys seal the grant)
    /// and the number of sessions swept because they had expired.
    pub fn open(
        &self,
        keys: SessionKeys,
        now: Instant,
    ) -> Result<(SessionGrant, Arc<Session>, usize), SessionError> {
        let mut sessions = self.lock();
        let mut swept = 0;
        if sessions.len() >= self.limits.max_sessions {
            let before = sessions.len();
            sessions.retain(|_, s| s.expires > now);
            swept = before - sessions.len();
            if sessions.len() >= self.limits.max_sessions {
                return Err(SessionError::Full {
                    max: self.limits.max_sessions,
                });
            }
        }
        let mut session_id = [0u8; SESSION_ID_LEN];
        loop {
            rand::rng().fill_bytes(&mut session_id);
            if !sessions.contains_key(&session_id) {
                break;
            }
        }
        let expires_at = SystemTime::now()
            .checked_add(self.limits.lifetime)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let session = Arc::new(Session {
            keys,
            expires: now + self.limits.lifetime,
            last_seq: Mutex::new(0),
            max_messages: self.limits.max_messages,
        });
        sessions.insert(session_id, session.clone());
        Ok((
            SessionGrant {
                session_id,
                expires_at,
                max_messages: self.limits.max_messages,
            },
            session,
            swept,
        ))
    }

    /// The live session `id`. An expired session is removed and reported as such once.
    pub fn get(&self, id: &SessionId, now: Instant) -> Result<Arc<Session>, SessionError> {
        let mut sessions = self.lock();
        match sessions.get(id) {
            None => Err(SessionError::Unknown),
            Some(s) if s.expires <= now => {
                sessions.remove(id);
                Err(SessionError::Expired)
            }
            Some(s) => Ok(s.clone()),
        }
    }

    /// Sessions in the table, expired ones not yet swept included.
    pub fn count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_proto::session::start_session;
    use cordon_proto::ServiceKeyPair;

    fn keys(server: &ServiceKeyPair) -> SessionKeys {
        let (setup, _) = start_session(&server.public_key(), server.key_id(), b"{}").unwrap();
        server.accept_session(&setup).unwrap().1
    }

    fn table(max_sessions: usize, lifetime_s: u64, max_messages: u64) -> SessionTable {
        SessionTable::new(SessionLimits {
            max_sessions,
            lifetime: Duration::from_secs(lifetime_s),
            max_messages,
        })
    }

    #[test]
    fn replayed_and_reordered_sequence_numbers_are_refused() {
        let server = ServiceKeyPair::generate(0);
        let t = table(4, 60, 100);
        let now = Instant::now();
        let (grant, _, _) = t.open(keys(&server), now).unwrap();
        let s = t.get(&grant.session_id, now).unwrap();
        s.accept_seq(1).unwrap();
        s.accept_seq(3).unwrap();
        assert_eq!(
            s.accept_seq(3),
            Err(SessionError::Replayed { found: 3, last: 3 })
        );
        // 2 arrived after 3: reordered.
        assert_eq!(
            s.accept_seq(2),
            Err(SessionError::Replayed { found: 2, last: 3 })
        );
        assert_eq!(
            s.accept_seq(0),
            Err(SessionError::Replayed { found: 0, last: 3 })
        );
        assert_eq!(
            s.accept_seq(101),
            Err(SessionError::Exhausted {
                found: 101,
                max: 100
            })
        );
        s.accept_seq(100).unwrap();
    }

    #[test]
    fn sessions_expire() {
        let server = ServiceKeyPair::generate(0);
        let t = table(4, 60, 100);
        let now = Instant::now();
        let (grant, _, _) = t.open(keys(&server), now).unwrap();
        assert!(t
            .get(&grant.session_id, now + Duration::from_secs(59))
            .is_ok());
        assert_eq!(
            t.get(&grant.session_id, now + Duration::from_secs(60))
                .err(),
            Some(SessionError::Expired)
        );
        assert_eq!(
            t.get(&grant.session_id, now).err(),
            Some(SessionError::Unknown)
        );
        assert_eq!(t.get(&[7; 16], now).err(), Some(SessionError::Unknown));
    }

    #[test]
    fn a_full_table_refuses_new_sessions_until_old_ones_expire() {
        let server = ServiceKeyPair::generate(0);
        let t = table(2, 60, 100);
        let now = Instant::now();
        let (a, _, _) = t.open(keys(&server), now).unwrap();
        t.open(keys(&server), now + Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            t.open(keys(&server), now + Duration::from_secs(20)).err(),
            Some(SessionError::Full { max: 2 })
        );
        // Live sessions were not evicted by the refused setup.
        assert!(t.get(&a.session_id, now + Duration::from_secs(20)).is_ok());
        // Once the first has expired it is swept to make room.
        let (_, _, swept) = t
            .open(keys(&server), now + Duration::from_secs(61))
            .unwrap();
        assert_eq!(swept, 1);
        assert_eq!(t.count(), 2);
    }
}
