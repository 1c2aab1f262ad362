//! The KBS against the host that carries its traffic (issue 15): DEKs arrive sealed to the KBS's
//! identity and bound to their slot, signed requests are refused when replayed or meant for
//! another KBS, and what one caller can make the KBS store or do is bounded.

mod common;
use common::*;

use cordon_attest::{Endorsements, Platform};
use cordon_kbs::{Kbs, KbsConfig, KbsLimits};
use cordon_proto::job::PartyKey;
use cordon_proto::kbs::{
    policy_context, seal_dek_for_kbs, AttestRequest, DekPurpose, ErrorBody, KbsIdentity,
    RegisterKey,
};
use cordon_proto::ServiceKeyPair;
use cordon_tee::EvidenceProvider;
use reqwest::Method;
use std::sync::atomic::Ordering;

async fn refusal(resp: reqwest::Response) -> (u16, ErrorBody) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn sealed(
    h: &Harness,
    kbs_key: &[u8; 32],
    purpose: DekPurpose,
    key_id: &str,
    policy: &str,
) -> Vec<u8> {
    let admin = cordon_proto::auth::admin_key(&h.token).unwrap();
    serde_json::to_vec(&RegisterKey {
        sealed_dek: seal_dek_for_kbs(
            kbs_key,
            purpose,
            key_id,
            &admin.verifying_key().to_bytes(),
            &policy_context(policy),
            &[5; 32],
        )
        .unwrap(),
        policy: policy.to_string(),
    })
    .unwrap()
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
        nonce: c.nonce.clone(),
        evidence: evidence.clone(),
        runtime_keys: rk.clone(),
        key_ids,
        models: vec![],
        job: None,
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
    let p = policy(vec![Platform::Sim], MEASUREMENT);
    let register = |party: &PartyKey, id: &str| {
        let body = serde_json::to_vec(&RegisterKey {
            sealed_dek: seal_dek_for_kbs(
                &h.kbs_key,
                DekPurpose::DatasetKey,
                id,
                &party.signing_public_key(),
                &policy_context(&p),
                &[4; 32],
            )
            .unwrap(),
            policy: p.clone(),
        })
        .unwrap();
        let path = format!("/kbs/v1/datasets/{id}");
        let mut req = h.http.put(format!("{}{path}", h.url));
        for (name, value) in party.sign_request("PUT", &path, &body, &h.kbs_key, h.now()) {
            req = req.header(name, value);
        }
        req.body(body).send()
    };
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    assert_eq!(register(&a, "a1").await.unwrap().status(), 200);
    assert_eq!(register(&a, "a2").await.unwrap().status(), 200);
    let (status, e) = refusal(register(&a, "a3").await.unwrap()).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "quota_exceeded"),
        "{}",
        e.error
    );
    // Replacing one's own key is not a new key.
    assert_eq!(register(&a, "a1").await.unwrap().status(), 200);
    // Another owner has its own quota, up to the KBS's limit in all.
    assert_eq!(register(&b, "b1").await.unwrap().status(), 200);
    let (status, e) = refusal(register(&b, "b2").await.unwrap()).await;
    assert_eq!(
        (status, e.code.as_str()),
        (403, "quota_exceeded"),
        "{}",
        e.error
    );
}

#[tokio::test]
async fn outstanding_challenges_are_bounded() {
    let h = start_with(KbsLimits {
        max_live_nonces: 3,
        ..KbsLimits::default()
    })
    .await;
    for _ in 0..3 {
        h.challenge().await;
    }
    let r = h
        .http
        .post(format!("{}/kbs/v1/challenge", h.url))
        .send()
        .await
        .unwrap();
    let (status, e) = refusal(r).await;
    assert_eq!((status, e.code.as_str()), (503, "busy"));
    // Once they expire (30 s TTL in the harness), there is room again.
    h.clock.fetch_add(31, Ordering::SeqCst);
    h.challenge().await;
}

#[tokio::test]
async fn a_store_from_before_signed_admin_requests_is_upgraded_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = {
        let kbs = Kbs::open(KbsConfig::new(
            dir.path().to_path_buf(),
            Endorsements::default(),
        ))
        .unwrap();
        kbs.init_admin_token().unwrap().unwrap().to_string()
    };
    // What an older KBS left: the token's hash only.
    let conn = rusqlite::Connection::open(dir.path().join("kbs.sqlite3")).unwrap();
    conn.execute("UPDATE admin SET public_key = NULL", [])
        .unwrap();
    drop(conn);
    let kbs = Kbs::open(KbsConfig::new(
        dir.path().to_path_buf(),
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
