//! The runtime's HTTP surface.

use crate::engine::OnnxModel;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cordon_proto::oip::{ErrorResponse, InferRequest};
use cordon_proto::runtime::{
    AttestationResponse, InnerRequest, InnerResponse, ENCRYPTED_RESPONSE_MEDIA_TYPE,
};
use cordon_proto::{report_data, RuntimeKeys, ServiceKeyPair};
use cordon_tee::EvidenceProvider;
use ed25519_dalek::SigningKey;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Everything a serving runtime holds. Secrets (service key, signing key, models) stay in here.
pub struct RuntimeState {
    service_key: ServiceKeyPair,
    // Bound in report_data now; signs job receipts when training lands.
    _signing_key: SigningKey,
    runtime_keys: RuntimeKeys,
    tee: Arc<dyn EvidenceProvider>,
    models: BTreeMap<String, Arc<OnnxModel>>,
    /// Bounds concurrent inference; inference runs on blocking threads, off the async workers.
    pool: Arc<Semaphore>,
}

impl RuntimeState {
    pub fn new(
        service_key: ServiceKeyPair,
        signing_key: SigningKey,
        runtime_keys: RuntimeKeys,
        tee: Arc<dyn EvidenceProvider>,
        models: BTreeMap<String, Arc<OnnxModel>>,
    ) -> RuntimeState {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        RuntimeState {
            service_key,
            _signing_key: signing_key,
            runtime_keys,
            tee,
            models,
            pool: Arc::new(Semaphore::new(workers)),
        }
    }

    pub fn runtime_keys(&self) -> &RuntimeKeys {
        &self.runtime_keys
    }

    pub fn model_names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }
}

const MAX_BODY: usize = 8 << 20;

/// The runtime's routes.
pub fn router(state: Arc<RuntimeState>) -> Router {
    Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/v1/encrypted", post(encrypted))
        .route(
            "/v2/health/live",
            get(|| async { Json(json!({ "live": true })) }),
        )
        .route(
            "/v2/health/ready",
            get(|| async { Json(json!({ "ready": true })) }),
        )
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata_plain))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the runtime on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    state: Arc<RuntimeState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorResponse { error: msg.into() })).into_response()
}

#[derive(serde::Deserialize)]
struct NonceQuery {
    nonce: Option<String>,
}

async fn attestation(State(s): State<Arc<RuntimeState>>, Query(q): Query<NonceQuery>) -> Response {
    let Some(nonce_hex) = q.nonce else {
        return error(
            StatusCode::BAD_REQUEST,
            "query parameter `nonce` (hex) is required",
        );
    };
    let nonce = match hex::decode(&nonce_hex) {
        Ok(n) if (16..=64).contains(&n.len()) => n,
        Ok(n) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("nonce must be 16 to 64 bytes, got {}", n.len()),
            )
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("nonce is not hex: {e}")),
    };
    // Evidence can take long on hardware (a TDX quote, an SNP ioctl): off the async workers.
    let rd = report_data(&nonce, &s.runtime_keys);
    let tee = s.tee.clone();
    let Ok(evidence) = tokio::task::spawn_blocking(move || tee.evidence(&rd)).await else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "evidence task failed");
    };
    match evidence {
        Ok(evidence) => Json(AttestationResponse {
            evidence,
            runtime_keys: s.runtime_keys.clone(),
        })
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("evidence: {e}")),
    }
}

async fn server_metadata(State(s): State<Arc<RuntimeState>>) -> Json<serde_json::Value> {
    Json(server_metadata_body(&s))
}

fn server_metadata_body(s: &RuntimeState) -> serde_json::Value {
    json!({
        "name": "cordon-runtime",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["cordon_encrypted"],
        "platform": s.tee.platform().to_string(),
        "models": s.model_names(),
    })
}

async fn model_metadata_plain(
    State(s): State<Arc<RuntimeState>>,
    Path(name): Path<String>,
) -> Response {
    match s.models.get(&name) {
        Some(m) => Json(m.metadata()).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown model {name:?}")),
    }
}

async fn encrypted(State(s): State<Arc<RuntimeState>>, body: Bytes) -> Response {
    let (inner, response_ctx) = match s.service_key.decapsulate_request(&body) {
        Ok(x) => x,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("encrypted request: {e}")),
    };
    let inner_response = match serde_json::from_slice::<InnerRequest>(&inner) {
        Ok(req) => route_inner(&s, req).await,
        Err(e) => InnerResponse {
            status: 400,
            body: json!({ "error": format!("inner request is not valid JSON for a Cordon request: {}", e.classify_name()) }),
        },
    };
    drop(inner);
    let plaintext =
        zeroize::Zeroizing::new(serde_json::to_vec(&inner_response).unwrap_or_default());
    match response_ctx.encrypt_response(&plaintext) {
        Ok(ct) => ([(header::CONTENT_TYPE, ENCRYPTED_RESPONSE_MEDIA_TYPE)], ct).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

trait ClassifyName {
    fn classify_name(&self) -> String;
}

impl ClassifyName for serde_json::Error {
    // Serde's messages can quote input; only the position and class leave the runtime.
    fn classify_name(&self) -> String {
        format!(
            "{:?} error at line {} column {}",
            self.classify(),
            self.line(),
            self.column()
        )
    }
}

fn inner_error(status: u16, msg: impl Into<String>) -> InnerResponse {
    InnerResponse {
        status,
        body: json!({ "error": msg.into() }),
    }
}

async fn route_inner(s: &Arc<RuntimeState>, req: InnerRequest) -> InnerResponse {
    let segments: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["v2", "health", "live"]) => InnerResponse {
            status: 200,
            body: json!({ "live": true }),
        },
        ("GET", ["v2", "health", "ready"]) => InnerResponse {
            status: 200,
            body: json!({ "ready": true }),
        },
        ("GET", ["v2"]) => InnerResponse {
            status: 200,
            body: server_metadata_body(s),
        },
        ("GET", ["v2", "models", name]) | ("GET", ["v2", "models", name, "versions", _]) => {
            match model_for(s, name, &segments) {
                Ok(m) => InnerResponse {
                    status: 200,
                    body: json!(m.metadata()),
                },
                Err(e) => e,
            }
        }
        ("GET", ["v2", "models", name, "ready"])
        | ("GET", ["v2", "models", name, "versions", _, "ready"]) => {
            match model_for(s, name, &segments) {
                Ok(_) => InnerResponse {
                    status: 200,
                    body: json!({ "name": name, "ready": true }),
                },
                Err(e) => e,
            }
        }
        ("POST", ["v2", "models", name, "infer"])
        | ("POST", ["v2", "models", name, "versions", _, "infer"]) => {
            let model = match model_for(s, name, &segments) {
                Ok(m) => m,
                Err(e) => return e,
            };
            let request: InferRequest = match req.body.map(serde_json::from_value) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    return inner_error(400, format!("infer request: {}", e.classify_name()))
                }
                None => return inner_error(400, "infer request needs a body"),
            };
            infer(s, model, request).await
        }
        (m, _) => inner_error(404, format!("no route for {m} {}", req.path)),
    }
}

/// The model a path names; a `versions/{v}` segment must name the version it serves.
fn model_for(
    s: &RuntimeState,
    name: &str,
    segments: &[&str],
) -> Result<Arc<OnnxModel>, InnerResponse> {
    let Some(model) = s.models.get(name) else {
        return Err(inner_error(404, format!("unknown model {name:?}")));
    };
    if let ["v2", "models", _, "versions", version, ..] = segments {
        if *version != model.version() {
            return Err(inner_error(
                404,
                format!(
                    "model {name:?} has no version {version:?} (serving {:?})",
                    model.version()
                ),
            ));
        }
    }
    Ok(model.clone())
}

async fn infer(
    s: &Arc<RuntimeState>,
    model: Arc<OnnxModel>,
    request: InferRequest,
) -> InnerResponse {
    let Ok(_permit) = s.pool.clone().acquire_owned().await else {
        return inner_error(503, "runtime is shutting down");
    };
    let result = tokio::task::spawn_blocking(move || model.infer(&request)).await;
    match result {
        Ok(Ok(resp)) => InnerResponse {
            status: 200,
            body: json!(resp),
        },
        Ok(Err(e)) => inner_error(400, e.to_string()),
        Err(_) => inner_error(500, "inference task failed"),
    }
}
