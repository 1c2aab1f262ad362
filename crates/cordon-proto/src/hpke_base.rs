//! HPKE (RFC 9180) in base mode, for the one suite the channel speaks: DHKEM(X25519,
//! HKDF-SHA256) `0x0020`, HKDF-SHA256 `0x0001`, AES-256-GCM `0x0002`.
//!
//! Why not the `hpke` crate, which the channel used before: its X25519 is x25519-dalek's portable
//! Montgomery ladder, 38 µs per Diffie-Hellman on the benchmark machine against 19 µs for
//! AWS-LC's (s2n-bignum's ADX/BMI2 code), and its receiver recomputes its own public key (a base
//! point multiplication) at every decapsulation. A one-shot request pays a key agreement on each
//! side, so this was most of its cost over plain HTTP (docs/benchmarks.md). The wire bytes are
//! the same: tests check this module against RFC 9180's published test vector for this suite and,
//! both ways, against the `hpke` crate (kept as a dev-dependency for that).
//!
//! The pieces, each as RFC 9180 names it: `LabeledExtract` / `LabeledExpand` (§4), DHKEM's
//! `Encap`, `Decap` and `DeriveKeyPair` (§4.1, §7.1.3), `KeySchedule` for mode_base (§5.1),
//! `Seal` / `Open` with the sequence number XORed into the base nonce (§5.2), and `Export` (§5.3).
//! X25519 is aws-lc-rs's, HKDF the `hkdf` crate's, AES-256-GCM ring's (as the rest of the
//! channel). Private keys live in AWS-LC's memory, which it cleanses when it frees them; the DH
//! output, shared secret, key bytes, base nonce and exporter secret are zeroized on drop. Not
//! zeroized: the HMAC states inside the `hkdf` crate's intermediate PRKs (it has no `zeroize`
//! support; the `hpke` crate had the same gap) and ring's expanded AES key schedule
//! (docs/threat-model.md §5).

use crate::aead::Aes256GcmKey;
use crate::channel::ChannelError;
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use hkdf::{Hkdf, HkdfExtract};
use sha2::Sha256;
use zeroize::Zeroizing;

/// `"KEM" || I2OSP(kem_id, 2)`: the suite id of DHKEM's own labels.
const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
/// `"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)`.
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x02";
const VERSION_LABEL: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0x00;
/// Nsk, Npk, Nenc and Nsecret of DHKEM(X25519, HKDF-SHA256), Nh of HKDF-SHA256 and Nk of
/// AES-256-GCM: all 32.
pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// `LabeledExtract(salt, label, ikm)` (RFC 9180 §4): the PRK's bytes, and an HKDF ready to
/// expand from it.
fn labeled_extract(
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> (Zeroizing<[u8; KEY_LEN]>, Hkdf<Sha256>) {
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    for part in [VERSION_LABEL, suite_id, label, ikm] {
        extract.input_ikm(part);
    }
    let (prk, hkdf) = extract.finalize();
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&prk);
    (bytes, hkdf)
}

/// `LabeledExpand(prk, label, info, L)` (RFC 9180 §4), with `info` given in parts; `L` is
/// `out.len()` (at most 255·32 bytes, as HKDF-SHA256 allows).
fn labeled_expand(
    prk: &Hkdf<Sha256>,
    suite_id: &[u8],
    label: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), ChannelError> {
    let length = u16::try_from(out.len()).map_err(|_| ChannelError::Encrypt)?;
    let length = length.to_be_bytes();
    // At most three info parts here (the key schedule context), so no allocation per expand.
    let mut parts: [&[u8]; 8] = [&[]; 8];
    let head = [&length[..], VERSION_LABEL, suite_id, label];
    let count = head.len() + info.len();
    let slots = parts.get_mut(..count).ok_or(ChannelError::Encrypt)?;
    for (slot, part) in slots.iter_mut().zip(head.iter().chain(info)) {
        *slot = part;
    }
    prk.expand_multi_info(&parts[..count], out)
        .map_err(|_| ChannelError::Encrypt)
}

/// The recipient's key pair: the runtime's service key.
pub(crate) struct RecipientKey {
    private: PrivateKey,
    public: [u8; KEY_LEN],
}

impl RecipientKey {
    /// `DeriveKeyPair(ikm)` for X25519 (RFC 9180 §7.1.3): `sk = LabeledExpand(LabeledExtract("",
    /// "dkp_prk", ikm), "sk", "", 32)`.
    pub(crate) fn derive(ikm: &[u8]) -> Result<RecipientKey, ChannelError> {
        let (_, dkp_prk) = labeled_extract(KEM_SUITE_ID, b"", b"dkp_prk", ikm);
        let mut sk = Zeroizing::new([0u8; KEY_LEN]);
        labeled_expand(&dkp_prk, KEM_SUITE_ID, b"sk", &[], sk.as_mut())?;
        let private = PrivateKey::from_private_key(&X25519, sk.as_ref())
            .map_err(|_| ChannelError::Encrypt)?;
        let public = public_key(&private)?;
        Ok(RecipientKey { private, public })
    }

    pub(crate) fn public_key(&self) -> [u8; KEY_LEN] {
        self.public
    }
}

fn public_key(private: &PrivateKey) -> Result<[u8; KEY_LEN], ChannelError> {
    let public = private
        .compute_public_key()
        .map_err(|_| ChannelError::Encrypt)?;
    public
        .as_ref()
        .try_into()
        .map_err(|_| ChannelError::Encrypt)
}

/// `DH(sk, pk)`: X25519, refusing an all-zero result (a small-order `pk`), as RFC 9180 §7.1.4
/// requires; `error` names the side's failure.
fn dh(
    private: &PrivateKey,
    public: &[u8],
    error: ChannelError,
) -> Result<Zeroizing<[u8; KEY_LEN]>, ChannelError> {
    agreement::agree(
        private,
        UnparsedPublicKey::new(&X25519, public),
        error.clone(),
        |shared| {
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            // Not an early-exit comparison: the bytes are secret. (AWS-LC's X25519 refuses an
            // all-zero result itself, in constant time; this states the RFC's rule here too.)
            let any_set = shared.iter().fold(0u8, |acc, &b| acc | b);
            if shared.len() != KEY_LEN || any_set == 0 {
                return Err(error.clone());
            }
            out.copy_from_slice(shared);
            Ok(out)
        },
    )
}

/// DHKEM's `ExtractAndExpand(dh, kem_context)` with `kem_context = enc || pkRm`.
fn shared_secret(
    dh: &[u8; KEY_LEN],
    enc: &[u8; KEY_LEN],
    pk_r: &[u8; KEY_LEN],
) -> Result<Zeroizing<[u8; KEY_LEN]>, ChannelError> {
    let (_, eae_prk) = labeled_extract(KEM_SUITE_ID, b"", b"eae_prk", dh);
    let mut secret = Zeroizing::new([0u8; KEY_LEN]);
    labeled_expand(
        &eae_prk,
        KEM_SUITE_ID,
        b"shared_secret",
        &[enc, pk_r],
        secret.as_mut(),
    )?;
    Ok(secret)
}

/// An HPKE context (RFC 9180 §5.2): the AEAD key, base nonce, sequence number and exporter
/// secret. A sender's seals and a receiver's opens must be taken in the same order.
pub(crate) struct Context {
    key: Aes256GcmKey,
    base_nonce: Zeroizing<[u8; NONCE_LEN]>,
    seq: u64,
    exporter_secret: Zeroizing<[u8; KEY_LEN]>,
}

/// `KeySchedule(mode_base, shared_secret, info, "", "")` (RFC 9180 §5.1).
fn key_schedule(shared_secret: &[u8; KEY_LEN], info: &[u8]) -> Result<Context, ChannelError> {
    let (psk_id_hash, _) = labeled_extract(HPKE_SUITE_ID, b"", b"psk_id_hash", b"");
    let (info_hash, _) = labeled_extract(HPKE_SUITE_ID, b"", b"info_hash", info);
    let context: [&[u8]; 3] = [&[MODE_BASE], psk_id_hash.as_ref(), info_hash.as_ref()];
    let (_, secret) = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    let mut base_nonce = Zeroizing::new([0u8; NONCE_LEN]);
    let mut exporter_secret = Zeroizing::new([0u8; KEY_LEN]);
    labeled_expand(&secret, HPKE_SUITE_ID, b"key", &context, key.as_mut())?;
    labeled_expand(
        &secret,
        HPKE_SUITE_ID,
        b"base_nonce",
        &context,
        base_nonce.as_mut(),
    )?;
    labeled_expand(
        &secret,
        HPKE_SUITE_ID,
        b"exp",
        &context,
        exporter_secret.as_mut(),
    )?;
    Ok(Context {
        key: Aes256GcmKey::new(&key),
        base_nonce,
        seq: 0,
        exporter_secret,
    })
}

impl Context {
    /// `base_nonce XOR I2OSP(seq, 12)`, then the sequence number moves on. It is a u64 here, so a
    /// context refuses its 2^64-th message rather than wrap (RFC 9180 §5.2's own limit, 2^96 - 1
    /// for a 12-byte nonce, is never reached).
    fn next_nonce(&mut self) -> Result<[u8; NONCE_LEN], ChannelError> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(ChannelError::Encrypt)?;
        let mut nonce = *self.base_nonce;
        for (n, s) in nonce[NONCE_LEN - 8..].iter_mut().zip(seq.to_be_bytes()) {
            *n ^= s;
        }
        Ok(nonce)
    }

    /// `ContextS.Seal(aad, pt)`: ciphertext then tag.
    pub(crate) fn seal(&mut self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let nonce = self.next_nonce()?;
        self.key.seal(&nonce, aad, plaintext)
    }

    /// `ContextR.Open(aad, ct)`. The sequence number moves on only when the message opened, as
    /// the RFC's `Open` does.
    pub(crate) fn open(
        &mut self,
        ciphertext: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        let seq = self.seq;
        let nonce = self.next_nonce()?;
        let opened = self.key.open(&nonce, aad, ciphertext);
        if opened.is_err() {
            self.seq = seq;
        }
        opened
    }

    /// `Context.Export(exporter_context, L)` with `L = out.len()`.
    pub(crate) fn export(
        &self,
        exporter_context: &[u8],
        out: &mut [u8],
    ) -> Result<(), ChannelError> {
        let exporter = Hkdf::<Sha256>::from_prk(self.exporter_secret.as_ref())
            .map_err(|_| ChannelError::Encrypt)?;
        labeled_expand(&exporter, HPKE_SUITE_ID, b"sec", &[exporter_context], out)
    }
}

/// `SetupBaseS(pkR, info)`: a fresh ephemeral key, the encapsulated key `enc` to send, and the
/// sender's context. Fails with [`ChannelError::Encrypt`] on a small-order `pk_r`.
pub(crate) fn setup_sender(
    pk_r: &[u8; KEY_LEN],
    info: &[u8],
) -> Result<([u8; KEY_LEN], Context), ChannelError> {
    let ephemeral = PrivateKey::generate(&X25519).map_err(|_| ChannelError::Encrypt)?;
    setup_sender_with(&ephemeral, pk_r, info)
}

/// [`setup_sender`] with a given ephemeral key (the test vector's).
fn setup_sender_with(
    ephemeral: &PrivateKey,
    pk_r: &[u8; KEY_LEN],
    info: &[u8],
) -> Result<([u8; KEY_LEN], Context), ChannelError> {
    let enc = public_key(ephemeral)?;
    let dh = dh(ephemeral, pk_r, ChannelError::Encrypt)?;
    let secret = shared_secret(&dh, &enc, pk_r)?;
    Ok((enc, key_schedule(&secret, info)?))
}

/// `SetupBaseR(enc, skR, info)`. Fails with [`ChannelError::Decrypt`] on a small-order `enc`.
pub(crate) fn setup_receiver(
    recipient: &RecipientKey,
    enc: &[u8; KEY_LEN],
    info: &[u8],
) -> Result<Context, ChannelError> {
    let dh = dh(&recipient.private, enc, ChannelError::Decrypt)?;
    let secret = shared_secret(&dh, enc, &recipient.public)?;
    key_schedule(&secret, info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hpke::aead::AesGcm256;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256;
    use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
    use serde_json::Value;

    const VECTOR: &str = include_str!("../testdata/hpke_base_x25519_sha256_aes256gcm.json");

    fn hex_of(v: &Value, field: &str) -> Vec<u8> {
        hex::decode(v[field].as_str().unwrap()).unwrap()
    }

    fn arr(bytes: &[u8]) -> [u8; KEY_LEN] {
        bytes.try_into().unwrap()
    }

    #[test]
    fn rfc_9180_test_vector_for_this_suite() {
        let doc: Value = serde_json::from_str(VECTOR).unwrap();
        let v = &doc["vector"];
        assert_eq!(
            (&v["mode"], &v["kem_id"], &v["kdf_id"], &v["aead_id"]),
            (
                &Value::from(0),
                &Value::from(0x20),
                &Value::from(1),
                &Value::from(2)
            )
        );
        let recipient = RecipientKey::derive(&hex_of(v, "ikmR")).unwrap();
        assert_eq!(recipient.public_key().to_vec(), hex_of(v, "pkRm"));
        let ephemeral = RecipientKey::derive(&hex_of(v, "ikmE")).unwrap();
        assert_eq!(ephemeral.public_key().to_vec(), hex_of(v, "pkEm"));
        let info = hex_of(v, "info");
        let (enc, mut sender) =
            setup_sender_with(&ephemeral.private, &recipient.public_key(), &info).unwrap();
        assert_eq!(enc.to_vec(), hex_of(v, "enc"));
        let dh = dh(&recipient.private, &enc, ChannelError::Decrypt).unwrap();
        let secret = shared_secret(&dh, &enc, &recipient.public_key()).unwrap();
        assert_eq!(secret.to_vec(), hex_of(v, "shared_secret"));
        assert_eq!(sender.base_nonce.to_vec(), hex_of(v, "base_nonce"));
        assert_eq!(
            sender.exporter_secret.to_vec(),
            hex_of(v, "exporter_secret")
        );
        let mut receiver = setup_receiver(&recipient, &enc, &info).unwrap();
        // Sequence numbers 0, 1, 2 and 256 (the nonce XOR reaches the second-to-last byte).
        for e in v["encryptions"].as_array().unwrap() {
            let nonce = hex_of(e, "nonce");
            while sender.next_nonce_peek() != nonce.as_slice() {
                sender.seq += 1;
                receiver.seq += 1;
            }
            let ct = sender.seal(&hex_of(e, "pt"), &hex_of(e, "aad")).unwrap();
            assert_eq!(ct, hex_of(e, "ct"));
            let pt = receiver.open(&ct, &hex_of(e, "aad")).unwrap();
            assert_eq!(pt.to_vec(), hex_of(e, "pt"));
        }
        for x in v["exports"].as_array().unwrap() {
            let mut out = vec![0u8; x["L"].as_u64().unwrap() as usize];
            sender
                .export(&hex_of(x, "exporter_context"), &mut out)
                .unwrap();
            assert_eq!(out, hex_of(x, "exported_value"));
            receiver
                .export(&hex_of(x, "exporter_context"), &mut out)
                .unwrap();
            assert_eq!(out, hex_of(x, "exported_value"));
        }
    }

    impl Context {
        fn next_nonce_peek(&self) -> [u8; NONCE_LEN] {
            let mut nonce = *self.base_nonce;
            for (n, s) in nonce[NONCE_LEN - 8..]
                .iter_mut()
                .zip(self.seq.to_be_bytes())
            {
                *n ^= s;
            }
            nonce
        }
    }

    type Kem = X25519HkdfSha256;

    #[test]
    fn interoperates_with_the_hpke_crate_both_ways() {
        for round in 0u8..8 {
            let ikm = [round.wrapping_mul(37).wrapping_add(1); 32];
            let ours = RecipientKey::derive(&ikm).unwrap();
            let (their_sk, their_pk) = Kem::derive_keypair(&ikm);
            assert_eq!(ours.public_key().as_slice(), their_pk.to_bytes().as_slice());
            let info = [b"cordon test info ".as_slice(), &[round]].concat();
            let aad = vec![round; round as usize];
            let messages: Vec<Vec<u8>> = (0..3)
                .map(|i| vec![round ^ i; 10 + 90 * i as usize])
                .collect();

            // Ours to theirs.
            let (enc, mut sender) = setup_sender(&ours.public_key(), &info).unwrap();
            let their_enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).unwrap();
            let mut their_receiver = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
                &OpModeR::Base,
                &their_sk,
                &their_enc,
                &info,
            )
            .unwrap();
            for m in &messages {
                let ct = sender.seal(m, &aad).unwrap();
                assert_eq!(&their_receiver.open(&ct, &aad).unwrap(), m);
            }
            let (mut a, mut b) = ([0u8; 48], [0u8; 48]);
            sender.export(b"label", &mut a).unwrap();
            their_receiver.export(b"label", &mut b).unwrap();
            assert_eq!(a, b);

            // Theirs to ours.
            let (their_enc, mut their_sender) =
                hpke::setup_sender::<AesGcm256, HkdfSha256, Kem, _>(
                    &OpModeS::Base,
                    &their_pk,
                    &info,
                    &mut rand::rng(),
                )
                .unwrap();
            let mut receiver = setup_receiver(&ours, &arr(&their_enc.to_bytes()), &info).unwrap();
            for m in &messages {
                let ct = their_sender.seal(m, &aad).unwrap();
                assert_eq!(&receiver.open(&ct, &aad).unwrap().to_vec(), m);
            }
            their_sender.export(b"", &mut a).unwrap();
            receiver.export(b"", &mut b).unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn tampering_reordering_and_small_order_keys_are_refused() {
        let recipient = RecipientKey::derive(&[3; 32]).unwrap();
        let (enc, mut sender) = setup_sender(&recipient.public_key(), b"info").unwrap();
        let first = sender.seal(b"first", b"").unwrap();
        let second = sender.seal(b"second", b"").unwrap();
        // Another info, a flipped ciphertext byte, a wrong AAD: nothing opens.
        let mut other = setup_receiver(&recipient, &enc, b"other info").unwrap();
        assert_eq!(other.open(&first, b""), Err(ChannelError::Decrypt));
        let mut receiver = setup_receiver(&recipient, &enc, b"info").unwrap();
        let mut flipped = first.clone();
        flipped[0] ^= 1;
        assert_eq!(receiver.open(&flipped, b""), Err(ChannelError::Decrypt));
        assert_eq!(receiver.open(&first, b"aad"), Err(ChannelError::Decrypt));
        // Out of order: the second message does not open first; a failure does not advance.
        assert_eq!(receiver.open(&second, b""), Err(ChannelError::Decrypt));
        assert_eq!(receiver.open(&first, b"").unwrap().as_slice(), b"first");
        assert_eq!(receiver.open(&second, b"").unwrap().as_slice(), b"second");
        // A replayed message does not open again.
        assert_eq!(receiver.open(&first, b""), Err(ChannelError::Decrypt));
        // Small-order points (all-zero DH output) are refused on both sides.
        for small in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(matches!(
                setup_sender(&small, b"info"),
                Err(ChannelError::Encrypt)
            ));
            assert!(matches!(
                setup_receiver(&recipient, &small, b"info"),
                Err(ChannelError::Decrypt)
            ));
        }
    }
}

/// Edge cases of keys and lengths, found by a review: every small-order X25519 point (and with
/// its high bit set) is refused, non-canonical encodings agree with the `hpke` crate, and export
/// lengths stop at HKDF's limit.
#[cfg(test)]
mod key_edge_cases {
    use super::*;
    use hpke::aead::AesGcm256;
    use hpke::kdf::HkdfSha256;
    use hpke::kem::X25519HkdfSha256 as Kem;
    use hpke::{Deserializable, Kem as _, OpModeR};

    fn p_plus(k: u8) -> [u8; 32] {
        // p = 2^255 - 19, little endian: ed ff .. ff 7f
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let (s, c) = p[0].overflowing_add(k);
        p[0] = s;
        if c {
            p[1] = p[1].wrapping_add(1);
        }
        p
    }

    fn small_order() -> Vec<[u8; 32]> {
        let mut v = vec![];
        let mut zero = [0u8; 32];
        v.push(zero);
        zero[0] = 1;
        v.push(zero);
        v.push(
            hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        v.push(
            hex::decode("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        v.push(
            hex::decode("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
                .unwrap()
                .try_into()
                .unwrap(),
        );
        v.push(p_plus(0));
        v.push(p_plus(1));
        let n = v.len();
        for i in 0..n {
            let mut h = v[i];
            h[31] |= 0x80;
            v.push(h);
        }
        v
    }

    #[test]
    fn every_small_order_point_is_refused_as_the_hpke_crate_refuses_it() {
        let ikm = [5u8; 32];
        let ours = RecipientKey::derive(&ikm).unwrap();
        let (their_sk, _) = Kem::derive_keypair(&ikm);
        for s in small_order() {
            let r = setup_receiver(&ours, &s, b"i");
            assert!(
                matches!(r, Err(ChannelError::Decrypt)),
                "{}",
                hex::encode(s)
            );
            let e = <Kem as hpke::Kem>::EncappedKey::from_bytes(&s).unwrap();
            let t = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
                &OpModeR::Base,
                &their_sk,
                &e,
                b"i",
            );
            assert!(t.is_err(), "theirs accepted {}", hex::encode(s));
            assert!(matches!(setup_sender(&s, b"i"), Err(ChannelError::Encrypt)));
        }
    }

    #[test]
    fn non_canonical_and_high_bit_encapsulations_agree_with_the_hpke_crate() {
        let ikm = [6u8; 32];
        let ours = RecipientKey::derive(&ikm).unwrap();
        let (their_sk, _) = Kem::derive_keypair(&ikm);
        let mut cases: Vec<[u8; 32]> = vec![];
        for k in 2..19u8 {
            cases.push(p_plus(k));
        } // non-canonical u = k (mod p)
        let mut nine = [0u8; 32];
        nine[0] = 9;
        cases.push(nine);
        let mut hb = nine;
        hb[31] |= 0x80;
        cases.push(hb);
        let real = setup_sender(&ours.public_key(), b"x").unwrap().0;
        let mut rh = real;
        rh[31] ^= 0x80;
        cases.push(rh);
        for c in cases {
            let mine = setup_receiver(&ours, &c, b"i");
            let e = <Kem as hpke::Kem>::EncappedKey::from_bytes(&c).unwrap();
            let theirs = hpke::setup_receiver::<AesGcm256, HkdfSha256, Kem>(
                &OpModeR::Base,
                &their_sk,
                &e,
                b"i",
            );
            match (mine, theirs) {
                (Ok(m), Ok(t)) => {
                    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
                    m.export(b"e", &mut a).unwrap();
                    t.export(b"e", &mut b).unwrap();
                    assert_eq!(a, b, "{}", hex::encode(c));
                }
                (m, t) => panic!(
                    "differ on {}: ours ok={} theirs ok={}",
                    hex::encode(c),
                    m.is_ok(),
                    t.is_ok()
                ),
            }
        }
    }

    #[test]
    fn export_lengths_up_to_the_hkdf_limit_and_no_further() {
        let r = RecipientKey::derive(&[1; 32]).unwrap();
        let (_, ctx) = setup_sender(&r.public_key(), b"").unwrap();
        let mut big = vec![0u8; 255 * 32 + 1];
        assert!(ctx.export(b"", &mut big).is_err());
        let mut ok = vec![0u8; 255 * 32];
        assert!(ctx.export(b"", &mut ok).is_ok());
        let mut zero: [u8; 0] = [];
        let _ = ctx.export(b"", &mut zero);
    }
}
