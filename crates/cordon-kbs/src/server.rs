//! HTTP surface of the KBS (axum) over the store.

use crate::challenge::{ChallengeKey, ChallengeKeys, ChallengeRefusal};
use crate::custody::{KekSpec, Keks};
use crate::keystore::{DatasetQuota, KeyStore};
use crate::store::{
    AttestationCommit, AttestationOutcome, JobRuntime, NewAuditEvent, NonceShare, PendingEvent,
    RequestNonceUse, Share, Store,
};
use crate::KbsError;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cordon_attest::{appraise, Endorsements, Policy, Verifier};
use cordon_proto::auth::{self, unix, AuthError, SignedRequest, REQUEST_WINDOW};
use cordon_proto::checkpoint::{
    self, AuditSigningKey, ConsistencyProof, InclusionProof, SignedCheckpoint,
};
use cordon_proto::job::{self, job_report_data};
use cordon_proto::kbs::{
    dek_upload_aad, policy_context, AttestRequest, AttestResponse, AuditEvent, Challenge,
    DekPurpose, DeniedKey, JobRelease, KbsIdentity, KeyInfo, RegisterKey, ReleasedKey,
    RevokeRequest, RevokeResponse, SealedToKbs, JOB_INFO, MAX_KEY_IDS, RELEASE_INFO, UPLOAD_INFO,
};
use cordon_proto::kbs::{kbs_identity_report_data, KbsEvidence};
use cordon_proto::{channel, merkle, report_data, ServiceKeyPair};
use cordon_tee::EvidenceProvider;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Reader connections per KBS process, for the release path's key lookups.
const READERS: usize = 1;

/// What a key lookup finds: the key (or none), or the store's reason for this key.
type KeyLookup = Result<Option<crate::store::StoredKey>, crate::store::StoreError>;

/// A key lookup waiting for a reader, and where its answer goes.
struct PendingLookup {
    key_id: String,
    reply: tokio::sync::oneshot::Sender<KeyLookup>,
}

/// An attestation waiting for its commit, and where its outcome goes.
struct PendingCommit {
    commit: AttestationCommit,
    reply: tokio::sync::oneshot::Sender<Result<AttestationOutcome, KbsError>>,
}

/// The KBS's source of time; tests inject a fixed or moving clock.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How a KBS runs.
#[derive(Clone)]
pub struct KbsConfig {
    pub data_dir: PathBuf,
    /// Trust anchors for evidence (sim keys; vendor roots are built in when hardware lands).
    pub endorsements: Endorsements,
    /// How long a challenge nonce stays valid.
    pub nonce_ttl: Duration,
    pub clock: Clock,
    pub limits: KbsLimits,
    /// The root KEK that wraps every secret at rest (and the previous one during a rotation).
    /// `None`: the file KEK beside the data directory ([`KekSpec::default_for`]), created on
    /// first start.
    pub keks: Option<Keks>,
    /// Wrap a store from before key custody that holds plaintext secrets (refused otherwise:
    /// `--migrate-plaintext-store`).
    pub migrate_plaintext_store: bool,
    /// A PostgreSQL store (`postgres://…` or `host=… dbname=…`) instead of SQLite in `data_dir`:
    /// several KBS replicas can share it. Needs `keks` named (no default file KEK).
    pub database_url: Option<String>,
    /// The KBS's own TEE, if it runs in one: at start it makes evidence binding the identity key
    /// (`GET /kbs/v1/identity` serves it), which parties verify against a policy of their own
    /// before they seal a key to it. `None`: no evidence, parties must pin the key.
    pub identity_tee: Option<Arc<dyn EvidenceProvider>>,
}

/// What one caller can make the KBS store: anyone can make a party key, so dataset keys have a
/// quota, and signed-request nonces (remembered ten minutes each) have shares. Challenges cost
/// nothing to issue (`crate::challenge`): they are not bounded.
#[derive(Debug, Clone, Copy)]
pub struct KbsLimits {
    /// Dataset keys one owner (party key) may hold.
    pub max_dataset_keys_per_owner: u64,
    /// Dataset keys held, all owners together.
    pub max_dataset_keys: u64,
    /// Nonces of the administrator's signed requests remembered at once (ten minutes each); more
    /// get 503. Parties and runtimes have shares of their own (below): their traffic cannot lock
    /// the administrator out.
    pub max_request_nonces: u64,
    /// Nonces of parties' signed requests (dataset key registrations) remembered at once, all
    /// parties together; more party requests get 503.
    pub max_party_request_nonces: u64,
    /// Nonces of one party's signed requests remembered at once.
    pub max_request_nonces_per_party: u64,
    /// Nonces of job runtimes' signed requests (output registrations) remembered at once, all
    /// runtimes together.
    pub max_runtime_request_nonces: u64,
    /// Nonces of one runtime's signed requests remembered at once (it registers one output per
    /// job).
    pub max_request_nonces_per_runtime: u64,
}

impl Default for KbsLimits {
    fn default() -> Self {
        KbsLimits {
            max_dataset_keys_per_owner: 64,
            max_dataset_keys: 100_000,
            max_request_nonces: 1_000_000,
            max_party_request_nonces: 1_000_000,
            max_request_nonces_per_party: 1_000,
            max_runtime_request_nonces: 100_000,
            max_request_nonces_per_runtime: 64,
        }
    }
}

impl KbsConfig {
    pub fn new(data_dir: PathBuf, endorsements: Endorsements) -> KbsConfig {
        KbsConfig {
            data_dir,
            endorsements,
            nonce_ttl: Duration::from_secs(60),
            clock: Arc::new(SystemTime::now),
            limits: KbsLimits::default(),
            keks: None,
            migrate_plaintext_store: false,
            database_url: None,
            identity_tee: None,
        }
    }

    /// The KEKs this configuration names, the default file KEK opened (or made) if none.
    pub fn open_keks(&self) -> Result<Keks, KbsError> {
        match &self.keks {
            Some(k) => Ok(k.clone()),
            None => Ok(Keks::new(
                KekSpec::default_for(&self.data_dir)
                    .open()
                    .map_err(crate::store::StoreError::from)?,
            )),
        }
    }
}

/// A running key broker's shared state.
#[derive(Clone)]
pub struct Kbs {
    inner: Arc<Inner>,
}

struct Inner {
    /// SQLite or PostgreSQL: every call runs on a blocking thread ([`Kbs::with_store`]).
    store: Mutex<Box<dyn KeyStore>>,
    /// Connections of the same store for the release path's key lookups
    /// ([`Kbs::lookup_key`]): they do not wait behind `store`'s commits.
    readers: Vec<Mutex<Box<dyn KeyStore>>>,
    /// Which reader the next lookup tries first.
    next_reader: std::sync::atomic::AtomicUsize,
    /// Key lookups waiting: whoever takes a reader next answers them all in one query
    /// ([`Kbs::lookup_key`]).
    pending_lookups: Mutex<Vec<PendingLookup>>,
    config: KbsConfig,
    /// Holds the endorsements and caches verified SNP endorsement-key chains.
    verifier: Verifier,
    /// The KBS's long-term HPKE key: DEKs sent to the KBS are sealed to it, and signed requests
    /// name its public half as their audience.
    identity: ServiceKeyPair,
    /// The identity retired by the latest rotation (`cordon kbs rotate-identity`) and the end of
    /// its overlap window: until then, DEKs and jobs sealed to it still open and requests signed
    /// for it are still accepted, so that clients who pinned it have time to move.
    previous_identity: Option<(ServiceKeyPair, u64)>,
    /// Evidence binding `identity`'s public key, made at start by `config.identity_tee`.
    identity_evidence: Option<KbsEvidence>,
    /// Makes and checks challenge nonces (`crate::challenge`): the current identity's key, and
    /// the retired identity's during its overlap (its nonces were issued before the rotation).
    challenge_keys: ChallengeKeys,
    /// Attestations waiting to be committed: whoever takes the store next commits them all in
    /// one transaction ([`Kbs::commit_attestation`]).
    pending_commits: Mutex<Vec<PendingCommit>>,
    /// Signs audit checkpoints; derived from the identity seed (`AuditSigningKey::derive`), so
    /// nothing more is stored. Zeroized on drop; its Debug output is the public key only.
    audit_key: AuditSigningKey,
}

const MAX_BODY: usize = 1 << 20;

/// A body over [`MAX_BODY`] is a 413, one that is not what the route expects a 400; both with the
/// KBS's error body.
fn rejection(status: axum::http::StatusCode, text: String) -> KbsError {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        KbsError::TooLarge { limit: MAX_BODY }
    } else {
        KbsError::BadRequest(text)
    }
}

fn json_rejection(e: axum::extract::rejection::JsonRejection) -> KbsError {
    rejection(e.status(), e.body_text())
}

fn bytes_body(
    b: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, KbsError> {
    b.map_err(|e| rejection(e.status(), e.body_text()))
}

impl Kbs {
    /// Opens the store in the data directory; on first start, creates the KBS's HPKE identity.
    pub fn open(config: KbsConfig) -> Result<Kbs, KbsError> {
        let store: Box<dyn KeyStore> = match &config.database_url {
            Some(url) => {
                // Replicas share one database and so must share one KEK: the default file KEK,
                // made beside each replica's data directory, would differ from one to the next.
                let keks = config.keks.clone().ok_or_else(|| {
                    KbsError::Internal(
                        "a PostgreSQL store needs its KEK named (--kek): every replica must \
                         use the same one"
                            .into(),
                    )
                })?;
                Box::new(crate::pg_store::PgStore::connect(url, keks)?)
            }
            None => Box::new(Store::open_with(
                &config.data_dir,
                config.open_keks()?,
                config.migrate_plaintext_store,
            )?),
        };
        Kbs::open_with_store(config, store)
    }

    /// Starts on a store opened by the caller (`config.data_dir` and `config.database_url` are
    /// not used); on first start, creates the KBS's HPKE identity.
    pub fn open_with_store(
        config: KbsConfig,
        mut store: Box<dyn KeyStore>,
    ) -> Result<Kbs, KbsError> {
        let seed = match store.identity_seed()? {
            Some(seed) => seed,
            None => {
                let mut fresh = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(fresh.as_mut());
                store.init_identity_seed(&fresh, unix((config.clock)()))?
            }
        };
        let identity = ServiceKeyPair::derive(0, &seed);
        if store.forget_expired_identity(unix((config.clock)()))? {
            tracing::info!(
                "the identity retired by the last rotation is past its overlap: forgotten"
            );
        }
        let previous_seed = store.previous_identity_seed()?;
        let challenge_keys = ChallengeKeys::new(
            ChallengeKey::derive(&seed),
            previous_seed
                .as_ref()
                .map(|(seed, until)| (ChallengeKey::derive(seed), *until)),
            config.nonce_ttl.as_secs(),
        );
        let previous_identity =
            previous_seed.map(|(seed, until)| (ServiceKeyPair::derive(0, &seed), until));
        // Once, at start: hardware evidence costs a firmware round trip, and the identity key is
        // long-term, so evidence made now binds it for this process's whole life.
        let identity_evidence = match &config.identity_tee {
            Some(tee) => {
                let report_data = kbs_identity_report_data(&identity.public_key());
                let bundle = tee.evidence_bundle(&report_data).map_err(|e| {
                    KbsError::Internal(format!("producing the KBS's identity evidence: {e}"))
                })?;
                Some(KbsEvidence {
                    platform: tee.platform(),
                    evidence: bundle.evidence,
                    endorsements: cordon_proto::WireEndorsements {
                        snp_certs: bundle.snp_certs,
                        dcap_collateral: bundle.dcap_collateral,
                        tdx_event_log: bundle.tdx_event_log,
                    },
                })
            }
            None => None,
        };
        let audit_key = AuditSigningKey::derive(&seed);
        let verifier = Verifier::new(config.endorsements.clone());
        let readers = (0..READERS)
            .map(|_| store.reader().map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Kbs {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                readers,
                next_reader: std::sync::atomic::AtomicUsize::new(0),
                pending_lookups: Mutex::new(Vec::new()),
                config,
                verifier,
                identity,
                previous_identity,
                identity_evidence,
                audit_key,
                challenge_keys,
                pending_commits: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The public half of the KBS's HPKE identity: what owners, parties and runtimes pin.
    pub fn identity_public_key(&self) -> [u8; 32] {
        self.inner.identity.public_key()
    }

    /// The evidence binding the identity key, made at start; `None` without a TEE.
    pub fn identity_evidence(&self) -> Option<&KbsEvidence> {
        self.inner.identity_evidence.as_ref()
    }

    /// If no administrator exists yet, creates the admin token (the seed of the administrator's
    /// Ed25519 key), stores its hash and public key, and returns the token (shown once).
    pub fn init_admin_token(&self) -> Result<Option<Zeroizing<String>>, KbsError> {
        let mut store = self.lock()?;
        if store.admin_public_key()?.is_some() {
            return Ok(None);
        }
        if store.admin_token_hash()?.is_some() {
            return Err(KbsError::Conflict(
                "this store's admin token predates signed admin requests: start the KBS once with \
                 --init-admin-token-file naming the existing token file to upgrade it"
                    .into(),
            ));
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        let token = Zeroizing::new(hex::encode(raw.as_ref()));
        let key = auth::admin_key(&token).map_err(|e| KbsError::Internal(e.to_string()))?;
        // The token vouches for this KBS's identity: a token holder can then check the identity
        // the KBS serves without a separate pin.
        let vouch = auth::vouch_identity(&key, &self.identity_public_key());
        store.set_admin(
            &Sha256::digest(token.as_bytes()).into(),
            &key.verifying_key().to_bytes(),
            &vouch,
        )?;
        store.set_audit_key_vouch(&self.audit_key_vouch(&key), unix(self.now()))?;
        Ok(Some(token))
    }

    /// Upgrades a store from before signed admin requests, which holds only the token's hash:
    /// given that token, records the public key it seeds. `false` when there is nothing to do.
    pub fn adopt_admin_token(&self, token: &str) -> Result<bool, KbsError> {
        let mut store = self.lock()?;
        if store.admin_public_key()?.is_some() {
            return Ok(false);
        }
        let Some(hash) = store.admin_token_hash()? else {
            return Ok(false);
        };
        let token = token.trim();
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !bool::from(presented.ct_eq(&hash)) {
            return Err(KbsError::Unauthorized(
                "the token file is not this store's admin token".into(),
            ));
        }
        let key = auth::admin_key(token).map_err(|e| KbsError::BadRequest(e.to_string()))?;
        let vouch = auth::vouch_identity(&key, &self.identity_public_key());
        store.set_admin(&hash, &key.verifying_key().to_bytes(), &vouch)?;
        store.set_audit_key_vouch(&self.audit_key_vouch(&key), unix(self.now()))?;
        Ok(true)
    }

    /// The public half of the key that signs audit checkpoints.
    pub fn audit_signing_public_key(&self) -> [u8; 32] {
        self.inner.audit_key.public_key()
    }

    fn audit_key_vouch(&self, admin: &ed25519_dalek::SigningKey) -> String {
        checkpoint::vouch_audit_key(
            admin,
            &self.identity_public_key(),
            &self.audit_signing_public_key(),
        )
    }

    /// Has the administrator's token (the text of the admin token file) vouch for the audit
    /// signing key, for a store whose administrator was made before audit checkpoints existed
    /// (newer stores get the vouch with the token). `false` when the vouch exists already.
    pub fn vouch_audit_key(&self, token: &str) -> Result<bool, KbsError> {
        let mut store = self.lock()?;
        if store.audit_key_vouch()?.is_some() {
            return Ok(false);
        }
        let Some(admin) = store.admin_public_key()? else {
            return Ok(false);
        };
        let key = auth::admin_key(token).map_err(|e| KbsError::BadRequest(e.to_string()))?;
        if key.verifying_key().to_bytes() != admin {
            return Err(KbsError::Unauthorized(
                "the token file is not this store's admin token".into(),
            ));
        }
        store.set_audit_key_vouch(&self.audit_key_vouch(&key), unix(self.now()))?;
        Ok(true)
    }

    /// The audit log, its leaf hashes and a checkpoint of it signed now, all from one read of the
    /// store. Checkpoints are signed when asked for, not at each append: the signature says only
    /// "this KBS's store held this log", which is all an auditor can use, and an append costs no
    /// Merkle work. A checkpoint stored at each append would not protect more: whoever can roll
    /// the store's rows back can roll a stored checkpoint back with them. What detects a rollback
    /// or a rewrite is the auditor's own earlier checkpoint and a consistency proof from it.
    async fn audit_view(
        &self,
    ) -> Result<(Vec<AuditEvent>, Vec<merkle::Hash>, SignedCheckpoint), KbsError> {
        let kbs = self.clone();
        self.with_store(move |s| {
            let events = s.audit_events()?;
            let vouch = s.audit_key_vouch()?;
            let leaves = checkpoint::audit_leaves(&events);
            let signed = kbs.inner.audit_key.sign(
                &leaves,
                unix(kbs.now()),
                kbs.identity_public_key(),
                vouch,
            );
            Ok((events, leaves, signed))
        })
        .await
    }

    pub fn has_admin_token(&self) -> Result<bool, KbsError> {
        Ok(self.lock()?.admin_public_key()?.is_some())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn KeyStore>>, KbsError> {
        self.inner
            .store
            .lock()
            .map_err(|_| KbsError::Internal("store lock poisoned".into()))
    }

    fn now(&self) -> SystemTime {
        (self.inner.config.clock)()
    }

    /// Runs a store operation off the async threads (SQLite with full sync blocks on fsync).
    async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn KeyStore) -> Result<T, KbsError> + Send + 'static,
    ) -> Result<T, KbsError> {
        let kbs = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = kbs.lock()?;
            f(store.as_mut())
        })
        .await
        .map_err(|e| KbsError::Internal(format!("store task failed: {e}")))?
    }

    /// Looks a key up on one of the readers, grouped with every lookup waiting at that moment
    /// into one query (one round trip on PostgreSQL for many concurrent releases). The outer
    /// error is the KBS's; the inner one the store's, for this key.
    async fn lookup_key(&self, key_id: String) -> Result<KeyLookup, KbsError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .pending_lookups
            .lock()
            .map_err(|_| KbsError::Internal("the lookup queue's lock is poisoned".into()))?
            .push(PendingLookup { key_id, reply });
        let kbs = self.clone();
        tokio::task::spawn_blocking(move || kbs.look_up_pending());
        answer
            .await
            .map_err(|_| KbsError::Internal("the key lookup was dropped".into()))
    }

    /// Takes a reader (a free one if there is one, else the next in turn), then every lookup
    /// waiting (perhaps none: another task took them), and answers them with one query.
    fn look_up_pending(&self) {
        let readers = &self.inner.readers;
        let first = self
            .inner
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let free =
            (0..readers.len()).find_map(|i| readers[(first + i) % readers.len()].try_lock().ok());
        let reader = match free {
            Some(r) => Ok(r),
            None => match readers.get(first % readers.len().max(1)) {
                Some(r) => r.lock().map_err(|_| "a store reader's lock is poisoned"),
                None => Err("the KBS has no store reader"),
            },
        };
        let batch = match self.inner.pending_lookups.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let mut reader = match reader {
            Ok(r) => r,
            Err(e) => {
                for p in batch {
                    let _ = p
                        .reply
                        .send(Err(crate::store::StoreError::Config(e.into())));
                }
                return;
            }
        };
        let ids: Vec<String> = batch.iter().map(|p| p.key_id.clone()).collect();
        match reader.get_keys(&ids) {
            Ok(found) if found.len() == batch.len() => {
                for (p, key) in batch.into_iter().zip(found) {
                    let _ = p.reply.send(key);
                }
            }
            // A failed (or miscounted) query: each key alone, so that one's failure is its own.
            _ => {
                for p in batch {
                    let _ = p.reply.send(reader.get_key(&p.key_id));
                }
            }
        }
    }

    /// Commits one attestation's writes (its nonce spent, its events, its job runtime), grouped
    /// with every other attestation waiting at that moment into one transaction: under load one
    /// fsync serves many releases (group commit), with no timer and no added latency when idle.
    async fn commit_attestation(
        &self,
        commit: AttestationCommit,
    ) -> Result<AttestationOutcome, KbsError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .pending_commits
            .lock()
            .map_err(|_| KbsError::Internal("the commit queue's lock is poisoned".into()))?
            .push(PendingCommit { commit, reply });
        let kbs = self.clone();
        tokio::task::spawn_blocking(move || kbs.commit_pending());
        answer
            .await
            .map_err(|_| KbsError::Internal("the attestation's commit was dropped".into()))?
    }

    /// Takes the store, then every attestation waiting (perhaps none: an earlier caller's task
    /// took them), and commits them together.
    fn commit_pending(&self) {
        let store = self.lock();
        let batch = match self.inner.pending_commits.lock() {
            Ok(mut pending) => std::mem::take(&mut *pending),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        let mut store = match store {
            Ok(store) => store,
            Err(e) => {
                let text = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(KbsError::Internal(text.clone())));
                }
                return;
            }
        };
        let now = unix(self.now());
        let (commits, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|p| (p.commit, p.reply)).unzip();
        match store.commit_attestations(&commits, now) {
            Ok(outcomes) if outcomes.len() == commits.len() => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Ok(_) => {
                for reply in replies {
                    let _ = reply.send(Err(KbsError::Internal(
                        "the store answered a batch of attestations with the wrong count".into(),
                    )));
                }
            }
            // What fails one attestation (a value the database refuses) must not fail the
            // others: each is tried again alone.
            Err(_) if commits.len() > 1 => {
                for (commit, reply) in commits.iter().zip(replies) {
                    let one = store
                        .commit_attestations(std::slice::from_ref(commit), now)
                        .map_err(KbsError::from)
                        .and_then(|mut o| {
                            o.pop().ok_or_else(|| {
                                KbsError::Internal("the store answered no outcome".into())
                            })
                        });
                    let _ = reply.send(one);
                }
            }
            Err(e) => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e.into()));
                }
            }
        }
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/kbs/v1/identity", get(identity))
            .route("/kbs/v1/challenge", post(challenge))
            .route("/kbs/v1/attest", post(attest))
            .route("/kbs/v1/admin/keys", get(list_keys))
            .route("/kbs/v1/admin/keys/{key_id}", put(register_key))
            .route("/kbs/v1/admin/keys/{key_id}/revoke", post(revoke_key))
            .route("/kbs/v1/datasets/{key_id}", put(register_dataset_key))
            .route("/kbs/v1/jobs/{job_hash}/output", put(register_job_output))
            .route("/kbs/v1/admin/audit", get(audit))
            .route("/kbs/v1/admin/audit/checkpoint", get(audit_checkpoint))
            .route(
                "/kbs/v1/admin/audit/inclusion/{index}",
                get(audit_inclusion),
            )
            .route(
                "/kbs/v1/admin/audit/consistency/{old_size}",
                get(audit_consistency),
            )
            .route("/healthz", get(|| async { "ok" }))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Serves the routes on `listener` until `shutdown` completes, then drains open requests.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with_tls(listener, None, shutdown).await
    }

    /// [`Kbs::serve`], over TLS when `tls` is given. TLS protects metadata only: every key
    /// already travels sealed (to the KBS's identity key, or to an attested runtime key).
    pub async fn serve_with_tls(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<cordon_http::ServerTls>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        cordon_http::serve_with_tls(
            listener,
            self.router(),
            cordon_http::ServerLimits::default(),
            tls,
            shutdown,
        )
        .await
    }

    /// Checks a signed request's signature, audience and time; records nothing.
    fn verified_request(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<SignedRequest, KbsError> {
        let verify = |audience: &[u8; 32]| {
            auth::verify_request(
                |name| headers.get(name).and_then(|v| v.to_str().ok()),
                method,
                path,
                body,
                audience,
                self.now(),
            )
        };
        match verify(&self.identity_public_key()) {
            // Signed for the retired identity, within its overlap window.
            Err(AuthError::WrongAudience { .. }) if self.previous_in_overlap().is_some() => {
                let (previous, _) = self
                    .previous_in_overlap()
                    .ok_or_else(|| KbsError::Internal("the previous identity vanished".into()))?;
                verify(&previous.public_key()).map_err(auth_error)
            }
            other => other.map_err(auth_error),
        }
    }

    /// The retired identity and the end of its overlap, while the overlap runs.
    fn previous_in_overlap(&self) -> Option<&(ServiceKeyPair, u64)> {
        let now = unix(self.now());
        self.inner
            .previous_identity
            .as_ref()
            .filter(|(_, until)| now <= *until)
    }

    /// Records a verified request's nonce (refused if seen before, or stamped before what the KBS
    /// has pruned). Call once the signer is known to be allowed, so that strangers with throw-away
    /// keys cannot fill the table. Each kind of sender has a share of its own (see [`Share`]),
    /// so that parties and runtimes cannot lock the administrator out.
    async fn record_nonce(&self, req: &SignedRequest, share: Share) -> Result<(), KbsError> {
        let now = unix(self.now());
        let keep = 2 * REQUEST_WINDOW.as_secs();
        let mut key = req.signer.to_vec();
        key.extend_from_slice(&req.nonce);
        let limits = self.inner.config.limits;
        let (per_sender, max) = match share {
            Share::Admin => (limits.max_request_nonces, limits.max_request_nonces),
            Share::Party => (
                limits.max_request_nonces_per_party,
                limits.max_party_request_nonces,
            ),
            Share::Runtime => (
                limits.max_request_nonces_per_runtime,
                limits.max_runtime_request_nonces,
            ),
        };
        let share = NonceShare {
            share,
            sender: req.signer,
            per_sender,
            max,
        };
        let time = req.time;
        match self
            .with_store(move |s| Ok(s.use_request_nonce(&key, time, keep, now, share)?))
            .await?
        {
            RequestNonceUse::Accepted => Ok(()),
            RequestNonceUse::Replayed => Err(auth_error(AuthError::Replayed {
                nonce: hex::encode(req.nonce),
            })),
            RequestNonceUse::Forgotten { pruned_at } => Err(KbsError::Replayed(format!(
                "request stamped {time} is older than this KBS still remembers (it pruned the \
                 nonces of requests stamped before {}, its clock having been at {pruned_at}): \
                 refused as a possible replay",
                pruned_at.saturating_sub(keep)
            ))),
        }
    }

    /// An administrator's request: signed by the key the admin token seeds, for this KBS, fresh.
    async fn check_admin(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<[u8; 32], KbsError> {
        let admin = self
            .with_store(|s| Ok(s.admin_public_key()?))
            .await?
            .ok_or_else(|| KbsError::Unauthorized("this KBS has no administrator yet".into()))?;
        let req = self
            .verified_request(headers, method, path, body)
            .map_err(|e| match e {
                KbsError::PartyUnauthorized(m) => KbsError::Unauthorized(m),
                other => other,
            })?;
        // The signer is checked before the nonce is recorded: a party's valid signature must not
        // spend an admin nonce either.
        if req.signer != admin {
            return Err(KbsError::Unauthorized(
                "not signed by the administrator's key (see the admin token file)".into(),
            ));
        }
        self.record_nonce(&req, Share::Admin).await?;
        Ok(req.signer)
    }

    /// This KBS's identity that `key` names: the current one, or the one retired by the latest
    /// rotation while its overlap runs. `Err` naming the keys otherwise.
    fn identity_for(&self, key: &[u8; 32]) -> Result<&ServiceKeyPair, String> {
        let ours = self.identity_public_key();
        if key == &ours {
            return Ok(&self.inner.identity);
        }
        match &self.inner.previous_identity {
            Some((previous, until)) if &previous.public_key() == key => {
                match self.previous_in_overlap() {
                    Some((previous, _)) => Ok(previous),
                    None => Err(format!(
                        "sealed to this KBS's previous identity key {}, retired by a rotation; \
                         its overlap ended at {until}: seal to the current key {}",
                        hex::encode(key),
                        hex::encode(ours)
                    )),
                }
            }
            _ => Err(format!(
                "sealed to KBS key {}, this KBS's key is {}",
                hex::encode(key),
                hex::encode(ours)
            )),
        }
    }

    /// Opens a training job sealed to this KBS for the attest request carrying `nonce_hex`.
    fn open_job(&self, sealed: &SealedToKbs, nonce_hex: &str) -> Result<JobRelease, KbsError> {
        let identity = self
            .identity_for(&sealed.kbs_public_key)
            .map_err(|e| KbsError::BadRequest(format!("the job is {e}")))?;
        let json = identity
            .open_sealed(JOB_INFO, nonce_hex.as_bytes(), &sealed.sealed)
            .map_err(|_| {
                KbsError::BadRequest(
                    "the sealed job does not open: altered, or sealed for another request".into(),
                )
            })?;
        serde_json::from_slice(&json).map_err(|e| KbsError::BadRequest(format!("sealed job: {e}")))
    }

    /// Opens a DEK sealed to this KBS for `purpose`, `key_id`, `sender` and `context`.
    fn open_dek(
        &self,
        sealed: &SealedToKbs,
        purpose: DekPurpose,
        key_id: &str,
        sender: &[u8; 32],
        context: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KbsError> {
        let identity = self
            .identity_for(&sealed.kbs_public_key)
            .map_err(KbsError::SealedDek)?;
        let dek = identity
            .open_sealed(
                UPLOAD_INFO,
                &dek_upload_aad(purpose, key_id, sender, context),
                &sealed.sealed,
            )
            .map_err(|_| {
                KbsError::SealedDek(format!(
                    "it does not open as a {} for key {key_id} from signer {} under this policy: \
                     altered, or sealed for another purpose, key id, signer or policy",
                    purpose.label(),
                    hex::encode(sender)
                ))
            })?;
        if dek.len() != 32 {
            return Err(KbsError::SealedDek(format!(
                "the DEK is {} bytes, expected 32",
                dek.len()
            )));
        }
        Ok(dek)
    }
}

fn auth_error(e: AuthError) -> KbsError {
    match e {
        AuthError::Replayed { .. } => KbsError::Replayed(e.to_string()),
        other => KbsError::PartyUnauthorized(other.to_string()),
    }
}

async fn identity(State(kbs): State<Kbs>) -> Result<Json<KbsIdentity>, KbsError> {
    let admin_signature = kbs.with_store(|s| Ok(s.identity_signature()?)).await?;
    Ok(Json(KbsIdentity {
        hpke_public_key: kbs.identity_public_key(),
        admin_signature,
        evidence: kbs.identity_evidence().cloned(),
    }))
}

/// A challenge nonce: a random draw and a MAC (`crate::challenge`), nothing stored. What keeps a
/// nonce single-use is the store's record of the nonces spent.
async fn challenge(State(kbs): State<Kbs>) -> Result<Json<Challenge>, KbsError> {
    let (nonce, expires_at) = kbs.inner.challenge_keys.issue(unix(kbs.now()));
    Ok(Json(Challenge {
        nonce: hex::encode(nonce),
        expires_at,
    }))
}

/// An audit event of the attestation being answered.
#[allow(clippy::too_many_arguments)]
fn pending_event(
    time: u64,
    kind: &'static str,
    key_id: Option<&str>,
    claims_digest: Option<&str>,
    verdict: &'static str,
    measurement: Option<&str>,
    detail: String,
) -> PendingEvent {
    PendingEvent {
        time,
        kind,
        key_id: key_id.map(String::from),
        claims_digest: claims_digest.map(String::from),
        verdict,
        measurement: measurement.map(String::from),
        detail,
    }
}

async fn attest(
    State(kbs): State<Kbs>,
    body: Result<Json<AttestRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AttestResponse>, KbsError> {
    let Json(req) = body.map_err(json_rejection)?;
    if req.key_ids.is_empty() {
        return Err(KbsError::BadRequest(
            "key_ids must name at least one key".into(),
        ));
    }
    // Each key costs an appraisal and an audit event: bounded, and each asked once.
    if req.key_ids.len() > MAX_KEY_IDS {
        return Err(KbsError::BadRequest(format!(
            "key_ids names {} keys, at most {MAX_KEY_IDS} may be asked for at once",
            req.key_ids.len()
        )));
    }
    let mut unique = BTreeSet::new();
    for id in &req.key_ids {
        check_key_id(id)?;
        if !unique.insert(id.as_str()) {
            return Err(KbsError::BadRequest(format!("key_ids names {id} twice")));
        }
    }
    let nonce = hex::decode(&req.nonce)
        .map_err(|e| KbsError::BadRequest(format!("nonce is not hex: {e}")))?;
    // A training job travels sealed to this KBS (the host sees neither spec nor approvals).
    let job: Option<JobRelease> = match &req.sealed_job {
        Some(sealed) => Some(kbs.open_job(sealed, &req.nonce)?),
        None => None,
    };
    let now_time = kbs.now();
    let now = unix(now_time);

    // 1. The nonce: one of this KBS's challenges (its MAC verifies), unexpired. It is spent in
    //    the transaction that records this attestation's outcome, whatever the outcome: of two
    //    requests with one nonce, on any replica, the second is refused there, before anything
    //    is answered.
    let expires_at = match kbs.inner.challenge_keys.check(&nonce, now) {
        Ok(expires_at) => expires_at,
        Err(ChallengeRefusal::Unknown) => return Err(KbsError::NonceUnknown),
        Err(ChallengeRefusal::Expired { expired_at }) => {
            return Err(KbsError::NonceExpired { expired_at, now })
        }
        Err(ChallengeRefusal::TooFarAhead { expires_at, latest }) => {
            return Err(KbsError::NonceStale(format!(
                "nonce expires at {expires_at}, later than a challenge issued now would \
                 ({latest}): it was issued while this KBS's clock was ahead"
            )))
        }
    };
    let mut commit = AttestationCommit {
        nonce: nonce.clone(),
        expires_at,
        releases: Vec::new(),
        events: Vec::new(),
        job_runtime: None,
    };
    let answer = appraise_attestation(&kbs, &req, job, &nonce, now_time, &mut commit).await;
    match kbs.commit_attestation(commit).await? {
        AttestationOutcome::Spent => Err(KbsError::NonceReplayed),
        AttestationOutcome::Forgotten => Err(KbsError::NonceStale(format!(
            "nonce expires at {expires_at}, among the expiries of spent nonces this KBS has \
             forgotten: it may have been spent"
        ))),
        AttestationOutcome::Committed { withheld } => {
            let mut answer = answer?;
            // A revocation that committed while this request was being answered withholds the
            // key (the store recorded the denial).
            let (released, late): (Vec<_>, Vec<_>) = std::mem::take(&mut answer.released)
                .into_iter()
                .partition(|r| !withheld.contains(&r.key_id));
            for r in late {
                tracing::warn!(key_id = %r.key_id, "key revoked while its release was answered: withheld");
                answer.denied.push(DeniedKey {
                    key_id: r.key_id,
                    reasons: vec![
                        "the key was revoked while this request was being answered".into()
                    ],
                });
            }
            for r in &released {
                tracing::info!(key_id = %r.key_id, claims = %answer.claims_digest, "key released");
            }
            answer.released = released;
            Ok(Json(answer))
        }
    }
}

/// Verifies and appraises an attestation whose nonce checked, and seals each key its policy
/// accepts; writes nothing, but puts in `commit` every audit event (and the job runtime) to be
/// committed with the nonce. An `Err` is the request's answer once that commit is done.
async fn appraise_attestation(
    kbs: &Kbs,
    req: &AttestRequest,
    job: Option<JobRelease>,
    nonce: &[u8],
    now_time: SystemTime,
    commit: &mut AttestationCommit,
) -> Result<AttestResponse, KbsError> {
    let now = unix(now_time);
    // 2. Verify: signature and trust anchors → claims. Certificate chains and DCAP collateral
    //    cost milliseconds of CPU, and so does parsing shipped collateral: off the async workers.
    let verifying = kbs.clone();
    let evidence = req.evidence.clone();
    let wire = req.endorsements.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let shipped = wire.decode().map_err(|e| e.to_string())?;
        verifying
            .inner
            .verifier
            .verify_shipped(&evidence, &shipped, now_time)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| KbsError::Internal(format!("verification task failed: {e}")))?;
    let claims = match verified {
        Ok(c) => c,
        Err(detail) => {
            commit.events.push(pending_event(
                now,
                "attestation_failed",
                None,
                None,
                "rejected",
                None,
                detail.clone(),
            ));
            return Err(KbsError::Evidence(detail));
        }
    };
    let digest = hex::encode(claims.digest());
    let measurement = hex::encode(&claims.launch_measurement);

    // 3. The evidence must bind this nonce and exactly the keys (and models, or the job)
    //    presented.
    let job_hash = match &job {
        Some(job) => {
            if !req.models.is_empty() {
                return Err(KbsError::BadRequest(
                    "a training job's attestation binds no models".into(),
                ));
            }
            job.spec
                .validate()
                .map_err(|e| KbsError::BadRequest(e.to_string()))?;
            Some(job.spec.hash())
        }
        None => None,
    };
    // Each party's approval, verified once (however many keys are asked for).
    let approvals = match (&job, &job_hash) {
        (Some(job), Some(h)) => verify_approvals(job, h, now_time)?,
        _ => BTreeMap::new(),
    };
    let expected = match &job_hash {
        Some(h) => job_report_data(nonce, &req.runtime_keys, h),
        None => report_data(nonce, &req.runtime_keys, &req.models),
    };
    if claims.report_data != expected {
        let err = KbsError::Binding {
            found: hex::encode(claims.report_data),
            expected: hex::encode(expected),
        };
        commit.events.push(pending_event(
            now,
            "attestation_failed",
            None,
            Some(&digest),
            "rejected",
            Some(&measurement),
            err.to_string(),
        ));
        return Err(err);
    }

    // 4. Appraise each requested key's release policy and seal what it accepts. Nothing is
    //    answered before the events are committed, so the log never misses a release delivered.
    //    (It may hold one whose answer never arrived: a client gone, a reply lost.)
    let mut released = Vec::new();
    let mut denied = Vec::new();
    for key_id in &req.key_ids {
        let id = key_id.clone();
        let lookup = kbs.lookup_key(id).await?;
        // A stored entry that does not unwrap (its policy, kind or owner edited in the store, or
        // its DEK moved) is this key's denial, not the whole request's failure.
        let (stored, tampered) = match lookup {
            Ok(k) => (k, None),
            Err(e @ crate::store::StoreError::Custody(_)) => {
                tracing::error!(key_id = %key_id, error = %e, "a stored key does not unwrap: the store was altered");
                (None, Some(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let reasons: Vec<String> = match &stored {
            None if tampered.is_some() => vec![format!(
                "key {key_id}'s stored entry does not unwrap: its policy, kind, owner or DEK was \
                 altered in the store; refused"
            )],
            None => vec![format!("unknown key id {key_id}")],
            Some(k) if k.revoked_at.is_some() => vec![format!(
                "key {key_id} was revoked at {}",
                cordon_proto::rfc3339(k.revoked_at.unwrap_or_default())
            )],
            Some(k) => match Policy::from_toml(&k.policy) {
                Err(e) => vec![format!("stored release policy is invalid: {e}")],
                Ok(policy) => {
                    let mut reasons: Vec<String> = appraise(&claims, &policy)
                        .failures
                        .iter()
                        .map(|f| f.to_string())
                        .collect();
                    reasons.extend(job_check(key_id, k, job.as_ref(), job_hash, &approvals));
                    reasons
                }
            },
        };
        match stored {
            Some(k) if reasons.is_empty() => {
                let sealed = channel::seal_to(
                    &req.runtime_keys.hpke_public_key,
                    RELEASE_INFO,
                    key_id.as_bytes(),
                    &k.dek,
                )
                .map_err(|e| KbsError::BadRequest(format!("runtime HPKE key: {e}")))?;
                released.push(ReleasedKey {
                    key_id: key_id.clone(),
                    sealed_dek: sealed,
                });
            }
            _ => denied.push(DeniedKey {
                key_id: key_id.clone(),
                reasons,
            }),
        }
    }
    // The models the runtime bound in its evidence: which sealed manifests it said it would open.
    let bound_models = req
        .models
        .iter()
        .map(|m| {
            format!(
                "{}@{} manifest_sha256={}",
                m.name,
                m.version,
                hex::encode(m.manifest_sha256)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let released_detail = match (&job, &job_hash) {
        // Only the approvals that verified, never the names as submitted.
        (Some(job), Some(h)) => format!(
            "training job {} ({:?}), approved by {}",
            hex::encode(h),
            job.spec.name,
            approvals
                .iter()
                .filter(|(_, verdict)| verdict.is_ok())
                .map(|(party, _)| party.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ if bound_models.is_empty() => String::new(),
        _ => format!("bound models: {bound_models}"),
    };
    // A runtime that received every dataset key of a job may later register that job's output
    // for serving (under the job's own serving policy), signed with the key its evidence bound.
    // Recorded with the releases, unless one of them is withheld at commit.
    if let (Some(job), Some(hash)) = (&job, job_hash) {
        // Every dataset of the job, not only those it chose to ask for: a runtime that got one
        // party's key is not the job's runtime.
        let all: BTreeSet<&str> = job
            .spec
            .datasets
            .iter()
            .map(|d| d.key_id.as_str())
            .collect();
        let got: BTreeSet<&str> = released.iter().map(|r| r.key_id.as_str()).collect();
        if denied.is_empty() && got == all {
            commit.job_runtime = Some(JobRuntime {
                job_hash: hash,
                signing_key: req.runtime_keys.signing_public_key,
                serve_policy: job.spec.outputs.serve.as_ref().map(|s| s.policy.clone()),
            });
        }
    }
    // Each release is recorded only if its key is still unrevoked when the commit runs (checked
    // in its transaction); the denials after the releases.
    for r in &released {
        commit.releases.push(pending_event(
            now,
            "key_released",
            Some(&r.key_id),
            Some(&digest),
            "accepted",
            Some(&measurement),
            released_detail.clone(),
        ));
    }
    for d in &denied {
        let detail = d.reasons.join("; ");
        tracing::warn!(key_id = %d.key_id, reasons = %detail, "key denied");
        commit.events.push(pending_event(
            now,
            "key_denied",
            Some(&d.key_id),
            Some(&digest),
            "rejected",
            Some(&measurement),
            detail,
        ));
    }
    Ok(AttestResponse {
        claims_digest: digest,
        released,
        denied,
    })
}

/// Each approving party's verdict: whether its approval of `hash` verifies at `now`, and if not
/// why. At most one approval per party of the job, each naming one of its parties: anything else
/// is refused whole, so that a request cannot make the KBS verify (and record) without bound.
fn verify_approvals(
    job: &JobRelease,
    hash: &[u8; 32],
    now: SystemTime,
) -> Result<BTreeMap<String, Result<(), String>>, KbsError> {
    let mut verdicts = BTreeMap::new();
    for a in &job.approvals {
        if job.spec.party(&a.party).is_none() {
            return Err(KbsError::BadRequest(format!(
                "an approval names {:?}, which is not a party of the job",
                a.party
            )));
        }
        let verdict = a.verify(&job.spec, hash, now).map_err(|e| e.to_string());
        if verdicts.insert(a.party.clone(), verdict).is_some() {
            return Err(KbsError::BadRequest(format!(
                "party {:?} has more than one approval: at most one each",
                a.party
            )));
        }
    }
    Ok(verdicts)
}

/// The job rules for one key, on top of its release policy: a dataset key is released only for a
/// job that lists it under its owner and that its owner approved (unexpired); a training job is
/// released dataset keys only.
fn job_check(
    key_id: &str,
    key: &crate::store::StoredKey,
    job: Option<&JobRelease>,
    job_hash: Option<[u8; 32]>,
    approvals: &BTreeMap<String, Result<(), String>>,
) -> Vec<String> {
    let (owner, job, hash) = match (key.is_dataset_key(), key.owner, job, job_hash) {
        (false, _, None, _) => return vec![],
        (false, _, Some(_), _) => {
            return vec![format!(
                "key {key_id} is not a dataset key; a training job is released dataset keys only"
            )]
        }
        (true, Some(o), Some(j), Some(h)) => (o, j, h),
        (true, _, _, _) => {
            return vec![format!(
                "key {key_id} is a dataset key: it is released only for a training job its owner approved"
            )]
        }
    };
    let spec = &job.spec;
    let Some(dataset) = spec.datasets.iter().find(|d| d.key_id == key_id) else {
        return vec![format!(
            "job {} does not list dataset key {key_id}",
            hex::encode(hash)
        )];
    };
    let Some(party) = spec.party(&dataset.party) else {
        return vec![format!("job names unknown party {}", dataset.party)];
    };
    if party.signing_key != owner {
        return vec![format!(
            "job lists dataset key {key_id} under party {}, whose key is not the key's owner",
            party.name
        )];
    }
    let why = match approvals.get(&party.name) {
        Some(Ok(())) => return vec![],
        Some(Err(e)) => format!(" ({e})"),
        None => String::new(),
    };
    vec![format!(
        "no valid approval of job {} by {}, the owner of dataset key {key_id}{why}",
        hex::encode(hash),
        party.name,
    )]
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, KbsError> {
    serde_json::from_slice(body).map_err(|e| KbsError::BadRequest(e.to_string()))
}

/// `PUT /kbs/v1/admin/keys/{key_id}`: the administrator registers a model owner's key, sealed to
/// this KBS, with its release policy.
async fn register_key(
    State(kbs): State<Kbs>,
    UrlPath(key_id): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, KbsError> {
    let body = bytes_body(body)?;
    let admin = kbs.check_admin(&headers, "PUT", uri.path(), &body).await?;
    let req: RegisterKey = parse_body(&body)?;
    check_key_id(&key_id)?;
    let policy = Policy::from_toml(&req.policy).map_err(|e| KbsError::Policy(e.to_string()))?;
    let dek = kbs.open_dek(
        &req.sealed_dek,
        DekPurpose::AdminKey,
        &key_id,
        &admin,
        &policy_context(&req.policy),
    )?;
    let now = unix(kbs.now());
    let policy_text = req.policy.clone();
    let id = key_id.clone();
    let detail = policy_summary(&policy);
    put_audited(
        &kbs,
        now,
        "key_registered",
        id,
        detail,
        move |s, id, event| s.put_key_audited(id, &dek, &policy_text, event),
    )
    .await?;
    tracing::info!(key_id = %key_id, "key registered");
    Ok(Json(serde_json::json!({ "key_id": key_id })))
}

/// `PUT /kbs/v1/datasets/{key_id}`: a data owner registers its dataset's DEK (sealed to this KBS)
/// and release policy, authenticated by its own key (no admin token). The key is then released
/// only for training jobs this owner approved, and only this owner can replace it. Each owner has
/// a quota, since anyone can make a party key.
async fn register_dataset_key(
    State(kbs): State<Kbs>,
    UrlPath(key_id): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, KbsError> {
    let body = bytes_body(body)?;
    let signed = kbs.verified_request(&headers, "PUT", uri.path(), &body)?;
    let owner = signed.signer;
    let req: RegisterKey = parse_body(&body)?;
    check_key_id(&key_id)?;
    let policy = Policy::from_toml(&req.policy).map_err(|e| KbsError::Policy(e.to_string()))?;
    let dek = kbs.open_dek(
        &req.sealed_dek,
        DekPurpose::DatasetKey,
        &key_id,
        &owner,
        &policy_context(&req.policy),
    )?;
    // Only a well-formed registration, whose DEK opened for this signer, spends a nonce.
    kbs.record_nonce(&signed, Share::Party).await?;
    let now = unix(kbs.now());
    let policy_text = req.policy.clone();
    let id = key_id.clone();
    let detail = format!(
        "dataset key of owner {}; {}",
        hex::encode(owner),
        policy_summary(&policy)
    );
    let limits = kbs.inner.config.limits;
    put_audited(
        &kbs,
        now,
        "dataset_key_registered",
        id,
        detail,
        move |s, id, event| {
            // The quota is checked in the store, in the registration's own transaction: replicas
            // registering at once cannot overrun it.
            let quota = DatasetQuota {
                per_owner: limits.max_dataset_keys_per_owner,
                max: limits.max_dataset_keys,
            };
            s.put_dataset_key_audited(id, &dek, &policy_text, &owner, quota, event)
        },
    )
    .await?;
    tracing::info!(key_id = %key_id, owner = %hex::encode(owner), "dataset key registered");
    Ok(Json(serde_json::json!({ "key_id": key_id })))
}

/// `PUT /kbs/v1/jobs/{job_hash}/output`: the training runtime registers the trained model's DEK
/// (sealed to this KBS) under the job's serving policy. Signed with the runtime's signing key, which
/// must be one that attested for this job and received all its dataset keys. Never replaces an
/// existing key; the key is the job's, not the admin API's.
async fn register_job_output(
    State(kbs): State<Kbs>,
    UrlPath(job_hash_hex): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<serde_json::Value>, KbsError> {
    let body = bytes_body(body)?;
    let signed = kbs.verified_request(&headers, "PUT", uri.path(), &body)?;
    let runtime = signed.signer;
    let job_hash: [u8; 32] = hex::decode(&job_hash_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KbsError::BadRequest("job hash must be 32 bytes of hex".into()))?;
    let req: job::OutputKey = parse_body(&body)?;
    check_key_id(&req.key_id)?;
    let policy = match kbs
        .with_store(move |s| Ok(s.job_runtime(&job_hash, &runtime)?))
        .await?
    {
        None => {
            return Err(KbsError::PartyUnauthorized(format!(
                "no runtime with this key attested for job {job_hash_hex} and received its datasets"
            )))
        }
        Some(None) => {
            return Err(KbsError::Conflict(format!(
                "job {job_hash_hex} names no serving policy for its output"
            )))
        }
        Some(Some(p)) => p,
    };
    // Only a runtime that attested for this job spends a nonce.
    kbs.record_nonce(&signed, Share::Runtime).await?;
    let dek = kbs.open_dek(
        &req.sealed_dek,
        DekPurpose::JobOutput,
        &req.key_id,
        &runtime,
        &job::output_context(&job_hash, &req.sealed_manifest_sha256),
    )?;
    let now = unix(kbs.now());
    let key_id = req.key_id.clone();
    let detail = format!(
        "output of training job {job_hash_hex} (sealed manifest sha256 {}), registered by its attested runtime (signing key {}) under the job's serving policy",
        hex::encode(req.sealed_manifest_sha256),
        hex::encode(runtime)
    );
    put_audited(
        &kbs,
        now,
        "job_output_registered",
        key_id.clone(),
        detail,
        move |s, id, event| s.put_output_key_audited(id, &dek, &policy, &job_hash, &runtime, event),
    )
    .await?;
    tracing::info!(key_id = %key_id, job = %job_hash_hex, "job output registered for serving");
    Ok(Json(serde_json::json!({ "key_id": key_id })))
}

/// Stores a key with its `accepted` audit event, in the store's one transaction (`put`).
async fn put_audited(
    kbs: &Kbs,
    time: u64,
    kind: &'static str,
    key_id: String,
    detail: String,
    put: impl FnOnce(
            &mut dyn KeyStore,
            &str,
            &NewAuditEvent<'_>,
        ) -> Result<AuditEvent, crate::store::StoreError>
        + Send
        + 'static,
) -> Result<(), KbsError> {
    kbs.with_store(move |s| {
        let event = NewAuditEvent {
            time,
            kind,
            key_id: Some(&key_id),
            claims_digest: None,
            verdict: "accepted",
            measurement: None,
            detail: &detail,
        };
        put(s, &key_id, &event)?;
        Ok(())
    })
    .await
}

fn check_key_id(key_id: &str) -> Result<(), KbsError> {
    if key_id.is_empty()
        || key_id.len() > 128
        || !key_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(KbsError::BadRequest(
            "key id must be 1-128 characters of [A-Za-z0-9._-]".into(),
        ));
    }
    Ok(())
}

fn policy_summary(policy: &Policy) -> String {
    format!(
        "release policy: platforms={:?} measurements={} allow_debug={}",
        policy
            .platforms
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        policy.launch_measurements.len(),
        policy.allow_debug
    )
}

async fn list_keys(
    State(kbs): State<Kbs>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Vec<KeyInfo>>, KbsError> {
    kbs.check_admin(&headers, "GET", uri.path(), b"").await?;
    Ok(Json(kbs.with_store(|s| Ok(s.key_listing()?)).await?))
}

/// Revokes a key (admin): its DEK is erased from the store and every later release is denied;
/// the revocation is audited with the reason given. Runtimes that received the key before keep
/// what they hold: revocation stops new releases, it cannot recall old ones.
async fn revoke_key(
    State(kbs): State<Kbs>,
    UrlPath(key_id): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<RevokeResponse>, KbsError> {
    let body = bytes_body(body)?;
    check_key_id(&key_id)?;
    kbs.check_admin(&headers, "POST", uri.path(), &body).await?;
    let req: RevokeRequest = serde_json::from_slice(&body)
        .map_err(|e| KbsError::BadRequest(format!("revoke request: {e}")))?;
    let formatting = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if req.reason.len() > 1024 || req.reason.chars().any(formatting) {
        return Err(KbsError::BadRequest(
            "the reason must be at most 1024 bytes, without control or bidirectional formatting \
             characters"
                .into(),
        ));
    }
    let now = unix((kbs.inner.config.clock)());
    let detail = format!("revoked by the administrator: {}", req.reason);
    let id = key_id.clone();
    let event = kbs
        .with_store(move |s| {
            let event = NewAuditEvent {
                time: now,
                kind: "key_revoked",
                key_id: Some(&id),
                claims_digest: None,
                verdict: "accepted",
                measurement: None,
                detail: &detail,
            };
            Ok(s.revoke_key_audited(&id, &event)?)
        })
        .await?;
    tracing::warn!(key_id = %key_id, "key revoked");
    Ok(Json(RevokeResponse {
        key_id,
        revoked_at: now,
        audit_seq: event.seq,
    }))
}

async fn audit(
    State(kbs): State<Kbs>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Vec<AuditEvent>>, KbsError> {
    kbs.check_admin(&headers, "GET", uri.path(), b"").await?;
    Ok(Json(kbs.with_store(|s| Ok(s.audit_events()?)).await?))
}

/// `GET /kbs/v1/admin/audit/checkpoint`: the audit log's size and Merkle root, signed now.
async fn audit_checkpoint(
    State(kbs): State<Kbs>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<SignedCheckpoint>, KbsError> {
    kbs.check_admin(&headers, "GET", uri.path(), b"").await?;
    Ok(Json(kbs.audit_view().await?.2))
}

fn path_number(text: &str, what: &str) -> Result<u64, KbsError> {
    text.parse()
        .map_err(|_| KbsError::BadRequest(format!("{what} must be a decimal number")))
}

/// `GET /kbs/v1/admin/audit/inclusion/{index}`: event `index + 1` with its inclusion proof in the
/// log a checkpoint signed now covers.
async fn audit_inclusion(
    State(kbs): State<Kbs>,
    UrlPath(index): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<InclusionProof>, KbsError> {
    kbs.check_admin(&headers, "GET", uri.path(), b"").await?;
    let index = path_number(&index, "leaf index")?;
    let (events, leaves, checkpoint) = kbs.audit_view().await?;
    let size = checkpoint.checkpoint.size;
    let path = merkle::inclusion_proof(index, size, &leaves)
        .map_err(|e| KbsError::BadRequest(e.to_string()))?;
    // inclusion_proof checked index < size = events.len().
    let event = usize::try_from(index)
        .ok()
        .and_then(|i| events.get(i))
        .cloned()
        .ok_or_else(|| KbsError::Internal("audit event missing".into()))?;
    Ok(Json(InclusionProof {
        checkpoint,
        index,
        event,
        path,
    }))
}

/// `GET /kbs/v1/admin/audit/consistency/{old_size}`: the consistency proof from the log's first
/// `old_size` events to the log a checkpoint signed now covers. An `old_size` beyond the log is a
/// conflict: the log is shorter than the caller saw it (rolled back), or the caller is wrong.
async fn audit_consistency(
    State(kbs): State<Kbs>,
    UrlPath(old_size): UrlPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<ConsistencyProof>, KbsError> {
    kbs.check_admin(&headers, "GET", uri.path(), b"").await?;
    let old_size = path_number(&old_size, "older tree size")?;
    let (_, leaves, checkpoint) = kbs.audit_view().await?;
    let size = checkpoint.checkpoint.size;
    if old_size > size {
        return Err(KbsError::Conflict(format!(
            "the audit log has {size} events, fewer than the {old_size} asked for"
        )));
    }
    let path = merkle::consistency_proof(old_size, size, &leaves)
        .map_err(|e| KbsError::Internal(e.to_string()))?;
    Ok(Json(ConsistencyProof {
        checkpoint,
        old_size,
        path,
    }))
}
