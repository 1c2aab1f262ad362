//! The verifying proxy against a fake runtime that speaks the real channel and can restart with a
//! new key or a new measurement: forwarding, fail-closed refusals, key changes, freshness.
//! (crates/cordon/tests/proxy.rs drives the proxy against real processes.)

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cordon_attest::{Endorsements, Platform, Policy, PolicyDocument};
use cordon_client::proxy::{Proxy, ProxyConfig, ProxyError, ProxyState};
use cordon_proto::runtime::{AttestationResponse, InnerRequest, InnerResponse};
use cordon_proto::{report_data, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const GOOD: [u8; 48] = [0x5a; 48];
const BAD: [u8; 48] = [0x66; 48];

/// One boot of the fake runtime: its key and what its evidence says.
struct Boot {
    key: Arc<ServiceKeyPair>,
    tee: Arc<SimTee>,
}

struct Fake {
    hw_key_text: String,
    boot: Mutex<Boot>,
    /// Requests to `/v1/encrypted`, decrypted or not.
    encrypted: AtomicUsize,
    /// Requests the runtime decrypted.
    decrypted: AtomicUsize,
    attestations: AtomicUsize,
    /// Reads plaintexts as a runtime from before framed inner messages did: as JSON only.
    older: std::sync::atomic::AtomicBool,
}

impl Fake {
    fn boot(&self, measurement: [u8; 48]) -> Boot {
        let hw = SimHardwareKey::from_file_contents(&self.hw_key_text).unwrap();
        Boot {
            key: Arc::new(ServiceKeyPair::generate(0)),
            tee: Arc::new(SimTee::new(hw, measurement, [0; 32], false)),
        }
    }

    /// A restart: a new HPKE key, and evidence with `measurement`.
    fn restart(&self, measurement: [u8; 48]) {
        let boot = self.boot(measurement);
        *self.boot.lock().unwrap() = boot;
    }

    fn key(&self) -> [u8; 32] {
        self.boot.lock().unwrap().key.public_key()
    }

    fn keys(key: &ServiceKeyPair) -> RuntimeKeys {
        RuntimeKeys {
            hpke_public_key: key.public_key(),
            hpke_key_id: key.key_id(),
            signing_public_key: [1; 32],
        }
    }
}

async fn attestation(
    State(f): State<Arc<Fake>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    f.attestations.fetch_add(1, Ordering::SeqCst);
    let (key, tee) = {
        let b = f.boot.lock().unwrap();
        (b.key.clone(), b.tee.clone())
    };
    let nonce = hex::decode(&q["nonce"]).unwrap();
    let keys = Fake::keys(&key);
    let evidence = tee.evidence(&report_data(&nonce, &keys, &[])).unwrap();
    Json(AttestationResponse {
        evidence,
        endorsements: Default::default(),
        runtime_keys: keys,
        models: vec![],
    })
    .into_response()
}

/// Decrypts like the runtime; answers 404 for paths naming model `missing`, else echoes the request.
async fn encrypted(State(f): State<Arc<Fake>>, body: Bytes) -> Response {
    f.encrypted.fetch_add(1, Ordering::SeqCst);
    let key = f.boot.lock().unwrap().key.clone();
    let (plain, ctx) = match key.decapsulate_request(&body) {
        Ok(x) => x,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("encrypted request: {e}") })),
            )
                .into_response()
        }
    };
    f.decrypted.fetch_add(1, Ordering::SeqCst);
    if f.older.load(Ordering::SeqCst) && serde_json::from_slice::<InnerRequest>(&plain).is_err() {
        let inner = InnerResponse::json(
            400,
            json!({ "error": "inner request is not valid JSON for a Cordon request: Syntax error at line 1 column 1" }),
        );
        let ct = ctx
            .encrypt_response(&serde_json::to_vec(&inner).unwrap())
            .unwrap();
        return ([(header::CONTENT_TYPE, "message/cordon-response")], ct).into_response();
    }
    let req = InnerRequest::from_plaintext(&plain).unwrap();
    // A body forwarded as its bytes (JSON with its content type, as the proxy sends it) is echoed
    // as the JSON it is.
    let body = match (&req.body, &req.raw_body) {
        (None, Some(raw))
            if req.headers.get("content-type").map(String::as_str) == Some("application/json") =>
        {
            Some(cordon_proto::oip::parse_json_body(raw).unwrap())
        }
        _ => req.body.clone(),
    };
    let inner = if req.path.contains("/badbinary") {
        // A binary answer whose header length runs past its body.
        InnerResponse {
            headers: [(
                "inference-header-content-length".to_string(),
                "999".to_string(),
            )]
            .into(),
            raw_body: Some(b"{}".to_vec()),
            ..InnerResponse::json(200, Value::Null)
        }
    } else if req.path.contains("/missing") {
        InnerResponse::json(404, json!({ "error": "unknown model \"missing\"" }))
    } else if req.path.contains("/busy") {
        InnerResponse::json(
            503,
            json!({ "error": "runtime busy: inference queue is full; retry later" }),
        )
    } else {
        InnerResponse::json(
            200,
            json!({ "method": req.method, "path": req.path, "body": body }),
        )
    };
    let ct = ctx
        .encrypt_response(&serde_json::to_vec(&inner).unwrap())
        .unwrap();
    ([(header::CONTENT_TYPE, "message/cordon-response")], ct).into_response()
}

struct Setup {
    fake: Arc<Fake>,
    proxy: Proxy,
    base: String,
    http: reqwest::Client,
    /// Seconds added to the proxy's clock.
    clock: Arc<AtomicU64>,
}

/// A fake runtime whose evidence says `measurement`, and a proxy whose policy accepts only GOOD.
async fn setup(measurement: [u8; 48], tune: impl FnOnce(&mut ProxyConfig)) -> Setup {
    let hw = SimHardwareKey::generate();
    let anchor = hw.public_key();
    let hw_key_text = hw.to_file_contents().to_string();
    let fake = Arc::new(Fake {
        hw_key_text,
        boot: Mutex::new(Boot {
            key: Arc::new(ServiceKeyPair::generate(0)),
            tee: Arc::new(SimTee::new(hw, measurement, [0; 32], false)),
        }),
        encrypted: AtomicUsize::new(0),
        decrypted: AtomicUsize::new(0),
        attestations: AtomicUsize::new(0),
        older: Default::default(),
    });
    let app = Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/v1/encrypted", post(encrypted))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let doc = PolicyDocument {
        policy: Policy::new(vec![Platform::Sim], vec![GOOD.to_vec()]),
        endorsements: Some(Endorsements {
            sim_trust_anchors: vec![anchor],
            ..Default::default()
        }),
    };
    let clock = Arc::new(AtomicU64::new(0));
    let offset = clock.clone();
    let start = SystemTime::now();
    let mut config = ProxyConfig::new(upstream, doc);
    config.now = Arc::new(move || start + Duration::from_secs(offset.load(Ordering::SeqCst)));
    tune(&mut config);
    let proxy = Proxy::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let serving = proxy.clone();
    tokio::spawn(async move {
        serving
            .serve(listener, std::future::pending())
            .await
            .unwrap()
    });
    Setup {
        fake,
        proxy,
        base,
        http: reqwest::Client::new(),
        clock,
    }
}

impl Setup {
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn infer(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/v2/models/m/infer", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    fn encrypted(&self) -> usize {
        self.fake.encrypted.load(Ordering::SeqCst)
    }

    fn decrypted(&self) -> usize {
        self.fake.decrypted.load(Ordering::SeqCst)
    }

    fn advance(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }
}

/// An overloaded runtime's 503 (inside the channel, where no header travels) reaches the
/// client with `Retry-After`, as the runtime's own 503s carry it.
#[tokio::test]
async fn a_busy_runtime_answer_carries_retry_after() {
    let s = setup(GOOD, |_| {}).await;
    let r = s
        .http
        .get(format!("{}/v2/models/busy", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("runtime busy"),
        "{body}"
    );
    // Other answers carry no Retry-After.
    let r = s
        .http
        .get(format!("{}/v2/models/missing", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(!r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn forwards_each_oip_request_encrypted_and_returns_the_runtime_answer() {
    let s = setup(GOOD, |_| {}).await;
    for path in [
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/m",
        "/v2/models/m/versions/1",
        "/v2/models/m/ready",
        "/v2/models/m/versions/1/ready",
    ] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["method"], "GET", "{path}");
        assert_eq!(body["path"], path, "{path}");
    }
    // The trailing slash of the OpenAPI form `/v2/` is accepted and not forwarded.
    assert_eq!(s.get("/v2/").await.1["path"], "/v2");
    let request = json!({"id": "7", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.5]}]});
    let r = s
        .http
        .post(format!("{}/v2/models/m/versions/1/infer", s.base))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["path"], "/v2/models/m/versions/1/infer");
    assert_eq!(body["body"], request);
    // The runtime's own error status and OIP error body come back unchanged.
    let (status, body) = s.get("/v2/models/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"error": "unknown model \"missing\""}));
    assert_eq!(s.decrypted(), 10);
    let c = s.proxy.counters();
    assert_eq!((c.requests_forwarded, c.verifications_ok), (10, 1));
}

#[tokio::test]
async fn the_proxy_itself_answers_what_it_must_not_forward() {
    let s = setup(GOOD, |c| c.max_body = 1024).await;
    for path in ["/", "/v1/encrypted", "/v2/models", "/v2/models/m/explain"] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("no Open Inference Protocol endpoint"),
            "{path}: {body}"
        );
    }
    let r = s
        .http
        .get(format!("{}/v2/models/m/infer", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let r = s
        .http
        .delete(format!("{}/v2/models/m", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "GET, HEAD");

    let (status, body) = s.infer("{\"inputs\": [").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );
    let (status, body) = s.infer("").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("needs a JSON body"),
        "{body}"
    );
    let (status, body) = s.infer(vec![b' '; 1025]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body["error"].as_str().unwrap().contains("1024"), "{body}");
    // Binary tensor bodies whose sizes do not add up are refused before anything is forwarded.
    for (length, body, expected) in [
        (
            "10",
            "{\"inputs\":[]}",
            "JSON header of a binary request is not valid JSON",
        ),
        (
            "99",
            "{\"inputs\":[]}",
            "Inference-Header-Content-Length is 99",
        ),
        ("many", "{\"inputs\":[]}", "not a byte count"),
        (
            "13",
            "{\"inputs\":[]}xyz",
            "the body after the JSON header 3",
        ),
    ] {
        let r = s
            .http
            .post(format!("{}/v2/models/m/infer", s.base))
            .header("inference-header-content-length", length)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
    }
    // None of these reached the runtime, and none needed its evidence.
    assert_eq!(s.encrypted(), 0);
    assert_eq!(s.fake.attestations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_runtime_the_policy_rejects_gets_nothing_and_every_request_says_why() {
    let s = setup(BAD, |_| {}).await;
    assert!(s.proxy.verify_now().await.is_err());
    for path in ["/v2", "/v2/health/ready", "/v2/models/m"] {
        let (status, body) = s.get(path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("not verified") && error.contains("launch_measurement"),
            "{path}: {error}"
        );
    }
    let r = s
        .http
        .post(format!("{}/v2/models/m/infer", s.base))
        .json(&json!({"inputs": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(s.encrypted(), 0, "nothing may reach an unverified runtime");

    let (status, st) = s.get("/cordon/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["state"], "failed");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("launch_measurement"),
        "{st}"
    );
    assert!(st["hpke_public_key"].is_null(), "{st}");
    assert_eq!(st["counters"]["requests_refused"], 4);
    assert_eq!(st["counters"]["requests_forwarded"], 0);
}

#[tokio::test]
async fn a_restarted_runtime_is_verified_again_and_the_request_retried_once() {
    let s = setup(GOOD, |_| {}).await;
    assert_eq!(s.infer("{\"inputs\": []}").await.0, StatusCode::OK);
    let old_key = s.fake.key();
    s.fake.restart(GOOD);
    assert_ne!(s.fake.key(), old_key);

    let (status, body) = s.infer("{\"inputs\": [1]}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["body"], json!({"inputs": [1]}));
    // First try refused before decryption, the retry decrypted: the runtime ran it once.
    assert_eq!((s.encrypted(), s.decrypted()), (3, 2));
    let st = s.proxy.status();
    assert_eq!(st.state, ProxyState::Verified);
    assert_eq!(st.hpke_public_key, Some(hex::encode(s.fake.key())));
    assert_eq!(st.counters.key_changes, 1);
    assert_eq!(st.counters.verifications_ok, 2);
    assert_eq!(st.counters.requests_forwarded, 2);
}

#[tokio::test]
async fn concurrent_requests_meeting_a_new_key_share_one_verification() {
    let s = setup(GOOD, |_| {}).await;
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    s.fake.restart(GOOD);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (http, url) = (s.http.clone(), format!("{}/v2/models/m{i}", s.base));
        tasks.push(tokio::spawn(async move {
            http.get(url).send().await.unwrap().status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let c = s.proxy.counters();
    assert_eq!(c.verifications_ok, 2, "{c:?}");
    assert_eq!(c.key_changes, 1);
    assert_eq!(s.decrypted(), 9);
}

#[tokio::test]
async fn a_restarted_runtime_the_policy_no_longer_accepts_gets_nothing() {
    let s = setup(GOOD, |_| {}).await;
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    s.fake.restart(BAD);
    let (status, body) = s.infer("{\"inputs\": []}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("launch_measurement"),
        "{body}"
    );
    // The refused first try is all the new runtime saw; no retry went to its key.
    assert_eq!((s.encrypted(), s.decrypted()), (2, 1));
    let st = s.proxy.status();
    assert_eq!(st.state, ProxyState::Failed);
    assert_eq!(st.counters.key_changes, 0);
    assert_eq!(st.counters.verifications_failed, 1);
    // Later requests are refused without contacting the runtime.
    assert_eq!(s.get("/v2").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.encrypted(), 2);
}

#[tokio::test]
async fn a_verification_older_than_the_interval_is_repeated_before_forwarding() {
    let s = setup(GOOD, |c| c.reverify_every = Duration::from_secs(60)).await;
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    let first = s.proxy.status();
    s.advance(59);
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    assert_eq!(s.proxy.counters().verifications_ok, 1);
    s.advance(1);
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    assert_eq!(s.proxy.counters().verifications_ok, 2);
    assert_eq!(s.fake.attestations.load(Ordering::SeqCst), 2);
    let second = s.proxy.status();
    // Times come from the injected clock: exactly 60 s apart, next one due 60 s later.
    let t = |v: &Option<String>| {
        time::OffsetDateTime::parse(
            v.as_deref().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    assert_eq!(
        (t(&second.verified_at) - t(&first.verified_at)).whole_seconds(),
        60
    );
    assert_eq!(
        (t(&second.next_verification) - t(&second.verified_at)).whole_seconds(),
        60
    );
    assert_eq!(second.counters.key_changes, 0, "same runtime, same key");
}

#[tokio::test]
async fn after_a_failure_requests_retry_verification_only_after_the_retry_interval() {
    let s = setup(BAD, |c| c.retry_failed_after = Duration::from_secs(10)).await;
    assert_eq!(s.get("/v2").await.0, StatusCode::SERVICE_UNAVAILABLE);
    s.fake.restart(GOOD);
    s.advance(9);
    assert_eq!(s.get("/v2").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(s.fake.attestations.load(Ordering::SeqCst), 1);
    s.advance(1);
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    let c = s.proxy.counters();
    assert_eq!((c.verifications_failed, c.verifications_ok), (1, 1));
    assert_eq!(c.requests_refused, 2);
}

#[tokio::test]
async fn the_background_task_verifies_on_schedule() {
    // The real clock here: the schedule runs on tokio's timer.
    let s = setup(GOOD, |c| {
        c.reverify_every = Duration::from_secs(1);
        c.now = Arc::new(SystemTime::now);
    })
    .await;
    s.proxy.verify_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let ok = s.proxy.counters().verifications_ok;
    assert!(ok >= 3, "{ok} verifications in 3.5 s at a 1 s interval");
    assert_eq!(s.encrypted(), 0, "verifying sends no requests");
}

#[tokio::test]
async fn status_shows_what_was_verified() {
    let s = setup(GOOD, |_| {}).await;
    let (_, before) = s.get("/cordon/v1/status").await;
    assert_eq!(before["state"], "unverified");
    assert_eq!(s.get("/v2").await.0, StatusCode::OK);
    let (status, st) = s.get("/cordon/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["state"], "verified");
    assert_eq!(st["platform"], "sim");
    assert_eq!(st["is_simulated"], true);
    assert_eq!(st["claims"]["launch_measurement"], hex::encode(GOOD));
    assert_eq!(st["claims"]["debug"], false);
    assert!(st["claims"].get("raw").is_none());
    assert_eq!(st["claims"]["claims_digest"].as_str().unwrap().len(), 64);
    assert_eq!(st["hpke_public_key"], hex::encode(s.fake.key()));
    assert_eq!(st["policy"]["launch_measurements"][0], hex::encode(GOOD));
    assert!(
        st["policy_summary"]
            .as_str()
            .unwrap()
            .contains("platforms [sim]"),
        "{st}"
    );
    assert!(st["verified_at"].as_str().unwrap().ends_with('Z'), "{st}");
    assert!(st["next_verification"].is_string());
    assert_eq!(st["upstream"], s.proxy.status().upstream);
    assert_eq!(st["counters"]["verifications_ok"], 1);
    assert!(st["last_error"].is_null());
}

#[test]
fn a_policy_without_endorsements_or_a_bad_upstream_is_refused() {
    let doc = PolicyDocument {
        policy: Policy::new(vec![Platform::Sim], vec![GOOD.to_vec()]),
        endorsements: None,
    };
    let err = Proxy::new(ProxyConfig::new("http://127.0.0.1:1", doc.clone())).err();
    assert!(matches!(err, Some(ProxyError::NoEndorsements)));
    let doc = PolicyDocument {
        endorsements: Some(Endorsements::default()),
        ..doc
    };
    let err = Proxy::new(ProxyConfig::new("127.0.0.1:1", doc)).err();
    assert!(matches!(err, Some(ProxyError::Upstream(_))));
}

/// A proxy upgraded before its runtime: a runtime from before bodies travelled as bytes refuses
/// them (it reads the plaintext as JSON, and runs nothing), and the proxy sends the same request
/// once more as the JSON tree such a runtime takes, JSON and binary bodies alike.
#[tokio::test]
async fn a_runtime_from_before_bodies_as_bytes_still_gets_json_trees() {
    let s = setup(GOOD, |_| {}).await;
    s.fake.older.store(true, Ordering::SeqCst);
    let (status, body) = s
        .infer(
            r#"{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, NaN]}]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["body"],
        json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.5, "NaN"]}]})
    );
    let header = br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut binary = header.to_vec();
    binary.extend_from_slice(&1.5f32.to_le_bytes());
    binary.extend_from_slice(&(-2.0f32).to_le_bytes());
    let before = s.decrypted();
    let r = s
        .http
        .post(format!("{}/v2/models/m/infer", s.base))
        .header("inference-header-content-length", header.len().to_string())
        .body(binary)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["body"]["inputs"][0]["data"], json!([1.5, -2.0]));
    // Refused framed, then answered as a tree.
    assert_eq!(s.decrypted() - before, 2);
}

/// A binary answer whose sizes do not add up is not passed on: 502, naming the fault.
#[tokio::test]
async fn a_malformed_binary_answer_is_a_bad_gateway() {
    let s = setup(GOOD, |_| {}).await;
    let r = s
        .http
        .post(format!("{}/v2/models/badbinary/infer", s.base))
        .header("content-type", "application/json")
        .body(r#"{"inputs": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("binary answer is malformed"),
        "{body}"
    );
}
