//! A party's client for collaborative training: register a dataset key with the KBS, upload the
//! sealed dataset, create, approve and submit jobs, and fetch results and receipts. Every request
//! is signed with the party's key.

use cordon_proto::job::{
    output_aad, JobResult, JobSpec, JobState, JobStatus, PartyKey, Receipt, OUTPUT_INFO,
};
use cordon_proto::kbs::RegisterKey;
use std::time::{Duration, Instant, SystemTime};
use zeroize::Zeroizing;

/// Why a job request failed.
#[derive(Debug, thiserror::Error)]
pub enum JobClientError {
    #[error("HTTP: {0}")]
    Http(String),
    /// The server's refusal, with its stable code (e.g. `not_approved`, `not_a_recipient`).
    #[error("{status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("the runtime's copy of job {expected} hashes to {found}: refusing to approve it")]
    SpecMismatch { expected: String, found: String },
    #[error("job {job} {state} after waiting {waited_s}s{}", .error.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotFinished {
        job: String,
        state: JobState,
        waited_s: u64,
        error: Option<String>,
    },
    #[error("the output key cannot be opened with this party's key: {0}")]
    OutputKey(String),
}

/// A party talking to a training runtime (and its KBS).
pub struct JobClient {
    http: reqwest::Client,
    runtime: String,
    party: PartyKey,
}

impl JobClient {
    pub fn new(runtime_url: &str, party: PartyKey) -> JobClient {
        JobClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            runtime: runtime_url.trim_end_matches('/').to_string(),
            party,
        }
    }

    pub fn party(&self) -> &PartyKey {
        &self.party
    }

    async fn send(
        &self,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<reqwest::Response, JobClientError> {
        let mut req = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header(reqwest::header::CONTENT_TYPE, content_type);
        for (name, value) in
            self.party
                .sign_request(method.as_str(), path, &body, SystemTime::now())
        {
            req = req.header(name, value);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| JobClientError::Http(e.to_string()))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        Err(JobClientError::Refused {
            status,
            code: body["code"].as_str().unwrap_or("").to_string(),
            message: body["error"].as_str().unwrap_or("").to_string(),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, JobClientError> {
        self.send(&self.runtime, method, path, body, "application/json")
            .await?
            .json()
            .await
            .map_err(|e| JobClientError::Malformed(e.to_string()))
    }

    /// Registers this party's dataset key with the KBS (`PUT /kbs/v1/datasets/{key_id}`): released
    /// only for training jobs this party approves, under `policy`.
    pub async fn register_dataset_key(
        &self,
        kbs_url: &str,
        key_id: &str,
        dek: &[u8; 32],
        policy_toml: &str,
    ) -> Result<(), JobClientError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&RegisterKey {
                dek: dek.to_vec(),
                policy: policy_toml.to_string(),
            })
            .map_err(|e| JobClientError::Malformed(e.to_string()))?,
        );
        self.send(
            kbs_url.trim_end_matches('/'),
            reqwest::Method::PUT,
            &format!("/kbs/v1/datasets/{key_id}"),
            body.to_vec(),
            "application/json",
        )
        .await?;
        Ok(())
    }

    /// Uploads a sealed dataset (public bytes) to the runtime; returns its manifest SHA-256 (hex).
    pub async fn upload_dataset(&self, sealed: Vec<u8>) -> Result<String, JobClientError> {
        let v: serde_json::Value = self
            .send(
                &self.runtime,
                reqwest::Method::PUT,
                "/v1/datasets",
                sealed,
                "application/octet-stream",
            )
            .await?
            .json()
            .await
            .map_err(|e| JobClientError::Malformed(e.to_string()))?;
        v["manifest_sha256"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| JobClientError::Malformed("no manifest_sha256".into()))
    }

    pub async fn create(&self, spec: &JobSpec) -> Result<JobStatus, JobClientError> {
        let body =
            serde_json::to_vec(spec).map_err(|e| JobClientError::Malformed(e.to_string()))?;
        self.json(reqwest::Method::POST, "/v1/jobs", body).await
    }

    pub async fn status(&self, job_hash: &str) -> Result<JobStatus, JobClientError> {
        self.json(
            reqwest::Method::GET,
            &format!("/v1/jobs/{job_hash}"),
            vec![],
        )
        .await
    }

    /// Fetches the job's spec, checks it hashes to `job_hash` (the hash this party decided to
    /// approve) and, when `expected` is given, that it is exactly that spec; then signs.
    pub async fn approve(
        &self,
        job_hash: &str,
        expected: Option<&JobSpec>,
    ) -> Result<JobStatus, JobClientError> {
        let status = self.status(job_hash).await?;
        let found = hex::encode(status.spec.hash());
        if !found.eq_ignore_ascii_case(job_hash) {
            return Err(JobClientError::SpecMismatch {
                expected: job_hash.into(),
                found,
            });
        }
        if let Some(e) = expected {
            if e.hash() != status.spec.hash() {
                return Err(JobClientError::SpecMismatch {
                    expected: hex::encode(e.hash()),
                    found,
                });
            }
        }
        let approval = self.party.approve(&status.spec.hash());
        let body =
            serde_json::to_vec(&approval).map_err(|e| JobClientError::Malformed(e.to_string()))?;
        self.json(
            reqwest::Method::POST,
            &format!("/v1/jobs/{job_hash}/approvals"),
            body,
        )
        .await
    }

    pub async fn submit(&self, job_hash: &str) -> Result<JobStatus, JobClientError> {
        self.json(
            reqwest::Method::POST,
            &format!("/v1/jobs/{job_hash}/submit"),
            vec![],
        )
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
                _ => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
    }

    /// The sealed model and its DEK sealed to this party (a recipient).
    pub async fn result(&self, job_hash: &str) -> Result<JobResult, JobClientError> {
        self.json(
            reqwest::Method::GET,
            &format!("/v1/jobs/{job_hash}/result"),
            vec![],
        )
        .await
    }

    /// The sealed model of a finished job (ciphertext; every party may fetch it).
    pub async fn sealed_model(&self, job_hash: &str) -> Result<Vec<u8>, JobClientError> {
        let resp = self
            .send(
                &self.runtime,
                reqwest::Method::GET,
                &format!("/v1/jobs/{job_hash}/model"),
                vec![],
                "application/octet-stream",
            )
            .await?;
        Ok(resp
            .bytes()
            .await
            .map_err(|e| JobClientError::Malformed(e.to_string()))?
            .to_vec())
    }

    pub async fn receipt(&self, job_hash: &str) -> Result<Receipt, JobClientError> {
        self.json(
            reqwest::Method::GET,
            &format!("/v1/jobs/{job_hash}/receipt"),
            vec![],
        )
        .await
    }

    /// Opens the output DEK of `result` with this party's HPKE key.
    pub fn open_output_key(
        &self,
        result: &JobResult,
    ) -> Result<Zeroizing<[u8; 32]>, JobClientError> {
        let hash: [u8; 32] = hex::decode(&result.job_hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| JobClientError::OutputKey("job hash is not 32 bytes of hex".into()))?;
        let dek = self
            .party
            .hpke_key_pair()
            .open_sealed(
                OUTPUT_INFO,
                &output_aad(&hash, &result.key_id),
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
}
