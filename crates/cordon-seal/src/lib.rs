//! Sealed artifacts: models and datasets encrypted under a fresh data encryption key (DEK).
//!
//! Format (byte-exact description in `docs/sealed-format.md`):
//!
//! ```text
//! "CORDSEAL" | u16le format version (1) | u32le manifest length | manifest (JSON)
//!            | Ed25519 signature (64) over "cordon sealed manifest v1\0" || manifest
//!            | chunk 0 | chunk 1 | ... | chunk n-1          (each: ciphertext || 16-byte GCM tag)
//! ```
//!
//! Chunks use AES-256-GCM with STREAM-style nonces (Hoang, Reyhanitabar, Rogaway, Vizár 2015):
//! `nonce = nonce_prefix (7) || u32be chunk index || last-chunk flag (1)`, so a truncated, reordered or
//! swapped chunk fails authentication. The manifest, signed by the owner, names the plaintext size and
//! SHA-256; it also carries a commitment to the DEK so that a wrong key is told apart from damage.
//!
//! Sealing and unsealing stream with memory bounded by two batches of about 1 MiB (one chunk each
//! when chunks are larger).

mod error;
mod format;
#[doc(hidden)]
pub mod fuzzing;
mod keys;

pub use error::SealError;
pub use format::{
    read_header, seal, seal_with_header, unseal, unseal_to_vec, FormatVersion, Manifest,
    SealOptions, SealedHeader, DEFAULT_CHUNK_SIZE, MAGIC, MAX_CHUNK_SIZE,
};
pub use keys::{Dek, KeyFile, OwnerKey};
