//! Dataset keys over loopback: registered by their owners, released only to evidence that binds a
//! training job the owner approved.

mod common;
use common::*;

use cordon_attest::Platform;
use cordon_proto::job::{job_report_data, PartyKey};
use cordon_proto::kbs::{seal_job, AttestRequest, AttestResponse, ErrorBody, JobRelease};
use cordon_proto::ServiceKeyPair;
use cordon_tee::EvidenceProvider;
use std::time::Duration;

/// Approvals valid for a day after the harness's clock.
const UNTIL: u64 = 1_800_000_000 + 86_400;

async fn answer(resp: reqwest::Response) -> AttestResponse {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn dataset_keys_are_released_only_for_a_job_their_owner_approved() {
    let h = start().await;
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    assert_eq!(h.register_dataset(&a, "ds-a").await.status(), 200);
    assert_eq!(h.register_dataset(&b, "ds-b").await.status(), 200);
    let job_a = job_spec(&[&a, &b], "job A");
    let ids = vec!["ds-a".to_string(), "ds-b".to_string()];

    // Both owners approved job A: both keys are released to evidence binding job A.
    let r = answer(
        h.attest_for_job(approved(&job_a, &[&a, &b], UNTIL), job_a.hash(), &ids)
            .await,
    )
    .await;
    assert_eq!(r.released.len(), 2, "{:?}", r.denied);

    // b has not approved: a's key is released, b's is not, and the reason names b.
    let r = answer(
        h.attest_for_job(approved(&job_a, &[&a], UNTIL), job_a.hash(), &ids)
            .await,
    )
    .await;
    assert_eq!(r.released.len(), 1);
    assert!(r.denied[0].reasons[0].contains("no valid approval"));
    assert!(r.denied[0].reasons[0].contains(" b,"), "{:?}", r.denied);

    // An expired approval counts for nothing, and the denial says why.
    let mut expired = approved(&job_a, &[&a], UNTIL);
    expired
        .approvals
        .push(b.approve(&job_a.hash(), 1_700_000_000));
    let r = answer(h.attest_for_job(expired, job_a.hash(), &ids).await).await;
    assert_eq!(r.released.len(), 1);
    assert!(r.denied[0].reasons[0].contains("expired"), "{:?}", r.denied);

    // A forged approval "by b" (signed with a's key) next to a's own: a's key is released, and
    // the audit log names only the approval that verified.
    let mut forged = approved(&job_a, &[&a], UNTIL);
    forged.approvals.push(cordon_proto::job::Approval {
        party: "b".into(),
        ..a.approve(&job_a.hash(), UNTIL)
    });
    let r = answer(
        h.attest_for_job(forged, job_a.hash(), &["ds-a".to_string()])
            .await,
    )
    .await;
    assert_eq!(r.released.len(), 1);
    let last = h.audit().await.pop().unwrap();
    assert_eq!(last.kind, "key_released");
    assert!(last.detail.ends_with("approved by a"), "{}", last.detail);

    // Approvals of job A presented for job B (same datasets, another algorithm): refused.
    let mut job_b = job_a.clone();
    job_b.algorithm = serde_json::json!({"kind": "gbdt"});
    let stolen = JobRelease {
        spec: job_b.clone(),
        approvals: approved(&job_a, &[&a, &b], UNTIL).approvals,
    };
    let r = answer(h.attest_for_job(stolen, job_b.hash(), &ids).await).await;
    assert!(r.released.is_empty());
    assert_eq!(r.denied.len(), 2);

    // Evidence that binds another job than the one presented: report_data mismatch.
    let resp = h
        .attest_for_job(approved(&job_a, &[&a, &b], UNTIL), job_b.hash(), &ids)
        .await;
    assert_eq!(resp.status(), 403);
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.code, "report_data_mismatch");

    // A job that lists a's key under b (b approving) gets nothing: b is not the owner.
    let mut hijack = job_a.clone();
    hijack.datasets[1].key_id = "ds-a".into();
    hijack.datasets[0].key_id = "ds-other".into();
    let r = answer(
        h.attest_for_job(
            approved(&hijack, &[&a, &b], UNTIL),
            hijack.hash(),
            &["ds-a".to_string()],
        )
        .await,
    )
    .await;
    assert!(
        r.denied[0].reasons[0].contains("not the key's owner"),
        "{:?}",
        r.denied
    );

    let audit = h.audit().await;
    assert!(audit.iter().any(|e| e.kind == "dataset_key_registered"));
    assert!(audit
        .iter()
        .any(|e| e.kind == "key_released" && e.detail.contains("training job")));
}

#[tokio::test]
async fn dataset_keys_are_never_released_outside_a_job() {
    let h = start().await;
    let a = PartyKey::generate("a");
    assert_eq!(h.register_dataset(&a, "ds-a").await.status(), 200);
    let kp = ServiceKeyPair::generate(0);
    let rk = keys(&kp);
    let c = h.challenge().await;
    let nonce = hex::decode(&c.nonce).unwrap();
    let evidence = h
        .tee(MEASUREMENT, false)
        .evidence(&cordon_proto::report_data(&nonce, &rk, &[]))
        .unwrap();
    let r = answer(
        h.attest(&AttestRequest {
            endorsements: Default::default(),
            nonce: c.nonce,
            evidence,
            runtime_keys: rk,
            key_ids: vec!["ds-a".into()],
            models: vec![],
            sealed_job: None,
        })
        .await,
    )
    .await;
    assert!(r.released.is_empty());
    assert!(r.denied[0].reasons[0].contains("released only for a training job"));

    // And a job is never released an ordinary (model) key.
    assert_eq!(
        h.register("model", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
            .await
            .status(),
        200
    );
    let job = job_spec(&[&a], "job");
    let r = answer(
        h.attest_for_job(
            approved(&job, &[&a], UNTIL),
            job.hash(),
            &["model".to_string()],
        )
        .await,
    )
    .await;
    assert!(r.denied[0].reasons[0].contains("not a dataset key"));
}

#[tokio::test]
async fn dataset_keys_stay_their_owners() {
    let h = start().await;
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    assert_eq!(h.register_dataset(&a, "ds-a").await.status(), 200);
    // The owner may replace its own key.
    assert_eq!(h.register_dataset(&a, "ds-a").await.status(), 200);
    // Another party may not, nor may the admin API.
    let resp = h.register_dataset(&b, "ds-a").await;
    assert_eq!(resp.status(), 409);
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.code, "conflict");
    assert_eq!(
        h.register("ds-a", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
            .await
            .status(),
        409
    );
    // Nor can a party take over an admin-registered key.
    assert_eq!(
        h.register("model", [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
            .await
            .status(),
        200
    );
    assert_eq!(h.register_dataset(&a, "model").await.status(), 409);

    // Unsigned, mis-signed, stale and replayed registrations are refused.
    let body = h.dataset_body(
        &a,
        "ds-new",
        &policy(vec![Platform::Sim], MEASUREMENT),
        [7; 32],
    );
    let url = format!("{}/kbs/v1/datasets/ds-new", h.url);
    let resp = h.http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let mut req = h.http.put(&url);
    for (name, value) in a.sign_request("PUT", "/kbs/v1/datasets/other", &body, &h.kbs_key, h.now())
    {
        req = req.header(name, value);
    }
    assert_eq!(req.body(body.clone()).send().await.unwrap().status(), 401);
    let mut req = h.http.put(&url);
    let stale = h.now() - Duration::from_secs(600);
    for (name, value) in a.sign_request("PUT", "/kbs/v1/datasets/ds-new", &body, &h.kbs_key, stale)
    {
        req = req.header(name, value);
    }
    let resp = req.body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let e: ErrorBody = resp.json().await.unwrap();
    assert!(e.error.contains("more than 300s"), "{}", e.error);
    // Signed for another KBS: refused here.
    let mut req = h.http.put(&url);
    for (name, value) in a.sign_request("PUT", "/kbs/v1/datasets/ds-new", &body, &[9; 32], h.now())
    {
        req = req.header(name, value);
    }
    assert_eq!(req.body(body.clone()).send().await.unwrap().status(), 401);
    // The same signed request twice: the second is a replay.
    let headers = a.sign_request("PUT", "/kbs/v1/datasets/ds-new", &body, &h.kbs_key, h.now());
    let send = || {
        let mut req = h.http.put(&url);
        for (name, value) in headers.clone() {
            req = req.header(name, value);
        }
        req.body(body.clone()).send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let before = h.audit().await.len();
    let resp = send().await.unwrap();
    assert_eq!(resp.status(), 409);
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.code, "request_replayed");
    assert_eq!(
        h.audit().await.len(),
        before,
        "a replay left an audit entry"
    );
}

/// The job (spec and approvals) crosses the host's network sealed to the KBS: the attest request
/// names no party, dataset or feature in clear, and a sealed job moved to another request (another
/// nonce), or sealed to another KBS, does not open.
#[tokio::test]
async fn a_job_travels_sealed_to_the_kbs_and_only_for_its_own_request() {
    let h = start().await;
    let (a, b) = (
        PartyKey::generate("hospital-a"),
        PartyKey::generate("hospital-b"),
    );
    assert_eq!(h.register_dataset(&a, "ds-hospital-a").await.status(), 200);
    assert_eq!(h.register_dataset(&b, "ds-hospital-b").await.status(), 200);
    let job = job_spec(&[&a, &b], "secret job name");
    let release = approved(&job, &[&a, &b], UNTIL);
    let kp = ServiceKeyPair::generate(0);
    let rk = keys(&kp);
    let c = h.challenge().await;
    let nonce = hex::decode(&c.nonce).unwrap();
    let evidence = h
        .tee(MEASUREMENT, false)
        .evidence(&job_report_data(&nonce, &rk, &job.hash()))
        .unwrap();
    let ids = vec!["ds-hospital-a".to_string(), "ds-hospital-b".to_string()];
    let request = |sealed_job| AttestRequest {
        endorsements: Default::default(),
        nonce: c.nonce.clone(),
        evidence: evidence.clone(),
        runtime_keys: rk.clone(),
        key_ids: ids.clone(),
        models: vec![],
        sealed_job,
    };
    let sealed = seal_job(&h.kbs_key, &c.nonce, &release).unwrap();
    let wire = serde_json::to_string(&request(Some(sealed.clone()))).unwrap();
    for clear in [
        "\"hospital-a\"",
        "secret job name",
        &hex::encode(a.signing_public_key()),
    ] {
        assert!(
            !wire.contains(clear),
            "{clear} is readable in the attest request"
        );
    }
    // Sealed for another nonce (another request), or to another KBS: refused before the nonce is
    // spent.
    let other_nonce = seal_job(&h.kbs_key, &"ab".repeat(32), &release).unwrap();
    let r = h.attest(&request(Some(other_nonce))).await;
    assert_eq!(r.status(), 400);
    let elsewhere = seal_job(
        &ServiceKeyPair::generate(0).public_key(),
        &c.nonce,
        &release,
    )
    .unwrap();
    let r = h.attest(&request(Some(elsewhere))).await;
    assert_eq!(r.status(), 400);
    let e: ErrorBody = r.json().await.unwrap();
    assert!(e.error.contains("sealed to KBS key"), "{}", e.error);
    let r = answer(h.attest(&request(Some(sealed))).await).await;
    assert_eq!(r.released.len(), 2, "{:?}", r.denied);
}

/// A job carries at most one approval per party, each naming one of its parties: a request cannot
/// make the KBS verify, and write into its audit log, approvals without bound.
#[tokio::test]
async fn approvals_are_one_per_party_of_the_job() {
    let h = start().await;
    let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
    assert_eq!(h.register_dataset(&a, "ds-a").await.status(), 200);
    assert_eq!(h.register_dataset(&b, "ds-b").await.status(), 200);
    let job = job_spec(&[&a, &b], "job");
    let ids = vec!["ds-a".to_string()];
    // The same bogus approval for b, many times over.
    let mut flood = approved(&job, &[&a], UNTIL);
    let bogus = cordon_proto::job::Approval {
        party: "b".into(),
        ..a.approve(&job.hash(), UNTIL)
    };
    flood.approvals.extend(std::iter::repeat_n(bogus, 50));
    let (status, e) = refusal(h.attest_for_job(flood, job.hash(), &ids).await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (400, "bad_request"),
        "{}",
        e.error
    );
    assert!(e.error.contains("more than one approval"), "{}", e.error);
    // An approval by someone the job does not name.
    let mut stranger = approved(&job, &[&a], UNTIL);
    stranger
        .approvals
        .push(PartyKey::generate("c").approve(&job.hash(), UNTIL));
    let (status, e) = refusal(h.attest_for_job(stranger, job.hash(), &ids).await).await;
    assert_eq!(
        (status, e.code.as_str()),
        (400, "bad_request"),
        "{}",
        e.error
    );
    assert!(e.error.contains("not a party"), "{}", e.error);
    // Nothing was released or recorded as released for either.
    assert!(h.audit().await.iter().all(|e| e.kind != "key_released"));
    // One each: released as usual.
    let r = answer(
        h.attest_for_job(approved(&job, &[&a, &b], UNTIL), job.hash(), &ids)
            .await,
    )
    .await;
    assert_eq!(r.released.len(), 1, "{:?}", r.denied);
}
