//! SQLite storage: keys with their release policies, nonces, the admin token hash, audit events.
//!
//! WAL journal with `synchronous = FULL`: an acknowledged write survives a crash. The schema is
//! versioned with `PRAGMA user_version` and upgraded by the migrations below, in order.

use cordon_proto::kbs::AuditEvent;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::Path;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(rusqlite::Error),
    #[error("the disk holding the store is full (or the file size limit was reached); nothing was stored")]
    Full,
    #[error("data directory {path} is read-only: the key broker must be able to write its store")]
    ReadOnly { path: String },
    #[error("database schema version {found} is newer than this build understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error(
        "key {key_id} is held by another owner (a party's dataset key, a training job's output, or an admin key); choose another key id"
    )]
    KeyOwned { key_id: String },
    #[error("quota: {0}")]
    Quota(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("the store is corrupt: {0}")]
    Corrupt(String),
    #[error("job {job_hash}'s output is registered already by this runtime: one output per job")]
    OutputRegistered { job_hash: String },
    #[error("data directory {path} is not private to the key broker: {source}")]
    NotPrivate {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        match e.sqlite_error_code() {
            // ENOSPC is SQLITE_FULL; a file size limit (EFBIG) surfaces as a write I/O error.
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full,
            _ if matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_IOERR_WRITE) =>
            {
                StoreError::Full
            }
            _ => StoreError::Sql(e),
        }
    }
}

const MIGRATIONS: &[&str] = &[
    // 1: initial schema.
    "CREATE TABLE admin (id INTEGER PRIMARY KEY CHECK (id = 1), token_sha256 BLOB NOT NULL);
     CREATE TABLE keys (
        key_id TEXT PRIMARY KEY,
        dek BLOB NOT NULL,
        policy TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL);
     CREATE TABLE nonces (
        nonce BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        used INTEGER NOT NULL DEFAULT 0);
     CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT,
        claims_digest TEXT,
        verdict TEXT NOT NULL,
        measurement TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL);",
    // 2: dataset keys. A key with an owner (Ed25519 public key) is a dataset key: registered by
    //    that party, released only for a training job the owner approved.
    "ALTER TABLE keys ADD COLUMN owner BLOB;",
    // 3: runtimes that attested for a training job and received every dataset key asked for: the
    //    only keys allowed to register that job's output for serving.
    "CREATE TABLE job_runtimes (
        job_hash BLOB NOT NULL,
        signing_key BLOB NOT NULL,
        serve_policy TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (job_hash, signing_key));",
    // 4: the KBS's own HPKE identity (DEKs reach it sealed to this key); the administrator's
    //    Ed25519 public key (admin requests are signed, the token never crosses the network);
    //    the kind of each key (an output key belongs to its job, not to the admin API); nonces of
    //    signed requests, kept to refuse replays.
    "CREATE TABLE identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hpke_seed BLOB NOT NULL,
        created_at INTEGER NOT NULL);
     ALTER TABLE admin ADD COLUMN public_key BLOB;
     ALTER TABLE admin ADD COLUMN identity_signature TEXT;
     ALTER TABLE keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'admin';
     UPDATE keys SET kind = 'dataset' WHERE owner IS NOT NULL;
     CREATE TABLE request_nonces (
        nonce BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL);
     CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);
     CREATE INDEX nonces_expiry ON nonces (expires_at);
     ALTER TABLE job_runtimes ADD COLUMN output_key_id TEXT;",
    // 5: whose share of the signed-request nonces a nonce takes: a party's (dataset key
    //    registrations, which anyone can make), or none (the administrator and attested runtimes,
    //    whom party traffic must not lock out); the key quotas by kind and owner, indexed.
    "ALTER TABLE request_nonces ADD COLUMN party BLOB;
     CREATE INDEX request_nonces_party ON request_nonces (party);
     CREATE INDEX keys_kind_owner ON keys (kind, owner);",
    // 6: the share each remembered nonce takes (admin, party, runtime), with its sender in
    //    `party`; and the nonce floor: the latest time at which nonces were pruned, kept so that a
    //    clock set back cannot bring a pruned nonce's request back into the window.
    "ALTER TABLE request_nonces ADD COLUMN share TEXT NOT NULL DEFAULT 'admin';
     UPDATE request_nonces SET share = 'party' WHERE party IS NOT NULL;
     CREATE INDEX request_nonces_share ON request_nonces (share, party);
     CREATE TABLE nonce_floor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_at INTEGER NOT NULL);",
    // Audit checkpoints: the administrator's vouch (`cordon_proto::checkpoint::vouch_audit_key`)
    // for the key that signs audit checkpoints, made while the KBS holds the admin token. The
    // signing key itself is derived from the identity seed, and checkpoints are signed when
    // asked for: nothing else is stored.
    "CREATE TABLE audit_key_vouch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        admin_signature TEXT NOT NULL,
        created_at INTEGER NOT NULL);",
];

/// How long an expired challenge is kept, so that using it is answered "expired" rather than
/// "unknown" (unless the table fills up first).
pub const EXPIRED_CHALLENGE_GRACE: u64 = 600;

/// Whose share of the remembered signed-request nonces a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// The administrator's requests: party and runtime traffic cannot spend this share.
    Admin,
    /// Dataset key registrations: anyone with a key can send one.
    Party,
    /// Job output registrations, by runtimes that received a job's dataset keys (which anyone
    /// with a TEE and datasets of its own can be).
    Runtime,
}

impl Share {
    fn label(self) -> &'static str {
        match self {
            Share::Admin => "admin",
            Share::Party => "party",
            Share::Runtime => "runtime",
        }
    }
}

/// A share of the remembered nonces and its bounds: at most `max` nonces in the share, at most
/// `per_sender` of them from one sender.
#[derive(Debug, Clone, Copy)]
pub struct NonceShare {
    pub share: Share,
    pub sender: [u8; 32],
    pub per_sender: u64,
    pub max: u64,
}

/// Outcome of recording a signed request's nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestNonceUse {
    Accepted,
    /// Recorded already: a replay.
    Replayed,
    /// Stamped so long before the latest pruning (`pruned_at`) that its nonce, had it been
    /// recorded, may be gone: the clock was once later than this request allows.
    Forgotten {
        pruned_at: u64,
    },
}

/// Who registered a key, and so who may replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Registered through the admin API; the admin may replace it.
    Admin,
    /// A party's dataset key: only its owner may replace it.
    Dataset,
    /// A training job's output, registered by the job's runtime: nobody replaces it.
    JobOutput,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Admin => "admin",
            KeyKind::Dataset => "dataset",
            KeyKind::JobOutput => "job_output",
        }
    }

    /// Fails closed: an unknown kind is not taken for an admin key (released on policy alone).
    fn parse(s: &str) -> Result<KeyKind, StoreError> {
        match s {
            "admin" => Ok(KeyKind::Admin),
            "dataset" => Ok(KeyKind::Dataset),
            "job_output" => Ok(KeyKind::JobOutput),
            other => Err(StoreError::Corrupt(format!("unknown key kind {other:?}"))),
        }
    }
}

/// Outcome of trying to use a nonce.
#[derive(Debug, PartialEq, Eq)]
pub enum NonceUse {
    Accepted,
    Unknown,
    Replayed,
    Expired { expired_at: u64 },
}

/// A registered key.
pub struct StoredKey {
    pub dek: Zeroizing<Vec<u8>>,
    pub policy: String,
    pub kind: KeyKind,
    /// The owner of a dataset key (its Ed25519 public key), or the runtime that registered a job's
    /// output; `None` for admin keys.
    pub owner: Option<[u8; 32]>,
}

impl StoredKey {
    /// Whether this is a party's dataset key (released only for jobs its owner approved).
    pub fn is_dataset_key(&self) -> bool {
        self.kind == KeyKind::Dataset
    }
}

/// An event to append to the audit log.
pub struct NewAuditEvent<'a> {
    pub time: u64,
    pub kind: &'a str,
    pub key_id: Option<&'a str>,
    pub claims_digest: Option<&'a str>,
    pub verdict: &'a str,
    pub measurement: Option<&'a str>,
    pub detail: &'a str,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) `kbs.sqlite3` in `data_dir` and brings its schema up to date.
    ///
    /// The store holds the DEKs: `data_dir` is made 0700 and the database with its `-wal` and
    /// `-shm` files 0600, whatever the umask; an existing directory or file open to other users
    /// loses those bits, with a warning (`private_files`).
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        crate::private_files::private_dir(data_dir).map_err(|e| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source: e,
        })?;
        let path = data_dir.join("kbs.sqlite3");
        // Created 0600 before SQLite opens it: SQLite would create it 0644 less the umask, and
        // gives the -wal and -shm files it creates later the database file's mode.
        crate::private_files::private_db(&path);
        let not_private = |e: std::io::Error| StoreError::NotPrivate {
            path: data_dir.display().to_string(),
            source: e,
        };
        crate::private_files::check_private(data_dir, &path).map_err(not_private)?;
        let read_only = || StoreError::ReadOnly {
            path: data_dir.display().to_string(),
        };
        // A store the KBS cannot write would answer every challenge with an error; refuse to
        // start instead, saying why. (SQLite opens an unwritable file read-only without a word.)
        let conn = Connection::open(&path).map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) | Some(rusqlite::ErrorCode::ReadOnly) => {
                read_only()
            }
            _ => StoreError::Sql(e),
        })?;
        if conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(read_only());
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen) => {
                    read_only()
                }
                _ => StoreError::Sql(e),
            })?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut store = Store { conn };
        store.migrate()?;
        // The WAL and shared-memory files exist now, with the database's mode; a check, and a
        // repair for files SQLite created before the database was 0600.
        crate::private_files::tighten_side_files(&path);
        crate::private_files::check_private(data_dir, &path).map_err(not_private)?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        // Migration 4 gained `job_runtimes.output_key_id` after it first landed on main: a store
        // made by that first version lacks the column whatever its version now.
        let has_output_key_id: bool = self.conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('job_runtimes') WHERE name = 'output_key_id'",
            [],
            |r| r.get(0),
        )?;
        if !has_output_key_id {
            self.conn
                .execute_batch("ALTER TABLE job_runtimes ADD COLUMN output_key_id TEXT;")?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let v: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT token_sha256 FROM admin WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.and_then(|b| b.try_into().ok()))
    }

    /// Records the administrator: the hash of its token, the public key the token seeds, and that
    /// key's signature over the KBS's identity key (`cordon_proto::auth::vouch_identity`).
    pub fn set_admin(
        &self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        identity_signature: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO admin (id, token_sha256, public_key, identity_signature)
             VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET token_sha256 = excluded.token_sha256,
                 public_key = excluded.public_key,
                 identity_signature = excluded.identity_signature",
            params![
                token_hash.as_slice(),
                public_key.as_slice(),
                identity_signature
            ],
        )?;
        Ok(())
    }

    /// The administrator's signature over the identity key, once an administrator exists.
    pub fn identity_signature(&self) -> Result<Option<String>, StoreError> {
        let v: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT identity_signature FROM admin WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.flatten())
    }

    /// The administrator's vouch for the audit signing key, once made.
    pub fn audit_key_vouch(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT admin_signature FROM audit_key_vouch WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the administrator's vouch for the audit signing key (replacing any earlier one:
    /// the key is derived from the identity seed, so a vouch for it never goes stale).
    pub fn set_audit_key_vouch(&self, signature: &str, now: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit_key_vouch (id, admin_signature, created_at) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET admin_signature = excluded.admin_signature,
                 created_at = excluded.created_at",
            params![signature, now as i64],
        )?;
        Ok(())
    }

    /// The administrator's Ed25519 public key; `None` before one is set (or in a store from before
    /// signed admin requests, which holds only the token's hash).
    pub fn admin_public_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let v: Option<Option<Vec<u8>>> = self
            .conn
            .query_row("SELECT public_key FROM admin WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(v.flatten().and_then(|b| b.try_into().ok()))
    }

    /// The seed of the KBS's HPKE identity key, if one was made.
    pub fn identity_seed(&self) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        let v: Option<Zeroizing<Vec<u8>>> = self
            .conn
            .query_row("SELECT hpke_seed FROM identity WHERE id = 1", [], |r| {
                r.get(0).map(Zeroizing::new)
            })
            .optional()?;
        let Some(b) = v else { return Ok(None) };
        if b.len() != 32 {
            return Err(StoreError::Corrupt(format!(
                "the identity seed is {} bytes, expected 32",
                b.len()
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&b);
        Ok(Some(seed))
    }

    /// Stores the seed of the KBS's HPKE identity key, unless one exists; returns the stored seed.
    pub fn init_identity_seed(
        &self,
        seed: &[u8; 32],
        now: u64,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO identity (id, hpke_seed, created_at) VALUES (1, ?1, ?2)",
            params![seed.as_slice(), now as i64],
        )?;
        self.identity_seed()?
            .ok_or(StoreError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }

    /// Records the nonce of a signed request stamped `time`, kept until `keep` seconds after the
    /// later of `time` and `now`. Refused: a nonce recorded already (a replay); a request stamped
    /// more than `keep` before the latest pruning, whose nonce may have been pruned (the host set
    /// the clock ahead, pruned, and set it back: the floor is kept in the store, so that never
    /// brings a request back); and, with [`StoreError::Busy`], one whose share (see
    /// [`NonceShare`]) is full. Nothing is recorded when refused.
    pub fn use_request_nonce(
        &self,
        nonce: &[u8],
        time: u64,
        keep: u64,
        now: u64,
        share: NonceShare,
    ) -> Result<RequestNonceUse, StoreError> {
        let pruned_at: u64 = self
            .conn
            .query_row("SELECT pruned_at FROM nonce_floor WHERE id = 1", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map_or(0, |t| t as u64)
            .max(now);
        self.conn.execute(
            "DELETE FROM request_nonces WHERE expires_at < ?1",
            params![now as i64],
        )?;
        self.conn.execute(
            "INSERT INTO nonce_floor (id, pruned_at) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET pruned_at = MAX(pruned_at, excluded.pruned_at)",
            params![pruned_at as i64],
        )?;
        // Every row pruned so far expired before `pruned_at`; a row for `time` expires no sooner
        // than `time + keep`.
        if time.saturating_add(keep) < pruned_at {
            return Ok(RequestNonceUse::Forgotten { pruned_at });
        }
        // A replay is a replay, however full the shares are.
        let seen = self
            .conn
            .query_row(
                "SELECT 1 FROM request_nonces WHERE nonce = ?1",
                params![nonce],
                |_| Ok(()),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(RequestNonceUse::Replayed);
        }
        let (all, mine): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(party = ?2), 0) FROM request_nonces WHERE share = ?1",
            params![share.share.label(), share.sender.as_slice()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let what = share.share.label();
        if mine as u64 >= share.per_sender {
            return Err(StoreError::Busy(format!(
                "this sender has {mine} signed requests of the last ten minutes remembered \
                 already, the most one {what} sender may"
            )));
        }
        if all as u64 >= share.max {
            return Err(StoreError::Busy(format!(
                "{all} signed {what} requests of the last ten minutes are remembered already"
            )));
        }
        let expires_at = time.max(now).saturating_add(keep);
        self.conn.execute(
            "INSERT INTO request_nonces (nonce, expires_at, party, share) VALUES (?1, ?2, ?3, ?4)",
            params![
                nonce,
                expires_at as i64,
                share.sender.as_slice(),
                share.share.label()
            ],
        )?;
        Ok(RequestNonceUse::Accepted)
    }

    /// Dataset keys held under other key ids than `key_id`, all owners together and those of
    /// `owner`: what a registration of `key_id` by `owner` is checked against, whether it is new
    /// or replaces a key.
    pub fn dataset_key_counts(
        &self,
        owner: &[u8; 32],
        key_id: &str,
    ) -> Result<(u64, u64), StoreError> {
        let (all, mine): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(owner = ?1), 0) FROM keys
             WHERE kind = 'dataset' AND key_id <> ?2",
            params![owner.as_slice(), key_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((all as u64, mine as u64))
    }

    pub fn put_key(
        &self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        now: u64,
    ) -> Result<(), StoreError> {
        upsert_key(&self.conn, key_id, dek, policy, now)
    }

    pub fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT dek, policy, owner, kind FROM keys WHERE key_id = ?1",
                params![key_id],
                |r| {
                    let owner: Option<Vec<u8>> = r.get(2)?;
                    let kind: String = r.get(3)?;
                    Ok((
                        Zeroizing::new(r.get::<_, Vec<u8>>(0)?),
                        r.get::<_, String>(1)?,
                        owner,
                        kind,
                    ))
                },
            )
            .optional()?;
        let Some((dek, policy, owner, kind)) = row else {
            return Ok(None);
        };
        Ok(Some(StoredKey {
            dek,
            policy,
            kind: KeyKind::parse(&kind)?,
            owner: owner.and_then(|o| o.try_into().ok()),
        }))
    }

    pub fn key_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key_id FROM keys ORDER BY key_id")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ids)
    }

    /// Records a fresh challenge nonce, unless `max` unexpired ones are outstanding
    /// ([`StoreError::Busy`]). Anyone may ask for challenges, so the table never holds more than
    /// `max` rows: expired nonces are kept [`EXPIRED_CHALLENGE_GRACE`] after expiry (so that using
    /// one that just expired is answered "expired", not "unknown"), but dropped at once when the
    /// table is full.
    pub fn insert_nonce(
        &self,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
        max: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM nonces WHERE expires_at < ?1",
            params![now.saturating_sub(EXPIRED_CHALLENGE_GRACE) as i64],
        )?;
        let count = || -> Result<u64, StoreError> {
            let n: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM nonces", [], |r| r.get(0))?;
            Ok(n as u64)
        };
        if count()? >= max {
            self.conn.execute(
                "DELETE FROM nonces WHERE expires_at < ?1",
                params![now as i64],
            )?;
            let live = count()?;
            if live >= max {
                return Err(StoreError::Busy(format!(
                    "{live} challenges are outstanding; retry when some have expired"
                )));
            }
        }
        self.conn.execute(
            "INSERT INTO nonces (nonce, expires_at) VALUES (?1, ?2)",
            params![nonce, expires_at as i64],
        )?;
        Ok(())
    }

    /// Marks a nonce used, atomically: of two concurrent uses at most one is accepted.
    pub fn use_nonce(&self, nonce: &[u8], now: u64) -> Result<NonceUse, StoreError> {
        let changed = self.conn.execute(
            "UPDATE nonces SET used = 1 WHERE nonce = ?1 AND used = 0 AND expires_at >= ?2",
            params![nonce, now as i64],
        )?;
        if changed == 1 {
            return Ok(NonceUse::Accepted);
        }
        let row: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT expires_at, used FROM nonces WHERE nonce = ?1",
                params![nonce],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match row {
            None => NonceUse::Unknown,
            Some((_, 1)) => NonceUse::Replayed,
            Some((expires_at, _)) => NonceUse::Expired {
                expired_at: expires_at as u64,
            },
        })
    }

    /// Registers (or replaces) a key and appends its audit event in one transaction: either both
    /// are stored or neither.
    pub fn put_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let tx = self.conn.transaction()?;
        upsert_key(&tx, key_id, dek, policy, event.time)?;
        let stored = append_audit_in(&tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Records that the runtime with `signing_key` attested for job `job_hash` and received its
    /// dataset keys; `serve_policy` is the job's serving policy, if it has one.
    pub fn record_job_runtime(
        &self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
        serve_policy: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO job_runtimes (job_hash, signing_key, serve_policy, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                job_hash.as_slice(),
                signing_key.as_slice(),
                serve_policy,
                now as i64
            ],
        )?;
        Ok(())
    }

    /// `None` when no runtime with this key attested for the job; else the job's serving policy.
    pub fn job_runtime(
        &self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT serve_policy FROM job_runtimes WHERE job_hash = ?1 AND signing_key = ?2",
                params![job_hash.as_slice(), signing_key.as_slice()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores a job's output key, owned by the runtime that registered it (never replacing an
    /// existing key, and never replaceable through the admin API), with its audit event.
    /// One output per (job, runtime): a second registration is refused.
    pub fn put_output_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        job_hash: &[u8; 32],
        runtime: &[u8; 32],
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let tx = self.conn.transaction()?;
        let claimed = tx.execute(
            "UPDATE job_runtimes SET output_key_id = ?3
             WHERE job_hash = ?1 AND signing_key = ?2 AND output_key_id IS NULL",
            params![job_hash.as_slice(), runtime.as_slice(), key_id],
        )?;
        if claimed == 0 {
            return Err(StoreError::OutputRegistered {
                job_hash: hex::encode(job_hash),
            });
        }
        let changed = tx.execute(
            "INSERT OR IGNORE INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'job_output')",
            params![key_id, dek, policy, event.time as i64, runtime.as_slice()],
        )?;
        if changed == 0 {
            return Err(StoreError::KeyOwned {
                key_id: key_id.to_string(),
            });
        }
        let stored = append_audit_in(&tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Stores a dataset key registered by `owner`, with its audit event, in one transaction. A
    /// key id already held by another owner, or by an admin-registered key, is refused.
    pub fn put_dataset_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        owner: &[u8; 32],
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'dataset')
             ON CONFLICT(key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
                 updated_at = excluded.updated_at
             WHERE keys.kind = 'dataset' AND keys.owner = excluded.owner",
            params![key_id, dek, policy, event.time as i64, owner.as_slice()],
        )?;
        if changed == 0 {
            return Err(StoreError::KeyOwned {
                key_id: key_id.to_string(),
            });
        }
        let stored = append_audit_in(&tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Appends an event, chained to the previous one by hash.
    pub fn append_audit(&mut self, e: &NewAuditEvent<'_>) -> Result<AuditEvent, StoreError> {
        let tx = self.conn.transaction()?;
        let stored = append_audit_in(&tx, e)?;
        tx.commit()?;
        Ok(stored)
    }

    pub fn audit_events(&self) -> Result<Vec<AuditEvent>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, time, kind, key_id, claims_digest, verdict, measurement, detail, hash
             FROM audit ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AuditEvent {
                    seq: r.get(0)?,
                    time: r.get::<_, i64>(1)? as u64,
                    kind: r.get(2)?,
                    key_id: r.get(3)?,
                    claims_digest: r.get(4)?,
                    verdict: r.get(5)?,
                    measurement: r.get(6)?,
                    detail: r.get(7)?,
                    hash: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

fn upsert_key(
    conn: &Connection,
    key_id: &str,
    dek: &[u8],
    policy: &str,
    now: u64,
) -> Result<(), StoreError> {
    let changed = conn.execute(
        "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind)
         VALUES (?1, ?2, ?3, ?4, ?4, 'admin')
         ON CONFLICT(key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
             updated_at = excluded.updated_at
         WHERE keys.kind = 'admin'",
        params![key_id, dek, policy, now as i64],
    )?;
    // A dataset key stays its owner's and a job's output its job's: the admin API cannot replace
    // either.
    if changed == 0 {
        return Err(StoreError::KeyOwned {
            key_id: key_id.to_string(),
        });
    }
    Ok(())
}

fn append_audit_in(
    tx: &rusqlite::Transaction<'_>,
    e: &NewAuditEvent<'_>,
) -> Result<AuditEvent, StoreError> {
    let prev: String = tx
        .query_row(
            "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or_else(|| "0".repeat(64));
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM audit", [], |r| {
        r.get(0)
    })?;
    let mut event = AuditEvent {
        seq,
        time: e.time,
        kind: e.kind.into(),
        key_id: e.key_id.map(Into::into),
        claims_digest: e.claims_digest.map(Into::into),
        verdict: e.verdict.into(),
        measurement: e.measurement.map(Into::into),
        detail: e.detail.into(),
        hash: String::new(),
    };
    event.hash = audit_hash(&prev, &event);
    tx.execute(
        "INSERT INTO audit (seq, time, kind, key_id, claims_digest, verdict, measurement, detail,
                            prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            event.seq,
            event.time as i64,
            event.kind,
            event.key_id,
            event.claims_digest,
            event.verdict,
            event.measurement,
            event.detail,
            prev,
            event.hash
        ],
    )?;
    Ok(event)
}

/// `hash = SHA-256(prev_hash || "\n" || JSON of the event without its hash)`.
pub fn audit_hash(prev_hash: &str, event: &AuditEvent) -> String {
    let mut e = event.clone();
    e.hash = String::new();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(serde_json::to_vec(&e).unwrap_or_default());
    hex::encode(h.finalize())
}

/// Checks that `events` form an unbroken hash chain from the start; returns the first bad sequence
/// number.
pub fn verify_audit_chain(events: &[AuditEvent]) -> Result<(), i64> {
    let mut prev = "0".repeat(64);
    for (i, e) in events.iter().enumerate() {
        if e.seq != i as i64 + 1 || audit_hash(&prev, e) != e.hash {
            return Err(e.seq);
        }
        prev = e.hash.clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn nonce_is_single_use_and_expires() {
        let (_d, s) = temp_store();
        s.insert_nonce(b"n1", 100, 50, 10).unwrap();
        assert_eq!(s.use_nonce(b"n1", 60).unwrap(), NonceUse::Accepted);
        assert_eq!(s.use_nonce(b"n1", 61).unwrap(), NonceUse::Replayed);
        s.insert_nonce(b"n2", 100, 50, 10).unwrap();
        assert_eq!(
            s.use_nonce(b"n2", 101).unwrap(),
            NonceUse::Expired { expired_at: 100 }
        );
        assert_eq!(s.use_nonce(b"never", 60).unwrap(), NonceUse::Unknown);
    }

    /// The challenge table never holds more than its bound, expired rows included: anyone may ask
    /// for challenges.
    #[test]
    fn challenges_are_bounded_with_their_expired_rows() {
        let (_d, s) = temp_store();
        for i in 0..3u8 {
            s.insert_nonce(&[i], 100, 50, 3).unwrap();
        }
        assert!(matches!(
            s.insert_nonce(b"x", 100, 50, 3),
            Err(StoreError::Busy(_))
        ));
        // Expired, but within the grace: still answered "expired"...
        assert_eq!(
            s.use_nonce(&[0], 101).unwrap(),
            NonceUse::Expired { expired_at: 100 }
        );
        // ...until room is needed: then the expired rows go, never past the bound.
        for i in 10..13u8 {
            s.insert_nonce(&[i], 200, 101, 3).unwrap();
        }
        let rows: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM nonces", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 3);
        assert_eq!(s.use_nonce(&[1], 102).unwrap(), NonceUse::Unknown);
    }

    /// A key of a kind this build does not know is an error, not an admin key (which would be
    /// released on its policy alone).
    #[test]
    fn an_unknown_key_kind_fails_closed() {
        let (_d, s) = temp_store();
        s.put_key("k", &[1; 32], "policy", 1).unwrap();
        s.conn
            .execute("UPDATE keys SET kind = 'future' WHERE key_id = 'k'", [])
            .unwrap();
        let err = s.get_key("k").err().expect("refused");
        assert!(err.to_string().contains("unknown key kind"), "{err}");
    }

    /// Each share has its bound, and one sender a bound within it: party and runtime requests
    /// cannot fill the administrator's share.
    #[test]
    fn request_nonces_are_shared_per_sender_and_apart_from_the_administrators() {
        let (_d, s) = temp_store();
        let share = |share, p: u8| NonceShare {
            share,
            sender: [p; 32],
            per_sender: 2,
            max: 3,
        };
        let party = |p| share(Share::Party, p);
        let admin = NonceShare {
            max: 1,
            ..share(Share::Admin, 9)
        };
        let at0 = |n: &[u8], sh| s.use_request_nonce(n, 0, 100, 0, sh);
        assert_eq!(at0(b"a1", party(1)).unwrap(), RequestNonceUse::Accepted);
        assert_eq!(at0(b"a2", party(1)).unwrap(), RequestNonceUse::Accepted);
        assert!(matches!(
            at0(b"a3", party(1)),
            Err(StoreError::Busy(m)) if m.contains("one party sender")
        ));
        assert_eq!(at0(b"b1", party(2)).unwrap(), RequestNonceUse::Accepted);
        assert!(matches!(
            at0(b"c1", party(3)),
            Err(StoreError::Busy(m)) if m.contains("party requests")
        ));
        // Runtimes have a share of their own too.
        for (i, n) in [b"r1", b"r2"].iter().enumerate() {
            assert_eq!(
                at0(*n, share(Share::Runtime, 4)).unwrap(),
                RequestNonceUse::Accepted,
                "{i}"
            );
        }
        assert_eq!(at0(b"admin", admin).unwrap(), RequestNonceUse::Accepted);
        assert_eq!(at0(b"admin", admin).unwrap(), RequestNonceUse::Replayed);
        assert!(matches!(at0(b"admin2", admin), Err(StoreError::Busy(_))));
        // Forgotten once expired.
        assert_eq!(
            s.use_request_nonce(b"c1", 101, 100, 101, party(3)).unwrap(),
            RequestNonceUse::Accepted
        );
    }

    /// The host sets the clock ahead, has the nonces pruned, and sets it back: a request stamped
    /// before what was pruned is refused, not recorded afresh.
    #[test]
    fn a_clock_set_back_brings_no_pruned_nonce_back() {
        let (d, s) = temp_store();
        let admin = NonceShare {
            share: Share::Admin,
            sender: [9; 32],
            per_sender: 10,
            max: 10,
        };
        assert_eq!(
            s.use_request_nonce(b"n", 1_000, 600, 1_000, admin).unwrap(),
            RequestNonceUse::Accepted
        );
        // The clock an hour ahead: another request prunes the first one's row.
        s.use_request_nonce(b"m", 4_600, 600, 4_600, admin).unwrap();
        // Back to 1,010, and the first request again: refused, and the floor survives a reopen.
        assert_eq!(
            s.use_request_nonce(b"n", 1_000, 600, 1_010, admin).unwrap(),
            RequestNonceUse::Forgotten { pruned_at: 4_600 }
        );
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(
            s.use_request_nonce(b"n", 1_000, 600, 1_010, admin).unwrap(),
            RequestNonceUse::Forgotten { pruned_at: 4_600 }
        );
        // Requests stamped since are accepted once the clock is there again.
        assert_eq!(
            s.use_request_nonce(b"k", 4_100, 600, 4_100, admin).unwrap(),
            RequestNonceUse::Accepted
        );
    }

    /// A store made by the first version of migration 4 (without `job_runtimes.output_key_id`)
    /// is brought up to date like any other.
    #[test]
    fn a_store_from_the_first_migration_4_gets_its_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join("kbs.sqlite3")).unwrap();
        conn.execute_batch(
            "DROP TABLE audit_key_vouch;
             DROP TABLE nonce_floor; DROP INDEX request_nonces_share;
             ALTER TABLE request_nonces DROP COLUMN share;
             DROP INDEX request_nonces_party; ALTER TABLE request_nonces DROP COLUMN party;
             DROP INDEX keys_kind_owner;
             ALTER TABLE job_runtimes DROP COLUMN output_key_id;
             PRAGMA user_version = 4;",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.conn
            .execute("UPDATE job_runtimes SET output_key_id = 'k'", [])
            .unwrap();
    }

    #[test]
    fn schema_is_versioned_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.put_key("k", &[1; 32], "policy", 1).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get_key("k").unwrap().unwrap().dek.as_slice(), &[1; 32]);
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn audit_chain_detects_edits_and_gaps() {
        let (_d, mut s) = temp_store();
        for i in 0..3 {
            s.append_audit(&NewAuditEvent {
                time: i,
                kind: "key_released",
                key_id: Some("k"),
                claims_digest: None,
                verdict: "accepted",
                measurement: None,
                detail: "",
            })
            .unwrap();
        }
        let events = s.audit_events().unwrap();
        assert_eq!(verify_audit_chain(&events), Ok(()));
        let mut edited = events.clone();
        edited[1].verdict = "rejected".into();
        assert_eq!(verify_audit_chain(&edited), Err(2));
        let gap = vec![events[0].clone(), events[2].clone()];
        assert_eq!(verify_audit_chain(&gap), Err(3));
    }
}
