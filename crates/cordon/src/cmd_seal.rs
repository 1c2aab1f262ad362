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
    /// Replace an existing key and public key (the old key is lost).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct SealArgs {
    /// File to seal (an ONNX model, a dataset: any bytes); `-` reads standard input.
    input: PathBuf,
    /// Where to write the sealed artifact; `-` writes it to standard output (once its key file
    /// is in place; the summary then goes to stderr).
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
    /// Sealed format version: 2 (BLAKE3 plaintext digest, faster) or 1 (SHA-256, for runtimes and
    /// tools from before format 2, which refuse version 2). docs/sealed-format.md.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=2))]
    format_version: u16,
    /// Replace existing --out and --key-out files (atomically). The input is never overwritten.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    json: util::JsonArg,
}

#[derive(clap::Args)]
pub struct UnsealArgs {
    /// The sealed artifact; `-` reads standard input.
    sealed: PathBuf,
    /// The key file `cordon seal --key-out` wrote.
    #[arg(long)]
    key: PathBuf,
    /// Where to write the plaintext (mode 0600); `-` writes it to standard output, held in memory
    /// until every check passed (the summary then goes to stderr).
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
    /// The sealed artifact; `-` reads standard input.
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
    util::check_new_key(&a.out, &pub_path, a.force)?;
    let key = OwnerKey::generate();
    util::write_secret(&a.out, key.to_file_contents().as_bytes(), a.force)?;
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

/// Seals `reader` (`size` bytes) into `sink`, buffered, showing progress on `pb`.
fn seal_to<W: std::io::Write + std::io::Seek>(
    sink: W,
    reader: Box<dyn std::io::Read + '_>,
    size: u64,
    owner: &OwnerKey,
    options: &SealOptions,
    pb: Option<&ProgressBar>,
) -> Result<(cordon_seal::SealedHeader, KeyFile)> {
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, sink);
    let sealed =
        cordon_seal::seal_with_header(reader, size, &mut writer, owner, options, &mut |done| {
            if let Some(pb) = pb {
                pb.set_position(done)
            }
        })?;
    writer.flush()?;
    Ok(sealed)
}

pub fn seal(mut a: SealArgs) -> Result<()> {
    a.owner_key = util::read_location(&a.owner_key);
    util::json_or_stdout(a.json.json, &a.out, "--out")?;
    if util::is_stdio(&a.key_out) {
        bail!("--key-out - : the key file is secret and goes to a file, never to standard output");
    }
    if util::is_stdio(&a.input) && util::is_stdio(&a.owner_key) {
        bail!("the input and --owner-key cannot both be `-`: standard input is read once");
    }
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
    let from_stdin = util::is_stdio(&a.input);
    let to_stdout = util::is_stdio(&a.out);
    let mut input: Box<dyn std::io::Read> = if from_stdin {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(
            std::fs::File::open(&a.input)
                .with_context(|| format!("opening {}", a.input.display()))?,
        )
    };
    // Refuse before any work: outputs that are inputs (even with --force), existing outputs
    // (without --force), and one file for both outputs.
    let inputs = [a.input.as_path(), a.owner_key.as_path()];
    if !to_stdout {
        output::check_dest(&a.out, "--out", a.force, &inputs)?;
    }
    output::check_dest(&a.key_out, "--key-out", a.force, &inputs)?;
    if output::same_file(&a.out, &a.key_out) {
        bail!(
            "--out and --key-out both name {}: the key file and the sealed artifact need two files",
            a.out.display()
        );
    }
    // A regular file is streamed; standard input, a pipe or a FIFO (whose size is not known
    // before the manifest must name it) is read whole into memory first, zeroized afterwards.
    let meta = if from_stdin {
        None
    } else {
        std::fs::metadata(&a.input).ok().filter(|m| m.is_file())
    };
    let name = a.name.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .filter(|_| !from_stdin)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "artifact".into())
    });
    let media_type = a.media_type.clone().unwrap_or_else(|| {
        match a.input.extension().and_then(|e| e.to_str()) {
            Some("onnx") => "application/onnx",
            Some("gguf") => "application/x-gguf",
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
        format: match a.format_version {
            1 => cordon_seal::FormatVersion::V1,
            _ => cordon_seal::FormatVersion::V2,
        },
    };
    if !to_stdout {
        util::create_parent(&a.out)?;
    }
    util::create_parent(&a.key_out)?;
    // Both outputs are written under temporary names (0600, removed on error, drop, SIGINT,
    // SIGTERM and SIGHUP) and put in place together at the end: the key file first, so that an
    // artifact never exists without its key. With `--out -` the artifact is held in memory and
    // written to standard output once its key file is in place.
    let mut out = if to_stdout {
        None
    } else {
        Some(TempOutput::create(&a.out)?)
    };
    let mut in_memory = std::io::Cursor::new(Vec::new());
    let spooled;
    let (reader, size): (Box<dyn std::io::Read>, u64) = match &meta {
        Some(m) => (
            Box::new(std::io::BufReader::with_capacity(1 << 20, input)),
            m.len(),
        ),
        None => {
            spooled = util::read_all_zeroizing(&mut input, 1 << 20)
                .with_context(|| format!("reading {}", a.input.display()))?;
            (Box::new(&spooled[..]), spooled.len() as u64)
        }
    };
    let pb = progress_bar(size, "sealing");
    let result = match out.as_mut() {
        Some(out) => seal_to(out.file(), reader, size, &owner, &options, pb.as_ref()),
        None => seal_to(&mut in_memory, reader, size, &owner, &options, pb.as_ref()),
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let (header, key) = result?;
    match out {
        Some(out) => output::commit_with_key(out, &a.key_out, &key.to_file_contents(), a.force)?,
        None => {
            let mut key_out = TempOutput::create(&a.key_out)?;
            key_out
                .file()
                .write_all(key.to_file_contents().as_bytes())
                .with_context(|| format!("writing {}", a.key_out.display()))?;
            output::commit_all(vec![(key_out, output::SECRET)], a.force, true)?;
            util::write_stdout(in_memory.get_ref())?;
        }
    }
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
    // The summary goes where the artifact does not.
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!(
        "sealed {} ({} bytes) -> {}",
        a.input.display(),
        manifest.plaintext_size,
        a.out.display()
    ));
    say(format!(
        "  name {} version {} ({})",
        manifest.name, manifest.version, manifest.media_type
    ));
    say(format!("  key id           {}", manifest.key_id));
    say(format!(
        "  plaintext {} {} ({})",
        digest_name(manifest),
        manifest.plaintext_digest().unwrap_or_default(),
        manifest.format
    ));
    say(format!("  signer           {}", manifest.signer));
    say(format!(
        "  manifest sha256  {} (bound in the runtime's evidence: `cordon infer --require-manifest`)",
        hex::encode(header.digest())
    ));
    say(format!(
        "  key file         {} (secret: register it with the KBS, keep it off shared disks)",
        a.key_out.display()
    ));
    Ok(())
}

/// An input file, or standard input for `-`, and its size when it is a regular file.
fn open_input(path: &std::path::Path) -> Result<(Box<dyn std::io::Read>, Option<u64>)> {
    if util::is_stdio(path) {
        return Ok((Box::new(std::io::stdin().lock()), None));
    }
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    Ok((Box::new(f), size))
}

pub fn unseal(a: UnsealArgs) -> Result<()> {
    if util::is_stdio(&a.sealed) && util::is_stdio(&a.key) {
        bail!("the sealed artifact and --key cannot both be `-`: standard input is read once");
    }
    util::json_or_stdout(a.json.json, &a.out, "--out")?;
    let key = KeyFile::from_file_contents(&util::read_key_file(
        &a.key,
        "key file of a sealed artifact",
        "cordon-dek/1",
    )?)?;
    let (input, total) = open_input(&a.sealed)?;
    let to_stdout = util::is_stdio(&a.out);
    if !to_stdout {
        output::check_dest(&a.out, "--out", a.force, &[&a.sealed, &a.key])?;
    }
    // Plaintext goes to a temporary file, mode 0600 from its first byte, which becomes --out only
    // when every check passed, and is removed otherwise, on drop, and on SIGINT, SIGTERM, SIGHUP.
    // With `--out -` it is held in memory (zeroized when dropped) and reaches standard output
    // only when every check passed: nothing of a rejected artifact is ever written.
    let mut out = if to_stdout {
        None
    } else {
        Some(TempOutput::create(&a.out)?)
    };
    let mut in_memory = util::ZeroizingSink::default();
    let pb = progress_bar(total.unwrap_or(0), "unsealing");
    let result = {
        // Buffered towards a file; straight into the zeroizing buffer in memory (a BufWriter's
        // own buffer would hold plaintext that nobody wipes).
        let mut writer: Box<dyn std::io::Write> = match out.as_mut() {
            Some(out) => Box::new(std::io::BufWriter::with_capacity(1 << 20, out.file())),
            None => Box::new(&mut in_memory),
        };
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
            match out {
                Some(out) => output::commit_all(vec![(out, output::SECRET)], a.force, true)?,
                None => util::write_stdout(&in_memory.0)?,
            }
            if a.json.json {
                return util::print_json(&serde_json::json!({
                    "sealed": util::path_json(&a.sealed),
                    "out": util::path_json(&a.out),
                    "plaintext_size": header.manifest.plaintext_size,
                    "format": header.manifest.format,
                    "plaintext_sha256": header.manifest.plaintext_sha256,
                    "plaintext_blake3": header.manifest.plaintext_blake3,
                    "signer": header.manifest.signer,
                    "manifest_sha256": hex::encode(header.digest()),
                }));
            }
            let line = format!(
                "unsealed {} -> {} ({} bytes, {} {} verified, signer {})",
                a.sealed.display(),
                a.out.display(),
                header.manifest.plaintext_size,
                digest_name(&header.manifest),
                header.manifest.plaintext_digest().unwrap_or_default(),
                header.manifest.signer
            );
            if to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
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
    let (mut f, _) = open_input(&a.sealed)?;
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

/// The name of the plaintext digest a manifest carries, as printed.
fn digest_name(m: &cordon_seal::Manifest) -> &'static str {
    if m.plaintext_blake3.is_some() {
        "blake3"
    } else {
        "sha256"
    }
}
