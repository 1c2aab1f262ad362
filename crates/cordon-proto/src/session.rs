//! Session mode of the encrypted channel: one HPKE setup to the attested key, then one AEAD per
//! message, for high-rate streams where a fresh HPKE encapsulation per request (two X25519
//! operations on the client, one on the runtime) would cost more than the inference.
//!
//! ```text
//! setup request  = hdr (7) || enc (32) || HPKE ciphertext of the setup JSON {"sent_at": unix seconds}
//!   hdr          = key_id (1) || kem_id (2) || kdf_id (2) || aead_id (2)     (as in one-shot mode)
//!   info         = "cordon session v2" || 0x00 || hdr
//! secret         = context.export("cordon session secret v2", 32)
//! server_nonce   = 32 random bytes, drawn by the runtime for this session
//! prk            = HKDF-Extract(salt = enc || server_nonce, secret)
//! keys           = HKDF-Expand(prk, "cordon session keys v2", 88)
//!                = key_c2s (32) || key_s2c (32) || nonce_c2s (12) || nonce_s2c (12)
//! setup response = server_nonce (32)
//!                  || AES-256-GCM(key_s2c, nonce(s2c, 0), aad = "cordon session grant", grant JSON)
//!   grant        = {"session_id": hex(16 bytes), "expires_at": unix seconds, "max_messages": n}
//! request        = session_id (16) || seq (8, big-endian, >= 1)
//!                  || AES-256-GCM(key_c2s, nonce(c2s, seq), aad = session_id || seq, inner request)
//! response       = seq (8) || AES-256-GCM(key_s2c, nonce(s2c, seq), aad = session_id || seq, inner)
//! nonce(d, seq)  = nonce_d XOR (0x00000000 || u64be(seq))
//! ```
//!
//! Both sides contribute to the keys, as OHTTP's response nonce does: the client through its HPKE
//! setup, the runtime through `server_nonce`. A setup replayed by whoever carries it therefore opens
//! a session under fresh keys, never a second session under the same key and nonces (which would
//! reuse AES-GCM nonces and give away GHASH's key), and the replayer, who lacks the client's HPKE
//! secret, can neither read the grant nor send in that session. The runtime also refuses a setup it
//! has seen (by its `enc`) or whose `sent_at` is outside its window.
//!
//! Each direction has its own key and nonce base, so a response can never be replayed as a request.
//! The grant (sequence 0 of the runtime's direction) is authenticated by a key only the holder of
//! the attested private key can derive: a client that opens it knows it talks to the attested
//! runtime. The runtime accepts a request only if its sequence number is above every number it
//! has accepted in that session, which rejects replayed and reordered messages; it checks that
//! after authenticating, so forged messages cannot move the window.

use crate::aead::Aes256GcmKey;
use crate::channel::{
    header, labelled_info, open_message, seal_message, ChannelError, ServiceKeyPair, ENC_LEN,
    HDR_LEN,
};
use crate::hpke_base;
use crate::stream::{self, StreamOpener, StreamSealer};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use zeroize::Zeroizing;

/// Media type of a session setup request (`POST /v1/session`).
pub const SESSION_SETUP_MEDIA_TYPE: &str = "message/cordon-session-setup";
/// Media type of a session message (`POST /v1/session/message`) and of its response.
pub const SESSION_MESSAGE_MEDIA_TYPE: &str = "message/cordon-session";

/// Bytes of a session id.
pub const SESSION_ID_LEN: usize = 16;
const SEQ_LEN: usize = 8;
const TAG_LEN: usize = 16;
const SESSION_LABEL: &[u8] = b"cordon session v2";
const SECRET_LABEL: &[u8] = b"cordon session secret v2";
const KEYS_LABEL: &[u8] = b"cordon session keys v2";
const GRANT_AAD: &[u8] = b"cordon session grant";
const STREAM_LABEL: &[u8] = b"cordon session stream v1";
/// Bytes of the runtime's contribution to a session's keys.
pub const SERVER_NONCE_LEN: usize = 32;

/// The plaintext of a setup request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSetup {
    /// The client's clock when it made the setup (Unix seconds); the runtime refuses setups outside
    /// its replay window.
    pub sent_at: u64,
}

/// A session identifier, chosen by the runtime at random.
pub type SessionId = [u8; SESSION_ID_LEN];

/// What the runtime grants when it opens a session (the plaintext of the setup response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    #[serde(with = "hex_id")]
    pub session_id: SessionId,
    /// Unix seconds after which the runtime refuses the session's messages.
    pub expires_at: u64,
    /// Highest sequence number the runtime will accept in this session.
    pub max_messages: u64,
}

/// The keys of one session, one key and nonce base per direction. The nonce bases and the bytes the
/// keys are made from are zeroized on drop; ring's AES key schedules are not (crate::aead).
pub struct SessionKeys {
    c2s: Aes256GcmKey,
    s2c: Aes256GcmKey,
    nonce_c2s: Zeroizing<[u8; 12]>,
    nonce_s2c: Zeroizing<[u8; 12]>,
    /// What each streamed answer's key is derived from (`crate::stream`).
    stream_secret: Zeroizing<[u8; 32]>,
    server_nonce: [u8; SERVER_NONCE_LEN],
    setup_enc: [u8; ENC_LEN],
    /// The derived bytes, kept in tests only, to check that no key and nonce pair ever repeats.
    #[cfg(test)]
    material: [u8; 88],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys { .. }")
    }
}

impl SessionKeys {
    /// The keys from the HPKE exporter secret, the setup's `enc` and the runtime's nonce.
    pub(crate) fn derive(
        secret: &[u8; 32],
        enc: &[u8; ENC_LEN],
        server_nonce: &[u8; SERVER_NONCE_LEN],
    ) -> SessionKeys {
        let mut salt = [0u8; ENC_LEN + SERVER_NONCE_LEN];
        salt[..ENC_LEN].copy_from_slice(enc);
        salt[ENC_LEN..].copy_from_slice(server_nonce);
        let mut material = Zeroizing::new([0u8; 88]);
        // 88 bytes is far below HKDF-SHA256's limit, so expand cannot fail.
        let hk = Hkdf::<Sha256>::new(Some(&salt), secret);
        let _ = hk.expand(KEYS_LABEL, material.as_mut());
        let mut stream_secret = Zeroizing::new([0u8; 32]);
        let _ = hk.expand(STREAM_LABEL, stream_secret.as_mut());
        #[cfg(test)]
        let material: &[u8; 88] = &material;
        let mut nonce_c2s = Zeroizing::new([0u8; 12]);
        let mut nonce_s2c = Zeroizing::new([0u8; 12]);
        nonce_c2s.copy_from_slice(&material[64..76]);
        nonce_s2c.copy_from_slice(&material[76..88]);
        SessionKeys {
            // The key bytes are zeroized with `material`; ring's key schedule is not (crate::aead).
            c2s: Aes256GcmKey::new(&key_bytes(&material[..32])),
            s2c: Aes256GcmKey::new(&key_bytes(&material[32..64])),
            nonce_c2s,
            nonce_s2c,
            stream_secret,
            server_nonce: *server_nonce,
            setup_enc: *enc,
            #[cfg(test)]
            material: *material,
        }
    }

    /// The setup's encapsulated key: unique to one setup request, what a runtime remembers to
    /// refuse a replayed setup.
    pub fn setup_id(&self) -> [u8; ENC_LEN] {
        self.setup_enc
    }

    fn seal(
        &self,
        to_client: bool,
        seq: u64,
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, ChannelError> {
        let (aead, base) = self.direction(to_client);
        aead.seal(&nonce(base, seq), aad, msg)
    }

    fn open(
        &self,
        to_client: bool,
        seq: u64,
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        let (aead, base) = self.direction(to_client);
        aead.open(&nonce(base, seq), aad, msg)
    }

    fn direction(&self, to_client: bool) -> (&Aes256GcmKey, &[u8; 12]) {
        if to_client {
            (&self.s2c, &self.nonce_s2c)
        } else {
            (&self.c2s, &self.nonce_c2s)
        }
    }
}

/// 32 key bytes of the derived material, zeroized when dropped.
fn key_bytes(bytes: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    // Both sides are 32 bytes: the callers slice a fixed-size array at constant offsets.
    key.copy_from_slice(bytes);
    key
}

fn nonce(base: &[u8; 12], seq: u64) -> [u8; 12] {
    let mut n = *base;
    for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
        *b ^= s;
    }
    n
}

fn message_aad(id: &SessionId, seq: u64) -> [u8; SESSION_ID_LEN + SEQ_LEN] {
    let mut aad = [0u8; SESSION_ID_LEN + SEQ_LEN];
    aad[..SESSION_ID_LEN].copy_from_slice(id);
    aad[SESSION_ID_LEN..].copy_from_slice(&seq.to_be_bytes());
    aad
}

fn session_info(hdr: &[u8]) -> Vec<u8> {
    labelled_info(SESSION_LABEL, hdr)
}

/// A session request as it arrives, before its session is looked up.
#[derive(Debug, Clone, Copy)]
pub struct SessionMessage<'a> {
    pub session_id: SessionId,
    pub seq: u64,
    ciphertext: &'a [u8],
}

impl<'a> SessionMessage<'a> {
    /// Splits a session request into its clear header and ciphertext; nothing is authenticated yet.
    pub fn parse(message: &'a [u8]) -> Result<SessionMessage<'a>, ChannelError> {
        let min = SESSION_ID_LEN + SEQ_LEN + TAG_LEN;
        if message.len() < min {
            return Err(ChannelError::TooShort {
                found: message.len(),
                min,
            });
        }
        let (id, rest) = message.split_at(SESSION_ID_LEN);
        let (seq, ciphertext) = rest.split_at(SEQ_LEN);
        let mut session_id = [0u8; SESSION_ID_LEN];
        session_id.copy_from_slice(id);
        let mut seq_bytes = [0u8; SEQ_LEN];
        seq_bytes.copy_from_slice(seq);
        Ok(SessionMessage {
            session_id,
            seq: u64::from_be_bytes(seq_bytes),
            ciphertext,
        })
    }

    /// Authenticates and decrypts the request with its session's keys. The caller checks the
    /// sequence number against the session's window after this succeeds.
    pub fn open(&self, keys: &SessionKeys) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        keys.open(
            false,
            self.seq,
            &message_aad(&self.session_id, self.seq),
            self.ciphertext,
        )
    }
}

impl ServiceKeyPair {
    /// Opens a session setup request: returns the setup plaintext and the session's keys, mixed
    /// with a fresh random nonce of the runtime's, which [`SessionKeys::seal_grant`] sends back.
    pub fn accept_session(
        &self,
        message: &[u8],
    ) -> Result<(Zeroizing<Vec<u8>>, SessionKeys), ChannelError> {
        use rand::RngCore;
        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        rand::rng().fill_bytes(&mut server_nonce);
        self.accept_session_with_nonce(message, &server_nonce)
    }

    /// [`Self::accept_session`] with a given runtime nonce: for the fuzz target, whose seeds are
    /// sessions made with a fixed one. Real runtimes draw a fresh nonce per setup.
    pub(crate) fn accept_session_with_nonce(
        &self,
        message: &[u8],
        server_nonce: &[u8; SERVER_NONCE_LEN],
    ) -> Result<(Zeroizing<Vec<u8>>, SessionKeys), ChannelError> {
        let (hdr, enc_bytes, ct) = split_setup(message)?;
        self.check_header(hdr)?;
        let enc: [u8; ENC_LEN] = enc_bytes
            .try_into()
            .map_err(|_| ChannelError::BadEncapsulatedKey)?;
        let (setup, secret) = open_message(
            self.recipient_key(),
            &enc,
            &session_info(hdr),
            ct,
            SECRET_LABEL,
        )?;
        Ok((setup, SessionKeys::derive(&secret, &enc, server_nonce)))
    }
}

/// A setup request split into header, encapsulated key and ciphertext.
type SetupParts<'a> = (&'a [u8], &'a [u8], &'a [u8]);

fn split_setup(message: &[u8]) -> Result<SetupParts<'_>, ChannelError> {
    let min = HDR_LEN + ENC_LEN + TAG_LEN;
    if message.len() < min {
        return Err(ChannelError::TooShort {
            found: message.len(),
            min,
        });
    }
    let (hdr, rest) = message.split_at(HDR_LEN);
    let (enc, ct) = rest.split_at(ENC_LEN);
    Ok((hdr, enc, ct))
}

impl SessionKeys {
    /// Runtime side: the setup response carrying `grant`, after the runtime's nonce.
    pub fn seal_grant(&self, grant: &SessionGrant) -> Result<Vec<u8>, ChannelError> {
        let json = serde_json::to_vec(grant).map_err(|_| ChannelError::Encrypt)?;
        let ct = self.seal(true, 0, GRANT_AAD, &json)?;
        let mut out = Vec::with_capacity(SERVER_NONCE_LEN + ct.len());
        out.extend_from_slice(&self.server_nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Runtime side: the response to the request with sequence number `seq`.
    pub fn seal_response(
        &self,
        session_id: &SessionId,
        seq: u64,
        response: &[u8],
    ) -> Result<Vec<u8>, ChannelError> {
        let ct = self.seal(true, seq, &message_aad(session_id, seq), response)?;
        let mut out = Vec::with_capacity(SEQ_LEN + ct.len());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Runtime side: the answer to request `seq` as a sealed stream (`crate::stream`), under a
    /// key of its own (from the session's stream secret, `seq` and a fresh nonce).
    pub fn stream_sealer(&self, session_id: &SessionId, seq: u64) -> StreamSealer {
        let id = *session_id;
        StreamSealer::new(
            &self.stream_secret,
            |nonce| stream::session_salt(&id, seq, nonce).to_vec(),
            &seq.to_be_bytes(),
        )
    }
}

/// Client side: a setup request sent, waiting for the runtime's grant.
pub struct PendingSession {
    secret: Zeroizing<[u8; 32]>,
    enc: [u8; ENC_LEN],
}

impl fmt::Debug for PendingSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingSession { .. }")
    }
}

/// Client side: starts a session with the runtime's (attested) HPKE key. `setup` is the setup's
/// plaintext (JSON [`SessionSetup`]). Returns the setup request to send and the pending session
/// that opens the runtime's answer.
pub fn start_session(
    public_key: &[u8; 32],
    key_id: u8,
    setup: &[u8],
) -> Result<(Vec<u8>, PendingSession), ChannelError> {
    let hdr = header(key_id);
    let (enc, ctx) = hpke_base::setup_sender(public_key, &session_info(&hdr))?;
    let (out, secret) = seal_message(ctx, &hdr, &enc, setup, SECRET_LABEL)?;
    Ok((out, PendingSession { secret, enc }))
}

impl PendingSession {
    /// Opens the runtime's grant. Only the holder of the attested private key could have made it.
    pub fn accept(self, response: &[u8]) -> Result<ClientSession, ChannelError> {
        let min = SERVER_NONCE_LEN + TAG_LEN;
        if response.len() < min {
            return Err(ChannelError::TooShort {
                found: response.len(),
                min,
            });
        }
        let (nonce_bytes, ct) = response.split_at(SERVER_NONCE_LEN);
        let mut server_nonce = [0u8; SERVER_NONCE_LEN];
        server_nonce.copy_from_slice(nonce_bytes);
        let keys = SessionKeys::derive(&self.secret, &self.enc, &server_nonce);
        let plain = keys.open(true, 0, GRANT_AAD, ct)?;
        let grant: SessionGrant =
            serde_json::from_slice(&plain).map_err(|_| ChannelError::Decrypt)?;
        Ok(ClientSession {
            keys,
            grant,
            next_seq: AtomicU64::new(1),
        })
    }
}

/// Client side: an open session. Sequence numbers are taken in order; several tasks may share a
/// session, but the runtime refuses a request that arrives after a higher-numbered one, so a
/// client that sends concurrently should keep one session per in-flight request stream.
pub struct ClientSession {
    keys: SessionKeys,
    grant: SessionGrant,
    next_seq: AtomicU64,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    pub fn grant(&self) -> &SessionGrant {
        &self.grant
    }

    /// Whether the next request would pass the runtime's message limit.
    pub fn exhausted(&self) -> bool {
        self.next_seq.load(Ordering::Relaxed) > self.grant.max_messages
    }

    /// Encrypts one request; returns the message and its sequence number, which the response
    /// must carry.
    pub fn seal_request(&self, request: &[u8]) -> Result<(Vec<u8>, u64), ChannelError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let id = self.grant.session_id;
        let ct = self
            .keys
            .seal(false, seq, &message_aad(&id, seq), request)?;
        let mut out = Vec::with_capacity(SESSION_ID_LEN + SEQ_LEN + ct.len());
        out.extend_from_slice(&id);
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ct);
        Ok((out, seq))
    }

    /// Decrypts the response to the request numbered `seq`; a response to any other request,
    /// of any other session, or altered in any byte is refused.
    pub fn open_response(
        &self,
        seq: u64,
        response: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        let min = SEQ_LEN + TAG_LEN;
        if response.len() < min {
            return Err(ChannelError::TooShort {
                found: response.len(),
                min,
            });
        }
        let (seq_bytes, ct) = response.split_at(SEQ_LEN);
        let mut b = [0u8; SEQ_LEN];
        b.copy_from_slice(seq_bytes);
        if u64::from_be_bytes(b) != seq {
            return Err(ChannelError::Decrypt);
        }
        self.keys
            .open(true, seq, &message_aad(&self.grant.session_id, seq), ct)
    }

    /// Opens the answer to request `seq` when it comes as a sealed stream.
    pub fn stream_opener(&self, seq: u64) -> StreamOpener {
        StreamOpener::session(self.keys.stream_secret.clone(), self.grant.session_id, seq)
    }
}

mod hex_id {
    use super::{SessionId, SESSION_ID_LEN};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &SessionId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(|e| D::Error::custom(format!("invalid hex: {e}")))?;
        v.try_into()
            .map_err(|_| D::Error::custom(format!("expected {SESSION_ID_LEN} bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: u8) -> SessionGrant {
        SessionGrant {
            session_id: [id; SESSION_ID_LEN],
            expires_at: 1_900_000_000,
            max_messages: 100,
        }
    }

    fn open_pair(server: &ServiceKeyPair) -> (ClientSession, SessionKeys) {
        let (setup, pending) = start_session(&server.public_key(), server.key_id(), b"{}").unwrap();
        let (plain, keys) = server.accept_session(&setup).unwrap();
        assert_eq!(plain.as_slice(), b"{}");
        assert_eq!(
            keys.setup_id().as_slice(),
            &setup[HDR_LEN..HDR_LEN + ENC_LEN]
        );
        let client = pending
            .accept(&keys.seal_grant(&grant(9)).unwrap())
            .unwrap();
        (client, keys)
    }

    #[test]
    fn requests_and_responses_round_trip_in_order() {
        let server = ServiceKeyPair::generate(3);
        let (client, keys) = open_pair(&server);
        assert_eq!(client.grant(), &grant(9));
        for i in 1..=3u64 {
            let body = format!("request {i}");
            let (msg, seq) = client.seal_request(body.as_bytes()).unwrap();
            assert_eq!(seq, i);
            let parsed = SessionMessage::parse(&msg).unwrap();
            assert_eq!((parsed.session_id, parsed.seq), ([9; 16], i));
            assert_eq!(parsed.open(&keys).unwrap().as_slice(), body.as_bytes());
            let resp = keys.seal_response(&parsed.session_id, seq, b"ok").unwrap();
            assert_eq!(client.open_response(seq, &resp).unwrap().as_slice(), b"ok");
        }
    }

    #[test]
    fn any_flipped_byte_is_rejected_in_both_directions() {
        let server = ServiceKeyPair::generate(0);
        let (client, keys) = open_pair(&server);
        let (msg, seq) = client.seal_request(b"hello").unwrap();
        for i in 0..msg.len() {
            let mut bad = msg.clone();
            bad[i] ^= 0x80;
            let opened = SessionMessage::parse(&bad).and_then(|m| {
                // A flipped id would miss the session table; here it must fail authentication.
                m.open(&keys)
            });
            assert!(opened.is_err(), "request byte {i} flipped was accepted");
        }
        let resp = keys.seal_response(&[9; 16], seq, b"answer").unwrap();
        for i in 0..resp.len() {
            let mut bad = resp.clone();
            bad[i] ^= 0x01;
            assert!(
                client.open_response(seq, &bad).is_err(),
                "response byte {i}"
            );
        }
    }

    #[test]
    fn a_response_is_not_a_request_and_belongs_to_one_sequence_number() {
        let server = ServiceKeyPair::generate(0);
        let (client, keys) = open_pair(&server);
        let (_, seq1) = client.seal_request(b"one").unwrap();
        let (_, seq2) = client.seal_request(b"two").unwrap();
        let resp1 = keys.seal_response(&[9; 16], seq1, b"for one").unwrap();
        assert_eq!(
            client.open_response(seq2, &resp1),
            Err(ChannelError::Decrypt)
        );
        // Reflect the runtime's answer back as a request: keys differ by direction.
        let mut reflected = [9u8; 16].to_vec();
        reflected.extend_from_slice(&resp1);
        let m = SessionMessage::parse(&reflected).unwrap();
        assert_eq!(m.open(&keys), Err(ChannelError::Decrypt));
    }

    #[test]
    fn sessions_do_not_share_keys_and_grants_need_the_attested_key() {
        let server = ServiceKeyPair::generate(0);
        let (client_a, _keys_a) = open_pair(&server);
        let (_client_b, keys_b) = open_pair(&server);
        let (msg, _) = client_a.seal_request(b"for a").unwrap();
        assert_eq!(
            SessionMessage::parse(&msg).unwrap().open(&keys_b),
            Err(ChannelError::Decrypt)
        );
        // A man in the middle without the private key cannot answer the setup.
        let impostor = ServiceKeyPair::generate(0);
        let (setup, pending) = start_session(&server.public_key(), 0, b"{}").unwrap();
        assert_eq!(
            impostor.accept_session(&setup).err(),
            Some(ChannelError::Decrypt)
        );
        let (_, impostor_keys) = {
            let (s2, _) = start_session(&impostor.public_key(), 0, b"{}").unwrap();
            impostor.accept_session(&s2).unwrap()
        };
        let forged = impostor_keys.seal_grant(&grant(1)).unwrap();
        assert!(pending.accept(&forged).is_err());
    }

    #[test]
    fn malformed_setup_and_messages_get_typed_errors() {
        let server = ServiceKeyPair::generate(5);
        assert!(matches!(
            server.accept_session(&[0u8; 20]),
            Err(ChannelError::TooShort { .. })
        ));
        let (setup, _) = start_session(&server.public_key(), 6, b"{}").unwrap();
        assert_eq!(
            server.accept_session(&setup).err(),
            Some(ChannelError::UnknownKeyId {
                found: 6,
                expected: 5
            })
        );
        assert!(matches!(
            SessionMessage::parse(&[0u8; 39]),
            Err(ChannelError::TooShort { found: 39, .. })
        ));
    }

    #[test]
    fn client_knows_when_the_message_limit_is_reached() {
        let server = ServiceKeyPair::generate(0);
        let (setup, pending) = start_session(&server.public_key(), 0, b"{}").unwrap();
        let (_, keys) = server.accept_session(&setup).unwrap();
        let mut g = grant(2);
        g.max_messages = 2;
        let client = pending.accept(&keys.seal_grant(&g).unwrap()).unwrap();
        assert!(!client.exhausted());
        client.seal_request(b"1").unwrap();
        client.seal_request(b"2").unwrap();
        assert!(client.exhausted());
    }

    /// The finding this fixes: a replayed setup used to derive the same keys, so the runtime sealed
    /// two different grants (and later responses) under one key and nonce.
    #[test]
    fn a_replayed_setup_gets_fresh_keys_and_no_key_nonce_pair_ever_repeats() {
        let server = ServiceKeyPair::generate(0);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let (setup, _) = start_session(&server.public_key(), 0, b"{}").unwrap();
            // The same captured setup, accepted five times (as a replaying host would make it).
            for _ in 0..5 {
                let (_, keys) = server.accept_session(&setup).unwrap();
                let m = keys.material;
                let directions = [(&m[..32], &m[64..76]), (&m[32..64], &m[76..88])];
                for (key, base) in directions {
                    let base: [u8; 12] = base.try_into().unwrap();
                    for seq in 0..4 {
                        assert!(
                            seen.insert((key.to_vec(), nonce(&base, seq))),
                            "a key and nonce pair was used twice"
                        );
                    }
                }
            }
        }
        assert_eq!(seen.len(), 200 * 5 * 2 * 4);
    }

    #[test]
    fn the_grant_binds_the_runtime_nonce_and_a_replayed_grant_is_useless() {
        let server = ServiceKeyPair::generate(0);
        let (setup, pending) = start_session(&server.public_key(), 0, b"{}").unwrap();
        let (_, first) = server.accept_session(&setup).unwrap();
        let (_, replayed) = server.accept_session(&setup).unwrap();
        assert_ne!(first.material, replayed.material);
        let grant = first.seal_grant(&grant(1)).unwrap();
        // A flipped byte of the runtime's nonce derives other keys: the grant does not open for
        // the very client it was made for (a twin of its pending session, same secret).
        let mut bad = grant.clone();
        bad[0] ^= 1;
        let twin = PendingSession {
            secret: pending.secret.clone(),
            enc: pending.enc,
        };
        assert_eq!(twin.accept(&bad).err(), Some(ChannelError::Decrypt));
        let client = pending.accept(&grant).unwrap();
        // A message of the client's session does not open under the replayed session's keys.
        let (msg, _) = client.seal_request(b"hello").unwrap();
        let parsed = SessionMessage::parse(&msg).unwrap();
        assert_eq!(parsed.open(&replayed), Err(ChannelError::Decrypt));
        assert_eq!(parsed.open(&first).unwrap().as_slice(), b"hello");
        assert!(matches!(
            start_session(&server.public_key(), 0, b"{}")
                .unwrap()
                .1
                .accept(&grant[..40]),
            Err(ChannelError::TooShort { found: 40, .. })
        ));
    }
}
