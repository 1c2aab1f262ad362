//! Key custody: the root key-encryption key (KEK) that wraps every secret the KBS stores (each
//! DEK, the seed of its HPKE identity). Nothing secret is written unwrapped; the KEK itself is
//! never in the store.
//!
//! Where the KEK lives is a [`Kek`] provider, chosen at `kbs serve` (`--kek`, [`KekSpec`]):
//! - `file:PATH`: 32 random bytes in a 0600 file outside the data directory ([`FileKek`]), for
//!   development and `quickstart`: whoever reads both the file and the store reads the keys;
//! - `pkcs11:module=LIB;token=LABEL;key=LABEL;pin-file=PATH`: an AES key that never leaves an HSM
//!   (wrapping is done inside it; [`Pkcs11Kek`]);
//! - `sev-snp:[DEVICE][;bind-tcb]`: a key the SEV-SNP firmware derives for this KBS's measurement
//!   and policy (`MSG_KEY_REQ`), so only the same code in a TEE on the same chip can unwrap
//!   ([`SevSnpKek`]).
//!
//! `docs/deployment.md` ("Key custody") says how to set each up and what each protects against.
//!
//! Wrapped format (all providers): `nonce (12) ‖ AES-256-GCM ciphertext ‖ tag (16)`, with
//! [`wrap_aad`] (the slot and the entry's name) as associated data, so a wrapped DEK moved to
//! another key id, or into the identity slot, does not unwrap.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use zeroize::Zeroizing;

mod pkcs11;
mod sev_snp;

pub use pkcs11::{loaded_module, Pkcs11Kek, Pkcs11Location};
pub use sev_snp::{derived_key_request, DerivedKeySource, PlatformKeyState, SevSnpKek};

/// Bytes of the GCM nonce that starts every wrapped secret.
pub const WRAP_NONCE_LEN: usize = 12;
/// Bytes of the GCM tag that ends every wrapped secret.
pub const WRAP_TAG_LEN: usize = 16;

#[derive(Debug, Error)]
pub enum CustodyError {
    #[error("KEK file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("KEK specification {spec:?}: {reason}")]
    Spec { spec: String, reason: String },
    #[error("wrapped {slot} {name:?} does not unwrap under KEK {kek_id}: tampered, moved, or wrapped by another KEK")]
    Unwrap {
        slot: &'static str,
        name: String,
        kek_id: String,
    },
    #[error("wrapped {slot} {name:?} is {len} bytes, too short to be wrapped")]
    Truncated {
        slot: &'static str,
        name: String,
        len: usize,
    },
    #[error("HSM (PKCS#11): {0}")]
    Pkcs11(String),
    #[error("TEE-derived KEK: {0}")]
    Tee(String),
}

/// What a wrapped secret is: part of its associated data, so one slot's entry never opens as
/// another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A data encryption key, named by its key id.
    Dek,
    /// The seed of the KBS's HPKE identity (named by its generation).
    IdentitySeed,
}

impl Slot {
    pub fn label(self) -> &'static str {
        match self {
            Slot::Dek => "dek",
            Slot::IdentitySeed => "identity-seed",
        }
    }
}

/// The associated data of a wrapped secret: a domain label, the slot, the entry's name.
pub fn wrap_aad(slot: Slot, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + name.len());
    aad.extend_from_slice(b"cordon-kbs/kek-wrap/v1\0");
    aad.extend_from_slice(slot.label().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// The name a DEK is wrapped under: its key id **and what governs its release** — its kind, its
/// owner and the SHA-256 of its release policy. The host can write the store; with these in the
/// associated data, a policy loosened, an owner or kind changed, or a DEK moved to another row in
/// the store makes the DEK fail to unwrap instead of being released under the host's terms. Each
/// field is length-prefixed, so no two rows share a name.
pub fn dek_binding(key_id: &str, kind: &str, owner: Option<&[u8]>, policy: &str) -> String {
    let owner = owner.map(hex::encode).unwrap_or_default();
    let policy = hex::encode(Sha256::digest(policy.as_bytes()));
    format!(
        "{}:{key_id}|kind {}:{kind}|owner {}:{owner}|policy-sha256 {policy}",
        key_id.len(),
        kind.len(),
        owner.len()
    )
}

/// A key-encryption key. Implementations may never hold the key in this process (an HSM, the
/// TEE's firmware); they only wrap and unwrap.
pub trait Kek: Send + Sync {
    /// Names this KEK in the store (`file:…`, `pkcs11:…`, `sev-snp:…`): which KEK wrapped an
    /// entry. Not secret; the same across restarts; different for different keys.
    fn id(&self) -> &str;

    /// Wraps `secret` with `aad` as associated data: `nonce ‖ ciphertext ‖ tag`.
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError>;

    /// Unwraps what [`Kek::wrap`] returned with the same `aad`; fails on any other input. The
    /// error names nothing secret; the caller adds the slot and name.
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed>;
}

/// A wrapped secret that does not open: tampered, truncated, or wrapped under another key or
/// associated data. Deliberately without detail (AES-GCM gives none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("wrapped secret does not unwrap")]
pub struct UnwrapFailed;

/// AES-256-GCM wrapping with a key held in this process (the file and TEE providers).
pub fn aead_wrap(key: &[u8; 32], aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
    let cipher = Aes256Gcm::new(key.into());
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    // Fails only past AES-GCM's length limit (64 GiB): an error, never a blob that cannot open.
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad })
        .map_err(|_| CustodyError::Spec {
            spec: "aes-256-gcm".into(),
            reason: format!("cannot wrap a secret of {} bytes", secret.len()),
        })?;
    let mut out = Vec::with_capacity(WRAP_NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`aead_wrap`] made under the same key and `aad`.
pub fn aead_unwrap(
    key: &[u8; 32],
    aad: &[u8],
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed> {
    if wrapped.len() < WRAP_NONCE_LEN + WRAP_TAG_LEN {
        return Err(UnwrapFailed);
    }
    let (nonce, sealed) = wrapped.split_at(WRAP_NONCE_LEN);
    Aes256Gcm::new(key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| UnwrapFailed)
}

/// A KEK id from the key itself: a label and the first 16 bytes of a domain-separated SHA-256,
/// which names the key without revealing it.
pub fn key_fingerprint(provider: &str, key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"cordon-kbs/kek-id/v1\0");
    h.update(key);
    format!("{provider}:{}", hex::encode(&h.finalize()[..16]))
}

/// The KEK in a file: 32 random bytes, mode 0600, created once (never overwritten).
pub struct FileKek {
    key: Zeroizing<[u8; 32]>,
    id: String,
    path: PathBuf,
}

impl fmt::Debug for FileKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKek")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKek {
    /// Reads the KEK at `path`, or creates it (32 fresh random bytes, 0600) if absent. The file
    /// must be exactly 32 bytes and private to this user.
    pub fn open_or_create(path: &Path) -> Result<FileKek, CustodyError> {
        let err = |reason: String| CustodyError::File {
            path: path.display().to_string(),
            reason,
        };
        match crate::private_files::create_secret_file(path) {
            Ok(Some(mut f)) => {
                let mut key = Zeroizing::new([0u8; 32]);
                rand::rng().fill_bytes(key.as_mut());
                use std::io::Write;
                f.write_all(key.as_ref())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| err(format!("cannot write: {e}")))?;
                crate::private_files::sync_parent(path);
                tracing::info!(path = %path.display(), "created a new key-encryption key file");
                Ok(FileKek::from_key(key, path))
            }
            Ok(None) => FileKek::open(path),
            Err(e) => Err(err(format!("cannot create: {e}"))),
        }
    }

    /// Reads an existing KEK file.
    pub fn open(path: &Path) -> Result<FileKek, CustodyError> {
        let err = |reason: String| CustodyError::File {
            path: path.display().to_string(),
            reason,
        };
        let bytes = crate::private_files::read_secret_file(path).map_err(|e| err(e.to_string()))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            err(format!(
                "is {} bytes; a KEK file holds exactly 32",
                bytes.len()
            ))
        })?;
        Ok(FileKek::from_key(Zeroizing::new(key), path))
    }

    fn from_key(key: Zeroizing<[u8; 32]>, path: &Path) -> FileKek {
        let id = key_fingerprint("file", &key);
        FileKek {
            key,
            id,
            path: path.to_path_buf(),
        }
    }
}

impl Kek for FileKek {
    fn id(&self) -> &str {
        &self.id
    }
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
        aead_wrap(&self.key, aad, secret)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed> {
        aead_unwrap(&self.key, aad, wrapped)
    }
}

/// A KEK held only in this process's memory: whatever it wraps is unreadable once the process
/// ends. For tests and benchmarks (`cordon bench kbs`), never offered by [`KekSpec`].
pub struct MemoryKek {
    key: Zeroizing<[u8; 32]>,
    id: String,
}

impl MemoryKek {
    pub fn new(key: [u8; 32]) -> MemoryKek {
        let key = Zeroizing::new(key);
        let id = key_fingerprint("memory", &key);
        MemoryKek { key, id }
    }

    pub fn generate() -> MemoryKek {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let kek = MemoryKek::new(key);
        zeroize::Zeroize::zeroize(&mut key);
        kek
    }
}

impl fmt::Debug for MemoryKek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek for MemoryKek {
    fn id(&self) -> &str {
        &self.id
    }
    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
        aead_wrap(&self.key, aad, secret)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed> {
        aead_unwrap(&self.key, aad, wrapped)
    }
}

/// The KEKs a store is opened with: `current` wraps everything written; `previous`, during a
/// rotation, still unwraps what it wrapped until `rotate-kek` has re-wrapped it all.
#[derive(Clone)]
pub struct Keks {
    pub current: Arc<dyn Kek>,
    pub previous: Option<Arc<dyn Kek>>,
}

impl Keks {
    pub fn new(current: Arc<dyn Kek>) -> Keks {
        Keks {
            current,
            previous: None,
        }
    }

    /// The ids of the KEKs given, for errors.
    pub fn describe(&self) -> String {
        match &self.previous {
            Some(p) => format!("{} and previous {}", self.current.id(), p.id()),
            None => self.current.id().to_string(),
        }
    }
}

impl fmt::Debug for Keks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Where the KEK lives, as given on the command line:
/// - `file:PATH`;
/// - `pkcs11:module=LIB;token=LABEL;key=LABEL;pin-file=PATH` (all four, in any order; the PIN is
///   only ever read from the file; `;` cannot appear in a value);
/// - `sev-snp:` (the default device, `/dev/sev-guest`), `sev-snp:DEVICE` or
///   `sev-snp:device=DEVICE`, each optionally followed by `;bind-tcb` (also `sev-snp:bind-tcb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KekSpec {
    File(PathBuf),
    Pkcs11 {
        module: PathBuf,
        token_label: String,
        key_label: String,
        pin_file: PathBuf,
    },
    SevSnp {
        device: PathBuf,
        bind_tcb: bool,
    },
}

const SPEC_FORMS: &str = "one of file:PATH, \
    pkcs11:module=LIB;token=LABEL;key=LABEL;pin-file=PATH, sev-snp:[DEVICE][;bind-tcb]";

impl KekSpec {
    pub fn parse(spec: &str) -> Result<KekSpec, CustodyError> {
        let bad = |reason: &str| CustodyError::Spec {
            spec: redact_pin(spec),
            reason: reason.to_string(),
        };
        let (scheme, rest) = spec
            .split_once(':')
            .ok_or_else(|| bad(&format!("expected SCHEME:…, {SPEC_FORMS}")))?;
        match scheme {
            "file" if !rest.is_empty() => Ok(KekSpec::File(PathBuf::from(rest))),
            "file" => Err(bad("file: needs a path")),
            "pkcs11" => parse_pkcs11(rest).map_err(|r| bad(&r)),
            "sev-snp" => parse_sev_snp(rest).map_err(|r| bad(&r)),
            _ => Err(bad(&format!("unknown KEK provider; expected {SPEC_FORMS}"))),
        }
    }

    /// The default for a data directory: `file:` beside it (`DIR.kek`), never inside it, so
    /// that a copy of the data directory alone holds no readable key.
    pub fn default_for(data_dir: &Path) -> KekSpec {
        let mut name = data_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "kbs".into());
        name.push(".kek");
        KekSpec::File(data_dir.with_file_name(name))
    }

    /// Opens (or, for `file:`, creates; for `pkcs11:`, generates in the token) the KEK.
    /// Like [`KekSpec::open`], but a file KEK must exist already: for the KEK a store is wrapped
    /// under now, where a mistyped path must not create a fresh key.
    pub fn open_existing(&self) -> Result<Arc<dyn Kek>, CustodyError> {
        match self {
            KekSpec::File(path) => Ok(Arc::new(FileKek::open(path)?)),
            other => other.open(),
        }
    }

    pub fn open(&self) -> Result<Arc<dyn Kek>, CustodyError> {
        match self {
            KekSpec::File(path) => Ok(Arc::new(FileKek::open_or_create(path)?)),
            KekSpec::Pkcs11 {
                module,
                token_label,
                key_label,
                pin_file,
            } => Ok(Arc::new(Pkcs11Kek::open(&Pkcs11Location {
                module: module.clone(),
                token_label: token_label.clone(),
                key_label: key_label.clone(),
                pin_file: pin_file.clone(),
            })?)),
            KekSpec::SevSnp { device, bind_tcb } => Ok(Arc::new(SevSnpKek::open(
                &cordon_tee::SevGuest::new(device),
                *bind_tcb,
            )?)),
        }
    }
}

/// `spec` with the value of any item that looks like a PIN (`pin=`, `pin-value=`, `pin-source=`)
/// replaced, so that the error refusing it does not carry the PIN into logs.
fn redact_pin(spec: &str) -> String {
    // The scheme is split off once (a value may hold ':'); any item whose name mentions a PIN,
    // in any case, except the file that holds it, loses its value.
    let (scheme, rest) = spec.split_once(':').unwrap_or(("", spec));
    let items = rest
        .split(';')
        .map(|item| match item.split_once('=') {
            Some((name, _))
                if name.to_ascii_lowercase().contains("pin")
                    && !name.eq_ignore_ascii_case("pin-file") =>
            {
                format!("{name}=<redacted>")
            }
            Some(_) => item.to_string(),
            // No name: it may be a PIN pasted on its own.
            None if !item.is_empty() && !item.starts_with('/') => "<redacted>".to_string(),
            None => item.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";");
    if scheme.is_empty() {
        items
    } else {
        format!("{scheme}:{items}")
    }
}

/// `module=…;token=…;key=…;pin-file=…`.
fn parse_pkcs11(rest: &str) -> Result<KekSpec, String> {
    let (mut module, mut token, mut key, mut pin_file) = (None, None, None, None);
    for item in rest.split(';') {
        let (name, value) = item.split_once('=').ok_or_else(|| {
            format!("pkcs11: expected NAME=VALUE items separated by ';', got {item:?}")
        })?;
        if value.is_empty() {
            return Err(format!("pkcs11: {name}= is empty"));
        }
        let slot = match name {
            "module" => &mut module,
            "token" => &mut token,
            "key" => &mut key,
            "pin-file" => &mut pin_file,
            n if n.to_ascii_lowercase().contains("pin") => {
                return Err(
                    "pkcs11: the PIN is read from a file (pin-file=PATH), never given on \
                     the command line"
                        .into(),
                )
            }
            other => {
                return Err(format!(
                    "pkcs11: unknown item {other:?}; expected module=, token=, key=, pin-file="
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(format!("pkcs11: {name}= is given twice"));
        }
    }
    fn need<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str, String> {
        v.ok_or_else(|| {
            format!(
                "pkcs11: {name}= is missing; all of module=, token=, key=, pin-file= are needed"
            )
        })
    }
    Ok(KekSpec::Pkcs11 {
        module: PathBuf::from(need(module, "module")?),
        token_label: need(token, "token")?.to_string(),
        key_label: need(key, "key")?.to_string(),
        pin_file: PathBuf::from(need(pin_file, "pin-file")?),
    })
}

/// `[DEVICE | device=DEVICE][;bind-tcb]`.
fn parse_sev_snp(rest: &str) -> Result<KekSpec, String> {
    let mut device: Option<PathBuf> = None;
    let mut bind_tcb = false;
    for (i, item) in rest.split(';').enumerate() {
        let path = if let Some(p) = item.strip_prefix("device=") {
            Some(p)
        } else if item.starts_with('/') && i == 0 {
            Some(item)
        } else {
            None
        };
        match (item, path) {
            ("", None) if i == 0 => {}
            ("bind-tcb", None) if !bind_tcb => bind_tcb = true,
            ("bind-tcb", None) => return Err("sev-snp: bind-tcb is given twice".into()),
            (_, Some("")) => return Err("sev-snp: device= is empty".into()),
            (_, Some(p)) if device.is_none() => device = Some(PathBuf::from(p)),
            (_, Some(_)) => return Err("sev-snp: the device is given twice".into()),
            (other, None) => {
                return Err(format!(
                    "sev-snp: unknown item {other:?}; expected an absolute device path, \
                     device=PATH or bind-tcb"
                ))
            }
        }
    }
    Ok(KekSpec::SevSnp {
        device: device.unwrap_or_else(|| PathBuf::from(cordon_tee::SevGuest::DEFAULT_PATH)),
        bind_tcb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dek_is_bound_to_its_policy_kind_and_owner() {
        let key = [7u8; 32];
        let name = dek_binding("k", "dataset", Some(&[1; 32]), "p = 1");
        let w = aead_wrap(&key, &wrap_aad(Slot::Dek, &name), b"dek").unwrap();
        assert!(aead_unwrap(&key, &wrap_aad(Slot::Dek, &name), &w).is_ok());
        for other in [
            dek_binding("k", "dataset", Some(&[1; 32]), "p = 2"),
            dek_binding("k", "admin", Some(&[1; 32]), "p = 1"),
            dek_binding("k", "dataset", Some(&[2; 32]), "p = 1"),
            dek_binding("k", "dataset", None, "p = 1"),
            dek_binding("k2", "dataset", Some(&[1; 32]), "p = 1"),
        ] {
            assert_ne!(other, name);
            assert!(aead_unwrap(&key, &wrap_aad(Slot::Dek, &other), &w).is_err());
        }
    }

    #[test]
    fn wrap_binds_slot_and_name() {
        let key = [7u8; 32];
        let w = aead_wrap(&key, &wrap_aad(Slot::Dek, "a"), b"secret").unwrap();
        assert_eq!(
            aead_unwrap(&key, &wrap_aad(Slot::Dek, "a"), &w)
                .unwrap()
                .as_slice(),
            b"secret"
        );
        assert!(aead_unwrap(&key, &wrap_aad(Slot::Dek, "b"), &w).is_err());
        assert!(aead_unwrap(&key, &wrap_aad(Slot::IdentitySeed, "a"), &w).is_err());
        assert!(aead_unwrap(&[8u8; 32], &wrap_aad(Slot::Dek, "a"), &w).is_err());
        for cut in 0..w.len() {
            assert!(aead_unwrap(&key, &wrap_aad(Slot::Dek, "a"), &w[..cut]).is_err());
        }
        let mut flipped = w.clone();
        flipped[WRAP_NONCE_LEN + 1] ^= 1;
        assert!(aead_unwrap(&key, &wrap_aad(Slot::Dek, "a"), &flipped).is_err());
    }

    #[test]
    fn file_kek_is_created_private_once_and_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.kek");
        let a = FileKek::open_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = FileKek::open_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        let w = a.wrap(b"aad", b"x").unwrap();
        assert_eq!(b.unwrap(b"aad", &w).unwrap().as_slice(), b"x");
        // A different key has a different id.
        let c = FileKek::open_or_create(&dir.path().join("other.kek")).unwrap();
        assert_ne!(a.id(), c.id());
        assert!(format!("{a:?}").contains("FileKek") && !format!("{a:?}").contains("key:"));
    }

    #[test]
    fn a_kek_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.kek");
        std::fs::write(&path, [1u8; 31]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = FileKek::open(&path).unwrap_err().to_string();
        assert!(e.contains("31 bytes"), "{e}");
    }

    #[test]
    fn specs_parse_and_default_beside_the_data_directory() {
        assert_eq!(
            KekSpec::parse("file:/x/y.kek").unwrap(),
            KekSpec::File("/x/y.kek".into())
        );
        assert!(KekSpec::parse("file:").is_err());
        assert!(KekSpec::parse("vault:x").is_err());
        assert!(KekSpec::parse("nocolon").is_err());
        assert_eq!(
            KekSpec::default_for(Path::new("/srv/kbs-data")),
            KekSpec::File("/srv/kbs-data.kek".into())
        );
    }

    fn spec_error(spec: &str) -> String {
        match KekSpec::parse(spec) {
            Err(e @ CustodyError::Spec { .. }) => e.to_string(),
            other => panic!("{spec:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn pkcs11_specs_parse() {
        let want = KekSpec::Pkcs11 {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "cordon".into(),
            key_label: "cordon-kek".into(),
            pin_file: "/etc/cordon/hsm.pin".into(),
        };
        assert_eq!(
            KekSpec::parse(
                "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=cordon;key=cordon-kek;\
                 pin-file=/etc/cordon/hsm.pin"
            )
            .unwrap(),
            want
        );
        // Any order; labels may hold spaces and '='.
        assert_eq!(
            KekSpec::parse("pkcs11:pin-file=/p;key=k=1;token=my token;module=/m.so").unwrap(),
            KekSpec::Pkcs11 {
                module: "/m.so".into(),
                token_label: "my token".into(),
                key_label: "k=1".into(),
                pin_file: "/p".into(),
            }
        );
    }

    #[test]
    fn bad_pkcs11_specs_say_what_is_wrong() {
        let full = "module=/m.so;token=t;key=k;pin-file=/p";
        for (spec, says) in [
            ("pkcs11:".to_string(), "expected NAME=VALUE"),
            (
                "pkcs11:token=t;key=k;pin-file=/p".into(),
                "module= is missing",
            ),
            (
                "pkcs11:module=/m.so;key=k;pin-file=/p".into(),
                "token= is missing",
            ),
            (
                "pkcs11:module=/m.so;token=t;pin-file=/p".into(),
                "key= is missing",
            ),
            (
                "pkcs11:module=/m.so;token=t;key=k".into(),
                "pin-file= is missing",
            ),
            (
                format!("pkcs11:{full};pin=1234"),
                "never given on the command line",
            ),
            (format!("pkcs11:{full};token=u"), "token= is given twice"),
            (format!("pkcs11:{full};slot=0"), "unknown item \"slot\""),
            (
                "pkcs11:module=;token=t;key=k;pin-file=/p".into(),
                "module= is empty",
            ),
            (format!("pkcs11:{full};"), "expected NAME=VALUE"),
        ] {
            let e = spec_error(&spec);
            assert!(e.contains(says), "{spec:?}: {e}");
        }
        // The PIN's value is not echoed back beyond the spec the user typed.
        // The PIN given by mistake is not echoed back, wherever the item is.
        for spec in [
            format!("pkcs11:{full};pin=s3cret"),
            format!("pkcs11:pin=s3cret;{full}"),
            format!("pkcs11:{full};pin-value=s3cret"),
        ] {
            let e = spec_error(&spec);
            assert!(!e.contains("s3cret") && e.contains("<redacted>"), "{e}");
        }
    }

    #[test]
    fn sev_snp_specs_parse() {
        let snp = |device: &str, bind_tcb| KekSpec::SevSnp {
            device: device.into(),
            bind_tcb,
        };
        for (spec, want) in [
            ("sev-snp:", snp("/dev/sev-guest", false)),
            ("sev-snp:/dev/sev-guest", snp("/dev/sev-guest", false)),
            ("sev-snp:/dev/other", snp("/dev/other", false)),
            ("sev-snp:device=/dev/other", snp("/dev/other", false)),
            ("sev-snp:bind-tcb", snp("/dev/sev-guest", true)),
            ("sev-snp:;bind-tcb", snp("/dev/sev-guest", true)),
            ("sev-snp:/dev/x;bind-tcb", snp("/dev/x", true)),
            ("sev-snp:bind-tcb;device=/dev/x", snp("/dev/x", true)),
        ] {
            assert_eq!(KekSpec::parse(spec).unwrap(), want, "{spec}");
        }
        for (spec, says) in [
            ("sev-snp:dev/sev-guest", "unknown item"),
            ("sev-snp:tcb", "unknown item \"tcb\""),
            ("sev-snp:bind-tcb;bind-tcb", "bind-tcb is given twice"),
            ("sev-snp:/dev/a;device=/dev/b", "the device is given twice"),
            ("sev-snp:device=", "device= is empty"),
            ("sev-snp:bind-tcb;/dev/x", "unknown item"),
            ("sgx:", "unknown KEK provider"),
        ] {
            let e = spec_error(spec);
            assert!(e.contains(says), "{spec:?}: {e}");
        }
    }

    struct OpenErr(KekSpec);
    impl OpenErr {
        fn open_err(&self) -> CustodyError {
            match self.0.open() {
                Err(e) => e,
                Ok(k) => panic!("{:?} opened as {}", self.0, k.id()),
            }
        }
    }

    #[test]
    fn opening_a_pkcs11_spec_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let spec = |module: &Path, pin_file: &Path| {
            OpenErr(KekSpec::Pkcs11 {
                module: module.into(),
                token_label: "t".into(),
                key_label: "k".into(),
                pin_file: pin_file.into(),
            })
        };
        let absent = dir.path().join("libabsent.so");
        let e = spec(&absent, &pin).open_err();
        assert!(matches!(e, CustodyError::Pkcs11(_)), "{e}");
        assert!(
            e.to_string().contains("libabsent.so") && e.to_string().contains("not found"),
            "{e}"
        );
        // A file that is not a shared library.
        let e = spec(&pin, &pin).open_err().to_string();
        assert!(e.contains("cannot load module"), "{e}");
        // A missing PIN file is named before anything is loaded.
        let e = spec(&absent, &dir.path().join("nopin"))
            .open_err()
            .to_string();
        assert!(e.contains("PIN file") && e.contains("nopin"), "{e}");
        // An empty one is refused.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let e = spec(&absent, &empty).open_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }
}
