//! The crate's one error type: what was wrong with a model file or a request, by name.

/// Why a model could not be loaded or a generation could not run.
///
/// Messages name the GGUF key, tensor or limit at fault; none carries prompt or output text
/// (they may reach logs).
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The bytes are not a readable GGUF file (bad magic, truncated, counts past the end).
    #[error("not a readable GGUF file: {0}")]
    Gguf(String),
    /// `general.architecture` names a model family this engine does not run.
    #[error("unsupported model architecture {0:?} (this engine runs gemma3)")]
    UnsupportedArchitecture(String),
    /// A metadata key the model needs is absent.
    #[error("GGUF metadata key {0} is missing")]
    MissingMetadata(String),
    /// A metadata key has the wrong type or a value outside what the engine accepts.
    #[error("GGUF metadata key {key}: {why}")]
    BadMetadata { key: String, why: String },
    /// A tensor the architecture needs is absent.
    #[error("tensor {0} is missing from the GGUF file")]
    MissingTensor(String),
    /// A tensor's shape disagrees with the hyperparameters.
    #[error("tensor {name} has shape {found:?}, the hyperparameters give {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The tokenizer's vocabulary in the metadata is inconsistent.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat request the template cannot render (roles out of order, unknown role).
    #[error("chat messages: {0}")]
    Chat(String),
    /// Prompt and generation would not fit the context the model was loaded with.
    #[error("{needed} tokens do not fit the context of {max} tokens")]
    ContextTooLong { needed: usize, max: usize },
    /// A parameter of a request or of loading outside its range.
    #[error("parameter {name}: {why}")]
    BadParameter { name: &'static str, why: String },
    /// The tensor library failed while running the model.
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for LlmError {
    fn from(e: candle_core::Error) -> Self {
        LlmError::Inference(e.to_string())
    }
}
