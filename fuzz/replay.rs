//! The corpus replay the crates' `tests/fuzz_corpus.rs` share (included with `#[path]`): every
//! committed corpus entry, its truncations and a flipped byte go through a fuzz entry point, a
//! fast check in CI that no known input panics.
#![allow(dead_code)] // each crate's test uses a subset

use std::path::{Path, PathBuf};

/// `fuzz/corpus/<target>`, from the crate that includes this file.
pub fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Replays `fuzz/corpus/<target>` through `f`; the number of corpus entries.
pub fn replay(target: &str, f: fn(&[u8])) -> usize {
    replay_dir(&corpus(target), f)
}

/// Replays every file of `dir` through `f`; the number of files.
pub fn replay_dir(dir: &Path, f: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        f(&data);
        // Truncations and a flipped byte of every corpus entry, too.
        for len in [0, 1, data.len() / 2, data.len().saturating_sub(1)] {
            f(&data[..len]);
        }
        let mut flipped = data.clone();
        if let Some(b) = flipped.get_mut(data.len() / 3) {
            *b ^= 0xff;
        }
        f(&flipped);
        n += 1;
    }
    n
}
