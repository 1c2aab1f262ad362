//! Gemma 3's decoder, as llama.cpp computes it (src/models/gemma3.cpp), on candle's tensors and
//! quantized matrix products.
//!
//! Per layer: RMS norm; attention with grouped key/value heads, RMS-normed queries and keys,
//! NEOX rotary positions (base 10,000 on sliding-window layers, `rope.freq_base` on the global
//! ones, every `sliding_window_pattern`-th), queries scaled by 1/sqrt(head size); RMS norm; residual;
//! RMS norm; GELU(tanh)-gated feed-forward; RMS norm; residual. Embeddings are scaled by
//! sqrt(width) and the output matrix is the embedding's (tied). GGUF's norm weights already
//! include Gemma's +1.
//!
//! The weights are shared by every sequence; a sequence's state is its own [`KvCache`]. The rotary
//! tables and every cache stop at the context the model is loaded with, not the model's 32K or
//! 128K, and a prompt runs in chunks of 512 tokens, so a step's attention scores are at most
//! 512 x context per head. Not yet bounded: the cache keeps every position on the sliding-window
//! layers too, and grows by a copy at each step.

use crate::gguf::GgufFile;
use crate::LlmError;
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use std::sync::Arc;

/// The hyperparameters of a Gemma 3 GGUF file (`gemma3.*` keys), checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Gemma3Config {
    pub context_length: usize,
    pub embedding_length: usize,
    pub block_count: usize,
    pub feed_forward_length: usize,
    pub head_count: usize,
    pub head_count_kv: usize,
    pub head_size: usize,
    pub rms_epsilon: f32,
    pub rope_base_global: f32,
    pub rope_base_local: f32,
    /// Position scale of the global layers' rotary embedding (1 / `rope.scaling.factor`).
    pub rope_scale_global: f32,
    pub sliding_window: usize,
    pub sliding_window_pattern: usize,
    pub vocabulary_size: usize,
    /// The factor queries are scaled by: 1/sqrt(head size), except on the 27B model (62 layers),
    /// where llama.cpp uses 1/sqrt(width / heads).
    pub query_scale: f32,
}

/// The most prompt tokens run at once.
const PREFILL_CHUNK: usize = 512;

/// llama.cpp's values for Gemma 3 where the file has none.
const LOCAL_ROPE_BASE: f32 = 10_000.0;
const SLIDING_WINDOW_PATTERN: usize = 6;

impl Gemma3Config {
    /// Reads and checks the hyperparameters; `vocabulary_size` comes from the tokenizer.
    pub fn from_gguf(file: &GgufFile<'_>, vocabulary_size: usize) -> Result<Self, LlmError> {
        let arch = file.string("general.architecture")?;
        if arch != "gemma3" {
            return Err(LlmError::UnsupportedArchitecture(crate::gguf::shorten(
                arch,
            )));
        }
        let key = |k: &str| format!("gemma3.{k}");
        let count = |k: &str, max: usize| file.count(&key(k), 1..=max);
        let head_size = count("attention.key_length", 1024)?;
        if count("attention.value_length", 1024)? != head_size {
            return Err(LlmError::BadMetadata {
                key: key("attention.value_length"),
                why: "differs from attention.key_length".into(),
            });
        }
        let head_count = count("attention.head_count", 1024)?;
        let head_count_kv = count("attention.head_count_kv", 1024)?;
        if head_count % head_count_kv != 0 {
            return Err(LlmError::BadMetadata {
                key: key("attention.head_count_kv"),
                why: format!("{head_count_kv} does not divide the {head_count} query heads"),
            });
        }
        let optional_positive = |k: &str, default: f64| {
            if file.has(&key(k)) {
                file.positive(&key(k))
            } else {
                Ok(default)
            }
        };
        let rope_factor = optional_positive("rope.scaling.factor", 1.0)?;
        let sliding_window_pattern = if file.has(&key("attention.sliding_window_pattern")) {
            count("attention.sliding_window_pattern", 1 << 16)?
        } else {
            SLIDING_WINDOW_PATTERN
        };
        if head_size % 2 != 0 {
            return Err(LlmError::BadMetadata {
                key: key("attention.key_length"),
                why: format!("{head_size} is odd (rotary embeddings rotate pairs)"),
            });
        }
        let embedding_length = count("embedding_length", 1 << 16)?;
        let block_count = count("block_count", 1024)?;
        let query_scale = if block_count == 62 {
            1.0 / ((embedding_length / head_count) as f32).sqrt()
        } else {
            1.0 / (head_size as f32).sqrt()
        };
        let rms_epsilon = file.positive(&key("attention.layer_norm_rms_epsilon"))? as f32;
        if !(rms_epsilon.is_normal() && rms_epsilon < 1.0) {
            return Err(LlmError::BadMetadata {
                key: key("attention.layer_norm_rms_epsilon"),
                why: format!("{rms_epsilon} is not in (0, 1) as an f32"),
            });
        }
        let rope_scale_global = (1.0 / rope_factor) as f32;
        if !(rope_scale_global.is_normal() && rope_scale_global <= 1e6) {
            return Err(LlmError::BadMetadata {
                key: key("rope.scaling.factor"),
                why: format!("{rope_factor} gives no usable position scale"),
            });
        }
        Ok(Self {
            query_scale,
            context_length: count("context_length", 1 << 24)?,
            embedding_length,
            block_count,
            feed_forward_length: count("feed_forward_length", 1 << 18)?,
            head_count,
            head_count_kv,
            head_size,
            rms_epsilon,
            rope_base_global: optional_positive("rope.freq_base", 1_000_000.0)? as f32,
            rope_base_local: optional_positive("rope.local_freq_base", LOCAL_ROPE_BASE.into())?
                as f32,
            rope_scale_global,
            sliding_window: count("attention.sliding_window", 1 << 24)?,
            sliding_window_pattern,
            vocabulary_size,
        })
    }

    /// Whether layer `i` attends through a sliding window (llama.cpp's `set_swa_pattern`).
    fn is_sliding(&self, layer: usize) -> bool {
        layer % self.sliding_window_pattern < self.sliding_window_pattern - 1
    }
}

struct Norm(Tensor);

impl Norm {
    fn load(file: &GgufFile<'_>, name: &str, width: usize) -> Result<Self, LlmError> {
        let w = file.tensor(name, &[width], &Device::Cpu)?;
        Ok(Self(w.dequantize(&Device::Cpu)?.to_dtype(DType::F32)?))
    }

    fn forward(&self, x: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.0, eps)
    }
}

struct Layer {
    attn_norm: Norm,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: Norm,
    k_norm: Norm,
    post_attn_norm: Norm,
    ffn_norm: Norm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    post_ffn_norm: Norm,
    sliding: bool,
}

/// Rotary tables for positions `0..context`: cos and sin, each `[context, head_size / 2]`.
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(head_size: usize, base: f32, scale: f32, context: usize) -> candle_core::Result<Self> {
        let half = head_size / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| 1.0 / base.powf(2.0 * i as f32 / head_size as f32))
            .collect();
        let mut cos = Vec::with_capacity(context * half);
        let mut sin = Vec::with_capacity(context * half);
        for p in 0..context {
            for &f in &inv {
                let angle = p as f32 * scale * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (context, half), &Device::Cpu)?,
            sin: Tensor::from_vec(sin, (context, half), &Device::Cpu)?,
        })
    }

    /// Rotates `x` (`[1, heads, n, head_size]`) for positions `start..start + n`.
    fn apply(&self, x: &Tensor, start: usize) -> candle_core::Result<Tensor> {
        let n = x.dim(2)?;
        candle_nn::rotary_emb::rope(
            &x.contiguous()?,
            &self.cos.narrow(0, start, n)?,
            &self.sin.narrow(0, start, n)?,
        )
    }
}

/// One sequence's keys and values, per layer: `[heads_kv, positions, head_size]`.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no position.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A loaded Gemma 3 model; cheap to share (the weights are reference counted).
pub struct Gemma3 {
    config: Gemma3Config,
    context: usize,
    embedding: Arc<QTensor>,
    output: QMatMul,
    output_norm: Norm,
    layers: Vec<Layer>,
    rope_local: Rope,
    rope_global: Rope,
}

impl Gemma3 {
    /// Loads the weights of `file` for sequences of at most `context` tokens.
    pub fn load(
        file: &GgufFile<'_>,
        config: Gemma3Config,
        context: usize,
    ) -> Result<Self, LlmError> {
        if context == 0 || context > config.context_length {
            return Err(LlmError::BadParameter {
                name: "context",
                why: format!(
                    "{context} is outside 1..={} (the model's context_length)",
                    config.context_length
                ),
            });
        }
        let c = &config;
        let cpu = Device::Cpu;
        let width = c.embedding_length;
        let q_width = c.head_count * c.head_size;
        let kv_width = c.head_count_kv * c.head_size;
        let matrix = |name: &str, rows: usize, cols: usize| -> Result<QMatMul, LlmError> {
            Ok(QMatMul::from_qtensor(file.tensor(
                name,
                &[rows, cols],
                &cpu,
            )?)?)
        };
        let norm = |name: &str, n: usize| Norm::load(file, name, n);
        let mut layers = Vec::with_capacity(c.block_count);
        for i in 0..c.block_count {
            let p = |t: &str| format!("blk.{i}.{t}.weight");
            layers.push(Layer {
                attn_norm: norm(&p("attn_norm"), width)?,
                q: matrix(&p("attn_q"), q_width, width)?,
                k: matrix(&p("attn_k"), kv_width, width)?,
                v: matrix(&p("attn_v"), kv_width, width)?,
                o: matrix(&p("attn_output"), width, q_width)?,
                q_norm: norm(&p("attn_q_norm"), c.head_size)?,
                k_norm: norm(&p("attn_k_norm"), c.head_size)?,
                post_attn_norm: norm(&p("post_attention_norm"), width)?,
                ffn_norm: norm(&p("ffn_norm"), width)?,
                gate: matrix(&p("ffn_gate"), c.feed_forward_length, width)?,
                up: matrix(&p("ffn_up"), c.feed_forward_length, width)?,
                down: matrix(&p("ffn_down"), width, c.feed_forward_length)?,
                post_ffn_norm: norm(&p("post_ffw_norm"), width)?,
                sliding: c.is_sliding(i),
            });
        }
        let embedding =
            Arc::new(file.tensor("token_embd.weight", &[c.vocabulary_size, width], &cpu)?);
        let output = if file.has_tensor("output.weight") {
            matrix("output.weight", c.vocabulary_size, width)?
        } else {
            QMatMul::from_arc(embedding.clone())?
        };
        Ok(Self {
            output_norm: norm("output_norm.weight", width)?,
            rope_local: Rope::new(c.head_size, c.rope_base_local, 1.0, context)?,
            rope_global: Rope::new(
                c.head_size,
                c.rope_base_global,
                c.rope_scale_global,
                context,
            )?,
            config,
            context,
            embedding,
            output,
            layers,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// The most tokens a sequence may hold (prompt and generation).
    pub fn context(&self) -> usize {
        self.context
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: (0..self.layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs `tokens` after what `cache` holds and returns the logits of the last one.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>, LlmError> {
        let needed = cache.len + tokens.len();
        if tokens.is_empty() || needed > self.context {
            return Err(LlmError::ContextTooLong {
                needed,
                max: self.context,
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t as usize >= self.config.vocabulary_size)
        {
            return Err(LlmError::BadParameter {
                name: "token",
                why: format!("{bad} is outside the vocabulary"),
            });
        }
        // The prompt runs in chunks: a chunk's attention scores take chunk x context floats
        // per head, not prompt x context.
        let mut logits = Vec::new();
        for chunk in tokens.chunks(PREFILL_CHUNK) {
            logits = self.forward_checked(chunk, cache)?;
        }
        Ok(logits)
    }

    fn forward_checked(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> candle_core::Result<Vec<f32>> {
        let c = &self.config;
        let n = tokens.len();
        let start = cache.len;
        let ids = Tensor::new(tokens, &Device::Cpu)?;
        // The cache changes only if the whole step succeeds (tensors are shared, not copied).
        let mut layers = cache.layers.clone();
        let mut x = self
            .embedding
            .embedding(&ids)?
            .affine((c.embedding_length as f64).sqrt(), 0.0)?
            .unsqueeze(0)?; // [1, n, width]
        for (layer, kv) in self.layers.iter().zip(layers.iter_mut()) {
            let h = layer.attn_norm.forward(&x, c.rms_epsilon)?;
            let h = self.attention(layer, &h, kv, start)?;
            let h = layer.post_attn_norm.forward(&h, c.rms_epsilon)?;
            x = (x + h)?;
            let h = layer.ffn_norm.forward(&x, c.rms_epsilon)?;
            let gate = layer.gate.forward(&h)?.gelu()?;
            let h = layer.down.forward(&(gate * layer.up.forward(&h)?)?)?;
            let h = layer.post_ffn_norm.forward(&h, c.rms_epsilon)?;
            x = (x + h)?;
        }
        let last = x.narrow(1, n - 1, 1)?;
        let last = self.output_norm.forward(&last, c.rms_epsilon)?;
        let logits = self
            .output
            .forward(&last)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        cache.layers = layers;
        cache.len += n;
        Ok(logits)
    }

    fn attention(
        &self,
        layer: &Layer,
        x: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
        start: usize,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let n = x.dim(1)?;
        let (heads, heads_kv, hs) = (c.head_count, c.head_count_kv, c.head_size);
        let group = heads / heads_kv;
        // [1, n, heads * hs] -> [1, heads, n, hs]
        let split = |t: Tensor, h: usize| t.reshape((1, n, h, hs))?.transpose(1, 2)?.contiguous();
        let q = split(layer.q.forward(x)?, heads)?;
        let k = split(layer.k.forward(x)?, heads_kv)?;
        let v = split(layer.v.forward(x)?, heads_kv)?;
        let q = layer.q_norm.forward(&q, c.rms_epsilon)?;
        let k = layer.k_norm.forward(&k, c.rms_epsilon)?;
        let rope = if layer.sliding {
            &self.rope_local
        } else {
            &self.rope_global
        };
        let q = (rope.apply(&q, start)? * f64::from(c.query_scale))?;
        let k = rope.apply(&k, start)?.squeeze(0)?; // [heads_kv, n, hs]
        let v = v.squeeze(0)?;
        let (k, v) = match kv.take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
            None => (k, v),
        };
        *kv = Some((k.clone(), v.clone()));
        let total = start + n;
        // Keys a query may see: causal, and on sliding layers only the last `sliding_window`
        // positions including its own (llama.cpp: masked when query - key >= window).
        let first_key = if layer.sliding {
            (start + 1).saturating_sub(c.sliding_window)
        } else {
            0
        };
        let (k, v) = (
            k.narrow(1, first_key, total - first_key)?,
            v.narrow(1, first_key, total - first_key)?,
        );
        let keys = total - first_key;
        // Queries of one key/value head side by side: [heads_kv, group * n, hs].
        let q = q.reshape((heads_kv, group * n, hs))?;
        let scores = q.matmul(&k.t()?)?; // [heads_kv, group * n, keys]
                                         // One new token sees every key kept above; several need the causal (and window) mask.
        let scores = if n > 1 {
            let mut mask = Vec::with_capacity(n * keys);
            for i in 0..n {
                let query = start + i;
                for j in 0..keys {
                    let key = first_key + j;
                    let hidden = key > query || (layer.sliding && query - key >= c.sliding_window);
                    mask.push(if hidden { f32::NEG_INFINITY } else { 0.0 });
                }
            }
            let mask = Tensor::from_vec(mask, (1, 1, n, keys), &Device::Cpu)?;
            scores
                .reshape((heads_kv, group, n, keys))?
                .broadcast_add(&mask)?
                .reshape((heads_kv, group * n, keys))?
        } else {
            scores
        };
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = p.matmul(&v.contiguous()?)?; // [heads_kv, group * n, hs]
        let out = out
            .reshape((1, heads, n, hs))?
            .transpose(1, 2)?
            .reshape((1, n, heads * hs))?;
        layer.o.forward(&out)
    }
}
