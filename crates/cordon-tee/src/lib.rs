//! Producing attestation evidence inside a TEE. This crate never verifies evidence.
//!
//! Providers, each an [`EvidenceProvider`]:
//! - [`ConfigFsTsm`]: Linux configfs-tsm (`/sys/kernel/config/tsm/report`), SEV-SNP reports and TDX
//!   quotes.
//! - [`SevGuest`]: the `/dev/sev-guest` ioctls, for SNP guests without configfs-tsm: reports
//!   (`SNP_GET_REPORT`), extended reports with the host's VCEK chain (`SNP_GET_EXT_REPORT`), and
//!   the firmware's derived keys ([`SevGuest::derived_key`], `SNP_GET_DERIVED_KEY`).
//! - [`GramineSgx`]: Gramine's `/dev/attestation` pseudo-files, SGX DCAP quotes.
//! - [`SimTee`]: the simulated platform, never hardware-backed and never auto-detected.
//! - [`emulated`]: tests and CI only, an emulated SEV-SNP machine whose genuine, test-root-signed
//!   reports reach the runtime through [`ConfigFsTsm::emulated_snp`] or [`SevGuest::emulated_snp`],
//!   the same code as on a real guest. EMULATED, NOT hardware-backed; never auto-detected.
//!
//! [`detect`] picks the first hardware interface present.
#![deny(unsafe_code)] // the exceptions: the three /dev/sev-guest ioctls in `sev_guest`

mod cache;
pub mod cert_table;
mod configfs;
mod detect;
pub mod emulated;
mod gramine;
mod sev_guest;
#[cfg(test)]
mod testutil;

pub use cache::{EndorsementCache, TdxEventLog, CCEL_DATA_PATH};
pub use configfs::ConfigFsTsm;
pub use detect::{detect, Probe};
pub use gramine::GramineSgx;
pub use sev_guest::{guest_field, DerivedKeyRequest, RootKey, SevGuest};

use cordon_attest::sim::SimReport;
use cordon_attest::Platform;
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use sha2::{Digest, Sha384};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// Why evidence could not be produced. Every variant about a TEE interface names the path involved.
#[derive(Debug, Error)]
pub enum TeeError {
    #[error("I/O error reading {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("simulated hardware key file is invalid: {0}")]
    SimKey(String),
    /// An emulated platform (tests only) could not produce evidence or endorsements.
    #[error("emulated platform: {0}")]
    Emulated(String),
    /// A file, directory or device of a TEE interface could not be used; `op` says how it was used
    /// (`mkdir`, `read`, `write`, `rmdir`, `open`, `ioctl SNP_GET_REPORT`).
    #[error("{op} {}: {source}", path.display())]
    Access {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// A TEE interface returned something malformed (an unparsable number, an empty quote, a
    /// provider that changed).
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// Evidence of the wrong size for its platform.
    #[error("{}: expected {expected} bytes of {platform} evidence, got {got}", path.display())]
    WrongLength {
        path: PathBuf,
        platform: Platform,
        expected: usize,
        got: usize,
    },
    /// configfs-tsm's `provider` names a report format this crate does not know.
    /// An SNP certificate table (configfs-tsm `auxblob`) that cannot be read.
    #[error("{}: {source}", path.display())]
    CertTable {
        path: PathBuf,
        source: cert_table::CertTableError,
    },
    #[error("{}: unknown configfs-tsm provider {provider:?} (known: sev_guest, tdx_guest)", path.display())]
    UnknownProvider { path: PathBuf, provider: String },
    /// configfs-tsm's `generation` did not match our own writes on every attempt: another writer
    /// kept changing the report's inputs.
    #[error(
        "{}: generation was {found}, expected {expected}, on each of {attempts} attempts; another \
         writer is changing this report's inputs",
        path.display()
    )]
    GenerationRace {
        path: PathBuf,
        attempts: u32,
        expected: u64,
        found: u64,
    },
    /// A `/dev/sev-guest` guest request (`op`: `SNP_GET_REPORT`, `SNP_GET_DERIVED_KEY`) failed.
    /// `fw_error` and `vmm_error` are the two halves of the kernel's `exitinfo2`.
    #[error(
        "ioctl {op} on {}: {source} (firmware error {fw_error:#x}, VMM error {vmm_error:#x})",
        path.display()
    )]
    SnpGuestRequest {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
        fw_error: u32,
        vmm_error: u32,
    },
    /// The SNP firmware answered `SNP_GET_REPORT` with a non-zero status (MSG_REPORT_RSP.STATUS).
    #[error("ioctl SNP_GET_REPORT on {}: firmware status {status:#x}", path.display())]
    SnpReportStatus { path: PathBuf, status: u32 },
    /// The SNP firmware answered `SNP_GET_DERIVED_KEY` with a non-zero status (MSG_KEY_RSP.STATUS;
    /// 0x16, INVALID_PARAM, for a VMPL, SVN or TCB the guest may not ask for).
    #[error("ioctl SNP_GET_DERIVED_KEY on {}: firmware status {status:#x}", path.display())]
    SnpDerivedKeyStatus { path: PathBuf, status: u32 },
    /// [`detect`] found no usable TEE interface; `probed` lists each place it looked and why it
    /// was not used.
    #[error(
        "no TEE evidence interface found (the simulated TEE is never auto-detected); probed: {}",
        Probe::list(probed)
    )]
    NoTee { probed: Vec<Probe> },
}

/// Something that produces evidence binding 64 bytes of report data.
pub trait EvidenceProvider: Send + Sync {
    fn platform(&self) -> Platform;
    /// Evidence whose report_data field is `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError>;
    /// Evidence with the endorsements the platform hands out alongside it (an SNP extended
    /// report's certificate table, DCAP collateral from a cache), for a verifier that has none of
    /// its own. Providers that have none ship the evidence alone.
    fn evidence_bundle(&self, report_data: &[u8; 64]) -> Result<EvidenceBundle, TeeError> {
        Ok(EvidenceBundle {
            evidence: self.evidence(report_data)?,
            ..EvidenceBundle::default()
        })
    }
}

/// Evidence and the endorsements shipped with it. Shipped endorsements are input to a verifier,
/// never trust: it still checks them up to the AMD and Intel roots it pins (or, in tests, to an
/// emulated root its policy names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceBundle {
    /// The report or quote.
    pub evidence: Vec<u8>,
    /// SNP: the VCEK or VLEK and, where the platform gives them, its ASK/ASVK and ARK (DER).
    pub snp_certs: Vec<Vec<u8>>,
    /// DCAP: the quote's collateral as the JSON `cordon_attest::dcap::DcapCollateral::from_json`
    /// reads.
    pub dcap_collateral: Option<Vec<u8>>,
    /// TDX: the TD's event log (the ACPI CCEL table's data), which verifiers replay against the
    /// quote's RTMRs.
    pub tdx_event_log: Option<Vec<u8>>,
}

/// The simulated hardware key: an Ed25519 key standing in for the TEE's attestation key.
/// It proves nothing about isolation; it lets the whole flow run without hardware.
pub struct SimHardwareKey(SigningKey);

impl fmt::Debug for SimHardwareKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SimHardwareKey(public={})",
            hex::encode(self.public_key())
        )
    }
}

impl SimHardwareKey {
    pub fn generate() -> SimHardwareKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        SimHardwareKey(SigningKey::from_bytes(&seed))
    }

    /// The trust anchor verifiers configure for sim evidence.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// File form: JSON with the format marker [`SIM_HARDWARE_KEY_FORMAT`], the secret seed and the
    /// public key (hex). The marker keeps the secret file from being taken for its public half (a
    /// trust anchor is one line of hex). Write it with mode 0600.
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(hex::encode(self.0.to_bytes()));
        Zeroizing::new(format!(
            "{{\n  \"format\": \"{SIM_HARDWARE_KEY_FORMAT}\",\n  \"secret_key\": \"{}\",\n  \
             \"public_key\": \"{}\"\n}}\n",
            secret.as_str(),
            hex::encode(self.public_key())
        ))
    }

    /// Reads [`SimHardwareKey::to_file_contents`]'s form, or the older one line of hex (the seed).
    pub fn from_file_contents(text: &str) -> Result<SimHardwareKey, TeeError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            format: String,
            secret_key: String,
            public_key: String,
        }
        let text = text.trim();
        let (seed_hex, public) = if text.starts_with('{') {
            let f: File = serde_json::from_str(text)
                .map_err(|e| TeeError::SimKey(format!("not a sim hardware key file: {e}")))?;
            if f.format != SIM_HARDWARE_KEY_FORMAT {
                return Err(TeeError::SimKey(format!(
                    "format is {:?}, expected {SIM_HARDWARE_KEY_FORMAT:?}",
                    f.format
                )));
            }
            let mut f = f;
            let secret = Zeroizing::new(std::mem::take(&mut f.secret_key));
            (secret, Some(f.public_key))
        } else {
            (Zeroizing::new(text.to_string()), None)
        };
        let bytes = Zeroizing::new(
            hex::decode(seed_hex.trim())
                .map_err(|e| TeeError::SimKey(format!("secret key is not hex: {e}")))?,
        );
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            TeeError::SimKey(format!("secret key is {} bytes, expected 32", bytes.len()))
        })?;
        let key = SimHardwareKey(SigningKey::from_bytes(&seed));
        if public.is_some_and(|p| p.trim().to_lowercase() != hex::encode(key.public_key())) {
            return Err(TeeError::SimKey(
                "public_key does not match secret_key".into(),
            ));
        }
        Ok(key)
    }
}

/// The format marker of a simulated TEE's hardware key file.
pub const SIM_HARDWARE_KEY_FORMAT: &str = "cordon-sim-hardware-key/1";

/// The simulated TEE. Every piece of evidence it makes says `sim` and is not hardware-backed.
pub struct SimTee {
    key: SimHardwareKey,
    launch_measurement: [u8; 48],
    workload_data: [u8; 32],
    debug: bool,
}

impl SimTee {
    pub fn new(
        key: SimHardwareKey,
        launch_measurement: [u8; 48],
        workload_data: [u8; 32],
        debug: bool,
    ) -> SimTee {
        SimTee {
            key,
            launch_measurement,
            workload_data,
            debug,
        }
    }

    pub fn launch_measurement(&self) -> [u8; 48] {
        self.launch_measurement
    }
}

impl EvidenceProvider for SimTee {
    fn platform(&self) -> Platform {
        Platform::Sim
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let report = SimReport {
            launch_measurement: self.launch_measurement,
            workload_data: self.workload_data,
            report_data: *report_data,
            debug: self.debug,
            signer: self.key.public_key(),
        };
        let sig = self.key.0.sign(&report.signed_bytes());
        Ok(report.to_evidence(&sig.to_bytes()))
    }
}

/// The simulated launch measurement of a runtime: what a real TEE would measure at launch, the code
/// and its configuration.
///
/// ```text
/// SHA-384( "cordon sim launch v1" || 0x00 || u64le(len(binary)) || binary || u64le(len(config)) || config )
/// ```
pub fn sim_launch_measurement(binary: &Path, config: &[u8]) -> Result<[u8; 48], TeeError> {
    let io = |e| TeeError::Io {
        what: binary.display().to_string(),
        source: e,
    };
    let mut file = std::fs::File::open(binary).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut h = Sha384::new();
    h.update(b"cordon sim launch v1\0");
    h.update(len.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    if total != len {
        return Err(io(std::io::Error::other(
            "binary changed while it was measured",
        )));
    }
    h.update((config.len() as u64).to_le_bytes());
    h.update(config);
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_attest::{verify, Endorsements, EvidenceError};
    use std::time::SystemTime;

    #[test]
    fn sim_evidence_verifies_with_its_anchor_only() {
        let key = SimHardwareKey::generate();
        let anchor = key.public_key();
        let tee = SimTee::new(key, [7; 48], [9; 32], false);
        let ev = tee.evidence(&[5; 64]).unwrap();
        let ok = Endorsements {
            sim_trust_anchors: vec![anchor],
            ..Default::default()
        };
        let claims = verify(&ev, &ok, SystemTime::now()).unwrap();
        assert_eq!(claims.launch_measurement, vec![7; 48]);
        assert_eq!(claims.workload_data, vec![9; 32]);
        assert_eq!(claims.report_data, [5; 64]);
        assert!(!claims.debug && !claims.hardware_backed);
        let other = Endorsements {
            sim_trust_anchors: vec![SimHardwareKey::generate().public_key()],
            ..Default::default()
        };
        assert!(matches!(
            verify(&ev, &other, SystemTime::now()),
            Err(EvidenceError::UntrustedSigner(_))
        ));
    }

    #[test]
    fn any_tampered_byte_of_sim_evidence_is_rejected() {
        let key = SimHardwareKey::generate();
        let anchors = Endorsements {
            sim_trust_anchors: vec![key.public_key()],
            ..Default::default()
        };
        let ev = SimTee::new(key, [1; 48], [0; 32], true)
            .evidence(&[3; 64])
            .unwrap();
        for i in 0..ev.len() {
            let mut bad = ev.clone();
            bad[i] ^= 0x04;
            assert!(
                verify(&bad, &anchors, SystemTime::now()).is_err(),
                "byte {i}"
            );
        }
        for len in 0..ev.len() {
            assert!(
                verify(&ev[..len], &anchors, SystemTime::now()).is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn measurement_covers_binary_and_config() {
        let dir = std::env::temp_dir().join(format!("cordon-tee-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bin");
        std::fs::write(&bin, b"runtime code").unwrap();
        let m1 = sim_launch_measurement(&bin, b"config a").unwrap();
        assert_ne!(m1, sim_launch_measurement(&bin, b"config b").unwrap());
        std::fs::write(&bin, b"runtime code!").unwrap();
        assert_ne!(m1, sim_launch_measurement(&bin, b"config a").unwrap());
        let mut pre = b"cordon sim launch v1\0".to_vec();
        pre.extend_from_slice(&13u64.to_le_bytes());
        pre.extend_from_slice(b"runtime code!");
        pre.extend_from_slice(&8u64.to_le_bytes());
        pre.extend_from_slice(b"config a");
        let expected: [u8; 48] = Sha384::digest(&pre).into();
        assert_eq!(sim_launch_measurement(&bin, b"config a").unwrap(), expected);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sim_key_file_round_trips_and_debug_hides_secret() {
        let k = SimHardwareKey::generate();
        let back = SimHardwareKey::from_file_contents(&k.to_file_contents()).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        assert!(!format!("{k:?}").contains(k.to_file_contents().trim()));
        assert!(SimHardwareKey::from_file_contents("zz").is_err());
        // The file carries its kind, so that it cannot pass for its public half.
        let text = k.to_file_contents();
        assert!(text.contains(SIM_HARDWARE_KEY_FORMAT), "{}", text.as_str());
        // The older form (one line of hex) still reads, to the same key.
        let legacy = format!("{}\n", hex::encode(k.0.to_bytes()));
        assert_eq!(
            SimHardwareKey::from_file_contents(&legacy)
                .unwrap()
                .public_key(),
            k.public_key()
        );
        // Another kind of file, and a public key that is not the secret's, are refused.
        let other = text.replace(SIM_HARDWARE_KEY_FORMAT, "cordon-owner-key/1");
        assert!(SimHardwareKey::from_file_contents(&other)
            .unwrap_err()
            .to_string()
            .contains("expected \"cordon-sim-hardware-key/1\""));
        let wrong_public = text.replace(
            &hex::encode(k.public_key()),
            &hex::encode(SimHardwareKey::generate().public_key()),
        );
        assert!(SimHardwareKey::from_file_contents(&wrong_public)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
    }
}
