//! One store test suite, run against both backends: SQLite (`Store`) and PostgreSQL (`PgStore`,
//! on a throwaway cluster, see `cordon_kbs::testing`). Each case is written once over
//! `&mut dyn KeyStore`; the macro at the end makes a test of it per backend. Then the PostgreSQL
//! store's own cases: several connections (replicas) racing on one database.

use cordon_kbs::custody::{dek_binding, wrap_aad, MemoryKek, Slot};
use cordon_kbs::testing::PgCluster;
use cordon_kbs::{
    verify_audit_chain, AttestationCommit, AttestationOutcome, DatasetQuota, JobRuntime, Kek, Keks,
    KeyKind, KeyStore, NewAuditEvent, NonceShare, PendingEvent, PgStore, RequestNonceUse, Share,
    Store, StoreError,
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn keks(seed: u8) -> Keks {
    Keks::new(Arc::new(MemoryKek::new([seed; 32])))
}

/// Where a store lives, so that a case can open it again (another replica, a restart, another
/// KEK).
trait Backend {
    fn open(&self, keks: Keks) -> Result<Box<dyn KeyStore>, StoreError>;
}

struct Sqlite(tempfile::TempDir);
impl Backend for Sqlite {
    fn open(&self, keks: Keks) -> Result<Box<dyn KeyStore>, StoreError> {
        Ok(Box::new(Store::open(self.0.path(), keks)?))
    }
}

struct Postgres(String);
impl Backend for Postgres {
    fn open(&self, keks: Keks) -> Result<Box<dyn KeyStore>, StoreError> {
        Ok(Box::new(PgStore::connect(&self.0, keks)?))
    }
}

/// One cluster for this test binary; every test has a database of its own on it.
fn cluster() -> &'static PgCluster {
    static C: OnceLock<PgCluster> = OnceLock::new();
    C.get_or_init(PgCluster::start)
}

fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().unwrap())
}

fn postgres() -> Postgres {
    Postgres(cluster().database())
}

fn event<'a>(time: u64, kind: &'a str, key_id: Option<&'a str>) -> NewAuditEvent<'a> {
    NewAuditEvent {
        time,
        kind,
        key_id,
        claims_digest: None,
        verdict: "accepted",
        measurement: None,
        detail: "test",
    }
}

fn pending(time: u64, kind: &'static str, key_id: Option<&str>) -> PendingEvent {
    PendingEvent {
        time,
        kind,
        key_id: key_id.map(String::from),
        claims_digest: None,
        verdict: if kind == "key_released" {
            "accepted"
        } else {
            "rejected"
        },
        measurement: None,
        detail: "test".into(),
    }
}

/// An attestation spending `nonce` that releases `releases` and records `events`.
fn attestation(
    nonce: &[u8],
    expires_at: u64,
    releases: &[&str],
    events: &[&str],
) -> AttestationCommit {
    AttestationCommit {
        nonce: nonce.to_vec(),
        expires_at,
        releases: releases
            .iter()
            .map(|k| pending(expires_at - 50, "key_released", Some(k)))
            .collect(),
        events: events
            .iter()
            .map(|k| pending(expires_at - 50, "key_denied", Some(k)))
            .collect(),
        job_runtime: None,
    }
}

fn committed(withheld: &[&str]) -> AttestationOutcome {
    AttestationOutcome::Committed {
        withheld: withheld.iter().map(|s| s.to_string()).collect(),
    }
}

fn kinds(s: &mut dyn KeyStore) -> Vec<String> {
    s.audit_events()
        .unwrap()
        .into_iter()
        .map(|e| format!("{}:{}", e.kind, e.key_id.unwrap_or_default()))
        .collect()
}

fn share(share: Share, sender: u8, per_sender: u64, max: u64) -> NonceShare {
    NonceShare {
        share,
        sender: [sender; 32],
        per_sender,
        max,
    }
}

// ---- the cases, once ----

fn attestations_spend_their_nonce_once_with_their_events(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    s.put_key_audited("k", &[5; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    let first = attestation(b"n1", 100, &["k"], &["other"]);
    assert_eq!(
        s.commit_attestations(std::slice::from_ref(&first), 60)
            .unwrap(),
        [committed(&[])]
    );
    // The same nonce again, alone or in a batch (where the first of two wins): nothing stored.
    let second = attestation(b"n2", 100, &["k"], &[]);
    assert_eq!(
        s.commit_attestations(&[first.clone(), second.clone(), second.clone()], 61)
            .unwrap(),
        [
            AttestationOutcome::Spent,
            committed(&[]),
            AttestationOutcome::Spent
        ]
    );
    // Another replica (or a restart) knows the nonces spent.
    let mut other = b.open(keks(1)).unwrap();
    assert_eq!(
        other.commit_attestations(&[first], 62).unwrap(),
        [AttestationOutcome::Spent]
    );
    assert_eq!(
        kinds(other.as_mut()),
        [
            "key_registered:k",
            "key_released:k",
            "key_denied:other",
            "key_released:k"
        ]
    );
    assert_eq!(verify_audit_chain(&other.audit_events().unwrap()), Ok(()));
}

/// Spent nonces are pruned, their expiries kept as ranges that are never forgotten: a clock set
/// back cannot bring a pruned nonce back.
fn spent_nonces_are_pruned_into_ranges_that_are_never_forgotten(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let t0 = 1_000_000;
    let old = attestation(b"old", t0 + 60, &[], &["x"]);
    assert_eq!(
        s.commit_attestations(std::slice::from_ref(&old), t0)
            .unwrap(),
        [committed(&[])]
    );
    // The host moves the clock an hour ahead: the spent nonce is pruned, its expiry kept...
    let later = attestation(b"later", t0 + 3_700, &[], &["y"]);
    assert_eq!(
        s.commit_attestations(&[later], t0 + 3_600).unwrap(),
        [committed(&[])]
    );
    // ...then back: the old nonce is refused, though its row is gone.
    assert_eq!(
        s.commit_attestations(&[old], t0 + 10).unwrap(),
        [AttestationOutcome::Forgotten],
        "a pruned nonce was taken again"
    );
    assert_eq!(kinds(s.as_mut()), ["key_denied:x", "key_denied:y"]);
}

fn request_nonces_have_shares_replays_and_a_floor(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let party = share(Share::Party, 1, 2, 3);
    assert_eq!(
        s.use_request_nonce(b"a", 1_000, 600, 1_000, party).unwrap(),
        RequestNonceUse::Accepted
    );
    assert_eq!(
        s.use_request_nonce(b"a", 1_000, 600, 1_000, party).unwrap(),
        RequestNonceUse::Replayed
    );
    s.use_request_nonce(b"b", 1_000, 600, 1_000, party).unwrap();
    // The sender's share is full; another sender has room, until the share is.
    assert!(matches!(
        s.use_request_nonce(b"c", 1_000, 600, 1_000, party),
        Err(StoreError::Busy(_))
    ));
    assert_eq!(
        s.use_request_nonce(b"d", 1_000, 600, 1_000, share(Share::Party, 2, 2, 3))
            .unwrap(),
        RequestNonceUse::Accepted
    );
    assert!(matches!(
        s.use_request_nonce(b"e", 1_000, 600, 1_000, share(Share::Party, 3, 2, 3)),
        Err(StoreError::Busy(_))
    ));
    // Party traffic does not spend the administrator's share.
    assert_eq!(
        s.use_request_nonce(b"f", 1_000, 600, 1_000, share(Share::Admin, 9, 5, 5))
            .unwrap(),
        RequestNonceUse::Accepted
    );
    // The clock an hour ahead prunes; set back, the first request is refused, not recorded
    // afresh, by this replica and any other.
    s.use_request_nonce(b"m", 4_600, 600, 4_600, share(Share::Admin, 9, 5, 5))
        .unwrap();
    assert_eq!(
        s.use_request_nonce(b"a", 1_000, 600, 1_010, party).unwrap(),
        RequestNonceUse::Forgotten { pruned_at: 4_600 }
    );
    let mut other = b.open(keks(1)).unwrap();
    assert_eq!(
        other
            .use_request_nonce(b"a", 1_000, 600, 1_010, party)
            .unwrap(),
        RequestNonceUse::Forgotten { pruned_at: 4_600 }
    );
}

fn keys_round_trip_wrapped_with_owners_kinds_and_revocation(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    s.put_key_audited(
        "m",
        &[7; 32],
        "policy-m",
        &event(1, "key_registered", Some("m")),
    )
    .unwrap();
    let k = s.get_key("m").unwrap().unwrap();
    assert_eq!(k.dek.as_slice(), &[7; 32]);
    assert_eq!(
        (k.kind, k.policy.as_str(), k.owner),
        (KeyKind::Admin, "policy-m", None)
    );
    assert!(s.get_key("absent").unwrap().is_none());
    // Replaced by the admin: the new DEK.
    s.put_key_audited("m", &[8; 32], "p2", &event(2, "key_registered", Some("m")))
        .unwrap();
    assert_eq!(s.get_key("m").unwrap().unwrap().dek.as_slice(), &[8; 32]);
    // A dataset key is its owner's: neither the admin nor another party replaces it.
    let quota = DatasetQuota {
        per_owner: 10,
        max: 10,
    };
    let ev = event(3, "dataset_key_registered", Some("d"));
    s.put_dataset_key_audited("d", &[4; 32], "p", &[1; 32], quota, &ev)
        .unwrap();
    assert!(matches!(
        s.put_key_audited("d", &[0; 32], "p", &ev),
        Err(StoreError::KeyOwned { .. })
    ));
    assert!(matches!(
        s.put_dataset_key_audited("d", &[0; 32], "p", &[2; 32], quota, &ev),
        Err(StoreError::KeyOwned { .. })
    ));
    s.put_dataset_key_audited("d", &[5; 32], "p", &[1; 32], quota, &ev)
        .unwrap();
    let d = s.get_key("d").unwrap().unwrap();
    assert_eq!(
        (d.dek.as_slice(), d.kind, d.owner),
        (&[5u8; 32][..], KeyKind::Dataset, Some([1; 32]))
    );
    assert!(d.is_dataset_key());
    // Revoked: no DEK, never written again, refused a second time.
    s.revoke_key_audited("m", &event(9, "key_revoked", Some("m")))
        .unwrap();
    let m = s.get_key("m").unwrap().unwrap();
    assert_eq!((m.revoked_at, m.dek.len()), (Some(9), 0));
    assert!(matches!(
        s.put_key_audited("m", &[1; 32], "p", &ev),
        Err(StoreError::KeyRevoked { revoked_at: 9, .. })
    ));
    assert!(matches!(
        s.revoke_key_audited("m", &ev),
        Err(StoreError::KeyRevoked { .. })
    ));
    assert!(matches!(
        s.revoke_key_audited("nope", &ev),
        Err(StoreError::UnknownKey { .. })
    ));
    let listed = s.key_listing().unwrap();
    let ids: Vec<_> = listed.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(ids, ["d", "m"]);
    assert_eq!(listed[1].revoked_at, Some(9));
    assert_eq!(
        listed[0].owner.as_deref(),
        Some(hex::encode([1u8; 32]).as_str())
    );
    // Every write above that succeeded is in the one chain; the refused ones are not.
    let events = s.audit_events().unwrap();
    assert_eq!(verify_audit_chain(&events), Ok(()));
    assert_eq!(events.len(), 5);
}

fn dataset_quotas_hold(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let quota = DatasetQuota {
        per_owner: 2,
        max: 3,
    };
    let ev = event(1, "dataset_key_registered", None);
    for id in ["a1", "a2"] {
        s.put_dataset_key_audited(id, &[1; 32], "p", &[1; 32], quota, &ev)
            .unwrap();
    }
    assert!(matches!(
        s.put_dataset_key_audited("a3", &[1; 32], "p", &[1; 32], quota, &ev),
        Err(StoreError::Quota(_))
    ));
    // Replacing one of one's own keys is not a new key.
    s.put_dataset_key_audited("a2", &[2; 32], "p", &[1; 32], quota, &ev)
        .unwrap();
    s.put_dataset_key_audited("b1", &[1; 32], "p", &[2; 32], quota, &ev)
        .unwrap();
    assert!(matches!(
        s.put_dataset_key_audited("c1", &[1; 32], "p", &[3; 32], quota, &ev),
        Err(StoreError::Quota(_))
    ));
    assert!(s.get_key("a3").unwrap().is_none());
}

/// Records that runtime `rt` attested for `job` (its attestation spending `nonce`).
fn record_runtime(
    s: &mut dyn KeyStore,
    nonce: &[u8],
    job: &[u8; 32],
    rt: &[u8; 32],
    policy: Option<&str>,
) {
    let mut a = attestation(nonce, 100, &[], &[]);
    a.job_runtime = Some(JobRuntime {
        job_hash: *job,
        signing_key: *rt,
        serve_policy: policy.map(String::from),
    });
    assert_eq!(s.commit_attestations(&[a], 50).unwrap(), [committed(&[])]);
}

fn job_outputs_register_once_per_runtime(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let (job, rt) = ([3u8; 32], [4u8; 32]);
    assert_eq!(s.job_runtime(&job, &rt).unwrap(), None);
    let ev = event(1, "job_output_registered", Some("out"));
    // A runtime that never attested for the job registers nothing.
    assert!(matches!(
        s.put_output_key_audited("out", &[1; 32], "serve", &job, &rt, &ev),
        Err(StoreError::OutputRegistered { .. })
    ));
    record_runtime(s.as_mut(), b"r1", &job, &rt, Some("serve"));
    record_runtime(s.as_mut(), b"r2", &job, &rt, Some("other"));
    assert_eq!(
        s.job_runtime(&job, &rt).unwrap(),
        Some(Some("serve".to_string()))
    );
    s.put_output_key_audited("out", &[6; 32], "serve", &job, &rt, &ev)
        .unwrap();
    let k = s.get_key("out").unwrap().unwrap();
    assert_eq!(
        (k.kind, k.owner, k.dek.as_slice()),
        (KeyKind::JobOutput, Some(rt), &[6u8; 32][..])
    );
    assert!(matches!(
        s.put_output_key_audited("out2", &[1; 32], "serve", &job, &rt, &ev),
        Err(StoreError::OutputRegistered { .. })
    ));
    // An existing key id is never taken over, and the claim is rolled back with the refusal.
    let rt2 = [5u8; 32];
    record_runtime(s.as_mut(), b"r3", &job, &rt2, None);
    s.put_key_audited("taken", &[1; 32], "p", &ev).unwrap();
    assert!(matches!(
        s.put_output_key_audited("taken", &[1; 32], "serve", &job, &rt2, &ev),
        Err(StoreError::KeyOwned { .. })
    ));
    s.put_output_key_audited("out3", &[1; 32], "serve", &job, &rt2, &ev)
        .unwrap();
}

fn identity_admin_and_kek_checks(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    assert!(s.identity_seed().unwrap().is_none());
    assert_eq!(*s.init_identity_seed(&[9; 32], 1).unwrap(), [9; 32]);
    // A second start (or replica) keeps the first seed.
    assert_eq!(*s.init_identity_seed(&[8; 32], 2).unwrap(), [9; 32]);
    assert_eq!(s.admin_public_key().unwrap(), None);
    s.set_admin(&[1; 32], &[2; 32], "sig").unwrap();
    assert_eq!(s.admin_token_hash().unwrap(), Some([1; 32]));
    assert_eq!(s.admin_public_key().unwrap(), Some([2; 32]));
    assert_eq!(s.identity_signature().unwrap().as_deref(), Some("sig"));
    s.put_key_audited("k", &[1; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    drop(s);
    // Another KEK: refused at open, naming the KEK that wraps the store.
    match b.open(keks(2)) {
        Err(StoreError::UnknownKek { entries: 2, .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a store under another KEK opened"),
    }
    // The same KEK again: everything there.
    let mut s = b.open(keks(1)).unwrap();
    assert_eq!(*s.identity_seed().unwrap().unwrap(), [9; 32]);
    assert_eq!(s.get_key("k").unwrap().unwrap().dek.as_slice(), &[1; 32]);
}

fn audit_log_is_one_chain(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let mut other = b.open(keks(1)).unwrap();
    for i in 0..6u64 {
        let st = if i % 2 == 0 { &mut s } else { &mut other };
        let e = st
            .append_audit(&event(i, "key_released", Some("k")))
            .unwrap();
        assert_eq!(e.seq, i as i64 + 1);
    }
    let events = other.audit_events().unwrap();
    assert_eq!(events.len(), 6);
    assert_eq!(verify_audit_chain(&events), Ok(()));
    let mut edited = events.clone();
    edited[2].detail = "edited".into();
    assert_eq!(verify_audit_chain(&edited), Err(3));
}

fn a_release_is_recorded_only_while_its_key_is_unrevoked(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    s.put_key_audited("k", &[5; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    s.put_key_audited("j", &[6; 32], "p", &event(1, "key_registered", Some("j")))
        .unwrap();
    let job = JobRuntime {
        job_hash: [3; 32],
        signing_key: [4; 32],
        serve_policy: None,
    };
    let mut a = attestation(b"a", 100, &["k", "j"], &[]);
    a.job_runtime = Some(job.clone());
    assert_eq!(s.commit_attestations(&[a], 50).unwrap(), [committed(&[])]);
    assert_eq!(s.job_runtime(&[3; 32], &[4; 32]).unwrap(), Some(None));
    s.revoke_key_audited("k", &event(3, "key_revoked", Some("k")))
        .unwrap();
    // A release of a revoked (or unknown) key is withheld and recorded as a denial; a job
    // runtime whose releases were not all delivered is not recorded.
    let mut b2 = attestation(b"b", 100, &["k", "j", "unknown"], &[]);
    b2.job_runtime = Some(JobRuntime {
        signing_key: [5; 32],
        ..job
    });
    assert_eq!(
        s.commit_attestations(&[b2], 51).unwrap(),
        [committed(&["k", "unknown"])]
    );
    assert_eq!(s.job_runtime(&[3; 32], &[5; 32]).unwrap(), None);
    let k = s.get_key("k").unwrap().unwrap();
    assert_eq!(k.revoked_at, Some(3));
    assert!(k.dek.is_empty());
    assert_eq!(
        kinds(s.as_mut()),
        [
            "key_registered:k",
            "key_registered:j",
            "key_released:k",
            "key_released:j",
            "key_revoked:k",
            "key_denied:k",
            "key_released:j",
            "key_denied:unknown"
        ]
    );
    let denial = &s.audit_events().unwrap()[5];
    assert_eq!(
        (denial.verdict.as_str(), denial.detail.as_str()),
        ("rejected", "revoked while the release was being answered")
    );
}

/// Nonces spent while the clock was a day ahead, and pruned while it still was (any host can
/// cause two attestations minutes apart: a failed one spends its nonce too), are forgotten in a
/// range of their own: once the clock is right, fresh challenges pass; the nonces of the day
/// ahead, and of before, stay refused whatever the clock does next.
fn a_clock_kept_a_day_ahead_and_set_right_locks_no_fresh_challenge_out(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let (t0, ttl, day) = (1_800_000_000u64, 60u64, 86_400u64);
    let ahead = t0 + day;
    let before = attestation(b"before", t0 + ttl, &[], &[]);
    assert_eq!(
        s.commit_attestations(std::slice::from_ref(&before), t0)
            .unwrap(),
        [committed(&[])]
    );
    let a1 = attestation(b"a1", ahead + ttl, &[], &[]);
    let a2 = attestation(b"a2", ahead + 300 + ttl, &[], &[]);
    for (a, now) in [(&a1, ahead), (&a2, ahead + 300)] {
        assert_eq!(
            s.commit_attestations(std::slice::from_ref(a), now).unwrap(),
            [committed(&[])]
        );
    }
    // The clock set right, a minute later: a fresh challenge passes...
    let fresh = attestation(b"fresh", t0 + 60 + ttl, &[], &[]);
    assert_eq!(
        s.commit_attestations(&[fresh], t0 + 60).unwrap(),
        [committed(&[])]
    );
    // ...the nonce spent before the step, and the one spent (and pruned) while ahead, do not,
    // now or when the clock is ahead again.
    for now in [t0 + 61, ahead + 10] {
        assert_eq!(
            s.commit_attestations(&[before.clone(), a1.clone()], now)
                .unwrap(),
            [AttestationOutcome::Forgotten, AttestationOutcome::Forgotten],
            "at {now}"
        );
    }
}

/// Grouped lookups answer each asker, in order, the same key to several of them; a key that does
/// not unwrap is that key's error only.
fn grouped_lookups_answer_each_asker(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    s.put_key_audited("k", &[5; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    s.put_key_audited("j", &[6; 32], "p", &event(1, "key_registered", Some("j")))
        .unwrap();
    let ids: Vec<String> = ["k", "none", "j", "k"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let found = s.get_keys(&ids).unwrap();
    let deks: Vec<Option<Vec<u8>>> = found
        .into_iter()
        .map(|k| k.unwrap().map(|k| k.dek.to_vec()))
        .collect();
    assert_eq!(
        deks,
        [
            Some(vec![5; 32]),
            None,
            Some(vec![6; 32]),
            Some(vec![5; 32])
        ]
    );
    // A reader sees what the writer committed.
    let mut r = s.reader().unwrap();
    assert_eq!(r.get_key("j").unwrap().unwrap().dek.as_slice(), &[6; 32]);
}

/// PostgreSQL refuses NUL in text, which SQLite stores (a job spec's party name may carry one
/// into a denial's reasons): both stores keep U+FFFD instead, hashed as stored, so one such event
/// neither fails its batch nor breaks the chain.
fn a_nul_in_an_event_is_stored_as_a_replacement_character(b: &dyn Backend) {
    let mut s = b.open(keks(1)).unwrap();
    let good = attestation(b"good", 100, &[], &["x"]);
    let mut bad = attestation(b"bad", 100, &[], &["y"]);
    bad.events[0].detail = "no valid approval of job .. by a\0b".into();
    assert_eq!(
        s.commit_attestations(&[good, bad], 50).unwrap(),
        [committed(&[]), committed(&[])]
    );
    let events = s.audit_events().unwrap();
    assert_eq!(
        events[1].detail,
        "no valid approval of job .. by a\u{FFFD}b"
    );
    assert_eq!(verify_audit_chain(&events), Ok(()));
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $case() { super::$case(&super::sqlite()) } )*
        }
        mod postgres {
            $( #[test] fn $case() { super::$case(&super::postgres()) } )*
        }
    };
}

both!(
    attestations_spend_their_nonce_once_with_their_events,
    spent_nonces_are_pruned_into_ranges_that_are_never_forgotten,
    a_clock_kept_a_day_ahead_and_set_right_locks_no_fresh_challenge_out,
    request_nonces_have_shares_replays_and_a_floor,
    keys_round_trip_wrapped_with_owners_kinds_and_revocation,
    dataset_quotas_hold,
    job_outputs_register_once_per_runtime,
    identity_admin_and_kek_checks,
    audit_log_is_one_chain,
    a_release_is_recorded_only_while_its_key_is_unrevoked,
    grouped_lookups_answer_each_asker,
    a_nul_in_an_event_is_stored_as_a_replacement_character,
);

// ---- PostgreSQL: several replicas (connections) on one database, racing ----

/// `n` threads, each with a store of its own on `url`, all starting `f` at once.
fn race<T: Send + 'static>(
    url: &str,
    n: usize,
    f: impl Fn(usize, &mut dyn KeyStore) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (f, barrier, url) = (f.clone(), barrier.clone(), url.to_string());
            std::thread::spawn(move || {
                let mut s = PgStore::connect(&url, keks(1)).unwrap();
                barrier.wait();
                f(i, &mut s)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn pg_replicas_migrate_once_at_the_same_time() {
    let url = cluster().database();
    let versions = race(&url, 6, |_, _| ());
    assert_eq!(versions.len(), 6);
    assert_eq!(
        PgStore::connect(&url, keks(1))
            .unwrap()
            .schema_version()
            .unwrap(),
        4
    );
}

#[test]
fn pg_a_challenge_is_spent_once_across_replicas() {
    let url = cluster().database();
    PgStore::connect(&url, keks(1))
        .unwrap()
        .put_key_audited("k", &[5; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    for round in 0..5 {
        let n = format!("n{round}");
        // Eight replicas, each committing a batch that spends the nonce (and one of its own).
        let outcomes = race(&url, 8, move |i, s| {
            let mine = format!("{n}-{i}");
            s.commit_attestations(
                &[
                    attestation(n.as_bytes(), 100, &["k"], &[]),
                    attestation(mine.as_bytes(), 100, &["k"], &[]),
                ],
                20,
            )
            .unwrap()
        });
        let accepted = outcomes.iter().filter(|o| o[0] == committed(&[])).count();
        assert_eq!(accepted, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.iter().all(|o| matches!(
            o[0],
            AttestationOutcome::Committed { .. } | AttestationOutcome::Spent
        ) && o[1] == committed(&[])));
    }
    let events = PgStore::connect(&url, keks(1))
        .unwrap()
        .audit_events()
        .unwrap();
    // The registration, then per round one release for the shared nonce and eight of their own.
    assert_eq!(events.len(), 1 + 5 * 9);
    assert_eq!(verify_audit_chain(&events), Ok(()));
}

#[test]
fn pg_concurrent_appends_make_one_chain_without_gaps() {
    let url = cluster().database();
    race(&url, 6, |i, s| {
        for j in 0..40u64 {
            let detail = format!("replica {i} event {j}");
            s.append_audit(&NewAuditEvent {
                detail: &detail,
                ..event(j, "key_released", Some("k"))
            })
            .unwrap();
            // Writes with their events interleave with bare appends.
            if j % 10 == 0 {
                let id = format!("k{i}-{j}");
                s.put_key_audited(
                    &id,
                    &[i as u8; 32],
                    "p",
                    &event(j, "key_registered", Some(&id)),
                )
                .unwrap();
            }
        }
    });
    let events = PgStore::connect(&url, keks(1))
        .unwrap()
        .audit_events()
        .unwrap();
    assert_eq!(events.len(), 6 * 44);
    assert_eq!(verify_audit_chain(&events), Ok(()));
}

#[test]
fn pg_concurrent_registrations_cannot_overrun_the_dataset_quota() {
    let url = cluster().database();
    let quota = DatasetQuota {
        per_owner: 5,
        max: 8,
    };
    let results = race(&url, 6, move |i, s| {
        (0..4)
            .filter(|j| {
                let id = format!("d{i}-{j}");
                // Owners 0..3: per-owner quota 5 across 2 threads each (8 tries each).
                let owner = [(i % 3) as u8; 32];
                match s.put_dataset_key_audited(
                    &id,
                    &[1; 32],
                    "p",
                    &owner,
                    quota,
                    &event(1, "dataset_key_registered", Some(&id)),
                ) {
                    Ok(_) => true,
                    Err(StoreError::Quota(_)) => false,
                    Err(e) => panic!("{e}"),
                }
            })
            .count()
    });
    let stored: usize = results.iter().sum();
    assert_eq!(stored, 8, "{results:?}");
    let mut s = PgStore::connect(&url, keks(1)).unwrap();
    let listed = s.key_listing().unwrap();
    assert_eq!(listed.len(), 8);
    for owner in 0..3u8 {
        let n = listed
            .iter()
            .filter(|k| k.owner.as_deref() == Some(hex::encode([owner; 32]).as_str()))
            .count();
        assert!(n <= 5, "owner {owner} holds {n}");
    }
}

#[test]
fn pg_request_nonces_are_recorded_once_within_their_quota_across_replicas() {
    let url = cluster().database();
    // One nonce from every replica at once: one acceptance.
    let uses = race(&url, 6, |_, s| {
        s.use_request_nonce(b"same", 1_000, 600, 1_000, share(Share::Admin, 1, 100, 100))
            .unwrap()
    });
    assert_eq!(
        uses.iter()
            .filter(|u| **u == RequestNonceUse::Accepted)
            .count(),
        1,
        "{uses:?}"
    );
    // Distinct nonces against a share of 10: exactly 10 accepted.
    let accepted = race(&url, 6, |i, s| {
        (0..5)
            .filter(|j| {
                let n = format!("n{i}-{j}");
                match s.use_request_nonce(
                    n.as_bytes(),
                    1_000,
                    600,
                    1_000,
                    share(Share::Party, i as u8, 100, 10),
                ) {
                    Ok(RequestNonceUse::Accepted) => true,
                    Err(StoreError::Busy(_)) => false,
                    other => panic!("{other:?}"),
                }
            })
            .count()
    });
    assert_eq!(accepted.iter().sum::<usize>(), 10, "{accepted:?}");
}

#[test]
fn pg_a_write_with_its_event_is_all_or_nothing() {
    let url = cluster().database();
    let mut s = PgStore::connect(&url, keks(1)).unwrap();
    s.put_key_audited("k", &[1; 32], "p", &event(1, "key_registered", Some("k")))
        .unwrap();
    // A refused write leaves no event; the chain continues from the last committed one.
    assert!(s
        .put_dataset_key_audited(
            "k",
            &[2; 32],
            "p",
            &[1; 32],
            DatasetQuota {
                per_owner: 9,
                max: 9
            },
            &event(2, "dataset_key_registered", Some("k"))
        )
        .is_err());
    let events = s.audit_events().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(s.get_key("k").unwrap().unwrap().dek.as_slice(), &[1; 32]);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A `pg_dump` of the database holds no DEK and no identity seed: not raw, not hex, not base64.
#[test]
fn pg_dump_holds_no_secret() {
    use base64::Engine;
    let url = cluster().database();
    let mut s = PgStore::connect(&url, keks(1)).unwrap();
    let seed: [u8; 32] = rand::random();
    s.init_identity_seed(&seed, 1).unwrap();
    let mut secrets = vec![seed];
    for i in 0..20 {
        let dek: [u8; 32] = rand::random();
        let id = format!("k{i}");
        s.put_key_audited(&id, &dek, "p", &event(1, "key_registered", Some(&id)))
            .unwrap();
        secrets.push(dek);
    }
    let quota = DatasetQuota {
        per_owner: 9,
        max: 9,
    };
    let dek: [u8; 32] = rand::random();
    s.put_dataset_key_audited(
        "d",
        &dek,
        "p",
        &[1; 32],
        quota,
        &event(1, "dataset_key_registered", Some("d")),
    )
    .unwrap();
    secrets.push(dek);
    let dump = cluster().dump(&url);
    assert!(
        contains(&dump, b"COPY public.keys"),
        "the dump holds the keys table"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    for secret in &secrets {
        // Base64 of the secret's first 30 bytes: whole groups, whatever the alignment before it.
        for needle in [
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            hex::encode_upper(secret).into_bytes(),
            b64.encode(&secret[..30]).into_bytes(),
            b64url.encode(&secret[..30]).into_bytes(),
        ] {
            assert!(!contains(&dump, &needle), "the dump holds a secret");
        }
    }
    // And the scan finds a secret that is there: the wrapped DEK of k0, as pg_dump writes bytea.
    let wrapped_hex = {
        let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let w: Vec<u8> = c
            .query_one("SELECT dek FROM keys WHERE key_id = 'k0'", &[])
            .unwrap()
            .get(0);
        hex::encode(w)
    };
    assert!(
        contains(&dump, wrapped_hex.as_bytes()),
        "the scan reads bytea as pg_dump writes it"
    );
}

// ---- lock order and unstorable text ----

/// A job's runtime registers its output on one replica while its second attestation for the job
/// commits on another. Both take the audit lock before any row, so neither waits for the other in
/// a cycle (when the registration locked the runtime's row first, PostgreSQL broke the deadlock
/// by failing one of them). A race, twenty rounds.
#[test]
fn pg_output_registration_and_a_reattestation_do_not_deadlock() {
    let url = cluster().database();
    let mut setup = PgStore::connect(&url, keks(1)).unwrap();
    for round in 0..20u8 {
        let (job, rt) = ([round; 32], [4u8; 32]);
        record_runtime(&mut setup, &[b'r', round], &job, &rt, Some("serve"));
        let results = race(&url, 2, move |i, s| {
            if i == 0 {
                let ev = event(60, "job_output_registered", Some("out"));
                s.put_output_key_audited(&format!("out{round}"), &[1; 32], "serve", &job, &rt, &ev)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                let mut again = attestation(&[b'a', round], 100, &[], &[]);
                again.job_runtime = Some(JobRuntime {
                    job_hash: job,
                    signing_key: rt,
                    serve_policy: Some("serve".into()),
                });
                s.commit_attestations(&[again], 50)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        });
        assert!(
            results.iter().all(|r| r.is_ok()),
            "round {round}: {results:?}"
        );
    }
}

/// `rotate-kek --database-url` while one replica still runs with the OLD KEK as its current one
/// (its operator forgot to restart it): the replica re-registers k0 (new DEK, new policy) and k1
/// (new DEK, same policy) between the rewrap's read and its update. The update changes a row
/// only if it holds exactly what was read, so neither key goes back to its old DEK; both are
/// left under the old KEK, for the final count to report and a second run to finish.
#[test]
fn pg_rewrap_never_puts_back_a_row_rewritten_meanwhile() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let old: Arc<dyn Kek> = Arc::new(MemoryKek::new([1; 32]));
    let new: Arc<dyn Kek> = Arc::new(MemoryKek::new([2; 32]));
    {
        let mut s = PgStore::connect(&url, Keks::new(old.clone())).unwrap();
        s.init_identity_seed(&[9; 32], 1).unwrap();
        s.put_key_audited(
            "k0",
            &[0xA0; 32],
            "p1",
            &event(1, "key_registered", Some("k0")),
        )
        .unwrap();
        s.put_key_audited(
            "k1",
            &[0xA1; 32],
            "p1",
            &event(2, "key_registered", Some("k1")),
        )
        .unwrap();
    }
    // The stale replica's writes (what its put_key_audited sends), held uncommitted.
    let mut raw = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let mut tx = raw.transaction().unwrap();
    for (id, dek, policy) in [("k0", [0xB0u8; 32], "p2"), ("k1", [0xB1u8; 32], "p1")] {
        let w = old
            .wrap(
                &wrap_aad(Slot::Dek, &dek_binding(id, "admin", None, policy)),
                &dek,
            )
            .unwrap();
        tx.execute(
            "UPDATE keys SET dek = $1, policy = $2, kek_id = $3 WHERE key_id = $4",
            &[&w, &policy, &old.id(), &id],
        )
        .unwrap();
    }
    let (u, o, n) = (url.clone(), old.clone(), new.clone());
    let rotation = std::thread::spawn(move || {
        let mut s = PgStore::connect(
            &u,
            Keks {
                current: n,
                previous: Some(o),
            },
        )
        .unwrap();
        s.rewrap_all(100, |_| {}).map_err(|e| e.to_string())
    });
    // Wait until the rewrap has read the rows and blocks on k0's row lock.
    let mut watch = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = watch
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE keys SET dek = $2%'",
                &[],
            )
            .unwrap()
            .get(0);
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the rewrap never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.commit().unwrap();
    let result = rotation.join().unwrap();
    let mut s = PgStore::connect(
        &url,
        Keks {
            current: new.clone(),
            previous: Some(old.clone()),
        },
    )
    .unwrap();
    let usage = s.kek_usage().unwrap();
    // The identity was re-wrapped; the two keys rewritten meanwhile were not.
    assert_eq!(result, Ok(1), "{usage:?}");
    assert!(
        usage.contains(&(Some(old.id().to_string()), 2)),
        "{usage:?}"
    );
    let k1 = s.get_key("k1").map(|k| k.map(|k| k.dek.to_vec()));
    let k0 = s.get_key("k0").map(|k| k.map(|k| k.dek.to_vec()));
    assert_eq!(
        k1.unwrap().unwrap(),
        vec![0xB1; 32],
        "k1's new DEK was replaced by the old one"
    );
    assert_eq!(k0.unwrap().unwrap(), vec![0xB0; 32], "k0 no longer unwraps");
}
