//! Test helpers: a temporary directory removed on drop, and the attestation fixtures.

use std::path::{Path, PathBuf};

/// A real SEV-SNP attestation report (1184 bytes), from Trustee's test data.
pub const SNP_REPORT: &[u8] =
    include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin");
/// A real TDX DCAP quote (v4).
pub const TDX_QUOTE: &[u8] = include_bytes!("../../../testdata/attestation/tdx/tdx_quote");
/// A real SGX DCAP quote (v3).
pub const SGX_QUOTE: &[u8] = include_bytes!("../../../testdata/attestation/sgx/sgx_quote");

/// A fresh directory under the system temp dir, removed with its contents on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = std::env::temp_dir().join(format!(
            "cordon-tee-{name}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Creates `rel` (and its parents) as a directory under this one and returns its path.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// Writes `data` to `rel` (creating parents) and returns its path.
    pub fn file(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}
