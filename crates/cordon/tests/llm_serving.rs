//! A sealed language model served with OpenAI's chat completions API, end to end on loopback:
//! Gemma 3 270M (GGUF, from PyPI through scripts/fetch-gemma3.sh) sealed with `cordon seal`, its
//! key released by the KBS to an attested `cordon runtime serve`, and `cordon proxy` exposing the
//! API in plain form to an unmodified client. Checks that
//! - greedy replies through the whole chain equal llama.cpp's (testdata/llm, for the prompts
//!   whose reference has no near tie), whole and streamed alike;
//! - `stop`, usage, `/v1/models` and the refusals behave as OpenAI's API does;
//! - a streamed answer the host alters in flight never reaches the application as a clean
//!   stream (the proxy sends an error event and aborts), and a stream cut short, reordered or
//!   with a frame repeated is refused by the client's opener.

mod common;
#[path = "common/relay.rs"]
mod relay;

use common::*;
use cordon_proto::runtime::InnerRequest;
use cordon_proto::stream::StreamError;
use relay::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn gguf_path() -> String {
    let script = repo().join("scripts/fetch-gemma3.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "fetching Gemma 3 270M failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn reference() -> Value {
    let path = repo().join("testdata/llm/gemma3-270m-q4km-llamacpp-greedy.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

struct Served {
    dir: tempfile::TempDir,
    _kbs: Proc,
    runtime: Proc,
    runtime_url: String,
    client_policy: PathBuf,
}

/// Seals the model, registers its key, boots a runtime that serves it.
fn serve_sealed_gemma() -> Served {
    let gguf = gguf_path();
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    ok(&[
        "seal",
        &gguf,
        "--out",
        &s(&p("gemma.sealed")),
        "--key-out",
        &s(&p("gemma.dek")),
        "--owner-key",
        &s(&p("owner.key")),
        "--name",
        "gemma-3-270m",
    ]);
    let (kbs, kbs_url) = start_kbs(dir.path(), "kbs");
    let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
    let config = format!(
        "kbs_url = \"{kbs_url}\"\n\n[[models]]\nname = \"gemma-3-270m\"\npath = \"{}\"\n\
         signer = \"{}\"\n\n[models.llm]\narchitecture = \"gemma3\"\ncontext_tokens = 1024\n\
         max_tokens = 64\n",
        s(&p("gemma.sealed")),
        signer.trim(),
    );
    std::fs::write(p("runtime.toml"), &config).unwrap();
    let (release, client_policy, _) = sim_policies(dir.path(), &p("runtime.toml"), "gemma");
    ok(&[
        "kbs",
        "register",
        "--kbs",
        &kbs_url,
        "--kbs-key",
        &kbs_key(dir.path(), "kbs"),
        "--token-file",
        &s(&p("token")),
        "--key",
        &s(&p("gemma.dek")),
        "--policy",
        &s(&release),
    ]);
    let (runtime, runtime_url) = start_runtime(dir.path(), &p("runtime.toml"), "runtime");
    Served {
        dir,
        _kbs: kbs,
        runtime,
        runtime_url,
        client_policy,
    }
}

fn chat(text: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "gemma-3-270m",
        "messages": [{"role": "user", "content": text}],
        "temperature": 0,
        "max_tokens": 32,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn rand_bytes() -> [u8; 32] {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    b
}

/// The data of each server-sent event of a body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_gemma_answers_unmodified_openai_clients_through_the_proxy() {
    let served = serve_sealed_gemma();
    let reference = reference();
    let relay = Relay::start("proxy→runtime", &served.runtime_url);
    let (proxy, proxy_url) = start_proxy(
        served.dir.path(),
        &relay.url,
        &served.client_policy,
        "proxy",
        &[],
    );
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("{proxy_url}/v1/chat/completions"))
            .json(&body)
            .send()
    };

    // OpenAI's official Python client, unmodified, whole and streamed: llama.cpp's tokens.
    let python = python_clients();
    let french = reference["prompts"][1]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let script = repo().join("crates/cordon/tests/stock_clients/openai_chat.py");
    let (py_url, py_model, py_prompt) = (proxy_url.clone(), "gemma-3-270m", french.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .args([&py_url, py_model, &py_prompt])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "openai client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = reference["prompts"][1]["generated_text"].as_str().unwrap();
    assert_eq!(py["models"], json!(["gemma-3-270m"]), "{py}");
    assert_eq!(py["whole"], expected, "{py}");
    assert_eq!(py["streamed"], expected, "{py}");
    assert!(py["streamed_pieces"].as_u64().unwrap() > 10, "{py}");
    assert_eq!(py["whole_finish"], "length");
    assert_eq!(py["streamed_finish"], "length");
    assert_eq!(py["whole_completion_tokens"], 32);
    assert_eq!(py["streamed_completion_tokens"], 32);
    assert_eq!(py["refused"]["status"], 404, "{py}");

    let models: Value = http
        .get(format!("{proxy_url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "gemma-3-270m", "{models}");

    // Greedy replies equal llama.cpp's, whole and streamed, for the prompts without a near tie.
    for i in [1usize, 2] {
        let case = &reference["prompts"][i];
        let text = case["text"].as_str().unwrap();
        let expected = case["generated_text"].as_str().unwrap();
        let prompt_tokens = case["prompt_tokens"].as_array().unwrap().len() as u64;

        let resp = post(chat(text, json!({}))).await.unwrap();
        assert_eq!(resp.status(), 200);
        let whole: Value = resp.json().await.unwrap();
        assert_eq!(
            whole["choices"][0]["message"]["content"], expected,
            "prompt {i}"
        );
        assert_eq!(whole["choices"][0]["finish_reason"], "length");
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["usage"]["prompt_tokens"], prompt_tokens);
        assert_eq!(whole["usage"]["completion_tokens"], 32);

        let resp = post(chat(
            text,
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        let body = resp.text().await.unwrap();
        let ev = events(&body);
        assert_eq!(ev.last().unwrap(), "[DONE]", "{body}");
        let chunks: Vec<Value> = ev[..ev.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let streamed: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(streamed, expected, "prompt {i}, streamed");
        assert!(
            chunks.len() > 10,
            "one event per piece of text: {}",
            chunks.len()
        );
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        let usage = &chunks[chunks.len() - 1];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 32);
    }

    // A stop sequence ends the reply before it, whole and streamed.
    let french = reference["prompts"][1]["text"].as_str().unwrap();
    let expected = reference["prompts"][1]["generated_text"].as_str().unwrap();
    let cut = &expected[..expected.find("Montr").unwrap()];
    let whole: Value = post(chat(french, json!({"stop": ["Montr"]})))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(whole["choices"][0]["message"]["content"], cut);
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    let body = post(chat(french, json!({"stop": "Montr", "stream": true})))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed: String = events(&body)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(streamed, cut);

    // Refusals, in OpenAI's shape, naming the parameter and never the text.
    for (body, status, needle) in [
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "secret words"}]}),
            404,
            "is not served here",
        ),
        (
            chat("secret words", json!({"max_tokens": 65})),
            400,
            "above this model's limit of 64",
        ),
        (chat("secret words", json!({"n": 2})), 400, "n = 2"),
        (
            chat("secret words", json!({"temperature": 3})),
            400,
            "temperature",
        ),
        (
            json!({"model": "gemma-3-270m", "messages": [{"role": "tool", "content": "secret words"}]}),
            400,
            "role \"tool\"",
        ),
        (
            chat(&"secret words ".repeat(1000), json!({})),
            400,
            "context of 1024 tokens",
        ),
        (
            chat(
                "secret words",
                json!({"response_format": {"type": "json_object"}}),
            ),
            400,
            "response_format",
        ),
    ] {
        let resp = post(body).await.unwrap();
        let got = resp.status().as_u16();
        let err: Value = resp.json().await.unwrap();
        assert_eq!(got, status, "{needle}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{needle}: {message}");
        assert!(!message.contains("secret"), "{message}");
    }

    let mut flipped = 0;
    // The host flips a byte of a streamed answer (its last frame, then a middle one): the
    // application gets what authenticated before, an error event, and a cut connection; never
    // `[DONE]`.
    for pos in [Pos::Last, Pos::Middle] {
        for path in ["/v1/session/message", "/v1/encrypted"] {
            let before = relay.count();
            relay.set_tamper(Some(Tamper::new("POST", path, Dir::Response, pos.clone())));
            let mut resp = post(chat(french, json!({"stream": true, "max_tokens": 8})))
                .await
                .unwrap();
            let mut body = Vec::new();
            let cut = loop {
                match resp.chunk().await {
                    Ok(Some(b)) => body.extend_from_slice(&b),
                    Ok(None) => break false,
                    Err(_) => break true,
                }
            };
            let text = String::from_utf8_lossy(&body);
            if !relay.since(before).iter().any(|e| e.tampered.is_some()) {
                // The proxy sent this request the other way (session or one-shot).
                continue;
            }
            flipped += 1;
            assert!(cut, "{pos:?} {path}: the connection ended cleanly: {text}");
            assert!(!text.contains("[DONE]"), "{pos:?} {path}: {text}");
            assert!(
                text.contains("sealed stream frame"),
                "{pos:?} {path}: no error event: {}",
                &text[text.len().saturating_sub(600)..]
            );
        }
    }
    assert!(flipped >= 2, "the relay flipped {flipped} streamed answers");
    relay.set_tamper(None);
    let ok_again = post(chat(french, json!({"max_tokens": 4}))).await.unwrap();
    assert_eq!(ok_again.status(), 200);

    // Signed completions, checked offline with `cordon verify-response`: whole (signature in
    // the header) and streamed (in the last line); a changed answer, another request or another
    // attestation nonce is refused.
    let nonce = hex::encode(rand_bytes());
    let att = http
        .get(format!(
            "{}/v1/attestation?nonce={nonce}",
            served.runtime_url
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let p = |n: &str| served.dir.path().join(n);
    std::fs::write(p("att.json"), &att).unwrap();
    let verify = |request: &str, response: &str, signature: Option<&str>, nonce: &str| {
        let mut args = vec![
            "verify-response".to_string(),
            "--attestation".into(),
            s(&p("att.json")),
            "--nonce".into(),
            nonce.to_string(),
            "--policy".into(),
            s(&served.client_policy),
            "--request".into(),
            s(&p(request)),
            "--response".into(),
            s(&p(response)),
        ];
        if let Some(sig) = signature {
            args.push("--signature".into());
            args.push(sig.into());
        }
        cordon(&args)
    };
    for stream in [false, true] {
        let request =
            serde_json::to_vec(&chat(french, json!({"max_tokens": 6, "stream": stream}))).unwrap();
        let resp = http
            .post(format!("{proxy_url}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(request.clone())
            .send()
            .await
            .unwrap();
        let signature = resp
            .headers()
            .get("cordon-signature")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(signature.is_some(), !stream);
        let body = resp.bytes().await.unwrap().to_vec();
        std::fs::write(p("req.json"), &request).unwrap();
        std::fs::write(p("resp.txt"), &body).unwrap();
        let out = verify("req.json", "resp.txt", signature.as_deref(), &nonce);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("response valid"),
            "stream {stream}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut changed = body.clone();
        let at = body.len() / 2;
        changed[at] = if changed[at] == b'a' { b'b' } else { b'a' };
        std::fs::write(p("changed.txt"), &changed).unwrap();
        std::fs::write(p("other.json"), b"{\"model\":\"gemma-3-270m\"}").unwrap();
        let other_nonce = hex::encode(rand_bytes());
        for (req, resp, nonce, needle) in [
            ("req.json", "changed.txt", nonce.as_str(), "does not verify"),
            ("other.json", "resp.txt", nonce.as_str(), "does not verify"),
            ("req.json", "resp.txt", other_nonce.as_str(), "not bound"),
        ] {
            let out = verify(req, resp, signature.as_deref(), nonce);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "stream {stream} {req} {resp}: accepted"
            );
            assert!(err.contains(needle), "stream {stream} {req} {resp}: {err}");
        }
    }

    // Nothing of the prompts or replies in the runtime's or the proxy's logs (the host keeps
    // them).
    for log in [served.runtime.log(), proxy.log()] {
        assert!(!log.contains("Montr"), "{log}");
        assert!(!log.contains("secret words"), "{log}");
    }
}

/// A stream cut short, with a frame repeated or frames swapped, is refused by the opener the
/// client and proxy use; only the untouched stream opens to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_reordered_or_repeated_by_the_host_is_refused() {
    let served = serve_sealed_gemma();
    let policy = cordon_attest::PolicyDocument::from_toml(
        &std::fs::read_to_string(&served.client_policy).unwrap(),
    )
    .unwrap();
    let rt = cordon_client::connect(&served.runtime_url, &policy, std::time::SystemTime::now())
        .await
        .unwrap();
    let keys = rt.keys().clone();
    let http = reqwest::Client::new();
    // One streamed request, encrypted by hand: its raw answer and the context that opens it.
    let stream_once = || async {
        let mut inner = InnerRequest {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            body: Some(chat("Hi", json!({"stream": true, "max_tokens": 6}))),
            ..InnerRequest::default()
        };
        inner.sent_at = Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        let plain = inner.into_plaintext().unwrap();
        let (msg, ctx) = cordon_proto::channel::encapsulate_request(
            &keys.hpke_public_key,
            keys.hpke_key_id,
            &plain,
        )
        .unwrap();
        let resp = http
            .post(format!("{}/v1/encrypted", served.runtime_url))
            .header("content-type", "message/cordon-request")
            .body(msg)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            cordon_proto::stream::SEALED_STREAM_MEDIA_TYPE
        );
        (resp.bytes().await.unwrap().to_vec(), ctx)
    };
    /// The frames of a one-shot stream: (prefix, [frame]).
    fn split(bytes: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (prefix, mut rest) = bytes.split_at(32);
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            frames.push(rest[..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        (prefix.to_vec(), frames)
    }
    fn open(ctx: cordon_proto::ClientResponseContext, bytes: &[u8]) -> Result<usize, StreamError> {
        let mut o = ctx.into_stream();
        o.push(bytes)?;
        let mut n = 0;
        while o.next_piece()?.is_some() {
            n += 1;
        }
        o.finish()?;
        Ok(n)
    }

    let (bytes, ctx) = stream_once().await;
    let (_, frames) = split(&bytes);
    assert!(frames.len() >= 4, "head, role, text, end: {}", frames.len());
    assert_eq!(open(ctx, &bytes).unwrap(), frames.len());

    let (bytes, ctx) = stream_once().await;
    let (prefix, frames) = split(&bytes);
    let cut = [prefix.clone(), frames[..frames.len() - 1].concat()].concat();
    assert!(matches!(
        open(ctx, &cut),
        Err(StreamError::Truncated { .. })
    ));

    let (bytes, ctx) = stream_once().await;
    let (prefix, mut frames) = split(&bytes);
    frames.swap(1, 2);
    let swapped = [prefix, frames.concat()].concat();
    assert!(matches!(
        open(ctx, &swapped),
        Err(StreamError::Decrypt { index: 1 })
    ));

    let (bytes, ctx) = stream_once().await;
    let (prefix, frames) = split(&bytes);
    let repeated = [
        prefix,
        frames[0].clone(),
        frames[0].clone(),
        frames[1..].concat(),
    ]
    .concat();
    assert!(matches!(
        open(ctx, &repeated),
        Err(StreamError::Decrypt { index: 1 })
    ));
}
