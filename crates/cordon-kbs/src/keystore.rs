//! The store interface the key broker runs on, and its two backends: SQLite ([`Store`], one KBS
//! process with its data directory) and PostgreSQL ([`crate::PgStore`], several KBS replicas on one
//! database).
//!
//! The trait holds exactly what [`crate::Kbs`] asks of its store; each method states what must hold
//! when several processes call it at once, which the SQLite backend gets from being the only
//! process (and the KBS's mutex), and the PostgreSQL backend from its transactions and locks.
//! Every secret is wrapped under the root KEK by both, with the same code
//! ([`crate::store::wrap_dek`], [`crate::store::unwrap_secret`]).

use crate::store::{
    AttestationCommit, AttestationOutcome, NewAuditEvent, NonceShare, RequestNonceUse,
    RetiredIdentity, Store, StoreError, StoredKey,
};
use cordon_proto::kbs::{AuditEvent, KeyInfo};
use zeroize::Zeroizing;

/// The dataset key quotas a registration is checked against, in the registration's transaction.
#[derive(Debug, Clone, Copy)]
pub struct DatasetQuota {
    /// Dataset keys one owner may hold.
    pub per_owner: u64,
    /// Dataset keys held, all owners together.
    pub max: u64,
}

impl DatasetQuota {
    /// Refuses a registration when the owner's or the KBS's quota is full; `all` and `mine` are
    /// counted without the key id being registered, so a replacement is checked like a new key.
    pub(crate) fn check(&self, owner: &[u8; 32], all: u64, mine: u64) -> Result<(), StoreError> {
        if mine >= self.per_owner {
            return Err(StoreError::Quota(format!(
                "owner {} holds {mine} dataset keys, the most one owner may hold",
                hex::encode(owner)
            )));
        }
        if all >= self.max {
            return Err(StoreError::Quota(format!(
                "this KBS holds {all} dataset keys, its limit"
            )));
        }
        Ok(())
    }
}

/// What the key broker stores, whichever database holds it. Object-safe: the KBS holds a
/// `Box<dyn KeyStore>` and calls it from blocking threads only (both backends block).
///
/// Methods take `&mut self`: a PostgreSQL client needs it for every query, and the KBS holds the
/// store under a mutex anyway.
pub trait KeyStore: Send {
    /// The seed of the KBS's HPKE identity key, if one was made (unwrapped).
    fn identity_seed(&mut self) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError>;
    /// Stores the identity seed unless one exists, and returns the stored one: of two replicas
    /// starting at once on an empty database, both end up with the one seed that was stored first.
    fn init_identity_seed(
        &mut self,
        seed: &[u8; 32],
        now: u64,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError>;
    /// The SHA-256 of the admin token (stores from before signed admin requests hold only this).
    fn admin_token_hash(&mut self) -> Result<Option<[u8; 32]>, StoreError>;
    /// The administrator's Ed25519 public key, once one is set.
    fn admin_public_key(&mut self) -> Result<Option<[u8; 32]>, StoreError>;
    /// The administrator's signature over the identity key, once an administrator exists.
    fn identity_signature(&mut self) -> Result<Option<String>, StoreError>;
    /// Records the administrator (replacing the token-hash-only row of an old store).
    fn set_admin(
        &mut self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        identity_signature: &str,
    ) -> Result<(), StoreError>;
    /// Records a signed request's nonce once, within its share's quota (see
    /// [`Store::use_request_nonce`]); the replay check, the quota count, the pruning and the nonce
    /// floor hold together across processes.
    fn use_request_nonce(
        &mut self,
        nonce: &[u8],
        time: u64,
        keep: u64,
        now: u64,
        share: NonceShare,
    ) -> Result<RequestNonceUse, StoreError>;
    /// Commits a batch of attestations in one transaction, each with its challenge nonce spent
    /// ([`Store::commit_attestations`]). Across processes: a nonce is spent once, by any of
    /// them; a release commits only if no revocation of its key committed before it; the spent
    /// nonces' floor only goes up, and a nonce is never pruned while one below the floor could
    /// still be taken for unspent.
    fn commit_attestations(
        &mut self,
        batch: &[AttestationCommit],
        now: u64,
    ) -> Result<Vec<AttestationOutcome>, StoreError>;
    /// Another connection to the same store, used only for key lookups ([`KeyStore::get_key`])
    /// so that they do not wait behind this connection's commits.
    fn reader(&self) -> Result<Box<dyn KeyStore>, StoreError>;
    /// A registered key, its DEK unwrapped (empty when revoked).
    fn get_key(&mut self, key_id: &str) -> Result<Option<StoredKey>, StoreError>;
    /// Several keys at once ([`KeyStore::get_key`] for each, in order): the KBS groups the
    /// lookups of concurrent releases. The outer error is the lookup's; an inner one is that
    /// key's (a stored entry that does not unwrap).
    fn get_keys(
        &mut self,
        key_ids: &[String],
    ) -> Result<Vec<Result<Option<StoredKey>, StoreError>>, StoreError> {
        Ok(key_ids.iter().map(|id| self.get_key(id)).collect())
    }
    /// Every key with its owner, policy and release count; never a DEK.
    fn key_listing(&mut self) -> Result<Vec<KeyInfo>, StoreError>;
    /// Registers (or replaces) an admin key with its audit event, in one transaction.
    fn put_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError>;
    /// Registers (or replaces) `owner`'s dataset key with its audit event, if the quotas allow:
    /// the count and the write are one step, so concurrent registrations cannot overrun them.
    fn put_dataset_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        owner: &[u8; 32],
        quota: DatasetQuota,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError>;
    /// Stores a job's output key, once per (job, runtime), with its audit event.
    fn put_output_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        job_hash: &[u8; 32],
        runtime: &[u8; 32],
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError>;
    /// Revokes a key with its audit event, in one transaction.
    fn revoke_key_audited(
        &mut self,
        key_id: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError>;
    /// `None` when no runtime with this key attested for the job; else the job's serving policy.
    fn job_runtime(
        &mut self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> Result<Option<Option<String>>, StoreError>;
    /// Appends an event to the one hash chain: appends from every process are serialised.
    fn append_audit(&mut self, event: &NewAuditEvent<'_>) -> Result<AuditEvent, StoreError>;

    /// The identity retired by the latest rotation and the end of its overlap.
    fn previous_identity_seed(&mut self) -> Result<Option<RetiredIdentity>, StoreError>;

    /// Deletes the retired identity once its overlap has ended.
    fn forget_expired_identity(&mut self, now: u64) -> Result<bool, StoreError>;

    /// The administrator's vouch for the audit signing key.
    fn audit_key_vouch(&mut self) -> Result<Option<String>, StoreError>;

    /// Re-wraps every secret not under the current KEK, `batch` rows per transaction
    /// (`cordon kbs rotate-kek`; see [`Store::rewrap_all`]); `progress` is told the running count.
    fn rewrap_all(
        &mut self,
        batch: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError>;

    /// How many secrets are wrapped under each KEK id.
    fn kek_usage(&mut self) -> Result<Vec<(Option<String>, u64)>, StoreError>;

    /// Makes `new_seed` the identity, the one it replaces accepted until `accept_until`
    /// (`cordon kbs rotate-identity`; see [`Store::rotate_identity`]).
    fn rotate_identity(
        &mut self,
        new_seed: &[u8; 32],
        admin_signature: &str,
        audit_vouch: &str,
        now: u64,
        accept_until: u64,
    ) -> Result<(), StoreError>;

    fn set_audit_key_vouch(&mut self, signature: &str, now: u64) -> Result<(), StoreError>;
    /// The whole audit log, in order.
    fn audit_events(&mut self) -> Result<Vec<AuditEvent>, StoreError>;
}

/// The SQLite store, unchanged: one process owns its data directory, and the KBS's mutex
/// serialises every call, so each check-then-write below is atomic as it stands.
impl KeyStore for Store {
    fn identity_seed(&mut self) -> Result<Option<Zeroizing<[u8; 32]>>, StoreError> {
        Store::identity_seed(self)
    }
    fn init_identity_seed(
        &mut self,
        seed: &[u8; 32],
        now: u64,
    ) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        Store::init_identity_seed(self, seed, now)
    }
    fn admin_token_hash(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        Store::admin_token_hash(self)
    }
    fn admin_public_key(&mut self) -> Result<Option<[u8; 32]>, StoreError> {
        Store::admin_public_key(self)
    }
    fn identity_signature(&mut self) -> Result<Option<String>, StoreError> {
        Store::identity_signature(self)
    }
    fn set_admin(
        &mut self,
        token_hash: &[u8; 32],
        public_key: &[u8; 32],
        identity_signature: &str,
    ) -> Result<(), StoreError> {
        Store::set_admin(self, token_hash, public_key, identity_signature)
    }
    fn use_request_nonce(
        &mut self,
        nonce: &[u8],
        time: u64,
        keep: u64,
        now: u64,
        share: NonceShare,
    ) -> Result<RequestNonceUse, StoreError> {
        Store::use_request_nonce(self, nonce, time, keep, now, share)
    }
    fn commit_attestations(
        &mut self,
        batch: &[AttestationCommit],
        now: u64,
    ) -> Result<Vec<AttestationOutcome>, StoreError> {
        Store::commit_attestations(self, batch, now)
    }
    fn reader(&self) -> Result<Box<dyn KeyStore>, StoreError> {
        Ok(Box::new(Store::reader(self)?))
    }
    fn get_key(&mut self, key_id: &str) -> Result<Option<StoredKey>, StoreError> {
        Store::get_key(self, key_id)
    }
    fn key_listing(&mut self) -> Result<Vec<KeyInfo>, StoreError> {
        Store::key_listing(self)
    }
    fn put_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        Store::put_key_audited(self, key_id, dek, policy, event)
    }
    fn put_dataset_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        owner: &[u8; 32],
        quota: DatasetQuota,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        // Counted without this key id, a replacement is checked like a new key.
        let (all, mine) = self.dataset_key_counts(owner, key_id)?;
        quota.check(owner, all, mine)?;
        Store::put_dataset_key_audited(self, key_id, dek, policy, owner, event)
    }
    fn put_output_key_audited(
        &mut self,
        key_id: &str,
        dek: &[u8],
        policy: &str,
        job_hash: &[u8; 32],
        runtime: &[u8; 32],
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        Store::put_output_key_audited(self, key_id, dek, policy, job_hash, runtime, event)
    }
    fn revoke_key_audited(
        &mut self,
        key_id: &str,
        event: &NewAuditEvent<'_>,
    ) -> Result<AuditEvent, StoreError> {
        Store::revoke_key_audited(self, key_id, event)
    }
    fn job_runtime(
        &mut self,
        job_hash: &[u8; 32],
        signing_key: &[u8; 32],
    ) -> Result<Option<Option<String>>, StoreError> {
        Store::job_runtime(self, job_hash, signing_key)
    }
    fn previous_identity_seed(&mut self) -> Result<Option<RetiredIdentity>, StoreError> {
        Store::previous_identity_seed(self)
    }
    fn forget_expired_identity(&mut self, now: u64) -> Result<bool, StoreError> {
        Store::forget_expired_identity(self, now)
    }
    fn audit_key_vouch(&mut self) -> Result<Option<String>, StoreError> {
        Store::audit_key_vouch(self)
    }
    fn rewrap_all(
        &mut self,
        batch: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, StoreError> {
        Store::rewrap_all(self, batch, progress)
    }
    fn kek_usage(&mut self) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        Store::kek_usage(self)
    }
    fn rotate_identity(
        &mut self,
        new_seed: &[u8; 32],
        admin_signature: &str,
        audit_vouch: &str,
        now: u64,
        accept_until: u64,
    ) -> Result<(), StoreError> {
        Store::rotate_identity(
            self,
            new_seed,
            admin_signature,
            audit_vouch,
            now,
            accept_until,
        )
    }
    fn set_audit_key_vouch(&mut self, signature: &str, now: u64) -> Result<(), StoreError> {
        Store::set_audit_key_vouch(self, signature, now)
    }
    fn append_audit(&mut self, event: &NewAuditEvent<'_>) -> Result<AuditEvent, StoreError> {
        Store::append_audit(self, event)
    }
    fn audit_events(&mut self) -> Result<Vec<AuditEvent>, StoreError> {
        Store::audit_events(self)
    }
}
