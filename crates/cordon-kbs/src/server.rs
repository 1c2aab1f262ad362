//! HTTP surface of the KBS (axum) over the store.

use crate::custody::{KekSpec, Keks};
use crate::store::{NewAuditEvent, NonceShare, NonceUse, RequestNonceUse, Share, Store};
use crate::KbsError;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, Uri};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cordon_attest::{appraise, Endorsements, Policy, Verifier};
use cordon_proto::auth::{self, unix, AuthError, SignedRequest, REQUEST_WINDOW};
use cordon_proto::job::{self, job_report_data};
use cordon_proto::kbs::{
    dek_upload_aad, policy_context, AttestRequest, AttestResponse, AuditEvent, Challenge,
    DekPurpose, DeniedKey, JobRelease, KbsIdentity, KeyInfo, RegisterKey, ReleasedKey,
    RevokeRequest, RevokeResponse, SealedToKbs, JOB_INFO, MAX_KEY_IDS, RELEASE_INFO, UPLOAD_INFO,
};
use cordon_proto::kbs::{kbs_identity_report_data, KbsEvidence};
use cordon_proto::{channel, report_data, ServiceKeyPair};
use cordon_tee::EvidenceProvider;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

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
    /// The KBS's own TEE, if it runs in one: at start it makes evidence binding the identity key
    /// (`GET /kbs/v1/identity` serves it), which parties verify against a policy of their own
    /// before they seal a key to it. `None`: no evidence, parties must pin the key.
    pub identity_tee: Option<Arc<dyn EvidenceProvider>>,
}

/// What one caller can make the KBS store: anyone can make a party key, so dataset keys have a
/// quota, and challenges (one row each until they expire) are bounded.
#[derive(Debug, Clone, Copy)]
pub struct KbsLimits {
    /// Dataset keys one owner (party key) may hold.
    pub max_dataset_keys_per_owner: u64,
    /// Dataset keys held, all owners together.
    pub max_dataset_keys: u64,
    /// Challenge nonces held (outstanding, or expired within the last ten minutes); more
    /// challenges get 503.
    pub max_live_nonces: u64,
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
            max_live_nonces: 100_000,
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
    store: Mutex<Store>,
    config: KbsConfig,
    /// Holds the endorsements and caches verified SNP endorsement-key chains.
    verifier: Verifier,
    /// The KBS's long-term HPKE key: DEKs sent to the KBS are sealed to it, and signed requests
    /// name its public half as their audience.
    identity: ServiceKeyPair,
    /// Evidence binding `identity`'s public key, made at start by `config.identity_tee`.
    identity_evidence: Option<KbsEvidence>,
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
        let store = Store::open(&config.data_dir, config.open_keks()?)?;
        let seed = match store.identity_seed()? {
            Some(seed) => seed,
            None => {
                let mut fresh = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(fresh.as_mut());
                store.init_identity_seed(&fresh, unix((config.clock)()))?
            }
        };
        let identity = ServiceKeyPair::derive(0, &seed);
        // Once, at start: hardware evidence costs a firmware round trip, and the identity key is
        // long-term, so evidence made now binds it for this process's whole life.
        let identity_evidence = match &config.identity_tee {
            Some(tee) => {
                let report_data = kbs_identity_report_data(&identity.public_key());
                let evidence = tee.evidence(&report_data).map_err(|e| {
                    KbsError::Internal(format!("producing the KBS's identity evidence: {e}"))
                })?;
                Some(KbsEvidence {
                    platform: tee.platform(),
                    evidence,
                })
            }
            None => None,
        };
        let verifier = Verifier::new(config.endorsements.clone());
        Ok(Kbs {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                config,
                verifier,
                identity,
                identity_evidence,
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
        let store = self.lock()?;
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
        Ok(Some(token))
    }

    /// Upgrades a store from before signed admin requests, which holds only the token's hash:
    /// given that token, records the public key it seeds. `false` when there is nothing to do.
    pub fn adopt_admin_token(&self, token: &str) -> Result<bool, KbsError> {
        let store = self.lock()?;
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
        Ok(true)
    }

    pub fn has_admin_token(&self) -> Result<bool, KbsError> {
        Ok(self.lock()?.admin_public_key()?.is_some())
    }

    /// [`Store::set_synchronous`] on this KBS's store; for `cordon bench kbs --sync` only (the KBS
    /// itself runs with the store's default, [`crate::Synchronous::Full`]).
    pub fn set_store_synchronous(&self, mode: crate::Synchronous) -> Result<(), KbsError> {
        self.lock()?.set_synchronous(mode)?;
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Store>, KbsError> {
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
        f: impl FnOnce(&mut Store) -> Result<T, KbsError> + Send + 'static,
    ) -> Result<T, KbsError> {
        let kbs = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = kbs.lock()?;
            f(&mut store)
        })
        .await
        .map_err(|e| KbsError::Internal(format!("store task failed: {e}")))?
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
        auth::verify_request(
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            method,
            path,
            body,
            &self.identity_public_key(),
            self.now(),
        )
        .map_err(auth_error)
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

    /// `Err` naming both keys when something was sealed to another KBS key than this one's.
    fn sealed_to_us(&self, key: &[u8; 32]) -> Result<(), String> {
        let ours = self.identity_public_key();
        if key != &ours {
            return Err(format!(
                "sealed to KBS key {}, this KBS's key is {}",
                hex::encode(key),
                hex::encode(ours)
            ));
        }
        Ok(())
    }

    /// Opens a training job sealed to this KBS for the attest request carrying `nonce_hex`.
    fn open_job(&self, sealed: &SealedToKbs, nonce_hex: &str) -> Result<JobRelease, KbsError> {
        self.sealed_to_us(&sealed.kbs_public_key)
            .map_err(|e| KbsError::BadRequest(format!("the job is {e}")))?;
        let json = self
            .inner
            .identity
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
        self.sealed_to_us(&sealed.kbs_public_key)
            .map_err(KbsError::SealedDek)?;
        let dek = self
            .inner
            .identity
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

async fn challenge(State(kbs): State<Kbs>) -> Result<Json<Challenge>, KbsError> {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let now = unix(kbs.now());
    let expires_at = now + kbs.inner.config.nonce_ttl.as_secs();
    let max = kbs.inner.config.limits.max_live_nonces;
    kbs.with_store(move |s| Ok(s.insert_nonce(&nonce, expires_at, now, max)?))
        .await?;
    Ok(Json(Challenge {
        nonce: hex::encode(nonce),
        expires_at,
    }))
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
    // Each key costs an appraisal and an fsync'd audit write: bounded, and each asked once.
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

    // 1. The nonce: issued here, unused, unexpired. It is consumed even if what follows fails.
    let n = nonce.clone();
    match kbs.with_store(move |s| Ok(s.use_nonce(&n, now)?)).await? {
        NonceUse::Accepted => {}
        NonceUse::Unknown => return Err(KbsError::NonceUnknown),
        NonceUse::Replayed => return Err(KbsError::NonceReplayed),
        NonceUse::Expired { expired_at } => return Err(KbsError::NonceExpired { expired_at, now }),
    }

    // 2. Verify: signature and trust anchors → claims. Certificate chains and DCAP collateral
    //    cost milliseconds of CPU: off the async workers.
    let verifying = kbs.clone();
    let evidence = req.evidence.clone();
    let verified =
        tokio::task::spawn_blocking(move || verifying.inner.verifier.verify(&evidence, now_time))
            .await
            .map_err(|e| KbsError::Internal(format!("verification task failed: {e}")))?;
    let claims = match verified {
        Ok(c) => c,
        Err(e) => {
            let detail = e.to_string();
            record(
                &kbs,
                now,
                "attestation_failed",
                None,
                None,
                "rejected",
                None,
                &detail,
            )
            .await?;
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
        Some(h) => job_report_data(&nonce, &req.runtime_keys, h),
        None => report_data(&nonce, &req.runtime_keys, &req.models),
    };
    if claims.report_data != expected {
        let err = KbsError::Binding {
            found: hex::encode(claims.report_data),
            expected: hex::encode(expected),
        };
        let detail = err.to_string();
        record(
            &kbs,
            now,
            "attestation_failed",
            None,
            Some(&digest),
            "rejected",
            Some(&measurement),
            &detail,
        )
        .await?;
        return Err(err);
    }

    // 4. Appraise each requested key's release policy and seal what it accepts. Audit events are
    //    written only once every answer is ready, so the log never records a release not delivered.
    let mut released = Vec::new();
    let mut denied = Vec::new();
    for key_id in &req.key_ids {
        let id = key_id.clone();
        let stored = kbs.with_store(move |s| Ok(s.get_key(&id)?)).await?;
        let reasons: Vec<String> = match &stored {
            None => vec![format!("unknown key id {key_id}")],
            Some(k) if k.revoked_at.is_some() => vec![format!(
                "key {key_id} was revoked at {}",
                k.revoked_at.unwrap_or_default()
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
            let signing = req.runtime_keys.signing_public_key;
            let serve = job.spec.outputs.serve.as_ref().map(|s| s.policy.clone());
            kbs.with_store(move |s| {
                Ok(s.record_job_runtime(&hash, &signing, serve.as_deref(), now)?)
            })
            .await?;
        }
    }
    for r in &released {
        record(
            &kbs,
            now,
            "key_released",
            Some(&r.key_id),
            Some(&digest),
            "accepted",
            Some(&measurement),
            &released_detail,
        )
        .await?;
        tracing::info!(key_id = %r.key_id, claims = %digest, "key released");
    }
    for d in &denied {
        let detail = d.reasons.join("; ");
        record(
            &kbs,
            now,
            "key_denied",
            Some(&d.key_id),
            Some(&digest),
            "rejected",
            Some(&measurement),
            &detail,
        )
        .await?;
        tracing::warn!(key_id = %d.key_id, reasons = %detail, "key denied");
    }
    Ok(Json(AttestResponse {
        claims_digest: digest,
        released,
        denied,
    }))
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

#[allow(clippy::too_many_arguments)]
async fn record(
    kbs: &Kbs,
    time: u64,
    kind: &'static str,
    key_id: Option<&str>,
    claims_digest: Option<&str>,
    verdict: &'static str,
    measurement: Option<&str>,
    detail: &str,
) -> Result<(), KbsError> {
    let (key_id, claims_digest, measurement, detail) = (
        key_id.map(String::from),
        claims_digest.map(String::from),
        measurement.map(String::from),
        detail.to_string(),
    );
    kbs.with_store(move |s| {
        s.append_audit(&NewAuditEvent {
            time,
            kind,
            key_id: key_id.as_deref(),
            claims_digest: claims_digest.as_deref(),
            verdict,
            measurement: measurement.as_deref(),
            detail: &detail,
        })?;
        Ok(())
    })
    .await
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
            // Counted without this key id, a replacement is checked like a new key.
            let (all, mine) = s.dataset_key_counts(&owner, id)?;
            if mine >= limits.max_dataset_keys_per_owner {
                return Err(crate::store::StoreError::Quota(format!(
                    "owner {} holds {mine} dataset keys, the most one owner may hold",
                    hex::encode(owner)
                )));
            }
            if all >= limits.max_dataset_keys {
                return Err(crate::store::StoreError::Quota(format!(
                    "this KBS holds {all} dataset keys, its limit"
                )));
            }
            s.put_dataset_key_audited(id, &dek, &policy_text, &owner, event)
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
    put: impl FnOnce(&mut Store, &str, &NewAuditEvent<'_>) -> Result<AuditEvent, crate::store::StoreError>
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
    if req.reason.len() > 1024 || req.reason.chars().any(char::is_control) {
        return Err(KbsError::BadRequest(
            "the reason must be at most 1024 characters, without control characters".into(),
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
