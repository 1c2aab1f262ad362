//! The KBS over real HTTP on loopback: challenge → attest → release, and every must-reject.

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_kbs::{verify_audit_chain, Kbs, KbsConfig};
use cordon_proto::kbs::{AttestRequest, AttestResponse, AuditEvent, Challenge, RELEASE_INFO};
use cordon_proto::ServiceKeyPair;
use cordon_tee::{SimHardwareKey, SimTee};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::*;

async fn error_code(resp: reqwest::Response) -> (u16, String, String) {
    let (status, body) = refusal(resp).await;
    (status, body.code, body.error)
}

#[tokio::test]
async fn releases_dek_sealed_to_the_attested_key_and_audits_it() {
    let h = start().await;
    let dek = [7u8; 32];
    assert!(h
        .register("model-a", dek, policy(vec![Platform::Sim], MEASUREMENT))
        .await
        .status()
        .is_success());
    let kp = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    let resp = h
        .attest(&request(
            &ch.nonce,
            &h.tee(MEASUREMENT, false),
            &kp,
            &["model-a"],
        ))
        .await;
    assert!(resp.status().is_success());
    let body: AttestResponse = resp.json().await.unwrap();
    assert!(body.denied.is_empty(), "{:?}", body.denied);
    assert_eq!(body.released.len(), 1);
    let opened = kp
        .open_sealed(RELEASE_INFO, b"model-a", &body.released[0].sealed_dek)
        .unwrap();
    assert_eq!(opened.as_slice(), &dek);
    // Another key pair cannot open it.
    assert!(ServiceKeyPair::generate(0)
        .open_sealed(RELEASE_INFO, b"model-a", &body.released[0].sealed_dek)
        .is_err());

    let events = h.audit().await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["key_registered", "key_released"]);
    assert_eq!(
        events[1].claims_digest.as_deref(),
        Some(body.claims_digest.as_str())
    );
    assert_eq!(
        events[1].measurement.as_deref(),
        Some(hex::encode(MEASUREMENT).as_str())
    );
    // The audit record names the sealed manifest the runtime bound in its evidence.
    assert_eq!(
        events[1].detail,
        format!("bound models: demo@3 manifest_sha256={}", "ab".repeat(32))
    );
    verify_audit_chain(&events).unwrap();
}

#[tokio::test]
async fn replayed_unknown_and_expired_nonces_are_rejected() {
    let h = start().await;
    h.register("k", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    let kp = ServiceKeyPair::generate(0);
    let tee = h.tee(MEASUREMENT, false);
    let ch = h.challenge().await;
    let req = request(&ch.nonce, &tee, &kp, &["k"]);
    assert!(h.attest(&req).await.status().is_success());
    let (status, code, _) = error_code(h.attest(&req).await).await;
    assert_eq!((status, code.as_str()), (403, "nonce_replayed"));

    let (_, code, _) = error_code(
        h.attest(&request(&hex::encode([3u8; 32]), &tee, &kp, &["k"]))
            .await,
    )
    .await;
    assert_eq!(code, "nonce_unknown");

    let ch = h.challenge().await;
    h.clock.fetch_add(31, Ordering::SeqCst);
    let (status, code, msg) =
        error_code(h.attest(&request(&ch.nonce, &tee, &kp, &["k"])).await).await;
    assert_eq!((status, code.as_str()), (403, "nonce_expired"), "{msg}");
}

#[tokio::test]
async fn evidence_not_binding_the_presented_key_is_rejected() {
    let h = start().await;
    h.register("k", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    let honest = ServiceKeyPair::generate(0);
    let attacker = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    // Evidence binds the honest key; the request presents the attacker's key to receive the DEK.
    let mut req = request(&ch.nonce, &h.tee(MEASUREMENT, false), &honest, &["k"]);
    req.runtime_keys = keys(&attacker);
    let (status, code, msg) = error_code(h.attest(&req).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "report_data_mismatch"),
        "{msg}"
    );

    // Presenting a model list other than the one the evidence binds is rejected the same way.
    let ch3 = h.challenge().await;
    let mut req = request(&ch3.nonce, &h.tee(MEASUREMENT, false), &honest, &["k"]);
    req.models[0].manifest_sha256[0] ^= 1;
    let (status, code, _) = error_code(h.attest(&req).await).await;
    assert_eq!((status, code.as_str()), (403, "report_data_mismatch"));

    // Evidence made for a different nonce is rejected the same way.
    let ch2 = h.challenge().await;
    let mut req = request(&ch.nonce, &h.tee(MEASUREMENT, false), &honest, &["k"]);
    req.nonce = ch2.nonce;
    let (_, code, _) = error_code(h.attest(&req).await).await;
    assert_eq!(code, "report_data_mismatch");
    assert_eq!(
        h.audit()
            .await
            .iter()
            .filter(|e| e.kind == "attestation_failed")
            .count(),
        3
    );
}

#[tokio::test]
async fn policy_denials_name_the_failed_check() {
    let h = start().await;
    h.register(
        "wants-other-measurement",
        [1; 32],
        policy(vec![Platform::Sim], [0x11; 48]),
    )
    .await;
    // About the platform check, not the configuration: an SNP policy must pin the runtime
    // configuration or say that it accepts any (issue 15, item 3).
    let hardware_only = Policy {
        allow_unpinned_config: true,
        ..Policy::new(
            vec![Platform::Snp, Platform::Sgx],
            vec![MEASUREMENT.to_vec()],
        )
    };
    let registered = h
        .register("hardware-only", [2; 32], hardware_only.to_toml())
        .await;
    assert!(registered.status().is_success(), "{}", registered.status());
    h.register(
        "no-debug",
        [3; 32],
        policy(vec![Platform::Sim], MEASUREMENT),
    )
    .await;
    let kp = ServiceKeyPair::generate(0);

    let ch = h.challenge().await;
    let body: AttestResponse = h
        .attest(&request(
            &ch.nonce,
            &h.tee(MEASUREMENT, false),
            &kp,
            &["wants-other-measurement", "hardware-only", "absent"],
        ))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.released.is_empty());
    let reason = |id: &str| {
        body.denied
            .iter()
            .find(|d| d.key_id == id)
            .unwrap()
            .reasons
            .join("; ")
    };
    assert!(
        reason("wants-other-measurement").contains("launch_measurement"),
        "{}",
        reason("wants-other-measurement")
    );
    assert!(reason("wants-other-measurement").contains(&hex::encode(MEASUREMENT)));
    assert!(
        reason("hardware-only").contains("platform: evidence is from `sim`"),
        "{}",
        reason("hardware-only")
    );
    assert!(reason("absent").contains("unknown key id"));

    let ch = h.challenge().await;
    let body: AttestResponse = h
        .attest(&request(
            &ch.nonce,
            &h.tee(MEASUREMENT, true),
            &kp,
            &["no-debug"],
        ))
        .await
        .json()
        .await
        .unwrap();
    assert!(body.released.is_empty());
    assert!(
        body.denied[0].reasons.join(";").contains("debug"),
        "{:?}",
        body.denied
    );
    let denials = h
        .audit()
        .await
        .into_iter()
        .filter(|e| e.kind == "key_denied")
        .count();
    assert_eq!(denials, 4);
}

#[tokio::test]
async fn evidence_from_an_untrusted_sim_key_is_rejected() {
    let h = start().await;
    h.register("k", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    let kp = ServiceKeyPair::generate(0);
    let rogue = SimTee::new(SimHardwareKey::generate(), MEASUREMENT, [0; 32], false);
    let ch = h.challenge().await;
    let (status, code, msg) =
        error_code(h.attest(&request(&ch.nonce, &rogue, &kp, &["k"])).await).await;
    assert_eq!((status, code.as_str()), (403, "evidence_invalid"));
    assert!(msg.contains("not a trusted sim trust anchor"), "{msg}");
}

#[tokio::test]
async fn admin_api_requires_a_signature_by_the_admin_key_and_a_valid_policy() {
    let h = start().await;
    let path = "/kbs/v1/admin/keys/k";
    let body = h.register_body("k", [1; 32], &policy(vec![Platform::Sim], MEASUREMENT));
    // Unsigned, or a bearer token as before: refused (the token never travels any more).
    let r = h
        .http
        .put(format!("{}{path}", h.url))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = h
        .http
        .put(format!("{}{path}", h.url))
        .bearer_auth(&h.token)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // Signed, but by a key that is not the administrator's.
    let other = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let r = h
        .signed(&other, reqwest::Method::PUT, path, body.clone(), &h.kbs_key)
        .await;
    let (status, code, msg) = error_code(r).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"), "{msg}");
    let r = h
        .register(
            "k",
            [1; 32],
            "platforms = []\nlaunch_measurements = []".into(),
        )
        .await;
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "policy_invalid"));
    let r = h
        .http
        .post(format!("{}/kbs/v1/attest", h.url))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(r).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let _ = SystemTime::now();
}

#[tokio::test]
async fn nonce_stays_spent_after_a_failed_attest() {
    let h = start().await;
    h.register("k", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    let honest = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    let mut bad = request(&ch.nonce, &h.tee(MEASUREMENT, false), &honest, &["k"]);
    bad.runtime_keys = keys(&ServiceKeyPair::generate(0));
    let (_, code, _) = error_code(h.attest(&bad).await).await;
    assert_eq!(code, "report_data_mismatch");
    // The honest request with the same nonce is now a replay.
    let good = request(&ch.nonce, &h.tee(MEASUREMENT, false), &honest, &["k"]);
    let (_, code, _) = error_code(h.attest(&good).await).await;
    assert_eq!(code, "nonce_replayed");
}

#[tokio::test]
async fn store_keeps_only_the_admin_token_hash_and_public_key() {
    let h = start().await;
    h.register("k", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    let token_bytes = hex::decode(&h.token).unwrap();
    for entry in std::fs::read_dir(&h.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes
            .windows(h.token.len())
            .any(|w| w == h.token.as_bytes()));
        assert!(!bytes
            .windows(token_bytes.len())
            .any(|w| w == token_bytes.as_slice()));
    }
}

#[tokio::test]
async fn empty_key_list_and_release_policy_with_endorsements_are_refused() {
    let h = start().await;
    let kp = ServiceKeyPair::generate(0);
    let ch = h.challenge().await;
    let (status, code, _) = error_code(
        h.attest(&request(&ch.nonce, &h.tee(MEASUREMENT, false), &kp, &[]))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    let with_anchor = format!(
        "{}\n[endorsements]\nsim_trust_anchors = [\"{}\"]\n",
        policy(vec![Platform::Sim], MEASUREMENT),
        "00".repeat(32)
    );
    let (status, code, msg) = error_code(h.register("k", [1; 32], with_anchor).await).await;
    assert_eq!((status, code.as_str()), (400, "policy_invalid"), "{msg}");
}

#[tokio::test]
async fn hardware_release_policies_must_pin_the_runtime_configuration() {
    // Issue 15, item 3: the host chooses HOST_DATA / MRCONFIGID, and with them the runtime's
    // configuration (KBS URL, models, ONNX Runtime library); an unpinned SNP or TDX release policy is
    // refused at registration unless it says allow_unpinned_config = true.
    let h = start().await;
    let m = hex::encode(MEASUREMENT);
    for (platforms, pin, fix) in [
        ("[\"snp\"]", "", "SHA-256"),
        ("[\"tdx\"]", "rtmrs = []\n", "SHA-384"),
    ] {
        let unpinned = format!("platforms = {platforms}\nlaunch_measurements = [\"{m}\"]\n{pin}");
        let (status, code, msg) =
            error_code(h.register("k", [1; 32], unpinned.clone()).await).await;
        assert_eq!((status, code.as_str()), (400, "policy_invalid"), "{msg}");
        assert!(
            msg.contains(fix) && msg.contains("allow_unpinned_config"),
            "{msg}"
        );
        let explicit = format!("{unpinned}allow_unpinned_config = true\n");
        let r = h.register("k", [1; 32], explicit).await;
        assert!(r.status().is_success(), "{}", r.status());
    }
    let pinned = format!(
        "platforms = [\"snp\"]\nlaunch_measurements = [\"{m}\"]\nworkload_data = \"{}\"\n",
        "ab".repeat(32)
    );
    let r = h.register("k2", [1; 32], pinned).await;
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test]
async fn hardware_evidence_is_verified_and_must_bind_the_nonce() {
    // A KBS configured with a real VCEK verifies a real SNP report; the report's report_data was
    // made for another nonce and other keys, so the KBS refuses it after verification, not before.
    let dir = tempfile::tempdir().unwrap();
    let vcek = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der").to_vec();
    let report =
        include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin").to_vec();
    let mut config = KbsConfig::new(
        dir.path().join("kbs"),
        Endorsements {
            snp_certs: vec![vcek],
            ..Default::default()
        },
    );
    config.clock = Arc::new(|| UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let kbs = Kbs::open(config).unwrap();
    let token = kbs.init_admin_token().unwrap().unwrap().to_string();
    let kbs_key = kbs.identity_public_key();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, kbs.router()).await.unwrap() });
    let http = reqwest::Client::new();
    let ch: Challenge = http
        .post(format!("{url}/kbs/v1/challenge"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kp = ServiceKeyPair::generate(0);
    let req = AttestRequest {
        endorsements: Default::default(),
        nonce: ch.nonce,
        evidence: report.clone(),
        runtime_keys: keys(&kp),
        key_ids: vec!["k".into()],
        models: vec![],
        sealed_job: None,
    };
    let (status, code, msg) = error_code(
        http.post(format!("{url}/kbs/v1/attest"))
            .json(&req)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (403, "report_data_mismatch"),
        "{msg}"
    );
    let admin = cordon_proto::auth::admin_key(&token).unwrap();
    let mut audit = http.get(format!("{url}/kbs/v1/admin/audit"));
    for (name, value) in cordon_proto::auth::sign_request(
        &admin,
        "GET",
        "/kbs/v1/admin/audit",
        b"",
        &kbs_key,
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ) {
        audit = audit.header(name, value);
    }
    let events: Vec<AuditEvent> = audit.send().await.unwrap().json().await.unwrap();
    assert_eq!(events[0].kind, "attestation_failed");
    assert_eq!(
        events[0].measurement.as_deref(),
        Some(hex::encode(&report[0x90..0xC0]).as_str())
    );

    // The same report altered by one byte fails verification itself.
    let ch: Challenge = http
        .post(format!("{url}/kbs/v1/challenge"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tampered = report;
    tampered[0x90] ^= 1;
    let req = AttestRequest {
        endorsements: Default::default(),
        nonce: ch.nonce,
        evidence: tampered,
        runtime_keys: keys(&kp),
        key_ids: vec!["k".into()],
        models: vec![],
        sealed_job: None,
    };
    let (_, code, msg) = error_code(
        http.post(format!("{url}/kbs/v1/attest"))
            .json(&req)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(code, "evidence_invalid", "{msg}");
    assert!(
        msg.contains("SNP report signature does not verify"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_vcek_shipped_with_the_evidence_is_verified_like_a_configured_one() {
    // A KBS with no VCEK of its own: the runtime ships its VCEK beside the report. The KBS checks it
    // up to AMD's pinned roots and verifies the report with it (then refuses the binding, as
    // above); without it, or with a certificate too large to be one, verification fails.
    let dir = tempfile::tempdir().unwrap();
    let vcek = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der").to_vec();
    let other = include_bytes!("../../../testdata/attestation/snp/gosev_vcek.der").to_vec();
    let report =
        include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin").to_vec();
    let mut config = KbsConfig::new(dir.path().join("kbs"), Endorsements::default());
    config.clock = Arc::new(|| UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let kbs = Kbs::open(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, kbs.router()).await.unwrap() });
    let http = reqwest::Client::new();
    let kp = ServiceKeyPair::generate(0);
    let attest = |certs: Vec<Vec<u8>>| {
        let (http, url, report, keys) = (http.clone(), url.clone(), report.clone(), keys(&kp));
        async move {
            let ch: Challenge = http
                .post(format!("{url}/kbs/v1/challenge"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let req = AttestRequest {
                endorsements: cordon_proto::WireEndorsements {
                    snp_certs: certs,
                    ..Default::default()
                },
                nonce: ch.nonce,
                evidence: report,
                runtime_keys: keys,
                key_ids: vec!["k".into()],
                models: vec![],
                sealed_job: None,
            };
            error_code(
                http.post(format!("{url}/kbs/v1/attest"))
                    .json(&req)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, code, msg) = attest(vec![other.clone(), vcek]).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "report_data_mismatch"),
        "{msg}"
    );
    let (_, code, msg) = attest(vec![]).await;
    assert_eq!(code, "evidence_invalid", "{msg}");
    assert!(msg.contains("no VCEK certificate was given"), "{msg}");
    let (_, code, msg) = attest(vec![other]).await;
    assert_eq!(code, "evidence_invalid", "{msg}");
    let (_, code, msg) = attest(vec![vec![0; 20_000]]).await;
    assert_eq!(code, "evidence_invalid", "{msg}");
    assert!(msg.contains("at most 16384"), "{msg}");
}
