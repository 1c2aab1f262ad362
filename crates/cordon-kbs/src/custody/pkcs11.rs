//! The `pkcs11:` KEK: an AES-256 key that never leaves an HSM. Wrapping and unwrapping are
//! `CKM_AES_GCM` operations inside the token; this process holds only a session and a handle.
//!
//! At open: the module (a PKCS#11 shared library) is loaded at run time, the token is found by its
//! label, the user logs in with the PIN read from a private file (zeroized once used), and the
//! key is found by its label among the token's AES secret keys. If there is none it is generated
//! inside the token: `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, for
//! `CKA_ENCRYPT`/`CKA_DECRYPT` only. A key found that could leave the token (extractable, or not
//! sensitive) or that is not 32 bytes is refused.
//!
//! Format: a 12-byte random IV, then what `C_Encrypt` with `CKM_AES_GCM` (128-bit tag, the
//! caller's associated data) returns, `ciphertext ‖ tag`: exactly [`super::aead_wrap`]'s format.
//!
//! The id, `pkcs11:<key label>/<check value>`, names the key without revealing it: the check value
//! is SHA-256 over a GCM encryption, inside the token, of 16 zero bytes under a fixed IV used for
//! nothing else. It is the same for copies of one key in several HSMs of a cluster, and changes
//! whenever another key is behind the label.
//!
//! Limits: the KBS keeps one logged-in session for its life and does not re-open it; if the HSM
//! drops it (restarted, a network HSM's connection lost), wraps fail naming the PKCS#11 error and
//! unwraps fail (the error is logged): restart the KBS. Within one process the PKCS#11 login is
//! shared per token, so a second KEK opened on a token the process is already logged in to does
//! not check its PIN again. The IV is chosen here; an HSM that insists on generating GCM IVs itself
//! (some FIPS modes) refuses `CKM_AES_GCM` at open, and the error says so.

use super::{CustodyError, Kek, UnwrapFailed, WRAP_NONCE_LEN, WRAP_TAG_LEN};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::RawAuthPin;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

/// Where a `pkcs11:` KEK is: the module, the token, the key, the file holding the user PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Location {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    pub pin_file: PathBuf,
}

/// GCM tag length in bits.
const TAG_BITS: u64 = (WRAP_TAG_LEN * 8) as u64;
/// The IV of the key check value, and only of it (wrapping uses random IVs; a collision with this
/// one has probability 2^-96 per wrap).
const CHECK_IV: [u8; WRAP_NONCE_LEN] = [0; WRAP_NONCE_LEN];
const CHECK_AAD: &[u8] = b"cordon-kbs/kek-id/v1\0pkcs11-check-value";

/// The KEK in an HSM (see the module documentation). One logged-in session, used under a lock.
pub struct Pkcs11Kek {
    session: Mutex<Session>,
    key: ObjectHandle,
    id: String,
    location: Pkcs11Location,
}

impl fmt::Debug for Pkcs11Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Kek")
            .field("id", &self.id)
            .field("module", &self.location.module)
            .field("token", &self.location.token_label)
            .finish_non_exhaustive()
    }
}

fn ck(context: impl fmt::Display) -> impl FnOnce(CkError) -> CustodyError {
    move |e| CustodyError::Pkcs11(format!("{context}: {e}"))
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

impl Pkcs11Kek {
    /// Opens the key at `loc`, generating it inside the token if no key has its label yet.
    pub fn open(loc: &Pkcs11Location) -> Result<Pkcs11Kek, CustodyError> {
        let pin = read_pin(&loc.pin_file)?;
        let module = loc.module.display();
        let ctx = loaded_module(&loc.module)?;
        let token = &loc.token_label;
        let slots = ctx
            .get_slots_with_token()
            .map_err(ck(format_args!("module {module}: listing slots")))?;
        let mut matching = Vec::new();
        let mut seen = Vec::new();
        for slot in slots {
            let info = ctx
                .get_token_info(slot)
                .map_err(ck(format_args!("module {module}: C_GetTokenInfo")))?;
            let label = info.label().trim_end().to_string();
            if &label == token {
                matching.push(slot);
            }
            seen.push(label);
        }
        let slot = match matching.as_slice() {
            [slot] => *slot,
            [] => {
                return Err(CustodyError::Pkcs11(format!(
                    "no token labelled {token:?} in module {module} (tokens present: {seen:?})"
                )))
            }
            more => {
                return Err(CustodyError::Pkcs11(format!(
                    "{} tokens labelled {token:?} in module {module}; labels must be unique",
                    more.len()
                )))
            }
        };
        let session = ctx
            .open_rw_session(slot)
            .map_err(ck(format_args!("token {token:?}: opening a session")))?;
        match session.login_with_raw(UserType::User, &pin) {
            Ok(()) => {}
            // Another session of this process is logged in to the token: the login is shared.
            Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => {}
            Err(e) => {
                let why = match rv(&e) {
                    Some(RvError::PinIncorrect) => format!(
                        "the PIN in {} is not the user PIN of token {token:?}",
                        loc.pin_file.display()
                    ),
                    Some(RvError::PinLocked) => {
                        format!("the user PIN of token {token:?} is locked (too many wrong PINs)")
                    }
                    Some(RvError::UserPinNotInitialized) => {
                        format!("token {token:?} has no user PIN yet")
                    }
                    _ => format!("token {token:?}: login as user failed: {e}"),
                };
                return Err(CustodyError::Pkcs11(why));
            }
        }
        drop(pin);
        let key = find_or_generate(&session, loc)?;
        let id = check_value(&session, key)
            .map(|cv| format!("pkcs11:{}/{}", loc.key_label, hex::encode(cv)))
            .map_err(ck(format_args!(
                "key {:?} on token {token:?}: AES-GCM (is CKM_AES_GCM supported?)",
                loc.key_label
            )))?;
        Ok(Pkcs11Kek {
            session: Mutex::new(session),
            key,
            id,
            location: loc.clone(),
        })
    }

    fn session(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves no half-done state we rely on: each operation is
        // one C_Encrypt or C_Decrypt.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The process's handle on the PKCS#11 module at `path`: loaded and `C_Initialize`d once, then kept
/// for the life of the process. PKCS#11 allows one initialisation per process, and SoftHSM (at
/// least) breaks when two threads initialise it at once or when it is unloaded without
/// `C_Finalize` while its crypto library still points into it: so it is never finalised nor
/// unloaded, and every KEK (and every test) shares this handle.
pub fn loaded_module(path: &Path) -> Result<Pkcs11, CustodyError> {
    static LOADED: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());
    let module = path.display();
    if !path.is_file() {
        return Err(CustodyError::Pkcs11(format!(
            "module {module} not found (the PKCS#11 library of the HSM; for SoftHSM2 on \
             Debian, /usr/lib/softhsm/libsofthsm2.so from package softhsm2)"
        )));
    }
    // One entry per library, however it is named (SoftHSM's path on Debian is a link).
    let real = path
        .canonicalize()
        .map_err(|e| CustodyError::Pkcs11(format!("module {module}: {e}")))?;
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, ctx)) = loaded.iter().find(|(p, _)| *p == real) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&real).map_err(ck(format_args!("cannot load module {module}")))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        // Someone else in this process (not through here) initialised it already.
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(ck(format_args!("module {module}: C_Initialize"))(e)),
    }
    loaded.push((real, ctx.clone()));
    Ok(ctx)
}

/// Reads the user PIN: the file's bytes less one trailing newline, from a file private to this
/// user (as a KEK file).
fn read_pin(path: &Path) -> Result<RawAuthPin, CustodyError> {
    let bytes = crate::private_files::read_secret_file(path)
        .map_err(|e| CustodyError::Pkcs11(format!("PIN file {}: {e}", path.display())))?;
    let mut pin: &[u8] = &bytes;
    if let Some(p) = pin.strip_suffix(b"\n") {
        pin = p.strip_suffix(b"\r").unwrap_or(p);
    }
    if pin.is_empty() {
        return Err(CustodyError::Pkcs11(format!(
            "PIN file {} is empty",
            path.display()
        )));
    }
    // The secrecy box zeroizes the copy on drop; `bytes` zeroizes itself.
    Ok(RawAuthPin::new(Box::new(pin.to_vec())))
}

fn find_or_generate(session: &Session, loc: &Pkcs11Location) -> Result<ObjectHandle, CustodyError> {
    let label = &loc.key_label;
    let token = &loc.token_label;
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(ck(format_args!("token {token:?}: finding key {label:?}")))?;
    let key = match found.as_slice() {
        [key] => *key,
        [] => {
            let mut id = [0u8; 16];
            rand::rng().fill_bytes(&mut id);
            let key = session
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Sign(false),
                        Attribute::Verify(false),
                        Attribute::Derive(false),
                        Attribute::Label(label.as_bytes().to_vec()),
                        Attribute::Id(id.to_vec()),
                    ],
                )
                .map_err(ck(format_args!(
                    "token {token:?}: generating AES-256 key {label:?}"
                )))?;
            tracing::info!(token = %token, key = %label, "generated a new KEK inside the HSM");
            key
        }
        more => {
            return Err(CustodyError::Pkcs11(format!(
                "token {token:?} has {} AES keys labelled {label:?}; labels must be unique",
                more.len()
            )))
        }
    };
    check_key(session, key, loc)?;
    Ok(key)
}

/// Refuses a key that could leave the token or is not AES-256.
fn check_key(
    session: &Session,
    key: ObjectHandle,
    loc: &Pkcs11Location,
) -> Result<(), CustodyError> {
    let what = format!("key {:?} on token {:?}", loc.key_label, loc.token_label);
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::ValueLen,
            ],
        )
        .map_err(ck(format_args!("{what}: reading its attributes")))?;
    let (mut sensitive, mut extractable, mut len) = (None, None, None);
    for a in attrs {
        match a {
            Attribute::Sensitive(v) => sensitive = Some(v),
            Attribute::Extractable(v) => extractable = Some(v),
            Attribute::ValueLen(v) => len = Some(u64::from(v)),
            _ => {}
        }
    }
    let refuse = |why: &str| {
        Err(CustodyError::Pkcs11(format!(
            "{what}: {why}; refused as KEK"
        )))
    };
    if sensitive != Some(true) {
        return refuse("is not CKA_SENSITIVE (its value can be read out)");
    }
    if extractable != Some(false) {
        return refuse("is CKA_EXTRACTABLE (it can be wrapped out of the token)");
    }
    if len != Some(32) {
        return refuse(&format!("is {len:?} bytes, not AES-256 (32)"));
    }
    Ok(())
}

/// The key check value: SHA-256 (domain-separated) of the GCM encryption, in the token, of 16 zero
/// bytes under [`CHECK_IV`] and [`CHECK_AAD`]; 16 bytes.
fn check_value(session: &Session, key: ObjectHandle) -> Result<[u8; 16], CkError> {
    let mut iv = CHECK_IV;
    let params = GcmParams::new(&mut iv, CHECK_AAD, TAG_BITS.into())?;
    let out = session.encrypt(&Mechanism::AesGcm(params), key, &[0u8; 16])?;
    let mut h = Sha256::new();
    h.update(b"cordon-kbs/kek-id/v1\0pkcs11\0");
    h.update(&out);
    let mut cv = [0u8; 16];
    cv.copy_from_slice(&h.finalize()[..16]);
    Ok(cv)
}

impl Kek for Pkcs11Kek {
    fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CustodyError> {
        let mut iv = [0u8; WRAP_NONCE_LEN];
        rand::rng().fill_bytes(&mut iv);
        let mut iv_param = iv;
        let params = GcmParams::new(&mut iv_param, aad, TAG_BITS.into())
            .map_err(ck("AES-GCM parameters"))?;
        let sealed = self
            .session()
            .encrypt(&Mechanism::AesGcm(params), self.key, secret)
            .map_err(ck(format_args!("wrapping under {}", self.id)))?;
        if sealed.len() != secret.len() + WRAP_TAG_LEN {
            return Err(CustodyError::Pkcs11(format!(
                "wrapping under {}: the token returned {} bytes for {} bytes of input, \
                 expected ciphertext and a 16-byte tag",
                self.id,
                sealed.len(),
                secret.len()
            )));
        }
        let mut out = Vec::with_capacity(WRAP_NONCE_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapFailed> {
        if wrapped.len() < WRAP_NONCE_LEN + WRAP_TAG_LEN {
            return Err(UnwrapFailed);
        }
        let (iv, sealed) = wrapped.split_at(WRAP_NONCE_LEN);
        let mut iv: [u8; WRAP_NONCE_LEN] = iv.try_into().map_err(|_| UnwrapFailed)?;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|_| UnwrapFailed)?;
        match self
            .session()
            .decrypt(&Mechanism::AesGcm(params), self.key, sealed)
        {
            Ok(plain) => Ok(Zeroizing::new(plain)),
            Err(e) => {
                // A wrong tag is the expected failure; anything else (the HSM gone, a closed
                // session) is worth an operator's attention. Neither names anything secret.
                match rv(&e) {
                    Some(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange) => {
                        tracing::debug!(kek = %self.id, "unwrap failed: {e}")
                    }
                    _ => tracing::warn!(kek = %self.id, "HSM error while unwrapping: {e}"),
                }
                Err(UnwrapFailed)
            }
        }
    }
}
