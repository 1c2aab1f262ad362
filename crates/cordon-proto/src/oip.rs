//! Open Inference Protocol (KServe v2) JSON types: the subset of tensors this runtime speaks.

use serde::{Deserialize, Serialize};

/// An input or output tensor. `data` is flattened row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /v2/models/{name}/infer` request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

/// `POST /v2/models/{name}/infer` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// Tensor metadata in model metadata responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    /// -1 for a dimension of any size.
    pub shape: Vec<i64>,
}

/// `GET /v2/models/{name}` response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// OIP error body: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: String,
}

/// Parses a request body as JSON, also accepting the literals `NaN`, `Infinity` and `-Infinity`
/// where a value stands: Python's `json.dumps` (and the KServe v2 clients built on it) writes
/// them for missing and extreme values, which standard JSON cannot express. They become the
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"`, which float tensors read as those values. A body
/// that is standard JSON is parsed as such, with no extra pass.
pub fn parse_json_body(bytes: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Ok(v),
        Err(e) => match quote_non_finite_literals(bytes) {
            Some(quoted) => serde_json::from_slice(&quoted),
            None => Err(e),
        },
    }
}

/// The non-finite literals, longest first (`-Infinity` before `Infinity`).
const NON_FINITE: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];

/// `bytes` with each non-finite literal in a value position (after `[` or `:`, or after `,`
/// inside an array; outside strings; followed by a delimiter) put in quotes; `None` if there is
/// none. A literal where an object key stands is left alone (and stays an error).
pub fn quote_non_finite_literals(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let (mut in_string, mut escaped) = (false, false);
    // The last byte outside strings that is not white space.
    let mut last = 0u8;
    // The open containers, innermost last: whether each is an array.
    let mut arrays: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b'[' || b == b'{' {
            arrays.push(b == b'[');
        } else if b == b']' || b == b'}' {
            arrays.pop();
        } else if matches!(last, b'[' | b':')
            || (last == b',' && arrays.last().copied().unwrap_or(false))
        {
            let literal = NON_FINITE.iter().find(|l| {
                bytes[i..].starts_with(l)
                    && bytes.get(i + l.len()).is_none_or(|&n| {
                        matches!(n, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                    })
            });
            if let Some(literal) = literal {
                let out = out.get_or_insert_with(|| {
                    let mut v = Vec::with_capacity(bytes.len() + 64);
                    v.extend_from_slice(&bytes[..i]);
                    v
                });
                out.push(b'"');
                out.extend_from_slice(literal);
                out.push(b'"');
                i += literal.len();
                last = b'"';
                continue;
            }
        }
        if let Some(out) = out.as_mut() {
            out.push(b);
        }
        if !in_string && !b.is_ascii_whitespace() {
            last = b;
        }
        i += 1;
    }
    out
}

/// The JSON text of a body as the HTTP surfaces (the proxy, the runtime's development route) send
/// it: standard JSON, except that in the `data` of an FP16, FP32 or FP64 output, the elements the
/// channel carries as the strings `"NaN"`, `"Infinity"` and `"-Infinity"` are written as the
/// literals `NaN`, `Infinity` and `-Infinity`, as Triton writes them and Python's `json` reads them.
/// A body with no such element is exactly `serde_json::to_vec`'s.
pub fn response_json(body: &serde_json::Value) -> Vec<u8> {
    use serde_json::Value;
    fn special(v: &Value) -> bool {
        match v {
            Value::String(s) => matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity"),
            Value::Array(items) => items.iter().any(special),
            _ => false,
        }
    }
    fn float_output(t: &Value) -> bool {
        t.get("datatype")
            .and_then(Value::as_str)
            .is_some_and(|d| matches!(d, "FP16" | "FP32" | "FP64"))
    }
    fn write_data(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::String(s) if matches!(s.as_str(), "NaN" | "Infinity" | "-Infinity") => {
                out.extend_from_slice(s.as_bytes())
            }
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_data(item, out);
                }
                out.push(b']');
            }
            other => write_value(other, out),
        }
    }
    fn write_value(v: &Value, out: &mut Vec<u8>) {
        // Writing a JSON value into memory cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
    fn write_object<'a>(
        map: impl Iterator<Item = (&'a String, &'a Value)>,
        out: &mut Vec<u8>,
        mut field: impl FnMut(&str, &Value, &mut Vec<u8>),
    ) {
        out.push(b'{');
        for (i, (k, v)) in map.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, k);
            out.push(b':');
            field(k, v, out);
        }
        out.push(b'}');
    }
    let needs = body
        .get("outputs")
        .and_then(Value::as_array)
        .is_some_and(|o| {
            o.iter()
                .any(|t| float_output(t) && t.get("data").is_some_and(special))
        });
    let Some(map) = body.as_object().filter(|_| needs) else {
        // Serializing a JSON value into memory cannot fail.
        return serde_json::to_vec(body).unwrap_or_default();
    };
    let mut out = Vec::new();
    write_object(map.iter(), &mut out, |k, v, out| match (k, v) {
        ("outputs", Value::Array(tensors)) => {
            out.push(b'[');
            for (i, t) in tensors.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match t.as_object() {
                    Some(tensor) if float_output(t) => {
                        write_object(tensor.iter(), out, |k, v, out| match k {
                            "data" => write_data(v, out),
                            _ => write_value(v, out),
                        })
                    }
                    _ => write_value(t, out),
                }
            }
            out.push(b']');
        }
        _ => write_value(v, out),
    });
    out
}

/// What is structurally wrong with an infer request body, in words that name the field and never
/// quote a value (request data is the client's secret; field names are the protocol's). `None`
/// when the body has the request's shape; element values are checked against the model later.
pub fn request_problem(body: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    const TENSOR: &str = "an object with \"name\", \"shape\", \"datatype\" and \"data\"";
    let Value::Object(request) = body else {
        return Some(format!(
            "an infer request is a JSON object with \"inputs\" (a list of tensors), not {}",
            kind(body)
        ));
    };
    let inputs = match request.get("inputs") {
        None => {
            return Some(format!(
                "the infer request has no \"inputs\": a list of tensors, each {TENSOR}"
            ))
        }
        Some(Value::Array(inputs)) => inputs,
        Some(other) => {
            return Some(format!(
                "\"inputs\" must be a list of tensors, not {}",
                kind(other)
            ))
        }
    };
    for (i, t) in inputs.iter().enumerate() {
        let Value::Object(t) = t else {
            return Some(format!("inputs[{i}] must be {TENSOR}, not {}", kind(t)));
        };
        match t.get("name") {
            Some(Value::String(_)) => {}
            None => return Some(format!("inputs[{i}] has no \"name\"")),
            Some(other) => {
                return Some(format!(
                    "inputs[{i}].name must be a string, not {}",
                    kind(other)
                ))
            }
        }
        match t.get("shape") {
            Some(Value::Array(dims)) if dims.iter().all(|d| d.as_i64().is_some()) => {}
            None => return Some(format!("inputs[{i}] has no \"shape\"")),
            Some(_) => return Some(format!("inputs[{i}].shape must be a list of integers")),
        }
        match t.get("datatype") {
            Some(Value::String(_)) => {}
            None => return Some(format!("inputs[{i}] has no \"datatype\"")),
            Some(other) => {
                return Some(format!(
                    "inputs[{i}].datatype must be a string (FP32, INT64, ...), not {}",
                    kind(other)
                ))
            }
        }
        if !t.contains_key("data") {
            return Some(format!("inputs[{i}] has no \"data\""));
        }
        if let Some(p) = t
            .get("parameters")
            .filter(|p| !p.is_object() && !p.is_null())
        {
            return Some(format!(
                "inputs[{i}].parameters must be an object, not {}",
                kind(p)
            ));
        }
    }
    match request.get("outputs") {
        None | Some(Value::Null) => {}
        Some(Value::Array(outputs)) => {
            for (i, o) in outputs.iter().enumerate() {
                if !o.get("name").is_some_and(Value::is_string) {
                    return Some(format!(
                        "outputs[{i}] must be an object with a string \"name\""
                    ));
                }
            }
        }
        Some(other) => {
            return Some(format!(
                "\"outputs\" must be a list of {{\"name\": ...}} objects, not {}",
                kind(other)
            ))
        }
    }
    if let Some(id) = request.get("id").filter(|v| !v.is_string() && !v.is_null()) {
        return Some(format!("\"id\" must be a string, not {}", kind(id)));
    }
    if let Some(p) = request
        .get("parameters")
        .filter(|p| !p.is_object() && !p.is_null())
    {
        return Some(format!("\"parameters\" must be an object, not {}", kind(p)));
    }
    None
}

/// A JSON value's kind, for error messages (never its content).
fn kind(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NaN and infinities of float outputs are written as Triton writes them (and read back by
    /// [`parse_json_body`]); the same text in a BYTES output, or anywhere else, stays a string;
    /// a body without them is serde_json's own text.
    #[test]
    fn float_outputs_write_nan_and_infinities_as_literals() {
        let body = serde_json::json!({
            "model_name": "m",
            "outputs": [
                {"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [[1.5, "NaN"], ["Infinity", "-Infinity"]]},
                {"name": "s", "datatype": "BYTES", "shape": [1], "data": ["NaN"]},
            ],
            "id": "NaN",
        });
        let text = String::from_utf8(response_json(&body)).unwrap();
        assert_eq!(
            text,
            r#"{"model_name":"m","outputs":[{"name":"p","datatype":"FP32","shape":[2,2],"data":[[1.5,NaN],[Infinity,-Infinity]]},{"name":"s","datatype":"BYTES","shape":[1],"data":["NaN"]}],"id":"NaN"}"#
        );
        // What a reader of Python's literals makes of it: the strings this crate reads as floats.
        let back = parse_json_body(text.as_bytes()).unwrap();
        assert_eq!(back, body);
        let plain = serde_json::json!({"outputs": [{"name": "p", "datatype": "FP64", "shape": [1], "data": [0.25]}]});
        assert_eq!(response_json(&plain), serde_json::to_vec(&plain).unwrap());
        assert_eq!(
            response_json(&serde_json::json!({"error": "NaN"})),
            br#"{"error":"NaN"}"#
        );
    }
    use serde_json::json;

    #[test]
    fn python_non_finite_literals_are_read_and_strings_are_left_alone() {
        let body = br#"{"inputs": [{"name": "x", "shape": [4], "datatype": "FP32",
            "data": [NaN, Infinity, -Infinity, 1.5]}], "id": "NaN, Infinity", "parameters": {"a":NaN}}"#;
        let v = parse_json_body(body).unwrap();
        assert_eq!(
            v["inputs"][0]["data"],
            json!(["NaN", "Infinity", "-Infinity", 1.5])
        );
        // Inside strings nothing changes; as an object value it is read too.
        assert_eq!(v["id"], "NaN, Infinity");
        assert_eq!(v["parameters"]["a"], "NaN");
        // Standard JSON is untouched, and what is not JSON stays an error (a bare word, a
        // literal glued to another token, a literal as a key).
        assert_eq!(parse_json_body(b"[1, null]").unwrap(), json!([1, null]));
        for bad in [
            &b"[NaNa]"[..],
            b"[Infinity1]",
            b"{NaN: 1}",
            b"{\"a\": 1, NaN: 2}",
            b"{\"a\": [1], NaN: 2}",
            b"[nan]",
            b"NaN",
            b"[\"NaN]",
        ] {
            assert!(
                parse_json_body(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Escaped quotes do not end a string early.
        let v = parse_json_body(br#"{"a": "say \"NaN\"", "b": [NaN]}"#).unwrap();
        assert_eq!(v["a"], "say \"NaN\"");
        assert_eq!(v["b"], json!(["NaN"]));
    }

    #[test]
    fn structural_problems_name_the_field_and_quote_no_value() {
        let ok = json!({"id": "1", "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32",
            "data": [1, 2]}], "outputs": [{"name": "y"}]});
        assert_eq!(request_problem(&ok), None);
        assert!(serde_json::from_value::<InferRequest>(ok).is_ok());
        let cases = [
            (json!({}), "no \"inputs\""),
            (json!([]), "not a list"),
            (
                json!({"inputs": 3}),
                "\"inputs\" must be a list of tensors, not a number",
            ),
            (
                json!({"inputs": ["secret-value"]}),
                "inputs[0] must be an object",
            ),
            (
                json!({"inputs": [{"name": "x"}]}),
                "inputs[0] has no \"shape\"",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": ["secret"], "datatype": "FP32", "data": []}]}),
                "inputs[0].shape must be a list of integers",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "data": []}]}),
                "inputs[0] has no \"datatype\"",
            ),
            (
                json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}),
                "inputs[0] has no \"data\"",
            ),
            (
                json!({"inputs": [], "outputs": "secret"}),
                "\"outputs\" must be a list",
            ),
            (json!({"inputs": [], "id": 7}), "\"id\" must be a string"),
        ];
        for (body, expected) in cases {
            let problem = request_problem(&body).expect("a problem");
            assert!(problem.contains(expected), "{problem:?} lacks {expected:?}");
            assert!(!problem.contains("secret"), "{problem:?} quotes a value");
            // Whatever this lets through, serde must accept, and what it refuses serde refuses.
            assert!(serde_json::from_value::<InferRequest>(body).is_err());
        }
    }
}
