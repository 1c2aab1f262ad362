//! The KBS's identity evidence: made once at start by its TEE, served by `GET /kbs/v1/identity`,
//! binding exactly the identity key the KBS opens sealed DEKs with.

use cordon_attest::{verify, Endorsements, Platform};
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::kbs::{kbs_identity_report_data, KbsIdentity};
use cordon_tee::{SimHardwareKey, SimTee};
use std::sync::Arc;
use std::time::SystemTime;

async fn serve(kbs: &Kbs) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = kbs.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    url
}

async fn identity(url: &str) -> KbsIdentity {
    let resp = reqwest::get(format!("{url}/kbs/v1/identity"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_served_evidence_binds_the_identity_key_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hw = SimHardwareKey::generate();
    let anchors = Endorsements {
        sim_trust_anchors: vec![hw.public_key()],
        ..Default::default()
    };
    let tee = SimTee::new(hw, [0x4b; 48], [0; 32], false);
    let mut config = KbsConfig::new(dir.path().to_path_buf(), anchors.clone());
    config.identity_tee = Some(Arc::new(tee));
    let kbs = Kbs::open(config.clone()).unwrap();
    let key = kbs.identity_public_key();
    let url = serve(&kbs).await;
    let id = identity(&url).await;
    assert_eq!(id.hpke_public_key, key);
    let ev = id.evidence.expect("a KBS with a TEE serves evidence");
    assert_eq!(ev.platform, Platform::Sim);
    assert_eq!(Some(&ev), kbs.identity_evidence());
    let claims = verify(&ev.evidence, &anchors, SystemTime::now()).unwrap();
    assert_eq!(claims.report_data, kbs_identity_report_data(&key));
    assert_eq!(claims.launch_measurement, vec![0x4b; 48]);
    assert!(!claims.debug);

    // The identity key is long-term: a restart makes new evidence over the same key.
    drop(kbs);
    let again = Kbs::open(config).unwrap();
    assert_eq!(again.identity_public_key(), key);
    let claims = verify(
        &again.identity_evidence().unwrap().evidence,
        &anchors,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(claims.report_data, kbs_identity_report_data(&key));
}

#[tokio::test]
async fn a_kbs_without_a_tee_serves_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let kbs = Kbs::open(KbsConfig::new(
        dir.path().to_path_buf(),
        Endorsements::default(),
    ))
    .unwrap();
    assert!(kbs.identity_evidence().is_none());
    let url = serve(&kbs).await;
    let resp = reqwest::get(format!("{url}/kbs/v1/identity"))
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    // As before identity evidence: no `evidence` field at all.
    assert!(body.get("evidence").is_none(), "{body}");
    assert_eq!(
        body["hpke_public_key"],
        hex::encode(kbs.identity_public_key())
    );
}
