//! Claims: what verification extracts from evidence, normalized across platforms.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// A TEE platform that produces evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Cordon's simulated TEE: evidence signed by a local key, **not hardware-backed**.
    Sim,
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// Intel SGX.
    Sgx,
}

impl Platform {
    /// Whether evidence of this platform is rooted in hardware.
    pub fn is_hardware_backed(self) -> bool {
        !matches!(self, Platform::Sim)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Sim => "sim",
            Platform::Snp => "snp",
            Platform::Tdx => "tdx",
            Platform::Sgx => "sgx",
        })
    }
}

/// TCB (trusted computing base) claims: firmware and microcode versions, and for DCAP the status
/// Intel's TCB info assigns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcbClaims {
    /// DCAP TCB status (`UpToDate`, `SWHardeningNeeded`, `OutOfDate`, …); `None` for SNP and sim,
    /// whose TCB is judged by its component versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Intel security advisories that apply to this TCB level (`INTEL-SA-…`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisory_ids: Vec<String>,
    /// Component security versions by name (SNP: `bootloader`, `tee`, `snp`, `microcode`, `fmc`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, u64>,
}

/// The key in [`Claims::raw`] under which a verifier names (hex SHA-256 of its DER) the emulated
/// root that vouched for emulated evidence.
pub const EMULATED_ROOT_CLAIM: &str = "emulated_root";

/// Verified claims about a TEE workload, normalized across platforms. Only [`crate::verify`] produces
/// these from evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Which platform signed the evidence.
    pub platform: Platform,
    /// False for the simulated TEE: such claims prove nothing about hardware isolation.
    pub hardware_backed: bool,
    /// Launch measurement: sim (SHA-384 of binary and config), SNP MEASUREMENT, TDX MRTD, SGX MRENCLAVE.
    #[serde(with = "crate::hexser")]
    pub launch_measurement: Vec<u8>,
    /// Who signed the workload: SGX MRSIGNER. `None` elsewhere.
    #[serde(
        default,
        with = "crate::hexser::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub signer_measurement: Option<Vec<u8>>,
    /// Data the launcher attached to the workload: sim workload data, SNP HOST_DATA, TDX MRCONFIGID,
    /// SGX CONFIGID.
    #[serde(with = "crate::hexser")]
    pub workload_data: Vec<u8>,
    /// Runtime-extendable measurements: TDX RTMR0..3. Empty elsewhere.
    #[serde(
        default,
        with = "crate::hexser::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub runtime_measurements: Vec<Vec<u8>>,
    /// The 64 bytes the workload asked to be signed: a binding of a nonce and its public keys.
    #[serde(with = "crate::hexser::array64")]
    pub report_data: [u8; 64],
    /// Whether the TEE runs in a debug mode in which the host can read its memory.
    pub debug: bool,
    /// TCB versions and status, where the platform has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcb: Option<TcbClaims>,
    /// Chip or platform identity: SNP CHIP_ID (absent when masked), DCAP FMSPC.
    #[serde(
        default,
        with = "crate::hexser::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub platform_id: Option<Vec<u8>>,
    /// The key that signed the evidence: the sim hardware key; for SNP the SHA-384 of the VCEK/VLEK
    /// public key; for DCAP the quote's attestation key.
    #[serde(with = "crate::hexser")]
    pub attestation_key: Vec<u8>,
    /// Every parsed field of the platform's evidence, for auditors and specialised policies.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub raw: serde_json::Value,
}

impl Claims {
    /// Whether these claims come from an emulated SNP or TDX platform: evidence in a hardware
    /// format whose chain ends at a test root ([`crate::Endorsements::emulated_roots`]), so **not
    /// hardware-backed**. Tools print EMULATED for such claims, as they print SIMULATED for sim.
    pub fn is_emulated(&self) -> bool {
        self.platform != Platform::Sim && !self.hardware_backed
    }

    /// The SHA-256 of the emulated root that vouched for these claims (`raw.emulated_root`).
    pub fn emulated_root(&self) -> Option<Vec<u8>> {
        self.raw
            .get(EMULATED_ROOT_CLAIM)
            .and_then(|v| v.as_str())
            .and_then(|s| hex::decode(s).ok())
            .filter(|r| r.len() == 32)
    }

    /// SHA-256 over the claims' canonical JSON form: what audit records name.
    pub fn digest(&self) -> [u8; 32] {
        // serde_json writes struct fields in declaration order, so this is canonical for one version.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).into()
    }
}
