//! Signed audit checkpoints over loopback HTTP: an auditor who saved a checkpoint detects a store
//! whose audit log was later rewritten or rolled back, even when the hash chain was recomputed.

use cordon_attest::Platform;
use cordon_kbs::{audit_hash, verify_audit_chain, Kbs, KbsConfig};
use cordon_proto::checkpoint::{
    verify_checkpoint, verify_entries, verify_extends, CheckpointError, ConsistencyProof,
    InclusionProof, SignedCheckpoint,
};
use cordon_proto::kbs::AuditEvent;
use rusqlite::{params, Connection};

mod common;
use common::*;

async fn get<T: serde::de::DeserializeOwned>(h: &Harness, path: &str) -> T {
    let resp = h.admin(reqwest::Method::GET, path, vec![]).await;
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn register(h: &Harness, key_id: &str) {
    let resp = h
        .register(key_id, [1; 32], policy(vec![Platform::Sim], MEASUREMENT))
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
}

fn admin_public_key(h: &Harness) -> [u8; 32] {
    cordon_proto::auth::admin_key(&h.token)
        .unwrap()
        .verifying_key()
        .to_bytes()
}

/// The checkpoint the KBS serves now, verified as an auditor would, with the log it covers.
async fn checked(h: &Harness) -> (SignedCheckpoint, Vec<AuditEvent>) {
    let signed: SignedCheckpoint = get(h, "/kbs/v1/admin/audit/checkpoint").await;
    let cp = verify_checkpoint(&signed, &admin_public_key(h), &h.kbs_key).unwrap();
    let events: Vec<AuditEvent> = get(h, "/kbs/v1/admin/audit").await;
    verify_entries(cp, &events).unwrap();
    (signed, events)
}

/// Rewrites event `seq`'s detail in the store file, and recomputes the whole hash chain after
/// it, as anyone who can write the store can.
fn rewrite(db: &std::path::Path, seq: i64) {
    let conn = Connection::open(db).unwrap();
    conn.execute(
        "UPDATE audit SET detail = 'nothing happened' WHERE seq = ?1",
        params![seq],
    )
    .unwrap();
    let events: Vec<AuditEvent> = {
        let mut stmt = conn
            .prepare(
                "SELECT seq, time, kind, key_id, claims_digest, verdict, measurement, detail
                 FROM audit ORDER BY seq",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok(AuditEvent {
                seq: r.get(0)?,
                time: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                key_id: r.get(3)?,
                claims_digest: r.get(4)?,
                verdict: r.get(5)?,
                measurement: r.get(6)?,
                detail: r.get(7)?,
                hash: String::new(),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let mut prev = "0".repeat(64);
    for e in events {
        let hash = audit_hash(&prev, &e);
        conn.execute(
            "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE seq = ?3",
            params![prev, hash, e.seq],
        )
        .unwrap();
        prev = hash;
    }
}

#[tokio::test]
async fn a_saved_checkpoint_detects_a_rewritten_log() {
    let h = start().await;
    for i in 0..3 {
        register(&h, &format!("k{i}")).await;
    }
    let (saved, events) = checked(&h).await;
    assert_eq!(saved.checkpoint.size, 3);
    assert_eq!(events.len(), 3);

    // Every event's inclusion proof verifies against a signed checkpoint.
    for i in 0..3u64 {
        let p: InclusionProof = get(&h, &format!("/kbs/v1/admin/audit/inclusion/{i}")).await;
        verify_checkpoint(&p.checkpoint, &admin_public_key(&h), &h.kbs_key).unwrap();
        p.verify().unwrap();
        assert_eq!(p.event, events[i as usize]);
    }
    let beyond = h
        .admin(
            reqwest::Method::GET,
            "/kbs/v1/admin/audit/inclusion/3",
            vec![],
        )
        .await;
    assert_eq!(refusal(beyond).await.0, 400);

    // (a) More appends: the new checkpoint extends the saved one.
    register(&h, "k3").await;
    register(&h, "k4").await;
    let p: ConsistencyProof = get(&h, "/kbs/v1/admin/audit/consistency/3").await;
    let new = verify_checkpoint(&p.checkpoint, &admin_public_key(&h), &h.kbs_key).unwrap();
    assert_eq!((p.old_size, new.size), (3, 5));
    verify_extends(&saved.checkpoint, new, &p.path).unwrap();
    let later = p.checkpoint.clone();

    // (b) Event 2 rewritten in the store file, the chain recomputed: the chain and the KBS's new
    // checkpoint look fine on their own, but neither extends what the auditor saved.
    rewrite(&h.data_dir.join("kbs.sqlite3"), 2);
    let (_, rewritten) = checked(&h).await;
    assert_eq!(verify_audit_chain(&rewritten), Ok(()), "chain recomputed");
    for old in [&saved, &later] {
        let size = old.checkpoint.size;
        let p: ConsistencyProof = get(&h, &format!("/kbs/v1/admin/audit/consistency/{size}")).await;
        let new = verify_checkpoint(&p.checkpoint, &admin_public_key(&h), &h.kbs_key).unwrap();
        assert!(
            matches!(
                verify_extends(&old.checkpoint, new, &p.path),
                Err(CheckpointError::Inconsistent { .. })
            ),
            "rewrite not detected from size {size}"
        );
        // And the rewritten entries are not the log the saved checkpoint signed.
        assert!(matches!(
            verify_entries(&old.checkpoint, &rewritten),
            Err(CheckpointError::RootMismatch { .. })
        ));
    }
}

#[tokio::test]
async fn a_saved_checkpoint_detects_a_rollback() {
    let h = start().await;
    for i in 0..5 {
        register(&h, &format!("k{i}")).await;
    }
    let (saved, _) = checked(&h).await;
    assert_eq!(saved.checkpoint.size, 5);

    // (c) The newest two events deleted: the KBS now signs a shorter log.
    Connection::open(h.data_dir.join("kbs.sqlite3"))
        .unwrap()
        .execute("DELETE FROM audit WHERE seq > 3", [])
        .unwrap();
    let (now, events) = checked(&h).await;
    assert_eq!(verify_audit_chain(&events), Ok(()), "a cut chain is intact");
    assert_eq!(
        verify_extends(&saved.checkpoint, &now.checkpoint, &[]),
        Err(CheckpointError::RolledBack {
            old_size: 5,
            new_size: 3
        })
    );
    let resp = h
        .admin(
            reqwest::Method::GET,
            "/kbs/v1/admin/audit/consistency/5",
            vec![],
        )
        .await;
    assert_eq!(refusal(resp).await.0, 409);

    // Growing back to five events with other content is a rewrite, not a recovery.
    register(&h, "x1").await;
    register(&h, "x2").await;
    let p: ConsistencyProof = get(&h, "/kbs/v1/admin/audit/consistency/5").await;
    assert!(matches!(
        verify_extends(&saved.checkpoint, &p.checkpoint.checkpoint, &p.path),
        Err(CheckpointError::Inconsistent { .. })
    ));
}

/// The checkpoint endpoints are the administrator's, like the log itself.
#[tokio::test]
async fn checkpoints_and_proofs_need_the_administrator() {
    let h = start().await;
    for path in [
        "/kbs/v1/admin/audit/checkpoint",
        "/kbs/v1/admin/audit/inclusion/0",
        "/kbs/v1/admin/audit/consistency/0",
    ] {
        let resp = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let resp = h
            .signed(&stranger, reqwest::Method::GET, path, vec![], &h.kbs_key)
            .await;
        assert_eq!(resp.status().as_u16(), 401, "{path}");
    }
    // An empty log has a checkpoint too: size 0, the empty tree's root.
    let (empty, _) = checked(&h).await;
    assert_eq!(empty.checkpoint.size, 0);
    assert_eq!(empty.checkpoint.root, cordon_proto::merkle::empty_root());
}

/// A store whose administrator predates checkpoints has no vouch for the signing key until the
/// KBS holds the admin token again; only that token can make one.
#[test]
fn an_older_store_gets_its_vouch_from_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Kbs::open(KbsConfig::new(
            dir.path().join("kbs"),
            cordon_attest::Endorsements::default(),
        ))
        .unwrap()
    };
    let kbs = open();
    let token = kbs.init_admin_token().unwrap().unwrap();
    let signing_key = kbs.audit_signing_public_key();
    drop(kbs);
    let db = dir.path().join("kbs/kbs.sqlite3");
    Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM audit_key_vouch", [])
        .unwrap();
    let kbs = open();
    assert_eq!(
        kbs.audit_signing_public_key(),
        signing_key,
        "derived again, the same"
    );
    let stranger = hex::encode([8u8; 32]);
    assert!(kbs.vouch_audit_key(&stranger).is_err());
    assert!(kbs.vouch_audit_key(&token).unwrap());
    assert!(!kbs.vouch_audit_key(&token).unwrap(), "made once");
    let vouch: String = Connection::open(&db)
        .unwrap()
        .query_row("SELECT admin_signature FROM audit_key_vouch", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        vouch,
        cordon_proto::checkpoint::vouch_audit_key(
            &cordon_proto::auth::admin_key(&token).unwrap(),
            &kbs.identity_public_key(),
            &signing_key
        )
    );
}
