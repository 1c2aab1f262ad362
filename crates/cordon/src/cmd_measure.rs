//! `cordon measure snp`: reference values computed from images (cordon-measure), for a policy's
//! `launch_measurements`. This file reads the inputs and prints; the computation is the library's.

use anyhow::{bail, Context, Result};
use cordon_measure::snp::{launch_digest, KernelHashes, SnpLaunch, VcpuType};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum MeasureCommand {
    /// The AMD SEV-SNP launch measurement of a QEMU guest booted from an OVMF image (optionally
    /// with a kernel, initrd and command line measured through OVMF's SEV hashes table), as the
    /// attestation report's MEASUREMENT will show it: the value for a policy's
    /// `launch_measurements`. Prints it in hex on one line; --json adds the inputs.
    Snp(SnpArgs),
    /// The workload data that binds a runtime configuration on `platform`, as the host sets it at
    /// launch and a policy pins it (`workload_data`): SNP HOST_DATA = SHA-256 of the file, TDX
    /// MRCONFIGID = SHA-384 of it. The file is checked as `runtime serve` checks it. Any edit,
    /// even a comment, changes the value: measure again and register a new policy.
    Runtime(RuntimeArgs),
    /// Intel TDX: MRTD from a TDVF firmware image; RTMR0..3 replayed from a CCEL event log,
    /// optionally checked against a quote.
    Tdx(crate::cmd_measure_tdx::TdxArgs),
}

#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// The runtime configuration (TOML), byte for byte as the runtime will read it.
    #[arg(long)]
    config: PathBuf,
    /// The platform the runtime will run on.
    #[arg(long, value_enum)]
    platform: RuntimePlatform,
    #[command(flatten)]
    json: crate::util::JsonArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RuntimePlatform {
    Snp,
    Tdx,
}

#[derive(clap::Args)]
pub struct SnpArgs {
    /// The firmware image QEMU boots (`-bios`), e.g. OVMF.amdsev.fd or OVMF.fd with SEV metadata.
    #[arg(long, value_name = "OVMF.fd")]
    ovmf: PathBuf,
    /// The kernel QEMU hands the firmware (`-kernel`); needs a firmware with the SEV hashes table
    /// (OVMF.amdsev.fd).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initrd (`-initrd`).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The kernel command line (`-append`).
    #[arg(long, value_name = "CMDLINE", requires = "kernel")]
    append: Option<String>,
    /// Number of vCPUs (`-smp`), 1 to 4096.
    #[arg(long, value_name = "N")]
    vcpus: u32,
    /// The vCPU model (`-cpu`): EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome(-v1..v3),
    /// EPYC-Milan(-v1, -v2), EPYC-Genoa(-v1), EPYC-Turin.
    #[arg(long, value_name = "TYPE")]
    vcpu_type: VcpuType,
    /// SEV_FEATURES of the vCPUs, hex (0x optional); 0x1 (SNPActive) unless the guest enables
    /// more, as in QEMU's `sev-snp-guest` object.
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64, default_value = "0x1")]
    guest_features: u64,
    /// Print a JSON object: the measurement and every input (file SHA-256s included).
    #[arg(long)]
    json: bool,
}

fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(digits, 16)
        .map_err(|e| format!("{s:?} is not a 64-bit hex number (e.g. 0x1): {e}"))
}

/// SHA-256 of a file, read in pieces (kernels and initrds can be large).
fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(h.finalize().into())
}

pub fn run(c: MeasureCommand) -> Result<()> {
    match c {
        MeasureCommand::Snp(a) => snp(a),
        MeasureCommand::Runtime(a) => runtime(a),
        MeasureCommand::Tdx(a) => crate::cmd_measure_tdx::run(a),
    }
}

fn runtime(a: RuntimeArgs) -> Result<()> {
    let (bytes, _) = crate::cmd_runtime::load_config(&a.config)?;
    let platform = match a.platform {
        RuntimePlatform::Snp => cordon_attest::Platform::Snp,
        RuntimePlatform::Tdx => cordon_attest::Platform::Tdx,
    };
    let workload = cordon_runtime::config_workload_data(platform, &bytes)
        .context("SNP and TDX bind the configuration through their workload data")?;
    if a.json.json {
        return crate::util::print_json(&serde_json::json!({
            "platform": platform.to_string(),
            "workload_data": hex::encode(workload),
            "config": crate::util::path_json(&a.config),
        }));
    }
    println!("{}", hex::encode(workload));
    Ok(())
}

fn snp(a: SnpArgs) -> Result<()> {
    // The image maps below 4 GiB: a bigger file is refused before it is read.
    let size = std::fs::metadata(&a.ovmf)
        .with_context(|| format!("reading {}", a.ovmf.display()))?
        .len();
    if size > 1 << 32 {
        bail!(
            "{} is {size} bytes: a firmware image is at most 4 GiB",
            a.ovmf.display()
        );
    }
    let firmware =
        std::fs::read(&a.ovmf).with_context(|| format!("reading {}", a.ovmf.display()))?;
    let kernel_sha = a.kernel.as_deref().map(sha256_file).transpose()?;
    let initrd_sha = a.initrd.as_deref().map(sha256_file).transpose()?;
    let kernel = kernel_sha.map(|k| KernelHashes::from_digests(k, initrd_sha, a.append.as_deref()));
    let digest = launch_digest(&SnpLaunch {
        firmware: &firmware,
        kernel,
        vcpus: a.vcpus,
        vcpu_type: a.vcpu_type,
        guest_features: a.guest_features,
    })
    .with_context(|| format!("measuring {}", a.ovmf.display()))?;

    if !a.json {
        println!("{}", hex::encode(digest));
        return Ok(());
    }
    let file = |p: &Option<PathBuf>, sha: Option<[u8; 32]>| match (p, sha) {
        (Some(p), Some(sha)) => {
            serde_json::json!({ "path": p.display().to_string(), "sha256": hex::encode(sha) })
        }
        _ => serde_json::Value::Null,
    };
    let out = serde_json::json!({
        "platform": "snp",
        "launch_measurement": hex::encode(digest),
        "vmm": "qemu",
        "inputs": {
            "ovmf": { "path": a.ovmf.display().to_string(), "sha256": hex::encode(Sha256::digest(&firmware)) },
            "kernel": file(&a.kernel, kernel_sha),
            "initrd": file(&a.initrd, initrd_sha),
            "append": a.append,
            "vcpus": a.vcpus,
            "vcpu_type": a.vcpu_type.name(),
            "vcpu_signature": format!("{:#010x}", a.vcpu_type.signature()),
            "guest_features": format!("{:#x}", a.guest_features),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
