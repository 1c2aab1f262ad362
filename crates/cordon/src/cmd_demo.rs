//! `cordon demo hospitals`: three hospitals train one model together without showing each other
//! a row, then the joint model serves an encrypted prediction. Everything runs on this machine
//! with the simulated TEE: a KBS, a training runtime and a serving runtime, each its own process.

use crate::cmd_job::{print_status, seal_dataset, verify_receipt};
use crate::deploy::{self, Children};
use crate::util;
use anyhow::{bail, Context, Result};
use cordon_client::jobs::{register_dataset_key, JobClient};
use cordon_proto::job::{Evaluation, JobSchema, JobSpec, JobState, Outputs, PartyKey, ServeOutput};
use cordon_proto::oip::InferRequest;
use cordon_runtime::{EngineKind, ModelConfig, OnnxModel, RuntimeConfig, TrainingConfig};
use cordon_seal::KeyFile;
use cordon_train::{Algorithm, DataFormat, Schema, Table};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Disjoint, skewed slices of the breast-cancer training split (scripts/make_training_data.py):
/// a referral oncology centre (mostly malignant), a screening clinic (mostly benign), a small
/// mixed practice.
const HOSPITALS: [(&str, &str); 3] = [
    (
        "hospital-a",
        include_str!("../../../testdata/training/hospital_a.csv"),
    ),
    (
        "hospital-b",
        include_str!("../../../testdata/training/hospital_b.csv"),
    ),
    (
        "hospital-c",
        include_str!("../../../testdata/training/hospital_c.csv"),
    ),
];
/// The held-out test split nobody trains on: the common yardstick for solo and joint models.
const BENCHMARK: &str = include_str!("../../../testdata/training/breast_cancer_test.csv");

#[derive(clap::Subcommand)]
pub enum DemoCommand {
    /// Three hospitals train one breast-cancer model together in an attested runtime; each
    /// sees its own solo numbers, the joint model's, the receipt, and an encrypted prediction.
    Hospitals(HospitalsArgs),
}

#[derive(clap::Args)]
pub struct HospitalsArgs {
    /// Where state lives (keys, sealed datasets, KBS store, logs).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("cordon-demo-hospitals"))]
    data_dir: PathBuf,
    /// `gbdt` or `logistic_regression`.
    #[arg(long, default_value = "gbdt")]
    algorithm: String,
    /// Run the training and serving runtimes with `--platform hardware` on an emulated platform
    /// instead of the simulated TEE (for tests and CI: EMULATED, NOT hardware-backed).
    #[arg(long, value_enum)]
    emulate: Option<crate::emulator::EmulatedPlatform>,
}

pub fn run(c: DemoCommand) -> Result<()> {
    match c {
        DemoCommand::Hospitals(a) => hospitals(a),
    }
}

fn schema() -> Result<Schema> {
    let header = BENCHMARK
        .lines()
        .next()
        .context("benchmark has no header")?;
    Ok(Schema {
        features: header
            .split(',')
            .filter(|c| *c != "label")
            .map(String::from)
            .collect(),
        label: "label".into(),
    })
}

fn score(labels: &[f32], probs: &[f64]) -> (f64, f64) {
    (
        cordon_train::metrics::accuracy(labels, probs),
        cordon_train::metrics::roc_auc(labels, probs).unwrap_or(f64::NAN),
    )
}

/// Writes a runtime configuration to `dir/{name}.toml`: its path and text (what its measurement or
/// workload data covers).
fn write_config(dir: &Path, name: &str, config: &RuntimeConfig) -> Result<(PathBuf, String)> {
    let path = dir.join(format!("{name}.toml"));
    let text = config.to_toml();
    std::fs::write(&path, &text)?;
    Ok((path, text))
}

fn hospitals(a: HospitalsArgs) -> Result<()> {
    let dir = a.data_dir;
    let algorithm: Algorithm = serde_json::from_value(serde_json::json!({ "kind": a.algorithm }))
        .with_context(|| format!("--algorithm {}", a.algorithm))?;
    for sub in ["parties", "datasets", "output"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    println!(
        "Cordon demo: three hospitals, one model, no rows shown. Data directory {}",
        dir.display()
    );
    let platform = a.emulate.map_or(
        deploy::DeployPlatform::Sim,
        deploy::DeployPlatform::Emulated,
    );
    println!(
        "Platform: {}. Nothing below is hardware-backed; it shows the protocol, not isolation.\n",
        match platform {
            deploy::DeployPlatform::Sim => "SIMULATED TEE".to_string(),
            p => p.label(),
        }
    );
    let schema = schema()?;
    let benchmark = cordon_train::read_table(BENCHMARK.as_bytes(), DataFormat::Csv, &schema)?;

    // 1. Each hospital alone: its own rows, its own model, scored on the common benchmark.
    println!(
        "== Each hospital alone (its own rows only; scored on the {} benchmark patients) ==",
        benchmark.n_rows()
    );
    let mut solo = Vec::new();
    for (name, csv) in HOSPITALS {
        let t = cordon_train::read_table(csv.as_bytes(), DataFormat::Csv, &schema)?;
        let positives = t.labels().iter().filter(|&&l| l == 1.0).count();
        let model = cordon_train::train(&algorithm, &t)?;
        let (acc, auc) = score(benchmark.labels(), &model.predict_proba(&benchmark));
        println!(
            "  {name}: {:>3} rows ({:>3} benign, {:>3} malignant)  solo accuracy {acc:.4}  AUC {auc:.4}",
            t.n_rows(),
            positives,
            t.n_rows() - positives
        );
        solo.push((name, t.n_rows(), acc, auc));
    }

    // 2. The key broker and the training runtime, each its own process.
    println!("\n== The confidential setup ==");
    let rt = util::tokio_runtime()?;
    let mut children = Children(Vec::new());
    let emulated_root = deploy::prepare_platform(&dir, platform)?;
    let kbs = deploy::start_kbs(&dir, &mut children, emulated_root, 0)?;
    let trainer_config = RuntimeConfig {
        kbs_url: kbs.url.clone(),
        kbs_public_key: Some(hex::encode(kbs.identity)),
        kbs_ca_cert: None,
        workload_data: None,
        models: vec![],
        training: Some(TrainingConfig {
            max_dataset_mib: 64,
            max_total_dataset_mib: 256,
        }),
        onnxruntime: None,
    };
    let (trainer_path, trainer_text) = write_config(&dir, "trainer", &trainer_config)?;
    let (release_policy, trainer_doc) = deploy::launch_policy(
        &dir,
        platform,
        "trainer",
        &trainer_text,
        kbs.hw.public_key(),
    )?;
    let trainer_measurement = release_policy.launch_measurements[0].clone();
    let trainer_url = deploy::start_runtime(
        &dir,
        &mut children,
        "trainer",
        &trainer_path,
        platform,
        &[],
        0,
    )?;
    println!(
        "[trainer] training runtime at {trainer_url}, measurement {}…",
        &hex::encode(trainer_measurement)[..16]
    );
    // The parties verify the trainer themselves: its signing key (bound in its evidence) is the
    // key the trained model's manifest will be signed with, which the serving runtime will demand.
    let trainer_keys = rt
        .block_on(cordon_client::connect(
            &trainer_url,
            &trainer_doc,
            SystemTime::now(),
        ))?
        .keys()
        .clone();

    // The serving runtime's configuration is fixed before training (its measurement goes into the
    // job's serving policy): the joint model, signed by the trainer, is the one model it loads.
    let sealed_model = dir.join("output/joint-model.sealed");
    let server_config = RuntimeConfig {
        kbs_url: kbs.url.clone(),
        kbs_public_key: Some(hex::encode(kbs.identity)),
        kbs_ca_cert: None,
        workload_data: None,
        models: vec![ModelConfig {
            name: "joint-breast-cancer".into(),
            path: sealed_model.clone(),
            signer: hex::encode(trainer_keys.signing_public_key),
            manifest_sha256: None,
            engine: EngineKind::Tract,
            llm: None,
        }],
        training: None,
        onnxruntime: None,
    };
    let (server_path, server_text) = write_config(&dir, "server", &server_config)?;
    let (serving_policy, client_doc) =
        deploy::launch_policy(&dir, platform, "server", &server_text, kbs.hw.public_key())?;

    // 3. Each hospital seals its records, registers the key (released only to that measurement,
    //    only for jobs it approves) and uploads the sealed file.
    let mut clients = Vec::new();
    let mut datasets = Vec::new();
    for (name, csv) in HOSPITALS {
        let party = PartyKey::generate(name);
        util::write_secret(
            &dir.join("parties").join(format!("{name}.party")),
            party.to_file_contents().as_bytes(),
            true,
        )?;
        let sealed_path = dir.join("datasets").join(format!("{name}.sealed"));
        let (entry, key) = seal_dataset(&party, csv.as_bytes(), "csv", &sealed_path)?;
        // Each hospital verifies the trainer itself before it sends anything to it.
        let client = rt.block_on(JobClient::connect(
            &trainer_url,
            party,
            trainer_doc.clone(),
            SystemTime::now(),
        ))?;
        rt.block_on(register_dataset_key(
            client.party(),
            &kbs.url,
            &kbs.identity,
            &key.key_id,
            key.dek.as_bytes(),
            &release_policy.to_toml(),
        ))?;
        drop(key);
        rt.block_on(client.upload_dataset(std::fs::read(&sealed_path)?))?;
        println!(
            "[{name}] sealed its records (manifest {}…), registered the key with the KBS, uploaded the sealed file",
            &hex::encode(entry.manifest_sha256)[..16]
        );
        clients.push(client);
        datasets.push(entry);
    }

    // 4. The job: one spec, approved by every hospital by its hash.
    let spec = JobSpec {
        name: "breast cancer diagnosis, three hospitals".into(),
        parties: clients.iter().map(|c| c.party().job_party()).collect(),
        datasets,
        schema: JobSchema {
            features: schema.features.clone(),
            label: schema.label.clone(),
        },
        algorithm: serde_json::to_value(&algorithm)?,
        evaluation: Evaluation {
            test_fraction: 0.25,
            seed: 42,
        },
        outputs: Outputs {
            recipients: vec![HOSPITALS[0].0.into()],
            serve: Some(ServeOutput {
                policy: serving_policy.to_toml(),
            }),
        },
    };
    std::fs::write(dir.join("job.json"), serde_json::to_string_pretty(&spec)?)?;
    let hash = hex::encode(spec.hash());
    println!(
        "\n== The job (spec in {}) ==",
        dir.join("job.json").display()
    );
    rt.block_on(clients[0].create(&spec))?;
    let approval_expires = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3_600;
    for c in &clients {
        rt.block_on(c.approve(&hash, &spec, approval_expires))?;
        println!(
            "[{}] checked its entry (keys, datasets), approved job {}… for an hour",
            c.party().name(),
            &hash[..16]
        );
    }
    rt.block_on(clients[0].submit(&hash))?;
    let status = rt.block_on(clients[0].wait(&hash, Duration::from_secs(600)))?;
    if status.state != JobState::Finished {
        bail!("job ended {}", status.state);
    }
    print_status(&status);

    // 5. The receipt, verified offline by a hospital that receives no model.
    let receipt = rt.block_on(clients[1].receipt(&hash))?;
    let receipt_path = dir.join("output/receipt.json");
    std::fs::write(&receipt_path, serde_json::to_string_pretty(&receipt)?)?;
    std::fs::write(dir.join("trainer-policy.toml"), trainer_doc.to_toml())?;
    println!("\n== Job receipt ({}) ==", receipt_path.display());
    println!(
        "  inputs:  {}",
        receipt
            .body
            .inputs
            .iter()
            .map(|i| format!("{} {}…", i.party, &hex::encode(i.manifest_sha256)[..12]))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  output:  model onnx sha256 {}…, sealed to {}{}",
        &hex::encode(receipt.body.output.onnx_sha256)[..16],
        receipt.body.output.recipients.join(", "),
        if receipt.body.output.registered_for_serving {
            "; its key registered with the KBS for serving under the job's policy"
        } else {
            ""
        }
    );
    println!(
        "  [{}] {}",
        HOSPITALS[1].0,
        verify_receipt(&receipt, &trainer_doc)?
    );
    match rt.block_on(clients[1].result(&hash)) {
        Err(e) => println!("  [{}] asks for the model: refused ({e})", HOSPITALS[1].0),
        Ok(_) => bail!("a hospital that is not a recipient received the model"),
    }

    // 6. The recipient checks its output (receipt, job, inputs, runtime) and opens it, then scores
    //    it on the benchmark.
    let checked = rt.block_on(clients[0].checked_result(&hash))?;
    let (result, dek) = (checked.result, checked.dek);
    let key = KeyFile {
        key_id: result.key_id.clone(),
        dek: cordon_seal::Dek::from_bytes(dek.as_ref())?,
        signer: receipt.body.attestation.runtime_keys.signing_public_key,
    };
    let (_, onnx) = cordon_seal::unseal_to_vec(&result.sealed_model[..], &key)?;
    let model = OnnxModel::load("joint", "1", &onnx)?;
    let probs = onnx_probabilities(&model, &benchmark)?;
    let (acc, auc) = score(benchmark.labels(), &probs);
    let trained_on = status.metrics.as_ref().map(|m| m.train_rows).unwrap_or(0);
    println!(
        "\n== Solo vs joint, on the same {} benchmark patients ==",
        benchmark.n_rows()
    );
    for (name, rows, a, u) in &solo {
        println!("  {name:<14} trained on {rows:>3} rows   accuracy {a:.4}   AUC {u:.4}");
    }
    println!(
        "  joint (Cordon) trained on {trained_on:>3} rows   accuracy {acc:.4}   AUC {auc:.4}   (the model {} received, run with tract; the job held out the rest)",
        HOSPITALS[0].0
    );

    drop(key);

    // 7. The joint model serves. The trainer registered its key with the KBS under the job's
    //    serving policy (no party holds it); a hospital fetches the sealed model (ciphertext) and
    //    the operator starts the serving runtime, which gets the key by attesting; a client
    //    verifies that runtime and sends an encrypted request.
    if !receipt.body.output.registered_for_serving {
        bail!("the job did not register its model for serving");
    }
    std::fs::write(&sealed_model, rt.block_on(clients[2].sealed_model(&hash))?)?;
    let server_url = deploy::start_runtime(
        &dir,
        &mut children,
        "server",
        &server_path,
        platform,
        &[],
        0,
    )?;
    let row = benchmark.row(0);
    let request: InferRequest = serde_json::from_value(serde_json::json!({
        "inputs": [{"name": "input", "shape": [1, row.len()], "datatype": "FP32", "data": row}]
    }))?;
    let (verified, response) = rt.block_on(async {
        let v = cordon_client::connect(&server_url, &client_doc, SystemTime::now()).await?;
        let r = v.infer("joint-breast-cancer", &request).await?;
        Ok::<_, anyhow::Error>((v, r))
    })?;
    let local = model.infer(&request)?;
    println!("\n== The joint model serving (encrypted request to the attested runtime at {server_url}) ==");
    println!("  its key went from the trainer to the KBS under the job's serving policy; the serving path uses no party's copy");
    println!(
        "  client verified {} evidence (measurement {}…){}",
        verified.claims().platform,
        &hex::encode(&verified.claims().launch_measurement)[..16],
        util::provenance(verified.claims())
    );
    let out = |name: &str| {
        response
            .outputs
            .iter()
            .find(|o| o.name == name)
            .map(|o| o.data.to_string())
            .unwrap_or_default()
    };
    println!(
        "  benchmark patient 0 (truth: {}): label {} (1 = benign), probabilities {}",
        benchmark.label(0),
        out("label"),
        out("probabilities")
    );
    let agrees = local.outputs == response.outputs;
    println!(
        "  equals the recipient's in-process run: {}",
        if agrees { "yes" } else { "NO" }
    );
    if !agrees {
        bail!("encrypted-path prediction differs from in-process prediction");
    }
    println!(
        "\nKeys, sealed files, the job spec, the receipt, policies and logs are in {}.",
        dir.display()
    );
    println!(
        "Verify the receipt yourself: cordon job receipt verify --receipt {} --policy {}",
        receipt_path.display(),
        dir.join("trainer-policy.toml").display()
    );
    drop(children);
    Ok(())
}

/// Class-1 probabilities of the ONNX model on every row of `table`.
fn onnx_probabilities(model: &OnnxModel, table: &Table) -> Result<Vec<f64>> {
    let request: InferRequest = serde_json::from_value(serde_json::json!({
        "inputs": [{
            "name": "input",
            "shape": [table.n_rows(), table.n_features()],
            "datatype": "FP32",
            "data": table.features(),
        }]
    }))?;
    let response = model.infer(&request)?;
    let probs = response
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .context("the model has no probabilities output")?;
    let values: Vec<f64> = serde_json::from_value(probs.data.clone())?;
    Ok(values
        .chunks(2)
        .map(|c| c.get(1).copied().unwrap_or(f64::NAN))
        .collect())
}
