//! Cordon client SDK: verify what runs on the other side, then talk to it encrypted.
//!
//! [`connect`] fetches the runtime's evidence for a fresh nonce, verifies it against the client's own
//! endorsements, appraises the claims with the client's own policy, and checks that the HPKE key it will
//! encrypt to is bound in report_data. Only then does it return a [`VerifiedRuntime`], whose requests
//! are HPKE-encrypted to that pinned key. Nothing is sent before verification succeeds.
//!
//! [`proxy`] puts the same client behind a plain Open Inference Protocol endpoint on loopback, so
//! applications that speak KServe v2 / OIP reach the runtime encrypted without any change.
//!
//! The runtime's URL may be `https://`: its TLS certificate is verified against the web PKI roots
//! and any CA the caller adds ([`ClientTls`], `connect_*_tls`). TLS protects metadata on the wire;
//! it is never what the client relies on: the runtime is trusted through its evidence, and every
//! request is encrypted to the attested key whatever the transport.

pub mod grpc;
pub mod jobs;
pub mod kbs;
pub mod proxy;

use cordon_http::client::error_text;
pub use cordon_http::client::ClientTls;

use cordon_attest::{appraise, Claims, Endorsements, Policy, PolicyDocument, Verdict, Verifier};
use cordon_proto::channel::{prepare_request, ChannelError, PreparedRequest};
use cordon_proto::oip::{InferRequest, InferResponse};
use cordon_proto::runtime::{
    AttestationResponse, InnerRequest, InnerResponse, CONTENT_TYPE_HEADER,
    ENCRYPTED_REQUEST_MEDIA_TYPE, JSON_MEDIA_TYPE,
};
use cordon_proto::session::{
    start_session, ClientSession, SessionGrant, SessionSetup, SESSION_MESSAGE_MEDIA_TYPE,
    SESSION_SETUP_MEDIA_TYPE,
};
use cordon_proto::stream::{StreamError, StreamOpener, SEALED_STREAM_MEDIA_TYPE};
use cordon_proto::{report_data, ModelBinding, RuntimeKeys};
use rand::RngCore;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why the client refused a runtime or a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the policy accepts `sim` and its file has no [endorsements] section with sim_trust_anchors: cannot verify sim evidence")]
    NoEndorsements,
    #[error("runtime evidence failed verification: {0}")]
    Evidence(#[from] cordon_attest::EvidenceError),
    #[error("runtime rejected by policy: {}", .0.reasons())]
    Rejected(Verdict),
    #[error("runtime's keys and models are not bound by its evidence: report_data is {found}, expected {expected} for this nonce and the keys and models presented")]
    KeyNotBound { found: String, expected: String },
    #[error("runtime does not serve model {name:?} (it serves {served:?})")]
    ModelNotServed { name: String, served: Vec<String> },
    #[error("model {name:?}: the runtime serves sealed manifest sha256 {found}, the client requires {expected}")]
    ModelMismatch {
        name: String,
        found: String,
        expected: String,
    },
    #[error("session closed by the runtime ({status}: {error}); open a new session")]
    SessionClosed { status: u16, error: String },
    #[error("encrypted channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("runtime answered {status}: {error}")]
    Server { status: u16, error: String },
    /// The runtime refused the encapsulated request before decrypting it (wrong key id, or it no
    /// longer holds the pinned key, typically after a restart). It never saw the plaintext, so the
    /// request may be sent again once the runtime's new key is verified.
    #[error("runtime could not decrypt the request (it no longer holds the pinned key?): runtime answered {status}: {error}")]
    NotDecrypted { status: u16, error: String },
    #[error("malformed response from runtime: {0}")]
    Malformed(String),
    /// A streamed answer did not arrive as the runtime sealed it: cut short, reordered, repeated
    /// or altered (by the host or the network). What arrived before the fault was authentic.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A signed completion that does not verify (`verify_signed_completion`).
    #[error("signed completion: {0}")]
    Signature(#[from] cordon_proto::openai::SignedResponseError),
}

/// A runtime's answer: whole, or a sealed stream (a streamed chat completion) being read.
pub enum Reply {
    Whole(InnerResponse),
    Stream(Box<ReplyStream>),
}

impl Reply {
    /// The whole answer; a stream is read to its end, its pieces joined as the body's bytes.
    pub async fn into_whole(self) -> Result<InnerResponse, ClientError> {
        match self {
            Reply::Whole(r) => Ok(r),
            Reply::Stream(s) => s.collect().await,
        }
    }
}

/// A sealed stream from the runtime (docs/protocol.md §7.7): its head (status and headers), then
/// its body's pieces, each authenticated and in order; a stream that ends before its last frame,
/// or whose frames were reordered, repeated or altered, is an error.
pub struct ReplyStream {
    head: InnerResponse,
    response: reqwest::Response,
    opener: StreamOpener,
}

impl std::fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyStream")
            .field("status", &self.head.status)
            .finish_non_exhaustive()
    }
}

impl ReplyStream {
    /// Reads the stream's first frame, the head.
    async fn start(
        response: reqwest::Response,
        opener: StreamOpener,
    ) -> Result<ReplyStream, ClientError> {
        let mut stream = ReplyStream {
            head: InnerResponse::json(0, serde_json::Value::Null),
            response,
            opener,
        };
        let head = stream
            .next_piece()
            .await?
            .ok_or_else(|| ClientError::Malformed("sealed stream ended before its head".into()))?;
        stream.head = decode_inner(&head)?;
        Ok(stream)
    }

    /// The answer's status and headers.
    pub fn head(&self) -> &InnerResponse {
        &self.head
    }

    /// The next piece of the body; `None` once the last frame arrived and nothing followed it.
    pub async fn next_piece(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, ClientError> {
        loop {
            if let Some(piece) = self.opener.next_piece()? {
                return Ok(Some(piece.bytes));
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.opener.push(&bytes)?,
                Ok(None) => {
                    self.opener.finish()?;
                    return Ok(None);
                }
                // The last frame arrived: nothing after it would have been taken, so a transport
                // error now takes nothing away.
                Err(_) if self.opener.is_complete() => return Ok(None),
                Err(e) => {
                    // Cut off mid-stream: say so in the stream's words, with the transport's.
                    let cut = self.opener.finish().err();
                    return Err(match cut {
                        Some(cut) => ClientError::Http(format!("{cut} ({})", error_text(&e))),
                        None => ClientError::Http(error_text(&e)),
                    });
                }
            }
        }
    }

    /// The head with the body's pieces joined as its raw body.
    pub async fn collect(mut self) -> Result<InnerResponse, ClientError> {
        let mut body = Vec::new();
        while let Some(piece) = self.next_piece().await? {
            body.extend_from_slice(&piece);
        }
        let mut head = std::mem::replace(
            &mut self.head,
            InnerResponse::json(0, serde_json::Value::Null),
        );
        head.raw_body = Some(body);
        Ok(head)
    }
}

/// A runtime whose evidence was verified and appraised; its HPKE key is pinned.
#[derive(Debug, Clone)]
pub struct VerifiedRuntime {
    url: String,
    keys: RuntimeKeys,
    models: Vec<ModelBinding>,
    claims: Claims,
    /// The evidence the claims were verified from, as the runtime sent it.
    evidence: Vec<u8>,
    verified_at: SystemTime,
    http: reqwest::Client,
    /// The next one-shot request's encapsulation and when it was made, made while the previous
    /// request was in flight (see [`VerifiedRuntime::send`]); shared by clones, taken by one
    /// request only.
    prepared: Arc<Mutex<Option<(Instant, PreparedRequest)>>>,
}

fn http_client(tls: &ClientTls) -> Result<reqwest::Client, ClientError> {
    tls.client(Duration::from_secs(30))
        .map_err(|e| ClientError::Http(error_text(&e)))
}

/// Verifies the runtime at `url` with the policy and endorsements of `doc`, at time `now`.
pub async fn connect(
    url: &str,
    doc: &PolicyDocument,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    connect_tls(url, doc, &ClientTls::default(), now).await
}

/// [`connect`], verifying an `https://` runtime's TLS certificate with `tls`.
pub async fn connect_tls(
    url: &str,
    doc: &PolicyDocument,
    tls: &ClientTls,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    let endorsements = doc
        .verification_endorsements()
        .ok_or(ClientError::NoEndorsements)?;
    connect_with_tls(url, &doc.policy, &endorsements, tls, now).await
}

/// [`connect`] with the policy and endorsements given separately.
pub async fn connect_with(
    url: &str,
    policy: &Policy,
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    connect_with_tls(url, policy, endorsements, &ClientTls::default(), now).await
}

/// [`connect_with`], verifying an `https://` runtime's TLS certificate with `tls`. The
/// [`VerifiedRuntime`] keeps using that trust for every later request.
pub async fn connect_with_tls(
    url: &str,
    policy: &Policy,
    endorsements: &Endorsements,
    tls: &ClientTls,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    let url = url.trim_end_matches('/').to_string();
    let http = http_client(tls)?;
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let resp = http
        .get(format!("{url}/v1/attestation"))
        .query(&[("nonce", hex::encode(nonce))])
        .send()
        .await
        .map_err(|e| ClientError::Http(error_text(&e)))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let att: AttestationResponse = resp
        .json()
        .await
        .map_err(|e| ClientError::Malformed(format!("attestation: {e}")))?;
    let claims = verify_attestation(&att, &nonce, policy, endorsements, now)?;
    Ok(VerifiedRuntime {
        url,
        keys: att.runtime_keys,
        models: att.models,
        claims,
        evidence: att.evidence,
        verified_at: now,
        http,
        prepared: Arc::default(),
    })
}

/// Verifies a runtime's attestation for `nonce`: the evidence (with its shipped endorsements and
/// `endorsements`' trust), the policy, and the binding of the nonce, keys and models. The claims
/// of an accepted runtime.
pub fn verify_attestation(
    att: &AttestationResponse,
    nonce: &[u8; 32],
    policy: &Policy,
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<Claims, ClientError> {
    let shipped = att
        .endorsements
        .decode()
        .map_err(|e| ClientError::Malformed(format!("attestation: {e}")))?;
    let claims =
        Verifier::new(endorsements.clone()).verify_shipped(&att.evidence, &shipped, now)?;
    let verdict = appraise(&claims, policy);
    if !verdict.is_accepted() {
        return Err(ClientError::Rejected(verdict));
    }
    let expected = report_data(nonce, &att.runtime_keys, &att.models);
    if claims.report_data != expected {
        return Err(ClientError::KeyNotBound {
            found: hex::encode(claims.report_data),
            expected: hex::encode(expected),
        });
    }
    Ok(claims)
}

/// Checks a signed chat completion offline (docs/protocol.md §7.9): the runtime's attestation
/// for `nonce` (saved from `GET /v1/attestation?nonce=…`) is verified and appraised with `doc`,
/// then its attested signing key must have signed `request` (the body sent) and `response` (the
/// answer's exact bytes). A streamed answer carries its signature in its last line;
/// a whole one in the `cordon-signature` header, given as `signature`.
pub fn verify_signed_completion(
    att: &AttestationResponse,
    nonce: &[u8; 32],
    doc: &PolicyDocument,
    now: SystemTime,
    request: &[u8],
    response: &[u8],
    signature: Option<&str>,
) -> Result<Claims, ClientError> {
    let endorsements = doc
        .verification_endorsements()
        .ok_or(ClientError::NoEndorsements)?;
    let claims = verify_attestation(att, nonce, &doc.policy, &endorsements, now)?;
    let (signed, signature) = match signature {
        Some(header) => (
            response,
            cordon_proto::openai::parse_signature_header(header)?,
        ),
        None => cordon_proto::openai::split_signed_stream(response)?,
    };
    cordon_proto::openai::verify_completion(
        &att.runtime_keys.signing_public_key,
        request,
        signed,
        &signature,
    )?;
    Ok(claims)
}

/// How long a one-shot encapsulation made ahead of its request may wait for it.
const PREPARED_FOR_AT_MOST: Duration = Duration::from_secs(10);

/// How the runtime's plaintext 400 on `/v1/encrypted` starts when decapsulation failed.
const NOT_DECRYPTED_PREFIX: &str = "encrypted request:";

async fn server_error(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let error = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or(text);
    ClientError::Server { status, error }
}

/// Posts one channel message; the answer's bytes, or the runtime's status and error.
async fn post_message(
    http: &reqwest::Client,
    url: String,
    media_type: &str,
    body: Vec<u8>,
) -> Result<axum::body::Bytes, ClientError> {
    post_for_reply(http, url, media_type, body, false)
        .await?
        .bytes()
        .await
        .map_err(|e| ClientError::Http(error_text(&e)))
}

/// Posts one channel message; the answer, once its status says it is one.
async fn post_for_reply(
    http: &reqwest::Client,
    url: String,
    media_type: &str,
    body: Vec<u8>,
    long: bool,
) -> Result<reqwest::Response, ClientError> {
    let mut post = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, media_type)
        .body(body);
    if long {
        post = post.timeout(COMPLETION_TIMEOUT);
    }
    let resp = post
        .send()
        .await
        .map_err(|e| ClientError::Http(error_text(&e)))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    Ok(resp)
}

/// How long a chat completion may take, streamed or whole, instead of the client's 30 s: a reply
/// of hundreds of tokens on a CPU takes minutes.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether a request is a chat completion (which may run for minutes).
fn is_completion(inner: &InnerRequest) -> bool {
    inner.path.trim_end_matches('/') == cordon_proto::openai::CHAT_COMPLETIONS_PATH
}

/// Whether the runtime answered with a sealed stream. Told by the media type, which the host
/// could change: a stream read as one message, or one message as a stream, fails to decrypt.
fn is_sealed_stream(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == SEALED_STREAM_MEDIA_TYPE.as_bytes())
}

/// The plaintext of an inner request (zeroized when dropped).
fn encode_inner(inner: InnerRequest) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
    inner
        .into_plaintext()
        .map_err(|e| ClientError::Malformed(e.to_string()))
}

fn unix_now() -> u64 {
    cordon_proto::auth::unix(SystemTime::now())
}

fn decode_inner(plain: &[u8]) -> Result<InnerResponse, ClientError> {
    InnerResponse::from_plaintext(plain)
        .map_err(|e| ClientError::Malformed(format!("inner response: {e}")))
}

impl VerifiedRuntime {
    /// The verified claims of the runtime.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The evidence (the platform's report or quote) the claims were verified from, as sent.
    pub fn evidence(&self) -> &[u8] {
        &self.evidence
    }

    /// The keys bound in the verified evidence; requests are encrypted to `hpke_public_key`.
    pub fn keys(&self) -> &RuntimeKeys {
        &self.keys
    }

    /// The models the runtime serves, as bound in the verified evidence.
    pub fn models(&self) -> &[ModelBinding] {
        &self.models
    }

    /// Checks that the runtime serves model `name` unsealed from exactly the sealed manifest whose
    /// SHA-256 is `manifest_sha256` (hex, as `cordon seal` prints it).
    pub fn require_model(&self, name: &str, manifest_sha256: &str) -> Result<(), ClientError> {
        let Some(m) = self.models.iter().find(|m| m.name == name) else {
            return Err(ClientError::ModelNotServed {
                name: name.into(),
                served: self.models.iter().map(|m| m.name.clone()).collect(),
            });
        };
        let found = hex::encode(m.manifest_sha256);
        let expected = manifest_sha256.trim().to_ascii_lowercase();
        // Both are public digests; a plain comparison leaks nothing.
        if found != expected {
            return Err(ClientError::ModelMismatch {
                name: name.into(),
                found,
                expected,
            });
        }
        Ok(())
    }

    pub fn verified_at(&self) -> SystemTime {
        self.verified_at
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one request through the encrypted channel and returns the decrypted inner response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<InnerResponse, ClientError> {
        self.send(InnerRequest {
            method: method.into(),
            path: path.into(),
            body,
            ..InnerRequest::default()
        })
        .await
    }

    /// Sends a request with `headers` and `body` as its exact bytes through the encrypted channel:
    /// how a party's signed job requests ([`cordon_proto::auth`], signed for
    /// `self.keys().hpke_public_key`) reach the training job API.
    pub async fn raw_request(
        &self,
        method: &str,
        path: &str,
        headers: std::collections::BTreeMap<String, String>,
        body: Vec<u8>,
    ) -> Result<InnerResponse, ClientError> {
        self.send(InnerRequest {
            method: method.into(),
            path: path.into(),
            headers,
            raw_body: Some(body),
            ..InnerRequest::default()
        })
        .await
    }

    /// The HTTP client this runtime is reached with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends `inner` through the encrypted channel as one HPKE message (its `sent_at` is set
    /// here) and returns the decrypted inner response.
    pub async fn send(&self, inner: InnerRequest) -> Result<InnerResponse, ClientError> {
        self.send_reply(inner).await?.into_whole().await
    }

    /// Sends one request, one-shot; the answer whole, or as the sealed stream it came in (a
    /// streamed chat completion), to be read piece by piece.
    pub async fn send_reply(&self, mut inner: InnerRequest) -> Result<Reply, ClientError> {
        // The runtime refuses a one-shot request outside its window or seen before.
        inner.sent_at = Some(unix_now());
        let long = is_completion(&inner);
        let plaintext = encode_inner(inner)?;
        let (public_key, key_id) = (&self.keys.hpke_public_key, self.keys.hpke_key_id);
        let prepared = match self.take_prepared() {
            Some(p) if p.is_for(public_key, key_id) => p,
            _ => prepare_request(public_key, key_id)?,
        };
        let (message, ctx) = prepared.encapsulate(&plaintext)?;
        let url = format!("{}/v1/encrypted", self.url);
        let post = post_for_reply(&self.http, url, ENCRYPTED_REQUEST_MEDIA_TYPE, message, long);
        // While this request is on its way and being answered, make the next one's encapsulation:
        // its ephemeral key and key agreement do not depend on the request, and they are most of
        // what a one-shot request costs here. The yield first lets the connection put this
        // request on the wire (on a one-thread runtime it would wait otherwise).
        let refill = async {
            tokio::task::yield_now().await;
            self.refill_prepared();
        };
        let (posted, ()) = tokio::join!(post, refill);
        let resp = match posted {
            // The runtime answers 400 `encrypted request: …` only when decapsulation failed
            // (docs/protocol.md §8.2): nothing of the request was decrypted.
            Err(ClientError::Server { status, error })
                if status == 400 && error.starts_with(NOT_DECRYPTED_PREFIX) =>
            {
                return Err(ClientError::NotDecrypted { status, error })
            }
            other => other?,
        };
        if is_sealed_stream(&resp) {
            return Ok(Reply::Stream(Box::new(
                ReplyStream::start(resp, ctx.into_stream()).await?,
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Http(error_text(&e)))?;
        Ok(Reply::Whole(decode_inner(&ctx.decrypt_response(&bytes)?)?))
    }

    /// Runs an Open Inference Protocol infer request on `model`.
    pub async fn infer(
        &self,
        model: &str,
        request: &InferRequest,
    ) -> Result<InferResponse, ClientError> {
        infer_response(self.send(infer_inner(model, request)?).await?)
    }

    /// The waiting encapsulation, unless it is older than [`PREPARED_FOR_AT_MOST`] (then it is
    /// dropped: its keys should not wait in memory for a request that may never come).
    fn take_prepared(&self) -> Option<PreparedRequest> {
        let (made, prepared) = self.prepared.lock().ok()?.take()?;
        (made.elapsed() <= PREPARED_FOR_AT_MOST).then_some(prepared)
    }

    /// Makes the next request's encapsulation if none is waiting (outside the lock, so clones on
    /// other threads are not held up). A failure leaves none: the next request then makes its
    /// own, and reports the error.
    fn refill_prepared(&self) {
        if !matches!(self.prepared.lock().map(|slot| slot.is_none()), Ok(true)) {
            return;
        }
        let Ok(prepared) = prepare_request(&self.keys.hpke_public_key, self.keys.hpke_key_id)
        else {
            return;
        };
        if let Ok(mut slot) = self.prepared.lock() {
            if slot.is_none() {
                *slot = Some((Instant::now(), prepared));
            }
        }
    }

    /// Opens a session (one HPKE setup to the pinned key) for a high-rate stream of requests.
    pub async fn open_session(&self) -> Result<Session, ClientError> {
        let setup = serde_json::to_vec(&SessionSetup {
            sent_at: unix_now(),
        })
        .map_err(|e| ClientError::Malformed(e.to_string()))?;
        let (setup, pending) =
            start_session(&self.keys.hpke_public_key, self.keys.hpke_key_id, &setup)?;
        let url = format!("{}/v1/session", self.url);
        let bytes = post_message(&self.http, url, SESSION_SETUP_MEDIA_TYPE, setup).await?;
        Ok(Session {
            url: self.url.clone(),
            http: self.http.clone(),
            inner: pending.accept(&bytes)?,
        })
    }
}

/// An infer request as its JSON bytes, which the runtime parses in one pass (no JSON tree of the
/// tensor data on its side).
fn infer_inner(model: &str, request: &InferRequest) -> Result<InnerRequest, ClientError> {
    let body = serde_json::to_vec(request).map_err(|e| ClientError::Malformed(e.to_string()))?;
    Ok(InnerRequest {
        method: "POST".into(),
        path: format!("/v2/models/{model}/infer"),
        headers: [(CONTENT_TYPE_HEADER.to_string(), JSON_MEDIA_TYPE.to_string())].into(),
        raw_body: Some(body),
        ..InnerRequest::default()
    })
}

fn infer_response(resp: InnerResponse) -> Result<InferResponse, ClientError> {
    if resp.status != 200 {
        let error = resp
            .body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("")
            .to_string();
        return Err(ClientError::Server {
            status: resp.status,
            error,
        });
    }
    let malformed = |e: String| ClientError::Malformed(format!("infer response: {e}"));
    // Binary outputs (a request with `binary_data_output`): their bytes become JSON data.
    let header_len = resp.binary_header_length().map(str::to_string);
    let body = match (header_len, resp.raw_body) {
        (Some(header_len), Some(raw)) => {
            let header_len = header_len
                .parse::<usize>()
                .map_err(|_| malformed("bad Inference-Header-Content-Length".into()))?;
            let split = cordon_proto::oip_binary::split_response(&raw, header_len)
                .map_err(|e| malformed(e.to_string()))?;
            let mut header = split.header;
            if let Some(outputs) = header.get_mut("outputs").and_then(|o| o.as_array_mut()) {
                for (t, range) in outputs.iter_mut().zip(split.blobs) {
                    let Some(range) = range else { continue };
                    let datatype = t["datatype"].as_str().unwrap_or_default().to_string();
                    let data = cordon_proto::oip_binary::decode_elements(&datatype, &raw[range])
                        .map_err(malformed)?;
                    t["data"] = serde_json::Value::Array(data);
                    if let Some(p) = t.get_mut("parameters").and_then(|p| p.as_object_mut()) {
                        p.remove("binary_data_size");
                    }
                }
            }
            header
        }
        _ => resp.body,
    };
    serde_json::from_value(body).map_err(|e| malformed(e.to_string()))
}

/// A session with a verified runtime: requests are encrypted with the session's keys, one AEAD
/// each, numbered in order. The runtime refuses a request that arrives after a higher-numbered
/// one, so use one session per stream of sequential requests (open several for concurrency).
#[derive(Debug)]
pub struct Session {
    url: String,
    http: reqwest::Client,
    inner: ClientSession,
}

impl Session {
    /// What the runtime granted: the session id, its expiry and its message limit.
    pub fn grant(&self) -> &SessionGrant {
        self.inner.grant()
    }

    /// Whether the session can no longer be used (message limit reached or expired at `now`);
    /// open a new one then.
    pub fn is_spent(&self, now: SystemTime) -> bool {
        let expires = std::time::UNIX_EPOCH + Duration::from_secs(self.grant().expires_at);
        self.inner.exhausted() || now >= expires
    }

    /// Sends one request in the session and returns the decrypted inner response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<InnerResponse, ClientError> {
        self.send(InnerRequest {
            method: method.into(),
            path: path.into(),
            body,
            ..InnerRequest::default()
        })
        .await
    }

    /// Sends `inner` in the session and returns the decrypted inner response.
    pub async fn send(&self, inner: InnerRequest) -> Result<InnerResponse, ClientError> {
        self.send_reply(inner).await?.into_whole().await
    }

    /// Sends one request in the session; the answer whole, or as the sealed stream it came in.
    pub async fn send_reply(&self, inner: InnerRequest) -> Result<Reply, ClientError> {
        let long = is_completion(&inner);
        let plaintext = encode_inner(inner)?;
        let (message, seq) = self.inner.seal_request(&plaintext)?;
        let url = format!("{}/v1/session/message", self.url);
        let resp = match post_for_reply(&self.http, url, SESSION_MESSAGE_MEDIA_TYPE, message, long)
            .await
        {
            // Unknown (a restarted runtime) or expired: the runtime refused before decrypting.
            Err(ClientError::Server { status, error }) if status == 404 || status == 410 => {
                return Err(ClientError::SessionClosed { status, error })
            }
            other => other?,
        };
        if is_sealed_stream(&resp) {
            return Ok(Reply::Stream(Box::new(
                ReplyStream::start(resp, self.inner.stream_opener(seq)).await?,
            )));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Http(error_text(&e)))?;
        Ok(Reply::Whole(decode_inner(
            &self.inner.open_response(seq, &bytes)?,
        )?))
    }

    /// Runs an Open Inference Protocol infer request on `model` in this session.
    pub async fn infer(
        &self,
        model: &str,
        request: &InferRequest,
    ) -> Result<InferResponse, ClientError> {
        infer_response(self.send(infer_inner(model, request)?).await?)
    }
}
