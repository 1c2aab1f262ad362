//! `cordon runtime serve | measure`, `cordon sim keygen`.

use crate::cmd_kbs::shutdown_signal;
use crate::util;
use anyhow::{bail, Context, Result};
use cordon_runtime::{BatchOptions, RuntimeConfig, ServingOptions, SessionLimits};
use cordon_tee::{sim_launch_measurement, EvidenceProvider, SimHardwareKey, SimTee};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum RuntimeCommand {
    /// Boot (attest, fetch keys, unseal models in memory) and serve encrypted inference.
    Serve(Box<ServeArgs>),
    /// Print the simulated launch measurement of a runtime binary with a config: the reference value
    /// a release policy or client policy lists.
    Measure(MeasureArgs),
}

#[derive(clap::Subcommand)]
pub enum SimCommand {
    /// Create a simulated "hardware" attestation key (development only; NOT hardware-backed).
    Keygen {
        /// Secret key file (mode 0600); the public key (the trust anchor) goes to the same path with
        /// `.pub`. Default: sim-hardware.key in $XDG_CONFIG_HOME/cordon (~/.config/cordon).
        #[arg(long, default_value_os_t = util::default_sim_hardware_key())]
        out: PathBuf,
        /// Replace an existing key and public key (the old key is lost).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        json: util::JsonArg,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum PlatformArg {
    /// The simulated TEE (no hardware; evidence signed by --sim-hardware-key).
    Sim,
    /// Real hardware, detected: configfs-tsm (SNP, TDX), then /dev/sev-guest (SNP), then Gramine
    /// /dev/attestation (SGX). Never falls back to sim.
    Hardware,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Runtime configuration (TOML): kbs_url, workload_data, [[models]] name/path/signer.
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on (port 0 picks a free port; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:8200")]
    listen: SocketAddr,
    /// TEE platform to produce evidence with: `hardware` (detected) or `sim` (must be asked for).
    #[arg(long, value_enum)]
    platform: PlatformArg,
    /// The simulated hardware key (from `cordon sim keygen`).
    #[arg(long, required_if_eq("platform", "sim"))]
    sim_hardware_key: Option<PathBuf>,
    /// With --platform hardware: the emulated platform in this directory (`cordon emulator init`)
    /// instead of the machine's. Tests and CI only: EMULATED, NOT hardware-backed.
    #[arg(long)]
    emulator: Option<PathBuf>,
    /// With --emulator: the guest interface the runtime asks it through, as a guest kernel offers
    /// it (`sev-guest`: SNP's `/dev/sev-guest` extended report, with the host's certificates).
    #[arg(
        long,
        value_enum,
        default_value = "configfs-tsm",
        requires = "emulator"
    )]
    emulator_interface: crate::emulator::EmulatedInterface,
    /// With --platform hardware: endorsements to ship with the evidence when the platform ships
    /// none, from a directory `cordon attest fetch EVIDENCE --out DIR` filled (the VCEK, or DCAP
    /// collateral). Input to verifiers, never trust.
    #[arg(long)]
    endorsements: Option<PathBuf>,
    /// Simulate a debug TEE (its memory readable by the host); policies without allow_debug refuse it.
    #[arg(long)]
    sim_debug: bool,
    /// Write the bound address here once the models are loaded and the server listens.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Inference requests evaluated at once (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Inference requests that may wait for a worker; beyond that, 503 with Retry-After at once.
    #[arg(long, default_value_t = 256)]
    max_queue: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Most sessions open at once (session mode); new ones get 503 when full.
    #[arg(long, default_value_t = 4096)]
    max_sessions: usize,
    /// Lifetime of a session, in seconds.
    #[arg(long, default_value_t = 600)]
    session_lifetime_secs: u64,
    /// One-shot requests and session setups remembered against replay, at most; each is held
    /// until its time stamp leaves the 120 s window, so this sustains about this / 121 per second
    /// (beyond that, 503 with Retry-After). About 100 bytes each.
    #[arg(long, default_value_t = 1 << 20)]
    replay_memory: usize,
    /// Dynamic batching: merge concurrent requests to one model into batches of at most this
    /// many rows (0: off).
    #[arg(long, default_value_t = 0)]
    batch_max_rows: usize,
    /// Dynamic batching: longest a request waits for others to join its batch, in microseconds.
    #[arg(long, default_value_t = 0)]
    batch_max_delay_us: u64,
    /// Seconds to keep retrying a key broker that refuses connections (it may be starting too)
    /// before giving up; 0: one try.
    #[arg(long, default_value_t = 30)]
    kbs_wait_secs: u64,
    /// DEVELOPMENT ONLY, sim only: also serve inference in PLAINTEXT HTTP (POST /v2/models/…/infer),
    /// to measure what encryption costs. Refused with --platform hardware.
    #[arg(long)]
    dev_plaintext_inference: bool,
    /// HTTPS towards clients. The certificate's key is the host's, bound to no evidence: clients
    /// still verify the runtime by its evidence and encrypt every request to its attested key.
    #[command(flatten)]
    tls: util::ServerTlsArgs,
}

#[derive(clap::Args)]
pub struct MeasureArgs {
    /// Runtime configuration (TOML) the runtime will be started with.
    #[arg(long)]
    config: PathBuf,
    /// Runtime binary (default: this `cordon` binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    #[command(flatten)]
    json: util::JsonArg,
}

pub fn run(c: RuntimeCommand) -> Result<()> {
    match c {
        RuntimeCommand::Serve(a) => serve(*a),
        RuntimeCommand::Measure(a) => {
            let binary = match a.binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            // Parsed and checked as `serve` would: a measurement of a configuration that
            // `serve` refuses would only be registered to fail later.
            let (config, _) = load_config(&a.config)?;
            let measurement = hex::encode(sim_launch_measurement(&binary, &config)?);
            if a.json.json {
                return util::print_json(&serde_json::json!({
                    "launch_measurement": measurement,
                    "config": util::path_json(&a.config),
                    "binary": util::path_json(&binary),
                }));
            }
            println!("{measurement}");
            Ok(())
        }
    }
}

pub fn run_sim(c: SimCommand) -> Result<()> {
    match c {
        SimCommand::Keygen { out, force, json } => {
            util::refuse_shadowing(&out)?;
            let pub_path = out.with_extension("pub");
            if crate::output::same_file(&pub_path, &out) {
                bail!(
                    "--out {} ends in .pub: the public key would overwrite the secret key; name \
                     the key file otherwise (the public key goes next to it, with .pub)",
                    out.display()
                );
            }
            util::check_new_key(&out, &pub_path, force)?;
            let key = SimHardwareKey::generate();
            util::write_secret(&out, key.to_file_contents().as_bytes(), force)?;
            util::write_atomic(
                &pub_path,
                format!("{}\n", hex::encode(key.public_key())).as_bytes(),
            )?;
            if json.json {
                return util::print_json(&serde_json::json!({
                    "sim_hardware_key": util::path_json(&out),
                    "trust_anchor": hex::encode(key.public_key()),
                    "trust_anchor_file": util::path_json(&pub_path),
                }));
            }
            println!(
                "simulated hardware key: {} (NOT hardware-backed; for development)",
                out.display()
            );
            println!(
                "trust anchor:           {} ({})",
                hex::encode(key.public_key()),
                pub_path.display()
            );
            Ok(())
        }
    }
}

/// Reads and checks a runtime configuration exactly as `runtime serve` does: its bytes (what the
/// measurement and the workload data cover) and the parsed configuration. Every error names the file.
pub fn load_config(path: &Path) -> Result<(Vec<u8>, RuntimeConfig)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        anyhow::anyhow!(
            "runtime config {} is not UTF-8 text (a TOML file is expected): {e}",
            path.display()
        )
    })?;
    let config = RuntimeConfig::from_toml(text)
        .and_then(|c| c.check().map(|()| c))
        .map_err(|e| anyhow::anyhow!("runtime config {}: {e}", path.display()))?;
    Ok((bytes, config))
}

/// Builds the simulated TEE for a runtime binary and its config bytes.
pub fn sim_tee(
    key_path: &Path,
    binary: &Path,
    config_bytes: &[u8],
    config: &RuntimeConfig,
    debug: bool,
) -> Result<SimTee> {
    let key = SimHardwareKey::from_file_contents(&util::read_key_file(
        key_path,
        "sim hardware key",
        cordon_tee::SIM_HARDWARE_KEY_FORMAT,
    )?)?;
    let measurement = sim_launch_measurement(binary, config_bytes)?;
    let workload = config.workload_data_bytes().map_err(anyhow::Error::msg)?;
    Ok(SimTee::new(key, measurement, workload, debug))
}

fn serve(a: ServeArgs) -> Result<()> {
    // Before any key or plaintext exists in this process.
    let hardening = cordon_runtime::harden_process();
    match &hardening.core_dumps_disabled {
        Ok(()) => tracing::info!(
            "core dumps disabled, memory closed to ptrace (PR_SET_DUMPABLE=0, RLIMIT_CORE=0)"
        ),
        Err(e) => eprintln!("WARNING: core dumps could not be disabled: {e}"),
    }
    match &hardening.memory_locked {
        Ok(()) => tracing::info!("memory locked (mlockall): keys and plaintext never reach swap"),
        Err(e) => eprintln!("WARNING: memory not locked: {e}"),
    }
    if let Some(advice) = cordon_runtime::IdleWait::read().advice() {
        tracing::warn!("{advice}");
    }
    let (config_bytes, config) = load_config(&a.config)?;
    // A certificate or key that is missing or does not match stops the start before the boot.
    let tls = a.tls.load()?;
    let tee: Arc<dyn EvidenceProvider> = match a.platform {
        PlatformArg::Sim => {
            let Some(key) = &a.sim_hardware_key else {
                bail!("--sim-hardware-key is required with --platform sim")
            };
            let binary = std::env::current_exe()?;
            let tee = sim_tee(key, &binary, &config_bytes, &config, a.sim_debug)?;
            eprintln!(
                "WARNING: SIMULATED TEE: evidence is signed by a local key and is NOT hardware-backed{}; launch measurement {}",
                if a.sim_debug { " (debug mode)" } else { "" },
                hex::encode(tee.launch_measurement())
            );
            Arc::new(tee)
        }
        PlatformArg::Hardware => {
            let (mut provider, event_log) = match &a.emulator {
                Some(dir) => {
                    let emulator = crate::emulator::Emulator::open(dir)?;
                    eprintln!("WARNING: {}", emulator.warning());
                    let log = dir.join(crate::emulator::EMULATED_EVENT_LOG_FILE);
                    eprintln!(
                        "emulated guest interface: {}",
                        a.emulator_interface.describe()
                    );
                    (emulator.provider(a.emulator_interface)?, log)
                }
                None => {
                    let provider = cordon_tee::detect(Path::new("/"))?;
                    eprintln!("TEE platform detected: {}", provider.platform());
                    (provider, PathBuf::from(cordon_tee::CCEL_DATA_PATH))
                }
            };
            // A TD ships its event log, for verifiers to replay against its RTMRs.
            if provider.platform() == cordon_attest::Platform::Tdx && event_log.exists() {
                provider = Box::new(cordon_tee::TdxEventLog::open(provider, &event_log)?);
                eprintln!(
                    "shipping the TD's event log ({}) with its quotes",
                    event_log.display()
                );
            }
            if let Some(dir) = &a.endorsements {
                provider = Box::new(cordon_tee::EndorsementCache::open(provider, dir)?);
                eprintln!(
                    "shipping the endorsements of {} with the evidence",
                    dir.display()
                );
            }
            cordon_runtime::check_config_binding(provider.as_ref(), &config_bytes)?;
            Arc::from(provider)
        }
    };
    if a.platform == PlatformArg::Sim && (a.emulator.is_some() || a.endorsements.is_some()) {
        bail!("--emulator and --endorsements go with --platform hardware");
    }
    if a.dev_plaintext_inference {
        if a.platform != PlatformArg::Sim {
            bail!("--dev-plaintext-inference is for development with --platform sim only");
        }
        eprintln!(
            "WARNING: --dev-plaintext-inference: inference is ALSO served in PLAINTEXT over HTTP; \
             for measuring the cost of encryption only"
        );
    }
    let defaults = ServingOptions::default();
    let options = ServingOptions {
        workers: a.workers.unwrap_or(defaults.workers).max(1),
        max_queue: a.max_queue,
        max_body: a.max_body_bytes,
        sessions: SessionLimits {
            max_sessions: a.max_sessions.max(1),
            lifetime: std::time::Duration::from_secs(a.session_lifetime_secs.max(1)),
            ..defaults.sessions
        },
        plaintext_inference: a.dev_plaintext_inference,
        replay_memory: a.replay_memory.max(1),
        kbs_wait: std::time::Duration::from_secs(a.kbs_wait_secs),
        batching: (a.batch_max_rows > 0).then(|| BatchOptions {
            max_rows: a.batch_max_rows,
            max_delay: std::time::Duration::from_micros(a.batch_max_delay_us),
        }),
        ..defaults
    };
    let rt = util::tokio_runtime()?;
    rt.block_on(async move {
        // The port first: a runtime that cannot listen must not have asked the KBS for keys
        // (each release is audited as delivered to a runtime that would then die at once).
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {} (before asking the KBS for any key)", a.listen))?;
        let booted = cordon_runtime::boot(&config, tee, &options).await?;
        let addr = listener.local_addr()?;
        a.tls.announce("runtime");
        tracing::info!(%addr, tls = tls.is_some(), models = ?booted.model_digests.keys().collect::<Vec<_>>(), "runtime ready");
        if let Some(f) = &a.addr_file {
            util::write_atomic(f, addr.to_string().as_bytes())?;
        }
        cordon_runtime::serve_with_tls(booted.state, listener, tls, shutdown_signal()).await?;
        Ok(())
    })
}
