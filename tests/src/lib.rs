//! The process harness for the end-to-end tests.
//!
//! # Layout
//!
//! - [`paths`]: where the nginx binary (nginx-sys's build), the module `.so`, the writer and
//!   the error pages are; all come from this workspace's cargo build.
//! - [`Nginx`]: a real nginx (2 workers, `reuseport` so both get connections) in a temporary
//!   prefix with a generated configuration; readiness is waited for, `stop` sends QUIT, and on
//!   a failing test `error.log` is printed.
//! - [`Upstream`]: a tiny HTTP server on a free port that answers with its name and the
//!   request it saw, keeps HTTP/1.1 connections alive, and counts connections and requests.
//! - [`Writer`]: the `set-backend serve` daemon on a unix socket in a temporary directory.
//! - [`get`], [`request`], [`unix_request`]: a minimal HTTP/1.1 client (one request per
//!   connection) returning a [`Response`].
//!
//! Every wait is bounded; nothing is killed with SIGKILL.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use shm_layout::{Backend, Host, Table, TableWriter, WriterOptions};

/// How long any single wait lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The binaries and files the tests run.
pub struct Paths {
    pub nginx: PathBuf,
    pub module: PathBuf,
    pub writer: PathBuf,
    pub html: PathBuf,
}

/// Locates the build outputs: nginx from nginx-sys's build directory, the module and the writer
/// next to this test binary's `deps/` directory.
pub fn paths() -> &'static Paths {
    static PATHS: OnceLock<Paths> = OnceLock::new();
    PATHS.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/e2e-… → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target dir")
            .to_path_buf();
        let nginx = match option_env!("SET_BACKEND_NGINX_BUILD_DIR") {
            Some(dir) => PathBuf::from(dir).join("nginx"),
            None => panic!("nginx-sys did not report its build directory"),
        };
        let module = profile_dir.join("libngx_http_set_backend_module.so");
        let writer = profile_dir.join("set-backend");
        let html = Path::new(env!("CARGO_MANIFEST_DIR")).join("../html");
        for (what, p) in [("nginx", &nginx), ("the module", &module)] {
            assert!(
                p.exists(),
                "{what} not found at {}: run `cargo build --workspace` (or `make test`) first",
                p.display()
            );
        }
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../module/src");
        assert!(
            !newer_than(&sources, &module) && !newer_than(&html, &module),
            "{} is older than the module's sources: run `cargo build --workspace` (or `make test`)",
            module.display()
        );
        Paths {
            nginx,
            module,
            writer,
            html,
        }
    })
}

/// True when a file in `dir` was modified after `output` was built.
fn newer_than(dir: &Path, output: &Path) -> bool {
    let Ok(built) = fs::metadata(output).and_then(|m| m.modified()) else {
        return true;
    };
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .any(|t| t > built)
}

/// True when the writer binary has been built (`cargo build --workspace`).
pub fn writer_built() -> bool {
    paths().writer.exists()
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A temporary directory the nginx workers can read even when they run as `nobody`.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("set-backend-e2e.")
        .tempdir()
        .expect("tempdir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    dir
}

/// True when the tests run as root (they then run nginx's workers as `nobody`, and the tests
/// that need mounts or other users can run).
pub fn running_as_root() -> bool {
    is_root()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Waits for `child` to exit, up to `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Stops `child` (if still held) with `first`, then with `then` if it is still running after
/// [`WAIT`]; never SIGKILL.
fn stop_child(child: &mut Option<Child>, first: libc::c_int, then: libc::c_int) {
    if let Some(mut c) = child.take() {
        signal(c.id(), first);
        if !wait_exit(&mut c, WAIT) {
            signal(c.id(), then);
            wait_exit(&mut c, WAIT);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` with `Host: host` on 127.0.0.1:port.
pub fn get(port: u16, host: &str, path: &str) -> io::Result<Response> {
    request(port, "GET", host, path, &[], None)
}

/// One request on a new connection (`Connection: close`).
pub fn request(
    port: u16,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    exchange(&mut s, method, host, path, headers, body)
}

/// One request over a unix socket.
pub fn unix_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(WAIT))?;
    exchange(&mut s, method, "localhost", path, headers, body)
}

/// Sends `raw` bytes as they are (a request of any shape, even a broken one) to 127.0.0.1:port
/// and parses what comes back. `raw` should say `Connection: close`.
pub fn raw_request(port: u16, raw: &[u8]) -> io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    parse_response(&out)
}

/// [`raw_request`] over a unix socket.
pub fn raw_unix_request(socket: &Path, raw: &[u8]) -> io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    parse_response(&out)
}

fn exchange<S: Read + Write>(
    s: &mut S,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Upstream
// ---------------------------------------------------------------------------------------------

/// A backend: answers every request with `upstream=<name> host=<Host> uri=<uri>`. It keeps an
/// HTTP/1.1 connection open for the next request unless the request says `Connection: close`
/// (nginx's `keepalive` needs that), and counts the connections it accepted and the requests
/// it answered.
pub struct Upstream {
    pub name: String,
    pub port: u16,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::start_with_delay(name, Duration::ZERO)
    }

    /// An upstream that waits `delay` before it answers (for timeouts).
    pub fn start_with_delay(name: &str, delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (n, flag, conns, reqs) = (
            name.to_string(),
            stop.clone(),
            connections.clone(),
            requests.clone(),
        );
        thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                conns.fetch_add(1, Ordering::Relaxed);
                let (n, reqs, flag) = (n.clone(), reqs.clone(), flag.clone());
                thread::spawn(move || serve(conn, &n, delay, &reqs, &flag));
            }
        });
        Upstream {
            name: name.to_string(),
            port,
            stop,
            connections,
            requests,
        }
    }

    /// `127.0.0.1:<port>`, as the table stores it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Answers the requests of one connection until the client closes it, asks to close it, is
/// idle for 5 s, or the upstream stops.
fn serve(
    mut conn: TcpStream,
    name: &str,
    delay: Duration,
    requests: &AtomicUsize,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let header = |name: &str| {
            head.split("\r\n")
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
        };
        let body_len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + body_len {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..end + body_len);
        let request_line = head.split("\r\n").next().unwrap_or("");
        let uri = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let keep_alive = request_line.ends_with("HTTP/1.1")
            && !header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"))
            && !stop.load(Ordering::Relaxed);
        let host = header("host").unwrap_or_default();
        thread::sleep(delay);
        let body = format!("upstream={name} host={host} uri={uri}");
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(resp.as_bytes()).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if !keep_alive {
            // Let the client (nginx) close first, so the TIME_WAIT state stays on its side:
            // closing here first under thousands of connections a second leaves the
            // upstream's port pairs in TIME_WAIT, and new connects to it stall.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {}
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Table
// ---------------------------------------------------------------------------------------------

/// Options for tables built directly in tests: no fsync, so they build fast.
pub fn table_options() -> WriterOptions {
    WriterOptions {
        sync: false,
        ..WriterOptions::default()
    }
}

/// Creates (or publishes a new generation of) the table at `path` with `entries`.
pub fn write_table(path: &Path, entries: &[(&str, &str)]) -> TableWriter {
    let entries: Vec<(Host, Backend)> = entries
        .iter()
        .map(|(h, b)| {
            (
                Host::parse(h).expect("host"),
                Backend::parse(b).expect("backend"),
            )
        })
        .collect();
    TableWriter::create(path, entries, table_options()).expect("create table")
}

/// Upserts `host → backend` through `w`.
pub fn upsert(w: &mut TableWriter, host: &str, backend: &str) {
    w.upsert(
        &Host::parse(host).expect("host"),
        &Backend::parse(backend).expect("backend"),
    )
    .expect("upsert");
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// A running nginx with the module.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    /// The port every test server listens on.
    pub port: u16,
    master: Option<Child>,
    /// The `http {}` body, kept to write the configuration again on `reload_with`.
    conf_path: PathBuf,
}

/// The configuration around a test's `http {}` body. `{port}` is not substituted: bodies get
/// the port from [`Nginx::start`]'s closure.
fn main_conf(dir: &Path, http_body: &str) -> String {
    let p = paths();
    let user = if is_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    format!(
        "load_module {module};\n{user}worker_processes 2;\ndaemon off;\nmaster_process on;\n\
         error_log {dir}/error.log info;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
             log_format sb '$host $status $set_backend_status \"$sent_http_x_backend\"';\n\
             access_log {dir}/access.log sb;\n\
             {http_body}\n}}\n",
        module = p.module.display(),
        dir = dir.display(),
    )
}

impl Nginx {
    /// Starts nginx with `http(port, dir)` as the body of `http {}` and waits until it answers
    /// on `port`. Retries with another port if the first was taken meanwhile.
    pub fn start(http: impl Fn(u16, &Path) -> String) -> Nginx {
        let mut dir = shared_tempdir();
        let html = dir.path().join("html");
        fs::create_dir_all(&html).expect("mkdir html");
        for page in ["404.html", "502.html", "503.html", "504.html"] {
            fs::copy(paths().html.join(page), html.join(page)).expect("copy page");
        }
        fs::set_permissions(&html, fs::Permissions::from_mode(0o755)).expect("chmod html");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = main_conf(dir.path(), &http(port, dir.path()));
            let conf_path = dir.path().join("nginx.conf");
            fs::write(&conf_path, conf).expect("write nginx.conf");
            let _ = fs::remove_file(dir.path().join("error.log"));
            let master = Command::new(&paths().nginx)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn nginx");
            let mut n = Nginx {
                dir,
                port,
                master: Some(master),
                conf_path,
            };
            match n.wait_ready() {
                Ok(()) => return n,
                Err(e) => {
                    last_err = format!("{e}\n{}", n.error_log());
                    n.stop();
                    dir = n.take_dir();
                }
            }
        }
        panic!("nginx did not start: {last_err}");
    }

    fn take_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, shared_tempdir());
        self.master = None;
        dir
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(m) = self.master.as_mut() {
                if let Ok(Some(st)) = m.try_wait() {
                    return Err(format!("nginx exited: {st}"));
                }
            }
            if get(self.port, "harness.invalid", "/").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("nginx did not answer in time".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The prefix directory (configuration, logs, pages).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `GET path` with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> Response {
        get(self.port, host, path).unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Panics if `error.log` has an `[alert]`, `[crit]` or `[emerg]` line.
    pub fn assert_clean_log(&self) {
        let log = self.error_log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("[alert]") || l.contains("[crit]") || l.contains("[emerg]"))
            .collect();
        assert!(
            bad.is_empty(),
            "error.log has serious lines:\n{}",
            bad.join("\n")
        );
    }

    /// Waits until `f` holds for a response to `GET host path`, returning it.
    pub fn wait_for(&self, host: &str, path: &str, f: impl Fn(&Response) -> bool) -> Response {
        let deadline = Instant::now() + WAIT;
        loop {
            let r = self.get(host, path);
            if f(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "condition not met in time; last response {r:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks until both workers (by the `X-Worker` header) have answered with `f` true, and
    /// returns their pids. Fails if any answer is false.
    pub fn every_worker(&self, host: &str, f: impl Fn(&Response) -> bool) -> BTreeSet<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = BTreeSet::new();
        while seen.len() < 2 {
            let r = self.get(host, "/");
            assert!(f(&r), "a worker answered {r:?}");
            seen.insert(r.header("X-Worker").expect("X-Worker header").to_string());
            assert!(Instant::now() < deadline, "only workers {seen:?} answered");
        }
        seen
    }

    /// Waits until every worker answers with `f` true (a worker may lag for a moment).
    pub fn wait_every_worker(&self, host: &str, f: impl Fn(&Response) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut good = BTreeSet::new();
        // Per worker: how many answers, and the last one (for the failure message).
        let mut last = std::collections::BTreeMap::<String, (usize, u16, String)>::new();
        while good.len() < 2 {
            let r = self.get(host, "/");
            let w = r.header("X-Worker").expect("X-Worker header").to_string();
            let seen = last.entry(w.clone()).or_default();
            *seen = (seen.0 + 1, r.status, r.body.chars().take(80).collect());
            if f(&r) {
                good.insert(w);
            } else {
                good.remove(&w);
            }
            assert!(
                Instant::now() < deadline,
                "not every worker got there; per worker (answers, last status, last body): \
                 {last:?}; last {r:?}"
            );
            // Every request is a new connection to nginx and (in variable mode) to the
            // upstream: asking without a pause for seconds fills loopback with TIME_WAIT
            // sockets until connects stall.
            if good.len() < 2 {
                thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// `nginx -s reload` (the signal goes to the master named in the pid file).
    pub fn reload(&self) {
        let out = Command::new(&paths().nginx)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&self.conf_path)
            .arg("-s")
            .arg("reload")
            .output()
            .expect("nginx -s reload");
        assert!(
            out.status.success(),
            "nginx -s reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `nginx -t` on this instance's configuration.
    pub fn test_config(&self) -> std::process::Output {
        Command::new(&paths().nginx)
            .arg("-t")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&self.conf_path)
            .output()
            .expect("nginx -t")
    }

    /// Graceful stop: QUIT, then TERM if it lingers (never KILL).
    pub fn stop(&mut self) {
        stop_child(&mut self.master, libc::SIGQUIT, libc::SIGTERM);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "---- error.log of {} ----\n{}---- end of error.log ----",
                self.dir.path().display(),
                self.error_log()
            );
        }
    }
}

/// Runs `nginx -t` on a configuration with `http_body`, returning (success, stderr).
pub fn nginx_t(http_body: &str) -> (bool, String) {
    let dir = shared_tempdir();
    let conf_path = dir.path().join("nginx.conf");
    fs::write(&conf_path, main_conf(dir.path(), http_body)).expect("write nginx.conf");
    let out = Command::new(&paths().nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.path().join("error.log"))
        .output()
        .expect("nginx -t");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).replace(&*dir.path().to_string_lossy(), "DIR"),
    )
}

/// Asserts that `nginx -t` refuses each `(http block body, expected message)` at `emerg` level
/// with that message (paths shown as `DIR`).
pub fn assert_nginx_t_rejects(cases: &[(&str, &str)]) {
    for (body, expected) in cases {
        let (ok, stderr) = nginx_t(body);
        assert!(!ok, "{body}: accepted");
        assert!(
            stderr.contains("[emerg]") && stderr.contains(expected),
            "{body}:\n{stderr}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

/// The writer daemon on a unix socket.
pub struct Writer {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub token: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Writer {
    /// [`Writer::start`] with more `serve` options (`--socket-mode`, `--socket-group`, …).
    /// With `--socket-mode` given, the socket's mode is left as the writer set it.
    pub fn start_with_args(data_dir: &Path, token: &str, args: &[&str]) -> Writer {
        Writer::spawn(data_dir, token, args)
    }

    /// SIGKILLs the writer (the crash tests' fault; nginx is never killed) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// The writer's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `set-backend serve` with its data in `data_dir` and waits for `/healthz`.
    pub fn start(data_dir: &Path, token: &str) -> Writer {
        Writer::spawn(data_dir, token, &[])
    }

    fn spawn(data_dir: &Path, token: &str, args: &[&str]) -> Writer {
        fs::create_dir_all(data_dir).expect("mkdir data dir");
        fs::set_permissions(data_dir, fs::Permissions::from_mode(0o755)).expect("chmod data dir");
        let socket = data_dir.join("api.sock");
        let log = data_dir.join("writer.log");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(&paths().writer)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("API_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn the writer");
        let mut w = Writer {
            data_dir: data_dir.to_path_buf(),
            socket,
            token: token.to_string(),
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(r) = unix_request(&w.socket, "GET", "/healthz", &[], None) {
                if r.status == 200 {
                    break;
                }
            }
            if let Some(Ok(Some(st))) = w.child.as_mut().map(Child::try_wait) {
                panic!("the writer exited: {st}\n{}", w.log());
            }
            assert!(
                Instant::now() < deadline,
                "the writer did not get ready\n{}",
                w.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        // nginx's workers run as nobody when the tests run as root: let them connect.
        if is_root() && !args.contains(&"--socket-mode") {
            let _ = fs::set_permissions(&w.socket, fs::Permissions::from_mode(0o666));
        }
        w
    }

    /// The table file it publishes.
    pub fn table(&self) -> PathBuf {
        self.data_dir.join("table")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Graceful stop (SIGTERM, then waits).
    pub fn stop(&mut self) {
        stop_child(&mut self.child, libc::SIGTERM, libc::SIGINT);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "---- writer log ----\n{}---- end of writer log ----",
                self.log()
            );
        }
    }
}
