//! Key broker (KBS) messages. Paths are under `/kbs/v1`.

use crate::channel::{self, ChannelError};
use crate::job::{Approval, JobSpec};
use crate::{ModelBinding, RuntimeKeys};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

/// HPKE `info` for a DEK released by the KBS; the AAD is the key id.
pub const RELEASE_INFO: &[u8] = b"cordon kbs dek release v1";
/// HPKE `info` for a DEK sent *to* the KBS, sealed to its identity key; the AAD is
/// [`dek_upload_aad`].
pub const UPLOAD_INFO: &[u8] = b"cordon kbs dek upload v1";
/// Most keys one attest request may ask for.
pub const MAX_KEY_IDS: usize = 64;

/// `GET /kbs/v1/identity`: the KBS's long-term HPKE public key. Every DEK sent to the KBS is sealed
/// to it, and every signed request to the KBS names it as its audience. Callers pin it out of band
/// (`cordon kbs serve` prints it), or verify `evidence` against a policy of their own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KbsIdentity {
    #[serde(with = "crate::binding::hex_array32")]
    pub hpke_public_key: [u8; 32],
    /// The administrator's signature over `hpke_public_key` (`cordon_proto::auth::vouch_identity`,
    /// hex), made when the admin token was created: whoever holds the token can check this answer
    /// without a pin. Absent before an administrator exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_signature: Option<String>,
    /// The KBS's own TEE evidence, whose report_data is [`kbs_identity_report_data`] of
    /// `hpke_public_key`. Absent when the KBS runs without a TEE (`cordon kbs serve --tee none`) and
    /// from KBSs older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<KbsEvidence>,
}

/// The KBS's evidence for its identity key, made once when the KBS starts. It shows that the code
/// it measures, in that TEE, held the identity key at that start; it says nothing about liveness
/// (the host can serve it again later, which is harmless: it binds the key, not a session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbsEvidence {
    /// The platform the KBS says produced it; a verifier checks it against the verified claims.
    pub platform: cordon_attest::Platform,
    /// The evidence bytes, base64 (sim evidence, an SNP report, a DCAP quote).
    #[serde(with = "crate::b64")]
    pub evidence: Vec<u8>,
    /// Endorsements shipped with the evidence (input to the verifier, never trust).
    #[serde(default, skip_serializing_if = "crate::WireEndorsements::is_empty")]
    pub endorsements: crate::WireEndorsements,
}

/// Domain label of the report_data a KBS binds its identity key with. It differs from the
/// runtime's (`cordon report_data v2`) and a training job's (`cordon job report_data v1`), so no
/// runtime evidence can pass for a KBS identity or the other way round.
pub const IDENTITY_REPORT_DATA_DOMAIN: &[u8] = b"cordon kbs identity report_data v1\0";

/// The report_data of a KBS's identity evidence:
///
/// ```text
/// SHA-512( "cordon kbs identity report_data v1" || 0x00 || u32be(32) || hpke_public_key )
/// ```
///
/// SHA-512 fills the 64 bytes of report_data, as the runtime's binding does. There is no nonce:
/// the evidence is made once, at start (see [`KbsEvidence`]).
pub fn kbs_identity_report_data(hpke_public_key: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(IDENTITY_REPORT_DATA_DOMAIN);
    h.update(32u32.to_be_bytes());
    h.update(hpke_public_key);
    h.finalize().into()
}

/// One key as `GET /kbs/v1/admin/keys` lists it: who holds it, under which policy, how often it
/// was released. Never the DEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub key_id: String,
    /// `admin`, `dataset` or `job_output`.
    pub kind: String,
    /// The owning party's (dataset) or runtime's (job output) Ed25519 public key, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The release policy (TOML).
    pub policy: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// When the key was revoked; a revoked key is never released again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
    /// The KEK that wraps the DEK at rest (none once revoked: the DEK is erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek_id: Option<String>,
    /// Releases recorded in the audit log under this key id.
    pub releases: u64,
}

/// `POST /kbs/v1/admin/keys/{key_id}/revoke` (admin-signed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeRequest {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: String,
}

/// The answer to a revocation: when, and the audit event that records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResponse {
    pub key_id: String,
    pub revoked_at: u64,
    pub audit_seq: i64,
}

/// Why a DEK is sent to the KBS. Part of the sealed DEK's AAD, so a DEK sealed for one use cannot be
/// replayed into another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DekPurpose {
    /// A model owner's key, registered by the administrator (`PUT /kbs/v1/admin/keys/{id}`).
    AdminKey,
    /// A party's dataset key (`PUT /kbs/v1/datasets/{id}`).
    DatasetKey,
    /// A training job's output key, registered by its runtime (`PUT /kbs/v1/jobs/{hash}/output`).
    JobOutput,
}

impl DekPurpose {
    pub fn label(self) -> &'static str {
        match self {
            DekPurpose::AdminKey => "admin_key",
            DekPurpose::DatasetKey => "dataset_key",
            DekPurpose::JobOutput => "job_output",
        }
    }
}

/// Something on its way to the KBS, HPKE-sealed (base mode, the channel's suite) to the KBS's
/// identity key: a DEK ([`seal_dek_for_kbs`]) or a training job ([`seal_job`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedToKbs {
    /// The KBS key it is sealed to (so a KBS can say "sealed to another key" rather than fail).
    #[serde(with = "crate::binding::hex_array32")]
    pub kbs_public_key: [u8; 32],
    /// `enc (32) || ciphertext`.
    #[serde(with = "crate::b64")]
    pub sealed: Vec<u8>,
}

/// The context a registered policy binds: SHA-256 of its exact text.
pub fn policy_context(policy_toml: &str) -> [u8; 32] {
    Sha256::digest(policy_toml.as_bytes()).into()
}

/// The AAD of a DEK sealed to the KBS:
///
/// ```text
/// "cordon kbs dek upload v1" || 0x00 || for each of purpose, key_id, sender (32), context:
///                                        u32be(len) || bytes
/// ```
///
/// `sender` is the Ed25519 key that signs the request (administrator, party or runtime) and
/// `context` is SHA-256 of the release policy (admin and dataset keys) or `job_hash ||
/// sealed_manifest_sha256` (a job's output). Change any of them and the KBS cannot open the DEK.
pub fn dek_upload_aad(
    purpose: DekPurpose,
    key_id: &str,
    sender: &[u8; 32],
    context: &[u8],
) -> Vec<u8> {
    let mut aad = UPLOAD_INFO.to_vec();
    aad.push(0);
    for part in [
        purpose.label().as_bytes(),
        key_id.as_bytes(),
        sender.as_slice(),
        context,
    ] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part);
    }
    aad
}

/// Seals `dek` to the KBS whose identity key is `kbs_public_key`, for `purpose`.
pub fn seal_dek_for_kbs(
    kbs_public_key: &[u8; 32],
    purpose: DekPurpose,
    key_id: &str,
    sender: &[u8; 32],
    context: &[u8],
    dek: &[u8],
) -> Result<SealedToKbs, ChannelError> {
    Ok(SealedToKbs {
        kbs_public_key: *kbs_public_key,
        sealed: channel::seal_to(
            kbs_public_key,
            UPLOAD_INFO,
            &dek_upload_aad(purpose, key_id, sender, context),
            dek,
        )?,
    })
}

/// `POST /kbs/v1/challenge` response: a single-use nonce.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Challenge {
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Unix seconds after which the nonce is refused.
    pub expires_at: u64,
}

/// `POST /kbs/v1/attest` request: evidence binding the nonce and the runtime's keys, and the keys
/// the runtime asks to be released. Unknown fields are refused: a field this KBS does not read
/// (an older runtime's job in clear, say) must not be ignored in silence.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub nonce: String,
    #[serde(with = "crate::b64")]
    pub evidence: Vec<u8>,
    /// Endorsements shipped with the evidence (input to the verifier, never trust).
    #[serde(default, skip_serializing_if = "crate::WireEndorsements::is_empty")]
    pub endorsements: crate::WireEndorsements,
    pub runtime_keys: RuntimeKeys,
    pub key_ids: Vec<String>,
    /// The models the runtime will unseal with these keys, bound in report_data after the keys.
    #[serde(default)]
    pub models: Vec<ModelBinding>,
    /// Present when the runtime asks for dataset keys to run a training job: the job's spec and
    /// approvals ([`JobRelease`]), sealed to the KBS's identity key ([`seal_job`]) so that the host
    /// sees neither. The evidence then binds [`crate::job::job_report_data`]`(nonce, runtime_keys,
    /// job hash)` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_job: Option<SealedToKbs>,
}

/// HPKE `info` of a training job sealed to the KBS in an attest request; the AAD is the request's
/// nonce (hex, as sent), so a sealed job cannot be moved into another request.
pub const JOB_INFO: &[u8] = b"cordon kbs attest job v1";

/// Seals `job` (its JSON) to the KBS whose identity key is `kbs_public_key`, for the attest request
/// carrying `nonce_hex`.
pub fn seal_job(
    kbs_public_key: &[u8; 32],
    nonce_hex: &str,
    job: &JobRelease,
) -> Result<SealedToKbs, ChannelError> {
    let json = serde_json::to_vec(job).map_err(|_| ChannelError::Encrypt)?;
    Ok(SealedToKbs {
        kbs_public_key: *kbs_public_key,
        sealed: channel::seal_to(kbs_public_key, JOB_INFO, nonce_hex.as_bytes(), &json)?,
    })
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

/// `PUT /kbs/v1/admin/keys/{key_id}` (signed by the administrator) and
/// `PUT /kbs/v1/datasets/{key_id}` (signed by the party): the DEK, sealed to the KBS, and its release
/// policy. The sealed DEK's AAD binds the purpose, the key id, the signer and SHA-256 of `policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterKey {
    pub sealed_dek: SealedToKbs,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceKeyPair;

    #[test]
    fn a_sealed_dek_opens_only_for_its_purpose_slot_sender_and_policy() {
        let kbs = ServiceKeyPair::generate(0);
        let ctx = policy_context("platforms = [\"sim\"]");
        let sealed = seal_dek_for_kbs(
            &kbs.public_key(),
            DekPurpose::DatasetKey,
            "k1",
            &[1; 32],
            &ctx,
            &[9; 32],
        )
        .unwrap();
        let open = |purpose, key_id: &str, sender: &[u8; 32], context: &[u8]| {
            kbs.open_sealed(
                UPLOAD_INFO,
                &dek_upload_aad(purpose, key_id, sender, context),
                &sealed.sealed,
            )
        };
        assert_eq!(
            open(DekPurpose::DatasetKey, "k1", &[1; 32], &ctx)
                .unwrap()
                .as_slice(),
            &[9; 32]
        );
        assert!(open(DekPurpose::AdminKey, "k1", &[1; 32], &ctx).is_err());
        assert!(open(DekPurpose::DatasetKey, "k2", &[1; 32], &ctx).is_err());
        assert!(open(DekPurpose::DatasetKey, "k1", &[2; 32], &ctx).is_err());
        assert!(open(DekPurpose::DatasetKey, "k1", &[1; 32], &policy_context("x")).is_err());
        // Length framing: moving a byte between key id and context changes the AAD.
        assert_ne!(
            dek_upload_aad(DekPurpose::AdminKey, "ab", &[0; 32], b"c"),
            dek_upload_aad(DekPurpose::AdminKey, "a", &[0; 32], b"bc")
        );
        // Another KBS key cannot open it.
        let other = ServiceKeyPair::generate(0);
        assert!(other
            .open_sealed(
                UPLOAD_INFO,
                &dek_upload_aad(DekPurpose::DatasetKey, "k1", &[1; 32], &ctx),
                &sealed.sealed
            )
            .is_err());
    }

    #[test]
    fn identity_report_data_is_sha512_of_documented_preimage() {
        let mut pre = b"cordon kbs identity report_data v1\0".to_vec();
        pre.extend_from_slice(&[0, 0, 0, 32]);
        pre.extend_from_slice(&[0x11; 32]);
        let expected: [u8; 64] = Sha512::digest(&pre).into();
        assert_eq!(kbs_identity_report_data(&[0x11; 32]), expected);
        assert_ne!(
            kbs_identity_report_data(&[0x11; 32]),
            kbs_identity_report_data(&[0x12; 32])
        );
    }

    #[test]
    fn identity_without_evidence_still_parses_and_round_trips() {
        // What a KBS from before identity evidence answers.
        let old = format!("{{\"hpke_public_key\":\"{}\"}}", "11".repeat(32));
        let id: KbsIdentity = serde_json::from_str(&old).unwrap();
        assert!(id.evidence.is_none() && id.admin_signature.is_none());
        assert_eq!(serde_json::to_string(&id).unwrap(), old);
        let with = KbsIdentity {
            evidence: Some(KbsEvidence {
                platform: cordon_attest::Platform::Sim,
                evidence: vec![1, 2, 3],
                endorsements: Default::default(),
            }),
            ..id
        };
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains("\"evidence\":{\"platform\":\"sim\",\"evidence\":\"AQID\"}"),
            "{json}"
        );
        let back: KbsIdentity = serde_json::from_str(&json).unwrap();
        assert_eq!(back.evidence, with.evidence);
    }
}
