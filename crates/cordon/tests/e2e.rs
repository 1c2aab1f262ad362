//! End to end across real processes on loopback: the `cordon` binary as KBS, runtime and CLI.

mod common;
use base64::Engine as _;
use common::*;
use cordon_attest::PolicyDocument;
use cordon_proto::oip::InferRequest;
use cordon_runtime::OnnxModel;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const MLP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/breast_cancer_mlp.onnx"
);
const TEST_SET: &str = include_str!("../../../models/reference/breast_cancer_test.json");

/// How to deploy: what the release policy says and how the runtime runs.
struct Deploy {
    policy_platforms: &'static str,
    measurement_override: Option<String>,
    sim_debug: bool,
    /// Manifest digest the runtime config pins (default: the sealed artifact's own).
    pinned_manifest: Option<String>,
    /// CORDON_LOG of the KBS and the runtime.
    log_level: &'static str,
}

impl Default for Deploy {
    fn default() -> Self {
        Deploy {
            policy_platforms: "[\"sim\"]",
            measurement_override: None,
            sim_debug: false,
            pinned_manifest: None,
            log_level: "info",
        }
    }
}

struct Deployment {
    dir: tempfile::TempDir,
    _kbs: Proc,
    runtime: Result<(Proc, String), String>,
    measurement: String,
    anchor: String,
}

/// Deploys the MLP model with the CLI alone, as an operator would.
fn deploy(d: Deploy) -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    ok(&[
        "seal",
        MLP,
        "--out",
        &s(&p("mlp.sealed")),
        "--key-out",
        &s(&p("mlp.dek")),
        "--owner-key",
        &s(&p("owner.key")),
        "--name",
        "mlp",
    ]);
    let (kbs, kbs_url) = start_kbs_logging(dir.path(), "kbs", d.log_level);
    let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
    let inspected = ok(&["inspect", &s(&p("mlp.sealed"))]);
    let digest = inspected
        .lines()
        .find_map(|l| l.strip_prefix("manifest sha256: "))
        .unwrap()
        .trim()
        .to_string();
    let config = format!(
        "kbs_url = \"{kbs_url}\"\n\n[[models]]\nname = \"mlp\"\npath = \"{}\"\nsigner = \"{}\"\nmanifest_sha256 = \"{}\"\n",
        s(&p("mlp.sealed")),
        signer.trim(),
        d.pinned_manifest.clone().unwrap_or(digest)
    );
    std::fs::write(p("runtime.toml"), &config).unwrap();
    let measurement = ok(&["runtime", "measure", "--config", &s(&p("runtime.toml"))])
        .trim()
        .to_string();
    let listed = d
        .measurement_override
        .clone()
        .unwrap_or_else(|| measurement.clone());
    let policy = format!(
        "platforms = {}\nlaunch_measurements = [\"{listed}\"]\nallow_debug = false\n",
        d.policy_platforms
    );
    std::fs::write(p("release.toml"), &policy).unwrap();
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
        &s(&p("mlp.dek")),
        "--policy",
        &s(&p("release.toml")),
    ]);
    let mut args = vec![
        "runtime",
        "serve",
        "--config",
        "",
        "--listen",
        "127.0.0.1:0",
        "--platform",
        "sim",
        "--sim-hardware-key",
        "",
        "--addr-file",
        "",
    ];
    let (cfg, hw, addr) = (
        s(&p("runtime.toml")),
        s(&p("hw.key")),
        s(&p("runtime.addr")),
    );
    args[3] = &cfg;
    args[9] = &hw;
    args[11] = &addr;
    if d.sim_debug {
        args.push("--sim-debug");
    }
    let mut runtime = Proc::start_logging(&args, p("runtime.log"), d.log_level);
    let runtime = match runtime.wait_ready(&p("runtime.addr")) {
        Ok(url) => Ok((runtime, url)),
        Err(e) => Err(e),
    };
    let anchor = std::fs::read_to_string(p("hw.pub"))
        .unwrap()
        .trim()
        .to_string();
    Deployment {
        dir,
        _kbs: kbs,
        runtime,
        measurement,
        anchor,
    }
}

impl Deployment {
    fn client_policy(&self, measurement: &str) -> PathBuf {
        let path = self.dir.path().join("client.toml");
        std::fs::write(
            &path,
            format!(
                "platforms = [\"sim\"]\nlaunch_measurements = [\"{measurement}\"]\nallow_debug = false\n\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
                self.anchor
            ),
        )
        .unwrap();
        path
    }

    fn audit(&self) -> String {
        let token = s(&self.dir.path().join("token"));
        let url = format!(
            "http://{}",
            std::fs::read_to_string(self.dir.path().join("kbs.addr"))
                .unwrap()
                .trim()
        );
        ok(&[
            "kbs",
            "audit",
            "--kbs",
            &url,
            "--kbs-key",
            &kbs_key(self.dir.path(), "kbs"),
            "--token-file",
            &token,
        ])
    }
}

#[derive(serde::Deserialize)]
struct TestSet {
    inputs: Vec<Vec<f64>>,
}

fn batch(rows: &[Vec<f64>]) -> InferRequest {
    let data: Vec<f64> = rows.iter().flatten().copied().collect();
    serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "input", "shape": [rows.len(), 30], "datatype": "FP32", "data": data}]
    }))
    .unwrap()
}

#[test]
fn quickstart_runs_end_to_end_twice_in_one_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    for run in 0..2 {
        let out = cordon(&["quickstart", "--data-dir", &s(dir.path())]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("SIMULATED, NOT hardware-backed"),
            "{stdout}"
        );
        assert!(stdout.contains("key_released"), "{stdout}");
        assert!(
            stdout.contains("equals the same engine in process on the plaintext model: yes"),
            "{stdout}"
        );
        assert!(stdout.contains("audit hash chain intact"), "{stdout}");
    }
    // The plaintext model never lands in the data directory.
    let model = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/breast_cancer_lr.onnx"
    ))
    .unwrap();
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.windows(64).any(|w| w == &model[model.len() - 64..]),
            "plaintext model found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn encrypted_predictions_equal_in_process_tract() {
    let d = deploy(Deploy::default());
    let (_rt, url) = d.runtime.as_ref().expect("runtime boots");
    let doc = PolicyDocument::from_toml(
        &std::fs::read_to_string(d.client_policy(&d.measurement)).unwrap(),
    )
    .unwrap();
    let test: TestSet = serde_json::from_str(TEST_SET).unwrap();
    let local = OnnxModel::load("mlp", "1", &std::fs::read(MLP).unwrap()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let verified = cordon_client::connect(url, &doc, SystemTime::now())
            .await
            .unwrap();
        let whole = batch(&test.inputs);
        let remote = verified.infer("mlp", &whole).await.unwrap();
        assert_eq!(remote.outputs, local.infer(&whole).unwrap().outputs);
        for row in test.inputs.iter().step_by(29) {
            let one = batch(std::slice::from_ref(row));
            assert_eq!(
                verified.infer("mlp", &one).await.unwrap().outputs,
                local.infer(&one).unwrap().outputs
            );
        }
        // Bad requests come back as errors through the channel; the server stays up.
        let mut wrong = batch(&test.inputs[..1]);
        wrong.inputs[0].shape = vec![1, 31];
        let err = verified.infer("mlp", &wrong).await.unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
        let err = verified
            .infer("nope", &whole)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown model"), "{err}");
        assert!(verified.infer("mlp", &one_row(&test)).await.is_ok());
    });
    // `cordon infer` does the same from the command line.
    let input = d.dir.path().join("req.json");
    std::fs::write(
        &input,
        serde_json::to_string(&batch(&test.inputs[..2])).unwrap(),
    )
    .unwrap();
    let out = ok(&[
        "infer",
        "--runtime",
        url,
        "--policy",
        &s(&d.client_policy(&d.measurement)),
        "--model",
        "mlp",
        "--input",
        &s(&input),
    ]);
    assert!(out.contains("\"label\""), "{out}");
    assert!(d.audit().contains("key_released"));
}

/// A whole run at the most verbose log level: neither the logs of the KBS and the runtime, nor
/// the runtime's metrics, nor the audit log contain the client's inputs, the model's outputs, the
/// DEK, the owner's key or the simulated hardware key.
#[test]
fn logs_and_metrics_of_a_run_hold_no_plaintext_and_no_keys() {
    let d = deploy(Deploy {
        log_level: "trace",
        ..Deploy::default()
    });
    let (runtime, url) = d.runtime.as_ref().expect("runtime boots");
    let doc = PolicyDocument::from_toml(
        &std::fs::read_to_string(d.client_policy(&d.measurement)).unwrap(),
    )
    .unwrap();
    let test: TestSet = serde_json::from_str(TEST_SET).unwrap();
    // Distinctive inputs that no log line would contain by chance.
    let rows: Vec<Vec<f64>> = test.inputs[..3]
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r[0] = 7315.0625 + 0.125 * i as f64;
            r[1] = 86.7578125;
            r
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (outputs, metrics, error_body) = rt.block_on(async {
        let verified = cordon_client::connect(url, &doc, SystemTime::now())
            .await
            .unwrap();
        let oneshot = verified.infer("mlp", &batch(&rows)).await.unwrap();
        let session = verified.open_session().await.unwrap();
        for _ in 0..3 {
            session.infer("mlp", &batch(&rows)).await.unwrap();
        }
        // A malformed request carrying the same values: its error must not echo them.
        let mut bad = batch(&rows);
        bad.inputs[0].shape = vec![3, 29];
        let error_body = verified.infer("mlp", &bad).await.unwrap_err().to_string();
        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (oneshot.outputs, metrics, error_body)
    });
    assert!(error_body.contains("400"), "{error_body}");
    assert!(
        metrics.contains(r#"channel="session",outcome="ok"} 3"#),
        "{metrics}"
    );
    // The inputs as any formatter prints them (all exact in f32).
    let mut needles: Vec<String> = vec![
        "7315.0625".into(),
        "7315.1875".into(),
        "7315.3125".into(),
        "86.7578125".into(),
    ];
    // Output probabilities as the runtime would print them (shortest f32 form); long enough
    // that no timing or counter in a trace line matches one by chance.
    let probs = outputs.iter().find(|t| t.name == "probabilities").unwrap();
    for p in probs.data.as_array().unwrap() {
        let p = format!("{}", p.as_f64().unwrap() as f32);
        if p.len() >= 9 {
            needles.push(p);
        }
    }
    // Every secret on disk: the DEK, the owner's secret key, the simulated hardware key.
    let secret_of = |file: &str, field: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.dir.path().join(file)).unwrap())
                .unwrap();
        v[field].as_str().unwrap().to_string()
    };
    let dek = secret_of("mlp.dek", "dek");
    needles.push(dek.clone());
    needles.push(base64::engine::general_purpose::STANDARD.encode(hex::decode(&dek).unwrap()));
    needles.push(secret_of("owner.key", "secret_key"));
    needles.push(secret_of("hw.key", "secret_key"));
    assert!(needles.len() >= 6, "{needles:?}");
    let logs = [
        ("runtime log", runtime.log()),
        (
            "kbs log",
            std::fs::read_to_string(d.dir.path().join("kbs.log")).unwrap(),
        ),
        ("metrics", metrics),
        ("audit log", d.audit()),
        ("error body", error_body),
    ];
    // The trace level really was on: the scan is not vacuous.
    assert!(
        logs[0].1.contains("TRACE") || logs[0].1.contains("DEBUG"),
        "{}",
        logs[0].1
    );
    for (what, text) in &logs {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{what} contains {n:?}");
        }
    }
    // Every file of the deployment's directory, outside the KBS store and the owner's own key
    // files (which hold their secrets by design): no input, output or key, and no 64-byte window
    // of the plaintext model.
    let model = std::fs::read(MLP).unwrap();
    let windows: Vec<&[u8]> = model
        .chunks(64)
        .filter(|w| w.len() == 64)
        .step_by(7)
        .collect();
    let mut scanned = 0;
    let mut stack = vec![d.dir.path().to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if !path.ends_with("kbs") {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            }
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if ["owner.key", "mlp.dek", "hw.key"].contains(&name.as_str()) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{name} contains {n:?}");
        }
        for w in &windows {
            assert!(
                !bytes.windows(64).any(|b| b == *w),
                "{name} contains plaintext model bytes"
            );
        }
        scanned += 1;
    }
    assert!(scanned >= 6, "only {scanned} files scanned");
}

fn one_row(t: &TestSet) -> InferRequest {
    batch(&t.inputs[..1])
}

#[test]
fn client_refuses_runtime_whose_measurement_is_not_in_its_policy() {
    let d = deploy(Deploy::default());
    let (_rt, url) = d.runtime.as_ref().expect("runtime boots");
    let input = d.dir.path().join("req.json");
    std::fs::write(&input, include_str!("../../../models/demo_input.json")).unwrap();
    let out = cordon(&[
        "infer",
        "--runtime",
        url,
        "--policy",
        &s(&d.client_policy(&"ab".repeat(48))),
        "--model",
        "mlp",
        "--input",
        &s(&input),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("runtime rejected by policy") && err.contains("launch_measurement"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

fn assert_denied(d: Deploy, needle: &str) {
    let dep = deploy(d);
    let err = dep.runtime.as_ref().err().expect("runtime must not boot");
    assert!(err.contains("refused key") && err.contains(needle), "{err}");
    let audit = dep.audit();
    assert!(
        audit.contains("key_denied") && !audit.contains("key_released"),
        "{audit}"
    );
}

#[test]
fn key_denied_to_runtime_with_unlisted_measurement() {
    assert_denied(
        Deploy {
            measurement_override: Some("cd".repeat(48)),
            ..Deploy::default()
        },
        "launch_measurement",
    );
}

#[test]
fn key_denied_to_sim_under_hardware_only_policy() {
    assert_denied(
        Deploy {
            // The test is about the platform check, not the configuration: an SNP policy must pin
            // the runtime configuration or say that it accepts any (issue 15, item 3).
            policy_platforms: "[\"snp\", \"sgx\"]\nallow_unpinned_config = true",
            ..Deploy::default()
        },
        "platform: evidence is from `sim`",
    );
}

#[test]
fn key_denied_to_debug_runtime_under_no_debug_policy() {
    assert_denied(
        Deploy {
            sim_debug: true,
            ..Deploy::default()
        },
        "debug",
    );
}

#[test]
fn cli_rejects_tampered_truncated_and_wrongly_keyed_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| s(&dir.path().join(n));
    ok(&["keygen", "--out", &p("owner.key")]);
    let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(p("data.bin"), &plain).unwrap();
    ok(&[
        "seal",
        &p("data.bin"),
        "--out",
        &p("a.sealed"),
        "--key-out",
        &p("a.dek"),
        "--owner-key",
        &p("owner.key"),
        "--chunk-size",
        "65536",
    ]);
    ok(&[
        "seal",
        &p("data.bin"),
        "--out",
        &p("b.sealed"),
        "--key-out",
        &p("b.dek"),
        "--owner-key",
        &p("owner.key"),
    ]);
    ok(&[
        "unseal",
        &p("a.sealed"),
        "--key",
        &p("a.dek"),
        "--out",
        &p("back.bin"),
    ]);
    assert_eq!(std::fs::read(p("back.bin")).unwrap(), plain);
    assert!(ok(&["inspect", &p("a.sealed")]).contains("\"chunk_size\": 65536"));

    let sealed = std::fs::read(p("a.sealed")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "flipped bit in a chunk",
            {
                let mut b = sealed.clone();
                b[sealed.len() - 70_000] ^= 0x10;
                b
            },
            "failed authentication",
        ),
        (
            "flipped bit in the manifest",
            {
                let mut b = sealed.clone();
                b[40] ^= 0x01;
                b
            },
            "rejected",
        ),
        (
            "truncated",
            sealed[..sealed.len() - 100].to_vec(),
            "truncated",
        ),
    ];
    for (what, bytes, needle) in cases {
        std::fs::write(p("bad.sealed"), bytes).unwrap();
        let out = cordon(&[
            "unseal",
            &p("bad.sealed"),
            "--key",
            &p("a.dek"),
            "--out",
            &p("bad.out"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what} accepted");
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            !dir.path().join("bad.out").exists(),
            "{what}: output left behind"
        );
    }
    let out = cordon(&[
        "unseal",
        &p("a.sealed"),
        "--key",
        &p("b.dek"),
        "--out",
        &p("bad.out"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key"));
}

#[test]
fn runtime_refuses_an_artifact_other_than_the_pinned_one_before_asking_for_keys() {
    let dep = deploy(Deploy {
        pinned_manifest: Some("00".repeat(32)),
        ..Deploy::default()
    });
    let err = dep.runtime.as_ref().err().expect("runtime must not boot");
    assert!(err.contains("config pins"), "{err}");
    let audit = dep.audit();
    assert!(
        !audit.contains("key_released") && !audit.contains("key_denied"),
        "{audit}"
    );
}
