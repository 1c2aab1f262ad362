//! `cordon kbs serve | identity | register | audit | keys | revoke | rotate-kek | measure`.

use crate::{output, util};
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Policy};
use cordon_client::ClientTls;
use cordon_kbs::{Kbs, KbsConfig, KekSpec, Keks, KeyStore, PgStore, Store};
use cordon_proto::checkpoint::{self, ConsistencyProof, SignedCheckpoint};
use cordon_proto::kbs::{
    policy_context, seal_dek_for_kbs, AuditEvent, DekPurpose, ErrorBody, KbsIdentity, KeyInfo,
    RegisterKey, RevokeRequest, RevokeResponse,
};
use cordon_seal::KeyFile;
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand)]
pub enum KbsCommand {
    /// Run the key broker.
    // Boxed: the serve arguments outweigh every other subcommand's.
    Serve(Box<ServeArgs>),
    /// Print a key broker's identity key as it answers it (to compare with what `kbs serve`
    /// printed; pin the printed value, never this answer alone), or, with --kbs-policy, verify
    /// the KBS's TEE evidence for it first.
    Identity {
        /// KBS base URL (http:// or https://).
        #[arg(long, value_parser = crate::util::base_url, env = "CORDON_KBS_URL", default_value = util::DEFAULT_KBS_URL)]
        kbs: String,
        #[command(flatten)]
        kbs_policy: KbsPolicyArg,
        #[command(flatten)]
        ca: util::CaCertArg,
        #[command(flatten)]
        json: util::JsonArg,
    },
    /// Register a sealed artifact's key with its release policy (admin).
    Register(RegisterArgs),
    /// Print the audit log: every registration, release and denial (admin). With --verify, check
    /// it against a checkpoint the KBS signed (and an earlier saved checkpoint, --since).
    Audit(AuditArgs),
    /// List the registered keys: kind, owner, policy, releases, revocation (admin). Never a DEK.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: its DEK is erased from the store and every later release is denied, audited
    /// (admin). Runtimes that received it before keep what they hold.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// The key id to revoke.
        key_id: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        json: util::JsonArg,
    },
    /// Re-wrap every secret in a stopped KBS's store under a new root KEK. Crash-safe: killed at
    /// any point, every key is readable under the old or the new KEK, and running it again
    /// finishes the job.
    RotateKek(RotateKekArgs),
    /// Give a stopped KBS a new identity key, vouched for with the admin token; the old key stays
    /// accepted (sealed keys and jobs, signed requests) for an overlap window. Restart the KBS
    /// (every replica) afterwards; clients re-pin the printed key within the window.
    RotateIdentity(RotateIdentityArgs),
    /// Print the simulated launch measurement of a KBS started with `--tee sim` and these sim
    /// trust anchors: the reference value a KBS policy (`--kbs-policy`) lists.
    Measure {
        /// The public key files given to `kbs serve --sim-trust-anchor` (any order).
        #[arg(long)]
        sim_trust_anchor: Vec<PathBuf>,
        /// KBS binary (default: this `cordon` binary).
        #[arg(long)]
        binary: Option<PathBuf>,
        #[command(flatten)]
        json: util::JsonArg,
    },
}

/// Where `kbs serve` gets evidence for its own identity key.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum KbsTee {
    /// No evidence: parties pin the identity key out of band, and a party given a KBS policy
    /// refuses this KBS.
    None,
    /// The simulated TEE (no hardware; evidence signed by --sim-hardware-key; NOT hardware-backed).
    Sim,
    /// Real hardware, detected as `runtime serve --platform hardware` does; never falls back to sim.
    #[value(alias = "auto")]
    Hardware,
}

/// A KBS policy: the TEE evidence the KBS serves for its identity key must pass it before
/// anything is sealed to that key.
#[derive(clap::Args)]
pub struct KbsPolicyArg {
    /// KBS policy (TOML, the format of a client policy: platforms, launch_measurements,
    /// allow_debug, [endorsements] sim_trust_anchors). The KBS's identity evidence is verified
    /// and appraised with it, and must bind the identity key, before any key is sealed to it; a
    /// KBS that serves no evidence is refused.
    #[arg(long, env = "CORDON_KBS_POLICY")]
    pub kbs_policy: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct RotateIdentityArgs {
    /// The KBS's data directory (the KBS must be stopped, and restarted afterwards).
    #[arg(
        long,
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL store instead (every replica restarted afterwards, to serve the new key);
    /// needs --kek.
    #[arg(long, env = "CORDON_KBS_DATABASE_URL", requires = "kek")]
    database_url: Option<String>,
    /// The KEK the store is wrapped under (default: the file beside the data directory).
    #[arg(long, env = "CORDON_KBS_KEK")]
    kek: Option<String>,
    /// The admin token file: the new key is vouched for with it, as the first one was.
    #[arg(long, env = "CORDON_ADMIN_TOKEN_FILE")]
    token_file: PathBuf,
    /// Hours the old identity key stays accepted.
    #[arg(long, default_value_t = 168)]
    overlap_hours: u64,
    /// Write the new identity key (hex) here (replaced, like `kbs serve --identity-file`, which
    /// rewrites it at every start).
    #[arg(long)]
    identity_file: Option<PathBuf>,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct RotateKekArgs {
    /// The KBS's data directory (the KBS must be stopped: it holds the old KEK only).
    #[arg(
        long,
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL store instead; needs --kek. Replicas may keep serving if each was restarted
    /// first with `--kek NEW --previous-kek OLD` (docs/deployment.md); else stop them.
    #[arg(long, env = "CORDON_KBS_DATABASE_URL", requires = "kek")]
    database_url: Option<String>,
    /// The KEK the store is wrapped under now (default: the file beside the data directory).
    #[arg(long)]
    kek: Option<String>,
    /// The KEK to wrap under from now on, e.g. `file:/etc/cordon/kbs-2.kek` (created if absent).
    #[arg(long)]
    new_kek: String,
    /// Rows re-wrapped per transaction.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory for the SQLite store (created if missing). Not with --database-url.
    #[arg(
        long,
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL store instead of SQLite (`postgres://user@host/db`, or
    /// `host=/run/postgresql dbname=cordon`), which several KBS replicas can share; needs --kek
    /// (every replica the same). No TLS: a Unix socket or loopback (docs/deployment.md).
    #[arg(long, env = "CORDON_KBS_DATABASE_URL")]
    database_url: Option<String>,
    /// Address to listen on (port 0 picks a free port; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
    /// Public key file (hex) of a simulated TEE whose evidence to accept; repeatable. Without it,
    /// sim evidence is refused. (A release policy must also name `sim`.)
    #[arg(long)]
    sim_trust_anchor: Vec<PathBuf>,
    /// AMD VCEK or VLEK certificate (DER or PEM) of a chip whose SEV-SNP reports to verify; repeatable.
    /// AMD's ASK/ASVK/ARK are built in. Given, it pins the chips: VCEKs a runtime ships are then
    /// ignored. Without it, the VCEK the runtime ships is used (checked up to AMD's roots), and
    /// release policies name machines with `allowed_chip_ids`.
    #[arg(long)]
    snp_cert: Vec<PathBuf>,
    /// AMD CRL (DER or PEM) to check SNP endorsement keys against; repeatable.
    #[arg(long)]
    snp_crl: Vec<PathBuf>,
    /// Intel DCAP collateral (dcap-qvl JSON bundle or a directory of PCS responses) for TDX/SGX quotes.
    /// Without it, the collateral a runtime ships is used: policies should then set
    /// `min_tcb_evaluation_data_number` against collateral from before a TCB recovery.
    #[arg(long)]
    dcap_collateral: Option<PathBuf>,
    /// Tests only: SHA-256 (hex) of an emulated platform's root (`cordon emulator show`) whose
    /// evidence to verify; repeatable. Its claims are NOT hardware-backed, and a release policy
    /// must also name the root (`emulated_roots`) to release anything to it.
    #[arg(long = "emulated-root")]
    emulated_roots: Vec<String>,
    /// On first start, create the admin token and write it here (mode 0600). The store keeps only its hash.
    #[arg(long)]
    init_admin_token_file: Option<PathBuf>,
    /// Seconds a challenge nonce stays valid.
    #[arg(long, default_value_t = 60)]
    nonce_ttl: u64,
    /// Write the bound address here once listening (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Write the KBS's identity key (hex) here at start: what owners, parties and runtime
    /// configurations pin (`--kbs-key`, `kbs_public_key`).
    #[arg(long)]
    identity_file: Option<PathBuf>,
    /// Where the root key-encryption key lives, which wraps every DEK and the identity at rest:
    /// `file:PATH` (created 0600 if absent; keep it off the data directory's disk and backups).
    /// Default: `file:DATA_DIR.kek`, beside the data directory; required with --database-url.
    #[arg(long, env = "CORDON_KBS_KEK")]
    kek: Option<String>,
    /// During a KEK rotation left unfinished: the old KEK, still read (never written).
    #[arg(long)]
    previous_kek: Option<String>,
    /// Wrap the plaintext secrets of a store from before key custody (once, on the machine that
    /// made it). Without it such a store is refused: it could have been planted.
    #[arg(long)]
    migrate_plaintext_store: bool,
    /// Evidence for the KBS's own identity key, made once at start and served with it, so that
    /// owners and parties can verify the KBS (`--kbs-policy`) instead of pinning its key: `none`,
    /// `sim` (NOT hardware-backed) or `hardware` (alias `auto`).
    #[arg(long, value_enum, default_value_t = KbsTee::None)]
    tee: KbsTee,
    /// The simulated hardware key (from `cordon sim keygen`) that signs the KBS's sim evidence.
    #[arg(long, required_if_eq("tee", "sim"))]
    sim_hardware_key: Option<PathBuf>,
    /// Simulate a debug TEE for the KBS; KBS policies without allow_debug refuse it.
    #[arg(long)]
    sim_debug: bool,
    #[command(flatten)]
    tls: util::ServerTlsArgs,
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// KBS base URL (http:// or https://). Not used by `kbs audit --verify --entries`.
    #[arg(long, value_parser = crate::util::base_url, env = "CORDON_KBS_URL", default_value = util::DEFAULT_KBS_URL)]
    kbs: String,
    /// The KBS's identity key, pinned: 64 hex digits, or a file holding them (what
    /// `cordon kbs serve` printed). Keys are sealed to it; requests are signed for it. Without it,
    /// the identity the KBS serves is used only if the admin token vouches for it (the KBS signed
    /// it with the token's key when the token was made), which the host cannot forge.
    #[arg(long, env = "CORDON_KBS_KEY")]
    kbs_key: Option<String>,
    #[command(flatten)]
    kbs_policy: KbsPolicyArg,
    /// File holding the admin token (the seed of the administrator's signing key; it never
    /// leaves this machine: requests are signed with it).
    #[arg(long, env = "CORDON_ADMIN_TOKEN_FILE")]
    token_file: PathBuf,
    #[command(flatten)]
    ca: util::CaCertArg,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Verify the log: fetch the KBS's signed checkpoint (size and RFC 9162 Merkle root of the
    /// log), check its signature and the administrator's vouch for the signing key, and recompute
    /// the root over the events. Fails (exit 1) on any mismatch.
    #[arg(long)]
    verify: bool,
    /// Save the verified checkpoint here (JSON), to pass as --since next time. An existing file
    /// is replaced only with --force, or when it is the --since file (rolled forward).
    #[arg(long, requires = "verify")]
    checkpoint_out: Option<PathBuf>,
    /// Replace an existing --checkpoint-out file.
    #[arg(long)]
    force: bool,
    /// An earlier saved checkpoint: verify that the log extends it (a consistency proof), so that
    /// a log rolled back (shorter) or rewritten since is detected.
    #[arg(long, requires = "verify")]
    since: Option<PathBuf>,
    /// Offline: the events (the JSON `cordon kbs audit` printed) to verify against --checkpoint,
    /// with no network. The admin token file is still needed: it holds the administrator's key,
    /// which vouches for the KBS's checkpoint signing key.
    #[arg(long, requires_all = ["verify", "checkpoint"])]
    entries: Option<PathBuf>,
    /// Offline: the saved checkpoint (--checkpoint-out) that --entries must match.
    #[arg(long, requires = "entries")]
    checkpoint: Option<PathBuf>,
    /// The events are printed as JSON with or without it (accepted as every command accepts it).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Key file from `cordon seal --key-out`.
    #[arg(long)]
    key: PathBuf,
    /// Release policy (TOML): platforms, launch measurements, debug, workload data.
    #[arg(long)]
    policy: PathBuf,
    #[command(flatten)]
    json: util::JsonArg,
}

pub fn run(c: KbsCommand) -> Result<()> {
    match c {
        KbsCommand::Serve(a) => serve(*a),
        KbsCommand::Identity {
            kbs,
            kbs_policy: KbsPolicyArg { kbs_policy: None },
            ca,
            json,
        } => identity(&kbs, &ca.tls()?.client(TIMEOUT)?, json.json),
        KbsCommand::Identity {
            kbs,
            kbs_policy: KbsPolicyArg {
                kbs_policy: Some(policy),
            },
            ca,
            json,
        } => {
            let tls = ca.tls()?;
            let key =
                util::tokio_runtime()?.block_on(attested_kbs_key(&kbs, &tls, &policy, None))?;
            if json.json {
                return util::print_json(&serde_json::json!({
                    "kbs": kbs,
                    "kbs_public_key": hex::encode(key),
                    "verified_with": util::path_json(&policy),
                }));
            }
            println!("{}", hex::encode(key));
            Ok(())
        }
        KbsCommand::Measure {
            sim_trust_anchor,
            binary,
            json,
        } => {
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()?,
            };
            let anchors = read_anchors(&sim_trust_anchor)?;
            let measurement = hex::encode(cordon_kbs::identity::sim_kbs_measurement(
                &binary, &anchors,
            )?);
            if json.json {
                return util::print_json(&serde_json::json!({
                    "launch_measurement": measurement,
                    "binary": util::path_json(&binary),
                }));
            }
            println!("{measurement}");
            Ok(())
        }
        KbsCommand::Register(a) => register(a),
        KbsCommand::Audit(a) => audit(a),
        KbsCommand::Keys { admin, json } => keys(admin, json),
        KbsCommand::Revoke {
            admin,
            key_id,
            reason,
            json,
        } => revoke(admin, key_id, reason, json.json),
        KbsCommand::RotateKek(a) => rotate_kek(a),
        KbsCommand::RotateIdentity(a) => rotate_identity(a),
    }
}

/// The KEK named by `spec`, or the default beside `data_dir`.
fn kek_spec(spec: Option<&str>, data_dir: &std::path::Path) -> Result<KekSpec> {
    Ok(match spec {
        Some(s) => KekSpec::parse(s)?,
        None => KekSpec::default_for(data_dir),
    })
}

/// The SQLite store's file in a data directory.
const SQLITE_STORE_FILE: &str = "kbs.sqlite3";

/// What a first start of `kbs serve` created, removed again if the start fails before the store
/// has an administrator who knows its token (see `serve`).
#[derive(Default)]
struct FreshStore {
    paths: Vec<PathBuf>,
    /// The data directory's lock, held while the KBS runs and released only after the removals.
    lock: Option<std::fs::File>,
}

/// `flock(LOCK_EX | LOCK_NB)` on `file`: whether the lock was taken (false: another process holds
/// it). Released when the file is closed, including when the process dies.
fn try_lock_exclusive(file: &std::fs::File) -> Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a file descriptor this function borrows open; no memory is touched.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return Ok(false);
    }
    Err(e).context("locking the data directory")
}

/// Creates the SQLite data directory (0700) unless it exists, locks it (exclusively, for as long
/// as the returned file is open), and, when it holds no store yet, checks what a new store needs
/// and notes in `fresh` what this start will create: the directory (if this call made it), the
/// database files, the default KEK file beside the directory. Nothing that existed before the
/// lock was taken is noted.
fn lock_new_or_existing_store(
    a: &ServeArgs,
    data_dir: &std::path::Path,
    fresh: &mut FreshStore,
) -> Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let created = match std::fs::DirBuilder::new().mode(0o700).create(data_dir) {
        Ok(()) => {
            std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
            fresh.paths.push(data_dir.to_path_buf());
            true
        }
        // Whatever is there (a directory, or a link to one) is not this start's to remove.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", data_dir.display())),
    };
    let lock = std::fs::File::open(data_dir)
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    if !try_lock_exclusive(&lock)? {
        bail!(
            "another `kbs serve` holds the store in {} (its data directory is locked)",
            data_dir.display()
        );
    }
    if data_dir.join(SQLITE_STORE_FILE).exists() {
        return Ok(lock);
    }
    if a.init_admin_token_file.is_none() {
        bail!(
            "{} holds no KBS store yet: a new store needs --init-admin-token-file FILE (its \
             admin token is written there)",
            data_dir.display()
        );
    }
    if let Some(token) = a.init_admin_token_file.as_ref().filter(|t| t.exists()) {
        bail!(
            "--init-admin-token-file {} exists, and a new store makes a new admin token: name a \
             file that does not exist yet (an existing one may be another store's token)",
            token.display()
        );
    }
    if !created {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            fresh
                .paths
                .push(data_dir.join(format!("{SQLITE_STORE_FILE}{suffix}")));
        }
    }
    // Only the default KEK belongs to this directory alone; a KEK named with --kek may be shared.
    if a.kek.is_none() {
        if let KekSpec::File(kek) = KekSpec::default_for(data_dir) {
            if std::fs::symlink_metadata(&kek).is_err() {
                fresh.paths.push(kek);
            }
        }
    }
    Ok(lock)
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        for p in &self.paths {
            // A link is removed as a link, never followed.
            let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
            let _ = if is_dir {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

fn open_keks(
    kek: Option<&str>,
    previous: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Keks> {
    let current = kek_spec(kek, data_dir)?;
    let mut keks = Keks::new(current.open().context("opening the KEK")?);
    if let Some(p) = previous {
        keks.previous = Some(
            KekSpec::parse(p)?
                .open()
                .context("opening the previous KEK")?,
        );
    }
    Ok(keks)
}

/// Where an offline command finds the store: a SQLite data directory, or a PostgreSQL database.
enum StoreAt<'a> {
    Sqlite(&'a std::path::Path),
    Postgres(&'a str),
}

impl<'a> StoreAt<'a> {
    fn from_args(data_dir: Option<&'a PathBuf>, database_url: Option<&'a str>) -> Result<Self> {
        match (data_dir, database_url) {
            (_, Some(url)) => Ok(StoreAt::Postgres(url)),
            (Some(dir), None) => {
                if !dir.join(SQLITE_STORE_FILE).exists() {
                    bail!("{} holds no KBS store (no kbs.sqlite3)", dir.display());
                }
                Ok(StoreAt::Sqlite(dir))
            }
            (None, None) => bail!("--data-dir or --database-url is required"),
        }
    }

    /// The KEK named, or (SQLite only) the default file beside the data directory.
    fn kek_spec(&self, spec: Option<&str>) -> Result<KekSpec> {
        match (spec, self) {
            (Some(s), _) => Ok(KekSpec::parse(s)?),
            (None, StoreAt::Sqlite(dir)) => Ok(KekSpec::default_for(dir)),
            (None, StoreAt::Postgres(_)) => bail!("a PostgreSQL store needs its KEK named (--kek)"),
        }
    }

    fn open(&self, keks: Keks) -> Result<Box<dyn KeyStore>> {
        Ok(match self {
            StoreAt::Sqlite(dir) => Box::new(Store::open(dir, keks)?),
            StoreAt::Postgres(url) => Box::new(PgStore::connect(url, keks)?),
        })
    }
}

fn rotate_kek(a: RotateKekArgs) -> Result<()> {
    let at = StoreAt::from_args(a.data_dir.as_ref(), a.database_url.as_deref())?;
    // The current KEK first, and only if it exists: a mistyped path makes no key.
    let old = at
        .kek_spec(a.kek.as_deref())?
        .open_existing()
        .context("opening the current KEK")?;
    let new = KekSpec::parse(&a.new_kek)?;
    let keks = Keks {
        current: new.open().context("opening the new KEK")?,
        previous: Some(old),
    };
    if keks.previous.as_ref().map(|p| p.id()) == Some(keks.current.id()) {
        bail!("the new KEK is the current one ({})", keks.current.id());
    }
    let (from, to) = (
        keks.previous
            .as_ref()
            .map(|p| p.id().to_string())
            .unwrap_or_default(),
        keks.current.id().to_string(),
    );
    let started = std::time::Instant::now();
    let mut store = at.open(keks)?;
    let done = store.rewrap_all(a.batch, &mut |n| {
        if n % 10_000 < a.batch as u64 {
            eprintln!("  {n} secrets re-wrapped");
        }
    })?;
    let left: u64 = store
        .kek_usage()?
        .iter()
        .filter(|(id, _)| id.as_deref() != Some(to.as_str()))
        .map(|(_, n)| n)
        .sum();
    if left != 0 {
        bail!(
            "{left} secrets are still not under the new KEK (rewritten meanwhile: is a KBS \
             still running with the old KEK as its current one?); run rotate-kek again"
        );
    }
    if a.json.json {
        util::print_json(&serde_json::json!({
            "rewrapped": done,
            "from_kek": from,
            "to_kek": to,
            "seconds": started.elapsed().as_secs_f64(),
        }))?;
    } else {
        println!(
            "re-wrapped {done} secrets from {from} to {to} in {:.1} s; start the KBS with --kek {}",
            started.elapsed().as_secs_f64(),
            a.new_kek
        );
    }
    eprintln!(
        "the old KEK unwraps nothing in this store any more, but it still opens backups made \
         before the rotation: destroy it once those backups have expired"
    );
    Ok(())
}

fn rotate_identity(a: RotateIdentityArgs) -> Result<()> {
    use rand::RngCore;
    let at = StoreAt::from_args(a.data_dir.as_ref(), a.database_url.as_deref())?;
    let keks = Keks::new(
        at.kek_spec(a.kek.as_deref())?
            .open_existing()
            .context("opening the KEK")?,
    );
    let mut store = at.open(keks)?;
    let admin = cordon_proto::auth::admin_key(&util::read_secret(&a.token_file, "admin token")?)?;
    if store.admin_public_key()? != Some(admin.verifying_key().to_bytes()) {
        bail!(
            "{} is not this KBS's admin token: only its administrator rotates its identity",
            a.token_file.display()
        );
    }
    let old = store
        .identity_seed()?
        .map(|s| cordon_proto::ServiceKeyPair::derive(0, &s).public_key())
        .context("this store has no identity yet: start the KBS once first")?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(seed.as_mut());
    let new = cordon_proto::ServiceKeyPair::derive(0, &seed).public_key();
    let vouch = cordon_proto::auth::vouch_identity(&admin, &new);
    // The audit checkpoints' signing key derives from the identity seed: it changes too, and is
    // vouched for by the same token.
    let audit_vouch = checkpoint::vouch_audit_key(
        &admin,
        &new,
        &checkpoint::AuditSigningKey::derive(&seed).public_key(),
    );
    let now = cordon_proto::auth::unix(SystemTime::now());
    let until = now.saturating_add(a.overlap_hours.saturating_mul(3600));
    store.rotate_identity(&seed, &vouch, &audit_vouch, now, until)?;
    let new_hex = hex::encode(new);
    if let Some(f) = &a.identity_file {
        util::write_atomic(f, format!("{new_hex}\n").as_bytes())?;
    }
    if a.json.json {
        util::print_json(&serde_json::json!({
            "kbs_public_key": new_hex,
            "previous_kbs_public_key": hex::encode(old),
            "previous_accepted_until": until,
            "previous_accepted_until_rfc3339": cordon_proto::rfc3339(until),
        }))?;
    } else {
        println!("{new_hex}");
    }
    eprintln!(
        "KBS identity rotated: new key {new_hex} (pin it: --kbs-key, kbs_public_key); the old key \
         {} stays accepted until {} ({} h). Restart the KBS, every replica, to serve it.",
        hex::encode(old),
        cordon_proto::rfc3339(until),
        a.overlap_hours
    );
    Ok(())
}

fn keys(a: AdminArgs, json: bool) -> Result<()> {
    let keys =
        util::tokio_runtime()?.block_on(async { Admin::from_args(&a).await?.keys().await })?;
    if json {
        let shown: Vec<ShownKey> = keys
            .iter()
            .map(|info| ShownKey {
                info,
                created_at_rfc3339: cordon_proto::rfc3339(info.created_at),
                updated_at_rfc3339: cordon_proto::rfc3339(info.updated_at),
                revoked_at_rfc3339: info.revoked_at.map(cordon_proto::rfc3339),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<10} {:>8}  {:<20}  {:<28} {:<18} policy",
        "KEY", "KIND", "RELEASES", "CREATED", "STATE", "OWNER"
    );
    for k in &keys {
        let state = match k.revoked_at {
            Some(t) => format!("revoked {}", cordon_proto::rfc3339(t)),
            None => "active".to_string(),
        };
        let owner = k
            .owner
            .as_deref()
            .map(|o| format!("{}…", o.chars().take(16).collect::<String>()))
            .unwrap_or_else(|| "-".into());
        let policy = Policy::from_toml(&k.policy)
            .map(|p| {
                format!(
                    "platforms={:?} measurements={} debug={}",
                    p.platforms
                        .iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>(),
                    p.launch_measurements.len(),
                    p.allow_debug
                )
            })
            .unwrap_or_else(|e| format!("(invalid: {e})"));
        // The answer crossed the network: nothing in it reaches the terminal as a control or
        // formatting character.
        println!(
            "{:<32} {:<10} {:>8}  {:<20}  {:<28} {:<18} {}",
            printable(&k.key_id),
            printable(&k.kind),
            k.releases,
            cordon_proto::rfc3339(k.created_at),
            state,
            printable(&owner),
            printable(&policy)
        );
    }
    eprintln!("{} keys", keys.len());
    Ok(())
}

/// A key as `kbs keys --json` prints it: the KBS's fields (times in Unix seconds), then the same
/// times in RFC 3339.
#[derive(serde::Serialize)]
struct ShownKey<'a> {
    #[serde(flatten)]
    info: &'a KeyInfo,
    created_at_rfc3339: String,
    updated_at_rfc3339: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoked_at_rfc3339: Option<String>,
}

/// `text` with control and bidirectional-formatting characters escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let unsafe_char = c.is_control()
                || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if unsafe_char {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn revoke(a: AdminArgs, key_id: String, reason: String, json: bool) -> Result<()> {
    let (r, size) = util::tokio_runtime()?
        .block_on(async { Admin::from_args(&a).await?.revoke(&key_id, &reason).await })?;
    if json {
        return util::print_json(&serde_json::json!({
            "key_id": r.key_id,
            "revoked_at": r.revoked_at,
            "revoked_at_rfc3339": cordon_proto::rfc3339(r.revoked_at),
            "audit_seq": r.audit_seq,
            "checkpoint_size": size,
        }));
    }
    println!(
        "revoked key {} at {} (audit event {}, proven in the KBS's signed audit log of {size} \
         events): every later release is denied",
        r.key_id,
        cordon_proto::rfc3339(r.revoked_at),
        r.audit_seq
    );
    Ok(())
}

/// How long one request to the KBS may take, all of it: a KBS (or a network) that stalls fails
/// the command instead of hanging it.
const TIMEOUT: Duration = Duration::from_secs(30);

async fn fetch_identity(kbs: &str, http: &reqwest::Client) -> Result<KbsIdentity> {
    let resp = http
        .get(format!("{}/kbs/v1/identity", kbs.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("connecting to KBS {kbs}"))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    Ok(resp.json().await?)
}

fn identity(kbs: &str, http: &reqwest::Client, json: bool) -> Result<()> {
    let id = util::tokio_runtime()?.block_on(fetch_identity(kbs, http))?;
    if json {
        util::print_json(&serde_json::json!({
            "kbs": kbs,
            "kbs_public_key": hex::encode(id.hpke_public_key),
            "evidence_platform": id.evidence.as_ref().map(|e| e.platform.to_string()),
            "verified": false,
        }))?;
    } else {
        println!("{}", hex::encode(id.hpke_public_key));
    }
    if let Some(ev) = &id.evidence {
        eprintln!(
            "the KBS serves {} evidence for this key{}; NOT verified: give --kbs-policy FILE to \
             verify it",
            ev.platform,
            if ev.platform.is_hardware_backed() {
                ""
            } else {
                " (SIMULATED, NOT hardware-backed)"
            }
        );
    }
    eprintln!(
        "this is what the network answered: compare it with what `cordon kbs serve` printed on \
         the KBS's own machine before you pin it (a party that seals a key to a key the host \
         chose gives the host that key); the administrator's commands check it with the token"
    );
    Ok(())
}

/// Reads the public key files of `--sim-trust-anchor`.
fn read_anchors(paths: &[PathBuf]) -> Result<Vec<[u8; 32]>> {
    paths
        .iter()
        .map(|p| util::read_sim_trust_anchor(p))
        .collect()
}

/// The KBS's own TEE for `--tee`, or `None`.
fn identity_tee(a: &ServeArgs, anchors: &[[u8; 32]]) -> Result<Option<Arc<dyn EvidenceProvider>>> {
    if a.sim_debug && a.tee != KbsTee::Sim {
        bail!("--sim-debug is for --tee sim only");
    }
    match a.tee {
        KbsTee::None => Ok(None),
        KbsTee::Sim => {
            let Some(path) = &a.sim_hardware_key else {
                bail!("--sim-hardware-key is required with --tee sim")
            };
            let key = SimHardwareKey::from_file_contents(&util::read_key_file(
                path,
                "sim hardware key",
                cordon_tee::SIM_HARDWARE_KEY_FORMAT,
            )?)?;
            let measurement =
                cordon_kbs::identity::sim_kbs_measurement(&std::env::current_exe()?, anchors)?;
            let warning = format!(
                "SIMULATED TEE: the KBS's identity evidence is signed by a local key and is NOT \
                 hardware-backed{}; launch measurement {} (`cordon kbs measure` computes it)",
                if a.sim_debug { " (debug mode)" } else { "" },
                hex::encode(measurement)
            );
            eprintln!("WARNING: {warning}");
            tracing::warn!("{warning}");
            Ok(Some(Arc::new(SimTee::new(
                key,
                measurement,
                [0; 32],
                a.sim_debug,
            ))))
        }
        KbsTee::Hardware => {
            let provider = cordon_tee::detect(Path::new("/"))?;
            eprintln!("KBS TEE platform detected: {}", provider.platform());
            Ok(Some(Arc::from(provider)))
        }
    }
}

/// Fetches the identity of the KBS at `url`, verifies its evidence with the KBS policy at
/// `policy` (and, when given, that it binds the `pinned` key), says on stderr what was verified,
/// and returns the attested identity key. Nothing is sealed to a KBS this refuses.
pub async fn attested_kbs_key(
    url: &str,
    tls: &ClientTls,
    policy: &Path,
    pinned: Option<&[u8; 32]>,
) -> Result<[u8; 32]> {
    let doc = util::load_policy_doc(policy, "KBS policy")?;
    let verified =
        cordon_client::kbs::fetch_verified_kbs(url, tls, &doc, pinned, SystemTime::now())
            .await
            .with_context(|| {
                format!(
                    "KBS {url} refused by the KBS policy {}; nothing was sealed to it",
                    policy.display()
                )
            })?;
    let c = &verified.claims;
    eprintln!(
        "KBS identity {} verified with {}: platform {}{}, launch measurement {}, debug {}",
        hex::encode(verified.hpke_public_key),
        policy.display(),
        c.platform,
        util::provenance(c),
        hex::encode(&c.launch_measurement),
        c.debug
    );
    Ok(verified.hpke_public_key)
}

fn serve(a: ServeArgs) -> Result<()> {
    // The port first: a KBS that cannot listen leaves no store (and no key file) behind.
    let listener =
        std::net::TcpListener::bind(a.listen).with_context(|| format!("binding {}", a.listen))?;
    listener.set_nonblocking(true)?;
    let anchors = read_anchors(&a.sim_trust_anchor)?;
    let mut endorsements = Endorsements {
        sim_trust_anchors: anchors.clone(),
        ..Default::default()
    };
    for p in &a.snp_cert {
        endorsements
            .snp_certs
            .push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    for p in &a.snp_crl {
        endorsements
            .snp_crls
            .push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    if let Some(path) = &a.dcap_collateral {
        endorsements.dcap_collateral = Some(util::load_collateral(path)?);
    }
    for root in &a.emulated_roots {
        let fingerprint: [u8; 32] = hex::decode(root.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| {
                format!("--emulated-root {root:?} is not a SHA-256 fingerprint (64 hex digits)")
            })?;
        eprintln!(
            "WARNING: evidence of the EMULATED platform with root {root} is verified: it is NOT \
             hardware-backed; for tests only"
        );
        endorsements.emulated_roots.push(fingerprint);
    }
    // A certificate or key that is missing or does not match stops the start, before the store.
    let tls = a.tls.load()?;
    let data_dir = match (&a.data_dir, &a.database_url) {
        (Some(d), None) => d.clone(),
        (None, Some(_)) if a.kek.is_none() => bail!(
            "--database-url needs --kek: replicas share one database and so one KEK, and there \
             is no data directory to keep a default KEK beside"
        ),
        (None, Some(_)) => PathBuf::new(),
        _ => bail!("give either --data-dir (SQLite) or --database-url (PostgreSQL)"),
    };
    // A first start that fails before it serves leaves nothing behind: no store without an
    // administrator, which a later start could not be given one for, and no KEK for it. The data
    // directory is locked for as long as this KBS runs, so that a second `kbs serve` on it stops
    // here, and what a failed start removes is only what it created itself, under that lock.
    let mut fresh = FreshStore::default();
    if a.database_url.is_none() {
        fresh.lock = Some(lock_new_or_existing_store(&a, &data_dir, &mut fresh)?);
    }
    let mut config = KbsConfig::new(data_dir.clone(), endorsements);
    config.database_url = a.database_url.clone();
    config.nonce_ttl = Duration::from_secs(a.nonce_ttl);
    let keks = open_keks(a.kek.as_deref(), a.previous_kek.as_deref(), &data_dir)?;
    eprintln!("root KEK: {}", keks.describe());
    config.keks = Some(keks);
    config.migrate_plaintext_store = a.migrate_plaintext_store;
    config.identity_tee = identity_tee(&a, &anchors)?;
    let kbs = Kbs::open(config)?;
    // A store from before signed admin requests holds only the token's hash: the token file it
    // was created with upgrades it.
    if let Some(path) = a.init_admin_token_file.as_ref().filter(|p| p.exists()) {
        let token = util::read_secret(path, "admin token")?;
        if kbs.adopt_admin_token(&token)? {
            eprintln!(
                "admin token {} adopted: admin requests are now signed with it",
                path.display()
            );
        }
        // A store whose administrator predates audit checkpoints: the token vouches for the
        // checkpoint signing key now. A token that is not this store's changes nothing, and
        // checkpoints stay unverifiable until the right one is given: a warning, not a refusal
        // to start, since the KBS serves its keys either way.
        match kbs.vouch_audit_key(&token) {
            Ok(true) => eprintln!(
                "admin token {} vouched for the audit checkpoint signing key",
                path.display()
            ),
            Ok(false) => {}
            Err(e) => eprintln!(
                "WARNING: audit checkpoints cannot be verified until the KBS is started with this \
                 store's admin token: {e}"
            ),
        }
    }
    let token_file_existed = a.init_admin_token_file.as_ref().is_some_and(|p| p.exists());
    match (&a.init_admin_token_file, kbs.init_admin_token()?) {
        (Some(path), None) if !token_file_existed => eprintln!(
            "WARNING: this store already has an administrator: no token was written to {} (the \
             token made when the store was created stays the only one)",
            path.display()
        ),
        (Some(path), Some(token)) => {
            // Never over an existing file (it may be another store's token).
            util::write_secret(path, token.as_bytes(), false)?;
            if !fresh.paths.is_empty() {
                // The token of a store that a failed start removes would open nothing.
                fresh.paths.push(path.clone());
            }
            eprintln!(
                "admin token created and written to {} (the store keeps only its hash)",
                path.display()
            );
        }
        (None, Some(_)) => {
            bail!("the store has no admin token yet; start once with --init-admin-token-file FILE")
        }
        (_, None) => {}
    }
    if !anchors.is_empty() {
        eprintln!("WARNING: accepting evidence from the SIMULATED TEE (not hardware-backed) signed by {} key(s)", anchors.len());
    }
    let identity = hex::encode(kbs.identity_public_key());
    eprintln!("KBS identity key (pin it: --kbs-key, kbs_public_key): {identity}");
    match kbs.identity_evidence() {
        Some(ev) if !ev.platform.is_hardware_backed() => eprintln!(
            "KBS identity evidence: {} -- SIMULATED, NOT hardware-backed (verify with --kbs-policy)",
            ev.platform
        ),
        Some(ev) => eprintln!(
            "KBS identity evidence: {} (made at start; verify with --kbs-policy)",
            ev.platform
        ),
        None => eprintln!("KBS identity evidence: none (--tee none): parties must pin the key"),
    }
    if let Some(f) = &a.identity_file {
        util::write_atomic(f, format!("{identity}\n").as_bytes())?;
    }
    let rt = util::tokio_runtime()?;
    // From here the store is this KBS's: its admin token has been handed out.
    fresh.paths.clear();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        a.tls.announce("key broker");
        let store = match &a.database_url {
            Some(_) => "postgresql".to_string(),
            None => data_dir.display().to_string(),
        };
        tracing::info!(%addr, tls = tls.is_some(), %store, "key broker listening");
        if let Some(f) = &a.addr_file {
            util::write_atomic(f, addr.to_string().as_bytes())?;
        }
        kbs.serve_with_tls(listener, tls, shutdown_signal()).await?;
        Ok(())
    })
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// An administrator's connection: the KBS, its pinned identity key, the admin signing key.
pub struct Admin {
    pub url: String,
    pub kbs_key: [u8; 32],
    key: ed25519_dalek::SigningKey,
    /// Verifies an `https://` KBS's certificate; every request within [`TIMEOUT`].
    http: reqwest::Client,
}

impl Admin {
    /// `token` is the admin token's text (the seed of the administrator's key); an `https://`
    /// KBS's certificate is verified with `tls`.
    pub fn new(url: &str, kbs_key: [u8; 32], token: &str, tls: &ClientTls) -> Result<Admin> {
        Ok(Admin {
            url: url.trim_end_matches('/').to_string(),
            kbs_key,
            key: cordon_proto::auth::admin_key(token)?,
            http: tls.client(TIMEOUT)?,
        })
    }

    async fn from_args(a: &AdminArgs) -> Result<Admin> {
        let url = &a.kbs;
        let token = util::read_secret(&a.token_file, "admin token")?;
        let tls = a.ca.tls()?;
        // With a KBS policy, the key the KBS's evidence binds is the one used (and must be the
        // pinned one, when a pin is given too); the token's vouching is then not needed.
        if let Some(policy) = &a.kbs_policy.kbs_policy {
            let pinned = a.kbs_key.as_deref().map(util::parse_kbs_key).transpose()?;
            let key = attested_kbs_key(url, &tls, policy, pinned.as_ref()).await?;
            return Admin::new(url, key, &token, &tls);
        }
        match &a.kbs_key {
            Some(k) => Admin::new(url, util::parse_kbs_key(k)?, &token, &tls),
            None => Admin::vouched(url, &token, &tls).await,
        }
    }

    /// The KBS's identity as it serves it, accepted only with the administrator's signature over
    /// it (made by the KBS with the token's key when the token was created): the host, which
    /// carries the answer, cannot vouch for a key of its own. An `https://` KBS's certificate is
    /// verified with `tls`.
    pub async fn vouched(url: &str, token: &str, tls: &ClientTls) -> Result<Admin> {
        let key = cordon_proto::auth::admin_key(token)?;
        let http = tls.client(TIMEOUT)?;
        let id = fetch_identity(url, &http).await?;
        let Some(sig) = &id.admin_signature else {
            bail!(
                "KBS {url} serves no administrator's signature over its identity key: pin the key \
                 `cordon kbs serve` printed with --kbs-key"
            );
        };
        cordon_proto::auth::check_identity(
            &key.verifying_key().to_bytes(),
            &id.hpke_public_key,
            sig,
        )
        .with_context(|| {
            format!(
                "the identity key KBS {url} serves ({}) is not the one this admin token vouches \
                 for: someone on the path answered, or this is another KBS; nothing was sent",
                hex::encode(id.hpke_public_key)
            )
        })?;
        Ok(Admin {
            url: url.trim_end_matches('/').to_string(),
            kbs_key: id.hpke_public_key,
            key,
            http,
        })
    }

    /// One admin request, signed for the pinned KBS with a fresh nonce.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in cordon_proto::auth::sign_request(
            &self.key,
            method.as_str(),
            path,
            &body,
            &self.kbs_key,
            SystemTime::now(),
        ) {
            req = req.header(name, value);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("connecting to KBS {}", self.url))?;
        if !resp.status().is_success() {
            return Err(error_of(resp).await);
        }
        Ok(resp)
    }

    /// Registers `key` under `policy`: the DEK sealed to the pinned KBS, bound to this key id,
    /// the administrator and this exact policy text.
    pub async fn register_key(&self, key: &KeyFile, policy_toml: &str) -> Result<()> {
        util::warn(&Policy::from_toml(policy_toml).context("release policy")?);
        let sealed_dek = seal_dek_for_kbs(
            &self.kbs_key,
            DekPurpose::AdminKey,
            &key.key_id,
            &self.key.verifying_key().to_bytes(),
            &policy_context(policy_toml),
            key.dek.as_bytes(),
        )?;
        let body = serde_json::to_vec(&RegisterKey {
            sealed_dek,
            policy: policy_toml.to_string(),
        })?;
        self.send(
            reqwest::Method::PUT,
            &format!("/kbs/v1/admin/keys/{}", key.key_id),
            body,
        )
        .await?;
        Ok(())
    }

    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        Ok(self
            .send(reqwest::Method::GET, "/kbs/v1/admin/keys", vec![])
            .await?
            .json()
            .await?)
    }

    /// Revokes `key_id`, then checks that the KBS's signed audit log holds the revocation: the
    /// answer itself is not signed, and a host on the path could drop the request and answer
    /// "revoked". Returns the answer and the size of the checkpoint that proves it.
    pub async fn revoke(&self, key_id: &str, reason: &str) -> Result<(RevokeResponse, u64)> {
        let body = serde_json::to_vec(&RevokeRequest {
            reason: reason.to_string(),
        })?;
        let answer: RevokeResponse = self
            .send(
                reqwest::Method::POST,
                &format!("/kbs/v1/admin/keys/{key_id}/revoke"),
                body,
            )
            .await?
            .json()
            .await?;
        let index = u64::try_from(answer.audit_seq.saturating_sub(1))
            .context("the KBS answered an audit sequence number below 1")?;
        let proof: checkpoint::InclusionProof = self
            .send(
                reqwest::Method::GET,
                &format!("/kbs/v1/admin/audit/inclusion/{index}"),
                vec![],
            )
            .await?
            .json()
            .await?;
        let admin = self.key.verifying_key().to_bytes();
        let cp = checkpoint::verify_checkpoint(&proof.checkpoint, &admin, &self.kbs_key)
            .context("the audit checkpoint proving the revocation does not verify")?;
        proof
            .verify()
            .context("the revocation's inclusion proof does not verify")?;
        if proof.event.kind != "key_revoked" || proof.event.key_id.as_deref() != Some(key_id) {
            bail!(
                "the KBS answered that {key_id} was revoked, but its signed audit log holds no \
                 such revocation at event {}: the answer was forged on the way, or the request \
                 never reached the KBS; the key may still be released",
                answer.audit_seq
            );
        }
        Ok((answer, cp.size))
    }

    pub async fn audit(&self) -> Result<Vec<AuditEvent>> {
        Ok(self
            .send(reqwest::Method::GET, "/kbs/v1/admin/audit", vec![])
            .await?
            .json()
            .await?)
    }

    /// The audit log's checkpoint, signed by the KBS now (not yet verified).
    pub async fn audit_checkpoint(&self) -> Result<SignedCheckpoint> {
        Ok(self
            .send(
                reqwest::Method::GET,
                "/kbs/v1/admin/audit/checkpoint",
                vec![],
            )
            .await?
            .json()
            .await?)
    }

    /// The consistency proof from the log's first `old_size` events to the log now (not yet
    /// verified).
    pub async fn audit_consistency(&self, old_size: u64) -> Result<ConsistencyProof> {
        Ok(self
            .send(
                reqwest::Method::GET,
                &format!("/kbs/v1/admin/audit/consistency/{old_size}"),
                vec![],
            )
            .await?
            .json()
            .await?)
    }
}

async fn error_of(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    match resp.json::<ErrorBody>().await {
        Ok(b) => anyhow::anyhow!("KBS answered {status}: {} ({})", b.error, b.code),
        Err(_) => anyhow::anyhow!("KBS answered {status}"),
    }
}

fn register(a: RegisterArgs) -> Result<()> {
    let key = KeyFile::from_file_contents(&util::read_key_file(
        &a.key,
        "key file of a sealed artifact",
        "cordon-dek/1",
    )?)?;
    let policy = util::read_to_string(&a.policy, "release policy")?;
    util::tokio_runtime()?.block_on(async {
        Admin::from_args(&a.admin)
            .await?
            .register_key(&key, &policy)
            .await
    })?;
    if a.json.json {
        return util::print_json(&serde_json::json!({
            "registered": key.key_id,
            "kbs": a.admin.kbs,
            "release_policy": util::path_json(&a.policy),
        }));
    }
    println!(
        "registered key {} with release policy {}",
        key.key_id,
        a.policy.display()
    );
    Ok(())
}

fn audit(a: AuditArgs) -> Result<()> {
    if a.verify {
        return audit_verify(a);
    }
    let events = util::tokio_runtime()?
        .block_on(async { Admin::from_args(&a.admin).await?.audit().await })?;
    let chain = match cordon_kbs::verify_audit_chain(&events) {
        Ok(()) => "hash chain intact".to_string(),
        Err(seq) => format!("HASH CHAIN BROKEN at event {seq}"),
    };
    println!("{}", events_json(&events)?);
    eprintln!("{} events{}, {chain}", events.len(), time_span(&events));
    Ok(())
}

/// An audit event as `kbs audit` prints it: the KBS's fields (`time` in Unix seconds, as the log
/// and its hashes hold it), then `time_rfc3339`, the same time for people. `--entries` reads it
/// back (the added field is ignored).
#[derive(serde::Serialize)]
struct ShownEvent<'a> {
    #[serde(flatten)]
    event: &'a AuditEvent,
    time_rfc3339: String,
}

fn events_json(events: &[AuditEvent]) -> Result<String> {
    let shown: Vec<ShownEvent> = events
        .iter()
        .map(|event| ShownEvent {
            event,
            time_rfc3339: cordon_proto::rfc3339(event.time),
        })
        .collect();
    Ok(serde_json::to_string_pretty(&shown)?)
}

/// ` from T1 to T2` (RFC 3339) for a summary line; nothing for an empty log.
fn time_span(events: &[AuditEvent]) -> String {
    match (events.first(), events.last()) {
        (Some(a), Some(b)) => format!(
            " from {} to {}",
            cordon_proto::rfc3339(a.time),
            cordon_proto::rfc3339(b.time)
        ),
        _ => String::new(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> Result<T> {
    serde_json::from_str(&util::read_to_string(path, what)?)
        .with_context(|| format!("{} is not a {what}", path.display()))
}

/// `kbs audit --verify`: the log against a checkpoint the KBS signed, the signing key against the
/// administrator's vouch, and, with --since, the new checkpoint against an earlier one.
fn audit_verify(a: AuditArgs) -> Result<()> {
    if let Some(out) = &a.checkpoint_out {
        let rolled = a.since.as_ref().is_some_and(|s| output::same_file(s, out));
        // Every file this command reads is an input, never overwritten (even with --force);
        // --since is the one meant to be rolled forward in place.
        let kbs_key = a.admin.kbs_key.as_deref().map(std::path::Path::new);
        let inputs: Vec<&std::path::Path> = [
            Some(a.admin.token_file.as_path()),
            a.entries.as_deref(),
            a.checkpoint.as_deref(),
            kbs_key.filter(|k| k.exists()),
            a.since.as_deref().filter(|_| !rolled),
        ]
        .into_iter()
        .flatten()
        .collect();
        output::check_dest(out, "--checkpoint-out", a.force || rolled, &inputs)?;
    }
    let token = util::read_secret(&a.admin.token_file, "admin token")?;
    let admin = cordon_proto::auth::admin_key(&token)?
        .verifying_key()
        .to_bytes();
    let since: Option<SignedCheckpoint> = match &a.since {
        Some(p) => Some(read_json(p, "saved audit checkpoint")?),
        None => None,
    };
    // The events, the KBS's checkpoint, the consistency proof from --since when the KBS gave one,
    // and the KBS key the checkpoint must name.
    let (events, current, proof, pinned) = match (&a.entries, &a.checkpoint) {
        (Some(entries), Some(cp)) => {
            let events: Vec<AuditEvent> = read_json(entries, "list of audit events")?;
            let current: SignedCheckpoint = read_json(cp, "saved audit checkpoint")?;
            // Offline, the KBS key is the one pinned, or else the one the checkpoint names: the
            // administrator's vouch covers the KBS key and the signing key together, so a
            // checkpoint of another KBS fails that check.
            let pinned = match &a.admin.kbs_key {
                Some(k) => util::parse_kbs_key(k)?,
                None => current.checkpoint.kbs_public_key,
            };
            (events, current, None, pinned)
        }
        _ => util::tokio_runtime()?.block_on(async {
            let kbs = Admin::from_args(&a.admin).await?;
            let mut current = kbs.audit_checkpoint().await?;
            let mut proof = None;
            // A log shorter than the saved checkpoint is answered by the signed checkpoint alone.
            if let Some(old) = since
                .as_ref()
                .filter(|old| old.checkpoint.size <= current.checkpoint.size)
            {
                let p = kbs.audit_consistency(old.checkpoint.size).await?;
                current = p.checkpoint;
                proof = Some(p.path);
            }
            // Fetched last: the log may have grown since the checkpoint, never shrunk.
            let events = kbs.audit().await?;
            anyhow::Ok((events, current, proof, kbs.kbs_key))
        })?,
    };
    let failed = "AUDIT LOG VERIFICATION FAILED";
    let cp = checkpoint::verify_checkpoint(&current, &admin, &pinned)
        .with_context(|| format!("{failed}: the checkpoint"))?;
    checkpoint::verify_entries(cp, &events)
        .with_context(|| format!("{failed}: the events against the signed checkpoint"))?;
    if let Err(seq) = cordon_kbs::verify_audit_chain(&events) {
        bail!("{failed}: the hash chain is broken at event {seq}");
    }
    if let (Some(old), Some(path)) = (&since, &a.since) {
        let old = checkpoint::verify_checkpoint(old, &admin, &pinned)
            .with_context(|| format!("{failed}: the earlier checkpoint {}", path.display()))?;
        // Offline, the proof is made from the events, whose root was just checked.
        let proof = match proof {
            Some(p) => p,
            None if old.size <= cp.size => cordon_proto::merkle::consistency_proof(
                old.size,
                cp.size,
                &checkpoint::audit_leaves(&events),
            )?,
            None => vec![],
        };
        checkpoint::verify_extends(old, cp, &proof).with_context(|| {
            format!(
                "{failed}: against the earlier checkpoint {} (size {}, signed at {})",
                path.display(),
                old.size,
                cordon_proto::rfc3339(old.time)
            )
        })?;
        eprintln!(
            "the log extends the earlier checkpoint {} (size {})",
            path.display(),
            old.size
        );
    }
    if let Some(out) = &a.checkpoint_out {
        util::write_atomic(out, serde_json::to_string_pretty(&current)?.as_bytes())?;
        eprintln!("checkpoint saved to {}", out.display());
    }
    println!("{}", events_json(&events)?);
    let later = (events.len() as u64).saturating_sub(cp.size);
    eprintln!(
        "{} events verified: signed checkpoint of size {}, root {}, hash chain intact{}",
        cp.size,
        cp.size,
        hex::encode(cp.root),
        if later > 0 {
            format!("; {later} later events are not covered by it")
        } else {
            String::new()
        }
    );
    Ok(())
}
