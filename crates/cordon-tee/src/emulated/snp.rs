//! An emulated AMD SEV-SNP platform: a test root chain (ARK → ASK → VCEK, in AMD's form) and a
//! "firmware" that signs genuine ATTESTATION_REPORTs with the VCEK for the launch parameters a host
//! would set. **EMULATED, NOT hardware-backed**: everything here is a file on disk or bytes in
//! memory, and a verifier accepts its reports only when told the root's fingerprint.
//!
//! - Certificates: AMD's KDS form (publication 57230, "VCEK Certificate and KDS Interface
//!   Specification"): ARK self-signed and ASK signed by the ARK with RSASSA-PSS SHA-384 (salt 48);
//!   VCEK a P-384 key signed by the ASK, carrying the extensions of table "VCEK Certificate
//!   Extensions" (structVersion, productName, blSPL, teeSPL, snpSPL, spl_4..7, ucodeSPL, fmcSPL on
//!   Turin, hwID). The test root's RSA keys are [`ROOT_KEY_BITS`] bits (AMD's are 4096) to keep key
//!   generation fast; the verifier's checks do not depend on the size. Names say EMULATED.
//! - Reports: SNP Firmware ABI (publication 56860), table "ATTESTATION_REPORT Structure", version 3
//!   or 5, signed over bytes 0x000..0x2A0 with ECDSA P-384/SHA-384, R and S little-endian in the
//!   72-byte fields at 0x2A0 and 0x2E8, as firmware writes them.
//! - State directory ([`EmulatedSnp::create`], [`EmulatedSnp::open`]): `emulator.toml` (the
//!   options), `ark.der`, `ask.der`, `vcek.der`, and their keys `ark.key`, `ask.key`, `vcek.key`
//!   (PKCS#8 PEM, mode 0600).

use crate::cert_table::{encode_cert_table, CertTableEntry, GUID_ARK, GUID_ASK, GUID_VCEK};
use crate::sev_guest::{
    GuestRequests, SnpDerivedKeyReq, SnpDerivedKeyResp, SnpReportReq, SnpReportResp, CERTS_MAX_LEN,
    PAGE_LEN, VMM_ERR_INVALID_LEN,
};
use cordon_attest::snp::Product;
use der::asn1::{BitString, GeneralizedTime, Ia5String, OctetString, UtcTime};
use der::{Decode, Encode};
use p384::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rsa::pkcs8::LineEnding;
use rsa::rand_core::{OsRng, RngCore};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha384};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};
use zeroize::Zeroizing;

/// Bits of the test ARK's and ASK's RSA keys.
pub const ROOT_KEY_BITS: usize = 2048;
/// Length of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes 0x000..0x2A0 of a report are signed.
const SIGNED_LEN: usize = 0x2A0;

const OID_STRUCT_VERSION: &str = "1.3.6.1.4.1.3704.1.1";
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_SPL_4_7: [&str; 4] = [
    "1.3.6.1.4.1.3704.1.3.4",
    "1.3.6.1.4.1.3704.1.3.5",
    "1.3.6.1.4.1.3704.1.3.6",
    "1.3.6.1.4.1.3704.1.3.7",
];
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HW_ID: &str = "1.3.6.1.4.1.3704.1.4";

/// Why an emulator could not be made, saved or opened. Each names the file involved.
#[derive(Debug, Error)]
pub enum SnpEmulatorError {
    #[error("emulator options: {0}")]
    Options(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already holds an emulator (emulator.toml); refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{}: not a valid emulator.toml: {reason}", path.display())]
    Toml { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Certificate { path: PathBuf, reason: String },
    /// Files of the state directory that do not belong together (a key that is not the
    /// certificate's, a VCEK that certifies other values than emulator.toml names).
    #[error("{}: {reason}", path.display())]
    Inconsistent { path: PathBuf, reason: String },
    #[error("emulated firmware: {0}")]
    Firmware(String),
    #[error("making the test chain: {0}")]
    Crypto(String),
}

/// TCB component versions (SNP ABI "TCB_VERSION Structure"): what the VCEK certifies and the
/// report's REPORTED_TCB carries. `fmc` exists on Turin only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl SnpTcb {
    /// TCB_VERSION as a report encodes it for `product`. Milan and Genoa: BOOT_LOADER [7:0],
    /// TEE [15:8], SNP [55:48], MICROCODE [63:56]. Turin: FMC [7:0], BOOT_LOADER [15:8],
    /// TEE [23:16], SNP [31:24], MICROCODE [63:56].
    pub fn encode(&self, product: Product) -> u64 {
        let mut b = [0u8; 8];
        match product {
            Product::Milan | Product::Genoa => {
                b[0] = self.bootloader;
                b[1] = self.tee;
                b[6] = self.snp;
                b[7] = self.microcode;
            }
            Product::Turin => {
                b[0] = self.fmc.unwrap_or(0);
                b[1] = self.bootloader;
                b[2] = self.tee;
                b[3] = self.snp;
                b[7] = self.microcode;
            }
        }
        u64::from_le_bytes(b)
    }

    /// A TCB at or above the default floors (`cordon_attest::snp::floor`) of `product`, for its
    /// default CPU stepping: what an up-to-date host reports.
    pub fn up_to_date(product: Product) -> SnpTcb {
        match product {
            Product::Milan => SnpTcb {
                bootloader: 10,
                tee: 0,
                snp: 0x1D,
                microcode: 0xDE,
                fmc: None,
            },
            Product::Genoa => SnpTcb {
                bootloader: 10,
                tee: 0,
                snp: 0x1D,
                microcode: 0x56,
                fmc: None,
            },
            Product::Turin => SnpTcb {
                bootloader: 1,
                tee: 1,
                snp: 0x04,
                microcode: 0x50,
                fmc: Some(1),
            },
        }
    }
}

/// The SEV firmware version a report names (CURRENT_* and COMMITTED_* at 0x1E8 and 0x1EC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

/// What the host sets when it launches the guest (SNP_LAUNCH_START and SNP_LAUNCH_FINISH) and the
/// report then carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchParams {
    /// MEASUREMENT: the launch digest of the guest's initial memory.
    #[serde(with = "hexarr")]
    pub measurement: [u8; 48],
    /// HOST_DATA: what Cordon binds the runtime configuration to.
    #[serde(with = "hexarr")]
    pub host_data: [u8; 32],
    /// Guest POLICY (SNP ABI "Guest Policy"): bit 19 DEBUG, bit 18 MIGRATE_MA, bit 17 reserved
    /// (must be 1), bit 16 SMT.
    pub policy: u64,
    /// The VMPL the guest runs at: configfs-tsm's `privlevel_floor`, and the VMPL of a report
    /// requested without `privlevel`.
    pub vmpl: u8,
    pub guest_svn: u32,
    /// ID block fields (SNP_LAUNCH_FINISH), zero when launched without one.
    #[serde(with = "hexarr")]
    pub family_id: [u8; 16],
    #[serde(with = "hexarr")]
    pub image_id: [u8; 16],
    #[serde(with = "hexarr")]
    pub id_key_digest: [u8; 48],
    #[serde(with = "hexarr")]
    pub author_key_digest: [u8; 48],
    /// AUTHOR_KEY_EN: whether the ID block was signed with an author key.
    pub author_key_en: bool,
}

impl LaunchParams {
    /// Guest POLICY of a production guest: SMT allowed, no debug, no migration agent, ABI 0.0.
    pub const DEFAULT_POLICY: u64 = 0x3_0000;

    /// A production guest with this measurement and HOST_DATA, at VMPL 0, without an ID block.
    pub fn new(measurement: [u8; 48], host_data: [u8; 32]) -> LaunchParams {
        LaunchParams {
            measurement,
            host_data,
            policy: LaunchParams::DEFAULT_POLICY,
            vmpl: 0,
            guest_svn: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            author_key_en: false,
        }
    }
}

/// The emulated platform: product line, chip, TCB, firmware, and the launched guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatedSnpOptions {
    /// Milan, Genoa or Turin; decides the TCB layout, CPUID and the VCEK's productName.
    pub product: Product,
    /// CHIP_ID, which the VCEK's hwID certifies (Turin: its first 8 bytes).
    #[serde(with = "hexarr")]
    pub chip_id: [u8; 64],
    /// REPORTED_TCB, which the VCEK certifies.
    pub reported_tcb: SnpTcb,
    /// CURRENT_TCB, COMMITTED_TCB and LAUNCH_TCB; the reported TCB when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_tcb: Option<SnpTcb>,
    /// ATTESTATION_REPORT version: 3 or 5 (both carry CPUID).
    pub report_version: u32,
    /// PLATFORM_INFO (bit 0 SMT enabled, bit 1 TSME enabled, ...).
    pub platform_info: u64,
    /// MASK_CHIP_ID: the firmware writes zeros for CHIP_ID and sets MASK_CHIP_KEY.
    pub mask_chip_id: bool,
    pub firmware: FirmwareVersion,
    /// REPORT_ID: the guest's identifier, chosen by the firmware at launch.
    #[serde(with = "hexarr")]
    pub report_id: [u8; 32],
    pub launch: LaunchParams,
}

impl EmulatedSnpOptions {
    /// An up-to-date `product` host with a random chip id and report id, running a production
    /// guest with `launch`.
    pub fn new(product: Product, launch: LaunchParams) -> EmulatedSnpOptions {
        let mut chip_id = [0u8; 64];
        OsRng.fill_bytes(&mut chip_id);
        let mut report_id = [0u8; 32];
        OsRng.fill_bytes(&mut report_id);
        EmulatedSnpOptions {
            product,
            chip_id,
            reported_tcb: SnpTcb::up_to_date(product),
            committed_tcb: None,
            report_version: 3,
            platform_info: 0x1,
            mask_chip_id: false,
            firmware: FirmwareVersion {
                major: 1,
                minor: 55,
                build: 40,
            },
            report_id,
            launch,
        }
    }

    fn validate(&self) -> Result<(), SnpEmulatorError> {
        let bad = |m: String| Err(SnpEmulatorError::Options(m));
        if !matches!(self.report_version, 3 | 5) {
            return bad(format!(
                "report_version {} is not emulated (3 and 5 are)",
                self.report_version
            ));
        }
        if self.launch.vmpl > 3 {
            return bad(format!("vmpl {} is above 3", self.launch.vmpl));
        }
        for tcb in std::iter::once(&self.reported_tcb).chain(self.committed_tcb.as_ref()) {
            match (self.product, tcb.fmc) {
                (Product::Turin, None) => {
                    return bad("a Turin TCB has an fmc component; set it".into())
                }
                (Product::Milan | Product::Genoa, Some(_)) => {
                    return bad(format!(
                        "a {} TCB has no fmc component",
                        self.product.name()
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// CPUID family, model and stepping of the product's main part (as in `snp::floor`).
    fn cpuid(&self) -> (u8, u8, u8) {
        match self.product {
            Product::Milan => (0x19, 0x01, 1),
            Product::Genoa => (0x19, 0x11, 1),
            Product::Turin => (0x1A, 0x02, 1),
        }
    }

    /// The VCEK's productName, as AMD's KDS writes it (line, then stepping).
    fn product_name(&self) -> &'static str {
        match self.product {
            Product::Milan => "Milan-B1",
            Product::Genoa => "Genoa-B1",
            Product::Turin => "Turin-C1",
        }
    }

    /// The hwID a VCEK certifies: the whole CHIP_ID, or on Turin its first 8 bytes.
    fn hw_id(&self) -> Vec<u8> {
        match self.product {
            Product::Turin => self.chip_id[..8].to_vec(),
            _ => self.chip_id.to_vec(),
        }
    }
}

/// One certificate with its private key.
struct Rsa {
    key: RsaPrivateKey,
    cert: Certificate,
    der: Vec<u8>,
}

/// An emulated SEV-SNP machine with one launched guest. Its [`report`](EmulatedSnp::report)s are
/// genuine, signed reports; the root they chain to is a test root ([`root_fingerprint`](
/// EmulatedSnp::root_fingerprint)) that no production verifier trusts.
pub struct EmulatedSnp {
    options: EmulatedSnpOptions,
    ark: Rsa,
    ask: Rsa,
    vcek_key: p384::ecdsa::SigningKey,
    vcek_der: Vec<u8>,
}

impl fmt::Debug for EmulatedSnp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No private key, ever.
        f.debug_struct("EmulatedSnp")
            .field("product", &self.options.product)
            .field("chip_id", &hex::encode(self.options.chip_id))
            .field("root", &hex::encode(self.root_fingerprint()))
            .finish_non_exhaustive()
    }
}

fn crypto(e: impl fmt::Display) -> SnpEmulatorError {
    SnpEmulatorError::Crypto(e.to_string())
}

impl EmulatedSnp {
    /// Makes a fresh test root chain (ARK, ASK, VCEK) for `options`, in memory.
    pub fn generate(options: EmulatedSnpOptions) -> Result<EmulatedSnp, SnpEmulatorError> {
        options.validate()?;
        let line = options.product.name();
        let now = whole_seconds(SystemTime::now());
        // Backdated a little so that a verifier's clock slightly behind ours still accepts.
        let from = now - Duration::from_secs(3600);
        let root_years = Duration::from_secs(25 * 365 * 86_400);
        let ark_key = RsaPrivateKey::new(&mut OsRng, ROOT_KEY_BITS).map_err(crypto)?;
        let ark_name = name(&format!("ARK-{line} EMULATED"))?;
        let ark_cert = sign_cert(
            ark_name.clone(),
            ark_name.clone(),
            rsa_spki(&ark_key)?,
            validity(from, from + root_years)?,
            ca_extensions()?,
            &ark_key,
        )?;
        let ark = Rsa::new(ark_key, ark_cert)?;
        let ask_key = RsaPrivateKey::new(&mut OsRng, ROOT_KEY_BITS).map_err(crypto)?;
        let ask_cert = sign_cert(
            name(&format!("SEV-{line} EMULATED"))?,
            ark_name,
            rsa_spki(&ask_key)?,
            validity(from, from + root_years)?,
            ca_extensions()?,
            &ark.key,
        )?;
        let ask = Rsa::new(ask_key, ask_cert)?;
        EmulatedSnp::with_root(options, ark, ask)
    }

    /// A VCEK for `options` (a chip, a TCB) issued by the ASK of `ark`/`ask`.
    fn with_root(
        options: EmulatedSnpOptions,
        ark: Rsa,
        ask: Rsa,
    ) -> Result<EmulatedSnp, SnpEmulatorError> {
        let vcek_key = p384::ecdsa::SigningKey::random(&mut OsRng);
        let from = whole_seconds(SystemTime::now()) - Duration::from_secs(3600);
        let spki_der = vcek_key
            .verifying_key()
            .to_public_key_der()
            .map_err(crypto)?;
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(crypto)?;
        let vcek = sign_cert(
            name("SEV-VCEK EMULATED")?,
            ask.cert.tbs_certificate.subject.clone(),
            spki,
            // AMD's VCEKs are valid for seven years.
            validity(from, from + Duration::from_secs(7 * 365 * 86_400))?,
            vcek_extensions(&options)?,
            &ask.key,
        )?;
        let vcek_der = vcek.to_der().map_err(crypto)?;
        Ok(EmulatedSnp {
            options,
            ark,
            ask,
            vcek_key,
            vcek_der,
        })
    }

    /// Another chip, or the same after a TCB update, under the same test root: a new VCEK for
    /// `options`, issued by this emulator's ASK. The product line must stay the same (AMD has one
    /// ASK per line).
    pub fn under_same_root(
        &self,
        options: EmulatedSnpOptions,
    ) -> Result<EmulatedSnp, SnpEmulatorError> {
        options.validate()?;
        if options.product != self.options.product {
            return Err(SnpEmulatorError::Options(format!(
                "this root's ASK is for {}, not {}",
                self.options.product.name(),
                options.product.name()
            )));
        }
        EmulatedSnp::with_root(options, self.ark.clone(), self.ask.clone())
    }

    /// The same chip and VCEK with another guest launched on it.
    pub fn with_launch(&self, launch: LaunchParams) -> Result<EmulatedSnp, SnpEmulatorError> {
        let options = EmulatedSnpOptions {
            launch,
            ..self.options.clone()
        };
        options.validate()?;
        Ok(EmulatedSnp {
            options,
            ark: self.ark.clone(),
            ask: self.ask.clone(),
            vcek_key: self.vcek_key.clone(),
            vcek_der: self.vcek_der.clone(),
        })
    }

    pub fn options(&self) -> &EmulatedSnpOptions {
        &self.options
    }

    /// SHA-256 of the test ARK's DER: what `Endorsements::emulated_roots` and a test policy's
    /// `emulated_roots` name.
    pub fn root_fingerprint(&self) -> [u8; 32] {
        Sha256::digest(&self.ark.der).into()
    }

    /// The chain, DER: VCEK, ASK, ARK.
    pub fn certificates(&self) -> Vec<Vec<u8>> {
        vec![
            self.vcek_der.clone(),
            self.ask.der.clone(),
            self.ark.der.clone(),
        ]
    }

    /// The certificate table of an extended report (configfs-tsm `auxblob`): VCEK, ASK, ARK.
    pub fn cert_table(&self) -> Vec<u8> {
        encode_cert_table(&self.chain_entries())
    }

    /// The chain as certificate table entries: VCEK, ASK, ARK.
    fn chain_entries(&self) -> Vec<CertTableEntry> {
        [
            (GUID_VCEK, &self.vcek_der),
            (GUID_ASK, &self.ask.der),
            (GUID_ARK, &self.ark.der),
        ]
        .into_iter()
        .map(|(guid, der)| CertTableEntry {
            guid,
            data: der.clone(),
        })
        .collect()
    }

    /// A report for `report_data` at the guest's own VMPL.
    pub fn report(&self, report_data: &[u8; 64]) -> [u8; REPORT_LEN] {
        self.build_report(report_data, self.options.launch.vmpl)
    }

    /// A report requested at `vmpl` (MSG_REPORT_REQ.VMPL). The firmware refuses a VMPL more
    /// privileged than the guest's own, or above 3.
    pub fn report_at_vmpl(
        &self,
        report_data: &[u8; 64],
        vmpl: u8,
    ) -> Result<[u8; REPORT_LEN], SnpEmulatorError> {
        if vmpl < self.options.launch.vmpl || vmpl > 3 {
            return Err(SnpEmulatorError::Firmware(format!(
                "a guest at VMPL {} cannot request a report for VMPL {vmpl}",
                self.options.launch.vmpl
            )));
        }
        Ok(self.build_report(report_data, vmpl))
    }

    /// SNP ABI "ATTESTATION_REPORT Structure", little-endian, then the VCEK's signature.
    fn build_report(&self, report_data: &[u8; 64], vmpl: u8) -> [u8; REPORT_LEN] {
        let o = &self.options;
        let l = &o.launch;
        let committed = o.committed_tcb.unwrap_or(o.reported_tcb);
        let mut r = [0u8; REPORT_LEN];
        let mut put = |off: usize, bytes: &[u8]| r[off..off + bytes.len()].copy_from_slice(bytes);
        put(0x00, &o.report_version.to_le_bytes());
        put(0x04, &l.guest_svn.to_le_bytes());
        put(0x08, &l.policy.to_le_bytes());
        put(0x10, &l.family_id);
        put(0x20, &l.image_id);
        put(0x30, &u32::from(vmpl).to_le_bytes());
        put(0x34, &1u32.to_le_bytes()); // SIGNATURE_ALGO: ECDSA P-384 with SHA-384
        put(0x38, &committed.encode(o.product).to_le_bytes()); // CURRENT_TCB
        put(0x40, &o.platform_info.to_le_bytes());
        // AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY bit 1, SIGNING_KEY bits 4:2 = 0 (VCEK).
        let flags = u32::from(l.author_key_en) | (u32::from(o.mask_chip_id) << 1);
        put(0x48, &flags.to_le_bytes());
        put(0x50, report_data);
        put(0x90, &l.measurement);
        put(0xC0, &l.host_data);
        put(0xE0, &l.id_key_digest);
        put(0x110, &l.author_key_digest);
        put(0x140, &o.report_id);
        // REPORT_ID_MA: all ones when the guest has no migration agent.
        put(0x160, &[0xFF; 32]);
        put(0x180, &o.reported_tcb.encode(o.product).to_le_bytes());
        let (family, model, stepping) = o.cpuid();
        put(0x188, &[family, model, stepping]);
        if !o.mask_chip_id {
            put(0x1A0, &o.chip_id);
        }
        put(0x1E0, &committed.encode(o.product).to_le_bytes()); // COMMITTED_TCB
        let fw = &o.firmware;
        put(0x1E8, &[fw.build, fw.minor, fw.major]); // CURRENT_BUILD, _MINOR, _MAJOR
        put(0x1EC, &[fw.build, fw.minor, fw.major]); // COMMITTED_*
        put(0x1F0, &committed.encode(o.product).to_le_bytes()); // LAUNCH_TCB
                                                                // Version 5: LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR at 0x1F8 and 0x200 stay zero.
        let sig: p384::ecdsa::Signature = self.vcek_key.sign(&r[..SIGNED_LEN]);
        let (sig_r, sig_s) = sig.split_bytes();
        // Firmware stores R and S little-endian in 72-byte fields (upper 24 bytes zero).
        for i in 0..48 {
            r[0x2A0 + i] = sig_r[47 - i];
            r[0x2E8 + i] = sig_s[47 - i];
        }
        r
    }

    /// Makes a fresh emulator for `options` and writes it to `dir` (created if missing, mode 0700).
    /// Refuses a directory that already holds one.
    pub fn create(
        dir: &Path,
        options: EmulatedSnpOptions,
    ) -> Result<EmulatedSnp, SnpEmulatorError> {
        if dir.join(TOML).exists() {
            return Err(SnpEmulatorError::Exists(dir.to_path_buf()));
        }
        let emu = EmulatedSnp::generate(options)?;
        emu.save(dir)?;
        Ok(emu)
    }

    /// Writes the chain, its keys (mode 0600) and the options to `dir`, replacing what is there.
    pub fn save(&self, dir: &Path) -> Result<(), SnpEmulatorError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnpEmulatorError::Io { path, source }
        };
        create_private_dir(dir).map_err(io(dir))?;
        let pem = |k: &RsaPrivateKey| {
            rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(k, LineEnding::LF).map_err(crypto)
        };
        let vcek_pem = self.vcek_key.to_pkcs8_pem(LineEnding::LF).map_err(crypto)?;
        for (file, data) in [
            ("ark.key", pem(&self.ark.key)?),
            ("ask.key", pem(&self.ask.key)?),
            ("vcek.key", vcek_pem),
        ] {
            let path = dir.join(file);
            write_file(&path, data.as_bytes(), 0o600).map_err(io(&path))?;
        }
        for (file, data) in [
            ("ark.der", &self.ark.der),
            ("ask.der", &self.ask.der),
            ("vcek.der", &self.vcek_der),
        ] {
            let path = dir.join(file);
            write_file(&path, data, 0o644).map_err(io(&path))?;
        }
        let toml = toml::to_string(&self.options).map_err(|e| SnpEmulatorError::Toml {
            path: dir.join(TOML),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# Cordon EMULATED SEV-SNP platform (tests only, NOT hardware-backed).\n\
             # Test root (SHA-256 of ark.der): {}\n{toml}",
            hex::encode(self.root_fingerprint())
        );
        let path = dir.join(TOML);
        write_file(&path, text.as_bytes(), 0o644).map_err(io(&path))
    }

    /// Reads an emulator written by [`EmulatedSnp::create`] or [`EmulatedSnp::save`], checking that
    /// every key belongs to its certificate, that the chain is signed as written, and that the VCEK
    /// certifies the product, chip id and TCB that `emulator.toml` names.
    pub fn open(dir: &Path) -> Result<EmulatedSnp, SnpEmulatorError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path).map_err(|source| SnpEmulatorError::Io { path, source })
        };
        let toml_path = dir.join(TOML);
        let text = String::from_utf8(read(TOML)?).map_err(|_| SnpEmulatorError::Toml {
            path: toml_path.clone(),
            reason: "not UTF-8".into(),
        })?;
        let options: EmulatedSnpOptions =
            toml::from_str(&text).map_err(|e| SnpEmulatorError::Toml {
                path: toml_path.clone(),
                reason: e.to_string(),
            })?;
        options.validate().map_err(|e| SnpEmulatorError::Toml {
            path: toml_path.clone(),
            reason: e.to_string(),
        })?;
        let cert = |file: &str| -> Result<(Certificate, Vec<u8>), SnpEmulatorError> {
            let der = read(file)?;
            let c = Certificate::from_der(&der).map_err(|e| SnpEmulatorError::Certificate {
                path: dir.join(file),
                reason: format!("not a DER certificate: {e}"),
            })?;
            Ok((c, der))
        };
        // Key files are read into buffers wiped on drop.
        let key_text = |file: &str| -> Result<Zeroizing<String>, SnpEmulatorError> {
            String::from_utf8(read(file)?)
                .map(Zeroizing::new)
                .map_err(|e| {
                    drop(Zeroizing::new(e.into_bytes()));
                    SnpEmulatorError::Key {
                        path: dir.join(file),
                        reason: "not PEM text".into(),
                    }
                })
        };
        let rsa = |name: &str| -> Result<Rsa, SnpEmulatorError> {
            let key_file = format!("{name}.key");
            let key = rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&key_text(&key_file)?).map_err(
                |e| SnpEmulatorError::Key {
                    path: dir.join(&key_file),
                    reason: format!("not a PKCS#8 RSA key: {e}"),
                },
            )?;
            let (c, der) = cert(&format!("{name}.der"))?;
            if c.tbs_certificate.subject_public_key_info != rsa_spki(&key)? {
                return Err(SnpEmulatorError::Inconsistent {
                    path: dir.join(&key_file),
                    reason: format!("not the key of {name}.der"),
                });
            }
            Ok(Rsa { key, cert: c, der })
        };
        let ark = rsa("ark")?;
        let ask = rsa("ask")?;
        let vcek_key =
            p384::ecdsa::SigningKey::from_pkcs8_pem(&key_text("vcek.key")?).map_err(|e| {
                SnpEmulatorError::Key {
                    path: dir.join("vcek.key"),
                    reason: format!("not a PKCS#8 P-384 key: {e}"),
                }
            })?;
        let (vcek, vcek_der) = cert("vcek.der")?;
        let inconsistent = |file: &str, reason: String| SnpEmulatorError::Inconsistent {
            path: dir.join(file),
            reason,
        };
        let vcek_spki = vcek_key
            .verifying_key()
            .to_public_key_der()
            .map_err(crypto)?;
        if vcek
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(crypto)?
            != vcek_spki.as_bytes()
        {
            return Err(inconsistent("vcek.key", "not the key of vcek.der".into()));
        }
        if vcek.tbs_certificate.issuer != ask.cert.tbs_certificate.subject
            || ask.cert.tbs_certificate.issuer != ark.cert.tbs_certificate.subject
        {
            return Err(inconsistent(
                "vcek.der",
                "vcek.der, ask.der and ark.der do not form a chain".into(),
            ));
        }
        let expected = vcek_extensions(&options)?;
        let found: Vec<&Extension> = vcek.tbs_certificate.extensions.iter().flatten().collect();
        if found.len() != expected.len() || found.iter().zip(&expected).any(|(a, b)| *a != b) {
            return Err(inconsistent(
                "vcek.der",
                format!(
                    "the VCEK does not certify the product ({}), chip id and TCB that {TOML} \
                     names; issue a new VCEK (EmulatedSnp::under_same_root) or create the \
                     emulator again",
                    options.product_name()
                ),
            ));
        }
        Ok(EmulatedSnp {
            options,
            ark,
            ask,
            vcek_key,
            vcek_der,
        })
    }
}

const TOML: &str = "emulator.toml";

impl Rsa {
    fn new(key: RsaPrivateKey, cert: Certificate) -> Result<Rsa, SnpEmulatorError> {
        let der = cert.to_der().map_err(crypto)?;
        Ok(Rsa { key, cert, der })
    }
}

impl Clone for Rsa {
    fn clone(&self) -> Rsa {
        Rsa {
            key: self.key.clone(),
            cert: self.cert.clone(),
            der: self.der.clone(),
        }
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn x509_time(t: SystemTime) -> Result<Time, SnpEmulatorError> {
    let y2050 = UNIX_EPOCH + Duration::from_secs(2_524_608_000);
    if t < y2050 {
        Ok(Time::UtcTime(UtcTime::from_system_time(t).map_err(crypto)?))
    } else {
        Ok(Time::GeneralTime(
            GeneralizedTime::from_system_time(t).map_err(crypto)?,
        ))
    }
}

fn validity(from: SystemTime, to: SystemTime) -> Result<Validity, SnpEmulatorError> {
    Ok(Validity {
        not_before: x509_time(from)?,
        not_after: x509_time(to)?,
    })
}

fn name(cn: &str) -> Result<Name, SnpEmulatorError> {
    Name::from_str(&format!(
        "CN={cn},OU=EMULATED NOT hardware-backed,O=Cordon SEV-SNP emulator for tests"
    ))
    .map_err(crypto)
}

fn rsa_spki(key: &RsaPrivateKey) -> Result<SubjectPublicKeyInfoOwned, SnpEmulatorError> {
    let der =
        rsa::pkcs8::EncodePublicKey::to_public_key_der(&key.to_public_key()).map_err(crypto)?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(crypto)
}

fn extension(
    oid: &str,
    critical: bool,
    value: &impl Encode,
) -> Result<Extension, SnpEmulatorError> {
    Ok(Extension {
        extn_id: der::oid::ObjectIdentifier::new(oid).map_err(crypto)?,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(crypto)?).map_err(crypto)?,
    })
}

/// The ARK's and ASK's: a CA that signs certificates and CRLs.
fn ca_extensions() -> Result<Vec<Extension>, SnpEmulatorError> {
    Ok(vec![
        extension(
            "2.5.29.19",
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
        )?,
        extension(
            "2.5.29.15",
            true,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign),
        )?,
    ])
}

/// publication 57230, "VCEK Certificate Extensions": SPLs are DER INTEGERs, productName an
/// IA5String, hwID an OCTET STRING.
fn vcek_extensions(o: &EmulatedSnpOptions) -> Result<Vec<Extension>, SnpEmulatorError> {
    let t = &o.reported_tcb;
    let mut exts = vec![
        extension(OID_STRUCT_VERSION, false, &1u8)?,
        extension(
            OID_PRODUCT_NAME,
            false,
            &Ia5String::new(o.product_name()).map_err(crypto)?,
        )?,
        extension(OID_BL_SPL, false, &t.bootloader)?,
        extension(OID_TEE_SPL, false, &t.tee)?,
        extension(OID_SNP_SPL, false, &t.snp)?,
    ];
    for oid in OID_SPL_4_7 {
        exts.push(extension(oid, false, &0u8)?);
    }
    exts.push(extension(OID_UCODE_SPL, false, &t.microcode)?);
    if let Some(fmc) = t.fmc {
        exts.push(extension(OID_FMC_SPL, false, &fmc)?);
    }
    exts.push(extension(
        OID_HW_ID,
        false,
        &OctetString::new(o.hw_id()).map_err(crypto)?,
    )?);
    Ok(exts)
}

/// A certificate signed by `issuer_key` with RSASSA-PSS SHA-384, salt 48, as AMD's KDS signs.
fn sign_cert(
    subject: Name,
    issuer: Name,
    spki: SubjectPublicKeyInfoOwned,
    validity: Validity,
    extensions: Vec<Extension>,
    issuer_key: &RsaPrivateKey,
) -> Result<Certificate, SnpEmulatorError> {
    let algorithm = rsa::pss::get_default_pss_signature_algo_id::<Sha384>().map_err(crypto)?;
    let mut serial = [0u8; 16];
    OsRng.fill_bytes(&mut serial);
    serial[0] = (serial[0] & 0x7F) | 0x01; // positive, and 16 bytes long
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(crypto)?,
        signature: algorithm.clone(),
        issuer,
        validity,
        subject,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(crypto)?;
    let signer = rsa::pss::BlindedSigningKey::<Sha384>::new(issuer_key.clone());
    let signature = signer
        .try_sign_with_rng(&mut OsRng, &tbs_der)
        .map_err(crypto)?;
    Ok(Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature.to_bytes()).map_err(crypto)?,
    })
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Writes `data` to `path` with `mode` (Unix), replacing the file: a key file is never readable by
/// others, not even for a moment.
fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Fixed-size byte arrays as hex strings in emulator.toml.
mod hexarr {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(text.trim()).map_err(serde::de::Error::custom)?;
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} bytes of hex, got {len}")))
    }
}

/// The `sev_guest` provider of configfs-tsm on this emulator: `outblob` a report for the inblob at
/// the requested VMPL, `auxblob` the certificate table, `privlevel_floor` the guest's VMPL.
pub(crate) struct SnpTsm(pub(crate) EmulatedSnp);

impl crate::emulated::tsm::TsmBackend for SnpTsm {
    fn provider(&self) -> &'static str {
        "sev_guest"
    }

    fn privlevel_floor(&self) -> Option<u8> {
        Some(self.0.options.launch.vmpl)
    }

    fn generate(&self, inblob: &[u8; 64], privlevel: u8) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let report = self
            .0
            .report_at_vmpl(inblob, privlevel)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok((report.to_vec(), self.0.cert_table()))
    }
}

/// SEV status INVALID_PARAM (SNP ABI "Status Codes"), the firmware's answer to a request it refuses.
const STATUS_INVALID_PARAM: u32 = 0x16;

impl EmulatedSnp {
    /// The chip's secret from which its derived keys come: fixed for this emulator's root and chip
    /// id, so that a key derived before a restart is derived again after it, as on a real chip.
    fn chip_secret(&self) -> Result<Zeroizing<[u8; 48]>, SnpEmulatorError> {
        let ark = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&self.ark.key).map_err(crypto)?;
        let mut h = Sha384::new();
        h.update(b"cordon emulated SEV-SNP chip secret for MSG_KEY_REQ\0");
        h.update(ark.as_bytes());
        h.update(self.options.chip_id);
        Ok(Zeroizing::new(h.finalize().into()))
    }

    /// MSG_KEY_REQ, as the firmware answers it (SNP ABI "MSG_KEY_REQ"): a key derived from the
    /// chip's secret at a TCB (the requested TCB_VERSION when selected, else the committed TCB),
    /// mixed with the VMPL and the guest fields `GUEST_FIELD_SELECT` names. The firmware refuses
    /// (`Err(status)`, INVALID_PARAM) a VMPL more privileged than the guest's, an SVN or TCB above
    /// the guest's, unknown select bits, reserved fields set, and the VM root key for a guest
    /// without a migration agent. With MASK_CHIP_KEY set (this emulator sets it with
    /// `mask_chip_id`) the chip key is not used: a VCEK-rooted request gets an all-zero key, as the
    /// firmware returns. Simplification: the VM root key is derived from this chip's secret too,
    /// so unlike a real VMRK it would not follow a guest to another chip.
    pub(crate) fn derive_key(&self, req: &SnpDerivedKeyReq) -> Result<Zeroizing<[u8; 32]>, u32> {
        let o = &self.options;
        let l = &o.launch;
        let committed = o.committed_tcb.unwrap_or(o.reported_tcb).encode(o.product);
        let migration_agent = l.policy & cordon_attest::snp::POLICY_MIGRATE_MA != 0;
        let tcb_above = |requested: u64| {
            // Each TCB component is a whole byte in every layout (Milan, Genoa, Turin).
            (0..8).any(|i| (requested >> (8 * i)) as u8 > (committed >> (8 * i)) as u8)
        };
        let select = req.guest_field_select;
        let refused = req.root_key_select > 1
            || (req.root_key_select == 1 && !migration_agent)
            || req.rsvd != 0
            || select & !crate::sev_guest::guest_field::KNOWN != 0
            || req.vmpl < u32::from(l.vmpl)
            || req.vmpl > 3
            || (select & crate::sev_guest::guest_field::GUEST_SVN != 0
                && req.guest_svn > l.guest_svn)
            || (select & crate::sev_guest::guest_field::TCB_VERSION != 0
                && tcb_above(req.tcb_version));
        if refused {
            return Err(STATUS_INVALID_PARAM);
        }
        if o.mask_chip_id && req.root_key_select == 0 {
            return Ok(Zeroizing::new([0; 32]));
        }
        let secret = self.chip_secret().map_err(|_| STATUS_INVALID_PARAM)?;
        let tcb = if select & crate::sev_guest::guest_field::TCB_VERSION != 0 {
            req.tcb_version
        } else {
            committed
        };
        let mut info = Vec::with_capacity(160);
        info.extend_from_slice(b"cordon emulated MSG_KEY_REQ v1\0");
        info.extend_from_slice(&req.root_key_select.to_le_bytes());
        info.extend_from_slice(&tcb.to_le_bytes());
        info.extend_from_slice(&req.vmpl.to_le_bytes());
        info.extend_from_slice(&select.to_le_bytes());
        use crate::sev_guest::guest_field as f;
        let mut mix = |bit: u64, bytes: &[u8]| {
            if select & bit != 0 {
                info.extend_from_slice(bytes);
            }
        };
        mix(f::GUEST_POLICY, &l.policy.to_le_bytes());
        mix(f::IMAGE_ID, &l.image_id);
        mix(f::FAMILY_ID, &l.family_id);
        mix(f::MEASUREMENT, &l.measurement);
        mix(f::GUEST_SVN, &req.guest_svn.to_le_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha384>::new(None, secret.as_slice())
            .expand(&info, key.as_mut())
            .map_err(|_| STATUS_INVALID_PARAM)?;
        Ok(key)
    }
}

/// `/dev/sev-guest` on this emulator: the kernel driver's and the firmware's answers to the three
/// guest requests (Linux `drivers/virt/coco/sev-guest`; SNP ABI MSG_REPORT_REQ, MSG_KEY_REQ; GHCB
/// "SNP Extended Guest Request"), on the structures the ioctls pass.
pub(crate) struct SnpGuestDevice {
    pub(crate) machine: EmulatedSnp,
    /// Entries the host adds to the table after the chain (vendor data, a CRL): none by default.
    pub(crate) host_extra: Vec<CertTableEntry>,
}

impl SnpGuestDevice {
    pub(crate) fn new(machine: EmulatedSnp) -> SnpGuestDevice {
        SnpGuestDevice {
            machine,
            host_extra: Vec::new(),
        }
    }

    /// The table the host supplies: the chain, then any extra entries.
    fn host_table(&self) -> Vec<u8> {
        let mut entries = self.machine.chain_entries();
        entries.extend(self.host_extra.iter().cloned());
        encode_cert_table(&entries)
    }

    /// MSG_REPORT_RSP: STATUS, REPORT_SIZE, the report at 0x20; a refused VMPL is STATUS
    /// INVALID_PARAM with no report, and the ioctl itself succeeds, as the kernel passes the
    /// firmware's answer through.
    fn report_response(&self, req: &SnpReportReq, resp: &mut SnpReportResp) {
        resp.data = [0; 4000];
        let report = u8::try_from(req.vmpl)
            .ok()
            .filter(|_| req.rsvd.iter().all(|&b| b == 0))
            .and_then(|vmpl| self.machine.report_at_vmpl(&req.user_data, vmpl).ok());
        match report {
            Some(report) => {
                resp.data[4..8].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
                resp.data[0x20..0x20 + REPORT_LEN].copy_from_slice(&report);
            }
            None => resp.data[0..4].copy_from_slice(&STATUS_INVALID_PARAM.to_le_bytes()),
        }
    }
}

fn einval() -> std::io::Error {
    std::io::Error::from_raw_os_error(22)
}

impl GuestRequests for SnpGuestDevice {
    fn get_report(
        &self,
        req: &SnpReportReq,
        resp: &mut SnpReportResp,
    ) -> (std::io::Result<()>, u64) {
        self.report_response(req, resp);
        (Ok(()), 0)
    }

    /// The kernel's `get_ext_report`: no buffer asks for no certificates; a length that is not
    /// page-aligned or above `SEV_FW_BLOB_MAX_SIZE` is `EINVAL`; a buffer smaller than the
    /// host's table is `EIO` with `SNP_GUEST_VMM_ERR_INVALID_LEN` and the length needed in
    /// `certs_len`; otherwise the table, zero-padded, and the report.
    fn get_ext_report(
        &self,
        req: &SnpReportReq,
        resp: &mut SnpReportResp,
        certs: &mut [u8],
    ) -> (std::io::Result<()>, u64, u32) {
        let asked = certs.len() as u32;
        if certs.is_empty() {
            self.report_response(req, resp);
            return (Ok(()), 0, 0);
        }
        if certs.len() > CERTS_MAX_LEN || certs.len() % PAGE_LEN != 0 {
            return (Err(einval()), 0, asked);
        }
        let table = self.host_table();
        let needed = table.len().div_ceil(PAGE_LEN) * PAGE_LEN;
        if needed > certs.len() {
            let exitinfo2 = u64::from(VMM_ERR_INVALID_LEN) << 32;
            return (
                Err(std::io::Error::from_raw_os_error(5)),
                exitinfo2,
                needed as u32,
            );
        }
        certs.fill(0);
        certs[..table.len()].copy_from_slice(&table);
        self.report_response(req, resp);
        (Ok(()), 0, asked)
    }

    fn get_derived_key(
        &self,
        req: &SnpDerivedKeyReq,
        resp: &mut SnpDerivedKeyResp,
    ) -> (std::io::Result<()>, u64) {
        resp.data = [0; 64];
        match self.machine.derive_key(req) {
            Ok(key) => resp.data[0x20..0x40].copy_from_slice(key.as_slice()),
            Err(status) => resp.data[0..4].copy_from_slice(&status.to_le_bytes()),
        }
        (Ok(()), 0)
    }
}

#[cfg(test)]
mod tests;
