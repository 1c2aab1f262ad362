//! Appraisal policy: reference values and rules applied to verified claims.
//!
//! A policy is a TOML document:
//!
//! ```toml
//! platforms = ["snp"]                    # evidence of other platforms is refused
//! launch_measurements = ["9f…"]          # reference values, hex; at least one
//! workload_data = "00…"                  # exact workload data expected (SNP HOST_DATA, TDX
//!                                        # MRCONFIGID): required for snp and tdx, see below
//! allow_unpinned_config = false          # default false; true: any runtime configuration
//! allow_debug = false                    # default false
//! allow_migration_agent = false          # SNP, default false; true: MIGRATE_MA guests accepted
//! tcb_statuses = ["UpToDate"]            # optional (DCAP): accepted TCB statuses; default below
//! allowed_advisories = ["INTEL-SA-00615"] # optional (DCAP): if set, every advisory must be listed
//! max_vmpl = 0                           # optional (SNP): highest VMPL accepted, default 0
//! rtmrs = ["…", "…"]                     # TDX: RTMR0.. reference values (or pin workload_data)
//! min_tcb_floor = "default"              # SNP: "default" (AMD's fixes, per product line) or "none"
//! allowed_chip_ids = ["…"]               # optional (SNP): CHIP_IDs accepted (a machine allowlist)
//! min_tcb_evaluation_data_number = 17    # optional (DCAP): collateral at least this recent
//! allowed_ppids = ["…"]                  # optional (DCAP): PCK PPIDs accepted (a machine allowlist)
//! guest_policy_mask = 0x100000           # optional (SNP): guest POLICY bits to check …
//! guest_policy_value = 0                 #   … and the value they must have (e.g. SINGLE_SOCKET)
//! emulated_roots = ["…"]                 # tests only: SHA-256 of emulated roots whose evidence is
//!                                        # accepted (EMULATED, NOT hardware-backed)
//!
//! [min_tcb]                              # optional: minimum TCB component versions
//! microcode = 230                        # SNP: raises the default floor; lower only with "none"
//!
//! [endorsements]                         # optional; used by clients and proxies
//! sim_trust_anchors = ["3b…"]            # Ed25519 keys of the simulated hardware
//! ```
//!
//! **The runtime configuration must be pinned.** On SNP and TDX the runtime's configuration (KBS URL,
//! models and their signers, the ONNX Runtime library and its digest) reaches the TEE through workload
//! data the host chooses at launch: HOST_DATA (SNP) = SHA-256 of the configuration file, MRCONFIGID
//! (TDX) = SHA-384 of it (the runtime checks this at boot). A policy that lists `snp` or `tdx` must
//! therefore set `workload_data` (for TDX, a non-empty `rtmrs` list does too); one that means to accept
//! whatever the host configured says `allow_unpinned_config = true`, and every tool that loads it
//! prints a warning ([`Policy::warnings`]).
//!
//! **SNP TCB floor.** AMD publishes no "up to date" verdict for SNP, so every SNP report is held to a
//! default minimum TCB for its product line (Milan, Genoa, Turin; microcode per CPU stepping), taken
//! from AMD's security bulletins: see [`crate::snp::floor`] for the values and their sources. The
//! product line is the one of the key that signed the report (`claims.raw["product"]`). `[min_tcb]`
//! may raise any component above the default; a value below it is not honoured (the default wins)
//! unless the policy also says `min_tcb_floor = "none"`, which drops the default floor entirely, so
//! that only `[min_tcb]` applies. DCAP platforms are judged by Intel's TCB status (`tcb_statuses`).
//!
//! **Emulated evidence.** CI runs the SNP and TDX paths on an emulator whose reports and quotes are
//! genuine structures signed by a test root chain instead of AMD's or Intel's. Verification accepts
//! such a chain only when its root's SHA-256 is among [`crate::Endorsements::emulated_roots`], and
//! marks the claims not hardware-backed ([`Claims::is_emulated`]); appraisal then accepts them only
//! when the policy names that same root in `emulated_roots`. A policy without it (every production
//! policy) refuses emulated evidence whatever else it says.

use crate::error::PolicyError;
use crate::{Claims, Endorsements, Platform};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What an appraisal accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Platforms accepted. `sim` is accepted only when listed here.
    pub platforms: Vec<Platform>,
    /// Reference values for the launch measurement.
    #[serde(with = "crate::hexser::list")]
    pub launch_measurements: Vec<Vec<u8>>,
    /// Whether a debug TEE (host can read its memory) is acceptable.
    #[serde(default)]
    pub allow_debug: bool,
    /// Whether a policy accepting `snp` or `tdx` may leave the runtime configuration unpinned (no
    /// `workload_data`, and for TDX no RTMRs). Default false: such a policy is refused when parsed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_unpinned_config: bool,
    /// SEV-SNP: whether a guest whose policy allows a migration agent (MIGRATE_MA) is acceptable.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_migration_agent: bool,
    /// When set, the workload data must equal this.
    #[serde(
        default,
        with = "crate::hexser::opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub workload_data: Option<Vec<u8>>,
    /// DCAP TCB statuses accepted; `None` means [`DEFAULT_TCB_STATUSES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcb_statuses: Option<Vec<String>>,
    /// When set, every advisory in the claims must be listed here; `None` accepts (and reports) any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_advisories: Option<Vec<String>>,
    /// Minimum TCB component versions (`claims.tcb.components`: SNP `bootloader`, `tee`, `snp`,
    /// `microcode`, `fmc`; DCAP SVNs); every listed component must be present and at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<std::collections::BTreeMap<String, u64>>,
    /// SEV-SNP: highest VMPL a report may come from. Default 0 (the most privileged level only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vmpl: Option<u32>,
    /// TDX: reference values for RTMR0, RTMR1, … (a prefix of the four); each must match exactly.
    /// MRTD measures only the TD firmware: the kernel, command line and workload are in the RTMRs.
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub rtmrs: Option<Vec<Vec<u8>>>,
    /// SEV-SNP: whether the default TCB floor of [`crate::snp::floor`] applies (`"default"`) or only
    /// `min_tcb` does (`"none"`).
    #[serde(default, skip_serializing_if = "MinTcbFloor::is_default")]
    pub min_tcb_floor: MinTcbFloor,
    /// SEV-SNP: when set, the report's CHIP_ID must be one of these (a machine allowlist); a report
    /// with a masked chip id is then refused.
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_chip_ids: Option<Vec<Vec<u8>>>,
    /// DCAP: the TCB info's `tcbEvaluationDataNumber` must be at least this. Intel raises it at
    /// every TCB recovery, so it refuses collateral from before one, which stays signed and valid
    /// until its `nextUpdate` and which a host could ship with its quote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb_evaluation_data_number: Option<u64>,
    /// DCAP: when set, the PPID of the quote's PCK certificate must be one of these (a machine
    /// allowlist for TDX and SGX, as `allowed_chip_ids` is for SNP).
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_ppids: Option<Vec<Vec<u8>>>,
    /// SEV-SNP: guest POLICY bits the report must have, as `POLICY & guest_policy_mask ==
    /// guest_policy_value` (SNP ABI, "Guest Policy": SMT bit 16, MIGRATE_MA 18, DEBUG 19,
    /// SINGLE_SOCKET 20, CXL_ALLOW 21, …). DEBUG and MIGRATE_MA are also checked on their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy_mask: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_policy_value: Option<u64>,
    /// Tests only: SHA-256 fingerprints (of the DER) of emulated root certificates whose evidence
    /// this policy accepts. Empty in every production policy, which then refuses emulated evidence.
    #[serde(
        default,
        with = "crate::hexser::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub emulated_roots: Vec<Vec<u8>>,
    /// Accept any launch measurement. Never read from a file: only [`Policy::hardware_default`]
    /// sets it, so an empty reference-value list cannot silently accept everything.
    #[serde(skip)]
    pub any_measurement: bool,
}

/// Which minimum TCB an SNP report is held to besides the policy's own `[min_tcb]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MinTcbFloor {
    /// The default floor of the report's product line ([`crate::snp::floor`]); `[min_tcb]` can only
    /// raise it.
    #[default]
    Default,
    /// No default floor: only `[min_tcb]` (if any) applies. Said explicitly, in so many words.
    None,
}

impl MinTcbFloor {
    fn is_default(&self) -> bool {
        *self == MinTcbFloor::Default
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// TCB statuses accepted when a policy names none: up to date, or only configuration or software
/// hardening advised (the advisories are reported with the claims). `OutOfDate*`, `Revoked` and any
/// unknown status are refused.
pub const DEFAULT_TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
];

impl Policy {
    /// Parses a policy from TOML and checks it is usable. An `[endorsements]` table is refused here:
    /// release policies are appraised with the verifier's own trust anchors, and silently ignoring the
    /// table would mislead whoever wrote it. Clients read [`PolicyDocument`] instead.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let doc = PolicyDocument::from_toml(text)?;
        if doc.endorsements.is_some() {
            return Err(PolicyError::UnexpectedEndorsements);
        }
        Ok(doc.policy)
    }

    /// Serializes the policy to TOML.
    pub fn to_toml(&self) -> String {
        PolicyDocument {
            policy: self.clone(),
            endorsements: None,
        }
        .to_toml()
    }

    /// The policy `cordon attest verify` applies when given none: any hardware platform, any
    /// measurement, any VMPL, any workload data, no debug, no migration agent, default TCB statuses
    /// and the default SNP TCB floor. For inspection only: only code can build it (a policy without
    /// reference values, marked by `any_measurement`, which no file can set), and what [`Policy::to_toml`]
    /// writes of it is refused by [`Policy::from_toml`] (no measurements, configuration not pinned), so
    /// it cannot be registered as a release policy.
    pub fn hardware_default() -> Policy {
        Policy {
            // The issue's default: cryptographically valid, not debug, TCB status. A report from any
            // VMPL is accepted here; policy files default to VMPL 0.
            max_vmpl: Some(3),
            any_measurement: true,
            ..Policy::new(
                vec![Platform::Snp, Platform::Tdx, Platform::Sgx],
                Vec::new(),
            )
        }
    }

    /// A policy accepting `platforms` and exactly `launch_measurements`, with every other rule at its
    /// fail-closed default: no debug, no workload data pinned, default TCB statuses, VMPL 0.
    pub fn new(platforms: Vec<Platform>, launch_measurements: Vec<Vec<u8>>) -> Policy {
        Policy {
            platforms,
            launch_measurements,
            allow_debug: false,
            allow_unpinned_config: false,
            allow_migration_agent: false,
            workload_data: None,
            tcb_statuses: None,
            allowed_advisories: None,
            min_tcb: None,
            max_vmpl: None,
            rtmrs: None,
            min_tcb_floor: MinTcbFloor::Default,
            allowed_chip_ids: None,
            min_tcb_evaluation_data_number: None,
            allowed_ppids: None,
            guest_policy_mask: None,
            guest_policy_value: None,
            emulated_roots: Vec::new(),
            any_measurement: false,
        }
    }

    /// What this policy loosens that whoever loads it should see, one sentence each: tools print
    /// them as `WARNING: …` when they load a release or client policy. Empty for a policy at the
    /// fail-closed defaults.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let hardware: Vec<String> = self
            .platforms
            .iter()
            .filter(|p| p.is_hardware_backed())
            .map(|p| p.to_string())
            .collect();
        let snp = self.platforms.contains(&Platform::Snp);
        if self.allow_unpinned_config {
            out.push(
                "policy sets allow_unpinned_config = true: the runtime configuration (KBS URL, models \
                 and signers, ONNX Runtime library) is not pinned, so the host that launches the TEE \
                 chooses it and the runtime still passes this policy"
                    .to_string(),
            );
        }
        if self.allow_debug && !hardware.is_empty() {
            out.push(format!(
                "policy sets allow_debug = true for {}: the host can read and change a debug TEE's \
                 memory, so nothing released under this policy is protected from it",
                hardware.join(", ")
            ));
        }
        if snp && self.allow_migration_agent {
            out.push(
                "policy sets allow_migration_agent = true: an SNP guest whose policy allows a \
                 migration agent (MIGRATE_MA) is accepted; that agent can move its memory elsewhere"
                    .to_string(),
            );
        }
        if snp && self.min_tcb_floor == MinTcbFloor::None {
            let own = match &self.min_tcb {
                Some(m) if !m.is_empty() => {
                    let list: Vec<String> = m.iter().map(|(k, v)| format!("{k} >= {v}")).collect();
                    format!("only the policy's [min_tcb] ({}) applies", list.join(", "))
                }
                _ => "no minimum TCB applies at all".to_string(),
            };
            out.push(format!(
                "policy sets min_tcb_floor = \"none\": SNP firmware and microcode older than AMD's \
                 published fixes are accepted; {own}"
            ));
        }
        if snp && self.max_vmpl.unwrap_or(0) > 0 {
            out.push(format!(
                "policy sets max_vmpl = {}: SNP reports from less privileged VMPLs are accepted, \
                 and whatever runs at the more privileged VMPLs can read and change that guest",
                self.max_vmpl.unwrap_or(0)
            ));
        }
        if !self.emulated_roots.is_empty() {
            out.push(format!(
                "policy accepts EMULATED evidence (emulated_roots: {}): evidence signed by a test \
                 root, NOT hardware-backed; for tests only, never for data that matters",
                self.emulated_roots
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some(statuses) = &self.tcb_statuses {
            let extra: Vec<&str> = statuses
                .iter()
                .map(String::as_str)
                .filter(|s| !DEFAULT_TCB_STATUSES.contains(s))
                .collect();
            if !extra.is_empty() {
                out.push(format!(
                    "policy accepts DCAP TCB statuses the default refuses ({}): platforms that \
                     Intel says lack security fixes are accepted",
                    extra.join(", ")
                ));
            }
        }
        out
    }

    fn validate(&self) -> Result<(), PolicyError> {
        // Evidence forged with the sim key must never meet a hardware platform's reference values.
        if self.platforms.contains(&Platform::Sim)
            && self.platforms.iter().any(|p| p.is_hardware_backed())
        {
            return Err(PolicyError::SimWithHardware);
        }
        // The host chooses HOST_DATA / MRCONFIGID, and with them the runtime's configuration: a
        // hardware policy must pin it, or say in so many words that it accepts any. RTMRs do not
        // pin it: the runtime binds its configuration through MRCONFIGID only (it checks the
        // configuration's hash against it at boot) and extends nothing into an RTMR.
        if !self.allow_unpinned_config && self.workload_data.is_none() {
            let unpinned = [Platform::Snp, Platform::Tdx]
                .into_iter()
                .find(|p| self.platforms.contains(p));
            if let Some(platform) = unpinned {
                return Err(PolicyError::ConfigNotPinned { platform });
            }
        }
        if self.platforms.is_empty() {
            return Err(PolicyError::NoPlatforms);
        }
        if self.launch_measurements.is_empty() {
            return Err(PolicyError::NoMeasurements);
        }
        for root in &self.emulated_roots {
            if root.len() != 32 {
                return Err(PolicyError::EmulatedRootLength {
                    value: hex::encode(root),
                    len: root.len(),
                });
            }
        }
        for id in self.allowed_ppids.iter().flatten() {
            if id.len() != 16 {
                return Err(PolicyError::PpidLength {
                    value: hex::encode(id),
                    len: id.len(),
                });
            }
        }
        match (self.guest_policy_mask, self.guest_policy_value) {
            (None, None) => {}
            (Some(mask), Some(value)) if value & !mask == 0 => {}
            (mask, value) => {
                return Err(PolicyError::GuestPolicyRule {
                    mask: mask.map(|m| format!("{m:#x}")),
                    value: value.map(|v| format!("{v:#x}")),
                })
            }
        }
        for id in self.allowed_chip_ids.iter().flatten() {
            if id.len() != 64 {
                return Err(PolicyError::ChipIdLength {
                    value: hex::encode(id),
                    len: id.len(),
                });
            }
        }
        for m in &self.launch_measurements {
            if m.len() != 48 && m.len() != 32 {
                return Err(PolicyError::MeasurementLength {
                    value: hex::encode(m),
                    len: m.len(),
                });
            }
        }
        Ok(())
    }
}

/// A policy file as clients use it: the policy and, optionally, the endorsements to verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    pub policy: Policy,
    pub endorsements: Option<Endorsements>,
}

// The file form: the policy's fields at top level, and an optional `[endorsements]` table.
// Unknown keys are errors, so a typo cannot loosen a policy.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    platforms: Vec<Platform>,
    #[serde(with = "crate::hexser::list")]
    launch_measurements: Vec<Vec<u8>>,
    #[serde(default)]
    allow_debug: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_unpinned_config: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_migration_agent: bool,
    #[serde(
        default,
        with = "crate::hexser::opt",
        skip_serializing_if = "Option::is_none"
    )]
    workload_data: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcb_statuses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allowed_advisories: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_tcb: Option<std::collections::BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_vmpl: Option<u32>,
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    rtmrs: Option<Vec<Vec<u8>>>,
    #[serde(default, skip_serializing_if = "MinTcbFloor::is_default")]
    min_tcb_floor: MinTcbFloor,
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    allowed_chip_ids: Option<Vec<Vec<u8>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_tcb_evaluation_data_number: Option<u64>,
    #[serde(
        default,
        with = "crate::hexser::opt_list",
        skip_serializing_if = "Option::is_none"
    )]
    allowed_ppids: Option<Vec<Vec<u8>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_policy_mask: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_policy_value: Option<u64>,
    #[serde(
        default,
        with = "crate::hexser::list",
        skip_serializing_if = "Vec::is_empty"
    )]
    emulated_roots: Vec<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endorsements: Option<RawEndorsements>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndorsements {
    #[serde(default)]
    sim_trust_anchors: Vec<String>,
}

impl PolicyDocument {
    /// Parses a policy document from TOML; unknown keys are errors, so a typo cannot loosen a policy.
    pub fn from_toml(text: &str) -> Result<PolicyDocument, PolicyError> {
        let raw: RawDocument =
            toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        let policy = Policy {
            platforms: raw.platforms,
            launch_measurements: raw.launch_measurements,
            allow_debug: raw.allow_debug,
            allow_unpinned_config: raw.allow_unpinned_config,
            allow_migration_agent: raw.allow_migration_agent,
            workload_data: raw.workload_data,
            tcb_statuses: raw.tcb_statuses,
            allowed_advisories: raw.allowed_advisories,
            min_tcb: raw.min_tcb,
            max_vmpl: raw.max_vmpl,
            rtmrs: raw.rtmrs,
            min_tcb_floor: raw.min_tcb_floor,
            allowed_chip_ids: raw.allowed_chip_ids,
            min_tcb_evaluation_data_number: raw.min_tcb_evaluation_data_number,
            allowed_ppids: raw.allowed_ppids,
            guest_policy_mask: raw.guest_policy_mask,
            guest_policy_value: raw.guest_policy_value,
            emulated_roots: raw.emulated_roots,
            any_measurement: false,
        };
        policy.validate()?;
        let endorsements = raw
            .endorsements
            .map(|e| {
                let anchors = e
                    .sim_trust_anchors
                    .iter()
                    .map(|s| {
                        hex::decode(s.trim())
                            .ok()
                            .and_then(|b| <[u8; 32]>::try_from(b).ok())
                            .ok_or_else(|| PolicyError::TrustAnchor { value: s.clone() })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, PolicyError>(Endorsements {
                    sim_trust_anchors: anchors,
                    ..Default::default()
                })
            })
            .transpose()?;
        Ok(PolicyDocument {
            policy,
            endorsements,
        })
    }

    /// The endorsements a client verifies with: the document's `[endorsements]`, plus the emulated
    /// roots its policy names (so that a test policy verifies with the roots it appraises with).
    /// AMD's and Intel's roots are pinned, and a runtime ships its VCEK or collateral with its
    /// evidence, so a hardware policy needs no `[endorsements]`. `None` when the policy accepts
    /// `sim` and names no sim trust anchor: no sim evidence could verify.
    pub fn verification_endorsements(&self) -> Option<Endorsements> {
        let mut e = match (
            &self.endorsements,
            self.policy.platforms.contains(&Platform::Sim),
        ) {
            (Some(e), _) => e.clone(),
            (None, false) => Endorsements::default(),
            (None, true) => return None,
        };
        for root in &self.policy.emulated_roots {
            if let Ok(r) = <[u8; 32]>::try_from(root.as_slice()) {
                if !e.emulated_roots.contains(&r) {
                    e.emulated_roots.push(r);
                }
            }
        }
        Some(e)
    }

    /// Serializes the document to TOML.
    pub fn to_toml(&self) -> String {
        let raw = RawDocument {
            platforms: self.policy.platforms.clone(),
            launch_measurements: self.policy.launch_measurements.clone(),
            allow_debug: self.policy.allow_debug,
            allow_unpinned_config: self.policy.allow_unpinned_config,
            allow_migration_agent: self.policy.allow_migration_agent,
            workload_data: self.policy.workload_data.clone(),
            tcb_statuses: self.policy.tcb_statuses.clone(),
            allowed_advisories: self.policy.allowed_advisories.clone(),
            min_tcb: self.policy.min_tcb.clone(),
            max_vmpl: self.policy.max_vmpl,
            rtmrs: self.policy.rtmrs.clone(),
            min_tcb_floor: self.policy.min_tcb_floor,
            allowed_chip_ids: self.policy.allowed_chip_ids.clone(),
            min_tcb_evaluation_data_number: self.policy.min_tcb_evaluation_data_number,
            allowed_ppids: self.policy.allowed_ppids.clone(),
            guest_policy_mask: self.policy.guest_policy_mask,
            guest_policy_value: self.policy.guest_policy_value,
            emulated_roots: self.policy.emulated_roots.clone(),
            endorsements: self.endorsements.as_ref().map(|e| RawEndorsements {
                sim_trust_anchors: e.sim_trust_anchors.iter().map(hex::encode).collect(),
            }),
        };
        toml::to_string(&raw).unwrap_or_default()
    }
}

/// One failed check of an appraisal, naming the field and both values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum AppraisalFailure {
    PlatformNotAllowed {
        found: Platform,
        allowed: Vec<Platform>,
    },
    MeasurementNotAllowed {
        found: String,
        allowed: Vec<String>,
    },
    DebugNotAllowed,
    /// SEV-SNP: the guest policy (hex, when the claims carry it) allows a migration agent.
    MigrationAgentNotAllowed {
        guest_policy: Option<String>,
    },
    WorkloadDataMismatch {
        found: String,
        expected: String,
    },
    TcbStatusNotAllowed {
        found: String,
        allowed: Vec<String>,
    },
    AdvisoryNotAllowed {
        advisory: String,
        allowed: Vec<String>,
    },
    TcbBelowMinimum {
        component: String,
        found: Option<u64>,
        minimum: u64,
    },
    /// SEV-SNP: below the default floor of the product line ([`crate::snp::floor`]).
    TcbBelowDefaultFloor {
        component: String,
        found: Option<u64>,
        minimum: u64,
        product: String,
        source: String,
    },
    /// SEV-SNP claims that name no known product line, so the default floor cannot be chosen.
    SnpProductUnknown {
        found: String,
    },
    VmplTooHigh {
        found: u64,
        max: u32,
    },
    RtmrMismatch {
        index: usize,
        found: String,
        expected: String,
    },
    /// SEV-SNP: the chip is not on the policy's allowlist (`found` is `None` when masked).
    ChipNotAllowed {
        found: Option<String>,
        allowed: Vec<String>,
    },
    /// DCAP: the PCK certificate's PPID is not on the policy's allowlist.
    PpidNotAllowed {
        found: Option<String>,
        allowed: Vec<String>,
    },
    /// SEV-SNP: the guest POLICY does not have the bits the policy requires.
    GuestPolicyMismatch {
        found: Option<String>,
        mask: String,
        expected: String,
    },
    /// DCAP: the collateral's `tcbEvaluationDataNumber` is older than the policy accepts.
    TcbEvaluationTooOld {
        found: Option<u64>,
        minimum: u64,
    },
    /// The evidence is emulated (signed by a test root) and the policy does not name that root.
    EmulatedNotAllowed {
        root: String,
        allowed: Vec<String>,
    },
}

impl fmt::Display for AppraisalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppraisalFailure::PlatformNotAllowed { found, allowed } => {
                let allowed: Vec<String> = allowed.iter().map(|p| p.to_string()).collect();
                write!(
                    f,
                    "platform: evidence is from `{found}`, policy allows [{}]",
                    allowed.join(", ")
                )
            }
            AppraisalFailure::MeasurementNotAllowed { found, allowed } => write!(
                f,
                "launch_measurement: {found} is not among the policy's reference values [{}]",
                allowed.join(", ")
            ),
            AppraisalFailure::DebugNotAllowed => {
                write!(
                    f,
                    "debug: the TEE runs in debug mode (true), policy requires allow_debug = false"
                )
            }
            AppraisalFailure::MigrationAgentNotAllowed { guest_policy: Some(p) } => write!(
                f,
                "migrate_ma: the guest policy {p} allows a migration agent (MIGRATE_MA, bit 18 = 1), \
                 policy requires 0 (allow_migration_agent = false)"
            ),
            AppraisalFailure::MigrationAgentNotAllowed { guest_policy: None } => write!(
                f,
                "migrate_ma: the evidence carries no guest policy, policy requires MIGRATE_MA = 0 \
                 (allow_migration_agent = false)"
            ),
            AppraisalFailure::WorkloadDataMismatch { found, expected } => {
                write!(f, "workload_data: found {found}, policy expects {expected}")
            }
            AppraisalFailure::TcbBelowMinimum { component, found: Some(v), minimum } => {
                write!(f, "tcb.{component}: {v} is below the policy's minimum {minimum}")
            }
            AppraisalFailure::TcbBelowMinimum { component, found: None, minimum } => write!(
                f,
                "tcb.{component}: the evidence reports no such component, policy requires at least {minimum}"
            ),
            AppraisalFailure::TcbBelowDefaultFloor {
                component,
                found,
                minimum,
                product,
                source,
            } => {
                match found {
                    Some(v) => write!(f, "tcb.{component}: {v} is below")?,
                    None => write!(f, "tcb.{component}: the evidence reports no such component, below")?,
                }
                write!(
                    f,
                    " the default minimum {minimum} for {product} ({source}); a policy lowers it only \
                     with min_tcb_floor = \"none\" and its own [min_tcb]"
                )
            }
            AppraisalFailure::SnpProductUnknown { found } => write!(
                f,
                "tcb: the SNP claims name no known product line (product = {found}), so the default \
                 TCB floor cannot be chosen; min_tcb_floor = \"none\" with an explicit [min_tcb] \
                 appraises without it"
            ),
            AppraisalFailure::VmplTooHigh { found, max } => {
                write!(f, "vmpl: report from VMPL {found}, policy allows at most {max}")
            }
            AppraisalFailure::RtmrMismatch { index, found, expected } => {
                write!(f, "rtmr{index}: found {found}, policy expects {expected}")
            }
            AppraisalFailure::ChipNotAllowed { found, allowed } => write!(
                f,
                "chip_id: {} is not among the policy's allowed_chip_ids [{}]",
                found.as_deref().unwrap_or("a masked chip id"),
                allowed.join(", ")
            ),
            AppraisalFailure::PpidNotAllowed { found, allowed } => write!(
                f,
                "ppid: {} is not among the policy's allowed_ppids [{}]",
                found.as_deref().unwrap_or("no PPID"),
                allowed.join(", ")
            ),
            AppraisalFailure::GuestPolicyMismatch {
                found,
                mask,
                expected,
            } => write!(
                f,
                "guest_policy: POLICY {} masked with {mask} is not {expected}",
                found.as_deref().unwrap_or("(none in the evidence)")
            ),
            AppraisalFailure::TcbEvaluationTooOld { found, minimum } => write!(
                f,
                "tcb_evaluation_data_number: the collateral's is {}, policy requires at least \
                 {minimum} (collateral from before a TCB recovery)",
                found.map_or_else(|| "unknown".to_string(), |n| n.to_string())
            ),
            AppraisalFailure::EmulatedNotAllowed { root, allowed } if allowed.is_empty() => write!(
                f,
                "emulated: the evidence is EMULATED (signed by test root {root}, NOT hardware-backed) \
                 and the policy names no emulated root; only a test policy may accept it"
            ),
            AppraisalFailure::EmulatedNotAllowed { root, allowed } => write!(
                f,
                "emulated: the evidence is EMULATED, signed by test root {root}, which is not among \
                 the policy's emulated_roots [{}]",
                allowed.join(", ")
            ),
            AppraisalFailure::TcbStatusNotAllowed { found, allowed } => write!(
                f,
                "tcb.status: {found} is not among the accepted statuses [{}]",
                allowed.join(", ")
            ),
            AppraisalFailure::AdvisoryNotAllowed { advisory, allowed } => write!(
                f,
                "tcb.advisory_ids: {advisory} applies and is not among the allowed advisories [{}]",
                allowed.join(", ")
            ),
        }
    }
}

/// The outcome of an appraisal. Accepted only when no check failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub failures: Vec<AppraisalFailure>,
}

impl Verdict {
    pub fn is_accepted(&self) -> bool {
        self.failures.is_empty()
    }

    /// Every failure, one per line.
    pub fn reasons(&self) -> String {
        self.failures
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A minimum a TCB component is held to, and whether it is the default floor (of which product line,
/// from which source) or the policy's own.
struct Minimum {
    value: u64,
    default: Option<(&'static str, &'static str)>,
}

/// The SNP default floor of the claims' product line (unless the policy says `min_tcb_floor =
/// "none"`), raised component by component by the policy's `[min_tcb]`; then every component checked.
fn check_min_tcb(claims: &Claims, policy: &Policy, failures: &mut Vec<AppraisalFailure>) {
    let mut floor: std::collections::BTreeMap<String, Minimum> = Default::default();
    if claims.platform == Platform::Snp && policy.min_tcb_floor == MinTcbFloor::Default {
        let name = claims.raw.get("product").and_then(|v| v.as_str());
        match name.and_then(crate::snp::floor::product_by_name) {
            Some(product) => {
                for v in crate::snp::floor::default_min_tcb(product, snp_cpuid(&claims.raw)) {
                    floor.insert(
                        v.component.to_string(),
                        Minimum {
                            value: v.minimum,
                            default: Some((product.name(), v.source)),
                        },
                    );
                }
            }
            None => failures.push(AppraisalFailure::SnpProductUnknown {
                found: name.map_or_else(|| "nothing".into(), |n| format!("`{n}`")),
            }),
        }
    }
    if let Some(min) = &policy.min_tcb {
        for (component, &value) in min {
            // A policy value below the default floor is not honoured: the default stays.
            if floor.get(component).is_none_or(|m| value > m.value) {
                floor.insert(
                    component.clone(),
                    Minimum {
                        value,
                        default: None,
                    },
                );
            }
        }
    }
    for (component, minimum) in floor {
        let found = claims
            .tcb
            .as_ref()
            .and_then(|t| t.components.get(&component))
            .copied();
        if found.is_some_and(|v| v >= minimum.value) {
            continue;
        }
        failures.push(match minimum.default {
            Some((product, source)) => AppraisalFailure::TcbBelowDefaultFloor {
                component,
                found,
                minimum: minimum.value,
                product: product.to_string(),
                source: source.to_string(),
            },
            None => AppraisalFailure::TcbBelowMinimum {
                component,
                found,
                minimum: minimum.value,
            },
        });
    }
}

/// The CPUID family, model and stepping of an SNP report (version 3 and later); `None` when absent
/// or all zero (version 2).
fn snp_cpuid(raw: &serde_json::Value) -> Option<(u8, u8, u8)> {
    let field = |k: &str| {
        raw.get(k)
            .and_then(|v| v.as_u64())
            .and_then(|v| u8::try_from(v).ok())
    };
    let cpuid = (
        field("cpuid_fam_id")?,
        field("cpuid_mod_id")?,
        field("cpuid_step")?,
    );
    (cpuid != (0, 0, 0)).then_some(cpuid)
}

/// Applies `policy` to `claims`. Every check runs, so the verdict names every failure.
pub fn appraise(claims: &Claims, policy: &Policy) -> Verdict {
    let mut failures = Vec::new();
    if !policy.platforms.contains(&claims.platform) {
        failures.push(AppraisalFailure::PlatformNotAllowed {
            found: claims.platform,
            allowed: policy.platforms.clone(),
        });
    }
    if !policy.any_measurement
        && !policy
            .launch_measurements
            .iter()
            .any(|m| m == &claims.launch_measurement)
    {
        failures.push(AppraisalFailure::MeasurementNotAllowed {
            found: hex::encode(&claims.launch_measurement),
            allowed: policy.launch_measurements.iter().map(hex::encode).collect(),
        });
    }
    if claims.debug && !policy.allow_debug {
        failures.push(AppraisalFailure::DebugNotAllowed);
    }
    if let Some(expected) = &policy.workload_data {
        if expected != &claims.workload_data {
            failures.push(AppraisalFailure::WorkloadDataMismatch {
                found: hex::encode(&claims.workload_data),
                expected: hex::encode(expected),
            });
        }
    }
    check_min_tcb(claims, policy, &mut failures);
    if claims.platform == Platform::Snp && !policy.allow_migration_agent {
        // A report without a readable guest policy is treated as allowing a migration agent.
        let guest_policy = claims.raw.get("policy").and_then(|v| v.as_u64());
        if guest_policy.is_none_or(|p| p & crate::snp::POLICY_MIGRATE_MA != 0) {
            failures.push(AppraisalFailure::MigrationAgentNotAllowed {
                guest_policy: guest_policy.map(|p| format!("{p:#x}")),
            });
        }
    }
    if claims.platform == Platform::Snp {
        let max = policy.max_vmpl.unwrap_or(0);
        // A report without a readable VMPL is treated as the least privileged.
        let found = claims
            .raw
            .get("vmpl")
            .and_then(|v| v.as_u64())
            .unwrap_or(u64::MAX);
        if found > u64::from(max) {
            failures.push(AppraisalFailure::VmplTooHigh { found, max });
        }
    }
    if let Some(allowed) = &policy.allowed_chip_ids {
        if claims.platform == Platform::Snp {
            let found = claims.platform_id.as_ref();
            if !found.is_some_and(|id| allowed.contains(id)) {
                failures.push(AppraisalFailure::ChipNotAllowed {
                    found: found.map(hex::encode),
                    allowed: allowed.iter().map(hex::encode).collect(),
                });
            }
        }
    }
    if let Some(allowed) = &policy.allowed_ppids {
        if matches!(claims.platform, Platform::Tdx | Platform::Sgx) {
            let found = claims
                .raw
                .pointer("/verification/pck/ppid")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            let listed: Vec<String> = allowed.iter().map(hex::encode).collect();
            if !found.as_ref().is_some_and(|f| listed.contains(f)) {
                failures.push(AppraisalFailure::PpidNotAllowed {
                    found,
                    allowed: listed,
                });
            }
        }
    }
    if let (Some(mask), Some(value), Platform::Snp) = (
        policy.guest_policy_mask,
        policy.guest_policy_value,
        claims.platform,
    ) {
        let found = claims.raw.get("policy").and_then(|v| v.as_u64());
        if found.is_none_or(|p| p & mask != value) {
            failures.push(AppraisalFailure::GuestPolicyMismatch {
                found: found.map(|p| format!("{p:#x}")),
                mask: format!("{mask:#x}"),
                expected: format!("{value:#x}"),
            });
        }
    }
    if let Some(minimum) = policy.min_tcb_evaluation_data_number {
        if matches!(claims.platform, Platform::Tdx | Platform::Sgx) {
            let found = claims
                .raw
                .pointer("/verification/tcb_eval_data_number")
                .and_then(|v| v.as_u64());
            if found.is_none_or(|n| n < minimum) {
                failures.push(AppraisalFailure::TcbEvaluationTooOld { found, minimum });
            }
        }
    }
    if claims.is_emulated() {
        let root = claims.emulated_root();
        if !root
            .as_ref()
            .is_some_and(|r| policy.emulated_roots.contains(r))
        {
            failures.push(AppraisalFailure::EmulatedNotAllowed {
                root: root.map_or_else(|| "(unnamed)".into(), hex::encode),
                allowed: policy.emulated_roots.iter().map(hex::encode).collect(),
            });
        }
    }
    if let Some(expected) = &policy.rtmrs {
        for (index, e) in expected.iter().enumerate() {
            let found = claims.runtime_measurements.get(index);
            if found != Some(e) {
                failures.push(AppraisalFailure::RtmrMismatch {
                    index,
                    found: found.map(hex::encode).unwrap_or_else(|| "nothing".into()),
                    expected: hex::encode(e),
                });
            }
        }
    }
    if let Some(tcb) = &claims.tcb {
        if let Some(status) = &tcb.status {
            let allowed: Vec<String> = match &policy.tcb_statuses {
                Some(list) => list.clone(),
                None => DEFAULT_TCB_STATUSES.iter().map(|s| s.to_string()).collect(),
            };
            if !allowed.contains(status) {
                failures.push(AppraisalFailure::TcbStatusNotAllowed {
                    found: status.clone(),
                    allowed,
                });
            }
        }
        if let Some(allowed) = &policy.allowed_advisories {
            for advisory in tcb.advisory_ids.iter().filter(|a| !allowed.contains(a)) {
                failures.push(AppraisalFailure::AdvisoryNotAllowed {
                    advisory: advisory.clone(),
                    allowed: allowed.clone(),
                });
            }
        }
    }
    Verdict { failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            platform: Platform::Sim,
            hardware_backed: false,
            launch_measurement: vec![0xaa; 48],
            workload_data: vec![0; 32],
            report_data: [0; 64],
            debug: false,
            signer_measurement: None,
            runtime_measurements: vec![],
            tcb: None,
            platform_id: None,
            attestation_key: vec![1; 32],
            raw: serde_json::Value::Null,
        }
    }

    fn policy() -> Policy {
        Policy::new(vec![Platform::Sim], vec![vec![0xaa; 48]])
    }

    #[test]
    fn policy_round_trips_through_toml() {
        let p = Policy {
            workload_data: Some(vec![0; 32]),
            ..policy()
        };
        let text = p.to_toml();
        assert_eq!(Policy::from_toml(&text).unwrap(), p, "{text}");
        let doc = PolicyDocument {
            policy: policy(),
            endorsements: Some(Endorsements {
                sim_trust_anchors: vec![[3; 32]],
                ..Default::default()
            }),
        };
        assert_eq!(PolicyDocument::from_toml(&doc.to_toml()).unwrap(), doc);
        assert_eq!(
            Policy::from_toml(&doc.to_toml()),
            Err(PolicyError::UnexpectedEndorsements)
        );
    }

    #[test]
    fn unusable_policies_are_rejected() {
        let m = hex::encode([0xaa; 48]);
        assert_eq!(
            Policy::from_toml(&format!("platforms = []\nlaunch_measurements = [\"{m}\"]")),
            Err(PolicyError::NoPlatforms)
        );
        assert_eq!(
            Policy::from_toml("platforms = [\"sim\"]\nlaunch_measurements = []"),
            Err(PolicyError::NoMeasurements)
        );
        let typo =
            format!("platforms = [\"sim\"]\nlaunch_measurements = [\"{m}\"]\nallow_debugg = true");
        assert!(
            matches!(Policy::from_toml(&typo), Err(PolicyError::Parse(e)) if e.contains("allow_debugg"))
        );
        assert!(matches!(
            Policy::from_toml("platforms = [\"sim\"]\nlaunch_measurements = [\"zz\"]"),
            Err(PolicyError::Parse(_))
        ));
        assert!(matches!(
            Policy::from_toml("platforms = [\"sgx2\"]\nlaunch_measurements = []"),
            Err(PolicyError::Parse(_))
        ));
    }

    /// Claims of an SNP guest at the default-floor-free policy below, as an emulator or a real
    /// chip would give them.
    fn snp_claims(hardware_backed: bool, root: Option<[u8; 32]>) -> Claims {
        let mut raw = serde_json::json!({"product": "Milan", "policy": 0x30000u64, "vmpl": 0});
        if let Some(r) = root {
            raw[crate::EMULATED_ROOT_CLAIM] = serde_json::Value::String(hex::encode(r));
        }
        Claims {
            platform: Platform::Snp,
            hardware_backed,
            platform_id: Some(vec![7; 64]),
            raw,
            ..claims()
        }
    }

    fn snp_policy() -> Policy {
        Policy {
            platforms: vec![Platform::Snp],
            workload_data: Some(vec![0; 32]),
            min_tcb_floor: MinTcbFloor::None,
            ..policy()
        }
    }

    #[test]
    fn emulated_evidence_is_refused_unless_the_policy_names_its_root() {
        let emulated = snp_claims(false, Some([5; 32]));
        assert!(emulated.is_emulated());
        assert_eq!(emulated.emulated_root(), Some(vec![5; 32]));
        // A production policy: no emulated roots.
        let v = appraise(&emulated, &snp_policy());
        assert_eq!(v.failures.len(), 1, "{v:?}");
        assert!(v.reasons().contains("EMULATED"), "{}", v.reasons());
        assert!(
            v.reasons().contains(&hex::encode([5; 32])),
            "{}",
            v.reasons()
        );
        // Another test root named: still refused, naming both.
        let other = Policy {
            emulated_roots: vec![vec![6; 32]],
            ..snp_policy()
        };
        let v = appraise(&emulated, &other);
        assert!(!v.is_accepted());
        assert!(
            v.reasons().contains(&hex::encode([6; 32])),
            "{}",
            v.reasons()
        );
        // Emulated claims that do not say which root: refused even by a test policy.
        let unnamed = snp_claims(false, None);
        assert!(!appraise(&unnamed, &other).is_accepted());
        // Named: accepted, and the policy warns that it accepts emulated evidence.
        let named = Policy {
            emulated_roots: vec![vec![5; 32]],
            ..snp_policy()
        };
        assert!(appraise(&emulated, &named).is_accepted());
        assert!(named.warnings().iter().any(|w| w.contains("EMULATED")));
        // Hardware-backed claims are not emulated, whatever raw says.
        assert!(!snp_claims(true, Some([5; 32])).is_emulated());
        assert!(appraise(&snp_claims(true, None), &named).is_accepted());
        assert!(!claims().is_emulated(), "sim is simulated, not emulated");
    }

    #[test]
    fn a_hardware_policy_verifies_without_endorsements_and_with_its_emulated_roots() {
        let hardware = PolicyDocument {
            policy: Policy {
                emulated_roots: vec![vec![5; 32]],
                ..snp_policy()
            },
            endorsements: None,
        };
        let e = hardware.verification_endorsements().unwrap();
        assert_eq!(e.emulated_roots, vec![[5; 32]]);
        assert!(e.sim_trust_anchors.is_empty() && e.snp_certs.is_empty());
        let sim = PolicyDocument {
            policy: policy(),
            endorsements: None,
        };
        assert_eq!(sim.verification_endorsements(), None);
        let with = PolicyDocument {
            endorsements: Some(Endorsements {
                sim_trust_anchors: vec![[3; 32]],
                ..Default::default()
            }),
            ..sim
        };
        assert_eq!(
            with.verification_endorsements().unwrap().sim_trust_anchors,
            vec![[3; 32]]
        );
    }

    #[test]
    fn collateral_older_than_the_tcb_evaluation_minimum_is_refused() {
        let dcap = |n: Option<u64>| Claims {
            platform: Platform::Tdx,
            hardware_backed: true,
            raw: match n {
                Some(n) => serde_json::json!({"verification": {"tcb_eval_data_number": n}}),
                None => serde_json::Value::Null,
            },
            ..claims()
        };
        let p = Policy {
            platforms: vec![Platform::Tdx],
            workload_data: Some(vec![0; 32]),
            min_tcb_evaluation_data_number: Some(17),
            ..policy()
        };
        assert!(appraise(&dcap(Some(17)), &p).is_accepted());
        assert!(appraise(&dcap(Some(18)), &p).is_accepted());
        let v = appraise(&dcap(Some(16)), &p);
        assert!(
            v.reasons()
                .contains("tcb_evaluation_data_number: the collateral's is 16"),
            "{}",
            v.reasons()
        );
        assert!(!appraise(&dcap(None), &p).is_accepted());
        let doc = PolicyDocument {
            policy: p,
            endorsements: None,
        };
        assert_eq!(PolicyDocument::from_toml(&doc.to_toml()).unwrap(), doc);
    }

    #[test]
    fn ppid_allowlist_and_guest_policy_bits_are_enforced() {
        let dcap = |ppid: &str| Claims {
            platform: Platform::Tdx,
            hardware_backed: true,
            raw: serde_json::json!({"verification": {"pck": {"ppid": ppid}}}),
            ..claims()
        };
        let p = Policy {
            platforms: vec![Platform::Tdx],
            workload_data: Some(vec![0; 32]),
            allowed_ppids: Some(vec![vec![0xab; 16]]),
            ..policy()
        };
        assert!(appraise(&dcap(&"ab".repeat(16)), &p).is_accepted());
        let v = appraise(&dcap(&"cd".repeat(16)), &p);
        assert!(v.reasons().contains("ppid: cdcd"), "{}", v.reasons());
        // SINGLE_SOCKET (bit 20) required: a report without it is refused, naming the bits.
        let single = Policy {
            guest_policy_mask: Some(1 << 20),
            guest_policy_value: Some(1 << 20),
            ..snp_policy()
        };
        let with = |policy: u64| Claims {
            raw: serde_json::json!({"product": "Milan", "policy": policy, "vmpl": 0}),
            ..snp_claims(true, None)
        };
        assert!(appraise(&with(0x13_0000), &single).is_accepted());
        let v = appraise(&with(0x3_0000), &single);
        assert!(
            v.reasons()
                .contains("guest_policy: POLICY 0x30000 masked with 0x100000 is not 0x100000"),
            "{}",
            v.reasons()
        );
        // A value outside its mask, or half a rule, is refused when parsed.
        let text = |extra: &str| {
            format!(
                "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\nworkload_data = \"00\"\n{extra}",
                hex::encode([0xaa; 48])
            )
        };
        assert!(Policy::from_toml(&text(
            "guest_policy_mask = 0x100000\nguest_policy_value = 0x100000"
        ))
        .is_ok());
        assert!(matches!(
            Policy::from_toml(&text(
                "guest_policy_mask = 0x100000\nguest_policy_value = 0x1"
            )),
            Err(PolicyError::GuestPolicyRule { .. })
        ));
        assert!(matches!(
            Policy::from_toml(&text("guest_policy_mask = 0x100000")),
            Err(PolicyError::GuestPolicyRule { .. })
        ));
        assert!(matches!(
            Policy::from_toml(&text("allowed_ppids = [\"abcd\"]")),
            Err(PolicyError::PpidLength { len: 2, .. })
        ));
    }

    #[test]
    fn the_chip_allowlist_refuses_other_and_masked_chips() {
        let p = Policy {
            allowed_chip_ids: Some(vec![vec![7; 64], vec![8; 64]]),
            ..snp_policy()
        };
        assert!(appraise(&snp_claims(true, None), &p).is_accepted());
        let other = Claims {
            platform_id: Some(vec![9; 64]),
            ..snp_claims(true, None)
        };
        let v = appraise(&other, &p);
        assert!(
            v.reasons()
                .contains(&format!("chip_id: {}", hex::encode([9; 64]))),
            "{}",
            v.reasons()
        );
        let masked = Claims {
            platform_id: None,
            ..snp_claims(true, None)
        };
        assert!(appraise(&masked, &p).reasons().contains("masked"));
        // Round trip, and sizes checked at parse time.
        let doc = PolicyDocument {
            policy: Policy {
                emulated_roots: vec![vec![5; 32]],
                ..p.clone()
            },
            endorsements: None,
        };
        assert_eq!(PolicyDocument::from_toml(&doc.to_toml()).unwrap(), doc);
        let short = format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\nworkload_data = \"00\"\n\
             allowed_chip_ids = [\"0707\"]",
            hex::encode([0xaa; 48])
        );
        assert!(matches!(
            Policy::from_toml(&short),
            Err(PolicyError::ChipIdLength { len: 2, .. })
        ));
        let root = short.replace("allowed_chip_ids", "emulated_roots");
        assert!(matches!(
            Policy::from_toml(&root),
            Err(PolicyError::EmulatedRootLength { len: 2, .. })
        ));
    }

    #[test]
    fn sim_is_refused_unless_named() {
        let p = Policy {
            platforms: vec![Platform::Snp, Platform::Tdx],
            ..policy()
        };
        let v = appraise(&claims(), &p);
        assert!(!v.is_accepted());
        assert!(
            v.reasons().contains("platform: evidence is from `sim`"),
            "{}",
            v.reasons()
        );
        assert!(appraise(&claims(), &policy()).is_accepted());
    }

    #[test]
    fn every_failed_check_is_named() {
        let c = Claims {
            debug: true,
            launch_measurement: vec![0xbb; 48],
            workload_data: vec![1; 32],
            ..claims()
        };
        let p = Policy {
            platforms: vec![Platform::Tdx],
            workload_data: Some(vec![0; 32]),
            ..policy()
        };
        let v = appraise(&c, &p);
        assert_eq!(v.failures.len(), 4, "{v:?}");
        let r = v.reasons();
        for needle in [
            "platform",
            "launch_measurement",
            &hex::encode([0xbb; 48]),
            "debug",
            "workload_data",
        ] {
            assert!(r.contains(needle), "{needle} missing from {r}");
        }
        let allowed = Policy {
            allow_debug: true,
            ..policy()
        };
        assert!(appraise(
            &Claims {
                debug: true,
                ..claims()
            },
            &allowed
        )
        .is_accepted());
    }
}

#[cfg(test)]
mod tcb_tests {
    use super::*;
    use crate::TcbClaims;

    fn dcap_claims(status: &str, advisories: &[&str]) -> Claims {
        Claims {
            platform: Platform::Sgx,
            hardware_backed: true,
            launch_measurement: vec![1; 32],
            signer_measurement: Some(vec![2; 32]),
            workload_data: vec![0; 64],
            runtime_measurements: vec![],
            report_data: [0; 64],
            debug: false,
            tcb: Some(TcbClaims {
                status: Some(status.into()),
                advisory_ids: advisories.iter().map(|s| s.to_string()).collect(),
                components: Default::default(),
            }),
            platform_id: None,
            attestation_key: vec![],
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn default_tcb_statuses_accept_hardening_needed_and_refuse_out_of_date() {
        let p = Policy::hardware_default();
        for ok in DEFAULT_TCB_STATUSES {
            assert!(
                appraise(&dcap_claims(ok, &["INTEL-SA-00615"]), &p).is_accepted(),
                "{ok}"
            );
        }
        for bad in [
            "OutOfDate",
            "OutOfDateConfigurationNeeded",
            "Revoked",
            "SomethingNew",
        ] {
            let v = appraise(&dcap_claims(bad, &[]), &p);
            assert!(
                v.reasons().contains("tcb.status") && v.reasons().contains(bad),
                "{bad}: {}",
                v.reasons()
            );
        }
    }

    #[test]
    fn policy_can_narrow_statuses_and_allow_list_advisories() {
        let text = format!(
            "platforms = [\"sgx\"]\nlaunch_measurements = [\"{}\"]\ntcb_statuses = [\"UpToDate\", \"SWHardeningNeeded\"]\nallowed_advisories = [\"INTEL-SA-00615\"]\n",
            hex::encode([1u8; 32])
        );
        let p = Policy::from_toml(&text).unwrap();
        assert!(appraise(&dcap_claims("SWHardeningNeeded", &["INTEL-SA-00615"]), &p).is_accepted());
        let v = appraise(
            &dcap_claims(
                "ConfigurationAndSWHardeningNeeded",
                &["INTEL-SA-00289", "INTEL-SA-00615"],
            ),
            &p,
        );
        assert_eq!(v.failures.len(), 2, "{}", v.reasons());
        assert!(v.reasons().contains("INTEL-SA-00289"));
    }
}

#[cfg(test)]
mod hardware_policy_tests {
    use super::*;
    use crate::TcbClaims;

    /// A Milan SNP report's claims (version 2: no CPUID), with a TCB at the default floor except
    /// for `microcode`, VMPL `vmpl` and guest policy 0x30000 (no debug, no migration agent).
    pub(super) fn snp_claims(vmpl: u64, microcode: u64) -> Claims {
        Claims {
            platform: Platform::Snp,
            hardware_backed: true,
            launch_measurement: vec![7; 48],
            signer_measurement: None,
            workload_data: vec![0; 32],
            runtime_measurements: vec![],
            report_data: [0; 64],
            debug: false,
            tcb: Some(TcbClaims {
                status: None,
                advisory_ids: vec![],
                components: [
                    ("bootloader".to_string(), 4),
                    ("tee".to_string(), 0),
                    ("snp".to_string(), 0x1B),
                    ("microcode".to_string(), microcode),
                ]
                .into(),
            }),
            platform_id: None,
            attestation_key: vec![],
            raw: serde_json::json!({
                "vmpl": vmpl,
                "version": 2,
                "policy": 0x30000,
                "product": "Milan",
                "cpuid_fam_id": 0, "cpuid_mod_id": 0, "cpuid_step": 0,
            }),
        }
    }

    pub(super) fn m() -> String {
        hex::encode([7u8; 48])
    }

    /// The pinned configuration of [`snp_claims`]: HOST_DATA of 32 zero bytes.
    pub(super) fn pinned() -> String {
        format!("workload_data = \"{}\"\n", hex::encode([0u8; 32]))
    }

    #[test]
    fn sim_with_a_hardware_platform_and_unpinned_tdx_are_refused() {
        let mixed = format!(
            "platforms = [\"sim\", \"snp\"]\nlaunch_measurements = [\"{}\"]",
            m()
        );
        assert_eq!(Policy::from_toml(&mixed), Err(PolicyError::SimWithHardware));
        let tdx = format!("platforms = [\"tdx\"]\nlaunch_measurements = [\"{}\"]", m());
        assert_eq!(
            Policy::from_toml(&tdx),
            Err(PolicyError::ConfigNotPinned {
                platform: Platform::Tdx
            })
        );
        // RTMRs do not pin the configuration (the runtime extends nothing into them): refused.
        let rtmrs_only = format!("{tdx}\nrtmrs = [\"{}\"]", hex::encode([1u8; 48]));
        assert_eq!(
            Policy::from_toml(&rtmrs_only),
            Err(PolicyError::ConfigNotPinned {
                platform: Platform::Tdx
            })
        );
        let pinned = format!(
            "{rtmrs_only}\nworkload_data = \"{}\"",
            hex::encode([5u8; 48])
        );
        assert!(Policy::from_toml(&pinned).is_ok());
    }

    #[test]
    fn empty_reference_values_accept_nothing_unless_hardware_default() {
        let p = Policy::new(vec![Platform::Snp], vec![]);
        assert!(appraise(&snp_claims(0, 0xDE), &p)
            .reasons()
            .contains("launch_measurement"));
        assert!(appraise(&snp_claims(0, 0xDE), &Policy::hardware_default()).is_accepted());
        // `any_measurement` cannot come from a file.
        let text = format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\n{}any_measurement = true",
            m(),
            pinned()
        );
        assert!(matches!(
            Policy::from_toml(&text),
            Err(PolicyError::Parse(_))
        ));
    }

    #[test]
    fn snp_minimum_tcb_and_vmpl_are_enforced() {
        // [min_tcb] above the default floor (Milan microcode 0xDE = 222, SNP SPL 0x1B = 27) raises it.
        let text = format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\n{}[min_tcb]\nmicrocode = 224\nsnp = 27\n",
            m(),
            pinned()
        );
        let p = Policy::from_toml(&text).unwrap();
        assert!(
            appraise(&snp_claims(0, 224), &p).is_accepted(),
            "{}",
            appraise(&snp_claims(0, 224), &p).reasons()
        );
        let v = appraise(&snp_claims(0, 223), &p);
        assert!(
            v.reasons()
                .contains("tcb.microcode: 223 is below the policy's minimum 224"),
            "{}",
            v.reasons()
        );
        let v = appraise(&snp_claims(2, 224), &p);
        assert!(
            v.reasons()
                .contains("vmpl: report from VMPL 2, policy allows at most 0"),
            "{}",
            v.reasons()
        );
        let lenient = Policy {
            max_vmpl: Some(2),
            ..p.clone()
        };
        assert!(appraise(&snp_claims(2, 224), &lenient).is_accepted());
        let needs_fmc = Policy {
            min_tcb: Some([("fmc".to_string(), 1)].into()),
            ..p
        };
        assert!(appraise(&snp_claims(0, 224), &needs_fmc)
            .reasons()
            .contains("no such component"));
    }

    #[test]
    fn tdx_rtmrs_must_match() {
        let mut c = snp_claims(0, 0);
        c.platform = Platform::Tdx;
        c.runtime_measurements = vec![vec![1; 48], vec![2; 48], vec![0; 48], vec![0; 48]];
        let p = Policy {
            rtmrs: Some(vec![vec![1; 48], vec![2; 48]]),
            ..Policy::new(vec![Platform::Tdx], vec![vec![7; 48]])
        };
        assert!(
            appraise(&c, &p).is_accepted(),
            "{}",
            appraise(&c, &p).reasons()
        );
        c.runtime_measurements[1][0] ^= 1;
        assert!(appraise(&c, &p).reasons().contains("rtmr1"));
    }
}

/// Issue 15, item 3: hardware policies must pin the runtime configuration.
#[cfg(test)]
mod config_pinning_tests {
    use super::hardware_policy_tests::{m, pinned};
    use super::*;

    fn snp() -> String {
        format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\n",
            m()
        )
    }

    fn tdx() -> String {
        format!(
            "platforms = [\"tdx\"]\nlaunch_measurements = [\"{}\"]\n",
            m()
        )
    }

    #[test]
    fn snp_without_workload_data_is_refused_and_says_how_to_fix_it() {
        let err = Policy::from_toml(&snp()).unwrap_err();
        assert_eq!(
            err,
            PolicyError::ConfigNotPinned {
                platform: Platform::Snp
            }
        );
        let msg = err.to_string();
        for needle in [
            "`snp`",
            "SHA-256 of the runtime configuration",
            "HOST_DATA",
            "allow_unpinned_config = true",
        ] {
            assert!(msg.contains(needle), "{needle} missing from {msg}");
        }
        // The client's document form is refused the same way.
        assert_eq!(PolicyDocument::from_toml(&snp()).unwrap_err(), err);
        // A TDX-only pin (RTMRs) does not pin an SNP guest's configuration.
        let both = format!(
            "platforms = [\"tdx\", \"snp\"]\nlaunch_measurements = [\"{}\"]\nrtmrs = [\"{}\"]\n",
            m(),
            hex::encode([1u8; 48])
        );
        assert_eq!(
            Policy::from_toml(&both),
            Err(PolicyError::ConfigNotPinned {
                platform: Platform::Snp
            })
        );
        assert!(Policy::from_toml(&format!("{}{}", snp(), pinned())).is_ok());
    }

    #[test]
    fn tdx_with_empty_rtmrs_and_no_workload_data_is_refused() {
        let err = Policy::from_toml(&format!("{}rtmrs = []\n", tdx())).unwrap_err();
        assert_eq!(
            err,
            PolicyError::ConfigNotPinned {
                platform: Platform::Tdx
            }
        );
        let msg = err.to_string();
        assert!(
            msg.contains("SHA-384") && msg.contains("MRCONFIGID"),
            "{msg}"
        );
        assert!(msg.contains("RTMRs do not pin it"), "{msg}");
        let mrconfigid = format!("workload_data = \"{}\"\n", hex::encode([5u8; 48]));
        assert!(Policy::from_toml(&format!("{}rtmrs = []\n{mrconfigid}", tdx())).is_ok());
    }

    #[test]
    fn unpinned_policies_are_accepted_only_when_they_say_so_and_warn() {
        for text in [snp(), format!("{}rtmrs = []\n", tdx()), tdx()] {
            let loose = format!("{text}allow_unpinned_config = true\n");
            let p = Policy::from_toml(&loose).unwrap_or_else(|e| panic!("{loose}: {e}"));
            assert!(p.allow_unpinned_config);
            let w = p.warnings();
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].contains("allow_unpinned_config = true"), "{w:?}");
            // `false` in so many words is the default, and refused like silence.
            let strict = format!("{text}allow_unpinned_config = false\n");
            assert!(matches!(
                Policy::from_toml(&strict),
                Err(PolicyError::ConfigNotPinned { .. })
            ));
        }
    }

    #[test]
    fn new_fields_round_trip_through_toml() {
        let text = format!(
            "{}allow_unpinned_config = true\nallow_migration_agent = true\nmin_tcb_floor = \"none\"\n[min_tcb]\nsnp = 24\n",
            snp()
        );
        let p = Policy::from_toml(&text).unwrap();
        assert!(p.allow_unpinned_config && p.allow_migration_agent);
        assert_eq!(p.min_tcb_floor, MinTcbFloor::None);
        let again = p.to_toml();
        assert!(again.contains("allow_unpinned_config = true"), "{again}");
        assert!(again.contains("allow_migration_agent = true"), "{again}");
        assert!(again.contains("min_tcb_floor = \"none\""), "{again}");
        assert_eq!(Policy::from_toml(&again).unwrap(), p);
        let doc = PolicyDocument::from_toml(&text).unwrap();
        assert_eq!(PolicyDocument::from_toml(&doc.to_toml()).unwrap(), doc);
        // Defaults are written as nothing, and read back as the defaults.
        let strict = Policy::from_toml(&format!("{}{}", snp(), pinned())).unwrap();
        let written = strict.to_toml();
        for absent in [
            "allow_unpinned_config",
            "allow_migration_agent",
            "min_tcb_floor",
        ] {
            assert!(!written.contains(absent), "{absent} in {written}");
        }
        assert_eq!(Policy::from_toml(&written).unwrap(), strict);
        assert!(strict.warnings().is_empty(), "{:?}", strict.warnings());
        assert!(matches!(
            Policy::from_toml(&format!("{}{}min_tcb_floor = \"lower\"\n", snp(), pinned())),
            Err(PolicyError::Parse(_))
        ));
    }

    #[test]
    fn the_hardware_default_cannot_become_a_release_policy() {
        let text = Policy::hardware_default().to_toml();
        assert!(Policy::from_toml(&text).is_err(), "{text}");
        assert!(PolicyDocument::from_toml(&text).is_err(), "{text}");
        assert!(!text.contains("any_measurement"), "{text}");
        // Even with reference values added, it still pins no configuration.
        let with_measurement = text.replace(
            "launch_measurements = []",
            &format!("launch_measurements = [\"{}\"]", m()),
        );
        assert!(matches!(
            Policy::from_toml(&with_measurement),
            Err(PolicyError::ConfigNotPinned { .. })
        ));
        assert!(!Policy::hardware_default().allow_unpinned_config);
    }

    #[test]
    fn every_loosening_is_warned_about() {
        let p = Policy::from_toml(&format!(
            "{}{}allow_debug = true\nallow_migration_agent = true\nmin_tcb_floor = \"none\"\nmax_vmpl = 1\n",
            snp(),
            pinned()
        ))
        .unwrap();
        let w = p.warnings().join("\n");
        for needle in [
            "allow_debug = true for snp",
            "allow_migration_agent = true",
            "min_tcb_floor = \"none\"",
            "no minimum TCB applies at all",
            "max_vmpl = 1",
        ] {
            assert!(w.contains(needle), "{needle} missing from {w}");
        }
        let dcap = Policy::from_toml(&format!(
            "platforms = [\"sgx\"]\nlaunch_measurements = [\"{}\"]\ntcb_statuses = [\"UpToDate\", \"OutOfDate\"]\n",
            hex::encode([1u8; 32])
        ))
        .unwrap();
        assert!(
            dcap.warnings().join("").contains("OutOfDate"),
            "{:?}",
            dcap.warnings()
        );
        // A sim policy that allows debug is not a hardware loosening.
        let sim = Policy {
            allow_debug: true,
            ..Policy::new(vec![Platform::Sim], vec![vec![7; 48]])
        };
        assert!(sim.warnings().is_empty(), "{:?}", sim.warnings());
    }
}

/// Issue 15, item 6: SNP appraisal defaults (migration agent, default TCB floor).
#[cfg(test)]
mod snp_default_tests {
    use super::hardware_policy_tests::{m, pinned, snp_claims};
    use super::*;

    fn policy(extra: &str) -> Policy {
        Policy::from_toml(&format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\n{}{extra}",
            m(),
            pinned()
        ))
        .unwrap()
    }

    fn with_tcb(mut c: Claims, component: &str, value: u64) -> Claims {
        c.tcb
            .as_mut()
            .unwrap()
            .components
            .insert(component.to_string(), value);
        c
    }

    #[test]
    fn a_migration_agent_is_refused_unless_allowed() {
        let ok = snp_claims(0, 0xDE);
        assert!(appraise(&ok, &policy("")).is_accepted());
        let mut ma = ok.clone();
        ma.raw["policy"] = serde_json::json!(0x30000u64 | (1 << 18));
        let v = appraise(&ma, &policy(""));
        assert_eq!(v.failures.len(), 1, "{}", v.reasons());
        assert_eq!(
            v.failures[0],
            AppraisalFailure::MigrationAgentNotAllowed {
                guest_policy: Some("0x70000".into())
            }
        );
        let r = v.reasons();
        for needle in ["migrate_ma", "0x70000", "bit 18 = 1", "requires 0"] {
            assert!(r.contains(needle), "{needle} missing from {r}");
        }
        // Refused by the inspection default too.
        assert!(!appraise(&ma, &Policy::hardware_default()).is_accepted());
        let allowed = policy("allow_migration_agent = true\n");
        assert!(appraise(&ma, &allowed).is_accepted());
        // No readable guest policy: fail closed.
        let mut none = ok.clone();
        none.raw.as_object_mut().unwrap().remove("policy");
        assert!(appraise(&none, &policy(""))
            .reasons()
            .contains("carries no guest policy"));
        // Other platforms have no such bit.
        let mut tdx = ma;
        tdx.platform = Platform::Tdx;
        let p = Policy {
            platforms: vec![Platform::Tdx],
            ..policy("")
        };
        assert!(
            appraise(&tdx, &p).is_accepted(),
            "{}",
            appraise(&tdx, &p).reasons()
        );
    }

    #[test]
    fn a_tcb_below_the_default_floor_is_refused_with_component_found_and_minimum() {
        // Milan, version 2 (no CPUID): the floor is the strictest Milan one, microcode 0xDE.
        let c = snp_claims(0, 0xDD);
        let v = appraise(&c, &policy(""));
        assert_eq!(v.failures.len(), 1, "{}", v.reasons());
        assert!(
            v.reasons().contains(
                "tcb.microcode: 221 is below the default minimum 222 for Milan (AMD-SB-3020"
            ),
            "{}",
            v.reasons()
        );
        assert!(matches!(
            &v.failures[0],
            AppraisalFailure::TcbBelowDefaultFloor { component, found: Some(221), minimum: 222, product, .. }
                if component == "microcode" && product == "Milan"
        ));
        let v = appraise(&with_tcb(snp_claims(0, 0xDE), "snp", 0x1A), &policy(""));
        assert!(
            v.reasons()
                .contains("tcb.snp: 26 is below the default minimum 27 for Milan"),
            "{}",
            v.reasons()
        );
        let v = appraise(&with_tcb(snp_claims(0, 0xDE), "bootloader", 3), &policy(""));
        assert!(
            v.reasons()
                .contains("tcb.bootloader: 3 is below the default minimum 4 for Milan"),
            "{}",
            v.reasons()
        );
        // The inspection default applies the floor as well.
        assert!(!appraise(&c, &Policy::hardware_default()).is_accepted());
    }

    #[test]
    fn the_floor_is_lowered_only_explicitly() {
        let old = with_tcb(snp_claims(0, 115), "snp", 8);
        // A [min_tcb] below the default does not lower it.
        let quiet = policy("[min_tcb]\nmicrocode = 100\nsnp = 8\n");
        let v = appraise(&old, &quiet);
        assert_eq!(v.failures.len(), 2, "{}", v.reasons());
        assert!(
            v.reasons().contains("default minimum 222"),
            "{}",
            v.reasons()
        );
        // `min_tcb_floor = "none"`: only the policy's own table.
        let lowered = policy("min_tcb_floor = \"none\"\n[min_tcb]\nmicrocode = 100\nsnp = 8\n");
        assert!(
            appraise(&old, &lowered).is_accepted(),
            "{}",
            appraise(&old, &lowered).reasons()
        );
        let v = appraise(&with_tcb(old.clone(), "snp", 7), &lowered);
        assert!(
            v.reasons()
                .contains("tcb.snp: 7 is below the policy's minimum 8"),
            "{}",
            v.reasons()
        );
        assert!(appraise(&old, &policy("min_tcb_floor = \"none\"\n")).is_accepted());
    }

    #[test]
    fn a_tcb_at_or_above_the_floor_passes_per_product_and_stepping() {
        let p = policy("");
        assert!(appraise(&snp_claims(0, 0xDE), &p).is_accepted());
        assert!(appraise(&snp_claims(0, 0xFF), &p).is_accepted());
        let stepping = |product: &str, cpuid: (u8, u8, u8), snp: u64, microcode: u64| {
            let mut c = with_tcb(
                with_tcb(snp_claims(0, microcode), "snp", snp),
                "bootloader",
                0,
            );
            c.raw["product"] = serde_json::json!(product);
            c.raw["version"] = serde_json::json!(3);
            c.raw["cpuid_fam_id"] = serde_json::json!(cpuid.0);
            c.raw["cpuid_mod_id"] = serde_json::json!(cpuid.1);
            c.raw["cpuid_step"] = serde_json::json!(cpuid.2);
            c
        };
        // Milan-X numbers its microcode from 0x4x: its own floor, not Milan's.
        let milan_x = with_tcb(
            stepping("Milan", (0x19, 0x01, 2), 0x1B, 0x45),
            "bootloader",
            4,
        );
        assert!(
            appraise(&milan_x, &p).is_accepted(),
            "{}",
            appraise(&milan_x, &p).reasons()
        );
        let old_x = with_tcb(milan_x.clone(), "microcode", 0x44);
        assert!(appraise(&old_x, &p)
            .reasons()
            .contains("tcb.microcode: 68 is below the default minimum 69 for Milan"));
        // Genoa and Turin have no default bootloader floor.
        let genoa = stepping("Genoa", (0x19, 0x11, 1), 0x1B, 0x56);
        assert!(
            appraise(&genoa, &p).is_accepted(),
            "{}",
            appraise(&genoa, &p).reasons()
        );
        assert!(!appraise(&with_tcb(genoa, "microcode", 0x55), &p).is_accepted());
        let turin = with_tcb(stepping("Turin", (0x1A, 0x02, 1), 0x04, 0x50), "fmc", 0);
        assert!(
            appraise(&turin, &p).is_accepted(),
            "{}",
            appraise(&turin, &p).reasons()
        );
        let v = appraise(&with_tcb(turin, "snp", 3), &p);
        assert!(
            v.reasons()
                .contains("tcb.snp: 3 is below the default minimum 4 for Turin"),
            "{}",
            v.reasons()
        );
    }

    #[test]
    fn snp_claims_without_a_known_product_line_fail_closed() {
        let mut c = snp_claims(0, 0xDE);
        c.raw.as_object_mut().unwrap().remove("product");
        let v = appraise(&c, &policy(""));
        assert!(
            v.reasons()
                .contains("no known product line (product = nothing)"),
            "{}",
            v.reasons()
        );
        c.raw["product"] = serde_json::json!("Venice");
        assert!(appraise(&c, &policy("")).reasons().contains("`Venice`"));
        assert!(appraise(&c, &policy("min_tcb_floor = \"none\"\n")).is_accepted());
    }
}
