//! Collaborative training over loopback: a KBS and a training runtime (simulated TEE) in process,
//! three hospitals with their own keys, sealed datasets and approvals. Every must-reject of the
//! job protocol is tried here; the KBS's own job checks are in cordon-kbs/tests/jobs.rs.

use cordon_attest::{Endorsements, Platform, Policy, PolicyDocument, Verifier};
use cordon_client::jobs::{check_result, register_dataset_key, JobClient, JobClientError};
use cordon_kbs::{Kbs, KbsConfig};
use cordon_proto::job::{Evaluation, JobDataset, JobSchema, JobSpec, JobState, Outputs, PartyKey};
use cordon_proto::{RuntimeKeys, ServiceKeyPair};
use cordon_runtime::{OnnxModel, RuntimeState, ServingOptions, TrainingOptions};
use cordon_seal::{KeyFile, OwnerKey, SealOptions};
use cordon_tee::{SimHardwareKey, SimTee};
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MEASUREMENT: [u8; 48] = [0x51; 48];
const HOSPITALS: [(&str, &str); 3] = [
    (
        "hospital-a",
        include_str!("../../../testdata/training/hospital_a.csv"),
    ),
    (
        "hospital-b",
        include_str!("../../../testdata/training/hospital_b.csv"),
    ),
    (
        "hospital-c",
        include_str!("../../../testdata/training/hospital_c.csv"),
    ),
];

struct World {
    runtime: String,
    kbs: String,
    /// The KBS's identity key, which parties and the trainer pin.
    kbs_key: [u8; 32],
    /// The KBS's admin token.
    admin_token: String,
    /// The trainer's service key: the audience of the parties' signed requests.
    runtime_keys: RuntimeKeys,
    /// What the parties verify the trainer against (measurement and sim trust anchor).
    party_policy: PolicyDocument,
    /// The simulated hardware key file, to make other runtimes' evidence.
    hw_key: String,
    verifier: Verifier,
    _dir: tempfile::TempDir,
}

async fn start(measurement: [u8; 48]) -> World {
    start_with(measurement, |_| {}).await
}

fn in_an_hour() -> u64 {
    unix_now() + 3_600
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A KBS and a training runtime with `measurement`; `adjust` changes the job board's limits.
async fn start_with(measurement: [u8; 48], adjust: impl FnOnce(&mut TrainingOptions)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let hw = SimHardwareKey::generate();
    let hw_key = hw.to_file_contents().to_string();
    let endorsements = Endorsements {
        sim_trust_anchors: vec![hw.public_key()],
        ..Default::default()
    };
    let kbs = Kbs::open(KbsConfig::new(dir.path().join("kbs"), endorsements.clone())).unwrap();
    let kbs_key = kbs.identity_public_key();
    let admin_token = kbs.init_admin_token().unwrap().unwrap().to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let kbs_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, kbs.router()).await.unwrap() });

    let tee = Arc::new(SimTee::new(hw, measurement, [0; 32], false));
    let service_key = ServiceKeyPair::generate(0);
    let signing_key = SigningKey::from_bytes(&[9; 32]);
    let runtime_keys = RuntimeKeys {
        hpke_public_key: service_key.public_key(),
        hpke_key_id: 0,
        signing_public_key: signing_key.verifying_key().to_bytes(),
    };
    let mut state = RuntimeState::new(
        service_key,
        signing_key,
        runtime_keys.clone(),
        tee,
        BTreeMap::new(),
        ServingOptions::default(),
    );
    let mut options = TrainingOptions::new(&kbs_url, kbs_key);
    adjust(&mut options);
    state.enable_training(options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let runtime = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cordon_runtime::serve(
        Arc::new(state),
        listener,
        std::future::pending(),
    ));
    World {
        runtime,
        kbs: kbs_url,
        kbs_key,
        admin_token,
        runtime_keys,
        // What the parties verify before they talk to the trainer: its own measurement. (Their
        // dataset keys' release policies at the KBS name MEASUREMENT, which a trainer with
        // another measurement does not get.)
        party_policy: PolicyDocument {
            policy: Policy::new(vec![Platform::Sim], vec![measurement.to_vec()]),
            endorsements: Some(endorsements.clone()),
        },
        hw_key,
        verifier: Verifier::new(endorsements),
        _dir: dir,
    }
}

struct Hospital {
    client: JobClient,
    dataset: JobDataset,
}

impl World {
    /// A party's client, after it verified the trainer with its own policy.
    async fn client(&self, party: PartyKey) -> JobClient {
        match JobClient::connect(
            &self.runtime,
            party,
            self.party_policy.clone(),
            SystemTime::now(),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }
}

/// A hospital seals its CSV, registers the key (released only to `MEASUREMENT` for jobs it
/// approves) and uploads the sealed bytes.
async fn hospital(w: &World, name: &str, csv: &str) -> Hospital {
    let party = PartyKey::generate(name);
    let owner = OwnerKey::from_secret_bytes(&party.signing_secret());
    let mut sealed = std::io::Cursor::new(Vec::new());
    let options = SealOptions {
        name: format!("{name}-records"),
        media_type: "text/csv".into(),
        ..SealOptions::default()
    };
    let (manifest, key) = cordon_seal::seal(
        csv.as_bytes(),
        csv.len() as u64,
        &mut sealed,
        &owner,
        &options,
        &mut |_| {},
    )
    .unwrap();
    let client = w.client(party).await;
    let policy = Policy::new(vec![Platform::Sim], vec![MEASUREMENT.to_vec()]).to_toml();
    register_dataset_key(
        client.party(),
        &w.kbs,
        &w.kbs_key,
        &manifest.key_id,
        key.dek.as_bytes(),
        &policy,
    )
    .await
    .unwrap();
    let digest = client.upload_dataset(sealed.into_inner()).await.unwrap();
    Hospital {
        dataset: JobDataset {
            party: name.into(),
            key_id: manifest.key_id,
            manifest_sha256: hex::decode(digest).unwrap().try_into().unwrap(),
            format: "csv".into(),
        },
        client,
    }
}

fn spec(hospitals: &[&Hospital], algorithm: serde_json::Value) -> JobSpec {
    JobSpec {
        name: "breast cancer, three hospitals".into(),
        parties: hospitals
            .iter()
            .map(|h| h.client.party().job_party())
            .collect(),
        datasets: hospitals.iter().map(|h| h.dataset.clone()).collect(),
        schema: JobSchema {
            features: HOSPITALS[0]
                .1
                .lines()
                .next()
                .unwrap()
                .split(',')
                .filter(|c| *c != "label")
                .map(String::from)
                .collect(),
            label: "label".into(),
        },
        algorithm,
        evaluation: Evaluation {
            test_fraction: 0.25,
            seed: 42,
        },
        outputs: Outputs {
            recipients: vec![hospitals[0].client.party().name().into()],
            serve: None,
        },
    }
}

fn code(e: JobClientError) -> (u16, String, String) {
    match e {
        JobClientError::Refused {
            status,
            code,
            message,
        } => (status, code, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn three_hospitals_train_one_model_and_only_the_agreed_output_leaves() {
    let w = start(MEASUREMENT).await;
    let mut hs = Vec::new();
    for (name, csv) in HOSPITALS {
        hs.push(hospital(&w, name, csv).await);
    }
    let (a, b, c) = (&hs[0], &hs[1], &hs[2]);
    let job = spec(
        &[a, b, c],
        serde_json::json!({"kind": "gbdt", "n_estimators": 60}),
    );
    let hash = hex::encode(job.hash());

    let created = a.client.create(&job).await.unwrap();
    assert_eq!(created.state, JobState::Created);
    assert_eq!(created.job_hash, hash);
    assert_eq!(created.awaiting.len(), 3);
    assert!(created.datasets_missing.is_empty());

    a.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    b.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    // A party missing: the runtime refuses to run, and says whose approval is missing.
    let (status, code_, message) = code(a.client.submit(&hash).await.unwrap_err());
    assert_eq!((status, code_.as_str()), (409, "not_approved"));
    assert!(message.contains("hospital-c"), "{message}");

    // The spec changed after approval is another job: nobody approved it.
    let changed = spec(
        &[a, b, c],
        serde_json::json!({"kind": "gbdt", "n_estimators": 61}),
    );
    let changed_hash = hex::encode(changed.hash());
    assert_ne!(changed_hash, hash);
    let s = b.client.create(&changed).await.unwrap();
    assert_eq!(s.state, JobState::Created);
    assert!(s.approved_by.is_empty());
    assert_eq!(
        code(b.client.submit(&changed_hash).await.unwrap_err()).1,
        "not_approved"
    );
    // Approving a spec that is not the job named is refused locally, before anything is signed.
    assert!(matches!(
        c.client.approve(&changed_hash, &job, in_an_hour()).await,
        Err(JobClientError::NotMine { .. })
    ));

    // An outsider learns nothing about the job.
    let outsider = w.client(PartyKey::generate("outsider")).await;
    assert_eq!(code(outsider.status(&hash).await.unwrap_err()).0, 404);

    let approved = c.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    assert_eq!(approved.state, JobState::Approved);
    assert!(approved.awaiting.is_empty());
    c.client.submit(&hash).await.unwrap();
    assert_eq!(
        code(c.client.submit(&hash).await.unwrap_err()).1,
        "already_submitted"
    );
    let done = b
        .client
        .wait(&hash, Duration::from_secs(120))
        .await
        .unwrap();
    let m = done.metrics.clone().unwrap();
    assert_eq!(m.algorithm, "gbdt");
    assert_eq!(m.parties.len(), 3);
    let rows: u64 = HOSPITALS
        .iter()
        .map(|(_, csv)| csv.lines().count() as u64 - 1)
        .sum();
    assert_eq!(m.train_rows + m.test_rows, rows);
    assert!(m.test_accuracy > 0.85, "accuracy {}", m.test_accuracy);
    assert!(m.test_auc.unwrap() > 0.9, "auc {:?}", m.test_auc);

    // Output requested by a non-recipient: refused. Every party gets the receipt.
    let (status, code_, message) = code(b.client.result(&hash).await.unwrap_err());
    assert_eq!((status, code_.as_str()), (403, "not_a_recipient"));
    assert!(message.contains("hospital-b"), "{message}");
    let receipt = c.client.receipt(&hash).await.unwrap();
    let claims = receipt.verify(&w.verifier).unwrap();
    assert_eq!(claims.launch_measurement, MEASUREMENT.to_vec());
    assert_eq!(receipt.body.job_hash, job.hash());
    assert_eq!(receipt.body.metrics, m);
    let mut tampered = receipt.clone();
    tampered.body.inputs.pop();
    assert!(tampered.verify(&w.verifier).is_err());

    // The recipient checks and opens the output: the sealed model is the one the receipt names,
    // and it runs.
    let checked = a.client.checked_result(&hash).await.unwrap();
    let (result, dek) = (checked.result, checked.dek);
    assert_eq!(result.receipt, receipt);
    let key = KeyFile {
        key_id: result.key_id.clone(),
        dek: cordon_seal::Dek::from_bytes(dek.as_ref()).unwrap(),
        signer: receipt.body.attestation.runtime_keys.signing_public_key,
    };
    let (header, onnx) = cordon_seal::unseal_to_vec(&result.sealed_model[..], &key).unwrap();
    assert_eq!(header.digest(), receipt.body.output.sealed_manifest_sha256);
    use sha2::Digest;
    assert_eq!(
        <[u8; 32]>::from(sha2::Sha256::digest(&onnx[..])),
        receipt.body.output.onnx_sha256
    );
    let model = OnnxModel::load("joint", "1", &onnx).unwrap();
    assert_eq!(model.name(), "joint");
    // No row reaches the runtime's metrics or any job answer (three consecutive cells of each
    // row, as any formatter would print them).
    let metrics = reqwest::get(format!("{}/metrics", w.runtime))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answers = format!(
        "{metrics}\n{}\n{}",
        serde_json::to_string(&done).unwrap(),
        serde_json::to_string(&receipt).unwrap()
    );
    let mut rows = 0;
    for (_, csv) in HOSPITALS {
        for line in csv.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            for needle in [cells[..3].join(","), cells[..3].join(", ")] {
                assert!(!answers.contains(&needle), "a row leaked: {needle}");
            }
            rows += 1;
        }
    }
    assert!(
        rows > 400 && metrics.contains("cordon_runtime"),
        "{metrics}"
    );
    // The checks a recipient makes of its result, against what a host could hand it instead.
    let check = |party: &PartyKey, hash: &str, spec: &JobSpec, r: cordon_proto::job::JobResult| {
        check_result(party, hash, spec, r, &w.party_policy, &w.runtime_keys)
    };
    check(a.client.party(), &hash, &job, result.clone()).unwrap();
    let refused = |e: Result<_, JobClientError>, want: &str| match e {
        Err(JobClientError::BadResult { reason, .. }) => {
            assert!(reason.contains(want), "{reason} should say {want}")
        }
        Err(other) => assert!(other.to_string().contains(want), "{other}"),
        Ok(_) => panic!("a bad result was accepted ({want})"),
    };
    // This job's result, presented for another job the party asked about (the changed spec).
    refused(
        check(a.client.party(), &changed_hash, &changed, result.clone()),
        "receipt is for job",
    );
    // The inputs of another spec: the receipt's inputs must be this spec's datasets.
    let mut two = job.clone();
    two.datasets.pop();
    two.parties.pop();
    refused(
        check(
            a.client.party(),
            &hex::encode(two.hash()),
            &two,
            result.clone(),
        ),
        "receipt is for job",
    );
    // A receipt that verifies, but from another runtime than the one the party verified.
    let other_runtime = RuntimeKeys {
        signing_public_key: [1; 32],
        ..w.runtime_keys.clone()
    };
    refused(
        check_result(
            a.client.party(),
            &hash,
            &job,
            result.clone(),
            &w.party_policy,
            &other_runtime,
        ),
        "another runtime",
    );
    // Another sealed model under this receipt; an edited receipt; another key id.
    let mut swapped = result.clone();
    swapped.sealed_model[40] ^= 1;
    assert!(check(a.client.party(), &hash, &job, swapped).is_err());
    let mut edited = result.clone();
    edited.receipt.body.output.recipients = vec!["hospital-b".into()];
    refused(check(a.client.party(), &hash, &job, edited), "signature");
    let mut stolen = result.clone();
    stolen.key_id = "other".into();
    assert!(check(a.client.party(), &hash, &job, stolen).is_err());
    // Another party's HPKE key cannot open the recipient's output key.
    assert!(matches!(
        check(b.client.party(), &hash, &job, result.clone()),
        Err(JobClientError::OutputKey(_))
    ));
    // A party whose policy does not accept the trainer's evidence refuses the receipt.
    let strict = PolicyDocument {
        policy: Policy::new(vec![Platform::Sim], vec![vec![0x01; 48]]),
        endorsements: w.party_policy.endorsements.clone(),
    };
    refused(
        check_result(
            a.client.party(),
            &hash,
            &job,
            result,
            &strict,
            &w.runtime_keys,
        ),
        "rejected by the policy",
    );
}

#[tokio::test]
async fn a_runtime_the_owners_policy_does_not_name_gets_no_data() {
    // Same protocol, but the runtime's measurement is not the one the hospitals' policies name.
    let w = start([0x66; 48]).await;
    let a = hospital(&w, HOSPITALS[0].0, HOSPITALS[0].1).await;
    let b = hospital(&w, HOSPITALS[1].0, HOSPITALS[1].1).await;
    let job = spec(
        &[&a, &b],
        serde_json::json!({"kind": "logistic_regression"}),
    );
    let hash = hex::encode(job.hash());
    a.client.create(&job).await.unwrap();
    a.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    b.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    a.client.submit(&hash).await.unwrap();
    let err = a
        .client
        .wait(&hash, Duration::from_secs(60))
        .await
        .unwrap_err();
    let JobClientError::NotFinished { state, error, .. } = err else {
        panic!("{err}")
    };
    assert_eq!(state, JobState::Failed);
    let error = error.unwrap();
    assert!(error.contains("refused the key"), "{error}");
    assert!(error.contains("measurement"), "{error}");
    assert_eq!(
        code(a.client.result(&hash).await.unwrap_err()).1,
        "job_failed"
    );
}

#[tokio::test]
async fn bad_specs_uploads_and_signatures_are_refused() {
    let w = start(MEASUREMENT).await;
    let a = hospital(&w, HOSPITALS[0].0, HOSPITALS[0].1).await;
    let b = hospital(&w, HOSPITALS[1].0, HOSPITALS[1].1).await;
    // An unknown algorithm is refused before anyone approves.
    let bad = spec(&[&a, &b], serde_json::json!({"kind": "svm"}));
    let (status, code_, _) = code(a.client.create(&bad).await.unwrap_err());
    assert_eq!((status, code_.as_str()), (400, "invalid_spec"));
    // A non-party cannot create a job.
    let job = spec(
        &[&a, &b],
        serde_json::json!({"kind": "logistic_regression"}),
    );
    let outsider = w.client(PartyKey::generate("outsider")).await;
    assert_eq!(
        code(outsider.create(&job).await.unwrap_err()).1,
        "not_a_party"
    );
    // A dataset signed by someone else cannot be uploaded as one's own.
    let owner = OwnerKey::generate();
    let mut sealed = std::io::Cursor::new(Vec::new());
    cordon_seal::seal(
        &b"x,label\n1,0\n"[..],
        12,
        &mut sealed,
        &owner,
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        code(
            a.client
                .upload_dataset(sealed.into_inner())
                .await
                .unwrap_err()
        )
        .1,
        "not_your_dataset"
    );
    assert_eq!(
        code(
            a.client
                .upload_dataset(b"not sealed".to_vec())
                .await
                .unwrap_err()
        )
        .1,
        "invalid_sealed_dataset"
    );
    // The job API is not served in plain HTTP at all; inside the channel, an unsigned request is
    // refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/jobs", w.runtime))
        .json(&job)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let unsigned = a
        .client
        .runtime()
        .raw_request(
            "POST",
            "/v1/jobs",
            BTreeMap::new(),
            serde_json::to_vec(&job).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(unsigned.status, 401, "{}", unsigned.body);
    // An approval submitted on another party's behalf is refused.
    let hash = hex::encode(a.client.create(&job).await.unwrap().spec.hash());
    let forged = b.client.party().approve(&job.hash(), in_an_hour());
    let body = serde_json::to_vec(&forged).unwrap();
    let path = format!("/v1/jobs/{hash}/approvals");
    let signed = |party: &PartyKey, body: &[u8], audience: &[u8; 32]| -> BTreeMap<String, String> {
        party
            .sign_request("POST", &path, body, audience, SystemTime::now())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    };
    let pk = w.runtime_keys.hpke_public_key;
    let resp = a
        .client
        .runtime()
        .raw_request("POST", &path, signed(a.client.party(), &body, &pk), body)
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    // An expired approval is refused, and so is one signed for longer than it claims.
    let expired = a.client.party().approve(&job.hash(), unix_now() - 10);
    let body = serde_json::to_vec(&expired).unwrap();
    let resp = a
        .client
        .runtime()
        .raw_request("POST", &path, signed(a.client.party(), &body, &pk), body)
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert!(
        resp.body["error"].as_str().unwrap().contains("expired"),
        "{}",
        resp.body
    );
    // A request signed for another runtime (another audience), e.g. captured on its way to a
    // runtime that has since restarted, is refused.
    let good = a.client.party().approve(&job.hash(), in_an_hour());
    let body = serde_json::to_vec(&good).unwrap();
    let resp = a
        .client
        .runtime()
        .raw_request(
            "POST",
            &path,
            signed(a.client.party(), &body, &[7; 32]),
            body.clone(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 401, "{}", resp.body);
    // The same signed request twice (each time in its own encrypted envelope): the second is a
    // replay of the party's signature, refused, and the job state does not change.
    let headers = signed(a.client.party(), &body, &pk);
    let first = a
        .client
        .runtime()
        .raw_request("POST", &path, headers.clone(), body.clone())
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    let again = a
        .client
        .runtime()
        .raw_request("POST", &path, headers, body)
        .await
        .unwrap();
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["code"], "request_replayed");

    // Strangers (throw-away keys) spend nothing of the request memory: junk uploads over plain
    // HTTP, and signed questions about jobs they are not parties of.
    let remembered = || async {
        let text = reqwest::get(format!("{}/metrics", w.runtime))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("cordon_runtime_replay_remembered{memory=\"requests\"}"))
            .and_then(|l| l.split_whitespace().last())
            .unwrap()
            .to_string()
    };
    let before = remembered().await;
    for i in 0..20u8 {
        let stranger = PartyKey::generate(&format!("stranger-{i}"));
        let mut req = reqwest::Client::new().put(format!("{}/v1/datasets", w.runtime));
        for (n, v) in stranger.sign_request("PUT", "/v1/datasets", b"", &pk, SystemTime::now()) {
            req = req.header(n, v);
        }
        assert_eq!(req.send().await.unwrap().status(), 400);
        let path = format!("/v1/jobs/{hash}/submit");
        let headers = stranger
            .sign_request("POST", &path, b"", &pk, SystemTime::now())
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let r = a
            .client
            .runtime()
            .raw_request("POST", &path, headers, vec![])
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{}", r.body);
    }
    assert_eq!(remembered().await, before);
}

/// Each party's signed requests about a job take a share of the runtime's request memory of their
/// own: a party that spends its share (here by re-approving in a loop) is told to wait, and the
/// other parties of the job are not.
#[tokio::test]
async fn one_party_cannot_spend_another_partys_share_of_the_request_memory() {
    let w = start(MEASUREMENT).await;
    let a = hospital(&w, HOSPITALS[0].0, HOSPITALS[0].1).await;
    let b = hospital(&w, HOSPITALS[1].0, HOSPITALS[1].1).await;
    let job = spec(
        &[&a, &b],
        serde_json::json!({"kind": "logistic_regression"}),
    );
    let hash = hex::encode(job.hash());
    // The same signed create twice (each in its own envelope): the job exists after the first,
    // and the second is refused as a replay all the same.
    let body = serde_json::to_vec(&job).unwrap();
    let headers: BTreeMap<String, String> = a
        .client
        .party()
        .sign_request(
            "POST",
            "/v1/jobs",
            &body,
            &w.runtime_keys.hpke_public_key,
            SystemTime::now(),
        )
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let runtime = a.client.runtime();
    let first = runtime
        .raw_request("POST", "/v1/jobs", headers.clone(), body.clone())
        .await
        .unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    let again = runtime
        .raw_request("POST", "/v1/jobs", headers, body)
        .await
        .unwrap();
    assert_eq!(
        (again.status, again.body["code"].as_str()),
        (409, Some("request_replayed"))
    );
    let mut accepted = 1; // the first create (the replay took nothing)
    let refusal = loop {
        match a.client.approve(&hash, &job, in_an_hour()).await {
            Ok(_) => accepted += 1,
            Err(e) => break code(e),
        }
        assert!(accepted <= 1_000, "the share has no bound");
    };
    assert_eq!(
        (refusal.0, refusal.1.as_str()),
        (503, "busy"),
        "{}",
        refusal.2
    );
    assert_eq!(accepted, 128, "a party's share per job");
    // The other party approves, submits and gets its status as usual.
    b.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    let status = b.client.submit(&hash).await.unwrap();
    assert_eq!(status.state, JobState::Running);
}

#[tokio::test]
async fn hyper_parameters_and_quotas_are_bounded_and_old_jobs_are_evicted() {
    let w = start_with(MEASUREMENT, |o| {
        o.max_jobs_per_party = 2;
        o.abandoned_after = Duration::from_secs(2);
    })
    .await;
    let a = hospital(&w, HOSPITALS[0].0, HOSPITALS[0].1).await;
    let b = hospital(&w, HOSPITALS[1].0, HOSPITALS[1].1).await;
    // Every hyper-parameter has an upper bound, checked when the job is created.
    for (algorithm, param) in [
        (
            serde_json::json!({"kind": "gbdt", "n_estimators": 100_000}),
            "n_estimators",
        ),
        (
            serde_json::json!({"kind": "gbdt", "max_depth": 64}),
            "max_depth",
        ),
        (
            serde_json::json!({"kind": "gbdt", "max_bins": 100_000}),
            "max_bins",
        ),
        (
            serde_json::json!({"kind": "logistic_regression", "max_iter": 10_000_000}),
            "max_iter",
        ),
    ] {
        let (status, code_, message) = code(
            a.client
                .create(&spec(&[&a, &b], algorithm))
                .await
                .unwrap_err(),
        );
        assert_eq!((status, code_.as_str()), (400, "invalid_spec"), "{message}");
        assert!(message.contains(param), "{message}");
    }
    // A party's quota of live jobs.
    let job = |seed: u64| {
        let mut s = spec(
            &[&a, &b],
            serde_json::json!({"kind": "logistic_regression"}),
        );
        s.evaluation.seed = seed;
        s
    };
    a.client.create(&job(1)).await.unwrap();
    a.client.create(&job(2)).await.unwrap();
    let (status, code_, _) = code(a.client.create(&job(3)).await.unwrap_err());
    assert_eq!((status, code_.as_str()), (429, "quota_exceeded"));
    // Another party's quota is its own.
    b.client.create(&job(4)).await.unwrap();
    // Jobs never submitted are evicted once abandoned; then there is room again.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    // Retention holds on a read too, before anything new arrives.
    let (status, code_, _) = code(
        b.client
            .status(&hex::encode(job(4).hash()))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, code_.as_str()), (404, "unknown_job"));
    a.client.create(&job(3)).await.unwrap();
    assert_eq!(
        code(
            a.client
                .status(&hex::encode(job(1).hash()))
                .await
                .unwrap_err()
        )
        .0,
        404
    );
}

#[tokio::test]
async fn a_job_can_deploy_its_model_to_serving_without_any_party_holding_its_key() {
    use cordon_proto::job::ServeOutput;
    use cordon_proto::kbs::{AttestRequest, AttestResponse, RELEASE_INFO};
    use cordon_tee::EvidenceProvider;
    let w = start(MEASUREMENT).await;
    let a = hospital(&w, HOSPITALS[0].0, HOSPITALS[0].1).await;
    let b = hospital(&w, HOSPITALS[1].0, HOSPITALS[1].1).await;
    // The serving runtimes the parties agree on: another measurement than the trainer's.
    let serving = [0x77; 48];
    let mut job = spec(
        &[&a, &b],
        serde_json::json!({"kind": "logistic_regression"}),
    );
    job.outputs = Outputs {
        recipients: vec![],
        serve: Some(ServeOutput {
            policy: Policy::new(vec![Platform::Sim], vec![serving.to_vec()]).to_toml(),
        }),
    };
    let hash = hex::encode(job.hash());
    a.client.create(&job).await.unwrap();
    a.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    b.client.approve(&hash, &job, in_an_hour()).await.unwrap();
    a.client.submit(&hash).await.unwrap();
    a.client.wait(&hash, Duration::from_secs(60)).await.unwrap();
    let receipt = b.client.receipt(&hash).await.unwrap();
    receipt.verify(&w.verifier).unwrap();
    assert!(receipt.body.output.registered_for_serving);
    assert!(receipt.body.output.recipients.is_empty());
    // No party receives the model's key...
    assert_eq!(
        code(a.client.result(&hash).await.unwrap_err()).1,
        "not_a_recipient"
    );
    // ...but every party may fetch the sealed model, and a serving runtime the policy names gets
    // its key from the KBS.
    let sealed = b.client.sealed_model(&hash).await.unwrap();
    let header = cordon_seal::read_header(&mut &sealed[..]).unwrap();
    assert_eq!(header.digest(), receipt.body.output.sealed_manifest_sha256);
    let release = |measurement: [u8; 48]| {
        let (kbs, hw, key_id) = (
            w.kbs.clone(),
            w.hw_key.clone(),
            header.manifest.key_id.clone(),
        );
        async move {
            let http = reqwest::Client::new();
            let c: cordon_proto::kbs::Challenge = http
                .post(format!("{kbs}/kbs/v1/challenge"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let kp = ServiceKeyPair::generate(0);
            let rk = RuntimeKeys {
                hpke_public_key: kp.public_key(),
                hpke_key_id: 0,
                signing_public_key: [4; 32],
            };
            let tee = SimTee::new(
                SimHardwareKey::from_file_contents(&hw).unwrap(),
                measurement,
                [0; 32],
                false,
            );
            let evidence = tee
                .evidence(&cordon_proto::report_data(
                    &hex::decode(&c.nonce).unwrap(),
                    &rk,
                    &[],
                ))
                .unwrap();
            let req = AttestRequest {
                endorsements: Default::default(),
                nonce: c.nonce,
                evidence,
                runtime_keys: rk,
                key_ids: vec![key_id.clone()],
                models: vec![],
                sealed_job: None,
            };
            let r: AttestResponse = http
                .post(format!("{kbs}/kbs/v1/attest"))
                .json(&req)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            r.released.first().map(|x| {
                kp.open_sealed(RELEASE_INFO, key_id.as_bytes(), &x.sealed_dek)
                    .unwrap()
            })
        }
    };
    let dek = release(serving)
        .await
        .expect("the serving runtime gets the model's key");
    let key = KeyFile {
        key_id: header.manifest.key_id.clone(),
        dek: cordon_seal::Dek::from_bytes(&dek).unwrap(),
        signer: receipt.body.attestation.runtime_keys.signing_public_key,
    };
    let (_, onnx) = cordon_seal::unseal_to_vec(&sealed[..], &key).unwrap();
    OnnxModel::load("joint", "1", &onnx).unwrap();
    // The trainer's own measurement is not in the serving policy: no key for it.
    assert!(release(MEASUREMENT).await.is_none());

    // The output key is the job's: the KBS's administrator cannot re-register it under a policy
    // of its own (which would hand the model to a runtime of its choosing).
    let admin = cordon_proto::auth::admin_key(&w.admin_token).unwrap();
    let evil = Policy::new(vec![Platform::Sim], vec![[0x99; 48].to_vec()]).to_toml();
    let key_id = header.manifest.key_id.clone();
    let body = serde_json::to_vec(&cordon_proto::kbs::RegisterKey {
        sealed_dek: cordon_proto::kbs::seal_dek_for_kbs(
            &w.kbs_key,
            cordon_proto::kbs::DekPurpose::AdminKey,
            &key_id,
            &admin.verifying_key().to_bytes(),
            &cordon_proto::kbs::policy_context(&evil),
            &[6; 32],
        )
        .unwrap(),
        policy: evil,
    })
    .unwrap();
    let path = format!("/kbs/v1/admin/keys/{key_id}");
    let mut req = reqwest::Client::new().put(format!("{}{path}", w.kbs));
    for (n, v) in
        cordon_proto::auth::sign_request(&admin, "PUT", &path, &body, &w.kbs_key, SystemTime::now())
    {
        req = req.header(n, v);
    }
    let resp = req.body(body).send().await.unwrap();
    assert_eq!(
        resp.status(),
        409,
        "the admin re-registered a job's output key"
    );
    assert!(
        release(serving).await.is_some(),
        "the job's key was replaced"
    );

    // Only the runtime that trained the job may register its output: another key is refused.
    let forger = SigningKey::from_bytes(&[3; 32]);
    let sealed_dek = cordon_proto::kbs::seal_dek_for_kbs(
        &w.kbs_key,
        cordon_proto::kbs::DekPurpose::JobOutput,
        "forged",
        &forger.verifying_key().to_bytes(),
        &cordon_proto::job::output_context(&job.hash(), &[0; 32]),
        &[1; 32],
    )
    .unwrap();
    let body = serde_json::to_vec(&cordon_proto::job::OutputKey {
        key_id: "forged".into(),
        sealed_dek,
        sealed_manifest_sha256: [0; 32],
    })
    .unwrap();
    let path = format!("/kbs/v1/jobs/{hash}/output");
    let mut req = reqwest::Client::new().put(format!("{}{path}", w.kbs));
    for (n, v) in cordon_proto::auth::sign_request(
        &forger,
        "PUT",
        &path,
        &body,
        &w.kbs_key,
        SystemTime::now(),
    ) {
        req = req.header(n, v);
    }
    let resp = req.body(body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("no runtime with this key attested"));
}

#[tokio::test]
async fn uploads_are_bounded_in_total_bytes() {
    // Room for hospital C's sealed file and little more.
    let w = start_with(MEASUREMENT, |o| o.max_total_dataset_bytes = 16 << 10).await;
    let c = hospital(&w, HOSPITALS[2].0, HOSPITALS[2].1).await;
    assert!(!c.dataset.key_id.is_empty());
    let owner = OwnerKey::from_secret_bytes(&c.client.party().signing_secret());
    let mut sealed = std::io::Cursor::new(Vec::new());
    let csv = HOSPITALS[0].1;
    cordon_seal::seal(
        csv.as_bytes(),
        csv.len() as u64,
        &mut sealed,
        &owner,
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let (status, code_, message) = code(
        c.client
            .upload_dataset(sealed.into_inner())
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (status, code_.as_str()),
        (507, "dataset_store_full"),
        "{message}"
    );
}
