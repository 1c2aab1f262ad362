//! Serde helpers: byte fields as lowercase hex strings in JSON and TOML.

use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(bytes: impl AsRef<[u8]>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    hex::decode(s.trim()).map_err(|e| D::Error::custom(format!("invalid hex: {e}")))
}

pub mod array64 {
    use super::*;
    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        super::serialize(bytes, s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v = super::deserialize(d)?;
        let len = v.len();
        v.try_into()
            .map_err(|_| D::Error::custom(format!("expected 64 bytes, got {len}")))
    }
}

pub mod opt {
    use super::*;
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => super::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| hex::decode(s.trim()).map_err(|e| D::Error::custom(format!("invalid hex: {e}"))))
            .transpose()
    }
}

pub mod list {
    use super::*;
    pub fn serialize<S: Serializer>(list: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(hex::encode))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| {
                hex::decode(s.trim())
                    .map_err(|e| D::Error::custom(format!("invalid hex {s:?}: {e}")))
            })
            .collect()
    }
}

pub mod opt_list {
    use super::*;
    pub fn serialize<S: Serializer>(list: &Option<Vec<Vec<u8>>>, s: S) -> Result<S::Ok, S::Error> {
        match list {
            Some(l) => super::list::serialize(l, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Vec<u8>>>, D::Error> {
        super::list::deserialize(d).map(Some)
    }
}
