//! The fraud-scoring model (models/fraud) deployed with the CLI as an operator would (sealed, its
//! key in the KBS under a release policy, a sim runtime), then scored through the verified,
//! encrypted channel with `cordon_client`, one transaction per request as the
//! `fraud_scoring` example does. The runtime's probabilities must be ONNX Runtime's, and its
//! decisions must give the precision and recall that models/fraud/README.md reports.

mod common;
use common::*;
use cordon_attest::PolicyDocument;
use cordon_proto::oip::{InferRequest, InferResponse};
use serde_json::Value;
use std::time::SystemTime;

const FRAUD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/fraud");
const MODEL: &str = "fraud-gbdt";

struct Deployment {
    _dir: tempfile::TempDir,
    _kbs: Proc,
    _runtime: Proc,
    url: String,
    client_policy: PolicyDocument,
}

/// Seals the fraud model, registers its key with a KBS whose release policy names the runtime's
/// measurement, and boots a sim runtime that fetches the key and serves the model as `MODEL`.
fn deploy() -> Deployment {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["keygen", "--out", &s(&p("owner.key"))]);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    ok(&[
        "seal",
        &format!("{FRAUD}/fraud_gbdt.onnx"),
        "--out",
        &s(&p("fraud.sealed")),
        "--key-out",
        &s(&p("fraud.dek")),
        "--owner-key",
        &s(&p("owner.key")),
        "--name",
        MODEL,
    ]);
    let (kbs, kbs_url) = start_kbs(dir.path(), "kbs");
    let digest = ok(&["inspect", &s(&p("fraud.sealed"))])
        .lines()
        .find_map(|l| l.strip_prefix("manifest sha256: "))
        .expect("inspect prints the manifest digest")
        .trim()
        .to_string();
    let signer = std::fs::read_to_string(p("owner.pub")).unwrap();
    std::fs::write(
        p("runtime.toml"),
        format!(
            "kbs_url = \"{kbs_url}\"\n\n[[models]]\nname = \"{MODEL}\"\npath = \"{}\"\nsigner = \"{}\"\nmanifest_sha256 = \"{digest}\"\n",
            s(&p("fraud.sealed")),
            signer.trim(),
        ),
    )
    .unwrap();
    let measurement = ok(&["runtime", "measure", "--config", &s(&p("runtime.toml"))])
        .trim()
        .to_string();
    let policy = format!(
        "platforms = [\"sim\"]\nlaunch_measurements = [\"{measurement}\"]\nallow_debug = false\n"
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
        &s(&p("fraud.dek")),
        "--policy",
        &s(&p("release.toml")),
    ]);
    let mut runtime = Proc::start(
        &[
            "runtime",
            "serve",
            "--config",
            &s(&p("runtime.toml")),
            "--listen",
            "127.0.0.1:0",
            "--platform",
            "sim",
            "--sim-hardware-key",
            &s(&p("hw.key")),
            "--addr-file",
            &s(&p("runtime.addr")),
        ],
        p("runtime.log"),
    );
    let url = runtime.url(&p("runtime.addr"));
    let anchor = std::fs::read_to_string(p("hw.pub")).unwrap();
    let client_policy = PolicyDocument::from_toml(&format!(
        "{policy}\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
        anchor.trim()
    ))
    .unwrap();
    Deployment {
        _dir: dir,
        _kbs: kbs,
        _runtime: runtime,
        url,
        client_policy,
    }
}

fn read_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(format!("{FRAUD}/{name}")).unwrap()).unwrap()
}

/// One row of fraud_test.csv: features (NaN for an empty field), label, ORT's P(fraud).
struct Row {
    features: Vec<f32>,
    fraud: bool,
    ort_p: f32,
}

fn test_stream() -> Vec<Row> {
    let text = std::fs::read_to_string(format!("{FRAUD}/fraud_test.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let label = header.iter().position(|h| *h == "label").unwrap();
    assert_eq!(header.last(), Some(&"ort_p_fraud"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            Row {
                features: f[..label]
                    .iter()
                    .map(|v| {
                        if v.is_empty() {
                            f32::NAN
                        } else {
                            v.parse().unwrap()
                        }
                    })
                    .collect(),
                fraud: f[label] == "1",
                ort_p: f[f.len() - 1].parse().unwrap(),
            }
        })
        .collect()
}

fn one_row(row: &[f32]) -> InferRequest {
    let data: Vec<Value> = row
        .iter()
        .map(|&v| {
            if v.is_nan() {
                Value::Null
            } else {
                Value::from(v)
            }
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "input", "shape": [1, row.len()], "datatype": "FP32", "data": data}]
    }))
    .unwrap()
}

fn output<'a>(resp: &'a InferResponse, name: &str) -> &'a Vec<Value> {
    let t = resp.outputs.iter().find(|t| t.name == name).unwrap();
    t.data.as_array().unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * a.abs().max(b.abs()) + 1e-6
}

/// (tp, fp, fn, tn) at `p >= threshold`.
fn confusion(ps: &[f32], labels: &[bool], threshold: f32) -> [u64; 4] {
    let mut c = [0; 4];
    for (&p, &fraud) in ps.iter().zip(labels) {
        c[match (p >= threshold, fraud) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        }] += 1;
    }
    c
}

#[test]
fn fraud_model_scores_through_the_verified_channel_as_onnx_runtime_does() {
    let d = deploy();
    let metrics = read_json("fraud_gbdt.metrics.json");
    let threshold = metrics["threshold"].as_f64().unwrap() as f32;
    let stream = test_stream();
    // Every row that is fraud or that ONNX Runtime flags, so the counts that make precision and
    // recall are those of the whole stream; then the first others, up to 300 rows.
    let mut picked: Vec<usize> = (0..stream.len())
        .filter(|&i| stream[i].fraud || stream[i].ort_p >= threshold)
        .collect();
    let decisive = picked.len();
    assert!(decisive > 20, "only {decisive} decisive rows");
    let others: Vec<usize> = (0..stream.len())
        .filter(|i| !picked.contains(i))
        .take(300 - decisive)
        .collect();
    picked.extend(others);
    picked.sort();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let verified = cordon_client::connect(&d.url, &d.client_policy, SystemTime::now())
            .await
            .expect("the runtime verifies");
        assert!(!verified.claims().hardware_backed);
        let meta = verified
            .request("GET", &format!("/v2/models/{MODEL}"), None)
            .await
            .unwrap();
        assert_eq!(meta.body["inputs"][0]["shape"], serde_json::json!([-1, 20]));

        // The zoo's reference set as one batch: labels exact, probabilities within tolerance.
        let batch: InferRequest =
            serde_json::from_value(read_json("fraud_gbdt.input.json")).unwrap();
        let got = verified.infer(MODEL, &batch).await.unwrap();
        let want = read_json("fraud_gbdt.expected.json");
        assert_eq!(
            output(&got, "label"),
            want["outputs"][0]["data"].as_array().unwrap()
        );
        for (g, w) in output(&got, "probabilities")
            .iter()
            .zip(want["outputs"][1]["data"].as_array().unwrap())
        {
            assert!(
                close(g.as_f64().unwrap(), w.as_f64().unwrap()),
                "{g} vs {w}"
            );
        }

        // The stream, one transaction per request.
        let mut cordon_p = Vec::new();
        for &i in &picked {
            let resp = verified
                .infer(MODEL, &one_row(&stream[i].features))
                .await
                .unwrap();
            let probs = output(&resp, "probabilities");
            assert_eq!(probs.len(), 2);
            let p = probs[1].as_f64().unwrap();
            assert!(
                close(p, stream[i].ort_p as f64),
                "row {i}: {p}, ONNX Runtime {}",
                stream[i].ort_p
            );
            cordon_p.push(p as f32);
        }
        let labels: Vec<bool> = picked.iter().map(|&i| stream[i].fraud).collect();
        let ort_p: Vec<f32> = picked.iter().map(|&i| stream[i].ort_p).collect();
        let ours = confusion(&cordon_p, &labels, threshold);
        assert_eq!(ours, confusion(&ort_p, &labels, threshold));
        // Every fraud and every flagged row is in, so TP, FP and FN are the whole stream's: the
        // README's precision and recall.
        let test = &metrics["metrics"]["test"];
        let [tp, fp, fn_, _] = ours.map(|v| v as f64);
        let precision = tp / (tp + fp);
        let recall = tp / (tp + fn_);
        assert!((precision - test["precision"].as_f64().unwrap()).abs() < 1e-6);
        assert!((recall - test["recall"].as_f64().unwrap()).abs() < 1e-6);
        assert!(recall > 0.5 && precision > 0.5, "{ours:?}");
    });
}
