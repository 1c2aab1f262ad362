//! The KBS harness shared by the loopback tests: a KBS on an ephemeral port with a movable clock.

#![allow(dead_code)]

use cordon_attest::{Endorsements, Platform, Policy};
use cordon_kbs::{Kbs, KbsConfig, KbsLimits};
use cordon_proto::job::{
    job_report_data, Evaluation, JobDataset, JobSchema, JobSpec, Outputs, PartyKey,
};
use cordon_proto::kbs::{
    policy_context, seal_dek_for_kbs, seal_job, AttestRequest, AuditEvent, Challenge, DekPurpose,
    ErrorBody, JobRelease, RegisterKey,
};
use cordon_proto::{report_data, ModelBinding, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
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
    /// The KBS's data directory (its KEK file lies beside it, in `_dir`).
    pub data_dir: std::path::PathBuf,
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
    let data_dir = dir.path().join("kbs");
    let mut config = KbsConfig::new(
        data_dir.clone(),
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
        data_dir,
        _dir: dir,
    }
}

pub fn policy(platforms: Vec<Platform>, measurement: [u8; 48]) -> String {
    Policy::new(platforms, vec![measurement.to_vec()]).to_toml()
}

/// The signing key the runtime keys of [`keys`] name.
pub const RUNTIME_SIGNING_KEY: [u8; 32] = [9; 32];

/// The body of a key registration (`RegisterKey`): `dek` sealed to the KBS `kbs_key` for
/// `purpose`, `key_id`, the owner `owner` (the signer of the registration) and `policy`.
pub fn register_key_body(
    kbs_key: &[u8; 32],
    purpose: DekPurpose,
    key_id: &str,
    owner: &[u8; 32],
    policy: &str,
    dek: &[u8; 32],
) -> Vec<u8> {
    serde_json::to_vec(&RegisterKey {
        sealed_dek: seal_dek_for_kbs(
            kbs_key,
            purpose,
            key_id,
            owner,
            &policy_context(policy),
            dek,
        )
        .unwrap(),
        policy: policy.to_string(),
    })
    .unwrap()
}

/// A job of `parties` (the first receives the model), one CSV dataset each: `ds-{party}`, its
/// manifest digest `[n; 32]` for the n-th party from 1.
pub fn job_spec(parties: &[&PartyKey], name: &str) -> JobSpec {
    JobSpec {
        name: name.into(),
        parties: parties.iter().map(|p| p.job_party()).collect(),
        datasets: parties
            .iter()
            .enumerate()
            .map(|(i, p)| JobDataset {
                party: p.name().into(),
                key_id: format!("ds-{}", p.name()),
                manifest_sha256: [i as u8 + 1; 32],
                format: "csv".into(),
            })
            .collect(),
        schema: JobSchema {
            features: vec!["x".into()],
            label: "y".into(),
        },
        algorithm: serde_json::json!({"kind": "logistic_regression"}),
        evaluation: Evaluation {
            test_fraction: 0.25,
            seed: 1,
        },
        outputs: Outputs {
            recipients: vec![parties[0].name().into()],
            serve: None,
        },
    }
}

/// `spec` with the approvals of `parties`, valid until `until` (Unix seconds).
pub fn approved(spec: &JobSpec, parties: &[&PartyKey], until: u64) -> JobRelease {
    let h = spec.hash();
    JobRelease {
        spec: spec.clone(),
        approvals: parties.iter().map(|p| p.approve(&h, until)).collect(),
    }
}

/// A refusal's status and error body.
pub async fn refusal(resp: reqwest::Response) -> (u16, ErrorBody) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
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

    /// The administrator's public key (the owner of admin-registered keys).
    pub fn admin_public_key(&self) -> [u8; 32] {
        cordon_proto::auth::admin_key(&self.token)
            .unwrap()
            .verifying_key()
            .to_bytes()
    }

    /// The body of an admin registration of `dek` under `policy` for `key_id`.
    pub fn register_body(&self, key_id: &str, dek: [u8; 32], policy: &str) -> Vec<u8> {
        register_key_body(
            &self.kbs_key,
            DekPurpose::AdminKey,
            key_id,
            &self.admin_public_key(),
            policy,
            &dek,
        )
    }

    /// The body of `party`'s registration of its dataset key `dek` for `key_id` under `policy`.
    pub fn dataset_body(
        &self,
        party: &PartyKey,
        key_id: &str,
        policy: &str,
        dek: [u8; 32],
    ) -> Vec<u8> {
        register_key_body(
            &self.kbs_key,
            DekPurpose::DatasetKey,
            key_id,
            &party.signing_public_key(),
            policy,
            &dek,
        )
    }

    /// `party` registers a dataset key for `key_id`, under the sim policy of [`MEASUREMENT`].
    pub async fn register_dataset(&self, party: &PartyKey, key_id: &str) -> reqwest::Response {
        let policy = policy(vec![Platform::Sim], MEASUREMENT);
        self.register_dataset_with(party, key_id, &policy, [7; 32])
            .await
    }

    /// `party` registers `dek` as its dataset key for `key_id` under `policy`, signed for this
    /// KBS.
    pub async fn register_dataset_with(
        &self,
        party: &PartyKey,
        key_id: &str,
        policy: &str,
        dek: [u8; 32],
    ) -> reqwest::Response {
        let body = self.dataset_body(party, key_id, policy, dek);
        self.signed_party(
            party,
            reqwest::Method::PUT,
            &format!("/kbs/v1/datasets/{key_id}"),
            body,
        )
        .await
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

    /// Attests as a runtime (the signing key of [`keys`]) about to run `evidence_job` and asks
    /// for `key_ids` for `job`.
    pub async fn attest_for_job(
        &self,
        job: JobRelease,
        evidence_job: [u8; 32],
        key_ids: &[String],
    ) -> reqwest::Response {
        self.attest_for_job_signed_by(job, evidence_job, key_ids, RUNTIME_SIGNING_KEY)
            .await
    }

    /// [`Harness::attest_for_job`] as a runtime whose signing key is `signing_public_key`.
    pub async fn attest_for_job_signed_by(
        &self,
        job: JobRelease,
        evidence_job: [u8; 32],
        key_ids: &[String],
        signing_public_key: [u8; 32],
    ) -> reqwest::Response {
        let kp = ServiceKeyPair::generate(0);
        let rk = RuntimeKeys {
            signing_public_key,
            ..keys(&kp)
        };
        let c = self.challenge().await;
        let nonce = hex::decode(&c.nonce).unwrap();
        let evidence = self
            .tee(MEASUREMENT, false)
            .evidence(&job_report_data(&nonce, &rk, &evidence_job))
            .unwrap();
        let sealed_job = Some(seal_job(&self.kbs_key, &c.nonce, &job).unwrap());
        self.attest(&AttestRequest {
            endorsements: Default::default(),
            nonce: c.nonce,
            evidence,
            runtime_keys: rk,
            key_ids: key_ids.to_vec(),
            models: vec![],
            sealed_job,
        })
        .await
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
        signing_public_key: RUNTIME_SIGNING_KEY,
    }
}

/// An attest request for `key_ids`: evidence from `tee` binding `nonce`, `kp`'s keys and
/// [`bound_model`].
pub fn request(nonce: &str, tee: &SimTee, kp: &ServiceKeyPair, key_ids: &[&str]) -> AttestRequest {
    let nonce_bytes = hex::decode(nonce).unwrap();
    let rk = keys(kp);
    let models = vec![bound_model()];
    AttestRequest {
        endorsements: Default::default(),
        nonce: nonce.into(),
        evidence: tee
            .evidence(&report_data(&nonce_bytes, &rk, &models))
            .unwrap(),
        runtime_keys: rk,
        key_ids: key_ids.iter().map(|s| s.to_string()).collect(),
        models,
        sealed_job: None,
    }
}

/// The model the runtime says it will unseal with the released key.
pub fn bound_model() -> ModelBinding {
    ModelBinding {
        name: "demo".into(),
        version: "3".into(),
        manifest_sha256: [0xab; 32],
    }
}
