//! `cordon kbs serve | identity | register | audit`.

use crate::util;
use anyhow::{bail, Context, Result};
use cordon_attest::{Endorsements, Policy};
use cordon_client::ClientTls;
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::checkpoint::{self, ConsistencyProof, SignedCheckpoint};
use cordon_proto::kbs::{
    policy_context, seal_dek_for_kbs, AuditEvent, DekPurpose, ErrorBody, KbsIdentity, RegisterKey,
};
use cordon_seal::KeyFile;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand)]
pub enum KbsCommand {
    /// Run the key broker.
    Serve(ServeArgs),
    /// Print a key broker's identity key as it answers it (to compare with what `kbs serve`
    /// printed; pin the printed value, never this answer alone).
    Identity {
        /// KBS base URL (http:// or https://).
        #[arg(long, env = "CORDON_KBS_URL")]
        kbs: String,
        #[command(flatten)]
        ca: util::CaCertArg,
    },
    /// Register a sealed artifact's key with its release policy (admin).
    Register(RegisterArgs),
    /// Print the audit log: every registration, release and denial (admin). With --verify, check
    /// it against a checkpoint the KBS signed (and an earlier saved checkpoint, --since).
    Audit(AuditArgs),
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
    /// Write the KBS's identity key (hex) here at start: what owners, parties and runtime
    /// configurations pin (`--kbs-key`, `kbs_public_key`).
    #[arg(long)]
    identity_file: Option<PathBuf>,
    #[command(flatten)]
    tls: util::ServerTlsArgs,
}

#[derive(clap::Args)]
pub struct AdminArgs {
    /// KBS base URL (http:// or https://). Not needed by `kbs audit --verify --entries`.
    #[arg(long, env = "CORDON_KBS_URL")]
    kbs: Option<String>,
    /// The KBS's identity key, pinned: 64 hex digits, or a file holding them (what
    /// `cordon kbs serve` printed). Keys are sealed to it; requests are signed for it. Without it,
    /// the identity the KBS serves is used only if the admin token vouches for it (the KBS signed
    /// it with the token's key when the token was made), which the host cannot forge.
    #[arg(long, env = "CORDON_KBS_KEY")]
    kbs_key: Option<String>,
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
    /// Save the verified checkpoint here (JSON), to pass as --since next time.
    #[arg(long, requires = "verify")]
    checkpoint_out: Option<PathBuf>,
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
        KbsCommand::Identity { kbs, ca } => identity(&kbs, &ca.tls()?.client(TIMEOUT)?),
        KbsCommand::Register(a) => register(a),
        KbsCommand::Audit(a) => audit(a),
    }
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

fn identity(kbs: &str, http: &reqwest::Client) -> Result<()> {
    let id = util::tokio_runtime()?.block_on(fetch_identity(kbs, http))?;
    println!("{}", hex::encode(id.hpke_public_key));
    eprintln!(
        "this is what the network answered: compare it with what `cordon kbs serve` printed on \
         the KBS's own machine before you pin it (a party that seals a key to a key the host \
         chose gives the host that key); the administrator's commands check it with the token"
    );
    Ok(())
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
    // A certificate or key that is missing or does not match stops the start, before the store.
    let tls = a.tls.load()?;
    let mut config = KbsConfig::new(a.data_dir.clone(), endorsements);
    config.nonce_ttl = Duration::from_secs(a.nonce_ttl);
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
    let identity = hex::encode(kbs.identity_public_key());
    eprintln!("KBS identity key (pin it: --kbs-key, kbs_public_key): {identity}");
    if let Some(f) = &a.identity_file {
        util::write_atomic(f, format!("{identity}\n").as_bytes())?;
    }
    let rt = util::tokio_runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("binding {}", a.listen))?;
        let addr = listener.local_addr()?;
        a.tls.announce("key broker");
        tracing::info!(%addr, tls = tls.is_some(), data_dir = %a.data_dir.display(), "key broker listening");
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
        let Some(url) = &a.kbs else {
            bail!("--kbs (or CORDON_KBS_URL) is required: the KBS's base URL");
        };
        let token = util::read_secret(&a.token_file, "admin token")?;
        let tls = a.ca.tls()?;
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
    let key = KeyFile::from_file_contents(&util::read_secret(&a.key, "key file")?)?;
    let policy = util::read_to_string(&a.policy, "release policy")?;
    util::tokio_runtime()?.block_on(async {
        Admin::from_args(&a.admin)
            .await?
            .register_key(&key, &policy)
            .await
    })?;
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
    println!("{}", serde_json::to_string_pretty(&events)?);
    eprintln!("{} events, {chain}", events.len());
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> Result<T> {
    serde_json::from_str(&util::read_to_string(path, what)?)
        .with_context(|| format!("{} is not a {what}", path.display()))
}

/// `kbs audit --verify`: the log against a checkpoint the KBS signed, the signing key against the
/// administrator's vouch, and, with --since, the new checkpoint against an earlier one.
fn audit_verify(a: AuditArgs) -> Result<()> {
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
                old.time
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
    println!("{}", serde_json::to_string_pretty(&events)?);
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
