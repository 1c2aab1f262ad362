//! `cordon verify-response`: a signed chat completion checked offline.

use crate::util;
use anyhow::{Context, Result};
use cordon_proto::runtime::AttestationResponse;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(clap::Args)]
pub struct VerifyResponseArgs {
    /// The runtime's attestation, as `GET /v1/attestation?nonce=HEX` answered it (JSON).
    #[arg(long)]
    attestation: PathBuf,
    /// The nonce (64 hex digits) that attestation was asked for.
    #[arg(long)]
    nonce: String,
    /// Client policy (TOML): what the runtime must prove; for `sim`, an [endorsements] section
    /// with its trust anchors.
    #[arg(long)]
    policy: PathBuf,
    /// The request body, exactly as it was sent (JSON).
    #[arg(long)]
    request: PathBuf,
    /// The answer's body, exactly as received: a completion's JSON, or a streamed completion's
    /// whole event stream (its last line carries the signature).
    #[arg(long)]
    response: PathBuf,
    /// A whole completion's signature: the `Cordon-Signature` header of its answer (hex).
    #[arg(long)]
    signature: Option<String>,
}

/// How an error event of a stream begins.
const ERROR_EVENT: &[u8] = b"data: {\"error\":";

pub fn run(a: VerifyResponseArgs) -> Result<()> {
    let doc = util::load_policy_doc(&a.policy, "client policy")?;
    let att: AttestationResponse = serde_json::from_slice(
        &std::fs::read(&a.attestation)
            .with_context(|| format!("reading {}", a.attestation.display()))?,
    )
    .with_context(|| format!("{} is not an attestation answer", a.attestation.display()))?;
    let nonce: [u8; 32] = hex::decode(a.nonce.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("--nonce must be 64 hex digits")?;
    let request =
        std::fs::read(&a.request).with_context(|| format!("reading {}", a.request.display()))?;
    let response =
        std::fs::read(&a.response).with_context(|| format!("reading {}", a.response.display()))?;
    let claims = cordon_client::verify_signed_completion(
        &att,
        &nonce,
        &doc,
        SystemTime::now(),
        &request,
        &response,
        a.signature.as_deref(),
    )?;
    println!(
        "response valid: signed by runtime key {}… over this request and this answer, bound by {} evidence (measurement {}…{}), accepted by the policy",
        util::short_hex(&att.runtime_keys.signing_public_key),
        claims.platform,
        util::short_hex(&claims.launch_measurement),
        util::provenance(&claims)
    );
    // The signature covers the model's name inside the answer; which weights served that name is
    // what the attestation bound.
    for m in &att.models {
        println!(
            "model {} version {}: sealed manifest sha256 {}",
            m.name,
            m.version,
            hex::encode(m.manifest_sha256)
        );
    }
    if a.signature.is_none()
        && response
            .windows(ERROR_EVENT.len())
            .any(|w| w == ERROR_EVENT)
    {
        println!(
            "note: the stream ended with an error event: the answer is signed as the runtime sent \
             it, and it is incomplete"
        );
    }
    Ok(())
}
