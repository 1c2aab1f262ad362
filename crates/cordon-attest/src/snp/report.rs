//! The SEV-SNP attestation report: AMD SEV Secure Nested Paging Firmware ABI Specification
//! (publication 56860), Table "ATTESTATION_REPORT Structure". Versions 2, 3 and 5 are accepted.
//! All integers are little-endian.

use super::SnpError;
use serde::{Deserialize, Serialize};

/// Length of a report, signature included.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes 0x000..0x2A0 are signed.
pub const SIGNED_LEN: usize = 0x2A0;

/// AMD product line, which decides the TCB layout and the root of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    /// From the CPUID family and model of a v3+ report (AMD family 19h models 00h-0Fh Milan,
    /// 10h-1Fh Genoa; family 1Ah models 00h-11h Turin).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

/// TCB_VERSION, decoded for a product line. Milan and Genoa: BOOT_LOADER [7:0], TEE [15:8],
/// SNP [55:48], MICROCODE [63:56]. Turin: FMC [7:0], BOOT_LOADER [15:8], TEE [23:16], SNP [31:24],
/// MICROCODE [63:56].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TcbVersion {
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl TcbVersion {
    pub fn decode(raw: u64, product: Product) -> TcbVersion {
        let b = raw.to_le_bytes();
        match product {
            Product::Milan | Product::Genoa => TcbVersion {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            Product::Turin => TcbVersion {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }
}

/// Which key signed the report (SIGNING_KEY, bits 4:2 at offset 0x48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SigningKey {
    Vcek,
    Vlek,
    None,
}

/// A parsed report. Field names follow the specification's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationReport {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    #[serde(serialize_with = "hex_ser")]
    pub family_id: [u8; 16],
    #[serde(serialize_with = "hex_ser")]
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: u64,
    pub platform_info: u64,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
    #[serde(serialize_with = "hex_ser")]
    pub report_data: [u8; 64],
    #[serde(serialize_with = "hex_ser")]
    pub measurement: [u8; 48],
    #[serde(serialize_with = "hex_ser")]
    pub host_data: [u8; 32],
    #[serde(serialize_with = "hex_ser")]
    pub id_key_digest: [u8; 48],
    #[serde(serialize_with = "hex_ser")]
    pub author_key_digest: [u8; 48],
    #[serde(serialize_with = "hex_ser")]
    pub report_id: [u8; 32],
    #[serde(serialize_with = "hex_ser")]
    pub report_id_ma: [u8; 32],
    pub reported_tcb: u64,
    /// CPUID family, model, stepping (v3+; zero in v2).
    pub cpuid_fam_id: u8,
    pub cpuid_mod_id: u8,
    pub cpuid_step: u8,
    #[serde(serialize_with = "hex_ser")]
    pub chip_id: [u8; 64],
    pub committed_tcb: u64,
    pub current_build: u8,
    pub current_minor: u8,
    pub current_major: u8,
    pub committed_build: u8,
    pub committed_minor: u8,
    pub committed_major: u8,
    pub launch_tcb: u64,
    /// v5 only.
    pub launch_mit_vector: Option<u64>,
    /// v5 only.
    pub current_mit_vector: Option<u64>,
    /// Signature R, big-endian, 48 bytes.
    #[serde(serialize_with = "hex_ser")]
    pub signature_r: [u8; 48],
    /// Signature S, big-endian, 48 bytes.
    #[serde(serialize_with = "hex_ser")]
    pub signature_s: [u8; 48],
}

fn hex_ser<S: serde::Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

/// Guest POLICY bit 19: DEBUG allowed.
pub const POLICY_DEBUG: u64 = 1 << 19;
/// Guest POLICY bit 18: MIGRATE_MA, association with a migration agent allowed. A migration agent
/// can export the guest's memory and state to another machine (SNP ABI, "Guest Policy").
pub const POLICY_MIGRATE_MA: u64 = 1 << 18;

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&self, off: usize) -> u8 {
        self.0[off]
    }
    fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.arr(off))
    }
    fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.arr(off))
    }
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[off..off + N]);
        a
    }
    /// A little-endian signature component of 72 bytes whose top 24 bytes must be zero, as
    /// big-endian 48 bytes.
    fn ecdsa_component(&self, off: usize, name: &'static str) -> Result<[u8; 48], SnpError> {
        if self.0[off + 48..off + 72].iter().any(|&b| b != 0) {
            return Err(SnpError::Reserved {
                field: name,
                offset: off + 48,
            });
        }
        let mut be: [u8; 48] = self.arr(off);
        be.reverse();
        Ok(be)
    }
}

fn zero(bytes: &[u8], field: &'static str, offset: usize) -> Result<(), SnpError> {
    if bytes.iter().any(|&b| b != 0) {
        return Err(SnpError::Reserved { field, offset });
    }
    Ok(())
}

impl AttestationReport {
    /// Parses a report, checking its length, version, signature algorithm and reserved fields.
    /// The signature is not verified here.
    pub fn parse(bytes: &[u8]) -> Result<AttestationReport, SnpError> {
        if bytes.len() != REPORT_LEN {
            return Err(SnpError::Length {
                expected: REPORT_LEN,
                found: bytes.len(),
            });
        }
        let r = Reader(bytes);
        let version = r.u32(0x00);
        if !matches!(version, 2 | 3 | 5) {
            return Err(SnpError::Version(version));
        }
        let signature_algo = r.u32(0x34);
        if signature_algo != 1 {
            return Err(SnpError::SignatureAlgorithm(signature_algo));
        }
        let flags = r.u32(0x48);
        if flags & !0x1F != 0 {
            return Err(SnpError::Reserved {
                field: "flags[31:5]",
                offset: 0x48,
            });
        }
        let signing_key = match (flags >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => return Err(SnpError::SigningKeyField(other)),
        };
        zero(&bytes[0x4C..0x50], "reserved (0x4C)", 0x4C)?;
        let cpuid_start = if version >= 3 { 0x18B } else { 0x188 };
        zero(
            &bytes[cpuid_start..0x1A0],
            "reserved (0x188..0x1A0)",
            cpuid_start,
        )?;
        zero(&bytes[0x1EB..0x1EC], "reserved (0x1EB)", 0x1EB)?;
        zero(&bytes[0x1EF..0x1F0], "reserved (0x1EF)", 0x1EF)?;
        let mit_end = if version >= 5 { 0x208 } else { 0x1F8 };
        zero(
            &bytes[mit_end..SIGNED_LEN],
            "reserved (0x1F8..0x2A0)",
            mit_end,
        )?;
        zero(
            &bytes[0x2A0 + 144..REPORT_LEN],
            "signature reserved",
            0x2A0 + 144,
        )?;
        Ok(AttestationReport {
            version,
            guest_svn: r.u32(0x04),
            policy: r.u64(0x08),
            family_id: r.arr(0x10),
            image_id: r.arr(0x20),
            vmpl: r.u32(0x30),
            signature_algo,
            current_tcb: r.u64(0x38),
            platform_info: r.u64(0x40),
            author_key_en: flags & 1 != 0,
            mask_chip_key: flags & 2 != 0,
            signing_key,
            report_data: r.arr(0x50),
            measurement: r.arr(0x90),
            host_data: r.arr(0xC0),
            id_key_digest: r.arr(0xE0),
            author_key_digest: r.arr(0x110),
            report_id: r.arr(0x140),
            report_id_ma: r.arr(0x160),
            reported_tcb: r.u64(0x180),
            cpuid_fam_id: if version >= 3 { r.u8(0x188) } else { 0 },
            cpuid_mod_id: if version >= 3 { r.u8(0x189) } else { 0 },
            cpuid_step: if version >= 3 { r.u8(0x18A) } else { 0 },
            chip_id: r.arr(0x1A0),
            committed_tcb: r.u64(0x1E0),
            current_build: r.u8(0x1E8),
            current_minor: r.u8(0x1E9),
            current_major: r.u8(0x1EA),
            committed_build: r.u8(0x1EC),
            committed_minor: r.u8(0x1ED),
            committed_major: r.u8(0x1EE),
            launch_tcb: r.u64(0x1F0),
            launch_mit_vector: (version >= 5).then(|| r.u64(0x1F8)),
            current_mit_vector: (version >= 5).then(|| r.u64(0x200)),
            signature_r: r.ecdsa_component(0x2A0, "signature R")?,
            signature_s: r.ecdsa_component(0x2E8, "signature S")?,
        })
    }

    /// Whether the guest policy lets the host debug the guest (POLICY bit 19).
    pub fn debug(&self) -> bool {
        self.policy & POLICY_DEBUG != 0
    }

    /// Whether the guest policy allows a migration agent (POLICY bit 18).
    pub fn migrate_ma(&self) -> bool {
        self.policy & POLICY_MIGRATE_MA != 0
    }

    /// The product line from CPUID fields (v3+), if they name a known one.
    pub fn product_from_cpuid(&self) -> Option<Product> {
        if self.version >= 3 {
            Product::from_cpuid(self.cpuid_fam_id, self.cpuid_mod_id)
        } else {
            None
        }
    }
}
