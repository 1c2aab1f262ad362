//! A party's client for collaborative training: register a dataset key with the KBS, upload the
//! sealed dataset, create, approve and submit jobs, and fetch and check results and receipts.
//!
//! A [`JobClient`] is made only after the party verified the training runtime itself
//! ([`crate::connect`] with the party's own policy). Every request is signed with the party's key
//! for that runtime's attested HPKE key, with a fresh nonce, and travels inside the encrypted
//! channel, except the upload of a sealed dataset (ciphertext already), which is signed the same
//! way. Dataset keys go to the KBS sealed to its identity key, which the party pins.

use crate::{ClientError, ClientTls, VerifiedRuntime};
use cordon_attest::{appraise, PolicyDocument, Verifier};
use cordon_http::client::error_text;
use cordon_proto::job::{
    output_aad, JobResult, JobSpec, JobState, JobStatus, PartyKey, Receipt, OUTPUT_INFO,
};
use cordon_proto::kbs::{policy_context, seal_dek_for_kbs, DekPurpose, ErrorBody, RegisterKey};
use cordon_proto::runtime::InnerResponse;
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// Why a job request failed.
#[derive(Debug, thiserror::Error)]
pub enum JobClientError {
    #[error("HTTP: {0}")]
    Http(String),
    #[error(transparent)]
    Runtime(#[from] ClientError),
    /// The server's refusal, with its stable code (e.g. `not_approved`, `not_a_recipient`).
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("refusing to approve job {job}: {reason}")]
    NotMine { job: String, reason: String },
    #[error("job {job} {state} after waiting {waited_s}s{}", .error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotFinished {
        job: String,
        state: JobState,
        waited_s: u64,
        error: Option<String>,
    },
    #[error("the output key cannot be opened with this party's key: {0}")]
    OutputKey(String),
    /// The result or its receipt does not hold: what was checked, and what was found.
    #[error("job {job}: the result does not check out: {reason}")]
    BadResult { job: String, reason: String },
}

/// Registers `party`'s dataset key with the KBS (`PUT /kbs/v1/datasets/{key_id}`): released only
/// for training jobs this party approves, under `policy`. The DEK travels sealed to the KBS's
/// identity key `kbs_public_key` (pinned by the caller), bound to this key id, this party and this
/// policy; the request is signed for that KBS, with a fresh nonce.
pub async fn register_dataset_key(
    party: &PartyKey,
    kbs_url: &str,
    kbs_public_key: &[u8; 32],
    key_id: &str,
    dek: &[u8; 32],
    policy_toml: &str,
) -> Result<(), JobClientError> {
    register_dataset_key_tls(
        party,
        kbs_url,
        &ClientTls::default(),
        kbs_public_key,
        key_id,
        dek,
        policy_toml,
    )
    .await
}

/// [`register_dataset_key`], verifying an `https://` KBS's TLS certificate with `tls`.
pub async fn register_dataset_key_tls(
    party: &PartyKey,
    kbs_url: &str,
    tls: &ClientTls,
    kbs_public_key: &[u8; 32],
    key_id: &str,
    dek: &[u8; 32],
    policy_toml: &str,
) -> Result<(), JobClientError> {
    let sealed_dek = seal_dek_for_kbs(
        kbs_public_key,
        DekPurpose::DatasetKey,
        key_id,
        &party.signing_public_key(),
        &policy_context(policy_toml),
        dek,
    )
    .map_err(|e| JobClientError::Malformed(format!("sealing the key to the KBS: {e}")))?;
    let body = serde_json::to_vec(&RegisterKey {
        sealed_dek,
        policy: policy_toml.to_string(),
    })
    .map_err(|e| JobClientError::Malformed(e.to_string()))?;
    let path = format!("/kbs/v1/datasets/{key_id}");
    let http = tls
        .client(Duration::from_secs(60))
        .map_err(|e| JobClientError::Http(error_text(&e)))?;
    let mut req = http
        .put(format!("{}{path}", kbs_url.trim_end_matches('/')))
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    for (name, value) in party.sign_request("PUT", &path, &body, kbs_public_key, SystemTime::now())
    {
        req = req.header(name, value);
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| JobClientError::Http(error_text(&e)))?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let body: Option<ErrorBody> = resp.json().await.ok();
        return Err(JobClientError::Refused {
            status,
            code: body.as_ref().map(|b| b.code.clone()).unwrap_or_default(),
            message: body.map(|b| b.error).unwrap_or_default(),
        });
    }
    Ok(())
}

/// A party talking to a training runtime it verified.
pub struct JobClient {
    runtime: VerifiedRuntime,
    party: PartyKey,
    policy: PolicyDocument,
}

/// A job's output, checked: the receipt verifies and its runtime passes the party's policy, it is
/// the receipt of the job asked for, over that job's datasets, from the runtime the party verified,
/// and the sealed model is the one it names.
#[derive(Debug)]
pub struct CheckedResult {
    pub result: JobResult,
    /// The model's DEK, opened with this party's HPKE key.
    pub dek: Zeroizing<[u8; 32]>,
    /// The runtime's claims, from the receipt's evidence.
    pub claims: cordon_attest::Claims,
}

impl JobClient {
    /// Verifies the training runtime at `runtime_url` with `policy` (the party's own policy and
    /// endorsements, as `cordon infer --policy` reads them), at `now`; nothing is sent before.
    pub async fn connect(
        runtime_url: &str,
        party: PartyKey,
        policy: PolicyDocument,
        now: SystemTime,
    ) -> Result<JobClient, JobClientError> {
        Self::connect_tls(runtime_url, party, policy, &ClientTls::default(), now).await
    }

    /// [`JobClient::connect`], verifying an `https://` runtime's TLS certificate with `tls`.
    pub async fn connect_tls(
        runtime_url: &str,
        party: PartyKey,
        policy: PolicyDocument,
        tls: &ClientTls,
        now: SystemTime,
    ) -> Result<JobClient, JobClientError> {
        let runtime = crate::connect_tls(runtime_url, &policy, tls, now).await?;
        Ok(JobClient {
            runtime,
            party,
            policy,
        })
    }

    pub fn party(&self) -> &PartyKey {
        &self.party
    }

    /// The runtime as verified: its claims and pinned keys.
    pub fn runtime(&self) -> &VerifiedRuntime {
        &self.runtime
    }

    /// One signed request inside the encrypted channel; a refusal becomes [`JobClientError::Refused`].
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<serde_json::Value, JobClientError> {
        let headers = self
            .party
            .sign_request(
                method,
                path,
                &body,
                &self.runtime.keys().hpke_public_key,
                SystemTime::now(),
            )
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let resp = self
            .runtime
            .raw_request(method, path, headers, body)
            .await?;
        refused_or_body(resp)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, JobClientError> {
        let v = self.call(method, path, body).await?;
        serde_json::from_value(v).map_err(|e| JobClientError::Malformed(e.to_string()))
    }

    /// Uploads a sealed dataset (public bytes) to the runtime; returns its manifest SHA-256 (hex).
    /// Plain HTTP, signed for the verified runtime's key.
    pub async fn upload_dataset(&self, sealed: Vec<u8>) -> Result<String, JobClientError> {
        let path = "/v1/datasets";
        let mut req = self
            .runtime
            .http()
            .put(format!("{}{path}", self.runtime.url()))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
        for (name, value) in self.party.sign_request(
            "PUT",
            path,
            &sealed,
            &self.runtime.keys().hpke_public_key,
            SystemTime::now(),
        ) {
            req = req.header(name, value);
        }
        // Datasets are large: as long as the runtime gives an upload (not the client's 30 s).
        let resp = req
            .timeout(Duration::from_secs(600))
            .body(sealed)
            .send()
            .await
            .map_err(|e| JobClientError::Http(error_text(&e)))?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let body = refused_or_body(InnerResponse::json(status, body))?;
        body["manifest_sha256"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| JobClientError::Malformed("no manifest_sha256".into()))
    }

    pub async fn create(&self, spec: &JobSpec) -> Result<JobStatus, JobClientError> {
        let body =
            serde_json::to_vec(spec).map_err(|e| JobClientError::Malformed(e.to_string()))?;
        self.json("POST", "/v1/jobs", body).await
    }

    pub async fn status(&self, job_hash: &str) -> Result<JobStatus, JobClientError> {
        self.json("GET", &format!("/v1/jobs/{job_hash}"), vec![])
            .await
    }

    /// Approves `spec` (the spec this party agreed to, from its own copy), valid until
    /// `expires_at` (Unix seconds), after checking that it hashes to `job_hash` and that this
    /// party's own entry in it is its own: its signing key and the HPKE key outputs would be
    /// sealed to. A job that names this party's signing key with someone else's HPKE key (to have
    /// the output sealed to them) is refused. The runtime holds jobs by the hash of their spec, so
    /// the job this approval reaches is this spec.
    pub async fn approve(
        &self,
        job_hash: &str,
        spec: &JobSpec,
        expires_at: u64,
    ) -> Result<JobStatus, JobClientError> {
        check_own_entry(job_hash, spec, &self.party)?;
        let job_hash = hex::encode(spec.hash());
        let approval = self.party.approve(&spec.hash(), expires_at);
        let body =
            serde_json::to_vec(&approval).map_err(|e| JobClientError::Malformed(e.to_string()))?;
        self.json("POST", &format!("/v1/jobs/{job_hash}/approvals"), body)
            .await
    }

    pub async fn submit(&self, job_hash: &str) -> Result<JobStatus, JobClientError> {
        self.json("POST", &format!("/v1/jobs/{job_hash}/submit"), vec![])
            .await
    }

    /// Polls until the job is finished (or failed, or `timeout` passes).
    pub async fn wait(
        &self,
        job_hash: &str,
        timeout: Duration,
    ) -> Result<JobStatus, JobClientError> {
        let start = Instant::now();
        loop {
            let status = self.status(job_hash).await?;
            match status.state {
                JobState::Finished => return Ok(status),
                JobState::Failed => {
                    return Err(JobClientError::NotFinished {
                        job: job_hash.into(),
                        state: status.state,
                        waited_s: start.elapsed().as_secs(),
                        error: status.error,
                    })
                }
                _ if start.elapsed() > timeout => {
                    return Err(JobClientError::NotFinished {
                        job: job_hash.into(),
                        state: status.state,
                        waited_s: start.elapsed().as_secs(),
                        error: None,
                    })
                }
                // Each poll is a one-shot request, which the runtime's replay memory holds
                // until its time stamp is stale: poll gently.
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The sealed model and its DEK sealed to this party (a recipient), unchecked. Use
    /// [`JobClient::checked_result`] unless you check the receipt yourself.
    pub async fn result(&self, job_hash: &str) -> Result<JobResult, JobClientError> {
        self.json("GET", &format!("/v1/jobs/{job_hash}/result"), vec![])
            .await
    }

    /// The result of job `job_hash`, checked before anything is believed:
    /// - the receipt's signature, its evidence (with the party's endorsements, at the time it
    ///   finished) and the binding of its signing key to the job, then the party's policy on the
    ///   runtime's claims;
    /// - the receipt is for `job_hash` (the hash the party asked for, not the one the answer names),
    ///   and its inputs are exactly the spec's datasets, its recipients the spec's;
    /// - it was signed by the runtime this party verified (same keys);
    /// - the sealed model is the one the receipt names, and the key opens with this party's key.
    pub async fn checked_result(&self, job_hash: &str) -> Result<CheckedResult, JobClientError> {
        let status = self.status(job_hash).await?;
        let result = self.result(job_hash).await?;
        check_result(
            &self.party,
            job_hash,
            &status.spec,
            result,
            &self.policy,
            self.runtime.keys(),
        )
    }

    /// The sealed model of a finished job (ciphertext; every party may fetch it).
    pub async fn sealed_model(&self, job_hash: &str) -> Result<Vec<u8>, JobClientError> {
        use base64::Engine as _;
        let v = self
            .call("GET", &format!("/v1/jobs/{job_hash}/model"), vec![])
            .await?;
        let text = v["sealed_model"]
            .as_str()
            .ok_or_else(|| JobClientError::Malformed("no sealed_model".into()))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| JobClientError::Malformed(format!("sealed_model: {e}")))
    }

    pub async fn receipt(&self, job_hash: &str) -> Result<Receipt, JobClientError> {
        self.json("GET", &format!("/v1/jobs/{job_hash}/receipt"), vec![])
            .await
    }
}

/// The checks of [`JobClient::checked_result`], on a result already fetched: `spec` is the job's
/// spec (as the party approved it), `runtime_keys` those of the runtime the party verified.
pub fn check_result(
    party: &PartyKey,
    job_hash: &str,
    spec: &JobSpec,
    result: JobResult,
    policy: &PolicyDocument,
    runtime_keys: &cordon_proto::RuntimeKeys,
) -> Result<CheckedResult, JobClientError> {
    let bad = |reason: String| JobClientError::BadResult {
        job: job_hash.to_string(),
        reason,
    };
    let wanted: [u8; 32] = hex::decode(job_hash.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the job hash is not 32 bytes of hex".into()))?;
    if spec.hash() != wanted {
        return Err(bad(format!(
            "the spec hashes to {}",
            hex::encode(spec.hash())
        )));
    }
    let receipt = &result.receipt;
    let claims = verify_receipt(receipt, policy).map_err(bad)?;
    let body = &receipt.body;
    if body.job_hash != wanted {
        return Err(bad(format!(
            "the receipt is for job {}",
            hex::encode(body.job_hash)
        )));
    }
    let expected_inputs: Vec<_> = spec
        .datasets
        .iter()
        .map(|d| (d.party.as_str(), d.key_id.as_str(), d.manifest_sha256))
        .collect();
    let found_inputs: Vec<_> = body
        .inputs
        .iter()
        .map(|i| (i.party.as_str(), i.key_id.as_str(), i.manifest_sha256))
        .collect();
    if expected_inputs != found_inputs {
        return Err(bad(format!(
            "the receipt's inputs {found_inputs:?} are not the spec's datasets {expected_inputs:?}"
        )));
    }
    if body.output.recipients != spec.outputs.recipients {
        return Err(bad(format!(
            "the receipt names recipients {:?}, the spec {:?}",
            body.output.recipients, spec.outputs.recipients
        )));
    }
    if &body.attestation.runtime_keys != runtime_keys {
        return Err(bad(
            "the receipt was signed by another runtime than the one this party verified".into(),
        ));
    }
    if result.key_id != body.output.key_id || !result.job_hash.eq_ignore_ascii_case(job_hash.trim())
    {
        return Err(bad(
            "the answer's key id or job hash differs from the receipt's".into(),
        ));
    }
    let header = cordon_seal::read_header(&mut &result.sealed_model[..])
        .map_err(|e| bad(format!("sealed model: {e}")))?;
    if header.digest() != body.output.sealed_manifest_sha256 {
        return Err(bad(
            "the sealed model is not the one the receipt names".into()
        ));
    }
    if header.manifest.key_id != result.key_id {
        return Err(bad(format!(
            "the sealed model's key id is {}, the receipt's {}",
            header.manifest.key_id, result.key_id
        )));
    }
    let dek = open_output_key(party, &wanted, &result)?;
    Ok(CheckedResult {
        result,
        dek,
        claims,
    })
}

/// Opens the output DEK of `result` (for job `job_hash`) with `party`'s HPKE key.
fn open_output_key(
    party: &PartyKey,
    job_hash: &[u8; 32],
    result: &JobResult,
) -> Result<Zeroizing<[u8; 32]>, JobClientError> {
    let dek = party
        .hpke_key_pair()
        .open_sealed(
            OUTPUT_INFO,
            &output_aad(job_hash, &result.key_id),
            &result.sealed_dek,
        )
        .map_err(|e| JobClientError::OutputKey(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    if dek.len() != 32 {
        return Err(JobClientError::OutputKey(format!(
            "key is {} bytes, expected 32",
            dek.len()
        )));
    }
    out.copy_from_slice(&dek);
    Ok(out)
}

/// A 2xx inner response's body, or the refusal it carries.
fn refused_or_body(resp: InnerResponse) -> Result<serde_json::Value, JobClientError> {
    if (200..300).contains(&resp.status) {
        return Ok(resp.body);
    }
    Err(JobClientError::Refused {
        status: resp.status,
        code: resp.body["code"].as_str().unwrap_or("").to_string(),
        message: resp.body["error"].as_str().unwrap_or("").to_string(),
    })
}

/// Checks, before a party approves `spec`, that it hashes to `job_hash` and that the party's own
/// entry is its own: a party of that name exists, with this party's signing key and HPKE key, and
/// it contributes a dataset.
pub fn check_own_entry(
    job_hash: &str,
    spec: &JobSpec,
    party: &PartyKey,
) -> Result<(), JobClientError> {
    let not_mine = |reason: String| JobClientError::NotMine {
        job: job_hash.to_string(),
        reason,
    };
    let found = hex::encode(spec.hash());
    if !found.eq_ignore_ascii_case(job_hash.trim()) {
        return Err(not_mine(format!(
            "the spec given hashes to {found}, not to the job hash given"
        )));
    }
    spec.validate().map_err(|e| not_mine(e.to_string()))?;
    let Some(me) = spec.party(party.name()) else {
        return Err(not_mine(format!(
            "the spec names no party {:?}",
            party.name()
        )));
    };
    if me.signing_key != party.signing_public_key() {
        return Err(not_mine(format!(
            "party {:?} in the spec has signing key {}, this party's is {}",
            me.name,
            hex::encode(me.signing_key),
            hex::encode(party.signing_public_key())
        )));
    }
    if me.hpke_key != party.hpke_public_key() {
        return Err(not_mine(format!(
            "party {:?} in the spec has HPKE key {}, this party's is {}: outputs would be sealed \
             to someone else",
            me.name,
            hex::encode(me.hpke_key),
            hex::encode(party.hpke_public_key())
        )));
    }
    Ok(())
}

/// What a party approves, in words: every party with its keys, the datasets (this party's marked),
/// the recipients of the output, the serving policy, the algorithm and hyper-parameters, the
/// evaluation. Printed before signing.
pub fn approval_summary(spec: &JobSpec, party: &PartyKey) -> String {
    let mut out = format!("job {} ({:?})\n", hex::encode(spec.hash()), spec.name);
    out.push_str("parties:\n");
    for p in &spec.parties {
        out.push_str(&format!(
            "  {}{}: signing key {}, HPKE key {}\n",
            p.name,
            if p.name == party.name() { " (you)" } else { "" },
            hex::encode(p.signing_key),
            hex::encode(p.hpke_key)
        ));
    }
    out.push_str("datasets:\n");
    for d in &spec.datasets {
        out.push_str(&format!(
            "  {}'s{}: key {}, sealed manifest {}, {}\n",
            d.party,
            if d.party == party.name() {
                " (yours)"
            } else {
                ""
            },
            d.key_id,
            hex::encode(d.manifest_sha256),
            d.format
        ));
    }
    out.push_str(&format!(
        "features: {} columns; label: {}\n",
        spec.schema.features.len(),
        spec.schema.label
    ));
    out.push_str(&format!("algorithm: {}\n", spec.algorithm));
    out.push_str(&format!(
        "evaluation: {} of each dataset held out, seed {}\n",
        spec.evaluation.test_fraction, spec.evaluation.seed
    ));
    out.push_str(&format!(
        "output recipients (the model's key is sealed to their HPKE keys): {}\n",
        if spec.outputs.recipients.is_empty() {
            "none".to_string()
        } else {
            spec.outputs.recipients.join(", ")
        }
    ));
    match &spec.outputs.serve {
        None => out.push_str("serving: not deployed (no key goes to the KBS)\n"),
        Some(serve) => {
            out.push_str(&format!(
                "serving: the model's key goes to the KBS under this release policy:\n{}\n",
                serve
                    .policy
                    .lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
            // What the policy loosens, said before the party signs (validate parsed it already).
            if let Ok(policy) = cordon_attest::Policy::from_toml(&serve.policy) {
                for w in policy.warnings() {
                    out.push_str(&format!("  WARNING (serving policy): {w}\n"));
                }
            }
        }
    }
    out
}

/// Checks a receipt offline and appraises the runtime's claims with `policy`.
pub fn verify_receipt(
    receipt: &Receipt,
    policy: &PolicyDocument,
) -> Result<cordon_attest::Claims, String> {
    let Some(endorsements) = policy.verification_endorsements() else {
        return Err(
            "the policy accepts `sim` and its file has no [endorsements] section with \
                    sim_trust_anchors: cannot verify sim evidence"
                .into(),
        );
    };
    let claims = receipt
        .verify(&Verifier::new(endorsements))
        .map_err(|e| e.to_string())?;
    let verdict = appraise(&claims, &policy.policy);
    if !verdict.is_accepted() {
        return Err(format!(
            "the runtime that signed the receipt is rejected by the policy: {}",
            verdict.reasons()
        ));
    }
    Ok(claims)
}
