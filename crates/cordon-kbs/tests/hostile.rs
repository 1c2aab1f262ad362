//! The KBS against the host that carries its traffic (issue 15): DEKs arrive sealed to the KBS's
//! identity and bound to their slot, signed requests are refused when replayed or meant for
//! another KBS, and what one caller can make the KBS store or do is bounded.

mod common;
use common::*;

use cordon_attest::{Endorsements, Platform};
use cordon_kbs::{Kbs, KbsConfig, KbsLimits};
use cordon_proto::job::PartyKey;
use cordon_proto::kbs::{seal_dek_for_kbs, AttestRequest, DekPurpose, KbsIdentity, RegisterKey};
use cordon_proto::ServiceKeyPair;
use cordon_tee::EvidenceProvider;
use reqwest::Method;
use std::sync::atomic::Ordering;

/// An admin registration's body: a DEK sealed to `kbs_key` for `purpose`, `key_id` and `policy`.
fn sealed(
    h: &Harness,
    kbs_key: &[u8; 32],
    purpose: DekPurpose,
    key_id: &str,
    policy: &str,
) -> Vec<u8> {
    register_key_body(
        kbs_key,
        purpose,
        key_id,
        &h.admin_public_key(),
        policy,
        &[5; 32],
    )
}

#[tokio::test]
async fn a_sealed_dek_registers_only_in_the_slot_it_was_sealed_for() {
    let h = start().await;
    let p = policy(vec![Platform::Sim], MEASUREMENT);
    let h = &h;
    let put = |id: &str, body: Vec<u8>| {
        let path = format!("/kbs/v1/admin/keys/{id}");
        async move { h.admin(Method::PUT, &path, body).await }
    };
    // Sealed for k1, presented for k2: refused (a captured DEK cannot be moved to another slot).
    let (status, e) =
        refusal(put("k2", sealed(h, &h.kbs_key, DekPurpose::AdminKey, "k1", &p)).await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (400, "sealed_dek_invalid"),
        "{}",
        e.error
    );
    // The same sealed DEK under another policy than the one it was sealed with.
    let mut body: RegisterKey =
        serde_json::from_slice(&sealed(h, &h.kbs_key, DekPurpose::AdminKey, "k1", &p)).unwrap();
    body.policy = policy(vec![Platform::Sim], [0x01; 48]);
    let (status, e) = refusal(put("k1", serde_json::to_vec(&body).unwrap()).await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (400, "sealed_dek_invalid"),
        "{}",
        e.error
    );
    // Sealed for a dataset registration, presented to the admin API.
    let (status, e) = refusal(
        put(
            "k1",
            sealed(h, &h.kbs_key, DekPurpose::DatasetKey, "k1", &p),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, e.code.as_str()),
        (400, "sealed_dek_invalid"),
        "{}",
        e.error
    );
    // Sealed to another KBS (a host that swapped the identity key the owner was told).
    let other = ServiceKeyPair::generate(0).public_key();
    let (status, e) =
        refusal(put("k1", sealed(h, &other, DekPurpose::AdminKey, "k1", &p)).await).await;
    assert_eq!((status, e.code.as_str()), (400, "sealed_dek_invalid"));
    assert!(e.error.contains("sealed to KBS key"), "{}", e.error);
    // Nothing of this was stored or audited; the right registration works.
    assert!(h.audit().await.is_empty());
    let r = put("k1", sealed(h, &h.kbs_key, DekPurpose::AdminKey, "k1", &p)).await;
    assert_eq!(r.status(), 200);
    // The identity the KBS serves is the key it opens with.
    let id: KbsIdentity = h
        .http
        .get(format!("{}/kbs/v1/identity", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(id.hpke_public_key, h.kbs_key);
}

#[tokio::test]
async fn replayed_admin_requests_are_refused_and_change_nothing() {
    let h = start().await;
    let p = policy(vec![Platform::Sim], MEASUREMENT);
    let admin = cordon_proto::auth::admin_key(&h.token).unwrap();
    let path = "/kbs/v1/admin/keys/k";
    let body = h.register_body("k", [2; 32], &p);
    let headers = cordon_proto::auth::sign_request(&admin, "PUT", path, &body, &h.kbs_key, h.now());
    let send = |method: Method, path: &str, body: Vec<u8>, headers: &[(&str, String); 5]| {
        let mut req = h.http.request(method, format!("{}{path}", h.url));
        for (name, value) in headers.clone() {
            req = req.header(name, value);
        }
        req.body(body).send()
    };
    assert_eq!(
        send(Method::PUT, path, body.clone(), &headers)
            .await
            .unwrap()
            .status(),
        200
    );
    let before = h.audit().await;
    let (status, e) = refusal(send(Method::PUT, path, body, &headers).await.unwrap()).await;
    assert_eq!((status, e.code.as_str()), (409, "request_replayed"));
    // A read is refused on replay too.
    let get = cordon_proto::auth::sign_request(
        &admin,
        "GET",
        "/kbs/v1/admin/audit",
        b"",
        &h.kbs_key,
        h.now(),
    );
    assert_eq!(
        send(Method::GET, "/kbs/v1/admin/audit", vec![], &get)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/kbs/v1/admin/audit", vec![], &get)
            .await
            .unwrap()
            .status(),
        409
    );
    // Meant for another KBS: refused. Nothing changed in the log.
    let body = h.register_body("k2", [2; 32], &p);
    let elsewhere = h
        .signed(&admin, Method::PUT, "/kbs/v1/admin/keys/k2", body, &[9; 32])
        .await;
    assert_eq!(elsewhere.status(), 401);
    assert_eq!(h.audit().await, before);
}

#[tokio::test]
async fn an_attest_request_asks_for_a_bounded_list_of_distinct_keys() {
    let h = start().await;
    let kp = ServiceKeyPair::generate(0);
    let rk = keys(&kp);
    let c = h.challenge().await;
    let nonce = hex::decode(&c.nonce).unwrap();
    let evidence = h
        .tee(MEASUREMENT, false)
        .evidence(&cordon_proto::report_data(&nonce, &rk, &[]))
        .unwrap();
    let request = |key_ids: Vec<String>| AttestRequest {
        endorsements: Default::default(),
        nonce: c.nonce.clone(),
        evidence: evidence.clone(),
        runtime_keys: rk.clone(),
        key_ids,
        models: vec![],
        sealed_job: None,
    };
    let many = (0..65).map(|i| format!("k{i}")).collect();
    let (status, e) = refusal(h.attest(&request(many)).await).await;
    assert_eq!((status, e.code.as_str()), (400, "bad_request"));
    assert!(e.error.contains("at most 64"), "{}", e.error);
    let (status, e) = refusal(h.attest(&request(vec!["k".into(), "k".into()])).await).await;
    assert_eq!(status, 400, "{}", e.error);
    assert!(e.error.contains("twice"), "{}", e.error);
    // Refused before the nonce was spent, and before any audit write.
    assert!(h.audit().await.is_empty());
    let r = h.attest(&request(vec!["k".into()])).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn dataset_keys_have_a_quota_per_owner_and_in_all() {
    let h = start_with(KbsLimits {
        max_dataset_keys_per_owner: 2,
        max_dataset_keys: 3,
        ..KbsLimits::default()
    })
    .await;
    /// `party` registers a dataset key for `id`.
    async fn register(h: &Harness, party: &PartyKey, id: &str) -> reqwest::Response {
        let p = policy(vec![Platform::Sim], MEASUREMENT);
        h.register_dataset_with(party, id, &p, [4; 32]).await
    }
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    assert_eq!(register(&h, &a, "a1").await.status(), 200);
    assert_eq!(register(&h, &a, "a2").await.status(), 200);
    let (status, e) = refusal(register(&h, &a, "a3").await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "quota_exceeded"),
        "{}",
        e.error
    );
    // Replacing one's own key is not a new key.
    assert_eq!(register(&h, &a, "a1").await.status(), 200);
    // Another owner has its own quota, up to the KBS's limit in all.
    assert_eq!(register(&h, &b, "b1").await.status(), 200);
    let (status, e) = refusal(register(&h, &b, "b2").await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "quota_exceeded"),
        "{}",
        e.error
    );
}

/// Challenges are MACed, not stored: the host cannot mint one, nor move one's expiry; a nonce
/// spent and then pruned (the clock set ahead) stays refused when the clock is set back; and of
/// concurrent requests with one nonce exactly one is answered with the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_cannot_be_forged_stretched_or_replayed_through_the_clock() {
    let h = start().await;
    let measurement = [0x11; 48];
    assert_eq!(
        h.register("k", [1; 32], policy(vec![Platform::Sim], measurement))
            .await
            .status(),
        200
    );
    let kp = ServiceKeyPair::generate(0);
    let tee = h.tee(measurement, false);
    let code = |r: reqwest::Response| async move { refusal(r).await.1.code };

    // A nonce with its expiry moved an hour later: its MAC no longer verifies.
    let ch = h.challenge().await;
    let mut stretched = hex::decode(&ch.nonce).unwrap();
    stretched[..8].copy_from_slice(&(ch.expires_at + 3_600).to_be_bytes());
    let r = h
        .attest(&request(&hex::encode(&stretched), &tee, &kp, &["k"]))
        .await;
    assert_eq!(code(r).await, "nonce_unknown");

    // Eight concurrent requests with one nonce: one release.
    let ch = h.challenge().await;
    let req = request(&ch.nonce, &tee, &kp, &["k"]);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, req) = (h.http.clone(), h.url.clone(), req.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/kbs/v1/attest"))
                    .json(&req)
                    .send()
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status() == 200 {
            ok += 1;
        } else {
            assert_eq!(code(r).await, "nonce_replayed");
        }
    }
    assert_eq!(ok, 1);

    // The host sets the clock two hours ahead; an attestation then raises the spent nonces'
    // floor and prunes the spent nonce. Back to the old time, the replay is still refused.
    h.clock.fetch_add(7_200, Ordering::SeqCst);
    let later = h.challenge().await;
    assert_eq!(
        h.attest(&request(&later.nonce, &tee, &kp, &["k"]))
            .await
            .status(),
        200
    );
    h.clock.fetch_sub(7_200, Ordering::SeqCst);
    let r = h.attest(&req).await;
    assert_eq!(code(r).await, "nonce_expired");
    let released = h
        .audit()
        .await
        .iter()
        .filter(|e| e.kind == "key_released")
        .count();
    assert_eq!(released, 2);
}

#[tokio::test]
async fn a_store_from_before_signed_admin_requests_is_upgraded_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let kbs = Kbs::open(KbsConfig::new(
            dir.path().join("kbs"),
            Endorsements::default(),
        ))
        .unwrap();
        kbs.init_admin_token().unwrap().unwrap().to_string()
    };
    // What an older KBS left: the token's hash only.
    let conn = rusqlite::Connection::open(dir.path().join("kbs/kbs.sqlite3")).unwrap();
    conn.execute("UPDATE admin SET public_key = NULL", [])
        .unwrap();
    drop(conn);
    let kbs = Kbs::open(KbsConfig::new(
        dir.path().join("kbs"),
        Endorsements::default(),
    ))
    .unwrap();
    assert!(!kbs.has_admin_token().unwrap());
    // A new token is not made silently over the old one.
    assert!(kbs.init_admin_token().is_err());
    // Another token does not adopt it; the real one does, once.
    assert!(kbs.adopt_admin_token(&"ab".repeat(32)).is_err());
    assert!(kbs.adopt_admin_token(&token).unwrap());
    assert!(!kbs.adopt_admin_token(&token).unwrap());
    assert!(kbs.has_admin_token().unwrap());
    assert!(kbs.init_admin_token().unwrap().is_none());
}

/// A runtime that received only some of a job's dataset keys is not the job's runtime: it cannot
/// register the job's output. The runtime that received all of them registers one output, once.
/// The administrator's signed requests are answered, `times` in a row: not locked out.
async fn admin_gets_in(h: &Harness, times: usize) {
    for _ in 0..times {
        let r = h.admin(Method::GET, "/kbs/v1/admin/audit", vec![]).await;
        assert_eq!(r.status(), 200);
    }
}

/// Two parties' datasets registered, and a job over them that deploys its output to serving,
/// approved by both: its hash and its release.
async fn serving_job(h: &Harness) -> ([u8; 32], cordon_proto::kbs::JobRelease) {
    use cordon_proto::job::{Outputs, ServeOutput};
    let p = policy(vec![Platform::Sim], MEASUREMENT);
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    for (party, id) in [(&a, "ds-a"), (&b, "ds-b")] {
        let r = h.register_dataset_with(party, id, &p, [4; 32]).await;
        assert_eq!(r.status(), 200);
    }
    let mut spec = job_spec(&[&a, &b], "j");
    spec.outputs = Outputs {
        recipients: vec![],
        serve: Some(ServeOutput { policy: p }),
    };
    let release = approved(&spec, &[&a, &b], 1_800_000_000 + 3_600);
    (spec.hash(), release)
}

/// A runtime with signing key `signing` attests for the job and asks for `ids`.
async fn attest_as(
    h: &Harness,
    signing: &ed25519_dalek::SigningKey,
    hash: [u8; 32],
    release: &cordon_proto::kbs::JobRelease,
    ids: &[&str],
) -> cordon_proto::kbs::AttestResponse {
    let ids: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    h.attest_for_job_signed_by(
        release.clone(),
        hash,
        &ids,
        signing.verifying_key().to_bytes(),
    )
    .await
    .json()
    .await
    .unwrap()
}

/// The runtime `signing` registers job `hash`'s output as `key_id`, its DEK sealed for `sealed_for`.
async fn put_output(
    h: &Harness,
    signing: &ed25519_dalek::SigningKey,
    hash: [u8; 32],
    key_id: &str,
    sealed_for: &str,
) -> reqwest::Response {
    use cordon_proto::job::{output_context, OutputKey};
    let body = serde_json::to_vec(&OutputKey {
        key_id: key_id.into(),
        sealed_dek: seal_dek_for_kbs(
            &h.kbs_key,
            DekPurpose::JobOutput,
            sealed_for,
            &signing.verifying_key().to_bytes(),
            &output_context(&hash, &[7; 32]),
            &[8; 32],
        )
        .unwrap(),
        sealed_manifest_sha256: [7; 32],
    })
    .unwrap();
    let path = format!("/kbs/v1/jobs/{}/output", hex::encode(hash));
    h.signed(signing, Method::PUT, &path, body, &h.kbs_key)
        .await
}

#[tokio::test]
async fn only_the_runtime_that_received_every_dataset_key_registers_one_output() {
    let h = start().await;
    let (hash, release) = serving_job(&h).await;
    // The rogue runtime got a's key only (the one it asked for).
    let rogue = ed25519_dalek::SigningKey::from_bytes(&[21; 32]);
    let r = attest_as(&h, &rogue, hash, &release, &["ds-a"]).await;
    assert_eq!(r.released.len(), 1);
    let (status, e) =
        refusal(put_output(&h, &rogue, hash, "rogue-output", "rogue-output").await).await;
    assert_eq!(status, 401, "{}", e.error);
    // The real runtime got both; it registers one output, and no second.
    let trainer = ed25519_dalek::SigningKey::from_bytes(&[22; 32]);
    let r = attest_as(&h, &trainer, hash, &release, &["ds-a", "ds-b"]).await;
    assert_eq!(r.released.len(), 2);
    assert_eq!(
        put_output(&h, &trainer, hash, "out-1", "out-1")
            .await
            .status(),
        200
    );
    let (status, e) = refusal(put_output(&h, &trainer, hash, "out-2", "out-2").await).await;
    assert_eq!((status, e.code.as_str()), (409, "conflict"), "{}", e.error);
    assert!(e.error.contains("one output per job"), "{}", e.error);
}

/// A job's runtime is anyone with a TEE and datasets of its own: its requests (even ones that
/// fail after their nonce is spent) take the runtimes' share, never the administrator's.
#[tokio::test]
async fn a_job_runtime_cannot_lock_out_the_administrator() {
    let h = start_with(KbsLimits {
        max_request_nonces: 3,
        max_request_nonces_per_runtime: 2,
        ..KbsLimits::default()
    })
    .await;
    let (hash, release) = serving_job(&h).await;
    let trainer = ed25519_dalek::SigningKey::from_bytes(&[22; 32]);
    let r = attest_as(&h, &trainer, hash, &release, &["ds-a", "ds-b"]).await;
    assert_eq!(r.released.len(), 2);
    // DEKs sealed for another key id: refused after the nonce was spent.
    for _ in 0..2 {
        let (status, e) = refusal(put_output(&h, &trainer, hash, "out", "other").await).await;
        assert_eq!(status, 400, "{}", e.error);
    }
    let (status, e) = refusal(put_output(&h, &trainer, hash, "out", "other").await).await;
    assert_eq!((status, e.code.as_str()), (503, "busy"), "{}", e.error);
    admin_gets_in(&h, 3).await;
}

/// The host owns the KBS's clock: it sets it ahead, lets a request prune the nonces, and sets it
/// back to replay a captured admin request. The KBS keeps how far it pruned, and refuses.
#[tokio::test]
async fn a_clock_set_back_does_not_bring_a_replay_back() {
    let h = start().await;
    let p = policy(vec![Platform::Sim], MEASUREMENT);
    let key = cordon_proto::auth::admin_key(&h.token).unwrap();
    let path = "/kbs/v1/admin/keys/k";
    let body = h.register_body("k", [1; 32], &p);
    let captured: Vec<(&str, String)> =
        cordon_proto::auth::sign_request(&key, "PUT", path, &body, &h.kbs_key, h.now()).into();
    let send = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut req = h.http.put(format!("{}{path}", h.url));
        for (n, v) in headers {
            req = req.header(n, v);
        }
        req.body(body).send()
    };
    assert_eq!(
        send(captured.clone(), body.clone()).await.unwrap().status(),
        200
    );
    // The administrator replaces the key; then the host moves the clock an hour ahead and back.
    assert_eq!(h.register("k", [2; 32], p.clone()).await.status(), 200);
    let t0 = h.clock.load(Ordering::SeqCst);
    h.clock.store(t0 + 3_600, Ordering::SeqCst);
    assert_eq!(
        h.admin(Method::GET, "/kbs/v1/admin/audit", vec![])
            .await
            .status(),
        200
    );
    h.clock.store(t0 + 10, Ordering::SeqCst);
    let (status, e) = refusal(send(captured, body).await.unwrap()).await;
    assert_eq!(
        (status, e.code.as_str()),
        (409, "request_replayed"),
        "{}",
        e.error
    );
    assert!(
        e.error.contains("older than this KBS still remembers"),
        "{}",
        e.error
    );
    // (The administrator's own requests need the clock back where it was.)
    h.clock.store(t0 + 3_600, Ordering::SeqCst);
    let events = h.audit().await;
    assert_eq!(
        events.iter().filter(|e| e.kind == "key_registered").count(),
        2,
        "the replay registered nothing"
    );
}

/// The KBS remembers a bounded number of signed-request nonces; beyond it, signed requests wait
/// (503) rather than the memory growing, and only allowed signers spend one.
#[tokio::test]
async fn the_request_nonce_memory_is_bounded_and_strangers_do_not_spend_it() {
    let h = start_with(KbsLimits {
        max_request_nonces: 3,
        ..KbsLimits::default()
    })
    .await;
    // A stranger's signed requests to the admin API and the output route record nothing.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[31; 32]);
    for _ in 0..5 {
        let r = h
            .signed(
                &stranger,
                Method::GET,
                "/kbs/v1/admin/audit",
                vec![],
                &h.kbs_key,
            )
            .await;
        assert_eq!(r.status(), 401);
        let output = serde_json::to_vec(&cordon_proto::job::OutputKey {
            key_id: "o".into(),
            sealed_dek: seal_dek_for_kbs(
                &h.kbs_key,
                DekPurpose::JobOutput,
                "o",
                &stranger.verifying_key().to_bytes(),
                &cordon_proto::job::output_context(&[0; 32], &[0; 32]),
                &[1; 32],
            )
            .unwrap(),
            sealed_manifest_sha256: [0; 32],
        })
        .unwrap();
        let r = h
            .signed(
                &stranger,
                Method::PUT,
                &format!("/kbs/v1/jobs/{}/output", "00".repeat(32)),
                output,
                &h.kbs_key,
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    for _ in 0..3 {
        assert_eq!(
            h.admin(Method::GET, "/kbs/v1/admin/audit", vec![])
                .await
                .status(),
            200
        );
    }
    let (status, e) = refusal(h.admin(Method::GET, "/kbs/v1/admin/audit", vec![]).await).await;
    assert_eq!((status, e.code.as_str()), (503, "busy"), "{}", e.error);
    // Ten minutes later (twice the window) the nonces are forgotten and there is room again.
    h.clock.fetch_add(601, Ordering::SeqCst);
    assert_eq!(
        h.admin(Method::GET, "/kbs/v1/admin/audit", vec![])
            .await
            .status(),
        200
    );
}

/// Dataset key registrations (which anyone with a key can send) take party shares of the nonce
/// memory: one party cannot take all of it, and parties together cannot lock out the
/// administrator.
#[tokio::test]
async fn party_requests_cannot_lock_out_the_administrator_or_each_other() {
    let h = start_with(KbsLimits {
        max_request_nonces: 3,
        max_party_request_nonces: 3,
        max_request_nonces_per_party: 2,
        ..KbsLimits::default()
    })
    .await;
    let (a, b, c) = (
        PartyKey::generate("a"),
        PartyKey::generate("b"),
        PartyKey::generate("c"),
    );
    // Re-registering one key id is a replacement (no key quota spent), but each request is
    // remembered.
    for _ in 0..2 {
        assert_eq!(h.register_dataset(&a, "mine").await.status(), 200);
    }
    let (status, e) = refusal(h.register_dataset(&a, "mine").await).await;
    assert_eq!((status, e.code.as_str()), (503, "busy"), "{}", e.error);
    assert!(e.error.contains("one party"), "{}", e.error);
    // Another party has its own share, up to the parties' bound.
    assert_eq!(h.register_dataset(&b, "theirs").await.status(), 200);
    let (status, e) = refusal(h.register_dataset(&c, "other").await).await;
    assert_eq!((status, e.code.as_str()), (503, "busy"), "{}", e.error);
    // The administrator is not locked out.
    admin_gets_in(&h, 3).await;
}

/// A signed route's body over the limit gets the KBS's JSON error, like attest's.
#[tokio::test]
async fn an_oversized_signed_request_gets_a_clear_413() {
    let h = start().await;
    let a = PartyKey::generate("a");
    let r = h
        .signed_party(&a, Method::PUT, "/kbs/v1/datasets/big", vec![b'x'; 2 << 20])
        .await;
    let (status, e) = refusal(r).await;
    assert_eq!((status, e.code.as_str()), (413, "too_large"), "{}", e.error);
}

/// The identity the KBS serves carries the administrator's signature: a token holder can check it
/// without a pin, and a key the host substitutes does not pass.
#[tokio::test]
async fn the_served_identity_is_vouched_for_by_the_admin_token() {
    let h = start().await;
    let id: KbsIdentity = h
        .http
        .get(format!("{}/kbs/v1/identity", h.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = cordon_proto::auth::admin_key(&h.token)
        .unwrap()
        .verifying_key()
        .to_bytes();
    let sig = id.admin_signature.expect("the identity is vouched for");
    cordon_proto::auth::check_identity(&admin, &h.kbs_key, &sig).unwrap();
    let host_key = ServiceKeyPair::generate(0).public_key();
    assert!(cordon_proto::auth::check_identity(&admin, &host_key, &sig).is_err());
}

/// An attestation while the clock is a day ahead (a VM restored with a wrong RTC, an NTP step)
/// prunes the nonces spent before and keeps their expiries, not the clock: once the clock is
/// right, fresh challenges work at once (with more attestations while ahead:
/// `a_clock_kept_a_day_ahead_and_set_right_locks_no_fresh_challenge_out`, store_suite.rs). The challenge issued while
/// the clock was ahead is refused then (its expiry is further ahead than the KBS issues).
#[tokio::test]
async fn fresh_challenges_still_work_after_the_clock_is_set_right() {
    let h = start().await;
    let measurement = [0x11; 48];
    assert_eq!(
        h.register("k", [1; 32], policy(vec![Platform::Sim], measurement))
            .await
            .status(),
        200
    );
    let kp = ServiceKeyPair::generate(0);
    let tee = h.tee(measurement, false);
    let before = h.challenge().await;
    assert_eq!(
        h.attest(&request(&before.nonce, &tee, &kp, &["k"]))
            .await
            .status(),
        200
    );
    h.clock.fetch_add(86_400, Ordering::SeqCst);
    let ahead = h.challenge().await;
    assert_eq!(
        h.attest(&request(&ahead.nonce, &tee, &kp, &["k"]))
            .await
            .status(),
        200
    );
    // The clock set right, a second later: the challenge of the day ahead is refused...
    h.clock.fetch_sub(86_400 - 1, Ordering::SeqCst);
    let ahead_again = h.challenge().await;
    let r = h.attest(&request(&ahead.nonce, &tee, &kp, &["k"])).await;
    let (status, e) = refusal(r).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "nonce_expired"),
        "{}",
        e.error
    );
    assert!(e.error.contains("clock was ahead"), "{}", e.error);
    // ...the one spent before the step, pruned meanwhile, stays spent...
    let r = h.attest(&request(&before.nonce, &tee, &kp, &["k"])).await;
    let (status, e) = refusal(r).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "nonce_expired"),
        "{}",
        e.error
    );
    assert!(e.error.contains("may have been spent"), "{}", e.error);
    // ...and a challenge issued now, used at once, works.
    let _ = ahead_again;
    let ch = h.challenge().await;
    let r = h.attest(&request(&ch.nonce, &tee, &kp, &["k"])).await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "a fresh challenge (expires_at {}, now {}) was refused: {body}",
        ch.expires_at,
        h.clock.load(Ordering::SeqCst),
    );
}
