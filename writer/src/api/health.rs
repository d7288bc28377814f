//! The operations routes: health (`/healthz`), readiness (`/readyz`) and `/metrics`.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

/// Whether routing is sound (the table matches the store): what a load balancer checks. In
/// fleet mode it also says whether writes are accepted, without failing when they are not.
pub(super) async fn healthz(State(s): State<AppState>) -> Response {
    if s.metrics.table_in_sync.load(Ordering::Relaxed) {
        match &s.fleet {
            Some(f) => Json(json!({
                "status": "ok",
                "writes": if f.writable() { "available" } else { "unavailable" },
                "applied_revision": f.applied(),
            }))
            .into_response(),
            None => Json(json!({"status": "ok"})).into_response(),
        }
    } else {
        let body = json!({"error": {"code": "table_out_of_sync",
            "message": "the table could not be updated from the store; see the log"}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Whether writes are accepted: the store (in fleet mode, etcd) answers and the table is in
/// sync. 503 `store_unavailable` otherwise; routing goes on meanwhile.
pub(super) async fn readyz(State(s): State<AppState>) -> Response {
    let store_ok = match &s.fleet {
        Some(f) => f.writable(),
        None => s.metrics.store_ok.load(Ordering::Relaxed),
    };
    if !s.metrics.table_in_sync.load(Ordering::Relaxed) {
        return healthz(State(s)).await;
    }
    if store_ok {
        Json(json!({"status": "ready"})).into_response()
    } else {
        let why = match s.fleet {
            Some(_) => "etcd cannot be reached, or this node has not caught up with it yet",
            None => "the store failed; see the log",
        };
        ApiError::StoreUnavailable(why).into_response()
    }
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    let mut text = s.metrics.render();
    if let Some(f) = &s.fleet {
        f.metrics.render(&mut text);
    }
    ([(header::CONTENT_TYPE, ct)], text).into_response()
}
