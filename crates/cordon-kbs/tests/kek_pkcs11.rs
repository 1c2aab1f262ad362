//! The `pkcs11:` KEK against SoftHSM2: a throwaway SoftHSM2 configuration and token directory
//! (SOFTHSM2_CONF, set once for this test process before the module is loaded), tokens made with
//! `softhsm2-util --init-token`, then wrap/unwrap, non-extractability, tampering, a second open.
//!
//! Never skipped: without SoftHSM2 these tests fail, saying how to install it (Debian package
//! `softhsm2`; `.ci/run` installs it). `CORDON_TEST_PKCS11_MODULE` names the module when it is not
//! at /usr/lib/softhsm/libsofthsm2.so, `CORDON_TEST_SOFTHSM2_UTIL` the tool when not on PATH.

use cordon_kbs::custody::{
    aead_unwrap, loaded_module, wrap_aad, CustodyError, Kek, KekSpec, Pkcs11Kek, Pkcs11Location,
    Slot, UnwrapFailed,
};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const SO_PIN: &str = "so-pin-1234";
const USER_PIN: &str = "user-pin-5678";

/// One SoftHSM2 configuration for the whole test process (SoftHSM reads SOFTHSM2_CONF once, when
/// the module is initialised), with one token per test, made before any test loads the module.
struct Hsm {
    dir: PathBuf,
    module: PathBuf,
    pin_file: PathBuf,
    wrong_pin_file: PathBuf,
}

const TOKENS: &[&str] = &[
    "wrap",
    "reopen",
    "extract",
    "wrong-pin",
    "extractable-key",
    "format",
    "spec",
];

fn hsm() -> &'static Hsm {
    static HSM: OnceLock<Hsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = std::env::var_os("CORDON_TEST_PKCS11_MODULE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
        assert!(
            module.is_file(),
            "the SoftHSM2 PKCS#11 module is not at {}: install SoftHSM2 (Debian/Ubuntu: \
             `apt-get install softhsm2`; .ci/run does) or set CORDON_TEST_PKCS11_MODULE to its path",
            module.display()
        );
        let util = std::env::var_os("CORDON_TEST_SOFTHSM2_UTIL")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("softhsm2-util"));
        // Under the target directory, one per test process; a static is never dropped, so the
        // directories of processes that have exited are removed here instead.
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(base).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("softhsm-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("softhsm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        // Set before the module is first loaded (every test comes through here first); nothing
        // else in this process reads the environment meanwhile.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in TOKENS {
            let out = Command::new(&util)
                .env("SOFTHSM2_CONF", &conf)
                .args(["--init-token", "--free", "--label", label])
                .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run {} ({e}): install SoftHSM2 (`apt-get install softhsm2`) or \
                         set CORDON_TEST_SOFTHSM2_UTIL",
                        util.display()
                    )
                });
            assert!(
                out.status.success(),
                "softhsm2-util --init-token {label}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let private = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        Hsm {
            module,
            pin_file: private("user.pin", &format!("{USER_PIN}\n")),
            wrong_pin_file: private("wrong.pin", "not-the-pin\n"),
            dir,
        }
    })
}

fn location(token: &str, key: &str) -> Pkcs11Location {
    let h = hsm();
    Pkcs11Location {
        module: h.module.clone(),
        token_label: token.into(),
        key_label: key.into(),
        pin_file: h.pin_file.clone(),
    }
}

fn open_err(loc: &Pkcs11Location) -> String {
    match Pkcs11Kek::open(loc) {
        Err(e @ CustodyError::Pkcs11(_)) => e.to_string(),
        Err(e) => panic!("not a PKCS#11 error: {e}"),
        Ok(k) => panic!("opened {}", k.id()),
    }
}

/// A session of our own on `token`, logged in as user, to look at what the KEK left there.
fn inspect(token: &str) -> Session {
    // The module as the KEKs have it: loaded and initialised once per process.
    let ctx = loaded_module(&hsm().module).unwrap();
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == token)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    match s.login(UserType::User, Some(&AuthPin::from(USER_PIN))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    s
}

#[test]
fn wraps_and_unwraps_inside_the_token_and_refuses_tampering() {
    let kek = Pkcs11Kek::open(&location("wrap", "cordon-kek")).unwrap();
    assert!(kek.id().starts_with("pkcs11:cordon-kek/"), "{}", kek.id());
    let aad = wrap_aad(Slot::Dek, "model-key");
    let secret = [0x42u8; 32];
    let w = kek.wrap(&aad, &secret).unwrap();
    assert_eq!(w.len(), 12 + 32 + 16);
    assert_eq!(kek.unwrap(&aad, &w).unwrap().as_slice(), &secret);
    // Fresh IVs: wrapping twice gives two different blobs that both open.
    let w2 = kek.wrap(&aad, &secret).unwrap();
    assert_ne!(w, w2);
    assert_eq!(kek.unwrap(&aad, &w2).unwrap().as_slice(), &secret);

    // Another name or slot in the AAD, any flipped bit, any truncation: refused.
    assert_eq!(
        kek.unwrap(&wrap_aad(Slot::Dek, "other"), &w),
        Err(UnwrapFailed)
    );
    assert_eq!(
        kek.unwrap(&wrap_aad(Slot::IdentitySeed, "model-key"), &w),
        Err(UnwrapFailed)
    );
    for i in [0, 11, 12, 30, w.len() - 1] {
        let mut t = w.clone();
        t[i] ^= 0x01;
        assert_eq!(
            kek.unwrap(&aad, &t),
            Err(UnwrapFailed),
            "bit flipped at {i}"
        );
    }
    for cut in [0, 11, 27, w.len() - 1] {
        assert_eq!(
            kek.unwrap(&aad, &w[..cut]),
            Err(UnwrapFailed),
            "cut at {cut}"
        );
    }
    // The Debug output names the key, not the PIN.
    let dbg = format!("{kek:?}");
    assert!(dbg.contains(kek.id()) && !dbg.contains(USER_PIN), "{dbg}");

    // Usable from several threads (Send + Sync behind a lock).
    let kek = std::sync::Arc::new(kek);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let kek = kek.clone();
            std::thread::spawn(move || {
                let aad = wrap_aad(Slot::Dek, &format!("k{i}"));
                let w = kek.wrap(&aad, &[i as u8; 32]).unwrap();
                assert_eq!(kek.unwrap(&aad, &w).unwrap().as_slice(), &[i as u8; 32]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn a_second_open_finds_the_same_key_and_another_label_is_another_key() {
    let loc = location("reopen", "cordon-kek");
    let a = Pkcs11Kek::open(&loc).unwrap();
    let aad = wrap_aad(Slot::IdentitySeed, "1");
    let w = a.wrap(&aad, b"seed").unwrap();
    let b = Pkcs11Kek::open(&loc).unwrap();
    assert_eq!(a.id(), b.id());
    assert_eq!(b.unwrap(&aad, &w).unwrap().as_slice(), b"seed");
    drop(a);
    drop(b);
    // After every session closed (a restart, as far as the token knows).
    let c = Pkcs11Kek::open(&loc).unwrap();
    assert_eq!(c.unwrap(&aad, &w).unwrap().as_slice(), b"seed");

    let other = Pkcs11Kek::open(&location("reopen", "another-kek")).unwrap();
    assert_ne!(other.id(), c.id());
    assert_eq!(other.unwrap(&aad, &w), Err(UnwrapFailed));
    // Exactly one key per label was generated.
    let s = inspect("reopen");
    let keys = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"cordon-kek".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1);
}

#[test]
fn the_generated_key_cannot_be_read_out() {
    let kek = Pkcs11Kek::open(&location("extract", "cordon-kek")).unwrap();
    let s = inspect("extract");
    let keys = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(b"cordon-kek".to_vec()),
        ])
        .unwrap();
    assert_eq!(keys.len(), 1, "{}", kek.id());
    let key = keys[0];
    // C_GetAttributeValue(CKA_VALUE) answers CKR_ATTRIBUTE_SENSITIVE: the attribute is withheld.
    let info = s.get_attribute_info(key, &[AttributeType::Value]).unwrap();
    assert!(
        matches!(info[0], cryptoki::object::AttributeInfo::Sensitive),
        "CKA_VALUE is readable: {info:?}"
    );
    let got = s.get_attributes(key, &[AttributeType::Value]).unwrap();
    assert!(
        got.is_empty(),
        "CKA_VALUE came back: {} attributes",
        got.len()
    );
    let attrs = s
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Token,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::ValueLen,
                AttributeType::KeyType,
            ],
        )
        .unwrap();
    for want in [
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Token(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::ValueLen(32.into()),
        Attribute::KeyType(KeyType::AES),
    ] {
        assert!(attrs.contains(&want), "{want:?} not in {attrs:?}");
    }
}

#[test]
fn the_wrapped_format_is_aead_wraps() {
    // A known key imported as sensitive and non-extractable: what the HSM wraps opens with
    // `aead_unwrap` under the same key, so the two providers' formats are one.
    let key = [0x11u8; 32];
    let s = inspect("format");
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(key.to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"imported".to_vec()),
    ])
    .unwrap();
    let kek = Pkcs11Kek::open(&location("format", "imported")).unwrap();
    let aad = wrap_aad(Slot::Dek, "x");
    let w = kek.wrap(&aad, b"the dek").unwrap();
    assert_eq!(aead_unwrap(&key, &aad, &w).unwrap().as_slice(), b"the dek");
    let back = cordon_kbs::custody::aead_wrap(&key, &aad, b"other dek").unwrap();
    assert_eq!(kek.unwrap(&aad, &back).unwrap().as_slice(), b"other dek");
}

#[test]
fn a_key_that_could_leave_the_token_is_refused() {
    let s = inspect("extractable-key");
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![3u8; 32]),
        Attribute::Token(true),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"readable".to_vec()),
    ])
    .unwrap();
    let e = open_err(&location("extractable-key", "readable"));
    assert!(e.contains("CKA_SENSITIVE") && e.contains("readable"), "{e}");
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![4u8; 32]),
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"wrappable".to_vec()),
    ])
    .unwrap();
    let e = open_err(&location("extractable-key", "wrappable"));
    assert!(e.contains("CKA_EXTRACTABLE"), "{e}");
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![5u8; 16]),
        Attribute::Token(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Label(b"aes128".to_vec()),
    ])
    .unwrap();
    let e = open_err(&location("extractable-key", "aes128"));
    assert!(e.contains("not AES-256"), "{e}");
}

#[test]
fn wrong_pin_missing_token_and_missing_module_are_named() {
    let mut loc = location("wrong-pin", "cordon-kek");
    loc.pin_file = hsm().wrong_pin_file.clone();
    let e = open_err(&loc);
    assert!(
        e.contains("is not the user PIN") && e.contains("wrong.pin") && e.contains("wrong-pin"),
        "{e}"
    );
    assert!(!e.contains("not-the-pin") && !e.contains(USER_PIN), "{e}");

    let e = open_err(&location("no-such-token", "cordon-kek"));
    assert!(
        e.contains("no token labelled \"no-such-token\"") && e.contains("\"wrap\""),
        "{e}"
    );

    let mut loc = location("wrap", "cordon-kek");
    loc.module = PathBuf::from("/nonexistent/libpkcs11.so");
    let e = open_err(&loc);
    assert!(
        e.contains("module /nonexistent/libpkcs11.so not found"),
        "{e}"
    );

    // A PIN file open to other users is refused before the module is touched.
    let loose = hsm().dir.join("loose.pin");
    std::fs::write(&loose, USER_PIN).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut loc = location("wrap", "cordon-kek");
    loc.pin_file = loose;
    let e = open_err(&loc);
    assert!(e.contains("PIN file") && e.contains("chmod 600"), "{e}");
}

#[test]
fn a_pkcs11_spec_opens_through_kek_spec() {
    let h = hsm();
    let spec = KekSpec::parse(&format!(
        "pkcs11:module={};token=spec;key=from-spec;pin-file={}",
        h.module.display(),
        h.pin_file.display()
    ))
    .unwrap();
    let kek = spec.open().unwrap_or_else(|e| panic!("{e}"));
    let again = spec.open().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kek.id(), again.id());
    let w = kek.wrap(b"aad", b"x").unwrap();
    assert_eq!(again.unwrap(b"aad", &w).unwrap().as_slice(), b"x");
}
