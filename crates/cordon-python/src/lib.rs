//! `cordon_client._native`: the Rust client ([`cordon_client`]) as a Python extension module.
//!
//! The Python package `cordon_client` (python/cordon_client/__init__.py) wraps it: it turns numpy
//! arrays into the tensors' raw little-endian bytes and back, and the JSON of claims and evidence
//! into dicts. Everything that decides trust happens here, in Rust: the nonce, the evidence's
//! verification, the policy's appraisal, the key binding, the HPKE encryption to the pinned key.
//! Nothing is sent to the runtime before verification succeeds, as in the Rust SDK.
//!
//! Calls that wait on the network release the GIL.

use cordon_attest::PolicyDocument;
use cordon_client::{ClientError, ClientTls, Session, VerifiedRuntime};
use cordon_proto::oip::InferResponse;
use cordon_proto::oip_binary::{encode_elements, split_response};
use cordon_proto::runtime::{InnerRequest, InnerResponse, INFERENCE_HEADER_CONTENT_LENGTH};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;
use tokio::sync::Mutex;

create_exception!(
    cordon_client,
    CordonError,
    PyException,
    "Every error of the Cordon client: its message is the Rust client's."
);
create_exception!(
    cordon_client,
    PolicyError,
    CordonError,
    "The client policy could not be read or is not a valid policy."
);
create_exception!(
    cordon_client,
    VerificationError,
    CordonError,
    "The runtime was refused: its evidence did not verify, the policy rejected its claims, its keys \
     or models are not bound by the evidence, or it does not serve the model required. Nothing was sent to it."
);
create_exception!(
    cordon_client,
    TransportError,
    CordonError,
    "The runtime could not be reached, or its answer was not a well-formed message."
);
create_exception!(
    cordon_client,
    ServerError,
    CordonError,
    "The runtime answered with an error; `status` holds its HTTP-style status code."
);

/// The Python exception for a client error, with the Rust message (and `status` where the runtime
/// answered one).
fn py_error(e: ClientError) -> PyErr {
    let message = e.to_string();
    let status = match &e {
        ClientError::Server { status, .. }
        | ClientError::NotDecrypted { status, .. }
        | ClientError::SessionClosed { status, .. } => Some(*status),
        _ => None,
    };
    let err = match e {
        ClientError::NoEndorsements
        | ClientError::Evidence(_)
        | ClientError::Rejected(_)
        | ClientError::KeyNotBound { .. }
        | ClientError::ModelNotServed { .. }
        | ClientError::ModelMismatch { .. }
        | ClientError::Signature(_) => VerificationError::new_err(message),
        ClientError::Server { .. }
        | ClientError::NotDecrypted { .. }
        | ClientError::SessionClosed { .. } => ServerError::new_err(message),
        ClientError::Http(_)
        | ClientError::Malformed(_)
        | ClientError::Channel(_)
        | ClientError::Stream(_) => TransportError::new_err(message),
    };
    if let Some(status) = status {
        Python::attach(|py| {
            // Setting an attribute on a fresh exception instance does not fail.
            let _ = err.value(py).setattr("status", status);
        });
    }
    err
}

/// Whether sending `inner` twice changes nothing: reads, and the Open Inference Protocol's
/// inference and repository index (the training job API is not).
fn idempotent(inner: &InnerRequest) -> bool {
    let path = inner.path.split(['?', '#']).next().unwrap_or_default();
    inner.method == "GET"
        || (inner.method == "POST"
            && path.starts_with("/v2/")
            && (path.ends_with("/infer") || path == "/v2/repository/index"))
}

/// One tensor as the Python side hands it over and gets it back: name, datatype, shape, and its
/// elements' raw bytes (little-endian, row-major; `BYTES` elements each prefixed by a 4-byte
/// little-endian length, as in the KServe v2 binary tensor extension).
type RawTensor = (String, String, Vec<i64>, Vec<u8>);

/// A [`RawTensor`] handed back to Python, its bytes as a Python `bytes`.
type PyRawTensor<'py> = (String, String, Vec<i64>, Bound<'py, PyBytes>);

/// A verified runtime, its HPKE key pinned; requests are encrypted to it, one-shot or in a session.
#[pyclass(frozen, module = "cordon_client._native")]
struct NativeClient {
    runtime: VerifiedRuntime,
    /// `Some` in session mode: one session at a time, its requests in order (the runtime refuses
    /// one that arrives after a later one), opened again when it is spent or closed.
    session: Option<Mutex<Option<Session>>>,
    tokio: tokio::runtime::Runtime,
}

fn tokio_runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| CordonError::new_err(format!("starting the client's I/O runtime: {e}")))
}

fn read_policy(path: &PathBuf) -> PyResult<PolicyDocument> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyError::new_err(format!("reading client policy {}: {e}", path.display()))
    })?;
    PolicyDocument::from_toml(&text)
        .map_err(|e| PolicyError::new_err(format!("client policy {}: {e}", path.display())))
}

fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| CordonError::new_err(e.to_string()))
}

#[pymethods]
impl NativeClient {
    /// Fetches the runtime's evidence for a fresh nonce and verifies it with the policy file's
    /// endorsements and reference values; refuses (VerificationError) unless every check passes.
    #[new]
    #[pyo3(signature = (url, policy, ca_cert=None, session=false))]
    fn new(
        py: Python<'_>,
        url: &str,
        policy: PathBuf,
        ca_cert: Option<PathBuf>,
        session: bool,
    ) -> PyResult<NativeClient> {
        let doc = read_policy(&policy)?;
        let tls = ClientTls::with_extra_ca_file(ca_cert.as_deref())
            .map_err(|e| PolicyError::new_err(e.to_string()))?;
        let tokio = tokio_runtime()?;
        let runtime = py
            .detach(|| {
                tokio.block_on(cordon_client::connect_tls(
                    url,
                    &doc,
                    &tls,
                    SystemTime::now(),
                ))
            })
            .map_err(py_error)?;
        Ok(NativeClient {
            runtime,
            session: session.then(|| Mutex::new(None)),
            tokio,
        })
    }

    /// The runtime's base URL.
    #[getter]
    fn url(&self) -> &str {
        self.runtime.url()
    }

    /// The verified claims, as JSON.
    fn claims_json(&self) -> PyResult<String> {
        json_text(self.runtime.claims())
    }

    /// What was verified, as JSON: the evidence (base64), the keys and models it binds, and when.
    fn evidence_json(&self) -> PyResult<String> {
        use base64::Engine;
        let verified_at = time::OffsetDateTime::from(self.runtime.verified_at())
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| CordonError::new_err(e.to_string()))?;
        json_text(&serde_json::json!({
            "evidence": base64::engine::general_purpose::STANDARD.encode(self.runtime.evidence()),
            "runtime_keys": self.runtime.keys(),
            "models": self.runtime.models(),
            "verified_at": verified_at,
        }))
    }

    /// Refuses (VerificationError) unless the evidence binds `model` to exactly the sealed
    /// manifest whose SHA-256 is `manifest_sha256` (hex, as `cordon seal` prints it).
    fn require_model(&self, model: &str, manifest_sha256: &str) -> PyResult<()> {
        self.runtime
            .require_model(model, manifest_sha256)
            .map_err(py_error)
    }

    /// Sends one request through the encrypted channel; returns the status and the body as JSON.
    #[pyo3(signature = (method, path, body_json=None))]
    fn request_json(
        &self,
        py: Python<'_>,
        method: &str,
        path: &str,
        body_json: Option<&str>,
    ) -> PyResult<(u16, String)> {
        let body = body_json
            .map(serde_json::from_str::<serde_json::Value>)
            .transpose()
            .map_err(|e| CordonError::new_err(format!("request body is not JSON: {e}")))?;
        let resp = py.detach(|| self.tokio.block_on(self.send_json(method, path, body)))?;
        Ok((resp.status, json_text(&resp.body)?))
    }

    /// Runs an infer request on `model` with `inputs` (raw tensors); returns its outputs as raw
    /// tensors, in the order the runtime answered them.
    #[pyo3(signature = (model, inputs, outputs=None, request_id=None))]
    fn infer_raw<'py>(
        &self,
        py: Python<'py>,
        model: &str,
        inputs: Vec<RawTensor>,
        outputs: Option<Vec<String>>,
        request_id: Option<String>,
    ) -> PyResult<Vec<PyRawTensor<'py>>> {
        let raw_outputs = py.detach(|| -> PyResult<Vec<RawTensor>> {
            let inner = binary_request(model, inputs, outputs, request_id)?;
            let resp = self.tokio.block_on(self.send(inner))?;
            raw_outputs(resp)
        })?;
        Ok(raw_outputs
            .into_iter()
            .map(|(name, datatype, shape, bytes)| (name, datatype, shape, PyBytes::new(py, &bytes)))
            .collect())
    }
}

impl NativeClient {
    async fn send_json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> PyResult<InnerResponse> {
        self.send(InnerRequest {
            method: method.into(),
            path: path.into(),
            body,
            ..InnerRequest::default()
        })
        .await
    }

    /// Sends `inner` one-shot, or in the session (opened, or opened again, as needed).
    async fn send(&self, inner: InnerRequest) -> PyResult<InnerResponse> {
        let Some(slot) = &self.session else {
            return self.runtime.send(inner).await.map_err(py_error);
        };
        let mut slot = slot.lock().await;
        if slot.as_ref().is_some_and(|s| s.is_spent(SystemTime::now())) {
            *slot = None;
        }
        let session = match slot.take() {
            Some(s) => s,
            None => self.runtime.open_session().await.map_err(py_error)?,
        };
        match session.send(inner.clone()).await {
            Ok(resp) => {
                *slot = Some(session);
                Ok(resp)
            }
            // The runtime answered 404 or 410 in clear: it no longer knows the session (a
            // restart) or it expired. That answer is not authenticated: a host can forge it after
            // delivering the message, and the request then runs twice. So only requests that
            // change nothing (reads and inference) go once more, in a new session.
            Err(ClientError::SessionClosed { .. }) if idempotent(&inner) => {
                let fresh = self.runtime.open_session().await.map_err(py_error)?;
                let resp = fresh.send(inner).await.map_err(py_error)?;
                *slot = Some(fresh);
                Ok(resp)
            }
            Err(e) => Err(py_error(e)),
        }
    }
}

/// An infer request in the binary tensor data extension's form: a JSON header naming each input
/// and its byte count, then the inputs' bytes as Python gave them; every output asked for in
/// binary. No tensor data becomes JSON, here or in the runtime.
fn binary_request(
    model: &str,
    inputs: Vec<RawTensor>,
    outputs: Option<Vec<String>>,
    id: Option<String>,
) -> PyResult<InnerRequest> {
    let header_inputs: Vec<serde_json::Value> = inputs
        .iter()
        .map(|(name, datatype, shape, bytes)| {
            serde_json::json!({ "name": name, "shape": shape, "datatype": datatype,
                "parameters": { "binary_data_size": bytes.len() } })
        })
        .collect();
    let mut header = serde_json::json!({
        "inputs": header_inputs,
        "parameters": { "binary_data_output": true },
    });
    if let Some(id) = id {
        header["id"] = serde_json::json!(id);
    }
    if let Some(outputs) = outputs {
        header["outputs"] = outputs
            .into_iter()
            .map(|name| serde_json::json!({ "name": name }))
            .collect();
    }
    let mut body = serde_json::to_vec(&header).map_err(|e| CordonError::new_err(e.to_string()))?;
    let header_len = body.len();
    body.reserve_exact(inputs.iter().map(|t| t.3.len()).sum());
    for (_, _, _, bytes) in &inputs {
        body.extend_from_slice(bytes);
    }
    Ok(InnerRequest {
        method: "POST".into(),
        path: format!("/v2/models/{model}/infer"),
        headers: BTreeMap::from([(
            INFERENCE_HEADER_CONTENT_LENGTH.to_string(),
            header_len.to_string(),
        )]),
        raw_body: Some(body),
        ..InnerRequest::default()
    })
}

/// The outputs of an infer answer as raw tensors: binary ones as the runtime sent their bytes,
/// JSON ones encoded.
fn raw_outputs(resp: InnerResponse) -> PyResult<Vec<RawTensor>> {
    if resp.status != 200 {
        let error = resp
            .body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("")
            .to_string();
        return Err(py_error(ClientError::Server {
            status: resp.status,
            error,
        }));
    }
    let malformed =
        |what: String| py_error(ClientError::Malformed(format!("infer response: {what}")));
    let header_len = resp.binary_header_length().map(str::to_string);
    let (header, body, blobs) = match (header_len, resp.raw_body) {
        (Some(header_len), Some(body)) => {
            let header_len = header_len
                .parse::<usize>()
                .map_err(|_| malformed("bad Inference-Header-Content-Length".into()))?;
            let split = split_response(&body, header_len).map_err(|e| malformed(e.to_string()))?;
            (split.header, body, split.blobs)
        }
        (_, _) => (resp.body, Vec::new(), Vec::new()),
    };
    let response: InferResponse =
        serde_json::from_value(header).map_err(|e| malformed(e.to_string()))?;
    response
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let bytes = match blobs.get(i).cloned().flatten() {
                Some(range) => body[range].to_vec(),
                None => encode_elements(&t.datatype, &t.data)
                    .map_err(|e| malformed(format!("output {:?}: {e}", t.name)))?,
            };
            Ok((t.name, t.datatype, t.shape, bytes))
        })
        .collect()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<NativeClient>()?;
    m.add("CordonError", py.get_type::<CordonError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("VerificationError", py.get_type::<VerificationError>())?;
    m.add("TransportError", py.get_type::<TransportError>())?;
    m.add("ServerError", py.get_type::<ServerError>())?;
    Ok(())
}
