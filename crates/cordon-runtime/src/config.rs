//! The runtime's configuration. In the simulated TEE it is part of the launch measurement, as a
//! confidential VM's measured configuration would be; so it names nothing that changes per request.

use crate::engine::{EngineKind, OnnxRuntimeOptions};
use cordon_http::client::ClientTls;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Base URL of the key broker, e.g. `http://127.0.0.1:8100` (or `https://`).
    pub kbs_url: String,
    /// The key broker's identity key (hex, as `cordon kbs serve` prints it). A training runtime
    /// seals a job's output key to it and signs the registration for it; required with
    /// `[training]`. Measured with the rest of the configuration, so a policy that pins the
    /// configuration pins which KBS receives keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbs_public_key: Option<String>,
    /// The CA certificate(s) (PEM text, in the configuration itself) the KBS's TLS certificate
    /// must chain to, with an `https://` `kbs_url`: then these alone are trusted for the KBS's
    /// TLS, not the web PKI roots. Measured with the rest of the configuration, so the host can
    /// neither swap it nor point the runtime at another TLS server unnoticed. Without it, an
    /// `https://` KBS is verified against the built-in web PKI roots. Keys never depend on TLS:
    /// the KBS seals every DEK to the runtime's attested key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbs_ca_cert: Option<String>,
    /// 32 bytes of workload data (hex) the TEE reports; zero when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_data: Option<String>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Present when this runtime also runs collaborative training jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingConfig>,
    /// ONNX Runtime's library, for models with `engine = "onnxruntime"`. Pinned by digest: the
    /// library runs inside the trust boundary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<OnnxRuntimeOptions>,
}

/// `[training]`: the job board. Measured with the rest of the configuration, so a data owner's
/// release policy that pins the measurement pins "this runtime trains, with these limits".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Largest sealed dataset accepted, in MiB (default 256).
    #[serde(default = "default_dataset_mib")]
    pub max_dataset_mib: u64,
    /// Sealed datasets held at once, all parties together, in MiB (default 2048).
    #[serde(default = "default_total_dataset_mib")]
    pub max_total_dataset_mib: u64,
}

fn default_total_dataset_mib() -> u64 {
    2048
}

fn default_dataset_mib() -> u64 {
    256
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name clients address the model by (`/v2/models/{name}`).
    pub name: String,
    /// Path of the sealed artifact.
    pub path: PathBuf,
    /// Ed25519 public key (hex) of the owner who must have signed the artifact's manifest.
    pub signer: String,
    /// SHA-256 (hex) of the exact sealed manifest to load. When set, the host cannot substitute
    /// another artifact of the same owner (an older version, say): the runtime refuses it before
    /// asking for any key. With `sim` the config is part of the measurement; on SNP/TDX it is bound
    /// through the workload data (see `check_config_binding`), so a policy that pins the measurement
    /// (sim) or `workload_data` (hardware) pins this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The engine that runs the model: `tract` (default, built in) or `onnxruntime` (needs
    /// `[onnxruntime]`).
    #[serde(default, skip_serializing_if = "EngineKind::is_default")]
    pub engine: EngineKind,
    /// Present when the artifact is a language model (GGUF) rather than ONNX: it is then served
    /// at `/v1/chat/completions` (OpenAI's API) instead of `/v2/models/{name}/infer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
}

/// `[models.llm]`: how a language model is loaded and what one request may ask of it. Measured
/// with the rest of the configuration, so a policy that pins the measurement pins these limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// The architecture the GGUF file must declare (`general.architecture`): `gemma3`.
    pub architecture: String,
    /// Where the tokenizer comes from: `gguf`, the file's own metadata (sealed with the weights).
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// The most tokens one sequence holds, prompt and reply (default 4096): bounds each
    /// request's memory.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: u32,
    /// The most tokens one reply may have (default 512); also a request's default. A reply not
    /// streamed must finish within the server's request timeout (60 s).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
}

/// Architectures the runtime's LLM engine (`cordon-llm`) runs.
pub const LLM_ARCHITECTURES: &[&str] = &["gemma3"];

fn default_tokenizer() -> String {
    "gguf".into()
}

fn default_context_tokens() -> u32 {
    4096
}

fn default_max_tokens() -> u32 {
    512
}

impl LlmConfig {
    fn check(&self, model: &str) -> Result<(), String> {
        if !LLM_ARCHITECTURES.contains(&self.architecture.as_str()) {
            return Err(format!(
                "model {model}: llm.architecture {:?} is not one the runtime runs ({})",
                self.architecture,
                LLM_ARCHITECTURES.join(", ")
            ));
        }
        if self.tokenizer != "gguf" {
            return Err(format!(
                "model {model}: llm.tokenizer {:?}: only \"gguf\" (the file's own metadata) is supported",
                self.tokenizer
            ));
        }
        if !(16..=131_072).contains(&self.context_tokens) {
            return Err(format!(
                "model {model}: llm.context_tokens {} is outside 16..=131072",
                self.context_tokens
            ));
        }
        if self.max_tokens == 0 || self.max_tokens >= self.context_tokens {
            return Err(format!(
                "model {model}: llm.max_tokens {} must be at least 1 and below context_tokens {}",
                self.max_tokens, self.context_tokens
            ));
        }
        Ok(())
    }
}

impl RuntimeConfig {
    pub fn from_toml(text: &str) -> Result<RuntimeConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The pinned KBS identity key, if the configuration names one.
    /// Every check of a value's form that the boot makes before it contacts anything: the KBS URL
    /// and its TLS pin, the pinned KBS key, the workload data, each model's signer and manifest
    /// digest. `cordon runtime measure` and `cordon measure runtime` run it, so that they never
    /// print a reference value for a configuration `serve` would refuse.
    pub fn check(&self) -> Result<(), String> {
        let url = self.kbs_url.trim();
        let scheme = url.get(..8).map(str::to_ascii_lowercase);
        if !(scheme.as_deref() == Some("https://")
            || url.to_ascii_lowercase().starts_with("http://"))
        {
            return Err(format!(
                "kbs_url {:?} must start with http:// or https://",
                self.kbs_url
            ));
        }
        self.kbs_tls()?;
        self.kbs_public_key_bytes()?;
        self.workload_data_bytes()?;
        self.check_llms()?;
        let hex32 = |v: &str| hex::decode(v.trim()).ok().is_some_and(|b| b.len() == 32);
        for m in &self.models {
            if !hex32(&m.signer) {
                return Err(format!(
                    "model {}: signer must be 32 bytes of hex (the owner's public key)",
                    m.name
                ));
            }
            if m.manifest_sha256.as_deref().is_some_and(|d| !hex32(d)) {
                return Err(format!(
                    "model {}: manifest_sha256 must be 32 bytes of hex",
                    m.name
                ));
            }
        }
        Ok(())
    }

    /// The `[models.llm]` sections: values the LLM engine can serve, and no `engine` beside them.
    pub fn check_llms(&self) -> Result<(), String> {
        for m in &self.models {
            if let Some(llm) = &m.llm {
                llm.check(&m.name)?;
                if !m.engine.is_default() {
                    return Err(format!(
                        "model {}: a language model runs on the LLM engine; engine must not be set",
                        m.name
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn kbs_public_key_bytes(&self) -> Result<Option<[u8; 32]>, String> {
        self.kbs_public_key
            .as_deref()
            .map(|h| {
                hex::decode(h.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| "kbs_public_key must be 32 bytes of hex".to_string())
            })
            .transpose()
    }

    /// Whether the runtime talks to the KBS over TLS.
    pub fn kbs_is_https(&self) -> bool {
        let url = self.kbs_url.trim();
        url.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// How the runtime verifies the KBS's TLS certificate: the configuration's `kbs_ca_cert`
    /// alone when it names one (which then needs an `https://` `kbs_url`), else the web PKI roots.
    pub fn kbs_tls(&self) -> Result<ClientTls, String> {
        let Some(pem) = &self.kbs_ca_cert else {
            return Ok(ClientTls::web_pki());
        };
        if !self.kbs_is_https() {
            return Err(format!(
                "kbs_ca_cert is set but kbs_url {:?} is not https://: the CA would pin nothing",
                self.kbs_url
            ));
        }
        ClientTls::only_ca_pem(pem.as_bytes(), "kbs_ca_cert").map_err(|e| e.to_string())
    }

    pub fn workload_data_bytes(&self) -> Result<[u8; 32], String> {
        match &self.workload_data {
            None => Ok([0; 32]),
            Some(h) => hex::decode(h.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| "workload_data must be 32 bytes of hex".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../../../testdata/tls/ca.pem");

    fn with_ca(url: &str, ca: &str) -> Result<RuntimeConfig, String> {
        RuntimeConfig::from_toml(&format!(
            "kbs_url = \"{url}\"\nkbs_ca_cert = '''\n{ca}'''\n"
        ))
    }

    #[test]
    fn kbs_ca_cert_pins_the_kbs_tls_and_stays_in_the_measured_text() {
        let config = with_ca("https://kbs.example:8100", CA).unwrap();
        let tls = config.kbs_tls().unwrap();
        assert!(!tls.trusts_web_pki());
        assert_eq!(tls.extra_cas(), 1);
        // It round-trips, so what is measured is what is used.
        let again = RuntimeConfig::from_toml(&config.to_toml()).unwrap();
        assert_eq!(again, config);
        // Without it: the web PKI roots.
        let plain = RuntimeConfig::from_toml("kbs_url = \"https://kbs.example\"\n").unwrap();
        assert!(plain.kbs_tls().unwrap().trusts_web_pki());
    }

    #[test]
    fn check_refuses_what_the_boot_would_refuse() {
        let model = |signer: &str, extra: &str| {
            format!(
                "kbs_url = \"http://127.0.0.1:8100\"\n[[models]]\nname = \"m\"\npath = \"m.sealed\"\n\
                 signer = \"{signer}\"\n{extra}"
            )
        };
        let good = "11".repeat(32);
        RuntimeConfig::from_toml(&model(&good, ""))
            .unwrap()
            .check()
            .unwrap();
        let missing = "kbs_url = \"http://k\"\n[[models]]\nname = \"m\"\npath = \"m.sealed\"\n";
        assert!(RuntimeConfig::from_toml(missing)
            .unwrap_err()
            .contains("signer"));
        for (text, needle) in [
            (model("abcd", ""), "signer must be 32 bytes"),
            (
                model(&good, "manifest_sha256 = \"00\"\n"),
                "manifest_sha256",
            ),
            (
                model(&good, "[models.llm]\narchitecture = \"llama\"\n"),
                "llm.architecture",
            ),
            (
                model(&good, "[models.llm]\narchitecture = \"gemma3\"\ntokenizer = \"hf\"\n"),
                "llm.tokenizer",
            ),
            (
                model(&good, "[models.llm]\narchitecture = \"gemma3\"\ncontext_tokens = 64\nmax_tokens = 64\n"),
                "llm.max_tokens",
            ),
            (
                model(&good, "engine = \"onnxruntime\"\n[models.llm]\narchitecture = \"gemma3\"\n"),
                "engine must not be set",
            ),
            (
                "kbs_url = \"127.0.0.1:8100\"\n".to_string(),
                "http:// or https://",
            ),
            (
                "kbs_url = \"http://k\"\nworkload_data = \"zz\"\n".to_string(),
                "workload_data",
            ),
            (
                "kbs_url = \"http://k\"\nkbs_public_key = \"00\"\n".to_string(),
                "kbs_public_key",
            ),
        ] {
            let err = RuntimeConfig::from_toml(&text)
                .unwrap()
                .check()
                .unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn kbs_ca_cert_needs_https_and_a_certificate() {
        let err = with_ca("http://kbs.example", CA)
            .unwrap()
            .kbs_tls()
            .unwrap_err();
        assert!(err.contains("not https://"), "{err}");
        let err = with_ca("https://kbs.example", "no certificate here\n")
            .unwrap()
            .kbs_tls()
            .unwrap_err();
        assert!(err.contains("kbs_ca_cert"), "{err}");
    }
}
