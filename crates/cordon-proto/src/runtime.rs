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
#[derive(Clone, Default, Serialize, Deserialize)]
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
#[derive(Clone, Serialize, Deserialize)]
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

/// What a body is, never what it holds: request and response bodies are the client's plaintext.
fn body_shape(body: Option<&serde_json::Value>, raw: Option<&Vec<u8>>) -> String {
    match (body, raw) {
        (_, Some(raw)) => format!("<{} bytes>", raw.len()),
        (Some(serde_json::Value::Null) | None, None) => "none".into(),
        (Some(_), None) => "<JSON>".into(),
    }
}

impl std::fmt::Debug for InnerRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InnerRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("sent_at", &self.sent_at)
            .field("headers", &self.headers)
            .field(
                "body",
                &body_shape(self.body.as_ref(), self.raw_body.as_ref()),
            )
            .finish()
    }
}

impl std::fmt::Debug for InnerResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InnerResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field(
                "body",
                &body_shape(Some(&self.body), self.raw_body.as_ref()),
            )
            .finish()
    }
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

/// An inner request's content type: with [`JSON_MEDIA_TYPE`], an infer request's `raw_body` is its
/// JSON body as the client wrote it, which the runtime parses in one pass (no JSON tree of the
/// tensor data; `crate::oip_json`).
pub const CONTENT_TYPE_HEADER: &str = "content-type";
pub const JSON_MEDIA_TYPE: &str = "application/json";

/// First byte of an inner message in the framed form: `0x01`, the length of its JSON part as a
/// 4-byte big-endian integer, the JSON part (the message without `raw_body`), then `raw_body`'s
/// bytes as they are. A JSON message starts with `{` (or whitespace), so the two never meet. Binary
/// infer requests and their binary answers travel framed, which spares base64 and a large JSON
/// string on both sides (docs/protocol.md §7.4).
pub const FRAMED_INNER: u8 = 0x01;

/// Why an inner message's plaintext could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InnerMessageError {
    /// The JSON (of a JSON message, or of a framed one's JSON part) does not parse. Class and
    /// position only: serde's own text can quote the message.
    #[error("{} error at line {} column {}", class(.0), .0.line(), .0.column())]
    Json(serde_json::Error),
    #[error("framed inner message: {0}")]
    Frame(&'static str),
}

/// serde_json's error class (Syntax, Data, Eof, Io), by name.
fn class(e: &serde_json::Error) -> String {
    format!("{:?}", e.classify())
}

/// `json` and `raw` in the framed form.
fn frame(json: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + json.len() + raw.len());
    out.push(FRAMED_INNER);
    // A JSON part over 4 GiB cannot come out of a request the runtime accepts (8 MiB).
    out.extend_from_slice(&u32::try_from(json.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(raw);
    out
}

/// The JSON part and, for a framed message, the raw bytes.
fn unframe(plain: &[u8]) -> Result<(&[u8], Option<&[u8]>), InnerMessageError> {
    let Some((&FRAMED_INNER, rest)) = plain.split_first() else {
        return Ok((plain, None));
    };
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or(InnerMessageError::Frame("truncated length"))?;
    let (json, raw) = rest
        .split_at_checked(u32::from_be_bytes(*len) as usize)
        .ok_or(InnerMessageError::Frame(
            "JSON part longer than the message",
        ))?;
    Ok((json, Some(raw)))
}

/// An inner message's plaintext: its JSON, or framed when a raw body is taken out of it.
fn write_inner<T: serde::Serialize>(
    message: &T,
    raw: Option<Vec<u8>>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, serde_json::Error> {
    let json = zeroize::Zeroizing::new(serde_json::to_vec(message)?);
    Ok(match raw {
        Some(raw) => zeroize::Zeroizing::new(frame(&json, &zeroize::Zeroizing::new(raw))),
        None => json,
    })
}

/// Parses an inner message's plaintext, JSON or framed; a framed one's raw bytes become `raw_body`.
fn read_inner<T: serde::de::DeserializeOwned>(
    plain: &[u8],
    raw_body: impl FnOnce(&mut T) -> &mut Option<Vec<u8>>,
) -> Result<T, InnerMessageError> {
    let (json, raw) = unframe(plain)?;
    let mut message: T = serde_json::from_slice(json).map_err(InnerMessageError::Json)?;
    if let Some(raw) = raw {
        let slot = raw_body(&mut message);
        if slot.is_some() {
            return Err(InnerMessageError::Frame("raw_body given twice"));
        }
        *slot = Some(raw.to_vec());
    }
    Ok(message)
}

impl InnerRequest {
    /// The plaintext of this request: framed when it is an infer request carried as bytes (binary,
    /// or JSON with a content type: its body as it is), JSON otherwise (so that a peer from before
    /// the framed form reads every other request, the signed job requests included).
    /// Zeroized when dropped.
    pub fn into_plaintext(mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, serde_json::Error> {
        let framed = self.headers.contains_key(INFERENCE_HEADER_CONTENT_LENGTH)
            || self.headers.contains_key(CONTENT_TYPE_HEADER);
        let raw = match framed {
            true => self.raw_body.take(),
            false => None,
        };
        write_inner(&self, raw)
    }

    /// Reads a request's plaintext, JSON or framed.
    pub fn from_plaintext(plain: &[u8]) -> Result<InnerRequest, InnerMessageError> {
        read_inner(plain, |r: &mut InnerRequest| &mut r.raw_body)
    }
}

impl InnerResponse {
    /// The plaintext of this response: framed when it has a raw body, JSON otherwise. Zeroized
    /// when dropped.
    pub fn into_plaintext(mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, serde_json::Error> {
        let raw = self.raw_body.take();
        write_inner(&self, raw)
    }

    /// Reads a response's plaintext, JSON or framed.
    pub fn from_plaintext(plain: &[u8]) -> Result<InnerResponse, InnerMessageError> {
        read_inner(plain, |r: &mut InnerResponse| &mut r.raw_body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary_request() -> InnerRequest {
        InnerRequest {
            method: "POST".into(),
            path: "/v2/models/m/infer".into(),
            sent_at: Some(1_800_000_000),
            headers: BTreeMap::from([(INFERENCE_HEADER_CONTENT_LENGTH.into(), "2".into())]),
            raw_body: Some(b"{}\x01\x00{\xff".to_vec()),
            ..InnerRequest::default()
        }
    }

    /// A binary infer request travels framed, its body byte for byte; any other request with a
    /// raw body (a signed job request) stays JSON, which a peer from before the framed form reads.
    #[test]
    fn binary_requests_are_framed_and_read_back_exactly() {
        let plain = binary_request().into_plaintext().unwrap();
        assert_eq!(plain[0], FRAMED_INNER);
        assert!(plain.ends_with(b"{}\x01\x00{\xff"));
        let back = InnerRequest::from_plaintext(&plain).unwrap();
        assert_eq!(back.raw_body, binary_request().raw_body);
        assert_eq!(
            (back.sent_at, back.path),
            (Some(1_800_000_000), "/v2/models/m/infer".into())
        );

        let mut signed = binary_request();
        signed.headers.clear();
        let plain = signed.clone().into_plaintext().unwrap();
        assert_eq!(plain[0], b'{');
        let old: InnerRequest = serde_json::from_slice(&plain).unwrap();
        assert_eq!(old.raw_body, signed.raw_body);
        assert_eq!(
            InnerRequest::from_plaintext(&plain).unwrap().raw_body,
            signed.raw_body
        );

        let resp = InnerResponse {
            raw_body: Some(vec![0, 1, 2]),
            ..InnerResponse::json(200, serde_json::Value::Null)
        };
        let plain = resp.into_plaintext().unwrap();
        assert_eq!(plain[0], FRAMED_INNER);
        assert_eq!(
            InnerResponse::from_plaintext(&plain).unwrap().raw_body,
            Some(vec![0, 1, 2])
        );
        let plain = InnerResponse::json(404, serde_json::json!({"error": "x"}))
            .into_plaintext()
            .unwrap();
        assert_eq!(InnerResponse::from_plaintext(&plain).unwrap().status, 404);
    }

    /// Debug shows what a message is, never its bodies (the client's plaintext).
    #[test]
    fn debug_never_shows_a_body() {
        let mut r = binary_request();
        r.body = Some(serde_json::json!({"inputs": [{"data": [31337]}]}));
        let text = format!("{r:?}");
        assert!(
            text.contains("/v2/models/m/infer") && text.contains("<6 bytes>"),
            "{text}"
        );
        assert!(!text.contains("31337") && !text.contains("255"), "{text}");
        let resp = InnerResponse::json(200, serde_json::json!({"outputs": [{"data": [31337]}]}));
        let text = format!("{resp:?}");
        assert!(text.contains("<JSON>") && !text.contains("31337"), "{text}");
    }

    /// A framed message cut short, with a length past its end, or with a second raw body in its
    /// JSON part is refused with the reason, never a panic.
    #[test]
    fn malformed_frames_are_refused() {
        let plain = binary_request().into_plaintext().unwrap();
        for cut in [1, 3, 5, 20] {
            let e = InnerRequest::from_plaintext(&plain[..cut]).unwrap_err();
            assert!(
                matches!(e, InnerMessageError::Frame(_) | InnerMessageError::Json(_)),
                "{e}"
            );
        }
        let mut long = plain.to_vec();
        long[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(InnerRequest::from_plaintext(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than the message"));
        let mut twice = binary_request();
        twice.headers.clear();
        let json = serde_json::to_vec(&twice).unwrap();
        let framed = frame(&json, b"more");
        let e = InnerRequest::from_plaintext(&framed).unwrap_err();
        assert!(e.to_string().contains("raw_body given twice"), "{e}");
        let e = InnerRequest::from_plaintext(b"\x01\x00\x00\x00\x02{x").unwrap_err();
        assert!(e.to_string().starts_with("Syntax error"), "{e}");
    }
}
