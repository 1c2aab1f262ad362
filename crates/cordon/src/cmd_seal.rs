//! `cordon keygen`, `seal`, `unseal`, `inspect`.

use crate::output::{self, TempOutput};
use crate::util;
use anyhow::{bail, Context, Result};
use cordon_seal::{KeyFile, OwnerKey, SealOptions};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

const PROGRESS_THRESHOLD: u64 = 8 << 20;

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (mode 0600). The public key goes to the same path with `.pub`.
    /// Default: owner.key in $XDG_CONFIG_HOME/cordon (~/.config/cordon).
    #[arg(long, default_value_os_t = util::default_owner_key())]
    out: PathBuf,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct SealArgs {
    /// File to seal (an ONNX model, a dataset: any bytes).
    input: PathBuf,
    /// Where to write the sealed artifact.
    #[arg(long)]
    out: PathBuf,
    /// Where to write the key file (key id, DEK, signer), mode 0600. Register it with `cordon kbs register`.
    #[arg(long)]
    key_out: PathBuf,
    /// The owner's signing key from `cordon keygen`. Default: owner.key in $XDG_CONFIG_HOME/cordon
    /// (~/.config/cordon), else the old ~/.cordon/owner.key.
    #[arg(long, env = "CORDON_OWNER_KEY", default_value_os_t = util::default_owner_key())]
    owner_key: PathBuf,
    /// Name recorded in the manifest (default: the input's file name).
    #[arg(long)]
    name: Option<String>,
    /// Version recorded in the manifest.
    #[arg(long, default_value = "1")]
    version: String,
    /// Media type recorded in the manifest (default: application/onnx for .onnx files).
    #[arg(long)]
    media_type: Option<String>,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = cordon_seal::DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    /// Replace existing --out and --key-out files (atomically). The input is never overwritten.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct UnsealArgs {
    /// The sealed artifact.
    sealed: PathBuf,
    /// The key file `cordon seal --key-out` wrote.
    #[arg(long)]
    key: PathBuf,
    /// Where to write the plaintext (mode 0600).
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing --out file (atomically). The inputs are never overwritten.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The sealed artifact.
    sealed: PathBuf,
    #[command(flatten)]
    json: util::JsonArg,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let pub_path = a.out.with_extension("pub");
    if output::same_file(&pub_path, &a.out) {
        bail!(
            "--out {} ends in .pub: the public key would overwrite the secret key; name the key \
             file otherwise (the public key goes next to it, with .pub)",
            a.out.display()
        );
    }
    util::refuse_shadowing(&a.out)?;
    let key = OwnerKey::generate();
    util::write_secret(&a.out, key.to_file_contents().as_bytes(), false)?;
    util::write_atomic(
        &pub_path,
        format!("{}\n", hex::encode(key.public_key())).as_bytes(),
    )?;
    if a.json.json {
        return util::print_json(&serde_json::json!({
            "owner_key": util::path_json(&a.out),
            "public_key": hex::encode(key.public_key()),
            "public_key_file": util::path_json(&pub_path),
        }));
    }
    println!("owner key:  {}", a.out.display());
    println!(
        "public key: {} ({})",
        hex::encode(key.public_key()),
        pub_path.display()
    );
    Ok(())
}

fn progress_bar(total: u64, verb: &str) -> Option<ProgressBar> {
    if total < PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(verb.to_string());
    Some(pb)
}

pub fn seal(mut a: SealArgs) -> Result<()> {
    a.owner_key = util::read_location(&a.owner_key);
    let owner_text = util::read_secret(&a.owner_key, "owner key")
        .with_context(|| "create one with `cordon keygen` or pass --owner-key".to_string())?;
    util::check_key_file_kind(
        &a.owner_key,
        &owner_text,
        "owner key",
        Some("cordon-owner-key/1"),
    )?;
    let owner = OwnerKey::from_file_contents(&owner_text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.owner_key.display()))?;
    let mut input =
        std::fs::File::open(&a.input).with_context(|| format!("opening {}", a.input.display()))?;
    // Refuse before any work: outputs that are inputs (even with --force), existing outputs
    // (without --force), and one file for both outputs.
    let inputs = [a.input.as_path(), a.owner_key.as_path()];
    output::check_dest(&a.out, "--out", a.force, &inputs)?;
    output::check_dest(&a.key_out, "--key-out", a.force, &inputs)?;
    if output::same_file(&a.out, &a.key_out) {
        bail!(
            "--out and --key-out both name {}: the key file and the sealed artifact need two files",
            a.out.display()
        );
    }
    let meta = input.metadata()?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into())
    });
    let media_type = a.media_type.clone().unwrap_or_else(|| {
        match a.input.extension().and_then(|e| e.to_str()) {
            Some("onnx") => "application/onnx",
            Some("csv") => "text/csv",
            Some("parquet") => "application/vnd.apache.parquet",
            _ => "application/octet-stream",
        }
        .to_string()
    });
    let options = SealOptions {
        name,
        version: a.version.clone(),
        media_type,
        chunk_size: a.chunk_size,
    };
    util::create_parent(&a.out)?;
    util::create_parent(&a.key_out)?;
    // Both outputs are written under temporary names (0600, removed on error, drop, SIGINT,
    // SIGTERM and SIGHUP) and put in place together at the end: the key file first, so that an
    // artifact never exists without its key.
    let mut out = TempOutput::create(&a.out)?;
    // The manifest names the size before the first chunk: a pipe or FIFO (whose size is not
    // known) is read whole into memory first, zeroized afterwards.
    let spooled;
    let (reader, size): (Box<dyn std::io::Read>, u64) = if meta.is_file() {
        (
            Box::new(std::io::BufReader::with_capacity(1 << 20, input)),
            meta.len(),
        )
    } else {
        spooled = util::read_all_zeroizing(&mut input, 1 << 20)
            .with_context(|| format!("reading {}", a.input.display()))?;
        (Box::new(&spooled[..]), spooled.len() as u64)
    };
    let pb = progress_bar(size, "sealing");
    let result = {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, out.file());
        cordon_seal::seal_with_header(reader, size, &mut writer, &owner, &options, &mut |done| {
            if let Some(pb) = &pb {
                pb.set_position(done)
            }
        })
        .map_err(anyhow::Error::from)
        .and_then(|sealed| {
            writer.flush()?;
            Ok(sealed)
        })
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let (header, key) = result?;
    output::commit_with_key(out, &a.key_out, &key.to_file_contents(), a.force)?;
    let manifest = &header.manifest;
    if a.json.json {
        return util::print_json(&serde_json::json!({
            "input": util::path_json(&a.input),
            "sealed": util::path_json(&a.out),
            "key_file": util::path_json(&a.key_out),
            "manifest_sha256": hex::encode(header.digest()),
            "manifest": manifest,
        }));
    }
    println!(
        "sealed {} ({} bytes) -> {}",
        a.input.display(),
        manifest.plaintext_size,
        a.out.display()
    );
    println!(
        "  name {} version {} ({})",
        manifest.name, manifest.version, manifest.media_type
    );
    println!("  key id           {}", manifest.key_id);
    println!("  plaintext sha256 {}", manifest.plaintext_sha256);
    println!("  signer           {}", manifest.signer);
    println!(
        "  manifest sha256  {} (bound in the runtime's evidence: `cordon infer --require-manifest`)",
        hex::encode(header.digest())
    );
    println!(
        "  key file         {} (secret: register it with the KBS, keep it off shared disks)",
        a.key_out.display()
    );
    Ok(())
}

pub fn unseal(a: UnsealArgs) -> Result<()> {
    let key = KeyFile::from_file_contents(&util::read_key_file(
        &a.key,
        "key file of a sealed artifact",
        "cordon-dek/1",
    )?)?;
    let input = std::fs::File::open(&a.sealed)
        .with_context(|| format!("opening {}", a.sealed.display()))?;
    output::check_dest(&a.out, "--out", a.force, &[&a.sealed, &a.key])?;
    let total = input.metadata()?.len();
    // Plaintext goes to a temporary file, mode 0600 from its first byte, which becomes --out only
    // when every check passed, and is removed otherwise, on drop, and on SIGINT, SIGTERM, SIGHUP.
    let mut out = TempOutput::create(&a.out)?;
    let pb = progress_bar(total, "unsealing");
    let result = {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, out.file());
        cordon_seal::unseal(
            std::io::BufReader::with_capacity(1 << 20, input),
            &key,
            &mut writer,
            &mut |done| {
                if let Some(pb) = &pb {
                    pb.set_position(done)
                }
            },
        )
        .map_err(anyhow::Error::from)
        .and_then(|header| {
            writer.flush()?;
            Ok(header)
        })
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    match result {
        Ok(header) => {
            output::commit_all(vec![(out, output::SECRET)], a.force, true)?;
            if a.json.json {
                return util::print_json(&serde_json::json!({
                    "sealed": util::path_json(&a.sealed),
                    "out": util::path_json(&a.out),
                    "plaintext_size": header.manifest.plaintext_size,
                    "plaintext_sha256": header.manifest.plaintext_sha256,
                    "signer": header.manifest.signer,
                    "manifest_sha256": hex::encode(header.digest()),
                }));
            }
            println!(
                "unsealed {} -> {} ({} bytes, sha256 {} verified, signer {})",
                a.sealed.display(),
                a.out.display(),
                header.manifest.plaintext_size,
                header.manifest.plaintext_sha256,
                header.manifest.signer
            );
            Ok(())
        }
        Err(e) => {
            // Nothing of a rejected artifact is left behind.
            drop(out);
            bail!("{} rejected: {e}", a.sealed.display())
        }
    }
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let mut f = std::fs::File::open(&a.sealed)
        .with_context(|| format!("opening {}", a.sealed.display()))?;
    let header = cordon_seal::read_header(&mut f)?;
    if a.json.json {
        return util::print_json(&serde_json::json!({
            "signature_verified": true,
            "manifest_sha256": hex::encode(header.digest()),
            "manifest": header.manifest,
        }));
    }
    println!("manifest signature verified with the signer it names (check that signer is who you expect)");
    println!("manifest sha256: {}", hex::encode(header.digest()));
    println!("{}", serde_json::to_string_pretty(&header.manifest)?);
    Ok(())
}
