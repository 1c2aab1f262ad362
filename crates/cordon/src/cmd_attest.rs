//! `cordon attest verify | inspect | fetch`: verify any evidence Cordon knows, print it unverified,
//! or fetch its endorsements (`cmd_fetch`, optional, the only networked part).
//!
//! Exit codes of `verify`: 0 verified and appraised; 1 rejected (every reason on stderr);
//! 2 unusable input or usage error.

use crate::util;
use anyhow::{Context, Result};
use cordon_attest::snp::SnpError;
use cordon_attest::{
    appraise, decode_evidence, detect, Endorsements, EvidenceError, EvidenceKind, Policy, Verifier,
};
use std::path::PathBuf;
use std::time::SystemTime;

use crate::cmd_fetch;

#[derive(clap::Subcommand)]
pub enum AttestCommand {
    /// Verify evidence (SNP report, DCAP quote, or Cordon sim evidence) and appraise it with a policy.
    ///
    /// Exit status: 0 verified and accepted; 1 rejected (reasons on stderr); 2 unusable input.
    Verify(VerifyArgs),
    /// Print every field of a piece of evidence WITHOUT verifying anything.
    Inspect(InspectArgs),
    /// Fetch a report's VCEK and CRL from AMD KDS, or a quote's DCAP collateral from Intel PCS or a
    /// PCCS, into a directory for `verify` (optional; verification never fetches anything).
    Fetch(cmd_fetch::FetchArgs),
    /// Inside a TEE: write this machine's evidence (an SNP report or a TDX quote, through the
    /// detected interface) to a file, for `fetch` to fill the endorsement directory that
    /// `runtime serve --endorsements` ships. Binds the given report data (default zeros), so it
    /// vouches for nothing else.
    Report(ReportArgs),
}

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Where to write the evidence; `-` writes it to standard output.
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing --out file.
    #[arg(long)]
    force: bool,
    /// The 64 bytes of report data to bind, hex (default: zeros).
    #[arg(long)]
    report_data: Option<String>,
    /// Use the emulated platform in this directory instead of the machine's (tests and CI).
    #[arg(long)]
    emulator: Option<PathBuf>,
    /// With --emulator: the guest interface to ask it through (the plain report: SNP_GET_REPORT
    /// on `sev-guest`).
    #[arg(
        long,
        value_enum,
        default_value = "configfs-tsm",
        requires = "emulator"
    )]
    emulator_interface: crate::emulator::EmulatedInterface,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// The evidence: a raw SNP report (1184 bytes), a DCAP quote (binary or hex text), or sim
    /// evidence; `-` reads standard input.
    evidence: PathBuf,
    /// AMD VCEK or VLEK certificate (DER or PEM); repeatable. AMD's ASK/ASVK/ARK are built in.
    #[arg(long)]
    cert: Vec<PathBuf>,
    /// AMD CRL (DER or PEM, from KDS `/vcek/v1/{product}/crl`); repeatable. When given, revocation of the
    /// VCEK/VLEK and its ASK/ASVK is checked.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// DCAP collateral: dcap-qvl's JSON bundle, or a directory of raw Intel PCS responses.
    #[arg(long)]
    collateral: Option<PathBuf>,
    /// Verification time, RFC 3339 (default: now). Certificates and collateral are judged at this time.
    #[arg(long)]
    at: Option<String>,
    /// Policy (TOML) to appraise with. Default: any hardware platform, cryptographically valid, not
    /// debug, DCAP TCB status UpToDate / SWHardeningNeeded / ConfigurationNeeded /
    /// ConfigurationAndSWHardeningNeeded, SNP TCB at or above AMD's fixes, no SNP migration agent.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Print claims and verdict as JSON on stdout (byte fields as lowercase hex).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The evidence file; `-` reads standard input.
    evidence: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit statuses.
pub const REJECTED: u8 = 1;
pub const UNUSABLE: u8 = 2;

pub fn run(c: AttestCommand) -> u8 {
    let result = match c {
        AttestCommand::Verify(a) => verify(a),
        AttestCommand::Inspect(a) => inspect(a),
        AttestCommand::Fetch(a) => cmd_fetch::fetch(a),
        AttestCommand::Report(a) => report(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            UNUSABLE
        }
    }
}

fn kind_name(k: EvidenceKind) -> &'static str {
    match k {
        EvidenceKind::Sim => "Cordon sim evidence (SIMULATED, not hardware-backed)",
        EvidenceKind::SnpReport => "AMD SEV-SNP attestation report",
        EvidenceKind::DcapQuote => "Intel DCAP quote",
    }
}

fn parse_time(s: &str) -> Result<SystemTime> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("--at {s:?} is not an RFC 3339 time (e.g. 2025-06-01T00:00:00Z)")
        })?;
    Ok(t.into())
}

fn report(a: ReportArgs) -> Result<u8> {
    util::json_or_stdout(a.json.json, &a.out, "--out")?;
    if !util::is_stdio(&a.out) {
        // The emulated machine's own files (its keys, its state) are inputs, never overwritten.
        let machine: Vec<std::path::PathBuf> = a
            .emulator
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let inputs: Vec<&std::path::Path> = machine.iter().map(|p| p.as_path()).collect();
        crate::output::check_dest(&a.out, "--out", a.force, &inputs)?;
    }
    let mut report_data = [0u8; 64];
    if let Some(h) = &a.report_data {
        let bytes =
            hex::decode(h.trim()).with_context(|| format!("--report-data {h:?} is not hex"))?;
        anyhow::ensure!(
            bytes.len() <= 64,
            "--report-data is {} bytes; report data holds 64",
            bytes.len()
        );
        report_data[..bytes.len()].copy_from_slice(&bytes);
    }
    let provider = match &a.emulator {
        Some(dir) => {
            let emulator = crate::emulator::Emulator::open(dir)?;
            eprintln!("WARNING: {}", emulator.warning());
            emulator.provider(a.emulator_interface)?
        }
        None => cordon_tee::detect(std::path::Path::new("/"))?,
    };
    let evidence = provider.evidence(&report_data)?;
    if util::is_stdio(&a.out) {
        util::write_stdout(&evidence)?;
        eprintln!(
            "{} evidence ({} bytes) written to standard output",
            provider.platform(),
            evidence.len()
        );
        return Ok(0);
    }
    util::write_atomic(&a.out, &evidence)?;
    if a.json.json {
        util::print_json(&serde_json::json!({
            "platform": provider.platform().to_string(),
            "bytes": evidence.len(),
            "out": util::path_json(&a.out),
        }))?;
        return Ok(0);
    }
    println!(
        "{} evidence ({} bytes) written to {}",
        provider.platform(),
        evidence.len(),
        a.out.display()
    );
    Ok(0)
}

fn verify(a: VerifyArgs) -> Result<u8> {
    let raw = util::read_input(&a.evidence, "evidence")?;
    let bytes = decode_evidence(&raw);
    let kind = detect(&bytes)?;
    let now = match &a.at {
        Some(s) => parse_time(s)?,
        None => SystemTime::now(),
    };
    let mut endorsements = Endorsements::default();
    // A file that is not a certificate (or a CRL) at all is unusable input (exit 2), not a
    // verdict on the evidence; whether a certificate endorses it is the verifier's to judge.
    for c in &a.cert {
        let bytes = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        cordon_attest::snp::parse_certificate(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "--cert {} is not an X.509 certificate (DER or PEM): {e}",
                c.display()
            )
        })?;
        endorsements.snp_certs.push(bytes);
    }
    for c in &a.crl {
        let bytes = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        cordon_attest::snp::parse_crl(&bytes)
            .map_err(|e| anyhow::anyhow!("--crl {} is not a CRL (DER or PEM): {e}", c.display()))?;
        endorsements.snp_crls.push(bytes);
    }
    if let Some(path) = &a.collateral {
        endorsements.dcap_collateral = Some(util::load_collateral(path)?);
    }
    let (policy, policy_name) = match &a.policy {
        Some(p) => {
            let doc = util::load_policy_doc(p, "policy")?;
            if let Some(e) = doc.verification_endorsements() {
                endorsements.sim_trust_anchors = e.sim_trust_anchors;
                // Evidence of an emulated platform verifies only under a root the policy names.
                endorsements.emulated_roots = e.emulated_roots;
            }
            (doc.policy, p.display().to_string())
        }
        None => (
            Policy::hardware_default(),
            "default (hardware, not debug, TCB status or SNP TCB floor)".to_string(),
        ),
    };
    let at = time::OffsetDateTime::from(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let claims = match Verifier::new(endorsements).verify(&bytes, now) {
        Ok(c) => c,
        Err(e) => {
            if a.json {
                let out = serde_json::json!({ "evidence_kind": kind_name(kind), "verified_at": at, "verified": false, "error": e.to_string() });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            // Missing endorsements are a usage error, not a verdict on the evidence.
            if matches!(
                e,
                EvidenceError::MissingCollateral
                    | EvidenceError::Snp(SnpError::MissingKey { .. })
                    | EvidenceError::Dcap(
                        cordon_attest::dcap::DcapError::CollateralForOtherTee { .. }
                    )
            ) {
                eprintln!("error: {e}");
                return Ok(UNUSABLE);
            }
            eprintln!("rejected: {} at {at}: {e}", kind_name(kind));
            return Ok(REJECTED);
        }
    };
    let verdict = appraise(&claims, &policy);
    if a.json {
        let out = serde_json::json!({
            "evidence_kind": kind_name(kind),
            "verified_at": at,
            "verified": true,
            "policy": policy_name,
            "accepted": verdict.is_accepted(),
            "failures": verdict.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            "claims": claims,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} verified at {at}", kind_name(kind));
        println!(
            "  platform            {}{}",
            claims.platform,
            crate::util::provenance(&claims)
        );
        println!(
            "  launch measurement  {}",
            hex::encode(&claims.launch_measurement)
        );
        if let Some(s) = &claims.signer_measurement {
            println!("  signer (MRSIGNER)   {}", hex::encode(s));
        }
        println!(
            "  workload data       {}",
            hex::encode(&claims.workload_data)
        );
        for (i, r) in claims.runtime_measurements.iter().enumerate() {
            println!("  RTMR{i}               {}", hex::encode(r));
        }
        println!("  report data         {}", hex::encode(claims.report_data));
        println!("  debug               {}", claims.debug);
        if let Some(t) = &claims.tcb {
            if let Some(s) = &t.status {
                println!("  TCB status          {s}");
            }
            if !t.advisory_ids.is_empty() {
                println!("  advisories          {}", t.advisory_ids.join(", "));
            }
            if !t.components.is_empty() {
                let c: Vec<String> = t
                    .components
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("  TCB                 {}", c.join(" "));
            }
        }
        if let Some(id) = &claims.platform_id {
            println!("  platform id         {}", hex::encode(id));
        }
        println!("  policy              {policy_name}");
    }
    if verdict.is_accepted() {
        if !a.json {
            println!("accepted");
        }
        Ok(0)
    } else {
        for f in &verdict.failures {
            eprintln!("rejected: {f}");
        }
        Ok(REJECTED)
    }
}

fn inspect(a: InspectArgs) -> Result<u8> {
    let raw = util::read_input(&a.evidence, "evidence")?;
    let bytes = decode_evidence(&raw);
    let (kind, value) = cordon_attest::inspect(&bytes)?;
    let mut out = String::new();
    if a.json {
        let doc = serde_json::json!({ "evidence_kind": kind_name(kind), "verified": false, "fields": value });
        out = serde_json::to_string_pretty(&doc)? + "\n";
    } else {
        out.push_str(&format!(
            "NOT VERIFIED: {} -- fields as parsed, nothing checked\n",
            kind_name(kind)
        ));
        format_fields(&mut out, "", &value);
    }
    write_stdout(&out);
    Ok(0)
}

/// Writes to stdout, ignoring a closed pipe (`cordon attest inspect … | head`).
fn write_stdout(s: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(s.as_bytes());
}

fn format_fields(out: &mut String, prefix: &str, v: &serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                format_fields(out, &name, v);
            }
        }
        other => out.push_str(&format!("  {prefix:<28} {other}\n")),
    }
}
