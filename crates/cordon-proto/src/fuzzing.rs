//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test that CI runs
//! (`tests/fuzz_corpus.rs`). Each must return normally for any input.
//!
//! Every key here is fixed and public, so that the seeds (real envelopes, sessions, signed requests
//! and receipts made with these keys by `tests/fuzz_corpus.rs`'s `write_seeds`) authenticate and
//! mutations reach the code behind each check. Never use them for anything but fuzzing.

use crate::channel::{ClientResponseContext, ServerResponseContext, ENC_LEN};
use crate::job::{self, Approval, JobResult, JobSpec, JobStatus, PartyKey, Receipt, OUTPUT_INFO};
use crate::kbs::{
    dek_upload_aad, policy_context, AttestRequest, AttestResponse, AuditEvent, Challenge,
    DekPurpose, ErrorBody, RegisterKey, UPLOAD_INFO,
};
use crate::runtime::{AttestationResponse, InnerRequest, InnerResponse};
use crate::session::{SessionGrant, SessionId, SessionKeys, SessionMessage};
use crate::{oip, report_data, RuntimeKeys, ServiceKeyPair};
use cordon_attest::{Endorsements, Policy, Verifier};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seed of the runtime's HPKE key (key id 0).
pub const SERVICE_SEED: [u8; 32] = [7; 32];
/// Secret of the simulated hardware key trusted by [`verifier`].
pub const SIM_HARDWARE_SECRET: [u8; 32] = [8; 32];
/// Secret of the runtime's signing key (it signs receipts).
pub const RUNTIME_SIGNING_SECRET: [u8; 32] = [10; 32];
/// The AAD of the DEK the seeds seal with [`crate::channel::seal_to`] (the KBS uses the key id).
pub const RELEASE_AAD: &[u8] = b"fuzz-key";
/// The fixed response context: HPKE export secret and encapsulated key.
pub const RESPONSE_SECRET: [u8; 32] = [11; 32];
pub const RESPONSE_ENC: [u8; ENC_LEN] = [12; ENC_LEN];
/// The session id the emulated runtime grants.
pub const SESSION_ID: SessionId = [0x5a; 16];
/// Unix seconds the request checks run at (and the seeds were signed at).
pub const NOW: u64 = 1_790_000_000;
/// The nonce an attestation response must bind.
pub const CLIENT_NONCE: [u8; 32] = [13; 32];
/// The runtime's contribution to the keys of the seeds' sessions (real runtimes draw one per setup).
pub const SERVER_NONCE: [u8; 32] = [14; 32];
/// Seed of the KBS's HPKE identity key, to which the seeds' registered DEKs are sealed.
pub const KBS_SEED: [u8; 32] = [15; 32];
/// The administrator's key seed (its admin token), which signs the seeds' key registrations.
pub const ADMIN_SECRET: [u8; 32] = [16; 32];
/// The key id of the seeds' registered DEK.
pub const REGISTER_KEY_ID: &str = "fuzz-key";

/// The KBS's identity key pair.
pub fn kbs_key() -> &'static ServiceKeyPair {
    static KEY: OnceLock<ServiceKeyPair> = OnceLock::new();
    KEY.get_or_init(|| ServiceKeyPair::derive(0, &KBS_SEED))
}

/// The administrator's public key.
pub fn admin_public_key() -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&ADMIN_SECRET)
        .verifying_key()
        .to_bytes()
}

/// Opens a session setup as the runtime does, with [`SERVER_NONCE`] as its contribution, so the
/// seeds' session messages authenticate (seed generation and the session target).
pub fn accept_session_fixed(
    setup: &[u8],
) -> Result<(zeroize::Zeroizing<Vec<u8>>, SessionKeys), crate::ChannelError> {
    service_key().accept_session_with_nonce(setup, &SERVER_NONCE)
}

/// The runtime's HPKE key pair.
pub fn service_key() -> &'static ServiceKeyPair {
    static KEY: OnceLock<ServiceKeyPair> = OnceLock::new();
    KEY.get_or_init(|| ServiceKeyPair::derive(0, &SERVICE_SEED))
}

/// A party key with fixed secrets (`n` distinguishes parties), in the key file format the CLI
/// writes, so that the same text is also a seed of the key file parser.
pub fn party_key_file(name: &str, n: u8) -> String {
    format!(
        "{{\n  \"format\": \"cordon-party-key/1\",\n  \"name\": \"{name}\",\n  \"signing_key\": \"{}\",\n  \"hpke_seed\": \"{}\"\n}}\n",
        hex::encode([n; 32]),
        hex::encode([n.wrapping_add(100); 32])
    )
}

/// Fixed parties `alice` (secret 1) and `bob` (secret 2): what approvals and requests are checked
/// against. `None` only if the key file format changed, which the replay test catches.
pub fn parties() -> Option<&'static [PartyKey; 2]> {
    static PARTIES: OnceLock<Option<[PartyKey; 2]>> = OnceLock::new();
    PARTIES
        .get_or_init(|| {
            let a = PartyKey::from_file_contents(&party_key_file("alice", 1)).ok()?;
            let b = PartyKey::from_file_contents(&party_key_file("bob", 2)).ok()?;
            Some([a, b])
        })
        .as_ref()
}

/// A verifier trusting the fixed simulated hardware key.
pub fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let anchor = ed25519_dalek::SigningKey::from_bytes(&SIM_HARDWARE_SECRET)
            .verifying_key()
            .to_bytes();
        Verifier::new(Endorsements {
            sim_trust_anchors: vec![anchor],
            ..Endorsements::default()
        })
    })
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// The job checks the runtime and the KBS make of a spec and its approvals.
fn check_job(spec: &JobSpec, approvals: &[Approval]) -> Option<[u8; 32]> {
    let _ = spec.canonical_bytes();
    let hash = spec.hash();
    let valid = spec.validate().is_ok();
    for approval in approvals {
        let _ = approval.verify(spec, &hash, now());
    }
    valid.then_some(hash)
}

/// Key broker request and response bodies (`/kbs/v1/...`), and what the broker and the runtime do
/// next with each: report_data recomputation, job checks, evidence verification, the release
/// policy, and opening released keys.
pub fn kbs_requests(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<AttestRequest>(data) {
        if let Ok(nonce) = hex::decode(&req.nonce) {
            // What the KBS does first with a training job: open it with its identity key.
            let job = req.sealed_job.as_ref().map(|sealed| {
                kbs_key()
                    .open_sealed(crate::kbs::JOB_INFO, req.nonce.as_bytes(), &sealed.sealed)
                    .ok()
                    .and_then(|json| serde_json::from_slice::<crate::kbs::JobRelease>(&json).ok())
            });
            let expected = match &job {
                Some(Some(release)) => check_job(&release.spec, &release.approvals)
                    .map(|hash| job::job_report_data(&nonce, &req.runtime_keys, &hash)),
                Some(None) => None,
                None => Some(report_data(&nonce, &req.runtime_keys, &req.models)),
            };
            if let (Some(expected), Ok(claims)) =
                (expected, verifier().verify(&req.evidence, now()))
            {
                let _ = claims.report_data == expected;
            }
        }
        let _ = req.key_ids.iter().map(String::len).sum::<usize>();
    }
    if let Ok(req) = serde_json::from_slice::<RegisterKey>(data) {
        let _ = format!("{req:?}");
        if let Ok(policy) = Policy::from_toml(&req.policy) {
            let _ = policy.to_toml();
            // What the KBS does next: open the DEK sealed to it for this slot and policy.
            let aad = dek_upload_aad(
                DekPurpose::AdminKey,
                REGISTER_KEY_ID,
                &admin_public_key(),
                &policy_context(&req.policy),
            );
            let _ = kbs_key().open_sealed(UPLOAD_INFO, &aad, &req.sealed_dek.sealed);
        }
    }
    if let Ok(resp) = serde_json::from_slice::<AttestResponse>(data) {
        for released in &resp.released {
            let _ = service_key().open_sealed(
                crate::kbs::RELEASE_INFO,
                released.key_id.as_bytes(),
                &released.sealed_dek,
            );
        }
    }
    let _ = serde_json::from_slice::<Challenge>(data).map(|c| hex::decode(c.nonce));
    let _ = serde_json::from_slice::<ErrorBody>(data);
    let _ = serde_json::from_slice::<Vec<AuditEvent>>(data);
}

/// The runtime's request and response bodies: the inner request of the encrypted channel, OIP
/// inference, attestation responses (as a client checks them), the job board's bodies (spec,
/// approval, status, result, receipt), party key files and party-signed request headers.
pub fn runtime_requests(data: &[u8]) {
    if let Ok(inner) = InnerRequest::from_plaintext(data) {
        if let Some(body) = inner.body {
            let _ = serde_json::from_value::<oip::InferRequest>(body);
        }
    }
    let _ = serde_json::from_slice::<oip::InferRequest>(data);
    let _ = serde_json::from_slice::<oip::InferResponse>(data);
    let _ = InnerResponse::from_plaintext(data);
    // A binary tensor body, its header length taken from the first byte.
    if let Some((&n, body)) = data.split_first() {
        if let Ok(split) = crate::oip_binary::split_request(body, n as usize) {
            for range in split.blobs.into_iter().flatten() {
                let _ = crate::oip_binary::decode_elements("BYTES", &body[range]);
            }
        }
        let _ = crate::oip_binary::split_response(body, n as usize);
    }
    if let Ok(att) = serde_json::from_slice::<AttestationResponse>(data) {
        let expected = report_data(&CLIENT_NONCE, &att.runtime_keys, &att.models);
        if let Ok(claims) = verifier().verify(&att.evidence, now()) {
            let _ = claims.report_data == expected;
        }
    }
    if let Ok(spec) = serde_json::from_slice::<JobSpec>(data) {
        check_job(&spec, &[]);
    }
    if let (Ok(approval), Some(spec)) = (serde_json::from_slice::<Approval>(data), seed_spec()) {
        let _ = approval.verify(spec, &spec.hash(), now());
    }
    if let Ok(status) = serde_json::from_slice::<JobStatus>(data) {
        check_job(&status.spec, &[]);
    }
    if let Ok(receipt) = serde_json::from_slice::<Receipt>(data) {
        let _ = receipt.verify(verifier());
    }
    if let Ok(result) = serde_json::from_slice::<JobResult>(data) {
        let _ = result.receipt.verify(verifier());
        if let (Ok(hash), Some(parties)) = (hex::decode(&result.job_hash), parties()) {
            if let Ok(hash) = <[u8; 32]>::try_from(hash) {
                let aad = job::output_aad(&hash, &result.key_id);
                let _ =
                    parties[0]
                        .hpke_key_pair()
                        .open_sealed(OUTPUT_INFO, &aad, &result.sealed_dek);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = PartyKey::from_file_contents(text) {
            let back = PartyKey::from_file_contents(&key.to_file_contents());
            assert!(
                back.is_ok_and(|b| b.signing_public_key() == key.signing_public_key()
                    && b.hpke_public_key() == key.hpke_public_key()
                    && b.name() == key.name()),
                "party key file round trip"
            );
        }
    }
    signed_request(data);
}

/// A signed request as lines: the signer, time, nonce, audience and signature headers, method,
/// path, then the body (the rest, verbatim). A header line that is empty is a missing header. The
/// audience checked is the runtime's service key, as a training runtime checks it.
fn signed_request(data: &[u8]) {
    let mut parts = data.splitn(8, |&b| b == b'\n');
    let mut line = || parts.next().and_then(|l| std::str::from_utf8(l).ok());
    let (signer, time, nonce, audience, signature) = (line(), line(), line(), line(), line());
    let (Some(method), Some(path)) = (line(), line()) else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let header = |name: &str| {
        let value = match name {
            crate::auth::SIGNER_HEADER => signer,
            crate::auth::TIME_HEADER => time,
            crate::auth::NONCE_HEADER => nonce,
            crate::auth::AUDIENCE_HEADER => audience,
            crate::auth::SIGNATURE_HEADER => signature,
            _ => None,
        };
        value.filter(|v| !v.is_empty())
    };
    let audience = service_key().public_key();
    if let Ok(req) = crate::auth::verify_request(header, method, path, body, &audience, now()) {
        // The job board's next step: who signed, among the job's parties.
        if let Some(spec) = seed_spec() {
            let _ = spec.party_by_key(&req.signer);
        }
    }
}

/// The spec approvals are checked against: two parties, both datasets, alice receives the model.
pub fn seed_spec() -> Option<&'static JobSpec> {
    static SPEC: OnceLock<Option<JobSpec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let [a, b] = parties()?;
        let dataset = |p: &PartyKey, n: u8| job::JobDataset {
            party: p.name().into(),
            key_id: format!("{:032x}", n),
            manifest_sha256: [n; 32],
            format: "csv".into(),
        };
        Some(JobSpec {
            name: "fuzz".into(),
            parties: vec![a.job_party(), b.job_party()],
            datasets: vec![dataset(a, 1), dataset(b, 2)],
            schema: job::JobSchema {
                features: vec!["age".into(), "bmi".into()],
                label: "outcome".into(),
            },
            algorithm: serde_json::json!({"kind": "logistic_regression", "max_iter": 5}),
            evaluation: job::Evaluation {
                test_fraction: 0.25,
                seed: 7,
            },
            outputs: job::Outputs {
                recipients: vec!["alice".into()],
                serve: None,
            },
        })
    })
    .as_ref()
}

/// HPKE envelopes: the server side of the encrypted request channel (`message/cordon-request`), the
/// client's decryption of a response with a fixed context, and single-shot sealed keys.
pub fn channel(data: &[u8]) {
    if let Ok((plaintext, ctx)) = service_key().decapsulate_request(data) {
        // What the runtime does next: the inner request, and an encrypted answer.
        if let Ok(inner) = InnerRequest::from_plaintext(&plaintext) {
            if let Some(body) = inner.body {
                let _ = serde_json::from_value::<oip::InferRequest>(body);
            }
        }
        let _ = ctx.encrypt_response(&plaintext);
    }
    let _ = response_client().decrypt_response(data);
    let _ = service_key().open_sealed(crate::kbs::RELEASE_INFO, RELEASE_AAD, data);
}

/// The client half of the fixed response context.
pub fn response_client() -> ClientResponseContext {
    ClientResponseContext::from_parts(RESPONSE_SECRET, RESPONSE_ENC)
}

/// The server half of the fixed response context (seed generation).
pub fn response_server() -> ServerResponseContext {
    ServerResponseContext::from_parts(RESPONSE_SECRET, RESPONSE_ENC)
}

/// Splits `u16be(len) || bytes` off the front.
fn take_framed(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Frames `parts` as the session target reads them: each `u16be(len) || bytes` (seed generation).
pub fn frame_session(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&part[..usize::from(len)]);
    }
    out
}

/// Session mode, server side: a setup message, then messages of that session, as one input
/// (`u16be(len) || setup`, then `u16be(len) || message` repeated). The setup is opened with the
/// fixed service key; each message is parsed, opened with the session's keys, and its sequence
/// number checked against the runtime's window (above every accepted one, at most `max_messages`);
/// the inner request is parsed and answered. The whole input is also tried as one setup message
/// and as one session message.
pub fn session(data: &[u8]) {
    let _ = accept_session_fixed(data);
    let _ = SessionMessage::parse(data);

    let Some((setup, mut rest)) = take_framed(data) else {
        return;
    };
    let Ok((setup_plain, keys)) = accept_session_fixed(setup) else {
        return;
    };
    let _ = serde_json::from_slice::<crate::session::SessionSetup>(&setup_plain);
    let grant = SessionGrant {
        session_id: SESSION_ID,
        expires_at: NOW + 600,
        max_messages: 1 << 32,
    };
    let _ = keys.seal_grant(&grant);
    let mut last = 0u64;
    while let Some((frame, next)) = take_framed(rest) {
        rest = next;
        session_frame(&keys, &grant, &mut last, frame);
    }
}

fn session_frame(keys: &SessionKeys, grant: &SessionGrant, last: &mut u64, frame: &[u8]) {
    let Ok(message) = SessionMessage::parse(frame) else {
        return;
    };
    if message.session_id != grant.session_id {
        return;
    }
    let Ok(plain) = message.open(keys) else {
        return;
    };
    // The window is checked after authentication, as the runtime does, so forgeries cannot move it.
    if message.seq > grant.max_messages || message.seq <= *last {
        return;
    }
    *last = message.seq;
    let _ = InnerRequest::from_plaintext(&plain);
    let _ = keys.seal_response(&grant.session_id, message.seq, &plain);
}

/// The fixed runtime keys the seeds bind (the service key and the runtime signing key).
pub fn runtime_keys() -> RuntimeKeys {
    RuntimeKeys {
        hpke_public_key: service_key().public_key(),
        hpke_key_id: service_key().key_id(),
        signing_public_key: ed25519_dalek::SigningKey::from_bytes(&RUNTIME_SIGNING_SECRET)
            .verifying_key()
            .to_bytes(),
    }
}
