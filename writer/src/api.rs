//! The REST API: routes, handlers and the layers around them.
//!
//! | route                             | what                                          |
//! |-----------------------------------|-----------------------------------------------|
//! | `GET /`                           | HTML documentation with curl examples         |
//! | `GET /openapi.json`               | OpenAPI 3.1 description of this table         |
//! | `GET /healthz`, `GET /metrics`    | health (200/503) and Prometheus metrics       |
//! | `GET /readyz`                     | whether writes are accepted (200/503)         |
//! | `GET /entries.json`               | every entry, streamed as one JSON array       |
//! | `POST /entries.json`              | create (201) or update (200) one entry        |
//! | `PATCH /entries.json`             | atomic batch of upserts and deletes           |
//! | `PUT /entries.json`               | atomic replace-all                            |
//! | `GET /entries/<host>.json`        | one entry, 404 if absent                      |
//! | `DELETE /entries/<host>.json`     | 204, 404 if absent                            |
//!
//! Layers, outside in: request tracing; a global in-flight limit; on `/entries`, the token
//! check ([`require_token`], throttled per client address: [`Throttle`]), then a body limit per
//! route (small for one entry, large for batches).
//!
//! Every write takes one path: the handler parses its body into an [`Op`] ([`valid`] counts a
//! refusal), [`submit`] hands it to the engine and counts the outcome, and the handler turns
//! the [`Outcome`] into its answer; every failure is an [`ApiError`] returned with `?`. In
//! fleet mode [`submit`] writes into etcd instead (`fleet`), and the answers carry the etcd
//! revision ([`answer`]).

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use shm_layout::{Backend, BackendSet, Host, SetError, SetMember, MAX_MEMBERS, MAX_WEIGHT};

use crate::route::{self, Route};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::engine::{EngineHandle, Op, Outcome};
use crate::error::ApiError;
use crate::fleet::http::{answer, Wait};
use crate::fleet::Fleet;
use crate::metrics::{Metrics, WriteOp, WriteOutcome};
use crate::model::{BatchRequest, Entry, Member, ReplaceResult};
use crate::store::SharedStore;
use crate::throttle::Throttle;
use crate::{auth, docs};

mod health;

/// Requests handled at once; more wait in line (bounds memory under a flood).
const MAX_IN_FLIGHT: usize = 1024;

/// Body limit of a single-entry write: a maximal host and backend fit with room to spare.
pub const MAX_ENTRY_BODY: usize = 16 * 1024;

/// The largest over-limit body read (and dropped) before answering 413, so that a proxy
/// writing it in full sees the answer rather than a closed connection.
const DRAIN_MAX_BYTES: usize = 1024 * 1024;

/// How long reading such a body may take before the 413 is sent anyway.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Reads (one entry, the list) go straight to the store.
    pub store: SharedStore,
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
    /// Failed authentications per client address: a spent budget gets 429.
    pub throttle: Arc<Throttle>,
    /// Fleet mode: writes go into etcd, which this writer follows.
    pub fleet: Option<Arc<Fleet>>,
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
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.max_batch_bytes,
            declared_length_limit,
        ))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/", get(index))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .merge(entries)
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(GlobalConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Middleware on every `/entries` route: 401 in the JSON shape unless the token matches; 429,
/// without looking at the token, from a client address whose failures spent its budget.
async fn require_token(
    State(s): State<AppState>,
    req: Request,
    next: middleware::Next,
) -> Response {
    let client = client_addr(&req);
    let now = Instant::now();
    if let Some(Err(wait)) = client.map(|c| s.throttle.check(c, now)) {
        s.metrics.throttled.fetch_add(1, Ordering::Relaxed);
        return ApiError::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64)
            .into_response();
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if auth::bearer_matches(presented, s.token.as_bytes()) {
        next.run(req).await
    } else {
        if let Some(c) = client {
            s.throttle.failed(c, now);
        }
        s.metrics.unauthorized.fetch_add(1, Ordering::Relaxed);
        ApiError::Unauthorized.into_response()
    }
}

/// The client's address, when known: the TCP peer, else (the unix socket, reached by the
/// local proxy) the last address of `X-Forwarded-For`, which nginx sets to `$remote_addr`.
/// `None` for a local process on the socket (the operator's commands): not throttled.
fn client_addr(req: &Request) -> Option<IpAddr> {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        return Some(peer.ip());
    }
    let forwarded = req.headers().get("x-forwarded-for")?.to_str().ok()?;
    forwarded.rsplit(',').next()?.trim().parse().ok()
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
    match declared {
        Some(n) if n > limit as u64 => {
            // A proxy (nginx) writes the whole body before it reads the answer: closing the
            // connection with a body of modest size unread makes its write fail, and it
            // answers 502 instead of passing the 413 on. So such a body is read and dropped,
            // within a bounded time; a larger one is refused without reading.
            if n <= DRAIN_MAX_BYTES as u64 {
                let body = req.into_body();
                let _ = tokio::time::timeout(
                    DRAIN_TIMEOUT,
                    axum::body::to_bytes(body, DRAIN_MAX_BYTES),
                )
                .await;
            }
            ApiError::PayloadTooLarge.into_response()
        }
        _ => next.run(req).await,
    }
}

async fn index(State(s): State<AppState>) -> Html<String> {
    Html(s.docs_html.to_string())
}

async fn openapi(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(docs::openapi(docs::Contract {
        max_batch_bytes: s.max_batch_bytes,
        ip_backends_only: s.ip_backends_only,
    }))
}

fn parse_host(input: &str) -> Result<Host, ApiError> {
    Host::parse(input).map_err(|e| ApiError::InvalidHost(format!("{e}: {input:?}")))
}

/// The keys a written host names: one, or two for nginx's `.example.com` (`example.com` and
/// `*.example.com`).
fn parse_keys(input: &str) -> Result<Vec<Host>, ApiError> {
    Host::parse_keys(input).map_err(|e| ApiError::InvalidHost(format!("{e}: {input:?}")))
}

/// An entry with each key its host names ([`parse_keys`]), all with its route.
fn parse_entry(e: &Entry, ip_only: bool) -> Result<Vec<(Host, Route)>, ApiError> {
    let keys = parse_keys(&e.host)?;
    let route = parse_route(e)?;
    let named = route
        .set()
        .members()
        .iter()
        .find(|m| m.backend.addr().is_none());
    if let (true, Some(m)) = (ip_only, named) {
        return Err(ApiError::InvalidBackend(format!(
            "backend must be an IP address and port (a.b.c.d:port or [v6]:port): this writer \
             serves nginx's upstream mode, which does not resolve names: {:?}",
            m.backend.as_str()
        )));
    }
    Ok(keys.into_iter().map(|h| (h, route.clone())).collect())
}

/// The route an entry gives: `backend` or `backends`, exactly one of them.
fn parse_route(e: &Entry) -> Result<Route, ApiError> {
    let backend = |b: &str| {
        Backend::parse(b).map_err(|err| ApiError::InvalidBackend(format!("{err}: {b:?}")))
    };
    match (&e.backend, &e.backends) {
        (Some(b), None) => backend(b).map(Route::one),
        (None, Some(list)) => {
            let mut members = Vec::with_capacity(list.len().min(MAX_MEMBERS + 1));
            for (index, m) in list.iter().enumerate() {
                let weight = u8::try_from(m.weight)
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| {
                        let err = SetError::BadWeight {
                            index,
                            weight: m.weight,
                        };
                        ApiError::InvalidBackend(err.to_string())
                    })?;
                let backend = backend(&m.backend).map_err(|err| match err {
                    ApiError::InvalidBackend(msg) => {
                        ApiError::InvalidBackend(format!("backends[{index}]: {msg}"))
                    }
                    other => other,
                })?;
                members.push(SetMember {
                    backend,
                    weight,
                    backup: m.backup,
                });
            }
            BackendSet::new(members)
                .map(Route::listed)
                .map_err(|err| ApiError::InvalidBackend(err.to_string()))
        }
        (Some(_), Some(_)) => Err(ApiError::InvalidBody(
            "give either backend or backends, not both".to_owned(),
        )),
        (None, None) => Err(ApiError::InvalidBody(
            "missing field `backend` (one backend) or `backends` (a set)".to_owned(),
        )),
    }
}

/// The entry of `host` as it was written, from its stored (canonical) string.
fn entry_of(host: String, stored: &str) -> Entry {
    match route::decode(stored) {
        Ok(r) if r.is_listed() => Entry {
            host,
            backend: None,
            backends: Some(
                r.set()
                    .members()
                    .iter()
                    .map(|m| Member {
                        backend: m.backend.to_string(),
                        weight: m.weight.into(),
                        backup: m.backup,
                    })
                    .collect(),
            ),
        },
        _ => Entry::one(host, stored),
    }
}

/// The name in `/entries/<file>`: `<url_encoded_host>.json`, percent-decoded, without `.json`.
/// A path that does not decode (`%ff`) is an invalid host, in the API's error shape.
fn name_from_path(file: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match file {
        Ok(Path(file)) => match file.strip_suffix(".json") {
            Some(name) => Ok(name.to_owned()),
            None => Err(ApiError::NoRoute),
        },
        Err(e) => Err(ApiError::InvalidHost(format!(
            "the host in the path does not decode: {}",
            e.body_text()
        ))),
    }
}

fn entry_json(host: &Host, stored: &str) -> Json<Entry> {
    Json(entry_of(host.to_string(), stored))
}

/// A parsed request, or its refusal counted as an invalid `kind` write.
fn valid<T>(s: &AppState, kind: WriteOp, parsed: Result<T, ApiError>) -> Result<T, ApiError> {
    parsed.inspect_err(|_| s.metrics.write(kind, WriteOutcome::Invalid))
}

/// The one way a write reaches the store: queued to the engine, answered once it is committed
/// and published, its outcome (or its failure) counted. In fleet mode: one etcd transaction
/// (or a staged replace-all), answered once this node applied it (and, with `wait=all`, every
/// node), with its revision.
async fn submit(
    s: &AppState,
    kind: WriteOp,
    op: Op,
    wait: Wait,
) -> Result<(Outcome, Option<u64>), ApiError> {
    let result = match &s.fleet {
        None => s
            .engine
            .submit(op)
            .await
            .map(|o| (o, None))
            .map_err(ApiError::from),
        Some(f) => async {
            let w = f.write(op).await?;
            if let Some(t) = wait.all {
                f.wait_all(w.revision, t).await?;
            }
            Ok((w.outcome, Some(w.revision)))
        }
        .await
        .map_err(|e: crate::fleet::FleetError| ApiError::from(e)),
    };
    match result {
        Ok((outcome, revision)) => {
            let counted = match outcome {
                Outcome::Created => WriteOutcome::Created,
                Outcome::Updated => WriteOutcome::Updated,
                Outcome::Deleted => WriteOutcome::Deleted,
                Outcome::Absent => WriteOutcome::Absent,
                Outcome::Batch(_) | Outcome::Replaced { .. } => WriteOutcome::Applied,
            };
            s.metrics.write(kind, counted);
            Ok((outcome, revision))
        }
        Err(e) => {
            s.metrics.write(kind, WriteOutcome::Error);
            Err(e)
        }
    }
}

/// The engine answers each op with the outcome of its own kind; anything else is a bug.
fn unexpected(outcome: Outcome) -> ApiError {
    tracing::error!(
        ?outcome,
        "the engine answered with an outcome of another kind"
    );
    ApiError::Internal
}

async fn upsert(
    State(s): State<AppState>,
    wait: Wait,
    body: Result<JsonBody<Entry>, ApiError>,
) -> Result<Response, ApiError> {
    let parsed = body.and_then(|JsonBody(e)| parse_entry(&e, s.ip_backends_only));
    let mut keys = valid(&s, WriteOp::Upsert, parsed)?;
    if keys.len() > 1 {
        return upsert_shorthand(&s, keys, wait).await;
    }
    let Some((host, backend)) = keys.pop() else {
        return Err(ApiError::Internal);
    };
    let stored = entry_json(&host, backend.as_str()).0;
    let op = Op::Upsert(host.clone(), backend);
    match submit(&s, WriteOp::Upsert, op, wait).await? {
        (Outcome::Created, rev) => {
            let mut r = answer(StatusCode::CREATED, Some(stored), rev);
            if let Ok(v) = HeaderValue::from_str(&format!("/entries/{host}.json")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Ok(r)
        }
        (Outcome::Updated, rev) => Ok(answer(StatusCode::OK, Some(stored), rev)),
        (other, _) => Err(unexpected(other)),
    }
}

/// `POST` of nginx's `.example.com`: its two entries in one batch, answered with the shorthand
/// (201 if either was created).
async fn upsert_shorthand(
    s: &AppState,
    upserts: Vec<(Host, Route)>,
    wait: Wait,
) -> Result<Response, ApiError> {
    let host = format!(".{}", upserts[0].0);
    let stored = upserts[0].1.as_str().to_owned();
    let op = Op::Batch {
        upserts,
        deletes: Vec::new(),
    };
    match submit(s, WriteOp::Upsert, op, wait).await? {
        (Outcome::Batch(c), rev) => {
            let status = if c.created > 0 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(answer(status, Some(entry_of(host, &stored)), rev))
        }
        (other, _) => Err(unexpected(other)),
    }
}

async fn get_one(
    State(s): State<AppState>,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let host = parse_host(&name_from_path(file)?)?;
    let store = s.store.clone();
    let h = host.clone();
    let found = tokio::task::spawn_blocking(move || store.get(h.as_str()))
        .await
        .map_err(|_| ApiError::Internal)??;
    match found {
        Some(b) => Ok(entry_json(&host, &b).into_response()),
        None => Err(ApiError::NotFound(host.into_string())),
    }
}

async fn delete_one(
    State(s): State<AppState>,
    wait: Wait,
    file: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let mut keys = valid(
        &s,
        WriteOp::Delete,
        name_from_path(file).and_then(|n| parse_keys(&n)),
    )?;
    if keys.len() > 1 {
        let name = format!(".{}", keys[0]);
        let op = Op::Batch {
            upserts: Vec::new(),
            deletes: keys,
        };
        return match submit(&s, WriteOp::Delete, op, wait).await? {
            (Outcome::Batch(c), rev) if c.deleted > 0 => Ok(no_content(rev)),
            (Outcome::Batch(_), _) => Err(ApiError::NotFound(name)),
            (other, _) => Err(unexpected(other)),
        };
    }
    let Some(host) = keys.pop() else {
        return Err(ApiError::Internal);
    };
    match submit(&s, WriteOp::Delete, Op::Delete(host.clone()), wait).await? {
        (Outcome::Deleted, rev) => Ok(no_content(rev)),
        (Outcome::Absent, _) => Err(ApiError::NotFound(host.into_string())),
        (other, _) => Err(unexpected(other)),
    }
}

/// 204, with the revision header in fleet mode.
fn no_content(revision: Option<u64>) -> Response {
    answer(StatusCode::NO_CONTENT, None::<()>, revision)
}

/// Validates entries and refuses a host that appears twice (after normalization).
fn parse_entries(
    entries: &[Entry],
    seen: &mut HashSet<String>,
    ip_only: bool,
) -> Result<Vec<(Host, Route)>, ApiError> {
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let keys = parse_entry(e, ip_only).map_err(|err| match err {
            ApiError::InvalidHost(m) => ApiError::InvalidHost(format!("entry {i}: {m}")),
            ApiError::InvalidBackend(m) => ApiError::InvalidBackend(format!("entry {i}: {m}")),
            other => other,
        })?;
        for (h, b) in keys {
            if !seen.insert(h.as_str().to_string()) {
                return Err(ApiError::DuplicateHost(h.into_string()));
            }
            out.push((h, b));
        }
    }
    Ok(out)
}

/// Validates a batch: every entry and host valid, no host twice.
fn parse_batch(req: &BatchRequest, ip_only: bool) -> Result<Op, ApiError> {
    let mut seen = HashSet::with_capacity(req.upsert.len() + req.delete.len());
    let upserts = parse_entries(&req.upsert, &mut seen, ip_only)?;
    let mut deletes = Vec::with_capacity(req.delete.len());
    for (i, d) in req.delete.iter().enumerate() {
        let keys = parse_keys(d).map_err(|e| match e {
            ApiError::InvalidHost(m) => ApiError::InvalidHost(format!("delete {i}: {m}")),
            other => other,
        })?;
        for h in keys {
            if !seen.insert(h.as_str().to_string()) {
                return Err(ApiError::DuplicateHost(h.into_string()));
            }
            deletes.push(h);
        }
    }
    Ok(Op::Batch { upserts, deletes })
}

async fn batch(
    State(s): State<AppState>,
    wait: Wait,
    body: Result<JsonBody<BatchRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let parsed = body.and_then(|JsonBody(req)| parse_batch(&req, s.ip_backends_only));
    let op = valid(&s, WriteOp::Batch, parsed)?;
    match submit(&s, WriteOp::Batch, op, wait).await? {
        (Outcome::Batch(c), rev) => Ok(answer(StatusCode::OK, Some(c), rev)),
        (other, _) => Err(unexpected(other)),
    }
}

async fn replace_all(
    State(s): State<AppState>,
    wait: Wait,
    body: Result<JsonBody<Vec<Entry>>, ApiError>,
) -> Result<Response, ApiError> {
    let parsed = body.and_then(|JsonBody(entries)| {
        let mut seen = HashSet::with_capacity(entries.len());
        parse_entries(&entries, &mut seen, s.ip_backends_only).map(Op::ReplaceAll)
    });
    let op = valid(&s, WriteOp::Replace, parsed)?;
    match submit(&s, WriteOp::Replace, op, wait).await? {
        (Outcome::Replaced { entries }, rev) => {
            Ok(answer(StatusCode::OK, Some(ReplaceResult { entries }), rev))
        }
        (other, _) => Err(unexpected(other)),
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
        let r = store.for_each(&mut |host, backend| {
            if !first {
                buf.push(b',');
            }
            first = false;
            let e = entry_of(host.to_string(), backend);
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
