//! Serde helper: byte fields as standard base64 strings.
use base64::{engine::general_purpose::STANDARD, Engine};
use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD
        .decode(s.as_bytes())
        .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
}

/// `Option<Vec<u8>>` as an optional base64 string.
pub mod opt {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
            })
            .transpose()
    }
}

/// `Vec<Vec<u8>>` as a list of base64 strings.
pub mod list {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| STANDARD.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                STANDARD
                    .decode(s.as_bytes())
                    .map_err(|e| D::Error::custom(format!("invalid base64: {e}")))
            })
            .collect()
    }
}
