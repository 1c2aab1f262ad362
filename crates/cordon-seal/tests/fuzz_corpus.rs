//! Replays the committed fuzz corpus (fuzz/corpus/sealed) through the fuzz entry point: a fast check
//! in CI that no known input panics. Long fuzzing runs use `cargo fuzz` (see fuzz/README.md).
//!
//! The seeds are written by `CORDON_WRITE_FUZZ_SEEDS=1 cargo test -p cordon-seal --test fuzz_corpus write_seeds`.

#[path = "../../../fuzz/replay.rs"]
mod replay;
use replay::{corpus, replay};

use cordon_seal::fuzzing;
use cordon_seal::FormatVersion;

#[test]
fn sealed_corpus_never_panics() {
    assert!(replay("sealed", fuzzing::sealed) >= 6);
}

#[test]
fn fixed_key_unseals_the_seeds() {
    // The target is only deep if its key opens the seeds: check that it still does.
    let sealed = fuzzing::seal_fixed(b"hello, fuzzer", 4, FormatVersion::V2).unwrap();
    let (_, plain) = cordon_seal::unseal_to_vec(&sealed[..], &fuzzing::fixed_key()).unwrap();
    assert_eq!(plain.as_slice(), b"hello, fuzzer");
    let seed = std::fs::read(corpus("sealed").join("three_chunks.bin")).unwrap();
    assert!(cordon_seal::unseal_to_vec(&seed[..], &fuzzing::fixed_key()).is_ok());
}

/// Writes the seed corpus: artifacts sealed under the fuzz target's fixed key (empty, one chunk, several
/// chunks, an exact multiple of the chunk size) and the key file formats. Run by hand; the output is
/// committed. Named `.bin`/`.json` because `*.sealed` is gitignored.
#[test]
fn write_seeds() {
    // The committed corpus with `CORDON_WRITE_FUZZ_SEEDS=1` (to regenerate it), else a scratch
    // directory: the generator runs and is checked in every test run.
    let write_corpus = std::env::var_os("CORDON_WRITE_FUZZ_SEEDS").is_some();
    let dir = if write_corpus {
        corpus("sealed")
    } else {
        std::env::temp_dir().join(format!("cordon-seal-fuzz-seeds-{}", std::process::id()))
    };
    std::fs::create_dir_all(&dir).unwrap();
    // Format 1 under the original names, format 2 beside them (`*_v2.bin`).
    let artifacts: [(&str, &[u8], u32, FormatVersion); 8] = [
        ("empty.bin", b"", 16, FormatVersion::V1),
        (
            "one_chunk.bin",
            b"one chunk of plaintext",
            64,
            FormatVersion::V1,
        ),
        (
            "three_chunks.bin",
            b"a fuzzing seed in three chunks",
            12,
            FormatVersion::V1,
        ),
        (
            "exact_chunks.bin",
            b"0123456789abcdef",
            8,
            FormatVersion::V1,
        ),
        ("empty_v2.bin", b"", 16, FormatVersion::V2),
        (
            "one_chunk_v2.bin",
            b"one chunk of plaintext",
            64,
            FormatVersion::V2,
        ),
        (
            "three_chunks_v2.bin",
            b"a fuzzing seed in three chunks",
            12,
            FormatVersion::V2,
        ),
        (
            "exact_chunks_v2.bin",
            b"0123456789abcdef",
            8,
            FormatVersion::V2,
        ),
    ];
    for (name, plain, chunk, format) in artifacts {
        let sealed = fuzzing::seal_fixed(plain, chunk, format).unwrap();
        std::fs::write(dir.join(name), sealed).unwrap();
    }
    std::fs::write(
        dir.join("dek_file.json"),
        fuzzing::fixed_key().to_file_contents().as_bytes(),
    )
    .unwrap();
    std::fs::write(
        dir.join("owner_key.json"),
        fuzzing::fixed_owner().to_file_contents().as_bytes(),
    )
    .unwrap();
    for (name, plain, _, _) in artifacts {
        let sealed = std::fs::read(dir.join(name)).unwrap();
        let (_, opened) = cordon_seal::unseal_to_vec(&sealed[..], &fuzzing::fixed_key()).unwrap();
        assert_eq!(opened.as_slice(), plain, "{name}");
        fuzzing::sealed(&sealed);
    }
    if !write_corpus {
        std::fs::remove_dir_all(&dir).ok();
    }
}
