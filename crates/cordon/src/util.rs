//! Small helpers shared by the subcommands.

use crate::output::{self, TempOutput};
use anyhow::{bail, Context, Result};
use cordon_attest::{Policy, PolicyDocument};
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Logging to stderr, filtered by `CORDON_LOG`, else `RUST_LOG` (what Rust users type), else
/// `info`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

/// The KBS a command reaches when neither --kbs nor CORDON_KBS_URL names one: `kbs serve`'s
/// default --listen address, on this machine.
pub const DEFAULT_KBS_URL: &str = "http://127.0.0.1:8100";

/// A server's base URL as given on the command line: `http://` or `https://` with a host, without
/// a trailing slash. Anything else is refused saying what to write (`127.0.0.1:8100` would reach
/// the HTTP client as "relative URL without a base").
pub fn base_url(arg: &str) -> Result<String, String> {
    let arg = arg.trim();
    if !arg.contains("://") {
        return Err(format!(
            "`{arg}` has no scheme: write http://{arg} (or https://{arg})"
        ));
    }
    let url = reqwest::Url::parse(arg).map_err(|e| format!("`{arg}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{arg}`: only http:// and https:// URLs are served, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{arg}` names no host"));
    }
    Ok(arg.trim_end_matches('/').to_string())
}

/// `--json`: the command's result as one JSON document on stdout, and nothing else there (notes
/// and warnings stay on stderr).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct JsonArg {
    /// Print the result as JSON on stdout (nothing else goes to stdout; notes stay on stderr).
    #[arg(long)]
    pub json: bool,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A path as JSON shows it.
pub fn path_json(path: &Path) -> serde_json::Value {
    serde_json::Value::String(path.to_string_lossy().into_owned())
}

/// Writes a secret file readable by its owner only (0600 from its first byte), refusing to
/// overwrite unless `overwrite`. The file is written whole under a temporary name and renamed into
/// place ([`crate::output`]): an existing file or symlink at `path` is replaced, never written
/// through, and an interrupted write leaves nothing behind.
pub fn write_secret(path: &Path, contents: &[u8], overwrite: bool) -> Result<()> {
    if is_stdio(path) {
        // Not to standard output, and not to a file named `-`, which `-` would read back later.
        anyhow::bail!("a secret is written to a file, never to `-` (standard output)");
    }
    create_parent(path)?;
    if !overwrite && std::fs::symlink_metadata(path).is_ok() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite a key (pass --force to replace it)",
            path.display()
        );
    }
    let mut out = TempOutput::create(path)?;
    out.file()
        .write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    output::commit_all(vec![(out, output::SECRET)], overwrite, false)
}

/// Writes a public file atomically (temporary file + rename), so a reader never sees half of it,
/// replacing what is at `path`. The temporary file has an unpredictable name and is created
/// exclusively (mode 0600 while written), so nothing planted at a predictable name such as
/// `path.tmp` can redirect the write; the file gets mode 0666 less the umask when complete.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let mut out = TempOutput::create(path)?;
    out.file()
        .write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    output::commit_all(vec![(out, output::PUBLIC)], true, false)
}

/// Creates the directory `path` is in, if it names one and it is missing.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Whether `path` is `-`: standard input where a file is read, standard output where one is
/// written.
pub fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Reads a whole input file; `-` reads standard input.
pub fn read_input(path: &Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    if is_stdio(path) {
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading {what} from standard input"))?;
        return Ok(bytes);
    }
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Writes `bytes` to standard output (a command's `--out -`).
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to standard output")
}

/// Refuses `--json` with an output that goes to standard output: both would be on stdout.
pub fn json_or_stdout(json: bool, out: &Path, flag: &str) -> Result<()> {
    if json && is_stdio(out) {
        bail!("{flag} - writes to standard output: --json would be mixed with it; drop one");
    }
    Ok(())
}

/// Reads a text file; `-` reads standard input.
pub fn read_to_string(path: &Path, what: &str) -> Result<String> {
    let bytes = read_input(path, what)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))
}

/// The largest secret file read (an admin token, a key file): far more than any of them holds.
const MAX_SECRET_FILE: u64 = 64 << 10;

/// Reads a file holding a secret (an admin token, a key file; a pipe too, as from `<(pass …)`)
/// into memory that is zeroized when dropped, and never reallocated without zeroizing the old
/// buffer.
pub fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    use std::io::Read;
    let context = || format!("reading {what} {}", path.display());
    let bytes = if is_stdio(path) {
        read_all_zeroizing(
            &mut std::io::stdin().lock().take(MAX_SECRET_FILE + 1),
            4 << 10,
        )
        .with_context(context)?
    } else {
        let file = std::fs::File::open(path).with_context(context)?;
        read_all_zeroizing(&mut file.take(MAX_SECRET_FILE + 1), 4 << 10).with_context(context)?
    };
    if bytes.len() as u64 > MAX_SECRET_FILE {
        bail!(
            "{what} {} is over {MAX_SECRET_FILE} bytes: not a secret file Cordon wrote",
            path.display()
        );
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))?;
    Ok(Zeroizing::new(text.to_string()))
}

/// Everything `input` holds, in memory that is zeroized when dropped: it grows by copying into a
/// new zeroizing buffer (`capacity` bytes at first), so that no reallocation leaves a copy of the
/// secret or plaintext behind.
pub fn read_all_zeroizing(
    input: &mut impl std::io::Read,
    capacity: usize,
) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(capacity.max(1)));
    loop {
        if buf.len() == buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(buf.capacity() * 2));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        let len = buf.len();
        let cap = buf.capacity();
        buf.resize(cap, 0);
        match input.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => return Err(e),
        }
    }
}

/// A memory buffer for plaintext that is zeroized when dropped and never reallocated without
/// zeroizing the old buffer (it grows by copying into a new zeroizing one).
#[derive(Default)]
pub struct ZeroizingSink(pub Zeroizing<Vec<u8>>);

impl std::io::Write for ZeroizingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let needed = self.0.len() + buf.len();
        if needed > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(needed.max(self.0.capacity() * 2)));
            bigger.extend_from_slice(&self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Loads a policy document (a policy and, for clients, its `[endorsements]`) and prints the
/// policy's warnings.
pub fn load_policy_doc(path: &Path, what: &str) -> Result<PolicyDocument> {
    let doc = PolicyDocument::from_toml(&read_to_string(path, what)?)
        .with_context(|| format!("{what} {}", path.display()))?;
    warn(&doc.policy);
    Ok(doc)
}

/// Prints a policy's warnings (what it leaves open) on stderr.
pub fn warn(policy: &Policy) {
    for w in policy.warnings() {
        eprintln!("WARNING: {w}");
    }
}

/// What a line about verified claims adds when they are not hardware-backed: SIMULATED (sim) or
/// EMULATED (a hardware format signed by a test root); nothing for hardware-backed claims.
pub fn provenance(claims: &cordon_attest::Claims) -> &'static str {
    if claims.hardware_backed {
        ""
    } else if claims.is_emulated() {
        " -- EMULATED, NOT hardware-backed"
    } else {
        " -- SIMULATED, NOT hardware-backed"
    }
}

/// The first 16 hex digits of `bytes` (all of them when shorter), for a line that names a key
/// or measurement.
pub fn short_hex(bytes: &[u8]) -> String {
    let mut h = hex::encode(bytes);
    h.truncate(16);
    h
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where Cordon keeps its keys by default: `$XDG_CONFIG_HOME/cordon`, or `~/.config/cordon` when
/// that variable is unset, empty or relative (as the XDG Base Directory specification says).
pub fn config_dir() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute())
        .unwrap_or_else(|| home().join(".config"))
        .join("cordon")
}

/// `~/.cordon`, the default directory of earlier versions: still read, never written.
pub fn legacy_config_dir() -> PathBuf {
    home().join(".cordon")
}

/// The owner key `cordon keygen` writes by default: `owner.key` in [`config_dir`].
pub fn default_owner_key() -> PathBuf {
    config_dir().join("owner.key")
}

/// The simulated hardware key `cordon sim keygen` writes by default: `sim-hardware.key` in
/// [`config_dir`].
pub fn default_sim_hardware_key() -> PathBuf {
    config_dir().join("sim-hardware.key")
}

/// The file to read for a key given as `path`: `path` itself, except when it is the default
/// location in [`config_dir`], missing there, and present in the old `~/.cordon`: then the old
/// one, said on stderr.
pub fn read_location(path: &Path) -> PathBuf {
    let Some(name) = path.file_name() else {
        return path.to_path_buf();
    };
    if path != config_dir().join(name) || std::fs::symlink_metadata(path).is_ok() {
        return path.to_path_buf();
    }
    let old = legacy_config_dir().join(name);
    if std::fs::symlink_metadata(&old).is_ok() {
        eprintln!(
            "note: reading {} from the old default location; move it to {} (the default since \
             Cordon follows XDG_CONFIG_HOME)",
            old.display(),
            path.display()
        );
        return old;
    }
    path.to_path_buf()
}

/// Checks, before a key is made, that neither the key file `key` nor its public key `public`
/// exists (unless `force`): a new key must not replace either without --force.
pub fn check_new_key(key: &Path, public: &Path, force: bool) -> Result<()> {
    for p in [key, public] {
        if !force && std::fs::symlink_metadata(p).is_ok() {
            bail!(
                "{} already exists; refusing to overwrite a key (pass --force to replace it)",
                p.display()
            );
        }
        if std::fs::metadata(p).is_ok_and(|m| m.is_dir()) {
            bail!("{} is a directory", p.display());
        }
    }
    Ok(())
}

/// Refuses to write a new key to the default location `path` while a key of that name is in
/// the old `~/.cordon`, which [`read_location`] would have read: the new key would silently
/// replace it in every later command.
pub fn refuse_shadowing(path: &Path) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Ok(());
    };
    if path != config_dir().join(name) || std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let old = legacy_config_dir().join(name);
    if std::fs::symlink_metadata(&old).is_ok() {
        bail!(
            "{} exists (the old default location, still read): move it to {} to keep using it, \
             or pass --out to write a new key elsewhere",
            old.display(),
            path.display()
        );
    }
    Ok(())
}

/// The key files Cordon writes, by the format marker each carries, and where each one goes.
const KEY_FILE_KINDS: &[(&str, &str)] = &[
    (
        "cordon-owner-key/1",
        "a model owner's secret signing key (from `cordon keygen`; it goes to `seal --owner-key`)",
    ),
    (
        "cordon-dek/1",
        "a sealed artifact's key file (from `seal --key-out`; it goes to `kbs register --key` \
         and `unseal --key`)",
    ),
    (
        "cordon-party-key/1",
        "a training party's secret key (from `party keygen`; it goes to `--party-key`)",
    ),
    (
        cordon_tee::SIM_HARDWARE_KEY_FORMAT,
        "a simulated TEE's SECRET hardware key (from `sim keygen`; it goes to \
         `--sim-hardware-key`; its public half, the .pub file beside it, is the trust anchor)",
    ),
];

/// The format marker of a key file's text (`"format"` of a JSON object), if it has one.
fn key_file_format(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Marker {
        format: String,
    }
    let text = text.trim_start();
    if !text.starts_with('{') {
        return None;
    }
    // Only the marker is read: the other fields (a secret) are skipped unallocated and left to
    // the key's own parser, which zeroizes them.
    serde_json::from_str::<Marker>(text).ok().map(|m| m.format)
}

/// Refuses a key file of another kind than `expected` (a format marker; `None`: a public key,
/// one line of hex), naming what the file is and where it goes instead.
pub fn check_key_file_kind(
    path: &Path,
    text: &str,
    what: &str,
    expected: Option<&str>,
) -> Result<()> {
    // No marker: a public key, or a key file of an older form, which the key's own parser judges.
    let Some(found) = key_file_format(text) else {
        return Ok(());
    };
    if Some(found.as_str()) == expected {
        return Ok(());
    }
    let kind = KEY_FILE_KINDS
        .iter()
        .find(|(f, _)| *f == found)
        .map_or_else(
            || format!("a file of format {found:?}"),
            |(_, d)| d.to_string(),
        );
    bail!("{} is {kind}; expected here: {what}", path.display())
}

/// Reads a secret key file of the kind `format` (see [`check_key_file_kind`]).
pub fn read_key_file(path: &Path, what: &str, format: &str) -> Result<Zeroizing<String>> {
    let text = read_secret(path, what)?;
    check_key_file_kind(path, &text, what, Some(format))?;
    // The one key file without a marker in its older form (one line of hex) is the sim hardware
    // key; a public key has that form too, and is never a secret.
    if key_file_format(&text).is_none() && path.extension().is_some_and(|e| e == "pub") {
        bail!(
            "{} is a public key (one line of hex in a .pub file); expected here: {what}, the \
             secret file beside it",
            path.display()
        );
    }
    Ok(text)
}

/// Refuses a one-line-hex file that is a secret key of the older, unmarked form (a sim hardware
/// key written before key files carried their kind) where a public key is expected: a `.key`
/// file, or one whose `.pub` file beside it holds another value (its public half).
fn check_not_an_unmarked_secret(path: &Path, text: &str, what: &str) -> Result<()> {
    let public = path.with_extension("pub");
    let sibling_differs =
        public != path && std::fs::read_to_string(&public).is_ok_and(|p| p.trim() != text.trim());
    if path.extension().is_some_and(|e| e == "key") || sibling_differs {
        bail!(
            "{} looks like a secret key (a .key file{}), not {what}: pass its public half, {}",
            path.display(),
            if sibling_differs {
                ", with another value in the .pub file beside it"
            } else {
                ""
            },
            public.display()
        );
    }
    Ok(())
}

/// Reads a 32-byte public key written as hex (one line).
pub fn read_public_key(path: &Path, what: &str) -> Result<[u8; 32]> {
    let text = read_secret(path, what)?;
    // A secret key file is never a public key: say which it is (and keep its text out of errors).
    check_key_file_kind(path, &text, what, None)?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{what} {} is not a 32-byte hex public key", path.display()))
}

/// A sim trust anchor: the public half of a simulated TEE's hardware key (`sim keygen`'s .pub
/// file), never the secret itself, in either of its forms.
pub fn read_sim_trust_anchor(path: &Path) -> Result<[u8; 32]> {
    const WHAT: &str = "sim trust anchor";
    let key = read_public_key(path, WHAT)?;
    check_not_an_unmarked_secret(path, &hex::encode(key), WHAT)?;
    Ok(key)
}

/// A KBS identity key given on the command line: 64 hex digits, or the path of a file holding them
/// (as `cordon kbs serve --identity-file` writes it).
pub fn parse_kbs_key(arg: &str) -> Result<[u8; 32]> {
    let arg_hex = arg.trim();
    if arg_hex.len() == 64 && arg_hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        hex::decode_to_slice(arg_hex, &mut key)?;
        return Ok(key);
    }
    read_public_key(Path::new(arg), "KBS identity key").with_context(|| {
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

/// `--ca-cert`: how a client verifies an `https://` server's TLS certificate. Only the transport
/// depends on it: keys and requests are encrypted to pinned or attested keys whatever it says.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CaCertArg {
    /// CA certificate(s) (PEM) trusted for `https://` URLs besides the built-in web PKI roots.
    /// Certificates are always verified; an `https://` URL never falls back to `http://`.
    #[arg(long, env = "CORDON_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

impl CaCertArg {
    pub fn tls(&self) -> Result<cordon_client::ClientTls> {
        Ok(cordon_client::ClientTls::with_extra_ca_file(
            self.ca_cert.as_deref(),
        )?)
    }
}

/// `--tls-cert FILE --tls-key FILE`: serve HTTPS (rustls) instead of plain HTTP.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerTlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first). Needs --tls-key. TLS protects
    /// metadata on the wire; keys and requests are encrypted to attested keys with or without it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, RSA or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The TLS configuration, when asked for; refuses a certificate and key that do not match.
    pub fn load(&self) -> Result<Option<cordon_http::ServerTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(cordon_http::ServerTls::from_pem_files(cert, key)?)),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
    }

    /// `https` or `http`, for the lines that print where a server listens.
    pub fn scheme(&self) -> &'static str {
        if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Says on stderr and in the log that TLS is on, and with which certificate.
    pub fn announce(&self, server: &str) {
        if let Some(cert) = &self.tls_cert {
            eprintln!(
                "{server}: serving HTTPS (TLS certificate {}); TLS protects metadata only, every key and request is encrypted end to end regardless",
                cert.display()
            );
            tracing::info!(certificate = %cert.display(), "{server}: TLS on");
        }
    }
}

/// An Open Inference Protocol infer request read from `path` (`-`: standard input), with Python's
/// `NaN`/`Infinity` literals read as [`cordon_proto::oip::parse_json_body`] reads them, and a
/// structural problem named by its field.
pub fn read_infer_request(path: &Path) -> Result<cordon_proto::oip::InferRequest> {
    use cordon_proto::oip;
    let text = read_to_string(path, "request")?;
    let not_a_request = || {
        format!(
            "{} is not an Open Inference Protocol infer request",
            path.display()
        )
    };
    let value = oip::parse_json_body(text.as_bytes()).with_context(not_a_request)?;
    if let Some(problem) = oip::request_problem(&value) {
        return Err(anyhow::anyhow!(problem).context(not_a_request()));
    }
    serde_json::from_value(value).with_context(not_a_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most three bytes at a time, as a pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn secrets_are_read_whole_through_any_number_of_growths_and_bounded() {
        let text = "a secret token, longer than the first buffer".repeat(10);
        let read = read_all_zeroizing(&mut Trickle(text.as_bytes()), 1).unwrap();
        assert_eq!(read.as_slice(), text.as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("token");
        std::fs::write(&small, &text).unwrap();
        assert_eq!(read_secret(&small, "token").unwrap().as_str(), text);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_SECRET_FILE as usize + 1]).unwrap();
        let err = read_secret(&big, "token").unwrap_err();
        assert!(err.to_string().contains("over 65536 bytes"), "{err}");
    }
}
