//! Collaborative training jobs: the spec every data owner approves by its hash, approvals, party
//! request authentication, the report_data that binds a job, the sealed output and the signed
//! receipt. `docs/protocol.md` §9 describes every byte.
//!
//! Who checks what:
//! - the **runtime** refuses to run a job lacking any party's approval, and hands the output only to
//!   the recipients the spec names;
//! - the **KBS** releases a dataset's DEK only to evidence that binds the job's hash, and only when
//!   the dataset's owner signed an approval of that hash;
//! - **anyone** can check a receipt offline: the runtime's signature, the evidence, and that the
//!   evidence binds the signing key to this job.

use crate::auth::unix;
use crate::{RuntimeKeys, ServiceKeyPair};
use cordon_attest::{Claims, Verifier};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};
use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::{Zeroize, Zeroizing};

/// Domain label of the job hash preimage.
pub const JOB_DOMAIN: &[u8] = b"cordon job v1\0";
/// Domain label of an approval signature.
pub const APPROVAL_DOMAIN: &[u8] = b"cordon job approval v2\0";
/// Domain label of a receipt signature.
pub const RECEIPT_DOMAIN: &[u8] = b"cordon job receipt v1\0";
/// Domain label of the report_data of a runtime that runs a job.
pub const JOB_REPORT_DATA_DOMAIN: &[u8] = b"cordon job report_data v1\0";
/// HPKE `info` of an output DEK sealed to a recipient; the AAD is `job hash || key id`.
pub const OUTPUT_INFO: &[u8] = b"cordon job output v1";

/// Most parties of one job.
pub const MAX_PARTIES: usize = 64;

/// Most feature columns one job's schema may name.
pub const MAX_FEATURES: usize = 4_096;

/// The longest an approval may stay valid: a party approves a job for a run soon, not forever.
pub const MAX_APPROVAL_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

/// Why a job message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    #[error("job spec: {0}")]
    Spec(String),
    #[error("party {party}: approval signature does not verify for job {job_hash}")]
    BadApproval { party: String, job_hash: String },
    #[error("party {party}: approval valid until {expires_at}, more than {max_days} days ahead")]
    ApprovalTooLong {
        party: String,
        expires_at: u64,
        max_days: u64,
    },
    #[error("party {party}: approval of job {job_hash} expired at {expires_at} (now {now})")]
    ApprovalExpired {
        party: String,
        job_hash: String,
        expires_at: u64,
        now: u64,
    },
    #[error("unknown party {0}")]
    UnknownParty(String),
    #[error("request authentication: {0}")]
    Auth(String),
    #[error("party key file: {0}")]
    KeyFile(String),
    #[error("receipt: {0}")]
    Receipt(String),
}

// ---------------------------------------------------------------------------------------------
// The spec

/// What every party approves. Any change is a new job (a new hash) that needs new approvals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A label for people; it is part of the hash like everything else.
    pub name: String,
    pub parties: Vec<JobParty>,
    /// Each party's sealed dataset, named by the SHA-256 of its sealed manifest.
    pub datasets: Vec<JobDataset>,
    pub schema: JobSchema,
    /// Algorithm and hyper-parameters, e.g. `{"kind": "gbdt", "n_estimators": 100}`. The runtime
    /// parses it; its keys are hashed in sorted order.
    pub algorithm: serde_json::Value,
    pub evaluation: Evaluation,
    pub outputs: Outputs,
}

/// A participating party: its identity (the key that signs approvals, requests and its datasets'
/// manifests) and the HPKE key outputs are sealed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobParty {
    pub name: String,
    #[serde(with = "crate::binding::hex_array32")]
    pub signing_key: [u8; 32],
    #[serde(with = "crate::binding::hex_array32")]
    pub hpke_key: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDataset {
    /// The owning party (by name); the sealed manifest must be signed by its key.
    pub party: String,
    /// The KBS key id of the dataset's DEK.
    pub key_id: String,
    #[serde(with = "crate::binding::hex_array32")]
    pub manifest_sha256: [u8; 32],
    /// `csv` or `parquet`.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSchema {
    /// Feature columns, in the order the trained model takes them.
    pub features: Vec<String>,
    /// The label column (0 or 1).
    pub label: String,
}

/// The evaluation every party receives: each dataset's rows are split by a seeded hash of the row
/// index into training and held-out rows; metrics are computed on the union of held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation {
    pub test_fraction: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// Parties (by name) that receive the trained model, sealed to their HPKE keys.
    pub recipients: Vec<String>,
    /// Deploy the model to serving: the runtime registers its key with the KBS under this release
    /// policy, so serving runtimes it names load the model and no party ever holds its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeOutput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeOutput {
    /// The release policy (TOML, as `cordon_attest::Policy`) of the model's key.
    pub policy: String,
}

/// `PUT /kbs/v1/jobs/{hash}/output`: the training runtime registers the output model's DEK, sealed
/// to the KBS ([`crate::kbs::seal_dek_for_kbs`], purpose `job_output`, context
/// `job_hash || sealed_manifest_sha256`), in a request signed ([`crate::auth`]) with the signing key
/// its job attestation bound.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputKey {
    pub key_id: String,
    pub sealed_dek: crate::kbs::SealedToKbs,
    /// SHA-256 of the sealed model's manifest, for the audit log.
    #[serde(with = "crate::binding::hex_array32")]
    pub sealed_manifest_sha256: [u8; 32],
}

/// The context an output key's sealed DEK binds: the job and the sealed model.
pub fn output_context(job_hash: &[u8; 32], sealed_manifest_sha256: &[u8; 32]) -> Vec<u8> {
    [job_hash.as_slice(), sealed_manifest_sha256.as_slice()].concat()
}

impl JobSpec {
    /// The canonical bytes the hash covers: the spec as JSON, struct fields in declaration order
    /// and the algorithm's object keys sorted, so that the same spec always hashes the same.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut spec = self.clone();
        spec.algorithm = sorted(&spec.algorithm);
        serde_json::to_vec(&spec).unwrap_or_default()
    }

    /// SHA-256(`JOB_DOMAIN` || canonical bytes): what parties approve and report_data binds.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(JOB_DOMAIN);
        h.update(self.canonical_bytes());
        h.finalize().into()
    }

    pub fn party(&self, name: &str) -> Option<&JobParty> {
        self.parties.iter().find(|p| p.name == name)
    }

    pub fn party_by_key(&self, key: &[u8; 32]) -> Option<&JobParty> {
        self.parties.iter().find(|p| &p.signing_key == key)
    }

    /// Structural checks (the runtime also parses the algorithm and the data).
    pub fn validate(&self) -> Result<(), JobError> {
        let bad = |m: String| Err(JobError::Spec(m));
        if self.parties.is_empty() {
            return bad("no parties".into());
        }
        if self.parties.len() > MAX_PARTIES {
            return bad(format!(
                "{} parties; a job has at most {MAX_PARTIES}",
                self.parties.len()
            ));
        }
        if self.schema.features.len() > MAX_FEATURES {
            return bad(format!(
                "schema names {} features; a job has at most {MAX_FEATURES}",
                self.schema.features.len()
            ));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for p in &self.parties {
            if p.name.is_empty() || p.name.len() > 64 {
                return bad("a party name must be 1 to 64 bytes (UTF-8)".into());
            }
            if !names.insert(p.name.as_str()) {
                return bad(format!("party {} is listed twice", p.name));
            }
            if !keys.insert(p.signing_key) {
                return bad(format!(
                    "party {} reuses another party's signing key",
                    p.name
                ));
            }
            if VerifyingKey::from_bytes(&p.signing_key).is_err() {
                return bad(format!(
                    "party {}: signing_key is not an Ed25519 key",
                    p.name
                ));
            }
        }
        if self.datasets.is_empty() {
            return bad("no datasets".into());
        }
        let mut digests = BTreeSet::new();
        for d in &self.datasets {
            if self.party(&d.party).is_none() {
                return bad(format!(
                    "dataset {} names unknown party {}",
                    d.key_id, d.party
                ));
            }
            if !digests.insert(d.manifest_sha256) || d.key_id.is_empty() {
                return bad(format!(
                    "dataset {} is listed twice or has no key id",
                    d.key_id
                ));
            }
            if d.format != "csv" && d.format != "parquet" {
                return bad(format!(
                    "dataset {}: format must be csv or parquet, not {:?}",
                    d.key_id, d.format
                ));
            }
        }
        for p in &self.parties {
            if !self.datasets.iter().any(|d| d.party == p.name) {
                return bad(format!("party {} contributes no dataset", p.name));
            }
        }
        if self.schema.features.is_empty() || self.schema.label.is_empty() {
            return bad("schema needs feature columns and a label column".into());
        }
        if !(self.evaluation.test_fraction > 0.0 && self.evaluation.test_fraction < 1.0) {
            return bad("evaluation.test_fraction must be between 0 and 1".into());
        }
        if self.outputs.recipients.is_empty() && self.outputs.serve.is_none() {
            return bad(
                "outputs names no recipient and no serving policy: the model would go nowhere"
                    .into(),
            );
        }
        if let Some(serve) = &self.outputs.serve {
            cordon_attest::Policy::from_toml(&serve.policy)
                .map_err(|e| JobError::Spec(format!("outputs.serve.policy: {e}")))?;
        }
        for r in &self.outputs.recipients {
            if self.party(r).is_none() {
                return bad(format!("output recipient {r} is not a party"));
            }
        }
        if !self.algorithm.is_object() {
            return bad("algorithm must be an object with a \"kind\"".into());
        }
        Ok(())
    }
}

fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The report_data of a runtime about to run a job: the verifier's nonce, the runtime's keys and
/// the job's hash, under a domain label of its own so it can never be mistaken for a serving
/// runtime's (see [`crate::report_data`]).
///
/// ```text
/// SHA-512( "cordon job report_data v1" || 0x00 || u32be(len(nonce)) || nonce
///          || hpke_public_key (32) || u8(hpke_key_id) || signing_public_key (32) || job_hash (32) )
/// ```
pub fn job_report_data(nonce: &[u8], keys: &RuntimeKeys, job_hash: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(JOB_REPORT_DATA_DOMAIN);
    h.update((nonce.len() as u32).to_be_bytes());
    h.update(nonce);
    h.update(keys.hpke_public_key);
    h.update([keys.hpke_key_id]);
    h.update(keys.signing_public_key);
    h.update(job_hash);
    h.finalize().into()
}

// ---------------------------------------------------------------------------------------------
// Party keys, approvals, signed requests

/// A party's secrets: the Ed25519 key that is its identity (it signs approvals, requests and its
/// datasets' manifests) and the seed of its X25519 HPKE key (outputs are sealed to it).
/// Zeroized on drop; Debug shows only the public halves.
pub struct PartyKey {
    name: String,
    signing: SigningKey,
    hpke_seed: Zeroizing<[u8; 32]>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyKeyFile {
    format: String,
    name: String,
    signing_key: String,
    hpke_seed: String,
}

const PARTY_KEY_FORMAT: &str = "cordon-party-key/1";

impl fmt::Debug for PartyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartyKey")
            .field("name", &self.name)
            .field("signing_key", &hex::encode(self.signing_public_key()))
            .field("hpke_key", &hex::encode(self.hpke_public_key()))
            .finish_non_exhaustive()
    }
}

impl PartyKey {
    pub fn generate(name: &str) -> PartyKey {
        use rand::RngCore;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        let mut hpke_seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(hpke_seed.as_mut());
        PartyKey {
            name: name.to_string(),
            signing: SigningKey::from_bytes(&seed),
            hpke_seed,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn signing_public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The Ed25519 secret, for sealing this party's datasets (`cordon_seal::OwnerKey`).
    pub fn signing_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    pub fn hpke_key_pair(&self) -> ServiceKeyPair {
        ServiceKeyPair::derive(0, &self.hpke_seed)
    }

    pub fn hpke_public_key(&self) -> [u8; 32] {
        self.hpke_key_pair().public_key()
    }

    /// The public entry of this party in a job spec.
    pub fn job_party(&self) -> JobParty {
        JobParty {
            name: self.name.clone(),
            signing_key: self.signing_public_key(),
            hpke_key: self.hpke_public_key(),
        }
    }

    /// Signs an approval of exactly `job_hash`, valid until `expires_at` (Unix seconds).
    pub fn approve(&self, job_hash: &[u8; 32], expires_at: u64) -> Approval {
        let sig = self.signing.sign(&approval_message(job_hash, expires_at));
        Approval {
            party: self.name.clone(),
            expires_at,
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// The headers that authenticate a request to the server whose public key is `audience`
    /// ([`crate::auth`]).
    pub fn sign_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        audience: &[u8; 32],
        now: SystemTime,
    ) -> [(&'static str, String); 5] {
        crate::auth::sign_request(&self.signing, method, path, body, audience, now)
    }

    /// The key file (JSON, secrets in hex). Write it with mode 0600.
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let mut file = PartyKeyFile {
            format: PARTY_KEY_FORMAT.into(),
            name: self.name.clone(),
            signing_key: hex::encode(self.signing.to_bytes()),
            hpke_seed: hex::encode(self.hpke_seed.as_ref()),
        };
        let out = Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default() + "\n");
        file.signing_key.zeroize();
        file.hpke_seed.zeroize();
        out
    }

    pub fn from_file_contents(text: &str) -> Result<PartyKey, JobError> {
        let mut f: PartyKeyFile =
            serde_json::from_str(text).map_err(|e| JobError::KeyFile(e.to_string()))?;
        let result = (|| {
            if f.format != PARTY_KEY_FORMAT {
                return Err(JobError::KeyFile(format!(
                    "format is {:?}, expected {PARTY_KEY_FORMAT:?}",
                    f.format
                )));
            }
            let seed = secret32(&f.signing_key, "signing_key")?;
            let hpke_seed = secret32(&f.hpke_seed, "hpke_seed")?;
            Ok(PartyKey {
                name: f.name.clone(),
                signing: SigningKey::from_bytes(&seed),
                hpke_seed,
            })
        })();
        f.signing_key.zeroize();
        f.hpke_seed.zeroize();
        result
    }
}

fn secret32(hex_text: &str, field: &str) -> Result<Zeroizing<[u8; 32]>, JobError> {
    let bytes = Zeroizing::new(
        hex::decode(hex_text.trim()).map_err(|e| JobError::KeyFile(format!("{field}: {e}")))?,
    );
    let mut out = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(JobError::KeyFile(format!(
            "{field} is {} bytes, expected 32",
            bytes.len()
        )));
    }
    out.copy_from_slice(&bytes);
    Ok(out)
}

fn approval_message(job_hash: &[u8; 32], expires_at: u64) -> Vec<u8> {
    [
        APPROVAL_DOMAIN,
        job_hash.as_slice(),
        expires_at.to_be_bytes().as_slice(),
    ]
    .concat()
}

/// A party's signed approval of one job hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub party: String,
    /// Unix seconds after which the approval no longer counts, at the runtime or the KBS.
    pub expires_at: u64,
    /// Ed25519 signature (hex) over `APPROVAL_DOMAIN || job_hash || u64be(expires_at)`.
    pub signature: String,
}

impl Approval {
    /// Checks this approval against the party's key in `spec`, for `spec`'s own hash, at `now`.
    pub fn verify(
        &self,
        spec: &JobSpec,
        job_hash: &[u8; 32],
        now: SystemTime,
    ) -> Result<(), JobError> {
        let party = spec
            .party(&self.party)
            .ok_or_else(|| JobError::UnknownParty(self.party.clone()))?;
        verify_signature(
            &party.signing_key,
            &approval_message(job_hash, self.expires_at),
            &self.signature,
        )
        .map_err(|_| JobError::BadApproval {
            party: self.party.clone(),
            job_hash: hex::encode(job_hash),
        })?;
        let now = unix(now);
        if now > self.expires_at {
            return Err(JobError::ApprovalExpired {
                party: self.party.clone(),
                job_hash: hex::encode(job_hash),
                expires_at: self.expires_at,
                now,
            });
        }
        // An approval valid for longer than the cap is refused, whoever made it: a party approves
        // a run soon, not one forever.
        if self.expires_at > now.saturating_add(MAX_APPROVAL_VALIDITY.as_secs()) {
            return Err(JobError::ApprovalTooLong {
                party: self.party.clone(),
                expires_at: self.expires_at,
                max_days: MAX_APPROVAL_VALIDITY.as_secs() / 86_400,
            });
        }
        Ok(())
    }
}

fn verify_signature(key: &[u8; 32], message: &[u8], signature_hex: &str) -> Result<(), String> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| "not an Ed25519 key".to_string())?;
    let sig: [u8; 64] = hex::decode(signature_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "signature is not 64 bytes of hex".to_string())?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| "signature does not verify".to_string())
}

// ---------------------------------------------------------------------------------------------
// Status, result, receipt

/// Job states: created → approved (all parties) → running → finished or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Created,
    Approved,
    Running,
    Finished,
    Failed,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Created => "created",
            JobState::Approved => "approved",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
        })
    }
}

/// `GET /v1/jobs/{hash}`: what every party of the job may see.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_hash: String,
    pub state: JobState,
    pub spec: JobSpec,
    /// Parties whose approval is recorded.
    pub approved_by: Vec<String>,
    /// Parties whose approval is still missing.
    pub awaiting: Vec<String>,
    /// Datasets (by key id) whose sealed bytes the runtime does not hold yet.
    pub datasets_missing: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<JobMetrics>,
}

/// Evaluation metrics: aggregates only, never rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMetrics {
    pub algorithm: String,
    pub train_rows: u64,
    pub test_rows: u64,
    pub test_accuracy: f64,
    /// ROC AUC on the held-out rows; absent when they hold one class only.
    pub test_auc: Option<f64>,
    pub test_log_loss: f64,
    pub parties: Vec<PartyCounts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartyCounts {
    pub party: String,
    pub train_rows: u64,
    pub test_rows: u64,
    pub positive_rows: u64,
}

/// `GET /v1/jobs/{hash}/result`, for a recipient: the sealed model (public bytes), its DEK sealed
/// to the recipient's HPKE key, and the receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    pub job_hash: String,
    #[serde(with = "crate::b64")]
    pub sealed_model: Vec<u8>,
    pub key_id: String,
    /// The output DEK: HPKE to the recipient's key, info [`OUTPUT_INFO`], aad `job hash || key id`.
    #[serde(with = "crate::b64")]
    pub sealed_dek: Vec<u8>,
    pub receipt: Receipt,
}

/// The AAD of an output DEK sealed to a recipient.
pub fn output_aad(job_hash: &[u8; 32], key_id: &str) -> Vec<u8> {
    [job_hash.as_slice(), key_id.as_bytes()].concat()
}

/// What a receipt attests to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBody {
    pub format: String,
    #[serde(with = "crate::binding::hex_array32")]
    pub job_hash: [u8; 32],
    pub job_name: String,
    pub inputs: Vec<ReceiptInput>,
    pub output: ReceiptOutput,
    pub metrics: JobMetrics,
    pub attestation: ReceiptAttestation,
    /// Unix seconds when the job finished.
    pub finished_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptInput {
    pub party: String,
    pub key_id: String,
    #[serde(with = "crate::binding::hex_array32")]
    pub manifest_sha256: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptOutput {
    /// SHA-256 of the trained model's ONNX bytes.
    #[serde(with = "crate::binding::hex_array32")]
    pub onnx_sha256: [u8; 32],
    /// SHA-256 of the sealed model's manifest.
    #[serde(with = "crate::binding::hex_array32")]
    pub sealed_manifest_sha256: [u8; 32],
    pub key_id: String,
    pub recipients: Vec<String>,
    /// Whether the runtime registered the model's key with the KBS under the job's serving policy.
    #[serde(default)]
    pub registered_for_serving: bool,
}

/// The evidence the runtime gave the KBS for this job: it binds the runtime's keys (the signing
/// key that signs this receipt among them) to the job hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptAttestation {
    pub nonce: String,
    #[serde(with = "crate::b64")]
    pub evidence: Vec<u8>,
    /// Endorsements shipped with the evidence (input to the verifier, never trust).
    #[serde(default, skip_serializing_if = "crate::WireEndorsements::is_empty")]
    pub endorsements: crate::WireEndorsements,
    pub runtime_keys: RuntimeKeys,
}

pub const RECEIPT_FORMAT: &str = "cordon-job-receipt/1";

/// A signed job receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub body: ReceiptBody,
    /// Ed25519 signature (hex) by `body.attestation.runtime_keys.signing_public_key` over
    /// `RECEIPT_DOMAIN || JSON(body)`.
    pub signature: String,
}

impl Receipt {
    /// Signs `body` (the runtime's side).
    pub fn sign(body: ReceiptBody, key: &SigningKey) -> Receipt {
        let sig = key.sign(&receipt_message(&body));
        Receipt {
            body,
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Offline verification: the signature, the evidence (at the time the job finished, against
    /// `verifier`'s endorsements), and that the evidence binds the signing key to this job's hash.
    /// Returns the runtime's verified claims, for the caller to appraise against its policy.
    pub fn verify(&self, verifier: &Verifier) -> Result<Claims, JobError> {
        let b = &self.body;
        if b.format != RECEIPT_FORMAT {
            return Err(JobError::Receipt(format!(
                "format is {:?}, expected {RECEIPT_FORMAT:?}",
                b.format
            )));
        }
        verify_signature(
            &b.attestation.runtime_keys.signing_public_key,
            &receipt_message(b),
            &self.signature,
        )
        .map_err(|e| JobError::Receipt(format!("runtime signature: {e}")))?;
        let at = UNIX_EPOCH + Duration::from_secs(b.finished_at);
        let shipped = b
            .attestation
            .endorsements
            .decode()
            .map_err(|e| JobError::Receipt(format!("evidence: {e}")))?;
        let claims = verifier
            .verify_shipped(&b.attestation.evidence, &shipped, at)
            .map_err(|e| JobError::Receipt(format!("evidence: {e}")))?;
        let nonce = hex::decode(&b.attestation.nonce)
            .map_err(|_| JobError::Receipt("attestation nonce is not hex".into()))?;
        let expected = job_report_data(&nonce, &b.attestation.runtime_keys, &b.job_hash);
        if claims.report_data != expected {
            return Err(JobError::Receipt(format!(
                "the evidence does not bind the signing key to job {}: report_data is {}, expected {}",
                hex::encode(b.job_hash),
                hex::encode(claims.report_data),
                hex::encode(expected)
            )));
        }
        Ok(claims)
    }
}

fn receipt_message(body: &ReceiptBody) -> Vec<u8> {
    [
        RECEIPT_DOMAIN,
        serde_json::to_vec(body).unwrap_or_default().as_slice(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec(parties: &[&PartyKey]) -> JobSpec {
        JobSpec {
            name: "joint".into(),
            parties: parties.iter().map(|p| p.job_party()).collect(),
            datasets: parties
                .iter()
                .enumerate()
                .map(|(i, p)| JobDataset {
                    party: p.name().into(),
                    key_id: format!("k{i}"),
                    manifest_sha256: [i as u8; 32],
                    format: "csv".into(),
                })
                .collect(),
            schema: JobSchema {
                features: vec!["a".into(), "b".into()],
                label: "y".into(),
            },
            algorithm: serde_json::json!({"kind": "gbdt", "n_estimators": 10}),
            evaluation: Evaluation {
                test_fraction: 0.25,
                seed: 7,
            },
            outputs: Outputs {
                recipients: vec![parties[0].name().into()],
                serve: None,
            },
        }
    }

    #[test]
    fn any_change_to_the_spec_changes_the_hash_and_voids_approvals() {
        let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
        let s = spec(&[&a, &b]);
        s.validate().unwrap();
        let h = s.hash();
        let now = SystemTime::now();
        let until = unix(now) + 3600;
        let approval = b.approve(&h, until);
        approval.verify(&s, &h, now).unwrap();

        let mut changed = s.clone();
        changed.algorithm = serde_json::json!({"kind": "gbdt", "n_estimators": 11});
        assert_ne!(changed.hash(), h);
        assert!(matches!(
            approval.verify(&changed, &changed.hash(), now),
            Err(JobError::BadApproval { .. })
        ));
        let mut changed = s.clone();
        changed.outputs.recipients.push("b".into());
        assert_ne!(changed.hash(), h);
        // An approval signed by another party does not pass as b's.
        let forged = Approval {
            party: "b".into(),
            expires_at: until,
            signature: a.approve(&h, until).signature,
        };
        assert!(forged.verify(&s, &h, now).is_err());
        assert!(Approval {
            party: "c".into(),
            ..approval.clone()
        }
        .verify(&s, &h, now)
        .is_err());
        // The expiry is signed: moving it voids the signature; past it, the approval is refused.
        let stretched = Approval {
            expires_at: until + 86_400,
            ..approval.clone()
        };
        assert!(matches!(
            stretched.verify(&s, &h, now),
            Err(JobError::BadApproval { .. })
        ));
        let later = now + Duration::from_secs(3601);
        assert!(matches!(
            approval.verify(&s, &h, later),
            Err(JobError::ApprovalExpired { .. })
        ));
        // Valid for longer than the cap: refused, whatever tool made it.
        let forever = b.approve(&h, u64::MAX);
        assert!(matches!(
            forever.verify(&s, &h, now),
            Err(JobError::ApprovalTooLong { .. })
        ));
    }

    #[test]
    fn the_hash_does_not_depend_on_key_order_or_formatting() {
        let a = PartyKey::generate("a");
        let s = spec(&[&a]);
        let mut text = serde_json::to_string_pretty(&s).unwrap();
        text = text.replace(
            "\"kind\": \"gbdt\",\n    \"n_estimators\": 10",
            "\"n_estimators\": 10, \"kind\": \"gbdt\"",
        );
        let parsed: JobSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.hash(), s.hash());
        // Unknown fields are refused rather than silently left out of the hash.
        let mut v = serde_json::to_value(&s).unwrap();
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<JobSpec>(v).is_err());
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let (a, b) = (PartyKey::generate("a"), PartyKey::generate("b"));
        let base = spec(&[&a, &b]);
        type Change = Box<dyn Fn(&mut JobSpec)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|s| s.outputs.recipients = vec!["z".into()]),
                "recipient z",
            ),
            (
                Box::new(|s| s.datasets[1].party = "z".into()),
                "unknown party z",
            ),
            (
                Box::new(|s| s.datasets.truncate(1)),
                "contributes no dataset",
            ),
            (
                Box::new(|s| s.evaluation.test_fraction = 1.0),
                "test_fraction",
            ),
            (Box::new(|s| s.parties[1].name = "a".into()), "listed twice"),
            (Box::new(|s| s.datasets[0].format = "xls".into()), "format"),
        ];
        for (change, want) in cases {
            let mut s = base.clone();
            change(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn party_requests_verify_as_the_party() {
        let a = PartyKey::generate("a");
        let now = SystemTime::now();
        let headers = a.sign_request("POST", "/v1/jobs", b"{}", &[5; 32], now);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        let ok =
            crate::auth::verify_request(get, "POST", "/v1/jobs", b"{}", &[5; 32], now).unwrap();
        assert_eq!(ok.signer, a.signing_public_key());
    }

    #[test]
    fn party_key_files_round_trip_and_debug_hides_secrets() {
        let a = PartyKey::generate("hospital-a");
        let text = a.to_file_contents();
        let b = PartyKey::from_file_contents(&text).unwrap();
        assert_eq!(a.signing_public_key(), b.signing_public_key());
        assert_eq!(a.hpke_public_key(), b.hpke_public_key());
        let debug = format!("{a:?}");
        assert!(!debug.contains(&hex::encode(a.signing_secret().as_ref())));
        assert!(!debug.contains(&hex::encode(a.hpke_seed.as_ref())));
        assert!(PartyKey::from_file_contents("{}").is_err());
        let broken = text.replace("cordon-party-key/1", "cordon-party-key/2");
        assert!(PartyKey::from_file_contents(&broken).is_err());
    }

    fn receipt(hardware: &SigningKey, runtime: &SigningKey, job_hash: [u8; 32]) -> Receipt {
        let keys = RuntimeKeys {
            hpke_public_key: [1; 32],
            hpke_key_id: 0,
            signing_public_key: runtime.verifying_key().to_bytes(),
        };
        let report = cordon_attest::sim::SimReport {
            launch_measurement: [9; 48],
            workload_data: [0; 32],
            report_data: job_report_data(b"nonce", &keys, &job_hash),
            debug: false,
            signer: hardware.verifying_key().to_bytes(),
        };
        let evidence = report.to_evidence(&hardware.sign(&report.signed_bytes()).to_bytes());
        let body = ReceiptBody {
            format: RECEIPT_FORMAT.into(),
            job_hash,
            job_name: "joint".into(),
            inputs: vec![ReceiptInput {
                party: "a".into(),
                key_id: "k0".into(),
                manifest_sha256: [5; 32],
            }],
            output: ReceiptOutput {
                onnx_sha256: [6; 32],
                sealed_manifest_sha256: [7; 32],
                key_id: "out".into(),
                recipients: vec!["a".into()],
                registered_for_serving: false,
            },
            metrics: JobMetrics {
                algorithm: "gbdt".into(),
                train_rows: 300,
                test_rows: 100,
                test_accuracy: 0.97,
                test_auc: Some(0.99),
                test_log_loss: 0.1,
                parties: vec![],
            },
            attestation: ReceiptAttestation {
                nonce: hex::encode(b"nonce"),
                evidence,
                endorsements: Default::default(),
                runtime_keys: keys,
            },
            finished_at: unix(SystemTime::now()),
        };
        Receipt::sign(body, runtime)
    }

    #[test]
    fn receipts_verify_offline_and_any_tampering_fails() {
        let hardware = SigningKey::from_bytes(&[11; 32]);
        let runtime = SigningKey::from_bytes(&[12; 32]);
        let verifier = Verifier::new(cordon_attest::Endorsements {
            sim_trust_anchors: vec![hardware.verifying_key().to_bytes()],
            ..Default::default()
        });
        let good = receipt(&hardware, &runtime, [4; 32]);
        let claims = good.verify(&verifier).unwrap();
        assert_eq!(claims.launch_measurement, vec![9; 48]);
        // Through JSON and back, as a file on disk.
        let text = serde_json::to_string_pretty(&good).unwrap();
        serde_json::from_str::<Receipt>(&text)
            .unwrap()
            .verify(&verifier)
            .unwrap();

        let mut r = good.clone();
        r.body.metrics.test_accuracy = 0.99;
        assert!(r
            .verify(&verifier)
            .unwrap_err()
            .to_string()
            .contains("signature"));
        let mut r = good.clone();
        r.body.output.onnx_sha256 = [0; 32];
        assert!(r.verify(&verifier).is_err());
        // Re-signed by a key the evidence does not bind.
        let other = SigningKey::from_bytes(&[13; 32]);
        let mut body = good.body.clone();
        body.attestation.runtime_keys.signing_public_key = other.verifying_key().to_bytes();
        let err = Receipt::sign(body, &other).verify(&verifier).unwrap_err();
        assert!(err.to_string().contains("does not bind"), "{err}");
        // Evidence for another job, re-signed by the runtime: the binding fails.
        let mut body = receipt(&hardware, &runtime, [8; 32]).body;
        body.job_hash = [4; 32];
        let err = Receipt::sign(body, &runtime).verify(&verifier).unwrap_err();
        assert!(err.to_string().contains("does not bind"), "{err}");
        // Evidence from an untrusted "hardware" key.
        let rogue = receipt(&SigningKey::from_bytes(&[14; 32]), &runtime, [4; 32]);
        assert!(rogue
            .verify(&verifier)
            .unwrap_err()
            .to_string()
            .contains("evidence"));
    }

    #[test]
    fn job_report_data_differs_from_serving_report_data() {
        let keys = RuntimeKeys {
            hpke_public_key: [1; 32],
            hpke_key_id: 0,
            signing_public_key: [2; 32],
        };
        let a = job_report_data(b"n", &keys, &[3; 32]);
        assert_ne!(a, job_report_data(b"n", &keys, &[4; 32]));
        assert_ne!(a, crate::report_data(b"n", &keys, &[]));
    }
}
