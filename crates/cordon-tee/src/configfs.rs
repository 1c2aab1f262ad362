//! Linux configfs-tsm: the kernel's vendor-neutral report interface
//! (`Documentation/ABI/testing/configfs-tsm`, kernel 6.7 and later).
//!
//! A report is a directory under `/sys/kernel/config/tsm/report`. Userspace creates it, writes up to
//! 64 bytes to `inblob` (and optionally `privlevel`), reads `outblob` (the report, generated on
//! read) and `provider` (its format: `sev_guest` or `tdx_guest`), then removes the directory. Every
//! write to an input attribute increments `generation`; the ABI document tells userspace to check it
//! before writing `inblob` and after reading `outblob` to detect another writer on the same report.
//! For `sev_guest`, `auxblob` holds the certificate table of the extended report (VCEK, ASK, ARK as
//! the host supplied them), which [`EvidenceProvider::evidence_bundle`] hands on.

use crate::cert_table::{parse_cert_table, snp_certs};
use crate::emulated::{snp::SnpTsm, tsm::EmulatedTsm, EmulatedSnp};
use crate::{EvidenceBundle, EvidenceProvider, TeeError};
use cordon_attest::Platform;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Length of an SEV-SNP attestation report (SNP ABI, ATTESTATION_REPORT).
pub(crate) const SNP_REPORT_LEN: usize = 1184;

/// The file operations the provider performs on configfs. Production uses [`StdFs`]; tests use a
/// model of the kernel's behaviour, because a plain directory does not create attribute files on
/// `mkdir` or regenerate `outblob` on write as configfs does.
pub(crate) trait ReportFs: Send + Sync {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
}

/// The real file system.
pub(crate) struct StdFs;

impl ReportFs for StdFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        // configfs applies a binary attribute's write when the file is closed, which this does.
        std::fs::write(path, data)
    }
}

/// Evidence from Linux configfs-tsm (`Documentation/ABI/testing/configfs-tsm`): a raw 1184-byte
/// SEV-SNP report when the kernel's provider is `sev_guest`, a TDX DCAP quote when it is
/// `tdx_guest`.
///
/// Each call to [`EvidenceProvider::evidence`] uses its own report directory, named
/// `cordon-<pid>-<random>`, and removes it afterwards.
pub struct ConfigFsTsm {
    base: PathBuf,
    privlevel: Option<u8>,
    platform: Platform,
    fs: Arc<dyn ReportFs>,
    /// DCAP collateral shipped with each quote: an emulated platform's own; none on a real TD.
    dcap_collateral: Option<CollateralSource>,
    emulated: bool,
}

/// Produces the DCAP collateral (JSON) shipped in an evidence bundle.
pub(crate) type CollateralSource = Arc<dyn Fn() -> Result<Vec<u8>, TeeError> + Send + Sync>;

impl ConfigFsTsm {
    /// Where the kernel mounts the report interface.
    pub const DEFAULT_BASE: &'static str = "/sys/kernel/config/tsm/report";
    /// How many times a report is attempted when `generation` shows another writer.
    pub const MAX_ATTEMPTS: u32 = 5;

    /// Opens the interface under `base` ([`Self::DEFAULT_BASE`] on a real system) and learns its
    /// platform by creating a report directory, reading `provider` and removing the directory.
    pub fn open(base: impl Into<PathBuf>) -> Result<ConfigFsTsm, TeeError> {
        ConfigFsTsm::open_with(base.into(), Arc::new(StdFs))
    }

    pub(crate) fn open_with(base: PathBuf, fs: Arc<dyn ReportFs>) -> Result<ConfigFsTsm, TeeError> {
        let dir = ReportDir::create(&*fs, &base)?;
        let platform = dir.provider()?;
        dir.remove()?;
        Ok(ConfigFsTsm {
            base,
            privlevel: None,
            platform,
            fs,
            dcap_collateral: None,
            emulated: false,
        })
    }

    /// Where the emulated interface claims to live (it is in memory; the prefix keeps error
    /// messages from naming a real path).
    pub const EMULATED_BASE: &'static str = "(emulated)/sys/kernel/config/tsm/report";

    /// configfs-tsm in front of an emulated SEV-SNP machine (tests and CI): the kernel's behaviour
    /// for the `sev_guest` provider, modelled in memory, so that evidence takes the same path
    /// through this provider as on a real guest. EMULATED, NOT hardware-backed.
    pub fn emulated_snp(emulator: EmulatedSnp) -> Result<ConfigFsTsm, TeeError> {
        let base = PathBuf::from(ConfigFsTsm::EMULATED_BASE);
        let fs = Arc::new(EmulatedTsm::new(base.clone(), SnpTsm(emulator)));
        let mut tsm = ConfigFsTsm::open_with(base, fs)?;
        tsm.emulated = true;
        Ok(tsm)
    }

    /// Marks this interface as an emulator's ([`ConfigFsTsm::is_emulated`]).
    pub(crate) fn mark_emulated(mut self) -> ConfigFsTsm {
        self.emulated = true;
        self
    }

    /// Whether this interface is an emulator's ([`ConfigFsTsm::emulated_snp`]), for tools to say
    /// EMULATED.
    pub fn is_emulated(&self) -> bool {
        self.emulated
    }

    /// Also writes `privlevel` (0..=3) for each report: the privilege level the report is requested
    /// for, e.g. the VMPL of an SNP guest running under an SVSM. Only providers that support it
    /// have the attribute; the kernel rejects levels below `privlevel_floor`.
    pub fn with_privlevel(mut self, level: u8) -> ConfigFsTsm {
        self.privlevel = Some(level);
        self
    }

    /// Ships the collateral `source` makes with every quote ([`EvidenceProvider::evidence_bundle`]).
    pub(crate) fn with_dcap_collateral(mut self, source: CollateralSource) -> ConfigFsTsm {
        self.dcap_collateral = Some(source);
        self
    }

    /// The report directory's parent this provider uses.
    pub fn base(&self) -> &Path {
        &self.base
    }
}

impl std::fmt::Debug for ConfigFsTsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFsTsm")
            .field("base", &self.base)
            .field("privlevel", &self.privlevel)
            .field("platform", &self.platform)
            .field("ships_dcap_collateral", &self.dcap_collateral.is_some())
            .field("emulated", &self.emulated)
            .finish_non_exhaustive()
    }
}

impl EvidenceProvider for ConfigFsTsm {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        self.request(report_data, false).map(|(outblob, _)| outblob)
    }

    /// The report and, for `sev_guest`, the certificates of `auxblob` (VCEK or VLEK, then ASK and
    /// ARK where the host supplied them). No `auxblob`, or an empty one, ships no certificates; a
    /// malformed table is an error naming the file.
    fn evidence_bundle(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle, TeeError> {
        let (evidence, auxblob) = self.request(report_data, self.platform == Platform::Snp)?;
        let snp_certs = match auxblob {
            Some((path, bytes)) => {
                let entries = parse_cert_table(&bytes)
                    .map_err(|source| TeeError::CertTable { path, source })?;
                snp_certs(&entries)
            }
            None => Vec::new(),
        };
        let dcap_collateral = match &self.dcap_collateral {
            Some(source) => Some(source()?),
            None => None,
        };
        Ok(EvidenceBundle {
            evidence,
            snp_certs,
            dcap_collateral,
            tdx_event_log: None,
        })
    }
}

impl ConfigFsTsm {
    /// One report: `outblob`, and with `aux` also `auxblob` (with its path) read in the same
    /// generation, `None` where the provider has no `auxblob`.
    #[allow(clippy::type_complexity)]
    fn request(
        &self,
        report_data: &[u8; 64],
        aux: bool,
    ) -> Result<(Vec<u8>, Option<(PathBuf, Vec<u8>)>), TeeError> {
        let dir = ReportDir::create(&*self.fs, &self.base)?;
        let mut last = (0, 0);
        for _ in 0..ConfigFsTsm::MAX_ATTEMPTS {
            // Our writes must account for every change of `generation` between the first read and
            // the last: any other change means another writer, and `outblob` may be theirs.
            let start = dir.generation()?;
            let mut writes = 0;
            if let Some(level) = self.privlevel {
                dir.write("privlevel", format!("{level}\n").as_bytes())?;
                writes += 1;
            }
            dir.write("inblob", report_data)?;
            writes += 1;
            let expected = start + writes;
            let before = dir.generation()?;
            if before != expected {
                last = (expected, before);
                continue;
            }
            let outblob = dir.read("outblob")?;
            let auxblob = if aux {
                let path = dir.attr("auxblob");
                match self.fs.read(&path) {
                    Ok(bytes) => Some((path, bytes)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(source) => {
                        return Err(TeeError::Access {
                            path,
                            op: "read",
                            source,
                        })
                    }
                }
            } else {
                None
            };
            let platform = dir.provider()?;
            let after = dir.generation()?;
            if after != expected {
                last = (expected, after);
                continue;
            }
            let path = dir.attr("outblob");
            if platform != self.platform {
                return Err(TeeError::Malformed {
                    path: dir.attr("provider"),
                    reason: format!("provider changed from {} to {platform}", self.platform),
                });
            }
            check_length(path, platform, outblob.len())?;
            dir.remove()?;
            return Ok((outblob, auxblob));
        }
        Err(TeeError::GenerationRace {
            path: dir.attr("generation"),
            attempts: ConfigFsTsm::MAX_ATTEMPTS,
            expected: last.0,
            found: last.1,
        })
    }
}

fn check_length(path: PathBuf, platform: Platform, got: usize) -> Result<(), TeeError> {
    let ok = match platform {
        Platform::Snp => got == SNP_REPORT_LEN,
        _ => got > 0,
    };
    if ok {
        return Ok(());
    }
    Err(TeeError::WrongLength {
        path,
        platform,
        expected: if platform == Platform::Snp {
            SNP_REPORT_LEN
        } else {
            1
        },
        got,
    })
}

/// One report directory; removed on drop if [`ReportDir::remove`] was not reached.
struct ReportDir<'a> {
    fs: &'a dyn ReportFs,
    path: PathBuf,
    removed: bool,
}

impl<'a> ReportDir<'a> {
    fn create(fs: &'a dyn ReportFs, base: &Path) -> Result<ReportDir<'a>, TeeError> {
        let name = format!(
            "cordon-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = base.join(name);
        fs.create_dir(&path).map_err(|source| TeeError::Access {
            path: path.clone(),
            op: "mkdir",
            source,
        })?;
        Ok(ReportDir {
            fs,
            path,
            removed: false,
        })
    }

    fn attr(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, TeeError> {
        let path = self.attr(name);
        self.fs.read(&path).map_err(|source| TeeError::Access {
            path,
            op: "read",
            source,
        })
    }

    fn write(&self, name: &str, data: &[u8]) -> Result<(), TeeError> {
        let path = self.attr(name);
        self.fs
            .write(&path, data)
            .map_err(|source| TeeError::Access {
                path,
                op: "write",
                source,
            })
    }

    fn text(&self, name: &str) -> Result<String, TeeError> {
        let bytes = self.read(name)?;
        String::from_utf8(bytes)
            .map(|s| s.trim().to_string())
            .map_err(|_| TeeError::Malformed {
                path: self.attr(name),
                reason: "not UTF-8 text".into(),
            })
    }

    fn generation(&self) -> Result<u64, TeeError> {
        let text = self.text("generation")?;
        text.parse().map_err(|_| TeeError::Malformed {
            path: self.attr("generation"),
            reason: format!("not a number: {text:?}"),
        })
    }

    fn provider(&self) -> Result<Platform, TeeError> {
        match self.text("provider")?.as_str() {
            "sev_guest" => Ok(Platform::Snp),
            "tdx_guest" => Ok(Platform::Tdx),
            other => Err(TeeError::UnknownProvider {
                path: self.attr("provider"),
                provider: other.to_string(),
            }),
        }
    }

    fn remove(mut self) -> Result<(), TeeError> {
        self.removed = true;
        self.fs
            .remove_dir(&self.path)
            .map_err(|source| TeeError::Access {
                path: self.path.clone(),
                op: "rmdir",
                source,
            })
    }
}

impl Drop for ReportDir<'_> {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort on an error path; the error being returned is the one that matters.
            let _ = self.fs.remove_dir(&self.path);
        }
    }
}

/// An in-memory model of the kernel side of configfs-tsm, for tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::ReportFs;
    use std::collections::BTreeMap;
    use std::io::{self, ErrorKind};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    /// What a racing writer puts in `inblob`; the fake's report for it is [`RACER_REPORT`].
    pub const RACER_INBLOB: [u8; 64] = [0xEE; 64];
    pub const RACER_REPORT: &[u8] = b"report generated for another writer's inblob";

    /// Models, per the ABI document: `mkdir` under `base` creates a report with `generation` 0;
    /// each write to `inblob` (at most 64 bytes) or `privlevel` (0..=3, `sev_guest` only) increments
    /// `generation`; `outblob` is generated on read from the current `inblob`; `provider` and
    /// `generation` are read-only; `rmdir` removes a populated report.
    ///
    /// Races: `race_on_outblob` times, another writer writes `inblob` just before the report is
    /// generated (so `outblob` is theirs); `race_on_inblob` times, just after ours.
    pub struct FakeTsm {
        pub base: PathBuf,
        pub provider: &'static str,
        /// The report for any inblob but the racer's: a real report from the fixtures.
        pub report: &'static [u8],
        pub state: Mutex<State>,
    }

    #[derive(Default)]
    pub struct State {
        pub reports: BTreeMap<PathBuf, Report>,
        pub race_on_outblob: u32,
        pub race_on_inblob: u32,
        pub outblob_reads: u32,
        pub created: u32,
        /// Every inblob written by the provider under test, in order.
        pub inblobs: Vec<Vec<u8>>,
        pub privlevels: Vec<u32>,
    }

    #[derive(Default)]
    pub struct Report {
        pub generation: u64,
        pub inblob: Option<Vec<u8>>,
    }

    fn err(kind: ErrorKind) -> io::Error {
        io::Error::from(kind)
    }

    impl FakeTsm {
        pub fn new(base: &Path, provider: &'static str, report: &'static [u8]) -> FakeTsm {
            FakeTsm {
                base: base.to_path_buf(),
                provider,
                report,
                state: Mutex::new(State::default()),
            }
        }

        fn split<'p>(&self, path: &'p Path) -> io::Result<(&'p Path, String)> {
            let dir = path.parent().ok_or(err(ErrorKind::NotFound))?;
            let name = path.file_name().ok_or(err(ErrorKind::NotFound))?;
            Ok((dir, name.to_string_lossy().into_owned()))
        }
    }

    impl ReportFs for FakeTsm {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            if path.parent() != Some(self.base.as_path()) {
                return Err(err(ErrorKind::NotFound));
            }
            let mut st = self.state.lock().unwrap();
            if st.reports.contains_key(path) {
                return Err(err(ErrorKind::AlreadyExists));
            }
            st.reports.insert(path.to_path_buf(), Report::default());
            st.created += 1;
            Ok(())
        }

        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            let mut st = self.state.lock().unwrap();
            st.reports
                .remove(path)
                .map(|_| ())
                .ok_or(err(ErrorKind::NotFound))
        }

        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let (dir, name) = self.split(path)?;
            let mut st = self.state.lock().unwrap();
            let st = &mut *st;
            let report = st.reports.get_mut(dir).ok_or(err(ErrorKind::NotFound))?;
            match name.as_str() {
                "generation" => Ok(format!("{}\n", report.generation).into_bytes()),
                "provider" => Ok(format!("{}\n", self.provider).into_bytes()),
                "outblob" => {
                    st.outblob_reads += 1;
                    if st.race_on_outblob > 0 {
                        st.race_on_outblob -= 1;
                        report.inblob = Some(RACER_INBLOB.to_vec());
                        report.generation += 1;
                    }
                    match report.inblob.as_deref() {
                        None => Err(err(ErrorKind::InvalidInput)),
                        Some(b) if b == RACER_INBLOB => Ok(RACER_REPORT.to_vec()),
                        Some(_) => Ok(self.report.to_vec()),
                    }
                }
                "inblob" | "privlevel" => Err(err(ErrorKind::PermissionDenied)),
                _ => Err(err(ErrorKind::NotFound)),
            }
        }

        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            let (dir, name) = self.split(path)?;
            let mut st = self.state.lock().unwrap();
            let st = &mut *st;
            let report = st.reports.get_mut(dir).ok_or(err(ErrorKind::NotFound))?;
            match name.as_str() {
                "inblob" if data.len() <= 64 => {
                    report.inblob = Some(data.to_vec());
                    report.generation += 1;
                    st.inblobs.push(data.to_vec());
                    if st.race_on_inblob > 0 {
                        st.race_on_inblob -= 1;
                        report.inblob = Some(RACER_INBLOB.to_vec());
                        report.generation += 1;
                    }
                    Ok(())
                }
                "privlevel" if self.provider == "sev_guest" => {
                    let level: u32 = std::str::from_utf8(data)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .filter(|l| *l <= 3)
                        .ok_or(err(ErrorKind::InvalidInput))?;
                    st.privlevels.push(level);
                    report.generation += 1;
                    Ok(())
                }
                "inblob" => Err(err(ErrorKind::InvalidInput)),
                "generation" | "provider" | "outblob" => Err(err(ErrorKind::PermissionDenied)),
                _ => Err(err(ErrorKind::NotFound)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTsm;
    use super::*;
    use crate::testutil::{TestDir, SNP_REPORT, TDX_QUOTE};

    const BASE: &str = "/fake/sys/kernel/config/tsm/report";

    fn open(fake: &Arc<FakeTsm>) -> ConfigFsTsm {
        ConfigFsTsm::open_with(fake.base.clone(), fake.clone()).unwrap()
    }

    fn fake(provider: &'static str, report: &'static [u8]) -> Arc<FakeTsm> {
        Arc::new(FakeTsm::new(Path::new(BASE), provider, report))
    }

    #[test]
    fn snp_report_comes_from_outblob_and_the_directory_is_removed() {
        let fake = fake("sev_guest", SNP_REPORT);
        let tsm = open(&fake);
        assert_eq!(tsm.platform(), Platform::Snp);
        let ev = tsm.evidence(&[7; 64]).unwrap();
        assert_eq!(ev, SNP_REPORT);
        let st = fake.state.lock().unwrap();
        assert_eq!(st.inblobs, vec![vec![7u8; 64]]);
        assert!(st.privlevels.is_empty());
        assert_eq!(st.created, 2, "one directory to probe, one for the report");
        assert!(st.reports.is_empty(), "report directories left behind");
    }

    #[test]
    fn a_real_td_ships_no_collateral() {
        let fake = fake("tdx_guest", TDX_QUOTE);
        let bundle = open(&fake).evidence_bundle(&[2; 64]).unwrap();
        assert_eq!(bundle.evidence, TDX_QUOTE);
        assert_eq!(bundle.dcap_collateral, None);
        assert!(bundle.snp_certs.is_empty());
    }

    #[test]
    fn snp_bundle_without_auxblob_ships_no_certificates() {
        // A kernel or provider without `auxblob`: the report alone.
        let fake = fake("sev_guest", SNP_REPORT);
        let b = open(&fake).evidence_bundle(&[7; 64]).unwrap();
        assert_eq!(b.evidence, SNP_REPORT);
        assert!(b.snp_certs.is_empty() && b.dcap_collateral.is_none());
        assert!(fake.state.lock().unwrap().reports.is_empty());
        assert!(!open(&fake).is_emulated());
    }

    #[test]
    fn tdx_quote_comes_from_outblob() {
        let fake = fake("tdx_guest", TDX_QUOTE);
        let tsm = open(&fake);
        assert_eq!(tsm.platform(), Platform::Tdx);
        assert_eq!(tsm.evidence(&[1; 64]).unwrap(), TDX_QUOTE);
        assert!(fake.state.lock().unwrap().reports.is_empty());
    }

    #[test]
    fn privlevel_is_written_and_counted_in_generation() {
        let fake = fake("sev_guest", SNP_REPORT);
        let tsm = open(&fake).with_privlevel(2);
        assert_eq!(tsm.evidence(&[3; 64]).unwrap(), SNP_REPORT);
        assert_eq!(fake.state.lock().unwrap().privlevels, vec![2]);
    }

    #[test]
    fn privlevel_on_a_provider_without_it_names_the_attribute() {
        let fake = fake("tdx_guest", TDX_QUOTE);
        let err = open(&fake)
            .with_privlevel(1)
            .evidence(&[0; 64])
            .unwrap_err();
        assert!(
            matches!(&err, TeeError::Access { op: "write", path, .. } if path.ends_with("privlevel")),
            "{err}"
        );
        assert!(fake.state.lock().unwrap().reports.is_empty());
    }

    #[test]
    fn generation_change_around_outblob_retries_then_succeeds() {
        let fake = fake("sev_guest", SNP_REPORT);
        let tsm = open(&fake);
        fake.state.lock().unwrap().race_on_outblob = 1;
        // The first outblob is the racer's; generation exposes it and the retry gets ours.
        assert_eq!(tsm.evidence(&[5; 64]).unwrap(), SNP_REPORT);
        let st = fake.state.lock().unwrap();
        assert_eq!(st.outblob_reads, 2);
        assert_eq!(st.inblobs, vec![vec![5u8; 64], vec![5u8; 64]]);
        assert!(st.reports.is_empty());
    }

    #[test]
    fn write_right_after_ours_is_caught_before_reading_outblob() {
        // The racer overwrites inblob between our write and our read of outblob; outblob would be
        // generated from their data while generation stays still across the read. Counting our
        // own writes from the generation read before them catches it.
        let fake = fake("sev_guest", SNP_REPORT);
        let tsm = open(&fake);
        fake.state.lock().unwrap().race_on_inblob = 1;
        assert_eq!(tsm.evidence(&[6; 64]).unwrap(), SNP_REPORT);
        let st = fake.state.lock().unwrap();
        assert_eq!(st.outblob_reads, 1, "the racer's outblob was never read");
        assert_eq!(st.inblobs.len(), 2);
    }

    #[test]
    fn generation_always_changing_gives_up_after_bounded_attempts() {
        let fake = fake("sev_guest", SNP_REPORT);
        let tsm = open(&fake);
        fake.state.lock().unwrap().race_on_outblob = u32::MAX;
        let err = tsm.evidence(&[5; 64]).unwrap_err();
        match &err {
            TeeError::GenerationRace {
                path,
                attempts,
                expected,
                found,
            } => {
                assert!(path.starts_with(BASE) && path.ends_with("generation"));
                assert_eq!(*attempts, ConfigFsTsm::MAX_ATTEMPTS);
                assert_eq!(found, &(expected + 1));
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("another writer"), "{err}");
        let st = fake.state.lock().unwrap();
        assert_eq!(st.outblob_reads, ConfigFsTsm::MAX_ATTEMPTS);
        assert!(st.reports.is_empty(), "directory removed on the error path");
    }

    #[test]
    fn unknown_provider_is_named() {
        let fake = fake("cca_guest", SNP_REPORT);
        let err = ConfigFsTsm::open_with(fake.base.clone(), fake.clone())
            .err()
            .unwrap();
        assert!(
            matches!(&err, TeeError::UnknownProvider { provider, path } if provider == "cca_guest" && path.ends_with("provider")),
            "{err}"
        );
        assert!(fake.state.lock().unwrap().reports.is_empty());
    }

    #[test]
    fn snp_outblob_of_wrong_size_is_rejected() {
        let fake = fake("sev_guest", &SNP_REPORT[..1000]);
        let err = open(&fake).evidence(&[0; 64]).unwrap_err();
        assert!(
            matches!(
                err,
                TeeError::WrongLength {
                    expected: 1184,
                    got: 1000,
                    platform: Platform::Snp,
                    ..
                }
            ),
            "{err}"
        );
        assert!(fake.state.lock().unwrap().reports.is_empty());
    }

    #[test]
    fn missing_base_is_named_in_the_error() {
        let tmp = TestDir::new("tsm-missing");
        let base = tmp.path().join("no/such/report");
        let err = ConfigFsTsm::open(&base).err().unwrap();
        match &err {
            TeeError::Access {
                path,
                op: "mkdir",
                source,
            } => {
                assert!(path.starts_with(&base));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains("no/such/report"), "{err}");
    }

    #[test]
    fn plain_directory_is_not_configfs_and_is_left_clean() {
        // The real file system: mkdir works but no `provider` appears, unlike configfs.
        let tmp = TestDir::new("tsm-plain");
        let err = ConfigFsTsm::open(tmp.path()).err().unwrap();
        assert!(
            matches!(&err, TeeError::Access { op: "read", path, .. } if path.ends_with("provider")),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
