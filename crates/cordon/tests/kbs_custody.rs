//! Key custody from the command line, with real processes: `kbs rotate-kek` killed with SIGKILL
//! at points in the middle leaves every key readable and is finished by running it again;
//! `kbs keys` and `kbs revoke` against a running KBS.

use cordon_kbs::custody::{dek_binding, wrap_aad, FileKek, Slot};
use cordon_kbs::{Kek, Keks, Store};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Enough that a rotation one row per transaction takes a while, even on tmpfs.
const KEYS: usize = 5_000;

fn dek(i: usize) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&(i as u64).to_le_bytes());
    d[31] = 0xEE;
    d
}

/// Rows of the store wrapped under `kek_id`, read as the host could, beside the running rotation.
fn rows_under(conn: &rusqlite::Connection, kek_id: &str) -> i64 {
    conn.query_row(
        "SELECT COUNT(*) FROM keys WHERE kek_id = ?1",
        [kek_id],
        |r| r.get(0),
    )
    .unwrap()
}

/// Every key and the identity seed read back, through whichever KEK wraps each.
fn all_readable(data: &Path, keks: Keks, seed: &[u8; 32]) {
    let store = Store::open(data, keks).unwrap();
    for i in 0..KEYS {
        let k = store.get_key(&format!("k{i}")).unwrap().unwrap();
        assert_eq!(k.dek.as_slice(), &dek(i), "key k{i}");
    }
    assert_eq!(store.identity_seed().unwrap().unwrap().as_slice(), seed);
}

#[test]
fn rotate_kek_killed_midway_loses_nothing_and_finishes_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    let old_path = dir.path().join("old.kek");
    let new_path = dir.path().join("new.kek");
    let old: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&old_path).unwrap());
    let new: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&new_path).unwrap());
    let seed = [0x61; 32];
    {
        let store = Store::open(&data, Keks::new(old.clone())).unwrap();
        store.init_identity_seed(&seed, 1).unwrap();
        store.put_key("k0", &dek(0), "p", 1).unwrap();
    }
    {
        // The rest in one transaction, wrapped as the store wraps them (one fsync, not 5,000).
        let mut conn = rusqlite::Connection::open(data.join("kbs.sqlite3")).unwrap();
        let tx = conn.transaction().unwrap();
        for i in 1..KEYS {
            let id = format!("k{i}");
            let binding = dek_binding(&id, "admin", None, "p");
            let wrapped = old.wrap(&wrap_aad(Slot::Dek, &binding), &dek(i)).unwrap();
            tx.execute(
                "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind, kek_id)
                 VALUES (?1, ?2, 'p', 1, 1, 'admin', ?3)",
                rusqlite::params![id, wrapped, old.id()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let both = || Keks {
        current: new.clone(),
        previous: Some(old.clone()),
    };
    let rotate = || {
        Command::new(BIN)
            .args([
                "kbs",
                "rotate-kek",
                "--data-dir",
                &s(&data),
                "--kek",
                &format!("file:{}", s(&old_path)),
                "--new-kek",
                &format!("file:{}", s(&new_path)),
                "--batch",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("rotate.log")).unwrap())
            .spawn()
            .unwrap()
    };
    let log = || std::fs::read_to_string(dir.path().join("rotate.log")).unwrap_or_default();
    // Killed once some rows are re-wrapped, at three depths: each kill lands mid-rotation.
    // The watching connection is closed before this process opens the store again: opening
    // and closing the store's files (Store::open checks their modes) drops every POSIX lock this
    // process holds on them, SQLite's included; a child then takes itself for the only user of
    // the shared-memory file, resets it, and the watcher's mapping of it faults (SIGBUS).
    let watcher = || {
        let watch = rusqlite::Connection::open(data.join("kbs.sqlite3")).unwrap();
        watch.busy_timeout(Duration::from_secs(5)).unwrap();
        watch
    };
    let mut last = 0;
    for target in [1, KEYS as i64 / 3, 2 * KEYS as i64 / 3] {
        let watch = watcher();
        let mut child = rotate();
        let deadline = Instant::now() + Duration::from_secs(120);
        while rows_under(&watch, new.id()) < target {
            assert!(Instant::now() < deadline, "the rotation made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the rotation ended before it was killed: {}",
                log()
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let moved = rows_under(&watch, new.id());
        assert!(
            moved >= last && moved < KEYS as i64,
            "killed mid-rotation: {moved} of {KEYS} re-wrapped"
        );
        last = moved;
        drop(watch);
        // Every key is whole, under one KEK or the other; the old KEK alone no longer opens the
        // store, nor does the new one alone.
        all_readable(&data, both(), &seed);
        let e = Store::open(&data, Keks::new(old.clone())).err().unwrap();
        assert!(e.to_string().contains(new.id()), "{e}");
        assert!(Store::open(&data, Keks::new(new.clone())).is_err());
    }
    let status = rotate().wait().unwrap();
    assert!(status.success(), "{}", log());
    let usage = Store::open(&data, Keks::new(new.clone()))
        .unwrap()
        .kek_usage()
        .unwrap();
    assert_eq!(usage, vec![(Some(new.id().to_string()), KEYS as u64 + 1)]);
    all_readable(&data, Keks::new(new.clone()), &seed);
    // Rotating to the KEK already in use is refused, saying so.
    let same = fails(&[
        "kbs",
        "rotate-kek",
        "--data-dir",
        &s(&data),
        "--kek",
        &format!("file:{}", s(&new_path)),
        "--new-kek",
        &format!("file:{}", s(&new_path)),
    ]);
    assert!(same.contains("the new KEK is the current one"), "{same}");
}

#[tokio::test]
async fn keys_are_listed_and_revoked_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    let kek = dir.path().join("keys/kbs.kek");
    let kek_arg = format!("file:{}", s(&kek));
    let (_kbs, url) = start_kbs_with(dir.path(), "kbs", "kbs", "info", &["--kek", &kek_arg]);
    let key = kbs_key(dir.path(), "kbs");
    let token_file = s(&dir.path().join("token"));
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let http = reqwest::Client::new();
    let policy =
        "platforms = [\"sim\"]\nlaunch_measurements = [\"".to_string() + &"42".repeat(48) + "\"]\n";
    for id in ["fraud-model", "triage-model"] {
        let resp = admin_register(&http, &url, &key, &token, id, &[3; 32], &policy).await;
        assert!(resp.status().is_success(), "{}", resp.status());
    }
    // The KEK file was made where it was asked for, private, outside the data directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kek).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = [
        "--kbs",
        url.as_str(),
        "--kbs-key",
        key.as_str(),
        "--token-file",
        token_file.as_str(),
    ];
    let cli = |args: &[&str]| {
        let mut all = vec!["kbs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&admin);
        all.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let table = tokio::task::spawn_blocking({
        let a = cli(&["keys"]);
        move || ok(&a)
    })
    .await
    .unwrap();
    assert!(
        table.contains("fraud-model") && table.contains("triage-model"),
        "{table}"
    );
    assert!(table.contains("active"), "{table}");
    let revoked = tokio::task::spawn_blocking({
        let a = cli(&["revoke", "fraud-model", "--reason", "model withdrawn"]);
        move || ok(&a)
    })
    .await
    .unwrap();
    assert!(revoked.contains("revoked key fraud-model"), "{revoked}");
    let json = tokio::task::spawn_blocking({
        let a = cli(&["keys", "--json"]);
        move || ok(&a)
    })
    .await
    .unwrap();
    let keys: Vec<cordon_proto::kbs::KeyInfo> = serde_json::from_str(&json).unwrap();
    let fraud = keys.iter().find(|k| k.key_id == "fraud-model").unwrap();
    let triage = keys.iter().find(|k| k.key_id == "triage-model").unwrap();
    assert!(fraud.revoked_at.is_some() && triage.revoked_at.is_none());
    assert!(
        !json.contains(&hex::encode([3u8; 32])),
        "a DEK in the listing"
    );
    // A second revocation is refused, with the KBS's reason.
    let again = tokio::task::spawn_blocking({
        let a = cli(&["revoke", "fraud-model"]);
        move || fails(&a)
    })
    .await
    .unwrap();
    assert!(again.contains("was revoked at"), "{again}");
}

#[test]
fn rotate_identity_from_the_command_line_needs_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    ok(&["sim", "keygen", "--out", &s(&dir.path().join("hw.key"))]);
    let old_key = {
        let (_kbs, _url) = start_kbs(dir.path(), "kbs");
        kbs_key(dir.path(), "kbs")
    };
    let data = s(&dir.path().join("kbs"));
    let other_token = dir.path().join("other-token");
    std::fs::write(&other_token, "ab".repeat(32)).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&other_token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let refused = fails(&[
        "kbs",
        "rotate-identity",
        "--data-dir",
        &data,
        "--token-file",
        &s(&other_token),
    ]);
    assert!(
        refused.contains("is not this KBS's admin token"),
        "{refused}"
    );
    let new_key = ok(&[
        "kbs",
        "rotate-identity",
        "--data-dir",
        &data,
        "--token-file",
        &s(&dir.path().join("token")),
        "--overlap-hours",
        "1",
    ]);
    let new_key = new_key.trim();
    assert_eq!(new_key.len(), 64);
    assert_ne!(new_key, old_key);
    // Restarted, the KBS serves the new key, vouched for by the token (an admin command finds it
    // without a pin), and signs audit checkpoints with a key the token vouches for as well.
    let (_kbs, url) = start_kbs(dir.path(), "kbs");
    assert_eq!(kbs_key(dir.path(), "kbs"), new_key);
    let token = s(&dir.path().join("token"));
    let out = cordon(&[
        "kbs",
        "audit",
        "--kbs",
        &url,
        "--token-file",
        &token,
        "--verify",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second rotation within the hour is refused.
    let again = fails(&[
        "kbs",
        "rotate-identity",
        "--data-dir",
        &data,
        "--token-file",
        &s(&dir.path().join("token")),
    ]);
    assert!(again.contains("overlap"), "{again}");
}

/// A mistyped current KEK makes `rotate-kek` fail, naming the path, without creating a key file
/// there (nor the new KEK's).
#[test]
fn rotate_kek_with_a_mistyped_current_kek_creates_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    let kek: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&dir.path().join("kbs.kek")).unwrap());
    Store::open(&data, Keks::new(kek))
        .unwrap()
        .init_identity_seed(&[7; 32], 1)
        .unwrap();
    let (typo, new) = (dir.path().join("kbs.kekk"), dir.path().join("new.kek"));
    let err = fails(&[
        "kbs",
        "rotate-kek",
        "--data-dir",
        &s(&data),
        "--kek",
        &format!("file:{}", s(&typo)),
        "--new-kek",
        &format!("file:{}", s(&new)),
    ]);
    assert!(err.contains("kbs.kekk"), "{err}");
    assert!(!typo.exists() && !new.exists(), "a KEK file was created");
}
