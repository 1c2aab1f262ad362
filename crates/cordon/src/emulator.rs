//! `cordon emulator`: emulated SEV-SNP and TDX platforms, for tests and CI only. Their evidence is in
//! the real hardware formats and goes through the same code as on a real machine (configfs-tsm,
//! certificate chains, TCB checks, the configuration binding), but it is signed by a test root made
//! on the spot: it is **EMULATED, NOT hardware-backed**, verifies only where the verifier names that
//! root, and passes only policies that name it (`emulated_roots`).

use anyhow::{bail, Context, Result};
use cordon_attest::snp::{Product, POLICY_DEBUG, POLICY_MIGRATE_MA};
use cordon_attest::Platform;
use cordon_tee::emulated::tdx::{
    CollateralOptions, EmulatedTcbStatus, EmulatedTdx, EmulatedTdxOptions,
};
use cordon_tee::emulated::{EmulatedSnp, EmulatedSnpOptions, LaunchParams, SnpTcb};
use cordon_tee::{ConfigFsTsm, EvidenceProvider};
use sha2::{Digest, Sha256, Sha384};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand)]
pub enum EmulatorCommand {
    /// Create an emulated platform (its test PKI and launch parameters) in a directory.
    Init(InitArgs),
    /// Set what a host sets when it launches the TEE: the workload data of a runtime
    /// configuration, the launch measurement, debug mode, the platform's TCB status.
    Launch(LaunchArgs),
    /// Print an emulated platform's root fingerprint (what `emulated_roots` and
    /// `kbs serve --emulated-root` name) and its launch parameters.
    Show {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmulatedPlatform {
    Snp,
    Tdx,
}

impl EmulatedPlatform {
    pub fn platform(self) -> Platform {
        match self {
            EmulatedPlatform::Snp => Platform::Snp,
            EmulatedPlatform::Tdx => Platform::Tdx,
        }
    }
}

/// The kernel interface through which a guest asks the emulated platform for evidence, as on a
/// real guest.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EmulatedInterface {
    /// configfs-tsm (`/sys/kernel/config/tsm/report`), SNP and TDX: the report and, for SNP, the
    /// host's certificate table in `auxblob`.
    #[default]
    ConfigfsTsm,
    /// `/dev/sev-guest`, SNP only: the `SNP_GET_EXT_REPORT` ioctl, the report with the host's
    /// certificate table.
    SevGuest,
}

impl EmulatedInterface {
    /// Where the guest asks, as tools print it.
    pub fn describe(self) -> String {
        match self {
            EmulatedInterface::ConfigfsTsm => {
                format!("configfs-tsm {}", ConfigFsTsm::EMULATED_BASE)
            }
            EmulatedInterface::SevGuest => {
                format!(
                    "{} (SNP_GET_EXT_REPORT)",
                    cordon_tee::SevGuest::EMULATED_PATH
                )
            }
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProductArg {
    Milan,
    Genoa,
    Turin,
}

#[derive(clap::Args)]
pub struct InitArgs {
    #[arg(long, value_enum)]
    platform: EmulatedPlatform,
    /// Directory for the platform's state (keys mode 0600, certificates, emulator.toml).
    #[arg(long)]
    dir: PathBuf,
    /// SNP: the product line (decides the TCB layout, CPUID and the VCEK's productName).
    #[arg(long, value_enum, default_value = "milan")]
    product: ProductArg,
}

#[derive(clap::Args)]
pub struct LaunchArgs {
    #[arg(long)]
    dir: PathBuf,
    /// The runtime configuration to launch with: the workload data becomes its hash (SNP
    /// HOST_DATA = SHA-256 of the file, TDX MRCONFIGID = SHA-384 of it), as a host launching
    /// Cordon's runtime sets it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The launch measurement (SNP MEASUREMENT, TDX MRTD), hex. Default: the emulator's own.
    #[arg(long)]
    measurement: Option<String>,
    /// Launch a debug TEE (its memory readable by the host): every policy without allow_debug
    /// refuses it.
    #[arg(long)]
    debug: bool,
    /// SNP: launch a guest whose policy allows a migration agent (MIGRATE_MA).
    #[arg(long)]
    migration_agent: bool,
    /// The platform's TCB: up to date, or out of date (TDX: the collateral's status; SNP: a
    /// REPORTED_TCB below AMD's published fixes, with a VCEK certifying it).
    #[arg(long, value_enum, default_value = "up-to-date")]
    tcb_status: TcbStatusArg,
    /// Issue the collateral this many days ago (it is valid for 30 days, as Intel's: more than 30
    /// gives expired collateral).
    #[arg(long, default_value_t = 0)]
    collateral_age_days: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TcbStatusArg {
    UpToDate,
    OutOfDate,
}

/// The emulated TDX platform's default MRTD: a fixed value that names itself, standing in for the
/// measurement of a TD firmware image (`cordon measure tdx` computes a real one).
pub fn default_tdx_measurement() -> [u8; 48] {
    Sha384::digest(b"cordon emulated TDX firmware (no real TDVF)").into()
}

/// The boot event log of the emulated TD: a real TD's CCEL (testdata/attestation/tdx/ccel_live.bin,
/// with its provenance there), so that its RTMRs are the replay of real firmware events and a
/// verifier has a log to replay. Written to `ccel.bin` in the platform's directory.
const EMULATED_TD_EVENT_LOG: &[u8] =
    include_bytes!("../../../testdata/attestation/tdx/ccel_live.bin");

/// Where an emulated TD's event log lies in its directory (a real TD's is `CCEL_DATA_PATH`).
pub const EMULATED_EVENT_LOG_FILE: &str = "ccel.bin";

/// RTMR0..3 of the emulated TD: the replay of its event log.
fn emulated_td_rtmrs() -> Result<[[u8; 48]; 4]> {
    Ok(cordon_attest::eventlog::parse(EMULATED_TD_EVENT_LOG)
        .context("the emulated TD's event log")?
        .replay())
}

/// The emulated SNP platform's default launch measurement, likewise standing in for the launch
/// digest of a firmware image (`cordon measure snp` computes a real one).
pub fn default_snp_measurement() -> [u8; 48] {
    Sha384::digest(b"cordon emulated SEV-SNP firmware (no real OVMF)").into()
}

/// A REPORTED_TCB older than AMD's published fixes for `product` (below `snp::floor`), for
/// refusal tests: the values of a 2023 Milan report.
fn old_snp_tcb(product: Product) -> SnpTcb {
    SnpTcb {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
        fmc: (product == Product::Turin).then_some(0),
    }
}

/// An emulated platform opened from its directory.
pub enum Emulator {
    Snp(Box<EmulatedSnp>),
    Tdx(Box<EmulatedTdx>),
}

impl Emulator {
    /// Creates the platform's state in `dir` (refusing a directory that holds one), launched with
    /// the default measurement and nothing bound.
    pub fn create(dir: &Path, platform: EmulatedPlatform) -> Result<Emulator> {
        Emulator::create_product(dir, platform, Product::Milan)
    }

    fn create_product(
        dir: &Path,
        platform: EmulatedPlatform,
        product: Product,
    ) -> Result<Emulator> {
        match platform {
            EmulatedPlatform::Snp => {
                let launch = LaunchParams::new(default_snp_measurement(), [0; 32]);
                let options = EmulatedSnpOptions::new(product, launch);
                Ok(Emulator::Snp(Box::new(EmulatedSnp::create(dir, options)?)))
            }
            EmulatedPlatform::Tdx => {
                let mut options = EmulatedTdxOptions::new(SystemTime::now());
                options.launch.mr_td = default_tdx_measurement();
                options.launch.rtmrs = emulated_td_rtmrs()?;
                let tdx = EmulatedTdx::create(dir, options)?;
                std::fs::write(dir.join(EMULATED_EVENT_LOG_FILE), EMULATED_TD_EVENT_LOG)
                    .with_context(|| format!("writing the event log into {}", dir.display()))?;
                Ok(Emulator::Tdx(Box::new(tdx)))
            }
        }
    }

    pub fn open(dir: &Path) -> Result<Emulator> {
        let what = || format!("emulated platform in {}", dir.display());
        // The SNP state holds AMD's chain by its names; the TDX state does not.
        if dir.join("ark.der").exists() {
            Ok(Emulator::Snp(Box::new(
                EmulatedSnp::open(dir).with_context(what)?,
            )))
        } else {
            Ok(Emulator::Tdx(Box::new(
                EmulatedTdx::open(dir).with_context(what)?,
            )))
        }
    }

    /// Opens the platform in `dir`, creating it first when the directory holds none.
    pub fn open_or_create(dir: &Path, platform: EmulatedPlatform) -> Result<Emulator> {
        let existing = dir.join("emulator.toml").exists();
        let emulator = if existing {
            Emulator::open(dir)?
        } else {
            Emulator::create(dir, platform)?
        };
        if emulator.platform() != platform.platform() {
            bail!(
                "{} holds an emulated {} platform, not {}",
                dir.display(),
                emulator.platform(),
                platform.platform()
            );
        }
        Ok(emulator)
    }

    pub fn platform(&self) -> Platform {
        match self {
            Emulator::Snp(_) => Platform::Snp,
            Emulator::Tdx(_) => Platform::Tdx,
        }
    }

    pub fn root_fingerprint(&self) -> [u8; 32] {
        match self {
            Emulator::Snp(e) => e.root_fingerprint(),
            Emulator::Tdx(t) => t.root_fingerprint(),
        }
    }

    pub fn launch_measurement(&self) -> Vec<u8> {
        match self {
            Emulator::Snp(e) => e.options().launch.measurement.to_vec(),
            Emulator::Tdx(t) => t.launch().mr_td.to_vec(),
        }
    }

    /// What a host sets at launch: the workload data binding `config_bytes`, the measurement,
    /// debug mode; and collateral issued now with `tcb` (as a fresh PCCS answer would be).
    pub fn launch(
        &mut self,
        config_bytes: Option<&[u8]>,
        measurement: Option<&[u8]>,
        debug: bool,
        up_to_date: bool,
    ) -> Result<()> {
        self.launch_with(config_bytes, measurement, debug, false, up_to_date, 0)
    }

    /// [`Emulator::launch`], with a migration agent allowed (SNP) and the collateral issued
    /// `collateral_age_days` ago (TDX).
    pub fn launch_with(
        &mut self,
        config_bytes: Option<&[u8]>,
        measurement: Option<&[u8]>,
        debug: bool,
        migration_agent: bool,
        up_to_date: bool,
        collateral_age_days: u64,
    ) -> Result<()> {
        let issued_at = SystemTime::now()
            .checked_sub(Duration::from_secs(
                collateral_age_days.saturating_mul(86_400),
            ))
            .context("--collateral-age-days reaches before the epoch")?;
        if collateral_age_days > 0 && self.platform() != Platform::Tdx {
            bail!(
                "--collateral-age-days is for TDX (SNP has no collateral; its VCEK is long-lived)"
            );
        }
        match self {
            Emulator::Snp(e) => {
                let mut launch = e.options().launch.clone();
                if let Some(config) = config_bytes {
                    launch.host_data = Sha256::digest(config).into();
                }
                if let Some(m) = measurement {
                    launch.measurement = m.try_into().map_err(|_| {
                        anyhow::anyhow!("an SNP MEASUREMENT is 48 bytes, got {}", m.len())
                    })?;
                }
                launch.policy = LaunchParams::DEFAULT_POLICY
                    | if debug { POLICY_DEBUG } else { 0 }
                    | if migration_agent {
                        POLICY_MIGRATE_MA
                    } else {
                        0
                    };
                let product = e.options().product;
                let tcb = if up_to_date {
                    SnpTcb::up_to_date(product)
                } else {
                    old_snp_tcb(product)
                };
                let next = if tcb == e.options().reported_tcb {
                    e.with_launch(launch)?
                } else {
                    // The VCEK certifies the TCB: another TCB is another VCEK, under the same root.
                    e.under_same_root(EmulatedSnpOptions {
                        reported_tcb: tcb,
                        committed_tcb: None,
                        launch,
                        ..e.options().clone()
                    })?
                };
                **e = next;
            }
            Emulator::Tdx(t) => {
                if migration_agent {
                    bail!("--migration-agent is for SNP guests");
                }
                let mut launch = t.launch().clone();
                if let Some(config) = config_bytes {
                    launch.mr_config_id = Sha384::digest(config).into();
                }
                if let Some(m) = measurement {
                    launch.mr_td = m
                        .try_into()
                        .map_err(|_| anyhow::anyhow!("a TDX MRTD is 48 bytes, got {}", m.len()))?;
                }
                launch.debug = debug;
                t.set_launch(launch);
                let mut collateral = CollateralOptions::fresh(issued_at);
                collateral.tcb_status = if up_to_date {
                    EmulatedTcbStatus::UpToDate
                } else {
                    EmulatedTcbStatus::OutOfDate
                };
                t.set_collateral(collateral);
            }
        }
        Ok(())
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Emulator::Snp(e) => e.save(dir)?,
            Emulator::Tdx(t) => t.save_state(dir)?,
        }
        Ok(())
    }

    /// The evidence provider a runtime uses on this platform: configfs-tsm over a model of the
    /// kernel's report interface, as on a real machine.
    pub fn provider(self, interface: EmulatedInterface) -> Result<Box<dyn EvidenceProvider>> {
        match (self, interface) {
            (Emulator::Snp(e), EmulatedInterface::ConfigfsTsm) => {
                Ok(Box::new(ConfigFsTsm::emulated_snp(*e)?))
            }
            (Emulator::Snp(e), EmulatedInterface::SevGuest) => {
                Ok(Box::new(cordon_tee::SevGuest::emulated_snp(*e)))
            }
            (Emulator::Tdx(t), EmulatedInterface::ConfigfsTsm) => {
                Ok(Box::new(ConfigFsTsm::emulated_tdx(*t)?))
            }
            (Emulator::Tdx(_), EmulatedInterface::SevGuest) => {
                bail!(
                    "/dev/sev-guest is an SEV-SNP interface; an emulated TD has configfs-tsm only"
                )
            }
        }
    }

    /// The line every tool prints when it runs on an emulated platform.
    pub fn warning(&self) -> String {
        format!(
            "EMULATED {} platform: evidence signed by test root {}, NOT hardware-backed; for tests only",
            self.platform().to_string().to_uppercase(),
            hex::encode(self.root_fingerprint())
        )
    }
}

pub fn run(c: EmulatorCommand) -> Result<()> {
    match c {
        EmulatorCommand::Init(a) => {
            let product = match a.product {
                ProductArg::Milan => Product::Milan,
                ProductArg::Genoa => Product::Genoa,
                ProductArg::Turin => Product::Turin,
            };
            let emulator = Emulator::create_product(&a.dir, a.platform, product)?;
            eprintln!("WARNING: {}", emulator.warning());
            println!("emulated platform: {}", a.dir.display());
            println!(
                "root fingerprint:  {}",
                hex::encode(emulator.root_fingerprint())
            );
            Ok(())
        }
        EmulatorCommand::Launch(a) => {
            let mut emulator = Emulator::open(&a.dir)?;
            let config = a
                .config
                .as_ref()
                .map(|p| crate::cmd_runtime::load_config(p).map(|(bytes, _)| bytes))
                .transpose()?;
            let measurement = a
                .measurement
                .as_deref()
                .map(|m| {
                    hex::decode(m.trim()).with_context(|| format!("--measurement {m:?} is not hex"))
                })
                .transpose()?;
            emulator.launch_with(
                config.as_deref(),
                measurement.as_deref(),
                a.debug,
                a.migration_agent,
                matches!(a.tcb_status, TcbStatusArg::UpToDate),
                a.collateral_age_days,
            )?;
            emulator.save(&a.dir)?;
            eprintln!("WARNING: {}", emulator.warning());
            show(&emulator);
            Ok(())
        }
        EmulatorCommand::Show { dir } => {
            let emulator = Emulator::open(&dir)?;
            eprintln!("WARNING: {}", emulator.warning());
            show(&emulator);
            Ok(())
        }
    }
}

fn show(emulator: &Emulator) {
    println!("platform:           {} (EMULATED)", emulator.platform());
    println!(
        "root fingerprint:   {}",
        hex::encode(emulator.root_fingerprint())
    );
    println!(
        "launch measurement: {}",
        hex::encode(emulator.launch_measurement())
    );
    match emulator {
        Emulator::Snp(e) => {
            let o = e.options();
            println!(
                "workload data:      {} (HOST_DATA)",
                hex::encode(o.launch.host_data)
            );
            println!("guest policy:       {:#x}", o.launch.policy);
            println!("product:            {}", o.product.name());
            println!("chip id:            {}", hex::encode(o.chip_id));
            println!("reported tcb:       {:?}", o.reported_tcb);
        }
        Emulator::Tdx(t) => {
            let l = t.launch();
            println!(
                "workload data:      {} (MRCONFIGID)",
                hex::encode(l.mr_config_id)
            );
            println!("debug:              {}", l.debug);
            println!(
                "tcb status:         {:?}",
                t.collateral_options().tcb_status
            );
        }
    }
}
