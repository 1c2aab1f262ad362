//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the corpus replay test that CI runs
//! (`tests/fuzz_corpus.rs`). Each must return normally for any input.
//!
//! The fuzz target holds a fixed owner key and DEK, and the seeds are artifacts sealed under them
//! ([`seal_fixed`]), so that mutations after the signed header reach chunk decryption, truncation and
//! trailing-data checks: without the key, every input would stop at the signature or key check.

use crate::format::seal_with_key;
use crate::{read_header, unseal, unseal_to_vec, Dek, KeyFile, OwnerKey, SealError, SealOptions};
use std::io::Cursor;

// Fixed, public test values: never use them for anything but fuzzing.
const OWNER_SECRET: [u8; 32] = [5; 32];
const DEK: [u8; 32] = [6; 32];
const KEY_ID: &str = "f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0";
const NONCE_PREFIX: [u8; 7] = [9; 7];

/// The key the fuzz target unseals with.
pub fn fixed_key() -> KeyFile {
    KeyFile {
        key_id: KEY_ID.into(),
        dek: Dek::from_array(DEK),
        signer: fixed_owner().public_key(),
    }
}

/// The owner that signs the seed artifacts.
pub fn fixed_owner() -> OwnerKey {
    OwnerKey::from_secret_bytes(&OWNER_SECRET)
}

/// Seals `plaintext` under the fixed key in `format`: seed generation only (every seed shares the
/// DEK and nonce prefix, which is harmless for public test data and fatal for anything else).
pub fn seal_fixed(
    plaintext: &[u8],
    chunk_size: u32,
    format: crate::FormatVersion,
) -> Result<Vec<u8>, SealError> {
    let mut out = Cursor::new(Vec::new());
    let options = SealOptions {
        name: "fuzz-seed".into(),
        chunk_size,
        format,
        ..SealOptions::default()
    };
    seal_with_key(
        plaintext,
        plaintext.len() as u64,
        &mut out,
        &fixed_owner(),
        &options,
        &mut |_| {},
        (Dek::from_array(DEK), KEY_ID.into(), NONCE_PREFIX),
    )?;
    Ok(out.into_inner())
}

fn seed_artifact() -> Option<&'static [u8]> {
    static ARTIFACT: std::sync::OnceLock<Option<Vec<u8>>> = std::sync::OnceLock::new();
    ARTIFACT
        .get_or_init(|| {
            seal_fixed(
                b"a fuzzing seed in three chunks",
                12,
                crate::FormatVersion::V2,
            )
            .ok()
        })
        .as_deref()
}

/// Sealed artifacts (header, manifest, signature, chunks) and the key file formats.
pub fn sealed(data: &[u8]) {
    let key = fixed_key();
    let mut input = data;
    if let Ok(header) = read_header(&mut input) {
        let _ = header.digest();
        let _ = header.manifest.chunk_count();
    }
    let in_memory = unseal_to_vec(data, &key);
    let mut streamed = Vec::new();
    let streaming = unseal(data, &key, &mut streamed, &mut |_| {});
    // Both unseal paths must agree: same success, same plaintext.
    match (&in_memory, &streaming) {
        (Ok((_, a)), Ok(_)) => assert_eq!(a.as_slice(), streamed.as_slice(), "unseal paths differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("unseal_to_vec and unseal disagree: {in_memory:?} vs {streaming:?}"),
    }

    // Key files are text: other bytes are refused by the callers before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(kf) = KeyFile::from_file_contents(text) {
        let back = KeyFile::from_file_contents(&kf.to_file_contents());
        assert!(
            back.as_ref().is_ok_and(|b| b.key_id == kf.key_id
                && b.dek.as_bytes() == kf.dek.as_bytes()
                && b.signer == kf.signer),
            "DEK file round trip"
        );
        // A parsed key meets the seed artifacts' check_key paths (wrong signer, id or DEK).
        if let Some(artifact) = seed_artifact() {
            let _ = unseal_to_vec(artifact, &kf);
        }
    }
    if let Ok(owner) = OwnerKey::from_file_contents(text) {
        let back = OwnerKey::from_file_contents(&owner.to_file_contents());
        assert!(
            back.is_ok_and(|b| b.public_key() == owner.public_key()),
            "owner key file round trip"
        );
    }
}
