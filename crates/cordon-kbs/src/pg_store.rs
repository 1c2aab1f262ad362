//! PostgreSQL storage, for several KBS replicas on one database (behind a load balancer).
//!
//! The schema mirrors the SQLite store's latest version ([`crate::store`]), versioned in a
//! `schema_version` table; the first replica to start runs the migrations, holding a transaction
//! advisory lock, and the others wait for it. Every secret is wrapped under the root KEK with the
//! SQLite store's own code ([`crate::store::wrap_dek`], [`crate::store::unwrap_secret`]): nothing
//! secret is in the database unwrapped, and every replica needs the same KEK.
//!
//! What SQLite got from one process and the KBS's mutex, this store gets from PostgreSQL:
//! - a challenge is consumed by one conditional `UPDATE … WHERE NOT used` (row lock: of two
//!   replicas using one nonce at once, the second re-reads the row and changes nothing);
//! - the audit log stays one hash chain: each append takes a transaction advisory lock, reads the
//!   head and inserts, in the same transaction as the write it records, so appends from every
//!   replica are serialised and each links to the one committed before it;
//! - signed-request nonces: each use updates the nonce floor row first (`INSERT … ON CONFLICT DO
//!   UPDATE … RETURNING`), which row-locks it until commit; the prune, the replay check, the share
//!   counts and the insert that follow are therefore one serial step across replicas, and the
//!   floor only ever grows (`GREATEST`);
//! - counted bounds (challenges held, dataset keys per owner and in all) are checked under an
//!   advisory lock of their own, in the transaction that writes, so concurrent writers cannot
//!   both pass a count that only one fits in;
//! - every write with its audit event is one transaction: a replica killed midway leaves neither.
//!
//! Locks are taken in one order (dataset quota, then rows, then the audit head) so that
//! transactions cannot deadlock. Connections have no TLS (`NoTls`): use a Unix socket or loopback;
//! a remote PostgreSQL needs a rustls connector (see docs/deployment.md).

use crate::custody::Keks;
use crate::custody::{dek_binding, Slot};
use crate::keystore::{DatasetQuota, KeyStore};
use crate::store::{
    audit_hash, check_kek_usage, unwrap_identity_seed, unwrap_secret, wrap_dek, wrap_identity_seed,
    KeyKind, NewAuditEvent, NonceShare, NonceUse, RequestNonceUse, RetiredIdentity, StoreError,
    StoredKey, WrappedDek, EXPIRED_CHALLENGE_GRACE,
};
use cordon_proto::kbs::{AuditEvent, KeyInfo};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Transaction};
use zeroize::Zeroizing;

/// The schema, one migration per version; `schema_version.version` is how many have run.
const PG_MIGRATIONS: &[&str] = &[
    // 1: the SQLite store's schema at its version 7, at once. Secrets (`keys.dek`,
    //    `identity.hpke_seed`) are wrapped by the KEK named in `kek_id` (NULL only for a revoked
    //    key, whose DEK is erased).
    "CREATE TABLE admin (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        token_sha256 BYTEA NOT NULL,
        public_key BYTEA,
        identity_signature TEXT);
     CREATE TABLE keys (
        key_id TEXT PRIMARY KEY,
        dek BYTEA NOT NULL,
        policy TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        owner BYTEA,
        kind TEXT NOT NULL DEFAULT 'admin',
        kek_id TEXT,
        revoked_at BIGINT);
     CREATE INDEX keys_kind_owner ON keys (kind, owner);
     CREATE TABLE nonces (
        nonce BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        used BOOLEAN NOT NULL DEFAULT false);
     CREATE INDEX nonces_expiry ON nonces (expires_at);
     CREATE TABLE audit (
        seq BIGINT PRIMARY KEY,
        time BIGINT NOT NULL,
        kind TEXT NOT NULL,
        key_id TEXT,
        claims_digest TEXT,
        verdict TEXT NOT NULL,
        measurement TEXT,
        detail TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL);
     CREATE INDEX audit_key_kind ON audit (key_id, kind);
     CREATE TABLE job_runtimes (
        job_hash BYTEA NOT NULL,
        signing_key BYTEA NOT NULL,
        serve_policy TEXT,
        created_at BIGINT NOT NULL,
        output_key_id TEXT,
        PRIMARY KEY (job_hash, signing_key));
     CREATE TABLE identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hpke_seed BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        kek_id TEXT);
     CREATE TABLE request_nonces (
        nonce BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        party BYTEA,
        share TEXT NOT NULL);
     CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);
     CREATE INDEX request_nonces_share ON request_nonces (share, party);
     CREATE TABLE nonce_floor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_at BIGINT NOT NULL);",
    // 2: the SQLite store's migrations 8 to 10 (identity rotation is SQLite-only, `kbs
    //    rotate-identity`: the table exists so both stores read it the same way; the
    //    administrator's vouch for the audit signing key; releases counted by key).
    "CREATE TABLE identity_previous (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hpke_seed BYTEA NOT NULL,
        kek_id TEXT NOT NULL,
        retired_at BIGINT NOT NULL,
        accept_until BIGINT NOT NULL);
     CREATE TABLE audit_key_vouch (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        admin_signature TEXT NOT NULL,
        created_at BIGINT NOT NULL);
     CREATE INDEX audit_key ON audit (key_id, kind, verdict);",
];

/// Transaction advisory lock ids ("cordon" in ASCII, then a number): held until commit.
const MIGRATION_LOCK: i64 = 0x636f_7264_6f6e_0001;
const AUDIT_LOCK: i64 = 0x636f_7264_6f6e_0002;
const CHALLENGE_LOCK: i64 = 0x636f_7264_6f6e_0003;
const DATASET_LOCK: i64 = 0x636f_7264_6f6e_0004;

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        match e.code() {
            Some(c) if *c == SqlState::DISK_FULL => StoreError::Full,
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED => {
                StoreError::Busy(format!("the database broke a deadlock: {e}"))
            }
            _ => StoreError::Postgres(e),
        }
    }
}

/// The KBS's store on PostgreSQL. One connection per replica: the KBS serialises its store calls
/// (one at a time, on blocking threads), and replicas scale out.
pub struct PgStore {
    /// Always `Some` but while being dropped (see `Drop`).
    client: Option<Client>,
    config: postgres::Config,
    keks: Keks,
}

/// The synchronous client closes its connection by blocking on its own runtime, which panics
/// inside another runtime: a KBS dropped by an async task (its server stopping) would. There, the
/// client is dropped on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = std::thread::Builder::new()
                    .name("pg-close".into())
                    .spawn(move || drop(client));
            } else {
                drop(client);
            }
        }
    }
}

impl PgStore {
    /// Connects (`postgres://user@host/db`, or `host=/run/postgresql dbname=cordon`), brings the
    /// schema up to date under the migration lock, and refuses a database holding secrets wrapped
    /// under a KEK this replica was not given ([`StoreError::UnknownKek`]).
    pub fn connect(url: &str, keks: Keks) -> Result<PgStore, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| StoreError::Config(format!("database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.application_name("cordon-kbs");
        let client = config.connect(NoTls)?;
        let mut store = PgStore {
            client: Some(client),
            config,
            keks,
        };
        store.migrate()?;
        let usage = store.kek_usage()?;
        check_kek_usage(&store.keks, usage)?;
        Ok(store)
    }

    /// The connection, made again if the server closed it (a database restart): the call that
    /// met the closed connection failed, the next one goes through.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        match &mut self.client {
            Some(c) if !c.is_closed() => {}
            slot => {
                tracing::warn!("the PostgreSQL connection was closed; reconnecting");
                *slot = Some(self.config.connect(NoTls)?);
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Config("the PostgreSQL connection is gone".into()))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let mut tx = self.client()?.transaction()?;
        // The first replica to start migrates; the others wait here, then find nothing to do.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                version BIGINT NOT NULL)",
        )?;
        let version: i64 = tx
            .query_opt("SELECT version FROM schema_version WHERE id = 1", &[])?
            .map_or(0, |r| r.get(0));
        let known = PG_MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known,
            });
        }
        for sql in PG_MIGRATIONS.iter().skip(version.max(0) as usize) {
            tx.batch_execute(sql)?;
        }
        tx.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&known],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// How many migrations the database has had.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client()?
            .query_one("SELECT version FROM schema_version WHERE id = 1", &[])?
            .get(0))
    }

    /// How many secrets are wrapped under each KEK id.
    pub fn kek_usage(&mut self) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        let rows = self.client()?.query(
            "SELECT kek_id, COUNT(*) FROM (
                SELECT kek_id FROM keys WHERE revoked_at IS NULL
                UNION ALL SELECT kek_id FROM identity) s
             GROUP BY kek_id ORDER BY kek_id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    fn wrap(&self, binding: &str, dek: &[u8]) -> Result<WrappedDek, StoreError> {
        wrap_dek(&self.keks, binding, dek)
    }
}

/// Why a key id could not be written: revoked, or held by another owner.
fn refusal(c: &mut impl GenericClient, key_id: &str) -> Result<StoreError, StoreError> {
    let revoked: Option<i64> = c
        .query_opt("SELECT revoked_at FROM keys WHERE key_id = $1", &[&key_id])?
        .and_then(|r| r.get(0));
    Ok(match revoked {
        Some(t) => StoreError::KeyRevoked {
            key_id: key_id.to_string(),
            revoked_at: t as u64,
        },
        None => StoreError::KeyOwned {
            key_id: key_id.to_string(),
        },
    })
}

/// Appends `e` to the chain inside `tx`, the transaction of the write it records. The advisory
/// lock serialises appends from every replica until `tx` ends: the head read here is the last
/// committed event, and no other append can commit between this one's read and its commit.
fn append_audit_in(
    tx: &mut Transaction<'_>,
    e: &NewAuditEvent<'_>,
) -> Result<AuditEvent, StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
    let head = tx.query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])?;
    let (last, prev): (i64, String) = match head {
        Some(r) => (r.get(0), r.get(1)),
        None => (0, "0".repeat(64)),
    };
    let mut event = AuditEvent {
        seq: last + 1,
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &event.seq,
            &(event.time as i64),
            &event.kind,
            &event.key_id,
            &event.claims_digest,
            &event.verdict,
            &event.measurement,
            &event.detail,
            &prev,
            &event.hash,
        ],
    )?;
    Ok(event)
}

fn bytes32(v: Option<Vec<u8>>) -> Option<[u8; 32]> {
    v.and_then(|b| b.try_into().ok())
}

impl KeyStore for PgStore {
    fn identity_seed(&mut self) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT hpke_seed, kek_id FROM identity WHERE id = 1", &[])?;
        let Some(row) = row else { return Ok(None) };
        let wrapped: Vec<u8> = row.get(0);
        let kek_id: Option<String> = row.get(1);
        Ok(Some(unwrap_identity_seed(
            &self.keks,
            kek_id.as_deref(),
            &wrapped,
        )?))
    }

    fn init_identity_seed(
        &mut self,
        seed: &[u8; 32],
        now: u64,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        let (wrapped, kek_id) = wrap_identity_seed(&self.keks, seed)?;
        // Of replicas starting at once on an empty database, the first insert wins and every
        // replica reads that seed back.
        self.client()?.execute(
            "INSERT INTO identity (id, hpke_seed, created_at, kek_id) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
            &[&wrapped, &(now as i64), &kek_id],
        )?;
        self.identity_seed()?
            .ok_or_else(|| StoreError::Corrupt("the identity seed vanished once stored".into()))
    }

    fn admin_token_hash(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT token_sha256 FROM admin WHERE id = 1", &[])?;
        Ok(bytes32(row.map(|r| r.get(0))))
    }

    fn admin_public_key(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT public_key FROM admin WHERE id = 1", &[])?;
        Ok(bytes32(row.and_then(|r| r.get(0))))
    }

    fn identity_signature(&mut self) -> Result<Option<String>, StoreError> {
        let row = self
            .client()?
            .query_opt("SELECT identity_signature FROM admin WHERE id = 1", &[])?;
        Ok(row.and_then(|r| r.get(0)))
    }

    fn set_admin(
        &mut self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        identity_signature: &str,
    ) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO admin (id, token_sha256, public_key, identity_signature)
             VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET token_sha256 = excluded.token_sha256,
                 public_key = excluded.public_key,
                 identity_signature = excluded.identity_signature",
            &[
                &token_hash.as_slice(),
                &public_key.as_slice(),
                &identity_signature,
            ],
        )?;
        Ok(())
    }

    fn use_request_nonce(
        &mut self,
        nonce: &[u8],
        time: u64,
        keep: u64,
        now: u64,
        share: NonceShare,
    ) -> Result<RequestNonceUse, StoreError> {
        let mut tx = self.client()?.transaction()?;
        // Raising the floor row-locks it until commit: every use of a request nonce, on every
        // replica, passes through here one at a time, so the checks below hold until the insert
        // commits. The floor is the latest `now` any replica pruned at.
        let pruned_at: i64 = tx
            .query_one(
                "INSERT INTO nonce_floor (id, pruned_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE
                     SET pruned_at = GREATEST(nonce_floor.pruned_at, excluded.pruned_at)
                 RETURNING pruned_at",
                &[&(now as i64)],
            )?
            .get(0);
        let pruned_at = pruned_at.max(0) as u64;
        tx.execute(
            "DELETE FROM request_nonces WHERE expires_at < $1",
            &[&(now as i64)],
        )?;
        // Every row pruned so far expired before `pruned_at`; a row for `time` expires no sooner
        // than `time + keep`.
        if time.saturating_add(keep) < pruned_at {
            tx.commit()?;
            return Ok(RequestNonceUse::Forgotten { pruned_at });
        }
        // A replay is a replay, however full the shares are.
        if tx
            .query_opt("SELECT 1 FROM request_nonces WHERE nonce = $1", &[&nonce])?
            .is_some()
        {
            tx.commit()?;
            return Ok(RequestNonceUse::Replayed);
        }
        let label = share_label(share);
        let counts = tx.query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE party = $2) FROM request_nonces
             WHERE share = $1",
            &[&label, &share.sender.as_slice()],
        )?;
        let (all, mine) = (
            counts.get::<_, i64>(0) as u64,
            counts.get::<_, i64>(1) as u64,
        );
        if mine >= share.per_sender {
            tx.commit()?;
            return Err(StoreError::Busy(format!(
                "this sender has {mine} signed requests of the last ten minutes remembered \
                 already, the most one {label} sender may"
            )));
        }
        if all >= share.max {
            tx.commit()?;
            return Err(StoreError::Busy(format!(
                "{all} signed {label} requests of the last ten minutes are remembered already"
            )));
        }
        let expires_at = time.max(now).saturating_add(keep);
        let inserted = tx.execute(
            "INSERT INTO request_nonces (nonce, expires_at, party, share) VALUES ($1, $2, $3, $4)
             ON CONFLICT (nonce) DO NOTHING",
            &[
                &nonce,
                &(expires_at as i64),
                &share.sender.as_slice(),
                &label,
            ],
        )?;
        tx.commit()?;
        Ok(if inserted == 1 {
            RequestNonceUse::Accepted
        } else {
            RequestNonceUse::Replayed
        })
    }

    fn insert_nonce(
        &mut self,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
        max: u64,
    ) -> Result<(), StoreError> {
        let mut tx = self.client()?.transaction()?;
        // The bound is a count: replicas issuing challenges at once take turns here.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHALLENGE_LOCK])?;
        tx.execute(
            "DELETE FROM nonces WHERE expires_at < $1",
            &[&(now.saturating_sub(EXPIRED_CHALLENGE_GRACE) as i64)],
        )?;
        let count = |tx: &mut Transaction<'_>| -> Result<u64, StoreError> {
            let n: i64 = tx.query_one("SELECT COUNT(*) FROM nonces", &[])?.get(0);
            Ok(n as u64)
        };
        if count(&mut tx)? >= max {
            tx.execute("DELETE FROM nonces WHERE expires_at < $1", &[&(now as i64)])?;
            let live = count(&mut tx)?;
            if live >= max {
                tx.commit()?;
                return Err(StoreError::Busy(format!(
                    "{live} challenges are outstanding; retry when some have expired"
                )));
            }
        }
        tx.execute(
            "INSERT INTO nonces (nonce, expires_at) VALUES ($1, $2)",
            &[&nonce, &(expires_at as i64)],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn use_nonce(&mut self, nonce: &[u8], now: u64) -> Result<NonceUse, StoreError> {
        let client = self.client()?;
        // One statement: a second replica updating the same row waits for the first to commit,
        // re-checks `NOT used` on the new row version, and changes nothing.
        let changed = client.execute(
            "UPDATE nonces SET used = true WHERE nonce = $1 AND NOT used AND expires_at >= $2",
            &[&nonce, &(now as i64)],
        )?;
        if changed == 1 {
            return Ok(NonceUse::Accepted);
        }
        let row = client.query_opt(
            "SELECT expires_at, used FROM nonces WHERE nonce = $1",
            &[&nonce],
        )?;
        Ok(match row {
            None => NonceUse::Unknown,
            Some(r) if r.get::<_, bool>(1) => NonceUse::Replayed,
            Some(r) => NonceUse::Expired {
                expired_at: r.get::<_, i64>(0) as u64,
            },
        })
    }

    fn get_key(&mut self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT dek, policy, owner, kind, kek_id, revoked_at FROM keys WHERE key_id = $1",
            &[&key_id],
        )?;
        let Some(row) = row else { return Ok(None) };
        let wrapped: Vec<u8> = row.get(0);
        let policy: String = row.get(1);
        let owner: Option<Vec<u8>> = row.get(2);
        let kind: String = row.get(3);
        let kek_id: Option<String> = row.get(4);
        let mut revoked_at: Option<i64> = row.get(5);
        let parsed_kind = KeyKind::parse(&kind)?;
        if revoked_at.is_none() {
            // A row restored from before its revocation: the audit log still records it.
            if let Some(t) = revocation_in_audit(self.client()?, key_id)? {
                tracing::error!(key_id, "the store says this key is live, but the audit log records its revocation: refusing it");
                revoked_at = Some(t as i64);
            }
        }
        let dek = match revoked_at {
            Some(_) => Zeroizing::new(Vec::new()),
            None => unwrap_secret(
                &self.keks,
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
            owner: bytes32(owner),
        }))
    }

    fn key_listing(&mut self) -> Result<Vec<KeyInfo>, StoreError> {
        let rows = self.client()?.query(
            "SELECT k.key_id, k.kind, k.owner, k.policy, k.created_at, k.updated_at, k.revoked_at,
                    k.kek_id,
                    (SELECT COUNT(*) FROM audit a
                      WHERE a.key_id = k.key_id AND a.kind = 'key_released'
                        AND a.verdict = 'accepted')
             FROM keys k ORDER BY k.key_id",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| KeyInfo {
                key_id: r.get(0),
                kind: r.get(1),
                owner: r.get::<_, Option<Vec<u8>>>(2).map(hex::encode),
                policy: r.get(3),
                created_at: r.get::<_, i64>(4) as u64,
                updated_at: r.get::<_, i64>(5) as u64,
                revoked_at: r.get::<_, Option<i64>>(6).map(|t| t as u64),
                kek_id: r.get(7),
                releases: r.get::<_, i64>(8) as u64,
            })
            .collect())
    }

    fn put_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let w = self.wrap(&dek_binding(key_id, "admin", None, policy), dek)?;
        let mut tx = self.client()?.transaction()?;
        let changed = tx.execute(
            "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind, kek_id)
             VALUES ($1, $2, $3, $4, $4, 'admin', $5)
             ON CONFLICT (key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
                 updated_at = excluded.updated_at, kek_id = excluded.kek_id
             WHERE keys.kind = 'admin' AND keys.revoked_at IS NULL",
            &[&key_id, &w.dek, &policy, &(event.time as i64), &w.kek_id],
        )?;
        // A dataset key stays its owner's and a job's output its job's; a revoked key stays so.
        if changed == 0 {
            return Err(refusal(&mut tx, key_id)?);
        }
        let stored = append_audit_in(&mut tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    fn put_dataset_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        owner: &[u8; 32],
        quota: DatasetQuota,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let w = self.wrap(&dek_binding(key_id, "dataset", Some(owner), policy), dek)?;
        let mut tx = self.client()?.transaction()?;
        // Registrations take turns from the count to the commit: two replicas cannot both see
        // room for one more key.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&DATASET_LOCK])?;
        let counts = tx.query_one(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE owner = $1) FROM keys
             WHERE kind = 'dataset' AND key_id <> $2",
            &[&owner.as_slice(), &key_id],
        )?;
        quota.check(
            owner,
            counts.get::<_, i64>(0) as u64,
            counts.get::<_, i64>(1) as u64,
        )?;
        let changed = tx.execute(
            "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind, kek_id)
             VALUES ($1, $2, $3, $4, $4, $5, 'dataset', $6)
             ON CONFLICT (key_id) DO UPDATE SET dek = excluded.dek, policy = excluded.policy,
                 updated_at = excluded.updated_at, kek_id = excluded.kek_id
             WHERE keys.kind = 'dataset' AND keys.owner = excluded.owner
                 AND keys.revoked_at IS NULL",
            &[
                &key_id,
                &w.dek,
                &policy,
                &(event.time as i64),
                &owner.as_slice(),
                &w.kek_id,
            ],
        )?;
        if changed == 0 {
            return Err(refusal(&mut tx, key_id)?);
        }
        let stored = append_audit_in(&mut tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    fn put_output_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        job_hash: &[u8; 32],
        runtime: &[u8; 32],
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let w = self.wrap(
            &dek_binding(key_id, "job_output", Some(runtime), policy),
            dek,
        )?;
        let mut tx = self.client()?.transaction()?;
        let claimed = tx.execute(
            "UPDATE job_runtimes SET output_key_id = $3
             WHERE job_hash = $1 AND signing_key = $2 AND output_key_id IS NULL",
            &[&job_hash.as_slice(), &runtime.as_slice(), &key_id],
        )?;
        if claimed == 0 {
            return Err(StoreError::OutputRegistered {
                job_hash: hex::encode(job_hash),
            });
        }
        let changed = tx.execute(
            "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, owner, kind, kek_id)
             VALUES ($1, $2, $3, $4, $4, $5, 'job_output', $6)
             ON CONFLICT (key_id) DO NOTHING",
            &[
                &key_id,
                &w.dek,
                &policy,
                &(event.time as i64),
                &runtime.as_slice(),
                &w.kek_id,
            ],
        )?;
        if changed == 0 {
            return Err(refusal(&mut tx, key_id)?);
        }
        let stored = append_audit_in(&mut tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    fn revoke_key_audited(
        &mut self,
        key_id: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        let mut tx = self.client()?.transaction()?;
        let changed = tx.execute(
            "UPDATE keys SET revoked_at = $2, dek = ''::bytea, kek_id = NULL
             WHERE key_id = $1 AND revoked_at IS NULL",
            &[&key_id, &(event.time as i64)],
        )?;
        if changed == 0 {
            return Err(match refusal(&mut tx, key_id)? {
                revoked @ StoreError::KeyRevoked { .. } => revoked,
                _ => StoreError::UnknownKey {
                    key_id: key_id.to_string(),
                },
            });
        }
        let stored = append_audit_in(&mut tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    fn record_job_runtime(
        &mut self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
        serve_policy: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO job_runtimes (job_hash, signing_key, serve_policy, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (job_hash, signing_key) DO NOTHING",
            &[
                &job_hash.as_slice(),
                &signing_key.as_slice(),
                &serve_policy,
                &(now as i64),
            ],
        )?;
        Ok(())
    }

    fn job_runtime(
        &mut self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> Result<Option<Option<String>>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT serve_policy FROM job_runtimes WHERE job_hash = $1 AND signing_key = $2",
            &[&job_hash.as_slice(), &signing_key.as_slice()],
        )?;
        Ok(row.map(|r| r.get(0)))
    }

    fn append_release_audit(&mut self, e: &NewAuditEvent<'_>) -> Result<bool, StoreError> {
        let mut tx = self.client()?.transaction()?;
        // The key's row is locked until commit: a revocation on another replica waits for this
        // release, or this release sees it.
        let live = tx
            .query_opt(
                "SELECT revoked_at IS NULL FROM keys WHERE key_id = $1 FOR UPDATE",
                &[&e.key_id],
            )?
            .map(|r| r.get::<_, bool>(0))
            .unwrap_or(false)
            && match e.key_id {
                Some(id) => revocation_in_audit(&mut tx, id)?.is_none(),
                None => false,
            };
        if !live {
            return Ok(false);
        }
        append_audit_in(&mut tx, e)?;
        tx.commit()?;
        Ok(true)
    }

    fn previous_identity_seed(&mut self) -> Result<Option<RetiredIdentity>, StoreError> {
        // `kbs rotate-identity` works on SQLite stores only: nothing writes this table here.
        let row = self.client()?.query_opt(
            "SELECT hpke_seed, kek_id, accept_until FROM identity_previous WHERE id = 1",
            &[],
        )?;
        let Some(row) = row else { return Ok(None) };
        Err(StoreError::Corrupt(format!(
            "a retired identity (accepted until {}) is in a PostgreSQL store, which no Cordon \
             command writes",
            row.get::<_, i64>(2)
        )))
    }

    fn forget_expired_identity(&mut self, now: u64) -> Result<bool, StoreError> {
        Ok(self.client()?.execute(
            "DELETE FROM identity_previous WHERE id = 1 AND accept_until < $1",
            &[&(now as i64)],
        )? > 0)
    }

    fn audit_key_vouch(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .client()?
            .query_opt(
                "SELECT admin_signature FROM audit_key_vouch WHERE id = 1",
                &[],
            )?
            .map(|r| r.get(0)))
    }

    fn set_audit_key_vouch(&mut self, signature: &str, now: u64) -> Result<(), StoreError> {
        self.client()?.execute(
            "INSERT INTO audit_key_vouch (id, admin_signature, created_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET admin_signature = excluded.admin_signature,
                 created_at = excluded.created_at",
            &[&signature, &(now as i64)],
        )?;
        Ok(())
    }

    fn append_audit(&mut self, event: &NewAuditEvent<'_>) -> Result<AuditEvent, StoreError> {
        let mut tx = self.client()?.transaction()?;
        let stored = append_audit_in(&mut tx, event)?;
        tx.commit()?;
        Ok(stored)
    }

    fn audit_events(&mut self) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = self.client()?.query(
            "SELECT seq, time, kind, key_id, claims_digest, verdict, measurement, detail, hash
             FROM audit ORDER BY seq",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| AuditEvent {
                seq: r.get(0),
                time: r.get::<_, i64>(1) as u64,
                kind: r.get(2),
                key_id: r.get(3),
                claims_digest: r.get(4),
                verdict: r.get(5),
                measurement: r.get(6),
                detail: r.get(7),
                hash: r.get(8),
            })
            .collect())
    }
}

/// When the audit log recorded the revocation of `key_id`, if it did.
fn revocation_in_audit(
    c: &mut impl GenericClient,
    key_id: &str,
) -> Result<Option<u64>, StoreError> {
    let t: Option<i64> = c
        .query_one(
            "SELECT MIN(time) FROM audit
             WHERE key_id = $1 AND kind = 'key_revoked' AND verdict = 'accepted'",
            &[&key_id],
        )?
        .get(0);
    Ok(t.map(|t| t as u64))
}

fn share_label(share: NonceShare) -> &'static str {
    share.share.label()
}
