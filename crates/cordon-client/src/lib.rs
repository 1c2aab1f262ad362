//! Cordon client SDK: verify what runs on the other side, then talk to it encrypted.
//!
//! [`connect`] fetches the runtime's evidence for a fresh nonce, verifies it against the client's own
//! endorsements, appraises the claims with the client's own policy, and checks that the HPKE key it will
//! encrypt to is bound in report_data. Only then does it return a [`VerifiedRuntime`], whose requests
//! are HPKE-encrypted to that pinned key. Nothing is sent before verification succeeds.
//!
//! [`proxy`] puts the same client behind a plain Open Inference Protocol endpoint on loopback, so
//! applications that speak KServe v2 / OIP reach the runtime encrypted without any change.

pub mod proxy;

use cordon_attest::{appraise, verify, Claims, Endorsements, Policy, PolicyDocument, Verdict};
use cordon_proto::channel::{encapsulate_request, ChannelError};
use cordon_proto::oip::{InferRequest, InferResponse};
use cordon_proto::runtime::{
    AttestationResponse, InnerRequest, InnerResponse, ENCRYPTED_REQUEST_MEDIA_TYPE,
};
use cordon_proto::{report_data, RuntimeKeys};
use rand::RngCore;
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Why the client refused a runtime or a request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the policy file has no [endorsements] section: cannot verify any evidence")]
    NoEndorsements,
    #[error("runtime evidence failed verification: {0}")]
    Evidence(#[from] cordon_attest::EvidenceError),
    #[error("runtime rejected by policy: {}", .0.reasons())]
    Rejected(Verdict),
    #[error("runtime's keys are not bound by its evidence: report_data is {found}, expected {expected} for this nonce and the keys presented")]
    KeyNotBound { found: String, expected: String },
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
}

/// A runtime whose evidence was verified and appraised; its HPKE key is pinned.
#[derive(Debug, Clone)]
pub struct VerifiedRuntime {
    url: String,
    keys: RuntimeKeys,
    claims: Claims,
    verified_at: SystemTime,
    http: reqwest::Client,
}

fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// Verifies the runtime at `url` with the policy and endorsements of `doc`, at time `now`.
pub async fn connect(
    url: &str,
    doc: &PolicyDocument,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    let endorsements = doc
        .endorsements
        .as_ref()
        .ok_or(ClientError::NoEndorsements)?;
    connect_with(url, &doc.policy, endorsements, now).await
}

/// [`connect`] with the policy and endorsements given separately.
pub async fn connect_with(
    url: &str,
    policy: &Policy,
    endorsements: &Endorsements,
    now: SystemTime,
) -> Result<VerifiedRuntime, ClientError> {
    let url = url.trim_end_matches('/').to_string();
    let http = http_client()?;
    let mut nonce = [0u8; 32];
    rand::rng().fill_bytes(&mut nonce);
    let resp = http
        .get(format!("{url}/v1/attestation"))
        .query(&[("nonce", hex::encode(nonce))])
        .send()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(server_error(resp).await);
    }
    let att: AttestationResponse = resp
        .json()
        .await
        .map_err(|e| ClientError::Malformed(format!("attestation: {e}")))?;
    let claims = verify(&att.evidence, endorsements, now)?;
    let verdict = appraise(&claims, policy);
    if !verdict.is_accepted() {
        return Err(ClientError::Rejected(verdict));
    }
    let expected = report_data(&nonce, &att.runtime_keys);
    if claims.report_data != expected {
        return Err(ClientError::KeyNotBound {
            found: hex::encode(claims.report_data),
            expected: hex::encode(expected),
        });
    }
    Ok(VerifiedRuntime {
        url,
        keys: att.runtime_keys,
        claims,
        verified_at: now,
        http,
    })
}

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

impl VerifiedRuntime {
    /// The verified claims of the runtime.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// The keys bound in the verified evidence; requests are encrypted to `hpke_public_key`.
    pub fn keys(&self) -> &RuntimeKeys {
        &self.keys
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
        let inner = InnerRequest {
            method: method.into(),
            path: path.into(),
            body,
        };
        let plaintext = zeroize::Zeroizing::new(
            serde_json::to_vec(&inner).map_err(|e| ClientError::Malformed(e.to_string()))?,
        );
        let (message, ctx) = encapsulate_request(
            &self.keys.hpke_public_key,
            self.keys.hpke_key_id,
            &plaintext,
        )?;
        let resp = self
            .http
            .post(format!("{}/v1/encrypted", self.url))
            .header(reqwest::header::CONTENT_TYPE, ENCRYPTED_REQUEST_MEDIA_TYPE)
            .body(message)
            .send()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(match server_error(resp).await {
                // The runtime answers 400 `encrypted request: …` only when decapsulation failed
                // (docs/protocol.md §8.2): nothing of the request was decrypted.
                ClientError::Server { status, error }
                    if status == 400 && error.starts_with(NOT_DECRYPTED_PREFIX) =>
                {
                    ClientError::NotDecrypted { status, error }
                }
                other => other,
            });
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let plain = ctx.decrypt_response(&bytes)?;
        serde_json::from_slice(&plain)
            .map_err(|e| ClientError::Malformed(format!("inner response: {e}")))
    }

    /// Runs an Open Inference Protocol infer request on `model`.
    pub async fn infer(
        &self,
        model: &str,
        request: &InferRequest,
    ) -> Result<InferResponse, ClientError> {
        let body =
            serde_json::to_value(request).map_err(|e| ClientError::Malformed(e.to_string()))?;
        let resp = self
            .request("POST", &format!("/v2/models/{model}/infer"), Some(body))
            .await?;
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
        serde_json::from_value(resp.body)
            .map_err(|e| ClientError::Malformed(format!("infer response: {e}")))
    }
}
