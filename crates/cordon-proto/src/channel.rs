//! The encrypted request channel: HPKE (RFC 9180) encapsulation in the manner of Oblivious HTTP
//! (RFC 9458, section 4), so that proxies, load balancers and the operator see only ciphertext, and
//! any replica that holds the service key can answer.
//!
//! Suite: DHKEM(X25519, HKDF-SHA256) = 0x0020, HKDF-SHA256 = 0x0001, AES-256-GCM = 0x0002.
//!
//! ```text
//! request  = hdr || enc (32) || HPKE ciphertext of the inner request
//! hdr      = key_id (1) || kem_id (2) || kdf_id (2) || aead_id (2)        (big-endian)
//! info     = "cordon request v1" || 0x00 || hdr
//! response = response_nonce (32) || AES-256-GCM(key, nonce, aad = "", inner response)
//!   secret = context.export("cordon response v1", 32)
//!   prk    = HKDF-Extract(salt = enc || response_nonce, secret)
//!   key    = HKDF-Expand(prk, "key", 32);  nonce = HKDF-Expand(prk, "nonce", 12)
//! ```

use crate::aead::Aes256GcmKey;
use crate::hpke_base::{self, RecipientKey};
use crate::stream::{self, StreamOpener, StreamSealer};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use thiserror::Error;
use zeroize::Zeroizing;

pub const KEM_ID: u16 = 0x0020;
pub const KDF_ID: u16 = 0x0001;
pub const AEAD_ID: u16 = 0x0002;
pub(crate) const HDR_LEN: usize = 7;
pub(crate) const ENC_LEN: usize = 32;
const RESPONSE_NONCE_LEN: usize = 32;
const REQUEST_LABEL: &[u8] = b"cordon request v1";
const RESPONSE_LABEL: &[u8] = b"cordon response v1";

/// Why a message of the encrypted channel was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChannelError {
    #[error("encrypted message too short: {found} bytes, at least {min} needed")]
    TooShort { found: usize, min: usize },
    #[error("request is for HPKE key id {found}, this server holds key id {expected}")]
    UnknownKeyId { found: u8, expected: u8 },
    #[error("unsupported HPKE suite kem={kem:#06x} kdf={kdf:#06x} aead={aead:#06x}; this server uses 0x0020/0x0001/0x0002")]
    UnsupportedSuite { kem: u16, kdf: u16, aead: u16 },
    #[error("invalid HPKE encapsulated key")]
    BadEncapsulatedKey,
    #[error("decryption failed: the message was altered, or encrypted to another key")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// The runtime's HPKE key pair (the service key). The private half never leaves the process; it
/// lives in AWS-LC's memory, which AWS-LC cleanses when it frees it.
pub struct ServiceKeyPair {
    key_id: u8,
    private: RecipientKey,
}

impl fmt::Debug for ServiceKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKeyPair")
            .field("key_id", &self.key_id)
            .field("public", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

impl ServiceKeyPair {
    /// Generates a fresh key pair from the operating system's randomness.
    pub fn generate(key_id: u8) -> ServiceKeyPair {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(ikm.as_mut());
        ServiceKeyPair::derive(key_id, &ikm)
    }

    /// The key pair `DeriveKeyPair(ikm)` (RFC 9180 §7.1.3) gives: how a party's stored secret becomes
    /// the key that job outputs are sealed to.
    pub fn derive(key_id: u8, ikm: &[u8; 32]) -> ServiceKeyPair {
        match RecipientKey::derive(ikm) {
            Ok(private) => ServiceKeyPair { key_id, private },
            // X25519 takes any 32 bytes as a private key, and AWS-LC computes its public key.
            Err(_) => unreachable!("X25519 key derivation from 32 bytes cannot fail"),
        }
    }

    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.private.public_key()
    }

    /// Checks a request header (`key_id || kem || kdf || aead`, 7 bytes) against this
    /// key pair and the one suite it speaks.
    pub(crate) fn check_header(&self, hdr: &[u8]) -> Result<(), ChannelError> {
        let key_id = hdr[0];
        let kem = u16::from_be_bytes([hdr[1], hdr[2]]);
        let kdf = u16::from_be_bytes([hdr[3], hdr[4]]);
        let aead = u16::from_be_bytes([hdr[5], hdr[6]]);
        if key_id != self.key_id {
            return Err(ChannelError::UnknownKeyId {
                found: key_id,
                expected: self.key_id,
            });
        }
        if (kem, kdf, aead) != (KEM_ID, KDF_ID, AEAD_ID) {
            return Err(ChannelError::UnsupportedSuite { kem, kdf, aead });
        }
        Ok(())
    }

    pub(crate) fn recipient_key(&self) -> &RecipientKey {
        &self.private
    }

    /// Decrypts an encapsulated request. Returns the inner request and the context to encrypt the
    /// response with.
    pub fn decapsulate_request(
        &self,
        message: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, ServerResponseContext), ChannelError> {
        if message.len() < HDR_LEN + ENC_LEN {
            return Err(ChannelError::TooShort {
                found: message.len(),
                min: HDR_LEN + ENC_LEN,
            });
        }
        let hdr = &message[..HDR_LEN];
        self.check_header(hdr)?;
        let enc: [u8; ENC_LEN] = message[HDR_LEN..HDR_LEN + ENC_LEN]
            .try_into()
            .map_err(|_| ChannelError::BadEncapsulatedKey)?;
        let (plaintext, secret) = open_message(
            &self.private,
            &enc,
            &request_info(hdr),
            &message[HDR_LEN + ENC_LEN..],
            RESPONSE_LABEL,
        )?;
        Ok((plaintext, ServerResponseContext { secret, enc }))
    }
}

/// A channel message from a sender context: `hdr || enc || ciphertext` of `plaintext`, the one
/// message the context seals, and the 32 bytes it exports under `label` (what the answer's keys
/// derive from). One-shot requests and session setups are made so.
pub(crate) fn seal_message(
    mut ctx: hpke_base::Context,
    hdr: &[u8],
    enc: &[u8; ENC_LEN],
    plaintext: &[u8],
    label: &[u8],
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), ChannelError> {
    let ct = ctx.seal(plaintext, b"")?;
    let mut secret = Zeroizing::new([0u8; 32]);
    ctx.export(label, secret.as_mut())?;
    let mut out = Vec::with_capacity(hdr.len() + ENC_LEN + ct.len());
    out.extend_from_slice(hdr);
    out.extend_from_slice(enc);
    out.extend_from_slice(&ct);
    Ok((out, secret))
}

/// A message's plaintext and the 32 bytes its context exports (zeroized when dropped).
pub(crate) type Opened = (Zeroizing<Vec<u8>>, Zeroizing<[u8; 32]>);

/// [`seal_message`]'s counterpart: the plaintext of `ciphertext` under the receiver context for
/// `enc` and `info`, and the context's export under `label`.
pub(crate) fn open_message(
    recipient: &RecipientKey,
    enc: &[u8; ENC_LEN],
    info: &[u8],
    ciphertext: &[u8],
    label: &[u8],
) -> Result<Opened, ChannelError> {
    let mut ctx = hpke_base::setup_receiver(recipient, enc, info)?;
    let plaintext = ctx.open(ciphertext, b"")?;
    let mut secret = Zeroizing::new([0u8; 32]);
    ctx.export(label, secret.as_mut())
        .map_err(|_| ChannelError::Decrypt)?;
    Ok((plaintext, secret))
}

fn request_info(hdr: &[u8]) -> Vec<u8> {
    labelled_info(REQUEST_LABEL, hdr)
}

/// HPKE `info` of a channel message: `label || 0x00 || hdr`.
pub(crate) fn labelled_info(label: &[u8], hdr: &[u8]) -> Vec<u8> {
    let mut info = Vec::with_capacity(label.len() + 1 + hdr.len());
    info.extend_from_slice(label);
    info.push(0);
    info.extend_from_slice(hdr);
    info
}

pub(crate) fn header(key_id: u8) -> [u8; HDR_LEN] {
    let mut hdr = [0u8; HDR_LEN];
    hdr[0] = key_id;
    hdr[1..3].copy_from_slice(&KEM_ID.to_be_bytes());
    hdr[3..5].copy_from_slice(&KDF_ID.to_be_bytes());
    hdr[5..7].copy_from_slice(&AEAD_ID.to_be_bytes());
    hdr
}

fn response_aead(
    secret: &[u8; 32],
    enc: &[u8; ENC_LEN],
    response_nonce: &[u8],
) -> (Aes256GcmKey, [u8; 12]) {
    let mut salt = Vec::with_capacity(ENC_LEN + RESPONSE_NONCE_LEN);
    salt.extend_from_slice(enc);
    salt.extend_from_slice(response_nonce);
    let hk = Hkdf::<Sha256>::new(Some(&salt), secret);
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    // Lengths are fixed and far below HKDF's limit, so expand cannot fail.
    let _ = hk.expand(b"key", key.as_mut());
    let _ = hk.expand(b"nonce", &mut nonce);
    (Aes256GcmKey::new(&key), nonce)
}

/// Server side: encrypts the one response to a decapsulated request.
pub struct ServerResponseContext {
    secret: Zeroizing<[u8; 32]>,
    enc: [u8; ENC_LEN],
}

impl ServerResponseContext {
    /// A context with fixed values, so the fuzz target can hold the matching client context (see
    /// [`ClientResponseContext::from_parts`]). Real contexts come only from a decapsulated request.
    pub(crate) fn from_parts(secret: [u8; 32], enc: [u8; ENC_LEN]) -> ServerResponseContext {
        ServerResponseContext {
            secret: Zeroizing::new(secret),
            enc,
        }
    }

    /// The request's encapsulated key: unique to one request, what the runtime remembers to refuse
    /// a replayed one.
    pub fn request_id(&self) -> [u8; ENC_LEN] {
        self.enc
    }

    pub fn encrypt_response(self, response: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let mut response_nonce = [0u8; RESPONSE_NONCE_LEN];
        rand::rng().fill_bytes(&mut response_nonce);
        let (aead, nonce) = response_aead(&self.secret, &self.enc, &response_nonce);
        let ct = aead.seal(&nonce, &[], response)?;
        let mut out = Vec::with_capacity(RESPONSE_NONCE_LEN + ct.len());
        out.extend_from_slice(&response_nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The answer as a sealed stream instead of one message (`crate::stream`): its key from this
    /// request's secret and a fresh stream nonce.
    pub fn into_stream(self) -> StreamSealer {
        let enc = self.enc;
        StreamSealer::new(
            &self.secret,
            |nonce| stream::oneshot_salt(&enc, nonce).to_vec(),
            &[],
        )
    }
}

/// Client side: decrypts the response to a request it encapsulated.
pub struct ClientResponseContext {
    secret: Zeroizing<[u8; 32]>,
    enc: [u8; ENC_LEN],
}

/// Encrypts `request` to the runtime's (attested) HPKE public key.
pub fn encapsulate_request(
    public_key: &[u8; 32],
    key_id: u8,
    request: &[u8],
) -> Result<(Vec<u8>, ClientResponseContext), ChannelError> {
    prepare_request(public_key, key_id)?.encapsulate(request)
}

/// A request's HPKE encapsulation made before the request is known: a fresh ephemeral key and its
/// key agreement with the runtime's key, which is most of what a one-shot request costs its
/// client. [`PreparedRequest::encapsulate`] consumes it, so it serves exactly one request.
pub struct PreparedRequest {
    public_key: [u8; 32],
    key_id: u8,
    enc: [u8; ENC_LEN],
    ctx: hpke_base::Context,
}

impl fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("key_id", &self.key_id)
            .field("enc", &hex::encode(self.enc))
            .finish_non_exhaustive()
    }
}

/// The encapsulation of a future request to `public_key` (see [`PreparedRequest`]).
pub fn prepare_request(public_key: &[u8; 32], key_id: u8) -> Result<PreparedRequest, ChannelError> {
    let hdr = header(key_id);
    let (enc, ctx) = hpke_base::setup_sender(public_key, &request_info(&hdr))?;
    Ok(PreparedRequest {
        public_key: *public_key,
        key_id,
        enc,
        ctx,
    })
}

impl PreparedRequest {
    /// Whether this encapsulation is to `public_key` under `key_id`.
    pub fn is_for(&self, public_key: &[u8; 32], key_id: u8) -> bool {
        self.public_key == *public_key && self.key_id == key_id
    }

    /// `request` encrypted with this encapsulation: the message to send, and the context that
    /// opens its response.
    pub fn encapsulate(
        self,
        request: &[u8],
    ) -> Result<(Vec<u8>, ClientResponseContext), ChannelError> {
        let (out, secret) = seal_message(
            self.ctx,
            &header(self.key_id),
            &self.enc,
            request,
            RESPONSE_LABEL,
        )?;
        Ok((
            out,
            ClientResponseContext {
                secret,
                enc: self.enc,
            },
        ))
    }
}

impl ClientResponseContext {
    /// A context with fixed values, for the fuzz target: real contexts come only from
    /// [`encapsulate_request`], whose encapsulation is random.
    pub(crate) fn from_parts(secret: [u8; 32], enc: [u8; ENC_LEN]) -> ClientResponseContext {
        ClientResponseContext {
            secret: Zeroizing::new(secret),
            enc,
        }
    }

    pub fn decrypt_response(self, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        if message.len() < RESPONSE_NONCE_LEN + 16 {
            return Err(ChannelError::TooShort {
                found: message.len(),
                min: RESPONSE_NONCE_LEN + 16,
            });
        }
        let (response_nonce, ct) = message.split_at(RESPONSE_NONCE_LEN);
        let (aead, nonce) = response_aead(&self.secret, &self.enc, response_nonce);
        aead.open(&nonce, &[], ct)
    }

    /// Opens the answer when it comes as a sealed stream (`crate::stream`).
    pub fn into_stream(self) -> StreamOpener {
        StreamOpener::oneshot(self.secret, self.enc)
    }
}

/// Single-shot HPKE (base mode) to `public_key`: returns `enc (32) || ciphertext`. Used by the key
/// broker to release a DEK to an attested runtime.
pub fn seal_to(
    public_key: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    let (enc, mut ctx) = hpke_base::setup_sender(public_key, info)?;
    let ct = ctx.seal(plaintext, aad)?;
    let mut out = Vec::with_capacity(ENC_LEN + ct.len());
    out.extend_from_slice(&enc);
    out.extend_from_slice(&ct);
    Ok(out)
}

impl ServiceKeyPair {
    /// Opens a message made by [`seal_to`] for this key pair.
    pub fn open_sealed(
        &self,
        info: &[u8],
        aad: &[u8],
        message: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        if message.len() < ENC_LEN + 16 {
            return Err(ChannelError::TooShort {
                found: message.len(),
                min: ENC_LEN + 16,
            });
        }
        let enc: [u8; ENC_LEN] = message[..ENC_LEN]
            .try_into()
            .map_err(|_| ChannelError::BadEncapsulatedKey)?;
        hpke_base::setup_receiver(&self.private, &enc, info)?.open(&message[ENC_LEN..], aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip() {
        let server = ServiceKeyPair::generate(7);
        let (msg, client_ctx) =
            encapsulate_request(&server.public_key(), 7, b"inner request").unwrap();
        let (inner, server_ctx) = server.decapsulate_request(&msg).unwrap();
        assert_eq!(inner.as_slice(), b"inner request");
        let resp = server_ctx.encrypt_response(b"inner response").unwrap();
        assert_eq!(
            client_ctx.decrypt_response(&resp).unwrap().as_slice(),
            b"inner response"
        );
    }

    #[test]
    fn any_flipped_request_byte_is_rejected() {
        let server = ServiceKeyPair::generate(1);
        let (msg, _) = encapsulate_request(&server.public_key(), 1, b"hello").unwrap();
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x01;
            assert!(
                server.decapsulate_request(&bad).is_err(),
                "byte {i} flipped was accepted"
            );
        }
        assert!(matches!(
            server.decapsulate_request(&msg[..10]),
            Err(ChannelError::TooShort { .. })
        ));
    }

    #[test]
    fn response_cannot_be_read_by_another_request_context() {
        let server = ServiceKeyPair::generate(1);
        let (m1, c1) = encapsulate_request(&server.public_key(), 1, b"a").unwrap();
        let (m2, c2) = encapsulate_request(&server.public_key(), 1, b"b").unwrap();
        let (_, s1) = server.decapsulate_request(&m1).unwrap();
        let (_, _s2) = server.decapsulate_request(&m2).unwrap();
        let r1 = s1.encrypt_response(b"for one").unwrap();
        assert_eq!(c2.decrypt_response(&r1), Err(ChannelError::Decrypt));
        let mut tampered = r1.clone();
        tampered[40] ^= 1;
        assert_eq!(c1.decrypt_response(&tampered), Err(ChannelError::Decrypt));
    }

    #[test]
    fn request_to_another_key_is_rejected() {
        let server = ServiceKeyPair::generate(1);
        let other = ServiceKeyPair::generate(1);
        let (msg, _) = encapsulate_request(&other.public_key(), 1, b"x").unwrap();
        assert_eq!(
            server.decapsulate_request(&msg).err(),
            Some(ChannelError::Decrypt)
        );
    }

    #[test]
    fn sealed_key_opens_only_with_right_key_info_and_aad() {
        let kp = ServiceKeyPair::generate(0);
        let other = ServiceKeyPair::generate(0);
        let m = seal_to(&kp.public_key(), b"info", b"aad", b"secret dek").unwrap();
        assert_eq!(
            kp.open_sealed(b"info", b"aad", &m).unwrap().as_slice(),
            b"secret dek"
        );
        assert!(kp.open_sealed(b"info", b"other aad", &m).is_err());
        assert!(kp.open_sealed(b"other", b"aad", &m).is_err());
        assert!(other.open_sealed(b"info", b"aad", &m).is_err());
    }

    #[test]
    fn prepared_requests_are_fresh_bound_to_their_key_and_open_as_one_shot_requests() {
        let server = ServiceKeyPair::generate(3);
        let other = ServiceKeyPair::generate(3);
        let a = prepare_request(&server.public_key(), 3).unwrap();
        let b = prepare_request(&server.public_key(), 3).unwrap();
        assert!(a.is_for(&server.public_key(), 3));
        assert!(!a.is_for(&server.public_key(), 4));
        assert!(!a.is_for(&other.public_key(), 3));
        // Each carries its own ephemeral key.
        assert_ne!(a.enc, b.enc);
        let debug = format!("{a:?}");
        assert!(debug.contains(&hex::encode(a.enc)) && !debug.contains("ctx"));
        let (msg, ctx) = a.encapsulate(b"prepared").unwrap();
        let (plain, response) = server.decapsulate_request(&msg).unwrap();
        assert_eq!(plain.as_slice(), b"prepared");
        let answer = response.encrypt_response(b"answer").unwrap();
        assert_eq!(ctx.decrypt_response(&answer).unwrap().as_slice(), b"answer");
        // Another key cannot open it.
        let (msg, _) = b.encapsulate(b"prepared").unwrap();
        assert!(other.decapsulate_request(&msg).is_err());
    }

    #[test]
    fn debug_does_not_print_private_key() {
        let kp = ServiceKeyPair::generate(0);
        let s = format!("{kp:?}");
        assert!(s.contains(&hex::encode(kp.public_key())));
        assert!(!s.contains("private"));
    }
}
