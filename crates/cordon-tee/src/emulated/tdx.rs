//! An emulated Intel TDX platform: a test Intel-style PKI (root CA, PCK CA, PCK certificate with
//! Intel's SGX extensions, TCB signing certificate, CRLs), a quoting enclave with its attestation
//! key, signed collateral, and genuine TDX quote v4 structures for the launch parameters a host
//! sets. **EMULATED, NOT hardware-backed**: every certificate's name says EMULATED, the quote's
//! header user data says so, and a verifier accepts the evidence only when its endorsements name
//! the emulated root ([`EmulatedTdx::root_fingerprint`]).
//!
//! What is modelled, and from where:
//!
//! - the quote: Intel TDX DCAP Quoting Library API, appendix "TD Quote Format" (v4): Quote Header,
//!   TD Quote Body (TD 1.0), Quote Signature Data (ECDSA 256-bit Quote Signature Data Structure)
//!   with certification data type 6 (QE Report Certification Data), which holds the QE report,
//!   its signature, the QE authentication data and certification data type 5 (the PCK chain, PEM);
//! - the QE report: Intel SGX ECDSA Quote Library API, appendix A.4, "Enclave Report Body"
//!   (`REPORTBODY`, 384 bytes), with REPORTDATA = SHA-256(attestation key ‖ QE authentication
//!   data) ‖ 32 zero bytes, signed by the PCK key;
//! - the PCK certificate: Intel SGX PCK Certificate and CRL Profile Specification, "Intel SGX PCK
//!   Certificate" and its SGX Extensions (OID 1.2.840.113741.1.13.1: PPID, TCB, PCE-ID, FMSPC,
//!   SGX Type), issued by a Processor-style CA;
//! - the collateral: Intel PCS API v4 TCB info (v3, `id: TDX`) and QE identity (`id: TD_QE`)
//!   bodies, each signed (ECDSA P-256, raw `r ‖ s`) by the TCB signing key, and the root CA and PCK
//!   CA CRLs, in the JSON form `cordon_attest::dcap::DcapCollateral::from_json` reads;
//! - the kernel side of configfs-tsm for the `tdx_guest` provider ([`ConfigFsTsm::emulated_tdx`]).
//!
//! Limits: there is no TDX module, no SEAM and no isolation; the "hardware" keys are files (or
//! memory) in the host's reach. One platform identity (FMSPC, PPID, SVNs) is fixed below; the TCB
//! status the collateral assigns it, the collateral's validity window and whether the PCK
//! certificate is revoked are chosen with [`CollateralOptions`].

use crate::configfs::ReportFs;
use crate::{ConfigFsTsm, TeeError};
use der::asn1::{BitString, GeneralizedTime, ObjectIdentifier, OctetString, UintRef, UtcTime};
use der::{Any, DecodePem, Encode};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};
use zeroize::Zeroizing;

/// Why the emulator could not be created, opened or used.
#[derive(Debug, Error)]
pub enum EmulatorError {
    #[error("emulated TDX: {op} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("emulated TDX: {} already holds an emulator state ({file}); use open", dir.display())]
    Exists { dir: PathBuf, file: &'static str },
    #[error("emulated TDX: key file {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("emulated TDX: certificate {}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    #[error("emulated TDX: state file {}: {reason}", path.display())]
    State { path: PathBuf, reason: String },
    #[error("emulated TDX: {what} does not fit its encoding: {reason}")]
    Encoding { what: &'static str, reason: String },
    #[error("emulated TDX: signing {what} failed: {reason}")]
    Signing { what: &'static str, reason: String },
    #[error("emulated TDX: {field} {value:?}: {reason}")]
    Option {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// What a host sets when it launches a TD, as measured by the TDX module (TD Quote Body fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxLaunch {
    /// MRTD: the TD's initial contents (firmware).
    pub mr_td: [u8; 48],
    /// MRCONFIGID: the host's 48 bytes of configuration identity (Cordon: SHA-384 of the runtime
    /// configuration).
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3, as the TD's boot chain left them.
    pub rtmrs: [[u8; 48]; 4],
    /// TD_ATTRIBUTES.DEBUG (bit 0): the host can read the TD's memory.
    pub debug: bool,
}

impl Default for TdxLaunch {
    fn default() -> TdxLaunch {
        TdxLaunch {
            mr_td: [0; 48],
            mr_config_id: [0; 48],
            mr_owner: [0; 48],
            mr_owner_config: [0; 48],
            rtmrs: [[0; 48]; 4],
            debug: false,
        }
    }
}

/// The TCB status the emulated collateral assigns the emulated platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmulatedTcbStatus {
    /// The platform meets the newest TCB level.
    UpToDate,
    /// A newer TCB level exists (PCESVN one above the platform's); the platform meets an older
    /// level marked `OutOfDate` with an advisory, as after an Intel TCB recovery.
    OutOfDate,
}

/// The advisory the emulated `OutOfDate` TCB level lists.
pub const EMULATED_ADVISORY: &str = "INTEL-SA-EMULATED";

/// How the collateral is issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollateralOptions {
    /// TCB info and QE identity `issueDate`, CRLs' `thisUpdate`.
    pub issue_date: SystemTime,
    /// TCB info and QE identity `nextUpdate`, CRLs' `nextUpdate`: the collateral expires here.
    pub next_update: SystemTime,
    /// The platform's TCB status in the TCB info.
    pub tcb_status: EmulatedTcbStatus,
    /// Whether the PCK CA's CRL lists the platform's PCK certificate.
    pub revoke_pck: bool,
}

impl CollateralOptions {
    /// Collateral issued an hour before `now`, valid for 30 days (as Intel's), `UpToDate`.
    pub fn fresh(now: SystemTime) -> CollateralOptions {
        CollateralOptions {
            issue_date: now - Duration::from_secs(3_600),
            next_update: now + Duration::from_secs(30 * 86_400),
            tcb_status: EmulatedTcbStatus::UpToDate,
            revoke_pck: false,
        }
    }
}

/// Everything [`EmulatedTdx::generate`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatedTdxOptions {
    pub launch: TdxLaunch,
    pub collateral: CollateralOptions,
    /// Validity of every certificate of the test PKI (`notBefore`, `notAfter`).
    pub certificates_valid: (SystemTime, SystemTime),
}

impl EmulatedTdxOptions {
    /// Default launch (all zero measurements, not debug), [`CollateralOptions::fresh`], and
    /// certificates valid from a day before `now` for ten years.
    pub fn new(now: SystemTime) -> EmulatedTdxOptions {
        EmulatedTdxOptions {
            launch: TdxLaunch::default(),
            collateral: CollateralOptions::fresh(now),
            certificates_valid: (
                now - Duration::from_secs(86_400),
                now + Duration::from_secs(10 * 365 * 86_400),
            ),
        }
    }
}

// The emulated platform's identity and TCB (one platform; see the module docs).

/// FMSPC (PCK certificate SGX extension 1.2.840.113741.1.13.1.4): "EMU" and zeros.
pub const EMULATED_FMSPC: [u8; 6] = [0x45, 0x4D, 0x55, 0x00, 0x00, 0x00];
const PCE_ID: [u8; 2] = [0, 0];
const PPID: [u8; 16] = *b"EMULATED-PPID-00";
/// CPUSVN: the SGX TCB components 1..16 of the PCK certificate's TCB extension.
const CPU_SVN: [u8; 16] = [2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
const PCE_SVN: u16 = 11;
/// TEE_TCB_SVN: TDX module SVN 5, module major version 0 (so the TCB info's `tdxModule` applies,
/// with no `tdxModuleIdentities`), late microcode SVN 2.
const TEE_TCB_SVN: [u8; 16] = [5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// XFAM of a typical TD (x87, SSE, AVX, AVX-512, PKRU, AMX state enabled).
const XFAM: [u8; 8] = [0xE7, 0x02, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00];
/// TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28), which verifiers require; DEBUG is bit 0.
const SEPT_VE_DISABLE: u64 = 1 << 28;
const TD_DEBUG: u64 = 1;
/// The TD QE's identity (QE identity JSON and the QE report): ISVPRODID 2 (TD_QE), ISVSVN 4,
/// ATTRIBUTES INIT | MODE64BIT, MISCSELECT 0.
const QE_ISVPRODID: u16 = 2;
const QE_ISVSVN: u16 = 4;
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Quote header QE vendor id: Intel's (verifiers accept no other).
const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07,
];
/// Quote header user data (20 bytes): says what made the quote.
const HEADER_USER_DATA: [u8; 20] = *b"CORDON EMULATED TDX\0";

fn qe_mrsigner() -> [u8; 32] {
    Sha256::digest(b"cordon EMULATED TD quoting enclave signer").into()
}

fn mr_seam() -> [u8; 48] {
    Sha384::digest(b"cordon EMULATED TDX module").into()
}

/// Certificate subjects: every name says EMULATED.
const ORG: &str = "O=Cordon EMULATED platform - NOT hardware-backed";
const ROOT_CN: &str = "CN=EMULATED SGX Root CA";
const PCK_CA_CN: &str = "CN=EMULATED SGX PCK Processor CA";
const PCK_CN: &str = "CN=EMULATED SGX PCK Certificate";
const TCB_CN: &str = "CN=EMULATED SGX TCB Signing";

/// OIDs: ecdsa-with-SHA256 (RFC 5758), id-ecPublicKey and prime256v1 (RFC 5480), CRL Number
/// (RFC 5280 5.2.3), Intel SGX extensions (PCK Certificate and CRL Profile Specification).
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const PRIME256V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const CRL_NUMBER: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.20");
const SGX_EXTENSIONS: &str = "1.2.840.113741.1.13.1";

/// File names in the state directory.
const STATE_FILE: &str = "emulator.toml";
const ROLES: [Role; 5] = [
    Role::Root,
    Role::PckCa,
    Role::Pck,
    Role::TcbSigning,
    Role::Attestation,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Root,
    PckCa,
    Pck,
    TcbSigning,
    /// The QE's attestation key: no certificate, the QE report vouches for it.
    Attestation,
}

impl Role {
    fn stem(self) -> &'static str {
        match self {
            Role::Root => "root_ca",
            Role::PckCa => "pck_ca",
            Role::Pck => "pck",
            Role::TcbSigning => "tcb_signing",
            Role::Attestation => "attestation",
        }
    }
}

/// A key and, for the PKI roles, its certificate.
struct Party {
    key: SigningKey,
    cert: Option<Issued>,
}

#[derive(Clone)]
struct Issued {
    der: Vec<u8>,
    cert: Certificate,
}

/// The emulated platform: keys, certificates, launch parameters and collateral options.
pub struct EmulatedTdx {
    root: Party,
    pck_ca: Party,
    pck: Party,
    tcb_signing: Party,
    attestation: SigningKey,
    launch: TdxLaunch,
    collateral: CollateralOptions,
    certificates_valid: (SystemTime, SystemTime),
}

impl std::fmt::Debug for EmulatedTdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTdx")
            .field("root_fingerprint", &hex::encode(self.root_fingerprint()))
            .field("launch", &self.launch)
            .field("collateral", &self.collateral)
            .finish_non_exhaustive()
    }
}

impl EmulatedTdx {
    /// A new platform in memory: fresh keys, a test PKI, the given launch and collateral.
    pub fn generate(options: EmulatedTdxOptions) -> Result<EmulatedTdx, EmulatorError> {
        let keys = [(); 5].map(|_| random_key());
        let [root_key, pck_ca_key, pck_key, tcb_key, attestation] = keys;
        let valid = options.certificates_valid;
        let root_name = name(ROOT_CN)?;
        let root = issue(
            &root_key,
            &root_name,
            &root_key,
            &root_name,
            valid,
            CertKind::Root,
        )?;
        let pck_ca_name = name(PCK_CA_CN)?;
        let pck_ca = issue(
            &pck_ca_key,
            &pck_ca_name,
            &root_key,
            &root_name,
            valid,
            CertKind::PckCa,
        )?;
        let pck = issue(
            &pck_key,
            &name(PCK_CN)?,
            &pck_ca_key,
            &pck_ca_name,
            valid,
            CertKind::Pck,
        )?;
        let tcb = issue(
            &tcb_key,
            &name(TCB_CN)?,
            &root_key,
            &root_name,
            valid,
            CertKind::TcbSigning,
        )?;
        Ok(EmulatedTdx {
            root: Party {
                key: root_key,
                cert: Some(root),
            },
            pck_ca: Party {
                key: pck_ca_key,
                cert: Some(pck_ca),
            },
            pck: Party {
                key: pck_key,
                cert: Some(pck),
            },
            tcb_signing: Party {
                key: tcb_key,
                cert: Some(tcb),
            },
            attestation,
            launch: options.launch,
            collateral: options.collateral,
            certificates_valid: valid,
        })
    }

    /// [`EmulatedTdx::generate`], then writes the state to `dir` (created if missing): one key
    /// file per key (hex, mode 0600), one PEM file per certificate, and `emulator.toml` with the
    /// launch parameters and collateral options. Refuses a directory that already holds a state.
    pub fn create(dir: &Path, options: EmulatedTdxOptions) -> Result<EmulatedTdx, EmulatorError> {
        let state = dir.join(STATE_FILE);
        if state.exists() {
            return Err(EmulatorError::Exists {
                dir: dir.to_path_buf(),
                file: STATE_FILE,
            });
        }
        std::fs::create_dir_all(dir).map_err(|source| EmulatorError::Io {
            path: dir.to_path_buf(),
            op: "mkdir",
            source,
        })?;
        let tdx = EmulatedTdx::generate(options)?;
        for role in ROLES {
            let key_path = dir.join(format!("{}.key", role.stem()));
            let text = Zeroizing::new(format!("{}\n", hex::encode(tdx.party_key(role).to_bytes())));
            write_private(&key_path, text.as_bytes())?;
            if let Some(issued) = tdx.party_cert(role) {
                let pem = pem_certificate(&issued.der)?;
                write_file(&dir.join(format!("{}.pem", role.stem())), pem.as_bytes())?;
            }
        }
        tdx.save_state(dir)?;
        Ok(tdx)
    }

    /// Reads a state written by [`EmulatedTdx::create`]: every key, every certificate (which
    /// must hold its key's public key), and `emulator.toml`.
    pub fn open(dir: &Path) -> Result<EmulatedTdx, EmulatorError> {
        let state_path = dir.join(STATE_FILE);
        let text = read_text(&state_path)?;
        let state: StateFile = toml::from_str(&text).map_err(|e| EmulatorError::State {
            path: state_path.clone(),
            reason: e.to_string(),
        })?;
        let (launch, collateral, certificates_valid) = state.decode(&state_path)?;
        let mut parties = Vec::new();
        for role in ROLES {
            let key_path = dir.join(format!("{}.key", role.stem()));
            let key = read_key(&key_path)?;
            let cert = if role == Role::Attestation {
                None
            } else {
                let cert_path = dir.join(format!("{}.pem", role.stem()));
                Some(read_cert(&cert_path, &key)?)
            };
            parties.push(Party { key, cert });
        }
        let mut parties = parties.into_iter();
        let mut next = || {
            parties.next().ok_or_else(|| EmulatorError::State {
                path: state_path.clone(),
                reason: "missing key".into(),
            })
        };
        let (root, pck_ca, pck, tcb_signing) = (next()?, next()?, next()?, next()?);
        let attestation = next()?.key;
        Ok(EmulatedTdx {
            root,
            pck_ca,
            pck,
            tcb_signing,
            attestation,
            launch,
            collateral,
            certificates_valid,
        })
    }

    /// Writes the launch parameters and collateral options to `dir/emulator.toml` (after
    /// [`EmulatedTdx::set_launch`] or [`EmulatedTdx::set_collateral`]).
    pub fn save_state(&self, dir: &Path) -> Result<(), EmulatorError> {
        let state = StateFile::encode(self);
        let text = toml::to_string(&state).map_err(|e| EmulatorError::Encoding {
            what: "emulator.toml",
            reason: e.to_string(),
        })?;
        let text = format!(
            "# EMULATED Intel TDX platform for tests: NOT hardware-backed.\n\
             # Keys (*.key) and certificates (*.pem) of its test PKI lie beside this file.\n{text}"
        );
        write_file(&dir.join(STATE_FILE), text.as_bytes())
    }

    pub fn launch(&self) -> &TdxLaunch {
        &self.launch
    }

    /// Sets the launch parameters of the TD (as a host relaunching it with another image or
    /// configuration would).
    pub fn set_launch(&mut self, launch: TdxLaunch) {
        self.launch = launch;
    }

    pub fn collateral_options(&self) -> &CollateralOptions {
        &self.collateral
    }

    /// Sets how [`EmulatedTdx::collateral_json`] issues the collateral.
    pub fn set_collateral(&mut self, options: CollateralOptions) {
        self.collateral = options;
    }

    /// The emulated root CA certificate (DER).
    pub fn root_der(&self) -> &[u8] {
        self.root
            .cert
            .as_ref()
            .map(|c| c.der.as_slice())
            .unwrap_or_default()
    }

    /// SHA-256 of the emulated root's DER: what `Endorsements::emulated_roots` and a policy's
    /// `emulated_roots` name to accept this platform's evidence.
    pub fn root_fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.root_der()).into()
    }

    /// A TDX quote (v4) for `report_data`, signed by the QE's attestation key, whose QE report the
    /// PCK key signs, with the PCK chain in the quote.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, EmulatorError> {
        let mut signed = header();
        signed.extend_from_slice(&self.td_quote_body(report_data));
        let signature = sign(&self.attestation, &signed, "the quote")?;
        let attestation_key = public_key_xy(&self.attestation);
        // QE authentication data: 32 bytes, as Intel's QE writes (verifiers require 32).
        let qe_auth_data: [u8; 32] = Sha256::digest(b"cordon EMULATED QE auth data").into();
        let qe_report = qe_report(&attestation_key, &qe_auth_data);
        let qe_report_signature = sign(&self.pck.key, &qe_report, "the QE report")?;
        let chain = self.pck_chain_pem()?;

        // QE Report Certification Data (certification data type 6's body).
        let mut qe_cert_data = Vec::new();
        qe_cert_data.extend_from_slice(&qe_report);
        qe_cert_data.extend_from_slice(&qe_report_signature);
        qe_cert_data.extend_from_slice(&u16_len(qe_auth_data.len(), "QE auth data")?);
        qe_cert_data.extend_from_slice(&qe_auth_data);
        qe_cert_data.extend_from_slice(&5u16.to_le_bytes());
        qe_cert_data.extend_from_slice(&u32_len(chain.len(), "the PCK chain")?);
        qe_cert_data.extend_from_slice(chain.as_bytes());

        // ECDSA 256-bit Quote Signature Data Structure (v4).
        let mut sig_data = Vec::new();
        sig_data.extend_from_slice(&signature);
        sig_data.extend_from_slice(&attestation_key);
        sig_data.extend_from_slice(&6u16.to_le_bytes());
        sig_data.extend_from_slice(&u32_len(qe_cert_data.len(), "QE certification data")?);
        sig_data.extend_from_slice(&qe_cert_data);

        let mut quote = signed;
        quote.extend_from_slice(&u32_len(sig_data.len(), "the signature data")?);
        quote.extend_from_slice(&sig_data);
        Ok(quote)
    }

    /// The collateral for this platform's quotes, signed by the emulated TCB signing key, as the
    /// JSON `DcapCollateral::from_json` reads (byte fields hex).
    pub fn collateral_json(&self) -> Result<Vec<u8>, EmulatorError> {
        let o = &self.collateral;
        let (issue, next) = (rfc3339(o.issue_date)?, rfc3339(o.next_update)?);
        let tcb_info = tcb_info_json(&issue, &next, o.tcb_status);
        let qe_identity = qe_identity_json(&issue, &next);
        let tcb_info_signature = sign(&self.tcb_signing.key, tcb_info.as_bytes(), "TCB info")?;
        let qe_identity_signature =
            sign(&self.tcb_signing.key, qe_identity.as_bytes(), "QE identity")?;
        let root_crl = self.crl(&self.root, Vec::new(), "the root CA CRL")?;
        let revoked = match (o.revoke_pck, &self.pck.cert) {
            (true, Some(pck)) => vec![pck.cert.tbs_certificate.serial_number.clone()],
            _ => Vec::new(),
        };
        let pck_crl = self.crl(&self.pck_ca, revoked, "the PCK CRL")?;
        let tcb_chain = self.chain_pem(&[&self.tcb_signing, &self.root])?;
        let json = serde_json::json!({
            "pck_crl_issuer_chain": self.chain_pem(&[&self.pck_ca, &self.root])?,
            "root_ca_crl": hex::encode(root_crl),
            "pck_crl": hex::encode(pck_crl),
            "tcb_info_issuer_chain": tcb_chain,
            "tcb_info": tcb_info,
            "tcb_info_signature": hex::encode(tcb_info_signature),
            "qe_identity_issuer_chain": tcb_chain,
            "qe_identity": qe_identity,
            "qe_identity_signature": hex::encode(qe_identity_signature),
        });
        serde_json::to_vec_pretty(&json).map_err(|e| EmulatorError::Encoding {
            what: "the collateral JSON",
            reason: e.to_string(),
        })
    }

    /// TD Quote Body (TD 1.0, 584 bytes): TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES,
    /// TDATTRIBUTES, XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3, REPORTDATA.
    fn td_quote_body(&self, report_data: &[u8; 64]) -> Vec<u8> {
        let l = &self.launch;
        let attributes = SEPT_VE_DISABLE | if l.debug { TD_DEBUG } else { 0 };
        let mut body = Vec::with_capacity(584);
        body.extend_from_slice(&TEE_TCB_SVN);
        body.extend_from_slice(&mr_seam());
        // MRSIGNERSEAM: zero for an Intel-signed TDX module (the TCB info's tdxModule.mrsigner).
        body.extend_from_slice(&[0; 48]);
        body.extend_from_slice(&[0; 8]); // SEAMATTRIBUTES
        body.extend_from_slice(&attributes.to_le_bytes());
        body.extend_from_slice(&XFAM);
        body.extend_from_slice(&l.mr_td);
        body.extend_from_slice(&l.mr_config_id);
        body.extend_from_slice(&l.mr_owner);
        body.extend_from_slice(&l.mr_owner_config);
        for rtmr in &l.rtmrs {
            body.extend_from_slice(rtmr);
        }
        body.extend_from_slice(report_data);
        body
    }

    fn party_key(&self, role: Role) -> &SigningKey {
        match role {
            Role::Root => &self.root.key,
            Role::PckCa => &self.pck_ca.key,
            Role::Pck => &self.pck.key,
            Role::TcbSigning => &self.tcb_signing.key,
            Role::Attestation => &self.attestation,
        }
    }

    fn party_cert(&self, role: Role) -> Option<&Issued> {
        match role {
            Role::Root => self.root.cert.as_ref(),
            Role::PckCa => self.pck_ca.cert.as_ref(),
            Role::Pck => self.pck.cert.as_ref(),
            Role::TcbSigning => self.tcb_signing.cert.as_ref(),
            Role::Attestation => None,
        }
    }

    /// PCK certificate, PCK CA, root (certification data type 5).
    fn pck_chain_pem(&self) -> Result<String, EmulatorError> {
        self.chain_pem(&[&self.pck, &self.pck_ca, &self.root])
    }

    fn chain_pem(&self, parties: &[&Party]) -> Result<String, EmulatorError> {
        let mut out = String::new();
        for party in parties {
            if let Some(issued) = &party.cert {
                out.push_str(&pem_certificate(&issued.der)?);
            }
        }
        Ok(out)
    }

    /// A CRL (RFC 5280 5.1, v2, with a CRL Number) by `issuer` over the collateral window.
    fn crl(
        &self,
        issuer: &Party,
        revoked: Vec<SerialNumber>,
        what: &'static str,
    ) -> Result<Vec<u8>, EmulatorError> {
        let issuer_cert = issuer.cert.as_ref().ok_or(EmulatorError::Encoding {
            what,
            reason: "its issuer has no certificate".into(),
        })?;
        let this_update = x509_time(self.collateral.issue_date, what)?;
        let revoked_certificates = (!revoked.is_empty()).then(|| {
            revoked
                .into_iter()
                .map(|serial_number| RevokedCert {
                    serial_number,
                    revocation_date: this_update,
                    crl_entry_extensions: None,
                })
                .collect()
        });
        let tbs = TbsCertList {
            version: Version::V2,
            signature: ecdsa_with_sha256(),
            issuer: issuer_cert.cert.tbs_certificate.subject.clone(),
            this_update,
            next_update: Some(x509_time(self.collateral.next_update, what)?),
            revoked_certificates,
            crl_extensions: Some(vec![Extension {
                extn_id: CRL_NUMBER,
                critical: false,
                extn_value: octets(der_integer(1), what)?,
            }]),
        };
        let tbs_der = tbs.to_der().map_err(|e| encoding(what, e))?;
        let signature = der_signature(&sign(&issuer.key, &tbs_der, what)?, what)?;
        CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: ecdsa_with_sha256(),
            signature: BitString::from_bytes(&signature).map_err(|e| encoding(what, e))?,
        }
        .to_der()
        .map_err(|e| encoding(what, e))
    }
}

/// Quote Header (48 bytes): version 4, attestation key type 2 (ECDSA-256-with-P-256), TEE type
/// 0x81 (TDX), QE SVN, PCE SVN, QE vendor id, user data.
fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(48);
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&0x81u32.to_le_bytes());
    h.extend_from_slice(&QE_ISVSVN.to_le_bytes());
    h.extend_from_slice(&PCE_SVN.to_le_bytes());
    h.extend_from_slice(&INTEL_QE_VENDOR_ID);
    h.extend_from_slice(&HEADER_USER_DATA);
    h
}

/// Enclave Report Body (`REPORTBODY`, 384 bytes) of the QE: CPUSVN @0, MISCSELECT @16,
/// ATTRIBUTES @48, MRENCLAVE @64, MRSIGNER @128, ISVPRODID @256, ISVSVN @258, REPORTDATA @320.
fn qe_report(attestation_key: &[u8; 64], qe_auth_data: &[u8]) -> Vec<u8> {
    let mut report = vec![0u8; 384];
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = report.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &CPU_SVN);
    put(48, &QE_ATTRIBUTES);
    put(64, &Sha256::digest(b"cordon EMULATED TD quoting enclave"));
    put(128, &qe_mrsigner());
    put(256, &QE_ISVPRODID.to_le_bytes());
    put(258, &QE_ISVSVN.to_le_bytes());
    let mut hash = Sha256::new();
    hash.update(attestation_key);
    hash.update(qe_auth_data);
    put(320, &hash.finalize());
    report
}

/// TCB info (Intel PCS API v4 `GET /tdx/certification/v4/tcb`, `tcbInfo` v3). Its UpToDate level
/// is met by the platform, or (for [`EmulatedTcbStatus::OutOfDate`]) needs a PCESVN one above it,
/// leaving the platform at the older, `OutOfDate` level.
fn tcb_info_json(issue: &str, next: &str, status: EmulatedTcbStatus) -> String {
    let components = |svns: &[u8; 16]| -> Vec<serde_json::Value> {
        svns.iter()
            .map(|svn| serde_json::json!({ "svn": svn }))
            .collect()
    };
    let level = |pce_svn: u16, cpu: &[u8; 16], tdx: &[u8; 16], status: &str, date: &str| {
        let mut level = serde_json::json!({
            "tcb": {
                "sgxtcbcomponents": components(cpu),
                "pcesvn": pce_svn,
                "tdxtcbcomponents": components(tdx),
            },
            "tcbDate": date,
            "tcbStatus": status,
        });
        if status == "OutOfDate" {
            level["advisoryIDs"] = serde_json::json!([EMULATED_ADVISORY]);
        }
        level
    };
    let levels = match status {
        EmulatedTcbStatus::UpToDate => vec![
            level(PCE_SVN, &CPU_SVN, &TEE_TCB_SVN, "UpToDate", issue),
            level(
                PCE_SVN - 1,
                &CPU_SVN,
                &TEE_TCB_SVN,
                "OutOfDate",
                "2018-01-04T00:00:00Z",
            ),
        ],
        EmulatedTcbStatus::OutOfDate => vec![
            level(PCE_SVN + 1, &CPU_SVN, &TEE_TCB_SVN, "UpToDate", issue),
            level(
                PCE_SVN,
                &CPU_SVN,
                &TEE_TCB_SVN,
                "OutOfDate",
                "2018-01-04T00:00:00Z",
            ),
        ],
    };
    let info = serde_json::json!({
        "id": "TDX",
        "version": 3,
        "issueDate": issue,
        "nextUpdate": next,
        "fmspc": hex::encode_upper(EMULATED_FMSPC),
        "pceId": hex::encode_upper(PCE_ID),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {
            "mrsigner": hex::encode_upper([0u8; 48]),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tcbLevels": levels,
    });
    info.to_string()
}

/// QE identity (Intel PCS API v4 `GET /tdx/certification/v4/qe/identity`, `enclaveIdentity` v2,
/// `id: TD_QE`): the emulated QE's MRSIGNER, ISVPRODID, attributes, and one UpToDate level.
fn qe_identity_json(issue: &str, next: &str) -> String {
    serde_json::json!({
        "id": "TD_QE",
        "version": 2,
        "issueDate": issue,
        "nextUpdate": next,
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": hex::encode_upper(QE_ATTRIBUTES),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(qe_mrsigner()),
        "isvprodid": QE_ISVPRODID,
        "tcbLevels": [
            { "tcb": { "isvsvn": QE_ISVSVN }, "tcbDate": issue, "tcbStatus": "UpToDate" }
        ],
    })
    .to_string()
}

// ---- the test PKI -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum CertKind {
    Root,
    PckCa,
    Pck,
    TcbSigning,
}

fn random_key() -> SigningKey {
    loop {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        // A seed outside 1..n-1 (chance about 2^-32) is drawn again.
        if let Ok(key) = SigningKey::from_slice(seed.as_ref()) {
            return key;
        }
    }
}

fn name(cn: &str) -> Result<Name, EmulatorError> {
    Name::from_str(&format!("{cn},{ORG}")).map_err(|e| encoding("a certificate name", e))
}

fn encoding(what: &'static str, e: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Encoding {
        what,
        reason: e.to_string(),
    }
}

fn ecdsa_with_sha256() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: ECDSA_WITH_SHA256,
        parameters: None,
    }
}

/// The uncompressed SEC1 point (65 bytes, 0x04 ‖ x ‖ y).
fn sec1_point(key: &SigningKey) -> Vec<u8> {
    key.verifying_key().to_sec1_point(false).as_bytes().to_vec()
}

/// The attestation key as the quote carries it: x ‖ y (64 bytes).
fn public_key_xy(key: &SigningKey) -> [u8; 64] {
    let mut xy = [0u8; 64];
    if let Some(point) = sec1_point(key).get(1..65) {
        xy.copy_from_slice(point);
    }
    xy
}

fn spki(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, EmulatorError> {
    let what = "a public key";
    Ok(SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid: ID_EC_PUBLIC_KEY,
            parameters: Some(Any::encode_from(&PRIME256V1).map_err(|e| encoding(what, e))?),
        },
        subject_public_key: BitString::from_bytes(&sec1_point(key))
            .map_err(|e| encoding(what, e))?,
    })
}

/// ECDSA P-256 with SHA-256; the signature as raw `r ‖ s` (64 bytes), as quotes and collateral
/// carry it.
fn sign(key: &SigningKey, message: &[u8], what: &'static str) -> Result<Vec<u8>, EmulatorError> {
    let signature: Signature = key.try_sign(message).map_err(|e| EmulatorError::Signing {
        what,
        reason: e.to_string(),
    })?;
    Ok(signature.to_bytes().to_vec())
}

/// `r ‖ s` → `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` (RFC 5480), as X.509
/// certificates and CRLs carry it.
fn der_signature(raw: &[u8], what: &'static str) -> Result<Vec<u8>, EmulatorError> {
    let (r, s) = raw.split_at_checked(32).ok_or(EmulatorError::Encoding {
        what,
        reason: "signature shorter than 64 bytes".into(),
    })?;
    let mut content = Vec::new();
    for half in [r, s] {
        let int = UintRef::new(half).map_err(|e| encoding(what, e))?;
        content.extend_from_slice(&int.to_der().map_err(|e| encoding(what, e))?);
    }
    Ok(tlv(0x30, &content))
}

/// A DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

/// A non-negative DER INTEGER.
fn der_integer(value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut content = bytes.get(skip..).unwrap_or_default().to_vec();
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    tlv(0x02, &content)
}

fn oid(arcs: &str) -> Result<Vec<u8>, EmulatorError> {
    let what = "an SGX extension OID";
    ObjectIdentifier::new(arcs)
        .map_err(|e| encoding(what, e))?
        .to_der()
        .map_err(|e| encoding(what, e))
}

/// `SEQUENCE { OID, value }`, an entry of the SGX extensions.
fn sgx_entry(arcs: &str, value: Vec<u8>) -> Result<Vec<u8>, EmulatorError> {
    let mut content = oid(arcs)?;
    content.extend_from_slice(&value);
    Ok(tlv(0x30, &content))
}

/// Intel SGX PCK Certificate and CRL Profile Specification, "SGX Extensions"
/// (1.2.840.113741.1.13.1): PPID (.1), TCB (.2: SGX TCB components .2.1-.2.16, PCESVN .2.17,
/// CPUSVN .2.18), PCE-ID (.3), FMSPC (.4), SGX Type (.5, Standard).
fn sgx_extensions() -> Result<Vec<u8>, EmulatorError> {
    let x = SGX_EXTENSIONS;
    let mut tcb = Vec::new();
    for (i, svn) in CPU_SVN.iter().enumerate() {
        tcb.extend(sgx_entry(
            &format!("{x}.2.{}", i + 1),
            der_integer((*svn).into()),
        )?);
    }
    tcb.extend(sgx_entry(
        &format!("{x}.2.17"),
        der_integer(PCE_SVN.into()),
    )?);
    tcb.extend(sgx_entry(&format!("{x}.2.18"), tlv(0x04, &CPU_SVN))?);
    let mut all = Vec::new();
    all.extend(sgx_entry(&format!("{x}.1"), tlv(0x04, &PPID))?);
    all.extend(sgx_entry(&format!("{x}.2"), tlv(0x30, &tcb))?);
    all.extend(sgx_entry(&format!("{x}.3"), tlv(0x04, &PCE_ID))?);
    all.extend(sgx_entry(&format!("{x}.4"), tlv(0x04, &EMULATED_FMSPC))?);
    all.extend(sgx_entry(&format!("{x}.5"), tlv(0x0A, &[0]))?);
    Ok(tlv(0x30, &all))
}

fn octets(value: Vec<u8>, what: &'static str) -> Result<OctetString, EmulatorError> {
    OctetString::new(value).map_err(|e| encoding(what, e))
}

/// UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5), in whole seconds.
fn x509_time(t: SystemTime, what: &'static str) -> Result<Time, EmulatorError> {
    let secs = Duration::from_secs(
        t.duration_since(UNIX_EPOCH)
            .map_err(|e| encoding(what, e))?
            .as_secs(),
    );
    match UtcTime::from_unix_duration(secs) {
        Ok(utc) => Ok(Time::UtcTime(utc)),
        Err(_) => GeneralizedTime::from_unix_duration(secs)
            .map(Time::GeneralTime)
            .map_err(|e| encoding(what, e)),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as Intel's collateral writes dates.
fn rfc3339(t: SystemTime) -> Result<String, EmulatorError> {
    let what = "a collateral date";
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| encoding(what, e))?;
    let d = der::DateTime::from_unix_duration(Duration::from_secs(secs.as_secs()))
        .map_err(|e| encoding(what, e))?;
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        d.month(),
        d.day(),
        d.hour(),
        d.minutes(),
        d.seconds()
    ))
}

/// A certificate for `subject_key` signed by `issuer_key`. Extensions as Intel's PKI has them:
/// CAs with basic constraints CA (path length 1 for the root, 0 for the PCK CA) and key usage
/// keyCertSign | cRLSign; end entities CA:false with digitalSignature | nonRepudiation; the PCK
/// certificate with the SGX extensions.
fn issue(
    subject_key: &SigningKey,
    subject: &Name,
    issuer_key: &SigningKey,
    issuer: &Name,
    (not_before, not_after): (SystemTime, SystemTime),
    kind: CertKind,
) -> Result<Issued, EmulatorError> {
    let what = "a certificate";
    let ca = matches!(kind, CertKind::Root | CertKind::PckCa);
    let basic = BasicConstraints {
        ca,
        path_len_constraint: match kind {
            CertKind::Root => Some(1),
            CertKind::PckCa => Some(0),
            _ => None,
        },
    };
    let usage = if ca {
        KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
    } else {
        KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation)
    };
    let mut extensions = vec![
        Extension {
            extn_id: ObjectIdentifier::new_unwrap("2.5.29.19"),
            critical: true,
            extn_value: octets(basic.to_der().map_err(|e| encoding(what, e))?, what)?,
        },
        Extension {
            extn_id: ObjectIdentifier::new_unwrap("2.5.29.15"),
            critical: true,
            extn_value: octets(usage.to_der().map_err(|e| encoding(what, e))?, what)?,
        },
    ];
    if kind == CertKind::Pck {
        extensions.push(Extension {
            extn_id: ObjectIdentifier::new(SGX_EXTENSIONS).map_err(|e| encoding(what, e))?,
            critical: false,
            extn_value: octets(sgx_extensions()?, what)?,
        });
    }
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    // Positive and without a leading zero byte (RFC 5280 4.1.2.2).
    serial[0] = (serial[0] & 0x7F) | 0x01;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(|e| encoding(what, e))?,
        signature: ecdsa_with_sha256(),
        issuer: issuer.clone(),
        validity: Validity {
            not_before: x509_time(not_before, what)?,
            not_after: x509_time(not_after, what)?,
        },
        subject: subject.clone(),
        subject_public_key_info: spki(subject_key)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(|e| encoding(what, e))?;
    let signature = der_signature(&sign(issuer_key, &tbs_der, what)?, what)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: ecdsa_with_sha256(),
        signature: BitString::from_bytes(&signature).map_err(|e| encoding(what, e))?,
    };
    let der = cert.to_der().map_err(|e| encoding(what, e))?;
    Ok(Issued { der, cert })
}

fn pem_certificate(der: &[u8]) -> Result<String, EmulatorError> {
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
        .map_err(|e| encoding("a PEM certificate", e))
}

fn u16_len(len: usize, what: &'static str) -> Result<[u8; 2], EmulatorError> {
    u16::try_from(len)
        .map(u16::to_le_bytes)
        .map_err(|e| encoding(what, e))
}

fn u32_len(len: usize, what: &'static str) -> Result<[u8; 4], EmulatorError> {
    u32::try_from(len)
        .map(u32::to_le_bytes)
        .map_err(|e| encoding(what, e))
}

// ---- the state directory -------------------------------------------------------------------

/// `emulator.toml`: measurements as hex, times as Unix seconds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    launch: LaunchFile,
    collateral: CollateralFile,
    certificates: CertificatesFile,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LaunchFile {
    mr_td: String,
    mr_config_id: String,
    mr_owner: String,
    mr_owner_config: String,
    rtmrs: Vec<String>,
    debug: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollateralFile {
    issue_date: u64,
    next_update: u64,
    tcb_status: EmulatedTcbStatus,
    revoke_pck: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificatesFile {
    not_before: u64,
    not_after: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl StateFile {
    fn encode(tdx: &EmulatedTdx) -> StateFile {
        let l = &tdx.launch;
        let c = &tdx.collateral;
        StateFile {
            launch: LaunchFile {
                mr_td: hex::encode(l.mr_td),
                mr_config_id: hex::encode(l.mr_config_id),
                mr_owner: hex::encode(l.mr_owner),
                mr_owner_config: hex::encode(l.mr_owner_config),
                rtmrs: l.rtmrs.iter().map(hex::encode).collect(),
                debug: l.debug,
            },
            collateral: CollateralFile {
                issue_date: unix(c.issue_date),
                next_update: unix(c.next_update),
                tcb_status: c.tcb_status,
                revoke_pck: c.revoke_pck,
            },
            certificates: CertificatesFile {
                not_before: unix(tdx.certificates_valid.0),
                not_after: unix(tdx.certificates_valid.1),
            },
        }
    }

    #[allow(clippy::type_complexity)]
    fn decode(
        &self,
        path: &Path,
    ) -> Result<(TdxLaunch, CollateralOptions, (SystemTime, SystemTime)), EmulatorError> {
        let m48 = |field: &'static str, text: &str| -> Result<[u8; 48], EmulatorError> {
            let bad = |reason: String| EmulatorError::State {
                path: path.to_path_buf(),
                reason: format!("`{field}` {text:?}: {reason}"),
            };
            let bytes = hex::decode(text).map_err(|e| bad(format!("not hex: {e}")))?;
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad(format!("{} bytes, expected 48", bytes.len())))
        };
        let l = &self.launch;
        let [r0, r1, r2, r3] = l.rtmrs.as_slice() else {
            return Err(EmulatorError::State {
                path: path.to_path_buf(),
                reason: format!("`rtmrs` has {} entries, expected 4", l.rtmrs.len()),
            });
        };
        let launch = TdxLaunch {
            mr_td: m48("mr_td", &l.mr_td)?,
            mr_config_id: m48("mr_config_id", &l.mr_config_id)?,
            mr_owner: m48("mr_owner", &l.mr_owner)?,
            mr_owner_config: m48("mr_owner_config", &l.mr_owner_config)?,
            rtmrs: [
                m48("rtmrs[0]", r0)?,
                m48("rtmrs[1]", r1)?,
                m48("rtmrs[2]", r2)?,
                m48("rtmrs[3]", r3)?,
            ],
            debug: l.debug,
        };
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        let c = &self.collateral;
        let collateral = CollateralOptions {
            issue_date: at(c.issue_date),
            next_update: at(c.next_update),
            tcb_status: c.tcb_status,
            revoke_pck: c.revoke_pck,
        };
        Ok((
            launch,
            collateral,
            (
                at(self.certificates.not_before),
                at(self.certificates.not_after),
            ),
        ))
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), EmulatorError> {
    std::fs::write(path, data).map_err(|source| EmulatorError::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    })
}

/// Creates `path` with mode 0600 (the owner alone may read the key) and writes `data`.
fn write_private(path: &Path, data: &[u8]) -> Result<(), EmulatorError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let io = |source| EmulatorError::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(data).map_err(io)
}

fn read_text(path: &Path) -> Result<String, EmulatorError> {
    std::fs::read_to_string(path).map_err(|source| EmulatorError::Io {
        path: path.to_path_buf(),
        op: "read",
        source,
    })
}

fn read_key(path: &Path) -> Result<SigningKey, EmulatorError> {
    let text = Zeroizing::new(read_text(path)?);
    let bad = |reason: String| EmulatorError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|e| bad(format!("not hex: {e}")))?);
    if bytes.len() != 32 {
        return Err(bad(format!(
            "{} bytes, expected a 32-byte P-256 scalar",
            bytes.len()
        )));
    }
    SigningKey::from_slice(&bytes).map_err(|_| bad("not a valid P-256 private key".into()))
}

fn read_cert(path: &Path, key: &SigningKey) -> Result<Issued, EmulatorError> {
    let text = read_text(path)?;
    let bad = |reason: String| EmulatorError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let cert = Certificate::from_pem(text.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let der = cert.to_der().map_err(|e| bad(e.to_string()))?;
    let public = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .unwrap_or_default();
    if public != sec1_point(key).as_slice() {
        return Err(bad(format!(
            "holds another public key than {}",
            path.with_extension("key").display()
        )));
    }
    Ok(Issued { der, cert })
}

// ---- configfs-tsm ------------------------------------------------------------------------------

/// Where the emulated configfs-tsm report interface claims to live (it has no files).
pub const EMULATED_TSM_BASE: &str = "/emulated-tdx/sys/kernel/config/tsm/report";

/// The kernel side of configfs-tsm for `tdx_guest` (`Documentation/ABI/testing/configfs-tsm`):
/// `mkdir` under the base makes a report whose `generation` is 0; each write of `inblob` (at most
/// 64 bytes, zero-padded to TDREPORT's REPORTDATA) increments it; `outblob` is a quote generated
/// on read for the current `inblob`; `provider` reads `tdx_guest`; `privlevel` does not exist
/// (TDX has none); `rmdir` removes the report.
struct EmulatedTsm {
    base: PathBuf,
    tdx: Arc<EmulatedTdx>,
    reports: Mutex<BTreeMap<PathBuf, TsmReport>>,
}

#[derive(Default)]
struct TsmReport {
    generation: u64,
    inblob: Option<[u8; 64]>,
}

fn io_err(kind: io::ErrorKind) -> io::Error {
    io::Error::from(kind)
}

impl EmulatedTsm {
    fn split<'p>(&self, path: &'p Path) -> io::Result<(&'p Path, String)> {
        let dir = path.parent().ok_or(io_err(io::ErrorKind::NotFound))?;
        let name = path.file_name().ok_or(io_err(io::ErrorKind::NotFound))?;
        Ok((dir, name.to_string_lossy().into_owned()))
    }

    fn reports(&self) -> io::Result<std::sync::MutexGuard<'_, BTreeMap<PathBuf, TsmReport>>> {
        self.reports
            .lock()
            .map_err(|_| io::Error::other("emulated configfs-tsm state poisoned"))
    }
}

impl ReportFs for EmulatedTsm {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        if path.parent() != Some(self.base.as_path()) {
            return Err(io_err(io::ErrorKind::NotFound));
        }
        let mut reports = self.reports()?;
        if reports.contains_key(path) {
            return Err(io_err(io::ErrorKind::AlreadyExists));
        }
        reports.insert(path.to_path_buf(), TsmReport::default());
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.reports()?
            .remove(path)
            .map(|_| ())
            .ok_or(io_err(io::ErrorKind::NotFound))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let (dir, name) = self.split(path)?;
        let inblob = {
            let reports = self.reports()?;
            let report = reports.get(dir).ok_or(io_err(io::ErrorKind::NotFound))?;
            match name.as_str() {
                "generation" => return Ok(format!("{}\n", report.generation).into_bytes()),
                "provider" => return Ok(b"tdx_guest\n".to_vec()),
                "outblob" => report.inblob.ok_or(io_err(io::ErrorKind::InvalidInput))?,
                "inblob" => return Err(io_err(io::ErrorKind::PermissionDenied)),
                _ => return Err(io_err(io::ErrorKind::NotFound)),
            }
        };
        self.tdx
            .quote(&inblob)
            .map_err(|e| io::Error::other(e.to_string()))
    }

    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let (dir, name) = self.split(path)?;
        let mut reports = self.reports()?;
        let report = reports
            .get_mut(dir)
            .ok_or(io_err(io::ErrorKind::NotFound))?;
        match name.as_str() {
            "inblob" => {
                let mut blob = [0u8; 64];
                blob.get_mut(..data.len())
                    .ok_or(io_err(io::ErrorKind::InvalidInput))?
                    .copy_from_slice(data);
                report.inblob = Some(blob);
                report.generation += 1;
                Ok(())
            }
            "generation" | "provider" | "outblob" => Err(io_err(io::ErrorKind::PermissionDenied)),
            _ => Err(io_err(io::ErrorKind::NotFound)),
        }
    }
}

impl ConfigFsTsm {
    /// configfs-tsm on the emulated TDX platform: the same provider code as on a real TD
    /// ([`ConfigFsTsm::open`]), over a model of the kernel's `tdx_guest` report interface whose
    /// quotes `tdx` makes. Its evidence bundle ships `tdx`'s collateral. **EMULATED, NOT
    /// hardware-backed.**
    pub fn emulated_tdx(tdx: EmulatedTdx) -> Result<ConfigFsTsm, TeeError> {
        let tdx = Arc::new(tdx);
        let fs = Arc::new(EmulatedTsm {
            base: PathBuf::from(EMULATED_TSM_BASE),
            tdx: tdx.clone(),
            reports: Mutex::new(BTreeMap::new()),
        });
        let tsm = ConfigFsTsm::open_with(PathBuf::from(EMULATED_TSM_BASE), fs)?.mark_emulated();
        Ok(tsm.with_dcap_collateral(Arc::new(move || {
            tdx.collateral_json()
                .map_err(|e| TeeError::Emulated(e.to_string()))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EvidenceProvider;
    use der::Decode;

    fn tsm() -> EmulatedTsm {
        let tdx = EmulatedTdx::generate(EmulatedTdxOptions::new(SystemTime::now())).unwrap();
        EmulatedTsm {
            base: PathBuf::from(EMULATED_TSM_BASE),
            tdx: Arc::new(tdx),
            reports: Mutex::new(BTreeMap::new()),
        }
    }

    #[test]
    fn configfs_model_follows_the_abi() {
        let fs = tsm();
        let dir = Path::new(EMULATED_TSM_BASE).join("r1");
        let attr = |name: &str| dir.join(name);
        // Only directly under the base.
        let kind = |r: io::Result<()>| r.unwrap_err().kind();
        assert_eq!(
            kind(fs.create_dir(&Path::new(EMULATED_TSM_BASE).join("a/b"))),
            io::ErrorKind::NotFound
        );
        fs.create_dir(&dir).unwrap();
        assert_eq!(kind(fs.create_dir(&dir)), io::ErrorKind::AlreadyExists);
        assert_eq!(fs.read(&attr("provider")).unwrap(), b"tdx_guest\n");
        assert_eq!(fs.read(&attr("generation")).unwrap(), b"0\n");
        // No outblob before an inblob.
        assert_eq!(
            fs.read(&attr("outblob")).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        fs.write(&attr("inblob"), &[7; 64]).unwrap();
        fs.write(&attr("inblob"), &[8; 10]).unwrap();
        assert_eq!(fs.read(&attr("generation")).unwrap(), b"2\n");
        // A short inblob is zero-padded into REPORTDATA (the body's last 64 bytes).
        let quote = fs.read(&attr("outblob")).unwrap();
        let mut expected = [0u8; 64];
        expected[..10].fill(8);
        assert_eq!(&quote[48 + 520..48 + 584], &expected);
        assert_eq!(
            kind(fs.write(&attr("inblob"), &[0; 65])),
            io::ErrorKind::InvalidInput
        );
        // TDX has no privlevel; read-only attributes refuse writes.
        assert_eq!(
            kind(fs.write(&attr("privlevel"), b"0\n")),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            kind(fs.write(&attr("generation"), b"5")),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(
            fs.read(&attr("inblob")).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        fs.remove_dir(&dir).unwrap();
        assert_eq!(kind(fs.remove_dir(&dir)), io::ErrorKind::NotFound);
        assert_eq!(
            fs.read(&attr("provider")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn the_provider_leaves_no_report_behind_and_refuses_privlevel() {
        let tdx = EmulatedTdx::generate(EmulatedTdxOptions::new(SystemTime::now())).unwrap();
        let tsm = ConfigFsTsm::emulated_tdx(tdx).unwrap();
        assert_eq!(tsm.base(), Path::new(EMULATED_TSM_BASE));
        let quote = tsm.evidence(&[3; 64]).unwrap();
        assert_eq!(&quote[..2], &4u16.to_le_bytes());
        assert_eq!(&quote[4..8], &0x81u32.to_le_bytes());
        assert_eq!(&quote[28..48], b"CORDON EMULATED TDX\0");
        let err = tsm.with_privlevel(0).evidence(&[3; 64]).unwrap_err();
        assert!(
            matches!(&err, TeeError::Access { op: "write", path, .. } if path.ends_with("privlevel")),
            "{err}"
        );
    }

    #[test]
    fn certificates_name_the_emulation_and_carry_the_sgx_extensions() {
        let tdx = EmulatedTdx::generate(EmulatedTdxOptions::new(SystemTime::now())).unwrap();
        for role in [Role::Root, Role::PckCa, Role::Pck, Role::TcbSigning] {
            let issued = tdx.party_cert(role).unwrap();
            let subject = issued.cert.tbs_certificate.subject.to_string();
            assert!(subject.contains("EMULATED"), "{subject}");
            assert_eq!(Certificate::from_der(&issued.der).unwrap(), issued.cert);
        }
        let pck = &tdx.party_cert(Role::Pck).unwrap().cert;
        let sgx = ObjectIdentifier::new(SGX_EXTENSIONS).unwrap();
        let ext = pck
            .tbs_certificate
            .extensions
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.extn_id == sgx)
            .unwrap();
        let value = ext.extn_value.as_bytes();
        // FMSPC entry: OID .1.4, OCTET STRING of the 6 bytes.
        let mut fmspc = oid(&format!("{SGX_EXTENSIONS}.4")).unwrap();
        fmspc.extend(tlv(0x04, &EMULATED_FMSPC));
        assert!(value.windows(fmspc.len()).any(|w| w == fmspc.as_slice()));
        assert_eq!(
            tdx.root_fingerprint(),
            <[u8; 32]>::from(Sha256::digest(tdx.root_der()))
        );
    }

    #[test]
    fn der_helpers_encode_lengths_and_integers() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(der_integer(0), vec![0x02, 1, 0]);
        assert_eq!(der_integer(11), vec![0x02, 1, 11]);
        assert_eq!(der_integer(0x80), vec![0x02, 2, 0, 0x80]);
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_750_328_163)).unwrap(),
            "2025-06-19T10:16:03Z"
        );
    }
}
