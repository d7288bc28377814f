//! Test harness: an in-process daemon on a temporary directory (for router and socket tests)
//! and a spawned `set-backend` binary (for process tests).

#![allow(dead_code)]

pub mod etcd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::Method;
use set_backend_writer::api::{self, AppState};
use set_backend_writer::client::{Connection, Endpoint, Response};
use set_backend_writer::metrics::Metrics;
use set_backend_writer::store::RedbStore;
use set_backend_writer::{docs, engine, listen, Config};
use shm_layout::WriterOptions;

pub const TOKEN: &str = "test-token-0123456789abcdefghijklm";

/// A router on a fresh store and table, without any listener.
pub struct RouterHarness {
    /// Keeps the temporary directory alive.
    pub dir: tempfile::TempDir,
    /// The router under test.
    pub router: Router,
    /// Where the table is published.
    pub table_path: PathBuf,
    /// The same metrics the router updates.
    pub metrics: Arc<Metrics>,
    /// Stops the engine thread when dropped.
    engine: engine::EngineHandle,
}

impl Drop for RouterHarness {
    fn drop(&mut self) {
        self.engine.stop();
    }
}

impl RouterHarness {
    pub fn new() -> RouterHarness {
        RouterHarness::with(|_| {})
    }

    /// A router whose state is the default one changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut AppState)) -> RouterHarness {
        let dir = tempfile::tempdir().unwrap();
        let table_path = dir.path().join("table");
        let store = RedbStore::open_shared(&dir.path().join("store.redb")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let opts = WriterOptions {
            min_capacity: 16,
            ..WriterOptions::default()
        };
        let (engine, _thread) = engine::start(
            store.clone(),
            table_path.clone(),
            opts,
            metrics.clone(),
            Duration::from_millis(200),
        )
        .unwrap();
        let mut state = AppState {
            store,
            engine: engine.clone(),
            token: Arc::from(TOKEN),
            metrics: metrics.clone(),
            docs_html: Arc::from(docs::html(Some("example.org")).as_str()),
            max_batch_bytes: 1024 * 1024,
            ip_backends_only: false,
            throttle: Arc::default(),
            fleet: None,
        };
        tweak(&mut state);
        RouterHarness {
            dir,
            router: api::router(state),
            table_path,
            metrics,
            engine,
        }
    }

    /// Sends one request through the router (no socket).
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Response {
        use tower::ServiceExt;
        let mut b = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(axum::body::Body::from(body.into())).unwrap();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        Response::read(resp).await.unwrap()
    }

    /// An authenticated request; a body is sent as JSON.
    pub async fn api(
        &self,
        method: Method,
        uri: &str,
        body: Option<serde_json::Value>,
    ) -> Response {
        let auth = format!("Bearer {TOKEN}");
        match body {
            Some(b) => {
                let h = [
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ];
                self.call(method, uri, &h, serde_json::to_vec(&b).unwrap())
                    .await
            }
            None => {
                self.call(method, uri, &[("authorization", auth.as_str())], Vec::new())
                    .await
            }
        }
    }

    /// Every entry, through the API.
    pub async fn list(&self) -> Vec<(String, String)> {
        entries_of(&self.api(Method::GET, "/entries.json", None).await)
    }
}

/// Parses a `GET /entries.json` answer.
pub fn entries_of(r: &Response) -> Vec<(String, String)> {
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Vec<set_backend_writer::model::Entry> = serde_json::from_slice(&r.body).unwrap();
    v.into_iter()
        .map(|e| {
            let route = e.route_text();
            (e.host, route)
        })
        .collect()
}

/// Every entry of the table file at `path`, sorted, after a deep check of the file.
pub fn table_entries(path: &Path) -> Vec<(String, String)> {
    let t = shm_layout::Table::open(path).unwrap();
    t.verify().unwrap();
    let mut e = t.entries();
    e.sort();
    e
}

/// The daemon running in this process on a unix socket in a temporary directory.
pub struct ServerHarness {
    /// Keeps the temporary directory alive.
    pub dir: tempfile::TempDir,
    /// The socket clients connect to.
    pub endpoint: Endpoint,
    /// Where the table is published.
    pub table_path: PathBuf,
    /// Resolving it starts the shutdown.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The running daemon.
    task: Option<tokio::task::JoinHandle<Result<(), set_backend_writer::RunError>>>,
}

impl ServerHarness {
    pub async fn start() -> ServerHarness {
        ServerHarness::start_with(|_| {}).await
    }

    /// Starts with the default config changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> ServerHarness {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let table_path = dir.path().join("table");
        let mut config = Config::new(
            dir.path().join("store.redb"),
            table_path.clone(),
            TOKEN.to_string(),
        );
        tweak(&mut config);
        let listener = listen::bind_unix(&socket, 0o660, None).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(set_backend_writer::run(
            config,
            vec![listener],
            async move {
                let _ = rx.await;
            },
        ));
        let endpoint = Endpoint::Unix(socket);
        wait_ready(&endpoint, Duration::from_secs(10)).await;
        ServerHarness {
            dir,
            endpoint,
            table_path,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.endpoint, Some(TOKEN.to_string()))
            .await
            .unwrap()
    }

    /// Starts the graceful shutdown and waits for `run` to return.
    pub async fn shutdown(&mut self) -> Result<(), set_backend_writer::RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap().await.unwrap()
    }
}

/// Waits until `GET /healthz` answers 200 on `endpoint`.
pub async fn wait_ready(endpoint: &Endpoint, timeout: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = Connection::connect(endpoint, None).await {
            if let Ok(r) = c.request(Method::GET, "/healthz", None).await {
                if r.status == 200 {
                    return;
                }
            }
        }
        assert!(start.elapsed() < timeout, "the daemon did not become ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A spawned `set-backend serve` on a data directory.
pub struct Daemon {
    /// The child process.
    pub child: Child,
    /// Its socket.
    pub endpoint: Endpoint,
    /// Where its standard error goes, for failure messages.
    pub log: PathBuf,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_set-backend")
}

impl Daemon {
    /// Spawns `set-backend serve --data-dir DIR --socket DIR/api.sock` with `API_TOKEN` set
    /// (unless `token` is `None`) and `extra` arguments; stderr goes to `DIR/<log_name>`.
    pub fn spawn(dir: &Path, token: Option<&str>, extra: &[&str], log_name: &str) -> Daemon {
        let socket = dir.join("api.sock");
        let log = dir.join(log_name);
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--socket")
            .arg(&socket)
            .args(extra);
        cmd.env_remove("API_TOKEN").env("RUST_LOG", "info");
        if let Some(t) = token {
            cmd.env("API_TOKEN", t);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        Daemon {
            child,
            endpoint: Endpoint::Unix(socket),
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for readiness, failing with the daemon's log.
    pub async fn ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited with {status}:\n{}", self.log_text());
            }
            if let Ok(mut c) = Connection::connect(&self.endpoint, None).await {
                if let Ok(r) = c.request(Method::GET, "/healthz", None).await {
                    if r.status == 200 {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the daemon did not become ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
