//! HTTP surface of the KBS (axum) over the store.

use crate::store::{NewAuditEvent, NonceUse, Store};
use crate::KbsError;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cordon_attest::{appraise, Endorsements, Policy, Verifier};
use cordon_proto::job::{self, job_report_data};
use cordon_proto::kbs::{
    AttestRequest, AttestResponse, AuditEvent, Challenge, DeniedKey, JobRelease, RegisterKey,
    ReleasedKey, RELEASE_INFO,
};
use cordon_proto::{channel, report_data};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
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
}

impl KbsConfig {
    pub fn new(data_dir: PathBuf, endorsements: Endorsements) -> KbsConfig {
        KbsConfig {
            data_dir,
            endorsements,
            nonce_ttl: Duration::from_secs(60),
            clock: Arc::new(SystemTime::now),
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
}

const MAX_BODY: usize = 1 << 20;

/// A body that is not the expected JSON is a 400; one over [`MAX_BODY`] a 413.
fn json_rejection(e: axum::extract::rejection::JsonRejection) -> KbsError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        KbsError::TooLarge { limit: MAX_BODY }
    } else {
        KbsError::BadRequest(e.body_text())
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Kbs {
    pub fn open(config: KbsConfig) -> Result<Kbs, KbsError> {
        let store = Store::open(&config.data_dir)?;
        let verifier = Verifier::new(config.endorsements.clone());
        Ok(Kbs {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                config,
                verifier,
            }),
        })
    }

    /// If no admin token exists yet, creates one, stores its hash and returns the token (shown once).
    pub fn init_admin_token(&self) -> Result<Option<Zeroizing<String>>, KbsError> {
        let store = self.lock()?;
        if store.admin_token_hash()?.is_some() {
            return Ok(None);
        }
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        let token = Zeroizing::new(hex::encode(raw.as_ref()));
        store.set_admin_token_hash(&Sha256::digest(token.as_bytes()).into())?;
        Ok(Some(token))
    }

    pub fn has_admin_token(&self) -> Result<bool, KbsError> {
        Ok(self.lock()?.admin_token_hash()?.is_some())
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
            .route("/kbs/v1/challenge", post(challenge))
            .route("/kbs/v1/attest", post(attest))
            .route("/kbs/v1/admin/keys", get(list_keys))
            .route("/kbs/v1/admin/keys/{key_id}", put(register_key))
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
        cordon_http::serve(
            listener,
            self.router(),
            cordon_http::ServerLimits::default(),
            shutdown,
        )
        .await
    }

    async fn check_admin(&self, headers: &HeaderMap) -> Result<(), KbsError> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(KbsError::Unauthorized)?;
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let stored = self.with_store(|s| Ok(s.admin_token_hash()?)).await?;
        match stored {
            Some(h) if bool::from(h.ct_eq(&presented)) => Ok(()),
            _ => Err(KbsError::Unauthorized),
        }
    }
}

async fn challenge(State(kbs): State<Kbs>) -> Result<Json<Challenge>, KbsError> {
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let now = unix(kbs.now());
    let expires_at = now + kbs.inner.config.nonce_ttl.as_secs();
    kbs.with_store(move |s| Ok(s.insert_nonce(&nonce, expires_at, now)?))
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
    let nonce = hex::decode(&req.nonce)
        .map_err(|e| KbsError::BadRequest(format!("nonce is not hex: {e}")))?;
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
    let job_hash = match &req.job {
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
            Some(k) => match Policy::from_toml(&k.policy) {
                Err(e) => vec![format!("stored release policy is invalid: {e}")],
                Ok(policy) => {
                    let mut reasons: Vec<String> = appraise(&claims, &policy)
                        .failures
                        .iter()
                        .map(|f| f.to_string())
                        .collect();
                    reasons.extend(job_check(key_id, k.owner, req.job.as_ref(), job_hash));
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
    let released_detail = match (&req.job, &job_hash) {
        (Some(job), Some(h)) => format!(
            "training job {} ({:?}), approved by {}",
            hex::encode(h),
            job.spec.name,
            job.approvals
                .iter()
                .map(|a| a.party.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ if bound_models.is_empty() => String::new(),
        _ => format!("bound models: {bound_models}"),
    };
    // A runtime that received every dataset key of a job may later register that job's output
    // for serving (under the job's own serving policy), signed with the key its evidence bound.
    if let (Some(job), Some(hash)) = (&req.job, job_hash) {
        if denied.is_empty() && !released.is_empty() {
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

/// The job rules for one key, on top of its release policy: a dataset key (one with an owner) is
/// released only for a job that lists it under its owner and that its owner approved; a training
/// job is released dataset keys only.
fn job_check(
    key_id: &str,
    owner: Option<[u8; 32]>,
    job: Option<&JobRelease>,
    job_hash: Option<[u8; 32]>,
) -> Vec<String> {
    let (owner, job, hash) = match (owner, job, job_hash) {
        (None, None, _) => return vec![],
        (None, Some(_), _) => {
            return vec![format!(
                "key {key_id} is not a dataset key; a training job is released dataset keys only"
            )]
        }
        (Some(_), None, _) | (Some(_), Some(_), None) => {
            return vec![format!(
                "key {key_id} is a dataset key: it is released only for a training job its owner                  approved"
            )]
        }
        (Some(o), Some(j), Some(h)) => (o, j, h),
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
    let approved = job
        .approvals
        .iter()
        .filter(|a| a.party == party.name)
        .any(|a| a.verify(spec, &hash).is_ok());
    if !approved {
        return vec![format!(
            "no valid approval of job {} by {}, the owner of dataset key {key_id}",
            hex::encode(hash),
            party.name
        )];
    }
    vec![]
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

async fn register_key(
    State(kbs): State<Kbs>,
    UrlPath(key_id): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Json<RegisterKey>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, KbsError> {
    kbs.check_admin(&headers).await?;
    let Json(mut req) = body.map_err(json_rejection)?;
    let dek = Zeroizing::new(std::mem::take(&mut req.dek));
    check_key_id_and_dek(&key_id, &dek)?;
    let policy = Policy::from_toml(&req.policy).map_err(|e| KbsError::Policy(e.to_string()))?;
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

/// `PUT /kbs/v1/datasets/{key_id}`: a data owner registers its dataset's DEK and release policy,
/// authenticated by its own key (no admin token). The key is then released only for training jobs
/// this owner approved, and only this owner can replace it.
async fn register_dataset_key(
    State(kbs): State<Kbs>,
    UrlPath(key_id): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, KbsError> {
    let path = format!("/kbs/v1/datasets/{key_id}");
    let owner = signed_by(&kbs, &headers, "PUT", &path, &body)?;
    let mut req: RegisterKey =
        serde_json::from_slice(&body).map_err(|e| KbsError::BadRequest(e.to_string()))?;
    let dek = Zeroizing::new(std::mem::take(&mut req.dek));
    check_key_id_and_dek(&key_id, &dek)?;
    let policy = Policy::from_toml(&req.policy).map_err(|e| KbsError::Policy(e.to_string()))?;
    let now = unix(kbs.now());
    let policy_text = req.policy.clone();
    let id = key_id.clone();
    let detail = format!(
        "dataset key of owner {}; {}",
        hex::encode(owner),
        policy_summary(&policy)
    );
    put_audited(
        &kbs,
        now,
        "dataset_key_registered",
        id,
        detail,
        move |s, id, event| s.put_dataset_key_audited(id, &dek, &policy_text, &owner, event),
    )
    .await?;
    tracing::info!(key_id = %key_id, owner = %hex::encode(owner), "dataset key registered");
    Ok(Json(serde_json::json!({ "key_id": key_id })))
}

/// `PUT /kbs/v1/jobs/{job_hash}/output`: the training runtime registers the trained model's DEK
/// under the job's serving policy. Signed with the runtime's signing key, which must be one that
/// attested for this job and received all its dataset keys. Never replaces an existing key.
async fn register_job_output(
    State(kbs): State<Kbs>,
    UrlPath(job_hash_hex): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, KbsError> {
    let path = format!("/kbs/v1/jobs/{job_hash_hex}/output");
    let runtime = signed_by(&kbs, &headers, "PUT", &path, &body)?;
    let job_hash: [u8; 32] = hex::decode(&job_hash_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KbsError::BadRequest("job hash must be 32 bytes of hex".into()))?;
    let mut req: job::OutputKey =
        serde_json::from_slice(&body).map_err(|e| KbsError::BadRequest(e.to_string()))?;
    let dek = Zeroizing::new(std::mem::take(&mut req.dek));
    check_key_id_and_dek(&req.key_id, &dek)?;
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
        move |s, id, event| s.put_output_key_audited(id, &dek, &policy, event),
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

/// The Ed25519 key that signed this request (party-request headers, `cordon_proto::job`).
fn signed_by(
    kbs: &Kbs,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<[u8; 32], KbsError> {
    job::verify_request(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        method,
        path,
        body,
        kbs.now(),
    )
    .map_err(|e| KbsError::PartyUnauthorized(e.to_string()))
}

fn check_key_id_and_dek(key_id: &str, dek: &[u8]) -> Result<(), KbsError> {
    if dek.len() != 32 {
        return Err(KbsError::BadRequest(format!(
            "dek must be 32 bytes, got {}",
            dek.len()
        )));
    }
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
    headers: HeaderMap,
) -> Result<Json<Vec<String>>, KbsError> {
    kbs.check_admin(&headers).await?;
    Ok(Json(kbs.with_store(|s| Ok(s.key_ids()?)).await?))
}

async fn audit(
    State(kbs): State<Kbs>,
    headers: HeaderMap,
) -> Result<Json<Vec<AuditEvent>>, KbsError> {
    kbs.check_admin(&headers).await?;
    Ok(Json(kbs.with_store(|s| Ok(s.audit_events()?)).await?))
}
