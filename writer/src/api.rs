//! The REST API: routes, handlers and the layers around them.
//!
//! | route                             | what                                          |
//! |-----------------------------------|-----------------------------------------------|
//! | `GET /`                           | HTML documentation with curl examples         |
//! | `GET /openapi.json`               | OpenAPI 3.1 description of this table         |
//! | `GET /healthz`, `GET /metrics`    | health (200/503) and Prometheus metrics       |
//! | `GET /entries.json`               | every entry, streamed as one JSON array       |
//! | `POST /entries.json`              | create (201) or update (200) one entry        |
//! | `PATCH /entries.json`             | atomic batch of upserts and deletes           |
//! | `PUT /entries.json`               | atomic replace-all                            |
//! | `GET /entries/<host>.json`        | one entry, 404 if absent                      |
//! | `DELETE /entries/<host>.json`     | 204, 404 if absent                            |
//!
//! Layers, outside in: request tracing; a global in-flight limit; on `/entries`, the token
//! check, then a body limit per route (small for one entry, large for batches).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shm_layout::{Backend, Host};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::engine::{EngineHandle, Op, Outcome};
use crate::error::ApiError;
use crate::metrics::{Metrics, WriteOp, WriteOutcome};
use crate::store::Store;
use crate::{auth, docs};

/// Requests handled at once; more wait in line (bounds memory under a flood).
const MAX_IN_FLIGHT: usize = 1024;

/// Body limit of a single-entry write: a maximal host and backend fit with room to spare.
pub const MAX_ENTRY_BODY: usize = 16 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Reads (one entry, the list) go straight to the store.
    pub store: Store,
    /// Writes go through the engine, which commits and publishes them.
    pub engine: EngineHandle,
    /// The API token every `/entries` request must present.
    pub token: Arc<str>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The `GET /` page, rendered once at start.
    pub docs_html: Arc<str>,
    /// Body limit of batch and replace-all requests.
    pub max_batch_bytes: usize,
    /// Refuse backends that are host names (`--backends ip`, for upstream mode).
    pub ip_backends_only: bool,
}

/// One entry, as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The host name (stored lowercase, without port or trailing dot, as A-labels).
    pub host: String,
    /// Where to send its requests: `host:port`, `a.b.c.d:port` or `[v6]:port`.
    pub backend: String,
}

/// The body of `PATCH /entries.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Entries to create or update.
    #[serde(default)]
    pub upsert: Vec<Entry>,
    /// Hosts to delete; absent hosts are counted, not refused.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// `Json<T>` whose rejections use the API's error shape.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    Json<T>: FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(req, state)
            .await
            .map(|Json(v)| JsonBody(v))
            .map_err(Into::into)
    }
}

/// The whole API, ready to serve.
pub fn router(state: AppState) -> Router {
    let batch_limit = DefaultBodyLimit::max(state.max_batch_bytes);
    let entries = Router::new()
        .route(
            "/entries.json",
            get(list)
                .post(upsert)
                .layer(DefaultBodyLimit::max(MAX_ENTRY_BODY))
                .patch(batch)
                .put(replace_all)
                .layer(batch_limit),
        )
        .route("/entries/{file}", get(get_one).delete(delete_one))
        // The counters tell how many sites there are and how they change: the token guards
        // them too (Prometheus sends it with `authorization: credentials_file`).
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            state.max_batch_bytes,
            declared_length_limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/", get(index))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .merge(entries)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Refuses a body whose declared `Content-Length` is over the route's limit at once, with 413,
/// instead of reading up to the limit first (a client that announces a gigabyte and then
/// stalls would otherwise hold the request open).
async fn declared_length_limit(
    State(max_batch_bytes): State<usize>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let limit = match *req.method() {
        axum::http::Method::PATCH | axum::http::Method::PUT => max_batch_bytes,
        _ => MAX_ENTRY_BODY,
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

async fn index(State(s): State<AppState>) -> Html<String> {
    Html(s.docs_html.to_string())
}

async fn openapi() -> Json<serde_json::Value> {
    Json(docs::openapi())
}

async fn healthz(State(s): State<AppState>) -> Response {
    if s.metrics.table_in_sync.load(Ordering::Relaxed) {
        Json(json!({"status": "ok"})).into_response()
    } else {
        let body = json!({"error": {"code": "table_out_of_sync",
            "message": "the table could not be updated from the store; see the log"}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, ct)], s.metrics.render()).into_response()
}

fn parse_host(input: &str) -> Result<Host, ApiError> {
    Host::parse(input).map_err(|e| ApiError::InvalidHost(format!("{e}: {input:?}")))
}

fn parse_entry(e: &Entry, ip_only: bool) -> Result<(Host, Backend), ApiError> {
    let host = parse_host(&e.host)?;
    let backend = Backend::parse(&e.backend)
        .map_err(|err| ApiError::InvalidBackend(format!("{err}: {:?}", e.backend)))?;
    if ip_only && backend.addr().is_none() {
        return Err(ApiError::InvalidBackend(format!(
            "backend must be an IP address and port (a.b.c.d:port or [v6]:port): this writer \
             serves nginx's upstream mode, which does not resolve names: {:?}",
            e.backend
        )));
    }
    Ok((host, backend))
}

/// The host named by `/entries/<file>`: `<url_encoded_host>.json`, already percent-decoded.
fn host_from_file(file: &str) -> Result<Host, ApiError> {
    let name = file.strip_suffix(".json").ok_or(ApiError::NoRoute)?;
    parse_host(name)
}

/// [`host_from_file`] for the extracted path; a path that does not decode (`%ff`) is an
/// invalid host, in the API's error shape.
fn host_from_path(file: Result<Path<String>, PathRejection>) -> Result<Host, ApiError> {
    match file {
        Ok(Path(file)) => host_from_file(&file),
        Err(e) => Err(ApiError::InvalidHost(format!(
            "the host in the path does not decode: {}",
            e.body_text()
        ))),
    }
}

fn entry_json(host: &Host, backend: &str) -> Json<Entry> {
    Json(Entry {
        host: host.to_string(),
        backend: backend.to_string(),
    })
}

async fn upsert(State(s): State<AppState>, body: Result<JsonBody<Entry>, ApiError>) -> Response {
    let (host, backend) = match body.and_then(|JsonBody(e)| parse_entry(&e, s.ip_backends_only)) {
        Ok(entry) => entry,
        Err(e) => {
            s.metrics.write(WriteOp::Upsert, WriteOutcome::Invalid);
            return e.into_response();
        }
    };
    match s
        .engine
        .submit(Op::Upsert(host.clone(), backend.clone()))
        .await
    {
        Ok(Outcome::Created) => {
            s.metrics.write(WriteOp::Upsert, WriteOutcome::Created);
            let mut r = (StatusCode::CREATED, entry_json(&host, backend.as_str())).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("/entries/{host}.json")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Ok(Outcome::Updated) => {
            s.metrics.write(WriteOp::Upsert, WriteOutcome::Updated);
            entry_json(&host, backend.as_str()).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => {
            s.metrics.write(WriteOp::Upsert, WriteOutcome::Error);
            ApiError::from(e).into_response()
        }
    }
}

async fn get_one(
    State(s): State<AppState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let host = host_from_path(file)?;
    let store = s.store.clone();
    let h = host.clone();
    let found = tokio::task::spawn_blocking(move || store.get(&h))
        .await
        .map_err(|_| ApiError::Internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "store read failed");
            ApiError::StoreUnavailable(crate::error::store_fault(&e.to_string()))
        })?;
    match found {
        Some(b) => Ok(entry_json(&host, &b).into_response()),
        None => Err(ApiError::NotFound(host.into_string())),
    }
}

async fn delete_one(
    State(s): State<AppState>,
    file: Result<Path<String>, PathRejection>,
) -> Response {
    let host = match host_from_path(file) {
        Ok(h) => h,
        Err(e) => {
            s.metrics.write(WriteOp::Delete, WriteOutcome::Invalid);
            return e.into_response();
        }
    };
    match s.engine.submit(Op::Delete(host.clone())).await {
        Ok(Outcome::Deleted) => {
            s.metrics.write(WriteOp::Delete, WriteOutcome::Deleted);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Outcome::Absent) => {
            s.metrics.write(WriteOp::Delete, WriteOutcome::Absent);
            ApiError::NotFound(host.into_string()).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => {
            s.metrics.write(WriteOp::Delete, WriteOutcome::Error);
            ApiError::from(e).into_response()
        }
    }
}

/// Validates entries and refuses a host that appears twice (after normalization).
fn parse_entries(
    entries: &[Entry],
    seen: &mut HashSet<String>,
    ip_only: bool,
) -> Result<Vec<(Host, Backend)>, ApiError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let (h, b) = parse_entry(e, ip_only).map_err(|err| match err {
            ApiError::InvalidHost(m) => ApiError::InvalidHost(format!("entry {i}: {m}")),
            ApiError::InvalidBackend(m) => ApiError::InvalidBackend(format!("entry {i}: {m}")),
            other => other,
        })?;
        if !seen.insert(h.as_str().to_string()) {
            return Err(ApiError::DuplicateHost(h.into_string()));
        }
        out.push((h, b));
    }
    Ok(out)
}

/// Validates a batch: every entry and host valid, no host twice.
fn parse_batch(req: &BatchRequest, ip_only: bool) -> Result<Op, ApiError> {
    let mut seen = HashSet::with_capacity(req.upsert.len() + req.delete.len());
    let upserts = parse_entries(&req.upsert, &mut seen, ip_only)?;
    let mut deletes = Vec::with_capacity(req.delete.len());
    for (i, d) in req.delete.iter().enumerate() {
        let h = parse_host(d).map_err(|e| match e {
            ApiError::InvalidHost(m) => ApiError::InvalidHost(format!("delete {i}: {m}")),
            other => other,
        })?;
        if !seen.insert(h.as_str().to_string()) {
            return Err(ApiError::DuplicateHost(h.into_string()));
        }
        deletes.push(h);
    }
    Ok(Op::Batch { upserts, deletes })
}

/// The engine answers each op with the outcome of its own kind; anything else is a bug.
fn unexpected(outcome: Outcome) -> Response {
    tracing::error!(
        ?outcome,
        "the engine answered with an outcome of another kind"
    );
    ApiError::Internal.into_response()
}

async fn batch(
    State(s): State<AppState>,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> Response {
    let op = body.and_then(|JsonBody(req)| parse_batch(&req, s.ip_backends_only));
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            s.metrics.write(WriteOp::Batch, WriteOutcome::Invalid);
            return e.into_response();
        }
    };
    match s.engine.submit(op).await {
        Ok(Outcome::Batch(c)) => {
            s.metrics.write(WriteOp::Batch, WriteOutcome::Applied);
            Json(c).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => {
            s.metrics.write(WriteOp::Batch, WriteOutcome::Error);
            ApiError::from(e).into_response()
        }
    }
}

async fn replace_all(
    State(s): State<AppState>,
    body: Result<JsonBody<Vec<Entry>>, ApiError>,
) -> Response {
    let op = body.and_then(|JsonBody(entries)| {
        parse_entries(
            &entries,
            &mut HashSet::with_capacity(entries.len()),
            s.ip_backends_only,
        )
        .map(Op::ReplaceAll)
    });
    let op = match op {
        Ok(op) => op,
        Err(e) => {
            s.metrics.write(WriteOp::Replace, WriteOutcome::Invalid);
            return e.into_response();
        }
    };
    match s.engine.submit(op).await {
        Ok(Outcome::Replaced { entries }) => {
            s.metrics.write(WriteOp::Replace, WriteOutcome::Applied);
            Json(json!({"entries": entries})).into_response()
        }
        Ok(other) => unexpected(other),
        Err(e) => {
            s.metrics.write(WriteOp::Replace, WriteOutcome::Error);
            ApiError::from(e).into_response()
        }
    }
}

/// Bytes of JSON sent per chunk of the streamed list.
const LIST_CHUNK: usize = 64 * 1024;

/// `GET /entries.json`: one JSON array, streamed from one store snapshot in chunks of about
/// [`LIST_CHUNK`] bytes, so listing a million entries never holds them all in memory.
async fn list(State(s): State<AppState>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(4);
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(LIST_CHUNK + 1024);
        buf.push(b'[');
        let mut first = true;
        let mut open = true;
        let r = store.for_each(|host, backend| {
            if !first {
                buf.push(b',');
            }
            first = false;
            let e = Entry {
                host: host.to_string(),
                backend: backend.to_string(),
            };
            if serde_json::to_writer(&mut buf, &e).is_err() {
                return false;
            }
            if buf.len() >= LIST_CHUNK {
                let chunk = Bytes::from(std::mem::take(&mut buf));
                open = tx.blocking_send(Ok(chunk)).is_ok();
            }
            open
        });
        if let Err(e) = r {
            // The status line is gone already; ending the body early makes the array
            // invalid JSON, which a client notices.
            tracing::error!(error = %e, "listing the store failed");
            return;
        }
        if open {
            buf.push(b']');
            let _ = tx.blocking_send(Ok(Bytes::from(buf)));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
