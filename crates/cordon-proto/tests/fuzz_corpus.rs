//! Replays the committed fuzz corpora (fuzz/corpus/{kbs_requests,runtime_requests,channel,session})
//! through the fuzz entry points: a fast check in CI that no known input panics. Long fuzzing runs use
//! `cargo fuzz` (see fuzz/README.md).
//!
//! The seeds are real messages made with the fixed keys of `cordon_proto::fuzzing`, written by
//! `CORDON_WRITE_FUZZ_SEEDS=1 cargo test -p cordon-proto --test fuzz_corpus write_seeds`.

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::{corpus, replay, replay_dir};

use cordon_attest::sim::SimReport;
use cordon_proto::channel::{encapsulate_request, seal_to};
use cordon_proto::fuzzing::{self as f};
use cordon_proto::job::{self, JobResult, JobState, JobStatus, Receipt};
use cordon_proto::kbs::{self, AttestRequest, AttestResponse, JobRelease};
use cordon_proto::runtime::{AttestationResponse, InnerRequest};
use cordon_proto::session::{start_session, SessionGrant};
use cordon_proto::{auth, report_data, ModelBinding};
use ed25519_dalek::{Signer, SigningKey};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

#[test]
fn kbs_requests_corpus_never_panics() {
    assert!(replay("kbs_requests", f::kbs_requests) >= 7);
}

#[test]
fn runtime_requests_corpus_never_panics() {
    assert!(replay("runtime_requests", f::runtime_requests) >= 10);
}

#[test]
fn channel_corpus_never_panics() {
    assert!(replay("channel", f::channel) >= 3);
}

#[test]
fn session_corpus_never_panics() {
    assert!(replay("session", f::session) >= 3);
}

#[test]
fn seeds_reach_past_the_cryptographic_checks() {
    // The targets are deep only if the fixed keys open the seeds: check that they still do.
    let read = |t: &str, name: &str| std::fs::read(corpus(t).join(name)).unwrap();
    assert!(f::service_key()
        .decapsulate_request(&read("channel", "request.bin"))
        .is_ok());
    assert!(f::response_client()
        .decrypt_response(&read("channel", "response.bin"))
        .is_ok());
    let (_, keys) = f::accept_session_fixed(&read("session", "setup.bin")).unwrap();
    let frame = read("session", "frame.bin");
    cordon_proto::session::SessionMessage::parse(&frame)
        .unwrap()
        .open(&keys)
        .unwrap();
    let receipt: Receipt =
        serde_json::from_slice(&read("runtime_requests", "receipt.json")).unwrap();
    receipt.verify(f::verifier()).unwrap();
    let req: AttestRequest =
        serde_json::from_slice(&read("kbs_requests", "attest_request_job.json")).unwrap();
    let sealed = req.sealed_job.unwrap();
    let json = f::kbs_key()
        .open_sealed(kbs::JOB_INFO, req.nonce.as_bytes(), &sealed.sealed)
        .unwrap();
    let release: JobRelease = serde_json::from_slice(&json).unwrap();
    let hash = release.spec.hash();
    release.spec.validate().unwrap();
    for a in &release.approvals {
        a.verify(
            &release.spec,
            &hash,
            UNIX_EPOCH + Duration::from_secs(f::NOW),
        )
        .unwrap();
    }
    let register: kbs::RegisterKey =
        serde_json::from_slice(&read("kbs_requests", "register_key.json")).unwrap();
    f::kbs_key()
        .open_sealed(
            kbs::UPLOAD_INFO,
            &kbs::dek_upload_aad(
                kbs::DekPurpose::AdminKey,
                f::REGISTER_KEY_ID,
                &f::admin_public_key(),
                &kbs::policy_context(&register.policy),
            ),
            &register.sealed_dek.sealed,
        )
        .unwrap();
    let response: AttestResponse =
        serde_json::from_slice(&read("kbs_requests", "attest_response.json")).unwrap();
    assert!(!response.released.is_empty());
    for released in &response.released {
        f::service_key()
            .open_sealed(
                kbs::RELEASE_INFO,
                released.key_id.as_bytes(),
                &released.sealed_dek,
            )
            .unwrap();
    }

    // The seeds whose formats changed with approval expiry, request nonces and audiences, and
    // the runtime's session nonce: each must still pass the check it meets first.
    let now = UNIX_EPOCH + Duration::from_secs(f::NOW);
    let spec = f::seed_spec().unwrap();
    let approval: job::Approval =
        serde_json::from_slice(&read("runtime_requests", "approval.json")).unwrap();
    approval.verify(spec, &spec.hash(), now).unwrap();
    // Laid out as the target reads it: the signer, time, nonce, audience and signature header
    // lines, the method, the path, then the body.
    let signed = read("runtime_requests", "signed_request.txt");
    let mut parts = signed.splitn(8, |&b| b == b'\n');
    let mut line = || std::str::from_utf8(parts.next().unwrap()).unwrap();
    let headers = [
        auth::SIGNER_HEADER,
        auth::TIME_HEADER,
        auth::NONCE_HEADER,
        auth::AUDIENCE_HEADER,
        auth::SIGNATURE_HEADER,
    ]
    .map(|name| (name, line()));
    let (method, path) = (line(), line());
    let body = parts.next().unwrap_or_default();
    let header = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let request = auth::verify_request(
        header,
        method,
        path,
        body,
        &f::service_key().public_key(),
        now,
    )
    .unwrap();
    assert!(spec.party_by_key(&request.signer).is_some());
    // The route the runtime serves approvals at.
    assert_eq!(
        (method, path),
        (
            "POST",
            format!("/v1/jobs/{}/approvals", hex::encode(spec.hash())).as_str()
        )
    );
    f::service_key()
        .open_sealed(
            kbs::RELEASE_INFO,
            f::RELEASE_AAD,
            &read("channel", "sealed_dek.bin"),
        )
        .unwrap();
    // The session exchanges: the setup opens, and so does every message after it (the replayed
    // and reordered ones too: the window, behind the authentication, is what refuses them).
    for name in ["exchange.bin", "exchange_replayed.bin"] {
        let mut rest = &read("session", name)[..];
        let mut frames = Vec::new();
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let (frame, tail) = tail.split_at(usize::from(u16::from_be_bytes(*len)));
            frames.push(frame.to_vec());
            rest = tail;
        }
        let (setup, messages) = frames.split_first().expect(name);
        let (_, keys) = f::accept_session_fixed(setup).unwrap();
        assert!(!messages.is_empty(), "{name}");
        for m in messages {
            let message = cordon_proto::session::SessionMessage::parse(m).unwrap();
            assert_eq!(message.session_id, f::SESSION_ID, "{name}");
            message.open(&keys).unwrap();
        }
    }
}

/// Approvals of the seeds stay valid an hour after the fuzz clock.
const APPROVED_UNTIL: u64 = f::NOW + 3_600;

fn sim_evidence(report_data: [u8; 64]) -> Vec<u8> {
    let hw = SigningKey::from_bytes(&f::SIM_HARDWARE_SECRET);
    let report = SimReport {
        launch_measurement: [0x11; 48],
        workload_data: [0x22; 32],
        report_data,
        debug: false,
        signer: hw.verifying_key().to_bytes(),
    };
    let sig = hw.sign(&report.signed_bytes()).to_bytes();
    report.to_evidence(&sig)
}

/// Where `write_seeds` writes: the committed corpora when `CORDON_WRITE_FUZZ_SEEDS=1` (to
/// regenerate them), else a scratch directory, so the seed generator runs and is checked in every
/// test run without touching the repository.
fn seed_root() -> PathBuf {
    if std::env::var_os("CORDON_WRITE_FUZZ_SEEDS").is_some() {
        corpus("")
    } else {
        std::env::temp_dir().join(format!("cordon-proto-fuzz-seeds-{}", std::process::id()))
    }
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = seed_root().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

/// Writes the seed corpora (committed, with `CORDON_WRITE_FUZZ_SEEDS=1`) and replays what it wrote
/// through the entry points.
#[test]
fn write_seeds() {
    let [alice, bob] = f::parties().unwrap();
    let spec = f::seed_spec().unwrap().clone();
    let hash = spec.hash();
    let keys = f::runtime_keys();
    let nonce = [0x21u8; 32];
    let models = vec![ModelBinding {
        name: "fraud".into(),
        version: "1".into(),
        manifest_sha256: [0x31; 32],
    }];
    let infer = serde_json::json!({
        "id": "1",
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.5]}],
        "outputs": [{"name": "y"}]
    });
    let inner = InnerRequest {
        method: "POST".into(),
        path: "/v2/models/fraud/infer".into(),
        body: Some(infer.clone()),
        sent_at: Some(f::NOW),
        ..InnerRequest::default()
    };

    // Key broker.
    let t = "kbs_requests";
    let attest = AttestRequest {
        endorsements: Default::default(),
        nonce: hex::encode(nonce),
        evidence: sim_evidence(report_data(&nonce, &keys, &models)),
        runtime_keys: keys.clone(),
        key_ids: vec!["fuzz-key".into()],
        models: models.clone(),
        sealed_job: None,
    };
    write(t, "attest_request.json", &json(&attest));
    let job_attest = AttestRequest {
        endorsements: Default::default(),
        evidence: sim_evidence(job::job_report_data(&nonce, &keys, &hash)),
        key_ids: spec.datasets.iter().map(|d| d.key_id.clone()).collect(),
        models: Vec::new(),
        sealed_job: Some(
            kbs::seal_job(
                &f::kbs_key().public_key(),
                &hex::encode(nonce),
                &JobRelease {
                    spec: spec.clone(),
                    approvals: vec![
                        alice.approve(&hash, APPROVED_UNTIL),
                        bob.approve(&hash, APPROVED_UNTIL),
                    ],
                },
            )
            .unwrap(),
        ),
        ..attest
    };
    write(t, "attest_request_job.json", &json(&job_attest));
    let policy = format!(
        "platforms = [\"sim\"]\nlaunch_measurements = [\"{}\"]\n",
        hex::encode([0x11; 48])
    );
    write(
        t,
        "register_key.json",
        &json(&kbs::RegisterKey {
            sealed_dek: kbs::seal_dek_for_kbs(
                &f::kbs_key().public_key(),
                kbs::DekPurpose::AdminKey,
                f::REGISTER_KEY_ID,
                &f::admin_public_key(),
                &kbs::policy_context(&policy),
                &[1; 32],
            )
            .unwrap(),
            policy: policy.clone(),
        }),
    );
    let sealed = seal_to(
        &keys.hpke_public_key,
        kbs::RELEASE_INFO,
        b"fuzz-key",
        &[1; 32],
    )
    .unwrap();
    let response = AttestResponse {
        claims_digest: hex::encode([0x41; 32]),
        released: vec![kbs::ReleasedKey {
            key_id: "fuzz-key".into(),
            sealed_dek: sealed,
        }],
        denied: vec![kbs::DeniedKey {
            key_id: "other".into(),
            reasons: vec!["launch measurement not allowed".into()],
        }],
    };
    write(t, "attest_response.json", &json(&response));
    write(
        t,
        "challenge.json",
        &json(&kbs::Challenge {
            nonce: hex::encode(nonce),
            expires_at: f::NOW + 60,
        }),
    );
    write(
        t,
        "error.json",
        &json(&kbs::ErrorBody {
            code: "nonce_replayed".into(),
            error: "nonce already used".into(),
        }),
    );
    write(
        t,
        "audit.json",
        &json(&vec![kbs::AuditEvent {
            seq: 1,
            time: f::NOW,
            kind: "key_released".into(),
            key_id: Some("fuzz-key".into()),
            claims_digest: Some(hex::encode([0x41; 32])),
            verdict: "accepted".into(),
            measurement: Some(hex::encode([0x11; 48])),
            detail: String::new(),
            hash: hex::encode([0x51; 32]),
        }]),
    );

    // Runtime.
    let t = "runtime_requests";
    write(t, "inner_request.json", &json(&inner));
    write(t, "infer_request.json", &json(&infer));
    write(
        t,
        "infer_response.json",
        &json(
            &serde_json::json!({"model_name": "fraud", "model_version": "1", "id": "1",
            "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [0.25]}]}),
        ),
    );
    write(
        t,
        "attestation_response.json",
        &json(&AttestationResponse {
            endorsements: Default::default(),
            evidence: sim_evidence(report_data(&f::CLIENT_NONCE, &keys, &models)),
            runtime_keys: keys.clone(),
            models: models.clone(),
        }),
    );
    write(t, "job_spec.json", &json(&spec));
    write(
        t,
        "approval.json",
        &json(&alice.approve(&hash, APPROVED_UNTIL)),
    );
    let metrics = job::JobMetrics {
        algorithm: "logistic_regression".into(),
        train_rows: 75,
        test_rows: 25,
        test_accuracy: 0.8,
        test_auc: Some(0.85),
        test_log_loss: 0.4,
        parties: vec![job::PartyCounts {
            party: "alice".into(),
            train_rows: 75,
            test_rows: 25,
            positive_rows: 30,
        }],
    };
    write(
        t,
        "job_status.json",
        &json(&JobStatus {
            job_hash: hex::encode(hash),
            state: JobState::Finished,
            spec: spec.clone(),
            approved_by: vec!["alice".into(), "bob".into()],
            awaiting: Vec::new(),
            datasets_missing: Vec::new(),
            error: None,
            metrics: Some(metrics.clone()),
        }),
    );
    let body = job::ReceiptBody {
        format: job::RECEIPT_FORMAT.into(),
        job_hash: hash,
        job_name: spec.name.clone(),
        inputs: spec
            .datasets
            .iter()
            .map(|d| job::ReceiptInput {
                party: d.party.clone(),
                key_id: d.key_id.clone(),
                manifest_sha256: d.manifest_sha256,
            })
            .collect(),
        output: job::ReceiptOutput {
            onnx_sha256: [0x61; 32],
            sealed_manifest_sha256: [0x62; 32],
            key_id: "output-key".into(),
            recipients: vec!["alice".into()],
            registered_for_serving: false,
        },
        metrics,
        attestation: job::ReceiptAttestation {
            endorsements: Default::default(),
            nonce: hex::encode(nonce),
            evidence: sim_evidence(job::job_report_data(&nonce, &keys, &hash)),
            runtime_keys: keys.clone(),
        },
        finished_at: f::NOW,
    };
    let receipt = Receipt::sign(body, &SigningKey::from_bytes(&f::RUNTIME_SIGNING_SECRET));
    write(t, "receipt.json", &json(&receipt));
    let result = JobResult {
        job_hash: hex::encode(hash),
        sealed_model: b"CORDSEAL\x01\x00".to_vec(),
        key_id: "output-key".into(),
        sealed_dek: seal_to(
            &alice.hpke_public_key(),
            job::OUTPUT_INFO,
            &job::output_aad(&hash, "output-key"),
            &[2; 32],
        )
        .unwrap(),
        receipt,
    };
    write(t, "job_result.json", &json(&result));
    write(
        t,
        "party_key.json",
        f::party_key_file("alice", 1).as_bytes(),
    );
    let path = format!("/v1/jobs/{}/approvals", hex::encode(hash));
    let approval_body = json(&alice.approve(&hash, APPROVED_UNTIL));
    let headers = alice.sign_request(
        "POST",
        &path,
        &approval_body,
        &f::service_key().public_key(),
        UNIX_EPOCH + Duration::from_secs(f::NOW),
    );
    let mut signed = Vec::new();
    for (_, value) in &headers {
        signed.extend_from_slice(value.as_bytes());
        signed.push(b'\n');
    }
    signed.extend_from_slice(format!("POST\n{path}\n").as_bytes());
    signed.extend_from_slice(&approval_body);
    write(t, "signed_request.txt", &signed);

    // Encrypted channel.
    let t = "channel";
    let (request, _) = encapsulate_request(&keys.hpke_public_key, 0, &json(&inner)).unwrap();
    write(t, "request.bin", &request);
    let inner_response = br#"{"status":200,"body":{"model_name":"fraud","outputs":[]}}"#;
    write(
        t,
        "response.bin",
        &f::response_server()
            .encrypt_response(inner_response)
            .unwrap(),
    );
    write(
        t,
        "sealed_dek.bin",
        &seal_to(
            &keys.hpke_public_key,
            kbs::RELEASE_INFO,
            f::RELEASE_AAD,
            &[1; 32],
        )
        .unwrap(),
    );

    // Sessions: a real exchange (setup, grant, two requests) with the fixed service key.
    let t = "session";
    let setup_plain = json(&cordon_proto::session::SessionSetup { sent_at: f::NOW });
    let (setup, pending) = start_session(&keys.hpke_public_key, 0, &setup_plain).unwrap();
    let (_, server_keys) = f::accept_session_fixed(&setup).unwrap();
    let grant = SessionGrant {
        session_id: f::SESSION_ID,
        expires_at: f::NOW + 600,
        max_messages: 1 << 32,
    };
    let client = pending
        .accept(&server_keys.seal_grant(&grant).unwrap())
        .unwrap();
    let (first, _) = client.seal_request(&json(&inner)).unwrap();
    let (second, _) = client
        .seal_request(br#"{"method":"GET","path":"/v2/models/fraud"}"#)
        .unwrap();
    write(t, "setup.bin", &setup);
    write(t, "frame.bin", &first);
    write(
        t,
        "exchange.bin",
        &f::frame_session(&[&setup, &first, &second]),
    );
    // The same messages replayed and reordered: the window must refuse them.
    write(
        t,
        "exchange_replayed.bin",
        &f::frame_session(&[&setup, &second, &first, &second]),
    );
    let root = seed_root();
    for (target, entry, min) in [
        ("kbs_requests", f::kbs_requests as fn(&[u8]), 7),
        ("runtime_requests", f::runtime_requests, 10),
        ("channel", f::channel, 3),
        ("session", f::session, 3),
    ] {
        assert!(replay_dir(&root.join(target), entry) >= min, "{target}");
    }
    if std::env::var_os("CORDON_WRITE_FUZZ_SEEDS").is_none() {
        std::fs::remove_dir_all(&root).ok();
    }
}
