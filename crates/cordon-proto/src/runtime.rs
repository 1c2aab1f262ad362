//! Runtime messages: attestation and the encrypted inference channel.

use crate::{ModelBinding, RuntimeKeys};
use serde::{Deserialize, Serialize};

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
    pub runtime_keys: RuntimeKeys,
    /// The models the runtime serves, bound in report_data after the keys.
    #[serde(default)]
    pub models: Vec<ModelBinding>,
}

/// The plaintext inside an encrypted request: one HTTP-like request to the runtime's
/// Open Inference Protocol surface.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InnerRequest {
    pub method: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// The plaintext inside an encrypted response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InnerResponse {
    pub status: u16,
    pub body: serde_json::Value,
}
