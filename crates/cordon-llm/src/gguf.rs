//! Reading a GGUF file held in memory: its header through candle's reader, then typed access to
//! the metadata the engine needs, each value checked against the bounds the engine accepts.
//!
//! GGUF: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. The file is the model
//! owner's, unsealed inside the TEE; it is still checked, since a bad file must be an error that
//! names what was wrong, never a crash of the runtime.

use crate::LlmError;
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use std::io::Cursor;

/// A GGUF file's header (metadata and tensor directory) over the bytes it describes.
pub struct GgufFile<'a> {
    content: Content,
    bytes: &'a [u8],
}

impl<'a> GgufFile<'a> {
    /// Reads the header of a GGUF file held in `bytes`. Tensors are read later, by name.
    pub fn read(bytes: &'a [u8]) -> Result<Self, LlmError> {
        // candle's reader bounds every count by the bytes left; what it does not check (a
        // `general.alignment` of 0, a dimension product past usize) would be a panic there, so
        // one is caught and reported as the file's error rather than taking the runtime down.
        let read = std::panic::catch_unwind(|| Content::read(&mut Cursor::new(bytes)));
        let content = match read {
            Ok(Ok(content)) => content,
            Ok(Err(e)) => return Err(LlmError::Gguf(e.to_string())),
            Err(_) => return Err(LlmError::Gguf("malformed header".into())),
        };
        // Every tensor's bytes lie inside the file, and no two overlap: each tensor is copied
        // out once, so a file cannot make the engine allocate more than its own size by naming
        // the same bytes many times.
        let mut ranges = Vec::with_capacity(content.tensor_infos.len());
        for (name, info) in &content.tensor_infos {
            let dtype = info.ggml_dtype;
            let range = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .filter(|n| n % dtype.block_size() == 0)
                .and_then(|n| (n / dtype.block_size()).checked_mul(dtype.type_size()))
                .and_then(|size| {
                    let start = content.tensor_data_offset.checked_add(info.offset)?;
                    let end = start.checked_add(u64::try_from(size).ok()?)?;
                    (end <= bytes.len() as u64).then_some((start, end))
                })
                .ok_or_else(|| {
                    LlmError::Gguf(format!(
                        "tensor {} of shape {:?} does not fit the file",
                        shorten(name),
                        info.shape.dims()
                    ))
                })?;
            ranges.push((range, name));
        }
        ranges.sort_unstable();
        if let Some(pair) = ranges.windows(2).find(|w| w[0].0 .1 > w[1].0 .0) {
            return Err(LlmError::Gguf(format!(
                "tensors {} and {} overlap",
                shorten(pair[0].1),
                shorten(pair[1].1)
            )));
        }
        Ok(Self { content, bytes })
    }

    fn value(&self, key: &str) -> Result<&Value, LlmError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| LlmError::MissingMetadata(key.to_string()))
    }

    /// Whether the metadata has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    /// Whether the file has a tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<&str, LlmError> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(wrong_type(key, "a string", other)),
        }
    }

    /// An unsigned integer value, of any integer width, in `range`.
    pub fn count(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, LlmError> {
        let n: Option<u64> = match *self.value(key)? {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            ref other => return Err(wrong_type(key, "an integer", other)),
        };
        n.and_then(|n| usize::try_from(n).ok())
            .filter(|n| range.contains(n))
            .ok_or_else(|| LlmError::BadMetadata {
                key: key.to_string(),
                why: match n {
                    Some(n) => format!("{n} is outside {}..={}", range.start(), range.end()),
                    None => "a negative count".to_string(),
                },
            })
    }

    /// A floating-point value that is finite and positive.
    pub fn positive(&self, key: &str) -> Result<f64, LlmError> {
        let v = match *self.value(key)? {
            Value::F32(v) => f64::from(v),
            Value::F64(v) => v,
            ref other => return Err(wrong_type(key, "a float", other)),
        };
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(LlmError::BadMetadata {
                key: key.to_string(),
                why: format!("{v} is not a positive number"),
            })
        }
    }

    /// A boolean value.
    pub fn flag(&self, key: &str) -> Result<bool, LlmError> {
        match *self.value(key)? {
            Value::Bool(b) => Ok(b),
            ref other => Err(wrong_type(key, "a boolean", other)),
        }
    }

    /// An array value whose elements all convert with `each`.
    pub fn array<T>(
        &self,
        key: &str,
        each: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, LlmError> {
        let items = match self.value(key)? {
            Value::Array(items) => items,
            other => return Err(wrong_type(key, "an array", other)),
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                each(v).ok_or_else(|| LlmError::BadMetadata {
                    key: key.to_string(),
                    why: format!("element {i} has type {:?}", v.value_type()),
                })
            })
            .collect()
    }

    /// The tensor `name`, checked to have `dims` (outermost first, as candle orders them).
    pub fn tensor(&self, name: &str, dims: &[usize], device: &Device) -> Result<QTensor, LlmError> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| LlmError::MissingTensor(shorten(name)))?;
        if info.shape.dims() != dims {
            return Err(LlmError::TensorShape {
                name: shorten(name),
                expected: dims.to_vec(),
                found: info.shape.dims().to_vec(),
            });
        }
        info.read(
            &mut Cursor::new(self.bytes),
            self.content.tensor_data_offset,
            device,
        )
        .map_err(|e| LlmError::Gguf(format!("tensor {}: {e}", shorten(name))))
    }
}

/// An untrusted name or value, cut for an error message.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

fn wrong_type(key: &str, wanted: &str, found: &Value) -> LlmError {
    LlmError::BadMetadata {
        key: key.to_string(),
        why: format!("expected {wanted}, found {:?}", found.value_type()),
    }
}
