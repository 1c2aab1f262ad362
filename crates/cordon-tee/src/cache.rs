//! Endorsements from a directory the operator filled (`cordon attest fetch EVIDENCE --out DIR`),
//! shipped with the evidence when the platform itself ships none: an SNP guest whose host does not
//! serve the extended report's certificates, a TD without a PCCS of its own.

use crate::{EvidenceBundle, EvidenceProvider, TeeError};
use cordon_attest::dcap::DcapCollateral;
use cordon_attest::Platform;
use std::path::{Path, PathBuf};

/// File names `cordon attest fetch` writes for SNP (the VCEK) and, for DCAP, the file whose
/// presence marks a collateral directory (`DcapCollateral::from_dir` reads the rest).
const SNP_VCEK_FILE: &str = "vcek.der";
const DCAP_MARKER_FILE: &str = "tcb_info.json";

/// An [`EvidenceProvider`] that adds the endorsements of a directory to those its inner provider
/// ships. What it adds is input to verifiers, never trust: a wrong or stale file only makes
/// verification fail.
pub struct EndorsementCache {
    inner: Box<dyn EvidenceProvider>,
    dir: PathBuf,
    snp_certs: Vec<Vec<u8>>,
    dcap_collateral: Option<Vec<u8>>,
}

impl EndorsementCache {
    /// Reads `dir` once: `vcek.der` for SNP, the DCAP collateral files for TDX and SGX. A
    /// directory with neither for the inner provider's platform is an error naming what was
    /// looked for, so that a mistyped path does not go unnoticed.
    pub fn open(
        inner: Box<dyn EvidenceProvider>,
        dir: impl Into<PathBuf>,
    ) -> Result<EndorsementCache, TeeError> {
        let dir = dir.into();
        let read = |name: &str| -> Result<Option<Vec<u8>>, TeeError> {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(TeeError::Access {
                    path,
                    op: "read",
                    source,
                }),
            }
        };
        let (snp_certs, dcap_collateral) = match inner.platform() {
            Platform::Snp => (read(SNP_VCEK_FILE)?.into_iter().collect(), None),
            Platform::Tdx | Platform::Sgx => {
                let collateral = match read(DCAP_MARKER_FILE)? {
                    Some(_) => Some(
                        DcapCollateral::from_dir(&dir)
                            .map_err(|e| TeeError::Malformed {
                                path: dir.clone(),
                                reason: e.to_string(),
                            })?
                            .to_json(),
                    ),
                    None => None,
                };
                (Vec::new(), collateral)
            }
            Platform::Sim => (Vec::new(), None),
        };
        if snp_certs.is_empty() && dcap_collateral.is_none() {
            let wanted = match inner.platform() {
                Platform::Snp => SNP_VCEK_FILE,
                Platform::Tdx | Platform::Sgx => "DCAP collateral (tcb_info.json and the rest)",
                Platform::Sim => "nothing: sim evidence has no endorsements",
            };
            return Err(TeeError::Malformed {
                path: dir,
                reason: format!(
                    "holds no endorsements for {}: expected {wanted}, as `cordon attest fetch \
                     EVIDENCE --out DIR` writes it",
                    inner.platform()
                ),
            });
        }
        Ok(EndorsementCache {
            inner,
            dir,
            snp_certs,
            dcap_collateral,
        })
    }

    /// The directory the endorsements came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl EvidenceProvider for EndorsementCache {
    fn platform(&self) -> Platform {
        self.inner.platform()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        self.inner.evidence(report_data)
    }

    fn evidence_bundle(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle, TeeError> {
        let mut bundle = self.inner.evidence_bundle(report_data)?;
        // The platform's own certificates first; verifiers try them in order.
        for c in &self.snp_certs {
            if !bundle.snp_certs.contains(c) {
                bundle.snp_certs.push(c.clone());
            }
        }
        if bundle.dcap_collateral.is_none() {
            bundle.dcap_collateral = self.dcap_collateral.clone();
        }
        Ok(bundle)
    }
}

/// Where a TD's kernel exposes its event log: the data of the ACPI CCEL table.
pub const CCEL_DATA_PATH: &str = "/sys/firmware/acpi/tables/data/CCEL";

/// An [`EvidenceProvider`] that ships a TD's event log with its quotes, for verifiers to replay
/// against the RTMRs (and refuse a log that does not replay to them).
pub struct TdxEventLog {
    inner: Box<dyn EvidenceProvider>,
    log: Vec<u8>,
}

impl TdxEventLog {
    /// Reads the log at `path` once (the firmware's part of it does not change after boot) and
    /// keeps it without the table's padding (a CCEL area is 64 KiB; its log is a few KiB). A log
    /// that does not parse is an error now rather than a refusal at every verifier later.
    pub fn open(
        inner: Box<dyn EvidenceProvider>,
        path: impl AsRef<Path>,
    ) -> Result<TdxEventLog, TeeError> {
        let path = path.as_ref();
        let area = std::fs::read(path).map_err(|source| TeeError::Access {
            path: path.to_path_buf(),
            op: "read",
            source,
        })?;
        TdxEventLog::from_bytes(inner, &area).map_err(|reason| TeeError::Malformed {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// [`TdxEventLog::open`] on a log already read.
    pub fn from_bytes(
        inner: Box<dyn EvidenceProvider>,
        area: &[u8],
    ) -> Result<TdxEventLog, String> {
        let parsed = cordon_attest::eventlog::parse(area).map_err(|e| e.to_string())?;
        let log = area.get(..parsed.length).unwrap_or(area).to_vec();
        Ok(TdxEventLog { inner, log })
    }
}

impl EvidenceProvider for TdxEventLog {
    fn platform(&self) -> Platform {
        self.inner.platform()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        self.inner.evidence(report_data)
    }

    fn evidence_bundle(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle, TeeError> {
        let mut bundle = self.inner.evidence_bundle(report_data)?;
        bundle.tdx_event_log.get_or_insert_with(|| self.log.clone());
        Ok(bundle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestDir, SNP_REPORT, TDX_QUOTE};

    /// A provider of fixed evidence, standing in for a platform.
    struct Fixed(Platform, &'static [u8]);

    impl EvidenceProvider for Fixed {
        fn platform(&self) -> Platform {
            self.0
        }
        fn evidence(&self, _: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
            Ok(self.1.to_vec())
        }
    }

    const VCEK: &[u8] = include_bytes!("../../../testdata/attestation/snp/trustee_test-vcek.der");
    const COLLATERAL: &[u8] =
        include_bytes!("../../../testdata/attestation/tdx/tdx_quote_collateral.json");

    #[test]
    fn an_snp_vcek_from_the_directory_is_shipped() {
        let dir = TestDir::new("cache-snp");
        dir.file("vcek.der", VCEK);
        let cache =
            EndorsementCache::open(Box::new(Fixed(Platform::Snp, SNP_REPORT)), dir.path()).unwrap();
        let bundle = cache.evidence_bundle(&[0; 64]).unwrap();
        assert_eq!(bundle.evidence, SNP_REPORT);
        assert_eq!(bundle.snp_certs, vec![VCEK.to_vec()]);
        assert_eq!(bundle.dcap_collateral, None);
    }

    #[test]
    fn dcap_collateral_from_the_directory_is_shipped_as_json() {
        // Write the fixture's JSON bundle out as the raw-PCS directory `cordon attest fetch` writes.
        let c = DcapCollateral::from_json(COLLATERAL).unwrap();
        let i = c.inner();
        let dir = TestDir::new("cache-dcap");
        dir.file("pck_crl.der", &i.pck_crl);
        dir.file(
            "pck_crl_issuer_chain.pem",
            i.pck_crl_issuer_chain.as_bytes(),
        );
        dir.file("root_ca_crl.der", &i.root_ca_crl);
        // The signed bodies verbatim: their signatures cover the exact text.
        let tcb = format!(
            "{{\"tcbInfo\":{},\"signature\":\"{}\"}}",
            i.tcb_info,
            hex::encode(&i.tcb_info_signature)
        );
        dir.file("tcb_info.json", tcb.as_bytes());
        dir.file(
            "tcb_info_issuer_chain.pem",
            i.tcb_info_issuer_chain.as_bytes(),
        );
        let qe = format!(
            "{{\"enclaveIdentity\":{},\"signature\":\"{}\"}}",
            i.qe_identity,
            hex::encode(&i.qe_identity_signature)
        );
        dir.file("qe_identity.json", qe.as_bytes());
        dir.file(
            "qe_identity_issuer_chain.pem",
            i.qe_identity_issuer_chain.as_bytes(),
        );
        if let Some(chain) = &i.pck_certificate_chain {
            dir.file("pck_certificate_chain.pem", chain.as_bytes());
        }
        let cache =
            EndorsementCache::open(Box::new(Fixed(Platform::Tdx, TDX_QUOTE)), dir.path()).unwrap();
        let bundle = cache.evidence_bundle(&[0; 64]).unwrap();
        let shipped = DcapCollateral::from_json(&bundle.dcap_collateral.unwrap()).unwrap();
        assert_eq!(shipped, c);
    }

    #[test]
    fn a_tds_event_log_is_shipped_without_its_padding() {
        const CCEL: &[u8] = include_bytes!("../../../testdata/attestation/tdx/ccel_live.bin");
        let dir = TestDir::new("ccel");
        let path = dir.file("CCEL", CCEL);
        let shipper = TdxEventLog::open(Box::new(Fixed(Platform::Tdx, TDX_QUOTE)), &path).unwrap();
        let bundle = shipper.evidence_bundle(&[0; 64]).unwrap();
        let log = bundle.tdx_event_log.unwrap();
        assert_eq!(
            log.len(),
            2120,
            "20 events, without the 64 KiB area's 0xFF fill"
        );
        assert_eq!(&CCEL[..log.len()], log.as_slice());
        assert_eq!(bundle.evidence, TDX_QUOTE);
        // A file that is not an event log is refused at start, naming it.
        let junk = dir.file("junk", b"not a log");
        let err = TdxEventLog::open(Box::new(Fixed(Platform::Tdx, TDX_QUOTE)), &junk)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("junk") && err.contains("event log"), "{err}");
    }

    #[test]
    fn a_directory_without_endorsements_for_the_platform_is_refused() {
        let dir = TestDir::new("cache-empty");
        dir.file("notes.txt", b"nothing here");
        let err = EndorsementCache::open(Box::new(Fixed(Platform::Snp, SNP_REPORT)), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("vcek.der") && err.contains("cordon attest fetch"),
            "{err}"
        );
        // A VCEK does not serve a TD.
        dir.file("vcek.der", VCEK);
        let err = EndorsementCache::open(Box::new(Fixed(Platform::Tdx, TDX_QUOTE)), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("DCAP collateral"), "{err}");
        // A collateral directory with a broken file names the problem.
        dir.file("tcb_info.json", b"{");
        let err = EndorsementCache::open(Box::new(Fixed(Platform::Tdx, TDX_QUOTE)), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
