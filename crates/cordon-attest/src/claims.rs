//! Claims: what verification extracts from evidence, normalized across platforms.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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

/// Verified claims about a TEE workload. Only [`crate::verify`] produces these from evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Which platform signed the evidence.
    pub platform: Platform,
    /// False for the simulated TEE: such claims prove nothing about hardware isolation.
    pub hardware_backed: bool,
    /// Launch measurement (sim: SHA-384 of the runtime binary and its config).
    #[serde(with = "crate::hexser")]
    pub launch_measurement: Vec<u8>,
    /// Data the launcher attached to the workload (sim: 32 bytes from the runtime's config).
    #[serde(with = "crate::hexser")]
    pub workload_data: Vec<u8>,
    /// The 64 bytes the workload asked to be signed: a binding of a nonce and its public keys.
    #[serde(with = "crate::hexser::array64")]
    pub report_data: [u8; 64],
    /// Whether the TEE runs in a debug mode in which the host can read its memory.
    pub debug: bool,
    /// The key that signed the evidence (sim: the simulated hardware key).
    #[serde(with = "crate::hexser")]
    pub signer: Vec<u8>,
}

impl Claims {
    /// SHA-256 over the claims' canonical JSON form: what audit records name.
    pub fn digest(&self) -> [u8; 32] {
        // serde_json writes struct fields in declaration order, so this is canonical for one version.
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).into()
    }
}
