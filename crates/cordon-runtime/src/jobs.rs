//! Collaborative training: the job board and the job runner.
//!
//! Parties create a job (its spec), approve its hash, upload their sealed datasets and submit it.
//! The runtime runs a job only when every party approved it; it then attests to the KBS with
//! evidence that binds the job's hash, receives the dataset DEKs (the KBS checks each owner's
//! approval), unseals the datasets in memory, trains, evaluates on held-out rows, seals the model
//! to the recipients, and signs a receipt. Rows never leave: not in responses, errors, logs or
//! metrics (errors about bad data name the row number and column, never the value).
//!
//! Every request is signed by the calling party ([`cordon_proto::auth`]) for this runtime's
//! attested HPKE key (its audience), fresh, and answers only parties of the job. The job API
//! itself runs inside the encrypted channel (its statuses carry metrics and specs); only the
//! upload of sealed datasets (ciphertext already) is a plain `PUT /v1/datasets`. Jobs live in
//! memory, bounded per party and in all, and are evicted once finished or abandoned: a restarted
//! runtime has new keys and no jobs, and captured requests do not verify for its new key.

use crate::boot::attest_to_kbs;
use crate::replay::ReplayGuard;
use crate::server::RuntimeState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cordon_http::client::{error_text, ClientTls};
use cordon_proto::auth::SignedRequest;
use cordon_proto::channel;
use cordon_proto::job::{
    self, output_aad, Approval, JobMetrics, JobResult, JobSpec, JobState, JobStatus, PartyCounts,
    Receipt, ReceiptAttestation, ReceiptBody, ReceiptInput, ReceiptOutput, OUTPUT_INFO,
    RECEIPT_FORMAT,
};
use cordon_proto::kbs::{seal_dek_for_kbs, DekPurpose, JobRelease, RELEASE_INFO};
use cordon_proto::runtime::{InnerRequest, InnerResponse};
use cordon_seal::{Dek, KeyFile, OwnerKey, SealOptions};
use cordon_train::{Algorithm, DataFormat, Schema, Table};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of the job board.
#[derive(Debug, Clone)]
pub struct TrainingOptions {
    /// Base URL of the key broker that releases dataset keys.
    pub kbs_url: String,
    /// The key broker's identity key (from the measured configuration): a job and its output key
    /// are sealed to it, and the output's registration names it as its audience.
    pub kbs_public_key: [u8; 32],
    /// How the key broker's TLS certificate is verified (`kbs_ca_cert` of the configuration).
    pub kbs_tls: ClientTls,
    /// Largest sealed dataset accepted, in bytes.
    pub max_dataset_bytes: usize,
    /// Jobs held at once (any state).
    pub max_jobs: usize,
    /// Jobs one party may have created and not yet seen evicted.
    pub max_jobs_per_party: usize,
    /// Sealed datasets held at once.
    pub max_datasets: usize,
    /// Sealed datasets one party may have uploaded and not yet seen evicted.
    pub max_datasets_per_party: usize,
    /// Bytes of sealed datasets held at once, all parties together: uploads are authenticated but
    /// anyone can make a key, so this bounds the memory uploads can take.
    pub max_total_dataset_bytes: usize,
    /// How long a finished or failed job (and its output) stays after it ended.
    pub job_retention: Duration,
    /// How long a job that was never submitted stays.
    pub abandoned_after: Duration,
    /// How long a sealed dataset no remaining job names stays after its upload.
    pub dataset_retention: Duration,
}

impl TrainingOptions {
    pub fn new(kbs_url: &str, kbs_public_key: [u8; 32]) -> TrainingOptions {
        TrainingOptions {
            kbs_url: kbs_url.to_string(),
            kbs_public_key,
            kbs_tls: ClientTls::web_pki(),
            max_dataset_bytes: 256 << 20,
            max_jobs: 64,
            max_jobs_per_party: 8,
            max_datasets: 256,
            max_datasets_per_party: 16,
            max_total_dataset_bytes: 2 << 30,
            job_retention: Duration::from_secs(3_600),
            abandoned_after: Duration::from_secs(86_400),
            dataset_retention: Duration::from_secs(86_400),
        }
    }
}

pub(crate) struct JobBoard {
    options: TrainingOptions,
    jobs: Mutex<BTreeMap<[u8; 32], Job>>,
    /// Sealed datasets (public bytes), by the SHA-256 of their manifest.
    datasets: Mutex<BTreeMap<[u8; 32], StoredDataset>>,
    /// Nonces of the party-signed requests accepted recently (see [`fresh`]).
    requests: ReplayGuard,
}

/// Signed requests one scope (a party in one job, or one party's uploads) may have remembered at
/// once: a party makes a handful per job (create, approve, submit).
const REQUESTS_PER_SCOPE: usize = 128;

struct Job {
    spec: JobSpec,
    /// The party that created it, for its quota.
    creator: [u8; 32],
    created: Instant,
    /// When it finished or failed, for its retention.
    ended: Option<Instant>,
    approvals: BTreeMap<String, Approval>,
    state: JobState,
    error: Option<String>,
    output: Option<Arc<JobOutput>>,
}

struct StoredDataset {
    bytes: Arc<Vec<u8>>,
    uploader: [u8; 32],
    uploaded: Instant,
}

struct JobOutput {
    sealed_model: Vec<u8>,
    key_id: String,
    /// The output DEK sealed to each recipient, by party name.
    sealed_deks: BTreeMap<String, Vec<u8>>,
    receipt: Receipt,
}

impl JobBoard {
    pub(crate) fn new(options: TrainingOptions) -> JobBoard {
        // Scopes are taken only by authorized requests: a party of a held job (at most
        // `max_jobs` × MAX_PARTIES), or an uploader holding a dataset here (at most
        // `max_datasets`). While jobs and datasets are retained longer than a request is
        // remembered (ten minutes; the defaults keep them for an hour or more), the memory
        // cannot fill.
        let scopes = options
            .max_jobs
            .saturating_mul(job::MAX_PARTIES)
            .saturating_add(options.max_datasets);
        JobBoard {
            requests: ReplayGuard::with_sender_limit(
                cordon_proto::auth::REQUEST_WINDOW,
                scopes.saturating_mul(REQUESTS_PER_SCOPE),
                REQUESTS_PER_SCOPE,
            ),
            options,
            jobs: Mutex::new(BTreeMap::new()),
            datasets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Signed-request nonces remembered now (a metric).
    pub(crate) fn requests_remembered(&self) -> usize {
        self.requests.len()
    }

    pub(crate) fn max_dataset_bytes(&self) -> usize {
        self.options.max_dataset_bytes
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<[u8; 32], Job>> {
        // A poisoned lock means a panic elsewhere; the map itself is still consistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn datasets(&self) -> std::sync::MutexGuard<'_, BTreeMap<[u8; 32], StoredDataset>> {
        self.datasets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evicts jobs that ended longer than the retention ago or were never submitted, then
    /// datasets that no remaining job names and that were uploaded longer than their retention
    /// ago. A running job is never evicted, nor a dataset it names.
    fn sweep(&self, now: Instant) {
        let o = &self.options;
        let mut jobs = self.jobs();
        jobs.retain(|hash, job| {
            let keep = match (job.state, job.ended) {
                (JobState::Running, _) => true,
                (_, Some(ended)) => now.saturating_duration_since(ended) < o.job_retention,
                (_, None) => now.saturating_duration_since(job.created) < o.abandoned_after,
            };
            if !keep {
                tracing::info!(job = %hex::encode(hash), state = %job.state, "job evicted");
            }
            keep
        });
        let named: std::collections::BTreeSet<[u8; 32]> = jobs
            .values()
            .flat_map(|j| j.spec.datasets.iter().map(|d| d.manifest_sha256))
            .collect();
        drop(jobs);
        self.datasets().retain(|digest, d| {
            named.contains(digest)
                || now.saturating_duration_since(d.uploaded) < o.dataset_retention
        });
    }

    fn status(&self, hash: &[u8; 32], job: &Job) -> JobStatus {
        let datasets = self.datasets();
        JobStatus {
            job_hash: hex::encode(hash),
            state: job.state,
            spec: job.spec.clone(),
            approved_by: job.approvals.keys().cloned().collect(),
            awaiting: job
                .spec
                .parties
                .iter()
                .filter(|p| !job.approvals.contains_key(&p.name))
                .map(|p| p.name.clone())
                .collect(),
            datasets_missing: job
                .spec
                .datasets
                .iter()
                .filter(|d| !datasets.contains_key(&d.manifest_sha256))
                .map(|d| d.key_id.clone())
                .collect(),
            error: job.error.clone(),
            metrics: job.output.as_ref().map(|o| o.receipt.body.metrics.clone()),
        }
    }
}

/// An error of the job API: status, stable code, message.
pub(crate) struct JobApiError(StatusCode, &'static str, String);

impl JobApiError {
    fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.1, "error": self.2 })
    }

    fn inner(self) -> InnerResponse {
        InnerResponse::json(self.0.as_u16(), self.body())
    }
}

impl IntoResponse for JobApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.body())).into_response()
    }
}

fn api_err(status: StatusCode, code: &'static str, msg: impl Into<String>) -> JobApiError {
    JobApiError(status, code, msg.into())
}

type ApiResult<T> = Result<T, JobApiError>;

fn board(s: &RuntimeState) -> ApiResult<&JobBoard> {
    s.job_board().ok_or_else(|| {
        api_err(
            StatusCode::NOT_FOUND,
            "training_disabled",
            "this runtime does not run training jobs (its configuration has no [training])",
        )
    })
}

/// The calling party's signed request: signed for this runtime's attested key, within the window
/// of the runtime's clock. Its nonce is not remembered yet: [`fresh`] does that once the caller is
/// known to be a party of what it asks about, so that strangers cannot fill the memory.
fn caller<'a>(
    s: &RuntimeState,
    header: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    path: &str,
    body: &[u8],
) -> ApiResult<SignedRequest> {
    cordon_proto::auth::verify_request(
        header,
        method,
        path,
        body,
        &s.runtime_keys().hpke_public_key,
        s.now(),
    )
    .map_err(|e| api_err(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
}

/// Remembers an authorized request's nonce: a replay of it is refused from now on. `scope` names
/// whose share of the memory it takes (one party's requests about one job, or one party's
/// uploads), so that no party can spend another's share; the scopes themselves are bounded by the
/// board's quotas (see [`JobBoard::new`]). Reads inside the encrypted channel are not remembered:
/// the host cannot see them, let alone replay them (the channel refuses a replayed envelope), and
/// a read changes nothing.
fn fresh(s: &RuntimeState, board: &JobBoard, req: &SignedRequest, scope: &[u8]) -> ApiResult<()> {
    let mut id = req.signer.to_vec();
    id.extend_from_slice(&req.nonce);
    board
        .requests
        .accept_from("signed request", scope, &id, req.time, s.now())
        .map_err(|e| {
            let code = match e.status() {
                StatusCode::SERVICE_UNAVAILABLE => "busy",
                StatusCode::CONFLICT => "request_replayed",
                _ => "unauthenticated",
            };
            api_err(e.status(), code, e.to_string())
        })
}

/// The scope of one party's requests about one job in the replay memory.
fn job_scope(hash: &[u8; 32], signer: &[u8; 32]) -> Vec<u8> {
    [b"job ".as_slice(), hash.as_slice(), signer.as_slice()].concat()
}

/// The scope of a party's uploads in the replay memory.
fn upload_scope(signer: &[u8; 32]) -> Vec<u8> {
    [b"upload ".as_slice(), signer.as_slice()].concat()
}

/// A party's authenticated request about one job.
struct JobCall<'s> {
    board: &'s JobBoard,
    req: SignedRequest,
    hash: [u8; 32],
    /// The caller's name among the job's parties.
    party: String,
}

/// What every route about one job starts with: the board, the authenticated caller, the job from
/// the path (404 unless the caller is one of its parties). `f` runs with the board locked.
fn on_job<'a, R>(
    s: &RuntimeState,
    header: impl Fn(&str) -> Option<&'a str>,
    method: &str,
    path: &str,
    hash_hex: &str,
    body: &[u8],
    f: impl FnOnce(&JobCall<'_>, &mut Job) -> ApiResult<R>,
) -> ApiResult<R> {
    let board = board(s)?;
    let req = caller(s, header, method, path, body)?;
    let hash = parse_hash(hash_hex)?;
    let mut jobs = board.jobs();
    let job = jobs.get_mut(&hash).ok_or_else(|| not_found(&hash))?;
    let party = party_of(job, &hash, &req.signer)?;
    f(
        &JobCall {
            board,
            req,
            hash,
            party,
        },
        job,
    )
}

fn parse_hash(hex_hash: &str) -> ApiResult<[u8; 32]> {
    hex::decode(hex_hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            api_err(
                StatusCode::BAD_REQUEST,
                "bad_job_hash",
                "job hash must be 32 bytes of hex",
            )
        })
}

/// The party (by name) of job `hash` that `key` belongs to; 404 for a caller who is not a party,
/// so that outsiders learn nothing about which jobs exist.
fn party_of(job: &Job, hash: &[u8; 32], key: &[u8; 32]) -> ApiResult<String> {
    job.spec
        .party_by_key(key)
        .map(|p| p.name.clone())
        .ok_or_else(|| not_found(hash))
}

fn not_found(hash: &[u8; 32]) -> JobApiError {
    api_err(
        StatusCode::NOT_FOUND,
        "unknown_job",
        format!("no job {} of which you are a party", hex::encode(hash)),
    )
}

/// Parses the algorithm and checks every parameter against its bounds, and the data formats: a
/// spec the runtime could not run is refused before anyone approves it.
fn check_runnable(spec: &JobSpec) -> ApiResult<Algorithm> {
    let bad = |m: String| api_err(StatusCode::BAD_REQUEST, "invalid_spec", m);
    spec.validate().map_err(|e| bad(e.to_string()))?;
    let algorithm = serde_json::from_value::<Algorithm>(spec.algorithm.clone())
        .map_err(|e| bad(format!("algorithm: {e}")))?;
    algorithm
        .check()
        .map_err(|e| bad(format!("algorithm: {e}")))?;
    Ok(algorithm)
}

/// The job API, inside the encrypted channel: routes one inner request.
pub(crate) async fn handle(s: &Arc<RuntimeState>, req: &InnerRequest) -> InnerResponse {
    // Retention is enforced on every call, not only when something new arrives.
    if let Some(board) = s.job_board() {
        board.sweep(Instant::now());
    }
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    let body = req.raw_body.as_deref().unwrap_or_default();
    let header = |name: &str| req.headers.get(name).map(String::as_str);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let result = match (req.method.as_str(), segments.as_slice()) {
        ("POST", ["v1", "jobs"]) => create(s, header, path, body),
        ("GET", ["v1", "jobs", h]) => status(s, header, path, h),
        ("POST", ["v1", "jobs", h, "approvals"]) => approve(s, header, path, h, body),
        ("POST", ["v1", "jobs", h, "submit"]) => submit(s, header, path, h, body),
        ("GET", ["v1", "jobs", h, "result"]) => result(s, header, path, h),
        ("GET", ["v1", "jobs", h, "receipt"]) => receipt(s, header, path, h),
        ("GET", ["v1", "jobs", h, "model"]) => model(s, header, path, h),
        (m, _) => Err(api_err(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("no route for {m} {path}"),
        )),
    };
    match result {
        Ok((status, body)) => InnerResponse::json(status.as_u16(), body),
        Err(e) => e.inner(),
    }
}

type Answer = ApiResult<(StatusCode, serde_json::Value)>;

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Answer {
    serde_json::to_value(v)
        .map(|v| (status, v))
        .map_err(|e| api_err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// `POST /v1/jobs`: a party creates a job from its spec. Idempotent: the same spec is the same job.
fn create<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    body: &[u8],
) -> Answer {
    let board = board(s)?;
    let req = caller(s, header, "POST", path, body)?;
    let key = req.signer;
    let spec: JobSpec = serde_json::from_slice(body)
        .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_spec", e.to_string()))?;
    check_runnable(&spec)?;
    if spec.party_by_key(&key).is_none() {
        return Err(api_err(
            StatusCode::FORBIDDEN,
            "not_a_party",
            "only a party of a job may create it",
        ));
    }
    let hash = spec.hash();
    let mut jobs = board.jobs();
    if !jobs.contains_key(&hash) {
        if jobs.len() >= board.options.max_jobs {
            return Err(api_err(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_jobs",
                format!("this runtime holds {} jobs already", jobs.len()),
            ));
        }
        let mine = jobs.values().filter(|j| j.creator == key).count();
        if mine >= board.options.max_jobs_per_party {
            return Err(api_err(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "you created {mine} jobs this runtime still holds, the most one party may; \
                     they are evicted once finished or abandoned"
                ),
            ));
        }
        fresh(s, board, &req, &job_scope(&hash, &key))?;
        tracing::info!(job = %hex::encode(hash), parties = spec.parties.len(), "job created");
        jobs.insert(
            hash,
            Job {
                spec,
                creator: key,
                created: Instant::now(),
                ended: None,
                approvals: BTreeMap::new(),
                state: JobState::Created,
                error: None,
                output: None,
            },
        );
    } else {
        // The same spec again changes nothing, but a replayed request is refused all the same.
        fresh(s, board, &req, &job_scope(&hash, &key))?;
    }
    let status = board.status(&hash, &jobs[&hash]);
    json(StatusCode::CREATED, &status)
}

/// `GET /v1/jobs/{hash}`: state, approvals, missing datasets, metrics; for parties only.
fn status<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
) -> Answer {
    on_job(s, header, "GET", path, hash_hex, b"", |c, job| {
        json(StatusCode::OK, &c.board.status(&c.hash, job))
    })
}

/// `POST /v1/jobs/{hash}/approvals`: a party's signed approval of exactly this job's hash.
fn approve<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
    body: &[u8],
) -> Answer {
    on_job(s, header, "POST", path, hash_hex, body, |c, job| {
        let JobCall { hash, party, .. } = c;
        let approval: Approval = serde_json::from_slice(body)
            .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_approval", e.to_string()))?;
        fresh(s, c.board, &c.req, &job_scope(hash, &c.req.signer))?;
        if &approval.party != party {
            return Err(api_err(
                StatusCode::FORBIDDEN,
                "not_your_approval",
                format!(
                    "you are party {party}; an approval for {} must come from it",
                    approval.party
                ),
            ));
        }
        approval
            .verify(&job.spec, hash, s.now())
            .map_err(|e| api_err(StatusCode::FORBIDDEN, "bad_approval", e.to_string()))?;
        job.approvals.insert(party.clone(), approval);
        if job.state == JobState::Created && job.approvals.len() == job.spec.parties.len() {
            job.state = JobState::Approved;
        }
        tracing::info!(job = %hash_hex, party = %party, state = %job.state, "job approved by party");
        json(StatusCode::OK, &c.board.status(hash, job))
    })
}

/// `PUT /v1/datasets`: a party uploads a sealed dataset (public bytes; only an attested runtime
/// with the owner's approval gets its key). The manifest must be signed by the uploader. Plain HTTP:
/// the bytes are ciphertext, and the request is signed for this runtime's key like the others.
pub(crate) async fn upload_dataset(
    State(s): State<Arc<RuntimeState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, JobApiError> {
    let board = board(&s)?;
    let req = caller(
        &s,
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        "PUT",
        uri.path(),
        &body,
    )?;
    let key = req.signer;
    let header = cordon_seal::read_header(&mut &body[..]).map_err(|e| {
        api_err(
            StatusCode::BAD_REQUEST,
            "invalid_sealed_dataset",
            e.to_string(),
        )
    })?;
    let signer = header.manifest.signer_key().map_err(|e| {
        api_err(
            StatusCode::BAD_REQUEST,
            "invalid_sealed_dataset",
            e.to_string(),
        )
    })?;
    if signer != key {
        return Err(api_err(
            StatusCode::FORBIDDEN,
            "not_your_dataset",
            "the sealed manifest is signed by another key than the uploading party's",
        ));
    }
    let digest = header.digest();
    board.sweep(Instant::now());
    let mut datasets = board.datasets();
    // The host sees this request, so it is remembered, within its uploader's own bound, and a
    // replay is refused even when it would change nothing; but only once the quotas let it in,
    // so that only uploaders that hold a dataset here (at most 256) take a share of the memory.
    if datasets.contains_key(&digest) {
        fresh(&s, board, &req, &upload_scope(&key))?;
    } else {
        if datasets.len() >= board.options.max_datasets {
            return Err(api_err(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_datasets",
                format!("this runtime holds {} datasets already", datasets.len()),
            ));
        }
        let mine = datasets.values().filter(|d| d.uploader == key).count();
        if mine >= board.options.max_datasets_per_party {
            return Err(api_err(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_exceeded",
                format!(
                    "you uploaded {mine} datasets this runtime still holds, the most one party may"
                ),
            ));
        }
        let held: usize = datasets.values().map(|d| d.bytes.len()).sum();
        if held.saturating_add(body.len()) > board.options.max_total_dataset_bytes {
            return Err(api_err(
                StatusCode::INSUFFICIENT_STORAGE,
                "dataset_store_full",
                format!(
                    "this runtime holds {held} bytes of sealed datasets; {} more would pass its limit of {}",
                    body.len(),
                    board.options.max_total_dataset_bytes
                ),
            ));
        }
        fresh(&s, board, &req, &upload_scope(&key))?;
        datasets.insert(
            digest,
            StoredDataset {
                bytes: Arc::new(body.to_vec()),
                uploader: key,
                uploaded: Instant::now(),
            },
        );
    }
    tracing::info!(manifest_sha256 = %hex::encode(digest), bytes = body.len(), "sealed dataset uploaded");
    Ok(Json(serde_json::json!({
        "manifest_sha256": hex::encode(digest),
        "key_id": header.manifest.key_id,
    })))
}

/// `POST /v1/jobs/{hash}/submit`: runs an approved job whose datasets are all here.
fn submit<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
    body: &[u8],
) -> Answer {
    let (hash, status) = on_job(s, header, "POST", path, hash_hex, body, |c, job| {
        fresh(s, c.board, &c.req, &job_scope(&c.hash, &c.req.signer))?;
        let status = c.board.status(&c.hash, job);
        match job.state {
            JobState::Approved => {}
            JobState::Created => {
                return Err(api_err(
                    StatusCode::CONFLICT,
                    "not_approved",
                    format!(
                        "job {hash_hex} lacks the approval of: {}",
                        status.awaiting.join(", ")
                    ),
                ))
            }
            other => {
                return Err(api_err(
                    StatusCode::CONFLICT,
                    "already_submitted",
                    format!("job {hash_hex} is {other}"),
                ))
            }
        }
        if !status.datasets_missing.is_empty() {
            return Err(api_err(
                StatusCode::CONFLICT,
                "datasets_missing",
                format!(
                    "the runtime does not hold the sealed datasets {}; upload them first",
                    status.datasets_missing.join(", ")
                ),
            ));
        }
        job.state = JobState::Running;
        tracing::info!(job = %hash_hex, submitted_by = %c.party, "job running");
        Ok((c.hash, c.board.status(&c.hash, job)))
    })?;
    tokio::spawn(run(s.clone(), hash));
    json(StatusCode::ACCEPTED, &status)
}

/// `GET /v1/jobs/{hash}/result`: the sealed model and its DEK sealed to the calling recipient.
fn result<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
) -> Answer {
    on_job(s, header, "GET", path, hash_hex, b"", |c, job| {
        let party = &c.party;
        if !job.spec.outputs.recipients.contains(party) {
            return Err(api_err(
                StatusCode::FORBIDDEN,
                "not_a_recipient",
                format!(
                    "party {party} is not an output recipient of job {hash_hex} (recipients: {})",
                    job.spec.outputs.recipients.join(", ")
                ),
            ));
        }
        let output = finished(job, hash_hex)?;
        let sealed_dek = output.sealed_deks.get(party).cloned().ok_or_else(|| {
            api_err(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "no output key for this recipient",
            )
        })?;
        json(
            StatusCode::OK,
            &JobResult {
                job_hash: hash_hex.to_string(),
                sealed_model: output.sealed_model.clone(),
                key_id: output.key_id.clone(),
                sealed_dek,
                receipt: output.receipt.clone(),
            },
        )
    })
}

/// `GET /v1/jobs/{hash}/model`: the sealed model (ciphertext, base64 in `sealed_model`), for every
/// party: what an operator deploys to a serving runtime when the job registered the model's key
/// for serving.
fn model<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
) -> Answer {
    use base64::Engine as _;
    on_job(s, header, "GET", path, hash_hex, b"", |_, job| {
        let output = finished(job, hash_hex)?;
        Ok((
            StatusCode::OK,
            serde_json::json!({
                "sealed_model": base64::engine::general_purpose::STANDARD.encode(&output.sealed_model)
            }),
        ))
    })
}

/// `GET /v1/jobs/{hash}/receipt`: the signed receipt, for every party.
fn receipt<'a>(
    s: &Arc<RuntimeState>,
    header: impl Fn(&str) -> Option<&'a str>,
    path: &str,
    hash_hex: &str,
) -> Answer {
    on_job(s, header, "GET", path, hash_hex, b"", |_, job| {
        json(StatusCode::OK, &finished(job, hash_hex)?.receipt)
    })
}

fn finished(job: &Job, hash_hex: &str) -> ApiResult<Arc<JobOutput>> {
    match (&job.state, &job.output) {
        (JobState::Finished, Some(o)) => Ok(o.clone()),
        (JobState::Failed, _) => Err(api_err(
            StatusCode::CONFLICT,
            "job_failed",
            format!(
                "job {hash_hex} failed: {}",
                job.error.as_deref().unwrap_or("")
            ),
        )),
        (state, _) => Err(api_err(
            StatusCode::CONFLICT,
            "not_finished",
            format!("job {hash_hex} is {state}"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The runner

async fn run(s: Arc<RuntimeState>, hash: [u8; 32]) {
    let outcome = execute(&s, hash).await;
    let Some(board) = s.job_board() else { return };
    let mut jobs = board.jobs();
    let Some(job) = jobs.get_mut(&hash) else {
        return;
    };
    job.ended = Some(Instant::now());
    match outcome {
        Ok(output) => {
            job.state = JobState::Finished;
            let m = &output.receipt.body.metrics;
            tracing::info!(job = %hex::encode(hash), train_rows = m.train_rows, test_rows = m.test_rows, "job finished");
            job.output = Some(Arc::new(output));
        }
        Err(e) => {
            tracing::warn!(job = %hex::encode(hash), error = %e, "job failed");
            job.state = JobState::Failed;
            job.error = Some(e);
        }
    }
}

async fn execute(s: &Arc<RuntimeState>, hash: [u8; 32]) -> Result<JobOutput, String> {
    let board = s.job_board().ok_or("training disabled")?;
    let (spec, approvals): (JobSpec, Vec<Approval>) = {
        let jobs = board.jobs();
        let job = jobs.get(&hash).ok_or("job vanished")?;
        (job.spec.clone(), job.approvals.values().cloned().collect())
    };
    // Refuse to start without every approval, valid now, whatever the board's state says.
    for p in &spec.parties {
        let ok = approvals
            .iter()
            .any(|a| a.party == p.name && a.verify(&spec, &hash, s.now()).is_ok());
        if !ok {
            return Err(format!(
                "party {} has no valid approval of this job (missing or expired)",
                p.name
            ));
        }
    }
    let algorithm = check_runnable(&spec).map_err(|e| e.2)?;
    let sealed: Vec<Arc<Vec<u8>>> = {
        let datasets = board.datasets();
        spec.datasets
            .iter()
            .map(|d| {
                datasets
                    .get(&d.manifest_sha256)
                    .map(|d| d.bytes.clone())
                    .ok_or_else(|| format!("sealed dataset {} is not here", d.key_id))
            })
            .collect::<Result<_, _>>()?
    };

    // Attest with evidence binding this job; the KBS checks each owner's approval.
    let release = attest_to_kbs(
        &board.options.kbs_url,
        &board.options.kbs_tls,
        s.tee().as_ref(),
        s.runtime_keys(),
        spec.datasets.iter().map(|d| d.key_id.clone()).collect(),
        vec![],
        Some((
            JobRelease {
                spec: spec.clone(),
                approvals,
            },
            board.options.kbs_public_key,
        )),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut deks = Vec::new();
    for d in &spec.datasets {
        if let Some(denied) = release
            .response
            .denied
            .iter()
            .find(|x| x.key_id == d.key_id)
        {
            return Err(format!(
                "the key broker refused the key of party {}'s dataset {}: {}",
                d.party,
                d.key_id,
                denied.reasons.join("; ")
            ));
        }
        let released = release
            .response
            .released
            .iter()
            .find(|x| x.key_id == d.key_id)
            .ok_or_else(|| format!("the key broker returned no answer for key {}", d.key_id))?;
        let dek = s
            .service_key()
            .open_sealed(RELEASE_INFO, d.key_id.as_bytes(), &released.sealed_dek)
            .map_err(|e| format!("released key {}: {e}", d.key_id))?;
        deks.push(Dek::from_bytes(&dek).map_err(|e| format!("released key {}: {e}", d.key_id))?);
    }

    // Unseal, parse, train and seal on a blocking thread: this is CPU work.
    let state = s.clone();
    let trained = tokio::task::spawn_blocking(move || {
        train_and_seal(&state, &spec, &hash, algorithm, sealed, deks)
    })
    .await
    .map_err(|e| format!("training task failed: {e}"))??;
    let (spec, inputs, metrics, output) = trained;
    // Deploy to serving: the model's key goes to the KBS under the job's serving policy, signed
    // with the key this runtime's job evidence bound; no party ever holds it.
    let registered_for_serving = match &spec.outputs.serve {
        None => false,
        Some(_) => {
            register_output(s, &board.options, &hash, &output).await?;
            true
        }
    };
    let body = ReceiptBody {
        format: RECEIPT_FORMAT.into(),
        job_hash: hash,
        job_name: spec.name.clone(),
        inputs,
        output: ReceiptOutput {
            onnx_sha256: output.onnx_sha256,
            sealed_manifest_sha256: output.sealed_manifest_sha256,
            key_id: output.key_id.clone(),
            recipients: spec.outputs.recipients.clone(),
            registered_for_serving,
        },
        metrics,
        attestation: ReceiptAttestation {
            nonce: release.nonce,
            evidence: release.evidence,
            endorsements: release.endorsements,
            runtime_keys: s.runtime_keys().clone(),
        },
        finished_at: cordon_proto::auth::unix(s.now()),
    };
    Ok(JobOutput {
        sealed_model: output.sealed_model,
        key_id: output.key_id,
        sealed_deks: output.sealed_deks,
        receipt: Receipt::sign(body, s.signing_key()),
    })
}

async fn register_output(
    s: &RuntimeState,
    options: &TrainingOptions,
    hash: &[u8; 32],
    output: &SealedOutput,
) -> Result<(), String> {
    let kbs_key = options.kbs_public_key;
    let signer = s.signing_key().verifying_key().to_bytes();
    let sealed_dek = seal_dek_for_kbs(
        &kbs_key,
        DekPurpose::JobOutput,
        &output.key_id,
        &signer,
        &job::output_context(hash, &output.sealed_manifest_sha256),
        output.dek.as_bytes(),
    )
    .map_err(|e| format!("sealing the model's key to the key broker: {e}"))?;
    let body = serde_json::to_vec(&job::OutputKey {
        key_id: output.key_id.clone(),
        sealed_dek,
        sealed_manifest_sha256: output.sealed_manifest_sha256,
    })
    .map_err(|e| e.to_string())?;
    let path = format!("/kbs/v1/jobs/{}/output", hex::encode(hash));
    let http = options
        .kbs_tls
        .client(Duration::from_secs(60))
        .map_err(|e| {
            format!(
                "registering the model for serving with the key broker: {}",
                error_text(&e)
            )
        })?;
    let mut req = http
        .put(format!("{}{path}", options.kbs_url.trim_end_matches('/')))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in
        cordon_proto::auth::sign_request(s.signing_key(), "PUT", &path, &body, &kbs_key, s.now())
    {
        req = req.header(name, value);
    }
    let resp = req.body(body).send().await.map_err(|e| {
        format!(
            "registering the model for serving with the key broker: {}",
            error_text(&e)
        )
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "the key broker refused the model's key for serving: {status}: {text}"
        ));
    }
    Ok(())
}

struct SealedOutput {
    /// The output DEK, for the KBS when the job deploys the model to serving.
    dek: Dek,
    sealed_model: Vec<u8>,
    key_id: String,
    onnx_sha256: [u8; 32],
    sealed_manifest_sha256: [u8; 32],
    sealed_deks: BTreeMap<String, Vec<u8>>,
}

type Trained = (JobSpec, Vec<ReceiptInput>, JobMetrics, SealedOutput);

fn train_and_seal(
    s: &RuntimeState,
    spec: &JobSpec,
    hash: &[u8; 32],
    algorithm: Algorithm,
    sealed: Vec<Arc<Vec<u8>>>,
    deks: Vec<Dek>,
) -> Result<Trained, String> {
    let schema = Schema {
        features: spec.schema.features.clone(),
        label: spec.schema.label.clone(),
    };
    let mut train_parts = Vec::new();
    let mut test_parts = Vec::new();
    let mut counts = Vec::new();
    let mut inputs = Vec::new();
    for ((d, bytes), dek) in spec.datasets.iter().zip(sealed).zip(deks) {
        let party = spec
            .party(&d.party)
            .ok_or_else(|| format!("unknown party {}", d.party))?;
        let key = KeyFile {
            key_id: d.key_id.clone(),
            dek,
            signer: party.signing_key,
        };
        let (header, plaintext) = cordon_seal::unseal_to_vec(&bytes[..], &key)
            .map_err(|e| format!("party {}'s dataset {}: {e}", d.party, d.key_id))?;
        if header.digest() != d.manifest_sha256 {
            return Err(format!(
                "party {}'s dataset {}: sealed manifest is not the one the job names",
                d.party, d.key_id
            ));
        }
        let format = match d.format.as_str() {
            "parquet" => DataFormat::Parquet,
            _ => DataFormat::Csv,
        };
        let table = cordon_train::read_table(&plaintext, format, &schema)
            .map_err(|e| format!("party {}'s dataset {}: {e}", d.party, d.key_id))?;
        drop(plaintext);
        let (train_idx, test_idx) = cordon_train::holdout_split(
            table.n_rows(),
            spec.evaluation.test_fraction,
            spec.evaluation.seed,
        );
        let positives = table.labels().iter().filter(|&&l| l == 1.0).count();
        counts.push(PartyCounts {
            party: d.party.clone(),
            train_rows: train_idx.len() as u64,
            test_rows: test_idx.len() as u64,
            positive_rows: positives as u64,
        });
        inputs.push(ReceiptInput {
            party: d.party.clone(),
            key_id: d.key_id.clone(),
            manifest_sha256: d.manifest_sha256,
        });
        train_parts.push(table.select(&train_idx));
        test_parts.push(table.select(&test_idx));
    }
    let train = Table::concat(&train_parts.iter().collect::<Vec<_>>())
        .map_err(|e| format!("training rows: {e}"))?;
    let test = Table::concat(&test_parts.iter().collect::<Vec<_>>())
        .map_err(|e| format!("held-out rows: {e}"))?;
    drop(train_parts);
    drop(test_parts);
    let model = cordon_train::train(&algorithm, &train).map_err(|e| format!("training: {e}"))?;
    let probs = model.predict_proba(&test);
    let metrics = JobMetrics {
        algorithm: model.algorithm_name().to_string(),
        train_rows: train.n_rows() as u64,
        test_rows: test.n_rows() as u64,
        test_accuracy: cordon_train::metrics::accuracy(test.labels(), &probs),
        test_auc: cordon_train::metrics::roc_auc(test.labels(), &probs),
        test_log_loss: cordon_train::metrics::log_loss(test.labels(), &probs),
        parties: counts,
    };
    let onnx = zeroize::Zeroizing::new(model.to_onnx());
    let output = seal_output(s, spec, hash, &onnx)?;
    Ok((spec.clone(), inputs, metrics, output))
}

/// Seals the model under a fresh DEK, signed by the runtime's attested signing key, and seals
/// that DEK to each recipient's HPKE key.
fn seal_output(
    s: &RuntimeState,
    spec: &JobSpec,
    hash: &[u8; 32],
    onnx: &[u8],
) -> Result<SealedOutput, String> {
    let owner = OwnerKey::from_secret_bytes(&s.signing_key().to_bytes());
    let options = SealOptions {
        name: format!("job-{}", &hex::encode(hash)[..16]),
        version: "1".into(),
        media_type: "application/onnx".into(),
        // Format 1 for one release: parties open job outputs with their own CLI or SDK, which may
        // be from before format 2 (runtimes are upgraded first; docs/sealed-format.md §0).
        format: cordon_seal::FormatVersion::V1,
        ..SealOptions::default()
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let (manifest, key) = cordon_seal::seal(
        onnx,
        onnx.len() as u64,
        &mut out,
        &owner,
        &options,
        &mut |_| {},
    )
    .map_err(|e| format!("sealing the model: {e}"))?;
    let sealed_model = out.into_inner();
    let header = cordon_seal::read_header(&mut &sealed_model[..])
        .map_err(|e| format!("sealed model: {e}"))?;
    let mut sealed_deks = BTreeMap::new();
    for r in &spec.outputs.recipients {
        let party = spec
            .party(r)
            .ok_or_else(|| format!("unknown recipient {r}"))?;
        let sealed = channel::seal_to(
            &party.hpke_key,
            OUTPUT_INFO,
            &output_aad(hash, &manifest.key_id),
            key.dek.as_bytes(),
        )
        .map_err(|e| format!("sealing the output key to {r}: {e}"))?;
        sealed_deks.insert(r.clone(), sealed);
    }
    Ok(SealedOutput {
        dek: key.dek.clone(),
        sealed_model,
        key_id: manifest.key_id,
        onnx_sha256: Sha256::digest(onnx).into(),
        sealed_manifest_sha256: header.digest(),
        sealed_deks,
    })
}
