//! SGX quotes from Gramine's `/dev/attestation` pseudo-files (Gramine documentation, "Attestation
//! and Secret Provisioning", low-level `/dev/attestation` interface): write the 64 bytes of report
//! data to `user_report_data`, then read `quote`, which Gramine produces for that report data
//! (a DCAP quote when the manifest sets `sgx.remote_attestation = "dcap"`).

use crate::{EvidenceProvider, TeeError};
use cordon_attest::Platform;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// SGX evidence from Gramine's `/dev/attestation`: the quote Gramine produces for the report data
/// written to `user_report_data`.
#[derive(Debug)]
pub struct GramineSgx {
    dir: PathBuf,
    // The two pseudo-files are one piece of state per enclave: serialize our own writers.
    lock: Mutex<()>,
}

impl GramineSgx {
    /// Where Gramine mounts its attestation pseudo-files.
    pub const DEFAULT_DIR: &'static str = "/dev/attestation";

    /// Uses the pseudo-files in `dir` ([`Self::DEFAULT_DIR`] inside a Gramine enclave).
    pub fn new(dir: impl Into<PathBuf>) -> GramineSgx {
        GramineSgx {
            dir: dir.into(),
            lock: Mutex::new(()),
        }
    }

    /// The directory this provider uses.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl EvidenceProvider for GramineSgx {
    fn platform(&self) -> Platform {
        Platform::Sgx
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let urd = self.dir.join("user_report_data");
        std::fs::write(&urd, report_data).map_err(|source| TeeError::Access {
            path: urd,
            op: "write",
            source,
        })?;
        let path = self.dir.join("quote");
        let quote = std::fs::read(&path).map_err(|source| TeeError::Access {
            path: path.clone(),
            op: "read",
            source,
        })?;
        if quote.is_empty() {
            return Err(TeeError::WrongLength {
                path,
                platform: Platform::Sgx,
                expected: 1,
                got: 0,
            });
        }
        Ok(quote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, SGX_QUOTE};

    #[test]
    fn writes_user_report_data_then_reads_quote() {
        // A plain directory stands in for Gramine's pseudo-files; it cannot show that the quote
        // was made for the report data, only that the provider writes it first and returns `quote`.
        let tmp = TestDir::new("gramine");
        tmp.file("quote", SGX_QUOTE);
        let tee = GramineSgx::new(tmp.path());
        assert_eq!(tee.platform(), Platform::Sgx);
        assert_eq!(tee.evidence(&[9; 64]).unwrap(), SGX_QUOTE);
        let written = std::fs::read(tmp.path().join("user_report_data")).unwrap();
        assert_eq!(written, [9; 64]);
    }

    #[test]
    fn missing_interface_is_named() {
        let tmp = TestDir::new("gramine-missing");
        let dir = tmp.path().join("dev/attestation");
        let err = GramineSgx::new(&dir).evidence(&[0; 64]).unwrap_err();
        assert!(
            matches!(&err, TeeError::Access { op: "write", path, .. } if path == &dir.join("user_report_data")),
            "{err}"
        );
        tmp.mkdir("dev/attestation");
        let err = GramineSgx::new(&dir).evidence(&[0; 64]).unwrap_err();
        assert!(
            matches!(&err, TeeError::Access { op: "read", path, .. } if path == &dir.join("quote")),
            "{err}"
        );
    }

    #[test]
    fn empty_quote_is_rejected() {
        let tmp = TestDir::new("gramine-empty");
        tmp.file("quote", b"");
        let err = GramineSgx::new(tmp.path()).evidence(&[0; 64]).unwrap_err();
        assert!(matches!(err, TeeError::WrongLength { got: 0, .. }), "{err}");
    }
}
