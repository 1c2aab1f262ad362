//! The KServe v2 binary tensor data extension (Triton's `binary_tensor_data`), as the standard
//! HTTP clients send it by default: a JSON header of `Inference-Header-Content-Length` bytes, then
//! the raw bytes of each tensor whose `parameters.binary_data_size` says how many, in order.
//!
//! [`split_request`] takes such a body apart without decoding it (what the proxy checks and the
//! runtime decodes straight into its tensors, the body going through the encrypted channel as it
//! came); [`decode_request`] turns it into a JSON request (for the gRPC surface's typed contents
//! and the runtime's dynamic batching); [`encode_response`] turns a JSON response into the binary
//! form for the outputs the request asked for in binary (`binary_data_output` on the request,
//! `binary_data` on a requested output). Tensor bytes are little-endian, row-major; a `BYTES`
//! element is a 4-byte little-endian length and that many bytes.

use serde_json::{Map, Value};

/// What is wrong with a binary request or response; names the tensor and the sizes, never data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("Inference-Header-Content-Length is {header}, but the body has only {body} bytes")]
    HeaderLength { header: usize, body: usize },
    #[error("the JSON header of a binary request is not valid JSON: {0}")]
    Header(String),
    #[error("input {name:?}: {reason}")]
    Input { name: String, reason: String },
    #[error("output {name:?}: {reason}")]
    Output { name: String, reason: String },
    #[error(
        "the binary tensors hold {declared} bytes (their binary_data_size), the body after the \
         JSON header {body}"
    )]
    TrailingBytes { declared: usize, body: usize },
    #[error(
        "the request ({binary} bytes) becomes at least {json} bytes inside the encrypted channel \
         or as JSON, over its limit of {limit} bytes: send fewer rows per request"
    )]
    TooLarge {
        binary: usize,
        json: usize,
        limit: usize,
    },
}

/// The fewest bytes of JSON (elements and separators) that `count` elements of `datatype`,
/// `bytes` long in binary, can become inside the channel, and the few bytes of an input's own
/// fields: what is checked against the channel's limit before anything is decoded, so that a
/// request the runtime would refuse for its size never grows into a large tree here first.
pub fn json_size_floor(datatype: &str, bytes: usize) -> usize {
    const INPUT_FIELDS: usize = 48;
    let elements = match (datatype, element_size(datatype)) {
        // "true," at least.
        ("BOOL", _) => bytes.saturating_mul(5),
        // "0.0," at least.
        (d, Some(n)) if d.starts_with("FP") => (bytes / n).saturating_mul(4),
        // "0," at least.
        (_, Some(n)) => (bytes / n).saturating_mul(2),
        // BYTES: each element's text, its quotes and a comma, less its 4-byte prefix.
        (_, None) => bytes.saturating_mul(3) / 4,
    };
    elements.saturating_add(INPUT_FIELDS)
}

/// Bytes per element of a fixed-size datatype; `None` for `BYTES` (and unknown types).
fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

/// A float as this crate's JSON carries it: a number, or the strings `"NaN"`, `"Infinity"`,
/// `"-Infinity"` ([`crate::oip::parse_json_body`]'s convention), which float inputs read.
pub fn float_value(x: f64) -> Value {
    if x.is_nan() {
        Value::from("NaN")
    } else if x == f64::INFINITY {
        Value::from("Infinity")
    } else if x == f64::NEG_INFINITY {
        Value::from("-Infinity")
    } else {
        Value::from(x)
    }
}

/// The elements of a `BYTES` tensor's raw bytes: each a 4-byte little-endian length, then that many
/// bytes of UTF-8 text (this crate's string tensors are text); the reason in words (sizes and
/// indices, never content) when they are not.
pub fn bytes_elements(mut rest: &[u8]) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(format!(
                "BYTES element {} has a truncated length prefix",
                out.len()
            ));
        };
        let len = u32::from_le_bytes(*len) as usize;
        let Some((text, tail)) = tail.split_at_checked(len) else {
            return Err(format!(
                "BYTES element {} says {len} bytes, {} are left",
                out.len(),
                tail.len()
            ));
        };
        let text = std::str::from_utf8(text).map_err(|_| {
            format!(
                "BYTES element {} is not UTF-8 text (this runtime's BYTES tensors are text)",
                out.len()
            )
        })?;
        out.push(text);
        rest = tail;
    }
    Ok(out)
}

/// The elements of one tensor's raw bytes (little-endian, row-major; `BYTES` length-prefixed) as
/// the JSON values of `datatype`; the reason in words when they are not whole elements.
pub fn decode_elements(datatype: &str, bytes: &[u8]) -> Result<Vec<Value>, String> {
    if datatype == "BYTES" {
        return Ok(bytes_elements(bytes)?
            .into_iter()
            .map(Value::from)
            .collect());
    }
    let size =
        element_size(datatype).ok_or_else(|| format!("datatype {datatype} has no binary form"))?;
    if bytes.len() % size != 0 {
        return Err(format!(
            "{} bytes are not a whole number of {datatype} elements ({size} bytes each)",
            bytes.len()
        ));
    }
    let values = bytes.chunks_exact(size).map(|c| {
        let a = |n: usize| -> [u8; 8] {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&c[..n]);
            b
        };
        match datatype {
            "BOOL" => Value::from(c[0] != 0),
            "INT8" => Value::from(c[0] as i8),
            "UINT8" => Value::from(c[0]),
            "INT16" => Value::from(i16::from_le_bytes([c[0], c[1]])),
            "UINT16" => Value::from(u16::from_le_bytes([c[0], c[1]])),
            "FP16" => float_value(half::f16::from_le_bytes([c[0], c[1]]).to_f64()),
            "INT32" => Value::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "UINT32" => Value::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            "FP32" => float_value(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64),
            "INT64" => Value::from(i64::from_le_bytes(a(8))),
            "UINT64" => Value::from(u64::from_le_bytes(a(8))),
            // FP64, the last fixed-size type.
            _ => float_value(f64::from_le_bytes(a(8))),
        }
    });
    Ok(values.collect())
}

/// The `u64` value of `parameters[key]` of a tensor object, if it is one.
fn size_parameter(tensor: &Map<String, Value>, key: &str) -> Option<Result<usize, String>> {
    let v = tensor.get("parameters")?.get(key)?;
    Some(
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("parameters.{key} must be a non-negative integer")),
    )
}

/// A binary-extension body taken apart: its JSON header, each input with
/// `parameters.binary_data_size` given `"data": null` (the parameter removed), and the byte range
/// of the body that holds that input's elements, by position in `inputs` (`None`: its data is in
/// the JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct SplitRequest {
    pub header: Value,
    pub blobs: Vec<Option<std::ops::Range<usize>>>,
}

/// Takes apart a binary-extension body: the first `header_len` bytes are the JSON header; each
/// input with `parameters.binary_data_size` takes that many of the following bytes, in the order
/// of `inputs`. Every byte after the header must belong to an input. Nothing is decoded.
pub fn split_request(body: &[u8], header_len: usize) -> Result<SplitRequest, BinaryError> {
    split(body, header_len, "inputs")
}

/// [`split_request`] for a response: the byte ranges of its `outputs`' binary data.
pub fn split_response(body: &[u8], header_len: usize) -> Result<SplitRequest, BinaryError> {
    split(body, header_len, "outputs")
}

fn split(body: &[u8], header_len: usize, tensors: &str) -> Result<SplitRequest, BinaryError> {
    if header_len > body.len() {
        return Err(BinaryError::HeaderLength {
            header: header_len,
            body: body.len(),
        });
    }
    let mut header = crate::oip::parse_json_body(&body[..header_len]).map_err(|e| {
        // Position and class only: serde's message can quote the input.
        BinaryError::Header(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let mut next = header_len;
    let mut blobs = Vec::new();
    if let Some(list) = header.get_mut(tensors).and_then(Value::as_array_mut) {
        for t in list.iter_mut() {
            let Some(t) = t.as_object_mut() else {
                blobs.push(None);
                continue;
            };
            let Some(size) = size_parameter(t, "binary_data_size") else {
                blobs.push(None);
                continue;
            };
            let name = str_field(t, "name").to_string();
            let input_err = |reason: String| match tensors {
                "inputs" => BinaryError::Input {
                    name: name.clone(),
                    reason,
                },
                _ => BinaryError::Output {
                    name: name.clone(),
                    reason,
                },
            };
            let size = size.map_err(input_err)?;
            if t.contains_key("data") {
                return Err(input_err(
                    "has both \"data\" and parameters.binary_data_size".into(),
                ));
            }
            let left = body.len() - next;
            if size > left {
                return Err(input_err(format!(
                    "binary_data_size is {size}, only {left} bytes are left in the body"
                )));
            }
            if let Some(p) = t.get_mut("parameters").and_then(Value::as_object_mut) {
                p.remove("binary_data_size");
            }
            t.insert("data".into(), Value::Null);
            blobs.push(Some(next..next + size));
            next += size;
        }
    }
    if next != body.len() {
        return Err(BinaryError::TrailingBytes {
            declared: next - header_len,
            body: body.len() - header_len,
        });
    }
    Ok(SplitRequest { header, blobs })
}

/// The JSON request of a binary-extension body ([`split_request`]), each binary input's bytes
/// decoded into its `data`. Refused before decoding when the JSON would exceed `max_json` bytes.
pub fn decode_request(
    body: &[u8],
    header_len: usize,
    max_json: usize,
) -> Result<Value, BinaryError> {
    let SplitRequest { mut header, blobs } = split_request(body, header_len)?;
    let Some(inputs) = header.get_mut("inputs").and_then(Value::as_array_mut) else {
        return Ok(header);
    };
    let mut json_floor = header_len;
    for (t, range) in inputs.iter().zip(&blobs) {
        if let (Some(t), Some(range)) = (t.as_object(), range) {
            json_floor =
                json_floor.saturating_add(json_size_floor(str_field(t, "datatype"), range.len()));
        }
    }
    if json_floor > max_json {
        return Err(BinaryError::TooLarge {
            binary: body.len(),
            json: json_floor,
            limit: max_json,
        });
    }
    for (t, range) in inputs.iter_mut().zip(blobs) {
        let (Some(t), Some(range)) = (t.as_object_mut(), range) else {
            continue;
        };
        let elements =
            decode_elements(str_field(t, "datatype"), &body[range]).map_err(|reason| {
                BinaryError::Input {
                    name: str_field(t, "name").to_string(),
                    reason,
                }
            })?;
        t.insert("data".into(), Value::Array(elements));
    }
    Ok(header)
}

/// Which outputs of a response go in binary, as the request asked: `parameters.binary_data` of a
/// requested output, else the request's `parameters.binary_data_output`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryOutputs {
    all: bool,
    /// Per-output choices that override `all`.
    named: Vec<(String, bool)>,
}

impl BinaryOutputs {
    /// What `request` (JSON, binary inputs already decoded or not) asks for.
    pub fn of(request: &Value) -> BinaryOutputs {
        let flag = |v: Option<&Value>| v.and_then(Value::as_bool);
        let all = flag(
            request
                .get("parameters")
                .and_then(|p| p.get("binary_data_output")),
        )
        .unwrap_or(false);
        let named = request
            .get("outputs")
            .and_then(Value::as_array)
            .map(|outputs| {
                outputs
                    .iter()
                    .filter_map(|o| {
                        let name = o.get("name")?.as_str()?;
                        let b = flag(o.get("parameters").and_then(|p| p.get("binary_data")))?;
                        Some((name.to_string(), b))
                    })
                    .collect()
            })
            .unwrap_or_default();
        BinaryOutputs { all, named }
    }

    /// Whether `output` goes in binary.
    pub fn wants(&self, output: &str) -> bool {
        self.named
            .iter()
            .find(|(n, _)| n == output)
            .map_or(self.all, |(_, b)| *b)
    }

    /// Whether any output may go in binary.
    pub fn any(&self) -> bool {
        self.all || self.named.iter().any(|(_, b)| *b)
    }
}

/// The raw bytes of a tensor's JSON `data` (flattened) as `datatype`: `null` and `"NaN"` are NaN
/// for floats; the reason in words when an element is not of the datatype.
pub fn encode_elements(datatype: &str, data: &Value) -> Result<Vec<u8>, String> {
    let mut flat = Vec::new();
    fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            other => out.push(other),
        }
    }
    flatten(data, &mut flat);
    let mut out = Vec::with_capacity(flat.len() * element_size(datatype).unwrap_or(8));
    for (i, v) in flat.iter().enumerate() {
        let bad = || format!("element {i} is not a {datatype} value");
        let float = || -> Option<f64> {
            match v {
                Value::Null => Some(f64::NAN),
                Value::String(s) if s == "NaN" => Some(f64::NAN),
                Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
                Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
                v => v.as_f64(),
            }
        };
        let int = || v.as_i64();
        let uint = || v.as_u64();
        // An integer element that fits the type exactly (no wrap), little-endian.
        macro_rules! fitted {
            ($t:ty, $x:expr) => {
                out.extend(
                    <$t>::try_from($x.ok_or_else(bad)?)
                        .map_err(|_| bad())?
                        .to_le_bytes(),
                )
            };
        }
        match datatype {
            "BOOL" => out.push(u8::from(v.as_bool().ok_or_else(bad)?)),
            "INT8" => fitted!(i8, int()),
            "UINT8" => fitted!(u8, uint()),
            "INT16" => fitted!(i16, int()),
            "UINT16" => fitted!(u16, uint()),
            "INT32" => fitted!(i32, int()),
            "UINT32" => fitted!(u32, uint()),
            "INT64" => out.extend(int().ok_or_else(bad)?.to_le_bytes()),
            "UINT64" => out.extend(uint().ok_or_else(bad)?.to_le_bytes()),
            "FP16" => out.extend(half::f16::from_f64(float().ok_or_else(bad)?).to_le_bytes()),
            "FP32" => out.extend((float().ok_or_else(bad)? as f32).to_le_bytes()),
            "FP64" => out.extend(float().ok_or_else(bad)?.to_le_bytes()),
            "BYTES" => {
                let s = v.as_str().ok_or_else(bad)?;
                let len = u32::try_from(s.len()).map_err(|_| bad())?;
                out.extend(len.to_le_bytes());
                out.extend(s.as_bytes());
            }
            other => return Err(format!("datatype {other} has no binary form")),
        }
    }
    Ok(out)
}

/// A JSON response in the binary form `wanted` asks for, changed in place: the outputs it names
/// lose `data` (moved out, never copied) and get `parameters.binary_data_size`; their bytes follow
/// the JSON header in output order. Returns the body and the header's length (the
/// `Inference-Header-Content-Length` to send), or `None`, leaving `response` as it was, when no
/// output goes in binary.
pub fn encode_response(
    response: &mut Value,
    wanted: &BinaryOutputs,
) -> Result<Option<(Vec<u8>, usize)>, BinaryError> {
    let Some(outputs) = response.get_mut("outputs").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let mut tail = Vec::new();
    let mut any = false;
    for t in outputs.iter_mut().filter_map(Value::as_object_mut) {
        let name = str_field(t, "name").to_string();
        if !wanted.wants(&name) {
            continue;
        }
        let data = t.remove("data").unwrap_or(Value::Null);
        let bytes = encode_elements(str_field(t, "datatype"), &data)
            .map_err(|reason| BinaryError::Output { name, reason })?;
        let params = t
            .entry("parameters")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(p) = params.as_object_mut() {
            p.insert("binary_data_size".into(), Value::from(bytes.len()));
        }
        tail.extend(bytes);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    // NaN and infinities of float outputs left in JSON as Triton's literals.
    let mut body = crate::oip::response_json(response);
    let header_len = body.len();
    body.extend(tail);
    Ok(Some((body, header_len)))
}

/// A tensor object's string field (`name`, `datatype`), or `""`.
fn str_field<'a>(tensor: &'a Map<String, Value>, key: &str) -> &'a str {
    tensor.get(key).and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: usize = 8 << 20;

    /// Tensors whose JSON cannot fit the channel are refused before they are decoded: 1 MiB of
    /// BOOL is at least 5 MiB of JSON.
    #[test]
    fn tensors_too_large_for_the_channel_are_refused_before_decoding() {
        let header = json!({"inputs": [{"name": "b", "shape": [1 << 20], "datatype": "BOOL",
            "parameters": {"binary_data_size": 1 << 20}}]});
        let (b, n) = body(&header, &[&vec![1u8; 1 << 20]]);
        assert!(decode_request(&b, n, MAX).is_ok());
        let e = decode_request(&b, n, 4 << 20).unwrap_err();
        assert!(
            matches!(e, BinaryError::TooLarge { json, limit, .. } if json > limit),
            "{e}"
        );
        assert!(e.to_string().contains("send fewer rows"), "{e}");
        // The floor is a floor: what the decoder makes is at least as long.
        for (datatype, bytes) in [
            ("BOOL", vec![0u8; 64]),
            ("INT64", vec![0u8; 64]),
            ("FP32", vec![0u8; 64]),
            ("BYTES", vec![0u8; 64]),
        ] {
            let data = Value::Array(decode_elements(datatype, &bytes).unwrap());
            let floor = json_size_floor(datatype, bytes.len()) - 48;
            assert!(
                serde_json::to_vec(&data).unwrap().len() + 1 >= floor,
                "{datatype}"
            );
        }
    }

    fn body(header: &Value, tensors: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut b = serde_json::to_vec(header).unwrap();
        let n = b.len();
        for t in tensors {
            b.extend_from_slice(t);
        }
        (b, n)
    }

    #[test]
    fn binary_inputs_become_json_data_mixed_with_json_ones() {
        let fp32: Vec<u8> = [1.5f32, f32::NAN, f32::INFINITY, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let mut strings = Vec::new();
        for s in ["héllo", ""] {
            strings.extend((s.len() as u32).to_le_bytes());
            strings.extend(s.as_bytes());
        }
        let i64s: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        let header = json!({"inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP32",
             "parameters": {"binary_data_size": 16}},
            {"name": "j", "shape": [1], "datatype": "INT64", "data": [5]},
            {"name": "s", "shape": [2], "datatype": "BYTES",
             "parameters": {"binary_data_size": strings.len()}},
            {"name": "i", "shape": [2], "datatype": "INT64",
             "parameters": {"binary_data_size": 16, "other": 1}}
        ], "parameters": {"binary_data_output": true}});
        let (b, n) = body(&header, &[&fp32, &strings, &i64s]);
        let r = decode_request(&b, n, MAX).unwrap();
        assert_eq!(
            r["inputs"][0]["data"],
            json!([1.5, "NaN", "Infinity", -2.0])
        );
        assert_eq!(r["inputs"][1]["data"], json!([5]));
        assert_eq!(r["inputs"][2]["data"], json!(["héllo", ""]));
        assert_eq!(r["inputs"][3]["data"], json!([-3, 7]));
        assert_eq!(r["inputs"][3]["parameters"], json!({"other": 1}));
        assert!(crate::oip::request_problem(&r).is_none());
        assert!(serde_json::from_value::<crate::oip::InferRequest>(r).is_ok());
    }

    #[test]
    fn wrong_sizes_are_named_and_never_read_past_the_body() {
        let header = json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32",
            "parameters": {"binary_data_size": 8}}]});
        let (b, n) = body(&header, &[&[0u8; 8]]);
        assert!(decode_request(&b, n, MAX).is_ok());
        // Header longer than the body; tensor longer than what is left; bytes nobody claims;
        // a size that is not whole elements; a truncated BYTES prefix; non-UTF-8 text.
        assert!(matches!(
            decode_request(&b, b.len() + 1, MAX),
            Err(BinaryError::HeaderLength { .. })
        ));
        assert!(matches!(
            decode_request(&b[..b.len() - 1], n, MAX),
            Err(BinaryError::Input { .. })
        ));
        let (extra, n2) = body(&header, &[&[0u8; 9]]);
        assert!(matches!(
            decode_request(&extra, n2, MAX),
            Err(BinaryError::TrailingBytes {
                declared: 8,
                body: 9
            })
        ));
        let odd = json!({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32",
            "parameters": {"binary_data_size": 7}}]});
        let (b, n) = body(&odd, &[&[0u8; 7]]);
        let e = decode_request(&b, n, MAX).unwrap_err().to_string();
        assert!(e.contains("not a whole number of FP32 elements"), "{e}");
        for (bytes, expected) in [
            (&[3u8, 0][..], "truncated length prefix"),
            (&[2, 0, 0, 0, 0xff, 0xfe][..], "not UTF-8"),
            (&[9, 0, 0, 0, b'a'][..], "says 9 bytes"),
        ] {
            let h = json!({"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES",
                "parameters": {"binary_data_size": bytes.len()}}]});
            let (b, n) = body(&h, &[bytes]);
            let e = decode_request(&b, n, MAX).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
        // A header that is not JSON names the position, not the content.
        let e = decode_request(b"{\"secret\": x}", 13, MAX)
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn outputs_go_binary_as_asked_and_read_back() {
        let response = json!({"model_name": "m", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "p", "shape": [2, 2], "datatype": "FP32", "data": [0.25, null, 1.0, 0.5]},
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["yes"]}
        ]});
        // Nothing asked: JSON stands.
        assert_eq!(
            encode_response(
                &mut response.clone(),
                &BinaryOutputs::of(&json!({"inputs": []}))
            )
            .unwrap(),
            None
        );
        // All, except `label`, which asks for JSON.
        let asked = json!({"inputs": [], "parameters": {"binary_data_output": true},
            "outputs": [{"name": "label", "parameters": {"binary_data": false}}]});
        let (b, n) = encode_response(&mut response.clone(), &BinaryOutputs::of(&asked))
            .unwrap()
            .unwrap();
        let header: Value = serde_json::from_slice(&b[..n]).unwrap();
        assert_eq!(header["outputs"][0]["data"], json!([0, 1]));
        assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 16);
        assert!(header["outputs"][1].get("data").is_none());
        assert_eq!(header["outputs"][2]["parameters"]["binary_data_size"], 7);
        let p: Vec<f32> = b[n..n + 16]
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(p[0], 0.25);
        assert!(p[1].is_nan());
        assert_eq!(&b[n + 16..], b"\x03\x00\x00\x00yes");
        // Only one output, by name.
        let one =
            json!({"inputs": [], "outputs": [{"name": "p", "parameters": {"binary_data": true}}]});
        let (b, n) = encode_response(&mut response.clone(), &BinaryOutputs::of(&one))
            .unwrap()
            .unwrap();
        assert_eq!(b.len() - n, 16);
    }
}
