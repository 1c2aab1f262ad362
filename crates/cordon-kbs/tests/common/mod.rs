//! The KBS harness shared by the loopback tests: a KBS on an ephemeral port with a movable clock.

#![allow(dead_code)]

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_kbs::{Kbs, KbsConfig, KbsLimits};
use cordon_proto::kbs::{
    policy_context, seal_dek_for_kbs, AttestRequest, AuditEvent, Challenge, DekPurpose, RegisterKey,
};
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
    /// The KBS's identity key (what owners and parties pin).
    pub kbs_key: [u8; 32],
    pub hw_key_seed: String,
    pub clock: Arc<AtomicU64>,
    pub http: reqwest::Client,
    pub _dir: tempfile::TempDir,
}

pub async fn start() -> Harness {
    start_with(KbsLimits::default()).await
}

pub async fn start_with(limits: KbsLimits) -> Harness {
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
    config.limits = limits;
    let kbs = Kbs::open(config).unwrap();
    let kbs_key = kbs.identity_public_key();
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
        kbs_key,
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
    /// The KBS's clock.
    pub fn now(&self) -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.clock.load(Ordering::SeqCst))
    }

    /// An admin request: signed with the admin token for this KBS, at the KBS's time.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let key = cordon_proto::auth::admin_key(&self.token).unwrap();
        self.signed(&key, method, path, body, &self.kbs_key).await
    }

    /// A request signed by `key` for the server key `audience`.
    pub async fn signed(
        &self,
        key: &ed25519_dalek::SigningKey,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        audience: &[u8; 32],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        for (name, value) in cordon_proto::auth::sign_request(
            key,
            method.as_str(),
            path,
            &body,
            audience,
            self.now(),
        ) {
            req = req.header(name, value);
        }
        req.body(body).send().await.unwrap()
    }

    /// A request signed by `party` for this KBS.
    pub async fn signed_party(
        &self,
        party: &cordon_proto::job::PartyKey,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        for (name, value) in
            party.sign_request(method.as_str(), path, &body, &self.kbs_key, self.now())
        {
            req = req.header(name, value);
        }
        req.body(body).send().await.unwrap()
    }

    /// The body of an admin registration of `dek` under `policy` for `key_id`.
    pub fn register_body(&self, key_id: &str, dek: [u8; 32], policy: &str) -> Vec<u8> {
        let admin = cordon_proto::auth::admin_key(&self.token).unwrap();
        serde_json::to_vec(&RegisterKey {
            sealed_dek: seal_dek_for_kbs(
                &self.kbs_key,
                DekPurpose::AdminKey,
                key_id,
                &admin.verifying_key().to_bytes(),
                &policy_context(policy),
                &dek,
            )
            .unwrap(),
            policy: policy.to_string(),
        })
        .unwrap()
    }

    pub async fn register(&self, key_id: &str, dek: [u8; 32], policy: String) -> reqwest::Response {
        let body = self.register_body(key_id, dek, &policy);
        self.admin(
            reqwest::Method::PUT,
            &format!("/kbs/v1/admin/keys/{key_id}"),
            body,
        )
        .await
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
        let resp = self
            .admin(reqwest::Method::GET, "/kbs/v1/admin/audit", vec![])
            .await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }
}

pub fn keys(kp: &ServiceKeyPair) -> RuntimeKeys {
    RuntimeKeys {
        hpke_public_key: kp.public_key(),
        hpke_key_id: kp.key_id(),
        signing_public_key: [9; 32],
    }
}
