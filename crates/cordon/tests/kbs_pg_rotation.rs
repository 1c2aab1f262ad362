//! Rotation on a PostgreSQL store, from the command line with real processes: `kbs rotate-kek
//! --database-url` SIGKILLed at points in the middle leaves every key readable (under the old KEK
//! or the new one) and is finished by running it again; `kbs rotate-identity --database-url`
//! keeps the retired identity for its overlap. The database is a throwaway cluster
//! (`cordon_kbs::testing::PgCluster`).

use cordon_kbs::custody::{dek_binding, wrap_aad, FileKek, Slot};
use cordon_kbs::testing::PgCluster;
use cordon_kbs::{Kek, Keks, KeyStore, NewAuditEvent, PgStore, StoreError};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Enough that a rotation one row per transaction takes seconds, so that each kill lands in it.
const KEYS: usize = 5_000;

fn dek(i: usize) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&(i as u64).to_le_bytes());
    d[31] = 0xEE;
    d
}

fn registered(i: usize) -> NewAuditEvent<'static> {
    NewAuditEvent {
        time: 1 + i as u64,
        kind: "key_registered",
        key_id: None,
        claims_digest: None,
        verdict: "accepted",
        measurement: None,
        detail: "",
    }
}

/// Every key and the identity seed read back, through whichever KEK wraps each.
fn all_readable(url: &str, keks: Keks, seed: &[u8; 32]) {
    let mut store = PgStore::connect(url, keks).unwrap();
    let ids: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    for (i, k) in store.get_keys(&ids).unwrap().into_iter().enumerate() {
        assert_eq!(k.unwrap().unwrap().dek.as_slice(), &dek(i), "key k{i}");
    }
    assert_eq!(store.identity_seed().unwrap().unwrap().as_slice(), seed);
}

#[test]
fn pg_rotate_kek_killed_midway_loses_nothing_and_finishes_when_run_again() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let old_path = dir.path().join("old.kek");
    let new_path = dir.path().join("new.kek");
    let old: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&old_path).unwrap());
    let new: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&new_path).unwrap());
    let seed = [0x61; 32];
    {
        let mut store = PgStore::connect(&url, Keks::new(old.clone())).unwrap();
        store.init_identity_seed(&seed, 1).unwrap();
        store
            .put_key_audited("k0", &dek(0), "p", &registered(0))
            .unwrap();
    }
    {
        // The rest in one transaction, wrapped as the store wraps them.
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = db.transaction().unwrap();
        for i in 1..KEYS {
            let id = format!("k{i}");
            let binding = dek_binding(&id, "admin", None, "p");
            let wrapped = old.wrap(&wrap_aad(Slot::Dek, &binding), &dek(i)).unwrap();
            tx.execute(
                "INSERT INTO keys (key_id, dek, policy, created_at, updated_at, kind, kek_id)
                 VALUES ($1, $2, 'p', 1, 1, 'admin', $3)",
                &[&id, &wrapped, &old.id()],
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
                "--database-url",
                &url,
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
    // The rows under the new KEK, read beside the running rotation as the host could.
    let mut watch = PgStore::connect(&url, both()).unwrap();
    let mut under_new = || -> u64 {
        watch
            .kek_usage()
            .unwrap()
            .iter()
            .filter(|(id, _)| id.as_deref() == Some(new.id()))
            .map(|(_, n)| n)
            .sum()
    };
    let mut last = 0;
    for target in [1, KEYS as u64 / 3, 2 * KEYS as u64 / 3] {
        let mut child = rotate();
        let deadline = Instant::now() + Duration::from_secs(120);
        while under_new() < target {
            assert!(Instant::now() < deadline, "the rotation made no progress");
            assert!(
                child.try_wait().unwrap().is_none(),
                "the rotation ended before it was killed: {}",
                log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let moved = under_new();
        assert!(
            moved >= last && moved < KEYS as u64,
            "killed mid-rotation: {moved} of {KEYS} re-wrapped"
        );
        last = moved;
        // Every key is whole, under one KEK or the other; the old KEK alone no longer opens the
        // store, nor does the new one alone.
        all_readable(&url, both(), &seed);
        match PgStore::connect(&url, Keks::new(old.clone())) {
            Err(StoreError::UnknownKek { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("the old KEK alone opened a half-rotated store"),
        }
        assert!(PgStore::connect(&url, Keks::new(new.clone())).is_err());
    }
    let status = rotate().wait().unwrap();
    assert!(status.success(), "{}", log());
    let usage = PgStore::connect(&url, Keks::new(new.clone()))
        .unwrap()
        .kek_usage()
        .unwrap();
    assert_eq!(usage, vec![(Some(new.id().to_string()), KEYS as u64 + 1)]);
    all_readable(&url, Keks::new(new.clone()), &seed);
}

#[test]
fn pg_rotate_identity_keeps_the_retired_identity_for_its_overlap() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("kbs.kek");
    let kek: Arc<dyn Kek> = Arc::new(FileKek::open_or_create(&kek_path).unwrap());
    let token = hex::encode([0x42u8; 32]);
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, &token).unwrap();
    let admin = cordon_proto::auth::admin_key(&token).unwrap();
    let old_seed = [0x61; 32];
    {
        let mut store = PgStore::connect(&url, Keks::new(kek.clone())).unwrap();
        store.init_identity_seed(&old_seed, 1).unwrap();
        let old_key = cordon_proto::ServiceKeyPair::derive(0, &old_seed).public_key();
        store
            .set_admin(
                &[0; 32],
                &admin.verifying_key().to_bytes(),
                &cordon_proto::auth::vouch_identity(&admin, &old_key),
            )
            .unwrap();
    }
    let kek_arg = format!("file:{}", s(&kek_path));
    let rotate = |token_file: &std::path::Path| {
        cordon(&[
            "kbs",
            "rotate-identity",
            "--database-url",
            url.as_str(),
            "--kek",
            kek_arg.as_str(),
            "--token-file",
            &s(token_file),
            "--overlap-hours",
            "2",
        ])
    };
    // Another administrator's token is refused, and nothing changes.
    let stranger = dir.path().join("stranger.token");
    std::fs::write(&stranger, hex::encode([0x43u8; 32])).unwrap();
    let out = rotate(&stranger);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not this KBS's admin token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The administrator's: a new identity, vouched for, the old one kept for two hours.
    let out = rotate(&token_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut store = PgStore::connect(&url, Keks::new(kek.clone())).unwrap();
    let seed = store.identity_seed().unwrap().unwrap();
    let new_key = cordon_proto::ServiceKeyPair::derive(0, &seed).public_key();
    assert_eq!(printed, hex::encode(new_key));
    assert_ne!(*seed, old_seed);
    let (retired, until) = store.previous_identity_seed().unwrap().unwrap();
    assert_eq!(*retired, old_seed);
    let now = cordon_proto::auth::unix(std::time::SystemTime::now());
    assert!(until > now + 7_000 && until <= now + 7_200, "{until}");
    let vouch = store.identity_signature().unwrap().unwrap();
    assert!(cordon_proto::auth::check_identity(
        &admin.verifying_key().to_bytes(),
        &new_key,
        &vouch
    )
    .is_ok());
    // A second rotation while the overlap runs is refused.
    let out = rotate(&token_file);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("overlap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
