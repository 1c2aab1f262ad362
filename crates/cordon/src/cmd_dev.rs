//! `cordon dev up`: the quickstart deployment, kept running in the foreground for trying clients.

use crate::cmd_kbs::shutdown_signal;
use crate::deploy::{self, OnnxRuntimeChoice, DEMO_INPUT, DEV_MODELS};
use crate::util;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum DevCommand {
    /// Start the KBS and a runtime serving the demo models (simulated TEE) and keep them running
    /// until Ctrl-C; prints the runtime URL and a client policy for `cordon proxy` and `cordon infer`.
    Up(UpArgs),
}

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where state lives (keys, sealed models, KBS store, policies, logs). A later run reuses it:
    /// the same keys, and the same sealed models while they still fit (same binary and models),
    /// so the runtime's measurement, the client policy and the printed commands stay valid.
    #[arg(long, default_value_os_t = std::env::temp_dir().join("cordon-dev"))]
    data_dir: PathBuf,
    /// The KBS's port on 127.0.0.1 (0: any free port). Fixed by default, so that what this
    /// prints stays valid across runs.
    #[arg(long, default_value_t = 8100)]
    kbs_port: u16,
    /// The runtime's port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8200)]
    runtime_port: u16,
    /// The runtime's inference workers (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Requests the runtime lets wait for a worker before answering 503 (default: the runtime's).
    #[arg(long)]
    max_queue: Option<usize>,
    /// Serve on ONNX Runtime, loaded from this shared library (`libonnxruntime.so.1.NN.M`, e.g.
    /// from the `onnxruntime` Python package's `onnxruntime/capi/`); the runtime's configuration
    /// pins the digest of its bytes.
    #[arg(long, value_name = "LIBRARY")]
    onnxruntime_library: Option<PathBuf>,
    /// With --onnxruntime-library: only these models on ONNX Runtime (default: all).
    #[arg(
        long = "onnxruntime-model",
        value_name = "NAME",
        requires = "onnxruntime_library"
    )]
    onnxruntime_models: Vec<String>,
    /// Run the runtime with `--platform hardware` on an emulated platform instead of the
    /// simulated TEE (for tests and CI: EMULATED, NOT hardware-backed).
    #[arg(long, value_enum)]
    emulate: Option<crate::emulator::EmulatedPlatform>,
    /// DEVELOPMENT ONLY (simulated TEE): the runtime ALSO serves inference in PLAINTEXT on its
    /// URL, to compare answers with the encrypted path or measure what encryption costs.
    #[arg(long, conflicts_with = "emulate")]
    dev_plaintext_inference: bool,
}

pub fn run(c: DevCommand) -> Result<()> {
    match c {
        DevCommand::Up(a) => up(a),
    }
}

fn up(a: UpArgs) -> Result<()> {
    let dir = a.data_dir;
    let platform = a.emulate.map_or(
        deploy::DeployPlatform::Sim,
        deploy::DeployPlatform::Emulated,
    );
    println!("Cordon dev: data directory {}", dir.display());
    println!(
        "Platform: {}. Nothing here is hardware-backed; it is for development, not for data that matters.\n",
        match platform {
            deploy::DeployPlatform::Sim => "SIMULATED TEE".to_string(),
            p => p.label(),
        }
    );
    let rt = util::tokio_runtime()?;
    // Before any child exists: a signal during the start stops it and takes the children down.
    deploy::stop_on_signals(&rt);
    let mut runtime_args = Vec::new();
    if let Some(w) = a.workers {
        runtime_args.extend(["--workers".to_string(), w.to_string()]);
    }
    if let Some(q) = a.max_queue {
        runtime_args.extend(["--max-queue".to_string(), q.to_string()]);
    }
    if a.dev_plaintext_inference {
        runtime_args.push("--dev-plaintext-inference".to_string());
    }
    let onnxruntime = a
        .onnxruntime_library
        .as_deref()
        .map(|lib| OnnxRuntimeChoice::for_library(lib, a.onnxruntime_models.clone()))
        .transpose()?;
    let deployment = deploy::deploy(
        &dir,
        DEV_MODELS,
        &runtime_args,
        onnxruntime.as_ref(),
        platform,
        &rt,
        deploy::DeployOptions {
            kbs_port: a.kbs_port,
            runtime_port: a.runtime_port,
            keep_state: true,
        },
    )
    .map_err(|e| port_hint(e, a.kbs_port, a.runtime_port));
    // Stopped by a signal during the start: as after it, a server's normal end.
    let mut deployment = match deployment {
        Err(_) if deploy::interrupted() => {
            println!("stopped");
            return Ok(());
        }
        other => other?,
    };
    let input = dir.join("demo-input.json");
    std::fs::write(&input, DEMO_INPUT)?;
    let names: Vec<&str> = deployment.models.iter().map(|m| m.name.as_str()).collect();
    let policy = deployment.client_policy_path.display().to_string();
    let runtime = deployment.runtime_url.clone();
    println!("\n== Running ==");
    println!("runtime URL: {runtime}");
    println!("client policy: {policy}");
    println!("KBS URL: {}", deployment.kbs_url);
    println!("models: {}", names.join(", "));
    println!("logs: {}", dir.join("run").display());
    println!("\nTry it with any Open Inference Protocol client, through the verifying proxy:");
    println!("  cordon proxy --upstream {runtime} --policy {policy} --listen 127.0.0.1:8300");
    println!(
        "  curl -s -H 'Content-Type: application/json' -d @{} http://127.0.0.1:8300/v2/models/{}/infer",
        input.display(),
        names[0]
    );
    println!("or with the CLI client:");
    println!(
        "  cordon infer --runtime {runtime} --policy {policy} --model {} --input {}",
        names[0],
        input.display()
    );
    println!("\nCtrl-C stops the KBS and the runtime.");
    let exited = rt.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            // A signal that came during the start (or now) stops at once.
            if deploy::interrupted() {
                return Ok(None);
            }
            tokio::select! {
                _ = &mut shutdown => return Ok::<_, anyhow::Error>(None),
                _ = tick.tick() => {
                    if let Some(gone) = deployment.children.exited()? {
                        return Ok(Some(gone));
                    }
                }
            }
        }
    })?;
    // Dropping the deployment kills whichever child is still running.
    drop(deployment);
    if let Some((name, status)) = exited {
        bail!(
            "{name} exited ({status}); see its log in {}",
            dir.join("run").display()
        );
    }
    println!("stopped");
    Ok(())
}

/// A port that is taken says how to pick another.
fn port_hint(e: anyhow::Error, kbs_port: u16, runtime_port: u16) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("Address already in use") || text.contains("address already in use") {
        e.context(format!(
            "a port of this deployment is taken (KBS {kbs_port}, runtime {runtime_port}): is \
             another `cordon dev up` running? Stop it, or pass --kbs-port/--runtime-port (0 \
             picks a free one)"
        ))
    } else {
        e
    }
}
