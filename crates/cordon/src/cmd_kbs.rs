//! `cordon kbs serve | register | audit`.

use crate::util;
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Policy};
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::kbs::{AuditEvent, ErrorBody, RegisterKey};
use cordon_seal::KeyFile;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum KbsCommand {
    /// Run the key broker.
    Serve(ServeArgs),
    /// Register a sealed artifact's key with its release policy (admin).
    Register(RegisterArgs),
    /// Print the audit log: every registration, release and denial (admin).
    Audit(AdminArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Directory for the SQLite store (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:8100")]
    listen: SocketAddr,
    /// Public key file (hex) of a simulated TEE whose evidence to accept; repeatable. Without it,
    /// sim evidence is refused. (A release policy must also name `sim`.)
    #[arg(long)]
    sim_trust_anchor: Vec<PathBuf>,
    /// AMD VCEK or VLEK certificate (DER or PEM) of a chip whose SEV-SNP reports to verify; repeatable.
    /// AMD's ASK/ASVK/ARK are built in.
    #[arg(long)]
    snp_cert: Vec<PathBuf>,
    /// AMD CRL (DER or PEM) to check SNP endorsement keys against; repeatable.
    #[arg(long)]
    snp_crl: Vec<PathBuf>,
    /// Intel DCAP collateral (dcap-qvl JSON bundle or a directory of PCS responses) for TDX/SGX quotes.
    #[arg(long)]
    dcap_collateral: Option<PathBuf>,
    /// On first start, create the admin token and write it here (mode 0600). The store keeps only its hash.
    #[arg(long)]
    init_admin_token_file: Option<PathBuf>,
    /// Seconds a challenge nonce stays valid.
    #[arg(long, default_value_t = 60)]
    nonce_ttl: u64,
    /// Write the bound address here once listening (for scripts and tests).
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// KBS base URL.
    #[arg(long, env = "CORDON_KBS_URL")]
    kbs: String,
    /// File holding the admin token.
    #[arg(long, env = "CORDON_ADMIN_TOKEN_FILE")]
    token_file: PathBuf,
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
}

pub fn run(c: KbsCommand) -> Result<()> {
    match c {
        KbsCommand::Serve(a) => serve(a),
        KbsCommand::Register(a) => register(a),
        KbsCommand::Audit(a) => audit(a),
    }
}

fn serve(a: ServeArgs) -> Result<()> {
    let mut anchors = Vec::new();
    for p in &a.sim_trust_anchor {
        anchors.push(util::read_public_key(p, "sim trust anchor")?);
    }
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
    let mut config = KbsConfig::new(a.data_dir.clone(), endorsements);
    config.nonce_ttl = Duration::from_secs(a.nonce_ttl);
    let kbs = Kbs::open(config)?;
    match (&a.init_admin_token_file, kbs.init_admin_token()?) {
        (Some(path), Some(token)) => {
            util::write_secret(path, token.as_bytes(), true)?;
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
    let rt = util::tokio_runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %a.data_dir.display(), "key broker listening");
        if let Some(f) = &a.addr_file {
            util::write_atomic(f, addr.to_string().as_bytes())?;
        }
        kbs.serve(listener, shutdown_signal()).await?;
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

fn token(a: &AdminArgs) -> Result<String> {
    Ok(util::read_to_string(&a.token_file, "admin token")?
        .trim()
        .to_string())
}

async fn error_of(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    match resp.json::<ErrorBody>().await {
        Ok(b) => anyhow::anyhow!("KBS answered {status}: {} ({})", b.error, b.code),
        Err(_) => anyhow::anyhow!("KBS answered {status}"),
    }
}

/// Registers `key` under `policy` at the KBS (used by `kbs register` and the quickstart).
pub async fn register_key(kbs: &str, token: &str, key: &KeyFile, policy_toml: &str) -> Result<()> {
    for w in Policy::from_toml(policy_toml)
        .context("release policy")?
        .warnings()
    {
        eprintln!("WARNING: {w}");
    }
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/kbs/v1/admin/keys/{}",
            kbs.trim_end_matches('/'),
            key.key_id
        ))
        .bearer_auth(token)
        .json(&RegisterKey {
            dek: key.dek.as_bytes().to_vec(),
            policy: policy_toml.to_string(),
        })
        .send()
        .await
        .with_context(|| format!("connecting to KBS {kbs}"))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    Ok(())
}

pub async fn fetch_audit(kbs: &str, token: &str) -> Result<Vec<AuditEvent>> {
    let resp = reqwest::Client::new()
        .get(format!("{}/kbs/v1/admin/audit", kbs.trim_end_matches('/')))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("connecting to KBS {kbs}"))?;
    if !resp.status().is_success() {
        return Err(error_of(resp).await);
    }
    Ok(resp.json().await?)
}

fn register(a: RegisterArgs) -> Result<()> {
    let key = KeyFile::from_file_contents(&util::read_to_string(&a.key, "key file")?)?;
    let policy = util::read_to_string(&a.policy, "release policy")?;
    let token = token(&a.admin)?;
    util::tokio_runtime()?.block_on(register_key(&a.admin.kbs, &token, &key, &policy))?;
    println!(
        "registered key {} with release policy {}",
        key.key_id,
        a.policy.display()
    );
    Ok(())
}

fn audit(a: AdminArgs) -> Result<()> {
    let token = token(&a)?;
    let events = util::tokio_runtime()?.block_on(fetch_audit(&a.kbs, &token))?;
    let chain = match cordon_kbs::verify_audit_chain(&events) {
        Ok(()) => "hash chain intact".to_string(),
        Err(seq) => format!("HASH CHAIN BROKEN at event {seq}"),
    };
    println!("{}", serde_json::to_string_pretty(&events)?);
    eprintln!("{} events, {chain}", events.len());
    Ok(())
}
