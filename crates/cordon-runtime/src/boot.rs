//! Boot: keys, attestation to the KBS, key release, models unsealed in memory.

use crate::config::RuntimeConfig;
use crate::engine::{Engine, EngineError, EngineKind, OnnxModel, OnnxRuntimeLibrary};
use crate::jobs::TrainingOptions;
use crate::llm::ServedLlm;
use crate::server::{RuntimeState, ServedModel, ServingOptions};
use cordon_http::client::{error_text, ClientTls};
use cordon_proto::job::job_report_data;
use cordon_proto::kbs::{
    seal_job, AttestRequest, AttestResponse, Challenge, ErrorBody, JobRelease, RELEASE_INFO,
};
use cordon_proto::{report_data, ModelBinding, RuntimeKeys, ServiceKeyPair, WireEndorsements};
use cordon_seal::{Dek, KeyFile, SealError};
use cordon_tee::EvidenceProvider;
use ed25519_dalek::SigningKey;
use std::collections::BTreeMap;
use std::sync::Arc;
use thiserror::Error;
use zeroize::Zeroizing;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("sealed model {model} ({path}): {source}")]
    Sealed {
        model: String,
        path: String,
        source: SealError,
    },
    #[error("key broker at {url}: {reason}")]
    Kbs { url: String, reason: String },
    #[error("key broker refused key {key_id} for model {model}: {reasons}")]
    KeyDenied {
        model: String,
        key_id: String,
        reasons: String,
    },
    #[error("producing evidence: {0}")]
    Evidence(String),
    #[error("released key for model {model} cannot be opened: {reason}")]
    Release { model: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("language model {model}: {source}")]
    Llm {
        model: String,
        source: cordon_llm::LlmError,
    },
}

fn needs_onnxruntime(model: &str) -> RuntimeError {
    RuntimeError::Config(format!(
        "model {model}: engine = \"onnxruntime\" needs an [onnxruntime] section (library, sha256)"
    ))
}

/// ONNX Runtime, loaded first when a model asks for it: a missing section, or a library that is
/// missing or not the one the configuration pins, stops the boot before any key is asked for.
fn load_onnxruntime(
    config: &RuntimeConfig,
) -> Result<Option<Arc<OnnxRuntimeLibrary>>, RuntimeError> {
    let Some(first) = config
        .models
        .iter()
        .find(|m| m.engine == EngineKind::OnnxRuntime)
    else {
        return Ok(None);
    };
    let options = config
        .onnxruntime
        .as_ref()
        .ok_or_else(|| needs_onnxruntime(&first.name))?;
    let library = OnnxRuntimeLibrary::load(options)?;
    tracing::info!(sha256 = %hex::encode(library.sha256()), "ONNX Runtime library loaded");
    Ok(Some(library))
}

/// A runtime whose models are loaded, ready to serve.
pub struct BootedRuntime {
    pub state: Arc<RuntimeState>,
    /// SHA-256 of each model's sealed manifest, by model name.
    pub model_digests: BTreeMap<String, String>,
}

/// Boots the runtime: attests to the KBS named in `config`, fetches and opens every model's DEK,
/// unseals and loads the models.
pub async fn boot(
    config: &RuntimeConfig,
    tee: Arc<dyn EvidenceProvider>,
    options: &ServingOptions,
) -> Result<BootedRuntime, RuntimeError> {
    // Values of the wrong form (an LLM section the engine cannot serve, say) stop the boot before
    // anything is asked for.
    config.check_llms().map_err(RuntimeError::Config)?;
    let service_key = ServiceKeyPair::generate(0);
    let signing_key = {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_fill(seed.as_mut());
        SigningKey::from_bytes(&seed)
    };
    let runtime_keys = RuntimeKeys {
        hpke_public_key: service_key.public_key(),
        hpke_key_id: service_key.key_id(),
        signing_public_key: signing_key.verifying_key().to_bytes(),
    };

    // A malformed or misplaced kbs_ca_cert, or a training runtime without the KBS's identity key,
    // stops the boot before anything else (before any key is asked for).
    let kbs_tls = config.kbs_tls().map_err(RuntimeError::Config)?;
    let kbs_public_key = config
        .kbs_public_key_bytes()
        .map_err(RuntimeError::Config)?;
    let training =
        match (&config.training, kbs_public_key) {
            (None, _) => None,
            (Some(t), Some(key)) => Some((t, key)),
            (Some(_), None) => return Err(RuntimeError::Config(
                "[training] needs kbs_public_key: the key broker's identity key, as `cordon kbs \
                 serve` prints it"
                    .into(),
            )),
        };
    if config.kbs_is_https() {
        tracing::info!(
            kbs = %config.kbs_url,
            trust = if config.kbs_ca_cert.is_some() { "kbs_ca_cert only" } else { "web PKI roots" },
            "talking to the key broker over TLS"
        );
    }

    let onnxruntime = load_onnxruntime(config)?;

    // Read every sealed header first: the key ids to ask for, and the signer each must carry.
    let mut sealed = Vec::new();
    for m in &config.models {
        let sealed_err = |source| RuntimeError::Sealed {
            model: m.name.clone(),
            path: m.path.display().to_string(),
            source,
        };
        let bytes = std::fs::read(&m.path).map_err(|e| sealed_err(SealError::Io(e)))?;
        let header = cordon_seal::read_header(&mut &bytes[..]).map_err(sealed_err)?;
        let signer: [u8; 32] = hex::decode(m.signer.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                RuntimeError::Config(format!("model {}: signer must be 32 bytes of hex", m.name))
            })?;
        // Refuse the wrong artifact before asking the KBS for anything.
        if header.manifest.signer_key().map_err(sealed_err)? != signer {
            return Err(sealed_err(SealError::WrongSigner {
                found: header.manifest.signer.clone(),
                expected: m.signer.clone(),
            }));
        }
        if let Some(pinned) = &m.manifest_sha256 {
            let found = hex::encode(header.digest());
            if !pinned.trim().eq_ignore_ascii_case(&found) {
                return Err(RuntimeError::Config(format!(
                    "model {}: sealed manifest sha256 is {found}, config pins {pinned}",
                    m.name
                )));
            }
        }
        sealed.push((m, header, bytes, signer));
    }

    // Bind the models about to be unsealed, so the KBS's audit log names the manifests too.
    let bindings: Vec<ModelBinding> = sealed
        .iter()
        .map(|(m, header, _, _)| ModelBinding {
            name: m.name.clone(),
            version: header.manifest.version.clone(),
            manifest_sha256: header.digest(),
        })
        .collect();
    let key_ids = sealed
        .iter()
        .map(|(_, h, _, _)| h.manifest.key_id.clone())
        .collect();
    // A runtime that only trains has no model key to ask for.
    let released = if sealed.is_empty() {
        AttestResponse {
            claims_digest: String::new(),
            released: vec![],
            denied: vec![],
        }
    } else {
        wait_for_kbs(&config.kbs_url, &kbs_tls, options.kbs_wait).await?;
        attest_to_kbs(
            &config.kbs_url,
            &kbs_tls,
            tee.as_ref(),
            &runtime_keys,
            key_ids,
            bindings,
            None,
        )
        .await?
        .response
    };

    let mut models = BTreeMap::new();
    let mut llms = BTreeMap::new();
    let mut model_digests = BTreeMap::new();
    for (m, header, bytes, signer) in sealed {
        let key_id = &header.manifest.key_id;
        if let Some(d) = released.denied.iter().find(|d| &d.key_id == key_id) {
            return Err(RuntimeError::KeyDenied {
                model: m.name.clone(),
                key_id: key_id.clone(),
                reasons: with_remeasure_hint(&d.reasons),
            });
        }
        let rel = released
            .released
            .iter()
            .find(|r| &r.key_id == key_id)
            .ok_or_else(|| RuntimeError::KeyDenied {
                model: m.name.clone(),
                key_id: key_id.clone(),
                reasons: "the KBS returned no answer for this key".into(),
            })?;
        let dek_bytes = service_key
            .open_sealed(RELEASE_INFO, key_id.as_bytes(), &rel.sealed_dek)
            .map_err(|e| RuntimeError::Release {
                model: m.name.clone(),
                reason: e.to_string(),
            })?;
        let dek = Dek::from_bytes(&dek_bytes).map_err(|e| RuntimeError::Release {
            model: m.name.clone(),
            reason: e.to_string(),
        })?;
        let key = KeyFile {
            key_id: key_id.clone(),
            dek,
            signer,
        };
        let (header, plaintext) =
            cordon_seal::unseal_to_vec(&bytes[..], &key).map_err(|source| {
                RuntimeError::Sealed {
                    model: m.name.clone(),
                    path: m.path.display().to_string(),
                    source,
                }
            })?;
        if let Some(llm) = &m.llm {
            let model = cordon_llm::LlmModel::from_gguf(
                &plaintext,
                &cordon_llm::LoadOptions {
                    context: llm.context_tokens as usize,
                },
            )
            .map_err(|source| RuntimeError::Llm {
                model: m.name.clone(),
                source,
            })?;
            // The plaintext GGUF is no longer needed: its tensors were copied out.
            drop(plaintext);
            model_digests.insert(m.name.clone(), hex::encode(header.digest()));
            tracing::info!(model = %m.name, manifest_sha256 = %hex::encode(header.digest()), architecture = %llm.architecture, context = model.context(), "language model unsealed and loaded in memory");
            llms.insert(
                m.name.clone(),
                ServedLlm {
                    model,
                    config: llm.clone(),
                    manifest_sha256: header.digest(),
                    version: header.manifest.version.clone(),
                    loaded_at: cordon_proto::auth::unix(std::time::SystemTime::now()),
                },
            );
            continue;
        }
        let engine = match (m.engine, &onnxruntime) {
            (EngineKind::Tract, _) => Engine::Tract,
            (EngineKind::OnnxRuntime, Some(library)) => Engine::OnnxRuntime(library.as_ref()),
            // load_onnxruntime has refused this configuration already.
            (EngineKind::OnnxRuntime, None) => return Err(needs_onnxruntime(&m.name)),
        };
        let model = OnnxModel::load_on(&m.name, &header.manifest.version, &plaintext, engine)?;
        model_digests.insert(m.name.clone(), hex::encode(header.digest()));
        tracing::info!(model = %m.name, manifest_sha256 = %hex::encode(header.digest()), plan = model.plan_name(), batchable = model.rows_independent(), "model unsealed and loaded in memory");
        models.insert(
            m.name.clone(),
            ServedModel {
                model: Arc::new(model),
                manifest_sha256: header.digest(),
            },
        );
    }

    let mut state = RuntimeState::new(
        service_key,
        signing_key,
        runtime_keys,
        tee,
        models,
        options.clone(),
    );
    state.serve_llms(llms);
    if let Some((training, kbs_public_key)) = training {
        let mut t = TrainingOptions::new(&config.kbs_url, kbs_public_key);
        t.kbs_tls = kbs_tls.clone();
        let mib = |m: u64| usize::try_from(m.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        t.max_dataset_bytes = mib(training.max_dataset_mib);
        t.max_total_dataset_bytes = mib(training.max_total_dataset_mib);
        state.enable_training(t);
    }
    Ok(BootedRuntime {
        state: Arc::new(state),
        model_digests,
    })
}

/// One round with the key broker: challenge, evidence binding the nonce and the runtime's keys (and
/// the models, or the job), attest. The nonce and evidence are kept: a job receipt carries them.
pub(crate) struct KbsRelease {
    pub response: AttestResponse,
    pub nonce: String,
    pub evidence: Vec<u8>,
    pub endorsements: WireEndorsements,
}

/// Waits, for at most `wait`, until the key broker at `kbs_url` answers at all (a KBS and its
/// runtime often start together): a refused or timed-out connection is retried with backoff and
/// said on the log; any HTTP answer ends the wait (the attestation then judges it).
async fn wait_for_kbs(
    kbs_url: &str,
    kbs_tls: &ClientTls,
    wait: std::time::Duration,
) -> Result<(), RuntimeError> {
    let kbs = kbs_url.trim_end_matches('/').to_string();
    let kbs_err = |reason: String| RuntimeError::Kbs {
        url: kbs.clone(),
        reason,
    };
    let http = kbs_tls
        .client(std::time::Duration::from_secs(5))
        .map_err(|e| kbs_err(error_text(&e)))?;
    let started = tokio::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(100);
    let mut said = false;
    loop {
        let e = match http.get(format!("{kbs}/healthz")).send().await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_timeout() || refused(&e) => e,
            // Anything else (a TLS handshake, a name that does not resolve) will not heal by
            // waiting: the attestation says what it is.
            Err(_) => return Ok(()),
        };
        let waited = started.elapsed();
        if waited >= wait {
            return Err(kbs_err(format!(
                "not reachable{}: {}",
                if wait.is_zero() {
                    String::new()
                } else {
                    format!(" after {} s of retrying", wait.as_secs_f32().round())
                },
                error_text(&e)
            )));
        }
        if !said {
            tracing::warn!(
                kbs = %kbs,
                error = %error_text(&e),
                "waiting for the key broker (retrying for up to {} s)",
                wait.as_secs()
            );
            said = true;
        }
        tokio::time::sleep(pause.min(wait - waited)).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Whether `e` is a refused (or reset, or timed-out) TCP connection: a key broker not up yet.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, TimedOut};
            if matches!(io.kind(), ConnectionRefused | ConnectionReset | TimedOut) {
                return true;
            }
        }
        cause = c.source();
    }
    false
}

pub(crate) async fn attest_to_kbs(
    kbs_url: &str,
    kbs_tls: &ClientTls,
    tee: &dyn EvidenceProvider,
    runtime_keys: &RuntimeKeys,
    key_ids: Vec<String>,
    models: Vec<ModelBinding>,
    job: Option<(JobRelease, [u8; 32])>,
) -> Result<KbsRelease, RuntimeError> {
    let kbs = kbs_url.trim_end_matches('/').to_string();
    let kbs_err = |reason: String| RuntimeError::Kbs {
        url: kbs.clone(),
        reason,
    };
    let http = kbs_tls
        .client(std::time::Duration::from_secs(30))
        .map_err(|e| kbs_err(error_text(&e)))?;
    let challenge: Challenge = http
        .post(format!("{kbs}/kbs/v1/challenge"))
        .send()
        .await
        .map_err(|e| kbs_err(format!("challenge: {}", error_text(&e))))?
        .error_for_status()
        .map_err(|e| kbs_err(format!("challenge: {}", error_text(&e))))?
        .json()
        .await
        .map_err(|e| kbs_err(format!("challenge: {}", error_text(&e))))?;
    let nonce =
        hex::decode(&challenge.nonce).map_err(|e| kbs_err(format!("nonce is not hex: {e}")))?;
    let bound = match &job {
        Some((j, _)) => job_report_data(&nonce, runtime_keys, &j.spec.hash()),
        None => report_data(&nonce, runtime_keys, &models),
    };
    // The job (spec and approvals) travels sealed to the pinned KBS identity, bound to this nonce.
    let sealed_job = job
        .map(|(j, kbs_key)| seal_job(&kbs_key, &challenge.nonce, &j))
        .transpose()
        .map_err(|e| kbs_err(format!("sealing the job to the key broker: {e}")))?;
    let bundle = tee
        .evidence_bundle(&bound)
        .map_err(|e| RuntimeError::Evidence(e.to_string()))?;
    let evidence = bundle.evidence;
    let endorsements = WireEndorsements {
        snp_certs: bundle.snp_certs,
        dcap_collateral: bundle.dcap_collateral,
        tdx_event_log: bundle.tdx_event_log,
    };
    let request = AttestRequest {
        nonce: challenge.nonce.clone(),
        evidence: evidence.clone(),
        endorsements: endorsements.clone(),
        runtime_keys: runtime_keys.clone(),
        key_ids,
        models,
        sealed_job,
    };
    let resp = http
        .post(format!("{kbs}/kbs/v1/attest"))
        .json(&request)
        .send()
        .await
        .map_err(|e| kbs_err(format!("attest: {}", error_text(&e))))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let reason = match resp.json::<ErrorBody>().await {
            Ok(b) => format!("attest: {status}: {} ({})", b.error, b.code),
            Err(_) => format!("attest: {status}"),
        };
        return Err(kbs_err(reason));
    }
    let response: AttestResponse = resp
        .json()
        .await
        .map_err(|e| kbs_err(format!("attest: {}", error_text(&e))))?;
    Ok(KbsRelease {
        response,
        nonce: challenge.nonce,
        evidence,
        endorsements,
    })
}

fn rand_fill(buf: &mut [u8]) {
    use rand::RngCore;
    rand::rng().fill_bytes(buf);
}

/// The workload data that binds a runtime configuration on `platform`, as its launcher sets it and
/// a policy pins it (`workload_data`): SNP HOST_DATA = SHA-256 of the configuration file's bytes, TDX
/// MRCONFIGID = SHA-384 of them. `None` for sim and SGX, which measure the configuration instead.
pub fn config_workload_data(
    platform: cordon_attest::Platform,
    config_bytes: &[u8],
) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256, Sha384};
    match platform {
        cordon_attest::Platform::Snp => Some(Sha256::digest(config_bytes).to_vec()),
        cordon_attest::Platform::Tdx => Some(Sha384::digest(config_bytes).to_vec()),
        _ => None,
    }
}

/// On hardware, the runtime's configuration must be bound to its evidence: the launcher sets the
/// workload data (SNP HOST_DATA = SHA-256 of the config bytes; TDX MRCONFIGID = SHA-384 of them) so
/// that a release policy pinning `workload_data` pins the configuration (KBS URL, models, signers,
/// manifest digests). The runtime refuses to start when its own evidence says otherwise, rather than
/// serve under a configuration the host could have edited. (Sim measures the config instead; SGX
/// measures it through the enclave's manifest.)
pub fn check_config_binding(
    tee: &dyn EvidenceProvider,
    config_bytes: &[u8],
) -> Result<(), RuntimeError> {
    let evidence = tee
        .evidence(&[0u8; 64])
        .map_err(|e| RuntimeError::Evidence(e.to_string()))?;
    let (_, fields) =
        cordon_attest::inspect(&evidence).map_err(|e| RuntimeError::Evidence(e.to_string()))?;
    let Some(expected) = config_workload_data(tee.platform(), config_bytes) else {
        return Ok(());
    };
    let expected = hex::encode(expected);
    let (field, found) = match tee.platform() {
        cordon_attest::Platform::Snp => (
            "HOST_DATA",
            fields["host_data"].as_str().unwrap_or_default().to_string(),
        ),
        _ => (
            "MRCONFIGID",
            fields["body"]["mr_config_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
    };
    if found != expected {
        return Err(RuntimeError::Config(format!(
            "{field} is {found}, but this configuration hashes to {expected}: launch the TEE with \
             the configuration's hash as its workload data"
        )));
    }
    Ok(())
}

/// The KBS's reasons, and what to do when they are about the launch: the measurement covers the
/// runtime's code and its configuration, so any edit to either (even a comment in runtime.toml)
/// changes it, and the release policy registered before the edit no longer matches.
fn with_remeasure_hint(reasons: &[String]) -> String {
    let joined = reasons.join("; ");
    let about_launch = reasons
        .iter()
        .any(|r| r.starts_with("launch_measurement:") || r.starts_with("workload_data:"));
    if !about_launch {
        return joined;
    }
    format!(
        "{joined}. The launch measurement and workload data cover the runtime binary and its \
         configuration: after any change to either (even a comment in the configuration file), \
         measure again (`cordon runtime measure`, or `cordon measure runtime` on SNP/TDX) and \
         register a release policy with the new values (`cordon kbs register`)"
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_refusal_about_the_launch_says_to_measure_again_and_others_do_not() {
        let launch = with_remeasure_hint(&[
            "launch_measurement: ab is not among the policy's reference values [cd]".into(),
        ]);
        assert!(launch.starts_with("launch_measurement: ab"), "{launch}");
        assert!(
            launch.contains("measure again") && launch.contains("cordon kbs register"),
            "{launch}"
        );
        let config = with_remeasure_hint(&["workload_data: found 00, policy expects 11".into()]);
        assert!(config.contains("measure again"), "{config}");
        let debug = with_remeasure_hint(&["debug: the TEE is in debug mode".into()]);
        assert_eq!(debug, "debug: the TEE is in debug mode");
    }

    use super::*;
    use cordon_tee::TeeError;
    use sha2::Digest;

    struct FakeSnp(Vec<u8>);

    impl EvidenceProvider for FakeSnp {
        fn platform(&self) -> cordon_attest::Platform {
            cordon_attest::Platform::Snp
        }
        fn evidence(&self, _: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
            Ok(self.0.clone())
        }
    }

    const REPORT: &[u8] =
        include_bytes!("../../../testdata/attestation/snp/trustee_test-report.bin");

    #[test]
    fn hardware_config_must_match_the_workload_data() {
        let config = b"kbs_url = \"http://kbs\"\n";
        let err = check_config_binding(&FakeSnp(REPORT.to_vec()), config).unwrap_err();
        assert!(err.to_string().contains("HOST_DATA"), "{err}");
        let mut bound = REPORT.to_vec();
        bound[0xC0..0xE0].copy_from_slice(&sha2::Sha256::digest(config));
        check_config_binding(&FakeSnp(bound.clone()), config).unwrap();
        assert!(check_config_binding(&FakeSnp(bound), b"kbs_url = \"http://evil\"\n").is_err());
    }

    fn sim() -> Arc<dyn EvidenceProvider> {
        Arc::new(cordon_tee::SimTee::new(
            cordon_tee::SimHardwareKey::generate(),
            [0; 48],
            [0; 32],
            false,
        ))
    }

    /// How an HTTP client's error reaches the cause: one error wrapping another as its source.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn only_a_refused_or_timed_out_connection_is_waited_for() {
        use std::io::{Error, ErrorKind};
        assert!(refused(&Error::from(ErrorKind::ConnectionRefused)));
        assert!(refused(&Wrapped(Error::from(ErrorKind::ConnectionRefused))));
        assert!(refused(&Wrapped(Error::from(ErrorKind::TimedOut))));
        // A TLS handshake that fails, or a name that does not resolve, will not heal by waiting.
        assert!(!refused(&Wrapped(Error::other("invalid peer certificate"))));
        assert!(!refused(&Wrapped(Error::from(ErrorKind::NotFound))));
    }

    /// A training runtime must pin the KBS's identity key (it seals jobs and output keys to it):
    /// without one, the boot stops before the key broker (unreachable here) is asked anything.
    #[tokio::test]
    async fn a_training_runtime_needs_the_kbs_identity_before_anything_else() {
        let config = RuntimeConfig::from_toml(
            "kbs_url = \"http://127.0.0.1:9\"\n\n[[models]]\nname = \"m\"\n\
             path = \"/nonexistent.sealed\"\nsigner = \"00\"\n\n[training]\n",
        )
        .unwrap();
        let err = boot(&config, sim(), &ServingOptions::default())
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, RuntimeError::Config(m) if m.contains("kbs_public_key")),
            "{err}"
        );
    }

    /// A config that asks for ONNX Runtime must get it, pinned: both failures stop the boot before
    /// the key broker is asked for anything (its URL here answers nothing).
    #[tokio::test]
    async fn onnxruntime_models_need_the_pinned_library() {
        let mut config = RuntimeConfig::from_toml(
            "kbs_url = \"http://127.0.0.1:9\"\n\
             [[models]]\nname = \"lr\"\npath = \"/nonexistent.sealed\"\n\
             signer = \"00\"\nengine = \"onnxruntime\"\n",
        )
        .unwrap();
        let options = ServingOptions::default();
        let err = boot(&config, sim(), &options).await.err().unwrap();
        assert!(
            matches!(&err, RuntimeError::Config(m) if m.contains("[onnxruntime]")),
            "{err}"
        );
        // The pinned digest is not the file's (this file is no library at all).
        config.onnxruntime = Some(crate::engine::OnnxRuntimeOptions {
            library: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"),
            sha256: "ab".repeat(32),
            intra_op_threads: 1,
            sessions_per_model: None,
        });
        let err = boot(&config, sim(), &options).await.err().unwrap();
        assert!(
            matches!(&err, RuntimeError::Engine(EngineError::Library(m)) if m.contains(&"ab".repeat(32))),
            "{err}"
        );
        // The section round-trips through the measured TOML.
        assert_eq!(RuntimeConfig::from_toml(&config.to_toml()).unwrap(), config);
    }
}
