//! A model of the kernel side of configfs-tsm (`Documentation/ABI/testing/configfs-tsm`) in front
//! of an emulated platform, so that [`crate::ConfigFsTsm`] runs the same code on an emulator as on a
//! real guest. Per the ABI document: `mkdir` under the base creates a report whose attributes exist
//! at once, `generation` 0; `inblob` (write-only, at most 64 bytes, zero-padded to the 64 bytes of
//! REPORT_DATA) and `privlevel` (write-only, `privlevel_floor`..=3, only where the provider has it)
//! each bump `generation` on write; `outblob` and `auxblob` (read-only) are generated together on the
//! first read after a write and cached until the next one; `provider` and `generation` are
//! read-only; `rmdir` removes a report.

use crate::configfs::ReportFs;
use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What an emulated platform answers for one report request.
pub(crate) trait TsmBackend: Send + Sync {
    /// The `provider` attribute (`sev_guest`, `tdx_guest`).
    fn provider(&self) -> &'static str;
    /// `privlevel_floor`, for providers that have `privlevel` (`sev_guest`: the guest's VMPL).
    fn privlevel_floor(&self) -> Option<u8>;
    /// `outblob` and `auxblob` for REPORT_DATA `inblob`, requested at `privlevel` (the floor when
    /// none was written).
    fn generate(&self, inblob: &[u8; 64], privlevel: u8) -> io::Result<(Vec<u8>, Vec<u8>)>;
}

/// One report directory.
#[derive(Default)]
struct Report {
    generation: u64,
    inblob: Option<[u8; 64]>,
    privlevel: Option<u8>,
    /// `outblob` and `auxblob` generated at a generation.
    cache: Option<(u64, Vec<u8>, Vec<u8>)>,
}

/// configfs-tsm as the kernel exposes it, backed by an emulated platform.
pub(crate) struct EmulatedTsm<B> {
    base: PathBuf,
    backend: B,
    reports: Mutex<BTreeMap<PathBuf, Report>>,
}

fn err(kind: ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, what.to_string())
}

impl<B: TsmBackend> EmulatedTsm<B> {
    pub(crate) fn new(base: PathBuf, backend: B) -> EmulatedTsm<B> {
        EmulatedTsm {
            base,
            backend,
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    #[cfg(test)]
    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, BTreeMap<PathBuf, Report>>> {
        self.reports
            .lock()
            .map_err(|_| io::Error::other("emulated configfs-tsm state poisoned"))
    }

    fn split<'p>(&self, path: &'p Path) -> io::Result<(&'p Path, String)> {
        let dir = path
            .parent()
            .ok_or_else(|| err(ErrorKind::NotFound, "no report directory"))?;
        let name = path
            .file_name()
            .ok_or_else(|| err(ErrorKind::NotFound, "no attribute name"))?;
        Ok((dir, name.to_string_lossy().into_owned()))
    }

    fn has_privlevel(&self) -> bool {
        self.backend.privlevel_floor().is_some()
    }
}

impl<B: TsmBackend> ReportFs for EmulatedTsm<B> {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if path.parent() != Some(self.base.as_path()) {
            return Err(err(ErrorKind::NotFound, "not a report directory"));
        }
        let mut reports = self.lock()?;
        if reports.contains_key(path) {
            return Err(err(ErrorKind::AlreadyExists, "report exists"));
        }
        reports.insert(path.to_path_buf(), Report::default());
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.lock()?
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| err(ErrorKind::NotFound, "no such report"))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = self.split(path)?;
        let mut reports = self.lock()?;
        let report = reports
            .get_mut(dir)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such report"))?;
        match name.as_str() {
            "generation" => Ok(format!("{}\n", report.generation).into_bytes()),
            "provider" => Ok(format!("{}\n", self.backend.provider()).into_bytes()),
            "privlevel_floor" => match self.backend.privlevel_floor() {
                Some(floor) => Ok(format!("{floor}\n").into_bytes()),
                None => Err(err(ErrorKind::NotFound, "no privlevel_floor")),
            },
            "outblob" | "auxblob" => {
                let fresh = match &report.cache {
                    Some((generation, out, aux)) if *generation == report.generation => {
                        (out.clone(), aux.clone())
                    }
                    _ => {
                        let inblob = report
                            .inblob
                            .ok_or_else(|| err(ErrorKind::InvalidInput, "no inblob written"))?;
                        let floor = self.backend.privlevel_floor().unwrap_or(0);
                        let level = report.privlevel.unwrap_or(floor);
                        let (out, aux) = self.backend.generate(&inblob, level)?;
                        report.cache = Some((report.generation, out.clone(), aux.clone()));
                        (out, aux)
                    }
                };
                Ok(if name == "outblob" { fresh.0 } else { fresh.1 })
            }
            "inblob" | "privlevel" if name == "inblob" || self.has_privlevel() => {
                Err(err(ErrorKind::PermissionDenied, "write-only attribute"))
            }
            _ => Err(err(ErrorKind::NotFound, "no such attribute")),
        }
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let (dir, name) = self.split(path)?;
        let mut reports = self.lock()?;
        let report = reports
            .get_mut(dir)
            .ok_or_else(|| err(ErrorKind::NotFound, "no such report"))?;
        match name.as_str() {
            "inblob" => {
                let mut inblob = [0u8; 64];
                inblob
                    .get_mut(..data.len())
                    .ok_or_else(|| err(ErrorKind::FileTooLarge, "inblob holds 64 bytes"))?
                    .copy_from_slice(data);
                report.inblob = Some(inblob);
                report.generation += 1;
                Ok(())
            }
            "privlevel" => {
                let floor = self
                    .backend
                    .privlevel_floor()
                    .ok_or_else(|| err(ErrorKind::NotFound, "no privlevel"))?;
                let level = std::str::from_utf8(data)
                    .ok()
                    .and_then(|s| s.trim().parse::<u8>().ok())
                    .filter(|l| (floor..=3).contains(l))
                    .ok_or_else(|| err(ErrorKind::InvalidInput, "privlevel outside floor..=3"))?;
                report.privlevel = Some(level);
                report.generation += 1;
                Ok(())
            }
            "generation" | "provider" | "outblob" | "auxblob" => {
                Err(err(ErrorKind::PermissionDenied, "read-only attribute"))
            }
            "privlevel_floor" if self.has_privlevel() => {
                Err(err(ErrorKind::PermissionDenied, "read-only attribute"))
            }
            _ => Err(err(ErrorKind::NotFound, "no such attribute")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigFsTsm, EvidenceProvider, TeeError};
    use cordon_attest::Platform;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// A platform whose report is its REPORT_DATA, the privilege level and a call counter, padded to
    /// an SNP report's length; `aux` is returned as `auxblob`.
    struct Echo {
        provider: &'static str,
        floor: Option<u8>,
        aux: Vec<u8>,
        calls: AtomicU32,
    }

    impl TsmBackend for Echo {
        fn provider(&self) -> &'static str {
            self.provider
        }
        fn privlevel_floor(&self) -> Option<u8> {
            self.floor
        }
        fn generate(&self, inblob: &[u8; 64], privlevel: u8) -> io::Result<(Vec<u8>, Vec<u8>)> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let mut out = inblob.to_vec();
            out.push(privlevel);
            out.extend_from_slice(&n.to_le_bytes());
            out.resize(1184, 0);
            Ok((out, self.aux.clone()))
        }
    }

    const BASE: &str = "/emu/tsm/report";

    fn echo(provider: &'static str, floor: Option<u8>, aux: &[u8]) -> EmulatedTsm<Echo> {
        EmulatedTsm::new(
            PathBuf::from(BASE),
            Echo {
                provider,
                floor,
                aux: aux.to_vec(),
                calls: AtomicU32::new(0),
            },
        )
    }

    fn gen(fs: &EmulatedTsm<Echo>, dir: &Path) -> String {
        String::from_utf8(fs.read(&dir.join("generation")).unwrap()).unwrap()
    }

    #[test]
    fn attributes_behave_as_the_abi_document_says() {
        let fs = echo("sev_guest", Some(1), b"aux");
        let dir = Path::new(BASE).join("r1");
        assert_eq!(
            fs.create_dir(Path::new("/elsewhere/r1"))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
        fs.create_dir(&dir).unwrap();
        assert_eq!(
            fs.create_dir(&dir).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert_eq!(gen(&fs, &dir), "0\n");
        assert_eq!(fs.read(&dir.join("provider")).unwrap(), b"sev_guest\n");
        assert_eq!(fs.read(&dir.join("privlevel_floor")).unwrap(), b"1\n");
        // outblob before any inblob: nothing to report on.
        assert_eq!(
            fs.read(&dir.join("outblob")).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        // A short inblob is zero-padded to the 64 bytes of REPORT_DATA.
        fs.write(&dir.join("inblob"), &[7; 10]).unwrap();
        assert_eq!(gen(&fs, &dir), "1\n");
        let out = fs.read(&dir.join("outblob")).unwrap();
        assert_eq!(&out[..10], &[7; 10]);
        assert_eq!(&out[10..64], &[0; 54]);
        assert_eq!(
            out[64], 1,
            "requested at the floor when privlevel was not written"
        );
        // Cached per generation: the same report again, and auxblob from the same generation.
        assert_eq!(fs.read(&dir.join("outblob")).unwrap(), out);
        assert_eq!(fs.read(&dir.join("auxblob")).unwrap(), b"aux");
        assert_eq!(fs.backend().calls.load(Ordering::SeqCst), 1);
        // A new write: a fresh report.
        fs.write(&dir.join("privlevel"), b"3\n").unwrap();
        assert_eq!(gen(&fs, &dir), "2\n");
        let fresh = fs.read(&dir.join("outblob")).unwrap();
        assert_ne!(fresh, out);
        assert_eq!(fresh[64], 3);
        // Refused writes leave generation alone.
        assert_eq!(
            fs.write(&dir.join("inblob"), &[1; 65]).unwrap_err().kind(),
            ErrorKind::FileTooLarge
        );
        for level in ["0", "4", "x"] {
            assert_eq!(
                fs.write(&dir.join("privlevel"), level.as_bytes())
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidInput
            );
        }
        assert_eq!(gen(&fs, &dir), "2\n");
        for ro in [
            "outblob",
            "auxblob",
            "generation",
            "provider",
            "privlevel_floor",
        ] {
            assert_eq!(
                fs.write(&dir.join(ro), b"1").unwrap_err().kind(),
                ErrorKind::PermissionDenied,
                "{ro}"
            );
        }
        for wo in ["inblob", "privlevel"] {
            assert_eq!(
                fs.read(&dir.join(wo)).unwrap_err().kind(),
                ErrorKind::PermissionDenied,
                "{wo}"
            );
        }
        fs.remove_dir(&dir).unwrap();
        assert_eq!(
            fs.read(&dir.join("generation")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // A provider without privlevel has no such attributes.
        let tdx = echo("tdx_guest", None, b"");
        tdx.create_dir(&dir).unwrap();
        assert_eq!(
            tdx.write(&dir.join("privlevel"), b"1").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            tdx.read(&dir.join("privlevel_floor")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    fn tsm(fs: EmulatedTsm<Echo>) -> ConfigFsTsm {
        ConfigFsTsm::open_with(PathBuf::from(BASE), Arc::new(fs)).unwrap()
    }

    #[test]
    fn configfs_bundle_reads_auxblob_and_names_a_malformed_one() {
        use crate::cert_table::{encode_cert_table, CertTableEntry, GUID_ASK, GUID_VCEK};
        let table = encode_cert_table(&[
            CertTableEntry {
                guid: GUID_ASK,
                data: b"ask".to_vec(),
            },
            CertTableEntry {
                guid: GUID_VCEK,
                data: b"vcek".to_vec(),
            },
        ]);
        let b = tsm(echo("sev_guest", Some(0), &table))
            .evidence_bundle(&[4; 64])
            .unwrap();
        assert_eq!(&b.evidence[..64], &[4; 64]);
        assert_eq!(b.snp_certs, vec![b"vcek".to_vec(), b"ask".to_vec()]);
        // An empty auxblob: a host that supplies no certificates.
        let b = tsm(echo("sev_guest", Some(0), b""))
            .evidence_bundle(&[4; 64])
            .unwrap();
        assert!(b.snp_certs.is_empty());
        // A truncated table is an error naming auxblob.
        let err = tsm(echo("sev_guest", Some(0), &table[..30]))
            .evidence_bundle(&[4; 64])
            .unwrap_err();
        assert!(
            matches!(&err, TeeError::CertTable { path, .. } if path.ends_with("auxblob") && path.starts_with(BASE)),
            "{err}"
        );
        assert!(err.to_string().contains("auxblob"), "{err}");
        // Plain evidence does not read auxblob at all; nor does a TDX bundle.
        assert!(tsm(echo("sev_guest", Some(0), &table[..30]))
            .evidence(&[4; 64])
            .is_ok());
        let t = tsm(echo("tdx_guest", None, &table[..30]));
        assert_eq!(t.platform(), Platform::Tdx);
        assert!(t.evidence_bundle(&[4; 64]).unwrap().snp_certs.is_empty());
    }
}
