//! Key broker (KBS) messages. Paths are under `/kbs/v1`.

use crate::job::{Approval, JobSpec};
use crate::{ModelBinding, RuntimeKeys};
use serde::{Deserialize, Serialize};

/// HPKE `info` for a DEK released by the KBS; the AAD is the key id.
pub const RELEASE_INFO: &[u8] = b"cordon kbs dek release v1";

/// `POST /kbs/v1/challenge` response: a single-use nonce.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Unix seconds after which the nonce is refused.
    pub expires_at: u64,
}

/// `POST /kbs/v1/attest` request: evidence binding the nonce and the runtime's keys, and the keys
/// the runtime asks to be released.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestRequest {
    pub nonce: String,
    #[serde(with = "crate::b64")]
    pub evidence: Vec<u8>,
    pub runtime_keys: RuntimeKeys,
    pub key_ids: Vec<String>,
    /// The models the runtime will unseal with these keys, bound in report_data after the keys.
    #[serde(default)]
    pub models: Vec<ModelBinding>,
    /// Present when the runtime asks for dataset keys to run a training job. The evidence then
    /// binds [`crate::job::job_report_data`]`(nonce, runtime_keys, job hash)` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRelease>,
}

/// The job a runtime asks dataset keys for, with the approvals it holds. The KBS releases a
/// dataset's DEK only when the dataset's owner approved exactly this job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRelease {
    pub spec: JobSpec,
    pub approvals: Vec<Approval>,
}

/// One released key: the DEK sealed with HPKE to the attested `runtime_keys.hpke_public_key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleasedKey {
    pub key_id: String,
    /// `enc || ciphertext`, info [`RELEASE_INFO`], aad = key id bytes.
    #[serde(with = "crate::b64")]
    pub sealed_dek: Vec<u8>,
}

/// One refused key and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeniedKey {
    pub key_id: String,
    pub reasons: Vec<String>,
}

/// `POST /kbs/v1/attest` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttestResponse {
    /// SHA-256 of the verified claims (hex), as recorded in the audit log.
    pub claims_digest: String,
    pub released: Vec<ReleasedKey>,
    pub denied: Vec<DeniedKey>,
}

/// `PUT /kbs/v1/admin/keys/{key_id}` request (admin token required). Debug output omits the DEK.
#[derive(Clone, Serialize, Deserialize)]
pub struct RegisterKey {
    /// The 32-byte DEK, base64.
    #[serde(with = "crate::b64")]
    pub dek: Vec<u8>,
    /// The release policy, TOML (see `cordon_attest::Policy`).
    pub policy: String,
}

/// An audit event, as `GET /kbs/v1/admin/audit` returns them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEvent {
    pub seq: i64,
    /// Unix seconds.
    pub time: u64,
    /// `key_registered`, `dataset_key_registered`, `key_released`, `key_denied`,
    /// `attestation_failed`.
    pub kind: String,
    pub key_id: Option<String>,
    /// SHA-256 of the verified claims, hex, when evidence was verified.
    pub claims_digest: Option<String>,
    /// `accepted` or `rejected`.
    pub verdict: String,
    /// Launch measurement of the attested workload, hex, when known.
    pub measurement: Option<String>,
    /// The reasons of a denial, or other detail.
    pub detail: String,
    /// Hash chaining this event to the previous one (hex SHA-256).
    pub hash: String,
}

/// Error body of every KBS error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable code, e.g. `nonce_replayed`.
    pub code: String,
    pub error: String,
}

impl std::fmt::Debug for RegisterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterKey")
            .field("dek", &format_args!("<{} bytes redacted>", self.dek.len()))
            .field("policy", &self.policy)
            .finish()
    }
}

impl Drop for RegisterKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.dek);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_key_debug_does_not_show_the_dek() {
        let r = RegisterKey {
            dek: vec![0xab; 32],
            policy: "p".into(),
        };
        let s = format!("{r:?}");
        assert!(
            !s.contains("171") && !s.to_lowercase().contains("abab"),
            "{s}"
        );
    }
}
