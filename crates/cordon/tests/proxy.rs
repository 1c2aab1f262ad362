//! `cordon proxy` across real processes on loopback (KBS, runtime, proxy: the `cordon` binary),
//! driven with a plain HTTP client exactly as an unmodified Open Inference Protocol application
//! would: no Cordon code on the client side.

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const MODELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models");
const TEST_SET: &str = include_str!("../../../models/reference/breast_cancer_test.json");
const LR_EXPECTED: &str = include_str!("../../../models/reference/breast_cancer_lr.expected.json");
const MLP_EXPECTED: &str =
    include_str!("../../../models/reference/breast_cancer_mlp.expected.json");

/// A KBS holding the keys of both demo models under a release policy that accepts two runtime
/// configurations, A and B (B differs by one comment, so its measurement differs). Client
/// policies accept A only, so a runtime restarted with B still boots but fails the client's check.
struct Rig {
    dir: tempfile::TempDir,
    _kbs: Proc,
    anchor: String,
    measurement_a: String,
}

impl Rig {
    fn new() -> Rig {
        Rig::serving(&[
            ("lr", "breast_cancer_lr.onnx"),
            ("mlp", "breast_cancer_mlp.onnx"),
        ])
    }

    /// The rig, serving `models` (name, file under models/).
    fn serving(models: &[(&str, &str)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        ok(&["keygen", "--out", &s(&p("owner.key"))]);
        ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
        for &(m, file) in models {
            ok(&[
                "seal",
                &format!("{MODELS}/{file}"),
                "--out",
                &s(&p(&format!("{m}.sealed"))),
                "--key-out",
                &s(&p(&format!("{m}.dek"))),
                "--owner-key",
                &s(&p("owner.key")),
                "--name",
                m,
            ]);
        }
        let (kbs, kbs_url) = start_kbs(dir.path(), "kbs");
        let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
        let mut config = format!("kbs_url = \"{kbs_url}\"\n");
        for &(m, _) in models {
            let inspected = ok(&["inspect", &s(&p(&format!("{m}.sealed")))]);
            let digest = inspected
                .lines()
                .find_map(|l| l.strip_prefix("manifest sha256: "))
                .unwrap()
                .trim()
                .to_string();
            config.push_str(&format!(
                "\n[[models]]\nname = \"{m}\"\npath = \"{}\"\nsigner = \"{}\"\nmanifest_sha256 = \"{digest}\"\n",
                s(&p(&format!("{m}.sealed"))),
                signer.trim(),
            ));
        }
        std::fs::write(p("a.toml"), &config).unwrap();
        std::fs::write(p("b.toml"), format!("{config}# configuration B\n")).unwrap();
        let measure = |c: &str| {
            ok(&["runtime", "measure", "--config", &s(&p(c))])
                .trim()
                .to_string()
        };
        let (measurement_a, measurement_b) = (measure("a.toml"), measure("b.toml"));
        assert_ne!(measurement_a, measurement_b);
        std::fs::write(
            p("release.toml"),
            format!("platforms = [\"sim\"]\nlaunch_measurements = [\"{measurement_a}\", \"{measurement_b}\"]\n"),
        )
        .unwrap();
        for &(m, _) in models {
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
                &s(&p(&format!("{m}.dek"))),
                "--policy",
                &s(&p("release.toml")),
            ]);
        }
        let anchor = std::fs::read_to_string(p("hw.pub"))
            .unwrap()
            .trim()
            .to_string();
        Rig {
            dir,
            _kbs: kbs,
            anchor,
            measurement_a,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a runtime with configuration `config` ("a.toml" or "b.toml") on `listen`.
    fn runtime(&self, config: &str, listen: &str) -> (Proc, String) {
        let addr = self.path("runtime.addr");
        let _ = std::fs::remove_file(&addr);
        let mut rt = Proc::start(
            &[
                "runtime",
                "serve",
                "--config",
                &s(&self.path(config)),
                "--listen",
                listen,
                "--platform",
                "sim",
                "--sim-hardware-key",
                &s(&self.path("hw.key")),
                "--addr-file",
                &s(&addr),
            ],
            self.path(&format!("runtime-{config}.log")),
        );
        let url = rt.url(&addr);
        (rt, url)
    }

    /// A client policy accepting `measurement`, with the sim trust anchor.
    fn client_policy(&self, name: &str, measurement: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(
            &path,
            format!(
                "platforms = [\"sim\"]\nlaunch_measurements = [\"{measurement}\"]\n\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
                self.anchor
            ),
        )
        .unwrap();
        path
    }

    /// Starts `cordon proxy` in front of `upstream` with `policy`; returns it and its base URL.
    fn proxy(&self, upstream: &str, policy: &Path) -> (Proc, String) {
        start_proxy(self.dir.path(), upstream, policy, "proxy", &[])
    }
}

/// A plain HTTP client (reqwest), called synchronously from the tests.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: reqwest::Client::new(),
        }
    }

    /// GET, returning status, content type and JSON body.
    fn get(&self, url: &str) -> (StatusCode, String, Value) {
        self.rt.block_on(async {
            let r = self.client.get(url).send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (r.status(), ct, r.json().await.unwrap())
        })
    }

    /// GET, returning the body as text.
    fn text(&self, url: &str) -> String {
        self.rt.block_on(async {
            let r = self.client.get(url).send().await.unwrap();
            r.text().await.unwrap()
        })
    }

    /// POST with `Content-Type: application/json`; the answer must be JSON too.
    fn post(&self, url: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(url)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.headers()["content-type"], "application/json");
            (r.status(), r.json().await.unwrap())
        })
    }
}

fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not an OIP error body: {body}"))
}

#[test]
fn an_unmodified_oip_client_works_through_the_proxy() {
    let rig = Rig::new();
    let (_rt, upstream) = rig.runtime("a.toml", "127.0.0.1:0");
    let policy = rig.client_policy("client.toml", &rig.measurement_a);
    let (proxy, base) = rig.proxy(&upstream, &policy);
    let out = proxy.log();
    assert!(out.contains("SIMULATED"), "{out}");
    assert!(out.contains(&rig.measurement_a), "{out}");
    let http = Http::new();

    // Server metadata, liveness, readiness.
    let (status, ct, meta) = http.get(&format!("{base}/v2"));
    assert_eq!((status, ct.as_str()), (StatusCode::OK, "application/json"));
    assert!(
        meta["name"].is_string() && meta["version"].is_string(),
        "{meta}"
    );
    assert!(meta["extensions"].is_array(), "{meta}");
    assert_eq!(
        http.get(&format!("{base}/v2/health/live")).0,
        StatusCode::OK
    );
    assert_eq!(
        http.get(&format!("{base}/v2/health/ready")).0,
        StatusCode::OK
    );

    // Model metadata and readiness, with and without a version.
    for path in ["/v2/models/mlp", "/v2/models/mlp/versions/1"] {
        let (status, _, m) = http.get(&format!("{base}{path}"));
        assert_eq!(status, StatusCode::OK, "{path}: {m}");
        assert_eq!(m["name"], "mlp");
        assert_eq!(m["versions"], json!(["1"]));
        assert_eq!(
            m["inputs"],
            json!([{"name": "input", "datatype": "FP32", "shape": [-1, 30]}])
        );
        let outputs: Vec<&str> = m["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap())
            .collect();
        assert_eq!(outputs, ["label", "probabilities"]);
    }
    // The model repository extension (read-only), as clients discover models.
    let (status, index) = http.post(&format!("{base}/v2/repository/index"), "{}");
    assert_eq!(status, StatusCode::OK, "{index}");
    assert_eq!(
        index,
        json!([
            {"name": "lr", "version": "1", "state": "READY"},
            {"name": "mlp", "version": "1", "state": "READY"}
        ])
    );
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("model_repository")),
        "{meta}"
    );
    for path in ["/v2/models/lr/ready", "/v2/models/lr/versions/1/ready"] {
        let (status, _, r) = http.get(&format!("{base}{path}"));
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(r, json!({"name": "lr", "ready": true}));
    }

    // Inference on every test row, both models, against the reference outputs.
    let test: Value = serde_json::from_str(TEST_SET).unwrap();
    let rows = test["inputs"].as_array().unwrap();
    let data: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let request = json!({
        "id": "batch-1",
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": data}]
    });
    for (model, path, expected) in [
        ("lr", "/v2/models/lr/infer", LR_EXPECTED),
        ("mlp", "/v2/models/mlp/versions/1/infer", MLP_EXPECTED),
    ] {
        let (status, resp) = http.post(&format!("{base}{path}"), request.to_string());
        assert_eq!(status, StatusCode::OK, "{model}: {resp}");
        assert_eq!(resp["model_name"], model);
        assert_eq!(resp["id"], "batch-1");
        let expected: Value = serde_json::from_str(expected).unwrap();
        let output = |name: &str| {
            resp["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap_or_else(|| panic!("{model}: no output {name}"))
                .clone()
        };
        let labels = output("label");
        assert_eq!(labels["shape"], json!([rows.len()]));
        assert_eq!(labels["data"], expected["onnxruntime_labels"], "{model}");
        let probs = output("probabilities");
        assert_eq!(probs["shape"], json!([rows.len(), 2]));
        let got: Vec<f64> = probs["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = expected["onnxruntime_probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{model}: {g} vs {w}");
        }
    }

    // Errors, each an OIP error body with the right status; the proxy stays up throughout.
    let (status, body) = http.post(&format!("{base}/v2/models/nope/infer"), request.to_string());
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("unknown model"), "{body}");
    let (status, _, body) = http.get(&format!("{base}/v2/models/nope"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("unknown model"), "{body}");
    let (status, _, body) = http.get(&format!("{base}/v2/models/mlp/versions/7"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no version"), "{body}");
    let (status, body) = http.post(&format!("{base}/v2/models/mlp/infer"), "{\"inputs\": [{");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("not valid JSON"), "{body}");
    let wrong_shape = json!({"inputs": [{"name": "input", "shape": [1, 31], "datatype": "FP32", "data": vec![0.0; 31]}]});
    let (status, body) = http.post(
        &format!("{base}/v2/models/mlp/infer"),
        wrong_shape.to_string(),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("shape"), "{body}");
    let oversized = format!("{{\"pad\": \"{}\"}}", "x".repeat(9 << 20));
    let (status, body) = http.post(&format!("{base}/v2/models/mlp/infer"), oversized);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&body).contains("limit"), "{body}");
    let (status, _, body) = http.get(&format!("{base}/v1/attestation?nonce=00"));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error_of(&body).contains("no Open Inference Protocol endpoint"));

    // What the proxy verified.
    let (status, _, st) = http.get(&format!("{base}/cordon/v1/status"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(st["state"], "verified", "{st}");
    assert_eq!(st["upstream"], upstream);
    assert_eq!(st["platform"], "sim");
    assert_eq!(st["is_simulated"], true);
    assert_eq!(st["claims"]["launch_measurement"], rig.measurement_a);
    assert_eq!(st["counters"]["verifications_ok"], 1);
    assert_eq!(st["counters"]["requests_refused"], 0);
    // Every answer from the runtime counts, its errors included: server 3, repository index 1,
    // models 4, infer 2, runtime errors 4 (the proxy answered the malformed, oversized and
    // unknown-path ones).
    assert_eq!(st["counters"]["requests_forwarded"], 14, "{st}");
    assert!(
        !proxy.log().contains("batch-1"),
        "request bodies must not be logged"
    );
    // The proxy forwarded in session mode: the runtime counted every request on that channel,
    // and none one-shot.
    let metrics = http.text(&format!("{upstream}/metrics"));
    let count = |channel: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("cordon_runtime_requests_total")
                    && l.contains(&format!("channel=\"{channel}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(count("session"), 14, "{metrics}");
    assert_eq!(count("oneshot"), 0, "{metrics}");
}

#[test]
fn the_proxy_fails_closed_when_its_policy_rejects_the_runtime() {
    let rig = Rig::new();
    let (_rt, upstream) = rig.runtime("a.toml", "127.0.0.1:0");
    let wrong = "ab".repeat(48);
    let policy = rig.client_policy("wrong.toml", &wrong);
    let (proxy, base) = rig.proxy(&upstream, &policy);
    assert!(proxy.log().contains("NOT VERIFIED"), "{}", proxy.log());
    let http = Http::new();
    for path in ["/v2", "/v2/health/ready", "/v2/models/mlp"] {
        let (status, _, body) = http.get(&format!("{base}{path}"));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let e = error_of(&body);
        assert!(
            e.contains("runtime rejected by policy") && e.contains("launch_measurement"),
            "{path}: {e}"
        );
    }
    let input = std::fs::read_to_string(format!("{MODELS}/demo_input.json")).unwrap();
    let (status, body) = http.post(&format!("{base}/v2/models/mlp/infer"), input);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error_of(&body).contains(&wrong), "{body}");
    let (_, _, st) = http.get(&format!("{base}/cordon/v1/status"));
    assert_eq!(st["state"], "failed");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("launch_measurement"),
        "{st}"
    );
    assert_eq!(st["counters"]["requests_forwarded"], 0);
    assert_eq!(st["counters"]["requests_refused"], 4);
}

#[test]
fn the_proxy_follows_a_runtime_restart_and_refuses_one_its_policy_rejects() {
    let rig = Rig::new();
    let (rt, upstream) = rig.runtime("a.toml", "127.0.0.1:0");
    let listen = upstream.trim_start_matches("http://").to_string();
    let policy = rig.client_policy("client.toml", &rig.measurement_a);
    let (_proxy, base) = rig.proxy(&upstream, &policy);
    let http = Http::new();
    let input = std::fs::read_to_string(format!("{MODELS}/demo_input.json")).unwrap();
    let infer = |expect: StatusCode| {
        let (status, body) = http.post(&format!("{base}/v2/models/lr/infer"), input.clone());
        assert_eq!(status, expect, "{body}");
        body
    };
    let status = || http.get(&format!("{base}/cordon/v1/status")).2;
    infer(StatusCode::OK);
    let first_key = status()["hpke_public_key"].as_str().unwrap().to_string();

    // Same configuration, same address, new process: a new HPKE key the proxy has not verified.
    drop(rt);
    let (rt, again) = rig.runtime("a.toml", &listen);
    assert_eq!(again, upstream);
    let body = infer(StatusCode::OK);
    assert_eq!(body["model_name"], "lr");
    let st = status();
    assert_eq!(st["state"], "verified");
    assert_eq!(st["counters"]["key_changes"], 1, "{st}");
    assert_eq!(st["counters"]["verifications_ok"], 2, "{st}");
    let new_key = st["hpke_public_key"].as_str().unwrap();
    assert_ne!(new_key, first_key);
    // The pinned key is the one the running runtime presents.
    let (_, _, att) = http.get(&format!(
        "{upstream}/v1/attestation?nonce={}",
        "00".repeat(32)
    ));
    assert_eq!(att["runtime_keys"]["hpke_public_key"], new_key);

    // Configuration B: the KBS still releases the keys, but the client's policy does not accept it.
    drop(rt);
    let (_rt, _) = rig.runtime("b.toml", &listen);
    let body = infer(StatusCode::SERVICE_UNAVAILABLE);
    let e = error_of(&body);
    assert!(e.contains("launch_measurement"), "{e}");
    let st = status();
    assert_eq!(st["state"], "failed");
    assert!(st["hpke_public_key"].is_null());
    assert_eq!(st["counters"]["key_changes"], 1);
    assert_eq!(st["counters"]["verifications_failed"], 1);
}

/// BYTES and every other datatype from the stock Triton clients (tritonclient from PyPI, on their
/// defaults: binary tensors over HTTP and raw contents over gRPC, and JSON over HTTP) through the
/// proxy and the encrypted channel to a runtime serving the Identity model of every datatype
/// (models/oip/datatypes.onnx): each output equals its input, datatype and shape included
/// (crates/cordon/tests/stock_clients/triton_datatypes.py holds the checks).
#[test]
fn the_stock_clients_send_and_receive_every_datatype_bytes_included() {
    let python = python_clients();
    let rig = Rig::serving(&[("dt", "oip/datatypes.onnx")]);
    let (_rt, url) = rig.runtime("a.toml", "127.0.0.1:0");
    let policy = rig.client_policy("client.toml", &rig.measurement_a);
    let grpc_addr = rig.path("grpc.addr");
    let (_proxy, proxy_url) = start_proxy(
        rig.dir.path(),
        &url,
        &policy,
        "proxy",
        &[
            "--grpc-listen",
            "127.0.0.1:0",
            "--grpc-addr-file",
            &s(&grpc_addr),
        ],
    );
    let grpc = std::fs::read_to_string(&grpc_addr).unwrap();
    let out = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stock_clients/triton_datatypes.py"))
        .arg(proxy_url.trim_start_matches("http://"))
        .arg(grpc.trim())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    // Every datatype, over each of the three ways.
    for way in ["http_binary", "http_json", "grpc"] {
        assert_eq!(summary[way].as_array().map(Vec::len), Some(13), "{summary}");
    }
}
