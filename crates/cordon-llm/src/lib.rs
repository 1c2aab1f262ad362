//! Cordon's LLM engine: a GGUF language model loaded from bytes in memory (the unsealed model
//! never touches the disk), its tokenizer read from the same file, Gemma 3's chat template, and
//! sampling.
//!
//! The model runs on candle's CPU kernels for llama.cpp's quantized formats (Q4_K, Q6_K, Q8_0,
//! ...); the decoder follows llama.cpp's graph for the architecture and the tokenizer llama.cpp's
//! SentencePiece procedure, so greedy decoding gives llama.cpp's tokens (tested against
//! llama-cpp-python's, `tests/llama_cpp.rs`).
//!
//! ```no_run
//! # fn main() -> Result<(), cordon_llm::LlmError> {
//! # let gguf: Vec<u8> = Vec::new();
//! use cordon_llm::{LlmModel, LoadOptions, Message, Sampling};
//! let model = LlmModel::from_gguf(&gguf, &LoadOptions::default())?;
//! let prompt = model.chat_prompt(&[Message::user("Hi")])?;
//! let mut generation = model.start(&prompt, &Sampling::greedy(), 32)?;
//! while let Some(token) = generation.next_token()? {
//!     print!("{}", model.tokenizer().decode(&[token]));
//! }
//! # Ok(()) }
//! ```

mod chat;
mod error;
mod gemma3;
pub mod gguf;
mod sampling;
pub mod tokenizer;

pub use chat::{Message, Role};
pub use error::LlmError;
pub use gemma3::{Gemma3Config, KvCache};
pub use sampling::{Sampler, Sampling};
pub use tokenizer::{TokenId, Tokenizer};

use gemma3::Gemma3;
use gguf::GgufFile;

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The most tokens one sequence may hold, prompt and generation together. Bounds the memory
    /// of each sequence's cache; at most the model's own context length.
    pub context: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { context: 4096 }
    }
}

/// A language model and its tokenizer, shared by every request.
pub struct LlmModel {
    tokenizer: Tokenizer,
    model: Gemma3,
    /// Tokens that end a reply: end of sequence and `<end_of_turn>`.
    stop_tokens: Vec<TokenId>,
}

impl std::fmt::Debug for LlmModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmModel")
            .field("config", self.model.config())
            .field("context", &self.model.context())
            .finish_non_exhaustive()
    }
}

impl LlmModel {
    /// Loads a GGUF model from `bytes` (the whole file). The bytes can be dropped afterwards:
    /// the tensors are copied out.
    pub fn from_gguf(bytes: &[u8], options: &LoadOptions) -> Result<Self, LlmError> {
        let file = GgufFile::read(bytes)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let config = Gemma3Config::from_gguf(&file, tokenizer.vocabulary_size())?;
        let context = options.context.min(config.context_length);
        let model = Gemma3::load(&file, config, context)?;
        let mut stop_tokens = vec![tokenizer.eos()];
        stop_tokens.extend(tokenizer.token("<end_of_turn>"));
        Ok(Self {
            tokenizer,
            model,
            stop_tokens,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &Gemma3Config {
        self.model.config()
    }

    /// The most tokens a sequence may hold.
    pub fn context(&self) -> usize {
        self.model.context()
    }

    /// Whether `token` ends a reply.
    pub fn is_stop(&self, token: TokenId) -> bool {
        self.stop_tokens.contains(&token)
    }

    /// The tokens of a chat, rendered with the model's template and ending with the opening of
    /// the model's turn.
    ///
    /// A message's text is never read as control tokens: `<end_of_turn>` written by a user is
    /// text, not the end of their turn. Text too long to fit the context in any tokenization is
    /// refused before it is tokenized.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<Vec<TokenId>, LlmError> {
        let parts = chat::render_gemma3(messages)?;
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        // A token stands for at most `max_piece_bytes` of text, so text longer than the context
        // times that cannot fit, whatever its tokenization.
        let limit = self
            .context()
            .saturating_mul(self.tokenizer.max_piece_bytes());
        if bytes > limit {
            return Err(LlmError::BadParameter {
                name: "messages",
                why: format!(
                    "{bytes} bytes of text cannot fit a context of {} tokens",
                    self.context()
                ),
            });
        }
        let mut tokens = Vec::new();
        if self.tokenizer.adds_bos() {
            tokens.push(self.tokenizer.bos());
        }
        for part in parts {
            match part {
                chat::Part::Template(t) => tokens.extend(self.tokenizer.encode(t, true)),
                chat::Part::Content(c) => tokens.extend(self.tokenizer.encode(c, false)),
            }
        }
        Ok(tokens)
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        self.model.new_cache()
    }

    /// Runs `tokens` after what `cache` holds; returns the logits of the last one.
    pub fn forward(&self, tokens: &[TokenId], cache: &mut KvCache) -> Result<Vec<f32>, LlmError> {
        self.model.forward(tokens, cache)
    }

    /// Starts a generation of at most `max_tokens` tokens after `prompt`. The prompt is run at
    /// once (prefill); each [`Generation::next_token`] then yields one token.
    pub fn start(
        &self,
        prompt: &[TokenId],
        sampling: &Sampling,
        max_tokens: usize,
    ) -> Result<Generation<'_>, LlmError> {
        if prompt.is_empty() {
            return Err(LlmError::BadParameter {
                name: "prompt",
                why: "no token".into(),
            });
        }
        let needed = prompt.len().saturating_add(max_tokens);
        if needed > self.context() {
            return Err(LlmError::ContextTooLong {
                needed,
                max: self.context(),
            });
        }
        let mut sampler = Sampler::new(sampling)?;
        let mut cache = self.new_cache();
        let logits = self.forward(prompt, &mut cache)?;
        let next = sampler.sample(&logits);
        Ok(Generation {
            model: self,
            cache,
            sampler,
            next: Some(next),
            remaining: max_tokens,
            finish: None,
        })
    }
}

/// Why a generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its reply.
    Stop,
    /// `max_tokens` were produced.
    Length,
}

/// One sequence being generated.
pub struct Generation<'m> {
    model: &'m LlmModel,
    cache: KvCache,
    sampler: Sampler,
    next: Option<TokenId>,
    remaining: usize,
    finish: Option<Finish>,
}

impl Generation<'_> {
    /// The next token of the reply, or `None` once it is over (see [`Generation::finish`]). The
    /// token that ends the reply is not returned.
    pub fn next_token(&mut self) -> Result<Option<TokenId>, LlmError> {
        let Some(token) = self.next.take() else {
            return Ok(None);
        };
        if self.model.is_stop(token) {
            self.finish = Some(Finish::Stop);
            return Ok(None);
        }
        if self.remaining == 0 {
            self.finish = Some(Finish::Length);
            return Ok(None);
        }
        self.remaining -= 1;
        if self.remaining > 0 {
            let logits = self.model.forward(&[token], &mut self.cache)?;
            self.next = Some(self.sampler.sample(&logits));
        } else {
            self.finish = Some(Finish::Length);
        }
        Ok(Some(token))
    }

    /// Why the generation ended; `None` while it goes on.
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// Tokens in the sequence so far (prompt and reply).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the sequence holds no token.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}
