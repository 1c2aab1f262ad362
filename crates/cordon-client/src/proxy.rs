//! The local verifying proxy: the plain Open Inference Protocol (KServe v2) REST surface on loopback,
//! every request encrypted to a runtime whose evidence this proxy verified itself.
//!
//! An application that speaks OIP points at the proxy instead of the runtime and needs no change.
//! The proxy:
//!
//! - verifies the runtime at `upstream` with the client's own policy file and a fresh nonce
//!   ([`crate::connect_with_tls`], with [`ProxyConfig::tls`] for an `https://` upstream) and pins
//!   the HPKE key bound in its evidence;
//! - forwards each OIP request (`GET /v2`, `/v2/health/{live,ready}`,
//!   `/v2/models/{name}[/versions/{version}]`, `…/ready`, `POST …/infer`) as an encrypted inner request
//!   and answers with the decrypted status and JSON body; any other path is a 404 from the proxy;
//! - **fails closed**: while the runtime is not verified, every OIP request gets a 503 whose `error`
//!   names why, and nothing is sent to the runtime but attestation requests;
//! - re-verifies on a schedule, before forwarding when the last verification is older than the
//!   interval, and when the runtime cannot decrypt a request (it restarted with a new key): the
//!   request is sent once more, to the new key, only if the new evidence verifies and appraises. The
//!   runtime refused that request before decrypting it, so sending it again cannot run it twice;
//! - answers `GET /cordon/v1/status` with what it verified, when, and what went wrong.
//!
//! Request and response bodies are never logged; `debug` tracing names method, path and status only.

use crate::{
    connect_with_tls, ClientError, ClientTls, Reply, ReplyStream, Session, VerifiedRuntime,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use cordon_attest::{Claims, Endorsements, Platform, Policy, PolicyDocument};
use cordon_proto::openai;
use cordon_proto::runtime::{
    InnerRequest, InnerResponse, CONTENT_TYPE_HEADER, INFERENCE_HEADER_CONTENT_LENGTH,
    JSON_MEDIA_TYPE,
};
use cordon_proto::{oip, oip_binary};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Largest request body forwarded: the runtime's own limit for an encrypted request.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;
/// How often the runtime is verified again when nothing else prompts it.
pub const DEFAULT_REVERIFY: Duration = Duration::from_secs(300);
/// After a failed verification, how long before a request or the schedule may try again.
pub const DEFAULT_RETRY_FAILED: Duration = Duration::from_secs(10);
/// A body over the limit is read and dropped up to this many bytes, so the client can read the 413
/// instead of a reset connection; beyond it the connection is cut.
const DRAIN_LIMIT: usize = 64 << 20;

/// Where the proxy's time comes from (verification time, freshness, status). Tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What a proxy verifies and how.
#[derive(Clone)]
pub struct ProxyConfig {
    /// The runtime's base URL (`http://host:port`).
    pub upstream: String,
    /// The client policy file: what the runtime must prove, and the endorsements to verify with.
    pub policy: PolicyDocument,
    /// A verification older than this is repeated before the next request is forwarded.
    pub reverify_every: Duration,
    /// After a failed verification, requests are refused without a new attempt for this long.
    pub retry_failed_after: Duration,
    /// Largest request body accepted (413 above it).
    pub max_body: usize,
    /// How an `https://` upstream's TLS certificate is verified (default: the web PKI roots).
    pub tls: ClientTls,
    pub now: Clock,
}

impl ProxyConfig {
    /// A configuration with the defaults above and the system clock.
    pub fn new(upstream: impl Into<String>, policy: PolicyDocument) -> ProxyConfig {
        ProxyConfig {
            upstream: upstream.into(),
            policy,
            reverify_every: DEFAULT_REVERIFY,
            retry_failed_after: DEFAULT_RETRY_FAILED,
            max_body: DEFAULT_MAX_BODY,
            tls: ClientTls::default(),
            now: Arc::new(SystemTime::now),
        }
    }
}

/// Why a proxy could not be set up.
#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("the policy accepts `sim` and its file has no [endorsements] section with sim_trust_anchors: cannot verify sim evidence")]
    NoEndorsements,
    #[error("upstream {0:?} is not an http:// or https:// URL")]
    Upstream(String),
    #[error("the re-verification and retry intervals must be at least one second")]
    Interval,
}

/// Whether the runtime is verified now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyState {
    /// No verification has been tried yet.
    Unverified,
    /// The pinned key belongs to a runtime whose evidence verified and appraised.
    Verified,
    /// The last verification failed; requests are refused.
    Failed,
}

/// Counters since the proxy started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests that reached the runtime and came back with its (decrypted) answer.
    pub requests_forwarded: u64,
    /// Requests refused because the runtime was not verified (nothing sent).
    pub requests_refused: u64,
    pub verifications_ok: u64,
    pub verifications_failed: u64,
    /// Verifications that pinned a key other than the one pinned before.
    pub key_changes: u64,
}

/// `GET /cordon/v1/status`: what was verified, when, and what went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    pub upstream: String,
    pub state: ProxyState,
    /// The verified platform (`null` unless verified).
    pub platform: Option<Platform>,
    /// True when the verified runtime is not hardware-backed: it runs in the simulated TEE, or on
    /// an emulated SNP/TDX platform (then `is_emulated` is true as well).
    pub is_simulated: Option<bool>,
    /// True when the verified runtime's evidence is emulated (a hardware format signed by a test
    /// root the policy names).
    pub is_emulated: Option<bool>,
    /// The verified claims without the raw evidence fields, plus their digest.
    pub claims: Option<serde_json::Value>,
    /// The pinned HPKE public key (hex) that requests are encrypted to.
    pub hpke_public_key: Option<String>,
    pub hpke_key_id: Option<u8>,
    pub signing_public_key: Option<String>,
    /// The policy applied (reference values hex).
    pub policy: serde_json::Value,
    /// One-line summary of the policy.
    pub policy_summary: String,
    /// RFC 3339, UTC.
    pub verified_at: Option<String>,
    /// When the next verification is due (RFC 3339, UTC).
    pub next_verification: Option<String>,
    pub reverify_secs: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub counters: Counters,
}

/// A running proxy's shared state. Cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

struct Shared {
    config: ProxyConfig,
    upstream: String,
    endorsements: Endorsements,
    state: RwLock<VerifyState>,
    /// One verification at a time: requests that meet a stale or rejected key wait for the same one.
    verify_lock: tokio::sync::Mutex<()>,
    /// Signalled after every verification, so the background task recomputes its schedule.
    verified: tokio::sync::Notify,
    counters: AtomicCounters,
    /// Idle sessions (session mode) with the pinned runtime; one request uses a session at a
    /// time, so its sequence numbers arrive in order.
    sessions: std::sync::Mutex<SessionPool>,
}

/// Sessions are only valid for the runtime key they were opened with.
#[derive(Default)]
struct SessionPool {
    key: [u8; 32],
    idle: Vec<Session>,
}

/// Idle sessions kept per proxy; more concurrent requests open more, which expire unused.
const MAX_IDLE_SESSIONS: usize = 64;

#[derive(Default)]
struct AtomicCounters {
    requests_forwarded: AtomicU64,
    requests_refused: AtomicU64,
    verifications_ok: AtomicU64,
    verifications_failed: AtomicU64,
    key_changes: AtomicU64,
}

enum Current {
    Unverified,
    Verified(Arc<VerifiedRuntime>),
    Failed(String),
}

struct VerifyState {
    current: Current,
    /// The key pinned by the last successful verification, kept through failures so a key change
    /// is counted even when the runtime was unreachable in between.
    last_pinned: Option<[u8; 32]>,
    last_attempt_at: Option<SystemTime>,
    last_error: Option<(String, SystemTime)>,
}

/// Why a request was not answered by the runtime.
enum Refusal {
    /// The runtime is not verified; nothing was sent.
    NotVerified(String),
    /// The runtime was verified, but the exchange with it failed.
    Upstream(ClientError),
}

impl Proxy {
    /// Sets up a proxy; nothing is contacted until [`Proxy::verify_now`] or the first request.
    pub fn new(config: ProxyConfig) -> Result<Proxy, ProxyError> {
        let endorsements = config
            .policy
            .verification_endorsements()
            .ok_or(ProxyError::NoEndorsements)?;
        let upstream = config.upstream.trim_end_matches('/').to_string();
        if !(upstream.starts_with("http://") || upstream.starts_with("https://")) {
            return Err(ProxyError::Upstream(config.upstream.clone()));
        }
        // Shorter intervals would let the background task hammer the runtime.
        if config.reverify_every < Duration::from_secs(1)
            || config.retry_failed_after < Duration::from_secs(1)
        {
            return Err(ProxyError::Interval);
        }
        Ok(Proxy {
            shared: Arc::new(Shared {
                config,
                upstream,
                endorsements,
                state: RwLock::new(VerifyState {
                    current: Current::Unverified,
                    last_pinned: None,
                    last_attempt_at: None,
                    last_error: None,
                }),
                verify_lock: tokio::sync::Mutex::new(()),
                verified: tokio::sync::Notify::new(),
                counters: AtomicCounters::default(),
                sessions: std::sync::Mutex::new(SessionPool::default()),
            }),
        })
    }

    /// Verifies the runtime now with a fresh nonce and pins its key; on failure the proxy refuses
    /// every request until a later verification succeeds.
    pub async fn verify_now(&self) -> Result<VerifiedRuntime, ClientError> {
        let _guard = self.shared.verify_lock.lock().await;
        self.verify_locked().await.map(|rt| (*rt).clone())
    }

    /// The proxy's routes: the OIP surface and `/cordon/v1/status`.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Re-verifies in the background: when the last verification is `reverify_every` old, or
    /// `retry_failed_after` after a failure. Abort the handle to stop it.
    pub fn spawn_reverifier(&self) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move {
            loop {
                let wait = proxy.until_next_verification();
                if !wait.is_zero() {
                    // A verification prompted by a request moves the schedule: wait again.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = proxy.shared.verified.notified() => continue,
                    }
                }
                let _guard = proxy.shared.verify_lock.lock().await;
                // A request may have verified while this task waited for the lock.
                if proxy.until_next_verification().is_zero() {
                    let _ = proxy.verify_locked().await;
                }
            }
        })
    }

    /// Serves on `listener` with the background re-verifier until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.serve_with_tls(listener, None, shutdown).await
    }

    /// [`Proxy::serve`], over TLS towards the application when `tls` is given.
    pub async fn serve_with_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<cordon_http::ServerTls>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let reverifier = self.spawn_reverifier();
        // Connection cap, header and request deadlines, no Nagle delay (cordon-http).
        let result = cordon_http::serve_with_tls(
            listener,
            self.router(),
            cordon_http::ServerLimits::default(),
            tls,
            shutdown,
        )
        .await;
        reverifier.abort();
        result
    }

    /// A snapshot for `GET /cordon/v1/status`.
    pub fn status(&self) -> ProxyStatus {
        let s = &self.shared;
        let cfg = &s.config;
        let state = self.read();
        let (proxy_state, verified) = match &state.current {
            Current::Unverified => (ProxyState::Unverified, None),
            Current::Verified(rt) => (ProxyState::Verified, Some(rt.clone())),
            Current::Failed(_) => (ProxyState::Failed, None),
        };
        let next = match &verified {
            Some(rt) => rt.verified_at().checked_add(cfg.reverify_every),
            None => state
                .last_attempt_at
                .and_then(|t| t.checked_add(cfg.retry_failed_after)),
        };
        let claims = verified.as_ref().map(|rt| claims_json(rt.claims()));
        ProxyStatus {
            upstream: s.upstream.clone(),
            state: proxy_state,
            platform: verified.as_ref().map(|rt| rt.claims().platform),
            // Not hardware-backed: the simulated TEE, or an emulated SNP/TDX platform.
            is_simulated: verified.as_ref().map(|rt| !rt.claims().hardware_backed),
            is_emulated: verified.as_ref().map(|rt| rt.claims().is_emulated()),
            claims,
            hpke_public_key: verified
                .as_ref()
                .map(|rt| hex::encode(rt.keys().hpke_public_key)),
            hpke_key_id: verified.as_ref().map(|rt| rt.keys().hpke_key_id),
            signing_public_key: verified
                .as_ref()
                .map(|rt| hex::encode(rt.keys().signing_public_key)),
            policy: serde_json::to_value(&cfg.policy.policy).unwrap_or(serde_json::Value::Null),
            policy_summary: policy_summary(&cfg.policy.policy, &s.endorsements),
            verified_at: verified.as_ref().map(|rt| rfc3339(rt.verified_at())),
            next_verification: next.map(rfc3339),
            reverify_secs: cfg.reverify_every.as_secs(),
            last_error: state.last_error.as_ref().map(|(e, _)| e.clone()),
            last_error_at: state.last_error.as_ref().map(|(_, t)| rfc3339(*t)),
            counters: self.counters(),
        }
    }

    /// The counters alone.
    pub fn counters(&self) -> Counters {
        let c = &self.shared.counters;
        Counters {
            requests_forwarded: c.requests_forwarded.load(Ordering::Relaxed),
            requests_refused: c.requests_refused.load(Ordering::Relaxed),
            verifications_ok: c.verifications_ok.load(Ordering::Relaxed),
            verifications_failed: c.verifications_failed.load(Ordering::Relaxed),
            key_changes: c.key_changes.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> SystemTime {
        (self.shared.config.now)()
    }

    // The state is only ever read or replaced whole; a panic while holding the lock cannot leave
    // it half-written, so a poisoned lock is still usable.
    fn read(&self) -> RwLockReadGuard<'_, VerifyState> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, VerifyState> {
        self.shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Time until the next verification is due (zero when due now).
    fn until_next_verification(&self) -> Duration {
        let cfg = &self.shared.config;
        let now = self.now();
        let state = self.read();
        let due = match (&state.current, state.last_attempt_at) {
            (Current::Verified(rt), _) => rt.verified_at().checked_add(cfg.reverify_every),
            (Current::Failed(_), Some(at)) => at.checked_add(cfg.retry_failed_after),
            (Current::Failed(_), None) => Some(now),
            // The first verification is on demand (`verify_now` or the first request); the
            // schedule takes over from there.
            (Current::Unverified, _) => now.checked_add(cfg.reverify_every),
        };
        due.and_then(|d| d.duration_since(now).ok())
            .unwrap_or(Duration::ZERO)
    }

    /// Verifies and records the outcome. The caller holds `verify_lock`.
    async fn verify_locked(&self) -> Result<Arc<VerifiedRuntime>, ClientError> {
        let s = &self.shared;
        let now = self.now();
        self.write().last_attempt_at = Some(now);
        let result = connect_with_tls(
            &s.upstream,
            &s.config.policy.policy,
            &s.endorsements,
            &s.config.tls,
            now,
        )
        .await;
        let outcome = self.record(result, now);
        // After the state is written, so the background task reads the new schedule.
        s.verified.notify_one();
        outcome
    }

    fn record(
        &self,
        result: Result<VerifiedRuntime, ClientError>,
        now: SystemTime,
    ) -> Result<Arc<VerifiedRuntime>, ClientError> {
        let s = &self.shared;
        let mut state = self.write();
        match result {
            Ok(rt) => {
                let rt = Arc::new(rt);
                let key = rt.keys().hpke_public_key;
                s.counters.verifications_ok.fetch_add(1, Ordering::Relaxed);
                if state.last_pinned.is_some_and(|old| old != key) {
                    s.counters.key_changes.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(upstream = %s.upstream, hpke_public_key = %hex::encode(key), "runtime key changed; new key verified and pinned");
                }
                tracing::info!(
                    upstream = %s.upstream,
                    platform = %rt.claims().platform,
                    simulated = rt.claims().platform == Platform::Sim,
                    emulated = rt.claims().is_emulated(),
                    launch_measurement = %hex::encode(&rt.claims().launch_measurement),
                    "runtime verified"
                );
                state.last_pinned = Some(key);
                state.current = Current::Verified(rt.clone());
                Ok(rt)
            }
            Err(e) => {
                s.counters
                    .verifications_failed
                    .fetch_add(1, Ordering::Relaxed);
                let reason = e.to_string();
                tracing::warn!(upstream = %s.upstream, error = %reason, "runtime verification failed; refusing requests");
                state.last_error = Some((reason.clone(), now));
                state.current = Current::Failed(reason);
                Err(e)
            }
        }
    }

    /// The verified runtime to send a request to, verifying first when there is none or the last
    /// verification is too old. Never returns an unverified runtime.
    async fn runtime_for_request(&self) -> Result<Arc<VerifiedRuntime>, Refusal> {
        if let Some(ready) = self.usable_now() {
            return ready;
        }
        let _guard = self.shared.verify_lock.lock().await;
        // Another request may have verified (or failed) while this one waited for the lock.
        if let Some(ready) = self.usable_now() {
            return ready;
        }
        self.verify_locked()
            .await
            .map_err(|e| Refusal::NotVerified(e.to_string()))
    }

    /// `Some(Ok)` when the pinned runtime is fresh, `Some(Err)` when a failure is recent enough
    /// not to try again, `None` when a verification is due.
    fn usable_now(&self) -> Option<Result<Arc<VerifiedRuntime>, Refusal>> {
        let cfg = &self.shared.config;
        let now = self.now();
        let state = self.read();
        match &state.current {
            Current::Verified(rt) => {
                // A clock that went backwards counts as stale: verify again rather than trust.
                let fresh = now
                    .duration_since(rt.verified_at())
                    .is_ok_and(|age| age < cfg.reverify_every);
                fresh.then(|| Ok(rt.clone()))
            }
            Current::Failed(reason) => {
                let recent = state.last_attempt_at.is_some_and(|at| {
                    now.duration_since(at)
                        .is_ok_and(|age| age < cfg.retry_failed_after)
                });
                recent.then(|| Err(Refusal::NotVerified(reason.clone())))
            }
            Current::Unverified => None,
        }
    }

    /// After `stale` could not decrypt a request: verify again (once for all requests that met the
    /// same key) and return the runtime to retry with, if its key is verified and new.
    async fn reverify_after_rejection(
        &self,
        stale: &Arc<VerifiedRuntime>,
        rejection: ClientError,
    ) -> Result<Arc<VerifiedRuntime>, Refusal> {
        let _guard = self.shared.verify_lock.lock().await;
        match &self.read().current {
            Current::Verified(rt) if !Arc::ptr_eq(rt, stale) => return Ok(rt.clone()),
            Current::Failed(reason) => return Err(Refusal::NotVerified(reason.clone())),
            _ => {}
        }
        tracing::info!(upstream = %self.shared.upstream, "runtime could not decrypt a request to the pinned key; verifying again");
        let fresh = self
            .verify_locked()
            .await
            .map_err(|e| Refusal::NotVerified(e.to_string()))?;
        if fresh.keys().hpke_public_key == stale.keys().hpke_public_key {
            // Same key, still refused: sending again would only fail again.
            return Err(Refusal::Upstream(rejection));
        }
        Ok(fresh)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, SessionPool> {
        // The pool holds only sessions; a poisoned lock still holds valid ones.
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// An idle session with `rt`, or a new one; `None` when none can be opened (the caller then
    /// sends one-shot, which also detects a changed key).
    async fn take_session(&self, rt: &VerifiedRuntime) -> Option<Session> {
        let key = rt.keys().hpke_public_key;
        let now = self.now();
        {
            let mut pool = self.pool();
            if pool.key != key {
                pool.idle.clear();
                pool.key = key;
            }
            while let Some(s) = pool.idle.pop() {
                if !s.is_spent(now) {
                    return Some(s);
                }
            }
        }
        rt.open_session().await.ok()
    }

    fn return_session(&self, rt: &VerifiedRuntime, session: Session) {
        let mut pool = self.pool();
        if pool.key == rt.keys().hpke_public_key && pool.idle.len() < MAX_IDLE_SESSIONS {
            pool.idle.push(session);
        }
    }

    /// Sends one OIP request to the verified runtime ([`Proxy::forward_once`]). A runtime from
    /// before bodies travelled as bytes (docs/protocol.md §7.4) answers an infer body sent that way
    /// with 400 `inner request is not valid JSON…`, having run nothing: the body then goes once
    /// more as the JSON tree it used to take, so that a proxy can be upgraded before its runtime.
    async fn forward(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> Result<InnerResponse, Refusal> {
        let raw = match &body {
            Some(Payload::Raw(raw)) => Some(raw.clone()),
            _ => None,
        };
        let resp = self
            .forward_once(method, path, body)
            .await?
            .into_whole()
            .await
            .map_err(Refusal::Upstream)?;
        let older_runtime = resp.status == 400
            && resp
                .body
                .get("error")
                .and_then(|e| e.as_str())
                .is_some_and(|e| e.starts_with(OLDER_RUNTIME_REFUSAL));
        let Some(raw) = raw.filter(|_| older_runtime) else {
            return Ok(resp);
        };
        let limit = self.shared.config.max_body;
        match raw.as_tree(limit) {
            Ok(tree) => {
                tracing::debug!("the runtime takes no bodies as bytes: sent as a JSON tree");
                let again = move || raw.as_tree(limit);
                self.forward_once(method, path, Some(Payload::new(tree, again)))
                    .await?
                    .into_whole()
                    .await
                    .map_err(Refusal::Upstream)
            }
            // Too large as a tree, or not decodable: the older runtime's answer stands.
            Err(_) => Ok(resp),
        }
    }

    /// Sends one OIP request to the verified runtime, in session mode when a session can be had,
    /// re-verifying and retrying once if the runtime's key changed.
    async fn forward_once(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> Result<Reply, Refusal> {
        let rt = self.runtime_for_request().await?;
        let request = |body: Option<Sent>| {
            let mut inner = InnerRequest {
                method: method.into(),
                path: path.into(),
                ..InnerRequest::default()
            };
            match body {
                Some(Sent::Json(v)) => inner.body = Some(v),
                Some(Sent::Raw(raw)) => raw.put_into(&mut inner),
                None => {}
            }
            inner
        };
        let (mut first, again) = match body {
            Some(Payload::Json { parsed, again }) => (Some(Sent::Json(parsed)), Some(again)),
            Some(Payload::Raw(raw)) => (
                Some(Sent::Raw(raw.clone())),
                Some(Box::new(move || Ok(Sent::Raw(raw.clone()))) as Remake),
            ),
            None => (None, None),
        };
        // Made again rather than cloned up front: only a second sending pays for it.
        let remake = || match &again {
            Some(again) => again().map(Some).map_err(|e| {
                Refusal::Upstream(ClientError::Malformed(format!("request body: {e}")))
            }),
            None => Ok(None),
        };
        if let Some(session) = self.take_session(&rt).await {
            match session.send_reply(request(first.take())).await {
                Ok(resp) => {
                    self.return_session(&rt, session);
                    return Ok(resp);
                }
                // The runtime no longer knows the session (a restart) or it expired: send
                // one-shot instead, which re-verifies if the key changed. A plaintext refusal is
                // unauthenticated, so a host could forge one after delivering the message; then
                // the request runs twice, which the OIP surface forwarded here (metadata, health,
                // inference) tolerates: none of it changes state. A 409 (replayed or reordered)
                // cannot happen to a session used by one request at a time unless someone
                // interferes: it fails the request instead of retrying.
                Err(ClientError::SessionClosed { .. }) => {}
                Err(e) => return Err(Refusal::Upstream(e)),
            }
            first = remake()?;
        }
        let result = match rt.send_reply(request(first)).await {
            Err(e @ ClientError::NotDecrypted { .. }) => {
                let fresh = self.reverify_after_rejection(&rt, e).await?;
                fresh.send_reply(request(remake()?)).await
            }
            other => other,
        };
        result.map_err(Refusal::Upstream)
    }
}

/// How a runtime from before framed inner messages refuses one: it reads the plaintext as JSON.
const OLDER_RUNTIME_REFUSAL: &str = "inner request is not valid JSON for a Cordon request";

/// How a body is made again should a request go out a second time.
type Remake = Box<dyn Fn() -> Result<Sent, String> + Send + Sync>;

/// A request body as it goes into the channel.
pub(crate) enum Sent {
    Json(serde_json::Value),
    Raw(RawBody),
}

/// A body that goes into the channel as the bytes received (the runtime decodes or parses it).
#[derive(Clone)]
pub(crate) enum RawBody {
    /// The binary tensor data extension's body and its JSON header's length.
    Binary { header_len: usize, bytes: Bytes },
    /// A JSON body, checked to be JSON.
    Json(Bytes),
}

impl RawBody {
    /// Puts the body and the header that says what it is into an inner request.
    fn put_into(&self, inner: &mut InnerRequest) {
        let (name, value, bytes) = match self {
            RawBody::Binary { header_len, bytes } => (
                INFERENCE_HEADER_CONTENT_LENGTH,
                header_len.to_string(),
                bytes,
            ),
            RawBody::Json(bytes) => (CONTENT_TYPE_HEADER, JSON_MEDIA_TYPE.to_string(), bytes),
        };
        inner.headers.insert(name.to_string(), value);
        inner.raw_body = Some(bytes.to_vec());
    }

    /// The body as a JSON tree, for a runtime from before bodies as bytes; refused when its JSON
    /// would exceed `limit` bytes.
    fn as_tree(&self, limit: usize) -> Result<serde_json::Value, String> {
        match self {
            RawBody::Binary { header_len, bytes } => {
                oip_binary::decode_request(bytes, *header_len, limit).map_err(|e| e.to_string())
            }
            RawBody::Json(bytes) => oip::parse_json_body(bytes).map_err(|e| e.to_string()),
        }
    }
}

/// An infer body. JSON (the gRPC surface's typed contents): its value, sent by value, and how to
/// make that value again should the request go out a second time (a closed session, a runtime
/// whose key changed), from the gRPC message, never from a copy made up front. Raw (the binary
/// tensor data extension, or JSON as received): the body as received, which goes into the channel
/// unchanged.
pub(crate) enum Payload {
    Json {
        parsed: serde_json::Value,
        again: Remake,
    },
    Raw(RawBody),
}

impl Payload {
    pub(crate) fn new(
        parsed: serde_json::Value,
        again: impl Fn() -> Result<serde_json::Value, String> + Send + Sync + 'static,
    ) -> Payload {
        Payload::Json {
            parsed,
            again: Box::new(move || again().map(Sent::Json)),
        }
    }
}

fn claims_json(claims: &Claims) -> serde_json::Value {
    let mut v = serde_json::to_value(claims).unwrap_or(serde_json::Value::Null);
    if let Some(map) = v.as_object_mut() {
        // Every parsed evidence field: too much for a status page; `cordon attest inspect` shows it.
        map.remove("raw");
        map.insert(
            "claims_digest".into(),
            serde_json::Value::String(hex::encode(claims.digest())),
        );
    }
    v
}

fn policy_summary(p: &Policy, e: &Endorsements) -> String {
    let platforms: Vec<String> = p.platforms.iter().map(|p| p.to_string()).collect();
    format!(
        "platforms [{}], {} launch measurement(s), debug {}, workload data {}, {} sim trust anchor(s){}",
        platforms.join(", "),
        p.launch_measurements.len(),
        if p.allow_debug { "allowed" } else { "refused" },
        if p.workload_data.is_some() {
            "pinned"
        } else {
            "any"
        },
        e.sim_trust_anchors.len(),
        if e.emulated_roots.is_empty() {
            String::new()
        } else {
            format!(
                ", {} EMULATED root(s) (NOT hardware-backed)",
                e.emulated_roots.len()
            )
        }
    )
}

/// RFC 3339 in UTC, to the second. Checked conversions: a clock far outside the calendar's range
/// gives its debug form rather than a panic.
fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{t:?}"))
}

/// An Open Inference Protocol endpoint, matched on the raw path's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ServerMetadata,
    ServerLive,
    ServerReady,
    ModelMetadata,
    ModelReady,
    Infer,
    RepositoryIndex,
}

impl Endpoint {
    fn method(self) -> Method {
        match self {
            Endpoint::Infer | Endpoint::RepositoryIndex => Method::POST,
            _ => Method::GET,
        }
    }
}

/// Matches an OIP path (one trailing `/` allowed, as the OpenAPI form `/v2/` has it) and returns
/// the endpoint and the path to forward. Segments are passed on as they came (no percent-decoding),
/// so the runtime sees the name the client sent.
fn match_oip(path: &str) -> Option<(Endpoint, String)> {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let rest = trimmed.strip_prefix('/')?;
    let segs: Vec<&str> = rest.split('/').collect();
    if segs.iter().any(|s| s.is_empty()) {
        return None;
    }
    let endpoint = match segs.as_slice() {
        ["v2"] => Endpoint::ServerMetadata,
        ["v2", "health", "live"] => Endpoint::ServerLive,
        ["v2", "health", "ready"] => Endpoint::ServerReady,
        ["v2", "repository", "index"] => Endpoint::RepositoryIndex,
        ["v2", "models", _] | ["v2", "models", _, "versions", _] => Endpoint::ModelMetadata,
        ["v2", "models", _, "ready"] | ["v2", "models", _, "versions", _, "ready"] => {
            Endpoint::ModelReady
        }
        ["v2", "models", _, "infer"] | ["v2", "models", _, "versions", _, "infer"] => {
            Endpoint::Infer
        }
        _ => return None,
    };
    Some((endpoint, format!("/{}", segs.join("/"))))
}

fn oip_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn method_not_allowed(allowed: &Method, method: &Method, path: &str) -> Response {
    let mut resp = oip_error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {path}; use {allowed}"),
    );
    let allow = if *allowed == Method::GET {
        "GET, HEAD"
    } else {
        "POST"
    };
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

enum BodyError {
    TooLarge,
    Read(String),
}

/// Reads at most `limit` bytes. A larger body is drained (up to [`DRAIN_LIMIT`]) so the client
/// reads the 413 rather than a connection reset while it is still sending.
async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    // Sized once from Content-Length (within the limit): no regrowing and recopying of a large body.
    let announced =
        usize::try_from(axum::body::HttpBody::size_hint(&body).lower()).unwrap_or(usize::MAX);
    let mut buf = Vec::with_capacity(announced.min(limit));
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= limit {
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(buf))
}

async fn handle(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    if path == "/cordon/v1/status" {
        return match method {
            Method::GET | Method::HEAD => Json(proxy.status()).into_response(),
            _ => method_not_allowed(&Method::GET, &method, path),
        };
    }
    if let Some(route) = match_openai(path) {
        return openai_route(&proxy, route, method, body).await;
    }
    let Some((endpoint, forward_path)) = match_oip(path) else {
        tracing::debug!(%method, path, "no such endpoint");
        return oip_error(
            StatusCode::NOT_FOUND,
            format!("no Open Inference Protocol endpoint {method} {path} (cordon proxy)"),
        );
    };
    let allowed = endpoint.method();
    // HEAD is GET without a body (RFC 9110); hyper leaves the body out of the answer.
    let effective = if method == Method::HEAD && allowed == Method::GET {
        Method::GET
    } else {
        method.clone()
    };
    if effective != allowed {
        return method_not_allowed(&allowed, &method, path);
    }
    let body = if endpoint == Endpoint::Infer {
        match infer_body(&proxy, &headers, body).await {
            Ok(b) => Some(b),
            Err(resp) => return resp,
        }
    } else {
        None
    };
    let response = match proxy.forward(effective.as_str(), &forward_path, body).await {
        Ok(inner) => {
            proxy
                .shared
                .counters
                .requests_forwarded
                .fetch_add(1, Ordering::Relaxed);
            match StatusCode::from_u16(inner.status) {
                // Binary outputs, asked for by a binary or a JSON request: the runtime's answer in
                // the binary extension's form, passed on.
                Ok(StatusCode::OK) if inner.raw_body.is_some() => raw_response(inner),
                Ok(status) => with_retry_after(json_answer(status, &inner.body)),
                Err(_) => oip_error(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "cordon proxy: the runtime answered with an invalid status {}",
                        inner.status
                    ),
                ),
            }
        }
        Err(refusal) => refusal_response(&proxy, refusal),
    };
    tracing::debug!(%method, path, status = response.status().as_u16(), "request");
    response
}

/// An OpenAI API route the proxy forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenAiRoute {
    ChatCompletions,
    Models,
}

fn match_openai(path: &str) -> Option<OpenAiRoute> {
    match path.strip_suffix('/').unwrap_or(path) {
        openai::CHAT_COMPLETIONS_PATH => Some(OpenAiRoute::ChatCompletions),
        openai::MODELS_PATH => Some(OpenAiRoute::Models),
        _ => None,
    }
}

/// An error in the OpenAI API's shape (its clients read `error.message`).
fn openai_error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (status, Json(openai::error_body(&message.into(), kind))).into_response()
}

/// `GET /v1/models` and `POST /v1/chat/completions`, forwarded into the channel. A streamed
/// completion comes back as a sealed stream and leaves here as server-sent events, each piece
/// passed on once it authenticated: a stream the host cut, reordered or altered ends with an
/// error event and an aborted connection, never with a clean end.
async fn openai_route(proxy: &Proxy, route: OpenAiRoute, method: Method, body: Body) -> Response {
    let (allowed, path) = match route {
        OpenAiRoute::Models => (Method::GET, openai::MODELS_PATH),
        OpenAiRoute::ChatCompletions => (Method::POST, openai::CHAT_COMPLETIONS_PATH),
    };
    let effective = if method == Method::HEAD && allowed == Method::GET {
        Method::GET
    } else {
        method.clone()
    };
    if effective != allowed {
        return method_not_allowed(&allowed, &method, path);
    }
    let payload = match route {
        OpenAiRoute::Models => None,
        OpenAiRoute::ChatCompletions => {
            let limit = proxy.shared.config.max_body;
            let bytes = match read_body(body, limit).await {
                Ok(b) => b,
                Err(BodyError::TooLarge) => {
                    return openai_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body exceeds the limit of {limit} bytes"),
                    )
                }
                Err(BodyError::Read(e)) => {
                    return openai_error(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body: {e}"),
                    )
                }
            };
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
                return openai_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "chat completion request is not valid JSON: {:?} error at line {} column {}",
                        e.classify(),
                        e.line(),
                        e.column()
                    ),
                );
            }
            Some(Payload::Raw(RawBody::Json(bytes)))
        }
    };
    let reply = match proxy.forward_once(effective.as_str(), path, payload).await {
        Ok(reply) => reply,
        Err(refusal) => {
            let (status, message) = refusal_status(proxy, refusal);
            return openai_error(status, message);
        }
    };
    proxy
        .shared
        .counters
        .requests_forwarded
        .fetch_add(1, Ordering::Relaxed);
    match reply {
        // A completion: the exact bytes the runtime signed, and its signature as a header.
        Reply::Whole(inner) if inner.status == 200 && inner.raw_body.is_some() => {
            let signature = inner
                .headers
                .get(openai::SIGNATURE_HEADER)
                .and_then(|v| HeaderValue::from_str(v).ok());
            let mut resp = (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                inner.raw_body.unwrap_or_default(),
            )
                .into_response();
            if let Some(signature) = signature {
                resp.headers_mut()
                    .insert(HeaderName::from_static(openai::SIGNATURE_HEADER), signature);
            }
            resp
        }
        Reply::Whole(inner) => match StatusCode::from_u16(inner.status) {
            Ok(status) => with_retry_after((status, Json(inner.body)).into_response()),
            Err(_) => openai_error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cordon proxy: the runtime answered with an invalid status {}",
                    inner.status
                ),
            ),
        },
        Reply::Stream(stream) => event_stream(stream),
    }
}

/// Server-sent events out of a sealed stream, piece by piece.
fn event_stream(mut stream: Box<ReplyStream>) -> Response {
    let status = StatusCode::from_u16(stream.head().status).unwrap_or(StatusCode::BAD_GATEWAY);
    let (tx, body) = cordon_http::ChannelBody::channel(4);
    tokio::spawn(async move {
        loop {
            match stream.next_piece().await {
                Ok(Some(piece)) => {
                    if tx.send(Ok(Bytes::from(piece.to_vec()))).await.is_err() {
                        return; // the client left
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "streamed answer refused");
                    let event = openai::sse_event(
                        &openai::error_body(&format!("cordon proxy: {e}"), "server_error")
                            .to_string(),
                    );
                    let _ = tx.send(Ok(Bytes::from(event))).await;
                    // Let the connection write the event before it is aborted: hyper drops what
                    // it has buffered when the body fails, and flushes when the body has
                    // nothing ready.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
        }
    });
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(openai::EVENT_STREAM_MEDIA_TYPE),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::new(body),
    )
        .into_response()
}

/// A JSON answer, NaN and infinities of float outputs written as Triton writes them
/// (`oip::response_json`).
fn json_answer(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        oip::response_json(body),
    )
        .into_response()
}

/// Bytes an inner request adds around a body it carries as bytes (method, path, headers, time
/// stamp, framing, the AEAD's), for any usual path: what the proxy allows for when it checks a body
/// against the limit before sending it. The runtime's own limit stays the authority (a 413 from it
/// is passed on).
pub(crate) const INNER_OVERHEAD: usize = 512;

/// A binary-extension answer of the runtime, passed on as it came (its JSON header's length and
/// the body), once its sizes are checked to add up.
fn raw_response(inner: InnerResponse) -> Response {
    let header_len = inner
        .binary_header_length()
        .and_then(|v| v.parse::<usize>().ok());
    match (header_len, inner.raw_body) {
        (Some(header_len), Some(bytes))
            if oip_binary::split_response(&bytes, header_len).is_ok() =>
        {
            (
                StatusCode::OK,
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    ),
                    (
                        HeaderName::from_static(INFERENCE_HEADER_CONTENT_LENGTH),
                        HeaderValue::from(header_len),
                    ),
                ],
                bytes,
            )
                .into_response()
        }
        _ => oip_error(
            StatusCode::BAD_GATEWAY,
            "cordon proxy: the runtime's binary answer is malformed (its header length or its \
             outputs' sizes do not add up)",
        ),
    }
}

/// Reads and checks an infer body: within the limit, JSON. Answers the client itself otherwise.
async fn infer_body(proxy: &Proxy, headers: &HeaderMap, body: Body) -> Result<Payload, Response> {
    let limit = proxy.shared.config.max_body;
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(oip_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds the limit of {limit} bytes"),
            ))
        }
        Err(BodyError::Read(e)) => {
            return Err(oip_error(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            ))
        }
    };
    // The binary tensor data extension (what the standard clients send by default): a JSON
    // header, then raw tensor bytes. It becomes the JSON request the channel carries.
    if let Some(header_len) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) {
        let Some(header_len) = header_len
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        else {
            return Err(oip_error(
                StatusCode::BAD_REQUEST,
                "Inference-Header-Content-Length is not a byte count",
            ));
        };
        // Inside the channel the body travels framed, as it is, after a small JSON part: refused
        // here when that cannot fit the channel's limit, before anything is sent.
        let inner_size = bytes.len().saturating_add(INNER_OVERHEAD);
        if inner_size > limit {
            return Err(oip_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                oip_binary::BinaryError::TooLarge {
                    binary: bytes.len(),
                    json: inner_size,
                    limit,
                }
                .to_string(),
            ));
        }
        // Checked here so that a malformed body is answered without a round trip (and with the
        // same words as the runtime would use); the bytes go on unchanged.
        return match oip_binary::split_request(&bytes, header_len) {
            Ok(_) => Ok(Payload::Raw(RawBody::Binary { header_len, bytes })),
            Err(e) => Err(oip_error(StatusCode::BAD_REQUEST, e.to_string())),
        };
    }
    if bytes.is_empty() {
        return Err(oip_error(
            StatusCode::BAD_REQUEST,
            "inference request needs a JSON body",
        ));
    }
    // Checked to be JSON here (no tree is built: `IgnoredAny`), so that a malformed body is
    // answered without a round trip; the bytes go on unchanged and the runtime parses them once.
    let check = |b: &[u8]| serde_json::from_slice::<serde::de::IgnoredAny>(b).map(|_| ());
    let checked = check(&bytes).or_else(|e| match oip::quote_non_finite_literals(&bytes) {
        Some(quoted) => check(&quoted),
        None => Err(e),
    });
    match checked {
        Ok(()) => Ok(Payload::Raw(RawBody::Json(bytes))),
        // serde's messages may quote the input; position and class are enough to find the fault.
        Err(e) => Err(oip_error(
            StatusCode::BAD_REQUEST,
            format!(
                "inference request is not valid JSON: {:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        )),
    }
}

fn refusal_response(proxy: &Proxy, refusal: Refusal) -> Response {
    let not_verified = matches!(refusal, Refusal::NotVerified(_));
    let (status, message) = refusal_status(proxy, refusal);
    let mut resp = oip_error(status, message);
    if not_verified {
        let retry = proxy.until_next_verification().as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    } else {
        with_retry_after(resp)
    }
}

/// The status and message a refusal is answered with (both surfaces), counted and remembered.
fn refusal_status(proxy: &Proxy, refusal: Refusal) -> (StatusCode, String) {
    let upstream = &proxy.shared.upstream;
    match refusal {
        Refusal::NotVerified(reason) => {
            proxy
                .shared
                .counters
                .requests_refused
                .fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cordon proxy: the runtime at {upstream} is not verified, so nothing was sent to it: {reason}"),
            )
        }
        Refusal::Upstream(e) => {
            // Statuses the runtime sets on the outer request keep their meaning for the client
            // (too large, overloaded); anything else is the gateway's failure.
            let status = match &e {
                ClientError::Server { status, .. } if matches!(status, 413 | 429 | 503) => {
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
                }
                _ => StatusCode::BAD_GATEWAY,
            };
            let mut state = proxy.write();
            state.last_error = Some((e.to_string(), proxy.now()));
            drop(state);
            (status, format!("cordon proxy: runtime at {upstream}: {e}"))
        }
    }
}

impl Proxy {
    /// One Open Inference Protocol request (REST form) forwarded as the HTTP surface forwards it,
    /// for the gRPC surface: the runtime's answer, or the proxy's own refusal as a status and
    /// `{"error": ...}`. Counted like the HTTP surface's requests.
    pub(crate) async fn forward_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> InnerResponse {
        match self.forward(method, path, body).await {
            Ok(inner) => {
                self.shared
                    .counters
                    .requests_forwarded
                    .fetch_add(1, Ordering::Relaxed);
                inner
            }
            Err(refusal) => {
                let (status, message) = refusal_status(self, refusal);
                InnerResponse::json(status.as_u16(), serde_json::json!({ "error": message }))
            }
        }
    }

    /// The largest request body this proxy forwards, in bytes.
    pub(crate) fn max_body(&self) -> usize {
        self.shared.config.max_body
    }
}

/// Seconds an overloaded runtime asks clients to wait (docs/protocol.md §8.5).
const RUNTIME_RETRY_AFTER_S: u64 = 1;

/// A 429 or 503 from the runtime, inside the channel or outside it, reaches the client with
/// `Retry-After`, as the runtime sent it; the encrypted inner answer has no headers to copy.
fn with_retry_after(mut resp: Response) -> Response {
    let status = resp.status();
    if (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
        && !resp.headers().contains_key(header::RETRY_AFTER)
    {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RUNTIME_RETRY_AFTER_S),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_oip_path_is_matched_with_and_without_versions() {
        let cases = [
            ("/v2", Endpoint::ServerMetadata, "/v2"),
            ("/v2/", Endpoint::ServerMetadata, "/v2"),
            ("/v2/health/live", Endpoint::ServerLive, "/v2/health/live"),
            (
                "/v2/health/ready",
                Endpoint::ServerReady,
                "/v2/health/ready",
            ),
            ("/v2/models/m", Endpoint::ModelMetadata, "/v2/models/m"),
            (
                "/v2/models/m/versions/1",
                Endpoint::ModelMetadata,
                "/v2/models/m/versions/1",
            ),
            (
                "/v2/models/m/ready",
                Endpoint::ModelReady,
                "/v2/models/m/ready",
            ),
            (
                "/v2/models/m/versions/1/ready",
                Endpoint::ModelReady,
                "/v2/models/m/versions/1/ready",
            ),
            ("/v2/models/m/infer", Endpoint::Infer, "/v2/models/m/infer"),
            (
                "/v2/repository/index",
                Endpoint::RepositoryIndex,
                "/v2/repository/index",
            ),
            (
                "/v2/models/m%20x/versions/v10/infer/",
                Endpoint::Infer,
                "/v2/models/m%20x/versions/v10/infer",
            ),
        ];
        for (path, endpoint, forwarded) in cases {
            assert_eq!(
                match_oip(path),
                Some((endpoint, forwarded.to_string())),
                "{path}"
            );
        }
    }

    #[test]
    fn other_paths_are_not_oip() {
        for path in [
            "/",
            "/v1/encrypted",
            "/v1/attestation",
            "/v2/models",
            "/v2/models/",
            "/v2//models/m",
            "/v2/models/m/versions",
            "/v2/models/m/infer/extra",
            "/v2/health",
            "/v2/repository",
            "/v2/repository/models/m/load",
            "/v3/models/m/infer",
            "/v2/models/m/versions/1/explain",
        ] {
            assert_eq!(match_oip(path), None, "{path}");
        }
    }

    #[test]
    fn rfc3339_is_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        assert_eq!(rfc3339(t), "2025-11-24T16:00:00Z");
    }
}
