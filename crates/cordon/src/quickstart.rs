//! `cordon quickstart`: the whole flow on this machine, with the simulated TEE.
//!
//! Model owner seals the demo model → KBS (its own process) gets the key and a release policy naming
//! the runtime's measurement → runtime (its own process) attests, receives the DEK, unseals in memory →
//! a client verifies the runtime's evidence and sends an encrypted inference request.

use crate::{cmd_kbs, util};
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Platform, Policy, PolicyDocument};
use cordon_proto::oip::InferRequest;
use cordon_runtime::{ModelConfig, OnnxModel, RuntimeConfig};
use cordon_seal::{OwnerKey, SealOptions};
use cordon_tee::{sim_launch_measurement, SimHardwareKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DEMO_MODEL: &[u8] = include_bytes!("../../../models/breast_cancer_lr.onnx");
const DEMO_INPUT: &str = include_str!("../../../models/demo_input.json");
const MODEL_NAME: &str = "breast-cancer-lr";

#[derive(clap::Args)]
pub struct Args {
    /// Where state lives (keys, sealed model, KBS store, logs). Reused by later runs.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("cordon-quickstart"))]
    data_dir: PathBuf,
}

/// Child processes, killed when this goes out of scope (on success and on every error path).
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(children: &mut Children, name: &str, args: &[&str], log: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    children.0.push((name.to_string(), child));
    Ok(())
}

/// Waits until `addr_file` appears (the child is listening), or fails with the child's log.
fn wait_for_addr(
    children: &mut Children,
    name: &str,
    addr_file: &Path,
    log: &Path,
) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(addr) = std::fs::read_to_string(addr_file) {
            return Ok(format!("http://{}", addr.trim()));
        }
        if let Some((_, child)) = children.0.iter_mut().find(|(n, _)| n == name) {
            if let Some(status) = child.try_wait()? {
                let log_text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = log_text
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                bail!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    tail.join("\n")
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not become ready within 60 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn load_or_create<T>(
    path: &Path,
    create: impl FnOnce() -> T,
    to_text: impl Fn(&T) -> String,
    parse: impl Fn(&str) -> Result<T>,
) -> Result<T> {
    if path.exists() {
        return parse(&util::read_to_string(path, "key")?);
    }
    let v = create();
    util::write_secret(path, to_text(&v).as_bytes(), false)?;
    Ok(v)
}

pub fn run(a: Args) -> Result<()> {
    let dir = a.data_dir;
    for sub in ["keys", "models", "kbs", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    println!("Cordon quickstart: data directory {}", dir.display());
    println!("Platform: SIMULATED TEE. Nothing below is hardware-backed; it shows the protocol, not isolation.\n");

    // 1. The model owner: an owner key, and the demo model sealed under a fresh DEK.
    let owner = load_or_create(
        &dir.join("keys/owner.key"),
        OwnerKey::generate,
        |k| k.to_file_contents().to_string(),
        |t| Ok(OwnerKey::from_file_contents(t)?),
    )?;
    let sealed_path = dir.join("models").join(format!("{MODEL_NAME}.sealed"));
    let mut sealed_file = std::fs::File::create(&sealed_path)?;
    let options = SealOptions {
        name: MODEL_NAME.into(),
        version: "1".into(),
        media_type: "application/onnx".into(),
        chunk_size: cordon_seal::DEFAULT_CHUNK_SIZE,
    };
    let (manifest, key) = cordon_seal::seal(
        DEMO_MODEL,
        DEMO_MODEL.len() as u64,
        &mut sealed_file,
        &owner,
        &options,
        &mut |_| {},
    )?;
    sealed_file.sync_all()?;
    let sealed_digest = cordon_seal::read_header(&mut std::fs::File::open(&sealed_path)?)?.digest();
    println!(
        "[owner]   sealed {MODEL_NAME} ({} bytes, sha256 {}) -> {}",
        manifest.plaintext_size,
        &manifest.plaintext_sha256[..16],
        sealed_path.display()
    );
    println!(
        "          key id {}; the DEK stays in memory and goes only to the KBS",
        manifest.key_id
    );

    // 2. The simulated hardware key (its public half is the sim trust anchor).
    let hw = load_or_create(
        &dir.join("keys/sim-hardware.key"),
        SimHardwareKey::generate,
        |k| k.to_file_contents().to_string(),
        |t| Ok(SimHardwareKey::from_file_contents(t)?),
    )?;
    let anchor_path = dir.join("keys/sim-hardware.pub");
    std::fs::write(&anchor_path, format!("{}\n", hex::encode(hw.public_key())))?;

    // 3. The key broker, in its own process.
    let mut children = Children(Vec::new());
    let run_dir = dir.join("run");
    let kbs_addr = run_dir.join("kbs.addr");
    let runtime_addr = run_dir.join("runtime.addr");
    let _ = std::fs::remove_file(&kbs_addr);
    let _ = std::fs::remove_file(&runtime_addr);
    let token_path = dir.join("keys/admin-token");
    let kbs_log = run_dir.join("kbs.log");
    let p = |p: &Path| p.to_string_lossy().into_owned();
    spawn(
        &mut children,
        "kbs",
        &[
            "kbs",
            "serve",
            "--data-dir",
            &p(&dir.join("kbs")),
            "--listen",
            "127.0.0.1:0",
            "--sim-trust-anchor",
            &p(&anchor_path),
            "--init-admin-token-file",
            &p(&token_path),
            "--addr-file",
            &p(&kbs_addr),
        ],
        &kbs_log,
    )?;
    let kbs_url = wait_for_addr(&mut children, "kbs", &kbs_addr, &kbs_log)?;
    println!(
        "[kbs]     key broker listening at {kbs_url} (store {})",
        dir.join("kbs").display()
    );

    // 4. The runtime's configuration is part of its measurement; the release policy names it.
    let config = RuntimeConfig {
        kbs_url: kbs_url.clone(),
        workload_data: None,
        models: vec![ModelConfig {
            name: MODEL_NAME.into(),
            path: sealed_path.clone(),
            signer: hex::encode(owner.public_key()),
            manifest_sha256: Some(hex::encode(sealed_digest)),
        }],
    };
    let config_path = dir.join("runtime.toml");
    let config_text = config.to_toml();
    std::fs::write(&config_path, &config_text)?;
    let measurement = sim_launch_measurement(&std::env::current_exe()?, config_text.as_bytes())?;
    let policy = Policy {
        workload_data: Some(vec![0; 32]),
        ..Policy::new(vec![Platform::Sim], vec![measurement.to_vec()])
    };
    std::fs::write(dir.join("release-policy.toml"), policy.to_toml())?;
    let token = util::read_to_string(&token_path, "admin token")?
        .trim()
        .to_string();
    let rt = util::tokio_runtime()?;
    rt.block_on(cmd_kbs::register_key(
        &kbs_url,
        &token,
        &key,
        &policy.to_toml(),
    ))?;
    drop(key);
    println!(
        "[owner]   registered the key with release policy: platform sim, measurement {}…, no debug",
        &hex::encode(measurement)[..16]
    );

    // 5. The runtime, in its own process: attests, receives the DEK, unseals in memory.
    let runtime_log = run_dir.join("runtime.log");
    spawn(
        &mut children,
        "runtime",
        &[
            "runtime",
            "serve",
            "--config",
            &p(&config_path),
            "--listen",
            "127.0.0.1:0",
            "--platform",
            "sim",
            "--sim-hardware-key",
            &p(&dir.join("keys/sim-hardware.key")),
            "--addr-file",
            &p(&runtime_addr),
        ],
        &runtime_log,
    )?;
    let runtime_url = wait_for_addr(&mut children, "runtime", &runtime_addr, &runtime_log)?;
    println!("[runtime] attested to the KBS, model unsealed in memory, serving at {runtime_url}");

    // 6. The client: its own policy, verify first, then encrypt.
    let client_doc = PolicyDocument {
        policy: policy.clone(),
        endorsements: Some(Endorsements {
            sim_trust_anchors: vec![hw.public_key()],
            ..Default::default()
        }),
    };
    let client_policy_path = dir.join("client-policy.toml");
    std::fs::write(&client_policy_path, client_doc.to_toml())?;
    let request: InferRequest = serde_json::from_str(DEMO_INPUT)?;
    let (verified, response) = rt.block_on(async {
        let verified = cordon_client::connect(&runtime_url, &client_doc, SystemTime::now()).await?;
        let response = verified.infer(MODEL_NAME, &request).await?;
        Ok::<_, anyhow::Error>((verified, response))
    })?;
    let claims = verified.claims();
    println!("\n== Verified claims (by the client, with its own policy) ==");
    println!(
        "  platform            {} -- SIMULATED, NOT hardware-backed",
        claims.platform
    );
    println!(
        "  launch measurement  {}",
        hex::encode(&claims.launch_measurement)
    );
    println!("  debug               {}", claims.debug);
    println!(
        "  report_data binds   nonce + HPKE key {} + signing key {}",
        &hex::encode(verified.keys().hpke_public_key)[..16],
        &hex::encode(verified.keys().signing_public_key)[..16]
    );
    println!(
        "  appraisal           accepted by {}",
        client_policy_path.display()
    );

    let events = rt.block_on(cmd_kbs::fetch_audit(&kbs_url, &token))?;
    println!("\n== Key release (KBS audit log) ==");
    for e in events
        .iter()
        .filter(|e| e.key_id.as_deref() == Some(manifest.key_id.as_str()))
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        println!(
            "  #{} {} key {} verdict {} claims {}",
            e.seq,
            e.kind,
            e.key_id.as_deref().unwrap_or("-"),
            e.verdict,
            e.claims_digest.as_deref().map(|d| &d[..16]).unwrap_or("-")
        );
    }
    match cordon_kbs::verify_audit_chain(&events) {
        Ok(()) => println!("  audit hash chain intact ({} events)", events.len()),
        Err(seq) => bail!("audit hash chain broken at event {seq}"),
    }

    // 7. The prediction, and the same input through tract in process: they must agree.
    let label = response
        .outputs
        .iter()
        .find(|o| o.name == "label")
        .map(|o| o.data.clone())
        .unwrap_or_default();
    let probs = response
        .outputs
        .iter()
        .find(|o| o.name == "probabilities")
        .map(|o| o.data.clone())
        .unwrap_or_default();
    let local = OnnxModel::load(MODEL_NAME, "1", DEMO_MODEL)?.infer(&request)?;
    let agrees = local.outputs == response.outputs;
    println!("\n== Prediction (encrypted request and response, HPKE to the attested key) ==");
    println!(
        "  model {MODEL_NAME}: label {label} (0 = malignant, 1 = benign), probabilities {probs}"
    );
    println!(
        "  equals in-process tract on the plaintext model: {}",
        if agrees { "yes" } else { "NO" }
    );
    if !agrees {
        bail!("encrypted-path prediction differs from in-process prediction");
    }
    println!(
        "\nEverything it wrote (runtime.toml, release-policy.toml, client-policy.toml, keys, logs in run/) is in {}.",
        dir.display()
    );
    println!("README.md shows how to start the same pieces by hand.");
    drop(children);
    Ok(())
}
