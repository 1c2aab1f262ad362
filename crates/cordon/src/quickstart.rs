//! `cordon quickstart`: the whole flow on this machine, with the simulated TEE.
//!
//! Model owner seals the demo model → KBS (its own process) gets the key and a release policy naming
//! the runtime's measurement → runtime (its own process) attests, receives the DEK, unseals in memory →
//! a client verifies the runtime's evidence and sends an encrypted inference request.

use crate::deploy::{self, DeployPlatform, BREAST_CANCER_LR, DEMO_INPUT};
use crate::emulator::EmulatedPlatform;
use crate::{cmd_kbs, util};
use anyhow::{bail, Result};
use cordon_proto::oip::InferRequest;
use cordon_runtime::OnnxModel;
use std::path::PathBuf;
use std::time::SystemTime;

const MODEL_NAME: &str = BREAST_CANCER_LR.name;

#[derive(clap::Args)]
pub struct Args {
    /// Where state lives (keys, sealed model, KBS store, logs). Reused by later runs.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("cordon-quickstart"))]
    data_dir: PathBuf,
    /// Run the runtime with `--platform hardware` on an emulated platform instead of the
    /// simulated TEE: the hardware code path (configfs-tsm, the vendor's certificate chains and
    /// TCB checks, the configuration binding) with evidence signed by a test root. For tests and
    /// CI: EMULATED, NOT hardware-backed.
    #[arg(long, value_enum)]
    emulate: Option<EmulatedPlatform>,
}

pub fn run(a: Args) -> Result<()> {
    let dir = a.data_dir;
    let platform = a
        .emulate
        .map_or(DeployPlatform::Sim, DeployPlatform::Emulated);
    println!("Cordon quickstart: data directory {}", dir.display());
    match platform {
        DeployPlatform::Sim => println!("Platform: SIMULATED TEE. Nothing below is hardware-backed; it shows the protocol, not isolation.\n"),
        DeployPlatform::Emulated(_) => println!(
            "Platform: {}. The runtime takes the hardware path, but its evidence is signed by a test root: nothing below is hardware-backed.\n",
            platform.label()
        ),
    }

    // 1-5. Owner seals, KBS holds the key, runtime attests and unseals (see `deploy`).
    let rt = util::tokio_runtime()?;
    deploy::stop_on_signals(&rt);
    let deployment = deploy::deploy(
        &dir,
        &[BREAST_CANCER_LR],
        &[],
        None,
        platform,
        &rt,
        deploy::DeployOptions::default(),
    )?;
    let runtime_url = &deployment.runtime_url;
    let kbs_url = &deployment.kbs_url;
    let token = &deployment.token;
    let key_id = deployment.models[0].key_id.clone();

    // Ctrl-C or SIGTERM stops here (the children go with the deployment).
    deploy::check_interrupted()?;
    // 6. The client: its own policy, verify first, then encrypt.
    let client_doc = &deployment.client_doc;
    let client_policy_path = &deployment.client_policy_path;
    let request: InferRequest = serde_json::from_str(DEMO_INPUT)?;
    let (verified, response) = rt.block_on(async {
        let verified = cordon_client::connect(runtime_url, client_doc, SystemTime::now()).await?;
        let response = verified.infer(MODEL_NAME, &request).await?;
        Ok::<_, anyhow::Error>((verified, response))
    })?;
    let claims = verified.claims();
    println!("\n== Verified claims (by the client, with its own policy) ==");
    println!(
        "  platform            {} -- {}",
        claims.platform,
        platform.label()
    );
    if claims.hardware_backed {
        bail!("claims of a simulated or emulated platform say hardware-backed");
    }
    println!(
        "  launch measurement  {}",
        hex::encode(&claims.launch_measurement)
    );
    println!("  debug               {}", claims.debug);
    println!(
        "  report_data binds   nonce + HPKE key {} + signing key {}",
        util::short_hex(&verified.keys().hpke_public_key),
        util::short_hex(&verified.keys().signing_public_key)
    );
    println!(
        "  appraisal           accepted by {}",
        client_policy_path.display()
    );

    let admin = cmd_kbs::Admin::new(
        kbs_url,
        deployment.kbs_key,
        token,
        &cordon_client::ClientTls::default(),
    )?;
    let events = rt.block_on(admin.audit())?;
    println!("\n== Key release (KBS audit log) ==");
    for e in events
        .iter()
        .filter(|e| e.key_id.as_deref() == Some(key_id.as_str()))
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

    // Ctrl-C or SIGTERM stops here (the children go with the deployment).
    deploy::check_interrupted()?;
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
    let local = OnnxModel::load(MODEL_NAME, "1", BREAST_CANCER_LR.onnx)?.infer(&request)?;
    let agrees = local.outputs == response.outputs;
    println!("\n== Prediction (encrypted request and response, HPKE to the attested key) ==");
    println!(
        "  model {MODEL_NAME}: label {label} (0 = malignant, 1 = benign), probabilities {probs}"
    );
    println!(
        "  equals the same engine in process on the plaintext model: {}",
        if agrees { "yes" } else { "NO" }
    );
    if !agrees {
        bail!("encrypted-path prediction differs from in-process prediction");
    }
    println!(
        "\nEverything it wrote (runtime.toml, release-policy.toml, client-policy.toml, kbs-policy.toml, keys, logs in run/) is in {}.",
        dir.display()
    );
    println!("README.md shows how to start the same pieces by hand.");
    drop(deployment);
    Ok(())
}
