//! Runtime messages: attestation and the encrypted inference channel.

use crate::{ModelBinding, RuntimeKeys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Media type of an encapsulated request (body of `POST /v1/encrypted`).
pub const ENCRYPTED_REQUEST_MEDIA_TYPE: &str = "message/cordon-request";
/// Media type of an encapsulated response.
pub const ENCRYPTED_RESPONSE_MEDIA_TYPE: &str = "message/cordon-response";

/// `GET /v1/attestation?nonce=HEX` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestationResponse {
    /// Evidence whose report_data is [`crate::report_data`]`(nonce, runtime_keys, models)`.
    #[serde(with = "crate::b64")]
    pub evidence: Vec<u8>,
    /// Endorsements shipped with the evidence (input to the verifier, never trust).
    #[serde(default, skip_serializing_if = "crate::WireEndorsements::is_empty")]
    pub endorsements: crate::WireEndorsements,
    pub runtime_keys: RuntimeKeys,
    /// The models the runtime serves, bound in report_data after the keys.
    #[serde(default)]
    pub models: Vec<ModelBinding>,
}

/// The plaintext inside an encrypted request: one HTTP-like request to the runtime's
/// Open Inference Protocol surface, or to its training job API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InnerRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// The client's clock when it encrypted a one-shot request (Unix seconds). The runtime refuses
    /// one-shot requests without it, outside its replay window, or seen before. Unused in sessions,
    /// whose sequence numbers refuse replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<u64>,
    /// Request headers: the signed-request headers ([`crate::auth`]) of a party's job request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A job request's exact body bytes (base64), which its signature covers; used instead of
    /// `body` so that no re-encoding of JSON stands between signer and verifier.
    #[serde(
        default,
        with = "crate::b64::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub raw_body: Option<Vec<u8>>,
}

/// The plaintext inside an encrypted response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InnerResponse {
    pub status: u16,
    /// The JSON body; `null` when `raw_body` carries the answer.
    pub body: serde_json::Value,
    /// Response headers: `inference-header-content-length` of a binary infer response
    /// ([`INFERENCE_HEADER_CONTENT_LENGTH`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A body that is not JSON (base64 here): an infer response in the binary tensor data
    /// extension's form, when the request was in that form and asked for binary outputs.
    #[serde(
        default,
        with = "crate::b64::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub raw_body: Option<Vec<u8>>,
}

impl InnerResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: serde_json::Value) -> InnerResponse {
        InnerResponse {
            status,
            body,
            headers: BTreeMap::new(),
            raw_body: None,
        }
    }

    /// The length of the JSON header of a binary-extension body (`raw_body`), when it is one.
    pub fn binary_header_length(&self) -> Option<&str> {
        self.headers
            .get(INFERENCE_HEADER_CONTENT_LENGTH)
            .map(String::as_str)
    }
}

/// The binary tensor data extension's header (lower case, as inner headers are written): the
/// length of the JSON part of a body whose tensors follow it as raw bytes. An infer request inside
/// the channel carries it in `headers` with the whole body in `raw_body`, as the client sent it.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
