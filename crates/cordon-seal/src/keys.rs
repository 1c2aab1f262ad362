//! Owner signing keys and data encryption keys, and their file forms.

use crate::SealError;
use ed25519_dalek::SigningKey;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A data encryption key (AES-256). Zeroized on drop; Debug shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Dek([u8; 32]);

impl Dek {
    pub fn generate() -> Dek {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        Dek(k)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Dek, SealError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SealError::KeyFile(format!("a DEK is 32 bytes, got {}", bytes.len())))?;
        Ok(Dek(arr))
    }

    pub(crate) fn from_array(bytes: [u8; 32]) -> Dek {
        Dek(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek(<redacted>)")
    }
}

/// The model owner's Ed25519 signing key (`cordon keygen`). Zeroized on drop (ed25519-dalek).
pub struct OwnerKey(SigningKey);

impl fmt::Debug for OwnerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerKey(public={})", hex::encode(self.public_key()))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerKeyFile {
    format: String,
    secret_key: String,
    public_key: String,
}

const OWNER_KEY_FORMAT: &str = "cordon-owner-key/1";
const DEK_FILE_FORMAT: &str = "cordon-dek/1";

impl OwnerKey {
    pub fn generate() -> OwnerKey {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(seed.as_mut());
        OwnerKey(SigningKey::from_bytes(&seed))
    }

    /// The key with this 32-byte Ed25519 secret: a party's identity key (its datasets are signed by
    /// the key that signs its approvals) or a runtime's signing key (it signs a job's sealed output).
    pub fn from_secret_bytes(secret: &[u8; 32]) -> OwnerKey {
        OwnerKey(SigningKey::from_bytes(secret))
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.0
    }

    /// The key file: JSON with the secret key in hex. Write it with mode 0600.
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let secret = Zeroizing::new(hex::encode(self.0.to_bytes()));
        let file = OwnerKeyFile {
            format: OWNER_KEY_FORMAT.into(),
            secret_key: secret.to_string(),
            public_key: hex::encode(self.public_key()),
        };
        let out = Zeroizing::new(serde_json::to_string_pretty(&file).unwrap_or_default() + "\n");
        let mut file = file;
        file.secret_key.zeroize();
        out
    }

    pub fn from_file_contents(text: &str) -> Result<OwnerKey, SealError> {
        let mut f: OwnerKeyFile = serde_json::from_str(text)
            .map_err(|e| SealError::KeyFile(format!("owner key: {e}")))?;
        if f.format != OWNER_KEY_FORMAT {
            return Err(SealError::KeyFile(format!(
                "owner key: format is {:?}, expected {OWNER_KEY_FORMAT:?}",
                f.format
            )));
        }
        let secret = Zeroizing::new(
            hex::decode(f.secret_key.trim())
                .map_err(|e| SealError::KeyFile(format!("owner key: secret_key: {e}")))?,
        );
        f.secret_key.zeroize();
        let seed: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
            SealError::KeyFile(format!(
                "owner key: secret_key is {} bytes, expected 32",
                secret.len()
            ))
        })?;
        let key = OwnerKey(SigningKey::from_bytes(&seed));
        if hex::encode(key.public_key()) != f.public_key.trim().to_lowercase() {
            return Err(SealError::KeyFile(
                "owner key: public_key does not match secret_key".into(),
            ));
        }
        Ok(key)
    }
}

/// The key file `cordon seal --key-out` writes: the key id, the DEK and the signer to expect.
#[derive(Clone)]
pub struct KeyFile {
    pub key_id: String,
    pub dek: Dek,
    /// Ed25519 public key of the owner who signed the manifest.
    pub signer: [u8; 32],
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("key_id", &self.key_id)
            .field("dek", &self.dek)
            .field("signer", &hex::encode(self.signer))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyFile {
    format: String,
    key_id: String,
    dek: String,
    signer: String,
}

impl KeyFile {
    pub fn to_file_contents(&self) -> Zeroizing<String> {
        let mut raw = RawKeyFile {
            format: DEK_FILE_FORMAT.into(),
            key_id: self.key_id.clone(),
            dek: hex::encode(self.dek.as_bytes()),
            signer: hex::encode(self.signer),
        };
        let out = Zeroizing::new(serde_json::to_string_pretty(&raw).unwrap_or_default() + "\n");
        raw.dek.zeroize();
        out
    }

    pub fn from_file_contents(text: &str) -> Result<KeyFile, SealError> {
        let mut raw: RawKeyFile =
            serde_json::from_str(text).map_err(|e| SealError::KeyFile(format!("DEK file: {e}")))?;
        if raw.format != DEK_FILE_FORMAT {
            return Err(SealError::KeyFile(format!(
                "DEK file: format is {:?}, expected {DEK_FILE_FORMAT:?}",
                raw.format
            )));
        }
        let dek_bytes = Zeroizing::new(
            hex::decode(raw.dek.trim())
                .map_err(|e| SealError::KeyFile(format!("DEK file: dek: {e}")))?,
        );
        raw.dek.zeroize();
        let dek = Dek::from_bytes(&dek_bytes)?;
        let signer: [u8; 32] = hex::decode(raw.signer.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                SealError::KeyFile("DEK file: signer is not a 32-byte hex key".into())
            })?;
        Ok(KeyFile {
            key_id: raw.key_id,
            dek,
            signer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_and_debug_hides_secrets() {
        let owner = OwnerKey::generate();
        let text = owner.to_file_contents();
        let back = OwnerKey::from_file_contents(&text).unwrap();
        assert_eq!(back.public_key(), owner.public_key());
        assert!(!format!("{owner:?}").contains(&hex::encode(owner.0.to_bytes())));

        let kf = KeyFile {
            key_id: "k1".into(),
            dek: Dek::generate(),
            signer: owner.public_key(),
        };
        let back = KeyFile::from_file_contents(&kf.to_file_contents()).unwrap();
        assert_eq!(back.dek.as_bytes(), kf.dek.as_bytes());
        let dbg = format!("{kf:?}");
        assert!(!dbg.contains(&hex::encode(kf.dek.as_bytes())), "{dbg}");
    }

    #[test]
    fn malformed_key_files_are_rejected() {
        assert!(OwnerKey::from_file_contents("{}").is_err());
        assert!(KeyFile::from_file_contents("not json").is_err());
        let bad = r#"{"format":"cordon-dek/1","key_id":"a","dek":"00","signer":"00"}"#;
        assert!(matches!(
            KeyFile::from_file_contents(bad),
            Err(SealError::KeyFile(_))
        ));
    }
}
