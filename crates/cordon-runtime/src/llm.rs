//! Language models, served with OpenAI's chat completions API inside the encrypted channel:
//! `POST /v1/chat/completions` (whole, or streamed as server-sent events in a sealed stream) and
//! `GET /v1/models`. docs/protocol.md §7.8.
//!
//! A completion runs on a blocking thread, holding one of the runtime's workers for its whole
//! length; its pieces reach the connection through a bounded channel, so a slow or gone client
//! stops the generation instead of piling up text. Neither prompts nor replies are logged, and
//! errors name parameters and sizes, never text.

use crate::config::LlmConfig;
use cordon_llm::{Finish, LlmError, LlmModel, Message, Sampling, TokenId};
use cordon_proto::openai::{
    self, AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
    ChunkChoice, Delta, ModelCard, ModelList, Usage,
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

/// A language model the runtime serves.
pub struct ServedLlm {
    pub model: LlmModel,
    pub config: LlmConfig,
    pub manifest_sha256: [u8; 32],
    pub version: String,
    /// When it was loaded (Unix seconds): `created` of `/v1/models`.
    pub loaded_at: u64,
}

/// A refusal, as OpenAI shapes it: the status and `{"error": {"message", "type", ...}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    pub(crate) fn body(&self) -> serde_json::Value {
        let kind = match self.status {
            400 | 404 | 413 => "invalid_request_error",
            503 => "server_busy",
            _ => "server_error",
        };
        openai::error_body(&self.message, kind)
    }
}

/// `GET /v1/models`: every language model served.
pub(crate) fn model_list<'a>(llms: impl Iterator<Item = (&'a String, &'a ServedLlm)>) -> ModelList {
    ModelList {
        object: "list".into(),
        data: llms
            .map(|(name, m)| ModelCard {
                id: name.clone(),
                object: "model".into(),
                created: m.loaded_at,
                owned_by: "cordon".into(),
            })
            .collect(),
    }
}

/// A checked chat completion request: the prompt's tokens and what to do with them.
pub(crate) struct Completion {
    pub model: String,
    pub prompt: Vec<TokenId>,
    pub sampling: Sampling,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

impl std::fmt::Debug for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("model", &self.model)
            .field("prompt_tokens", &self.prompt.len())
            .field("max_tokens", &self.max_tokens)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Most stop sequences, and the longest one, a request may give (OpenAI allows four).
const MAX_STOPS: usize = 4;
const MAX_STOP_BYTES: usize = 256;

/// Checks a request against the model and its limits and renders its prompt. Refusals name the
/// parameter, never the text.
pub(crate) fn prepare(
    name: &str,
    llm: &ServedLlm,
    req: &ChatCompletionRequest,
) -> Result<Completion, ApiError> {
    if let Some(n) = req.n.filter(|n| *n != 1) {
        return Err(ApiError::bad(format!(
            "n = {n}: one choice per request is served"
        )));
    }
    if req.logprobs == Some(true) {
        return Err(ApiError::bad("logprobs are not served"));
    }
    if req
        .tools
        .as_ref()
        .is_some_and(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
    {
        return Err(ApiError::bad("tools are not served"));
    }
    if let Some(format) = &req.response_format {
        if format.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(ApiError::bad(
                "response_format: only {\"type\": \"text\"} is served",
            ));
        }
    }
    if req.messages.is_empty() {
        return Err(ApiError::bad("messages: at least one message is needed"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let text = match &m.content {
            Some(c) => c
                .text()
                .map_err(|e| ApiError::bad(format!("messages[{i}]: {e}")))?,
            None => return Err(ApiError::bad(format!("messages[{i}] has no content"))),
        };
        messages.push(match m.role.as_str() {
            "system" | "developer" => Message::system(text),
            "user" => Message::user(text),
            "assistant" => Message::assistant(text),
            other => {
                return Err(ApiError::bad(format!(
                    "messages[{i}]: role {:?} is not served (system, developer, user, assistant)",
                    shorten(other)
                )))
            }
        });
    }
    let cap = llm.config.max_tokens as usize;
    let asked = match (req.max_tokens, req.max_completion_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let max_tokens = match asked {
        // Left out: as much as the context leaves, up to the cap (settled below).
        None => 0,
        Some(0) => return Err(ApiError::bad("max_tokens must be at least 1")),
        Some(n) if n > cap as u64 => {
            return Err(ApiError::bad(format!(
                "max_tokens {n} is above this model's limit of {cap}"
            )))
        }
        Some(n) => n as usize,
    };
    let stop: Vec<String> = req
        .stop
        .as_ref()
        .map(|s| s.strings().into_iter().map(String::from).collect())
        .unwrap_or_default();
    if stop.len() > MAX_STOPS {
        return Err(ApiError::bad(format!(
            "stop: {} sequences given, at most {MAX_STOPS}",
            stop.len()
        )));
    }
    if stop
        .iter()
        .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return Err(ApiError::bad(format!(
            "stop: each sequence must have 1 to {MAX_STOP_BYTES} bytes"
        )));
    }
    let sampling = Sampling {
        temperature: req.temperature.unwrap_or(1.0) as f32,
        top_p: req.top_p.unwrap_or(1.0) as f32,
        seed: req.seed.unwrap_or_else(|| rand::rng().next_u64()),
    };
    // Checked here so that a bad value is a 400 before anything runs.
    cordon_llm::Sampler::new(&sampling).map_err(llm_error)?;
    let prompt = llm.model.chat_prompt(&messages).map_err(llm_error)?;
    let room = llm.model.context().saturating_sub(prompt.len());
    let max_tokens = if max_tokens == 0 {
        cap.min(room).max(1)
    } else {
        max_tokens
    };
    let needed = prompt.len().saturating_add(max_tokens);
    if needed > llm.model.context() {
        return Err(ApiError::bad(format!(
            "the prompt has {} tokens; with max_tokens {max_tokens} that is {needed}, more than \
             this model's context of {} tokens",
            prompt.len(),
            llm.model.context()
        )));
    }
    Ok(Completion {
        model: name.to_string(),
        prompt,
        sampling,
        max_tokens,
        stop,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

fn shorten(s: &str) -> String {
    s.chars().take(32).collect()
}

fn llm_error(e: LlmError) -> ApiError {
    match e {
        LlmError::BadParameter { .. } | LlmError::ContextTooLong { .. } | LlmError::Chat(_) => {
            ApiError::bad(e.to_string())
        }
        other => ApiError {
            status: 500,
            message: format!("generation failed: {other}"),
        },
    }
}

/// What a streamed generation hands to its connection: server-sent events, the last marked.
pub(crate) enum StreamItem {
    Data(Zeroizing<Vec<u8>>),
    /// The stream's last events: the finish (or an error) and `[DONE]`.
    End(Zeroizing<Vec<u8>>),
}

/// Runs `c` to its end on the calling (blocking) thread, sending its events as they are produced.
/// Stops early when the receiver is gone (the client left).
pub(crate) fn generate(
    llm: &ServedLlm,
    c: &Completion,
    events: &EventWriter,
    signer: Option<&Signer<'_>>,
    out: &mpsc::Sender<StreamItem>,
) {
    // Every byte of the event stream goes into the hash the signature covers.
    let mut hash = Sha256::new();
    let mut send = |bytes: Vec<u8>| {
        hash.update(&bytes);
        out.blocking_send(StreamItem::Data(Zeroizing::new(bytes)))
            .is_ok()
    };
    if !send(events.start()) {
        return;
    }
    let result = run(llm, c, &AtomicBool::new(false), |text| {
        send(events.text(text))
    });
    let mut last = match result {
        Ok(Some((finish, completion_tokens))) => events.end(
            finish,
            Usage {
                prompt_tokens: c.prompt.len() as u64,
                completion_tokens,
                total_tokens: c.prompt.len() as u64 + completion_tokens,
            },
        ),
        // The client left: nobody to tell.
        Ok(None) => return,
        Err(e) => {
            let mut b = events.error(&e.message);
            b.extend_from_slice(openai::SSE_DONE);
            b
        }
    };
    hash.update(&last);
    if let Some(signer) = signer {
        let signature = signer.sign(&hash.finalize().into());
        last.extend(openai::stream_signature_event(&signature));
    }
    let _ = out.blocking_send(StreamItem::End(Zeroizing::new(last)));
}

/// Signs completions for one request: the runtime's attested signing key and the SHA-256 of the
/// request body as the client sent it (docs/protocol.md §7.9).
pub(crate) struct Signer<'k> {
    pub key: &'k ed25519_dalek::SigningKey,
    pub request_sha256: [u8; 32],
}

impl Signer<'_> {
    pub(crate) fn sign(&self, response_sha256: &[u8; 32]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key
            .sign(&openai::signing_message(
                &self.request_sha256,
                response_sha256,
            ))
            .to_bytes()
    }

    /// A whole completion's bytes and their signature.
    pub(crate) fn sign_whole(&self, completion: &ChatCompletion) -> (Vec<u8>, [u8; 64]) {
        // A struct of strings and numbers always serializes.
        let bytes = serde_json::to_vec(completion).unwrap_or_default();
        let signature = self.sign(&Sha256::digest(&bytes).into());
        (bytes, signature)
    }
}

/// The generation loop: decodes tokens to text (whole characters only), holds back text that may
/// begin a stop sequence, and ends at a stop token, a stop sequence or `max_tokens`. `emit`
/// returns false to stop (then `Ok(None)`). Returns the finish reason and the tokens generated.
fn run(
    llm: &ServedLlm,
    c: &Completion,
    cancel: &AtomicBool,
    mut emit: impl FnMut(String) -> bool,
) -> Result<Option<(&'static str, u64)>, ApiError> {
    let mut generation = llm
        .model
        .start(&c.prompt, &c.sampling, c.max_tokens)
        .map_err(llm_error)?;
    let tokenizer = llm.model.tokenizer();
    let mut bytes = Zeroizing::new(Vec::new());
    let mut utf8 = Utf8Decoder::default();
    let mut text = Zeroizing::new(String::new());
    let mut sent = 0usize;
    let mut produced = 0u64;
    let hold = c.stop.iter().map(String::len).max().unwrap_or(0);
    loop {
        // Nobody waits for the answer any more (the client left, or its deadline passed).
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let token = generation.next_token().map_err(llm_error)?;
        let Some(token) = token else {
            break;
        };
        produced += 1;
        bytes.clear();
        tokenizer.decode_into(token, false, &mut bytes);
        text.push_str(&utf8.push(&bytes));
        if let Some(at) = find_stop(&text, sent, hold, &c.stop) {
            if at > sent && !emit(text[sent..at].to_string()) {
                return Ok(None);
            }
            return Ok(Some(("stop", produced)));
        }
        let ready = safe_end(&text, &c.stop);
        if ready > sent {
            if !emit(text[sent..ready].to_string()) {
                return Ok(None);
            }
            sent = ready;
        }
    }
    text.push_str(&utf8.finish());
    if let Some(at) = find_stop(&text, sent, hold, &c.stop) {
        if at > sent && !emit(text[sent..at].to_string()) {
            return Ok(None);
        }
        return Ok(Some(("stop", produced)));
    }
    if text.len() > sent && !emit(text[sent..].to_string()) {
        return Ok(None);
    }
    let finish = match generation.finish() {
        Some(Finish::Length) => "length",
        _ => "stop",
    };
    Ok(Some((finish, produced)))
}

/// Where the first stop sequence starts, looking only where a new one could (from `hold` bytes
/// before the text not yet sent).
fn find_stop(text: &str, sent: usize, hold: usize, stops: &[String]) -> Option<usize> {
    let mut from = sent.saturating_sub(hold);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
        .min()
}

/// The end of the text that can be sent: all of it but a tail that could be the start of a stop
/// sequence.
fn safe_end(text: &str, stops: &[String]) -> usize {
    let mut keep = 0;
    for s in stops {
        for (k, _) in s.char_indices().skip(1) {
            if k > keep && text.ends_with(&s[..k]) {
                keep = k;
            }
        }
    }
    text.len() - keep
}

/// Turns token bytes into text as they come: a character split across tokens waits for its
/// other bytes; bytes that can never be UTF-8 become U+FFFD.
#[derive(Default)]
struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Checked just above: the prefix is UTF-8.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// A whole completion: runs it and answers with `chat.completion`.
pub(crate) fn complete(
    llm: &ServedLlm,
    c: &Completion,
    id: &str,
    created: u64,
    cancel: &AtomicBool,
) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    let Some((finish, produced)) = run(llm, c, cancel, |t| {
        content.push_str(&t);
        true
    })?
    else {
        return Err(ApiError {
            status: 499,
            message: "the client left before the completion ended".into(),
        });
    };
    Ok(ChatCompletion {
        id: id.to_string(),
        object: "chat.completion".into(),
        created,
        model: c.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant".into(),
                content,
            },
            finish_reason: finish.into(),
        }],
        usage: Usage {
            prompt_tokens: c.prompt.len() as u64,
            completion_tokens: produced,
            total_tokens: c.prompt.len() as u64 + produced,
        },
    })
}

/// The server-sent events of a streamed completion, as OpenAI sends them: a first chunk with the
/// role, one per piece of text, one with the finish reason, the usage when asked for, `[DONE]`.
pub(crate) struct EventWriter {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

impl EventWriter {
    fn chunk(&self, delta: Delta, finish: Option<&str>, usage: Option<Usage>) -> Vec<u8> {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: if usage.is_some() {
                vec![]
            } else {
                vec![ChunkChoice {
                    index: 0,
                    delta,
                    finish_reason: finish.map(String::from),
                }]
            },
            usage,
            obfuscation: None,
        };
        openai::sse_event(&padded(chunk))
    }

    pub(crate) fn start(&self) -> Vec<u8> {
        self.chunk(
            Delta {
                role: Some("assistant".into()),
                content: Some(String::new()),
            },
            None,
            None,
        )
    }

    pub(crate) fn text(&self, text: String) -> Vec<u8> {
        let text = Zeroizing::new(text);
        self.chunk(
            Delta {
                role: None,
                content: Some(text.to_string()),
            },
            None,
            None,
        )
    }

    /// The events that end the stream.
    pub(crate) fn end(&self, finish: &str, usage: Usage) -> Vec<u8> {
        let mut out = self.chunk(Delta::default(), Some(finish), None);
        if self.include_usage {
            out.extend(self.chunk(Delta::default(), None, Some(usage)));
        }
        out.extend_from_slice(openai::SSE_DONE);
        out
    }

    /// An error after the stream began: OpenAI's clients raise it. Padded like the chunks (with
    /// JSON whitespace), so its size does not stand out.
    pub(crate) fn error(&self, message: &str) -> Vec<u8> {
        let mut json = openai::error_body(message, "server_error").to_string();
        let pad = (PAD_TO - json.len() % PAD_TO) % PAD_TO;
        json.extend(std::iter::repeat_n(' ', pad));
        openai::sse_event(&json)
    }
}

/// Events are padded to a multiple of this many bytes of JSON.
const PAD_TO: usize = 128;

/// The chunk's JSON with an `obfuscation` string that brings it to a multiple of [`PAD_TO`]
/// bytes: a frame's size then says how many blocks of 128 bytes of text it holds, not how long
/// each token is (which is enough to guess replies, Weiss et al., 2024).
fn padded(mut chunk: ChatCompletionChunk) -> String {
    // A struct of strings and numbers always serializes. Serialized once per token: the padding
    // goes into the empty `obfuscation` string, the struct's last field, which ends the JSON
    // with `""}`.
    chunk.obfuscation = Some(String::new());
    let mut json = serde_json::to_string(&chunk).unwrap_or_default();
    let pad = (PAD_TO - json.len() % PAD_TO) % PAD_TO;
    if let Some(at) = json.len().checked_sub(2) {
        json.insert_str(at, &"x".repeat(pad));
    }
    json
}

/// A fresh completion id.
pub(crate) fn completion_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    format!("chatcmpl-{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_characters_wait_for_their_bytes_and_bad_bytes_become_replacements() {
        let mut d = Utf8Decoder::default();
        let e = "é".as_bytes();
        assert_eq!(d.push(&e[..1]), "");
        assert_eq!(d.push(&e[1..]), "é");
        let fish = "🐟".as_bytes();
        assert_eq!(d.push(&fish[..2]), "");
        assert_eq!(d.push(&fish[2..3]), "");
        assert_eq!(d.push(&[fish[3], b'a']), "🐟a");
        assert_eq!(d.push(&[0xff, b'b']), "\u{fffd}b");
        assert_eq!(d.push(&e[..1]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn every_event_is_padded_to_the_same_blocks_whatever_its_text() {
        let w = EventWriter {
            id: completion_id(),
            created: 1,
            model: "m".into(),
            include_usage: true,
        };
        let sizes: Vec<usize> = ["a", "abcdefghijkl", "é", "🐟🐟🐟", "<end_of_turn>"]
            .iter()
            .map(|t| w.text(t.to_string()).len())
            .collect();
        assert!(sizes.iter().all(|s| *s == sizes[0]), "{sizes:?}");
        assert_eq!((sizes[0] - 8) % PAD_TO, 0);
        // Still a chunk OpenAI's clients read.
        let event = w.text("hi".into());
        let json = std::str::from_utf8(&event).unwrap();
        let chunk: ChatCompletionChunk =
            serde_json::from_str(json.trim_start_matches("data: ").trim_end()).unwrap();
        assert_eq!(chunk.choices[0].delta.content.as_deref(), Some("hi"));
    }

    #[test]
    fn text_that_may_begin_a_stop_sequence_is_held_back() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(safe_end("hello E", &stops), 6);
        assert_eq!(safe_end("hello EN", &stops), 6);
        assert_eq!(safe_end("hello\n", &stops), 5);
        assert_eq!(safe_end("hello", &stops), 5);
        assert_eq!(find_stop("ab END cd", 0, 3, &stops), Some(3));
        // Found across what was sent and what was not.
        assert_eq!(find_stop("abcEN", 3, 3, &stops), None);
        assert_eq!(find_stop("abcEND", 3, 3, &stops), Some(3));
        assert_eq!(find_stop("é\n\n", 2, 2, &stops), Some(2));
        assert_eq!(find_stop("éé", 3, 2, &stops), None);
    }
}
