use thiserror::Error;

/// Why a sealed artifact could not be made or opened.
#[derive(Debug, Error)]
pub enum SealError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "not a Cordon sealed artifact: it does not begin with \"CORDSEAL\" (it begins {found:?})"
    )]
    BadMagic { found: String },
    #[error("sealed format version {0} is not supported (this build reads versions 1 and 2)")]
    Version(u16),
    #[error("sealed header is truncated: {0}")]
    TruncatedHeader(&'static str),
    #[error("manifest is {0} bytes; at most {1} allowed")]
    ManifestTooLarge(usize, usize),
    #[error("manifest is not valid: {0}")]
    Manifest(String),
    #[error("manifest signature does not verify with signer {signer}: the manifest was altered or signed by another key")]
    BadSignature { signer: String },
    #[error("manifest is signed by {found}, expected signer {expected}")]
    WrongSigner { found: String, expected: String },
    #[error("wrong key: key id {found} was given, the artifact is sealed under key id {expected}")]
    WrongKeyId { found: String, expected: String },
    #[error("wrong key: the DEK does not match the manifest's key commitment")]
    WrongKey,
    #[error(
        "chunk {index} failed authentication: the ciphertext was altered, reordered or swapped"
    )]
    ChunkAuth { index: u64 },
    /// Also what an in-memory unseal reports, before it reserves anything, when the input is shorter
    /// than the manifest's `plaintext_size` and chunk layout need.
    #[error("sealed artifact is truncated: expected {expected} chunks, found only {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("sealed artifact has unexpected bytes after its final chunk (at least {0})")]
    TrailingData(u64),
    #[error("plaintext {digest} mismatch: manifest says {expected}, content hashes to {found}")]
    DigestMismatch {
        /// `SHA-256` (format 1) or `BLAKE3` (format 2).
        digest: &'static str,
        expected: String,
        found: String,
    },
    /// The second thread of sealing or unsealing stopped without an answer (it panicked).
    #[error("the sealing thread stopped unexpectedly")]
    Worker,
    #[error("input changed while sealing: expected {expected} bytes, read {found}")]
    InputChanged { expected: u64, found: u64 },
    /// Memory for a size that the manifest names (the plaintext of an in-memory unseal, or one
    /// chunk) could not be reserved. The size was first checked against what the input holds, so
    /// this is the process running out of memory, not a lying manifest: the allocation is refused
    /// instead of aborting the process.
    #[error("cannot reserve {bytes} bytes for the {what} the manifest claims: out of memory")]
    OutOfMemory { what: &'static str, bytes: u64 },
    #[error("key file is not valid: {0}")]
    KeyFile(String),
}
