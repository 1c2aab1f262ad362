//! GGUF files that are not what they claim: each is an error naming what was wrong, never a
//! panic of the runtime that loads them.

use cordon_llm::gguf::GgufFile;
use cordon_llm::{Gemma3Config, LlmError, LlmModel, LoadOptions, Tokenizer};

/// A GGUF v3 header with the given metadata entries (key, type, value bytes) and no tensors.
fn header(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend((entries.len() as u64).to_le_bytes());
    for (key, ty, value) in entries {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(ty.to_le_bytes());
        out.extend(value);
    }
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut v = (s.len() as u64).to_le_bytes().to_vec();
    v.extend(s.as_bytes());
    v
}

const U32: u32 = 4;
const STRING: u32 = 8;

#[test]
fn not_gguf_truncated_or_empty_is_a_gguf_error() {
    for bytes in [
        &b""[..],
        b"GGUF",
        b"GGML\x03\x00\x00\x00",
        b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b",
    ] {
        assert!(matches!(
            LlmModel::from_gguf(bytes, &LoadOptions::default()),
            Err(LlmError::Gguf(_))
        ));
    }
    let full = header(&[("general.architecture", STRING, string("gemma3"))]);
    for cut in 1..full.len() {
        assert!(
            matches!(GgufFile::read(&full[..cut]), Err(LlmError::Gguf(_))),
            "cut at {cut}"
        );
    }
}

#[test]
fn an_alignment_of_zero_is_an_error_not_a_division_by_zero() {
    let bytes = header(&[("general.alignment", U32, 0u32.to_le_bytes().to_vec())]);
    assert!(matches!(GgufFile::read(&bytes), Err(LlmError::Gguf(_))));
}

#[test]
fn another_architecture_or_missing_keys_are_named() {
    let llama = header(&[("general.architecture", STRING, string("llama"))]);
    let file = GgufFile::read(&llama).unwrap();
    assert!(matches!(
        Gemma3Config::from_gguf(&file, 10),
        Err(LlmError::UnsupportedArchitecture(a)) if a == "llama"
    ));
    let bare = header(&[("general.architecture", STRING, string("gemma3"))]);
    let file = GgufFile::read(&bare).unwrap();
    assert!(matches!(
        Gemma3Config::from_gguf(&file, 10),
        Err(LlmError::MissingMetadata(k)) if k.starts_with("gemma3.")
    ));
    assert!(matches!(
        Tokenizer::from_gguf(&file),
        Err(LlmError::MissingMetadata(k)) if k == "tokenizer.ggml.model"
    ));
    // A count of the wrong type, or out of range, is named too.
    let wrong = header(&[
        ("general.architecture", STRING, string("gemma3")),
        ("gemma3.attention.key_length", STRING, string("256")),
    ]);
    let file = GgufFile::read(&wrong).unwrap();
    assert!(matches!(
        Gemma3Config::from_gguf(&file, 10),
        Err(LlmError::BadMetadata { key, .. }) if key == "gemma3.attention.key_length"
    ));
    let zero = header(&[
        ("general.architecture", STRING, string("gemma3")),
        (
            "gemma3.attention.key_length",
            U32,
            0u32.to_le_bytes().to_vec(),
        ),
    ]);
    let file = GgufFile::read(&zero).unwrap();
    assert!(matches!(
        Gemma3Config::from_gguf(&file, 10),
        Err(LlmError::BadMetadata { key, .. }) if key == "gemma3.attention.key_length"
    ));
}

#[test]
fn a_tensor_past_the_end_of_the_file_is_refused_at_read() {
    // One tensor of 1M f32 elements in a file of a few bytes.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    let name = "token_embd.weight";
    bytes.extend((name.len() as u64).to_le_bytes());
    bytes.extend(name.as_bytes());
    bytes.extend(2u32.to_le_bytes());
    bytes.extend(1024u64.to_le_bytes());
    bytes.extend(1024u64.to_le_bytes());
    bytes.extend(0u32.to_le_bytes()); // F32
    bytes.extend(0u64.to_le_bytes());
    assert!(matches!(GgufFile::read(&bytes), Err(LlmError::Gguf(m)) if m.contains(name)));
    // Dimensions whose product overflows.
    let at = bytes.len() - 4 - 8 - 16;
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(GgufFile::read(&bytes), Err(LlmError::Gguf(_))));
}

#[test]
fn tensors_whose_size_overflows_or_that_overlap_are_refused() {
    // One or two F32 tensors in a file with a little data after the header.
    let file = |tensors: &[(&str, [u64; 2], u64)]| {
        let mut bytes = b"GGUF".to_vec();
        bytes.extend(3u32.to_le_bytes());
        bytes.extend((tensors.len() as u64).to_le_bytes());
        bytes.extend(0u64.to_le_bytes());
        for (name, dims, offset) in tensors {
            bytes.extend((name.len() as u64).to_le_bytes());
            bytes.extend(name.as_bytes());
            bytes.extend(2u32.to_le_bytes());
            bytes.extend(dims[0].to_le_bytes());
            bytes.extend(dims[1].to_le_bytes());
            bytes.extend(0u32.to_le_bytes()); // F32
            bytes.extend(offset.to_le_bytes());
        }
        bytes.resize(bytes.len().div_ceil(32) * 32 + 4096, 0);
        bytes
    };
    // 2^31 x 2^31 elements: the element count fits a u64, the byte count does not.
    let huge = file(&[("a", [1 << 31, 1 << 31], 0)]);
    assert!(matches!(GgufFile::read(&huge), Err(LlmError::Gguf(m)) if m.contains("does not fit")));
    // Two tensors of 4 x 64 floats (1 KiB): apart, they load; sharing bytes, they are refused.
    assert!(GgufFile::read(&file(&[("a", [64, 4], 0), ("b", [64, 4], 1024)])).is_ok());
    let overlapping = file(&[("a", [64, 4], 0), ("b", [64, 4], 512)]);
    assert!(
        matches!(GgufFile::read(&overlapping), Err(LlmError::Gguf(m)) if m.contains("overlap"))
    );
    let same = file(&[("a", [64, 4], 0), ("b", [64, 4], 0)]);
    assert!(matches!(GgufFile::read(&same), Err(LlmError::Gguf(m)) if m.contains("overlap")));
}
