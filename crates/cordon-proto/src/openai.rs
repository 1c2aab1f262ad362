//! The OpenAI chat completions API's wire types (`POST /v1/chat/completions`, `GET /v1/models`),
//! the part of it a runtime serving a language model speaks inside the channel. Fields Cordon does
//! not act on are read and ignored, as OpenAI-compatible servers do; fields whose meaning it cannot
//! honour (`n` above 1, tools, log probabilities) are refused by the runtime, never ignored.
//! docs/protocol.md §7.8.

use serde::{Deserialize, Serialize};

/// Path of the chat completions route, inside the channel and on the proxy.
pub const CHAT_COMPLETIONS_PATH: &str = "/v1/chat/completions";
/// Path of the model list.
pub const MODELS_PATH: &str = "/v1/models";
/// Media type of a streamed completion (server-sent events).
pub const EVENT_STREAM_MEDIA_TYPE: &str = "text/event-stream";

/// `POST /v1/chat/completions`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens`; the smaller wins when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<serde_json::Value>,
    /// Only `{"type": "text"}` is served: JSON modes are refused, not ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
}

// Prompts never reach a log through Debug: only their count and sizes.
impl std::fmt::Debug for ChatCompletionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCompletionRequest")
            .field("model", &self.model)
            .field("messages", &self.messages.len())
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or up to four.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn strings(&self) -> Vec<&str> {
        match self {
            Stop::One(s) => vec![s.as_str()],
            Stop::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: a string, or the array form with text parts.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl Content {
    /// The text of the content; `Err` names the first part that is not text.
    pub fn text(&self) -> Result<String, String> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for (i, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        _ => {
                            return Err(format!(
                                "content part {i} is not text (only \"text\" parts are served)"
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// A whole completion (`"object": "chat.completion"`).
#[derive(Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: Usage,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub role: String,
    pub content: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One event of a streamed completion (`"object": "chat.completion.chunk"`).
#[derive(Clone, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only on the final chunk, when `stream_options.include_usage` asked for it (then with no
    /// choices); `null` on the others, as OpenAI sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Padding (as OpenAI's own `obfuscation` field): brings each event to a multiple of a
    /// fixed size, so the sizes of the encrypted frames do not spell out the tokens' lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obfuscation: Option<String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<String>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(message: &str, kind: &str) -> serde_json::Value {
    serde_json::json!({
        "error": { "message": message, "type": kind, "param": null, "code": null }
    })
}

/// One server-sent event carrying `data` (JSON on one line).
pub fn sse_event(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// The event that ends a stream.
pub const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_clients_request_reads() {
        let body = r#"{"messages":[{"role":"system","content":"Be brief."},
            {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
            "model":"gemma-3-270m","max_tokens":8,"seed":1,"stream":true,
            "stream_options":{"include_usage":true},"stop":["\n\n"],"frequency_penalty":0}"#;
        let r: ChatCompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(r.messages.len(), 2);
        assert_eq!(
            r.messages[1].content.as_ref().unwrap().text().unwrap(),
            "Hi there"
        );
        assert_eq!(r.stop.unwrap().strings(), vec!["\n\n"]);
        assert!(r.stream_options.unwrap().include_usage);
        let image = r#"[{"type":"image_url","image_url":{"url":"x"}}]"#;
        let c: Content = serde_json::from_str(image).unwrap();
        assert!(c.text().unwrap_err().contains("part 0 is not text"));
    }

    #[test]
    fn debug_shows_no_prompt() {
        let r = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: Some(Content::Text("patient has a secret".into())),
            }],
            ..Default::default()
        };
        assert!(!format!("{r:?}").contains("secret"));
    }
}

// ---------------------------------------------------------------------------------------------
// Signed completions (docs/protocol.md §7.9)

/// Header (inside the channel and on the proxy's answer) carrying a whole completion's signature.
pub const SIGNATURE_HEADER: &str = "cordon-signature";
/// The server-sent comment that ends a streamed completion with its signature.
pub const STREAM_SIGNATURE_PREFIX: &[u8] = b": cordon-signature ";
const SIGNING_DOMAIN: &[u8] = b"cordon completion v1\0";

/// What the runtime's signing key signs for a completion: the domain, the SHA-256 of the request
/// body as the client sent it, and the SHA-256 of the exact answer bytes (for a stream, every
/// byte of the event stream before the signature comment, `[DONE]` included).
pub fn signing_message(request_sha256: &[u8; 32], response_sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_DOMAIN.len() + 64);
    m.extend_from_slice(SIGNING_DOMAIN);
    m.extend_from_slice(request_sha256);
    m.extend_from_slice(response_sha256);
    m
}

/// The comment line that carries a stream's signature.
pub fn stream_signature_event(signature: &[u8; 64]) -> Vec<u8> {
    let mut out = STREAM_SIGNATURE_PREFIX.to_vec();
    out.extend_from_slice(hex::encode(signature).as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// Why a signed completion does not verify.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignedResponseError {
    #[error("the stream carries no signature comment (`: cordon-signature …`) right after its `data: [DONE]`")]
    NoStreamSignature,
    #[error("the signature is not 64 bytes of hex")]
    SignatureForm,
    #[error("the signing key is not an Ed25519 key")]
    Key,
    #[error("the signature does not verify: the request or the answer is not the one the runtime signed")]
    Mismatch,
}

/// Splits a streamed completion's body into the signed bytes and the signature of its final
/// comment line.
pub fn split_signed_stream(body: &[u8]) -> Result<(&[u8], [u8; 64]), SignedResponseError> {
    let trimmed = body
        .strip_suffix(b"\n\n")
        .ok_or(SignedResponseError::NoStreamSignature)?;
    let start = trimmed
        .windows(STREAM_SIGNATURE_PREFIX.len())
        .rposition(|w| w == STREAM_SIGNATURE_PREFIX)
        .ok_or(SignedResponseError::NoStreamSignature)?;
    // The comment must start a line: the signed part ends with an event's blank line.
    if start != 0 && !trimmed[..start].ends_with(b"\n\n") {
        return Err(SignedResponseError::NoStreamSignature);
    }
    // Exactly 128 lowercase hex digits, after a stream that ended with `[DONE]`: nothing about
    // the trailer is left to interpretation.
    let hex_text = &trimmed[start + STREAM_SIGNATURE_PREFIX.len()..];
    if hex_text.len() != 128
        || !hex_text
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(SignedResponseError::SignatureForm);
    }
    if !body[..start].ends_with(SSE_DONE) {
        return Err(SignedResponseError::NoStreamSignature);
    }
    let sig = parse_signature(hex_text)?;
    Ok((&body[..start], sig))
}

fn parse_signature(hex_text: &[u8]) -> Result<[u8; 64], SignedResponseError> {
    std::str::from_utf8(hex_text)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or(SignedResponseError::SignatureForm)
}

/// Checks a completion's signature by `signing_key` over `request` (the body the client sent)
/// and `response` (the exact answer bytes; a stream's, before its signature comment).
pub fn verify_completion(
    signing_key: &[u8; 32],
    request: &[u8],
    response: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignedResponseError> {
    use sha2::{Digest, Sha256};
    let key = ed25519_dalek::VerifyingKey::from_bytes(signing_key)
        .map_err(|_| SignedResponseError::Key)?;
    let message = signing_message(
        &Sha256::digest(request).into(),
        &Sha256::digest(response).into(),
    );
    key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| SignedResponseError::Mismatch)
}

/// A whole completion's signature from its header value.
pub fn parse_signature_header(value: &str) -> Result<[u8; 64], SignedResponseError> {
    parse_signature(value.as_bytes())
}

#[cfg(test)]
mod signing_tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use sha2::{Digest, Sha256};

    fn sign(key: &SigningKey, request: &[u8], response: &[u8]) -> [u8; 64] {
        key.sign(&signing_message(
            &Sha256::digest(request).into(),
            &Sha256::digest(response).into(),
        ))
        .to_bytes()
    }

    #[test]
    fn a_signed_stream_verifies_and_any_change_does_not() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let public = key.verifying_key().to_bytes();
        let request = br#"{"model":"m","messages":[]}"#;
        let events = b"data: {\"a\":1}\n\ndata: [DONE]\n\n".to_vec();
        let sig = sign(&key, request, &events);
        let body = [events.clone(), stream_signature_event(&sig)].concat();
        let (signed, found) = split_signed_stream(&body).unwrap();
        assert_eq!(signed, &events[..]);
        verify_completion(&public, request, signed, &found).unwrap();
        // Another request, a changed byte, a cut stream: refused.
        assert_eq!(
            verify_completion(&public, b"{}", signed, &found),
            Err(SignedResponseError::Mismatch)
        );
        let mut changed = body.clone();
        changed[8] ^= 1;
        let (signed, found) = split_signed_stream(&changed).unwrap();
        assert_eq!(
            verify_completion(&public, request, signed, &found),
            Err(SignedResponseError::Mismatch)
        );
        assert_eq!(
            split_signed_stream(&events),
            Err(SignedResponseError::NoStreamSignature)
        );
        // Nothing but 128 lowercase hex digits, after `[DONE]`.
        let spaced = [
            events.clone(),
            b": cordon-signature  ".to_vec(),
            hex::encode(sig).into_bytes(),
            b"\n\n".to_vec(),
        ]
        .concat();
        assert_eq!(
            split_signed_stream(&spaced),
            Err(SignedResponseError::SignatureForm)
        );
        let upper = [
            events.clone(),
            b": cordon-signature ".to_vec(),
            hex::encode_upper(sig).into_bytes(),
            b"\n\n".to_vec(),
        ]
        .concat();
        assert_eq!(
            split_signed_stream(&upper),
            Err(SignedResponseError::SignatureForm)
        );
        let no_done = [b"data: {}\n\n".to_vec(), stream_signature_event(&sig)].concat();
        assert_eq!(
            split_signed_stream(&no_done),
            Err(SignedResponseError::NoStreamSignature)
        );
        // A signature comment inside an event is not the stream's signature.
        let inside = b"data: x: cordon-signature 00\n\n";
        assert!(split_signed_stream(inside).is_err());
    }
}
