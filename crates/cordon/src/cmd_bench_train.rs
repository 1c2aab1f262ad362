//! `cordon bench train`: training time inside the confidential path against the same algorithm
//! outside it, measured in the same run on the same synthetic table, and against scikit-learn
//! when Python is available.
//!
//! - **plain**: the party's CSV bytes → parse → seeded holdout split → train → evaluate → ONNX, in
//!   this process, no TEE: what training costs without Cordon.
//! - **confidential**: the same table split across three parties, each dataset sealed, its key
//!   registered with a KBS and the sealed bytes uploaded; then submit → the runtime attests
//!   (evidence binding the job), receives the three DEKs, unseals, parses, splits, trains,
//!   evaluates, exports, seals the model to the recipient and signs the receipt → finished. The
//!   KBS and the runtime (simulated TEE) run in this process on loopback.
//! - **scikit-learn** (`--sklearn`): `scripts/bench_train_sklearn.py` on the same CSV, training
//!   time only (the comparable figure is plain's `train` column).

use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Platform, Policy};
use cordon_client::jobs::JobClient;
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::job::{Evaluation, JobSchema, JobSpec, Outputs, PartyKey};
use cordon_proto::{RuntimeKeys, ServiceKeyPair};
use cordon_runtime::{RuntimeState, ServingOptions, TrainingOptions};
use cordon_tee::{SimHardwareKey, SimTee};
use cordon_train::{Algorithm, DataFormat, Schema, Table};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Rows of the synthetic table.
    #[arg(long, default_value_t = 100_000)]
    rows: usize,
    /// Feature columns.
    #[arg(long, default_value_t = 30)]
    features: usize,
    /// Algorithms, comma-separated: logistic_regression, gbdt.
    #[arg(long, default_value = "logistic_regression,gbdt")]
    algorithms: String,
    /// Also run scikit-learn on the same CSV (needs python3 with scikit-learn).
    #[arg(long)]
    sklearn: bool,
    /// Repetitions of each path; the fastest (least disturbed) is reported.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

const PARTIES: usize = 3;
const MEASUREMENT: [u8; 48] = [0x7a; 48];

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// A seeded synthetic binary classification table: roughly normal features, a label drawn from a
/// logistic model with an interaction and a threshold effect (so trees have something to find).
/// Returns the CSV of each party's share (rows dealt round-robin) and the header.
fn synthetic(rows: usize, features: usize) -> (Vec<String>, Vec<String>) {
    let header: Vec<String> = (0..features).map(|i| format!("f{i:02}")).collect();
    let mut state = 0x5eed_u64;
    let weights: Vec<f64> = (0..features)
        .map(|_| unit(&mut state) * 2.0 - 1.0)
        .collect();
    let mut parts: Vec<String> = (0..PARTIES)
        .map(|_| format!("{},label\n", header.join(",")))
        .collect();
    let mut x = vec![0f64; features];
    for r in 0..rows {
        for v in x.iter_mut() {
            // Irwin-Hall(4), centred: close enough to normal, cheap and exact to reproduce.
            *v = (0..4).map(|_| unit(&mut state)).sum::<f64>() - 2.0;
        }
        let mut z: f64 = weights.iter().zip(&x).map(|(w, v)| w * v).sum();
        z += 1.5 * x[0] * x[1] + if x[2] > 0.5 { 1.0 } else { -0.5 };
        let label = u8::from(unit(&mut state) < 1.0 / (1.0 + (-z).exp()));
        let line = &mut parts[r % PARTIES];
        for v in &x {
            line.push_str(&format!("{v:.5},"));
        }
        line.push_str(&format!("{label}\n"));
    }
    (parts, header)
}

struct Plain {
    parse_s: f64,
    train_s: f64,
    total_s: f64,
    accuracy: f64,
}

/// The plain path: exactly the steps the runtime takes on plaintext, without the confidential ones.
fn plain(
    parts: &[String],
    schema: &Schema,
    algorithm: &Algorithm,
    eval: &Evaluation,
) -> Result<Plain> {
    let start = Instant::now();
    let mut train_parts = Vec::new();
    let mut test_parts = Vec::new();
    for csv in parts {
        let t = cordon_train::read_table(csv.as_bytes(), DataFormat::Csv, schema)?;
        let (tr, te) = cordon_train::holdout_split(t.n_rows(), eval.test_fraction, eval.seed);
        train_parts.push(t.select(&tr));
        test_parts.push(t.select(&te));
    }
    let train = Table::concat(&train_parts.iter().collect::<Vec<_>>())?;
    let test = Table::concat(&test_parts.iter().collect::<Vec<_>>())?;
    let parse_s = start.elapsed().as_secs_f64();
    let t = Instant::now();
    let model = cordon_train::train(algorithm, &train)?;
    let train_s = t.elapsed().as_secs_f64();
    let probs = model.predict_proba(&test);
    let accuracy = cordon_train::metrics::accuracy(test.labels(), &probs);
    std::hint::black_box(model.to_onnx());
    Ok(Plain {
        parse_s,
        train_s,
        total_s: start.elapsed().as_secs_f64(),
        accuracy,
    })
}

struct Confidential {
    upload_s: f64,
    job_s: f64,
    accuracy: f64,
}

/// The confidential path, KBS and runtime in process on loopback (simulated TEE).
async fn confidential(
    parts: &[String],
    schema: &Schema,
    algorithm: &Algorithm,
    eval: &Evaluation,
) -> Result<Confidential> {
    let dir = tempfile::tempdir()?;
    let hw = SimHardwareKey::generate();
    let endorsements = Endorsements {
        sim_trust_anchors: vec![hw.public_key()],
        ..Default::default()
    };
    let kbs = Kbs::open(KbsConfig::new(dir.path().join("kbs"), endorsements.clone()))?;
    let kbs_key = kbs.identity_public_key();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let kbs_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { kbs.serve(listener, std::future::pending()).await });
    let service_key = ServiceKeyPair::generate(0);
    let signing_key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
    let runtime_keys = RuntimeKeys {
        hpke_public_key: service_key.public_key(),
        hpke_key_id: 0,
        signing_public_key: signing_key.verifying_key().to_bytes(),
    };
    let mut state = RuntimeState::new(
        service_key,
        signing_key,
        runtime_keys,
        Arc::new(SimTee::new(hw, MEASUREMENT, [0; 32], false)),
        BTreeMap::new(),
        ServingOptions::default(),
    );
    let mut options = TrainingOptions::new(&kbs_url, kbs_key);
    options.max_dataset_bytes = usize::MAX;
    options.max_total_dataset_bytes = usize::MAX;
    state.enable_training(options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let runtime = format!("http://{}", listener.local_addr()?);
    tokio::spawn(cordon_runtime::serve(
        Arc::new(state),
        listener,
        std::future::pending(),
    ));

    let release = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]);
    let policy = release.to_toml();
    let client_doc = cordon_attest::PolicyDocument {
        policy: release,
        endorsements: Some(endorsements),
    };
    let mut clients = Vec::new();
    let mut datasets = Vec::new();
    let mut upload_s = 0.0;
    for (i, csv) in parts.iter().enumerate() {
        let party = PartyKey::generate(&format!("party-{i}"));
        let path = dir.path().join(format!("party-{i}.sealed"));
        let (entry, key) = crate::cmd_job::seal_dataset(&party, csv.as_bytes(), "csv", &path)?;
        let client =
            JobClient::connect(&runtime, party, client_doc.clone(), SystemTime::now()).await?;
        cordon_client::jobs::register_dataset_key(
            client.party(),
            &kbs_url,
            &kbs_key,
            &key.key_id,
            key.dek.as_bytes(),
            &policy,
        )
        .await?;
        let sealed = std::fs::read(&path)?;
        let t = Instant::now();
        client.upload_dataset(sealed).await?;
        upload_s += t.elapsed().as_secs_f64();
        clients.push(client);
        datasets.push(entry);
    }
    let spec = JobSpec {
        name: "bench".into(),
        parties: clients.iter().map(|c| c.party().job_party()).collect(),
        datasets,
        schema: JobSchema {
            features: schema.features.clone(),
            label: schema.label.clone(),
        },
        algorithm: serde_json::to_value(algorithm)?,
        evaluation: eval.clone(),
        outputs: Outputs {
            recipients: vec!["party-0".into()],
            serve: None,
        },
    };
    let hash = hex::encode(spec.hash());
    clients[0].create(&spec).await?;
    let expires = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 86_400;
    for c in &clients {
        c.approve(&hash, &spec, expires).await?;
    }
    let t = Instant::now();
    clients[0].submit(&hash).await?;
    let status = clients[0].wait(&hash, Duration::from_secs(3600)).await?;
    let job_s = t.elapsed().as_secs_f64();
    let Some(m) = status.metrics else {
        bail!("job finished without metrics");
    };
    Ok(Confidential {
        upload_s,
        job_s,
        accuracy: m.test_accuracy,
    })
}

fn sklearn(
    csv_path: &std::path::Path,
    algorithms: &[String],
    eval: &Evaluation,
) -> Result<serde_json::Value> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/bench_train_sklearn.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--csv")
        .arg(csv_path)
        .arg("--algorithms")
        .arg(algorithms.join(","))
        .arg("--test-fraction")
        .arg(eval.test_fraction.to_string())
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "scikit-learn benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn run(a: TrainArgs) -> Result<()> {
    let algorithms: Vec<String> = a
        .algorithms
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let gen = Instant::now();
    let (parts, header) = synthetic(a.rows, a.features);
    let bytes: usize = parts.iter().map(String::len).sum();
    if !a.json {
        println!(
            "synthetic table: {} rows x {} features, {:.1} MiB of CSV over {PARTIES} parties (generated in {:.1}s)",
            a.rows,
            a.features,
            bytes as f64 / (1 << 20) as f64,
            gen.elapsed().as_secs_f64()
        );
    }
    let schema = Schema {
        features: header.clone(),
        label: "label".into(),
    };
    let eval = Evaluation {
        test_fraction: 0.25,
        seed: 1,
    };
    let rt = crate::util::tokio_runtime()?;
    let mut results = Vec::new();
    for name in &algorithms {
        let algorithm: Algorithm = serde_json::from_value(serde_json::json!({ "kind": name }))
            .with_context(|| format!("algorithm {name}"))?;
        // Alternate the two paths so that a disturbance of the machine hits both alike.
        let mut best: Option<(Plain, Confidential)> = None;
        for _ in 0..a.runs.max(1) {
            let p = plain(&parts, &schema, &algorithm, &eval)?;
            let c = rt.block_on(confidential(&parts, &schema, &algorithm, &eval))?;
            best = Some(match best {
                None => (p, c),
                Some((bp, bc)) => (
                    if p.total_s < bp.total_s { p } else { bp },
                    if c.job_s < bc.job_s { c } else { bc },
                ),
            });
        }
        let Some((p, c)) = best else {
            bail!("no run");
        };
        if (p.accuracy - c.accuracy).abs() > 1e-12 {
            bail!(
                "{name}: the confidential job's accuracy {} differs from plain {}",
                c.accuracy,
                p.accuracy
            );
        }
        results.push(serde_json::json!({
            "algorithm": name,
            "plain": {"parse_split_s": p.parse_s, "train_s": p.train_s, "total_s": p.total_s},
            "confidential": {"upload_s": c.upload_s, "job_s": c.job_s},
            "overhead_ratio": c.job_s / p.total_s,
            "test_accuracy": p.accuracy,
        }));
    }
    let mut sk = serde_json::Value::Null;
    if a.sklearn {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("table.csv");
        let mut all = parts[0].clone();
        for p in &parts[1..] {
            all.push_str(p.split_once('\n').map(|x| x.1).unwrap_or(""));
        }
        std::fs::write(&path, all)?;
        sk = sklearn(&path, &algorithms, &eval)?;
    }
    let report = serde_json::json!({
        "rows": a.rows,
        "features": a.features,
        "csv_mib": bytes as f64 / (1 << 20) as f64,
        "results": results,
        "sklearn": sk,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "\n{:<20} {:>12} {:>10} {:>11} | {:>10} {:>12} {:>9} | {:>9}",
        "algorithm",
        "plain parse",
        "train",
        "plain total",
        "upload",
        "confid. job",
        "ratio",
        "accuracy"
    );
    for r in &results {
        println!(
            "{:<20} {:>11.2}s {:>9.2}s {:>10.2}s | {:>9.2}s {:>11.2}s {:>8.2}x | {:>9.4}",
            r["algorithm"].as_str().unwrap_or(""),
            r["plain"]["parse_split_s"].as_f64().unwrap_or(0.0),
            r["plain"]["train_s"].as_f64().unwrap_or(0.0),
            r["plain"]["total_s"].as_f64().unwrap_or(0.0),
            r["confidential"]["upload_s"].as_f64().unwrap_or(0.0),
            r["confidential"]["job_s"].as_f64().unwrap_or(0.0),
            r["overhead_ratio"].as_f64().unwrap_or(0.0),
            r["test_accuracy"].as_f64().unwrap_or(0.0),
        );
    }
    println!("ratio = confidential job (submit → finished) / plain total; both parse the same CSV bytes.");
    if let Some(rows) = sk.get("results").and_then(|r| r.as_array()) {
        println!(
            "\nscikit-learn {} on the same CSV (training only; compare with plain `train`):",
            sk["version"].as_str().unwrap_or("?")
        );
        for r in rows {
            println!(
                "  {:<44} train {:>8.2}s  accuracy {:.4}",
                r["model"].as_str().unwrap_or(""),
                r["train_s"].as_f64().unwrap_or(0.0),
                r["test_accuracy"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
