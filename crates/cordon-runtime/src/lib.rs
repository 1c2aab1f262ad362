//! The Cordon runtime: the workload inside the TEE.
//!
//! At boot it creates its HPKE service key and signing key, attests to the key broker with evidence
//! that binds both, receives the DEKs of its configured sealed models (HPKE-sealed to its key), unseals
//! the models in memory only, loads them with tract (or, per model, ONNX Runtime from a library its
//! configuration pins by digest), and serves:
//! - `GET /v1/attestation?nonce=HEX`: evidence binding the nonce and its public keys;
//! - `POST /v1/encrypted`: an HPKE-encapsulated Open Inference Protocol request (see `cordon-proto`);
//! - `POST /v1/session`, `POST /v1/session/message`: session mode (one HPKE setup, then AEAD per
//!   message with sequence numbers);
//! - `GET /v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/{name}[/versions/{v}][/ready]`:
//!   plaintext, no secrets;
//! - `GET /metrics`: Prometheus metrics (no request data, no keys);
//! - with `[training]` in its configuration, the job board, inside the encrypted channel:
//!   `POST /v1/jobs`, `GET /v1/jobs/{hash}`, `POST /v1/jobs/{hash}/approvals`,
//!   `POST /v1/jobs/{hash}/submit`, `GET /v1/jobs/{hash}/result|receipt|model`; and in plain HTTP
//!   `PUT /v1/datasets` (sealed bytes). Every request is signed by a party's key for this runtime's
//!   attested key, and fresh.
//!
//! Plaintext of models and requests stays in memory and is never logged.

mod batching;
mod boot;
mod config;
mod engine;
mod hardening;
mod idle;
mod jobs;
mod llm;
mod metrics;
mod replay;
mod server;
mod sessions;
mod tensor_bytes;

pub use batching::BatchOptions;
pub use boot::{boot, check_config_binding, config_workload_data, BootedRuntime, RuntimeError};
pub use config::{LlmConfig, ModelConfig, RuntimeConfig, TrainingConfig, LLM_ARCHITECTURES};
pub use engine::{
    locate_onnxruntime_library, DecodedRequest, Engine, EngineError, EngineKind, HostData,
    HostTensor, OnnxModel, OnnxRuntimeLibrary, OnnxRuntimeOptions,
};
pub use hardening::{harden_process, Hardening, MLOCK_MINIMUM};
pub use idle::IdleWait;
pub use jobs::TrainingOptions;
pub use llm::ServedLlm;
pub use metrics::Metrics;
pub use server::{router, serve, serve_with_tls, RuntimeState, ServedModel, ServingOptions};
pub use sessions::{SessionError, SessionLimits};
