//! The KBS harness shared by the loopback tests: a KBS on an ephemeral port with a movable clock.

#![allow(dead_code)]

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::kbs::{AttestRequest, AuditEvent, Challenge, RegisterKey};
use cordon_proto::{RuntimeKeys, ServiceKeyPair};
use cordon_tee::{SimHardwareKey, SimTee};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub const MEASUREMENT: [u8; 48] = [0x42; 48];

pub struct Harness {
    pub url: String,
    pub token: String,
    pub hw_key_seed: String,
    pub clock: Arc<AtomicU64>,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

pub async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let hw = SimHardwareKey::generate();
    let clock = Arc::new(AtomicU64::new(1_800_000_000));
    let c = clock.clone();
    let mut config = KbsConfig::new(
        dir.path().to_path_buf(),
        Endorsements {
            sim_trust_anchors: vec![hw.public_key()],
            ..Default::default()
        },
    );
    config.clock = Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)));
    config.nonce_ttl = Duration::from_secs(30);
    let kbs = Kbs::open(config).unwrap();
    let token = kbs.init_admin_token().unwrap().unwrap().to_string();
    assert!(
        kbs.init_admin_token().unwrap().is_none(),
        "token is created once"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, kbs.router()).await.unwrap() });
    Harness {
        url,
        token,
        hw_key_seed: hw.to_file_contents().to_string(),
        clock,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

pub fn policy(platforms: Vec<Platform>, measurement: [u8; 48]) -> String {
    Policy::new(platforms, vec![measurement.to_vec()]).to_toml()
}

impl Harness {
    pub async fn register(&self, key_id: &str, dek: [u8; 32], policy: String) -> reqwest::Response {
        self.http
            .put(format!("{}/kbs/v1/admin/keys/{key_id}", self.url))
            .bearer_auth(&self.token)
            .json(&RegisterKey {
                dek: dek.to_vec(),
                policy,
            })
            .send()
            .await
            .unwrap()
    }

    pub async fn challenge(&self) -> Challenge {
        self.http
            .post(format!("{}/kbs/v1/challenge", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn tee(&self, measurement: [u8; 48], debug: bool) -> SimTee {
        SimTee::new(
            SimHardwareKey::from_file_contents(&self.hw_key_seed).unwrap(),
            measurement,
            [0; 32],
            debug,
        )
    }

    pub async fn attest(&self, req: &AttestRequest) -> reqwest::Response {
        self.http
            .post(format!("{}/kbs/v1/attest", self.url))
            .json(req)
            .send()
            .await
            .unwrap()
    }

    pub async fn audit(&self) -> Vec<AuditEvent> {
        self.http
            .get(format!("{}/kbs/v1/admin/audit", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

pub fn keys(kp: &ServiceKeyPair) -> RuntimeKeys {
    RuntimeKeys {
        hpke_public_key: kp.public_key(),
        hpke_key_id: kp.key_id(),
        signing_public_key: [9; 32],
    }
}
