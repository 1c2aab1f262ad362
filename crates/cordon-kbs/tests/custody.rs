//! Key custody over real HTTP: no secret at rest unwrapped, revocation, the key listing.

use base64::Engine;
use cordon_attest::Platform;
use cordon_kbs::custody::FileKek;
use cordon_kbs::{Keks, Store};
use cordon_proto::job::PartyKey;
use cordon_proto::kbs::{AttestResponse, KeyInfo, RevokeResponse};
use cordon_proto::ServiceKeyPair;
use std::path::Path;
use std::sync::Arc;

mod common;
use common::*;

/// Every way a 32-byte secret could be written out: raw, hex either case, base64 standard and
/// URL-safe, padded or not.
fn encodings(secret: &[u8]) -> Vec<(String, Vec<u8>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b64n = base64::engine::general_purpose::STANDARD_NO_PAD;
    vec![
        ("raw".into(), secret.to_vec()),
        ("hex".into(), hex::encode(secret).into_bytes()),
        ("HEX".into(), hex::encode_upper(secret).into_bytes()),
        ("base64".into(), b64.encode(secret).into_bytes()),
        ("base64 unpadded".into(), b64n.encode(secret).into_bytes()),
        ("base64url".into(), b64u.encode(secret).into_bytes()),
    ]
}

/// Fails naming the file and the encoding if any file under `dir` holds `secret`.
fn assert_nowhere(dir: &Path, what: &str, secret: &[u8]) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            for (name, needle) in encodings(secret) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} holds {what} ({name})",
                    path.display()
                );
            }
        }
    }
    assert!(files >= 2, "the scan saw the store ({files} files)");
}

#[tokio::test]
async fn no_secret_is_at_rest_unwrapped_in_any_encoding() {
    let h = start().await;
    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    let admin_deks: Vec<[u8; 32]> = (0..5u8).map(|i| [0x10 + i; 32]).collect();
    for (i, dek) in admin_deks.iter().enumerate() {
        let resp = h.register(&format!("model-{i}"), *dek, sim.clone()).await;
        assert!(resp.status().is_success());
    }
    // Replaced once: the first DEK of model-0 must not linger either.
    let replaced = [0x77; 32];
    assert!(h
        .register("model-0", replaced, sim.clone())
        .await
        .status()
        .is_success());
    let party = PartyKey::generate("hospital-a");
    let dataset_dek = [0x3C; 32];
    assert!(h
        .register_dataset_with(&party, "ds-a", &sim, dataset_dek)
        .await
        .status()
        .is_success());
    // A release reads and unwraps; nothing it does writes a DEK either.
    let kp = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    let resp = h
        .attest(&request(
            &ch.nonce,
            &h.tee(MEASUREMENT, false),
            &kp,
            &["model-1"],
        ))
        .await;
    let body: AttestResponse = resp.json().await.unwrap();
    assert_eq!(body.released.len(), 1);

    // The identity seed, read the way the KBS reads it: through the KEK beside the data dir.
    let kek = FileKek::open(&h.data_dir.with_file_name("kbs.kek")).unwrap();
    let store = Store::open(&h.data_dir, Keks::new(Arc::new(kek))).unwrap();
    let seed = store.identity_seed().unwrap().unwrap();
    assert_eq!(
        store.get_key("model-0").unwrap().unwrap().dek.as_slice(),
        &replaced
    );
    drop(store);

    for (i, dek) in admin_deks.iter().enumerate() {
        assert_nowhere(&h.data_dir, &format!("the DEK of model-{i}"), dek);
    }
    assert_nowhere(&h.data_dir, "the replacing DEK", &replaced);
    assert_nowhere(&h.data_dir, "the dataset DEK", &dataset_dek);
    assert_nowhere(&h.data_dir, "the identity seed", seed.as_slice());
    // And the KEK itself is not in the data directory: a copy of it alone opens nothing.
    let kek_bytes = std::fs::read(h.data_dir.with_file_name("kbs.kek")).unwrap();
    assert_eq!(kek_bytes.len(), 32);
    assert_nowhere(&h.data_dir, "the KEK", &kek_bytes);
}

#[tokio::test]
async fn a_revoked_key_is_never_released_again_and_the_listing_shows_it() {
    let h = start().await;
    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    assert!(h
        .register("k", [5; 32], sim.clone())
        .await
        .status()
        .is_success());
    assert!(h
        .register("other", [6; 32], sim.clone())
        .await
        .status()
        .is_success());
    let kp = ServiceKeyPair::generate(0);
    let release = |ids: &'static [&'static str]| {
        let h = &h;
        let kp = &kp;
        async move {
            let ch = h.challenge().await;
            let resp = h
                .attest(&request(&ch.nonce, &h.tee(MEASUREMENT, false), kp, ids))
                .await;
            assert!(resp.status().is_success());
            resp.json::<AttestResponse>().await.unwrap()
        }
    };
    assert_eq!(release(&["k"]).await.released.len(), 1);

    // Only the administrator revokes.
    let party = PartyKey::generate("p");
    let resp = h
        .signed_party(
            &party,
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/k/revoke",
            br#"{"reason":"x"}"#.to_vec(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    let resp = h
        .admin(
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/k/revoke",
            br#"{"reason":"weights leaked"}"#.to_vec(),
        )
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let revoked: RevokeResponse = resp.json().await.unwrap();
    assert_eq!(revoked.key_id, "k");

    let after = release(&["k", "other"]).await;
    assert_eq!(after.released.len(), 1);
    assert_eq!(after.released[0].key_id, "other");
    assert_eq!(after.denied.len(), 1);
    assert!(
        after.denied[0].reasons[0].contains("revoked"),
        "{:?}",
        after.denied
    );
    // Neither re-registered nor revoked twice; an unknown key is a 404.
    let (status, body) = refusal(h.register("k", [7; 32], sim.clone()).await).await;
    assert_eq!(
        (status, body.code.as_str()),
        (409, "conflict"),
        "{}",
        body.error
    );
    let (status, _) = refusal(
        h.admin(
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/k/revoke",
            b"{}".to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = refusal(
        h.admin(
            reqwest::Method::POST,
            "/kbs/v1/admin/keys/nope/revoke",
            b"{}".to_vec(),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);

    let events = h.audit().await;
    let revocation = events.iter().find(|e| e.kind == "key_revoked").unwrap();
    assert_eq!(revocation.key_id.as_deref(), Some("k"));
    assert!(revocation.detail.contains("weights leaked"));
    assert_eq!(revocation.seq, revoked.audit_seq);

    let listing: Vec<KeyInfo> = h
        .admin(reqwest::Method::GET, "/kbs/v1/admin/keys", vec![])
        .await
        .json()
        .await
        .unwrap();
    let k = listing.iter().find(|k| k.key_id == "k").unwrap();
    let other = listing.iter().find(|k| k.key_id == "other").unwrap();
    assert_eq!(
        (k.releases, k.revoked_at.is_some(), k.kek_id.is_none()),
        (1, true, true)
    );
    assert_eq!(
        (other.releases, other.revoked_at, other.kind.as_str()),
        (1, None, "admin")
    );
    assert!(other.kek_id.as_deref().unwrap().starts_with("file:"));
    // The listing is the administrator's only.
    let resp = h
        .signed_party(&party, reqwest::Method::GET, "/kbs/v1/admin/keys", vec![])
        .await;
    assert_eq!(resp.status(), 401);
    // No DEK in the listing, in any encoding.
    let text = serde_json::to_string(&listing).unwrap();
    for dek in [[5u8; 32], [6u8; 32]] {
        assert!(!text.contains(&hex::encode(dek)));
    }
}

/// A KBS on `dir/kbs` at the time in `clock`, served on loopback: its URL and identity key.
async fn serve_at(
    dir: &Path,
    clock: Arc<std::sync::atomic::AtomicU64>,
) -> (String, cordon_kbs::Kbs) {
    use cordon_kbs::{Kbs, KbsConfig};
    use std::time::{Duration, UNIX_EPOCH};
    let mut config = KbsConfig::new(dir.join("kbs"), cordon_attest::Endorsements::default());
    let c = clock.clone();
    config.clock = Arc::new(move || {
        UNIX_EPOCH + Duration::from_secs(c.load(std::sync::atomic::Ordering::SeqCst))
    });
    let kbs = Kbs::open(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = kbs.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, kbs)
}

#[tokio::test]
async fn a_rotated_identity_keeps_the_old_key_for_its_overlap_and_no_longer() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_800_000_000u64;
    let clock = Arc::new(AtomicU64::new(t0));
    let (_, first) = serve_at(dir.path(), clock.clone()).await;
    let old_key = first.identity_public_key();
    let token = first.init_admin_token().unwrap().unwrap().to_string();
    drop(first);

    // What `cordon kbs rotate-identity` does, with the KBS stopped.
    let admin = cordon_proto::auth::admin_key(&token).unwrap();
    let until = t0 + 3600;
    let new_key = {
        let kek = FileKek::open(&dir.path().join("kbs.kek")).unwrap();
        let mut store = Store::open(&dir.path().join("kbs"), Keks::new(Arc::new(kek))).unwrap();
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
    assert_ne!(new_key, old_key);

    let (url, kbs) = serve_at(dir.path(), clock.clone()).await;
    assert_eq!(kbs.identity_public_key(), new_key);
    let http = reqwest::Client::new();
    // The identity it serves is the new key, vouched for by the same admin token.
    let id: cordon_proto::kbs::KbsIdentity = http
        .get(format!("{url}/kbs/v1/identity"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id.hpke_public_key, new_key);
    cordon_proto::auth::check_identity(
        &admin.verifying_key().to_bytes(),
        &new_key,
        id.admin_signature.as_deref().unwrap(),
    )
    .unwrap();

    let sim = policy(vec![Platform::Sim], MEASUREMENT);
    let register = |audience: [u8; 32], sealed_to: [u8; 32], key_id: &'static str| {
        let (http, url, admin, sim) = (&http, &url, &admin, &sim);
        let clock = clock.clone();
        async move {
            use cordon_proto::kbs::{policy_context, seal_dek_for_kbs, DekPurpose, RegisterKey};
            let body = serde_json::to_vec(&RegisterKey {
                sealed_dek: seal_dek_for_kbs(
                    &sealed_to,
                    DekPurpose::AdminKey,
                    key_id,
                    &admin.verifying_key().to_bytes(),
                    &policy_context(sim),
                    &[4; 32],
                )
                .unwrap(),
                policy: sim.clone(),
            })
            .unwrap();
            let path = format!("/kbs/v1/admin/keys/{key_id}");
            let now = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(clock.load(Ordering::SeqCst));
            let mut req = http.put(format!("{url}{path}"));
            for (name, value) in
                cordon_proto::auth::sign_request(admin, "PUT", &path, &body, &audience, now)
            {
                req = req.header(name, value);
            }
            req.body(body).send().await.unwrap()
        }
    };
    // Within the overlap: requests signed for the old key and DEKs sealed to it are accepted.
    assert_eq!(register(old_key, old_key, "during").await.status(), 200);
    assert_eq!(register(new_key, new_key, "during-new").await.status(), 200);
    // After it: refused, saying why; the new key works.
    clock.store(until + 1, Ordering::SeqCst);
    let (status, body) = refusal(register(old_key, old_key, "after").await).await;
    assert_eq!(status, 401, "{}", body.error);
    let (status, body) = refusal(register(new_key, old_key, "after").await).await;
    assert_eq!(status, 400);
    assert!(body.error.contains("overlap ended"), "{}", body.error);
    assert_eq!(register(new_key, new_key, "after").await.status(), 200);
}

/// After `kbs rotate-identity`, the KBS still accepts challenges MACed under the retired
/// identity's seed (nonces issued just before the restart), like every other use of the retired
/// identity, only until the end of its overlap; and no nonce, under either key, whose expiry is
/// further ahead than the KBS issues. Whoever holds the retired seed (the reason one rotates)
/// cannot mint nonces that outlive the overlap or stay good for years.
#[tokio::test]
async fn the_retired_challenge_key_ends_with_its_overlap_and_mints_no_long_nonces() {
    use cordon_attest::Endorsements;
    use cordon_kbs::challenge::ChallengeKey;
    use cordon_kbs::{Kbs, KbsConfig, NewAuditEvent};
    use cordon_tee::{SimHardwareKey, SimTee};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    let dir = tempfile::tempdir().unwrap();
    let hw = SimHardwareKey::generate();
    let t0 = 1_800_000_000u64;
    let clock = Arc::new(AtomicU64::new(t0));
    let config = || {
        let mut config = KbsConfig::new(
            dir.path().join("kbs"),
            Endorsements {
                sim_trust_anchors: vec![hw.public_key()],
                ..Default::default()
            },
        );
        let c = clock.clone();
        config.clock = Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)));
        config
    };
    let first = Kbs::open(config()).unwrap();
    let token = first.init_admin_token().unwrap().unwrap().to_string();
    drop(first);

    // `cordon kbs rotate-identity`, KBS stopped; an overlap of one hour. A key registered.
    let admin = cordon_proto::auth::admin_key(&token).unwrap();
    let until = t0 + 3600;
    let old_seed = {
        let kek = FileKek::open(&dir.path().join("kbs.kek")).unwrap();
        let mut store = Store::open(&dir.path().join("kbs"), Keks::new(Arc::new(kek))).unwrap();
        let old_seed = *store.identity_seed().unwrap().unwrap();
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
        store
            .put_key_audited(
                "k",
                &[0x5A; 32],
                &policy(vec![Platform::Sim], MEASUREMENT),
                &NewAuditEvent {
                    time: t0,
                    kind: "key_registered",
                    key_id: Some("k"),
                    claims_digest: None,
                    verdict: "accepted",
                    measurement: None,
                    detail: "",
                },
            )
            .unwrap();
        old_seed
    };

    let kbs = Kbs::open(config()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = kbs.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();

    let tee = SimTee::new(
        SimHardwareKey::from_file_contents(&hw.to_file_contents()).unwrap(),
        MEASUREMENT,
        [0; 32],
        false,
    );
    let kp = ServiceKeyPair::generate(0);
    let old = ChallengeKey::derive(&old_seed);
    let attest = |nonce: [u8; 32]| {
        let req = request(&hex::encode(nonce), &tee, &kp, &["k"]);
        let (http, url) = (http.clone(), url.clone());
        async move {
            let resp = http
                .post(format!("{url}/kbs/v1/attest"))
                .json(&req)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            (status, body)
        }
    };
    // During the overlap: a nonce issued under the retired key before the restart is good...
    clock.store(t0 + 10, Ordering::SeqCst);
    let (status, body) = attest(old.issue(t0 + 40)).await;
    assert_eq!(status, 200, "{body}");
    // ...one expiring in ten years is not (no nonce this KBS issues lives that long).
    let (status, body) = attest(old.issue(t0 + 10 * 365 * 86_400)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("nonce_expired"), "{body}");
    // The overlap over (the KBS was not restarted: nothing says it must be), the retired key
    // checks nothing, however short the nonce.
    clock.store(until + 86_400, Ordering::SeqCst);
    let (status, body) = attest(old.issue(until + 86_400 + 30)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("nonce_unknown"), "{body}");
}
