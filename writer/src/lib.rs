//! The set-backend writer daemon: the one process that owns the routing table. It serves the
//! REST API, stores every entry durably in `redb`, and publishes each change into the table
//! file that nginx workers read (see `shm-layout`).
//!
//! # Layout
//!
//! - [`api`]: the axum router, the handlers (one write path), the token middleware and the
//!   layers; `api/health.rs`: `/healthz`, `/readyz`, `/metrics`.
//! - [`error`]: [`ApiError`](error::ApiError), the one JSON error shape.
//! - [`model`]: the JSON types the API, the CLI and the client share (entries, batches,
//!   counts).
//! - [`auth`]: the API token (environment, file, or generated; a weak one refused) and the
//!   constant-time bearer comparison; no HTTP.
//! - [`throttle`]: failed authentication per client address, a budget refilled over time;
//!   no HTTP.
//! - [`engine`]: the thread that commits writes to the store in groups and then publishes
//!   them into the table; the only writer of both. `engine/generations.rs`: its side of the
//!   table's generations (opened or reopened at start, grown, rebuilt, sealed at stop).
//! - [`store`]: the [`Store`](store::Store) interface to the source of truth (apply a group in
//!   one durable commit, read, stream in order, reopen) with error kinds, and its `redb`
//!   implementation; nothing else touches the database.
//! - [`route`]: a host's backend set and the form it was written in ([`route::Route`]), and
//!   the one canonical string the store keeps for it ([`route::encode`], [`route::decode`]).
//! - `growth`: building a table generation by streaming the store, and growing the table on
//!   a thread while the engine keeps publishing (the changes made meanwhile copied over
//!   before the new file is renamed into place).
//! - [`fleet`]: fleet mode (`--etcd`): etcd is the source of truth; the writes go into etcd
//!   transactions, a follower applies etcd's changes through the engine, the node registers
//!   itself (see its own `# Layout` and `docs/FLEET.md`).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`docs`]: the HTML page at `/` and the OpenAPI document at `/openapi.json`.
//! - [`listen`]: binding the unix socket (mode, group) and the optional loopback TCP port.
//! - [`client`]: a small HTTP client over the socket, used by the CLI, the tests and the
//!   benchmarks.
//! - [`cli`]: the command line (`serve`, and the operator commands that talk to a running
//!   daemon or check a table file).
//!
//! # Start and shutdown order
//!
//! [`run`] opens the store (its file lock keeps a second daemon off it), takes the table lock and
//! reopens the table file as is if it carries the store's seal (else builds it from the store
//! as a new generation), starts the engine thread, then
//! serves every listener. When `shutdown` resolves: the listeners stop accepting; requests in
//! flight finish, for up to [`Config::shutdown_grace`] (their writes are committed and
//! published); the engine drains its queue,
//! writes a last heartbeat, seals the table (file made durable, seal recorded in the store and
//! the file) and exits, releasing the table lock; `run` returns.

pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod docs;
pub mod engine;
pub mod error;
pub mod fleet;
mod growth;
pub mod listen;
pub mod metrics;
pub mod model;
pub mod route;
pub mod store;
pub mod throttle;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shm_layout::WriterOptions;

pub use listen::Listener;

/// Everything [`run`] needs besides its listeners.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `redb` store, the source of truth.
    pub store_path: PathBuf,
    /// The table file nginx maps.
    pub table_path: PathBuf,
    /// Permission bits of the table file: readable by nginx workers, writable by none.
    pub table_mode: u32,
    /// The token every `/entries` request must present.
    pub token: String,
    /// Body limit of batch and replace-all requests.
    pub max_batch_bytes: usize,
    /// Bytes of the store's page cache (redb's cache; the rest of the file is read through the
    /// kernel's page cache).
    pub store_cache_bytes: usize,
    /// `DOMAIN`, to show `https://api.$DOMAIN` in the documentation's examples.
    pub domain: Option<String>,
    /// How often the engine refreshes the table's heartbeat.
    pub heartbeat: Duration,
    /// How long a shutdown waits for requests in flight before closing their connections.
    pub shutdown_grace: Duration,
    /// Accept only IP-literal backends: nginx's upstream mode (`set_backend_peer`) connects
    /// to addresses and does not resolve names, so a name stored for it could not be routed.
    pub ip_backends_only: bool,
    /// Fleet mode: etcd is the source of truth and the store its local cache.
    pub fleet: Option<fleet::FleetConfig>,
}

impl Config {
    /// A config with the defaults for everything but the paths and the token.
    pub fn new(store_path: PathBuf, table_path: PathBuf, token: String) -> Config {
        Config {
            store_path,
            table_path,
            table_mode: 0o644,
            token,
            max_batch_bytes: 64 * 1024 * 1024,
            store_cache_bytes: store::DEFAULT_CACHE_BYTES,
            domain: None,
            heartbeat: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(30),
            ip_backends_only: false,
            fleet: None,
        }
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Runs the daemon on already bound `listeners` until `shutdown` resolves, then shuts down
/// in the order given in the crate docs.
pub async fn run(
    config: Config,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let store_path = config.store_path.clone();
    let cache = config.store_cache_bytes;
    let store = tokio::task::spawn_blocking(move || store::RedbStore::open(&store_path, cache))
        .await
        .map_err(|e| RunError(e.to_string()))?
        .map_err(|e| RunError(e.to_string()))?;
    let store: store::SharedStore = Arc::new(store);
    let opts = WriterOptions {
        mode: config.table_mode,
        ..WriterOptions::default()
    };
    let (engine, engine_thread) = {
        let (store, path, m, hb) = (
            store.clone(),
            config.table_path.clone(),
            metrics.clone(),
            config.heartbeat,
        );
        tokio::task::spawn_blocking(move || engine::start(store, path, opts, m, hb))
            .await
            .map_err(|e| RunError(e.to_string()))?
            .map_err(|e| RunError(e.to_string()))?
    };
    tracing::info!(
        store = %config.store_path.display(),
        table = %config.table_path.display(),
        entries = metrics.entries.load(std::sync::atomic::Ordering::Relaxed),
        generation = metrics.table_generation.load(std::sync::atomic::Ordering::Relaxed),
        "table published from the store"
    );
    let (fleet, fleet_tasks) = match config.fleet.clone() {
        Some(fc) => {
            tracing::info!(endpoints = ?fc.endpoints, prefix = %fc.prefix, node = %fc.node_name,
                "fleet mode: following etcd");
            let (f, t) = fleet::Fleet::start(fc, store.clone(), engine.clone())
                .await
                .map_err(|e| RunError(e.to_string()))?;
            (Some(f), Some(t))
        }
        None => (None, None),
    };
    let state = api::AppState {
        fleet,
        store,
        engine: engine.clone(),
        token: Arc::from(config.token.as_str()),
        metrics,
        docs_html: Arc::from(docs::html(config.domain.as_deref()).as_str()),
        max_batch_bytes: config.max_batch_bytes,
        ip_backends_only: config.ip_backends_only,
        throttle: Arc::default(),
    };
    let app = api::router(state);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for l in listeners {
        let app = app.clone();
        let mut rx = stop_rx.clone();
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tracing::info!(listener = %l, "listening");
        servers.spawn(async move {
            match l {
                Listener::Unix(u) => axum::serve(u, app).with_graceful_shutdown(stopped).await,
                // The peer's address is the client's (the token throttle counts by it).
                Listener::Tcp(t) => {
                    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                    axum::serve(t, app).with_graceful_shutdown(stopped).await
                }
            }
        });
    }
    drop(app);
    let mut failure = None;
    let mut engine_done = tokio::task::spawn_blocking(move || engine_thread.join());
    let mut engine_ended = false;
    tokio::select! {
        _ = shutdown => tracing::info!("shutting down: finishing requests in flight"),
        Some(r) = servers.join_next() => {
            failure = Some(format!("a listener stopped: {r:?}"));
        }
        _ = &mut engine_done => {
            // Without the engine no write can be acknowledged: stop, and let the service
            // manager restart the daemon (which rebuilds the table from the store).
            engine_ended = true;
            failure = Some("the engine thread stopped unexpectedly".into());
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                failure.get_or_insert(format!("serving failed: {e}"));
            }
        }
    })
    .await;
    if drained.is_err() {
        // A client that neither finishes nor goes away must not hold the daemon up forever.
        // Writes already queued are still committed by the engine below; their clients
        // just do not hear back.
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "connections still open after the grace period; closing them"
        );
        servers.abort_all();
    }
    if let Some(t) = fleet_tasks {
        t.stop(Duration::from_secs(5)).await;
    }
    engine.stop();
    drop(engine);
    if !engine_ended {
        match engine_done.await {
            Ok(Ok(())) => {}
            _ => {
                failure.get_or_insert("the engine thread panicked".into());
            }
        }
    }
    tracing::info!("stopped");
    match failure {
        Some(f) => Err(RunError(f)),
        None => Ok(()),
    }
}
