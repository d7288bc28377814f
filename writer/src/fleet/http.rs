//! The fleet mode's part of the HTTP API: the `wait` option of writes, the revision in their
//! answers, and readiness.
//!
//! - `?wait=all` (or the header `Set-Backend-Wait: all`) makes a write wait, after this
//!   node applied it, until every registered node has; `wait_timeout=5s` (or
//!   `Set-Backend-Wait-Timeout`) bounds it (default 5 s, at most 60 s): past it the answer
//!   is 504 `wait_timeout`, naming the nodes still behind (the write is committed).
//! - Every write's answer carries `Set-Backend-Revision: N` and, when it is a JSON object,
//!   `"revision": N`.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::config::parse_duration;
use crate::error::ApiError;

/// The answer header naming a write's etcd revision.
pub const REVISION_HEADER: &str = "set-backend-revision";
/// The default and the longest `wait_timeout`.
const WAIT_DEFAULT: Duration = Duration::from_secs(5);
const WAIT_MAX: Duration = Duration::from_secs(60);

/// What a write waits for beyond this node's table.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait {
    /// Wait for every registered node, up to this long.
    pub all: Option<Duration>,
}

impl<S: Send + Sync> FromRequestParts<S> for Wait {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Wait, ApiError> {
        let mut mode = None;
        let mut timeout = None;
        for pair in parts.uri.query().unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("wait", v)) => mode = Some(v.to_string()),
                Some(("wait_timeout", v)) => timeout = Some(v.to_string()),
                _ => {}
            }
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mode = mode.or_else(|| header("set-backend-wait"));
        let timeout = timeout.or_else(|| header("set-backend-wait-timeout"));
        match mode.as_deref() {
            None | Some("local") => Ok(Wait { all: None }),
            Some("all") => {
                let t = match timeout {
                    Some(t) => parse_duration(&t).map_err(ApiError::InvalidWait)?,
                    None => WAIT_DEFAULT,
                };
                Ok(Wait {
                    all: Some(t.min(WAIT_MAX)),
                })
            }
            Some(other) => Err(ApiError::InvalidWait(format!(
                "wait={other:?}: expected \"all\" (every node) or \"local\" (this node, the default)"
            ))),
        }
    }
}

/// A write's answer: `body` with `"revision"` added when it is an object and there is a
/// revision, and the revision header.
pub fn answer(status: StatusCode, body: Option<impl Serialize>, revision: Option<u64>) -> Response {
    let mut resp = match body.map(serde_json::to_value) {
        Some(Ok(mut v)) => {
            if let (Some(r), Some(o)) = (revision, v.as_object_mut()) {
                o.insert("revision".into(), r.into());
            }
            (status, Json(v)).into_response()
        }
        Some(Err(_)) => return ApiError::Internal.into_response(),
        None => status.into_response(),
    };
    if let Some(r) = revision {
        resp.headers_mut()
            .insert(REVISION_HEADER, HeaderValue::from(r));
    }
    resp
}
