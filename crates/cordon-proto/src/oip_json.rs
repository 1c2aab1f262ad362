//! JSON infer requests parsed in one pass, straight into typed fields: each tensor's `data`, however
//! nested, becomes one flat vector of [`Element`]s, with no `serde_json::Value` tree of the request
//! or of its tensors on the way. What the runtime reads inside the channel, and what its
//! development route reads, when the body arrives as bytes (docs/protocol.md §7.4).
//!
//! Python's `NaN`, `Infinity` and `-Infinity` literals are read as [`crate::oip::parse_json_body`]
//! reads them. A body that does not parse is parsed once more as a `Value`, only to say what is wrong
//! in [`crate::oip::request_problem`]'s words (field names, never values).

use crate::oip::{InferRequest, RequestedOutput, Tensor};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// One element of a tensor's JSON `data`: what JSON can hold at a leaf. Numbers keep the form they
/// were written in, so that integers are read exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Null,
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    Str(String),
}

/// A tensor's `data`, flattened row-major while it is parsed.
#[derive(Clone, Default, PartialEq)]
pub struct Elements(pub Vec<Element>);

/// The count, never the elements: they are the client's plaintext.
impl fmt::Debug for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Elements({} elements)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Elements {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Flatten(&mut out))?;
        Ok(Elements(out))
    }
}

/// Appends the leaves of a value (an array, however nested, or one scalar) to the vector.
struct Flatten<'a>(&'a mut Vec<Element>);

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("tensor data: a list of numbers, booleans, strings or null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // serde_json bounds the nesting (128 levels), so this recursion is bounded too.
        while seq.next_element_seed(FlattenSeed(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(Element::Null);
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.0.push(Element::Bool(v));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(Element::UInt(v));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(if v >= 0 {
            Element::UInt(v as u64)
        } else {
            Element::Int(v)
        });
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(Element::Float(v));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.0.push(Element::Str(v.to_string()));
        Ok(())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.0.push(Element::Str(v));
        Ok(())
    }
}

struct FlattenSeed<'a>(&'a mut Vec<Element>);

impl<'de> de::DeserializeSeed<'de> for FlattenSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(Flatten(self.0))
    }
}

/// An input tensor as parsed: its elements flat, beside its fields.
#[derive(Debug, Clone, Deserialize)]
struct TensorIn {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: Elements,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
struct RequestedOutputIn {
    name: String,
    /// Any JSON, as a JSON tree request takes it (only `binary_data` is read, when an object).
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct InferRequestIn {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<TensorIn>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutputIn>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A JSON infer request read in one pass: the request's fields, each input's `data` left `null`
/// and its elements in `data[i]` instead, and the small JSON the binary extension's output choices
/// are read from (`parameters` and `outputs`, without tensor data).
#[derive(Debug, Clone)]
pub struct ParsedInfer {
    pub request: InferRequest,
    pub data: Vec<Elements>,
    pub output_choices: Value,
}

/// Parses an infer request body. Errors name the field or the position, never a value.
pub fn parse_infer_request(bytes: &[u8]) -> Result<ParsedInfer, String> {
    let parsed = match serde_json::from_slice::<InferRequestIn>(bytes) {
        Ok(r) => Ok(r),
        Err(e) => match crate::oip::quote_non_finite_literals(bytes) {
            Some(quoted) => serde_json::from_slice(&quoted),
            None => Err(e),
        },
    };
    let request = match parsed {
        Ok(r) => r,
        // Only now, to say what is wrong: the structural words of `request_problem` when the body
        // is JSON, else the class and position of the syntax error.
        Err(e) => {
            return Err(match crate::oip::parse_json_body(bytes) {
                Ok(v) => crate::oip::request_problem(&v)
                    .unwrap_or_else(|| format!("infer request: {}", describe(&e))),
                Err(e) => format!("infer request: {}", describe(&e)),
            })
        }
    };
    let output_choices = serde_json::json!({
        "parameters": request.parameters,
        "outputs": request.outputs.as_ref().map(|o| o
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "parameters": o.parameters }))
            .collect::<Vec<_>>()),
    });
    let mut data = Vec::with_capacity(request.inputs.len());
    let inputs = request
        .inputs
        .into_iter()
        .map(|t| {
            data.push(t.data);
            Tensor {
                name: t.name,
                shape: t.shape,
                datatype: t.datatype,
                data: Value::Null,
                parameters: t.parameters,
            }
        })
        .collect();
    Ok(ParsedInfer {
        request: InferRequest {
            id: request.id,
            inputs,
            outputs: request.outputs.map(|o| {
                o.into_iter()
                    .map(|o| RequestedOutput { name: o.name })
                    .collect()
            }),
            parameters: request.parameters,
        },
        data,
        output_choices,
    })
}

/// Class and position of a JSON error: serde's own text can quote the input.
fn describe(e: &serde_json::Error) -> String {
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

impl Element {
    /// The element as JSON (for the paths that still take JSON tensors: dynamic batching).
    pub fn to_value(&self) -> Value {
        match self {
            Element::Null => Value::Null,
            Element::Bool(b) => Value::Bool(*b),
            Element::UInt(u) => Value::from(*u),
            Element::Int(i) => Value::from(*i),
            Element::Float(f) => crate::oip_binary::float_value(*f),
            Element::Str(s) => Value::String(s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nested data is flattened row-major in the one pass, integers stay exact, NaN literals and
    /// null are read, and the request's other fields arrive as a JSON parse gives them.
    #[test]
    fn data_is_flattened_in_one_pass_and_fields_are_kept() {
        let body = br#"{"id":"r","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32",
            "data":[[1.5,NaN],[null,-Infinity]],"parameters":{"p":1}},
            {"name":"n","shape":[3],"datatype":"INT64","data":[-9223372036854775808,18446744073709551615,0]},
            {"name":"s","shape":[2],"datatype":"BYTES","data":["a",true]}],
            "outputs":[{"name":"o","parameters":{"binary_data":true}}],
            "parameters":{"binary_data_output":false}}"#;
        let p = parse_infer_request(body).unwrap();
        assert_eq!(p.request.id.as_deref(), Some("r"));
        assert_eq!(p.request.inputs[0].shape, [2, 2]);
        assert_eq!(p.request.inputs[0].data, Value::Null);
        assert_eq!(
            p.data[0].0,
            [
                Element::Float(1.5),
                Element::Str("NaN".into()),
                Element::Null,
                Element::Str("-Infinity".into())
            ]
        );
        assert_eq!(
            p.data[1].0,
            [
                Element::Int(i64::MIN),
                Element::UInt(u64::MAX),
                Element::UInt(0)
            ]
        );
        assert_eq!(p.data[2].0, [Element::Str("a".into()), Element::Bool(true)]);
        assert_eq!(
            p.output_choices["outputs"][0]["parameters"]["binary_data"],
            true
        );
        assert_eq!(p.output_choices["parameters"]["binary_data_output"], false);
        assert_eq!(p.request.outputs.unwrap()[0].name, "o");
    }

    /// A body that is not an infer request is refused with the structural words (field names),
    /// never a value; one that is not JSON with the class and position; nesting past serde_json's
    /// limit is an error, not a stack overflow.
    #[test]
    fn malformed_bodies_are_refused_with_words_that_quote_nothing() {
        let e = parse_infer_request(br#"{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}"#)
            .unwrap_err();
        assert_eq!(e, "inputs[0] has no \"shape\"");
        let e = parse_infer_request(br#"{"inputs":[{"name":"secret-value","shape":[1],"datatype":"FP32","data":{"k":"secret"}}]}"#)
            .unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        let e = parse_infer_request(b"{\"inputs\": [1, 2").unwrap_err();
        assert!(e.starts_with("infer request: Eof error at line 1"), "{e}");
        let deep = format!(
            "{{\"inputs\":[{{\"name\":\"x\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":{}1{}}}]}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = parse_infer_request(deep.as_bytes()).unwrap_err();
        assert!(e.contains("error"), "{e}");
    }
}
