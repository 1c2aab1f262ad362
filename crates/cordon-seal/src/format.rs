//! Reading and writing the sealed format.

use crate::keys::{Dek, KeyFile, OwnerKey};
use crate::SealError;
use ed25519_dalek::{Signature, Signer, VerifyingKey};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom, Write};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 8] = b"CORDSEAL";
pub const AEAD_NAME: &str = "AES-256-GCM";
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Chunks larger than this are refused, which bounds the memory a reader needs.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
const MAX_MANIFEST_LEN: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const SIGNATURE_CONTEXT: &[u8] = b"cordon sealed manifest v1\0";
const COMMITMENT_CONTEXT: &[u8] = b"cordon sealed dek commitment v1\0";
const HEADER_FIXED_LEN: u64 = 8 + 2 + 4;

/// A version of the sealed format (docs/sealed-format.md). They differ only in the digest of the
/// whole plaintext that the signed manifest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatVersion {
    /// `cordon-sealed/1`: SHA-256 (`plaintext_sha256`), readable by every Cordon release.
    V1,
    /// `cordon-sealed/2`: BLAKE3 (`plaintext_blake3`), about 2.6 times faster here; read by releases
    /// from the one that introduced it (older ones refuse it: "format version 2 is not supported").
    V2,
}

impl FormatVersion {
    /// The header's version number.
    pub fn number(self) -> u16 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
        }
    }

    /// The manifest's `format`.
    pub fn name(self) -> &'static str {
        match self {
            FormatVersion::V1 => "cordon-sealed/1",
            FormatVersion::V2 => "cordon-sealed/2",
        }
    }

    fn from_number(n: u16) -> Option<FormatVersion> {
        match n {
            1 => Some(FormatVersion::V1),
            2 => Some(FormatVersion::V2),
            _ => None,
        }
    }

    fn digest_name(self) -> &'static str {
        match self {
            FormatVersion::V1 => "SHA-256",
            FormatVersion::V2 => "BLAKE3",
        }
    }

    fn hasher(self) -> PlaintextHasher {
        match self {
            FormatVersion::V1 => PlaintextHasher::Sha256(Sha256::new()),
            FormatVersion::V2 => PlaintextHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

/// The digest of the whole plaintext, of the artifact's format version.
enum PlaintextHasher {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl PlaintextHasher {
    fn update(&mut self, data: &[u8]) {
        match self {
            PlaintextHasher::Sha256(h) => h.update(data),
            PlaintextHasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    fn finalize_hex(self) -> String {
        match self {
            PlaintextHasher::Sha256(h) => hex::encode(h.finalize()),
            PlaintextHasher::Blake3(mut h) => {
                let digest = h.finalize().to_hex().to_string();
                // Its state holds the last chunk of plaintext.
                zeroize::Zeroize::zeroize(&mut *h);
                digest
            }
        }
    }
}

/// A field that may be absent but, when present, is a string: an explicit `null` is refused, so
/// that a manifest has one spelling (its digest names the artifact).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// The signed description of a sealed artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `cordon-sealed/2`, or `cordon-sealed/1` ([`FormatVersion`]).
    pub format: String,
    pub name: String,
    pub version: String,
    pub media_type: String,
    /// Names the DEK at the key broker (32 hex digits, random).
    pub key_id: String,
    pub plaintext_size: u64,
    /// Format 1: SHA-256 of the plaintext, lowercase hex.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub plaintext_sha256: Option<String>,
    /// Format 2: BLAKE3 of the plaintext, lowercase hex.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub plaintext_blake3: Option<String>,
    pub chunk_size: u32,
    /// Always `AES-256-GCM`.
    pub aead: String,
    /// 7 random bytes, hex: the STREAM nonce prefix.
    pub nonce_prefix: String,
    /// SHA-256(context || DEK || key_id || nonce_prefix), hex.
    pub dek_commitment: String,
    /// The owner's Ed25519 public key, hex.
    pub signer: String,
}

impl Manifest {
    /// Number of chunks: at least one, so that an empty artifact still has an authenticated final chunk.
    pub fn chunk_count(&self) -> u64 {
        self.plaintext_size
            .div_ceil(u64::from(self.chunk_size))
            .max(1)
    }

    /// Bytes of chunks (ciphertext and tags) that follow the header: `plaintext_size + 16 × n`.
    /// For a manifest that passed the checks this is below 2^57; it saturates otherwise.
    pub fn chunks_len(&self) -> u64 {
        self.plaintext_size
            .saturating_add(self.chunk_count().saturating_mul(TAG_LEN as u64))
    }

    /// Length of chunk data the streaming reader needs at once: one chunk and its tag, never more
    /// than the whole plaintext claims (so a small artifact with a large `chunk_size` costs little).
    fn chunk_buffer_len(&self) -> u64 {
        self.plaintext_size.min(u64::from(self.chunk_size)) + TAG_LEN as u64
    }

    /// The format version the manifest names.
    pub fn format_version(&self) -> Result<FormatVersion, SealError> {
        [FormatVersion::V1, FormatVersion::V2]
            .into_iter()
            .find(|v| v.name() == self.format)
            .ok_or_else(|| {
                SealError::Manifest(format!(
                    "format is {:?}, expected \"cordon-sealed/1\" or \"cordon-sealed/2\"",
                    self.format
                ))
            })
    }

    /// The plaintext digest the manifest names (hex), the one of its format version.
    pub fn plaintext_digest(&self) -> Option<&str> {
        match self.format_version().ok()? {
            FormatVersion::V1 => self.plaintext_sha256.as_deref(),
            FormatVersion::V2 => self.plaintext_blake3.as_deref(),
        }
    }

    /// Whether `plaintext` is the content this manifest names (its size and its digest).
    pub fn names_plaintext(&self, plaintext: &[u8]) -> bool {
        let Ok(version) = self.format_version() else {
            return false;
        };
        let mut h = version.hasher();
        h.update(plaintext);
        plaintext.len() as u64 == self.plaintext_size
            && self.plaintext_digest() == Some(h.finalize_hex().as_str())
    }

    fn check(&self) -> Result<(), SealError> {
        let bad = |m: String| Err(SealError::Manifest(m));
        let version = self.format_version()?;
        if self.aead != AEAD_NAME {
            return bad(format!(
                "aead is {:?}, this build supports {AEAD_NAME:?}",
                self.aead
            ));
        }
        if self.chunk_size == 0 || self.chunk_size > MAX_CHUNK_SIZE {
            return bad(format!(
                "chunk_size {} is outside 1..={MAX_CHUNK_SIZE}",
                self.chunk_size
            ));
        }
        if self.chunk_count() > u64::from(u32::MAX) {
            return bad("too many chunks for a 32-bit chunk counter".into());
        }
        self.nonce_prefix()?;
        // Exactly the digest of the format's version, 32 bytes of hex.
        let (field, digest, other) = match version {
            FormatVersion::V1 => (
                "plaintext_sha256",
                &self.plaintext_sha256,
                &self.plaintext_blake3,
            ),
            FormatVersion::V2 => (
                "plaintext_blake3",
                &self.plaintext_blake3,
                &self.plaintext_sha256,
            ),
        };
        if other.is_some() {
            return bad(format!("{} has no other digest than {field}", self.format));
        }
        match digest {
            Some(d) if hex_array::<32>(d, field).is_ok() => {}
            Some(_) => return bad(format!("{field} must be 32 bytes of hex")),
            None => return bad(format!("{} needs {field}", self.format)),
        }
        hex_array::<32>(&self.dek_commitment, "dek_commitment")?;
        self.signer_key()?;
        Ok(())
    }

    fn nonce_prefix(&self) -> Result<[u8; 7], SealError> {
        hex_array::<7>(&self.nonce_prefix, "nonce_prefix")
    }

    /// The owner's public key that signed this manifest.
    pub fn signer_key(&self) -> Result<[u8; 32], SealError> {
        hex_array::<32>(&self.signer, "signer")
    }

    /// SHA-256 of the manifest bytes as sealed: what clients and audit records call the artifact's digest.
    pub fn digest_of(manifest_bytes: &[u8]) -> [u8; 32] {
        Sha256::digest(manifest_bytes).into()
    }
}

fn hex_array<const N: usize>(s: &str, field: &str) -> Result<[u8; N], SealError> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(SealError::Manifest(format!(
            "{field} must be lowercase hex"
        )));
    }
    hex::decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SealError::Manifest(format!("{field} must be {N} bytes of lowercase hex")))
}

fn dek_commitment(dek: &Dek, key_id: &str, nonce_prefix: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(COMMITMENT_CONTEXT);
    h.update(dek.as_bytes());
    h.update(key_id.as_bytes());
    h.update(nonce_prefix);
    h.finalize().into()
}

/// The chunk cipher. Bulk AES-256-GCM uses ring, whose AES-NI/VAES and CLMUL code is several times
/// faster than a portable implementation (see docs/benchmarks.md). ring does not zeroize its expanded
/// key schedule on drop; the DEK itself is zeroized (docs/threat-model.md).
fn chunk_cipher(dek: &Dek) -> Result<LessSafeKey, SealError> {
    UnboundKey::new(&AES_256_GCM, dek.as_bytes())
        .map(LessSafeKey::new)
        .map_err(|_| SealError::Manifest("AES-256-GCM key setup failed".into()))
}

fn chunk_nonce(prefix: &[u8], index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..7].copy_from_slice(prefix);
    // `Manifest::check` keeps the chunk count within u32.
    n[7..11].copy_from_slice(&(index as u32).to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// What describes the artifact being sealed.
#[derive(Debug, Clone)]
pub struct SealOptions {
    pub name: String,
    pub version: String,
    pub media_type: String,
    pub chunk_size: u32,
    /// [`FormatVersion::V2`] by default; [`FormatVersion::V1`] for readers from before it.
    pub format: FormatVersion,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            name: "artifact".into(),
            version: "1".into(),
            media_type: "application/octet-stream".into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            format: FormatVersion::V2,
        }
    }
}

/// Plaintext bytes per step of the two-thread pipeline (whole chunks, at least one): while one
/// thread hashes a batch, the other encrypts and writes the previous one and reads the next.
/// Small enough that a batch is still in the cache when the second thread reads it.
const BATCH_BYTES: u64 = 1 << 20;

/// Artifacts larger than this are sealed and unsealed on two threads; smaller ones on one (a
/// thread costs more than it saves there).
const PARALLEL_FROM: u64 = 4 << 20;

/// Chunks in one batch: about [`BATCH_BYTES`] of chunks with their tags, at least one. With tiny
/// chunks a batch stays about 1 MiB (tags included), not 17 times that.
fn chunks_per_batch(chunk_size: u32) -> u64 {
    (BATCH_BYTES / (u64::from(chunk_size) + TAG_LEN as u64)).max(1)
}

/// The chunks of an artifact, `(index, plaintext length)`, in batches of about [`BATCH_BYTES`].
fn chunk_batches(
    size: u64,
    chunk_size: u32,
    chunks: u64,
) -> impl Iterator<Item = Vec<(u64, usize)>> {
    // The same count the batch buffers are sized with.
    let per_batch = chunks_per_batch(chunk_size);
    (0..chunks).step_by(per_batch as usize).map(move |first| {
        (first..(first + per_batch).min(chunks))
            .map(|i| {
                let start = i * u64::from(chunk_size);
                (i, (size - start).min(u64::from(chunk_size)) as usize)
            })
            .collect()
    })
}

/// A batch in a buffer: its chunks `(index, plaintext length)` and where their plaintext lies
/// (each chunk followed by room for its tag).
type Filled = (Vec<(u64, usize)>, Vec<std::ops::Range<usize>>);

/// The two-thread pipeline of sealing and unsealing. `fill` reads the next batch into a buffer
/// (`None` when there is none left); `work` does the batch's cryptography (hash, then encrypt; or
/// decrypt, then hash) in order; `after` writes it. With `parallel`, `work` runs on a second
/// thread while this one reads the next batch and writes the previous one, over two buffers in
/// turn (the two threads' shares are about even: reading and writing against AES and the digest);
/// else all three run here, one batch at a time. Either way batches are worked on and written in
/// order, each written only after `work` succeeded on it, and the first error ends everything.
fn crypt_pipeline(
    parallel: bool,
    hasher: PlaintextHasher,
    buffers: [Zeroizing<Vec<u8>>; 2],
    mut fill: impl FnMut(&mut [u8]) -> Result<Option<Filled>, SealError>,
    mut work: impl FnMut(&mut PlaintextHasher, &mut [u8], &Filled) -> Result<(), SealError> + Send,
    mut after: impl FnMut(&[u8], Filled) -> Result<(), SealError>,
) -> Result<PlaintextHasher, SealError> {
    if !parallel {
        let [mut buf, _] = buffers;
        let mut hasher = hasher;
        while let Some(filled) = fill(&mut buf)? {
            work(&mut hasher, &mut buf, &filled)?;
            after(&buf, filled)?;
        }
        return Ok(hasher);
    }
    type Batch = (Zeroizing<Vec<u8>>, Filled);
    std::thread::scope(|s| {
        let (to_worker, batches) = std::sync::mpsc::sync_channel::<Batch>(2);
        let (done_tx, done) = std::sync::mpsc::sync_channel::<(Batch, Result<(), SealError>)>(2);
        let worker = s.spawn(move || {
            let mut hasher = hasher;
            for (mut buf, filled) in batches {
                let result = work(&mut hasher, &mut buf, &filled);
                let failed = result.is_err();
                if done_tx.send(((buf, filled), result)).is_err() || failed {
                    break;
                }
            }
            hasher
        });
        let mut free: Vec<Zeroizing<Vec<u8>>> = buffers.into();
        let mut in_flight = 0;
        let mut ended = false;
        let stopped = || SealError::Worker;
        loop {
            while !ended {
                let Some(mut buf) = free.pop() else { break };
                match fill(&mut buf)? {
                    Some(filled) => {
                        if to_worker.send((buf, filled)).is_err() {
                            // The worker stopped at an error: that error is the answer.
                            return Err(done
                                .iter()
                                .find_map(|(_, result)| result.err())
                                .unwrap_or_else(stopped));
                        }
                        in_flight += 1;
                    }
                    None => ended = true,
                }
            }
            if in_flight == 0 {
                break;
            }
            let ((buf, filled), result) = done.recv().map_err(|_| stopped())?;
            in_flight -= 1;
            result?;
            after(&buf, filled)?;
            free.push(buf);
        }
        drop(to_worker);
        worker.join().map_err(|_| stopped())
    })
}

/// Seals `size` bytes from `input` into `output` under a fresh DEK, signing the manifest with `owner`.
///
/// `output` must be seekable: the plaintext digest is computed while encrypting, in one pass over the
/// input, and written into the manifest (whose length does not depend on the digest) at the end.
/// `progress` is called with the number of plaintext bytes done.
///
/// [`seal_with_header`] also returns the header as written (with the manifest digest).
pub fn seal<R: Read, W: Write + Seek>(
    input: R,
    size: u64,
    output: W,
    owner: &OwnerKey,
    options: &SealOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(Manifest, KeyFile), SealError> {
    seal_with_header(input, size, output, owner, options, progress)
        .map(|(header, key)| (header.manifest, key))
}

/// [`seal`], returning the header exactly as written to `output`: its
/// [`SealedHeader::digest`] is the manifest digest that runtimes bind in their evidence, so a
/// caller need not read the artifact back (and check the signature it just made) to learn it.
pub fn seal_with_header<R: Read, W: Write + Seek>(
    input: R,
    size: u64,
    output: W,
    owner: &OwnerKey,
    options: &SealOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<(SealedHeader, KeyFile), SealError> {
    let mut rng = rand::rng();
    let mut key_id = [0u8; 16];
    rng.fill_bytes(&mut key_id);
    let mut prefix = [0u8; 7];
    rng.fill_bytes(&mut prefix);
    seal_with_key(
        input,
        size,
        output,
        owner,
        options,
        progress,
        (Dek::generate(), hex::encode(key_id), prefix),
    )
}

/// [`seal`] with a given DEK, key id and nonce prefix. Only `seal` (fresh random values) and the
/// fuzzing seed generator (fixed values, so that the fuzz target can hold the key) call this: reusing a
/// DEK and nonce prefix for two plaintexts would break AES-GCM's confidentiality.
pub(crate) fn seal_with_key<R: Read, W: Write + Seek>(
    mut input: R,
    size: u64,
    mut output: W,
    owner: &OwnerKey,
    options: &SealOptions,
    progress: &mut dyn FnMut(u64),
    (dek, key_id, prefix): (Dek, String, [u8; 7]),
) -> Result<(SealedHeader, KeyFile), SealError> {
    let version = options.format;
    let mut manifest = Manifest {
        format: version.name().into(),
        name: options.name.clone(),
        version: options.version.clone(),
        media_type: options.media_type.clone(),
        key_id: key_id.clone(),
        plaintext_size: size,
        plaintext_sha256: (version == FormatVersion::V1).then(|| "0".repeat(64)),
        plaintext_blake3: (version == FormatVersion::V2).then(|| "0".repeat(64)),
        chunk_size: options.chunk_size,
        aead: AEAD_NAME.into(),
        nonce_prefix: hex::encode(prefix),
        dek_commitment: hex::encode(dek_commitment(&dek, &key_id, &prefix)),
        signer: hex::encode(owner.public_key()),
    };
    manifest.check()?;
    let placeholder =
        serde_json::to_vec(&manifest).map_err(|e| SealError::Manifest(e.to_string()))?;
    if placeholder.len() > MAX_MANIFEST_LEN {
        return Err(SealError::ManifestTooLarge(
            placeholder.len(),
            MAX_MANIFEST_LEN,
        ));
    }
    let start = output.stream_position()?;
    output.write_all(MAGIC)?;
    output.write_all(&version.number().to_le_bytes())?;
    output.write_all(&(placeholder.len() as u32).to_le_bytes())?;
    output.write_all(&placeholder)?;
    output.write_all(&[0u8; 64])?;

    let cipher = chunk_cipher(&dek)?;
    let chunks = manifest.chunk_count();
    // Two batch buffers, each chunk followed by room for its tag: one being worked on while the
    // other is written and refilled.
    let per_batch = chunks_per_batch(options.chunk_size);
    let batch_len = (manifest.chunk_buffer_len() * per_batch).min(manifest.chunks_len());
    let buffers = [
        zeroed_buffer(batch_len, "batch")?,
        zeroed_buffer(batch_len, "batch")?,
    ];
    let mut batches = chunk_batches(size, options.chunk_size, chunks);
    let mut read: u64 = 0;
    let mut done: u64 = 0;
    let fill = |buf: &mut [u8]| {
        let Some(batch) = batches.next() else {
            return Ok(None);
        };
        let mut ranges = Vec::with_capacity(batch.len());
        let mut at = 0;
        for &(_, len) in &batch {
            read_exact_or(&mut input, &mut buf[at..at + len], size, read)?;
            read += len as u64;
            ranges.push(at..at + len);
            at += len + TAG_LEN;
        }
        Ok(Some((batch, ranges)))
    };
    let cipher = &cipher;
    // Hash each chunk's plaintext, then encrypt it in place and put its tag after it.
    let work = |hasher: &mut PlaintextHasher, buf: &mut [u8], (batch, ranges): &Filled| {
        for (&(index, _), r) in batch.iter().zip(ranges) {
            hasher.update(&buf[r.clone()]);
            let nonce = chunk_nonce(&prefix, index, index + 1 == chunks);
            let tag = cipher
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf[r.clone()],
                )
                .map_err(|_| SealError::Manifest("AES-GCM refused the chunk".into()))?;
            buf[r.end..r.end + TAG_LEN].copy_from_slice(tag.as_ref());
        }
        Ok(())
    };
    let after = |buf: &[u8], (_, ranges): Filled| {
        let end = ranges.last().map_or(0, |r| r.end + TAG_LEN);
        output.write_all(&buf[..end])?;
        done += ranges.iter().map(|r| r.len() as u64).sum::<u64>();
        progress(done);
        Ok(())
    };
    let hasher = crypt_pipeline(
        size > PARALLEL_FROM,
        version.hasher(),
        buffers,
        fill,
        work,
        after,
    )?;
    let mut probe = [0u8; 1];
    if input.read(&mut probe)? != 0 {
        return Err(SealError::InputChanged {
            expected: size,
            found: size + 1,
        });
    }

    let digest = Some(hasher.finalize_hex());
    match version {
        FormatVersion::V1 => manifest.plaintext_sha256 = digest,
        FormatVersion::V2 => manifest.plaintext_blake3 = digest,
    }
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| SealError::Manifest(e.to_string()))?;
    if manifest_bytes.len() != placeholder.len() {
        return Err(SealError::Manifest(
            "manifest length changed while sealing".into(),
        ));
    }
    let signature = owner.signing_key().sign(&signed_message(&manifest_bytes));
    let end = output.stream_position()?;
    output.seek(SeekFrom::Start(start + HEADER_FIXED_LEN))?;
    output.write_all(&manifest_bytes)?;
    output.write_all(&signature.to_bytes())?;
    output.seek(SeekFrom::Start(end))?;
    output.flush()?;
    let key = KeyFile {
        key_id,
        dek,
        signer: owner.public_key(),
    };
    Ok((
        SealedHeader {
            manifest,
            manifest_bytes,
        },
        key,
    ))
}

fn read_exact_or<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    size: u64,
    done: u64,
) -> Result<(), SealError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(SealError::InputChanged {
                    expected: size,
                    found: done + filled as u64,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_CONTEXT.len() + manifest_bytes.len());
    m.extend_from_slice(SIGNATURE_CONTEXT);
    m.extend_from_slice(manifest_bytes);
    m
}

/// A parsed header whose manifest signature has been verified against the signer it names.
#[derive(Debug, Clone)]
pub struct SealedHeader {
    pub manifest: Manifest,
    /// The manifest exactly as sealed; its SHA-256 is the artifact's digest.
    pub manifest_bytes: Vec<u8>,
}

impl SealedHeader {
    pub fn digest(&self) -> [u8; 32] {
        Manifest::digest_of(&self.manifest_bytes)
    }

    /// The length of the whole artifact this header describes: header, manifest, signature and
    /// every chunk. An input of any other length fails to unseal (`Truncated` or `TrailingData`).
    pub fn sealed_len(&self) -> u64 {
        (HEADER_FIXED_LEN + self.manifest_bytes.len() as u64 + 64)
            .saturating_add(self.manifest.chunks_len())
    }
}

/// A zero-filled buffer of `len` bytes for a size the manifest (or the caller) names. The
/// allocation is fallible: a size the process cannot hold is [`SealError::OutOfMemory`], never an
/// abort. Callers bound `len` first (one chunk at most, or what the input holds).
fn zeroed_buffer(len: u64, what: &'static str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut buf = reserve_zeroizing(len, what)?;
    // `len` fits in usize (it was reserved), and filling within the reservation never reallocates.
    buf.resize(len as usize, 0);
    Ok(buf)
}

/// An empty zeroizing vector with room for exactly `len` bytes, reserved fallibly (see
/// [`zeroed_buffer`]).
fn reserve_zeroizing(len: u64, what: &'static str) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let oom = || SealError::OutOfMemory { what, bytes: len };
    let n = usize::try_from(len).map_err(|_| oom())?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| oom())?;
    Ok(Zeroizing::new(v))
}

/// Reads and checks the header: magic, version, manifest, and the manifest's signature by the signer
/// it names. Whether that signer is the expected one is checked by [`unseal`].
pub fn read_header<R: Read>(input: &mut R) -> Result<SealedHeader, SealError> {
    let mut fixed = [0u8; HEADER_FIXED_LEN as usize];
    // A short file that does not begin like a sealed artifact is some other file, not a
    // truncated one: say which.
    let got = read_full(input, &mut fixed)?;
    let magic_len = got.min(MAGIC.len());
    if fixed[..magic_len] != MAGIC[..magic_len] || got == 0 {
        return Err(SealError::BadMagic {
            found: String::from_utf8_lossy(&fixed[..magic_len]).into_owned(),
        });
    }
    if got < fixed.len() {
        return Err(SealError::TruncatedHeader(
            "magic, version and manifest length",
        ));
    }
    let number = u16::from_le_bytes([fixed[8], fixed[9]]);
    let version = FormatVersion::from_number(number).ok_or(SealError::Version(number))?;
    let len = u32::from_le_bytes([fixed[10], fixed[11], fixed[12], fixed[13]]) as usize;
    if len > MAX_MANIFEST_LEN {
        return Err(SealError::ManifestTooLarge(len, MAX_MANIFEST_LEN));
    }
    let mut manifest_bytes = vec![0u8; len];
    read_header_part(input, &mut manifest_bytes, "manifest")?;
    let mut sig = [0u8; 64];
    read_header_part(input, &mut sig, "manifest signature")?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| SealError::Manifest(e.to_string()))?;
    manifest.check()?;
    // The header's version and the signed manifest's must agree: the version number is outside
    // the signature.
    if manifest.format_version()? != version {
        return Err(SealError::Manifest(format!(
            "the header says format version {number}, the signed manifest {:?}",
            manifest.format
        )));
    }
    let signer = manifest.signer_key()?;
    let key = VerifyingKey::from_bytes(&signer).map_err(|_| SealError::BadSignature {
        signer: manifest.signer.clone(),
    })?;
    key.verify_strict(
        &signed_message(&manifest_bytes),
        &Signature::from_bytes(&sig),
    )
    .map_err(|_| SealError::BadSignature {
        signer: manifest.signer.clone(),
    })?;
    Ok(SealedHeader {
        manifest,
        manifest_bytes,
    })
}

fn read_header_part<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<(), SealError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SealError::TruncatedHeader(what),
        _ => SealError::Io(e),
    })
}

/// Checks the header against the key: expected signer, key id, and DEK commitment.
fn check_key(header: &SealedHeader, key: &KeyFile) -> Result<(), SealError> {
    let m = &header.manifest;
    let signer = m.signer_key()?;
    if signer != key.signer {
        return Err(SealError::WrongSigner {
            found: m.signer.clone(),
            expected: hex::encode(key.signer),
        });
    }
    if m.key_id != key.key_id {
        return Err(SealError::WrongKeyId {
            found: key.key_id.clone(),
            expected: m.key_id.clone(),
        });
    }
    let expected = hex_array::<32>(&m.dek_commitment, "dek_commitment")?;
    let found = dek_commitment(&key.dek, &m.key_id, &m.nonce_prefix()?);
    if !bool::from(found.ct_eq(&expected)) {
        return Err(SealError::WrongKey);
    }
    Ok(())
}

/// Unseals from `input` to `output`, streaming with memory bounded by two batches of chunks.
///
/// Every chunk is authenticated before its plaintext is written. If this returns an error, what was
/// written to `output` must be discarded.
pub fn unseal<R: Read, W: Write>(
    mut input: R,
    key: &KeyFile,
    output: W,
    progress: &mut dyn FnMut(u64),
) -> Result<SealedHeader, SealError> {
    let header = read_header(&mut input)?;
    check_key(&header, key)?;
    decrypt_chunks(&header, input, key, output, progress)?;
    Ok(header)
}

fn decrypt_chunks<R: Read, W: Write>(
    header: &SealedHeader,
    mut input: R,
    key: &KeyFile,
    mut output: W,
    progress: &mut dyn FnMut(u64),
) -> Result<(), SealError> {
    let m = &header.manifest;
    let version = m.format_version()?;
    let cipher = chunk_cipher(&key.dek)?;
    let prefix = m.nonce_prefix()?;
    let chunks = m.chunk_count();
    // Two batch buffers of whole chunks with their tags (`chunk_size` is at most 16 MiB, checked
    // with the manifest; a batch holds about BATCH_BYTES of plaintext, never more than the
    // manifest's).
    let per_batch = chunks_per_batch(m.chunk_size);
    let batch_len = (m.chunk_buffer_len() * per_batch).min(m.chunks_len());
    let buffers = [
        zeroed_buffer(batch_len, "batch")?,
        zeroed_buffer(batch_len, "batch")?,
    ];
    let mut batches = chunk_batches(m.plaintext_size, m.chunk_size, chunks);
    let mut done: u64 = 0;
    // Reads one batch of sealed chunks; then each chunk is authenticated and decrypted, and its
    // plaintext hashed (on the other thread); then the batch's plaintext is written. No plaintext is
    // written before its chunk is authenticated; the whole plaintext's digest is checked at the end.
    let fill = |buf: &mut [u8]| {
        let Some(batch) = batches.next() else {
            return Ok(None);
        };
        let mut ranges = Vec::with_capacity(batch.len());
        let mut at = 0;
        for &(index, len) in &batch {
            if read_full(&mut input, &mut buf[at..at + len + TAG_LEN])? < len + TAG_LEN {
                return Err(SealError::Truncated {
                    expected: chunks,
                    found: index,
                });
            }
            ranges.push(at..at + len);
            at += len + TAG_LEN;
        }
        Ok(Some((batch, ranges)))
    };
    let cipher = &cipher;
    let work = |hasher: &mut PlaintextHasher, buf: &mut [u8], (batch, ranges): &Filled| {
        for (&(index, _), r) in batch.iter().zip(ranges) {
            let nonce = chunk_nonce(&prefix, index, index + 1 == chunks);
            let plain = cipher
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf[r.start..r.end + TAG_LEN],
                )
                .map_err(|_| SealError::ChunkAuth { index })?;
            hasher.update(plain);
        }
        Ok(())
    };
    let after = |buf: &[u8], (_, ranges): Filled| {
        for r in ranges {
            output.write_all(&buf[r.clone()])?;
            done += r.len() as u64;
        }
        progress(done);
        Ok(())
    };
    let parallel = m.plaintext_size > PARALLEL_FROM;
    let hasher = crypt_pipeline(parallel, version.hasher(), buffers, fill, work, after)?;
    let mut rest = [0u8; 4096];
    let trailing = read_full(&mut input, &mut rest)?;
    if trailing != 0 {
        return Err(SealError::TrailingData(trailing as u64));
    }
    let found = hasher.finalize_hex();
    let expected = m.plaintext_digest().unwrap_or_default();
    if found != expected {
        return Err(SealError::DigestMismatch {
            digest: version.digest_name(),
            expected: expected.to_string(),
            found,
        });
    }
    output.flush()?;
    Ok(())
}

/// Unseals an artifact held in memory into memory (the runtime's path: plaintext never touches
/// the disk).
///
/// The plaintext buffer is reserved whole before decryption, so it never reallocates (which would
/// leave unzeroized copies of plaintext behind). Its size comes from the manifest, which anyone
/// can sign with a key of their own (the signer is checked, but a party may seal its own lies), so
/// it is first checked against the input: `plaintext_size` and the chunk layout must need no more
/// bytes than follow the header, else the artifact is `Truncated` (as streaming [`unseal`] reports
/// it) and nothing is reserved. Then the reservation is fallible: `OutOfMemory`, never an abort.
pub fn unseal_to_vec(
    input: &[u8],
    key: &KeyFile,
) -> Result<(SealedHeader, Zeroizing<Vec<u8>>), SealError> {
    let mut input = input;
    let header = read_header(&mut input)?;
    check_key(&header, key)?;
    let m = &header.manifest;
    let available = input.len() as u64;
    if available < m.chunks_len() {
        // The chunk that the streaming reader would find short: every chunk before the last one
        // takes `chunk_size + 16` bytes.
        let full_chunks = available / (u64::from(m.chunk_size) + TAG_LEN as u64);
        return Err(SealError::Truncated {
            expected: m.chunk_count(),
            found: full_chunks.min(m.chunk_count() - 1),
        });
    }
    let mut out = reserve_zeroizing(m.plaintext_size, "plaintext")?;
    decrypt_chunks(&header, input, key, &mut *out, &mut |_| {})?;
    Ok((header, out))
}

fn read_full<R: Read>(input: &mut R, buf: &mut [u8]) -> Result<usize, SealError> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn seal_bytes(data: &[u8], chunk: u32, owner: &OwnerKey) -> (Vec<u8>, KeyFile) {
        let mut out = Cursor::new(Vec::new());
        let opts = SealOptions {
            chunk_size: chunk,
            ..SealOptions::default()
        };
        let (_, key) = seal(data, data.len() as u64, &mut out, owner, &opts, &mut |_| {}).unwrap();
        (out.into_inner(), key)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let owner = OwnerKey::generate();
        for n in [0usize, 1, 63, 64, 65, 128, 200] {
            let plain = data(n);
            let (sealed, key) = seal_bytes(&plain, 64, &owner);
            let (header, back) = unseal_to_vec(&sealed[..], &key).unwrap();
            assert_eq!(back.as_slice(), plain.as_slice(), "size {n}");
            // Reserved once, exactly: no reallocation left copies of plaintext behind.
            assert_eq!(back.capacity(), n, "size {n}");
            assert_eq!(header.manifest.plaintext_size, n as u64);
            assert_eq!(header.sealed_len(), sealed.len() as u64, "size {n}");
            assert_eq!(header.manifest.format, "cordon-sealed/2");
            assert_eq!(
                header.manifest.plaintext_blake3.as_deref(),
                Some(blake3::hash(&plain).to_hex().as_str())
            );
            assert_eq!(header.manifest.plaintext_sha256, None);
            assert!(header.manifest.names_plaintext(&plain));
            assert!(
                !sealed.windows(16).any(|w| n >= 16 && w == &plain[..16]),
                "plaintext visible"
            );
        }
    }

    /// Format 1 (SHA-256) is still sealed on request and read: artifacts sealed before format 2
    /// keep working.
    #[test]
    fn format_1_still_seals_and_unseals() {
        let owner = OwnerKey::generate();
        let plain = data(1000);
        let mut out = std::io::Cursor::new(Vec::new());
        let opts = SealOptions {
            chunk_size: 64,
            format: FormatVersion::V1,
            ..SealOptions::default()
        };
        let (_, key) = seal(&plain[..], 1000, &mut out, &owner, &opts, &mut |_| {}).unwrap();
        let sealed = out.into_inner();
        assert_eq!(&sealed[8..10], &[1, 0]);
        let (header, back) = unseal_to_vec(&sealed, &key).unwrap();
        assert_eq!(back.as_slice(), plain.as_slice());
        assert_eq!(header.manifest.format, "cordon-sealed/1");
        assert_eq!(
            header.manifest.plaintext_sha256,
            Some(hex::encode(Sha256::digest(&plain)))
        );
        assert_eq!(header.manifest.plaintext_blake3, None);
        assert!(header.manifest.names_plaintext(&plain));
        assert!(!header.manifest.names_plaintext(&plain[1..]));
    }

    /// Artifacts of several batches go through the two-thread pipeline: they round-trip in both
    /// formats, streaming and in memory, and a flipped byte, a dropped chunk or a swapped pair of
    /// chunks in a later batch is still found, at the right chunk.
    #[test]
    fn multi_batch_artifacts_round_trip_and_tampering_is_found() {
        let owner = OwnerKey::generate();
        let chunk = 256 << 10;
        let n = (PARALLEL_FROM + 3 * BATCH_BYTES + 3) as usize;
        let plain = data(n);
        for format in [FormatVersion::V1, FormatVersion::V2] {
            let mut out = std::io::Cursor::new(Vec::new());
            let opts = SealOptions {
                chunk_size: chunk as u32,
                format,
                ..SealOptions::default()
            };
            let mut seen = Vec::new();
            let (_, key) = seal(&plain[..], n as u64, &mut out, &owner, &opts, &mut |d| {
                seen.push(d)
            })
            .unwrap();
            assert_eq!(seen.last(), Some(&(n as u64)));
            let sealed = out.into_inner();
            let (header, back) = unseal_to_vec(&sealed, &key).unwrap();
            assert!(back.as_slice() == plain.as_slice(), "{format:?}");
            let mut streamed = Vec::new();
            unseal(&sealed[..], &key, &mut streamed, &mut |_| {}).unwrap();
            assert!(streamed == plain, "{format:?}");
            let body = HEADER_FIXED_LEN as usize + header.manifest_bytes.len() + 64;
            let sealed_chunk = chunk + TAG_LEN;
            // Chunk 16 is in the fifth batch (four chunks each).
            let mut flipped = sealed.clone();
            flipped[body + 16 * sealed_chunk + 5] ^= 1;
            assert!(matches!(
                unseal_to_vec(&flipped, &key),
                Err(SealError::ChunkAuth { index: 16 })
            ));
            let mut dropped = sealed.clone();
            dropped.drain(body + 12 * sealed_chunk..body + 13 * sealed_chunk);
            assert!(unseal(&dropped[..], &key, std::io::sink(), &mut |_| {}).is_err());
            let mut swapped = sealed.clone();
            let (a, b) = (body + 10 * sealed_chunk, body + 11 * sealed_chunk);
            let chunk10 = swapped[a..b].to_vec();
            swapped.copy_within(b..b + sealed_chunk, a);
            swapped[b..b + sealed_chunk].copy_from_slice(&chunk10);
            assert!(matches!(
                unseal_to_vec(&swapped, &key),
                Err(SealError::ChunkAuth { index: 10 })
            ));
        }
    }

    trait WriteSeek: Write + Seek {}
    impl<T: Write + Seek> WriteSeek for T {}

    /// A writer that fails once `n` bytes were written.
    struct FailAfter(usize);
    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.0 {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Seek for FailAfter {
        fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
            Ok(0)
        }
    }

    /// A reader that gives `bytes`, then fails.
    struct FailingRead<'a>(&'a [u8]);
    impl Read for FailingRead<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("device error"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// Errors in the middle of the two-thread pipeline end it with that error, never a hang or a
    /// panic: input shorter or longer than announced, a reader or a writer that fails, a chunk
    /// larger than a batch, one-byte chunks; and unseal writes nothing past a truncation.
    #[test]
    fn pipeline_errors_end_it_with_their_error() {
        let owner = OwnerKey::generate();
        let n = (PARALLEL_FROM + (2 << 20)) as usize;
        let plain = data(n + 1);
        let opts = SealOptions::default();
        let seal_into = |input: &mut dyn Read, size: usize, out: &mut dyn WriteSeek| {
            seal(input, size as u64, out, &owner, &opts, &mut |_| {})
        };
        let mut out = std::io::Cursor::new(Vec::new());
        let short = seal_into(&mut &plain[..n - (1 << 20)], n, &mut out);
        assert!(
            matches!(short, Err(SealError::InputChanged { found, .. }) if found == (n - (1 << 20)) as u64)
        );
        let long = seal_into(&mut &plain[..], n, &mut out);
        assert!(matches!(long, Err(SealError::InputChanged { .. })));
        let full = seal_into(&mut &plain[..n], n, &mut FailAfter(3 << 20));
        assert!(matches!(full, Err(SealError::Io(_))), "{full:?}");
        let failing = seal_into(&mut FailingRead(&plain[..n / 2]), n, &mut out);
        assert!(matches!(failing, Err(SealError::Io(_))), "{failing:?}");
        for chunk_size in [MAX_CHUNK_SIZE, 3 << 20, 1] {
            let len = if chunk_size == 1 {
                (PARALLEL_FROM + 5) as usize
            } else {
                n
            };
            let mut out = std::io::Cursor::new(Vec::new());
            let opts = SealOptions {
                chunk_size,
                ..SealOptions::default()
            };
            let (_, key) = seal(
                &plain[..len],
                len as u64,
                &mut out,
                &owner,
                &opts,
                &mut |_| {},
            )
            .unwrap();
            let sealed = out.into_inner();
            let mut back = Vec::new();
            unseal(&sealed[..], &key, &mut back, &mut |_| {}).unwrap();
            assert!(back == plain[..len], "chunk size {chunk_size}");
            let disk_full = unseal(&sealed[..], &key, FailAfter(2 << 20), &mut |_| {});
            assert!(matches!(disk_full, Err(SealError::Io(_))), "{disk_full:?}");
            let mut partial = Vec::new();
            let cut = unseal(
                &sealed[..sealed.len() / 2 + 3],
                &key,
                &mut partial,
                &mut |_| {},
            );
            assert!(matches!(cut, Err(SealError::Truncated { .. })), "{cut:?}");
            assert!(
                partial.len() < len / 2 + 3,
                "nothing past the truncation was written"
            );
        }
    }

    /// The header's version number is outside the signature: one that disagrees with the signed
    /// manifest's format is refused, as is a manifest with the other format's digest, or none.
    #[test]
    fn the_header_version_and_the_manifest_digest_must_match_the_format() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(100), 64, &owner);
        let mut relabelled = sealed.clone();
        relabelled[8] = 1;
        let e = unseal_to_vec(&relabelled, &key).unwrap_err();
        assert!(
            e.to_string().contains("header says format version 1"),
            "{e}"
        );
        let opts = SealOptions {
            format: FormatVersion::V1,
            ..SealOptions::default()
        };
        let mut v1 = std::io::Cursor::new(Vec::new());
        let (_, key1) = seal(&data(100)[..], 100, &mut v1, &owner, &opts, &mut |_| {}).unwrap();
        let mut upgraded = v1.into_inner();
        upgraded[8] = 2;
        let e = unseal_to_vec(&upgraded, &key1).unwrap_err();
        assert!(
            e.to_string().contains("header says format version 2"),
            "{e}"
        );
        // An explicit null where a digest may be absent is not a second spelling of the manifest.
        let header = read_header(&mut &sealed[..]).unwrap();
        let text = String::from_utf8(header.manifest_bytes.clone()).unwrap();
        let with_null = text.replace(
            "\"plaintext_size\":100,",
            "\"plaintext_size\":100,\"plaintext_sha256\":null,",
        );
        assert_ne!(with_null, text);
        assert!(serde_json::from_str::<Manifest>(&with_null).is_err());
        assert!(serde_json::from_str::<Manifest>(&text).is_ok());
        let mut unknown = sealed.clone();
        unknown[8] = 3;
        assert!(matches!(
            unseal_to_vec(&unknown, &key),
            Err(SealError::Version(3))
        ));
        let both = resign(&sealed, &owner, |m| {
            m.plaintext_sha256 = Some("00".repeat(32))
        });
        let e = unseal_to_vec(&both, &key).unwrap_err();
        assert!(
            e.to_string()
                .contains("no other digest than plaintext_blake3"),
            "{e}"
        );
        let none = resign(&sealed, &owner, |m| m.plaintext_blake3 = None);
        let e = unseal_to_vec(&none, &key).unwrap_err();
        assert!(e.to_string().contains("needs plaintext_blake3"), "{e}");
        let wrong = resign(&sealed, &owner, |m| {
            m.plaintext_blake3 = Some("00".repeat(32))
        });
        let e = unseal_to_vec(&wrong, &key).unwrap_err();
        assert!(e.to_string().contains("plaintext BLAKE3 mismatch"), "{e}");
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(150), 64, &owner);
        for i in 0..sealed.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = sealed.clone();
                bad[i] ^= bit;
                let r = unseal_to_vec(&bad[..], &key);
                assert!(r.is_err(), "flipping bit {bit:#x} of byte {i} was accepted");
            }
        }
    }

    #[test]
    fn every_truncation_and_any_extension_is_rejected() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(150), 64, &owner);
        for len in 0..sealed.len() {
            assert!(
                unseal_to_vec(&sealed[..len], &key).is_err(),
                "truncated to {len} accepted"
            );
        }
        // Dropping exactly the final chunk leaves a stream that ends on a non-final chunk.
        let header_len = sealed.len() - (64 + 16) * 2 - (22 + 16);
        let r = unseal_to_vec(&sealed[..header_len + 2 * 80], &key);
        assert!(
            matches!(
                r,
                Err(SealError::Truncated {
                    expected: 3,
                    found: 2
                })
            ),
            "{r:?}"
        );
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(
            unseal_to_vec(&longer[..], &key),
            Err(SealError::TrailingData(1))
        ));
    }

    #[test]
    fn swapped_or_reordered_chunks_are_rejected() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(192), 64, &owner);
        let body = sealed.len() - 3 * 80;
        let mut swapped = sealed.clone();
        let (c0, c1) = (
            sealed[body..body + 80].to_vec(),
            sealed[body + 80..body + 160].to_vec(),
        );
        swapped[body..body + 80].copy_from_slice(&c1);
        swapped[body + 80..body + 160].copy_from_slice(&c0);
        let r = unseal_to_vec(&swapped[..], &key);
        assert!(matches!(r, Err(SealError::ChunkAuth { index: 0 })), "{r:?}");
        // The final chunk moved into a non-final position fails too.
        let mut moved = sealed.clone();
        let last = sealed[body + 160..].to_vec();
        moved[body + 80..body + 160].copy_from_slice(&last);
        assert!(matches!(
            unseal_to_vec(&moved[..], &key),
            Err(SealError::ChunkAuth { index: 1 })
        ));
    }

    #[test]
    fn chunks_from_another_artifact_are_rejected() {
        let owner = OwnerKey::generate();
        let (a, key_a) = seal_bytes(&data(128), 64, &owner);
        let (b, _) = seal_bytes(&data(128), 64, &owner);
        let mut mixed = a.clone();
        let body = a.len() - 2 * 80;
        mixed[body..body + 80].copy_from_slice(&b[body..body + 80]);
        assert!(matches!(
            unseal_to_vec(&mixed[..], &key_a),
            Err(SealError::ChunkAuth { index: 0 })
        ));
    }

    #[test]
    fn wrong_key_and_wrong_signer_are_named() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(100), 64, &owner);
        let (_, other_key) = seal_bytes(&data(100), 64, &owner);
        let r = unseal_to_vec(&sealed[..], &other_key);
        assert!(matches!(r, Err(SealError::WrongKeyId { .. })), "{r:?}");
        let same_id_wrong_dek = KeyFile {
            dek: Dek::generate(),
            ..key.clone()
        };
        assert!(matches!(
            unseal_to_vec(&sealed[..], &same_id_wrong_dek),
            Err(SealError::WrongKey)
        ));
        let expects_other_signer = KeyFile {
            signer: OwnerKey::generate().public_key(),
            ..key
        };
        assert!(matches!(
            unseal_to_vec(&sealed[..], &expects_other_signer),
            Err(SealError::WrongSigner { .. })
        ));
    }

    #[test]
    fn manifest_re_signed_by_attacker_is_rejected_as_wrong_signer() {
        // An attacker can re-sign a manifest with their own key, but not as the expected owner.
        let owner = OwnerKey::generate();
        let attacker = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(10), 64, &attacker);
        let expect_owner = KeyFile {
            signer: owner.public_key(),
            ..key
        };
        assert!(matches!(
            unseal_to_vec(&sealed[..], &expect_owner),
            Err(SealError::WrongSigner { .. })
        ));
    }

    #[test]
    fn not_sealed_input_is_named() {
        let key = KeyFile {
            key_id: "x".into(),
            dek: Dek::generate(),
            signer: [0; 32],
        };
        let r = unseal_to_vec(&b"PK\x03\x04 this is a zip"[..], &key);
        assert!(matches!(r, Err(SealError::BadMagic { .. })), "{r:?}");
        assert!(matches!(
            unseal_to_vec(&b"CORD"[..], &key),
            Err(SealError::TruncatedHeader(_))
        ));
        // A short text file is another kind of file, not a truncated artifact; an empty one too.
        for other in [&b"hello\n"[..], b""] {
            let r = unseal_to_vec(other, &key);
            assert!(matches!(r, Err(SealError::BadMagic { .. })), "{r:?}");
        }
        assert!(read_header(&mut &b"hello\n"[..])
            .unwrap_err()
            .to_string()
            .starts_with("not a Cordon sealed artifact"));
    }

    /// Rewrites the manifest of `sealed` with `edit` and signs it again as `owner`, so that it passes
    /// the signature and signer checks (what a party can do with its own artifact); the chunks stay
    /// as they were.
    fn resign(sealed: &[u8], owner: &OwnerKey, edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
        let header = read_header(&mut &sealed[..]).unwrap();
        let chunks = &sealed[HEADER_FIXED_LEN as usize + header.manifest_bytes.len() + 64..];
        let mut manifest = header.manifest.clone();
        edit(&mut manifest);
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let signature = owner.signing_key().sign(&signed_message(&bytes));
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(
            &header
                .manifest
                .format_version()
                .unwrap()
                .number()
                .to_le_bytes(),
        );
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
        out.extend_from_slice(&signature.to_bytes());
        out.extend_from_slice(chunks);
        out
    }

    #[test]
    fn oversized_plaintext_claims_are_refused_before_anything_is_reserved() {
        // A small artifact whose manifest, properly signed by the owner the key names, claims far
        // more plaintext than its chunks hold. Before the size check, unseal_to_vec reserved the
        // claim up front, and a claim of 2^55 bytes aborted the whole process.
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(100), 64, &owner);
        let max = u64::from(MAX_CHUNK_SIZE);
        let cases = [
            // (plaintext_size, chunk_size, the chunk found short)
            ((u64::from(u32::MAX)) * max, MAX_CHUNK_SIZE, 0), // the most the chunk counter allows, 2^56 - 2^24
            (1 << 55, MAX_CHUNK_SIZE, 0),
            (1 << 40, 1 << 20, 0),
            (1 << 32, 64, 1), // 2^26 chunks of 64 bytes: chunk 0 is there, chunk 1 is not
            (101, 64, 1),     // one byte more than the chunks hold
        ];
        for (claimed, chunk, found) in cases {
            let forged = resign(&sealed, &owner, |m| {
                m.plaintext_size = claimed;
                m.chunk_size = chunk;
            });
            let header = read_header(&mut &forged[..]).expect("the forged header verifies");
            assert!(header.sealed_len() > forged.len() as u64);
            let expected = header.manifest.chunk_count();
            let r = unseal_to_vec(&forged, &key);
            assert!(
                matches!(r, Err(SealError::Truncated { expected: e, found: f }) if e == expected && f == found),
                "claim {claimed}: {r:?}"
            );
            // The streaming reader finds the same short chunk, with one chunk's buffer at most.
            let mut out = Vec::new();
            let r = unseal(&forged[..], &key, &mut out, &mut |_| {});
            assert!(
                matches!(r, Err(SealError::Truncated { expected: e, found: f }) if e == expected && f == found),
                "claim {claimed}, streaming: {r:?}"
            );
        }
        // Claims past the 32-bit chunk counter (2^56 bytes and more) fail the manifest checks.
        for claimed in [1u64 << 56, u64::MAX] {
            let forged = resign(&sealed, &owner, |m| {
                m.plaintext_size = claimed;
                m.chunk_size = MAX_CHUNK_SIZE;
            });
            let r = unseal_to_vec(&forged, &key);
            assert!(
                matches!(&r, Err(SealError::Manifest(m)) if m.contains("too many chunks")),
                "claim {claimed}: {r:?}"
            );
        }
    }

    #[test]
    fn other_oversized_fields_are_refused_before_anything_is_reserved() {
        let owner = OwnerKey::generate();
        let (sealed, key) = seal_bytes(&data(100), 64, &owner);
        // chunk_size beyond the limit (each chunk is one buffer).
        for chunk in [MAX_CHUNK_SIZE + 1, u32::MAX] {
            let forged = resign(&sealed, &owner, |m| m.chunk_size = chunk);
            let r = unseal_to_vec(&forged, &key);
            assert!(
                matches!(&r, Err(SealError::Manifest(m)) if m.contains("chunk_size")),
                "chunk_size {chunk}: {r:?}"
            );
        }
        // The largest chunk_size with a small plaintext: the buffer is the plaintext's size, and
        // the chunks (sealed at 64 bytes) fail authentication under the new layout.
        let forged = resign(&sealed, &owner, |m| m.chunk_size = MAX_CHUNK_SIZE);
        let r = unseal_to_vec(&forged, &key);
        assert!(matches!(r, Err(SealError::ChunkAuth { index: 0 })), "{r:?}");
        // Manifest length: refused by its limit before any read, or short input.
        let mut huge = sealed[..HEADER_FIXED_LEN as usize].to_vec();
        huge[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&sealed[HEADER_FIXED_LEN as usize..]);
        let r = unseal_to_vec(&huge, &key);
        assert!(
            matches!(r, Err(SealError::ManifestTooLarge(len, 65536)) if len == u32::MAX as usize),
            "{r:?}"
        );
        let mut short = sealed[..HEADER_FIXED_LEN as usize].to_vec();
        short[10..14].copy_from_slice(&(MAX_MANIFEST_LEN as u32).to_le_bytes());
        short.extend_from_slice(b"{}");
        let r = unseal_to_vec(&short, &key);
        assert!(
            matches!(r, Err(SealError::TruncatedHeader("manifest"))),
            "{r:?}"
        );
    }

    #[test]
    fn a_reservation_the_process_cannot_hold_is_a_typed_error() {
        // What unseal_to_vec does with a plaintext size the input does hold but memory does not.
        let r = reserve_zeroizing(1 << 62, "plaintext");
        assert!(
            matches!(r, Err(SealError::OutOfMemory { what: "plaintext", bytes }) if bytes == 1 << 62),
            "{r:?}"
        );
        let message = r.unwrap_err().to_string();
        assert!(message.contains("4611686018427387904"), "{message}");
        let r = zeroed_buffer(u64::MAX, "chunk");
        assert!(
            matches!(
                r,
                Err(SealError::OutOfMemory {
                    what: "chunk",
                    bytes: u64::MAX
                })
            ),
            "{r:?}"
        );
    }

    #[test]
    fn the_returned_header_is_the_one_written() {
        let owner = OwnerKey::generate();
        let plain = data(1000);
        let mut out = Cursor::new(Vec::new());
        let opts = SealOptions {
            chunk_size: 64,
            ..SealOptions::default()
        };
        let (header, key) =
            seal_with_header(&plain[..], 1000, &mut out, &owner, &opts, &mut |_| {}).unwrap();
        let sealed = out.into_inner();
        let read = read_header(&mut &sealed[..]).unwrap();
        assert_eq!(header.manifest_bytes, read.manifest_bytes);
        assert_eq!(header.digest(), read.digest());
        assert_eq!(header.sealed_len(), sealed.len() as u64);
        let (unsealed, back) = unseal_to_vec(&sealed[..], &key).unwrap();
        assert_eq!(unsealed.digest(), header.digest());
        assert_eq!(back.as_slice(), plain.as_slice());
    }

    #[test]
    fn input_shorter_than_announced_is_an_error() {
        let owner = OwnerKey::generate();
        let mut out = Cursor::new(Vec::new());
        let r = seal(
            &b"abc"[..],
            10,
            &mut out,
            &owner,
            &SealOptions::default(),
            &mut |_| {},
        );
        assert!(matches!(
            r,
            Err(SealError::InputChanged {
                expected: 10,
                found: 3
            })
        ));
    }
}
