//! The client refuses runtimes it cannot verify, before sending anything.

use axum::extract::Query;
use axum::routing::{get, post};
use axum::{Json, Router};
use cordon_attest::{Endorsements, Platform, Policy};
use cordon_client::{connect_with, ClientError};
use cordon_proto::runtime::AttestationResponse;
use cordon_proto::{report_data, ModelBinding, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

const GOOD: [u8; 48] = [0x5a; 48];

/// How a fake runtime misbehaves.
#[derive(Clone, Copy)]
enum Fake {
    Honest,
    /// Presents a key other than the one its evidence binds.
    UnboundKey,
    /// Ignores the verifier's nonce and replays evidence made for another nonce.
    StaleNonce,
    /// Presents a model (manifest digest) other than the one its evidence binds.
    UnboundModel,
}

fn served_model() -> ModelBinding {
    ModelBinding {
        name: "fraud".into(),
        version: "7".into(),
        manifest_sha256: [0x11; 32],
    }
}

async fn fake_runtime(tee: SimTee, mode: Fake, encrypted_hits: Arc<AtomicUsize>) -> String {
    let tee = Arc::new(tee);
    let bound = ServiceKeyPair::generate(0);
    let presented = match mode {
        Fake::UnboundKey => ServiceKeyPair::generate(0).public_key(),
        _ => bound.public_key(),
    };
    let bound_keys = RuntimeKeys {
        hpke_public_key: bound.public_key(),
        hpke_key_id: 0,
        signing_public_key: [1; 32],
    };
    let app = Router::new()
        .route(
            "/v1/attestation",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let tee = tee.clone();
                let bound_keys = bound_keys.clone();
                async move {
                    let nonce = match mode {
                        Fake::StaleNonce => vec![0u8; 32],
                        _ => hex::decode(&q["nonce"]).unwrap(),
                    };
                    let bound_models = vec![served_model()];
                    let evidence = tee
                        .evidence(&report_data(&nonce, &bound_keys, &bound_models))
                        .unwrap();
                    let runtime_keys = RuntimeKeys {
                        hpke_public_key: presented,
                        ..bound_keys
                    };
                    let mut models = bound_models;
                    if let Fake::UnboundModel = mode {
                        models[0].manifest_sha256[0] ^= 1;
                    }
                    Json(AttestationResponse {
                        endorsements: Default::default(),
                        evidence,
                        runtime_keys,
                        models,
                    })
                }
            }),
        )
        .route(
            "/v1/encrypted",
            post(move || {
                encrypted_hits.fetch_add(1, Ordering::SeqCst);
                async { "unexpected" }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn policy(measurement: [u8; 48]) -> Policy {
    Policy::new(vec![Platform::Sim], vec![measurement.to_vec()])
}

async fn setup(measurement: [u8; 48], mode: Fake) -> (String, Endorsements, Arc<AtomicUsize>) {
    let hw = SimHardwareKey::generate();
    let endorsements = Endorsements {
        sim_trust_anchors: vec![hw.public_key()],
        ..Default::default()
    };
    let hits = Arc::new(AtomicUsize::new(0));
    let url = fake_runtime(
        SimTee::new(hw, measurement, [0; 32], false),
        mode,
        hits.clone(),
    )
    .await;
    (url, endorsements, hits)
}

#[tokio::test]
async fn honest_runtime_is_accepted_and_its_key_pinned() {
    let (url, e, _) = setup(GOOD, Fake::Honest).await;
    let rt = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(rt.claims().launch_measurement, GOOD.to_vec());
    assert!(!rt.claims().hardware_backed);
}

#[tokio::test]
async fn client_can_demand_an_exact_model() {
    let (url, e, _) = setup(GOOD, Fake::Honest).await;
    let rt = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(rt.models(), &[served_model()]);
    rt.require_model("fraud", &hex::encode([0x11; 32])).unwrap();
    let err = rt
        .require_model("fraud", &hex::encode([0x12; 32]))
        .unwrap_err();
    assert!(matches!(err, ClientError::ModelMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&hex::encode([0x11; 32])), "{err}");
    let err = rt
        .require_model("other", &hex::encode([0x11; 32]))
        .unwrap_err();
    assert!(err.to_string().contains("does not serve"), "{err}");
}

#[tokio::test]
async fn runtime_presenting_an_unbound_model_is_refused() {
    let (url, e, hits) = setup(GOOD, Fake::UnboundModel).await;
    let err = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::KeyNotBound { .. }), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn runtime_with_unlisted_measurement_is_refused() {
    let (url, e, hits) = setup([0x66; 48], Fake::Honest).await;
    let err = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Rejected(_)), "{err}");
    assert!(err.to_string().contains("launch_measurement"), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn runtime_presenting_an_unbound_key_is_refused() {
    let (url, e, hits) = setup(GOOD, Fake::UnboundKey).await;
    let err = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::KeyNotBound { .. }), "{err}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn evidence_for_another_nonce_is_refused() {
    let (url, e, _) = setup(GOOD, Fake::StaleNonce).await;
    let err = connect_with(&url, &policy(GOOD), &e, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::KeyNotBound { .. }), "{err}");
}

#[tokio::test]
async fn evidence_from_untrusted_hardware_key_is_refused() {
    let (url, _, _) = setup(GOOD, Fake::Honest).await;
    let other = Endorsements {
        sim_trust_anchors: vec![SimHardwareKey::generate().public_key()],
        ..Default::default()
    };
    let err = connect_with(&url, &policy(GOOD), &other, SystemTime::now())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Evidence(_)), "{err}");
}

#[tokio::test]
async fn sim_runtime_is_refused_by_a_hardware_only_policy() {
    let (url, e, _) = setup(GOOD, Fake::Honest).await;
    let p = Policy {
        platforms: vec![Platform::Snp],
        ..policy(GOOD)
    };
    let err = connect_with(&url, &p, &e, SystemTime::now())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("platform"), "{err}");
}

/// A hardware runtime ships its VCEK with its evidence; the client, with no endorsements of its
/// own (a hardware policy needs no `[endorsements]`), verifies the report with it up to AMD's
/// pinned roots, appraises it, and still refuses keys the report does not bind. The report is a
/// real one (Trustee's test report), so its report_data binds no key of this test: the client
/// gets past verification and appraisal and stops at the binding, before sending anything.
mod shipped_endorsements {
    use super::*;
    use cordon_attest::{MinTcbFloor, PolicyDocument};
    use cordon_client::connect;
    use cordon_proto::WireEndorsements;
    use std::time::{Duration, UNIX_EPOCH};

    const REPORT: &[u8] =
        include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin");
    const VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der");
    const OTHER_VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/gosev_vcek.der");

    /// 2025-07-01: inside the VCEK's validity.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_751_328_000)
    }

    async fn runtime_shipping(certs: Vec<Vec<u8>>) -> String {
        let app = Router::new().route(
            "/v1/attestation",
            get(move || {
                let certs = certs.clone();
                async move {
                    Json(AttestationResponse {
                        evidence: REPORT.to_vec(),
                        endorsements: WireEndorsements {
                            snp_certs: certs,
                            ..Default::default()
                        },
                        runtime_keys: RuntimeKeys {
                            hpke_public_key: [2; 32],
                            hpke_key_id: 0,
                            signing_public_key: [3; 32],
                        },
                        models: vec![],
                    })
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    /// A client policy for exactly this report, with no [endorsements] table.
    fn document() -> PolicyDocument {
        let claims = cordon_attest::verify(
            REPORT,
            &Endorsements {
                snp_certs: vec![VCEK.to_vec()],
                ..Default::default()
            },
            now(),
        )
        .unwrap();
        PolicyDocument {
            policy: Policy {
                workload_data: Some(claims.workload_data.clone()),
                min_tcb_floor: MinTcbFloor::None,
                ..Policy::new(vec![Platform::Snp], vec![claims.launch_measurement])
            },
            endorsements: None,
        }
    }

    #[tokio::test]
    async fn the_shipped_vcek_verifies_and_the_binding_is_still_checked() {
        let url = runtime_shipping(vec![VCEK.to_vec()]).await;
        let err = connect(&url, &document(), now()).await.err().unwrap();
        assert!(matches!(err, ClientError::KeyNotBound { .. }), "{err}");
    }

    #[tokio::test]
    async fn no_vcek_or_another_chips_vcek_fails_verification() {
        let url = runtime_shipping(vec![]).await;
        let err = connect(&url, &document(), now()).await.err().unwrap();
        assert!(
            matches!(err, ClientError::Evidence(_)) && err.to_string().contains("VCEK"),
            "{err}"
        );
        let url = runtime_shipping(vec![OTHER_VCEK.to_vec()]).await;
        let err = connect(&url, &document(), now()).await.err().unwrap();
        assert!(matches!(err, ClientError::Evidence(_)), "{err}");
        let url = runtime_shipping(vec![vec![0; 20_000]]).await;
        let err = connect(&url, &document(), now()).await.err().unwrap();
        assert!(
            matches!(err, ClientError::Malformed(_)) && err.to_string().contains("16384"),
            "{err}"
        );
    }
}
