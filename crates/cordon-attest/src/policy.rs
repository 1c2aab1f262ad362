//! Appraisal policy: reference values and rules applied to verified claims.
//!
//! A policy is a TOML document:
//!
//! ```toml
//! platforms = ["sim"]                    # evidence of other platforms is refused
//! launch_measurements = ["9f…"]          # reference values, hex; at least one
//! allow_debug = false                    # default false
//! workload_data = "00…"                  # optional: exact workload data expected
//! tcb_statuses = ["UpToDate"]            # optional (DCAP): accepted TCB statuses; default below
//! allowed_advisories = ["INTEL-SA-00615"] # optional (DCAP): if set, every advisory must be listed
//! max_vmpl = 0                           # optional (SNP): highest VMPL accepted, default 0
//! rtmrs = ["…", "…"]                     # TDX: RTMR0.. reference values (or pin workload_data)
//!
//! [min_tcb]                              # optional: minimum TCB component versions
//! microcode = 115
//!
//! [endorsements]                         # optional; used by clients and proxies
//! sim_trust_anchors = ["3b…"]            # Ed25519 keys of the simulated hardware
//! ```

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
    /// Accept any launch measurement. Never read from a file: only [`Policy::hardware_default`]
    /// sets it, so an empty reference-value list cannot silently accept everything.
    #[serde(skip)]
    pub any_measurement: bool,
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
    /// measurement, any VMPL, no debug, default TCB statuses. Only code can build a policy without reference
    /// values; a policy file must list them.
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
            workload_data: None,
            tcb_statuses: None,
            allowed_advisories: None,
            min_tcb: None,
            max_vmpl: None,
            rtmrs: None,
            any_measurement: false,
        }
    }

    fn validate(&self) -> Result<(), PolicyError> {
        // Evidence forged with the sim key must never meet a hardware platform's reference values.
        if self.platforms.contains(&Platform::Sim)
            && self.platforms.iter().any(|p| p.is_hardware_backed())
        {
            return Err(PolicyError::SimWithHardware);
        }
        if self.platforms.contains(&Platform::Tdx)
            && self.rtmrs.is_none()
            && self.workload_data.is_none()
        {
            return Err(PolicyError::TdxUnpinned);
        }
        if self.platforms.is_empty() {
            return Err(PolicyError::NoPlatforms);
        }
        if self.launch_measurements.is_empty() {
            return Err(PolicyError::NoMeasurements);
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
            workload_data: raw.workload_data,
            tcb_statuses: raw.tcb_statuses,
            allowed_advisories: raw.allowed_advisories,
            min_tcb: raw.min_tcb,
            max_vmpl: raw.max_vmpl,
            rtmrs: raw.rtmrs,
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

    /// Serializes the document to TOML.
    pub fn to_toml(&self) -> String {
        let raw = RawDocument {
            platforms: self.policy.platforms.clone(),
            launch_measurements: self.policy.launch_measurements.clone(),
            allow_debug: self.policy.allow_debug,
            workload_data: self.policy.workload_data.clone(),
            tcb_statuses: self.policy.tcb_statuses.clone(),
            allowed_advisories: self.policy.allowed_advisories.clone(),
            min_tcb: self.policy.min_tcb.clone(),
            max_vmpl: self.policy.max_vmpl,
            rtmrs: self.policy.rtmrs.clone(),
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
    VmplTooHigh {
        found: u64,
        max: u32,
    },
    RtmrMismatch {
        index: usize,
        found: String,
        expected: String,
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
            AppraisalFailure::VmplTooHigh { found, max } => {
                write!(f, "vmpl: report from VMPL {found}, policy allows at most {max}")
            }
            AppraisalFailure::RtmrMismatch { index, found, expected } => {
                write!(f, "rtmr{index}: found {found}, policy expects {expected}")
            }
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
    if let Some(min) = &policy.min_tcb {
        for (component, &minimum) in min {
            let found = claims
                .tcb
                .as_ref()
                .and_then(|t| t.components.get(component))
                .copied();
            if found.is_none_or(|v| v < minimum) {
                failures.push(AppraisalFailure::TcbBelowMinimum {
                    component: component.clone(),
                    found,
                    minimum,
                });
            }
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

    fn snp_claims(vmpl: u64, microcode: u64) -> Claims {
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
                components: [("microcode".to_string(), microcode), ("snp".to_string(), 8)].into(),
            }),
            platform_id: None,
            attestation_key: vec![],
            raw: serde_json::json!({ "vmpl": vmpl }),
        }
    }

    fn m() -> String {
        hex::encode([7u8; 48])
    }

    #[test]
    fn sim_with_a_hardware_platform_and_unpinned_tdx_are_refused() {
        let mixed = format!(
            "platforms = [\"sim\", \"snp\"]\nlaunch_measurements = [\"{}\"]",
            m()
        );
        assert_eq!(Policy::from_toml(&mixed), Err(PolicyError::SimWithHardware));
        let tdx = format!("platforms = [\"tdx\"]\nlaunch_measurements = [\"{}\"]", m());
        assert_eq!(Policy::from_toml(&tdx), Err(PolicyError::TdxUnpinned));
        let pinned = format!("{tdx}\nrtmrs = [\"{}\"]", hex::encode([1u8; 48]));
        assert!(Policy::from_toml(&pinned).is_ok());
    }

    #[test]
    fn empty_reference_values_accept_nothing_unless_hardware_default() {
        let p = Policy::new(vec![Platform::Snp], vec![]);
        assert!(appraise(&snp_claims(0, 200), &p)
            .reasons()
            .contains("launch_measurement"));
        assert!(appraise(&snp_claims(0, 200), &Policy::hardware_default()).is_accepted());
        // `any_measurement` cannot come from a file.
        let text = format!(
            "platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\nany_measurement = true",
            m()
        );
        assert!(matches!(
            Policy::from_toml(&text),
            Err(PolicyError::Parse(_))
        ));
    }

    #[test]
    fn snp_minimum_tcb_and_vmpl_are_enforced() {
        let text = format!("platforms = [\"snp\"]\nlaunch_measurements = [\"{}\"]\n[min_tcb]\nmicrocode = 115\nsnp = 8\n", m());
        let p = Policy::from_toml(&text).unwrap();
        assert!(appraise(&snp_claims(0, 115), &p).is_accepted());
        let v = appraise(&snp_claims(0, 114), &p);
        assert!(
            v.reasons()
                .contains("tcb.microcode: 114 is below the policy's minimum 115"),
            "{}",
            v.reasons()
        );
        let v = appraise(&snp_claims(2, 115), &p);
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
        assert!(appraise(&snp_claims(2, 115), &lenient).is_accepted());
        let needs_fmc = Policy {
            min_tcb: Some([("fmc".to_string(), 1)].into()),
            ..p
        };
        assert!(appraise(&snp_claims(0, 115), &needs_fmc)
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
