//! The KServe v2 gRPC form of the Open Inference Protocol (`GRPCInferenceService`, the vendored
//! `proto/grpc_predict_v2.proto`) on `cordon proxy --grpc-listen`, for clients that speak gRPC
//! (Triton's and KServe's stock clients included). Each call becomes the same REST request the
//! HTTP surface forwards, over the same verified, encrypted channel, with the same refusals: the
//! gRPC surface adds no path of its own to the runtime.
//!
//! Tensor data arrives as `raw_input_contents` (what the stock clients send) or typed `contents`;
//! outputs go back as `raw_output_contents` (little-endian, row-major; `BYTES` length-prefixed),
//! as Triton answers. Raw inputs travel in the channel as the binary tensor data extension's body
//! and come back in it (no JSON for tensor data); typed contents travel as JSON. The runtime's HTTP statuses map to gRPC codes (400 `INVALID_ARGUMENT`, 404
//! `NOT_FOUND`, 413 `RESOURCE_EXHAUSTED`, 429 and 503 `UNAVAILABLE`, others `INTERNAL`), with the
//! runtime's (or the proxy's) error text as the message.

use crate::proxy::{Payload, Proxy, RawBody};
use cordon_proto::oip_binary;
use cordon_proto::runtime::InnerResponse;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// The generated messages and service of `package inference`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use pb::infer_parameter::ParameterChoice;
use pb::model_infer_request::InferInputTensor;
use pb::model_metadata_response::TensorMetadata;

/// The gRPC service over a [`Proxy`].
#[derive(Clone)]
pub struct GrpcSurface {
    proxy: Proxy,
}

impl GrpcSurface {
    pub fn new(proxy: Proxy) -> GrpcSurface {
        GrpcSurface { proxy }
    }

    /// Serves `GRPCInferenceService` on `listener` until `shutdown` completes. Messages up to the
    /// proxy's body limit are read; tensors are forwarded when their JSON form fits that limit
    /// inside the channel (see [`oip_binary::json_size_floor`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let limit = self.proxy.max_body();
        let service = GrpcInferenceServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX);
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                // No Nagle delay (as on the HTTP surface): a response in several segments would
                // otherwise wait for the client's delayed ACK, tens of milliseconds.
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }

    /// Forwards one REST request; a non-200 answer becomes the matching gRPC status.
    async fn call(&self, method: &str, path: &str, body: Option<Payload>) -> Result<Value, Status> {
        match self.call_inner(method, path, body).await? {
            inner if inner.raw_body.is_none() => Ok(inner.body),
            _ => Err(Status::internal(
                "the runtime answered in binary where JSON was expected",
            )),
        }
    }

    /// [`GrpcSurface::call`], the answer as it came (JSON or a binary-extension body).
    async fn call_inner(
        &self,
        method: &str,
        path: &str,
        body: Option<Payload>,
    ) -> Result<InnerResponse, Status> {
        let inner = self.proxy.forward_inner(method, path, body).await;
        if inner.status == 200 {
            return Ok(inner);
        }
        Err(grpc_status(inner.status, &inner.body))
    }
}

/// The gRPC status of a non-200 REST answer, with its `error` text.
fn grpc_status(status: u16, body: &Value) -> Status {
    let message = body
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("request failed")
        .to_string();
    match status {
        400 => Status::invalid_argument(message),
        404 => Status::not_found(message),
        413 => Status::resource_exhausted(message),
        429 | 503 => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

/// `/v2/models/{name}` or `/v2/models/{name}/versions/{version}`, each segment percent-encoded
/// where a path would read it otherwise (a gRPC name is any string).
fn model_path(name: &str, version: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                // RFC 3986 pchar: unreserved, sub-delims, ':' and '@' stand as they are (the
                // runtime compares segments undecoded, as an HTTP client would send them).
                b'A'..=b'Z'
                | b'a'..=b'z'
                | b'0'..=b'9'
                | b'-'
                | b'_'
                | b'.'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    if version.is_empty() {
        format!("/v2/models/{}", enc(name))
    } else {
        format!("/v2/models/{}/versions/{}", enc(name), enc(version))
    }
}

fn parameters_json(p: &HashMap<String, pb::InferParameter>) -> Value {
    let map: Map<String, Value> = p
        .iter()
        .filter_map(|(k, v)| {
            let value = match v.parameter_choice.as_ref()? {
                ParameterChoice::BoolParam(b) => json!(b),
                ParameterChoice::Int64Param(i) => json!(i),
                ParameterChoice::StringParam(s) => json!(s),
            };
            Some((k.clone(), value))
        })
        .collect();
    Value::Object(map)
}

/// An input's data as JSON: from its raw bytes, or from the typed contents of its datatype.
fn input_data(t: &InferInputTensor, raw: Option<&Vec<u8>>) -> Result<Vec<Value>, Status> {
    let bad = |reason: String| Status::invalid_argument(format!("input {:?}: {reason}", t.name));
    if let Some(raw) = raw {
        if t.contents.is_some() {
            return Err(bad("both raw_input_contents and contents are given".into()));
        }
        return oip_binary::decode_elements(&t.datatype, raw).map_err(bad);
    }
    let c = t.contents.clone().unwrap_or_default();
    Ok(match t.datatype.as_str() {
        "BOOL" => c.bool_contents.into_iter().map(Value::from).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents.into_iter().map(Value::from).collect(),
        "INT64" => c.int64_contents.into_iter().map(Value::from).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.into_iter().map(Value::from).collect(),
        "UINT64" => c.uint64_contents.into_iter().map(Value::from).collect(),
        // NaN and the infinities as the JSON strings float inputs read.
        "FP32" => c
            .fp32_contents
            .into_iter()
            .map(|x| oip_binary::float_value(x as f64))
            .collect(),
        "FP64" => c
            .fp64_contents
            .into_iter()
            .map(oip_binary::float_value)
            .collect(),
        "BYTES" => c
            .bytes_contents
            .into_iter()
            .map(|b| {
                String::from_utf8(b)
                    .map(Value::from)
                    .map_err(|_| bad("a BYTES element is not UTF-8 text".into()))
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(bad(format!(
                "datatype {other} has no typed contents; send it raw"
            )))
        }
    })
}

/// The bytes an input's typed contents would take raw (what [`oip_binary::json_size_floor`]
/// bounds).
fn typed_bytes(c: &pb::InferTensorContents) -> usize {
    c.bool_contents.len()
        + 4 * (c.int_contents.len() + c.uint_contents.len() + c.fp32_contents.len())
        + 8 * (c.int64_contents.len() + c.uint64_contents.len() + c.fp64_contents.len())
        + c.bytes_contents.iter().map(|b| 4 + b.len()).sum::<usize>()
}

/// The JSON infer request of a gRPC one. Tensors whose JSON could not fit `max_json` (the
/// channel's limit) are refused before any is decoded.
fn infer_request_json(r: &pb::ModelInferRequest, max_json: usize) -> Result<Value, Status> {
    if !r.raw_input_contents.is_empty() && r.raw_input_contents.len() != r.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "{} raw_input_contents for {} inputs",
            r.raw_input_contents.len(),
            r.inputs.len()
        )));
    }
    let mut floor = 0usize;
    let mut binary = 0usize;
    for (i, t) in r.inputs.iter().enumerate() {
        let bytes = match r.raw_input_contents.get(i) {
            Some(raw) => raw.len(),
            None => t.contents.as_ref().map_or(0, typed_bytes),
        };
        binary = binary.saturating_add(bytes);
        floor = floor.saturating_add(oip_binary::json_size_floor(&t.datatype, bytes));
    }
    if floor > max_json {
        return Err(Status::resource_exhausted(
            oip_binary::BinaryError::TooLarge {
                binary,
                json: floor,
                limit: max_json,
            }
            .to_string(),
        ));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, t) in r.inputs.iter().enumerate() {
        let data = input_data(t, r.raw_input_contents.get(i))?;
        // The data array moves in, never copied.
        let mut input = json!({ "name": t.name, "shape": t.shape, "datatype": t.datatype });
        input["data"] = Value::Array(data);
        if !t.parameters.is_empty() {
            input["parameters"] = parameters_json(&t.parameters);
        }
        inputs.push(input);
    }
    let mut request = json!({ "inputs": inputs });
    if !r.id.is_empty() {
        request["id"] = json!(r.id);
    }
    if !r.outputs.is_empty() {
        request["outputs"] = r
            .outputs
            .iter()
            .map(|o| json!({ "name": o.name }))
            .collect();
    }
    Ok(request)
}

/// The binary-extension body of a request whose every input is raw (none typed), asking for
/// every output in binary; `None` when an input has typed contents. Refused when it could not fit
/// the channel's limit.
fn binary_payload(r: &pb::ModelInferRequest, limit: usize) -> Result<Option<Payload>, Status> {
    if r.inputs.is_empty() || r.raw_input_contents.len() != r.inputs.len() {
        return Ok(None);
    }
    if let Some(t) = r.inputs.iter().find(|t| t.contents.is_some()) {
        return Err(Status::invalid_argument(format!(
            "input {:?}: both raw_input_contents and contents are given",
            t.name
        )));
    }
    let inputs: Vec<Value> = r
        .inputs
        .iter()
        .zip(&r.raw_input_contents)
        .map(|(t, raw)| {
            let mut parameters = parameters_json(&t.parameters);
            parameters["binary_data_size"] = json!(raw.len());
            json!({ "name": t.name, "shape": t.shape, "datatype": t.datatype,
                    "parameters": parameters })
        })
        .collect();
    let mut header = json!({ "inputs": inputs, "parameters": { "binary_data_output": true } });
    if !r.id.is_empty() {
        header["id"] = json!(r.id);
    }
    if !r.outputs.is_empty() {
        header["outputs"] = r
            .outputs
            .iter()
            .map(|o| json!({ "name": o.name }))
            .collect();
    }
    // Serializing a JSON value into memory cannot fail.
    let mut body = serde_json::to_vec(&header).unwrap_or_default();
    let header_len = body.len();
    let raw: usize = r.raw_input_contents.iter().map(Vec::len).sum();
    let inner = (header_len + raw).saturating_add(crate::proxy::INNER_OVERHEAD);
    if inner > limit {
        return Err(Status::resource_exhausted(
            oip_binary::BinaryError::TooLarge {
                binary: header_len + raw,
                json: inner,
                limit,
            }
            .to_string(),
        ));
    }
    body.reserve_exact(raw);
    for c in &r.raw_input_contents {
        body.extend_from_slice(c);
    }
    Ok(Some(Payload::Raw(RawBody::Binary {
        header_len,
        bytes: body.into(),
    })))
}

/// The gRPC infer response of a binary-extension one: each binary output's bytes as its raw
/// contents, unchanged; a JSON output's data encoded.
fn binary_infer_response(body: &[u8], header_len: &str) -> Result<pb::ModelInferResponse, Status> {
    let malformed = |what: String| Status::internal(format!("the runtime's binary answer: {what}"));
    let header_len = header_len
        .parse::<usize>()
        .map_err(|_| malformed("bad Inference-Header-Content-Length".into()))?;
    let split =
        oip_binary::split_response(body, header_len).map_err(|e| malformed(e.to_string()))?;
    let mut ranges = split.blobs.into_iter();
    infer_response_with(&split.header, |o| match ranges.next().flatten() {
        Some(range) => Ok(body[range].to_vec()),
        None => encoded(o),
    })
}

/// A JSON output's data as raw bytes.
fn encoded(o: &Value) -> Result<Vec<u8>, Status> {
    let datatype = o
        .get("datatype")
        .and_then(Value::as_str)
        .unwrap_or_default();
    oip_binary::encode_elements(datatype, o.get("data").unwrap_or(&Value::Null)).map_err(|reason| {
        let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
        Status::internal(format!("output {name:?}: {reason}"))
    })
}

/// The gRPC infer response of a JSON one: every output's data as raw contents.
fn infer_response(body: &Value) -> Result<pb::ModelInferResponse, Status> {
    infer_response_with(body, encoded)
}

/// The gRPC infer response of an answer's JSON (header), each output's raw contents from `raw`.
fn infer_response_with(
    body: &Value,
    mut raw: impl FnMut(&Value) -> Result<Vec<u8>, Status>,
) -> Result<pb::ModelInferResponse, Status> {
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut response = pb::ModelInferResponse {
        model_name: text(body, "model_name"),
        model_version: text(body, "model_version"),
        id: text(body, "id"),
        ..Default::default()
    };
    for o in body
        .get("outputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        response.raw_output_contents.push(raw(o)?);
        response
            .outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: text(o, "name"),
                datatype: text(o, "datatype"),
                shape: shape(o),
                ..Default::default()
            });
    }
    Ok(response)
}

fn shape(v: &Value) -> Vec<i64> {
    v.get("shape")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default()
}

fn tensor_metadata(list: Option<&Value>) -> Vec<TensorMetadata> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| TensorMetadata {
            name: t
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            datatype: t
                .get("datatype")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            shape: shape(t),
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcSurface {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        let body = self.call("GET", "/v2/health/live", None).await?;
        Ok(Response::new(pb::ServerLiveResponse {
            live: body.get("live").and_then(Value::as_bool).unwrap_or(false),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        let body = self.call("GET", "/v2/health/ready", None).await?;
        Ok(Response::new(pb::ServerReadyResponse {
            ready: body.get("ready").and_then(Value::as_bool).unwrap_or(false),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let path = format!("{}/ready", model_path(&r.name, &r.version));
        let body = self.call("GET", &path, None).await?;
        Ok(Response::new(pb::ModelReadyResponse {
            ready: body.get("ready").and_then(Value::as_bool).unwrap_or(false),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        let body = self.call("GET", "/v2", None).await?;
        Ok(Response::new(pb::ServerMetadataResponse {
            name: body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            version: body
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            extensions: strings(body.get("extensions")),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let body = self
            .call("GET", &model_path(&r.name, &r.version), None)
            .await?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            versions: strings(body.get("versions")),
            platform: body
                .get("platform")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            inputs: tensor_metadata(body.get("inputs")),
            outputs: tensor_metadata(body.get("outputs")),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let r = request.into_inner();
        let limit = self.proxy.max_body();
        let path = format!("{}/infer", model_path(&r.model_name, &r.model_version));
        // Raw tensors (what the stock clients send) go into the channel as the binary tensor
        // data extension's body, and come back in it: no JSON for tensor data on either side.
        if let Some(payload) = binary_payload(&r, limit)? {
            let inner = self.call_inner("POST", &path, Some(payload)).await?;
            return Ok(Response::new(
                match (&inner.raw_body, inner.binary_header_length()) {
                    (Some(body), Some(header_len)) => binary_infer_response(body, header_len)?,
                    (None, _) => infer_response(&inner.body)?,
                    (Some(_), None) => {
                        return Err(Status::internal(
                            "the runtime's binary answer has no Inference-Header-Content-Length",
                        ))
                    }
                },
            ));
        }
        let json = infer_request_json(&r, limit)?;
        // Made again from the message itself should the request go out a second time.
        let payload = Payload::new(json, move || {
            infer_request_json(&r, limit).map_err(|s| s.message().to_string())
        });
        let body = self.call("POST", &path, Some(payload)).await?;
        Ok(Response::new(infer_response(&body)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8 << 20;

    /// Raw inputs go into the channel as the binary extension's body, unchanged and in order,
    /// asking for binary outputs; a typed input keeps the JSON form; too large is refused.
    #[test]
    fn raw_inputs_become_a_binary_body_and_binary_answers_raw_outputs() {
        let r = pb::ModelInferRequest {
            id: "q".into(),
            inputs: vec![input("a", "FP32", vec![1, 2]), input("s", "BYTES", vec![1])],
            raw_input_contents: vec![vec![1, 2, 3, 4, 5, 6, 7, 8], b"\x02\0\0\0hi".to_vec()],
            ..Default::default()
        };
        let Some(Payload::Raw(RawBody::Binary { header_len, bytes })) =
            binary_payload(&r, MAX).unwrap()
        else {
            panic!("not binary")
        };
        let split = oip_binary::split_request(&bytes, header_len).unwrap();
        assert_eq!(split.header["id"], "q");
        assert_eq!(split.header["parameters"]["binary_data_output"], true);
        assert_eq!(
            &bytes[split.blobs[0].clone().unwrap()],
            &r.raw_input_contents[0][..]
        );
        assert_eq!(
            &bytes[split.blobs[1].clone().unwrap()],
            &r.raw_input_contents[1][..]
        );
        let e = match binary_payload(&r, 200) {
            Err(e) => e,
            Ok(_) => panic!("not refused"),
        };
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        let mut typed = r.clone();
        typed.raw_input_contents.clear();
        assert!(binary_payload(&typed, MAX).unwrap().is_none());

        // An answer with one binary output and one JSON output.
        let header = json!({"model_name": "m", "model_version": "3", "outputs": [
            {"name": "p", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}},
            {"name": "l", "datatype": "INT64", "shape": [1], "data": [7]},
        ]});
        let mut body = serde_json::to_vec(&header).unwrap();
        let n = body.len();
        body.extend_from_slice(&0.5f32.to_le_bytes());
        let resp = binary_infer_response(&body, &n.to_string()).unwrap();
        assert_eq!(
            (resp.model_name.as_str(), resp.model_version.as_str()),
            ("m", "3")
        );
        assert_eq!(resp.raw_output_contents[0], 0.5f32.to_le_bytes());
        assert_eq!(resp.raw_output_contents[1], 7i64.to_le_bytes());
        assert_eq!(resp.outputs[1].shape, [1]);
        // Cut short, with bytes left over, a header length past the end: refused.
        for (body, len) in [
            (&body[..body.len() - 1], n),
            (&[&body[..], &[0][..]].concat()[..], n),
            (&body[..], body.len() + 1),
        ] {
            let e = binary_infer_response(body, &len.to_string()).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Internal, "{}", e.message());
        }
    }

    /// What could not fit the channel as JSON is refused before it is decoded, raw or typed.
    #[test]
    fn tensors_too_large_for_the_channel_are_refused_first() {
        let r = pb::ModelInferRequest {
            inputs: vec![input("b", "BOOL", vec![1 << 20])],
            raw_input_contents: vec![vec![1; 1 << 20]],
            ..Default::default()
        };
        assert!(infer_request_json(&r, MAX).is_ok());
        let e = infer_request_json(&r, 4 << 20).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("send fewer rows"), "{}", e.message());
        let mut typed = input("f", "FP64", vec![1 << 20]);
        typed.contents = Some(pb::InferTensorContents {
            fp64_contents: vec![0.0; 1 << 20],
            ..Default::default()
        });
        let r = pb::ModelInferRequest {
            inputs: vec![typed],
            ..Default::default()
        };
        assert_eq!(
            infer_request_json(&r, 2 << 20).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        // Many empty inputs count too.
        let r = pb::ModelInferRequest {
            inputs: vec![input("e", "BOOL", vec![0]); 100_000],
            ..Default::default()
        };
        assert_eq!(
            infer_request_json(&r, 1 << 20).unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    fn input(name: &str, datatype: &str, shape: Vec<i64>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_inputs_become_the_json_request() {
        let raw: Vec<u8> = [1.5f32, f32::NAN]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let r = pb::ModelInferRequest {
            model_name: "m".into(),
            id: "7".into(),
            inputs: vec![input("a", "FP32", vec![1, 2])],
            raw_input_contents: vec![raw],
            outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
                name: "p".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let j = infer_request_json(&r, MAX).unwrap();
        assert_eq!(j["inputs"][0]["data"], json!([1.5, "NaN"]));
        assert_eq!(j["id"], "7");
        assert_eq!(j["outputs"], json!([{"name": "p"}]));

        let mut typed = input("b", "INT64", vec![2]);
        typed.contents = Some(pb::InferTensorContents {
            int64_contents: vec![-1, 2],
            ..Default::default()
        });
        let mut f = input("f", "FP32", vec![1]);
        f.contents = Some(pb::InferTensorContents {
            fp32_contents: vec![f32::INFINITY],
            ..Default::default()
        });
        let r = pb::ModelInferRequest {
            inputs: vec![typed, f],
            ..Default::default()
        };
        let j = infer_request_json(&r, MAX).unwrap();
        assert_eq!(j["inputs"][0]["data"], json!([-1, 2]));
        assert_eq!(j["inputs"][1]["data"], json!(["Infinity"]));

        // Raw contents that do not match the inputs, or both forms for one input: refused.
        let r = pb::ModelInferRequest {
            inputs: vec![input("a", "FP32", vec![1]), input("b", "FP32", vec![1])],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert_eq!(
            infer_request_json(&r, MAX).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let mut both = input("a", "FP32", vec![1]);
        both.contents = Some(pb::InferTensorContents::default());
        let r = pb::ModelInferRequest {
            inputs: vec![both],
            raw_input_contents: vec![vec![0; 4]],
            ..Default::default()
        };
        assert!(infer_request_json(&r, MAX)
            .unwrap_err()
            .message()
            .contains("both raw_input_contents and contents"));
    }

    /// The proxy's refusals keep their meaning: an unverified runtime (503 from the proxy, nothing
    /// sent) is UNAVAILABLE with the reason, so clients retry; a bad request is INVALID_ARGUMENT.
    #[test]
    fn statuses_map_to_grpc_codes_with_the_message() {
        let refused = json!({"error": "cordon proxy: the runtime at http://x is not verified"});
        let s = grpc_status(503, &refused);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("not verified"));
        for (http, code) in [
            (400, tonic::Code::InvalidArgument),
            (404, tonic::Code::NotFound),
            (413, tonic::Code::ResourceExhausted),
            (429, tonic::Code::Unavailable),
            (502, tonic::Code::Internal),
        ] {
            assert_eq!(grpc_status(http, &json!({})).code(), code, "{http}");
        }
    }

    #[test]
    fn outputs_go_back_raw_and_names_are_escaped_in_paths() {
        let body = json!({"model_name": "m", "model_version": "1", "outputs": [
            {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "t", "shape": [1], "datatype": "BYTES", "data": ["ok"]}
        ]});
        let r = infer_response(&body).unwrap();
        assert_eq!(r.outputs.len(), 2);
        assert_eq!(r.outputs[0].shape, vec![2]);
        assert_eq!(r.raw_output_contents[0].len(), 16);
        assert_eq!(r.raw_output_contents[1], b"\x02\x00\x00\x00ok");
        assert_eq!(model_path("m", ""), "/v2/models/m");
        assert_eq!(
            model_path("a/../b c", "1"),
            "/v2/models/a%2F..%2Fb%20c/versions/1"
        );
        assert_eq!(model_path("m+v2:x@y", ""), "/v2/models/m+v2:x@y");
    }
}
