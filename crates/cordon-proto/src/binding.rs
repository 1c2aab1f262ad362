//! Rule 1 of the design: bind every key to the evidence.
//!
//! ```text
//! report_data = SHA-512( "cordon report_data v2" || 0x00
//!                        || u32be(len(nonce)) || nonce
//!                        || u32be(32) || hpke_public_key      (X25519)
//!                        || u8(hpke_key_id)
//!                        || u32be(32) || signing_public_key   (Ed25519)
//!                        || u32be(number of models)
//!                        || for each model, in the order presented:
//!                             u32be(len(name)) || name || u32be(len(version)) || version
//!                             || manifest_sha256 (32) )
//! ```
//! A verifier recomputes this from its own nonce and the keys and models the runtime presents; a key
//! not covered by report_data is never used, and a model list not covered is never believed. The
//! models are those the runtime serves (to a client) or is about to unseal (to the key broker), each
//! named by the SHA-256 of its sealed manifest, so a client can demand "this exact model".

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// Domain label that starts every report_data preimage.
pub const DOMAIN: &[u8] = b"cordon report_data v2\0";

/// The public keys a runtime binds into its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeKeys {
    /// X25519 public key that requests are encrypted to (HPKE, DHKEM(X25519, HKDF-SHA256)).
    #[serde(with = "hex_array32")]
    pub hpke_public_key: [u8; 32],
    /// Identifier of the HPKE key configuration, carried in every request header.
    pub hpke_key_id: u8,
    /// Ed25519 public key of the runtime's signing key (bound now; it will sign job receipts).
    #[serde(with = "hex_array32")]
    pub signing_public_key: [u8; 32],
}

/// A model as bound in report_data: its served name, its version, and the SHA-256 of the sealed
/// manifest it was unsealed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelBinding {
    pub name: String,
    pub version: String,
    #[serde(with = "hex_array32")]
    pub manifest_sha256: [u8; 32],
}

/// Computes the 64-byte report_data that binds `nonce`, `keys` and `models`.
pub fn report_data(nonce: &[u8], keys: &RuntimeKeys, models: &[ModelBinding]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(DOMAIN);
    h.update((nonce.len() as u32).to_be_bytes());
    h.update(nonce);
    h.update(32u32.to_be_bytes());
    h.update(keys.hpke_public_key);
    h.update([keys.hpke_key_id]);
    h.update(32u32.to_be_bytes());
    h.update(keys.signing_public_key);
    h.update((models.len() as u32).to_be_bytes());
    for m in models {
        h.update((m.name.len() as u32).to_be_bytes());
        h.update(m.name.as_bytes());
        h.update((m.version.len() as u32).to_be_bytes());
        h.update(m.version.as_bytes());
        h.update(m.manifest_sha256);
    }
    h.finalize().into()
}

pub(crate) mod hex_array32 {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s).map_err(|e| D::Error::custom(format!("invalid hex: {e}")))?;
        let len = v.len();
        v.try_into()
            .map_err(|_| D::Error::custom(format!("expected 32 bytes, got {len}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> RuntimeKeys {
        RuntimeKeys {
            hpke_public_key: [1; 32],
            hpke_key_id: 0,
            signing_public_key: [2; 32],
        }
    }

    fn model() -> ModelBinding {
        ModelBinding {
            name: "m".into(),
            version: "1".into(),
            manifest_sha256: [3; 32],
        }
    }

    #[test]
    fn every_input_changes_report_data() {
        let base = report_data(b"nonce", &keys(), &[model()]);
        assert_ne!(base, report_data(b"nonce2", &keys(), &[model()]));
        let mut k = keys();
        k.hpke_public_key[31] ^= 1;
        assert_ne!(base, report_data(b"nonce", &k, &[model()]));
        let mut k = keys();
        k.hpke_key_id = 1;
        assert_ne!(base, report_data(b"nonce", &k, &[model()]));
        let mut k = keys();
        k.signing_public_key[0] ^= 1;
        assert_ne!(base, report_data(b"nonce", &k, &[model()]));
        assert_ne!(base, report_data(b"nonce", &keys(), &[]));
        assert_ne!(base, report_data(b"nonce", &keys(), &[model(), model()]));
        let mut m = model();
        m.manifest_sha256[0] ^= 1;
        assert_ne!(base, report_data(b"nonce", &keys(), &[m]));
        let mut m = model();
        m.version = "2".into();
        assert_ne!(base, report_data(b"nonce", &keys(), &[m]));
        // Lengths are framed: moving a byte from name to version changes the hash.
        let (mut a, mut b) = (model(), model());
        a.name = "ab".into();
        a.version = "c".into();
        b.name = "a".into();
        b.version = "bc".into();
        assert_ne!(
            report_data(b"nonce", &keys(), &[a]),
            report_data(b"nonce", &keys(), &[b])
        );
    }

    #[test]
    fn report_data_is_sha512_of_documented_preimage() {
        let mut pre = Vec::new();
        pre.extend_from_slice(b"cordon report_data v2\0");
        pre.extend_from_slice(&[0, 0, 0, 3]);
        pre.extend_from_slice(b"abc");
        pre.extend_from_slice(&[0, 0, 0, 32]);
        pre.extend_from_slice(&[1; 32]);
        pre.push(0);
        pre.extend_from_slice(&[0, 0, 0, 32]);
        pre.extend_from_slice(&[2; 32]);
        pre.extend_from_slice(&[0, 0, 0, 1]);
        pre.extend_from_slice(&[0, 0, 0, 1]);
        pre.extend_from_slice(b"m");
        pre.extend_from_slice(&[0, 0, 0, 1]);
        pre.extend_from_slice(b"1");
        pre.extend_from_slice(&[3; 32]);
        let expected: [u8; 64] = Sha512::digest(&pre).into();
        assert_eq!(report_data(b"abc", &keys(), &[model()]), expected);
    }
}
