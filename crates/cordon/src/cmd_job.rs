//! Collaborative training from a party's seat: `cordon party keygen`, `cordon dataset
//! seal|register|upload`, `cordon job create|approve|submit|status|result|receipt verify`.

use crate::output::{self, TempOutput};
use crate::util;
use anyhow::{bail, Context, Result};
use cordon_attest::PolicyDocument;
use cordon_client::jobs::{approval_summary, check_own_entry, register_dataset_key_tls, JobClient};
use cordon_proto::job::{JobDataset, JobSpec, JobStatus, PartyKey, Receipt, MAX_APPROVAL_VALIDITY};
use cordon_seal::{KeyFile, OwnerKey, SealOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(clap::Subcommand)]
pub enum PartyCommand {
    /// Create a party's key file: its Ed25519 identity (signs approvals, requests and its datasets)
    /// and its HPKE key (job outputs are sealed to it). Prints the party's entry for a job spec.
    Keygen {
        /// The party's name in job specs.
        #[arg(long)]
        name: String,
        /// Key file to write (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing key file (the old key is lost).
        #[arg(long)]
        force: bool,
        /// The party's entry is printed as JSON with or without it (accepted as every command
        /// accepts it).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum DatasetCommand {
    /// Seal a CSV or Parquet file with the party's key; prints the dataset's entry for a job spec.
    Seal(DatasetSealArgs),
    /// Register the dataset's key with the KBS, signed by the party: released only for training
    /// jobs this party approves, to runtimes the release policy names.
    Register {
        #[arg(long)]
        party: PathBuf,
        /// The key file `cordon dataset seal` wrote.
        #[arg(long)]
        key: PathBuf,
        /// Release policy (TOML): which runtimes may receive the key.
        #[arg(long)]
        policy: PathBuf,
        /// KBS base URL (http:// or https://).
        #[arg(long, value_parser = crate::util::base_url, env = "CORDON_KBS_URL", default_value = util::DEFAULT_KBS_URL)]
        kbs: String,
        /// The KBS's identity key, pinned: 64 hex digits or a file holding them (what
        /// `cordon kbs serve` printed). The key travels sealed to it. Required unless
        /// --kbs-policy is given; with both, the attested key must be this one.
        #[arg(long, env = "CORDON_KBS_KEY", required_unless_present = "kbs_policy")]
        kbs_key: Option<String>,
        #[command(flatten)]
        kbs_policy: crate::cmd_kbs::KbsPolicyArg,
        #[command(flatten)]
        ca: util::CaCertArg,
        #[command(flatten)]
        json: util::JsonArg,
    },
    /// Upload the sealed dataset (public bytes) to the training runtime, after verifying it.
    Upload {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        sealed: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct DatasetSealArgs {
    #[arg(long)]
    party: PathBuf,
    /// The plaintext dataset; `-` reads standard input.
    #[arg(long)]
    input: PathBuf,
    #[arg(long, value_parser = ["csv", "parquet"], default_value = "csv")]
    format: String,
    /// Sealed output (public).
    #[arg(long)]
    out: PathBuf,
    /// Where the DEK goes (mode 0600), for `cordon dataset register`.
    #[arg(long)]
    key_out: PathBuf,
    /// Replace existing --out and --key-out files (atomically). The input is never overwritten.
    #[arg(long)]
    force: bool,
    /// The dataset's entry is printed as JSON with or without it (accepted as every command
    /// accepts it).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct Conn {
    /// The party's key file (`cordon party keygen`).
    #[arg(long)]
    party: PathBuf,
    /// The training runtime's URL (http:// or https://).
    #[arg(long, value_parser = crate::util::base_url)]
    runtime: String,
    #[command(flatten)]
    ca: util::CaCertArg,
    /// The party's policy for the training runtime, with [endorsements] (as `cordon infer
    /// --policy`): the runtime is verified against it before anything is sent, and receipts too.
    #[arg(long)]
    policy: PathBuf,
    /// Every command that talks to the runtime prints its result as JSON with --json.
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Subcommand)]
pub enum JobCommand {
    /// Create a job from its spec (JSON); prints the job hash every party approves.
    Create {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        spec: PathBuf,
    },
    /// Approve a job: checks the spec hashes to --job, that this party's entry in it is its own
    /// (signing key and the HPKE key outputs are sealed to), that the runtime's copy is the same;
    /// prints what is approved (parties, datasets, recipients, serving policy, algorithm), then
    /// signs an approval valid for --valid-for seconds.
    Approve {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        job: String,
        /// The spec this party agreed to (its own copy, not the runtime's).
        #[arg(long)]
        spec: PathBuf,
        /// Seconds the approval stays valid (at most 30 days).
        #[arg(long, default_value_t = 86_400)]
        valid_for: u64,
    },
    /// Run an approved job; with --wait, until it finishes.
    Submit {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        job: String,
        /// Seconds to wait for the job to finish (0: return at once).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// State, approvals, missing datasets, metrics.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        job: String,
    },
    /// Fetch the output (recipients only), check it (the receipt verifies and passes --policy; it is
    /// this job's, over the spec's datasets, from the verified runtime; the sealed model is the one
    /// it names and opens with the key), then write the sealed model, its key file, the receipt.
    Result {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        job: String,
        #[arg(long)]
        out_dir: PathBuf,
        /// Replace model.sealed, model.key and receipt.json if they exist already.
        #[arg(long)]
        force: bool,
    },
    /// Job receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
}

#[derive(clap::Subcommand)]
pub enum ReceiptCommand {
    /// Verify a receipt offline: the runtime's signature, its evidence (with the policy file's
    /// endorsements), that the evidence binds the signing key to the job, and the policy.
    Verify {
        #[arg(long)]
        receipt: PathBuf,
        /// Policy file with [endorsements] (as `cordon infer --policy`).
        #[arg(long)]
        policy: PathBuf,
        #[command(flatten)]
        json: util::JsonArg,
    },
}

fn party(path: &Path) -> Result<PartyKey> {
    PartyKey::from_file_contents(&util::read_key_file(
        path,
        "party key",
        "cordon-party-key/1",
    )?)
    .with_context(|| format!("party key {}", path.display()))
}

fn policy_doc(path: &Path) -> Result<PolicyDocument> {
    util::load_policy_doc(path, "policy")
}

/// Verifies the training runtime with the party's policy: nothing is sent to it before.
fn client(rt: &tokio::runtime::Runtime, conn: &Conn) -> Result<JobClient> {
    let doc = policy_doc(&conn.policy)?;
    let c = rt.block_on(JobClient::connect_tls(
        &conn.runtime,
        party(&conn.party)?,
        doc,
        &conn.ca.tls()?,
        SystemTime::now(),
    ))?;
    let claims = c.runtime().claims();
    eprintln!(
        "verified training runtime {} ({} evidence, measurement {}…){}",
        conn.runtime,
        claims.platform,
        util::short_hex(&claims.launch_measurement),
        util::provenance(claims)
    );
    Ok(c)
}

pub fn run_party(c: PartyCommand) -> Result<()> {
    match c {
        PartyCommand::Keygen {
            name, out, force, ..
        } => {
            let key = PartyKey::generate(&name);
            util::write_secret(&out, key.to_file_contents().as_bytes(), force)?;
            eprintln!("wrote {} (keep it secret)", out.display());
            println!("{}", serde_json::to_string_pretty(&key.job_party())?);
            Ok(())
        }
    }
}

/// Seals `data` with the party's key to `out`, replacing what is there (written whole under a
/// temporary name, then renamed). Returns the spec entry and the key file.
pub fn seal_dataset(
    party: &PartyKey,
    data: &[u8],
    format: &str,
    out: &Path,
) -> Result<(JobDataset, KeyFile)> {
    let mut tmp = TempOutput::create(out)?;
    let sealed = seal_dataset_into(party, data, format, &mut tmp)?;
    output::commit_all(vec![(tmp, output::PUBLIC)], true, false)?;
    Ok(sealed)
}

/// Seals `data` with the party's key into `out`, which the caller puts in place. Returns the spec
/// entry and the key file.
fn seal_dataset_into(
    party: &PartyKey,
    data: &[u8],
    format: &str,
    out: &mut TempOutput,
) -> Result<(JobDataset, KeyFile)> {
    let owner = OwnerKey::from_secret_bytes(&party.signing_secret());
    let options = SealOptions {
        name: format!("{}-dataset", party.name()),
        version: "1".into(),
        media_type: if format == "parquet" {
            "application/vnd.apache.parquet".into()
        } else {
            "text/csv".into()
        },
        chunk_size: cordon_seal::DEFAULT_CHUNK_SIZE,
        ..Default::default()
    };
    let (header, key) = cordon_seal::seal_with_header(
        data,
        data.len() as u64,
        out.file(),
        &owner,
        &options,
        &mut |_| {},
    )?;
    Ok((
        JobDataset {
            party: party.name().into(),
            manifest_sha256: header.digest(),
            key_id: header.manifest.key_id,
            format: format.into(),
        },
        key,
    ))
}

pub fn run_dataset(c: DatasetCommand) -> Result<()> {
    // Only the network commands start tokio: `seal` runs on this one thread, which holds the
    // interrupt signals back while it puts its outputs in place (crate::output::commit_all).
    let rt = || util::tokio_runtime();
    match c {
        DatasetCommand::Seal(a) => {
            let p = party(&a.party)?;
            let inputs = [a.input.as_path(), a.party.as_path()];
            output::check_dest(&a.out, "--out", a.force, &inputs)?;
            output::check_dest(&a.key_out, "--key-out", a.force, &inputs)?;
            if output::same_file(&a.out, &a.key_out) {
                bail!(
                    "--out and --key-out both name {}: the key file and the sealed dataset need two files",
                    a.out.display()
                );
            }
            let data = zeroize::Zeroizing::new(util::read_input(&a.input, "dataset")?);
            // Both outputs under temporary names until both are complete; the key goes in place
            // first, so a sealed dataset never exists without its key.
            util::create_parent(&a.out)?;
            util::create_parent(&a.key_out)?;
            let mut out = TempOutput::create(&a.out)?;
            let (entry, key) = seal_dataset_into(&p, &data, &a.format, &mut out)?;
            output::commit_with_key(out, &a.key_out, &key.to_file_contents(), a.force)?;
            eprintln!(
                "sealed {} -> {} (key in {})",
                a.input.display(),
                a.out.display(),
                a.key_out.display()
            );
            println!("{}", serde_json::to_string_pretty(&entry)?);
        }
        DatasetCommand::Register {
            party: p,
            key,
            policy,
            kbs,
            kbs_key,
            kbs_policy,
            ca,
            json,
        } => {
            let p = party(&p)?;
            let key = KeyFile::from_file_contents(&util::read_key_file(
                &key,
                "key file of a sealed dataset",
                "cordon-dek/1",
            )?)?;
            if key.signer != p.signing_public_key() {
                bail!("the key file's dataset was sealed by another party's key");
            }
            let policy = util::read_to_string(&policy, "release policy")?;
            util::warn(&cordon_attest::Policy::from_toml(&policy).context("release policy")?);
            let pinned = kbs_key.as_deref().map(util::parse_kbs_key).transpose()?;
            let tls = ca.tls()?;
            let rt = rt()?;
            // The KBS is verified (or pinned) before the DEK is sealed to anything.
            let kbs_key = match (&kbs_policy.kbs_policy, pinned) {
                (Some(kbs_policy), pinned) => rt.block_on(crate::cmd_kbs::attested_kbs_key(
                    &kbs,
                    &tls,
                    kbs_policy,
                    pinned.as_ref(),
                ))?,
                (None, Some(pinned)) => pinned,
                (None, None) => {
                    bail!("give --kbs-key or --kbs-policy: the KBS must be pinned or verified")
                }
            };
            rt.block_on(register_dataset_key_tls(
                &p,
                &kbs,
                &tls,
                &kbs_key,
                &key.key_id,
                key.dek.as_bytes(),
                &policy,
            ))?;
            if json.json {
                return util::print_json(&serde_json::json!({
                    "registered": key.key_id,
                    "kbs": kbs,
                    "kbs_public_key": hex::encode(kbs_key),
                }));
            }
            println!(
                "registered dataset key {} with {kbs} (sealed to KBS key {}…)",
                key.key_id,
                util::short_hex(&kbs_key)
            );
        }
        DatasetCommand::Upload { conn, sealed } => {
            let rt = rt()?;
            let client = client(&rt, &conn)?;
            let bytes = util::read_input(&sealed, "sealed dataset")?;
            let digest = rt.block_on(client.upload_dataset(bytes))?;
            if conn.json.json {
                return util::print_json(&serde_json::json!({
                    "uploaded": util::path_json(&sealed),
                    "manifest_sha256": digest,
                }));
            }
            println!("uploaded {} (manifest sha256 {digest})", sealed.display());
        }
    }
    Ok(())
}

fn read_spec(path: &Path) -> Result<JobSpec> {
    let spec: JobSpec = serde_json::from_str(&util::read_to_string(path, "job spec")?)
        .with_context(|| format!("job spec {}", path.display()))?;
    spec.validate()?;
    Ok(spec)
}

/// A job's status: as JSON with `json`, else as text.
fn show_status(s: &JobStatus, json: bool) -> Result<()> {
    if json {
        return util::print_json(s);
    }
    print_status(s);
    Ok(())
}

pub fn print_status(s: &JobStatus) {
    println!("job {} ({:?}): {}", s.job_hash, s.spec.name, s.state);
    println!(
        "  approved by: {}",
        if s.approved_by.is_empty() {
            "-".into()
        } else {
            s.approved_by.join(", ")
        }
    );
    if !s.awaiting.is_empty() {
        println!("  awaiting approval from: {}", s.awaiting.join(", "));
    }
    if !s.datasets_missing.is_empty() {
        println!("  datasets not uploaded: {}", s.datasets_missing.join(", "));
    }
    if let Some(e) = &s.error {
        println!("  error: {e}");
    }
    if let Some(m) = &s.metrics {
        println!(
            "  {}: {} training rows, {} held-out rows; accuracy {:.4}, AUC {}, log loss {:.4}",
            m.algorithm,
            m.train_rows,
            m.test_rows,
            m.test_accuracy,
            m.test_auc
                .map(|a| format!("{a:.4}"))
                .unwrap_or_else(|| "n/a".into()),
            m.test_log_loss
        );
        for p in &m.parties {
            println!(
                "    {}: {} training, {} held-out, {} positive rows",
                p.party, p.train_rows, p.test_rows, p.positive_rows
            );
        }
    }
}

/// Checks a receipt offline and appraises the runtime's claims; returns a one-line summary.
pub fn verify_receipt(receipt: &Receipt, doc: &PolicyDocument) -> Result<String> {
    let claims = cordon_client::jobs::verify_receipt(receipt, doc).map_err(anyhow::Error::msg)?;
    Ok(format!(
        "receipt valid: job {} finished at {}, signed by runtime key {}…, bound by {} evidence (measurement {}…{}), accepted by the policy",
        hex::encode(receipt.body.job_hash),
        cordon_proto::rfc3339(receipt.body.finished_at),
        util::short_hex(&receipt.body.attestation.runtime_keys.signing_public_key),
        claims.platform,
        util::short_hex(&claims.launch_measurement),
        util::provenance(&claims)
    ))
}

/// What `job result` writes in `--out-dir`: the sealed model, its key file, the receipt.
const RESULT_FILES: [&str; 3] = ["model.sealed", "model.key", "receipt.json"];

/// Writes a job's output to `out_dir` (created if missing): the key file (0600), the sealed
/// model and the receipt, put in place together (`output::commit_all`): all three or none, the
/// key first, so that a model never sits next to another model's key; a file already there is
/// replaced only with `force` (and is back if the replacement fails).
fn write_result(
    out_dir: &Path,
    sealed_model: &[u8],
    key: &KeyFile,
    receipt: &[u8],
    force: bool,
) -> Result<()> {
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let key_text = key.to_file_contents();
    let [sealed_name, key_name, receipt_name] = RESULT_FILES;
    let mut outputs = Vec::new();
    for (name, bytes, mode) in [
        (key_name, key_text.as_bytes(), output::SECRET),
        (sealed_name, sealed_model, output::PUBLIC),
        (receipt_name, receipt, output::PUBLIC),
    ] {
        let path = out_dir.join(name);
        let mut out = TempOutput::create(&path)?;
        out.file()
            .write_all(bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        outputs.push((out, mode));
    }
    output::commit_all(outputs, force, true)
}

pub fn run_job(c: JobCommand) -> Result<()> {
    let rt = util::tokio_runtime()?;
    match c {
        JobCommand::Create { conn, spec } => {
            let spec = read_spec(&spec)?;
            let status = rt.block_on(client(&rt, &conn)?.create(&spec))?;
            show_status(&status, conn.json.json)?;
        }
        JobCommand::Approve {
            conn,
            job,
            spec,
            valid_for,
        } => {
            let spec = read_spec(&spec)?;
            if valid_for == 0 || valid_for > MAX_APPROVAL_VALIDITY.as_secs() {
                bail!(
                    "--valid-for must be 1 to {} seconds",
                    MAX_APPROVAL_VALIDITY.as_secs()
                );
            }
            let me = party(&conn.party)?;
            // Checked offline first: a job that is not this party's to approve is refused before
            // the runtime is contacted.
            check_own_entry(&job, &spec, &me)?;
            eprintln!("{}", approval_summary(&spec, &me));
            let expires_at = SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + valid_for;
            let status = rt.block_on(client(&rt, &conn)?.approve(&job, &spec, expires_at))?;
            eprintln!(
                "approved, valid until {}",
                cordon_proto::rfc3339(expires_at)
            );
            show_status(&status, conn.json.json)?;
        }
        JobCommand::Submit { conn, job, wait } => {
            let c_json = conn.json.json;
            let c = client(&rt, &conn)?;
            let status = rt.block_on(async {
                let s = c.submit(&job).await?;
                if wait == 0 {
                    return Ok::<_, anyhow::Error>(s);
                }
                Ok(c.wait(&job, Duration::from_secs(wait)).await?)
            })?;
            show_status(&status, c_json)?;
        }
        JobCommand::Status { conn, job } => {
            show_status(
                &rt.block_on(client(&rt, &conn)?.status(&job))?,
                conn.json.json,
            )?;
        }
        JobCommand::Result {
            conn,
            job,
            out_dir,
            force,
        } => {
            // Its inputs are never outputs, even with --force.
            let mut inputs = vec![conn.party.as_path(), conn.policy.as_path()];
            inputs.extend(conn.ca.ca_cert.as_deref());
            for name in RESULT_FILES {
                output::check_dest(&out_dir.join(name), "--out-dir", force, &inputs)?;
            }
            let checked = rt.block_on(client(&rt, &conn)?.checked_result(&job))?;
            // No other thread from here on: the interrupt signals that `write_result` holds back
            // while it puts the files in place would otherwise reach a worker thread.
            drop(rt);
            let result = &checked.result;
            let key = KeyFile {
                key_id: result.key_id.clone(),
                dek: cordon_seal::Dek::from_bytes(checked.dek.as_ref())?,
                signer: result
                    .receipt
                    .body
                    .attestation
                    .runtime_keys
                    .signing_public_key,
            };
            // The sealed model opens with this key (every chunk, the plaintext digest) before
            // anything is written.
            let digest =
                cordon_seal::unseal(&result.sealed_model[..], &key, std::io::sink(), &mut |_| {})?
                    .digest();
            write_result(
                &out_dir,
                &result.sealed_model,
                &key,
                serde_json::to_string_pretty(&result.receipt)?.as_bytes(),
                force,
            )?;
            if conn.json.json {
                return util::print_json(&serde_json::json!({
                    "job": job,
                    "receipt_checked": true,
                    "out_dir": util::path_json(&out_dir),
                    "files": RESULT_FILES,
                    "manifest_sha256": hex::encode(digest),
                    "signer": hex::encode(key.signer),
                }));
            }
            println!(
                "receipt checked: job {job}, inputs are the spec's datasets, signed by the verified runtime"
            );
            println!(
                "wrote model.sealed (manifest sha256 {}), model.key, receipt.json to {}",
                hex::encode(digest),
                out_dir.display()
            );
            println!(
                "the model's manifest is signed by the training runtime's attested key {}",
                hex::encode(key.signer)
            );
        }
        JobCommand::Receipt(ReceiptCommand::Verify {
            receipt,
            policy,
            json,
        }) => {
            let r: Receipt = serde_json::from_str(&util::read_to_string(&receipt, "receipt")?)
                .with_context(|| format!("receipt {}", receipt.display()))?;
            let doc = policy_doc(&policy)?;
            let summary = verify_receipt(&r, &doc)?;
            if json.json {
                return util::print_json(&serde_json::json!({
                    "valid": true,
                    "job": hex::encode(r.body.job_hash),
                    "job_name": r.body.job_name,
                    "finished_at": r.body.finished_at,
                    "finished_at_rfc3339": cordon_proto::rfc3339(r.body.finished_at),
                    "signer": hex::encode(r.body.attestation.runtime_keys.signing_public_key),
                    "summary": summary,
                }));
            }
            println!("{summary}");
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn key(id: &str) -> KeyFile {
        KeyFile {
            key_id: id.into(),
            dek: cordon_seal::Dek::generate(),
            signer: [7; 32],
        }
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    #[test]
    fn a_job_result_is_written_whole_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        // A fresh directory: all three, the key 0600.
        let k1 = key("k1");
        write_result(&dir, b"model 1", &k1, b"receipt 1", false).unwrap();
        assert_eq!(entries(&dir), ["model.key", "model.sealed", "receipt.json"]);
        assert_eq!(read(&dir, "model.sealed"), b"model 1");
        assert_eq!(read(&dir, "receipt.json"), b"receipt 1");
        assert_eq!(read(&dir, "model.key"), k1.to_file_contents().as_bytes());
        let mode = std::fs::metadata(dir.join("model.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let old_key = read(&dir, "model.key");

        // Without --force nothing is replaced, not even the first of the three (the old
        // `write_atomic` always replaced model.sealed), and nothing is left half done.
        let err = write_result(&dir, b"model 2", &key("k2"), b"receipt 2", false).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(read(&dir, "model.sealed"), b"model 1");
        assert_eq!(read(&dir, "model.key"), old_key);
        assert_eq!(read(&dir, "receipt.json"), b"receipt 1");
        assert_eq!(entries(&dir), ["model.key", "model.sealed", "receipt.json"]);

        // A file that appeared after the check (here only the receipt): refused, and the two
        // files written before it in the same commit are gone again.
        let fresh = root.path().join("fresh");
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join("receipt.json"), b"someone's").unwrap();
        let err = write_result(&fresh, b"model 2", &key("k2"), b"receipt 2", false).unwrap_err();
        assert!(format!("{err:#}").contains("receipt.json"), "{err:#}");
        assert_eq!(entries(&fresh), ["receipt.json"]);
        assert_eq!(read(&fresh, "receipt.json"), b"someone's");

        // --force, with the last of the three unable to be put in place (a directory in the
        // way): the new key and model are undone, the old ones back as they were.
        std::fs::remove_file(dir.join("receipt.json")).unwrap();
        std::fs::create_dir(dir.join("receipt.json")).unwrap();
        std::fs::write(dir.join("receipt.json").join("x"), b"x").unwrap();
        let err = write_result(&dir, b"model 2", &key("k2"), b"receipt 2", true).unwrap_err();
        assert!(format!("{err:#}").contains("receipt.json"), "{err:#}");
        assert_eq!(read(&dir, "model.sealed"), b"model 1");
        assert_eq!(read(&dir, "model.key"), old_key);
        assert_eq!(entries(&dir), ["model.key", "model.sealed", "receipt.json"]);

        // --force: all three replaced together.
        std::fs::remove_dir_all(dir.join("receipt.json")).unwrap();
        std::fs::write(dir.join("receipt.json"), b"receipt 1").unwrap();
        let k2 = key("k2");
        write_result(&dir, b"model 2", &k2, b"receipt 2", true).unwrap();
        assert_eq!(read(&dir, "model.sealed"), b"model 2");
        assert_eq!(read(&dir, "model.key"), k2.to_file_contents().as_bytes());
        assert_eq!(read(&dir, "receipt.json"), b"receipt 2");
        assert_eq!(entries(&dir), ["model.key", "model.sealed", "receipt.json"]);
    }
}
