//! Typed tensors to and from the raw bytes of the KServe v2 binary tensor data extension:
//! little-endian, row-major; a `BYTES` element is a 4-byte little-endian length and that many
//! bytes (UTF-8 text here, as this runtime's string tensors are). No JSON on the way: this is how
//! binary requests inside the encrypted channel reach the engine.

use crate::engine::HostData;
use tract_onnx::prelude::f16;

/// The bytes of one element of `N` bytes (`chunks_exact(N)` gives exactly `N`).
fn le<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(chunk);
    a
}

impl HostData {
    /// The elements `bytes` holds as `datatype`; the reason in words (sizes, never values) when
    /// they are not whole elements, or not text for `BYTES`.
    pub fn from_le_bytes(datatype: &str, bytes: &[u8]) -> Result<HostData, String> {
        macro_rules! fixed {
            ($variant:ident, $t:ty, $n:literal) => {{
                if bytes.len() % $n != 0 {
                    return Err(format!(
                        "{} bytes are not a whole number of {datatype} elements ({} bytes each)",
                        bytes.len(),
                        $n
                    ));
                }
                HostData::$variant(
                    bytes
                        .chunks_exact($n)
                        .map(|c| <$t>::from_le_bytes(le::<$n>(c)))
                        .collect(),
                )
            }};
        }
        Ok(match datatype {
            "FP32" => fixed!(F32, f32, 4),
            "FP64" => fixed!(F64, f64, 8),
            "FP16" => fixed!(F16, f16, 2),
            "INT64" => fixed!(I64, i64, 8),
            "INT32" => fixed!(I32, i32, 4),
            "INT16" => fixed!(I16, i16, 2),
            "INT8" => HostData::I8(bytes.iter().map(|&b| b as i8).collect()),
            "UINT64" => fixed!(U64, u64, 8),
            "UINT32" => fixed!(U32, u32, 4),
            "UINT16" => fixed!(U16, u16, 2),
            "UINT8" => HostData::U8(bytes.to_vec()),
            "BOOL" => HostData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            "BYTES" => HostData::Bytes(
                cordon_proto::oip_binary::bytes_elements(bytes)?
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
            other => return Err(format!("datatype {other} has no binary form")),
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F64(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::I32(v) => v.len(),
            HostData::I16(v) => v.len(),
            HostData::I8(v) => v.len(),
            HostData::U64(v) => v.len(),
            HostData::U32(v) => v.len(),
            HostData::U16(v) => v.len(),
            HostData::U8(v) => v.len(),
            HostData::Bool(v) => v.len(),
            HostData::Bytes(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The KServe v2 datatype and the raw bytes of the elements.
    pub fn into_le_bytes(self) -> (&'static str, Vec<u8>) {
        fn bytes<T: Copy, const N: usize>(v: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len() * N);
            for &x in v {
                out.extend_from_slice(&to(x));
            }
            out
        }
        match self {
            HostData::F32(v) => ("FP32", bytes(&v, f32::to_le_bytes)),
            HostData::F64(v) => ("FP64", bytes(&v, f64::to_le_bytes)),
            HostData::F16(v) => ("FP16", bytes(&v, f16::to_le_bytes)),
            HostData::I64(v) => ("INT64", bytes(&v, i64::to_le_bytes)),
            HostData::I32(v) => ("INT32", bytes(&v, i32::to_le_bytes)),
            HostData::I16(v) => ("INT16", bytes(&v, i16::to_le_bytes)),
            HostData::I8(v) => ("INT8", bytes(&v, i8::to_le_bytes)),
            HostData::U64(v) => ("UINT64", bytes(&v, u64::to_le_bytes)),
            HostData::U32(v) => ("UINT32", bytes(&v, u32::to_le_bytes)),
            HostData::U16(v) => ("UINT16", bytes(&v, u16::to_le_bytes)),
            HostData::U8(v) => ("UINT8", v),
            HostData::Bool(v) => ("BOOL", v.into_iter().map(u8::from).collect()),
            HostData::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|s| s.len() + 4).sum());
                for s in v {
                    // A string tensor's element longer than 4 GiB cannot come out of a request
                    // body; saturating keeps the framing well-formed regardless.
                    out.extend_from_slice(
                        &u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes(),
                    );
                    out.extend_from_slice(s.as_bytes());
                }
                ("BYTES", out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_proto::oip_binary::{decode_elements, encode_elements};
    use serde_json::Value;

    /// Every datatype goes to bytes and back unchanged, and its bytes are what the proxy's JSON
    /// codec (cordon-proto's `oip_binary`, checked against the stock clients) makes of the same
    /// elements: one wire form, two implementations that agree.
    #[test]
    fn every_datatype_round_trips_and_agrees_with_the_json_codec() {
        let cases = [
            HostData::F32(vec![1.5, -0.0, f32::NAN, f32::INFINITY, 3.4e38]),
            HostData::F64(vec![1e300, -2.5, f64::NEG_INFINITY]),
            HostData::F16(vec![f16::from_f32(0.5), f16::from_f32(-65504.0)]),
            HostData::I64(vec![i64::MIN, 0, i64::MAX]),
            HostData::I32(vec![i32::MIN, 7]),
            HostData::I16(vec![-3, i16::MAX]),
            HostData::I8(vec![-128, 127]),
            HostData::U64(vec![u64::MAX, 1]),
            HostData::U32(vec![u32::MAX]),
            HostData::U16(vec![65535, 0]),
            HostData::U8(vec![0, 255]),
            HostData::Bool(vec![true, false, true]),
            HostData::Bytes(vec!["".into(), "héllo".into(), "a\0b".into()]),
        ];
        for data in cases {
            let (datatype, bytes) = data.clone().into_le_bytes();
            let back = HostData::from_le_bytes(datatype, &bytes).unwrap();
            // NaN != NaN: compare the bytes of the round trip instead.
            assert_eq!(back.clone().into_le_bytes().1, bytes, "{datatype}");
            assert_eq!(back.len(), data.len(), "{datatype}");
            let json = Value::Array(decode_elements(datatype, &bytes).unwrap());
            assert_eq!(
                encode_elements(datatype, &json).unwrap(),
                bytes,
                "{datatype}"
            );
        }
    }

    #[test]
    fn bytes_that_are_not_whole_elements_are_refused_with_sizes_only() {
        let e = HostData::from_le_bytes("FP32", &[0u8; 7]).unwrap_err();
        assert_eq!(
            e,
            "7 bytes are not a whole number of FP32 elements (4 bytes each)"
        );
        assert!(HostData::from_le_bytes("INT64", &[0u8; 12]).is_err());
        // BYTES: a cut length prefix, a length past the end, text that is not UTF-8.
        let e = HostData::from_le_bytes("BYTES", &[3, 0, 0]).unwrap_err();
        assert!(e.contains("truncated length prefix"), "{e}");
        let e = HostData::from_le_bytes("BYTES", &[9, 0, 0, 0, b's', b'e']).unwrap_err();
        assert!(e.contains("says 9 bytes, 2 are left"), "{e}");
        assert!(!e.contains("se"), "no element data in the message: {e}");
        let e = HostData::from_le_bytes("BYTES", &[1, 0, 0, 0, 0xff]).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");
        let e = HostData::from_le_bytes("COMPLEX64", &[]).unwrap_err();
        assert!(e.contains("no binary form"), "{e}");
        // Nothing is zero elements of anything.
        assert!(HostData::from_le_bytes("FP32", &[]).unwrap().is_empty());
    }
}
