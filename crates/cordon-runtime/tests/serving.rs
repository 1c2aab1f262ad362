//! The runtime's serving surface over loopback: the Open Inference Protocol inside the encrypted
//! channel (one-shot and session mode), session replay/reorder/expiry, backpressure, body limits and
//! metrics. The runtime is built in process with a simulated TEE (no KBS: models are loaded from
//! the repository's ONNX files, as boot would after unsealing them).

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_client::{connect_with, ClientError, VerifiedRuntime};
use cordon_proto::oip::{InferRequest, Tensor};
use cordon_proto::runtime::InnerRequest;
use cordon_proto::session::{start_session, SessionSetup, SESSION_MESSAGE_MEDIA_TYPE};
use cordon_proto::{RuntimeKeys, ServiceKeyPair};
use cordon_runtime::{OnnxModel, RuntimeState, ServedModel, ServingOptions, SessionLimits};
use cordon_tee::{SimHardwareKey, SimTee};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const LR: &[u8] = include_bytes!("../../../models/breast_cancer_lr.onnx");
const MLP: &[u8] = include_bytes!("../../../models/breast_cancer_mlp.onnx");
const TEST_SET: &str = include_str!("../../../models/reference/breast_cancer_test.json");
const LR_EXPECTED: &str = include_str!("../../../models/reference/breast_cancer_lr.expected.json");
const DATATYPES: &[u8] = include_bytes!("../../../models/oip/datatypes.onnx");
const MEASUREMENT: [u8; 48] = [0x42; 48];

struct Harness {
    url: String,
    policy: Policy,
    endorsements: Endorsements,
    state: Arc<RuntimeState>,
}

impl Harness {
    async fn verified(&self) -> VerifiedRuntime {
        connect_with(
            &self.url,
            &self.policy,
            &self.endorsements,
            SystemTime::now(),
        )
        .await
        .unwrap()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

async fn start(options: ServingOptions) -> Harness {
    start_with(options, std::future::pending()).await.0
}

/// A runtime that stops when `shutdown` completes; the handle ends when the server has drained.
async fn start_with(
    options: ServingOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Harness, tokio::task::JoinHandle<()>) {
    let hw = SimHardwareKey::generate();
    let endorsements = Endorsements {
        sim_trust_anchors: vec![hw.public_key()],
        ..Default::default()
    };
    let tee = Arc::new(SimTee::new(hw, MEASUREMENT, [0; 32], false));
    let service_key = ServiceKeyPair::generate(0);
    let signing_key = SigningKey::from_bytes(&[7; 32]);
    let runtime_keys = RuntimeKeys {
        hpke_public_key: service_key.public_key(),
        hpke_key_id: 0,
        signing_public_key: signing_key.verifying_key().to_bytes(),
    };
    let mut models = BTreeMap::new();
    for (name, bytes, digest) in [
        ("dt", DATATYPES, [3u8; 32]),
        ("lr", LR, [1u8; 32]),
        ("mlp", MLP, [2u8; 32]),
    ] {
        models.insert(
            name.to_string(),
            ServedModel {
                model: Arc::new(OnnxModel::load(name, "3", bytes).unwrap()),
                manifest_sha256: digest,
            },
        );
    }
    let state = Arc::new(RuntimeState::new(
        service_key,
        signing_key,
        runtime_keys,
        tee,
        models,
        options,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = state.clone();
    let server = tokio::spawn(async move {
        cordon_runtime::serve(served, listener, shutdown)
            .await
            .unwrap()
    });
    (
        Harness {
            url,
            policy: Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]),
            endorsements,
            state,
        },
        server,
    )
}

fn rows(n: usize) -> Vec<Vec<f64>> {
    let v: Value = serde_json::from_str(TEST_SET).unwrap();
    v["inputs"].as_array().unwrap()[..n]
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn request(rows: &[Vec<f64>]) -> InferRequest {
    InferRequest {
        id: Some("req-1".into()),
        inputs: vec![Tensor {
            name: "input".into(),
            shape: vec![rows.len() as i64, 30],
            datatype: "FP32".into(),
            data: json!(rows.iter().flatten().collect::<Vec<_>>()),
            parameters: None,
        }],
        outputs: None,
        parameters: None,
    }
}

fn expected_lr_labels(n: usize) -> Vec<i64> {
    let v: Value = serde_json::from_str(LR_EXPECTED).unwrap();
    v["onnxruntime_labels"].as_array().unwrap()[..n]
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn labels(resp: &cordon_proto::oip::InferResponse) -> Vec<i64> {
    let t = resp.outputs.iter().find(|t| t.name == "label").unwrap();
    t.data
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn evidence_binds_the_served_models() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let names: Vec<&str> = rt.models().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["dt", "lr", "mlp"]);
    assert_eq!(rt.models()[1].version, "3");
    rt.require_model("lr", &hex::encode([1u8; 32])).unwrap();
    assert!(rt.require_model("lr", &hex::encode([2u8; 32])).is_err());
}

#[tokio::test]
async fn session_mode_serves_the_same_answers_as_one_shot() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let session = rt.open_session().await.unwrap();
    let data = rows(20);
    let oneshot = rt.infer("lr", &request(&data)).await.unwrap();
    for _ in 0..3 {
        let resp = session.infer("lr", &request(&data)).await.unwrap();
        assert_eq!(labels(&resp), expected_lr_labels(20));
        assert_eq!(resp.outputs, oneshot.outputs);
        assert_eq!(resp.id.as_deref(), Some("req-1"));
    }
    // Each request was a single AEAD message numbered 1, 2, 3 within one session.
    let text = h.metrics().await;
    assert!(
        text.contains(r#"cordon_runtime_requests_total{channel="session",outcome="ok"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"cordon_runtime_requests_total{channel="oneshot",outcome="ok"} 1"#));
    assert!(text.contains(r#"cordon_runtime_events_total{event="session_opened"} 1"#));
    assert!(
        text.contains(r#"cordon_runtime_inference_seconds_count{model="lr",channel="session"} 3"#)
    );
}

/// Sends raw session messages, as an attacker on the path would replay or reorder them.
#[tokio::test]
async fn replayed_and_reordered_session_messages_are_refused() {
    let h = start(ServingOptions::default()).await;
    let keys = h.state.runtime_keys().clone();
    let http = reqwest::Client::new();
    let (setup, pending) = start_session(&keys.hpke_public_key, 0, &setup_now()).unwrap();
    let grant = http
        .post(format!("{}/v1/session", h.url))
        .body(setup)
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 200);
    let session = pending.accept(&grant.bytes().await.unwrap()).unwrap();
    let live = serde_json::to_vec(&InnerRequest {
        method: "GET".into(),
        path: "/v2/health/live".into(),
        ..InnerRequest::default()
    })
    .unwrap();
    let send = |msg: Vec<u8>| {
        let http = http.clone();
        let url = format!("{}/v1/session/message", h.url);
        async move {
            let r = http
                .post(url)
                .header("content-type", SESSION_MESSAGE_MEDIA_TYPE)
                .body(msg)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        }
    };
    let (m1, s1) = session.seal_request(&live).unwrap();
    let (m2, _) = session.seal_request(&live).unwrap();
    let (m3, s3) = session.seal_request(&live).unwrap();
    let (status, body) = send(m1.clone()).await;
    assert_eq!(status, 200);
    let inner: Value = serde_json::from_slice(&session.open_response(s1, &body).unwrap()).unwrap();
    assert_eq!(inner["body"]["live"], true);
    // The same message again: replay.
    let (status, body) = send(m1).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("replayed or reordered"));
    // 3 overtakes 2: 3 is served, 2 is refused afterwards.
    assert_eq!(send(m3).await.0, 200);
    let (status, body) = send(m2).await;
    assert_eq!(status, 409);
    assert!(String::from_utf8_lossy(&body).contains("not above 3"));
    // A tampered message fails authentication and does not move the window.
    let (mut m4, s4) = session.seal_request(&live).unwrap();
    let last = m4.len() - 1;
    m4[last] ^= 1;
    assert_eq!(send(m4).await.0, 400);
    let (m5, s5) = session.seal_request(&live).unwrap();
    assert!(s5 > s4 && s4 > s3);
    assert_eq!(send(m5).await.0, 200);
    let text = h.metrics().await;
    assert!(
        text.contains(r#"cordon_runtime_refusals_total{kind="replay"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"cordon_runtime_refusals_total{kind="decrypt"} 1"#));
    // An unknown session id gets 404.
    let mut unknown = vec![0u8; 16];
    unknown.extend_from_slice(&1u64.to_be_bytes());
    unknown.extend_from_slice(&[0u8; 32]);
    assert_eq!(send(unknown).await.0, 404);
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The plaintext of a session setup made now.
fn setup_now() -> Vec<u8> {
    serde_json::to_vec(&SessionSetup {
        sent_at: unix_now(),
    })
    .unwrap()
}

async fn post(url: String, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The finding: a session setup replayed by the host opened a second session under the same keys.
/// Now the replay is refused, and a setup that is stale (or carries no time) is refused too.
#[tokio::test]
async fn replayed_stale_and_untimed_session_setups_are_refused() {
    let h = start(ServingOptions::default()).await;
    let pk = h.state.runtime_keys().hpke_public_key;
    let url = format!("{}/v1/session", h.url);
    let (setup, pending) = start_session(&pk, 0, &setup_now()).unwrap();
    let (status, _) = post(url.clone(), setup.clone()).await;
    assert_eq!(status, 200);
    let (status, body) = post(url.clone(), setup.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("replayed"), "{body}");
    drop(pending);
    let stale = serde_json::to_vec(&SessionSetup {
        sent_at: unix_now() - 3_600,
    })
    .unwrap();
    let (status, body) = post(url.clone(), start_session(&pk, 0, &stale).unwrap().0).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("from the runtime's clock"), "{body}");
    let (status, body) = post(url.clone(), start_session(&pk, 0, b"{}").unwrap().0).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sent_at"), "{body}");
    // The refusal is in clear: it does not quote what the encrypted setup carried.
    let quoted = br#"{"sent_at": "a value only the client and the runtime see"}"#;
    let (status, body) = post(url.clone(), start_session(&pk, 0, quoted).unwrap().0).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("sent_at") && !body.contains("only the client"),
        "{body}"
    );
    // Only the first setup opened a session.
    let text = h.metrics().await;
    assert!(
        text.contains(r#"cordon_runtime_events_total{event="session_opened"} 1"#),
        "{text}"
    );
}

/// A one-shot request is served once: the same bytes again are refused before anything runs.
#[tokio::test]
async fn replayed_and_stale_one_shot_requests_are_refused() {
    let h = start(ServingOptions::default()).await;
    let pk = h.state.runtime_keys().hpke_public_key;
    let url = format!("{}/v1/encrypted", h.url);
    let request = |sent_at: Option<u64>| {
        let inner = serde_json::to_vec(&InnerRequest {
            method: "GET".into(),
            path: "/v2/health/live".into(),
            sent_at,
            ..InnerRequest::default()
        })
        .unwrap();
        cordon_proto::channel::encapsulate_request(&pk, 0, &inner).unwrap()
    };
    let (message, ctx) = request(Some(unix_now()));
    let r = reqwest::Client::new()
        .post(url.clone())
        .body(message.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let inner = ctx.decrypt_response(&r.bytes().await.unwrap()).unwrap();
    assert!(String::from_utf8_lossy(&inner).contains("live"));
    let (status, body) = post(url.clone(), message).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("replayed"), "{body}");
    let (status, body) = post(url.clone(), request(Some(unix_now() + 3_600)).0).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(url.clone(), request(None).0).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sent_at"), "{body}");
    let text = h.metrics().await;
    assert!(
        text.contains(r#"cordon_runtime_requests_total{channel="oneshot",outcome="ok"} 1"#),
        "{text}"
    );
}

/// A repeated attestation nonce is answered again (fresh evidence for the same nonce, which the
/// verifier that drew it checks once): remembering unauthenticated nonces would let anyone fill the
/// replay memory that protects the channel. Verifying many times works.
#[tokio::test]
async fn attestation_requests_spend_no_replay_memory() {
    let h = start(ServingOptions {
        replay_memory: 4,
        ..ServingOptions::default()
    })
    .await;
    for i in 0..16u8 {
        let url = format!("{}/v1/attestation?nonce={}", h.url, hex::encode([i; 32]));
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    }
    // The channel's memory is untouched: a verified client's requests still go through.
    let rt = h.verified().await;
    rt.request("GET", "/v2/health/live", None).await.unwrap();
    rt.open_session().await.unwrap();
}

#[tokio::test]
async fn expired_sessions_are_refused_and_a_new_one_works() {
    let h = start(ServingOptions {
        sessions: SessionLimits {
            lifetime: Duration::from_secs(1),
            ..SessionLimits::default()
        },
        ..ServingOptions::default()
    })
    .await;
    let rt = h.verified().await;
    let session = rt.open_session().await.unwrap();
    session
        .request("GET", "/v2/health/live", None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(session.is_spent(SystemTime::now() + Duration::from_secs(1)));
    let err = session
        .request("GET", "/v2/health/live", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::SessionClosed { status: 410, .. }),
        "{err}"
    );
    let fresh = rt.open_session().await.unwrap();
    assert_eq!(
        fresh
            .request("GET", "/v2/health/live", None)
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn a_full_session_table_refuses_setups_with_retry_after() {
    let h = start(ServingOptions {
        sessions: SessionLimits {
            max_sessions: 2,
            ..SessionLimits::default()
        },
        ..ServingOptions::default()
    })
    .await;
    let rt = h.verified().await;
    let a = rt.open_session().await.unwrap();
    let _b = rt.open_session().await.unwrap();
    let err = rt.open_session().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Server { status: 503, .. }),
        "{err}"
    );
    // Live sessions keep working.
    assert_eq!(
        a.request("GET", "/v2/health/ready", None)
            .await
            .unwrap()
            .status,
        200
    );
}

/// Every Open Inference Protocol route and error, through the encrypted channel.
#[tokio::test]
async fn open_inference_protocol_surface_inside_the_channel() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let s = rt.open_session().await.unwrap();
    let get = |path: &'static str| s.request("GET", path, None);

    let meta = get("/v2").await.unwrap();
    assert_eq!(meta.status, 200);
    assert_eq!(meta.body["models"], json!(["dt", "lr", "mlp"]));
    assert_eq!(get("/v2/health/live").await.unwrap().body["live"], true);
    assert_eq!(get("/v2/health/ready").await.unwrap().body["ready"], true);

    let m = get("/v2/models/mlp").await.unwrap();
    assert_eq!(m.status, 200);
    assert_eq!(m.body["name"], "mlp");
    assert_eq!(m.body["versions"], json!(["3"]));
    assert_eq!(
        m.body["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 30]}])
    );
    assert_eq!(get("/v2/models/mlp/versions/3").await.unwrap().status, 200);
    let wrong = get("/v2/models/mlp/versions/4").await.unwrap();
    assert_eq!(wrong.status, 404);
    assert!(wrong.body["error"]
        .as_str()
        .unwrap()
        .contains("no version \"4\""));
    assert_eq!(
        get("/v2/models/mlp/ready").await.unwrap().body["ready"],
        true
    );
    assert_eq!(
        get("/v2/models/mlp/versions/3/ready").await.unwrap().status,
        200
    );
    let unknown = get("/v2/models/nope").await.unwrap();
    assert_eq!(unknown.status, 404);
    assert!(unknown.body["error"]
        .as_str()
        .unwrap()
        .contains("unknown model"));
    assert_eq!(get("/v2/elsewhere").await.unwrap().status, 404);

    // Infer by name and by name and version; `outputs` selects outputs.
    let data = rows(4);
    let mut req = request(&data);
    req.outputs = Some(vec![cordon_proto::oip::RequestedOutput {
        name: "label".into(),
    }]);
    let body = serde_json::to_value(&req).unwrap();
    for path in ["/v2/models/lr/infer", "/v2/models/lr/versions/3/infer"] {
        let r = s.request("POST", path, Some(body.clone())).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["model_name"], "lr");
        assert_eq!(r.body["model_version"], "3");
        assert_eq!(r.body["outputs"].as_array().unwrap().len(), 1);
        assert_eq!(r.body["outputs"][0]["name"], "label");
        assert_eq!(r.body["outputs"][0]["datatype"], "INT64");
        assert_eq!(r.body["outputs"][0]["shape"], json!([4]));
    }
    let post = |path: &'static str, body: Value| s.request("POST", path, Some(body));
    let expect_400 = |r: cordon_proto::runtime::InnerResponse, needle: &str| {
        assert_eq!(r.status, 400, "{}", r.body);
        let e = r.body["error"].as_str().unwrap().to_string();
        assert!(e.contains(needle), "{e:?} lacks {needle:?}");
    };
    let mut bad = body.clone();
    bad["inputs"][0]["datatype"] = json!("INT64");
    expect_400(
        post("/v2/models/lr/infer", bad).await.unwrap(),
        "datatype INT64",
    );
    let mut bad = body.clone();
    bad["inputs"][0]["shape"] = json!([4, 31]);
    expect_400(
        post("/v2/models/lr/infer", bad).await.unwrap(),
        "does not fit",
    );
    let mut bad = body.clone();
    bad["inputs"][0]["shape"] = json!([5, 30]);
    expect_400(
        post("/v2/models/lr/infer", bad).await.unwrap(),
        "data has 120",
    );
    let mut bad = body.clone();
    bad["inputs"][0]["data"][7] = json!("x");
    expect_400(post("/v2/models/lr/infer", bad).await.unwrap(), "element 7");
    let mut bad = body.clone();
    bad["inputs"][0]["name"] = json!("other");
    expect_400(
        post("/v2/models/lr/infer", bad).await.unwrap(),
        "not an input",
    );
    expect_400(
        post("/v2/models/lr/infer", json!({"inputs": 3}))
            .await
            .unwrap(),
        "\"inputs\" must be a list of tensors, not a number",
    );
    // `{}` (what a client sends when it forgets the body's fields) names what is missing.
    expect_400(
        post("/v2/models/lr/infer", json!({})).await.unwrap(),
        "the infer request has no \"inputs\"",
    );
    let mut twice = body.clone();
    let first = twice["inputs"][0].clone();
    twice["inputs"].as_array_mut().unwrap().push(first);
    expect_400(
        post("/v2/models/lr/infer", twice).await.unwrap(),
        "given more than once",
    );
    expect_400(
        s.request("POST", "/v2/models/lr/infer", None)
            .await
            .unwrap(),
        "needs a body",
    );
    let r = post("/v2/models/nope/infer", body.clone()).await.unwrap();
    assert_eq!(r.status, 404);

    // Outside the channel: plaintext inference is off, bodies are limited, and the server is up.
    let http = reqwest::Client::new();
    let plain = http
        .post(format!("{}/v2/models/lr/infer", h.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 403);
    let big = http
        .post(format!("{}/v1/encrypted", h.url))
        .body(vec![0u8; (8 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let e: Value = big.json().await.unwrap();
    assert!(e["error"].as_str().unwrap().contains("exceeds"));
    let garbage = http
        .post(format!("{}/v1/encrypted", h.url))
        .body(vec![1u8; 100])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(garbage.headers().contains_key("x-request-id"));
    assert_eq!(get("/v2/health/live").await.unwrap().status, 200);
}

#[tokio::test]
async fn plaintext_inference_only_with_the_development_switch() {
    let h = start(ServingOptions {
        plaintext_inference: true,
        ..ServingOptions::default()
    })
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v2/models/lr/infer", h.url))
        .json(&request(&rows(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp: cordon_proto::oip::InferResponse = r.json().await.unwrap();
    assert_eq!(labels(&resp), expected_lr_labels(3));
    assert!(h
        .metrics()
        .await
        .contains(r#"cordon_runtime_requests_total{channel="plain",outcome="ok"} 1"#));
}

/// A burst far beyond workers + queue: the excess is refused at once with 503 and Retry-After,
/// everything admitted is answered, and the runtime stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_beyond_the_queue_gets_503_with_retry_after() {
    let h = start(ServingOptions {
        workers: 1,
        max_queue: 1,
        plaintext_inference: true,
        ..ServingOptions::default()
    })
    .await;
    // A large batch keeps the one worker busy long enough for the burst to pile up.
    let many: Vec<Vec<f64>> = (0..100).flat_map(|_| rows(100)).collect();
    let big = serde_json::to_vec(&request(&many)).unwrap();
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let http = http.clone();
        let url = format!("{}/v2/models/mlp/infer", h.url);
        let body = big.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry)
        }));
    }
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            (200, _) => ok += 1,
            (503, Some(retry)) => {
                assert_eq!(retry, "1");
                busy += 1
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        ok >= 2,
        "at least the running and the queued request are served ({ok})"
    );
    assert!(busy >= 1, "the burst exceeded workers + queue ({ok} ok)");
    assert_eq!(ok + busy, 24);
    let text = h.metrics().await;
    assert!(
        text.contains("cordon_runtime_refusals_total{kind=\"busy\"}"),
        "{text}"
    );
    assert!(text.contains("cordon_runtime_queue_depth 0"));
    assert!(text.contains("cordon_runtime_in_flight 0"));
}

/// Nothing a client sends, and no key, appears in the runtime's metrics.
#[tokio::test]
async fn metrics_carry_no_request_data() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let mut data = rows(1);
    data[0][0] = 98765.4321;
    rt.infer("lr", &request(&data)).await.unwrap();
    let text = h.metrics().await;
    assert!(text.contains("cordon_runtime_requests_total"));
    for needle in [
        "98765".to_string(),
        "req-1".to_string(),
        // The signing key's seed (see `start`).
        hex::encode([7u8; 32]),
    ] {
        assert!(!text.contains(&needle), "metrics contain {needle}");
    }
}

/// With dynamic batching on, concurrent single-row requests share evaluations and each client
/// gets exactly its own rows' answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamic_batching_merges_concurrent_requests_without_mixing_answers() {
    let h = start(ServingOptions {
        batching: Some(cordon_runtime::BatchOptions {
            max_rows: 64,
            max_delay: Duration::from_millis(30),
        }),
        ..ServingOptions::default()
    })
    .await;
    let rt = h.verified().await;
    let local = OnnxModel::load("mlp", "3", MLP).unwrap();
    let all = rows(16);
    let mut tasks = Vec::new();
    for row in all {
        let rt = rt.clone();
        tasks.push(tokio::spawn(async move {
            let session = rt.open_session().await.unwrap();
            let req = request(std::slice::from_ref(&row));
            (req.clone(), session.infer("mlp", &req).await.unwrap())
        }));
    }
    for t in tasks {
        let (req, got) = t.await.unwrap();
        assert_eq!(got.outputs, local.infer(&req).unwrap().outputs);
    }
    let text = h.metrics().await;
    let evaluations: u64 = text
        .lines()
        .find(|l| l.starts_with(r#"cordon_runtime_batched_rows_count{model="mlp"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        (1..16).contains(&evaluations),
        "16 requests in {evaluations} evaluations"
    );
}

/// One 2x2 input per datatype of the Identity model models/oip/datatypes.onnx (`in_{name}`), with
/// the extremes of each.
fn datatype_cases() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("bool", "BOOL", json!([true, false, false, true])),
        ("int8", "INT8", json!([-128, 127, 0, 5])),
        ("int16", "INT16", json!([-32768, 32767, -1, 2])),
        ("int32", "INT32", json!([-2147483648i64, 2147483647, 0, 7])),
        ("int64", "INT64", json!([i64::MIN, i64::MAX, 0, -9])),
        ("uint8", "UINT8", json!([0, 255, 1, 2])),
        ("uint16", "UINT16", json!([0, 65535, 3, 4])),
        ("uint32", "UINT32", json!([0, 4294967295u64, 5, 6])),
        ("uint64", "UINT64", json!([0, u64::MAX, 7, 8])),
        ("fp16", "FP16", json!([0.5, -2.0, 65504.0, 0.375])),
        ("fp32", "FP32", json!([1.5, -0.25, 1024.0, 0.375])),
        ("fp64", "FP64", json!([0.1, 1e300, -3.5, 0.0])),
        ("bytes", "BYTES", json!(["a", "ü", "", "x y"])),
    ]
}

/// Every Open Inference Protocol datatype through the encrypted channel: each input of the
/// Identity model (models/oip/datatypes.onnx) comes back unchanged, with its datatype; values a
/// datatype cannot hold are refused before the model runs.
#[tokio::test]
async fn every_datatype_round_trips_and_out_of_range_values_are_refused() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let session = rt.open_session().await.unwrap();
    let cases = datatype_cases();
    let meta = session
        .request("GET", "/v2/models/dt", None)
        .await
        .unwrap()
        .body;
    let inputs = |cases: &[(&str, &str, Value)]| -> Vec<Tensor> {
        cases
            .iter()
            .map(|(name, dt, data)| Tensor {
                name: format!("in_{name}"),
                shape: vec![2, 2],
                datatype: dt.to_string(),
                data: data.clone(),
                parameters: None,
            })
            .collect()
    };
    for (name, dt, _) in &cases {
        let m = meta["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == format!("in_{name}"))
            .unwrap_or_else(|| panic!("{meta}"));
        assert_eq!(m["datatype"], *dt);
        assert_eq!(m["shape"], json!([-1, 2]));
    }
    let req = InferRequest {
        id: Some("dt".into()),
        inputs: inputs(&cases),
        outputs: None,
        parameters: None,
    };
    let resp = session.infer("dt", &req).await.unwrap();
    for (name, dt, data) in &cases {
        let out = resp
            .outputs
            .iter()
            .find(|t| t.name == format!("out_{name}"))
            .unwrap();
        assert_eq!(
            (&out.datatype, &out.shape, &out.data),
            (&dt.to_string(), &vec![2, 2], data),
            "{name}"
        );
    }
    // Out of range, wrong JSON type: a 400 naming the input and the element.
    for (name, dt, bad) in [
        ("int8", "INT8", json!([128, 0, 0, 0])),
        ("uint8", "UINT8", json!([0, -1, 0, 0])),
        ("uint16", "UINT16", json!([0, 0, 65536, 0])),
        ("int32", "INT32", json!([0, 0, 0, 2147483648i64])),
        ("bool", "BOOL", json!([1, 0, 0, 0])),
        ("bytes", "BYTES", json!([1, "a", "b", "c"])),
        ("fp32", "FP32", json!(["1.0", 0, 0, 0])),
    ] {
        let mut c = cases.clone();
        let i = c.iter().position(|(n, _, _)| *n == name).unwrap();
        c[i] = (name, dt, bad);
        let r = session
            .request(
                "POST",
                "/v2/models/dt/infer",
                Some(
                    serde_json::to_value(InferRequest {
                        id: None,
                        inputs: inputs(&c),
                        outputs: None,
                        parameters: None,
                    })
                    .unwrap(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        let e = r.body["error"].as_str().unwrap();
        assert!(
            e.contains(&format!("in_{name}")) && e.contains(&format!("not a valid {dt}")),
            "{e}"
        );
    }
}

/// A shutdown signal while a request runs: the request is still answered, then the server stops
/// and refuses new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_drains_in_flight_requests() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (h, server) = start_with(
        ServingOptions {
            plaintext_inference: true,
            ..ServingOptions::default()
        },
        async {
            let _ = stopped.await;
        },
    )
    .await;
    let many: Vec<Vec<f64>> = (0..100).flat_map(|_| rows(100)).collect();
    let body = serde_json::to_vec(&request(&many)).unwrap();
    let url = format!("{}/v2/models/mlp/infer", h.url);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    // Wait until the request is being evaluated, then signal shutdown.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.state.metrics().in_flight.get() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "request never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    stop.send(()).unwrap();
    assert_eq!(in_flight.await.unwrap(), 200);
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server drained and stopped")
        .unwrap();
    assert!(reqwest::get(format!("{}/v2/health/live", h.url))
        .await
        .is_err());
}

/// A binary tensor data extension body: `header` (its inputs' `binary_data_size` set for those
/// in `blobs`), then the blobs' bytes. Returns the inner request carrying it and the header length.
fn binary_request(path: &str, header: &Value, blobs: &[Vec<u8>]) -> InnerRequest {
    let mut body = serde_json::to_vec(header).unwrap();
    let header_len = body.len();
    for b in blobs {
        body.extend_from_slice(b);
    }
    InnerRequest {
        method: "POST".into(),
        path: path.into(),
        headers: BTreeMap::from([(
            "inference-header-content-length".to_string(),
            header_len.to_string(),
        )]),
        raw_body: Some(body),
        ..InnerRequest::default()
    }
}

/// The outputs of a binary-extension answer, each with its data decoded back to JSON.
fn binary_outputs(resp: &cordon_proto::runtime::InnerResponse) -> (Vec<Value>, Vec<bool>) {
    assert_eq!(resp.status, 200, "{}", resp.body);
    let header_len: usize = resp.binary_header_length().unwrap().parse().unwrap();
    let body = resp.raw_body.as_ref().unwrap();
    let header: Value = serde_json::from_slice(&body[..header_len]).unwrap();
    let mut rest = &body[header_len..];
    let mut binary = Vec::new();
    let outputs = header["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut t = t.clone();
            let size = t["parameters"]["binary_data_size"].as_u64();
            binary.push(size.is_some());
            if let Some(size) = size {
                let (bytes, tail) = rest.split_at(size as usize);
                rest = tail;
                let data = cordon_proto::oip_binary::decode_elements(
                    t["datatype"].as_str().unwrap(),
                    bytes,
                )
                .unwrap();
                t["data"] = Value::Array(data);
                t.as_object_mut().unwrap().remove("parameters");
            }
            t
        })
        .collect();
    assert!(rest.is_empty(), "bytes beyond the outputs");
    (outputs, binary)
}

/// Binary tensors inside the encrypted channel, every datatype (BYTES included), half the inputs
/// binary and half JSON in one request: the runtime decodes them straight from their bytes and
/// answers in binary as asked, with exactly the JSON route's answer; one-shot and in a session.
#[tokio::test]
async fn binary_tensors_inside_the_channel_answer_as_json_does_for_every_datatype() {
    let h = start(ServingOptions::default()).await;
    let rt = h.verified().await;
    let session = rt.open_session().await.unwrap();
    let cases = datatype_cases();
    let tensor = |name: &str, dt: &str| json!({"name": format!("in_{name}"), "shape": [2, 2], "datatype": dt});
    let json_request = InferRequest {
        id: Some("dt".into()),
        inputs: cases
            .iter()
            .map(|(name, dt, data)| Tensor {
                name: format!("in_{name}"),
                shape: vec![2, 2],
                datatype: dt.to_string(),
                data: data.clone(),
                parameters: None,
            })
            .collect(),
        outputs: None,
        parameters: None,
    };
    let reference = session.infer("dt", &json_request).await.unwrap();
    let reference: Vec<Value> = reference
        .outputs
        .iter()
        .map(|t| serde_json::to_value(t).unwrap())
        .collect();
    // Even inputs in binary, odd ones in JSON.
    let mut inputs = Vec::new();
    let mut blobs = Vec::new();
    for (i, (name, dt, data)) in cases.iter().enumerate() {
        let mut t = tensor(name, dt);
        if i % 2 == 0 {
            let bytes = cordon_proto::oip_binary::encode_elements(dt, data).unwrap();
            t["parameters"] = json!({ "binary_data_size": bytes.len() });
            blobs.push(bytes);
        } else {
            t["data"] = data.clone();
        }
        inputs.push(t);
    }
    let all_binary =
        json!({"id": "dt", "inputs": inputs, "parameters": {"binary_data_output": true}});
    for one_shot in [false, true] {
        let req = binary_request("/v2/models/dt/infer", &all_binary, &blobs);
        let resp = if one_shot {
            rt.send(req).await.unwrap()
        } else {
            session.send(req).await.unwrap()
        };
        assert_eq!(resp.body, Value::Null);
        let (outputs, binary) = binary_outputs(&resp);
        assert_eq!(outputs, reference, "one-shot {one_shot}");
        assert!(binary.iter().all(|b| *b));
    }
    // Per output: BYTES in binary, FP64 in JSON, nothing else asked for.
    let chosen = json!({"inputs": inputs, "outputs": [
        {"name": "out_bytes", "parameters": {"binary_data": true}},
        {"name": "out_fp64", "parameters": {"binary_data": false}},
    ]});
    let resp = session
        .send(binary_request("/v2/models/dt/infer", &chosen, &blobs))
        .await
        .unwrap();
    let (outputs, binary) = binary_outputs(&resp);
    let names: Vec<&str> = outputs
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["out_fp64", "out_bytes"]);
    assert_eq!(binary, [false, true]);
    for t in &outputs {
        assert!(reference.contains(t), "{t}");
    }
    // Binary inputs, no binary output asked for: a JSON answer.
    let json_out = json!({"id": "dt", "inputs": inputs});
    let resp = session
        .send(binary_request("/v2/models/dt/infer", &json_out, &blobs))
        .await
        .unwrap();
    assert_eq!(resp.raw_body, None);
    assert_eq!(resp.body["outputs"].as_array().unwrap(), &reference);
}

/// Malformed binary requests are refused inside the channel with a reason naming sizes and
/// tensors, never data; nothing runs.
#[tokio::test]
async fn malformed_binary_requests_are_refused_with_their_reason() {
    let h = start(ServingOptions::default()).await;
    let session = h.verified().await.open_session().await.unwrap();
    let fp32 = |size: usize| {
        json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32",
            "parameters": {"binary_data_size": size}}]})
    };
    let row = vec![0x41u8; 120];
    // The datatypes model takes every input: all in JSON but BYTES, in binary.
    let bytes_input = |size: usize| {
        let mut inputs: Vec<Value> = [
            ("bool", "BOOL", json!([true, false])),
            ("int8", "INT8", json!([1, 2])),
            ("int16", "INT16", json!([1, 2])),
            ("int32", "INT32", json!([1, 2])),
            ("int64", "INT64", json!([1, 2])),
            ("uint8", "UINT8", json!([1, 2])),
            ("uint16", "UINT16", json!([1, 2])),
            ("uint32", "UINT32", json!([1, 2])),
            ("uint64", "UINT64", json!([1, 2])),
            ("fp16", "FP16", json!([1, 2])),
            ("fp32", "FP32", json!([1, 2])),
            ("fp64", "FP64", json!([1, 2])),
        ]
        .into_iter()
        .map(|(n, dt, data)| json!({"name": format!("in_{n}"), "shape": [1, 2], "datatype": dt, "data": data}))
        .collect();
        inputs.push(
            json!({"name": "in_bytes", "shape": [1, 2], "datatype": "BYTES",
            "parameters": {"binary_data_size": size}}),
        );
        json!({ "inputs": inputs })
    };
    let cases: Vec<(&str, InnerRequest, &str)> = vec![
        (
            "too few bytes",
            binary_request("/v2/models/lr/infer", &fp32(120), &[row[..100].to_vec()]),
            "only 100 bytes are left",
        ),
        (
            "trailing bytes",
            binary_request("/v2/models/lr/infer", &fp32(120), &[row.clone(), vec![1]]),
            "the body after the JSON header 121",
        ),
        (
            "not whole elements",
            binary_request("/v2/models/lr/infer", &fp32(118), &[row[..118].to_vec()]),
            "118 bytes are not a whole number of FP32",
        ),
        (
            "too few elements",
            binary_request("/v2/models/lr/infer", &fp32(116), &[row[..116].to_vec()]),
            "holds 30 elements, data has 29",
        ),
        (
            "BYTES cut short",
            binary_request(
                "/v2/models/dt/infer",
                &bytes_input(9),
                &[b"\x02\0\0\0ab\x07\0\0".to_vec()],
            ),
            "truncated length prefix",
        ),
        (
            "BYTES not text",
            binary_request(
                "/v2/models/dt/infer",
                &bytes_input(10),
                &[b"\x01\0\0\0\xff\x01\0\0\0a".to_vec()],
            ),
            "not UTF-8",
        ),
        (
            "both data and size",
            binary_request(
                "/v2/models/lr/infer",
                &json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [], "parameters": {"binary_data_size": 120}}]}),
                std::slice::from_ref(&row),
            ),
            "both \"data\" and parameters.binary_data_size",
        ),
        (
            "no shape",
            binary_request(
                "/v2/models/lr/infer",
                &json!({"inputs": [{"name": "input", "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}),
                std::slice::from_ref(&row),
            ),
            "has no \"shape\"",
        ),
    ];
    for (what, req, expected) in cases {
        let resp = session.send(req).await.unwrap();
        assert_eq!(resp.status, 400, "{what}: {}", resp.body);
        let e = resp.body["error"].as_str().unwrap();
        assert!(e.contains(expected), "{what}: {e}");
        assert!(!e.contains("AAAA"), "{what}: data in the error: {e}");
    }
    let mut req = binary_request(
        "/v2/models/lr/infer",
        &fp32(120),
        std::slice::from_ref(&row),
    );
    req.headers
        .insert("inference-header-content-length".into(), "99999".into());
    let e = session.send(req).await.unwrap().body["error"].to_string();
    assert!(
        e.contains("Inference-Header-Content-Length is 99999"),
        "{e}"
    );
    let mut req = binary_request(
        "/v2/models/lr/infer",
        &fp32(120),
        std::slice::from_ref(&row),
    );
    req.headers
        .insert("inference-header-content-length".into(), "ten".into());
    let e = session.send(req).await.unwrap().body["error"].to_string();
    assert!(e.contains("not a byte count"), "{e}");
    let mut req = binary_request("/v2/models/lr/infer", &fp32(120), &[row]);
    req.raw_body = None;
    let e = session.send(req).await.unwrap().body["error"].to_string();
    assert!(e.contains("has none"), "{e}");
}

/// With dynamic batching on, a binary request joins the batch like a JSON one and is answered in
/// binary with its own rows.
#[tokio::test]
async fn binary_requests_are_batched_and_answered_with_their_own_rows() {
    let h = start(ServingOptions {
        batching: Some(cordon_runtime::BatchOptions {
            max_rows: 64,
            max_delay: Duration::from_millis(30),
        }),
        ..ServingOptions::default()
    })
    .await;
    let rt = h.verified().await;
    let all = rows(6);
    let mut tasks = Vec::new();
    for chunk in all.chunks(2) {
        let rt = rt.clone();
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let data = json!(chunk.iter().flatten().collect::<Vec<_>>());
            let bytes = cordon_proto::oip_binary::encode_elements("FP32", &data).unwrap();
            let header = json!({"inputs": [{"name": "input", "shape": [chunk.len(), 30],
                "datatype": "FP32", "parameters": {"binary_data_size": bytes.len()}}],
                "outputs": [{"name": "label", "parameters": {"binary_data": true}}]});
            let resp = rt
                .send(binary_request("/v2/models/lr/infer", &header, &[bytes]))
                .await
                .unwrap();
            let (outputs, _) = binary_outputs(&resp);
            (chunk, outputs)
        }));
    }
    let expected = expected_lr_labels(6);
    let mut seen = 0;
    for t in tasks {
        let (chunk, outputs) = t.await.unwrap();
        let got: Vec<i64> = outputs[0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let at = all.iter().position(|r| *r == chunk[0]).unwrap();
        assert_eq!(got, expected[at..at + chunk.len()], "rows {at}..");
        seen += chunk.len();
    }
    assert_eq!(seen, 6);
    // They went through the batcher: 6 rows in its evaluations (fewer than 3 when merged).
    let text = h.metrics().await;
    let metric = |name: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "cordon_runtime_batched_rows_{name}{{model=\"lr\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{text}"))
    };
    assert_eq!(metric("sum"), 6.0);
    assert!((1.0..=3.0).contains(&metric("count")));
}

/// A JSON infer body sent as its bytes (what the proxy and the SDKs send) is parsed in one pass,
/// its tensor data never a JSON tree, and answers exactly as the same request sent as a JSON tree
/// (`body`): nested data, Python's NaN literals, every datatype; the same refusals, in the same
/// words; binary outputs when the JSON request asks for them.
#[tokio::test]
async fn json_bodies_as_bytes_answer_as_json_trees_do() {
    let h = start(ServingOptions::default()).await;
    let session = h.verified().await.open_session().await.unwrap();
    let as_bytes = |body: &str| InnerRequest {
        method: "POST".into(),
        path: "/v2/models/dt/infer".into(),
        headers: BTreeMap::from([("content-type".to_string(), "application/json".to_string())]),
        raw_body: Some(body.as_bytes().to_vec()),
        ..InnerRequest::default()
    };
    let as_tree = |body: &str| InnerRequest {
        method: "POST".into(),
        path: "/v2/models/dt/infer".into(),
        body: Some(cordon_proto::oip::parse_json_body(body.as_bytes()).unwrap()),
        ..InnerRequest::default()
    };
    let inputs = |fp32: &str, uint8: &str| {
        format!(
            r#"{{"id": "q", "inputs": [
            {{"name": "in_bool", "shape": [2, 2], "datatype": "BOOL", "data": [[true, false], [false, true]]}},
            {{"name": "in_int8", "shape": [2, 2], "datatype": "INT8", "data": [-128, 127, 0, 5]}},
            {{"name": "in_int16", "shape": [2, 2], "datatype": "INT16", "data": [-32768, 32767, -1, 2]}},
            {{"name": "in_int32", "shape": [2, 2], "datatype": "INT32", "data": [-2147483648, 2147483647, 0, 7]}},
            {{"name": "in_int64", "shape": [2, 2], "datatype": "INT64", "data": [-9223372036854775808, 9223372036854775807, 0, -9]}},
            {{"name": "in_uint8", "shape": [2, 2], "datatype": "UINT8", "data": {uint8}}},
            {{"name": "in_uint16", "shape": [2, 2], "datatype": "UINT16", "data": [0, 65535, 3, 4]}},
            {{"name": "in_uint32", "shape": [2, 2], "datatype": "UINT32", "data": [0, 4294967295, 5, 6]}},
            {{"name": "in_uint64", "shape": [2, 2], "datatype": "UINT64", "data": [0, 18446744073709551615, 7, 8]}},
            {{"name": "in_fp16", "shape": [2, 2], "datatype": "FP16", "data": [0.5, -2.0, 65504.0, 0.375]}},
            {{"name": "in_fp32", "shape": [2, 2], "datatype": "FP32", "data": {fp32}}},
            {{"name": "in_fp64", "shape": [2, 2], "datatype": "FP64", "data": [0.1, 1e300, -3.5, 0.0]}},
            {{"name": "in_bytes", "shape": [2, 2], "datatype": "BYTES", "data": ["a", "ü", "", "x y"]}}
            ]"#
        )
    };
    let good = format!(
        "{}}}",
        inputs("[[1.5, NaN], [-Infinity, null]]", "[0, 255, 1, 2]")
    );
    let tree = session.send(as_tree(&good)).await.unwrap();
    let bytes = session.send(as_bytes(&good)).await.unwrap();
    assert_eq!(tree.status, 200, "{}", tree.body);
    assert_eq!(bytes.body, tree.body);
    let fp32 = tree.body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "out_fp32")
        .unwrap();
    assert_eq!(fp32["data"], json!([1.5, "NaN", "-Infinity", "NaN"]));
    // The same refusal in the same words: an element the datatype cannot hold, a wrong length,
    // a body that is not an infer request.
    for bad in [
        format!("{}}}", inputs("[1, 2, 3, 4]", "[0, 256, 1, 2]")),
        format!("{}}}", inputs("[1, 2, 3]", "[0, 1, 1, 2]")),
        format!("{}}}", inputs("[1e39, 2, 3, 4]", "[0, 1, 1, 2]")),
        r#"{"inputs": [{"name": "in_bool", "datatype": "BOOL", "data": [true]}]}"#.to_string(),
    ] {
        let tree = session.send(as_tree(&bad)).await.unwrap();
        let bytes = session.send(as_bytes(&bad)).await.unwrap();
        assert_eq!(tree.status, 400, "{}", tree.body);
        assert_eq!((bytes.status, &bytes.body), (400, &tree.body));
    }
    let e = session.send(as_bytes("{\"inputs\": [")).await.unwrap();
    assert_eq!(e.status, 400);
    assert!(
        e.body["error"]
            .as_str()
            .unwrap()
            .starts_with("infer request: Eof error"),
        "{}",
        e.body
    );
    // A JSON request asking for binary outputs gets them from the runtime.
    let binary = format!(
        "{}, \"outputs\": [{{\"name\": \"out_int64\", \"parameters\": {{\"binary_data\": true}}}}]}}",
        inputs("[1, 2, 3, 4]", "[0, 1, 1, 2]")
    );
    let resp = session.send(as_bytes(&binary)).await.unwrap();
    let (outputs, was_binary) = binary_outputs(&resp);
    assert_eq!(was_binary, [true]);
    assert_eq!(outputs[0]["data"], json!([i64::MIN, i64::MAX, 0, -9]));
}

/// NaN and infinities of a float output asked for in JSON beside a binary one are written in the
/// answer's JSON part as Triton's literals, as in a JSON answer (the development route passes the
/// runtime's answer on as the proxy does).
#[tokio::test]
async fn float_outputs_in_the_json_part_of_a_binary_answer_use_the_literals() {
    let h = start(ServingOptions {
        plaintext_inference: true,
        ..ServingOptions::default()
    })
    .await;
    let floats: Vec<u8> = [f32::NAN, f32::INFINITY, 1.0, 2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut header = json!({"inputs": [], "outputs": [
        {"name": "out_fp32", "parameters": {"binary_data": false}},
        {"name": "out_int8", "parameters": {"binary_data": true}}]});
    for (name, dt, data) in datatype_cases() {
        let mut t = json!({"name": format!("in_{name}"), "shape": [2, 2], "datatype": dt});
        if name == "fp32" {
            t["parameters"] = json!({ "binary_data_size": floats.len() });
        } else {
            t["data"] = data;
        }
        header["inputs"].as_array_mut().unwrap().push(t);
    }
    let mut body = serde_json::to_vec(&header).unwrap();
    let n = body.len();
    body.extend_from_slice(&floats);
    let resp = reqwest::Client::new()
        .post(format!("{}/v2/models/dt/infer", h.url))
        .header("inference-header-content-length", n.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let raw = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&raw[..len]).to_string();
    assert!(text.contains("[NaN,Infinity,1.0,2.0]"), "{text}");
}

/// A shape whose element count overflows is refused (400), not a panic of the handler.
#[tokio::test]
async fn an_overflowing_shape_is_refused_not_a_panic() {
    let h = start(ServingOptions::default()).await;
    let session = h.verified().await.open_session().await.unwrap();
    for binary in [true, false] {
        let mut t =
            json!({"name": "input", "shape": [4294967296i64, 4294967296i64], "datatype": "FP32"});
        if binary {
            t["parameters"] = json!({ "binary_data_size": 0 });
        } else {
            t["data"] = json!([]);
        }
        let req = if binary {
            binary_request("/v2/models/lr/infer", &json!({ "inputs": [t] }), &[])
        } else {
            InnerRequest {
                method: "POST".into(),
                path: "/v2/models/lr/infer".into(),
                body: Some(json!({ "inputs": [t] })),
                ..InnerRequest::default()
            }
        };
        let resp = session.send(req).await.unwrap();
        assert_eq!(resp.status, 400, "{}", resp.body);
    }
}
