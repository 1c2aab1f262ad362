//! AES-256-GCM for the channel's bulk data (session messages, one-shot responses): ring's
//! implementation, whose AES-NI/VAES and CLMUL code is about six times faster here than a portable
//! one (docs/benchmarks.md), which matters once requests carry binary tensors. The wire form is
//! plain AES-256-GCM, ciphertext then 16-byte tag, as before. ring does not zeroize its expanded
//! key schedule on drop; the key bytes it is made from are zeroized (docs/threat-model.md §5).

use crate::channel::ChannelError;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

/// One AES-256-GCM key.
pub(crate) struct Aes256GcmKey(LessSafeKey);

impl Aes256GcmKey {
    pub(crate) fn new(key: &[u8; 32]) -> Aes256GcmKey {
        // A 32-byte key is what AES-256-GCM takes: `new` cannot fail on it.
        match UnboundKey::new(&AES_256_GCM, key) {
            Ok(k) => Aes256GcmKey(LessSafeKey::new(k)),
            Err(_) => unreachable!("AES-256-GCM takes a 32-byte key"),
        }
    }

    /// `msg` encrypted, then the tag.
    pub(crate) fn seal(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        msg: &[u8],
    ) -> Result<Vec<u8>, ChannelError> {
        let mut out = Vec::with_capacity(msg.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(msg);
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut out,
            )
            .map_err(|_| ChannelError::Encrypt)?;
        Ok(out)
    }

    /// The plaintext of `ciphertext` (ciphertext then tag), zeroized when dropped.
    pub(crate) fn open(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                buf.as_mut_slice(),
            )
            .map_err(|_| ChannelError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};

    /// The same bytes as the portable implementation the channel used before (RustCrypto's
    /// aes-gcm): old and new peers interoperate, and a tampered byte or a wrong AAD fails.
    #[test]
    fn ring_and_rustcrypto_agree_and_tampering_fails() {
        let key = [7u8; 32];
        let nonce = [9u8; 12];
        let ours = Aes256GcmKey::new(&key);
        let theirs = aes_gcm::Aes256Gcm::new((&key).into());
        for len in [0usize, 1, 15, 16, 17, 4096, 100_003] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let sealed = ours.seal(&nonce, b"aad", &msg).unwrap();
            let expected = theirs
                .encrypt(
                    (&nonce).into(),
                    Payload {
                        msg: &msg,
                        aad: b"aad",
                    },
                )
                .unwrap();
            assert_eq!(sealed, expected, "{len} bytes");
            assert_eq!(*ours.open(&nonce, b"aad", &sealed).unwrap(), msg);
            assert!(ours.open(&nonce, b"other", &sealed).is_err());
            let mut bad = sealed.clone();
            bad[len / 2] ^= 1;
            assert!(ours.open(&nonce, b"aad", &bad).is_err());
            assert!(ours
                .open(&nonce, b"aad", &sealed[..sealed.len() - 1])
                .is_err());
        }
    }
}
