//! Signed checkpoints of the KBS audit log: the size and RFC 9162 Merkle root ([`crate::merkle`])
//! of the log, signed by the KBS, so that an auditor who keeps one can later prove that the log
//! it is shown extends it (nothing rolled back, nothing rewritten).
//!
//! ```text
//! leaf        = "cordon audit leaf v1" || 0x00 || seq (i64 BE) || time (u64 BE)
//!               || str(kind) || opt(key_id) || opt(claims_digest) || str(verdict)
//!               || opt(measurement) || str(detail) || str(hash)
//!     str(s)  = len(s) (u32 BE) || s            opt(None) = 0x00, opt(Some(s)) = 0x01 || str(s)
//! signed      = "cordon audit checkpoint v1" || 0x00 || size (u64 BE) || root (32)
//!               || time (u64 BE) || kbs_public_key (32) || signing_key (32)
//! signature   = Ed25519(audit signing key, signed)
//! signing key = Ed25519 seed HKDF-SHA256(ikm = the KBS's HPKE identity seed, salt = none,
//!               info = "cordon-kbs/audit-signing/v1")
//! vouch       = Ed25519(admin key, "cordon kbs audit key v1" || 0x00 || kbs_public_key || signing_key)
//! ```
//!
//! The leaves are the audit events in `seq` order (leaf index = seq − 1), each encoded in full,
//! its chain hash included, with lengths in front of every field: an unambiguous encoding that
//! does not depend on a JSON serialiser's choices. The signing key is bound to the KBS the
//! administrator pins by the administrator's own signature (the *vouch*), made by the KBS while it
//! holds the admin token (when the token is created or adopted, or at a start that names the
//! token file), exactly as the KBS identity key itself is vouched for (`auth::vouch_identity`).
//! The host, which carries every answer and may hold the store, cannot make a vouch for a key of
//! its own. A checkpoint carries its vouch, so a saved checkpoint verifies offline with only the
//! administrator's public key and the pinned KBS key.

use crate::kbs::AuditEvent;
use crate::merkle::{self, Hash, MerkleError};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain label of a leaf's encoding.
pub const LEAF_DOMAIN: &[u8] = b"cordon audit leaf v1\0";
/// Domain label of a checkpoint's signed bytes.
pub const CHECKPOINT_DOMAIN: &[u8] = b"cordon audit checkpoint v1\0";
/// Domain label of the administrator's vouch for an audit signing key.
pub const AUDIT_KEY_DOMAIN: &[u8] = b"cordon kbs audit key v1\0";
/// HKDF info of the audit signing key: distinct from every other use of the identity seed.
pub const SIGNING_KEY_INFO: &[u8] = b"cordon-kbs/audit-signing/v1";

/// Why a checkpoint, or the log it is checked against, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("{field}: expected {len} bytes of hex")]
    BadHex { field: &'static str, len: usize },
    #[error("the checkpoint is signed for KBS {found}, the pinned KBS is {expected}")]
    WrongKbs { found: String, expected: String },
    #[error("the checkpoint carries no administrator's vouch for its signing key: start the KBS once with --init-admin-token-file naming the admin token")]
    NotVouched,
    #[error("the administrator's vouch for audit signing key {0} does not verify: not this administrator's KBS, or altered")]
    BadVouch(String),
    #[error("the checkpoint's signature does not verify: altered, or not signed by the KBS")]
    BadSignature,
    #[error("the checkpoint covers {size} events, only {entries} were given")]
    TooFewEntries { size: u64, entries: u64 },
    #[error("the entries' Merkle root at size {size} is {computed}, the checkpoint signs {signed}: the entries are not the log the KBS signed")]
    RootMismatch {
        size: u64,
        computed: String,
        signed: String,
    },
    #[error("the log was ROLLED BACK: it now has {new_size} events, an earlier checkpoint had {old_size}")]
    RolledBack { old_size: u64, new_size: u64 },
    #[error("the log was REWRITTEN: the checkpoint of size {new_size} does not extend the earlier one of size {old_size} ({source})")]
    Inconsistent {
        old_size: u64,
        new_size: u64,
        source: MerkleError,
    },
    #[error("event {seq} was given as leaf index {index}: leaf index is seq - 1")]
    WrongSeq { seq: i64, index: u64 },
    #[error("inclusion proof: {0}")]
    Inclusion(MerkleError),
    #[error("merkle: {0}")]
    Merkle(#[from] MerkleError),
}

/// What the KBS signs: its audit log's size and Merkle root at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Events in the log (leaves of the tree).
    pub size: u64,
    /// RFC 9162 Merkle Tree Hash of the first `size` leaves, hex.
    #[serde(with = "crate::binding::hex_array32")]
    pub root: Hash,
    /// The KBS's clock when it signed, Unix seconds (informative: the KBS's clock is the host's).
    pub time: u64,
    /// The KBS's HPKE identity key: which KBS's log this is.
    #[serde(with = "crate::binding::hex_array32")]
    pub kbs_public_key: [u8; 32],
    /// The Ed25519 key that signs checkpoints, derived from the KBS's identity seed.
    #[serde(with = "crate::binding::hex_array32")]
    pub signing_key: [u8; 32],
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut m = CHECKPOINT_DOMAIN.to_vec();
        m.extend_from_slice(&self.size.to_be_bytes());
        m.extend_from_slice(&self.root);
        m.extend_from_slice(&self.time.to_be_bytes());
        m.extend_from_slice(&self.kbs_public_key);
        m.extend_from_slice(&self.signing_key);
        m
    }
}

/// A checkpoint with the KBS's signature and the administrator's vouch for the signing key: what
/// `GET /kbs/v1/admin/audit/checkpoint` answers and what an auditor saves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`] by `checkpoint.signing_key`, hex.
    pub signature: String,
    /// The administrator's [`vouch_audit_key`] over (`kbs_public_key`, `signing_key`), hex.
    /// Absent while the KBS has not held the admin token since this feature came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_signature: Option<String>,
}

/// The KBS's audit signing key. Zeroized on drop (ed25519-dalek's `zeroize` feature); its Debug
/// output names the public key only.
pub struct AuditSigningKey(SigningKey);

impl std::fmt::Debug for AuditSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigningKey({})", hex::encode(self.public_key()))
    }
}

impl AuditSigningKey {
    /// The signing key of the KBS whose HPKE identity seed is `seed`: derived, so that nothing
    /// new is stored, under its own HKDF info so that it is independent of the HPKE key.
    pub fn derive(seed: &[u8; 32]) -> AuditSigningKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, seed);
        let mut okm = zeroize::Zeroizing::new([0u8; 32]);
        // Expand fails only for outputs over 255 × 32 bytes: 32 bytes cannot fail.
        let _ = hk.expand(SIGNING_KEY_INFO, okm.as_mut());
        AuditSigningKey(SigningKey::from_bytes(&okm))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs a checkpoint of the log whose leaves' hashes are `leaves`, for the KBS
    /// `kbs_public_key`, at `time`.
    pub fn sign(
        &self,
        leaves: &[Hash],
        time: u64,
        kbs_public_key: [u8; 32],
        admin_signature: Option<String>,
    ) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            size: leaves.len() as u64,
            root: merkle::root(leaves),
            time,
            kbs_public_key,
            signing_key: self.public_key(),
        };
        let signature = hex::encode(self.0.sign(&checkpoint.signed_bytes()).to_bytes());
        SignedCheckpoint {
            checkpoint,
            signature,
            admin_signature,
        }
    }
}

fn vouch_message(kbs_public_key: &[u8; 32], signing_key: &[u8; 32]) -> Vec<u8> {
    [AUDIT_KEY_DOMAIN, kbs_public_key, signing_key].concat()
}

/// The administrator's signature (hex) saying that `signing_key` signs the audit checkpoints of
/// the KBS whose identity key is `kbs_public_key`.
pub fn vouch_audit_key(
    admin: &SigningKey,
    kbs_public_key: &[u8; 32],
    signing_key: &[u8; 32],
) -> String {
    hex::encode(
        admin
            .sign(&vouch_message(kbs_public_key, signing_key))
            .to_bytes(),
    )
}

fn hex_array<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], CheckpointError> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(CheckpointError::BadHex { field, len: N })
}

/// Checks a signed checkpoint for the KBS `kbs_public_key` (pinned) whose administrator's public
/// key is `admin`: the vouch binds the signing key to that KBS, and the signature verifies.
pub fn verify_checkpoint<'a>(
    signed: &'a SignedCheckpoint,
    admin: &[u8; 32],
    kbs_public_key: &[u8; 32],
) -> Result<&'a Checkpoint, CheckpointError> {
    let cp = &signed.checkpoint;
    if &cp.kbs_public_key != kbs_public_key {
        return Err(CheckpointError::WrongKbs {
            found: hex::encode(cp.kbs_public_key),
            expected: hex::encode(kbs_public_key),
        });
    }
    let vouch = signed
        .admin_signature
        .as_deref()
        .ok_or(CheckpointError::NotVouched)?;
    let vouch: [u8; 64] = hex_array(vouch, "admin_signature")?;
    let bad_vouch = || CheckpointError::BadVouch(hex::encode(cp.signing_key));
    VerifyingKey::from_bytes(admin)
        .map_err(|_| bad_vouch())?
        .verify_strict(
            &vouch_message(&cp.kbs_public_key, &cp.signing_key),
            &Signature::from_bytes(&vouch),
        )
        .map_err(|_| bad_vouch())?;
    let signature: [u8; 64] = hex_array(&signed.signature, "signature")?;
    VerifyingKey::from_bytes(&cp.signing_key)
        .map_err(|_| CheckpointError::BadSignature)?
        .verify_strict(&cp.signed_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| CheckpointError::BadSignature)?;
    Ok(cp)
}

/// The leaf of an audit event: its fields in order, each with its length (see the module docs).
pub fn audit_leaf(e: &AuditEvent) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, s: &str) {
        // A field over 4 GiB cannot come from the store (SQLite's limit is 1 GB); saturating keeps
        // this total and still unambiguous for every field that can exist.
        out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn opt(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                field(out, s);
            }
        }
    }
    let mut out = LEAF_DOMAIN.to_vec();
    out.extend_from_slice(&e.seq.to_be_bytes());
    out.extend_from_slice(&e.time.to_be_bytes());
    field(&mut out, &e.kind);
    opt(&mut out, e.key_id.as_deref());
    opt(&mut out, e.claims_digest.as_deref());
    field(&mut out, &e.verdict);
    opt(&mut out, e.measurement.as_deref());
    field(&mut out, &e.detail);
    field(&mut out, &e.hash);
    out
}

/// The leaf hashes of `events`, in order.
pub fn audit_leaves(events: &[AuditEvent]) -> Vec<Hash> {
    events
        .iter()
        .map(|e| merkle::leaf_hash(&audit_leaf(e)))
        .collect()
}

/// Checks that the first `cp.size` of `events` are the log `cp` signs (its root recomputed).
/// Later events, appended since, are not covered.
pub fn verify_entries(cp: &Checkpoint, events: &[AuditEvent]) -> Result<(), CheckpointError> {
    let n = usize::try_from(cp.size)
        .ok()
        .filter(|&n| n <= events.len())
        .ok_or(CheckpointError::TooFewEntries {
            size: cp.size,
            entries: events.len() as u64,
        })?;
    let computed = merkle::root(&audit_leaves(&events[..n]));
    if computed != cp.root {
        return Err(CheckpointError::RootMismatch {
            size: cp.size,
            computed: hex::encode(computed),
            signed: hex::encode(cp.root),
        });
    }
    Ok(())
}

/// Checks that `new` extends `old` (both verified already): the log did not shrink, and the
/// consistency proof `proof` (RFC 9162 §2.1.4) from `old` to `new` verifies.
pub fn verify_extends(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[Hash],
) -> Result<(), CheckpointError> {
    if old.kbs_public_key != new.kbs_public_key {
        return Err(CheckpointError::WrongKbs {
            found: hex::encode(new.kbs_public_key),
            expected: hex::encode(old.kbs_public_key),
        });
    }
    if new.size < old.size {
        return Err(CheckpointError::RolledBack {
            old_size: old.size,
            new_size: new.size,
        });
    }
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, proof).map_err(|source| {
        CheckpointError::Inconsistent {
            old_size: old.size,
            new_size: new.size,
            source,
        }
    })
}

/// An inclusion proof of one event in the log a checkpoint signs:
/// `GET /kbs/v1/admin/audit/inclusion/{index}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub checkpoint: SignedCheckpoint,
    /// Leaf index: the event's `seq` − 1.
    pub index: u64,
    pub event: AuditEvent,
    /// The audit path, innermost first (RFC 9162 §2.1.3.1), hex.
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Checks the proof against its checkpoint (which the caller has verified with
    /// [`verify_checkpoint`]).
    pub fn verify(&self) -> Result<(), CheckpointError> {
        if self.event.seq.checked_sub(1) != i64::try_from(self.index).ok() {
            return Err(CheckpointError::WrongSeq {
                seq: self.event.seq,
                index: self.index,
            });
        }
        let cp = &self.checkpoint.checkpoint;
        merkle::verify_inclusion(
            self.index,
            cp.size,
            &merkle::leaf_hash(&audit_leaf(&self.event)),
            &self.path,
            &cp.root,
        )
        .map_err(CheckpointError::Inclusion)
    }
}

/// A consistency proof from an older size to the log a checkpoint signs:
/// `GET /kbs/v1/admin/audit/consistency/{old_size}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub checkpoint: SignedCheckpoint,
    pub old_size: u64,
    /// RFC 9162 §2.1.4.1's PROOF(old_size, D[size]), hex.
    #[serde(with = "hex_hashes")]
    pub path: Vec<Hash>,
}

mod hex_hashes {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| D::Error::custom("expected 32 bytes of hex"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, detail: &str) -> AuditEvent {
        AuditEvent {
            seq,
            time: 1_800_000_000 + seq as u64,
            kind: "key_released".into(),
            key_id: Some("k".into()),
            claims_digest: None,
            verdict: "accepted".into(),
            measurement: None,
            detail: detail.into(),
            hash: format!("{seq:064x}"),
        }
    }

    fn log(n: i64) -> Vec<AuditEvent> {
        (1..=n).map(|i| event(i, "d")).collect()
    }

    const KBS: [u8; 32] = [5; 32];

    fn setup() -> (SigningKey, AuditSigningKey) {
        (
            SigningKey::from_bytes(&[3; 32]),
            AuditSigningKey::derive(&[7; 32]),
        )
    }

    fn signed(
        admin: &SigningKey,
        key: &AuditSigningKey,
        events: &[AuditEvent],
    ) -> SignedCheckpoint {
        let vouch = vouch_audit_key(admin, &KBS, &key.public_key());
        key.sign(&audit_leaves(events), 99, KBS, Some(vouch))
    }

    #[test]
    fn the_signing_key_is_derived_and_distinct() {
        let a = AuditSigningKey::derive(&[7; 32]);
        assert_eq!(
            a.public_key(),
            AuditSigningKey::derive(&[7; 32]).public_key()
        );
        assert_ne!(
            a.public_key(),
            AuditSigningKey::derive(&[8; 32]).public_key()
        );
        // Not the seed used as an Ed25519 seed directly.
        assert_ne!(
            a.public_key(),
            SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes()
        );
        assert!(!format!("{a:?}").contains(&hex::encode(a.0.to_bytes())));
    }

    #[test]
    fn a_checkpoint_verifies_for_its_kbs_and_administrator_only() {
        let (admin, key) = setup();
        let events = log(5);
        let s = signed(&admin, &key, &events);
        let pk = admin.verifying_key().to_bytes();
        let cp = verify_checkpoint(&s, &pk, &KBS).unwrap();
        verify_entries(cp, &events).unwrap();
        // Another pinned KBS, another administrator: refused.
        assert!(matches!(
            verify_checkpoint(&s, &pk, &[6; 32]),
            Err(CheckpointError::WrongKbs { .. })
        ));
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes();
        assert!(matches!(
            verify_checkpoint(&s, &other, &KBS),
            Err(CheckpointError::BadVouch(_))
        ));
        // A host's own signing key, vouched for by nobody (or by itself): refused.
        let host = AuditSigningKey::derive(&[9; 32]);
        let forged = host.sign(&audit_leaves(&events), 99, KBS, s.admin_signature.clone());
        assert!(matches!(
            verify_checkpoint(&forged, &pk, &KBS),
            Err(CheckpointError::BadVouch(_))
        ));
        let unvouched = SignedCheckpoint {
            admin_signature: None,
            ..s.clone()
        };
        assert_eq!(
            verify_checkpoint(&unvouched, &pk, &KBS),
            Err(CheckpointError::NotVouched)
        );
        // Any signed field changed: refused.
        for change in [
            |c: &mut Checkpoint| c.size += 1,
            |c: &mut Checkpoint| c.root[0] ^= 1,
            |c: &mut Checkpoint| c.time += 1,
        ] {
            let mut bad = s.clone();
            change(&mut bad.checkpoint);
            assert_eq!(
                verify_checkpoint(&bad, &pk, &KBS),
                Err(CheckpointError::BadSignature)
            );
        }
        // Entries that are not the signed log: an edited one, or too few.
        let mut edited = events.clone();
        edited[2].detail = "edited".into();
        assert!(matches!(
            verify_entries(cp, &edited),
            Err(CheckpointError::RootMismatch { .. })
        ));
        assert!(matches!(
            verify_entries(cp, &events[..4]),
            Err(CheckpointError::TooFewEntries { .. })
        ));
        // More entries than the checkpoint covers: the first `size` are checked.
        verify_entries(cp, &log(7)).unwrap();
    }

    #[test]
    fn every_field_of_an_event_is_in_its_leaf() {
        let e = event(1, "d");
        let base = audit_leaf(&e);
        let changes: Vec<fn(&mut AuditEvent)> = vec![
            |e| e.seq = 2,
            |e| e.time += 1,
            |e| e.kind.push('x'),
            |e| e.key_id = None,
            |e| e.claims_digest = Some(String::new()),
            |e| e.verdict.push('x'),
            |e| e.measurement = Some("m".into()),
            |e| e.detail.push('x'),
            |e| e.hash.push('0'),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut c = e.clone();
            change(&mut c);
            assert_ne!(audit_leaf(&c), base, "field change {i} not in the leaf");
        }
        // Lengths keep field boundaries: moving a character from one field to the next changes
        // the leaf.
        let mut a = e.clone();
        a.kind = "ab".into();
        a.verdict = "c".into();
        let mut b = e.clone();
        b.kind = "a".into();
        b.verdict = "bc".into();
        assert_ne!(audit_leaf(&a), audit_leaf(&b));
    }

    #[test]
    fn rollback_and_rewrite_are_detected() {
        let (admin, key) = setup();
        let old = signed(&admin, &key, &log(4)).checkpoint;
        let grown = log(9);
        let leaves = audit_leaves(&grown);
        let new = signed(&admin, &key, &grown).checkpoint;
        let proof = merkle::consistency_proof(4, 9, &leaves).unwrap();
        verify_extends(&old, &new, &proof).unwrap();
        // Rolled back to three events.
        let back = signed(&admin, &key, &log(3)).checkpoint;
        assert_eq!(
            verify_extends(&old, &back, &[]),
            Err(CheckpointError::RolledBack {
                old_size: 4,
                new_size: 3
            })
        );
        // Event 2 rewritten (its chain recomputed, as a writer of the store could).
        let mut rewritten = grown.clone();
        rewritten[1] = event(2, "rewritten");
        let leaves = audit_leaves(&rewritten);
        let new = signed(&admin, &key, &rewritten).checkpoint;
        let proof = merkle::consistency_proof(4, 9, &leaves).unwrap();
        assert!(matches!(
            verify_extends(&old, &new, &proof),
            Err(CheckpointError::Inconsistent { .. })
        ));
        // Same size, other content.
        let same = signed(&admin, &key, &rewritten[..4]).checkpoint;
        assert!(matches!(
            verify_extends(&old, &same, &[]),
            Err(CheckpointError::Inconsistent { .. })
        ));
    }

    #[test]
    fn inclusion_proofs_verify_and_name_their_event() {
        let (admin, key) = setup();
        let events = log(6);
        let leaves = audit_leaves(&events);
        let s = signed(&admin, &key, &events);
        for i in 0..6u64 {
            let p = InclusionProof {
                checkpoint: s.clone(),
                index: i,
                event: events[i as usize].clone(),
                path: merkle::inclusion_proof(i, 6, &leaves).unwrap(),
            };
            let json = serde_json::to_string(&p).unwrap();
            let p: InclusionProof = serde_json::from_str(&json).unwrap();
            p.verify().unwrap();
            let mut edited = p.clone();
            edited.event.verdict = "rejected".into();
            assert!(matches!(
                edited.verify(),
                Err(CheckpointError::Inclusion(_))
            ));
            let mut moved = p.clone();
            moved.index = (i + 1) % 6;
            assert!(matches!(
                moved.verify(),
                Err(CheckpointError::WrongSeq { .. })
            ));
        }
    }

    #[test]
    fn a_saved_checkpoint_round_trips_as_json() {
        let (admin, key) = setup();
        let s = signed(&admin, &key, &log(3));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&hex::encode(s.checkpoint.root)));
        let back: SignedCheckpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ConsistencyProof>(
            r#"{"checkpoint":{"checkpoint":{"size":1,"root":"00","time":0,"kbs_public_key":"00","signing_key":"00"},"signature":""},"old_size":0,"path":["zz"]}"#
        )
        .is_err());
    }
}
