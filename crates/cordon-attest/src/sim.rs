//! Evidence of Cordon's simulated TEE (`sim`).
//!
//! The simulated TEE is for development and tests. Its evidence is signed by a local Ed25519 key that
//! stands in for hardware; it proves nothing about isolation, and a policy accepts it only when it names
//! `sim` explicitly. Layout (all integers little-endian), documented in `docs/protocol.md`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0   | 8  | magic `CORDNSIM` |
//! | 8   | 2  | version = 1 |
//! | 10  | 2  | flags: bit 0 = debug; other bits zero |
//! | 12  | 4  | reserved, zero |
//! | 16  | 48 | launch measurement (SHA-384) |
//! | 64  | 32 | workload data |
//! | 96  | 64 | report data |
//! | 160 | 32 | signer: the simulated hardware key (Ed25519 public key) |
//! | 192 | 64 | Ed25519 signature over bytes 0..192 |

use crate::error::EvidenceError;
use crate::{Claims, Platform};
use ed25519_dalek::{Signature, VerifyingKey};

/// The first eight bytes of every sim evidence.
pub const MAGIC: &[u8; 8] = b"CORDNSIM";
/// The only version this code writes and reads.
pub const VERSION: u16 = 1;
/// Total length of sim evidence.
pub const LEN: usize = 256;
/// Length of the signed part.
pub const SIGNED_LEN: usize = 192;
const FLAG_DEBUG: u16 = 1;

/// The signed body of sim evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    pub launch_measurement: [u8; 48],
    pub workload_data: [u8; 32],
    pub report_data: [u8; 64],
    pub debug: bool,
    /// The simulated hardware key that signs.
    pub signer: [u8; 32],
}

impl SimReport {
    /// The bytes the simulated hardware key signs (offsets 0..192).
    pub fn signed_bytes(&self) -> [u8; SIGNED_LEN] {
        let mut out = [0u8; SIGNED_LEN];
        out[0..8].copy_from_slice(MAGIC);
        out[8..10].copy_from_slice(&VERSION.to_le_bytes());
        let flags: u16 = if self.debug { FLAG_DEBUG } else { 0 };
        out[10..12].copy_from_slice(&flags.to_le_bytes());
        out[16..64].copy_from_slice(&self.launch_measurement);
        out[64..96].copy_from_slice(&self.workload_data);
        out[96..160].copy_from_slice(&self.report_data);
        out[160..192].copy_from_slice(&self.signer);
        out
    }

    /// Assembles evidence from the signed bytes and a signature over them.
    pub fn to_evidence(&self, signature: &[u8; 64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(&self.signed_bytes());
        out.extend_from_slice(signature);
        out
    }

    /// Parses sim evidence without verifying its signature. Checks length, magic, version and the
    /// reserved fields.
    pub fn parse(bytes: &[u8]) -> Result<(SimReport, [u8; 64]), EvidenceError> {
        if bytes.len() != LEN {
            return Err(EvidenceError::Length {
                expected: LEN,
                found: bytes.len(),
            });
        }
        if &bytes[0..8] != MAGIC {
            return Err(EvidenceError::UnknownFormat(
                "missing CORDNSIM magic".into(),
            ));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(EvidenceError::Version(version));
        }
        let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
        if flags & !FLAG_DEBUG != 0 {
            return Err(EvidenceError::Reserved {
                field: "flags",
                found: format!("{flags:#06x}"),
            });
        }
        if bytes[12..16] != [0u8; 4] {
            return Err(EvidenceError::Reserved {
                field: "reserved",
                found: hex::encode(&bytes[12..16]),
            });
        }
        let mut r = SimReport {
            launch_measurement: [0; 48],
            workload_data: [0; 32],
            report_data: [0; 64],
            debug: flags & FLAG_DEBUG != 0,
            signer: [0; 32],
        };
        r.launch_measurement.copy_from_slice(&bytes[16..64]);
        r.workload_data.copy_from_slice(&bytes[64..96]);
        r.report_data.copy_from_slice(&bytes[96..160]);
        r.signer.copy_from_slice(&bytes[160..192]);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[192..256]);
        Ok((r, sig))
    }
}

/// Verifies sim evidence against the trusted sim keys and returns its claims.
pub fn verify(bytes: &[u8], trust_anchors: &[[u8; 32]]) -> Result<Claims, EvidenceError> {
    let (report, sig) = SimReport::parse(bytes)?;
    if !trust_anchors.iter().any(|a| a == &report.signer) {
        return Err(EvidenceError::UntrustedSigner(hex::encode(report.signer)));
    }
    let key = VerifyingKey::from_bytes(&report.signer).map_err(|_| EvidenceError::BadSignerKey)?;
    key.verify_strict(&bytes[..SIGNED_LEN], &Signature::from_bytes(&sig))
        .map_err(|_| EvidenceError::BadSignature)?;
    Ok(Claims {
        platform: Platform::Sim,
        hardware_backed: false,
        launch_measurement: report.launch_measurement.to_vec(),
        signer_measurement: None,
        workload_data: report.workload_data.to_vec(),
        runtime_measurements: Vec::new(),
        report_data: report.report_data,
        debug: report.debug,
        tcb: None,
        platform_id: None,
        attestation_key: report.signer.to_vec(),
        raw: serde_json::json!({ "version": VERSION, "simulated": true }),
    })
}
