//! Attacks on key custody by the host, which can read and write the data directory but never
//! holds the KEK (the KEK here is the default `file:` KEK or a fixed in-memory one, standing in
//! for `sev-snp:` / `pkcs11:`: none of these attacks reads or needs the KEK). Written by the
//! fresh-eye review of issue 16 (each failed before its fix); a failure message describes the
//! attack that succeeded.

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_kbs::custody::MemoryKek;
use cordon_kbs::{Kbs, KbsConfig, Keks, Store};
use cordon_proto::kbs::{AttestResponse, RELEASE_INFO};
use cordon_proto::ServiceKeyPair;
use cordon_tee::{SimHardwareKey, SimTee};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

mod common;
use common::*;

fn db(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(data_dir.join("kbs.sqlite3")).unwrap()
}

/// Attests with sim evidence of `measurement` (`debug`) and asks for `ids`; returns the DEKs
/// released, opened with the runtime's key.
async fn released(h: &Harness, measurement: [u8; 48], debug: bool, ids: &[&str]) -> Vec<Vec<u8>> {
    let kp = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    let resp = h
        .attest(&request(&ch.nonce, &h.tee(measurement, debug), &kp, ids))
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let body: AttestResponse = resp.json().await.unwrap();
    body.released
        .iter()
        .map(|r| {
            kp.open_sealed(RELEASE_INFO, r.key_id.as_bytes(), &r.sealed_dek)
                .unwrap()
                .to_vec()
        })
        .collect()
}

/// A host that cannot unwrap anything rewrites a key's policy to name its own measurement (debug
/// allowed). Fixed: the policy's digest, the kind and the owner are in the DEK's wrapping AAD, so
/// the edited row no longer unwraps and the key is denied (not released, not a 500).
#[tokio::test]
async fn a_policy_rewritten_in_the_store_does_not_release_the_dek() {
    let h = start().await;
    let dek = [0x5e; 32];
    let strict = policy(vec![Platform::Sim], MEASUREMENT);
    assert!(h.register("model", dek, strict).await.status().is_success());
    let host_measurement = [0x66; 48];
    assert!(
        released(&h, host_measurement, true, &["model"])
            .await
            .is_empty(),
        "the host's debug guest is refused by the policy the owner registered"
    );

    // The host edits the store of the running KBS; it never touches the KEK.
    let mut loose = Policy::new(vec![Platform::Sim], vec![host_measurement.to_vec()]);
    loose.allow_debug = true;
    db(&h.data_dir)
        .execute(
            "UPDATE keys SET policy = ?1 WHERE key_id = 'model'",
            [loose.to_toml()],
        )
        .unwrap();

    let got = released(&h, host_measurement, true, &["model"]).await;
    assert!(
        got.is_empty(),
        "ATTACK SUCCEEDED: after the host rewrote keys.policy, the KBS released the DEK {} to \
         the host's own debug guest (measurement {}); the KEK never protected it",
        hex::encode(&got[0]),
        hex::encode(host_measurement)
    );
}

/// A host that kept the row's wrapped DEK from before the revocation writes it back and clears
/// `revoked_at`. Fixed: the audit log's `key_revoked` event is consulted too (a host that also
/// rewrites the log is caught by an auditor's saved checkpoint, threat-model.md §4.9).
#[tokio::test]
async fn a_revoked_key_stays_revoked_when_the_host_restores_its_row() {
    let h = start().await;
    let dek = [0x5a; 32];
    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    assert!(h.register("k", dek, sim).await.status().is_success());
    let (wrapped, kek_id): (Vec<u8>, String) = db(&h.data_dir)
        .query_row("SELECT dek, kek_id FROM keys WHERE key_id = 'k'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let resp = h
        .admin(
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/k/revoke",
            br#"{"reason":"weights leaked"}"#.to_vec(),
        )
        .await;
    assert!(resp.status().is_success());
    assert!(released(&h, MEASUREMENT, false, &["k"]).await.is_empty());

    db(&h.data_dir)
        .execute(
            "UPDATE keys SET revoked_at = NULL, dek = ?1, kek_id = ?2 WHERE key_id = 'k'",
            rusqlite::params![wrapped, kek_id],
        )
        .unwrap();
    let got = released(&h, MEASUREMENT, false, &["k"]).await;
    assert!(
        got.is_empty(),
        "ATTACK SUCCEEDED: the revoked key k was released again ({}) after the host restored \
         its pre-revocation row",
        hex::encode(&got[0])
    );
}

/// After a revocation, the WAL still held the page with the wrapped DEK: the host needed no backup
/// to un-revoke. Fixed: revoking checkpoints and truncates the WAL (secure_delete zeroes cells).
#[tokio::test]
async fn revoking_erases_the_wrapped_dek_from_every_file() {
    let h = start().await;
    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    assert!(h.register("k", [0x3c; 32], sim).await.status().is_success());
    let wrapped: Vec<u8> = db(&h.data_dir)
        .query_row("SELECT dek FROM keys WHERE key_id = 'k'", [], |r| r.get(0))
        .unwrap();
    let resp = h
        .admin(
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/k/revoke",
            br#"{"reason":"x"}"#.to_vec(),
        )
        .await;
    assert!(resp.status().is_success());
    let mut holders = vec![];
    for entry in std::fs::read_dir(&h.data_dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if bytes
            .windows(wrapped.len())
            .any(|w| w == wrapped.as_slice())
        {
            holders.push(path.display().to_string());
        }
    }
    assert!(
        holders.is_empty(),
        "ATTACK MATERIAL LEFT: after revocation, the revoked key's wrapped DEK is still in {holders:?}"
    );
}

/// The KBS on `data_dir` under `keks`, its clock at `clock`, served on loopback.
async fn serve(
    data_dir: &Path,
    keks: Keks,
    clock: Arc<AtomicU64>,
    tee: Option<Arc<dyn cordon_tee::EvidenceProvider>>,
) -> (String, Kbs) {
    let mut config = KbsConfig::new(data_dir.to_path_buf(), Endorsements::default());
    let c = clock.clone();
    config.clock = Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)));
    config.keks = Some(keks);
    config.identity_tee = tee;
    let kbs = Kbs::open(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = kbs.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, kbs)
}

fn fixed_keks() -> Keks {
    Keks::new(Arc::new(MemoryKek::new([0x42; 32])))
}

/// An admin key registration signed for `audience` with the DEK sealed to `sealed_to`.
async fn register_as_admin(
    url: &str,
    admin: &ed25519_dalek::SigningKey,
    audience: [u8; 32],
    sealed_to: [u8; 32],
    key_id: &str,
    now: u64,
) -> reqwest::Response {
    use cordon_proto::kbs::{policy_context, seal_dek_for_kbs, DekPurpose, RegisterKey};
    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    let body = serde_json::to_vec(&RegisterKey {
        sealed_dek: seal_dek_for_kbs(
            &sealed_to,
            DekPurpose::AdminKey,
            key_id,
            &admin.verifying_key().to_bytes(),
            &policy_context(&sim),
            &[4; 32],
        )
        .unwrap(),
        policy: sim,
    })
    .unwrap();
    let path = format!("/kbs/v1/admin/keys/{key_id}");
    let mut req = reqwest::Client::new().put(format!("{url}{path}"));
    for (name, value) in cordon_proto::auth::sign_request(
        admin,
        "PUT",
        &path,
        &body,
        &audience,
        UNIX_EPOCH + Duration::from_secs(now),
    ) {
        req = req.header(name, value);
    }
    req.body(body).send().await.unwrap()
}

/// After a retired identity's overlap has ended, the host raises `identity_previous.accept_until`
/// (or sets the clock back) to revive the key an administrator rotated away from. Fixed: the end
/// of the overlap is in the retired seed's wrapping AAD, and the row is deleted once it is past.
#[tokio::test]
async fn a_retired_identity_stays_retired_after_its_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    let t0 = 1_800_000_000u64;
    let clock = Arc::new(AtomicU64::new(t0));
    let (_, first) = serve(&data, fixed_keks(), clock.clone(), None).await;
    let old_key = first.identity_public_key();
    let token = first.init_admin_token().unwrap().unwrap().to_string();
    drop(first);
    let admin = cordon_proto::auth::admin_key(&token).unwrap();
    let until = t0 + 3600;
    let new_key = {
        let mut store = Store::open(&data, fixed_keks()).unwrap();
        let seed = [0x99; 32];
        let new_key = ServiceKeyPair::derive(0, &seed).public_key();
        let vouch = cordon_proto::auth::vouch_identity(&admin, &new_key);
        let audit = cordon_proto::checkpoint::vouch_audit_key(
            &admin,
            &new_key,
            &cordon_proto::checkpoint::AuditSigningKey::derive(&seed).public_key(),
        );
        store
            .rotate_identity(&seed, &vouch, &audit, t0, until)
            .unwrap();
        new_key
    };
    // A day after the overlap ended.
    let later = until + 86_400;
    clock.store(later, Ordering::SeqCst);
    {
        let (url, _kbs) = serve(&data, fixed_keks(), clock.clone(), None).await;
        let resp = register_as_admin(&url, &admin, new_key, old_key, "refused", later).await;
        assert_eq!(
            resp.status(),
            400,
            "the retired key is refused after the overlap"
        );
    }
    // The host edits one plaintext column (no KEK), and restarts the KBS.
    db(&data)
        .execute("UPDATE identity_previous SET accept_until = 4000000000", [])
        .unwrap();
    let (url, _kbs) = serve(&data, fixed_keks(), clock.clone(), None).await;
    let sealed_to_old = register_as_admin(&url, &admin, new_key, old_key, "revived", later).await;
    let signed_for_old = register_as_admin(&url, &admin, old_key, new_key, "revived2", later).await;
    assert!(
        !sealed_to_old.status().is_success() && !signed_for_old.status().is_success(),
        "ATTACK SUCCEEDED: a day after its overlap ended, the retired identity is accepted again \
         (DEK sealed to it: {}, request signed for it: {}) after the host raised \
         identity_previous.accept_until",
        sealed_to_old.status(),
        signed_for_old.status()
    );
}

/// A store from before custody (schema 6, plaintext) planted by the host, with an identity seed
/// it chose: a genuine KBS (KEK in its TEE) would adopt it, wrap it and attest that identity.
/// Fixed: such a store is wrapped only with `--migrate-plaintext-store`, and refused otherwise.
#[tokio::test]
async fn a_plaintext_store_planted_by_the_host_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("kbs");
    // A store of schema 6 as the host writes it (here: made by this build, then taken back to 6).
    drop(Store::open(&data, fixed_keks()).unwrap());
    let host_seed = [0x0b; 32];
    let conn = db(&data);
    conn.execute_batch(
        "DROP TABLE audit_key_vouch; DROP TABLE identity_previous;
         ALTER TABLE keys DROP COLUMN kek_id; ALTER TABLE keys DROP COLUMN revoked_at;
         ALTER TABLE identity DROP COLUMN kek_id; PRAGMA user_version = 6;",
    )
    .unwrap();
    conn.execute(
        "INSERT INTO identity (id, hpke_seed, created_at) VALUES (1, ?1, 1)",
        [host_seed.as_slice()],
    )
    .unwrap();
    drop(conn);

    let tee: Arc<dyn cordon_tee::EvidenceProvider> = Arc::new(SimTee::new(
        SimHardwareKey::generate(),
        MEASUREMENT,
        [0; 32],
        false,
    ));
    let mut config = KbsConfig::new(data.clone(), Endorsements::default());
    config.keks = Some(fixed_keks());
    config.identity_tee = Some(tee);
    match Kbs::open(config) {
        Ok(kbs) => panic!(
            "ATTACK SUCCEEDED: the KBS adopted the identity seed the host planted in a plaintext \
             store ({}), wrapped it under its KEK, and attests it",
            hex::encode(kbs.identity_public_key())
        ),
        Err(e) => assert!(e.to_string().contains("--migrate-plaintext-store"), "{e}"),
    }
    // And the refusal changed nothing: the store is still the schema-6 one it was.
    let version: i64 = db(&data)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
}

#[test]
fn a_pin_on_the_command_line_is_never_echoed() {
    for (spec, pin) in [
        (
            "pkcs11:module=/m.so;token=t;key=k;pin-file=/p;pin=12:34secret",
            "12:34secret",
        ),
        (
            "pkcs11:module=/m.so;token=t;key=k;pin-file=/p;PIN=5678secret",
            "5678secret",
        ),
    ] {
        let e = cordon_kbs::KekSpec::parse(spec).unwrap_err().to_string();
        assert!(
            !e.contains(pin),
            "LEAK: the refusal of {spec:?} carries the PIN: {e}"
        );
    }
}
