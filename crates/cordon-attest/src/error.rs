use thiserror::Error;

/// Why evidence could not be parsed or verified.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EvidenceError {
    #[error("evidence is empty")]
    Empty,
    #[error("unrecognised evidence format: {0}")]
    UnknownFormat(String),
    #[error("sim evidence: expected {expected} bytes, got {found}")]
    Length { expected: usize, found: usize },
    #[error("sim evidence: unsupported version {0} (this verifier knows version 1)")]
    Version(u16),
    #[error("sim evidence: reserved bits of {field} must be zero, found {found}")]
    Reserved { field: &'static str, found: String },
    #[error("sim evidence: signing key {0} is not a trusted sim trust anchor")]
    UntrustedSigner(String),
    #[error("sim evidence: signing key is not a valid Ed25519 point")]
    BadSignerKey,
    #[error(
        "sim evidence: signature does not verify (evidence was altered or signed by another key)"
    )]
    BadSignature,
    #[error(transparent)]
    Snp(#[from] crate::snp::SnpError),
    #[error(transparent)]
    Dcap(#[from] crate::dcap::DcapError),
    #[error("a DCAP quote needs collateral (--collateral FILE|DIR): TCB info, QE identity, CRLs")]
    MissingCollateral,
}

/// Why a policy document is unusable.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy is not valid TOML for a Cordon policy: {0}")]
    Parse(String),
    #[error("policy names no platform: `platforms` must list at least one of sim, snp, tdx, sgx")]
    NoPlatforms,
    #[error("policy lists no launch measurement: `launch_measurements` must name the reference values to accept")]
    NoMeasurements,
    #[error("policy: launch measurement {value} is {len} bytes; measurements are 48 bytes (SHA-384: sim, SNP, TDX) or 32 bytes (SGX MRENCLAVE)")]
    MeasurementLength { value: String, len: usize },
    #[error("policy: emulated root {value} is {len} bytes; emulated_roots are SHA-256 fingerprints (32 bytes) of a test root certificate's DER")]
    EmulatedRootLength { value: String, len: usize },
    #[error("policy: chip id {value} is {len} bytes; SNP CHIP_IDs are 64 bytes")]
    ChipIdLength { value: String, len: usize },
    #[error("policy: PPID {value} is {len} bytes; PCK PPIDs are 16 bytes")]
    PpidLength { value: String, len: usize },
    #[error("policy: guest_policy_mask ({mask:?}) and guest_policy_value ({value:?}) go together, and the value may set only bits of the mask")]
    GuestPolicyRule {
        mask: Option<String>,
        value: Option<String>,
    },
    #[error("policy: sim trust anchor {value} is not a 32-byte Ed25519 public key")]
    TrustAnchor { value: String },
    #[error("a release policy takes no [endorsements]: the key broker's trust anchors come from its own configuration")]
    UnexpectedEndorsements,
    #[error("a policy may not accept `sim` together with a hardware platform: sim evidence is forgeable by whoever holds the sim key")]
    SimWithHardware,
    /// A policy accepting `snp` or `tdx` that does not pin the runtime's configuration
    /// (`workload_data`): the host chooses HOST_DATA / MRCONFIGID at launch, so it would choose the
    /// configuration (KBS URL, models, ONNX Runtime library) of a runtime that still receives the
    /// keys.
    #[error("{}", config_not_pinned(*platform))]
    ConfigNotPinned { platform: crate::Platform },
}

fn config_not_pinned(platform: crate::Platform) -> String {
    let how = match platform {
        crate::Platform::Tdx => {
            "set `workload_data` to the SHA-384 of the runtime configuration file (the TD's \
             MRCONFIGID; RTMRs do not pin it: the runtime binds its configuration through \
             MRCONFIGID alone)"
        }
        _ => {
            "set `workload_data` to the SHA-256 of the runtime configuration file (the guest's \
             HOST_DATA)"
        }
    };
    format!(
        "a policy accepting `{platform}` must pin the runtime configuration, which the host chooses \
         at launch (KBS URL, models and their signers, the ONNX Runtime library and its digest): \
         {how}; or, to accept any configuration, say so with `allow_unpinned_config = true`"
    )
}
