//! The local deployment that `cordon quickstart` and `cordon dev up` start: a model owner seals the
//! demo models, a KBS (its own process) holds their keys under a release policy naming the runtime's
//! measurement, and a runtime (its own process, simulated TEE) attests, receives the keys and
//! unseals the models in memory. Both commands print the same steps; what they do afterwards differs.

use crate::emulator::{EmulatedPlatform, Emulator};
use crate::{cmd_kbs, util};
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Platform, Policy, PolicyDocument};
use cordon_runtime::{EngineKind, ModelConfig, OnnxRuntimeOptions, RuntimeConfig};
use cordon_seal::{OwnerKey, SealOptions};
use cordon_tee::{sim_launch_measurement, SimHardwareKey};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// Where a deployment's runtime runs: the simulated TEE, or an emulated SNP/TDX platform (the
/// hardware code path, with evidence signed by a test root; EMULATED, NOT hardware-backed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DeployPlatform {
    Sim,
    Emulated(EmulatedPlatform),
}

impl DeployPlatform {
    /// The emulated platform's state directory under a deployment's data directory: the machine
    /// (its test root, which the KBS is told to verify).
    fn emulator_dir(self, dir: &Path) -> Option<(PathBuf, EmulatedPlatform)> {
        match self {
            DeployPlatform::Sim => None,
            DeployPlatform::Emulated(p) => {
                Some((dir.join(format!("emulator-{}", p.platform())), p))
            }
        }
    }

    /// Where the runtime `name` is launched on that machine: a copy of its state (the same keys,
    /// so the same root) with that runtime's launch parameters, as one host runs several guests.
    fn runtime_emulator_dir(self, dir: &Path, name: &str) -> Option<PathBuf> {
        self.emulator_dir(dir)
            .map(|(machine, _)| PathBuf::from(format!("{}-{name}", machine.display())))
    }

    /// What tools print about evidence from this platform.
    pub fn label(self) -> String {
        match self {
            DeployPlatform::Sim => "SIMULATED, NOT hardware-backed".into(),
            DeployPlatform::Emulated(p) => format!(
                "EMULATED {}, NOT hardware-backed",
                p.platform().to_string().to_uppercase()
            ),
        }
    }
}

/// A model shipped in the binary for demos.
#[derive(Clone, Copy)]
pub struct DemoModel {
    /// The name clients use in `/v2/models/{name}`.
    pub name: &'static str,
    pub onnx: &'static [u8],
}

pub const BREAST_CANCER_LR: DemoModel = DemoModel {
    name: "breast-cancer-lr",
    onnx: include_bytes!("../../../models/breast_cancer_lr.onnx"),
};

pub const BREAST_CANCER_MLP: DemoModel = DemoModel {
    name: "breast-cancer-mlp",
    onnx: include_bytes!("../../../models/breast_cancer_mlp.onnx"),
};

/// The synthetic fraud GBDT (models/fraud), which the `fraud_scoring` example streams to.
pub const FRAUD_GBDT: DemoModel = DemoModel {
    name: "fraud-gbdt",
    onnx: include_bytes!("../../../models/fraud/fraud_gbdt.onnx"),
};

/// What `cordon dev up` serves: one line per model.
pub const DEV_MODELS: &[DemoModel] = &[BREAST_CANCER_LR, BREAST_CANCER_MLP, FRAUD_GBDT];

/// An OIP infer request for the first test row; both breast-cancer models take it.
pub const DEMO_INPUT: &str = include_str!("../../../models/demo_input.json");

/// Set when SIGINT or SIGTERM arrives while a deployment starts (see [`stop_on_signals`]).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on SIGINT and SIGTERM no longer kill this process outright (which would leave the
/// KBS and runtime it started running, orphaned, holding their ports): they set a flag that the
/// start checks between steps and while it waits, so that it stops and its children are killed.
/// Call it first, before any child exists.
pub fn stop_on_signals(rt: &tokio::runtime::Runtime) {
    // The handlers are installed when the task first runs; wait until then, so that no signal
    // between this call and the first spawn takes the default action.
    let (ready, installed) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let signal = cmd_kbs::shutdown_signal();
        tokio::pin!(signal);
        // One poll installs the handlers.
        tokio::select! {
            biased;
            _ = &mut signal => {}
            _ = std::future::ready(()) => {}
        }
        let _ = ready.send(());
        signal.await;
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
    let _ = installed.recv_timeout(Duration::from_secs(5));
}

/// Whether SIGINT or SIGTERM arrived since [`stop_on_signals`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted: stopping the processes started so far");
    }
    Ok(())
}

/// Child processes, killed when this goes out of scope (on success and on every error path).
pub struct Children(pub Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Children {
    /// The first child that has exited, with its status.
    pub fn exited(&mut self) -> Result<Option<(String, std::process::ExitStatus)>> {
        for (name, child) in &mut self.0 {
            if let Some(status) = child.try_wait()? {
                return Ok(Some((name.clone(), status)));
            }
        }
        Ok(None)
    }
}

fn spawn(children: &mut Children, name: &str, args: &[&str], log: &Path) -> Result<()> {
    check_interrupted()?;
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
        check_interrupted()?;
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
        return parse(&util::read_secret(path, "key")?);
    }
    let v = create();
    util::write_secret(path, to_text(&v).as_bytes(), false)?;
    Ok(v)
}

/// A key broker started by [`start_kbs`].
pub struct StartedKbs {
    pub url: String,
    /// The KBS's identity key, read from the file the KBS process wrote on this machine.
    pub identity: [u8; 32],
    /// The admin token.
    pub token: Zeroizing<String>,
    /// The simulated hardware key; its public half is the trust anchor the KBS was given.
    pub hw: SimHardwareKey,
}

/// Creates (or reuses) the simulated hardware key under `dir/keys` and starts a KBS process with
/// its store in `dir/kbs`, logging to `dir/run/kbs.log`. With `emulated_root`, the KBS also
/// verifies evidence of the emulated platform with that root.
pub fn start_kbs(
    dir: &Path,
    children: &mut Children,
    emulated_root: Option<[u8; 32]>,
    port: u16,
) -> Result<StartedKbs> {
    for sub in ["keys", "kbs", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let p = |p: &Path| p.to_string_lossy().into_owned();
    // The simulated hardware key (its public half is the sim trust anchor).
    let hw = load_or_create(
        &dir.join("keys/sim-hardware.key"),
        SimHardwareKey::generate,
        |k| k.to_file_contents().to_string(),
        |t| Ok(SimHardwareKey::from_file_contents(t)?),
    )?;
    let anchor_path = dir.join("keys/sim-hardware.pub");
    std::fs::write(&anchor_path, format!("{}\n", hex::encode(hw.public_key())))?;

    let run_dir = dir.join("run");
    let kbs_addr = run_dir.join("kbs.addr");
    let _ = std::fs::remove_file(&kbs_addr);
    let identity_path = run_dir.join("kbs.identity");
    let _ = std::fs::remove_file(&identity_path);
    let token_path = dir.join("keys/admin-token");
    // The token of a store that is gone opens nothing, and a new store never overwrites a file.
    if !dir.join("kbs/kbs.sqlite3").exists() {
        let _ = std::fs::remove_file(&token_path);
    }
    let kbs_log = run_dir.join("kbs.log");
    let root_arg = emulated_root.map(hex::encode);
    let listen = format!("127.0.0.1:{port}");
    let mut extra: Vec<&str> = Vec::new();
    if let Some(root) = &root_arg {
        extra.extend(["--emulated-root", root.as_str()]);
    }
    spawn(
        children,
        "kbs",
        &[
            "kbs",
            "serve",
            "--data-dir",
            &p(&dir.join("kbs")),
            "--listen",
            &listen,
            "--sim-trust-anchor",
            &p(&anchor_path),
            "--init-admin-token-file",
            &p(&token_path),
            "--addr-file",
            &p(&kbs_addr),
            "--identity-file",
            &p(&identity_path),
            // The root KEK beside the other keys, outside the KBS's data directory: a copy of
            // the store alone opens nothing.
            "--kek",
            &format!("file:{}", p(&dir.join("keys/kbs.kek"))),
            // The KBS attests its own identity key (simulated, like the runtime).
            "--tee",
            "sim",
            "--sim-hardware-key",
            &p(&dir.join("keys/sim-hardware.key")),
        ]
        .into_iter()
        .chain(extra)
        .collect::<Vec<_>>(),
        &kbs_log,
    )?;
    let kbs_url = wait_for_addr(children, "kbs", &kbs_addr, &kbs_log)?;
    println!(
        "[kbs]     key broker listening at {kbs_url} (store {}, every key in it wrapped under \
         the KEK in {})",
        dir.join("kbs").display(),
        dir.join("keys/kbs.kek").display()
    );

    let token = Zeroizing::new(
        util::read_secret(&token_path, "admin token")?
            .trim()
            .to_string(),
    );
    // Written before the address: the KBS writes its identity first, then listens.
    let identity = util::read_public_key(&identity_path, "KBS identity key")?;
    println!(
        "[kbs]     identity key {} (pinned by the owner and the runtime's configuration)",
        hex::encode(identity)
    );
    // What an owner or party pins instead of (here: as well as) the key: the KBS's measurement
    // (this binary, with this trust anchor) and the trust anchor its sim evidence is signed with.
    let kbs_policy = PolicyDocument {
        policy: Policy::new(
            vec![Platform::Sim],
            vec![cordon_kbs::identity::sim_kbs_measurement(
                &std::env::current_exe()?,
                &[hw.public_key()],
            )?
            .to_vec()],
        ),
        endorsements: Some(Endorsements {
            sim_trust_anchors: vec![hw.public_key()],
            ..Default::default()
        }),
    };
    let kbs_policy_path = dir.join("kbs-policy.toml");
    std::fs::write(&kbs_policy_path, kbs_policy.to_toml())?;
    let verified = util::tokio_runtime()?
        .block_on(cordon_client::kbs::fetch_verified_kbs(
            &kbs_url,
            &cordon_client::ClientTls::default(),
            &kbs_policy,
            Some(&identity),
            std::time::SystemTime::now(),
        ))
        .context("the KBS's identity evidence")?;
    println!(
        "[kbs]     identity evidence verified with {}: platform {} -- SIMULATED, NOT hardware-backed, \
         measurement {}…, no debug",
        kbs_policy_path.display(),
        verified.claims.platform,
        util::short_hex(&verified.claims.launch_measurement)
    );
    Ok(StartedKbs {
        url: kbs_url,
        identity,
        token,
        hw,
    })
}

/// Starts a runtime process with `config` and waits until it serves: on the simulated TEE (the
/// hardware key under `dir/keys`), or with `--platform hardware` on the emulated platform of
/// `platform`. `name` names its log and address files under `dir/run`.
pub fn start_runtime(
    dir: &Path,
    children: &mut Children,
    name: &str,
    config: &Path,
    platform: DeployPlatform,
    extra_args: &[String],
    port: u16,
) -> Result<String> {
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let run_dir = dir.join("run");
    let addr = run_dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr);
    let log = run_dir.join(format!("{name}.log"));
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "runtime",
        "serve",
        "--config",
        &p(config),
        "--listen",
        &listen,
        "--addr-file",
        &p(&addr),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    match platform.runtime_emulator_dir(dir, name) {
        None => args.extend([
            "--platform".into(),
            "sim".into(),
            "--sim-hardware-key".into(),
            p(&dir.join("keys/sim-hardware.key")),
        ]),
        Some(emulator) => args.extend([
            "--platform".into(),
            "hardware".into(),
            "--emulator".into(),
            p(&emulator),
        ]),
    }
    args.extend(extra_args.iter().cloned());
    spawn(
        children,
        name,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &log,
    )?;
    wait_for_addr(children, name, &addr, &log)
}

/// Opens (or creates) the emulated machine of `platform` under `dir` and says so; its root
/// fingerprint, for the KBS. `None` on sim.
pub fn prepare_platform(dir: &Path, platform: DeployPlatform) -> Result<Option<[u8; 32]>> {
    let Some((machine, p)) = platform.emulator_dir(dir) else {
        return Ok(None);
    };
    let e = Emulator::open_or_create(&machine, p)?;
    println!("[host]    WARNING: {}", e.warning());
    Ok(Some(e.root_fingerprint()))
}

/// What the host and the owner do before the runtime `name` starts with the configuration
/// `config_text`: on an emulated platform, launch its guest with the configuration's hash as
/// workload data (and collateral issued now); then the release policy that names its measurement
/// and pins that configuration, and the client's policy document (for sim, with the trust anchor
/// `sim_anchor`; hardware evidence comes with its endorsements).
pub fn launch_policy(
    dir: &Path,
    platform: DeployPlatform,
    name: &str,
    config_text: &str,
    sim_anchor: [u8; 32],
) -> Result<(Policy, PolicyDocument)> {
    let policy = match (
        platform.emulator_dir(dir),
        platform.runtime_emulator_dir(dir, name),
    ) {
        (Some((machine, _)), Some(guest)) => {
            copy_state(&machine, &guest)?;
            let mut e = Emulator::open(&guest)?;
            e.launch(Some(config_text.as_bytes()), None, false, true)?;
            e.save(&guest)?;
            let workload =
                cordon_runtime::config_workload_data(e.platform(), config_text.as_bytes())
                    .context("an emulated platform binds the configuration")?;
            println!(
                "[host]    launched {name} on the emulated {} with workload data {}… (the hash of its configuration)",
                e.platform(),
                util::short_hex(&workload)
            );
            Policy {
                workload_data: Some(workload),
                emulated_roots: vec![e.root_fingerprint().to_vec()],
                ..Policy::new(vec![e.platform()], vec![e.launch_measurement()])
            }
        }
        _ => {
            let measurement =
                sim_launch_measurement(&std::env::current_exe()?, config_text.as_bytes())?;
            Policy {
                workload_data: Some(vec![0; 32]),
                ..Policy::new(vec![Platform::Sim], vec![measurement.to_vec()])
            }
        }
    };
    let doc = PolicyDocument {
        endorsements: policy
            .platforms
            .contains(&Platform::Sim)
            .then(|| Endorsements {
                sim_trust_anchors: vec![sim_anchor],
                ..Default::default()
            }),
        policy: policy.clone(),
    };
    Ok((policy, doc))
}

/// Copies an emulated machine's state directory (flat: keys, certificates, emulator.toml) to `to`.
fn copy_state(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            // fs::copy keeps the mode: keys stay 0600.
            std::fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// One sealed model of a deployment.
pub struct SealedModel {
    pub name: String,
    pub key_id: String,
}

/// A running deployment. Dropping it stops the KBS and the runtime.
pub struct Deployment {
    pub children: Children,
    pub kbs_url: String,
    /// The KBS's identity key.
    pub kbs_key: [u8; 32],
    pub runtime_url: String,
    /// The KBS admin token.
    pub token: Zeroizing<String>,
    pub models: Vec<SealedModel>,
    /// The client's policy (the release policy plus the sim trust anchor), also written to
    /// `client_policy_path`.
    pub client_doc: PolicyDocument,
    pub client_policy_path: PathBuf,
}

/// Which models of a deployment run on ONNX Runtime, and its library.
pub struct OnnxRuntimeChoice {
    pub options: OnnxRuntimeOptions,
    /// Model names; empty: all.
    pub models: Vec<String>,
}

impl OnnxRuntimeChoice {
    /// The library at `library`, pinned by the digest of its bytes now.
    pub fn for_library(library: &Path, models: Vec<String>) -> Result<OnnxRuntimeChoice> {
        let options = OnnxRuntimeOptions::pinning(library)
            .with_context(|| format!("reading the ONNX Runtime library {}", library.display()))?;
        Ok(OnnxRuntimeChoice { options, models })
    }

    fn serves(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// How [`deploy`] runs.
#[derive(Clone, Copy, Default)]
pub struct DeployOptions {
    /// The KBS's and the runtime's ports on 127.0.0.1 (0: any free port).
    pub kbs_port: u16,
    pub runtime_port: u16,
    /// Reuse an earlier run's sealed models when they still hold (same model bytes and owner,
    /// keys still in the KBS under the same release policy): the runtime's configuration, its
    /// measurement and the client policy stay the same, so what `dev up` printed last time (the
    /// proxy command, the policy file) still works.
    pub keep_state: bool,
}

/// A model of a deployment, sealed in `dir/models`: `key` is its DEK when sealed by this run,
/// `None` when an earlier run's artifact is reused (its DEK is only in the KBS).
struct Sealed {
    model: SealedModel,
    path: PathBuf,
    manifest_sha256: [u8; 32],
    key: Option<cordon_seal::KeyFile>,
}

/// Seals each model under a fresh DEK into `dir/models/NAME.sealed`.
fn seal_models(dir: &Path, models: &[DemoModel], owner: &OwnerKey) -> Result<Vec<Sealed>> {
    let mut sealed = Vec::new();
    for model in models {
        let sealed_path = dir.join("models").join(format!("{}.sealed", model.name));
        let mut sealed_file = std::fs::File::create(&sealed_path)?;
        let options = SealOptions {
            name: model.name.into(),
            version: "1".into(),
            media_type: "application/onnx".into(),
            chunk_size: cordon_seal::DEFAULT_CHUNK_SIZE,
            ..Default::default()
        };
        let (header, key) = cordon_seal::seal_with_header(
            model.onnx,
            model.onnx.len() as u64,
            &mut sealed_file,
            owner,
            &options,
            &mut |_| {},
        )?;
        sealed_file.sync_all()?;
        let (digest, manifest) = (header.digest(), header.manifest);
        println!(
            "[owner]   sealed {} ({} bytes, {} {}) -> {}",
            model.name,
            manifest.plaintext_size,
            if manifest.plaintext_blake3.is_some() {
                "blake3"
            } else {
                "sha256"
            },
            manifest
                .plaintext_digest()
                .unwrap_or_default()
                .get(..16)
                .unwrap_or_default(),
            sealed_path.display()
        );
        println!(
            "          key id {}; the DEK stays in memory and goes only to the KBS",
            manifest.key_id
        );
        sealed.push(Sealed {
            model: SealedModel {
                name: model.name.to_string(),
                key_id: manifest.key_id.clone(),
            },
            path: sealed_path,
            manifest_sha256: digest,
            key: Some(key),
        });
    }
    Ok(sealed)
}

/// An earlier run's sealed models, if each is still there, signed by `owner`, and of the same
/// model bytes; whether the KBS still holds their keys is checked later.
fn earlier_sealed(dir: &Path, models: &[DemoModel], owner: &OwnerKey) -> Option<Vec<Sealed>> {
    models
        .iter()
        .map(|model| {
            let path = dir.join("models").join(format!("{}.sealed", model.name));
            let header = cordon_seal::read_header(&mut std::fs::File::open(&path).ok()?).ok()?;
            let m = &header.manifest;
            let same = m.name == model.name
                && m.signer == hex::encode(owner.public_key())
                && m.names_plaintext(model.onnx);
            same.then(|| Sealed {
                model: SealedModel {
                    name: model.name.to_string(),
                    key_id: m.key_id.clone(),
                },
                path,
                manifest_sha256: header.digest(),
                key: None,
            })
        })
        .collect()
}

/// Seals `models`, starts the KBS, registers each model's key under a release policy naming the
/// runtime's measurement, starts the runtime and waits until it serves. State lives in `dir` and is
/// reused by later runs (keys; with `options.keep_state`, the sealed models too when they still
/// hold); otherwise sealed models, policies and the runtime config are written anew.
pub fn deploy(
    dir: &Path,
    models: &[DemoModel],
    runtime_args: &[String],
    onnxruntime: Option<&OnnxRuntimeChoice>,
    platform: DeployPlatform,
    rt: &tokio::runtime::Runtime,
    options: DeployOptions,
) -> Result<Deployment> {
    if models.is_empty() {
        bail!("a deployment needs at least one model");
    }
    for name in onnxruntime.iter().flat_map(|c| &c.models) {
        if !models.iter().any(|m| m.name == name) {
            let names: Vec<&str> = models.iter().map(|m| m.name).collect();
            bail!(
                "--onnxruntime-model {name:?} is not a model of this deployment ({})",
                names.join(", ")
            );
        }
    }
    for sub in ["keys", "models", "kbs", "run"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }

    // 1. The model owner's key.
    let owner = load_or_create(
        &dir.join("keys/owner.key"),
        OwnerKey::generate,
        |k| k.to_file_contents().to_string(),
        |t| Ok(OwnerKey::from_file_contents(t)?),
    )?;

    // 2-3. The simulated hardware key (the KBS attests itself with it) and the key broker, in its
    //      own process; on an emulated platform, the KBS verifies that platform's test root too.
    let emulated_root = prepare_platform(dir, platform)?;
    let mut children = Children(Vec::new());
    let kbs = start_kbs(dir, &mut children, emulated_root, options.kbs_port)?;
    let (kbs_url, kbs_key, hw) = (kbs.url.clone(), kbs.identity, kbs.hw);
    let token = kbs.token;
    let admin = cmd_kbs::Admin::new(
        &kbs_url,
        kbs_key,
        &token,
        &cordon_client::ClientTls::default(),
    )?;

    // 4. Each model sealed under a fresh DEK, or an earlier run's artifacts while they hold.
    //    The runtime's configuration is part of its measurement; the release policy names it.
    let mut earlier = if options.keep_state {
        earlier_sealed(dir, models, &owner)
    } else {
        None
    };
    let registered = if earlier.is_some() {
        rt.block_on(admin.keys())?
    } else {
        Vec::new()
    };
    let (sealed, config_path, policy, client_doc) = loop {
        check_interrupted()?;
        let sealed = match earlier.take() {
            Some(s) => s,
            None => seal_models(dir, models, &owner)?,
        };
        let config = RuntimeConfig {
            kbs_url: kbs_url.clone(),
            kbs_public_key: Some(hex::encode(kbs_key)),
            kbs_ca_cert: None,
            workload_data: None,
            training: None,
            models: sealed
                .iter()
                .map(|m| ModelConfig {
                    name: m.model.name.clone(),
                    path: m.path.clone(),
                    signer: hex::encode(owner.public_key()),
                    manifest_sha256: Some(hex::encode(m.manifest_sha256)),
                    engine: match onnxruntime {
                        Some(choice) if choice.serves(&m.model.name) => EngineKind::OnnxRuntime,
                        _ => EngineKind::Tract,
                    },
                    llm: None,
                })
                .collect(),
            onnxruntime: onnxruntime.map(|c| c.options.clone()),
        };
        let config_path = dir.join("runtime.toml");
        let config_text = config.to_toml();
        let (policy, client_doc) =
            launch_policy(dir, platform, "runtime", &config_text, hw.public_key())?;
        // Reused only if the KBS still holds every key, unrevoked, under this very policy (a
        // rebuilt binary measures differently, and its keys cannot be re-registered without
        // their DEKs, which only the KBS has): otherwise everything is sealed anew.
        let policy_toml = policy.to_toml();
        let still_registered = sealed.iter().all(|m| {
            m.key.is_some()
                || registered.iter().any(|k| {
                    k.key_id == m.model.key_id && k.revoked_at.is_none() && k.policy == policy_toml
                })
        });
        if !still_registered {
            println!(
                "[owner]   the earlier sealed models do not fit this run (another binary, \
                 configuration or KBS state): sealing them anew"
            );
            continue;
        }
        std::fs::write(&config_path, &config_text)?;
        break (sealed, config_path, policy, client_doc);
    };
    let measurement = policy.launch_measurements[0].clone();
    std::fs::write(dir.join("release-policy.toml"), policy.to_toml())?;
    let mut models_out = Vec::new();
    let mut reused = 0;
    for m in sealed {
        match m.key {
            Some(key) => rt.block_on(admin.register_key(&key, &policy.to_toml()))?,
            None => {
                reused += 1;
                println!(
                    "[owner]   reusing {} (key id {}): its key is in the KBS under this release \
                     policy",
                    m.path.display(),
                    m.model.key_id
                );
            }
        }
        models_out.push(m.model);
    }
    let count = |n: usize| {
        if n == 1 {
            "key".to_string()
        } else {
            format!("{n} keys")
        }
    };
    let what = if reused == models_out.len() {
        format!("the {} stay registered", count(models_out.len()))
    } else {
        format!("registered the {}", count(models_out.len()))
    };
    println!(
        "[owner]   {what} with release policy: platform {}, measurement {}…, workload data \
         pinned, no debug{}",
        policy.platforms[0],
        util::short_hex(&measurement),
        if policy.emulated_roots.is_empty() {
            ""
        } else {
            ", emulated root named (a test policy)"
        }
    );

    // 5. The runtime, in its own process: attests, receives the DEKs, unseals in memory.
    let runtime_url = start_runtime(
        dir,
        &mut children,
        "runtime",
        &config_path,
        platform,
        runtime_args,
        options.runtime_port,
    )?;
    println!(
        "[runtime] attested to the KBS, {} in memory, serving at {runtime_url}",
        if models_out.len() == 1 {
            "model unsealed"
        } else {
            "models unsealed"
        }
    );

    // 6. The client's policy: the same reference values, and for sim the trust anchor to verify
    //    with (hardware evidence comes with its endorsements; the emulated root is in the policy).
    let client_policy_path = dir.join("client-policy.toml");
    std::fs::write(&client_policy_path, client_doc.to_toml())?;

    Ok(Deployment {
        children,
        kbs_url,
        kbs_key,
        runtime_url,
        token,
        models: models_out,
        client_doc,
        client_policy_path,
    })
}
