//! Choosing a hardware evidence provider by what the system offers.

use crate::configfs::{ReportFs, StdFs};
use crate::{ConfigFsTsm, EvidenceProvider, GramineSgx, SevGuest, TeeError};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One place [`detect`] looked, and why it was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub path: PathBuf,
    /// `absent`, or the error that made the interface unusable.
    pub outcome: String,
}

impl Probe {
    pub(crate) fn list(probes: &[Probe]) -> String {
        let items: Vec<String> = probes.iter().map(ToString::to_string).collect();
        items.join("; ")
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.path.display(), self.outcome)
    }
}

/// The first hardware evidence interface present under `root` (`/` on a real system), in this
/// order:
/// 1. configfs-tsm, `sys/kernel/config/tsm/report` ([`ConfigFsTsm`], SNP or TDX by its provider);
/// 2. `dev/sev-guest` ([`SevGuest`], SNP);
/// 3. Gramine's `dev/attestation/quote` ([`GramineSgx`], SGX).
///
/// configfs-tsm counts only if a report directory can be created and names a known provider;
/// otherwise the next interface is tried. The simulated TEE is never chosen here: construct
/// [`crate::SimTee`] explicitly. When nothing is usable, [`TeeError::NoTee`] lists every probe.
pub fn detect(root: &Path) -> Result<Box<dyn EvidenceProvider>, TeeError> {
    detect_with(root, Arc::new(StdFs))
}

pub(crate) fn detect_with(
    root: &Path,
    fs: Arc<dyn ReportFs>,
) -> Result<Box<dyn EvidenceProvider>, TeeError> {
    let mut probed = Vec::new();

    let tsm = root.join("sys/kernel/config/tsm/report");
    if let Some(probe) = absent(&tsm) {
        probed.push(probe);
    } else {
        match ConfigFsTsm::open_with(tsm.clone(), fs) {
            Ok(p) => return Ok(Box::new(p)),
            Err(e) => probed.push(Probe {
                path: tsm,
                outcome: e.to_string(),
            }),
        }
    }

    let sev = root.join("dev/sev-guest");
    match absent(&sev) {
        None => return Ok(Box::new(SevGuest::new(sev))),
        Some(probe) => probed.push(probe),
    }

    let attestation = root.join("dev/attestation");
    match absent(&attestation.join("quote")) {
        None => return Ok(Box::new(GramineSgx::new(attestation))),
        Some(probe) => probed.push(probe),
    }

    Err(TeeError::NoTee { probed })
}

/// `None` if `path` exists, else the probe saying why not.
fn absent(path: &Path) -> Option<Probe> {
    let outcome = match path.try_exists() {
        Ok(true) => return None,
        Ok(false) => "absent".to_string(),
        Err(e) => format!("cannot check: {e}"),
    };
    Some(Probe {
        path: path.to_path_buf(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configfs::fake::FakeTsm;
    use crate::testutil::{TestDir, SGX_QUOTE, SNP_REPORT, TDX_QUOTE};
    use cordon_attest::Platform;

    const TSM: &str = "sys/kernel/config/tsm/report";

    /// A root with configfs-tsm's directory, served by the kernel model.
    fn with_configfs(tmp: &TestDir, provider: &'static str, report: &'static [u8]) -> Arc<FakeTsm> {
        Arc::new(FakeTsm::new(&tmp.mkdir(TSM), provider, report))
    }

    #[test]
    fn nothing_present_lists_every_probe() {
        let tmp = TestDir::new("detect-none");
        let err = detect(tmp.path()).err().unwrap();
        let TeeError::NoTee { probed } = &err else {
            panic!("unexpected error {err}");
        };
        let paths: Vec<PathBuf> = probed.iter().map(|p| p.path.clone()).collect();
        assert_eq!(
            paths,
            [
                tmp.path().join(TSM),
                tmp.path().join("dev/sev-guest"),
                tmp.path().join("dev/attestation/quote"),
            ]
        );
        assert!(probed.iter().all(|p| p.outcome == "absent"));
        let msg = err.to_string();
        assert!(msg.contains("dev/sev-guest (absent)"), "{msg}");
        assert!(msg.contains("never auto-detected"), "{msg}");
    }

    #[test]
    fn configfs_tsm_is_preferred_and_gives_its_provider_platform() {
        // tdx_guest behind configfs next to a /dev/sev-guest: TDX proves configfs was chosen.
        let tmp = TestDir::new("detect-tsm");
        let fake = with_configfs(&tmp, "tdx_guest", TDX_QUOTE);
        tmp.file("dev/sev-guest", b"");
        tmp.file("dev/attestation/quote", SGX_QUOTE);
        let tee = detect_with(tmp.path(), fake).unwrap();
        assert_eq!(tee.platform(), Platform::Tdx);
        assert_eq!(tee.evidence(&[2; 64]).unwrap(), TDX_QUOTE);
    }

    #[test]
    fn configfs_tsm_snp() {
        let tmp = TestDir::new("detect-tsm-snp");
        let fake = with_configfs(&tmp, "sev_guest", SNP_REPORT);
        let tee = detect_with(tmp.path(), fake).unwrap();
        assert_eq!(tee.platform(), Platform::Snp);
        assert_eq!(tee.evidence(&[2; 64]).unwrap(), SNP_REPORT);
    }

    #[test]
    fn sev_guest_device_is_next() {
        let tmp = TestDir::new("detect-sev");
        let dev = tmp.file("dev/sev-guest", b"");
        tmp.file("dev/attestation/quote", SGX_QUOTE);
        let tee = detect(tmp.path()).unwrap();
        assert_eq!(tee.platform(), Platform::Snp);
        // A regular file is no sev-guest driver: the error names it.
        let err = tee.evidence(&[0; 64]).unwrap_err();
        assert!(err.to_string().contains(&*dev.to_string_lossy()), "{err}");
    }

    #[test]
    fn unusable_configfs_falls_back_to_sev_guest() {
        // A plain directory where configfs-tsm should be: no provider appears after mkdir.
        let tmp = TestDir::new("detect-fallback");
        tmp.mkdir(TSM);
        tmp.file("dev/sev-guest", b"");
        let tee = detect(tmp.path()).unwrap();
        assert_eq!(tee.platform(), Platform::Snp);
        let tsm = tmp.path().join(TSM);
        assert_eq!(
            std::fs::read_dir(&tsm).unwrap().count(),
            0,
            "probe cleaned up"
        );

        std::fs::remove_file(tmp.path().join("dev/sev-guest")).unwrap();
        let err = detect(tmp.path()).err().unwrap();
        let TeeError::NoTee { probed } = &err else {
            panic!("unexpected error {err}");
        };
        assert_eq!(probed[0].path, tsm);
        assert!(probed[0].outcome.contains("provider"), "{err}");
    }

    #[test]
    fn gramine_is_last() {
        let tmp = TestDir::new("detect-gramine");
        tmp.file("dev/attestation/quote", SGX_QUOTE);
        tmp.file("dev/attestation/user_report_data", &[0; 64]);
        let tee = detect(tmp.path()).unwrap();
        assert_eq!(tee.platform(), Platform::Sgx);
        assert_eq!(tee.evidence(&[4; 64]).unwrap(), SGX_QUOTE);
        let written = std::fs::read(tmp.path().join("dev/attestation/user_report_data")).unwrap();
        assert_eq!(written, [4; 64]);
    }
}
