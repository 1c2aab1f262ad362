//! Appraisal policy: reference values and rules applied to verified claims.
//!
//! A policy is a TOML document:
//!
//! ```toml
//! platforms = ["sim"]                    # evidence of other platforms is refused
//! launch_measurements = ["9f…"]          # reference values, hex; at least one
//! allow_debug = false                    # default false
//! workload_data = "00…"                  # optional: exact workload data expected
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
    #[serde(default, with = "crate::hexser::opt", skip_serializing_if = "Option::is_none")]
    pub workload_data: Option<Vec<u8>>,
}

impl Policy {
    /// Parses a policy (without endorsements) from TOML and checks it is usable.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        Ok(PolicyDocument::from_toml(text)?.policy)
    }

    /// Serializes the policy to TOML.
    pub fn to_toml(&self) -> String {
        PolicyDocument { policy: self.clone(), endorsements: None }.to_toml()
    }

    fn validate(&self) -> Result<(), PolicyError> {
        if self.platforms.is_empty() {
            return Err(PolicyError::NoPlatforms);
        }
        if self.launch_measurements.is_empty() {
            return Err(PolicyError::NoMeasurements);
        }
        for m in &self.launch_measurements {
            if m.len() != 48 && m.len() != 32 {
                return Err(PolicyError::MeasurementLength { value: hex::encode(m), len: m.len() });
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

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(flatten)]
    policy: RawPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endorsements: Option<RawEndorsements>,
}

// `deny_unknown_fields` does not combine with `flatten`, so the policy fields are repeated here and
// unknown keys are caught by the `other` map instead.
#[derive(Serialize, Deserialize)]
struct RawPolicy {
    platforms: Vec<Platform>,
    #[serde(with = "crate::hexser::list")]
    launch_measurements: Vec<Vec<u8>>,
    #[serde(default)]
    allow_debug: bool,
    #[serde(default, with = "crate::hexser::opt", skip_serializing_if = "Option::is_none")]
    workload_data: Option<Vec<u8>>,
    #[serde(flatten, skip_serializing)]
    other: std::collections::BTreeMap<String, toml::Value>,
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
        let raw: RawDocument = toml::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if let Some(key) = raw.policy.other.keys().next() {
            return Err(PolicyError::Parse(format!("unknown field `{key}`")));
        }
        let policy = Policy {
            platforms: raw.policy.platforms,
            launch_measurements: raw.policy.launch_measurements,
            allow_debug: raw.policy.allow_debug,
            workload_data: raw.policy.workload_data,
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
                Ok::<_, PolicyError>(Endorsements { sim_trust_anchors: anchors })
            })
            .transpose()?;
        Ok(PolicyDocument { policy, endorsements })
    }

    /// Serializes the document to TOML.
    pub fn to_toml(&self) -> String {
        let raw = RawDocument {
            policy: RawPolicy {
                platforms: self.policy.platforms.clone(),
                launch_measurements: self.policy.launch_measurements.clone(),
                allow_debug: self.policy.allow_debug,
                workload_data: self.policy.workload_data.clone(),
                other: Default::default(),
            },
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
    PlatformNotAllowed { found: Platform, allowed: Vec<Platform> },
    MeasurementNotAllowed { found: String, allowed: Vec<String> },
    DebugNotAllowed,
    WorkloadDataMismatch { found: String, expected: String },
}

impl fmt::Display for AppraisalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppraisalFailure::PlatformNotAllowed { found, allowed } => {
                let allowed: Vec<String> = allowed.iter().map(|p| p.to_string()).collect();
                write!(f, "platform: evidence is from `{found}`, policy allows [{}]", allowed.join(", "))
            }
            AppraisalFailure::MeasurementNotAllowed { found, allowed } => write!(
                f,
                "launch_measurement: {found} is not among the policy's reference values [{}]",
                allowed.join(", ")
            ),
            AppraisalFailure::DebugNotAllowed => {
                write!(f, "debug: the TEE runs in debug mode (true), policy requires allow_debug = false")
            }
            AppraisalFailure::WorkloadDataMismatch { found, expected } => {
                write!(f, "workload_data: found {found}, policy expects {expected}")
            }
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
        self.failures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ")
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
    if !policy.launch_measurements.iter().any(|m| m == &claims.launch_measurement) {
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
    Verdict { failures }
}
