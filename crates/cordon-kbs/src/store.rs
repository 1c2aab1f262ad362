//! SQLite storage: keys with their release policies, nonces, the admin token hash, audit events.
//!
//! WAL journal with `synchronous = FULL`: an acknowledged write survives a crash. The schema is
//! versioned with `PRAGMA user_version` and upgraded by the migrations below, in order.
//!
//! Every secret is stored wrapped under the root KEK ([`crate::custody`]): each DEK and the seed
//! of the KBS's identity, each row naming the KEK that wrapped it (`kek_id`). A store from before
//! wrapping (schema 6 or older) has its plaintext rows wrapped when first opened, and is then
//! vacuumed with `secure_delete` on, so that the plaintext is not left in free pages or the WAL.

use crate::custody::{dek_binding, wrap_aad, CustodyError, Kek, Keks, Slot};
use cordon_proto::kbs::{AuditEvent, KeyInfo};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(postgres::Error),
    #[error("store configuration: {0}")]
    Config(String),
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
    #[error("key custody: {0}")]
    Custody(#[from] CustodyError),
    #[error(
        "{entries} stored secret(s) are wrapped by KEK {found}, which this KBS was not given \
         (it has {given}): a KEK rotation left unfinished (give the old KEK as the previous one \
         and finish it with `cordon kbs rotate-kek`), or the wrong --kek"
    )]
    UnknownKek {
        found: String,
        given: String,
        entries: u64,
    },
    #[error("key {key_id} was revoked at {}: it is never released again, and its id is not reused", cordon_proto::rfc3339(*.revoked_at))]
    KeyRevoked { key_id: String, revoked_at: u64 },
    #[error(
        "the identity retired by the last rotation is accepted until {}: rotating \
         again now would cut that overlap short; wait until then",
        cordon_proto::rfc3339(*.accept_until)
    )]
    OverlapRunning { accept_until: u64 },
    #[error("this store has no identity yet: start the KBS once first")]
    NoIdentity,
    #[error(
        "this store is from before key custody and holds {keys} DEK(s){} in plaintext: start once \
         with --migrate-plaintext-store to wrap them, on the machine that made the store (a store \
         planted by someone else would give this KBS secrets, and an identity, they know)",
        if *identity { " and its identity seed" } else { "" }
    )]
    PlaintextStore { keys: usize, identity: bool },
    #[error("no key {key_id} is registered")]
    UnknownKey { key_id: String },
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
    // 7: key custody. Each secret (`keys.dek`, `identity.hpke_seed`) is wrapped by the root KEK
    //    named in its `kek_id`; NULL marks a plaintext row from before, wrapped by `Store::open`.
    //    A revoked key keeps its row (its id is never reused), not its DEK.
    "ALTER TABLE keys ADD COLUMN kek_id TEXT;
     ALTER TABLE keys ADD COLUMN revoked_at INTEGER;
     ALTER TABLE identity ADD COLUMN kek_id TEXT;",
    // 8: identity rotation. The identity retired by the latest rotation, still accepted (DEKs
    //    and jobs sealed to it, requests signed for it) until `accept_until`: the overlap window.
    "CREATE TABLE identity_previous (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hpke_seed BLOB NOT NULL,
        kek_id TEXT NOT NULL,
        retired_at INTEGER NOT NULL,
        accept_until INTEGER NOT NULL);",
    // 9: audit checkpoints: the administrator's vouch (`cordon_proto::checkpoint::vouch_audit_key`)
    // for the key that signs audit checkpoints, made while the KBS holds the admin token. The
    // signing key itself is derived from the identity seed, and checkpoints are signed when
    // asked for: nothing else is stored.
    "CREATE TABLE audit_key_vouch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        admin_signature TEXT NOT NULL,
        created_at INTEGER NOT NULL);",
    // 10: the key listing counts each key's releases: by key id, not by a scan per key.
    "CREATE INDEX audit_key ON audit (key_id, kind, verdict);",
    // 11: challenges cost no write to issue (`crate::challenge`: the nonce carries its expiry
    //     and a MAC); the store keeps the nonces spent, until they expire, and the floor below
    //     which spent nonces were pruned (it never goes down, so a clock set back cannot bring a
    //     pruned nonce back). Outstanding challenges of the old table are dropped: their holders
    //     ask again.
    "DROP TABLE nonces;
     CREATE TABLE spent_challenges (
        nonce BLOB PRIMARY KEY,
        expires_at INTEGER NOT NULL);
     CREATE INDEX spent_challenges_expiry ON spent_challenges (expires_at);
     CREATE TABLE challenge_floor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_below INTEGER NOT NULL);",
    // 12: the expiries of the spent nonces pruned are kept as ranges, not one floor
    //     (`challenge::merge_pruned`): a floor raised by nonces spent while the clock was ahead
    //     refused every fresh challenge once the clock was right. The floor becomes the range
    //     [0, floor]; the cutoff of the last prune is kept to space prunes out.
    "CREATE TABLE challenge_pruned (
        lo INTEGER PRIMARY KEY,
        hi INTEGER NOT NULL);
     INSERT INTO challenge_pruned (lo, hi)
        SELECT 0, pruned_below FROM challenge_floor WHERE pruned_below > 0;
     CREATE TABLE challenge_prune_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_cutoff INTEGER NOT NULL);
     INSERT INTO challenge_prune_state (id, last_cutoff)
        SELECT 1, pruned_below FROM challenge_floor;
     DROP TABLE challenge_floor;",
];

/// How long after its expiry (by the clock of the replica that prunes) a spent nonce is kept: a
/// replica whose clock lags this much behind another's still finds the nonce spent.
pub const SPENT_CHALLENGE_GRACE: u64 = 60;
/// Spent nonces are pruned once the prune's cutoff (the clock less [`SPENT_CHALLENGE_GRACE`]) has
/// moved this far from the last prune's, either way: not in every transaction.
pub const CHALLENGE_PRUNE_EVERY: u64 = 30;

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
    pub(crate) fn label(self) -> &'static str {
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
    pub(crate) fn parse(s: &str) -> Result<KeyKind, StoreError> {
        match s {
            "admin" => Ok(KeyKind::Admin),
            "dataset" => Ok(KeyKind::Dataset),
            "job_output" => Ok(KeyKind::JobOutput),
            other => Err(StoreError::Corrupt(format!("unknown key kind {other:?}"))),
        }
    }
}

/// One audit event waiting to be written with its attestation (owned: it waits in a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub time: u64,
    pub kind: &'static str,
    pub key_id: Option<String>,
    pub claims_digest: Option<String>,
    pub verdict: &'static str,
    pub measurement: Option<String>,
    pub detail: String,
}

impl PendingEvent {
    pub fn as_new(&self) -> NewAuditEvent<'_> {
        NewAuditEvent {
            time: self.time,
            kind: self.kind,
            key_id: self.key_id.as_deref(),
            claims_digest: self.claims_digest.as_deref(),
            verdict: self.verdict,
            measurement: self.measurement.as_deref(),
            detail: &self.detail,
        }
    }

    /// The denial recorded in place of a release whose key was revoked meanwhile.
    pub fn withheld(&self) -> PendingEvent {
        PendingEvent {
            kind: "key_denied",
            verdict: "rejected",
            detail: "revoked while the release was being answered".into(),
            ..self.clone()
        }
    }
}

/// A runtime that attested for a training job and received every dataset key it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRuntime {
    pub job_hash: [u8; 32],
    pub signing_key: [u8; 32],
    pub serve_policy: Option<String>,
}

/// Everything one attestation writes, in one transaction: its challenge nonce spent, its audit
/// events, and the job runtime it proved to be. Either all of it is stored or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationCommit {
    /// The challenge nonce the evidence bound (checked against its MAC by the caller).
    pub nonce: Vec<u8>,
    /// Its expiry, from the nonce itself.
    pub expires_at: u64,
    /// `key_released` events: each recorded only if its key is unrevoked when this commits
    /// (checked in the transaction), else recorded as a denial ([`PendingEvent::withheld`]) and
    /// the key withheld.
    pub releases: Vec<PendingEvent>,
    /// Every other event (refusals, denials), recorded as it is, after the releases.
    pub events: Vec<PendingEvent>,
    /// Recorded only if no release was withheld.
    pub job_runtime: Option<JobRuntime>,
}

/// What became of one [`AttestationCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttestationOutcome {
    /// Stored; the key ids of releases withheld because their key was revoked meanwhile.
    Committed { withheld: Vec<String> },
    /// The nonce was spent already (a replay, or the same nonce twice in a batch): nothing stored.
    Spent,
    /// The nonce's expiry falls in a range of the expiries of spent nonces pruned: it may have
    /// been spent and forgotten, so it is refused whatever the clock says. Nothing stored.
    Forgotten,
}

/// A registered key.
pub struct StoredKey {
    /// Unwrapped; empty for a revoked key.
    pub dek: Zeroizing<Vec<u8>>,
    /// When the key was revoked (`cordon kbs revoke`): it is never released again.
    pub revoked_at: Option<u64>,
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
    keks: Keks,
    /// The database file, for [`Store::reader`].
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `kbs.sqlite3` in `data_dir` and brings its schema up to date.
    ///
    /// The store holds the DEKs: `data_dir` is made 0700 and the database with its `-wal` and
    /// `-shm` files 0600, whatever the umask; an existing directory or file open to other users
    /// loses those bits, with a warning (`private_files`).
    ///
    /// Secrets are wrapped under `keks.current`; rows wrapped under `keks.previous` (an
    /// unfinished rotation) are still read. A row wrapped under any other KEK is refused at once
    /// ([`StoreError::UnknownKek`]), not at its first release.
    pub fn open(data_dir: &Path, keks: Keks) -> Result<Store, StoreError> {
        Store::open_with(data_dir, keks, false)
    }

    /// [`Store::open`]; with `migrate_plaintext`, a store from before key custody that holds
    /// plaintext secrets is wrapped. Without it, such a store is refused: whoever made it chose
    /// its identity seed and DEKs, and a KBS whose KEK its TEE holds would otherwise adopt, wrap
    /// and attest a key the host knows. Migrate once, on the machine that made the store.
    pub fn open_with(
        data_dir: &Path,
        keks: Keks,
        migrate_plaintext: bool,
    ) -> Result<Store, StoreError> {
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
        let conn = connect_writer(data_dir, &path)?;
        let mut store = Store {
            conn,
            keks,
            path: path.clone(),
        };
        store.migrate(migrate_plaintext)?;
        store.check_kek_ids()?;
        // The WAL and shared-memory files exist now, with the database's mode; a check, and a
        // repair for files SQLite created before the database was 0600.
        crate::private_files::tighten_side_files(&path);
        crate::private_files::check_private(data_dir, &path).map_err(not_private)?;
        // Closing any descriptor of a file drops every POSIX lock the process holds on it, and
        // the files were just opened and closed: SQLite's locks on its shared-memory file went
        // with them. Another process opening the store would take itself for its only user and
        // reset that file under this connection's mapping of it. The connection is closed first
        // (a second one opened beside it would share its lock-less state) and made again.
        drop(std::mem::replace(
            &mut store.conn,
            Connection::open_in_memory()?,
        ));
        store.conn = connect_writer(data_dir, &path)?;
        Ok(store)
    }

    /// A second connection to this store's file that only reads (`query_only`): key lookups on
    /// it do not wait behind the writer's commits (WAL readers see the last committed state).
    pub fn reader(&self) -> Result<Store, StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(Store {
            conn,
            keks: self.keks.clone(),
            path: self.path.clone(),
        })
    }

    fn migrate(&mut self, migrate_plaintext: bool) -> Result<(), StoreError> {
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
        let mut wrapped = None;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            // Secrets are wrapped in the migration's own transaction: a crash leaves either the
            // old schema with its plaintext, or the new one with everything wrapped, never a
            // NULL `kek_id` at version 7 (which is read as corruption, never wrapped again).
            if i + 1 == WRAPPING_MIGRATION {
                let found = wrap_plaintext_rows(&tx, self.keks.current.as_ref())?;
                if (found.0 > 0 || found.1) && !migrate_plaintext {
                    // Dropped, not committed: the store stays as it was.
                    return Err(StoreError::PlaintextStore {
                        keys: found.0,
                        identity: found.1,
                    });
                }
                wrapped = Some(found);
            }
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        if let Some((keys, identity)) = wrapped.filter(|&(k, i)| k > 0 || i) {
            // The old cells were zeroed (secure_delete) as pages were written; VACUUM rebuilds
            // the file without free pages left from before secure_delete was on, and the
            // checkpoint empties the WAL, which held the pages of the migration and the VACUUM.
            self.conn.execute_batch("VACUUM;")?;
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            tracing::warn!(
                keys,
                identity,
                kek = %self.keks.current.id(),
                "this store held secrets unwrapped (made before key custody): they are wrapped \
                 now; backups made before now still hold them in plaintext"
            );
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

    /// The seed of the KBS's HPKE identity key, if one was made (unwrapped).
    pub fn identity_seed(&self) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        let v: Option<(Vec<u8>, Option<String>)> = self
            .conn
            .query_row(
                "SELECT hpke_seed, kek_id FROM identity WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((wrapped, kek_id)) = v else {
            return Ok(None);
        };
        let b = self.unwrap_row(
            Slot::IdentitySeed,
            IDENTITY_NAME,
            kek_id.as_deref(),
            &wrapped,
        )?;
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

    /// The identity retired by the latest rotation and when its overlap ends, if there was one.
    pub fn previous_identity_seed(&self) -> Result<Option<RetiredIdentity>, StoreError> {
        let v: Option<(Vec<u8>, String, i64)> = self
            .conn
            .query_row(
                "SELECT hpke_seed, kek_id, accept_until FROM identity_previous WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((wrapped, kek_id, until)) = v else {
            return Ok(None);
        };
        let b = self.unwrap_row(
            Slot::IdentitySeed,
            &previous_identity_name(until as u64),
            Some(&kek_id),
            &wrapped,
        )?;
        let seed: [u8; 32] = b.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "the previous identity seed is {} bytes, expected 32",
                b.len()
            ))
        })?;
        Ok(Some((Zeroizing::new(seed), until as u64)))
    }

    /// Deletes the retired identity once its overlap has ended at `now`: a retired seed kept
    /// forever could be brought back by a host that sets the clock back.
    pub fn forget_expired_identity(&self, now: u64) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM identity_previous WHERE id = 1 AND accept_until < ?1",
            params![now as i64],
        )? > 0)
    }

    /// Makes `new_seed` the identity, vouched for by the administrator's `admin_signature`
    /// (`cordon_proto::auth::vouch_identity` over its public key) and `audit_vouch`
    /// (`cordon_proto::checkpoint::vouch_audit_key` for the audit signing key the new seed
    /// derives), and keeps the one it replaces accepted until `accept_until`, in one transaction. Refused while the overlap of the
    /// previous rotation runs: the identity it retired would be dropped before its time.
    pub fn rotate_identity(
        &mut self,
        new_seed: &[u8; 32],
        admin_signature: &str,
        audit_vouch: &str,
        now: u64,
        accept_until: u64,
    ) -> Result<(), StoreError> {
        let previous = self.previous_identity_seed()?;
        let current = self.identity_seed()?;
        let w = identity_rotation(&self.keks, previous, current, new_seed, now, accept_until)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO identity_previous (id, hpke_seed, kek_id, retired_at, accept_until)
             VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET hpke_seed = excluded.hpke_seed,
                 kek_id = excluded.kek_id, retired_at = excluded.retired_at,
                 accept_until = excluded.accept_until",
            params![w.retired, w.kek_id, now as i64, accept_until as i64],
        )?;
        tx.execute(
            "UPDATE identity SET hpke_seed = ?1, kek_id = ?2, created_at = ?3 WHERE id = 1",
            params![w.fresh, w.kek_id, now as i64],
        )?;
        tx.execute(
            "UPDATE admin SET identity_signature = ?1 WHERE id = 1",
            params![admin_signature],
        )?;
        tx.execute(
            "INSERT INTO audit_key_vouch (id, admin_signature, created_at) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET admin_signature = excluded.admin_signature,
                 created_at = excluded.created_at",
            params![audit_vouch, now as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Stores the seed of the KBS's HPKE identity key, unless one exists; returns the stored seed.
    pub fn init_identity_seed(
        &self,
        seed: &[u8; 32],
        now: u64,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        let kek = &self.keks.current;
        let wrapped = kek.wrap(&wrap_aad(Slot::IdentitySeed, IDENTITY_NAME), seed)?;
        self.conn.execute(
            "INSERT OR IGNORE INTO identity (id, hpke_seed, created_at, kek_id) VALUES (1, ?1, ?2, ?3)",
            params![wrapped, now as i64, kek.id()],
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
        let wrapped = self.wrap_dek(&dek_binding(key_id, "admin", None, policy), dek)?;
        upsert_key(&self.conn, key_id, &wrapped, policy, now)
    }

    pub fn get_key(&self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT dek, policy, owner, kind, kek_id, revoked_at FROM keys WHERE key_id = ?1",
                params![key_id],
                |r| {
                    let owner: Option<Vec<u8>> = r.get(2)?;
                    let kind: String = r.get(3)?;
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, String>(1)?,
                        owner,
                        kind,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((wrapped, policy, owner, kind, kek_id, mut revoked_at)) = row else {
            return Ok(None);
        };
        if revoked_at.is_none() {
            // A row the host restored from before its revocation: the audit log still records
            // the revocation (and rewriting the log is caught by checkpoints, §4.9).
            if let Some(t) = revocation_in_audit(&self.conn, key_id)? {
                tracing::error!(key_id, "the store says this key is live, but the audit log records its revocation: the store was tampered with; refusing it");
                revoked_at = Some(t as i64);
            }
        }
        // Before unwrapping: a kind this build does not know is named as such.
        let parsed_kind = KeyKind::parse(&kind)?;
        let dek = match revoked_at {
            Some(_) => Zeroizing::new(Vec::new()),
            None => self.unwrap_row(
                Slot::Dek,
                &dek_binding(key_id, &kind, owner.as_deref(), &policy),
                kek_id.as_deref(),
                &wrapped,
            )?,
        };
        Ok(Some(StoredKey {
            dek,
            revoked_at: revoked_at.map(|t| t as u64),
            policy,
            kind: parsed_kind,
            owner: owner.and_then(|o| o.try_into().ok()),
        }))
    }

    /// Every key with its owner, policy and release count; never a DEK.
    pub fn key_listing(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT k.key_id, k.kind, k.owner, k.policy, k.created_at, k.updated_at, k.revoked_at,
                    k.kek_id,
                    (SELECT COUNT(*) FROM audit a
                      WHERE a.key_id = k.key_id AND a.kind = 'key_released'
                        AND a.verdict = 'accepted')
             FROM keys k ORDER BY k.key_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(KeyInfo {
                    key_id: r.get(0)?,
                    kind: r.get(1)?,
                    owner: r.get::<_, Option<Vec<u8>>>(2)?.map(hex::encode),
                    policy: r.get(3)?,
                    created_at: r.get::<_, i64>(4)? as u64,
                    updated_at: r.get::<_, i64>(5)? as u64,
                    revoked_at: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                    kek_id: r.get(7)?,
                    releases: r.get::<_, i64>(8)? as u64,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revokes a key, with its audit event, in one transaction: its DEK is erased (the row keeps
    /// its id, owner and policy, so the id is never reused and the listing still shows it), and
    /// every later release is denied. Revoking a revoked key is refused, naming when it was.
    pub fn revoke_key_audited(
        &mut self,
        key_id: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE keys SET revoked_at = ?2, dek = zeroblob(0), kek_id = NULL
             WHERE key_id = ?1 AND revoked_at IS NULL",
            params![key_id, event.time as i64],
        )?;
        if changed == 0 {
            return Err(match refusal(&tx, key_id)? {
                revoked @ StoreError::KeyRevoked { .. } => revoked,
                _ => StoreError::UnknownKey {
                    key_id: key_id.to_string(),
                },
            });
        }
        let stored = append_audit_in(&tx, event)?;
        tx.commit()?;
        // The row's old cells are zeroed (secure_delete); the WAL still holds the page with the
        // wrapped DEK until a checkpoint: run one now and truncate the WAL, so that the live files
        // keep no copy for the host to write back. (A copy taken before is a rollback, §4.10.)
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(stored)
    }

    /// Re-wraps every secret not wrapped under the current KEK (rows under the previous KEK),
    /// `batch` rows per transaction: a crash at any point leaves each row whole, under the old KEK
    /// or the new one, so a rotation killed midway is finished by running it again. Returns how
    /// many secrets were re-wrapped; `progress` is told the running count after each batch.
    pub fn rewrap_all(
        &mut self,
        batch: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1) as i64;
        let current = self.keks.current.id().to_string();
        let mut done = 0u64;
        // One pass in key order: a row that changed since it was read is left (for the caller's
        // final count and a second run), never read again and again.
        let mut after = String::new();
        loop {
            let rows: Vec<RewrapRow> = {
                let mut stmt = self.conn.prepare(
                    "SELECT key_id, dek, kek_id, kind, owner, policy FROM keys
                     WHERE revoked_at IS NULL AND (kek_id IS NULL OR kek_id <> ?1) AND key_id > ?3
                     ORDER BY key_id LIMIT ?2",
                )?;
                let rows = stmt
                    .query_map(params![current, batch, after], |r| {
                        Ok(RewrapRow {
                            key_id: r.get(0)?,
                            wrapped: r.get(1)?,
                            kek_id: r.get(2)?,
                            kind: r.get(3)?,
                            owner: r.get(4)?,
                            policy: r.get(5)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                rows
            };
            let Some(last) = rows.last() else { break };
            after = last.key_id.clone();
            let mut rewrapped = Vec::with_capacity(rows.len());
            for row in &rows {
                let binding =
                    dek_binding(&row.key_id, &row.kind, row.owner.as_deref(), &row.policy);
                let dek =
                    self.unwrap_row(Slot::Dek, &binding, row.kek_id.as_deref(), &row.wrapped)?;
                rewrapped.push((row, self.wrap_dek(&binding, &dek)?));
            }
            let tx = self.conn.transaction()?;
            for (row, w) in &rewrapped {
                // Only if unchanged since it was read, to the byte: a key rewritten meanwhile is
                // never put back to its old DEK.
                done += tx.execute(
                    "UPDATE keys SET dek = ?2, kek_id = ?3
                     WHERE key_id = ?1 AND dek = ?4 AND kind = ?5 AND owner IS ?6 AND policy = ?7
                       AND revoked_at IS NULL",
                    params![
                        row.key_id,
                        w.dek,
                        w.kek_id,
                        row.wrapped,
                        row.kind,
                        row.owner,
                        row.policy
                    ],
                )? as u64;
            }
            tx.commit()?;
            progress(done);
        }
        let identity: Option<(Vec<u8>, Option<String>)> = self
            .conn
            .query_row(
                "SELECT hpke_seed, kek_id FROM identity
                 WHERE id = 1 AND (kek_id IS NULL OR kek_id <> ?1)",
                params![current],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((wrapped, kek_id)) = identity {
            let seed = self.unwrap_row(
                Slot::IdentitySeed,
                IDENTITY_NAME,
                kek_id.as_deref(),
                &wrapped,
            )?;
            let w = self
                .keks
                .current
                .wrap(&wrap_aad(Slot::IdentitySeed, IDENTITY_NAME), &seed)?;
            done += self.conn.execute(
                "UPDATE identity SET hpke_seed = ?1, kek_id = ?2 WHERE id = 1 AND hpke_seed = ?3",
                params![w, current, wrapped],
            )? as u64;
            progress(done);
        }
        let previous: Option<(Vec<u8>, String, i64)> = self
            .conn
            .query_row(
                "SELECT hpke_seed, kek_id, accept_until FROM identity_previous
                 WHERE id = 1 AND kek_id <> ?1",
                params![current],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((wrapped, kek_id, until)) = previous {
            let name = previous_identity_name(until as u64);
            let seed = self.unwrap_row(Slot::IdentitySeed, &name, Some(&kek_id), &wrapped)?;
            let w = self
                .keks
                .current
                .wrap(&wrap_aad(Slot::IdentitySeed, &name), &seed)?;
            done += self.conn.execute(
                "UPDATE identity_previous SET hpke_seed = ?1, kek_id = ?2 WHERE id = 1 AND hpke_seed = ?3",
                params![w, current, wrapped],
            )? as u64;
            progress(done);
        }
        Ok(done)
    }

    /// How many secrets are wrapped under each KEK id (`None`: plaintext, from before wrapping).
    pub fn kek_usage(&self) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT kek_id, COUNT(*) FROM (
                SELECT kek_id FROM keys WHERE revoked_at IS NULL
                UNION ALL SELECT kek_id FROM identity
                UNION ALL SELECT kek_id FROM identity_previous)
             GROUP BY kek_id ORDER BY kek_id",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Wraps a DEK under the current KEK, bound to `binding` ([`dek_binding`]).
    fn wrap_dek(&self, binding: &str, dek: &[u8]) -> Result<WrappedDek, StoreError> {
        wrap_dek(&self.keks, binding, dek)
    }

    fn unwrap_row(
        &self,
        slot: Slot,
        name: &str,
        kek_id: Option<&str>,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        unwrap_secret(&self.keks, slot, name, kek_id, wrapped)
    }

    /// Refuses a store holding secrets wrapped under a KEK this KBS was not given.
    fn check_kek_ids(&self) -> Result<(), StoreError> {
        check_kek_usage(&self.keks, self.kek_usage()?)
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

    /// Commits a batch of attestations in one transaction (one fsync for all: group commit).
    /// Each is checked and applied in order; see [`AttestationCommit`] and
    /// [`AttestationOutcome`]. The first of two with one nonce wins, in a batch or across
    /// batches.
    pub fn commit_attestations(
        &mut self,
        batch: &[AttestationCommit],
        now: u64,
    ) -> Result<Vec<AttestationOutcome>, StoreError> {
        let tx = self.conn.transaction()?;
        prune_spent_challenges(&tx, now)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for c in batch {
            if pruned_range_of(&tx, c.expires_at)?.is_some() {
                outcomes.push(AttestationOutcome::Forgotten);
                continue;
            }
            let spent = tx
                .prepare_cached(
                    "INSERT INTO spent_challenges (nonce, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (nonce) DO NOTHING",
                )?
                // Clamped, never wrapped: a wrapped expiry would be pruned at once.
                .execute(params![c.nonce, c.expires_at.min(i64::MAX as u64) as i64])?;
            if spent == 0 {
                outcomes.push(AttestationOutcome::Spent);
                continue;
            }
            let mut withheld = Vec::new();
            for r in &c.releases {
                let live = match &r.key_id {
                    Some(id) => key_live(&tx, id)?,
                    None => false,
                };
                if live {
                    append_audit_in(&tx, &r.as_new())?;
                } else {
                    withheld.push(r.key_id.clone().unwrap_or_default());
                    append_audit_in(&tx, &r.withheld().as_new())?;
                }
            }
            for e in &c.events {
                append_audit_in(&tx, &e.as_new())?;
            }
            if let (Some(j), true) = (&c.job_runtime, withheld.is_empty()) {
                tx.execute(
                    "INSERT OR IGNORE INTO job_runtimes
                        (job_hash, signing_key, serve_policy, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![
                        j.job_hash.as_slice(),
                        j.signing_key.as_slice(),
                        j.serve_policy,
                        now as i64
                    ],
                )?;
            }
            outcomes.push(AttestationOutcome::Committed { withheld });
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Spent challenge nonces held (each until it expires and the floor passes it).
    pub fn spent_challenges(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM spent_challenges", [], |r| r.get(0))?;
        Ok(n as u64)
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
        let wrapped = self.wrap_dek(&dek_binding(key_id, "admin", None, policy), dek)?;
        let tx = self.conn.transaction()?;
        upsert_key(&tx, key_id, &wrapped, policy, event.time)?;
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
        let wrapped = self.wrap_dek(
            &dek_binding(key_id, "job_output", Some(runtime), policy),
            dek,
        )?;
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
            "INSERT OR IGNORE INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind, kek_id)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'job_output', ?6)",
            params![key_id, wrapped.dek, policy, event.time as i64, runtime.as_slice(), wrapped.kek_id],
        )?;
        if changed == 0 {
            return Err(refusal(&tx, key_id)?);
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
        let wrapped = self.wrap_dek(&dek_binding(key_id, "dataset", Some(owner), policy), dek)?;
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind, kek_id)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'dataset', ?6)
             ON CONFLICT(key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
                 updated_at = excluded.updated_at, kek_id = excluded.kek_id
             WHERE keys.kind = 'dataset' AND keys.owner = excluded.owner
                 AND keys.revoked_at IS NULL",
            params![
                key_id,
                wrapped.dek,
                policy,
                event.time as i64,
                owner.as_slice(),
                wrapped.kek_id
            ],
        )?;
        if changed == 0 {
            return Err(refusal(&tx, key_id)?);
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

/// SQLite's `synchronous` setting (see [`Store::set_synchronous`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is fsync'd before it is acknowledged: what the store opens with.
    Full,
    /// In WAL mode, commits are fsync'd only at checkpoints: an acknowledged write survives a
    /// crash or SIGKILL of the process, but the last ones may be lost on power loss.
    Normal,
}

impl Store {
    /// Sets SQLite's `synchronous` on this store's connection. The store always opens with
    /// [`Synchronous::Full`] and the KBS never calls this: `cordon bench kbs --sync normal` does,
    /// to measure what [`Synchronous::Normal`] would give.
    pub fn set_synchronous(&self, mode: Synchronous) -> Result<(), StoreError> {
        let value = match mode {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        self.conn.pragma_update(None, "synchronous", value)?;
        Ok(())
    }
}

fn upsert_key(
    conn: &Connection,
    key_id: &str,
    wrapped: &WrappedDek,
    policy: &str,
    now: u64,
) -> Result<(), StoreError> {
    let changed = conn.execute(
        "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind, kek_id)
         VALUES (?1, ?2, ?3, ?4, ?4, 'admin', ?5)
         ON CONFLICT(key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
             updated_at = excluded.updated_at, kek_id = excluded.kek_id
         WHERE keys.kind = 'admin' AND keys.revoked_at IS NULL",
        params![key_id, wrapped.dek, policy, now as i64, wrapped.kek_id],
    )?;
    // A dataset key stays its owner's and a job's output its job's: the admin API cannot replace
    // either. A revoked key stays revoked.
    if changed == 0 {
        return Err(refusal(conn, key_id)?);
    }
    Ok(())
}

/// When the audit log recorded the revocation of `key_id`, if it did (indexed: `audit_key`).
fn revocation_in_audit(conn: &Connection, key_id: &str) -> Result<Option<u64>, StoreError> {
    let t: Option<i64> = conn
        .prepare_cached(
            "SELECT MIN(time) FROM audit WHERE key_id = ?1 AND kind = 'key_revoked' AND verdict = 'accepted'",
        )?
        .query_row(params![key_id], |r| r.get(0))?;
    Ok(t.map(|t| t as u64))
}

/// The store's writing connection to `path`, in WAL mode with full sync; a store it cannot write
/// is refused ([`StoreError::ReadOnly`]) rather than opened read-only.
fn connect_writer(data_dir: &Path, path: &Path) -> Result<Connection, StoreError> {
    let read_only = || StoreError::ReadOnly {
        path: data_dir.display().to_string(),
    };
    // A store the KBS cannot write would answer every challenge with an error; refuse to
    // start instead, saying why. (SQLite opens an unwritable file read-only without a word.)
    let conn = Connection::open(path).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::CannotOpen) | Some(rusqlite::ErrorCode::ReadOnly) => read_only(),
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
    // Freed and overwritten cells are zeroed: a DEK row replaced or a plaintext row wrapped
    // leaves nothing behind in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// Whether `key_id` may still be released: it exists, is not marked revoked, and the audit log
/// records no revocation of it (a host that clears `revoked_at` does not bring a key back).
fn key_live(conn: &Connection, key_id: &str) -> Result<bool, StoreError> {
    let unrevoked: bool = conn
        .prepare_cached("SELECT revoked_at IS NULL FROM keys WHERE key_id = ?1")?
        .query_row(params![key_id], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    Ok(unrevoked && revocation_in_audit(conn, key_id)?.is_none())
}

/// Prunes the spent nonces that expired [`SPENT_CHALLENGE_GRACE`] before `now`, once the cutoff
/// has moved [`CHALLENGE_PRUNE_EVERY`] from the last prune's (either way: a clock set back must
/// not stop pruning), and records their expiries in the ranges of forgotten expiries
/// (`challenge::merge_pruned`), which only grow: a nonce whose expiry falls in one is refused
/// whatever the clock says.
fn prune_spent_challenges(conn: &Connection, now: u64) -> Result<(), StoreError> {
    let last: Option<u64> = conn
        .prepare_cached("SELECT last_cutoff FROM challenge_prune_state WHERE id = 1")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()?
        .map(|t| t.max(0) as u64);
    let cutoff = now.saturating_sub(SPENT_CHALLENGE_GRACE);
    if last.is_some_and(|last| cutoff.abs_diff(last) < CHALLENGE_PRUNE_EVERY) {
        return Ok(());
    }
    let pruned: Vec<u64> = conn
        .prepare_cached(
            "SELECT DISTINCT expires_at FROM spent_challenges WHERE expires_at < ?1
             ORDER BY expires_at",
        )?
        .query_map(params![cutoff as i64], |r| r.get::<_, i64>(0))?
        .map(|e| e.map(|e| e.max(0) as u64))
        .collect::<Result<_, _>>()?;
    if let (Some(&first), Some(&last)) = (pruned.first(), pruned.last()) {
        let gap = crate::challenge::PRUNED_RANGE_GAP;
        let near: Vec<(u64, u64)> = conn
            .prepare_cached(
                "SELECT lo, hi FROM challenge_pruned WHERE hi >= ?1 AND lo <= ?2 ORDER BY lo",
            )?
            .query_map(
                params![
                    first.saturating_sub(gap) as i64,
                    last.saturating_add(gap).min(i64::MAX as u64) as i64
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                    ))
                },
            )?
            .collect::<Result<_, _>>()?;
        for (lo, _) in &near {
            conn.execute(
                "DELETE FROM challenge_pruned WHERE lo = ?1",
                params![*lo as i64],
            )?;
        }
        for (lo, hi) in crate::challenge::merge_pruned(&near, &pruned) {
            conn.execute(
                "INSERT INTO challenge_pruned (lo, hi) VALUES (?1, ?2)",
                params![lo as i64, hi.min(i64::MAX as u64) as i64],
            )?;
        }
        conn.execute(
            "DELETE FROM spent_challenges WHERE expires_at < ?1",
            params![cutoff as i64],
        )?;
    }
    conn.execute(
        "INSERT INTO challenge_prune_state (id, last_cutoff) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET last_cutoff = excluded.last_cutoff",
        params![cutoff as i64],
    )?;
    Ok(())
}

/// The range of forgotten expiries `expires_at` falls in, if any (ranges are disjoint: the one
/// starting last at or before it).
fn pruned_range_of(conn: &Connection, expires_at: u64) -> Result<Option<(u64, u64)>, StoreError> {
    let e = expires_at.min(i64::MAX as u64) as i64;
    let range: Option<(i64, i64)> = conn
        .prepare_cached(
            "SELECT lo, hi FROM challenge_pruned WHERE lo <= ?1 ORDER BY lo DESC LIMIT 1",
        )?
        .query_row(params![e], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(range
        .filter(|&(_, hi)| hi >= e)
        .map(|(lo, hi)| (lo.max(0) as u64, hi.max(0) as u64)))
}

/// Why a key id could not be written: revoked, or held by another owner.
fn refusal(conn: &Connection, key_id: &str) -> Result<StoreError, StoreError> {
    let revoked: Option<Option<i64>> = conn
        .query_row(
            "SELECT revoked_at FROM keys WHERE key_id = ?1",
            params![key_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(match revoked.flatten() {
        Some(t) => StoreError::KeyRevoked {
            key_id: key_id.to_string(),
            revoked_at: t as u64,
        },
        None => StoreError::KeyOwned {
            key_id: key_id.to_string(),
        },
    })
}

/// The migration that wraps the plaintext secrets of older stores (see `MIGRATIONS`).
const WRAPPING_MIGRATION: usize = 7;

/// Wraps, under `kek`, the plaintext secrets a store from before key custody holds; returns how
/// many keys, and whether the identity seed, were wrapped.
fn wrap_plaintext_rows(tx: &Connection, kek: &dyn Kek) -> Result<(usize, bool), StoreError> {
    let rows: Vec<(String, Zeroizing<Vec<u8>>, String)> = {
        let mut stmt =
            tx.prepare("SELECT key_id, dek, kind, owner, policy FROM keys WHERE kek_id IS NULL")?;
        let rows = stmt
            .query_map([], |r| {
                let (key_id, kind, owner, policy): (String, String, Option<Vec<u8>>, String) =
                    (r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?);
                let binding = dek_binding(&key_id, &kind, owner.as_deref(), &policy);
                Ok((key_id, Zeroizing::new(r.get(1)?), binding))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows
    };
    for (key_id, dek, binding) in &rows {
        let w = kek.wrap(&wrap_aad(Slot::Dek, binding), dek)?;
        tx.execute(
            "UPDATE keys SET dek = ?2, kek_id = ?3 WHERE key_id = ?1",
            params![key_id, w, kek.id()],
        )?;
    }
    let seed: Option<Zeroizing<Vec<u8>>> = tx
        .query_row(
            "SELECT hpke_seed FROM identity WHERE id = 1 AND kek_id IS NULL",
            [],
            |r| r.get(0).map(Zeroizing::new),
        )
        .optional()?;
    if let Some(seed) = &seed {
        let w = kek.wrap(&wrap_aad(Slot::IdentitySeed, IDENTITY_NAME), seed)?;
        tx.execute(
            "UPDATE identity SET hpke_seed = ?1, kek_id = ?2 WHERE id = 1",
            params![w, kek.id()],
        )?;
    }
    Ok((rows.len(), seed.is_some()))
}

/// The seed of an identity retired by a rotation, and the end of its overlap window.
pub type RetiredIdentity = (Zeroizing<[u8; 32]>, u64);

/// The name of the retired identity's seed in its wrapping AAD: not the current one's, so that the
/// host cannot swap the two rows; and naming the end of its overlap, so that the host cannot
/// extend the overlap by editing `accept_until` (the seed would no longer unwrap).
pub(crate) fn previous_identity_name(accept_until: u64) -> String {
    format!("hpke-identity/previous/accept-until {accept_until}")
}

/// A row `rewrap_all` reads: what the DEK's binding needs, and the wrapped DEK.
struct RewrapRow {
    key_id: String,
    wrapped: Vec<u8>,
    kek_id: Option<String>,
    kind: String,
    owner: Option<Vec<u8>>,
    policy: String,
}
/// Wraps a DEK under the current KEK for storage (both backends), bound to `binding`
/// ([`dek_binding`]: its key id, kind, owner and policy digest).
pub(crate) fn wrap_dek(keks: &Keks, binding: &str, dek: &[u8]) -> Result<WrappedDek, StoreError> {
    let kek = &keks.current;
    Ok(WrappedDek {
        dek: kek.wrap(&wrap_aad(Slot::Dek, binding), dek)?,
        kek_id: kek.id().to_string(),
    })
}

/// Wraps the identity seed under the current KEK: the wrapped bytes and the KEK's id.
pub(crate) fn wrap_identity_seed(
    keks: &Keks,
    seed: &[u8; 32],
) -> Result<(Vec<u8>, String), StoreError> {
    let kek = &keks.current;
    Ok((
        kek.wrap(&wrap_aad(Slot::IdentitySeed, IDENTITY_NAME), seed)?,
        kek.id().to_string(),
    ))
}

/// What both stores write when they rotate the identity: the current seed wrapped as the retired
/// identity (accepted until `accept_until`), the new seed wrapped as the identity, and the KEK
/// that wraps both. Refused while the overlap of the previous rotation runs: the identity it
/// retired would be dropped before its time.
pub(crate) struct IdentityRotation {
    pub retired: Vec<u8>,
    pub fresh: Vec<u8>,
    pub kek_id: String,
}

pub(crate) fn identity_rotation(
    keks: &Keks,
    previous: Option<RetiredIdentity>,
    current: Option<Zeroizing<[u8; 32]>>,
    new_seed: &[u8; 32],
    now: u64,
    accept_until: u64,
) -> Result<IdentityRotation, StoreError> {
    if let Some((_, until)) = previous {
        if until > now {
            return Err(StoreError::OverlapRunning {
                accept_until: until,
            });
        }
    }
    let current = current.ok_or(StoreError::NoIdentity)?;
    let retired = keks.current.wrap(
        &wrap_aad(Slot::IdentitySeed, &previous_identity_name(accept_until)),
        current.as_slice(),
    )?;
    let (fresh, kek_id) = wrap_identity_seed(keks, new_seed)?;
    Ok(IdentityRotation {
        retired,
        fresh,
        kek_id,
    })
}

/// The KEK a row names, if the store was given it.
pub(crate) fn kek_named<'a>(keks: &'a Keks, kek_id: &str) -> Option<&'a dyn Kek> {
    let Keks { current, previous } = keks;
    if current.id() == kek_id {
        return Some(current.as_ref());
    }
    previous
        .as_ref()
        .filter(|p| p.id() == kek_id)
        .map(|p| p.as_ref())
}

/// Unwraps a stored secret with the KEK its row names (both backends).
pub(crate) fn unwrap_secret(
    keks: &Keks,
    slot: Slot,
    name: &str,
    kek_id: Option<&str>,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    // Plaintext rows are wrapped at open: one met later was written behind the KBS's back.
    let Some(kek_id) = kek_id else {
        return Err(StoreError::Corrupt(format!(
            "{} {name:?} is stored unwrapped",
            slot.label()
        )));
    };
    let kek = kek_named(keks, kek_id).ok_or_else(|| StoreError::UnknownKek {
        found: kek_id.to_string(),
        given: keks.describe(),
        entries: 1,
    })?;
    kek.unwrap(&wrap_aad(slot, name), wrapped).map_err(|_| {
        StoreError::Custody(CustodyError::Unwrap {
            slot: slot.label(),
            name: name.to_string(),
            kek_id: kek_id.to_string(),
        })
    })
}

/// The identity seed unwrapped, checked to be 32 bytes (both backends).
pub(crate) fn unwrap_identity_seed(
    keks: &Keks,
    kek_id: Option<&str>,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let b = unwrap_secret(keks, Slot::IdentitySeed, IDENTITY_NAME, kek_id, wrapped)?;
    if b.len() != 32 {
        return Err(StoreError::Corrupt(format!(
            "the identity seed is {} bytes, expected 32",
            b.len()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&b);
    Ok(seed)
}

/// Refuses a store holding secrets wrapped under a KEK it was not given (`usage`: see
/// [`Store::kek_usage`]).
pub(crate) fn check_kek_usage(
    keks: &Keks,
    usage: Vec<(Option<String>, u64)>,
) -> Result<(), StoreError> {
    for (kek_id, entries) in usage {
        let Some(found) = kek_id else { continue };
        if kek_named(keks, &found).is_none() {
            return Err(StoreError::UnknownKek {
                found,
                given: keks.describe(),
                entries,
            });
        }
    }
    Ok(())
}

/// The name of the identity seed's row in its wrapping AAD.
pub(crate) const IDENTITY_NAME: &str = "hpke-identity/1";

/// A DEK wrapped for storage, with the KEK that wrapped it.
pub(crate) struct WrappedDek {
    pub(crate) dek: Vec<u8>,
    pub(crate) kek_id: String,
}

fn append_audit_in(
    tx: &rusqlite::Transaction<'_>,
    e: &NewAuditEvent<'_>,
) -> Result<AuditEvent, StoreError> {
    let head: Option<(i64, String)> = tx
        .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, prev) = match head {
        Some((last, hash)) => (last + 1, hash),
        None => (1, "0".repeat(64)),
    };
    let event = chained_event(seq, &prev, e);
    tx.prepare_cached(
        "INSERT INTO audit (seq, time, kind, key_id, claims_digest, verdict, measurement, detail,
                            prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
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
    ])?;
    Ok(event)
}

/// The event `e` as stored at `seq` after the event hashed `prev_hash` (both stores): its detail
/// as [`audit_text`] keeps it, and its hash.
pub(crate) fn chained_event(seq: i64, prev_hash: &str, e: &NewAuditEvent<'_>) -> AuditEvent {
    let mut event = AuditEvent {
        seq,
        time: e.time,
        kind: e.kind.into(),
        key_id: e.key_id.map(Into::into),
        claims_digest: e.claims_digest.map(Into::into),
        verdict: e.verdict.into(),
        measurement: e.measurement.map(Into::into),
        detail: audit_text(e.detail),
        hash: String::new(),
    };
    event.hash = audit_hash(prev_hash, &event);
    event
}

/// An event's detail as both stores keep it: NUL, which PostgreSQL refuses in text (and which a
/// job spec's party name may carry into a denial's reasons), becomes U+FFFD. Applied before the
/// event is hashed, so the chain covers what is stored.
pub(crate) fn audit_text(detail: &str) -> String {
    detail.replace('\0', "\u{FFFD}")
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
    use crate::custody::MemoryKek;
    use std::sync::Arc;

    /// One fixed KEK, so that a test can reopen its store.
    fn test_keks() -> Keks {
        Keks::new(Arc::new(MemoryKek::new([0x42; 32])))
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), test_keks()).unwrap();
        (dir, store)
    }

    /// Spent nonces are kept until they expired a grace ago, and no longer: the table
    /// holds what was spent within about a TTL and the prune interval, whatever the traffic.
    #[test]
    fn spent_nonces_are_pruned_once_expired_and_their_expiries_kept() {
        let (_d, mut s) = temp_store();
        let spend = |s: &mut Store, n: u8, expires_at: u64, now: u64| {
            let c = AttestationCommit {
                nonce: vec![n],
                expires_at,
                releases: vec![],
                events: vec![],
                job_runtime: None,
            };
            s.commit_attestations(&[c], now).unwrap()
        };
        let t = 10_000;
        for n in 0..5u8 {
            spend(&mut s, n, t + 60, t);
        }
        assert_eq!(s.spent_challenges().unwrap(), 5);
        // Spent nonces are kept SPENT_CHALLENGE_GRACE past expiry: nothing pruned yet.
        spend(&mut s, 9, t + 200, t + 60);
        assert_eq!(s.spent_challenges().unwrap(), 6);
        // Past expiry + lag + the prune interval: the five are gone, the sixth kept.
        spend(
            &mut s,
            10,
            t + 300,
            t + 60 + SPENT_CHALLENGE_GRACE + CHALLENGE_PRUNE_EVERY + 1,
        );
        assert_eq!(s.spent_challenges().unwrap(), 2);
        // A spend with an expiry below the floor is refused and stores nothing.
        assert!(matches!(
            spend(&mut s, 0, t + 60, t).as_slice(),
            [AttestationOutcome::Forgotten]
        ));
        assert_eq!(s.spent_challenges().unwrap(), 2);
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
        let s = Store::open(d.path(), test_keks()).unwrap();
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
        drop(Store::open(dir.path(), test_keks()).unwrap());
        let conn = Connection::open(dir.path().join("kbs.sqlite3")).unwrap();
        conn.execute_batch(
            "DROP TABLE spent_challenges; DROP TABLE challenge_pruned;
             DROP TABLE challenge_prune_state;
             CREATE TABLE nonces (nonce BLOB PRIMARY KEY, expires_at INTEGER NOT NULL,
                                  used INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX nonces_expiry ON nonces (expires_at);
             DROP TABLE audit_key_vouch;
             DROP TABLE nonce_floor; DROP INDEX request_nonces_share;
             ALTER TABLE request_nonces DROP COLUMN share;
             DROP INDEX request_nonces_party; ALTER TABLE request_nonces DROP COLUMN party;
             DROP INDEX keys_kind_owner;
             ALTER TABLE job_runtimes DROP COLUMN output_key_id;
             ALTER TABLE keys DROP COLUMN kek_id; ALTER TABLE keys DROP COLUMN revoked_at;
             ALTER TABLE identity DROP COLUMN kek_id; DROP TABLE identity_previous;
             DROP INDEX audit_key;
             PRAGMA user_version = 4;",
        )
        .unwrap();
        drop(conn);
        let s = Store::open(dir.path(), test_keks()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        s.conn
            .execute("UPDATE job_runtimes SET output_key_id = 'k'", [])
            .unwrap();
    }

    #[test]
    fn schema_is_versioned_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), test_keks()).unwrap();
            assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
            s.put_key("k", &[1; 32], "policy", 1).unwrap();
        }
        let s = Store::open(dir.path(), test_keks()).unwrap();
        assert_eq!(s.get_key("k").unwrap().unwrap().dek.as_slice(), &[1; 32]);
        s.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(s);
        assert!(matches!(
            Store::open(dir.path(), test_keks()),
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

    /// Every file of a data directory, whole.
    fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect()
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_store_from_before_custody_is_wrapped_and_keeps_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let dek = [0xA5u8; 32];
        let seed = [0x5Au8; 32];
        {
            // A store as schema 6 left it: DEKs and the identity seed in plaintext.
            let conn = Connection::open(dir.path().join("kbs.sqlite3")).unwrap();
            for sql in &MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            for i in 0..50 {
                conn.execute(
                    "INSERT INTO keys (key_id, dek, policy, created_at, updated_at) VALUES (?1, ?2, 'p', 1, 1)",
                    params![format!("k{i}"), dek.as_slice()],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO identity (id, hpke_seed, created_at) VALUES (1, ?1, 1)",
                params![seed.as_slice()],
            )
            .unwrap();
            // A deleted row leaves its plaintext in a free page.
            conn.execute("DELETE FROM keys WHERE key_id = 'k49'", [])
                .unwrap();
        }
        let plain = files_of(dir.path());
        assert!(
            plain.iter().any(|(_, b)| contains(b, &dek)),
            "the fixture holds the DEK"
        );
        // Not without being asked: it could be a store planted by the host.
        let e = Store::open(dir.path(), test_keks()).err().unwrap();
        assert!(
            matches!(
                e,
                StoreError::PlaintextStore {
                    keys: 49,
                    identity: true
                }
            ),
            "{e}"
        );
        let s = Store::open_with(dir.path(), test_keks(), true).unwrap();
        assert_eq!(s.get_key("k7").unwrap().unwrap().dek.as_slice(), &dek);
        assert_eq!(s.identity_seed().unwrap().unwrap().as_slice(), &seed);
        for (name, bytes) in files_of(dir.path()) {
            assert!(
                !contains(&bytes, &dek),
                "{name} still holds a DEK in plaintext"
            );
            assert!(
                !contains(&bytes, &seed),
                "{name} still holds the identity seed"
            );
        }
        assert_eq!(
            s.kek_usage().unwrap(),
            vec![(Some(test_keks().current.id().to_string()), 50)]
        );
    }

    #[test]
    fn a_wrapped_secret_moved_to_another_row_does_not_open() {
        let (_d, s) = temp_store();
        s.put_key("a", &[1; 32], "p", 1).unwrap();
        s.put_key("b", &[2; 32], "p", 1).unwrap();
        s.init_identity_seed(&[3; 32], 1).unwrap();
        // The host swaps two wrapped DEKs, and copies one into the identity slot.
        let blob = |id: &str| -> Vec<u8> {
            s.conn
                .query_row("SELECT dek FROM keys WHERE key_id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        let (a, b) = (blob("a"), blob("b"));
        for (id, w) in [("a", &b), ("b", &a)] {
            s.conn
                .execute("UPDATE keys SET dek = ?2 WHERE key_id = ?1", params![id, w])
                .unwrap();
        }
        s.conn
            .execute("UPDATE identity SET hpke_seed = ?1", [&a])
            .unwrap();
        for id in ["a", "b"] {
            let e = s.get_key(id).err().expect("a moved DEK opened");
            assert!(
                matches!(e, StoreError::Custody(CustodyError::Unwrap { .. })),
                "{e}"
            );
        }
        assert!(s.identity_seed().is_err());
        // And a NULL kek_id after custody is corruption, never taken for plaintext.
        s.conn
            .execute("UPDATE keys SET kek_id = NULL WHERE key_id = 'a'", [])
            .unwrap();
        assert!(matches!(s.get_key("a"), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_store_under_another_kek_is_refused_until_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let old: Arc<dyn Kek> = Arc::new(MemoryKek::new([1; 32]));
        let new: Arc<dyn Kek> = Arc::new(MemoryKek::new([2; 32]));
        {
            let s = Store::open(dir.path(), Keks::new(old.clone())).unwrap();
            for i in 0..7 {
                s.put_key(&format!("k{i}"), &[i; 32], "p", 1).unwrap();
            }
            s.init_identity_seed(&[9; 32], 1).unwrap();
        }
        let e = Store::open(dir.path(), Keks::new(new.clone()))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(
            matches!(e, StoreError::UnknownKek { entries: 8, .. }),
            "{msg}"
        );
        assert!(msg.contains(old.id()) && msg.contains(new.id()), "{msg}");
        let both = Keks {
            current: new.clone(),
            previous: Some(old.clone()),
        };
        let mut s = Store::open(dir.path(), both).unwrap();
        // Readable mid-rotation through the previous KEK; new writes use the new one.
        assert_eq!(s.get_key("k3").unwrap().unwrap().dek.as_slice(), &[3; 32]);
        let mut seen = vec![];
        assert_eq!(s.rewrap_all(3, |n| seen.push(n)).unwrap(), 8);
        assert_eq!(seen, vec![3, 6, 7, 8]);
        drop(s);
        assert!(Store::open(dir.path(), Keks::new(old)).is_err());
        let s = Store::open(dir.path(), Keks::new(new)).unwrap();
        for i in 0..7u8 {
            assert_eq!(
                s.get_key(&format!("k{i}")).unwrap().unwrap().dek.as_slice(),
                &[i; 32]
            );
        }
        assert_eq!(s.identity_seed().unwrap().unwrap().as_slice(), &[9; 32]);
    }

    /// A KEK that stops wrapping after `left` calls: a rotation that fails midway.
    struct FailingKek {
        inner: MemoryKek,
        left: std::sync::atomic::AtomicI64,
    }

    impl Kek for FailingKek {
        fn id(&self) -> &str {
            self.inner.id()
        }
        fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
            if self.left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
                return Err(CustodyError::Pkcs11("the HSM went away".into()));
            }
            self.inner.wrap(aad, secret)
        }
        fn unwrap(
            &self,
            aad: &[u8],
            w: &[u8],
        ) -> Result<Zeroizing<Vec<u8>>, crate::custody::UnwrapFailed> {
            self.inner.unwrap(aad, w)
        }
    }

    #[test]
    fn a_rotation_that_fails_midway_leaves_every_key_readable_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let old: Arc<dyn Kek> = Arc::new(MemoryKek::new([1; 32]));
        {
            let s = Store::open(dir.path(), Keks::new(old.clone())).unwrap();
            for i in 0..20u8 {
                s.put_key(&format!("k{i}"), &[i; 32], "p", 1).unwrap();
            }
        }
        let failing: Arc<dyn Kek> = Arc::new(FailingKek {
            inner: MemoryKek::new([2; 32]),
            left: 11.into(),
        });
        let mut s = Store::open(
            dir.path(),
            Keks {
                current: failing,
                previous: Some(old.clone()),
            },
        )
        .unwrap();
        assert!(s.rewrap_all(4, |_| {}).is_err());
        drop(s);
        let new: Arc<dyn Kek> = Arc::new(MemoryKek::new([2; 32]));
        let mut s = Store::open(
            dir.path(),
            Keks {
                current: new.clone(),
                previous: Some(old),
            },
        )
        .unwrap();
        let usage = s.kek_usage().unwrap();
        // Two whole batches landed; the third failed before its transaction.
        assert_eq!(
            usage
                .iter()
                .find(|(id, _)| id.as_deref() == Some(new.id()))
                .unwrap()
                .1,
            8
        );
        for i in 0..20u8 {
            assert_eq!(
                s.get_key(&format!("k{i}")).unwrap().unwrap().dek.as_slice(),
                &[i; 32]
            );
        }
        assert_eq!(s.rewrap_all(4, |_| {}).unwrap(), 12);
        assert_eq!(
            s.kek_usage().unwrap(),
            vec![(Some(new.id().to_string()), 20)]
        );
    }

    #[test]
    fn a_revoked_key_loses_its_dek_and_its_id_is_never_reused() {
        let (_d, mut s) = temp_store();
        s.put_key("k", &[0xC3; 32], "p", 1).unwrap();
        let event = |t| NewAuditEvent {
            time: t,
            kind: "key_revoked",
            key_id: Some("k"),
            claims_digest: None,
            verdict: "accepted",
            measurement: None,
            detail: "test",
        };
        s.revoke_key_audited("k", &event(5)).unwrap();
        let k = s.get_key("k").unwrap().unwrap();
        assert_eq!(k.revoked_at, Some(5));
        assert!(k.dek.is_empty());
        let raw: Vec<u8> = s
            .conn
            .query_row("SELECT dek FROM keys WHERE key_id = 'k'", [], |r| r.get(0))
            .unwrap();
        assert!(raw.is_empty(), "the wrapped DEK is erased");
        assert!(matches!(
            s.revoke_key_audited("k", &event(6)),
            Err(StoreError::KeyRevoked { revoked_at: 5, .. })
        ));
        assert!(matches!(
            s.put_key("k", &[1; 32], "p", 7),
            Err(StoreError::KeyRevoked { .. })
        ));
        assert!(matches!(
            s.put_dataset_key_audited("k", &[1; 32], "p", &[4; 32], &event(7)),
            Err(StoreError::KeyRevoked { .. }) | Err(StoreError::KeyOwned { .. })
        ));
        assert!(matches!(
            s.revoke_key_audited("nope", &event(6)),
            Err(StoreError::UnknownKey { .. })
        ));
        let listed = s.key_listing().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].revoked_at, Some(5));
        assert_eq!(listed[0].kek_id, None);
        // The revocation is in the audit log.
        assert_eq!(
            s.audit_events().unwrap().last().unwrap().kind,
            "key_revoked"
        );
    }

    #[test]
    fn an_identity_rotation_keeps_the_old_seed_for_its_overlap_only_once_at_a_time() {
        let (_d, mut s) = temp_store();
        assert!(matches!(
            s.rotate_identity(&[2; 32], "sig", "av", 10, 100),
            Err(StoreError::NoIdentity)
        ));
        s.init_identity_seed(&[1; 32], 1).unwrap();
        s.set_admin(&[0; 32], &[5; 32], "sig-1").unwrap();
        s.rotate_identity(&[2; 32], "sig-2", "av-2", 10, 100)
            .unwrap();
        assert_eq!(s.identity_seed().unwrap().unwrap().as_slice(), &[2; 32]);
        let (old, until) = s.previous_identity_seed().unwrap().unwrap();
        assert_eq!((old.as_slice(), until), (&[1u8; 32][..], 100));
        assert_eq!(s.identity_signature().unwrap().as_deref(), Some("sig-2"));
        assert_eq!(s.audit_key_vouch().unwrap().as_deref(), Some("av-2"));
        // Not again while the overlap runs: the retired seed would be lost before its time.
        assert!(matches!(
            s.rotate_identity(&[3; 32], "sig-3", "av-3", 50, 200),
            Err(StoreError::OverlapRunning { accept_until: 100 })
        ));
        s.rotate_identity(&[3; 32], "sig-3", "av-3", 101, 200)
            .unwrap();
        assert_eq!(
            s.previous_identity_seed().unwrap().unwrap().0.as_slice(),
            &[2; 32]
        );
        // The host cannot swap the current and retired seeds.
        let cur: Vec<u8> = s
            .conn
            .query_row("SELECT hpke_seed FROM identity", [], |r| r.get(0))
            .unwrap();
        let prev: Vec<u8> = s
            .conn
            .query_row("SELECT hpke_seed FROM identity_previous", [], |r| r.get(0))
            .unwrap();
        s.conn
            .execute("UPDATE identity SET hpke_seed = ?1", [&prev])
            .unwrap();
        s.conn
            .execute("UPDATE identity_previous SET hpke_seed = ?1", [&cur])
            .unwrap();
        assert!(s.identity_seed().is_err());
        assert!(s.previous_identity_seed().is_err());
    }
}
