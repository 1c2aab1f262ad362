//! PostgreSQL storage, for several KBS replicas on one database (behind a load balancer).
//!
//! The schema mirrors the SQLite store's latest version ([`crate::store`]), versioned in a
//! `schema_version` table; the first replica to start runs the migrations, holding a transaction
//! advisory lock, and the others wait for it. Every secret is wrapped under the root KEK with the
//! SQLite store's own code ([`crate::store::wrap_dek`], [`crate::store::unwrap_secret`]): nothing
//! secret is in the database unwrapped, and every replica needs the same KEK.
//!
//! What SQLite got from one process and the KBS's mutex, this store gets from PostgreSQL:
//! - a batch of attestations (`commit_attestations`) is one transaction, whatever its size, on a
//!   connection of its own that pipelines it ([`Committer`]): `BEGIN`, the audit lock and one read
//!   (the spent-nonce floor, the chain's head, the keys still live, the nonces already spent) are
//!   sent together; then one write (over arrays, `unnest`: the nonces spent, the events, the job
//!   runtimes, the floor's prune) and `COMMIT` together. Every spend, prune and append, and every
//!   revocation (which appends its event), holds the audit lock: what the read sees cannot change
//!   before the commit, so a nonce is spent once across replicas, and a release commits only if
//!   no revocation of its key committed before it;
//! - the audit log stays one hash chain: each append takes a transaction advisory lock, reads the
//!   head and inserts, in the same transaction as the write it records, so appends from every
//!   replica are serialised and each links to the one committed before it;
//! - signed-request nonces: each use updates the nonce floor row first (`INSERT … ON CONFLICT DO
//!   UPDATE … RETURNING`), which row-locks it until commit; the prune, the replay check, the share
//!   counts and the insert that follow are therefore one serial step across replicas, and the
//!   floor only ever grows (`GREATEST`);
//! - counted bounds (dataset keys per owner and in all) are checked under an
//!   advisory lock of their own, in the transaction that writes, so concurrent writers cannot
//!   both pass a count that only one fits in;
//! - every write with its audit event is one transaction: a replica killed midway leaves neither.
//!
//! Locks are taken in one order (the dataset quota lock, then the audit lock, then rows) so that
//! transactions cannot deadlock: every write that appends an audit event takes the audit lock
//! before it touches a row, and the commit path takes it first of all. Connections have no TLS
//! (`NoTls`): use a Unix socket or loopback; a remote PostgreSQL needs a rustls connector (see
//! docs/deployment.md).

use crate::custody::Keks;
use crate::custody::{dek_binding, Slot};
use crate::keystore::{DatasetQuota, KeyStore};
use crate::store::{
    chained_event, check_kek_usage, previous_identity_name, unwrap_identity_seed, unwrap_secret,
    wrap_dek, wrap_identity_seed, AttestationCommit, AttestationOutcome, JobRuntime, KeyKind,
    NewAuditEvent, NonceShare, PendingEvent, RequestNonceUse, RetiredIdentity, StoreError,
    StoredKey, WrappedDek, CHALLENGE_PRUNE_EVERY, SPENT_CHALLENGE_GRACE,
};
use cordon_proto::kbs::{AuditEvent, KeyInfo};
use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Statement, Transaction};
use std::collections::{BTreeSet, HashMap, HashSet};
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
    // 2: the SQLite store's migrations 8 to 10 (the identity retired by `kbs rotate-identity`;
    //    the administrator's vouch for the audit signing key; releases counted by key).
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
    // 3: the SQLite store's migration 11: challenges are not stored (`crate::challenge`), the
    //    nonces spent are, until they expire, with the floor below which they were pruned.
    "DROP TABLE nonces;
     CREATE TABLE spent_challenges (
        nonce BYTEA PRIMARY KEY,
        expires_at BIGINT NOT NULL);
     CREATE INDEX spent_challenges_expiry ON spent_challenges (expires_at);
     CREATE TABLE challenge_floor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_below BIGINT NOT NULL);",
    // 4: the SQLite store's migration 12: the pruned spent nonces' expiries as ranges.
    "CREATE TABLE challenge_pruned (
        lo BIGINT PRIMARY KEY,
        hi BIGINT NOT NULL);
     INSERT INTO challenge_pruned (lo, hi)
        SELECT 0, pruned_below FROM challenge_floor WHERE pruned_below > 0;
     CREATE TABLE challenge_prune_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_cutoff BIGINT NOT NULL);
     INSERT INTO challenge_prune_state (id, last_cutoff)
        SELECT 1, pruned_below FROM challenge_floor;
     DROP TABLE challenge_floor;",
];

/// A batch's one read, under the audit lock (see `commit_attestations`): the last prune's
/// cutoff, the chain's head, the keys still live, the nonces spent already, and which of the
/// batch's expiries fall in a range of forgotten ones (the range starting last at or before it).
const COMMIT_READ: &str = "SELECT (SELECT last_cutoff FROM challenge_prune_state WHERE id = 1),
            (SELECT seq FROM audit ORDER BY seq DESC LIMIT 1),
            (SELECT hash FROM audit ORDER BY seq DESC LIMIT 1),
            ARRAY(SELECT k.key_id FROM keys k
                  WHERE k.key_id = ANY($1) AND k.revoked_at IS NULL
                    AND NOT EXISTS (SELECT 1 FROM audit a WHERE a.key_id = k.key_id
                        AND a.kind = 'key_revoked' AND a.verdict = 'accepted')),
            ARRAY(SELECT nonce FROM spent_challenges WHERE nonce = ANY($2)),
            ARRAY(SELECT e FROM unnest($3::bigint[]) AS e
                  WHERE (SELECT r.hi FROM challenge_pruned r WHERE r.lo <= e
                         ORDER BY r.lo DESC LIMIT 1) >= e)";

/// A batch's one write (see `commit_attestations`).
const COMMIT_WRITE: &str = "WITH spent AS (
        INSERT INTO spent_challenges (nonce, expires_at)
        SELECT * FROM unnest($1::bytea[], $2::bigint[])),
     runtimes AS (
        INSERT INTO job_runtimes (job_hash, signing_key, serve_policy, created_at)
        SELECT j, s, p, $3 FROM unnest($4::bytea[], $5::bytea[], $6::text[]) AS r(j, s, p)
        ON CONFLICT (job_hash, signing_key) DO NOTHING)
     INSERT INTO audit (seq, time, kind, key_id, claims_digest, verdict, measurement,
                        detail, prev_hash, hash)
     SELECT * FROM unnest($7::bigint[], $8::bigint[], $9::text[], $10::text[],
                          $11::text[], $12::text[], $13::text[], $14::text[],
                          $15::text[], $16::text[])";

/// The connection that commits attestations: tokio-postgres on a runtime of its own, so that
/// requests can be pipelined (sent together, answered in order), which the synchronous client
/// cannot. Used only from the KBS's blocking threads, like the rest of the store.
struct Committer {
    client: tokio_postgres::Client,
    read: tokio_postgres::Statement,
    write: tokio_postgres::Statement,
    /// Current-thread: the connection makes progress while a call blocks on it.
    runtime: tokio::runtime::Runtime,
}

impl Committer {
    fn connect(config: &tokio_postgres::Config) -> Result<Committer, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Config(format!("the commit connection's runtime: {e}")))?;
        let (client, read, write) = runtime.block_on(async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "the PostgreSQL commit connection ended");
                }
            });
            client.batch_execute(SESSION_SETTINGS).await?;
            let read = client.prepare(COMMIT_READ).await?;
            let write = client.prepare(COMMIT_WRITE).await?;
            Ok::<_, tokio_postgres::Error>((client, read, write))
        })?;
        Ok(Committer {
            client,
            read,
            write,
            runtime,
        })
    }

    /// `BEGIN`, the audit lock and the read, pipelined: one round trip.
    fn begin_and_read(
        &self,
        ids: &[&str],
        nonces: &[&[u8]],
        expiries: &[i64],
    ) -> Result<tokio_postgres::Row, StoreError> {
        self.runtime.block_on(async {
            // The lock id is a constant of this module, never outside input.
            let begin = format!("BEGIN; SELECT pg_advisory_xact_lock({AUDIT_LOCK})");
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                [&ids, &nonces, &expiries];
            let (begun, row) = tokio::join!(
                self.client.batch_execute(&begin),
                self.client.query_one(&self.read, &params)
            );
            if let Err(e) = begun {
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
            match row {
                Ok(row) => Ok(row),
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    Err(e.into())
                }
            }
        })
    }

    /// Inside the open transaction: deletes the spent nonces that expired before `cutoff` and
    /// adds their expiries to the ranges of forgotten ones (`challenge::merge_pruned`); records
    /// the cutoff. A few round trips, once per [`CHALLENGE_PRUNE_EVERY`] at most.
    fn prune(&self, cutoff: u64) -> Result<(), StoreError> {
        let cutoff = cutoff.min(i64::MAX as u64) as i64;
        self.runtime
            .block_on(async {
                let pruned: Vec<u64> = self
                    .client
                    .query(
                        // Distinct seconds only: a prune may delete 100,000 rows, under the lock.
                        "WITH gone AS (
                        DELETE FROM spent_challenges WHERE expires_at < $1 RETURNING expires_at)
                     SELECT DISTINCT expires_at FROM gone",
                        &[&cutoff],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get::<_, i64>(0).max(0) as u64)
                    .collect();
                if let (Some(&first), Some(&last)) = (pruned.iter().min(), pruned.iter().max()) {
                    let gap = crate::challenge::PRUNED_RANGE_GAP;
                    let near: Vec<(u64, u64)> = self
                        .client
                        .query(
                            "SELECT lo, hi FROM challenge_pruned WHERE hi >= $1 AND lo <= $2
                         ORDER BY lo",
                            &[
                                &(first.saturating_sub(gap) as i64),
                                &(last.saturating_add(gap).min(i64::MAX as u64) as i64),
                            ],
                        )
                        .await?
                        .iter()
                        .map(|r| {
                            (
                                r.get::<_, i64>(0).max(0) as u64,
                                r.get::<_, i64>(1).max(0) as u64,
                            )
                        })
                        .collect();
                    let merged = crate::challenge::merge_pruned(&near, &pruned);
                    let gone: Vec<i64> = near.iter().map(|(lo, _)| *lo as i64).collect();
                    self.client
                        .execute("DELETE FROM challenge_pruned WHERE lo = ANY($1)", &[&gone])
                        .await?;
                    let los: Vec<i64> = merged.iter().map(|(lo, _)| *lo as i64).collect();
                    let his: Vec<i64> = merged
                        .iter()
                        .map(|(_, hi)| (*hi).min(i64::MAX as u64) as i64)
                        .collect();
                    self.client
                        .execute(
                            "INSERT INTO challenge_pruned (lo, hi)
                         SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                            &[&los, &his],
                        )
                        .await?;
                }
                self.client
                    .execute(
                        "INSERT INTO challenge_prune_state (id, last_cutoff) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET last_cutoff = excluded.last_cutoff",
                        &[&cutoff],
                    )
                    .await?;
                Ok::<_, tokio_postgres::Error>(())
            })
            .map_err(|e| {
                // The transaction is aborted: roll it back before the error goes up.
                let _ = self.runtime.block_on(self.client.batch_execute("ROLLBACK"));
                StoreError::from(e)
            })
    }

    /// The write and `COMMIT`, pipelined: one round trip and the flush. A failed write aborts
    /// the transaction, and the `COMMIT` behind it then rolls back.
    fn write_and_commit(
        &self,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<(), StoreError> {
        self.runtime.block_on(async {
            let (written, committed) = tokio::join!(
                self.client.execute(&self.write, params),
                self.client.batch_execute("COMMIT")
            );
            if let Err(e) = written {
                // Already rolled back by the COMMIT; in case the COMMIT never ran, again.
                let _ = self.client.batch_execute("ROLLBACK").await;
                return Err(e.into());
            }
            committed.map_err(StoreError::from)
        })
    }
}

/// What every KBS connection is set to (see [`open_connection`]).
const SESSION_SETTINGS: &str = "SET enable_seqscan = off";

/// Transaction advisory lock ids ("cordon" in ASCII, then a number): held until commit.
const MIGRATION_LOCK: i64 = 0x636f_7264_6f6e_0001;
const AUDIT_LOCK: i64 = 0x636f_7264_6f6e_0002;
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
    /// The release path's statements, prepared once per connection ([`PgStore::prepared`]): a
    /// statement given as text costs a round trip to prepare at every call.
    prepared: HashMap<&'static str, Statement>,
    /// The commit path's own connection, made at the first commit.
    committer: Option<Committer>,
    /// How to make it (the synchronous client's configuration does not give its inner one).
    async_config: tokio_postgres::Config,
}

/// The synchronous client closes its connection by blocking on its own runtime, which panics
/// inside another runtime: a KBS dropped by an async task (its server stopping) would. There, the
/// client is dropped on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop_off_runtime(client);
        }
        if let Some(committer) = self.committer.take() {
            drop_off_runtime(committer);
        }
    }
}

/// Drops `value` (a client, or a runtime, which must not be dropped inside another) on a thread
/// of its own when called inside a runtime.
fn drop_off_runtime<T: Send + 'static>(value: T) {
    if tokio::runtime::Handle::try_current().is_ok() {
        let _ = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(value));
    } else {
        drop(value);
    }
}

/// A connection for the KBS. Its statements are prepared once and their plans cached; a plan
/// cached while the tables were nearly empty (a fresh database) would keep scanning them whole
/// once they are not (measured: the release path's read scanned the whole audit log at every
/// batch until an `ANALYZE` came round). Every query the KBS makes is a lookup or a walk of an
/// index, so sequential scans are priced out (`enable_seqscan = off`: the planner still uses one
/// where no index serves). Planning at every execution instead (`plan_cache_mode =
/// force_custom_plan`) cost more than the round trip the cache saves.
fn open_connection(config: &postgres::Config) -> Result<Client, StoreError> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(SESSION_SETTINGS)?;
    Ok(client)
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
        let mut async_config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Config(format!("database URL: {e}")))?;
        if async_config.get_connect_timeout().is_none() {
            async_config.connect_timeout(std::time::Duration::from_secs(10));
        }
        async_config.application_name("cordon-kbs");
        let client = open_connection(&config)?;
        let mut store = PgStore {
            client: Some(client),
            config,
            keks,
            prepared: HashMap::new(),
            committer: None,
            async_config,
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
                *slot = Some(open_connection(&self.config)?);
                // Statements belong to the connection that prepared them.
                self.prepared.clear();
            }
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Config("the PostgreSQL connection is gone".into()))
    }

    /// The commit connection, made (again) if there is none or the server closed it.
    fn committer(&mut self) -> Result<&Committer, StoreError> {
        if self.committer.as_ref().is_none_or(|c| c.client.is_closed()) {
            if let Some(old) = self.committer.take() {
                tracing::warn!("the PostgreSQL commit connection was closed; reconnecting");
                drop_off_runtime(old);
            }
            self.committer = Some(Committer::connect(&self.async_config)?);
        }
        self.committer
            .as_ref()
            .ok_or_else(|| StoreError::Config("the PostgreSQL commit connection is gone".into()))
    }

    /// A key's row (from `get_keys`), its DEK unwrapped unless it was revoked.
    fn stored_key(&self, key_id: &str, row: &postgres::Row) -> Result<StoredKey, StoreError> {
        let wrapped: Vec<u8> = row.get(1);
        let policy: String = row.get(2);
        let owner: Option<Vec<u8>> = row.get(3);
        let kind: String = row.get(4);
        let kek_id: Option<String> = row.get(5);
        let mut revoked_at: Option<i64> = row.get(6);
        let parsed_kind = KeyKind::parse(&kind)?;
        if revoked_at.is_none() {
            // A row restored from before its revocation: the audit log still records it.
            if let Some(t) = row.get::<_, Option<i64>>(7) {
                tracing::error!(key_id, "the store says this key is live, but the audit log records its revocation: refusing it");
                revoked_at = Some(t);
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
        Ok(StoredKey {
            dek,
            revoked_at: revoked_at.map(|t| t as u64),
            policy,
            kind: parsed_kind,
            owner: bytes32(owner),
        })
    }

    /// `sql` prepared on this connection, once.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        // Reconnects (and forgets the statements) first if the connection was closed.
        self.client()?;
        if let Some(s) = self.prepared.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client()?.prepare(sql)?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
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
                UNION ALL SELECT kek_id FROM identity
                UNION ALL SELECT kek_id FROM identity_previous) s
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

    /// Re-wraps every secret not under the current KEK, `batch` rows per transaction, like
    /// [`crate::Store::rewrap_all`]: a rotation killed midway leaves each row whole, under the
    /// old KEK or the new one, and running it again finishes it. One pass in key order; a row is
    /// updated only if it still holds exactly what was read (wrapped DEK, policy, kind, owner), so
    /// a key rewritten meanwhile (by a replica) is never put back to its old DEK: it is left for
    /// the caller's final count (`kek_usage`), and a second run. Replicas may keep serving if they
    /// were restarted with the new KEK as current and the old one as previous first.
    pub fn rewrap_all(
        &mut self,
        batch: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let batch = batch.max(1) as i64;
        let current = self.keks.current.id().to_string();
        let mut done = 0u64;
        let mut after = String::new();
        loop {
            let rows = self.client()?.query(
                "SELECT key_id, dek, kek_id, kind, owner, policy FROM keys
                 WHERE revoked_at IS NULL AND (kek_id IS NULL OR kek_id <> $1) AND key_id > $3
                 ORDER BY key_id LIMIT $2",
                &[&current, &batch, &after],
            )?;
            let Some(last) = rows.last() else { break };
            after = last.get(0);
            let mut rewrapped = Vec::with_capacity(rows.len());
            for r in &rows {
                let key_id: String = r.get(0);
                let wrapped: Vec<u8> = r.get(1);
                let kek_id: Option<String> = r.get(2);
                let kind: String = r.get(3);
                let owner: Option<Vec<u8>> = r.get(4);
                let policy: String = r.get(5);
                let binding = dek_binding(&key_id, &kind, owner.as_deref(), &policy);
                let dek =
                    unwrap_secret(&self.keks, Slot::Dek, &binding, kek_id.as_deref(), &wrapped)?;
                let w = self.wrap(&binding, &dek)?;
                rewrapped.push((key_id, w, wrapped, kind, owner, policy));
            }
            let mut tx = self.client()?.transaction()?;
            for (key_id, w, old, kind, owner, policy) in &rewrapped {
                // Only if unchanged since it was read, to the byte.
                done += tx.execute(
                    "UPDATE keys SET dek = $2, kek_id = $3
                     WHERE key_id = $1 AND dek = $4 AND kind = $5
                       AND owner IS NOT DISTINCT FROM $6 AND policy = $7 AND revoked_at IS NULL",
                    &[key_id, &w.dek, &w.kek_id, old, kind, owner, policy],
                )?;
            }
            tx.commit()?;
            progress(done);
        }
        // The identity seeds: the current one, and the retired one (its AAD names its overlap).
        let row = self.client()?.query_opt(
            "SELECT hpke_seed, kek_id FROM identity
             WHERE id = 1 AND (kek_id IS NULL OR kek_id <> $1)",
            &[&current],
        )?;
        if let Some(r) = row {
            let (wrapped, kek_id): (Vec<u8>, Option<String>) = (r.get(0), r.get(1));
            let seed = unwrap_identity_seed(&self.keks, kek_id.as_deref(), &wrapped)?;
            let (w, id) = wrap_identity_seed(&self.keks, &seed)?;
            done += self.client()?.execute(
                "UPDATE identity SET hpke_seed = $1, kek_id = $2 WHERE id = 1 AND hpke_seed = $3",
                &[&w, &id, &wrapped],
            )?;
            progress(done);
        }
        let row = self.client()?.query_opt(
            "SELECT hpke_seed, kek_id, accept_until FROM identity_previous
             WHERE id = 1 AND kek_id <> $1",
            &[&current],
        )?;
        if let Some(r) = row {
            let (wrapped, kek_id, until): (Vec<u8>, String, i64) = (r.get(0), r.get(1), r.get(2));
            let name = previous_identity_name(until as u64);
            let seed = unwrap_secret(
                &self.keks,
                Slot::IdentitySeed,
                &name,
                Some(&kek_id),
                &wrapped,
            )?;
            let w = self
                .keks
                .current
                .wrap(&crate::custody::wrap_aad(Slot::IdentitySeed, &name), &seed)?;
            done += self.client()?.execute(
                "UPDATE identity_previous SET hpke_seed = $1, kek_id = $2
                 WHERE id = 1 AND hpke_seed = $3",
                &[&w, &current, &wrapped],
            )?;
            progress(done);
        }
        Ok(done)
    }

    /// Makes `new_seed` the identity and keeps the one it replaces accepted until
    /// `accept_until`, like [`crate::Store::rotate_identity`], in one transaction. Every replica
    /// reads the identity when it starts: restart them all afterwards.
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
        let w = crate::store::identity_rotation(
            &self.keks,
            previous,
            current,
            new_seed,
            now,
            accept_until,
        )?;
        let mut tx = self.client()?.transaction()?;
        tx.execute(
            "INSERT INTO identity_previous (id, hpke_seed, kek_id, retired_at, accept_until)
             VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET hpke_seed = excluded.hpke_seed,
                 kek_id = excluded.kek_id, retired_at = excluded.retired_at,
                 accept_until = excluded.accept_until",
            &[&w.retired, &w.kek_id, &(now as i64), &(accept_until as i64)],
        )?;
        tx.execute(
            "UPDATE identity SET hpke_seed = $1, kek_id = $2, created_at = $3 WHERE id = 1",
            &[&w.fresh, &w.kek_id, &(now as i64)],
        )?;
        tx.execute(
            "UPDATE admin SET identity_signature = $1 WHERE id = 1",
            &[&admin_signature],
        )?;
        tx.execute(
            "INSERT INTO audit_key_vouch (id, admin_signature, created_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET admin_signature = excluded.admin_signature,
                 created_at = excluded.created_at",
            &[&audit_vouch, &(now as i64)],
        )?;
        tx.commit()?;
        Ok(())
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
    let event = chained_event(last + 1, &prev, e);
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

    fn commit_attestations(
        &mut self,
        batch: &[AttestationCommit],
        now: u64,
    ) -> Result<Vec<AttestationOutcome>, StoreError> {
        let ids: Vec<&str> = batch
            .iter()
            .flat_map(|c| c.releases.iter().filter_map(|r| r.key_id.as_deref()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let nonces: Vec<&[u8]> = batch.iter().map(|c| c.nonce.as_slice()).collect();
        let committer = self.committer()?;
        // 1. The transaction and the audit lock, with the read pipelined behind them: sent
        //    together, run one after the other. Every append, spend and prune, from every
        //    replica, takes turns on this lock, and so does a revocation (it appends its event):
        //    one that committed before is seen by the read, one still running waits for this
        //    commit. Under the lock: the read, one round trip to decide, the write and the
        //    commit pipelined, the commit's flush; whatever the batch's size.
        // 2. The read starts once the lock is held, with a snapshot of its own (a statement's
        //    is taken when it starts): the last prune's cutoff, the chain's head, which keys are
        //    live (unrevoked in the row and in the log), which nonces were spent already, which
        //    expiries fall among the forgotten.
        let all_expiries: Vec<i64> = batch
            .iter()
            .map(|c| c.expires_at.min(i64::MAX as u64) as i64)
            .collect();
        let row = committer.begin_and_read(&ids, &nonces, &all_expiries)?;
        let last_cutoff = row.get::<_, Option<i64>>(0).map(|t| t.max(0) as u64);
        let (mut seq, mut prev): (i64, String) = match (row.get(1), row.get(2)) {
            (Some(seq), Some(hash)) => (seq, hash),
            _ => (0, "0".repeat(64)),
        };
        let live: HashSet<String> = row.get::<_, Vec<String>>(3).into_iter().collect();
        let mut spent: HashSet<Vec<u8>> = row.get::<_, Vec<Vec<u8>>>(4).into_iter().collect();
        let forgotten: HashSet<i64> = row.get::<_, Vec<i64>>(5).into_iter().collect();
        // Spent nonces that expired SPENT_CHALLENGE_GRACE ago are pruned before the write, when
        // due, and their expiries kept as ranges (see `store::prune_spent_challenges`). The
        // decisions here use what the read saw: a nonce the prune deletes is one the read saw
        // spent.
        let cutoff = now.saturating_sub(SPENT_CHALLENGE_GRACE);
        let prune = last_cutoff.is_none_or(|last| cutoff.abs_diff(last) >= CHALLENGE_PRUNE_EVERY);

        // Outcomes and the chain, decided here.
        let mut rows: Vec<(AuditEvent, String)> = Vec::new();
        let mut append = |e: &PendingEvent| {
            seq += 1;
            let event = chained_event(seq, &prev, &e.as_new());
            let linked = std::mem::replace(&mut prev, event.hash.clone());
            rows.push((event, linked));
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        let (mut spend, mut expiries): (Vec<&[u8]>, Vec<i64>) = (Vec::new(), Vec::new());
        let mut runtimes: Vec<&JobRuntime> = Vec::new();
        for (c, e) in batch.iter().zip(&all_expiries) {
            if forgotten.contains(e) {
                outcomes.push(AttestationOutcome::Forgotten);
                continue;
            }
            // Spent before, or earlier in this batch.
            if !spent.insert(c.nonce.clone()) {
                outcomes.push(AttestationOutcome::Spent);
                continue;
            }
            spend.push(&c.nonce);
            expiries.push(*e);
            let mut withheld = Vec::new();
            for r in &c.releases {
                match &r.key_id {
                    Some(id) if live.contains(id) => append(r),
                    _ => {
                        withheld.push(r.key_id.clone().unwrap_or_default());
                        append(&r.withheld());
                    }
                }
            }
            c.events.iter().for_each(&mut append);
            if let (Some(j), true) = (&c.job_runtime, withheld.is_empty()) {
                runtimes.push(j);
            }
            outcomes.push(AttestationOutcome::Committed { withheld });
        }

        // 3. One write: the floor raised and the spent nonces below it pruned (when due), the
        //    nonces spent, the job runtimes, the events, each over arrays.
        let text = |f: fn(&(AuditEvent, String)) -> Option<String>| -> Vec<Option<String>> {
            rows.iter().map(f).collect()
        };
        let seqs: Vec<i64> = rows.iter().map(|(e, _)| e.seq).collect();
        let times: Vec<i64> = rows.iter().map(|(e, _)| e.time as i64).collect();
        let job_hashes: Vec<&[u8]> = runtimes.iter().map(|j| j.job_hash.as_slice()).collect();
        let signing: Vec<&[u8]> = runtimes.iter().map(|j| j.signing_key.as_slice()).collect();
        let serve: Vec<Option<&str>> = runtimes.iter().map(|j| j.serve_policy.as_deref()).collect();
        if prune {
            committer.prune(cutoff)?;
        }
        committer.write_and_commit(&[
            &spend,
            &expiries,
            &(now as i64),
            &job_hashes,
            &signing,
            &serve,
            &seqs,
            &times,
            &text(|(e, _)| Some(e.kind.clone())),
            &text(|(e, _)| e.key_id.clone()),
            &text(|(e, _)| e.claims_digest.clone()),
            &text(|(e, _)| Some(e.verdict.clone())),
            &text(|(e, _)| e.measurement.clone()),
            &text(|(e, _)| Some(e.detail.clone())),
            &text(|(_, prev)| Some(prev.clone())),
            &text(|(e, _)| Some(e.hash.clone())),
        ])?;
        Ok(outcomes)
    }

    fn reader(&self) -> Result<Box<dyn KeyStore>, StoreError> {
        // The schema was brought up to date by this store's own connect.
        Ok(Box::new(PgStore {
            client: Some(open_connection(&self.config)?),
            config: self.config.clone(),
            keks: self.keks.clone(),
            prepared: HashMap::new(),
            committer: None,
            async_config: self.async_config.clone(),
        }))
    }

    fn get_key(&mut self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        self.get_keys(&[key_id.to_string()])?
            .pop()
            .unwrap_or(Ok(None))
    }

    fn get_keys(
        &mut self,
        key_ids: &[String],
    ) -> Result<Vec<Result<Option<StoredKey>, StoreError>>, StoreError> {
        // One round trip for them all: the rows, and the audit log's record of a revocation of
        // each.
        let lookup = self.prepared(
            "SELECT k.key_id, k.dek, k.policy, k.owner, k.kind, k.kek_id, k.revoked_at,
                    (SELECT MIN(a.time) FROM audit a WHERE a.key_id = k.key_id
                        AND a.kind = 'key_revoked' AND a.verdict = 'accepted')
             FROM keys k WHERE k.key_id = ANY($1)",
        )?;
        let rows: HashMap<String, postgres::Row> = self
            .client()?
            .query(&lookup, &[&key_ids])?
            .into_iter()
            .map(|r| (r.get::<_, String>(0), r))
            .collect();
        // The same key may be asked for by several of the lookups: each gets it.
        Ok(key_ids
            .iter()
            .map(|id| match rows.get(id) {
                None => Ok(None),
                Some(row) => self.stored_key(id, row).map(Some),
            })
            .collect())
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
        // The audit lock first, then rows: the order every writer keeps (module doc).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
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
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
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
        // The audit lock first, then rows: the order every writer keeps (module doc).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
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
        // The audit lock first, then rows: the order every writer keeps (module doc).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
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

    fn previous_identity_seed(&mut self) -> Result<Option<RetiredIdentity>, StoreError> {
        let row = self.client()?.query_opt(
            "SELECT hpke_seed, kek_id, accept_until FROM identity_previous WHERE id = 1",
            &[],
        )?;
        let Some(row) = row else { return Ok(None) };
        let (wrapped, kek_id, until): (Vec<u8>, String, i64) = (row.get(0), row.get(1), row.get(2));
        let until = until as u64;
        let b = unwrap_secret(
            &self.keks,
            Slot::IdentitySeed,
            &previous_identity_name(until),
            Some(&kek_id),
            &wrapped,
        )?;
        let seed: [u8; 32] = b.as_slice().try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "the previous identity seed is {} bytes, expected 32",
                b.len()
            ))
        })?;
        Ok(Some((Zeroizing::new(seed), until)))
    }

    fn forget_expired_identity(&mut self, now: u64) -> Result<bool, StoreError> {
        Ok(self.client()?.execute(
            "DELETE FROM identity_previous WHERE id = 1 AND accept_until < $1",
            &[&(now as i64)],
        )? > 0)
    }

    fn rewrap_all(
        &mut self,
        batch: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        PgStore::rewrap_all(self, batch, progress)
    }

    fn kek_usage(&mut self) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        PgStore::kek_usage(self)
    }

    fn rotate_identity(
        &mut self,
        new_seed: &[u8; 32],
        admin_signature: &str,
        audit_vouch: &str,
        now: u64,
        accept_until: u64,
    ) -> Result<(), StoreError> {
        PgStore::rotate_identity(
            self,
            new_seed,
            admin_signature,
            audit_vouch,
            now,
            accept_until,
        )
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

fn share_label(share: NonceShare) -> &'static str {
    share.share.label()
}
