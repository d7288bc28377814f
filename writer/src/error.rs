//! The API's one error type and its one JSON shape:
//! `{"error": {"code": "...", "message": "..."}}`.
//!
//! Codes are stable identifiers clients can match on; messages are for people. A 5xx never
//! carries internal details (those go to the log).

use axum::extract::rejection::JsonRejection;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engine::EngineError;
use crate::store::StoreError;

/// Everything a request can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 401: no `Authorization: Bearer` header, or the wrong token.
    Unauthorized,
    /// 429: this client address failed authentication too often; it may try again in this
    /// many seconds (`Retry-After`). The token was not looked at.
    TooManyRequests(u64),
    /// 400: the host is not a valid host name.
    InvalidHost(String),
    /// 400: the backend is not `host:port`, `a.b.c.d:port` or `[v6]:port`.
    InvalidBackend(String),
    /// 400: the same host twice in one batch or replace-all.
    DuplicateHost(String),
    /// 400: the body is not valid JSON.
    MalformedJson(String),
    /// 400: valid JSON of the wrong shape (unknown or missing fields, wrong types).
    InvalidBody(String),
    /// 413: the body is larger than the route allows.
    PayloadTooLarge,
    /// 415: a body without `Content-Type: application/json`.
    UnsupportedMediaType,
    /// 404: no such entry.
    NotFound(String),
    /// 404: no such route.
    NoRoute,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 503: the daemon is shutting down.
    Unavailable,
    /// 503: the store cannot be written (full disk, read-only file system, I/O error);
    /// nothing of the request was stored. Holds the reason, in words safe to show.
    StoreUnavailable(&'static str),
    /// 503: the change was committed to the store, but the table file could not be updated
    /// (full disk); the engine retries every second. Holds the reason, in words safe to show.
    TableUnavailable(&'static str),
    /// 413: a batch over etcd's limits in fleet mode (128 changes per transaction); why.
    BatchTooLarge(String),
    /// 409: the write collides with another one in progress (fleet mode: a replace-all).
    Conflict(String),
    /// 504: committed (at this etcd revision) but not applied by these nodes in time.
    WaitTimeout { revision: u64, pending: Vec<String> },
    /// 400: a `wait` option that is not understood.
    InvalidWait(String),
    /// 500: the store or the table failed; details are logged, not returned.
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::InvalidHost(_)
            | ApiError::InvalidBackend(_)
            | ApiError::DuplicateHost(_)
            | ApiError::MalformedJson(_)
            | ApiError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge | ApiError::BatchTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::WaitTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::InvalidWait(_) => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable
            | ApiError::StoreUnavailable(_)
            | ApiError::TableUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::InvalidHost(_) => "invalid_host",
            ApiError::InvalidBackend(_) => "invalid_backend",
            ApiError::DuplicateHost(_) => "duplicate_host",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::NoRoute => "no_route",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::TableUnavailable(_) => "table_unavailable",
            ApiError::BatchTooLarge(_) => "batch_too_large",
            ApiError::Conflict(_) => "conflict",
            ApiError::WaitTimeout { .. } => "wait_timeout",
            ApiError::InvalidWait(_) => "invalid_wait",
            ApiError::Internal => "internal",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => {
                "missing or invalid token; send Authorization: Bearer <token>".into()
            }
            ApiError::TooManyRequests(secs) => {
                format!("too many failed authentications from this address; try again in {secs} s")
            }
            ApiError::InvalidHost(m)
            | ApiError::InvalidBackend(m)
            | ApiError::MalformedJson(m)
            | ApiError::InvalidBody(m)
            | ApiError::BatchTooLarge(m)
            | ApiError::Conflict(m)
            | ApiError::InvalidWait(m) => m.clone(),
            ApiError::WaitTimeout { revision, pending } => format!(
                "the change is committed at etcd revision {revision}, but not yet applied by: \
                 {}",
                pending.join(", ")
            ),
            ApiError::DuplicateHost(h) => format!("host {h:?} appears more than once"),
            ApiError::PayloadTooLarge => "request body is too large".into(),
            ApiError::UnsupportedMediaType => {
                "request body must be JSON with Content-Type: application/json".into()
            }
            ApiError::NotFound(h) => format!("no entry for host {h:?}"),
            ApiError::NoRoute => "no such route; see GET / for the API".into(),
            ApiError::MethodNotAllowed => {
                "method not allowed on this route; see GET / for the API".into()
            }
            ApiError::Unavailable => "the writer is shutting down; retry shortly".into(),
            ApiError::StoreUnavailable(why) => {
                format!("the store is unavailable ({why}); nothing was changed, retry later")
            }
            ApiError::TableUnavailable(why) => format!(
                "the change was stored, but the table file could not be updated ({why}); \
                 the writer retries every second and GET /healthz fails until it succeeds"
            ),
            ApiError::Internal => "internal error; the change was not acknowledged".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code(), "message": self.message()}});
        if let ApiError::WaitTimeout { revision, pending } = &self {
            body["revision"] = json!(revision);
            body["pending"] = json!(pending);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            ApiError::TooManyRequests(secs) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            }
            _ => {}
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::JsonSyntaxError(e) => ApiError::MalformedJson(e.body_text()),
            JsonRejection::JsonDataError(e) => ApiError::InvalidBody(e.body_text()),
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            r => ApiError::MalformedJson(r.body_text()),
        }
    }
}

impl From<StoreError> for ApiError {
    /// A failed read: nothing was changed.
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store read failed");
        ApiError::StoreUnavailable(e.kind.describe())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Stopped => ApiError::Unavailable,
            EngineError::Store(e) => {
                tracing::error!(error = %e, "write refused: the store failed");
                ApiError::StoreUnavailable(e.kind.describe())
            }
            EngineError::Publish(e) => {
                tracing::error!(error = %e, "write committed but not published");
                ApiError::TableUnavailable(e.kind.describe())
            }
        }
    }
}
