//! Several `cordon kbs serve` replicas on one PostgreSQL database (a throwaway cluster from
//! Debian's `postgresql` package, or `CORDON_TEST_DATABASE_URL`): releases at once against all of
//! them, each challenge consumed once even when one attest request goes to two replicas at once,
//! one audit chain with no gaps; a replica SIGKILLed again and again during registrations and
//! releases loses no acknowledged write; a `pg_dump` of the database holds no DEK.

mod common;
use common::*;

use cordon_attest::{Platform, Policy};
use cordon_kbs::testing::PgCluster;
use cordon_proto::kbs::{
    AttestRequest, AttestResponse, AuditEvent, Challenge, KeyInfo, RELEASE_INFO,
};
use cordon_proto::{report_data, RuntimeKeys, ServiceKeyPair};
use cordon_tee::{EvidenceProvider, SimHardwareKey, SimTee};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MEASUREMENT: [u8; 48] = [0x44; 48];

struct Setup {
    dir: tempfile::TempDir,
    cluster: PgCluster,
    db: String,
    tee: Arc<SimTee>,
    policy: String,
    http: reqwest::Client,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let hw_key = dir.path().join("hw.key");
    ok(&["sim", "keygen", "--out", &s(&hw_key)]);
    let hw =
        SimHardwareKey::from_file_contents(&std::fs::read_to_string(&hw_key).unwrap()).unwrap();
    let cluster = PgCluster::start();
    let db = cluster.database();
    Setup {
        dir,
        cluster,
        db,
        tee: Arc::new(SimTee::new(hw, MEASUREMENT, [0; 32], false)),
        policy: Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    }
}

/// Starts replica `name` on the database, with the one KEK all replicas share.
fn replica(st: &Setup, name: &str) -> (Proc, String) {
    let dir = st.dir.path();
    let p = |f: &str| s(&dir.join(f));
    let addr = dir.join(format!("{name}.addr"));
    let _ = std::fs::remove_file(&addr);
    let args: Vec<String> = [
        "kbs",
        "serve",
        "--database-url",
        &st.db,
        "--kek",
        &format!("file:{}", p("shared.kek")),
        "--listen",
        "127.0.0.1:0",
        "--sim-trust-anchor",
        &p("hw.pub"),
        "--init-admin-token-file",
        &p("token"),
        "--addr-file",
        &s(&addr),
        "--identity-file",
        &p(&format!("{name}.identity")),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut kbs = Proc::start_logging(&args, dir.join(format!("{name}.log")), "warn");
    let url = kbs.url(&addr);
    (kbs, url)
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token"))
        .unwrap()
        .trim()
        .to_string()
}

/// A challenge from `from`, and the attest request for `key_id` it allows, with the key pair its
/// DEK will be sealed to.
async fn attest_request(
    st: &Setup,
    from: &str,
    key_id: &str,
) -> Result<(AttestRequest, ServiceKeyPair), reqwest::Error> {
    let c: Challenge = st
        .http
        .post(format!("{from}/kbs/v1/challenge"))
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
    let evidence = st.tee.evidence(&report_data(&nonce, &rk, &[])).unwrap();
    Ok((
        AttestRequest {
            endorsements: Default::default(),
            nonce: c.nonce,
            evidence,
            runtime_keys: rk,
            key_ids: vec![key_id.to_string()],
            models: vec![],
            sealed_job: None,
        },
        kp,
    ))
}

/// Sends `req` to `to`: the DEK released, `None` if refused (the status and error code).
async fn attest(
    st: &Setup,
    to: &str,
    req: &AttestRequest,
    kp: &ServiceKeyPair,
) -> Result<Result<[u8; 32], (u16, String)>, reqwest::Error> {
    let resp = st
        .http
        .post(format!("{to}/kbs/v1/attest"))
        .json(req)
        .send()
        .await?;
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.text().await.unwrap_or_default();
        return Ok(Err((status, body)));
    }
    let body: AttestResponse = resp.json().await?;
    let Some(r) = body.released.first() else {
        return Ok(Err((200, format!("denied: {:?}", body.denied))));
    };
    let dek = kp
        .open_sealed(RELEASE_INFO, req.key_ids[0].as_bytes(), &r.sealed_dek)
        .unwrap();
    Ok(Ok(dek.as_slice().try_into().unwrap()))
}

async fn audit(st: &Setup, url: &str, kbs_key: &str) -> Vec<AuditEvent> {
    admin_get(
        &st.http,
        url,
        kbs_key,
        "/kbs/v1/admin/audit",
        &token(st.dir.path()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_database_release_once_each_and_keep_one_chain() {
    // The cluster is set up with the blocking PostgreSQL client: off the async threads.
    let st = tokio::task::block_in_place(setup);
    let dir = st.dir.path();
    // The first replica makes the identity and the admin token; the others find them.
    let (_a, a) = replica(&st, "a");
    let (_b, b) = replica(&st, "b");
    let (_c, c) = replica(&st, "c");
    let urls = [a.clone(), b.clone(), c.clone()];
    let kbs_key = kbs_key(dir, "a");
    for r in ["b", "c"] {
        assert_eq!(
            common::kbs_key(dir, r),
            kbs_key,
            "replica {r} has another identity"
        );
    }
    let token = token(dir);
    // Keys registered through each replica in turn.
    let mut deks = BTreeMap::new();
    for i in 0..9 {
        let id = format!("k{i}");
        let dek: [u8; 32] = rand::random();
        let resp = admin_register(
            &st.http,
            &urls[i % 3],
            &kbs_key,
            &token,
            &id,
            &dek,
            &st.policy,
        )
        .await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        deks.insert(id, dek);
    }
    let st = Arc::new(st);
    let deks = Arc::new(deks);
    // Releases at once through every replica: each challenge from one replica, its attest to the
    // next; and each fourth attest request sent to two replicas at the same moment.
    let mut tasks = vec![];
    for w in 0..6usize {
        let (st, deks, urls) = (st.clone(), deks.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let (mut delivered, mut doubled) = (0usize, 0usize);
            for i in 0..8usize {
                let id = format!("k{}", (w + i) % 9);
                let from = &urls[(w + i) % 3];
                let to = &urls[(w + i + 1) % 3];
                let (req, kp) = attest_request(&st, from, &id).await.unwrap();
                if i % 4 == 0 {
                    let other = &urls[(w + i + 2) % 3];
                    let (x, y) =
                        tokio::join!(attest(&st, to, &req, &kp), attest(&st, other, &req, &kp));
                    let (x, y) = (x.unwrap(), y.unwrap());
                    let ok: Vec<_> = [&x, &y]
                        .into_iter()
                        .filter_map(|r| r.as_ref().ok())
                        .collect();
                    assert_eq!(ok.len(), 1, "one nonce at two replicas: {x:?} / {y:?}");
                    assert_eq!(*ok[0], deks[&id]);
                    let refused = if x.is_err() { &x } else { &y };
                    let (status, body) = refused.as_ref().unwrap_err();
                    assert_eq!(*status, 403, "{body}");
                    assert!(body.contains("nonce_replayed"), "{body}");
                    doubled += 1;
                } else {
                    let got = attest(&st, to, &req, &kp).await.unwrap();
                    assert_eq!(got, Ok(deks[&id]), "release of {id}");
                }
                delivered += 1;
            }
            (delivered, doubled)
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        let (d, doubled) = t.await.unwrap();
        assert_eq!(doubled, 2);
        delivered += d;
    }
    assert_eq!(delivered, 48);
    // One chain, whichever replica is asked, with every registration and release in it once.
    let events = audit(&st, &c, &kbs_key).await;
    assert_eq!(events, audit(&st, &a, &kbs_key).await);
    cordon_kbs::verify_audit_chain(&events)
        .unwrap_or_else(|seq| panic!("audit chain broken at {seq}"));
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count("key_registered"), 9);
    assert_eq!(count("key_released"), 48);
    let listed: Vec<KeyInfo> =
        admin_get(&st.http, &b, &kbs_key, "/kbs/v1/admin/keys", &token).await;
    assert_eq!(listed.iter().map(|k| k.releases).sum::<u64>(), 48);
}

#[derive(Default)]
struct Acked {
    keys: BTreeMap<String, [u8; 32]>,
    releases: usize,
}

/// Registrations and releases from `workers` tasks, spread over the replicas, until `stop`.
async fn load(
    st: Arc<Setup>,
    urls: Arc<Mutex<Vec<String>>>,
    kbs_key: String,
    acked: Arc<Mutex<Acked>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    w: usize,
) {
    let token = token(st.dir.path());
    for i in 0usize.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let url = {
            let u = urls.lock().unwrap();
            u[(w + i) % u.len()].clone()
        };
        let id = format!("w{w}-k{i}");
        let dek: [u8; 32] = rand::random();
        // A replica killed under the request: not acknowledged, so not counted.
        if let Ok(resp) =
            try_admin_register(&st.http, &url, &kbs_key, &token, &id, &dek, &st.policy).await
        {
            if resp.status() == 200 {
                acked.lock().unwrap().keys.insert(id.clone(), dek);
            }
        }
        let known = acked
            .lock()
            .unwrap()
            .keys
            .iter()
            .next_back()
            .map(|(k, v)| (k.clone(), *v));
        if let Some((k, want)) = known {
            if let Ok((req, kp)) = attest_request(&st, &url, &k).await {
                if let Ok(Ok(got)) = attest(&st, &url, &req, &kp).await {
                    assert_eq!(got, want, "released DEK of {k}");
                    acked.lock().unwrap().releases += 1;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_stream_loses_no_acknowledged_write() {
    // The cluster is set up with the blocking PostgreSQL client: off the async threads.
    let st = tokio::task::block_in_place(setup);
    let dir = st.dir.path().to_path_buf();
    let (_a, a) = replica(&st, "a");
    let (_b, b) = replica(&st, "b");
    let kbs_key = kbs_key(&dir, "a");
    let (mut victim, v) = replica(&st, "victim-0");
    let st = Arc::new(st);
    let urls = Arc::new(Mutex::new(vec![a.clone(), b.clone(), v]));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(load(
                st.clone(),
                urls.clone(),
                kbs_key.clone(),
                acked.clone(),
                stop.clone(),
                w,
            ))
        })
        .collect();
    const KILLS: usize = 6;
    for round in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(150 + rand::random::<u64>() % 300)).await;
        victim.child.kill().unwrap(); // SIGKILL, mid-request for some of the load
        victim.child.wait().unwrap();
        let (next, url) = replica(&st, &format!("victim-{round}"));
        victim = next;
        urls.lock().unwrap()[2] = url;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();

    let (keys, releases) = {
        let a = acked.lock().unwrap();
        (a.keys.clone(), a.releases)
    };
    assert!(
        keys.len() > 40,
        "too little load to mean anything: {}",
        keys.len()
    );
    assert!(releases > 20, "too few releases: {releases}");
    let token = token(&dir);
    // Every acknowledged registration is there and released with its own DEK.
    let listed: Vec<String> =
        admin_get::<Vec<KeyInfo>>(&st.http, &a, &kbs_key, "/kbs/v1/admin/keys", &token)
            .await
            .into_iter()
            .map(|k| k.key_id)
            .collect();
    for (k, dek) in &keys {
        assert!(listed.contains(k), "acknowledged registration {k} lost");
        let (req, kp) = attest_request(&st, &b, k).await.unwrap();
        assert_eq!(
            attest(&st, &a, &req, &kp).await.unwrap(),
            Ok(*dek),
            "DEK of {k}"
        );
    }
    // One chain, no gaps, every acknowledged write and delivered release in it.
    let events = audit(&st, &b, &kbs_key).await;
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
        released >= releases + keys.len(),
        "{released} events for {releases} + {} releases",
        keys.len()
    );

    // A dump of the whole database holds no DEK, in any usual encoding.
    use base64::Engine;
    let dump = tokio::task::block_in_place(|| st.cluster.dump(&st.db));
    let has = |needle: &[u8]| dump.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"COPY public.keys"), "the dump holds the keys table");
    for dek in keys.values() {
        for needle in [
            dek.to_vec(),
            hex::encode(dek).into_bytes(),
            hex::encode_upper(dek).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(&dek[..30])
                .into_bytes(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(&dek[..30])
                .into_bytes(),
        ] {
            assert!(!has(&needle), "the database dump holds a DEK");
        }
    }
    eprintln!(
        "{KILLS} SIGKILLs: {} acknowledged registrations, {releases} releases, {} audit events",
        keys.len(),
        events.len()
    );
}
