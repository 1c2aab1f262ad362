//! Cordon's key broker (KBS): releases each data encryption key only to a workload whose verified
//! evidence its release policy accepts, and records every release and denial.
//!
//! Flow: `POST /kbs/v1/challenge` (single-use nonce, short TTL) → `POST /kbs/v1/attest` (evidence
//! whose report_data binds the nonce and the runtime's keys; the KBS verifies, appraises each requested
//! key's policy, and returns each accepted DEK sealed with HPKE to the attested key). Admin endpoints
//! (`/kbs/v1/admin/…`) need the admin token, which is stored only as a SHA-256 hash.

pub mod challenge;
pub mod custody;
mod error;
pub mod identity;
#[cfg(unix)]
mod private_files;
#[doc(hidden)]
pub mod testing;
#[cfg(not(unix))]
mod private_files {
    //! File modes are Unix permissions; elsewhere the directory is only created.
    pub(crate) fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    pub(crate) fn private_db(_: &std::path::Path) {}
    pub(crate) fn tighten_side_files(_: &std::path::Path) {}
    pub(crate) fn check_private(_: &std::path::Path, _: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
    pub(crate) fn create_secret_file(
        path: &std::path::Path,
    ) -> std::io::Result<Option<std::fs::File>> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }
    pub(crate) fn read_secret_file(
        path: &std::path::Path,
    ) -> std::io::Result<zeroize::Zeroizing<Vec<u8>>> {
        std::fs::read(path).map(zeroize::Zeroizing::new)
    }
    pub(crate) fn sync_parent(_: &std::path::Path) {}
}
mod keystore;
mod pg_store;
mod server;
mod store;

pub use custody::{Kek, KekSpec, Keks};
pub use error::KbsError;
pub use keystore::{DatasetQuota, KeyStore};
pub use pg_store::PgStore;
pub use server::{Clock, Kbs, KbsConfig, KbsLimits};
pub use store::{
    audit_hash, verify_audit_chain, AttestationCommit, AttestationOutcome, JobRuntime, KeyKind,
    NewAuditEvent, NonceShare, PendingEvent, RequestNonceUse, Share, Store, StoreError, StoredKey,
    Synchronous,
};
