//! Collaborative training: the job board and the job runner.
//!
//! Parties create a job (its spec), approve its hash, upload their sealed datasets and submit it.
//! The runtime runs a job only when every party approved it; it then attests to the KBS with
//! evidence that binds the job's hash, receives the dataset DEKs (the KBS checks each owner's
//! approval), unseals the datasets in memory, trains, evaluates on held-out rows, seals the model
//! to the recipients, and signs a receipt. Rows never leave: not in responses, errors, logs or
//! metrics (errors about bad data name the row number and column, never the value).
//!
//! Every route is authenticated by the calling party's key (`cordon_proto::job::verify_request`)
//! and answers only parties of the job. Jobs live in memory: a restarted runtime has new keys and
//! no jobs, and parties resubmit.

use crate::boot::attest_to_kbs;
use crate::server::RuntimeState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cordon_proto::channel;
use cordon_proto::job::{
    self, output_aad, Approval, JobMetrics, JobResult, JobSpec, JobState, JobStatus, PartyCounts,
    Receipt, ReceiptAttestation, ReceiptBody, ReceiptInput, ReceiptOutput, OUTPUT_INFO,
    RECEIPT_FORMAT,
};
use cordon_proto::kbs::{JobRelease, RELEASE_INFO};
use cordon_seal::{Dek, KeyFile, OwnerKey, SealOptions};
use cordon_train::{Algorithm, DataFormat, Schema, Table};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Limits of the job board.
#[derive(Debug, Clone)]
pub struct TrainingOptions {
    /// Base URL of the key broker that releases dataset keys.
    pub kbs_url: String,
    /// Largest sealed dataset accepted, in bytes.
    pub max_dataset_bytes: usize,
    /// Jobs held at once (any state).
    pub max_jobs: usize,
    /// Sealed datasets held at once.
    pub max_datasets: usize,
    /// Bytes of sealed datasets held at once, all parties together: uploads are authenticated but
    /// anyone can make a key, so this bounds the memory uploads can take.
    pub max_total_dataset_bytes: usize,
}

impl TrainingOptions {
    pub fn new(kbs_url: &str) -> TrainingOptions {
        TrainingOptions {
            kbs_url: kbs_url.to_string(),
            max_dataset_bytes: 256 << 20,
            max_jobs: 64,
            max_datasets: 256,
            max_total_dataset_bytes: 2 << 30,
        }
    }
}

pub(crate) struct JobBoard {
    options: TrainingOptions,
    jobs: Mutex<BTreeMap<[u8; 32], Job>>,
    /// Sealed datasets (public bytes), by the SHA-256 of their manifest.
    datasets: Mutex<BTreeMap<[u8; 32], Arc<Vec<u8>>>>,
}

struct Job {
    spec: JobSpec,
    approvals: BTreeMap<String, Approval>,
    state: JobState,
    error: Option<String>,
    output: Option<Arc<JobOutput>>,
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
        JobBoard {
            options,
            jobs: Mutex::new(BTreeMap::new()),
            datasets: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn max_dataset_bytes(&self) -> usize {
        self.options.max_dataset_bytes
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<[u8; 32], Job>> {
        // A poisoned lock means a panic elsewhere; the map itself is still consistent.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn datasets(&self) -> std::sync::MutexGuard<'_, BTreeMap<[u8; 32], Arc<Vec<u8>>>> {
        self.datasets.lock().unwrap_or_else(|p| p.into_inner())
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

impl IntoResponse for JobApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(serde_json::json!({ "code": self.1, "error": self.2 })),
        )
            .into_response()
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

/// The calling party's public key, from its signed request.
fn caller(headers: &HeaderMap, method: &str, path: &str, body: &[u8]) -> ApiResult<[u8; 32]> {
    job::verify_request(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        method,
        path,
        body,
        SystemTime::now(),
    )
    .map_err(|e| api_err(StatusCode::UNAUTHORIZED, "unauthenticated", e.to_string()))
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

/// Parses the algorithm and checks the data formats: a spec the runtime could not run is refused
/// before anyone approves it.
fn check_runnable(spec: &JobSpec) -> ApiResult<Algorithm> {
    let bad = |m: String| api_err(StatusCode::BAD_REQUEST, "invalid_spec", m);
    spec.validate().map_err(|e| bad(e.to_string()))?;
    serde_json::from_value::<Algorithm>(spec.algorithm.clone())
        .map_err(|e| bad(format!("algorithm: {e}")))
}

/// `POST /v1/jobs`: a party creates a job from its spec. Idempotent: the same spec is the same job.
pub(crate) async fn create(
    State(s): State<Arc<RuntimeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let board = board(&s)?;
    let key = caller(&headers, "POST", "/v1/jobs", &body)?;
    let spec: JobSpec = serde_json::from_slice(&body)
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
        tracing::info!(job = %hex::encode(hash), parties = spec.parties.len(), "job created");
        jobs.insert(
            hash,
            Job {
                spec,
                approvals: BTreeMap::new(),
                state: JobState::Created,
                error: None,
                output: None,
            },
        );
    }
    let status = board.status(&hash, &jobs[&hash]);
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// `GET /v1/jobs/{hash}`: state, approvals, missing datasets, metrics; for parties only.
pub(crate) async fn status(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<JobStatus>> {
    let board = board(&s)?;
    let key = caller(&headers, "GET", &format!("/v1/jobs/{hash_hex}"), b"")?;
    let hash = parse_hash(&hash_hex)?;
    let jobs = board.jobs();
    let job = jobs.get(&hash).ok_or_else(|| not_found(&hash))?;
    party_of(job, &hash, &key)?;
    Ok(Json(board.status(&hash, job)))
}

/// `POST /v1/jobs/{hash}/approvals`: a party's signed approval of exactly this job's hash.
pub(crate) async fn approve(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<JobStatus>> {
    let board = board(&s)?;
    let key = caller(
        &headers,
        "POST",
        &format!("/v1/jobs/{hash_hex}/approvals"),
        &body,
    )?;
    let hash = parse_hash(&hash_hex)?;
    let approval: Approval = serde_json::from_slice(&body)
        .map_err(|e| api_err(StatusCode::BAD_REQUEST, "invalid_approval", e.to_string()))?;
    let mut jobs = board.jobs();
    let job = jobs.get_mut(&hash).ok_or_else(|| not_found(&hash))?;
    let party = party_of(job, &hash, &key)?;
    if approval.party != party {
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
        .verify(&job.spec, &hash)
        .map_err(|e| api_err(StatusCode::FORBIDDEN, "bad_approval", e.to_string()))?;
    job.approvals.insert(party.clone(), approval);
    if job.state == JobState::Created && job.approvals.len() == job.spec.parties.len() {
        job.state = JobState::Approved;
    }
    tracing::info!(job = %hash_hex, party = %party, state = %job.state, "job approved by party");
    let status = board.status(&hash, job);
    Ok(Json(status))
}

/// `PUT /v1/datasets`: a party uploads a sealed dataset (public bytes; only an attested runtime
/// with the owner's approval gets its key). The manifest must be signed by the uploader.
pub(crate) async fn upload_dataset(
    State(s): State<Arc<RuntimeState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let board = board(&s)?;
    let key = caller(&headers, "PUT", "/v1/datasets", &body)?;
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
    let mut datasets = board.datasets();
    if !datasets.contains_key(&digest) {
        if datasets.len() >= board.options.max_datasets {
            return Err(api_err(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_datasets",
                format!("this runtime holds {} datasets already", datasets.len()),
            ));
        }
        let held: usize = datasets.values().map(|d| d.len()).sum();
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
    }
    datasets.insert(digest, Arc::new(body.to_vec()));
    tracing::info!(manifest_sha256 = %hex::encode(digest), bytes = body.len(), "sealed dataset uploaded");
    Ok(Json(serde_json::json!({
        "manifest_sha256": hex::encode(digest),
        "key_id": header.manifest.key_id,
    })))
}

/// `POST /v1/jobs/{hash}/submit`: runs an approved job whose datasets are all here.
pub(crate) async fn submit(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let board = board(&s)?;
    let key = caller(
        &headers,
        "POST",
        &format!("/v1/jobs/{hash_hex}/submit"),
        &body,
    )?;
    let hash = parse_hash(&hash_hex)?;
    let status = {
        let mut jobs = board.jobs();
        let job = jobs.get_mut(&hash).ok_or_else(|| not_found(&hash))?;
        let party = party_of(job, &hash, &key)?;
        let status = board.status(&hash, job);
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
        tracing::info!(job = %hash_hex, submitted_by = %party, "job running");
        board.status(&hash, job)
    };
    tokio::spawn(run(s.clone(), hash));
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// `GET /v1/jobs/{hash}/result`: the sealed model and its DEK sealed to the calling recipient.
pub(crate) async fn result(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<JobResult>> {
    let board = board(&s)?;
    let key = caller(&headers, "GET", &format!("/v1/jobs/{hash_hex}/result"), b"")?;
    let hash = parse_hash(&hash_hex)?;
    let jobs = board.jobs();
    let job = jobs.get(&hash).ok_or_else(|| not_found(&hash))?;
    let party = party_of(job, &hash, &key)?;
    if !job.spec.outputs.recipients.contains(&party) {
        return Err(api_err(
            StatusCode::FORBIDDEN,
            "not_a_recipient",
            format!(
                "party {party} is not an output recipient of job {hash_hex} (recipients: {})",
                job.spec.outputs.recipients.join(", ")
            ),
        ));
    }
    let output = finished(job, &hash_hex)?;
    let sealed_dek = output.sealed_deks.get(&party).cloned().ok_or_else(|| {
        api_err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no output key for this recipient",
        )
    })?;
    Ok(Json(JobResult {
        job_hash: hash_hex,
        sealed_model: output.sealed_model.clone(),
        key_id: output.key_id.clone(),
        sealed_dek,
        receipt: output.receipt.clone(),
    }))
}

/// `GET /v1/jobs/{hash}/model`: the sealed model (ciphertext), for every party: what an operator
/// deploys to a serving runtime when the job registered the model's key for serving.
pub(crate) async fn model(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let board = board(&s)?;
    let key = caller(&headers, "GET", &format!("/v1/jobs/{hash_hex}/model"), b"")?;
    let hash = parse_hash(&hash_hex)?;
    let jobs = board.jobs();
    let job = jobs.get(&hash).ok_or_else(|| not_found(&hash))?;
    party_of(job, &hash, &key)?;
    let output = finished(job, &hash_hex)?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        output.sealed_model.clone(),
    )
        .into_response())
}

/// `GET /v1/jobs/{hash}/receipt`: the signed receipt, for every party.
pub(crate) async fn receipt(
    State(s): State<Arc<RuntimeState>>,
    Path(hash_hex): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Receipt>> {
    let board = board(&s)?;
    let key = caller(
        &headers,
        "GET",
        &format!("/v1/jobs/{hash_hex}/receipt"),
        b"",
    )?;
    let hash = parse_hash(&hash_hex)?;
    let jobs = board.jobs();
    let job = jobs.get(&hash).ok_or_else(|| not_found(&hash))?;
    party_of(job, &hash, &key)?;
    Ok(Json(finished(job, &hash_hex)?.receipt.clone()))
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
    // Refuse to start without every approval, whatever the board's state says.
    for p in &spec.parties {
        let ok = approvals
            .iter()
            .any(|a| a.party == p.name && a.verify(&spec, &hash).is_ok());
        if !ok {
            return Err(format!("party {} has not approved this job", p.name));
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
                    .cloned()
                    .ok_or_else(|| format!("sealed dataset {} is not here", d.key_id))
            })
            .collect::<Result<_, _>>()?
    };

    // Attest with evidence binding this job; the KBS checks each owner's approval.
    let release = attest_to_kbs(
        &board.options.kbs_url,
        s.tee().as_ref(),
        s.runtime_keys(),
        spec.datasets.iter().map(|d| d.key_id.clone()).collect(),
        vec![],
        Some(JobRelease {
            spec: spec.clone(),
            approvals,
        }),
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
            register_output(s, &board.options.kbs_url, &hash, &output).await?;
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
            runtime_keys: s.runtime_keys().clone(),
        },
        finished_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
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
    kbs_url: &str,
    hash: &[u8; 32],
    output: &SealedOutput,
) -> Result<(), String> {
    let body = zeroize::Zeroizing::new(
        serde_json::to_vec(&job::OutputKey {
            key_id: output.key_id.clone(),
            dek: output.dek.as_bytes().to_vec(),
            sealed_manifest_sha256: output.sealed_manifest_sha256,
        })
        .map_err(|e| e.to_string())?,
    );
    let path = format!("/kbs/v1/jobs/{}/output", hex::encode(hash));
    let mut req = reqwest::Client::new()
        .put(format!("{}{path}", kbs_url.trim_end_matches('/')))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in job::sign_request(s.signing_key(), "PUT", &path, &body, SystemTime::now())
    {
        req = req.header(name, value);
    }
    let resp = req
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| format!("registering the model for serving with the key broker: {e}"))?;
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
