//! Sealed response streams: an answer that leaves the runtime in pieces (a chat completion streamed
//! token by token) without giving the host a way to cut, reorder, repeat or splice them unseen.
//!
//! Each piece is one AES-256-GCM frame under a key of its own stream. Frame `i` is sealed under
//! the nonce `base XOR i` with `i` and a "last" flag in its associated data, so the client opens
//! frames strictly in order: a dropped, swapped or repeated frame fails to authenticate, an answer
//! cut after any frame lacks the last flag, and bytes after the last frame are refused. The stream
//! key comes from the request's own key material (the one-shot request's HPKE export, or a
//! session's stream secret with the request's sequence number) and a fresh nonce of the runtime,
//! so no two streams, and no stream and whole answer, ever share a key. docs/protocol.md §7.7.
//!
//! ```text
//! one-shot: stream = stream_nonce (32)            || frame*
//! session:  stream = seq (8) || stream_nonce (32) || frame*
//! frame_i  = u32be(len(ct_i)) || ct_i
//! ct_i     = AES-256-GCM(key, base XOR (0^4 || u64be(i)),
//!                        aad = "cordon stream v1" || u64be(i) || last (1), piece_i)
//! ```

use crate::aead::Aes256GcmKey;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

/// Media type of a sealed stream answer, on `/v1/encrypted` and `/v1/session/message`.
pub const SEALED_STREAM_MEDIA_TYPE: &str = "message/cordon-stream";
/// The runtime's random contribution to a stream's key.
pub const STREAM_NONCE_LEN: usize = 32;
/// The largest frame a reader accepts (ciphertext and tag): the host chooses the length prefix, so
/// it must not choose how much a client buffers.
pub const MAX_FRAME_LEN: usize = 16 << 20;

const FRAME_AAD_LABEL: &[u8] = b"cordon stream v1";
const KEY_INFO: &[u8] = b"cordon stream key";
const NONCE_INFO: &[u8] = b"cordon stream nonce";
const TAG_LEN: usize = 16;
const LEN_PREFIX: usize = 4;

/// Why a sealed stream was refused. Every variant means the stream did not arrive as the runtime
/// sent it; none of its pieces from that point on is used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StreamError {
    #[error("sealed stream too short: {found} bytes before its first frame, {needed} needed")]
    TooShort { found: usize, needed: usize },
    #[error("sealed stream answers request {found}, not request {expected}")]
    WrongSequence { expected: u64, found: u64 },
    #[error("sealed stream frame {index} claims {len} bytes, more than the {max} allowed")]
    FrameTooLarge { index: u64, len: usize, max: usize },
    #[error(
        "sealed stream frame {index} does not authenticate: altered, reordered, repeated or from \
         another stream"
    )]
    Decrypt { index: u64 },
    #[error("sealed stream ended after {frames} frames without its last frame: it was cut short")]
    Truncated { frames: u64 },
    #[error("sealed stream carries bytes after its last frame")]
    AfterLast,
    #[error("sealed stream: encryption failed")]
    Encrypt,
}

/// The key and nonce base of one stream.
struct StreamKey {
    aead: Aes256GcmKey,
    base: Zeroizing<[u8; 12]>,
}

impl StreamKey {
    fn derive(salt: &[u8], secret: &[u8; 32]) -> StreamKey {
        let hk = Hkdf::<Sha256>::new(Some(salt), secret);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut base = Zeroizing::new([0u8; 12]);
        // Fixed lengths far below HKDF-SHA256's limit: expand cannot fail.
        let _ = hk.expand(KEY_INFO, key.as_mut());
        let _ = hk.expand(NONCE_INFO, base.as_mut());
        StreamKey {
            aead: Aes256GcmKey::new(&key),
            base,
        }
    }

    fn nonce(&self, index: u64) -> [u8; 12] {
        let mut n = *self.base;
        for (b, i) in n[4..].iter_mut().zip(index.to_be_bytes()) {
            *b ^= i;
        }
        n
    }
}

fn frame_aad(index: u64, last: bool) -> [u8; 25] {
    let mut aad = [0u8; 25];
    aad[..16].copy_from_slice(FRAME_AAD_LABEL);
    aad[16..24].copy_from_slice(&index.to_be_bytes());
    aad[24] = u8::from(last);
    aad
}

/// The salt of a one-shot request's stream: its `enc` and the runtime's stream nonce.
pub(crate) fn oneshot_salt(enc: &[u8; 32], stream_nonce: &[u8; STREAM_NONCE_LEN]) -> [u8; 64] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(enc);
    salt[32..].copy_from_slice(stream_nonce);
    salt
}

/// The salt of a session request's stream: session id, sequence number and stream nonce.
pub(crate) fn session_salt(
    session_id: &[u8; 16],
    seq: u64,
    stream_nonce: &[u8; STREAM_NONCE_LEN],
) -> [u8; 56] {
    let mut salt = [0u8; 56];
    salt[..16].copy_from_slice(session_id);
    salt[16..24].copy_from_slice(&seq.to_be_bytes());
    salt[24..].copy_from_slice(stream_nonce);
    salt
}

fn fresh_nonce() -> [u8; STREAM_NONCE_LEN] {
    let mut n = [0u8; STREAM_NONCE_LEN];
    rand::rng().fill_bytes(&mut n);
    n
}

/// Runtime side: seals the pieces of one answer, in order.
pub struct StreamSealer {
    key: StreamKey,
    next: u64,
    prefix: Option<Vec<u8>>,
    ended: bool,
}

impl std::fmt::Debug for StreamSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSealer")
            .field("next", &self.next)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl StreamSealer {
    /// A sealer over `secret`, with a fresh stream nonce; `prefix_head` goes before the nonce
    /// (a session's sequence number).
    pub(crate) fn new(
        secret: &[u8; 32],
        salt_of: impl FnOnce(&[u8; STREAM_NONCE_LEN]) -> Vec<u8>,
        prefix_head: &[u8],
    ) -> StreamSealer {
        let stream_nonce = fresh_nonce();
        let key = StreamKey::derive(&salt_of(&stream_nonce), secret);
        let mut prefix = prefix_head.to_vec();
        prefix.extend_from_slice(&stream_nonce);
        StreamSealer {
            key,
            next: 0,
            prefix: Some(prefix),
            ended: false,
        }
    }

    /// The next frame of the stream holding `piece`; `last` ends the stream. The stream's own
    /// prefix is put before the first frame. After the last frame nothing more is sealed.
    pub fn seal(&mut self, piece: &[u8], last: bool) -> Result<Vec<u8>, StreamError> {
        if self.ended {
            return Err(StreamError::AfterLast);
        }
        let index = self.next;
        // Checked before sealing: a refused piece must not have used nonce `index`.
        let len = piece.len() + TAG_LEN;
        if len > MAX_FRAME_LEN {
            return Err(StreamError::FrameTooLarge {
                index,
                len,
                max: MAX_FRAME_LEN,
            });
        }
        let ct = self
            .key
            .aead
            .seal(&self.key.nonce(index), &frame_aad(index, last), piece)
            .map_err(|_| StreamError::Encrypt)?;
        let mut out = self.prefix.take().unwrap_or_default();
        out.reserve(LEN_PREFIX + ct.len());
        // At most MAX_FRAME_LEN, checked above: it fits a u32.
        out.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        out.extend_from_slice(&ct);
        self.next += 1;
        self.ended = last;
        Ok(out)
    }

    /// Frames sealed so far.
    pub fn frames(&self) -> u64 {
        self.next
    }
}

/// One opened piece of a stream.
pub struct StreamPiece {
    pub bytes: Zeroizing<Vec<u8>>,
    /// Whether this was the stream's last frame.
    pub last: bool,
}

/// Client side: opens a stream's frames as its bytes arrive, in any cut.
pub struct StreamOpener {
    secret: Zeroizing<[u8; 32]>,
    salt: SaltKind,
    /// The key, once the prefix has arrived.
    key: Option<StreamKey>,
    buf: Vec<u8>,
    next: u64,
    ended: bool,
}

enum SaltKind {
    Oneshot { enc: [u8; 32] },
    Session { id: [u8; 16], seq: u64 },
}

impl std::fmt::Debug for StreamOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOpener")
            .field("next", &self.next)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl StreamOpener {
    pub(crate) fn oneshot(secret: Zeroizing<[u8; 32]>, enc: [u8; 32]) -> StreamOpener {
        StreamOpener::with(secret, SaltKind::Oneshot { enc })
    }

    pub(crate) fn session(secret: Zeroizing<[u8; 32]>, id: [u8; 16], seq: u64) -> StreamOpener {
        StreamOpener::with(secret, SaltKind::Session { id, seq })
    }

    fn with(secret: Zeroizing<[u8; 32]>, salt: SaltKind) -> StreamOpener {
        StreamOpener {
            secret,
            salt,
            key: None,
            buf: Vec::new(),
            next: 0,
            ended: false,
        }
    }

    fn prefix_len(&self) -> usize {
        match self.salt {
            SaltKind::Oneshot { .. } => STREAM_NONCE_LEN,
            SaltKind::Session { .. } => 8 + STREAM_NONCE_LEN,
        }
    }

    /// Takes the next bytes of the stream as they arrived.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        if self.ended && !bytes.is_empty() {
            return Err(StreamError::AfterLast);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole piece received, in order, or `None` until more bytes arrive.
    pub fn next_piece(&mut self) -> Result<Option<StreamPiece>, StreamError> {
        if self.key.is_none() {
            let need = self.prefix_len();
            if self.buf.len() < need {
                return Ok(None);
            }
            let mut stream_nonce = [0u8; STREAM_NONCE_LEN];
            stream_nonce.copy_from_slice(&self.buf[need - STREAM_NONCE_LEN..need]);
            let key = match self.salt {
                SaltKind::Oneshot { enc } => {
                    StreamKey::derive(&oneshot_salt(&enc, &stream_nonce), &self.secret)
                }
                SaltKind::Session { id, seq } => {
                    let mut found = [0u8; 8];
                    found.copy_from_slice(&self.buf[..8]);
                    let found = u64::from_be_bytes(found);
                    if found != seq {
                        return Err(StreamError::WrongSequence {
                            expected: seq,
                            found,
                        });
                    }
                    StreamKey::derive(&session_salt(&id, seq, &stream_nonce), &self.secret)
                }
            };
            self.key = Some(key);
            self.buf.drain(..need);
        }
        let Some(key) = &self.key else {
            return Ok(None);
        };
        if self.ended {
            return if self.buf.is_empty() {
                Ok(None)
            } else {
                Err(StreamError::AfterLast)
            };
        }
        if self.buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let mut len = [0u8; LEN_PREFIX];
        len.copy_from_slice(&self.buf[..LEN_PREFIX]);
        let len = u32::from_be_bytes(len) as usize;
        let index = self.next;
        if len > MAX_FRAME_LEN {
            return Err(StreamError::FrameTooLarge {
                index,
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if len < TAG_LEN {
            return Err(StreamError::Decrypt { index });
        }
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let ct = &self.buf[LEN_PREFIX..LEN_PREFIX + len];
        // The sender's flag is not on the wire: a frame opens under exactly one of the two.
        let (bytes, last) = match key
            .aead
            .open(&key.nonce(index), &frame_aad(index, false), ct)
        {
            Ok(p) => (p, false),
            Err(_) => match key
                .aead
                .open(&key.nonce(index), &frame_aad(index, true), ct)
            {
                Ok(p) => (p, true),
                Err(_) => return Err(StreamError::Decrypt { index }),
            },
        };
        self.buf.drain(..LEN_PREFIX + len);
        self.next += 1;
        self.ended = last;
        if last && !self.buf.is_empty() {
            return Err(StreamError::AfterLast);
        }
        Ok(Some(StreamPiece { bytes, last }))
    }

    /// Whether the last frame has been opened.
    pub fn is_complete(&self) -> bool {
        self.ended
    }

    /// Called when the transport ends: an error unless the last frame arrived and nothing
    /// follows it.
    pub fn finish(&self) -> Result<(), StreamError> {
        if !self.ended {
            let needed = self.prefix_len();
            if self.key.is_none() {
                return Err(StreamError::TooShort {
                    found: self.buf.len(),
                    needed,
                });
            }
            return Err(StreamError::Truncated { frames: self.next });
        }
        if !self.buf.is_empty() {
            return Err(StreamError::AfterLast);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: [u8; 32] = [7; 32];
    const ENC: [u8; 32] = [9; 32];

    fn sealer() -> StreamSealer {
        StreamSealer::new(&SECRET, |n| oneshot_salt(&ENC, n).to_vec(), &[])
    }

    fn opener() -> StreamOpener {
        StreamOpener::oneshot(Zeroizing::new(SECRET), ENC)
    }

    /// The frames of a three-piece stream, each with its own bytes (the first with the prefix).
    fn frames() -> Vec<Vec<u8>> {
        let mut s = sealer();
        vec![
            s.seal(b"head", false).unwrap(),
            s.seal(b"data: one\n\n", false).unwrap(),
            s.seal(b"data: [DONE]\n\n", true).unwrap(),
        ]
    }

    fn open_all(bytes: &[u8], cut: usize) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut o = opener();
        let mut out = Vec::new();
        for chunk in bytes.chunks(cut.max(1)) {
            o.push(chunk)?;
            while let Some(p) = o.next_piece()? {
                out.push(p.bytes.to_vec());
            }
        }
        o.finish()?;
        Ok(out)
    }

    #[test]
    fn a_stream_opens_in_order_however_its_bytes_are_cut() {
        let all = frames().concat();
        for cut in [1, 3, 17, 4096] {
            let pieces = open_all(&all, cut).unwrap();
            assert_eq!(
                pieces,
                vec![
                    b"head".to_vec(),
                    b"data: one\n\n".to_vec(),
                    b"data: [DONE]\n\n".to_vec()
                ]
            );
        }
    }

    #[test]
    fn cutting_after_any_frame_is_detected() {
        let f = frames();
        for keep in 0..f.len() {
            let cut = f[..keep].concat();
            let err = open_all(&cut, 7).unwrap_err();
            assert!(
                matches!(
                    err,
                    StreamError::Truncated { .. } | StreamError::TooShort { .. }
                ),
                "{keep}: {err}"
            );
        }
        // Inside a frame as well.
        let all = f.concat();
        let err = open_all(&all[..all.len() - 1], 7).unwrap_err();
        assert_eq!(err, StreamError::Truncated { frames: 2 });
    }

    #[test]
    fn reordered_repeated_or_spliced_frames_are_refused() {
        let f = frames();
        let (head, rest) = f[0].split_at(STREAM_NONCE_LEN);
        let swapped = [head, &f[1][..], rest, &f[2][..]].concat();
        assert!(matches!(
            open_all(&swapped, 5),
            Err(StreamError::Decrypt { index: 0 })
        ));
        let repeated = [f[0].clone(), f[1].clone(), f[1].clone(), f[2].clone()].concat();
        assert_eq!(
            open_all(&repeated, 5).unwrap_err(),
            StreamError::Decrypt { index: 2 }
        );
        // A frame of another stream under the same request (another stream nonce) never opens.
        let other = frames();
        let spliced = [f[0].clone(), other[1].clone(), f[2].clone()].concat();
        assert_eq!(
            open_all(&spliced, 5).unwrap_err(),
            StreamError::Decrypt { index: 1 }
        );
        // Anything after the last frame.
        let extra = [f.concat(), f[1].clone()].concat();
        assert_eq!(open_all(&extra, 4096).unwrap_err(), StreamError::AfterLast);
        let mut o = opener();
        o.push(&f.concat()).unwrap();
        while o.next_piece().unwrap().is_some() {}
        assert_eq!(o.push(b"x").unwrap_err(), StreamError::AfterLast);
    }

    #[test]
    fn a_non_last_frame_cannot_pass_for_the_last_and_no_byte_goes_unnoticed() {
        let f = frames();
        let all = f.concat();
        for i in 0..all.len() {
            let mut bad = all.clone();
            bad[i] ^= 0x01;
            assert!(
                open_all(&bad, 4096).is_err(),
                "byte {i} flipped went unnoticed"
            );
        }
        // Dropping the true last frame after a middle one is truncation, never an end.
        let cut = [f[0].clone(), f[1].clone()].concat();
        assert_eq!(
            open_all(&cut, 4096).unwrap_err(),
            StreamError::Truncated { frames: 2 }
        );
    }

    #[test]
    fn a_huge_length_prefix_is_refused_before_buffering() {
        let f = frames();
        let mut bad = f[0][..STREAM_NONCE_LEN].to_vec();
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut o = opener();
        o.push(&bad).unwrap();
        assert!(matches!(
            o.next_piece(),
            Err(StreamError::FrameTooLarge { index: 0, .. })
        ));
    }

    #[test]
    fn a_session_stream_names_its_request() {
        let id = [3u8; 16];
        let mut s = StreamSealer::new(
            &SECRET,
            |n| session_salt(&id, 5, n).to_vec(),
            &5u64.to_be_bytes(),
        );
        let bytes = s.seal(b"only", true).unwrap();
        let mut o = StreamOpener::session(Zeroizing::new(SECRET), id, 5);
        o.push(&bytes).unwrap();
        assert_eq!(&o.next_piece().unwrap().unwrap().bytes[..], b"only");
        o.finish().unwrap();
        // The same bytes as the answer to another request of the session.
        let mut o = StreamOpener::session(Zeroizing::new(SECRET), id, 6);
        o.push(&bytes).unwrap();
        assert!(matches!(
            o.next_piece(),
            Err(StreamError::WrongSequence {
                expected: 6,
                found: 5
            })
        ));
        // A lying sequence number in the prefix changes the key: the frame does not open.
        let mut relabeled = bytes.clone();
        relabeled[..8].copy_from_slice(&6u64.to_be_bytes());
        let mut o = StreamOpener::session(Zeroizing::new(SECRET), id, 6);
        o.push(&relabeled).unwrap();
        assert!(matches!(
            o.next_piece(),
            Err(StreamError::Decrypt { index: 0 })
        ));
    }

    #[test]
    fn a_piece_too_large_is_refused_and_its_index_stays_unused() {
        let mut s = sealer();
        let big = vec![0u8; MAX_FRAME_LEN];
        assert!(matches!(
            s.seal(&big, false),
            Err(StreamError::FrameTooLarge { index: 0, .. })
        ));
        assert_eq!(s.frames(), 0);
        let bytes = s.seal(b"small", true).unwrap();
        let mut o = opener();
        o.push(&bytes).unwrap();
        assert_eq!(&o.next_piece().unwrap().unwrap().bytes[..], b"small");
    }

    #[test]
    fn nothing_is_sealed_after_the_last_frame() {
        let mut s = sealer();
        s.seal(b"x", true).unwrap();
        assert_eq!(s.seal(b"y", false).unwrap_err(), StreamError::AfterLast);
    }
}

#[cfg(test)]
mod channel_tests {
    use crate::channel::{encapsulate_request, ServiceKeyPair};

    #[test]
    fn a_one_shot_stream_opens_only_with_its_request_and_never_as_a_whole_answer() {
        let server = ServiceKeyPair::generate(0);
        let (msg, client) = encapsulate_request(&server.public_key(), 0, b"req").unwrap();
        let (_, answer) = server.decapsulate_request(&msg).unwrap();
        let mut sealer = answer.into_stream();
        let bytes = sealer.seal(b"piece", true).unwrap();
        let mut opener = client.into_stream();
        opener.push(&bytes).unwrap();
        assert_eq!(&opener.next_piece().unwrap().unwrap().bytes[..], b"piece");
        opener.finish().unwrap();

        // Another request's context opens neither the stream nor, read as one message, its bytes.
        let (msg2, other) = encapsulate_request(&server.public_key(), 0, b"req").unwrap();
        let (_, answer2) = server.decapsulate_request(&msg2).unwrap();
        let mut o = other.into_stream();
        o.push(&bytes).unwrap();
        assert!(o.next_piece().is_err());
        // Its own request's context, reading the stream as a whole answer, does not open it.
        drop(answer2);
        let (msg3, third) = encapsulate_request(&server.public_key(), 0, b"req").unwrap();
        let (_, answer3) = server.decapsulate_request(&msg3).unwrap();
        let whole3 = answer3.encrypt_response(b"piece").unwrap();
        let mut o3 = third.into_stream();
        o3.push(&whole3).unwrap();
        assert!(o3.next_piece().is_err() || o3.finish().is_err());
        let (msg4, fourth) = encapsulate_request(&server.public_key(), 0, b"req").unwrap();
        let (_, answer4) = server.decapsulate_request(&msg4).unwrap();
        let stream4 = answer4.into_stream().seal(b"piece", true).unwrap();
        assert!(fourth.decrypt_response(&stream4).is_err());
    }
}
