//! The runtime's HTTP surface.
//!
//! Outside the encrypted channel: attestation, health, server and model metadata (public facts),
//! metrics. Inside it (one-shot HPKE or session mode): the whole Open Inference Protocol REST
//! surface, routed by [`handle_inner`]. Inference is admitted through a bounded queue: when it is
//! full a request is refused at once with 503 and `Retry-After`, so memory stays bounded under
//! any burst.

use crate::batching::{BatchOptions, Batcher};
use crate::engine::{EngineError, InputPart, OnnxModel};
use crate::jobs::{self, JobBoard, TrainingOptions};
use crate::llm::{self, ApiError, ServedLlm, StreamItem};
use crate::metrics::{Channel, InferLabels, KeyEvent, Metrics, ModelLabels, RefusalKind};
use crate::replay::{ReplayError, ReplayGuard};
use crate::sessions::{SessionError, SessionLimits, SessionTable};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cordon_proto::oip::{self, ErrorResponse, InferRequest};
use cordon_proto::oip_binary::{self, BinaryOutputs};
use cordon_proto::oip_json::{self, Elements};
use cordon_proto::openai::{self, ChatCompletionRequest};
use cordon_proto::runtime::{
    AttestationResponse, InnerMessageError, InnerRequest, InnerResponse, CONTENT_TYPE_HEADER,
    ENCRYPTED_RESPONSE_MEDIA_TYPE, INFERENCE_HEADER_CONTENT_LENGTH, JSON_MEDIA_TYPE,
};
use cordon_proto::session::{SessionMessage, SessionSetup, SESSION_MESSAGE_MEDIA_TYPE};
use cordon_proto::stream::{StreamSealer, SEALED_STREAM_MEDIA_TYPE};
use cordon_proto::{report_data, ModelBinding, RuntimeKeys, ServiceKeyPair, WireEndorsements};
use cordon_tee::EvidenceProvider;
use ed25519_dalek::SigningKey;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// How the runtime serves: queue and session bounds, body limit, and the development switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingOptions {
    /// Inference requests evaluated at once (blocking threads).
    pub workers: usize,
    /// Admitted requests that may wait for a worker; beyond that, 503 at once.
    pub max_queue: usize,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    pub sessions: SessionLimits,
    /// DEVELOPMENT ONLY: also accept Open Inference Protocol inference in plaintext HTTP, to
    /// measure what encryption costs. Never on by default; refused on hardware TEEs by the CLI.
    pub plaintext_inference: bool,
    /// Dynamic batching of small requests per model; off when `None`.
    pub batching: Option<BatchOptions>,
    /// How far a one-shot request's or session setup's `sent_at` may be from the runtime's clock;
    /// each is remembered (by its `enc`) until its `sent_at` has left this window, so a replay
    /// is refused.
    pub replay_window: Duration,
    /// One-shot requests and session setups remembered at most; beyond that, new ones get 503
    /// until old ones expire. Sustains `replay_memory / (replay_window + 1 s)` per second.
    pub replay_memory: usize,
    /// How long the boot waits for an unreachable key broker (connection refused, timed out:
    /// it may be starting too) before it gives up; zero: one try.
    pub kbs_wait: Duration,
}

impl Default for ServingOptions {
    fn default() -> Self {
        ServingOptions {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            max_queue: 256,
            max_body: 8 << 20,
            sessions: SessionLimits::default(),
            plaintext_inference: false,
            batching: None,
            replay_window: Duration::from_secs(120),
            replay_memory: 1 << 20,
            kbs_wait: Duration::from_secs(30),
        }
    }
}

/// Requests with at most this many input elements are evaluated on the async worker.
const INLINE_ELEMENTS: usize = 1024;

/// A request alone in the runtime with at most this many input elements is evaluated on the async
/// worker too: a batch of about 2,000 rows of 30 features, a millisecond or two of the models here,
/// during which the other workers serve I/O.
const INLINE_ALONE_ELEMENTS: usize = 65_536;

/// Seconds a refused client is told to wait.
const RETRY_AFTER_S: u64 = 1;

/// A model the runtime serves, with the sealed manifest it came from.
pub struct ServedModel {
    pub model: Arc<OnnxModel>,
    /// SHA-256 of the sealed manifest (bound in the evidence clients get).
    pub manifest_sha256: [u8; 32],
}

/// Everything a serving runtime holds. Secrets (service key, signing key, models) stay in here.
pub struct RuntimeState {
    service_key: ServiceKeyPair,
    /// Bound in report_data; signs job receipts and sealed job outputs.
    signing_key: SigningKey,
    runtime_keys: RuntimeKeys,
    tee: Arc<dyn EvidenceProvider>,
    models: BTreeMap<String, ServedModel>,
    bindings: Vec<ModelBinding>,
    options: ServingOptions,
    admission: Admission,
    sessions: SessionTable,
    metrics: Metrics,
    next_request_id: AtomicU64,
    /// One batcher per model, started on first use (inside the tokio runtime).
    batchers: BTreeMap<String, std::sync::OnceLock<Batcher>>,
    /// The training job board, when the configuration enables training.
    jobs: Option<JobBoard>,
    /// Language models, served at `/v1/chat/completions` inside the channel.
    llms: BTreeMap<String, Arc<ServedLlm>>,
    /// One-shot requests and session setups seen recently, by `enc`.
    channel_replay: ReplayGuard,
    /// The wall clock at boot, and the monotonic clock since: the runtime's notion of "now"
    /// (see [`RuntimeState::now`]).
    boot_wall: SystemTime,
    boot_instant: Instant,
}

impl RuntimeState {
    pub fn new(
        service_key: ServiceKeyPair,
        signing_key: SigningKey,
        runtime_keys: RuntimeKeys,
        tee: Arc<dyn EvidenceProvider>,
        models: BTreeMap<String, ServedModel>,
        options: ServingOptions,
    ) -> RuntimeState {
        let bindings = models
            .iter()
            .map(|(name, m)| ModelBinding {
                name: name.clone(),
                version: m.model.version().to_string(),
                manifest_sha256: m.manifest_sha256,
            })
            .collect();
        let batchers = models
            .keys()
            .map(|n| (n.clone(), std::sync::OnceLock::new()))
            .collect();
        RuntimeState {
            batchers,
            service_key,
            signing_key,
            jobs: None,
            llms: BTreeMap::new(),
            runtime_keys,
            tee,
            models,
            bindings,
            admission: Admission::new(options.workers.max(1), options.max_queue),
            sessions: SessionTable::new(options.sessions),
            channel_replay: ReplayGuard::new(options.replay_window, options.replay_memory),
            boot_wall: SystemTime::now(),
            boot_instant: Instant::now(),
            options,
            metrics: Metrics::new(),
            next_request_id: AtomicU64::new(1),
        }
    }

    pub fn runtime_keys(&self) -> &RuntimeKeys {
        &self.runtime_keys
    }

    /// Runs training jobs (`/v1/jobs`, `/v1/datasets`) besides serving.
    pub fn enable_training(&mut self, options: TrainingOptions) {
        self.jobs = Some(JobBoard::new(options));
    }

    /// Serves `llms` as well (`/v1/chat/completions`); their manifests join the bindings the
    /// attestation reports.
    pub fn serve_llms(&mut self, llms: BTreeMap<String, ServedLlm>) {
        for (name, m) in &llms {
            self.bindings.push(ModelBinding {
                name: name.clone(),
                version: m.version.clone(),
                manifest_sha256: m.manifest_sha256,
            });
        }
        self.llms = llms.into_iter().map(|(n, m)| (n, Arc::new(m))).collect();
    }

    pub(crate) fn job_board(&self) -> Option<&JobBoard> {
        self.jobs.as_ref()
    }

    pub(crate) fn tee(&self) -> &Arc<dyn EvidenceProvider> {
        &self.tee
    }

    pub(crate) fn service_key(&self) -> &ServiceKeyPair {
        &self.service_key
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// Refuses a one-shot request or session setup stamped outside the replay window, or whose
    /// `enc` (`id`) was received while that stamp is fresh; else remembers it.
    fn check_fresh(&self, what: &'static str, sent_at: u64, id: &[u8]) -> Result<(), ReplayError> {
        self.channel_replay.accept(what, id, sent_at, self.now())
    }

    /// The runtime's "now": the wall clock read once at boot, advanced by the monotonic clock.
    /// The host sets the wall clock; reading it at every request would let it move a replayed
    /// message's time stamp back into the window after the replay memory forgot it. Read once, a
    /// skew the host chose at boot stays constant, and the memory forgets a time stamp only once
    /// this clock has moved it out of the window for good.
    pub fn now(&self) -> SystemTime {
        self.boot_wall + self.boot_instant.elapsed()
    }

    pub fn model_names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// The models as bound in the evidence clients receive.
    pub fn model_bindings(&self) -> &[ModelBinding] {
        &self.bindings
    }

    pub fn options(&self) -> &ServingOptions {
        &self.options
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The bounded inference queue: at most `capacity` requests admitted (running or waiting), of
/// which `workers` run at once.
struct Admission {
    capacity: usize,
    admitted: AtomicUsize,
    workers: Arc<Semaphore>,
}

struct Ticket<'a>(&'a Admission);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admission held by a task that outlives the handler (a streamed completion).
struct OwnedTicket(Arc<RuntimeState>);

impl Drop for OwnedTicket {
    fn drop(&mut self) {
        self.0.admission.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    fn try_admit_owned(s: &Arc<RuntimeState>) -> Option<OwnedTicket> {
        std::mem::forget(s.admission.try_admit()?);
        Some(OwnedTicket(s.clone()))
    }

    fn new(workers: usize, max_queue: usize) -> Admission {
        Admission {
            capacity: workers + max_queue,
            admitted: AtomicUsize::new(0),
            workers: Arc::new(Semaphore::new(workers)),
        }
    }

    fn try_admit(&self) -> Option<Ticket<'_>> {
        self.admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
            .map(|_| Ticket(self))
    }

    /// Whether the caller's request is the only one admitted (running or waiting).
    fn alone(&self) -> bool {
        self.admitted.load(Ordering::Acquire) <= 1
    }

    fn is_full(&self) -> bool {
        self.admitted.load(Ordering::Acquire) >= self.capacity
    }
}

/// Increments a gauge for as long as it lives, also when the request is cancelled.
struct GaugeGuard<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> GaugeGuard<'a> {
    fn new(g: &'a prometheus_client::metrics::gauge::Gauge) -> GaugeGuard<'a> {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The runtime's routes.
pub fn router(state: Arc<RuntimeState>) -> Router {
    let max_body = state.options.max_body;
    let dataset_limit = state
        .job_board()
        .map(|b| b.max_dataset_bytes())
        .unwrap_or(max_body);
    Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/v1/encrypted", post(encrypted))
        .route("/v1/session", post(session_setup))
        .route("/v1/session/message", post(session_message))
        .route("/metrics", get(metrics))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2", get(server_metadata))
        .route("/v2/repository/index", post(plain_repository_index))
        .route("/v2/models/{name}", get(plain_model_route))
        .route("/v2/models/{name}/ready", get(plain_model_route))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(plain_model_route),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(plain_model_route),
        )
        .route("/v2/models/{name}/infer", post(plain_infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(plain_infer),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        // The job API is served inside the encrypted channel (`route_inner`); only sealed datasets
        // (ciphertext) are uploaded in plain HTTP.
        .route(
            "/v1/datasets",
            put(jobs::upload_dataset).layer(DefaultBodyLimit::max(dataset_limit)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_id,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Serves the runtime on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    state: Arc<RuntimeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_tls(state, listener, None, shutdown).await
}

/// [`serve`], over TLS when `tls` is given. The TLS key is the host's, bound to no evidence:
/// clients trust it for the transport only and still encrypt every request to the attested key.
pub async fn serve_with_tls(
    state: Arc<RuntimeState>,
    listener: tokio::net::TcpListener,
    tls: Option<cordon_http::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Connection cap, header and request deadlines, no Nagle delay (cordon-http). A training
    // runtime accepts sealed datasets of up to hundreds of MiB: allow them time to arrive.
    let mut limits = cordon_http::ServerLimits::default();
    if state.job_board().is_some() {
        limits.request_timeout = std::time::Duration::from_secs(600);
    }
    cordon_http::serve_with_tls(listener, router(state), limits, tls, shutdown).await
}

/// Tags every request with an id (the caller's `x-request-id` when it is short and printable,
/// else a counter) for logs and the response header. Ids are not secret; bodies are never logged.
async fn request_id(State(s): State<Arc<RuntimeState>>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("r{}", s.next_request_id.fetch_add(1, Ordering::Relaxed)));
    let span =
        tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "done"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorResponse { error: msg.into() })).into_response()
}

fn busy(msg: impl Into<String>) -> Response {
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    resp
}

/// A body, or the OIP error for why it could not be read (413 when over the limit).
fn body_or_error(
    s: &RuntimeState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, Box<Response>> {
    body.map_err(|e| {
        let status = e.status();
        Box::new(if status == StatusCode::PAYLOAD_TOO_LARGE {
            s.metrics.refused(RefusalKind::TooLarge);
            error(
                status,
                format!("request body exceeds {} bytes", s.options.max_body),
            )
        } else {
            error(status, format!("request body: {}", e.body_text()))
        })
    })
}

#[derive(serde::Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn attestation(State(s): State<Arc<RuntimeState>>, Query(q): Query<NonceQuery>) -> Response {
    let Some(nonce_hex) = q.nonce else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameter `nonce` (hex) is required",
        );
    };
    let nonce = match hex::decode(&nonce_hex) {
        Ok(n) if (16..=64).contains(&n.len()) => n,
        Ok(n) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("nonce must be 16 to 64 bytes, got {}", n.len()),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("nonce is not hex: {e}")),
    };
    // A repeated nonce is answered again: it only yields fresh evidence for the same nonce, which
    // the verifier that drew it checks once. Remembering unauthenticated nonces would let anyone
    // fill the replay memory that protects authenticated messages.
    // Evidence can take long on hardware (a TDX quote, an SNP ioctl): off the async workers.
    let rd = report_data(&nonce, &s.runtime_keys, &s.bindings);
    let tee = s.tee.clone();
    let Ok(bundle) = tokio::task::spawn_blocking(move || tee.evidence_bundle(&rd)).await else {
        s.metrics.event(KeyEvent::AttestationFailed);
        return error(StatusCode::INTERNAL_SERVER_ERROR, "evidence task failed");
    };
    match bundle {
        Ok(bundle) => {
            s.metrics.event(KeyEvent::Attestation);
            Json(AttestationResponse {
                evidence: bundle.evidence,
                endorsements: WireEndorsements {
                    snp_certs: bundle.snp_certs,
                    dcap_collateral: bundle.dcap_collateral,
                    tdx_event_log: bundle.tdx_event_log,
                },
                runtime_keys: s.runtime_keys.clone(),
                models: s.bindings.clone(),
            })
            .into_response()
        }
        Err(e) => {
            s.metrics.event(KeyEvent::AttestationFailed);
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("evidence: {e}"))
        }
    }
}

async fn metrics(State(s): State<Arc<RuntimeState>>) -> Response {
    s.metrics.sessions_open.set(s.sessions.count() as i64);
    let remembered = [
        ("channel", Some(s.channel_replay.len())),
        (
            "requests",
            s.jobs.as_ref().map(JobBoard::requests_remembered),
        ),
    ];
    for (memory, len) in remembered {
        if let Some(len) = len {
            s.metrics
                .replay_remembered
                .get_or_create(&crate::metrics::MemoryLabels { memory })
                .set(len as i64);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

fn server_metadata_json(s: &RuntimeState) -> serde_json::Value {
    json!({
        "name": "cordon-runtime",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["model_repository", "cordon_encrypted", "cordon_session"],
        "platform": s.tee.platform().to_string(),
        "models": s.model_names(),
    })
}

async fn server_metadata(State(s): State<Arc<RuntimeState>>) -> Json<serde_json::Value> {
    Json(server_metadata_json(&s))
}

/// Plain model metadata and readiness (public facts: names, versions, tensor shapes).
async fn plain_model_route(State(s): State<Arc<RuntimeState>>, req: Request) -> Response {
    let resp = route_inner(
        &s,
        InnerRequest {
            method: "GET".into(),
            path: req.uri().path().to_string(),
            ..InnerRequest::default()
        },
        Channel::Plain,
    )
    .await;
    (
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(resp.body),
    )
        .into_response()
}

async fn plain_repository_index(State(s): State<Arc<RuntimeState>>) -> Response {
    Json(repository_index(&s, None)).into_response()
}

async fn plain_infer(
    State(s): State<Arc<RuntimeState>>,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !s.options.plaintext_inference {
        return error(
            StatusCode::FORBIDDEN,
            "plaintext inference is disabled: send requests through the encrypted channel \
             (/v1/encrypted or /v1/session), e.g. with `cordon proxy`",
        );
    }
    let body = match body_or_error(&s, body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    if s.admission.is_full() {
        s.metrics.refused(RefusalKind::Busy);
        s.metrics.request(Channel::Plain, 503);
        return busy("runtime busy: inference queue is full");
    }
    let path = uri.path().to_string();
    // The binary tensor data extension: the body goes in as it came, as inside the channel.
    let binary = headers
        .get(INFERENCE_HEADER_CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap_or("not text").to_string());
    // Either form goes in as the bytes that came, as inside the channel: the binary tensor data
    // extension, or JSON parsed in one pass.
    let header = match binary {
        Some(header_len) => (INFERENCE_HEADER_CONTENT_LENGTH.to_string(), header_len),
        None => (CONTENT_TYPE_HEADER.to_string(), JSON_MEDIA_TYPE.to_string()),
    };
    let request = InnerRequest {
        method: "POST".into(),
        path,
        headers: BTreeMap::from([header]),
        raw_body: Some(body.to_vec()),
        ..InnerRequest::default()
    };
    let resp = route_inner(&s, request, Channel::Plain).await;
    s.metrics.request(Channel::Plain, resp.status);
    let status = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let header_len = resp.binary_header_length().map(str::to_string);
    let mut out = match (header_len, resp.raw_body) {
        (Some(header_len), Some(raw)) => (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH),
                    HeaderValue::from_str(&header_len).unwrap_or(HeaderValue::from_static("0")),
                ),
            ],
            raw,
        )
            .into_response(),
        _ => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            oip::response_json(&resp.body),
        )
            .into_response(),
    };
    if resp.status == 503 {
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    }
    out
}

/// An inner response: whole, or a stream of pieces after its head (a streamed completion).
enum Answer {
    Whole(InnerResponse),
    Stream {
        head: InnerResponse,
        pieces: tokio::sync::mpsc::Receiver<StreamItem>,
    },
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Whole(r) => r.status,
            Answer::Stream { head, .. } => head.status,
        }
    }
}

/// Decodes and serves one inner request (the plaintext of an encrypted message).
async fn handle_inner(
    s: &Arc<RuntimeState>,
    parsed: Result<InnerRequest, InnerMessageError>,
    channel: Channel,
) -> Answer {
    let answer = match parsed {
        Ok(req) if channel != Channel::Plain && is_llm_route(&req.path) => serve_llm(s, req).await,
        Ok(req) => Answer::Whole(route_inner(s, req, channel).await),
        Err(e @ InnerMessageError::Json(_)) => Answer::Whole(inner_error(
            400,
            format!("inner request is not valid JSON for a Cordon request: {e}"),
        )),
        Err(e) => Answer::Whole(inner_error(400, format!("inner request is malformed: {e}"))),
    };
    s.metrics.request(channel, answer.status());
    answer
}

fn encode_inner(resp: InnerResponse) -> zeroize::Zeroizing<Vec<u8>> {
    // Serializing a JSON value into memory cannot fail.
    resp.into_plaintext().unwrap_or_default()
}

/// A streamed answer sealed frame by frame as its pieces come (docs/protocol.md §7.7): the head
/// first, the last piece marked. A generation that ends without its last piece (it panicked)
/// aborts the connection, so the client sees the answer cut, never a clean end.
fn sealed_stream(
    mut sealer: StreamSealer,
    head: InnerResponse,
    mut pieces: tokio::sync::mpsc::Receiver<StreamItem>,
) -> Response {
    let (tx, body) = cordon_http::ChannelBody::channel(4);
    tokio::spawn(async move {
        let mut next = Some((encode_inner(head), false));
        loop {
            let Some((plain, last)) = next.take() else {
                break;
            };
            let frame = match sealer.seal(&plain, last) {
                Ok(f) => Ok(Bytes::from(f)),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            drop(plain);
            let failed = frame.is_err();
            // The client is gone, or reads too slowly to be waited for: dropping `pieces` stops
            // the generation and frees its worker. The stream then ends without its last
            // frame, which the client sees as cut.
            let sent = tokio::time::timeout(STREAM_SEND_TIMEOUT, tx.send(frame)).await;
            if !matches!(sent, Ok(Ok(()))) || failed || last {
                return;
            }
            next = match pieces.recv().await {
                Some(StreamItem::Data(b)) => Some((b, false)),
                Some(StreamItem::End(b)) => Some((b, true)),
                None => None,
            };
        }
        let _ = tx
            .send(Err(std::io::Error::other(
                "the generation ended without its last piece",
            )))
            .await;
    });
    (
        [(header::CONTENT_TYPE, SEALED_STREAM_MEDIA_TYPE)],
        axum::body::Body::new(body),
    )
        .into_response()
}

/// How long a streamed answer waits for its client to take the next frame: a client that stops
/// reading would otherwise hold a worker for as long as it keeps the connection open.
const STREAM_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// The OpenAI routes inside the channel.
fn is_llm_route(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    path == openai::CHAT_COMPLETIONS_PATH || path == openai::MODELS_PATH
}

fn api_answer(e: ApiError) -> Answer {
    Answer::Whole(InnerResponse::json(e.status, e.body()))
}

/// `GET /v1/models` and `POST /v1/chat/completions`.
async fn serve_llm(s: &Arc<RuntimeState>, req: InnerRequest) -> Answer {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    match (req.method.as_str(), path.trim_end_matches('/')) {
        ("GET", openai::MODELS_PATH) => Answer::Whole(ok(json!(llm::model_list(
            s.llms.iter().map(|(n, m)| (n, m.as_ref()))
        )))),
        ("POST", openai::CHAT_COMPLETIONS_PATH) => chat_completion(s, req).await,
        (m, p) => api_answer(ApiError {
            status: 405,
            message: format!("{m} is not allowed on {p}"),
        }),
    }
}

async fn chat_completion(s: &Arc<RuntimeState>, req: InnerRequest) -> Answer {
    // What the answer's signature names: the body exactly as the client sent it. A request sent
    // as a JSON tree has no such bytes (its re-encoding is not what the client wrote): its answer
    // is not signed, and a whole one comes back as a tree.
    let request_sha256: Option<[u8; 32]> =
        req.raw_body.as_ref().map(|raw| Sha256::digest(raw).into());
    let parsed = match (&req.raw_body, req.body) {
        (Some(raw), _) => serde_json::from_slice::<ChatCompletionRequest>(raw),
        (None, Some(body)) => serde_json::from_value(body),
        (None, None) => {
            return api_answer(ApiError {
                status: 400,
                message: "a chat completion request needs a body".into(),
            })
        }
    };
    drop(req.raw_body);
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            return api_answer(ApiError {
                status: 400,
                message: format!("chat completion request: {}", e.classify_name()),
            })
        }
    };
    let Some(served) = s.llms.get(&request.model).cloned() else {
        return api_answer(ApiError {
            status: 404,
            message: format!(
                "model {:?} is not served here; this runtime serves {:?}",
                request.model.chars().take(64).collect::<String>(),
                s.llms.keys().collect::<Vec<_>>()
            ),
        });
    };
    // Admitted before anything costly (rendering and tokenizing the prompt) is done for it.
    let Some(ticket) = Admission::try_admit_owned(s) else {
        s.metrics.refused(RefusalKind::Busy);
        return api_answer(ApiError {
            status: 503,
            message: "runtime busy: inference queue is full; retry later".into(),
        });
    };
    let permit = {
        let _waiting = GaugeGuard::new(&s.metrics.queue_depth);
        s.admission.workers.clone().acquire_owned().await
    };
    let Ok(permit) = permit else {
        return api_answer(ApiError {
            status: 503,
            message: "runtime is shutting down".into(),
        });
    };
    let id = llm::completion_id();
    let created = cordon_proto::auth::unix(s.now());
    // Set when this handler is dropped (the client left, or the request's deadline passed): a
    // whole completion then stops at its next token instead of running on for nobody. A stream
    // stops when its connection drops its pieces.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let flag = cancel.0.clone();
    let (tx, pieces) = tokio::sync::mpsc::channel(16);
    let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
    // One blocking task does the work: the prompt, then the whole completion (its outcome sent
    // back) or, for a stream, `None` as the outcome and the events through `tx`.
    let state = s.clone();
    tokio::task::spawn_blocking(move || {
        let _held = (ticket, permit);
        let completion = match llm::prepare(&request.model, &served, &request) {
            Ok(c) => c,
            Err(e) => {
                let _ = outcome_tx.send(Err(e));
                return;
            }
        };
        drop(request);
        let signer = request_sha256.map(|request_sha256| llm::Signer {
            key: state.signing_key(),
            request_sha256,
        });
        if !completion.stream {
            let whole = llm::complete(&served, &completion, &id, created, &flag).map(|c| {
                Some(match &signer {
                    Some(signer) => Whole::Signed(signer.sign_whole(&c)),
                    None => Whole::Tree(c),
                })
            });
            let _ = outcome_tx.send(whole);
            return;
        }
        if outcome_tx.send(Ok(None)).is_err() {
            return;
        }
        let events = llm::EventWriter {
            id,
            created,
            model: completion.model.clone(),
            include_usage: completion.include_usage,
        };
        llm::generate(&served, &completion, &events, signer.as_ref(), &tx);
    });
    match outcome.await {
        // The exact bytes that were signed travel as the body, the signature beside them.
        Ok(Ok(Some(Whole::Tree(completion)))) => Answer::Whole(ok(json!(completion))),
        Ok(Ok(Some(Whole::Signed((bytes, signature))))) => {
            let mut answer = InnerResponse::json(200, serde_json::Value::Null);
            answer
                .headers
                .insert(CONTENT_TYPE_HEADER.to_string(), JSON_MEDIA_TYPE.to_string());
            answer
                .headers
                .insert(openai::SIGNATURE_HEADER.to_string(), hex::encode(signature));
            answer.raw_body = Some(bytes);
            Answer::Whole(answer)
        }
        Ok(Ok(None)) => {
            let mut head = InnerResponse::json(200, serde_json::Value::Null);
            head.headers.insert(
                CONTENT_TYPE_HEADER.to_string(),
                openai::EVENT_STREAM_MEDIA_TYPE.to_string(),
            );
            Answer::Stream { head, pieces }
        }
        Ok(Err(e)) => api_answer(e),
        Err(_) => api_answer(ApiError {
            status: 500,
            message: "generation task failed".into(),
        }),
    }
}

/// A whole completion: its signed bytes and signature, or (for a request sent as a JSON tree) the
/// completion itself, unsigned.
enum Whole {
    Signed((Vec<u8>, [u8; 64])),
    Tree(cordon_proto::openai::ChatCompletion),
}

/// Sets its flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn encrypted(
    State(s): State<Arc<RuntimeState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(&s, body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    // Refuse before spending a key agreement on a request that could not be queued.
    if s.admission.is_full() {
        s.metrics.refused(RefusalKind::Busy);
        return busy("runtime busy: inference queue is full");
    }
    let (inner, response_ctx) = match s.service_key.decapsulate_request(&body) {
        Ok(x) => x,
        Err(e) => {
            s.metrics.refused(RefusalKind::Decrypt);
            return error(StatusCode::BAD_REQUEST, format!("encrypted request: {e}"));
        }
    };
    // Decrypted from here on (which authenticates nobody: anyone may encrypt to our key). A
    // one-shot request carries its client's clock and is unique by its `enc`: a replay is refused
    // before it is routed (nothing runs twice). One that does not parse runs nothing and is
    // answered with the reason, encrypted.
    let parsed = InnerRequest::from_plaintext(&inner);
    if let Ok(req) = &parsed {
        let Some(sent_at) = req.sent_at else {
            s.metrics.refused(RefusalKind::Replay);
            return error(
                StatusCode::BAD_REQUEST,
                "one-shot request carries no sent_at: update the client",
            );
        };
        if let Err(e) = s.check_fresh("one-shot request", sent_at, &response_ctx.request_id()) {
            return replay_refusal(&s, e);
        }
    }
    let inner_response = match handle_inner(&s, parsed, Channel::Oneshot).await {
        Answer::Whole(r) => r,
        Answer::Stream { head, pieces } => {
            return sealed_stream(response_ctx.into_stream(), head, pieces)
        }
    };
    drop(inner);
    match response_ctx.encrypt_response(&encode_inner(inner_response)) {
        Ok(ct) => ([(header::CONTENT_TYPE, ENCRYPTED_RESPONSE_MEDIA_TYPE)], ct).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A replayed (or stale) one-shot request or session setup: 409 (400 when stale), or 503 when the
/// replay memory is full. In clear: the refusal names no content.
fn replay_refusal(s: &RuntimeState, e: ReplayError) -> Response {
    s.metrics.refused(RefusalKind::Replay);
    match e.status() {
        StatusCode::SERVICE_UNAVAILABLE => busy(e.to_string()),
        status => error(status, e.to_string()),
    }
}

fn session_refusal(s: &RuntimeState, e: SessionError) -> Response {
    let status = match e {
        SessionError::Full { .. } => {
            s.metrics.refused(RefusalKind::Busy);
            return busy(e.to_string());
        }
        SessionError::Unknown => StatusCode::NOT_FOUND,
        SessionError::Expired | SessionError::Exhausted { .. } => {
            s.metrics.event(KeyEvent::SessionExpired);
            StatusCode::GONE
        }
        SessionError::Replayed { .. } => {
            s.metrics.refused(RefusalKind::Replay);
            return error(StatusCode::CONFLICT, e.to_string());
        }
    };
    s.metrics.refused(RefusalKind::Session);
    error(status, e.to_string())
}

async fn session_setup(
    State(s): State<Arc<RuntimeState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(&s, body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let (setup, keys) = match s.service_key.accept_session(&body) {
        Ok(x) => x,
        Err(e) => {
            s.metrics.refused(RefusalKind::Decrypt);
            return error(StatusCode::BAD_REQUEST, format!("session setup: {e}"));
        }
    };
    // The keys already mix in a fresh nonce of ours, so a replayed setup could not reuse a key and
    // nonce; it is refused as well, so that it opens no session at all.
    // Answered in clear: only the kind of fault and where, never the parser's text, which can
    // quote the decrypted setup.
    let setup = match serde_json::from_slice::<SessionSetup>(&setup) {
        Ok(setup) => setup,
        Err(e) => {
            s.metrics.refused(RefusalKind::Replay);
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "session setup is malformed or carries no sent_at (update the client): {:?} \
                     error at line {}, column {}",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            );
        }
    };
    if let Err(e) = s.check_fresh("session setup", setup.sent_at, &keys.setup_id()) {
        return replay_refusal(&s, e);
    }
    let (grant, session, swept) = match s.sessions.open(keys, Instant::now()) {
        Ok(x) => x,
        Err(e) => return session_refusal(&s, e),
    };
    for _ in 0..swept {
        s.metrics.event(KeyEvent::SessionExpired);
    }
    s.metrics.event(KeyEvent::SessionOpened);
    match session.keys().seal_grant(&grant) {
        Ok(ct) => ([(header::CONTENT_TYPE, SESSION_MESSAGE_MEDIA_TYPE)], ct).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn session_message(
    State(s): State<Arc<RuntimeState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body_or_error(&s, body) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let message = match SessionMessage::parse(&body) {
        Ok(m) => m,
        Err(e) => {
            s.metrics.refused(RefusalKind::Decrypt);
            return error(StatusCode::BAD_REQUEST, format!("session message: {e}"));
        }
    };
    let session = match s.sessions.get(&message.session_id, Instant::now()) {
        Ok(x) => x,
        Err(e) => return session_refusal(&s, e),
    };
    let inner = match message.open(session.keys()) {
        Ok(p) => p,
        Err(e) => {
            s.metrics.refused(RefusalKind::Decrypt);
            return error(StatusCode::BAD_REQUEST, format!("session message: {e}"));
        }
    };
    if let Err(e) = session.accept_seq(message.seq) {
        return session_refusal(&s, e);
    }
    if s.admission.is_full() {
        s.metrics.refused(RefusalKind::Busy);
        return busy("runtime busy: inference queue is full");
    }
    let parsed = InnerRequest::from_plaintext(&inner);
    drop(inner);
    let inner_response = match handle_inner(&s, parsed, Channel::Session).await {
        Answer::Whole(r) => r,
        Answer::Stream { head, pieces } => {
            let sealer = session
                .keys()
                .stream_sealer(&message.session_id, message.seq);
            return sealed_stream(sealer, head, pieces);
        }
    };
    match session.keys().seal_response(
        &message.session_id,
        message.seq,
        &encode_inner(inner_response),
    ) {
        Ok(ct) => ([(header::CONTENT_TYPE, SESSION_MESSAGE_MEDIA_TYPE)], ct).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    // Serde's messages can quote input; only the position and class leave the runtime.
    fn classify_name(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn inner_error(status: u16, msg: impl Into<String>) -> InnerResponse {
    InnerResponse::json(status, json!({ "error": msg.into() }))
}

fn ok(body: serde_json::Value) -> InnerResponse {
    InnerResponse::json(200, body)
}

/// `POST /v2/repository/index` (KServe v2 model repository extension): every model this runtime
/// serves, with its version and state `READY` (models are loaded at boot; there is no other
/// state). `{"ready": true}` asks for ready models only, which is the same list.
fn repository_index(s: &RuntimeState, _body: Option<&serde_json::Value>) -> serde_json::Value {
    serde_json::Value::Array(
        s.models
            .iter()
            .map(
                |(name, m)| json!({ "name": name, "version": m.model.version(), "state": "READY" }),
            )
            .collect(),
    )
}

/// The model `name`, at `version` when the path names one.
fn find_model<'a>(
    s: &'a RuntimeState,
    name: &str,
    version: Option<&str>,
) -> Result<&'a ServedModel, String> {
    let Some(m) = s.models.get(name) else {
        return Err(format!(
            "unknown model {name:?}; this runtime serves {:?}",
            s.model_names()
        ));
    };
    match version {
        Some(v) if v != m.model.version() => Err(format!(
            "model {name:?} has no version {v:?}; version {:?} is served",
            m.model.version()
        )),
        _ => Ok(m),
    }
}

/// Routes one Open Inference Protocol request (REST form, KServe v2).
async fn route_inner(s: &Arc<RuntimeState>, req: InnerRequest, channel: Channel) -> InnerResponse {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    // The training job API, inside the channel only: its statuses carry specs and metrics.
    if channel != Channel::Plain && (path == "/v1/jobs" || path.starts_with("/v1/jobs/")) {
        return jobs::handle(s, &req).await;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (model_path, tail): (Option<(&str, Option<&str>)>, &[&str]) = match segments.as_slice() {
        ["v2", "models", name, "versions", version, tail @ ..] => {
            (Some((*name, Some(*version))), tail)
        }
        ["v2", "models", name, tail @ ..] => (Some((*name, None)), tail),
        _ => (None, &[]),
    };
    match (req.method.as_str(), model_path, tail) {
        ("GET", None, _) => match segments.as_slice() {
            ["v2", "health", "live"] => ok(json!({ "live": true })),
            ["v2", "health", "ready"] => ok(json!({ "ready": true })),
            ["v2"] => ok(server_metadata_json(s)),
            _ => inner_error(404, format!("no route for GET {path}")),
        },
        // The model repository extension, read-only: what is served, all of it loaded.
        ("POST", None, _) if segments == ["v2", "repository", "index"] => {
            ok(repository_index(s, req.body.as_ref()))
        }
        ("GET", Some((name, version)), []) => match find_model(s, name, version) {
            Ok(m) => ok(json!(m.model.metadata())),
            Err(e) => inner_error(404, e),
        },
        ("GET", Some((name, version)), ["ready"]) => match find_model(s, name, version) {
            Ok(_) => ok(json!({ "name": name, "ready": true })),
            Err(e) => inner_error(404, e),
        },
        ("POST", Some((name, version)), ["infer"]) => {
            let model = match find_model(s, name, version) {
                Ok(m) => m.model.clone(),
                Err(e) => return inner_error(404, e),
            };
            // The binary tensor data extension, as the client sent it: no JSON for tensor data.
            if let Some(header_len) = req.headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
                return match PartsInfer::binary(header_len, req.raw_body) {
                    Ok(work) => infer(s, model, InferWork::Parts(work), channel).await,
                    Err(e) => inner_error(400, e),
                };
            }
            // A JSON body as bytes: parsed in one pass, its tensor data never a JSON tree.
            if json_bytes(&req.headers) {
                if let Some(body) = req.raw_body {
                    let parsed = PartsInfer::json(&body);
                    // The body is not needed once parsed: not kept while the request waits.
                    drop(body);
                    return match parsed {
                        Ok(work) => infer(s, model, InferWork::Parts(work), channel).await,
                        Err(e) => inner_error(400, e),
                    };
                }
            }
            if let Some(problem) = req.body.as_ref().and_then(oip::request_problem) {
                return inner_error(400, problem);
            }
            let request: InferRequest = match req.body.map(serde_json::from_value) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    return inner_error(400, format!("infer request: {}", e.classify_name()))
                }
                None => return inner_error(400, "infer request needs a body"),
            };
            infer(s, model, InferWork::Json(request), channel).await
        }
        (m, _, _) => inner_error(404, format!("no route for {m} {path}")),
    }
}

/// An infer request as it arrived: a JSON tree (from a client that sends `body`), or bytes whose
/// tensor data never becomes one (the binary tensor data extension, or a JSON body parsed in one
/// pass).
enum InferWork {
    Json(InferRequest),
    Parts(PartsInfer),
}

/// Where one input's elements are.
enum Part {
    /// Bytes of the body (the binary tensor data extension).
    Bytes(std::ops::Range<usize>),
    /// Flattened while the JSON body was parsed.
    Elements(Elements),
}

/// An infer request whose inputs' elements are not in a JSON tree: its fields (those inputs'
/// `data` null), the body they came in, where each input's elements are, and which outputs go
/// back in binary.
struct PartsInfer {
    request: InferRequest,
    body: Vec<u8>,
    parts: Vec<Option<Part>>,
    binary_outputs: BinaryOutputs,
}

impl PartsInfer {
    /// Takes apart a binary-extension body: the header checked for the request's shape as a JSON
    /// body is; nothing decoded yet.
    fn binary(header_len: &str, body: Option<Vec<u8>>) -> Result<PartsInfer, String> {
        let header_len = header_len
            .trim()
            .parse::<usize>()
            .map_err(|_| "Inference-Header-Content-Length is not a byte count".to_string())?;
        let body = body
            .ok_or("a binary infer request carries its body in raw_body, and this one has none")?;
        let split = oip_binary::split_request(&body, header_len).map_err(|e| e.to_string())?;
        if let Some(problem) = oip::request_problem(&split.header) {
            return Err(problem);
        }
        let binary_outputs = BinaryOutputs::of(&split.header);
        let request = serde_json::from_value(split.header)
            .map_err(|e| format!("infer request: {}", e.classify_name()))?;
        Ok(PartsInfer {
            request,
            body,
            parts: split
                .blobs
                .into_iter()
                .map(|r| r.map(Part::Bytes))
                .collect(),
            binary_outputs,
        })
    }

    /// Parses a JSON body in one pass (`oip_json`): each input's elements flat, no tree.
    fn json(body: &[u8]) -> Result<PartsInfer, String> {
        let parsed = oip_json::parse_infer_request(body)?;
        Ok(PartsInfer {
            binary_outputs: BinaryOutputs::of(&parsed.output_choices),
            request: parsed.request,
            body: Vec::new(),
            parts: parsed
                .data
                .into_iter()
                .map(|e| Some(Part::Elements(e)))
                .collect(),
        })
    }

    /// Evaluates it on `model`: inputs decoded from their bytes or elements, outputs in binary
    /// where asked for, else JSON.
    fn run(&self, model: &OnnxModel) -> Result<InnerResponse, EngineError> {
        let parts: Vec<Option<InputPart>> = self
            .parts
            .iter()
            .map(|p| match p {
                Some(Part::Bytes(r)) => Some(InputPart::Bytes(&self.body[r.clone()])),
                Some(Part::Elements(e)) => Some(InputPart::Elements(&e.0)),
                None => None,
            })
            .collect();
        let outputs = model.infer_parts(&self.request, &parts)?;
        let mut tail = Vec::new();
        let outputs: Vec<serde_json::Value> = outputs
            .into_iter()
            .map(|(name, tensor)| {
                if !self.binary_outputs.wants(&name) {
                    return json!(tensor.into_oip(&name));
                }
                let shape = tensor.shape.clone();
                let (datatype, bytes) = tensor.data.into_le_bytes();
                let t = json!({
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": { "binary_data_size": bytes.len() },
                });
                tail.extend_from_slice(&bytes);
                t
            })
            .collect();
        let response = json!({
            "model_name": model.name(),
            "model_version": model.version(),
            "id": self.request.id,
            "outputs": outputs,
        });
        Ok(binary_answer(response, tail))
    }

    /// The same request as a JSON tree (for the batcher, which merges JSON requests). Binary
    /// tensors whose JSON could not fit `max_json` bytes (the runtime's body limit) are refused
    /// before anything is decoded: 8 MiB of BOOL would otherwise become 8M JSON values.
    fn into_json(self, max_json: usize) -> Result<InferRequest, (u16, String)> {
        let floor = self
            .request
            .inputs
            .iter()
            .zip(&self.parts)
            .map(|(t, part)| match part {
                Some(Part::Bytes(r)) => oip_binary::json_size_floor(&t.datatype, r.len()),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add);
        if floor > max_json {
            let e = oip_binary::BinaryError::TooLarge {
                binary: self.body.len(),
                json: floor,
                limit: max_json,
            };
            return Err((413, e.to_string()));
        }
        let mut request = self.request;
        for (t, part) in request.inputs.iter_mut().zip(self.parts) {
            t.data = match part {
                Some(Part::Bytes(r)) => serde_json::Value::Array(
                    oip_binary::decode_elements(&t.datatype, &self.body[r])
                        .map_err(|reason| (400, format!("input {:?}: {reason}", t.name)))?,
                ),
                // Each element dropped as it is converted.
                Some(Part::Elements(e)) => {
                    serde_json::Value::Array(e.0.into_iter().map(|e| e.to_value()).collect())
                }
                None => continue,
            };
        }
        Ok(request)
    }
}

/// Whether an inner request's `raw_body` is a JSON body (`content-type: application/json`).
fn json_bytes(headers: &BTreeMap<String, String>) -> bool {
    headers
        .get(CONTENT_TYPE_HEADER)
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some(JSON_MEDIA_TYPE))
}

/// A response in the binary extension's form when `tail` holds any output's bytes, else JSON.
fn binary_answer(mut response: serde_json::Value, tail: Vec<u8>) -> InnerResponse {
    if let Some(map) = response.as_object_mut() {
        // An absent id is left out, as a JSON response leaves it out.
        map.retain(|_, v| !v.is_null());
    }
    if tail.is_empty() {
        return ok(response);
    }
    // The JSON part as the HTTP surfaces write JSON: NaN and infinities of float outputs left in
    // JSON as Triton's literals.
    let mut body = oip::response_json(&response);
    let header_len = body.len();
    body.extend_from_slice(&tail);
    raw_answer(body, header_len)
}

/// A 200 whose body is a binary-extension body of `header_len` bytes of JSON, then tensor bytes.
fn raw_answer(body: Vec<u8>, header_len: usize) -> InnerResponse {
    InnerResponse {
        status: 200,
        body: serde_json::Value::Null,
        headers: BTreeMap::from([(
            INFERENCE_HEADER_CONTENT_LENGTH.to_string(),
            header_len.to_string(),
        )]),
        raw_body: Some(body),
    }
}

impl InferWork {
    fn request(&self) -> &InferRequest {
        match self {
            InferWork::Json(r) => r,
            InferWork::Parts(p) => &p.request,
        }
    }

    /// Elements across all inputs, as the shapes say (saturating: a shape is the client's, and
    /// its product may not fit; the engine refuses such a shape).
    fn elements(&self) -> usize {
        self.request()
            .inputs
            .iter()
            .map(|t| {
                t.shape
                    .iter()
                    .fold(1usize, |n, &d| n.saturating_mul(d.max(0) as usize))
            })
            .fold(0usize, usize::saturating_add)
    }

    fn run(&self, model: &OnnxModel) -> InnerResponse {
        let result = match self {
            InferWork::Json(request) => model.infer(request).map(|r| ok(json!(r))),
            InferWork::Parts(p) => p.run(model),
        };
        result.unwrap_or_else(|e| inner_error(e.http_status(), e.to_string()))
    }
}

async fn infer(
    s: &Arc<RuntimeState>,
    model: Arc<OnnxModel>,
    work: InferWork,
    channel: Channel,
) -> InnerResponse {
    let Some(_ticket) = s.admission.try_admit() else {
        s.metrics.refused(RefusalKind::Busy);
        return inner_error(503, "runtime busy: inference queue is full; retry later");
    };
    let started = Instant::now();
    let labels = InferLabels {
        model: model.name().to_string(),
        channel,
    };
    // Batched requests wait in their model's batcher, not for a worker: the batcher evaluates
    // one merged batch at a time per model. It merges JSON requests: a binary one is decoded to
    // JSON for it, and its answer encoded back.
    let batch = batcher_for(s, &model).and_then(|b| Some((b, b.batchable_rows(work.request())?)));
    if let Some((batcher, rows)) = batch {
        let (request, binary_outputs) = match work {
            InferWork::Json(request) => (request, None),
            InferWork::Parts(p) => {
                let binary_outputs = p.binary_outputs.clone();
                match p.into_json(s.options.max_body) {
                    Ok(request) => (request, Some(binary_outputs)),
                    Err((status, e)) => return inner_error(status, e),
                }
            }
        };
        let batched = batcher.infer(request, rows).await;
        s.metrics
            .inference_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        return match (batched, binary_outputs) {
            (Ok(resp), None) => ok(json!(resp)),
            (Ok(resp), Some(wanted)) => {
                let mut body = json!(resp);
                match oip_binary::encode_response(&mut body, &wanted) {
                    Ok(Some((bytes, header_len))) => raw_answer(bytes, header_len),
                    Ok(None) => ok(body),
                    Err(e) => inner_error(500, e.to_string()),
                }
            }
            (Err(e), _) => inner_error(e.http_status(), e.to_string()),
        };
    }
    let permit = {
        let _waiting = GaugeGuard::new(&s.metrics.queue_depth);
        s.admission.workers.clone().acquire_owned().await
    };
    let Ok(_permit) = permit else {
        return inner_error(503, "runtime is shutting down");
    };
    let _running = GaugeGuard::new(&s.metrics.in_flight);
    if let Some(rows) = work.request().inputs.first().and_then(|t| t.shape.first()) {
        s.metrics
            .batch_rows
            .get_or_create(&labels)
            .observe((*rows).max(0) as f64);
    }
    // A small request (a row or a few) takes microseconds: evaluating it here costs less than
    // handing it to a blocking thread and back. Larger ones go off the async workers.
    // A larger request goes to a blocking thread, so that the async workers stay free for other
    // requests' I/O, unless it is the only request in the runtime and of a bounded size: then the
    // hand-off to another thread and back (a fifth of a 1,024-row batch's time on a two-vCPU
    // machine, docs/benchmarks.md) would buy nothing.
    let elements = work.elements();
    let inline =
        elements <= INLINE_ELEMENTS || (elements <= INLINE_ALONE_ELEMENTS && s.admission.alone());
    let result = if inline {
        Ok(work.run(&model))
    } else {
        tokio::task::spawn_blocking(move || work.run(&model)).await
    };
    s.metrics
        .inference_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result.unwrap_or_else(|_| inner_error(500, "inference task failed"))
}

/// The model's batcher when batching is on, started on first use.
fn batcher_for<'a>(s: &'a RuntimeState, model: &Arc<OnnxModel>) -> Option<&'a Batcher> {
    let options = s.options.batching?;
    // Merging requests is only safe where no output row depends on another request's rows.
    if !model.rows_independent() {
        return None;
    }
    let slot = s.batchers.get(model.name())?;
    Some(slot.get_or_init(|| {
        let hist = s
            .metrics
            .batched_rows
            .get_or_create(&ModelLabels {
                model: model.name().to_string(),
            })
            .clone();
        Batcher::spawn(
            model.clone(),
            options,
            s.options.max_queue + s.options.workers,
            Arc::new(move |rows| hist.observe(rows as f64)),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The runtime reads the wall clock once, at boot: what the host does to it afterwards moves
    /// nothing (a replayed message's time stamp cannot be brought back into the window after the
    /// replay memory, on the monotonic clock, forgot it).
    #[test]
    fn the_runtimes_now_follows_the_monotonic_clock_from_boot() {
        let tee = Arc::new(cordon_tee::SimTee::new(
            cordon_tee::SimHardwareKey::generate(),
            [0; 48],
            [0; 32],
            false,
        ));
        let service_key = ServiceKeyPair::generate(0);
        let signing_key = SigningKey::from_bytes(&[1; 32]);
        let runtime_keys = RuntimeKeys {
            hpke_public_key: service_key.public_key(),
            hpke_key_id: 0,
            signing_public_key: signing_key.verifying_key().to_bytes(),
        };
        let mut s = RuntimeState::new(
            service_key,
            signing_key,
            runtime_keys,
            tee,
            BTreeMap::new(),
            ServingOptions::default(),
        );
        // As if the wall clock had read 1,000 s at boot.
        s.boot_wall = UNIX_EPOCH + Duration::from_secs(1_000);
        std::thread::sleep(Duration::from_millis(20));
        let now = s.now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            now >= Duration::from_millis(1_020) && now < Duration::from_secs(1_060),
            "{now:?}"
        );
        // A message stamped with today's wall clock is far outside this runtime's window.
        let today = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(s
            .channel_replay
            .check_time("one-shot request", today, s.now())
            .is_err());
        assert!(s
            .channel_replay
            .check_time("one-shot request", 1_000, s.now())
            .is_ok());
    }
}
