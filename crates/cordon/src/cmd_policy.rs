//! `cordon policy new`: a release policy (for the KBS) and a client policy (for `infer`, the proxy,
//! job clients and receipt checks) written from reference values, so that a user's path on hardware
//! is: measure (`cordon measure snp|tdx|runtime`), write the policies, register.

use crate::util;
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, MinTcbFloor, Platform, Policy, PolicyDocument};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Write a release policy and a client policy from reference values. Both are parsed back
    /// before anything is written, so a policy the KBS or a client would refuse is never written.
    New(NewArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PlatformArg {
    Snp,
    Tdx,
    Sgx,
    Sim,
}

impl From<PlatformArg> for Platform {
    fn from(p: PlatformArg) -> Platform {
        match p {
            PlatformArg::Snp => Platform::Snp,
            PlatformArg::Tdx => Platform::Tdx,
            PlatformArg::Sgx => Platform::Sgx,
            PlatformArg::Sim => Platform::Sim,
        }
    }
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The platform the runtime runs on.
    #[arg(long, value_enum)]
    platform: PlatformArg,
    /// Launch measurement to accept (hex; SNP MEASUREMENT from `cordon measure snp`, TDX MRTD from
    /// `cordon measure tdx`, sim from `cordon runtime measure`); repeatable.
    #[arg(long = "measurement", required = true)]
    measurements: Vec<String>,
    /// The runtime configuration the runtime is launched with: pins it through the workload data
    /// (SNP HOST_DATA = SHA-256 of the file, TDX MRCONFIGID = SHA-384 of it), as
    /// `cordon measure runtime` prints it. The file is checked as `runtime serve` checks it.
    #[arg(long, conflicts_with = "workload_data")]
    runtime_config: Option<PathBuf>,
    /// The workload data to pin, in hex (instead of --runtime-config).
    #[arg(long)]
    workload_data: Option<String>,
    /// Accept any runtime configuration (the host then chooses it). Warned about wherever the
    /// policy is loaded.
    #[arg(long)]
    allow_unpinned_config: bool,
    /// SNP: CHIP_ID (128 hex digits) of a machine to accept; repeatable. Without it, any chip.
    #[arg(long = "chip-id")]
    chip_ids: Vec<String>,
    /// Minimum TCB component version, `COMPONENT=N` (SNP: bootloader, tee, snp, microcode, fmc;
    /// DCAP: the SVNs); repeatable.
    #[arg(long = "min-tcb", value_parser = parse_min_tcb)]
    min_tcb: Vec<(String, u64)>,
    /// DCAP: a TCB status to accept (replaces the default list); repeatable.
    #[arg(long = "tcb-status")]
    tcb_statuses: Vec<String>,
    /// DCAP: an Intel advisory to accept; when given, every advisory must be listed. Repeatable.
    #[arg(long = "allowed-advisory")]
    allowed_advisories: Vec<String>,
    /// DCAP (TDX, SGX): PPID (32 hex digits) of the PCK certificate of a machine to accept;
    /// repeatable. Without it, any machine.
    #[arg(long = "ppid")]
    ppids: Vec<String>,
    /// SNP: guest POLICY bits to check (with --guest-policy-value), e.g. 0x100000 (SINGLE_SOCKET).
    #[arg(long, value_parser = parse_u64, requires = "guest_policy_value")]
    guest_policy_mask: Option<u64>,
    /// SNP: the value the --guest-policy-mask bits must have.
    #[arg(long, value_parser = parse_u64, requires = "guest_policy_mask")]
    guest_policy_value: Option<u64>,
    /// DCAP: the lowest TCB evaluation data number of collateral accepted (Intel raises it at every
    /// TCB recovery): refuses collateral from before one, which a host could still ship.
    #[arg(long)]
    min_tcb_evaluation_data_number: Option<u64>,
    /// SNP: the highest VMPL accepted (default 0).
    #[arg(long)]
    max_vmpl: Option<u32>,
    /// TDX: RTMR reference values in order (RTMR0, RTMR1, ...), as `cordon measure tdx
    /// --event-log` prints them; repeatable.
    #[arg(long = "rtmr")]
    rtmrs: Vec<String>,
    /// Sim: a trust anchor (the `.pub` file `cordon sim keygen` writes) for the client policy's
    /// [endorsements]; repeatable.
    #[arg(long = "sim-trust-anchor")]
    sim_trust_anchors: Vec<PathBuf>,
    /// Tests only: SHA-256 (hex) of an emulated root to accept (EMULATED, NOT hardware-backed).
    #[arg(long = "emulated-root")]
    emulated_roots: Vec<String>,
    /// Where to write the release policy (`cordon kbs register --policy`); `-`: standard output.
    #[arg(long)]
    release_out: PathBuf,
    /// Where to write the client policy (`cordon infer`, `cordon proxy`, `cordon job`); `-`:
    /// standard output.
    #[arg(long)]
    client_out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: util::JsonArg,
}

fn parse_min_tcb(arg: &str) -> Result<(String, u64), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}`: write COMPONENT=N, e.g. microcode=219"))?;
    let value = value
        .trim()
        .parse()
        .map_err(|e| format!("`{arg}`: {value:?} is not a version number: {e}"))?;
    Ok((name.trim().to_string(), value))
}

fn parse_u64(arg: &str) -> Result<u64, String> {
    let parsed = match arg.strip_prefix("0x").or_else(|| arg.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => arg.parse(),
    };
    parsed.map_err(|e| format!("`{arg}` is not a number (decimal, or hex with 0x): {e}"))
}

fn hex_arg(what: &str, value: &str) -> Result<Vec<u8>> {
    hex::decode(value.trim()).with_context(|| format!("{what} {value:?} is not hex"))
}

pub fn run(c: PolicyCommand) -> Result<()> {
    match c {
        PolicyCommand::New(a) => new(a),
    }
}

fn new(a: NewArgs) -> Result<()> {
    let platform = Platform::from(a.platform);
    let measurements = a
        .measurements
        .iter()
        .map(|m| hex_arg("--measurement", m))
        .collect::<Result<Vec<_>>>()?;
    let workload_data = match (&a.runtime_config, &a.workload_data) {
        (Some(path), _) => {
            let (bytes, _) = crate::cmd_runtime::load_config(path)?;
            match cordon_runtime::config_workload_data(platform, &bytes) {
                Some(w) => Some(w),
                None => bail!(
                    "--runtime-config pins a configuration through SNP HOST_DATA or TDX MRCONFIGID; \
                     on {platform} the configuration is part of the launch measurement instead \
                     (`cordon runtime measure --config`)"
                ),
            }
        }
        (None, Some(hex)) => Some(hex_arg("--workload-data", hex)?),
        (None, None) => None,
    };
    let list = |values: &[String], what: &str| -> Result<Option<Vec<Vec<u8>>>> {
        if values.is_empty() {
            return Ok(None);
        }
        values
            .iter()
            .map(|v| hex_arg(what, v))
            .collect::<Result<_>>()
            .map(Some)
    };
    let policy = Policy {
        workload_data,
        allow_unpinned_config: a.allow_unpinned_config,
        allowed_chip_ids: list(&a.chip_ids, "--chip-id")?,
        min_tcb: (!a.min_tcb.is_empty())
            .then(|| a.min_tcb.iter().cloned().collect::<BTreeMap<_, _>>()),
        tcb_statuses: (!a.tcb_statuses.is_empty()).then(|| a.tcb_statuses.clone()),
        allowed_advisories: (!a.allowed_advisories.is_empty())
            .then(|| a.allowed_advisories.clone()),
        max_vmpl: a.max_vmpl,
        min_tcb_evaluation_data_number: a.min_tcb_evaluation_data_number,
        allowed_ppids: list(&a.ppids, "--ppid")?,
        guest_policy_mask: a.guest_policy_mask,
        guest_policy_value: a.guest_policy_value,
        rtmrs: list(&a.rtmrs, "--rtmr")?,
        emulated_roots: list(&a.emulated_roots, "--emulated-root")?.unwrap_or_default(),
        min_tcb_floor: MinTcbFloor::Default,
        ..Policy::new(vec![platform], measurements)
    };
    let anchors = a
        .sim_trust_anchors
        .iter()
        .map(|p| util::read_sim_trust_anchor(p))
        .collect::<Result<Vec<_>>>()?;
    if platform != Platform::Sim && !anchors.is_empty() {
        bail!("--sim-trust-anchor is for --platform sim only");
    }
    if platform == Platform::Sim && anchors.is_empty() {
        bail!(
            "--platform sim needs --sim-trust-anchor (the .pub file of `cordon sim keygen`): a \
             client verifies sim evidence only with the simulated hardware key it names"
        );
    }
    let doc = PolicyDocument {
        policy: policy.clone(),
        endorsements: (!anchors.is_empty()).then(|| Endorsements {
            sim_trust_anchors: anchors,
            ..Default::default()
        }),
    };
    // Parsed back as the KBS and the clients will parse them: what either would refuse (a
    // hardware policy that does not pin the configuration, a malformed value) stops here.
    let release = policy.to_toml();
    Policy::from_toml(&release).context("the release policy would be refused")?;
    let client = doc.to_toml();
    PolicyDocument::from_toml(&client).context("the client policy would be refused")?;
    if util::is_stdio(&a.release_out) && util::is_stdio(&a.client_out) {
        bail!("--release-out - and --client-out -: only one of the two can go to standard output");
    }
    let to_stdout = util::is_stdio(&a.release_out) || util::is_stdio(&a.client_out);
    if a.json.json && to_stdout {
        bail!("a policy written to standard output (-) and --json would be mixed there; drop one");
    }
    for (path, flag) in [
        (&a.release_out, "--release-out"),
        (&a.client_out, "--client-out"),
    ] {
        if !util::is_stdio(path) {
            let inputs: Vec<&std::path::Path> = a
                .runtime_config
                .iter()
                .chain(&a.sim_trust_anchors)
                .map(PathBuf::as_path)
                .collect();
            crate::output::check_dest(path, flag, a.force, &inputs)?;
        }
    }
    util::warn(&policy);
    for (path, text) in [(&a.release_out, &release), (&a.client_out, &client)] {
        if util::is_stdio(path) {
            util::write_stdout(text.as_bytes())?;
            continue;
        }
        util::create_parent(path)?;
        util::write_atomic(path, text.as_bytes())?;
    }
    if !policy.platforms.iter().all(|p| p.is_hardware_backed()) {
        eprintln!(
            "WARNING: these policies accept SIMULATED evidence, which is NOT hardware-backed"
        );
    }
    if a.json.json {
        return util::print_json(&serde_json::json!({
            "release_policy": util::path_json(&a.release_out),
            "client_policy": util::path_json(&a.client_out),
        }));
    }
    if !to_stdout {
        println!("release policy: {}", a.release_out.display());
        println!("client policy:  {}", a.client_out.display());
    }
    Ok(())
}
