//! Crash safety of the key broker: registrations and releases at load while the KBS process is
//! killed with SIGKILL at random moments, many times. After every restart: every acknowledged
//! registration is there with its DEK, every delivered release and registration is in the audit
//! log, the hash chain is intact, and no nonce that was used can be used again.

mod common;
use common::*;

use cordon_attest::{Platform, Policy};
use cordon_proto::kbs::{
    AttestRequest, AttestResponse, AuditEvent, Challenge, ErrorBody, RELEASE_INFO,
};
use cordon_proto::{report_data, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MEASUREMENT: [u8; 48] = [0x33; 48];

#[derive(Default)]
struct Acknowledged {
    /// key id → DEK, for every registration the KBS answered 200.
    keys: BTreeMap<String, [u8; 32]>,
    /// Nonces whose attest request got any answer (the nonce was spent in the transaction committed
    /// before it).
    used_nonces: Vec<String>,
    /// Releases delivered (key ids), each must have its audit event.
    releases: usize,
}

struct Driver {
    url: String,
    /// The KBS's identity key (hex): the same across restarts (it lives in the store).
    kbs_key: String,
    token: String,
    tee: Arc<SimTee>,
    http: reqwest::Client,
    policy: String,
}

impl Driver {
    async fn register(&self, id: &str, dek: [u8; 32]) -> Result<bool, reqwest::Error> {
        let resp = try_admin_register(
            &self.http,
            &self.url,
            &self.kbs_key,
            &self.token,
            id,
            &dek,
            &self.policy,
        )
        .await?;
        Ok(resp.status() == 200)
    }

    /// Challenge and attest for `key_id`; Ok(Some(nonce, dek)) when a release was delivered.
    async fn release(
        &self,
        key_id: &str,
        ack: &Mutex<Acknowledged>,
    ) -> Result<Option<[u8; 32]>, reqwest::Error> {
        let c: Challenge = self
            .http
            .post(format!("{}/kbs/v1/challenge", self.url))
            .send()
            .await?
            .json()
            .await?;
        let kp = ServiceKeyPair::generate(0);
        let rk = RuntimeKeys {
            hpke_public_key: kp.public_key(),
            hpke_key_id: 0,
            signing_public_key: [5; 32],
        };
        let nonce = hex::decode(&c.nonce).unwrap();
        let evidence = self.tee.evidence(&report_data(&nonce, &rk, &[])).unwrap();
        let req = AttestRequest {
            endorsements: Default::default(),
            nonce: c.nonce.clone(),
            evidence,
            runtime_keys: rk,
            key_ids: vec![key_id.to_string()],
            models: vec![],
            sealed_job: None,
        };
        let resp = self
            .http
            .post(format!("{}/kbs/v1/attest", self.url))
            .json(&req)
            .send()
            .await?;
        ack.lock().unwrap().used_nonces.push(c.nonce.clone());
        if resp.status() != 200 {
            return Ok(None);
        }
        let body: AttestResponse = resp.json().await?;
        let Some(r) = body.released.first() else {
            return Ok(None);
        };
        let dek = kp
            .open_sealed(RELEASE_INFO, key_id.as_bytes(), &r.sealed_dek)
            .unwrap();
        ack.lock().unwrap().releases += 1;
        Ok(Some(dek.as_slice().try_into().unwrap()))
    }

    async fn audit(&self) -> Vec<AuditEvent> {
        admin_get(
            &self.http,
            &self.url,
            &self.kbs_key,
            "/kbs/v1/admin/audit",
            &self.token,
        )
        .await
    }
}

/// Registers and releases keys from `workers` tasks until the KBS stops answering.
async fn load(driver: Arc<Driver>, ack: Arc<Mutex<Acknowledged>>, round: usize, workers: usize) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (d, ack) = (driver.clone(), ack.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("r{round}-w{w}-k{i}");
                let dek: [u8; 32] = rand::random();
                match d.register(&id, dek).await {
                    Ok(true) => {
                        ack.lock().unwrap().keys.insert(id.clone(), dek);
                    }
                    Ok(false) => panic!("registration refused while the KBS was up"),
                    Err(_) => return,
                }
                // Every other round trip, a release of a key acknowledged earlier.
                let known = ack
                    .lock()
                    .unwrap()
                    .keys
                    .iter()
                    .next_back()
                    .map(|(k, v)| (k.clone(), *v));
                if let Some((k, want)) = known {
                    match d.release(&k, &ack).await {
                        Ok(Some(got)) => assert_eq!(got, want, "released DEK of {k} differs"),
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kbs_survives_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    ok(&["sim", "keygen", "--out", &s(&p("hw.key"))]);
    let hw =
        SimHardwareKey::from_file_contents(&std::fs::read_to_string(p("hw.key")).unwrap()).unwrap();
    let tee = Arc::new(SimTee::new(hw, MEASUREMENT, [0; 32], false));
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    let ack = Arc::new(Mutex::new(Acknowledged::default()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    const ROUNDS: usize = 20;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let (mut kbs, url) = start_kbs(dir.path(), &format!("kbs-{round}"));
        let token = std::fs::read_to_string(p("token"))
            .unwrap()
            .trim()
            .to_string();
        let driver = Arc::new(Driver {
            url,
            kbs_key: kbs_key(dir.path(), &format!("kbs-{round}")),
            token,
            tee: tee.clone(),
            http: http.clone(),
            policy: policy.clone(),
        });

        // What the previous lives acknowledged is all here, and the log is whole.
        check(&driver, &ack).await;

        let load = tokio::spawn(load(driver.clone(), ack.clone(), round, 4));
        // Kill at a pseudo-random moment, 30–330 ms into the load.
        tokio::time::sleep(Duration::from_millis(30 + (rand::random::<u64>() % 300))).await;
        kbs.child.kill().unwrap(); // SIGKILL
        kbs.child.wait().unwrap();
        load.await.unwrap();
    }
    let (_kbs, url) = start_kbs(dir.path(), "kbs-last");
    let token = std::fs::read_to_string(p("token"))
        .unwrap()
        .trim()
        .to_string();
    let driver = Driver {
        url,
        kbs_key: kbs_key(dir.path(), "kbs-last"),
        token,
        tee,
        http,
        policy,
    };
    check(&driver, &ack).await;
    let a = ack.lock().unwrap();
    assert!(
        a.keys.len() > ROUNDS * 4,
        "the load registered too little to mean anything: {}",
        a.keys.len()
    );
    assert!(a.releases > ROUNDS, "too few releases: {}", a.releases);
    eprintln!(
        "{ROUNDS} SIGKILLs in {:.1}s: {} acknowledged registrations, {} releases, {} used nonces checked",
        started.elapsed().as_secs_f64(),
        a.keys.len(),
        a.releases,
        a.used_nonces.len()
    );
}

async fn check(d: &Driver, ack: &Mutex<Acknowledged>) {
    let (keys, used, releases) = {
        let a = ack.lock().unwrap();
        (a.keys.clone(), a.used_nonces.clone(), a.releases)
    };
    // Every acknowledged registration is there, with its own DEK (a sample is released and
    // compared; the list covers all).
    let listed: Vec<String> = admin_get::<Vec<cordon_proto::kbs::KeyInfo>>(
        &d.http,
        &d.url,
        &d.kbs_key,
        "/kbs/v1/admin/keys",
        &d.token,
    )
    .await
    .into_iter()
    .map(|k| k.key_id)
    .collect();
    for k in keys.keys() {
        assert!(listed.contains(k), "acknowledged registration {k} lost");
    }
    let scratch = Mutex::new(Acknowledged::default());
    for (k, dek) in keys.iter().rev().take(3) {
        assert_eq!(
            d.release(k, &scratch).await.unwrap(),
            Some(*dek),
            "DEK of {k}"
        );
    }
    // The audit log: chain intact, and every acknowledged registration and delivered release
    // recorded (events are written before the answer).
    let events = d.audit().await;
    cordon_kbs::verify_audit_chain(&events)
        .unwrap_or_else(|seq| panic!("audit chain broken at {seq}"));
    for k in keys.keys() {
        assert!(
            events
                .iter()
                .any(|e| e.kind == "key_registered" && e.key_id.as_deref() == Some(k)),
            "no key_registered event for {k}"
        );
    }
    let released = events.iter().filter(|e| e.kind == "key_released").count();
    assert!(
        released >= releases,
        "{released} key_released events for {releases} delivered releases"
    );
    // No used nonce is accepted again.
    for n in used.iter().rev().take(20) {
        let kp = ServiceKeyPair::generate(0);
        let rk = RuntimeKeys {
            hpke_public_key: kp.public_key(),
            hpke_key_id: 0,
            signing_public_key: [5; 32],
        };
        let evidence = d
            .tee
            .evidence(&report_data(&hex::decode(n).unwrap(), &rk, &[]))
            .unwrap();
        let req = AttestRequest {
            endorsements: Default::default(),
            nonce: n.clone(),
            evidence,
            runtime_keys: rk,
            key_ids: vec![keys.keys().next().cloned().unwrap_or_default()],
            models: vec![],
            sealed_job: None,
        };
        let resp = d
            .http
            .post(format!("{}/kbs/v1/attest", d.url))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "used nonce {n} accepted again");
        let e: ErrorBody = resp.json().await.unwrap();
        assert!(
            e.code == "nonce_replayed" || e.code == "nonce_expired",
            "{}",
            e.code
        );
    }
}
