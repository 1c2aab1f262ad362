use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use cordon_proto::kbs::ErrorBody;
use thiserror::Error;

/// Errors the KBS returns to callers. Each has a stable code and an HTTP status.
#[derive(Debug, Error)]
pub enum KbsError {
    #[error("nonce is not one this KBS issued")]
    NonceUnknown,
    #[error("nonce was already used (replay)")]
    NonceReplayed,
    #[error("nonce expired at {expired_at} (now {now}); request a new challenge")]
    NonceExpired { expired_at: u64, now: u64 },
    /// Not expired by the clock, but refused all the same (below the spent-nonce floor, or an
    /// expiry further ahead than this KBS issues): same code as an expired nonce.
    #[error("{0}; request a new challenge")]
    NonceStale(String),
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("request body exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("evidence verification failed: {0}")]
    Evidence(String),
    #[error("evidence does not bind the nonce and runtime keys: report_data is {found}, expected {expected}")]
    Binding { found: String, expected: String },
    #[error("admin request refused: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Replayed(String),
    #[error("sealed DEK refused: {0}")]
    SealedDek(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("quota exceeded: {0}")]
    Quota(String),
    #[error("party authentication failed: {0}")]
    PartyUnauthorized(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("release policy is invalid: {0}")]
    Policy(String),
    #[error("storage error: {0}")]
    Storage(crate::store::StoreError),
    #[error("the key broker's storage is full; nothing was stored; retry when space is freed")]
    StorageFull,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for KbsError {
    fn from(e: crate::store::StoreError) -> KbsError {
        match e {
            // Not a storage failure: the caller chose a key id that is not theirs.
            crate::store::StoreError::KeyOwned { .. } => KbsError::Conflict(e.to_string()),
            crate::store::StoreError::Full => KbsError::StorageFull,
            crate::store::StoreError::Quota(m) => KbsError::Quota(m),
            crate::store::StoreError::Busy(m) => KbsError::Busy(m),
            crate::store::StoreError::OutputRegistered { .. } => KbsError::Conflict(e.to_string()),
            crate::store::StoreError::KeyRevoked { .. } => KbsError::Conflict(e.to_string()),
            crate::store::StoreError::UnknownKey { .. } => KbsError::NotFound(e.to_string()),
            other => KbsError::Storage(other),
        }
    }
}

impl KbsError {
    pub fn code(&self) -> &'static str {
        match self {
            KbsError::NonceUnknown => "nonce_unknown",
            KbsError::NonceReplayed => "nonce_replayed",
            KbsError::NonceExpired { .. } | KbsError::NonceStale(_) => "nonce_expired",
            KbsError::BadRequest(_) => "bad_request",
            KbsError::TooLarge { .. } => "too_large",
            KbsError::Evidence(_) => "evidence_invalid",
            KbsError::Binding { .. } => "report_data_mismatch",
            KbsError::Unauthorized(_) => "unauthorized",
            KbsError::Replayed(_) => "request_replayed",
            KbsError::SealedDek(_) => "sealed_dek_invalid",
            KbsError::Busy(_) => "busy",
            KbsError::Quota(_) => "quota_exceeded",
            KbsError::PartyUnauthorized(_) => "party_unauthorized",
            KbsError::Conflict(_) => "conflict",
            KbsError::NotFound(_) => "not_found",
            KbsError::Policy(_) => "policy_invalid",
            KbsError::Storage(_) => "storage",
            KbsError::StorageFull => "storage_full",
            KbsError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            KbsError::NonceUnknown
            | KbsError::NonceReplayed
            | KbsError::NonceExpired { .. }
            | KbsError::NonceStale(_)
            | KbsError::Evidence(_)
            | KbsError::Binding { .. } => StatusCode::FORBIDDEN,
            KbsError::BadRequest(_) | KbsError::Policy(_) | KbsError::SealedDek(_) => {
                StatusCode::BAD_REQUEST
            }
            KbsError::Replayed(_) => StatusCode::CONFLICT,
            KbsError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            KbsError::Quota(_) => StatusCode::FORBIDDEN,
            KbsError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            KbsError::Unauthorized(_) | KbsError::PartyUnauthorized(_) => StatusCode::UNAUTHORIZED,
            KbsError::Conflict(_) => StatusCode::CONFLICT,
            KbsError::NotFound(_) => StatusCode::NOT_FOUND,
            KbsError::Storage(_) | KbsError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            KbsError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

impl IntoResponse for KbsError {
    fn into_response(self) -> Response {
        // Storage and internal details go to the KBS log, not to callers.
        let error = match &self {
            KbsError::Storage(_) | KbsError::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "the key broker could not complete the request; see its log".to_string()
            }
            KbsError::StorageFull => {
                tracing::error!(error = %self, "request failed");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            code: self.code().into(),
            error,
        };
        (self.status(), Json(body)).into_response()
    }
}
