//! Small helpers shared by the subcommands.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// Writes a secret file readable by its owner only, refusing to overwrite unless `overwrite`.
pub fn write_secret(path: &Path, contents: &[u8], overwrite: bool) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Never write through an existing file or link: remove it (when allowed), then create anew
    // with mode 0600, so a pre-existing 0644 file or a symlink cannot expose the secret.
    if overwrite {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("replacing {}", path.display())),
        }
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        if path.exists() && !overwrite {
            format!(
                "{} already exists; refusing to overwrite a key",
                path.display()
            )
        } else {
            format!("creating {}", path.display())
        }
    })?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// Writes a file atomically (temp file + rename), so a reader never sees half of it.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

pub fn read_to_string(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// `~/.cordon`, where `cordon keygen` keeps the owner key by default.
pub fn default_owner_key() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cordon").join("owner.key")
}

/// Reads a 32-byte public key written as hex (one line).
pub fn read_public_key(path: &Path, what: &str) -> Result<[u8; 32]> {
    let text = read_to_string(path, what)?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{what} {} is not a 32-byte hex public key", path.display()))
}

/// A KBS identity key given on the command line: 64 hex digits, or the path of a file holding them
/// (as `cordon kbs serve --identity-file` writes it).
pub fn parse_kbs_key(arg: &str) -> Result<[u8; 32]> {
    let text = if arg.trim().len() == 64 && arg.trim().chars().all(|c| c.is_ascii_hexdigit()) {
        arg.trim().to_string()
    } else {
        read_to_string(Path::new(arg), "KBS identity key")?
    };
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| {
            format!("KBS identity key {arg:?} is neither 64 hex digits nor a file holding them")
        })
}

pub fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting tokio")
}

/// Loads DCAP collateral: a dcap-qvl JSON bundle, or a directory of raw Intel PCS responses.
pub fn load_collateral(path: &Path) -> Result<cordon_attest::dcap::DcapCollateral> {
    use cordon_attest::dcap::DcapCollateral;
    let collateral = if path.is_dir() {
        DcapCollateral::from_dir(path)
    } else {
        DcapCollateral::from_json(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
    };
    collateral.with_context(|| format!("collateral {}", path.display()))
}
