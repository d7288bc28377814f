//! [`Nginx`]: a real nginx with the module in a temporary prefix, and `nginx -t` on a
//! configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{free_port, is_root, shared_tempdir, show_if_failing, stop_child};
use crate::{get, paths, Response, WAIT};

/// A running nginx with the module.
pub struct Nginx {
    pub dir: tempfile::TempDir,
    /// The port every test server listens on.
    pub port: u16,
    master: Option<Child>,
    /// The `http {}` body, kept to write the configuration again on `reload_with`.
    conf_path: PathBuf,
}

/// The configuration around a test's `http {}` body, for a master in the foreground (started by
/// the test) or daemonized. `{port}` is not substituted: bodies get the port from
/// [`Nginx::start`]'s closure.
fn main_conf(dir: &Path, http_body: &str, daemon: bool) -> String {
    let p = paths();
    let user = if is_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    let daemon = if daemon { "on" } else { "off" };
    format!(
        "load_module {module};\n{user}worker_processes 2;\ndaemon {daemon};\nmaster_process on;\n\
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

/// `nginx -p dir -c conf -e dir/error.log`, to which the caller adds its arguments.
pub(crate) fn nginx_command(dir: &Path, conf: &Path) -> Command {
    let mut c = Command::new(&paths().nginx);
    c.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf)
        .arg("-e")
        .arg(dir.join("error.log"));
    c
}

/// Writes the configuration around `http_body` into `dir`; returns its path.
pub(crate) fn write_conf(dir: &Path, http_body: &str, daemon: bool) -> PathBuf {
    let conf_path = dir.join("nginx.conf");
    fs::write(&conf_path, main_conf(dir, http_body, daemon)).expect("write nginx.conf");
    conf_path
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
            let conf_path = write_conf(dir.path(), &http(port, dir.path()), false);
            let _ = fs::remove_file(dir.path().join("error.log"));
            let master = nginx_command(dir.path(), &conf_path)
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
        let mut last = BTreeMap::<String, (usize, u16, String)>::new();
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
        reload(self.dir.path(), &self.conf_path);
    }

    /// Runs `nginx -t` on this instance's configuration.
    pub fn test_config(&self) -> std::process::Output {
        nginx_command(self.dir.path(), &self.conf_path)
            .arg("-t")
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
        let name = format!("error.log of {}", self.dir.path().display());
        show_if_failing(&name, || self.error_log());
    }
}

/// The lines of `log` that contain `needle`.
pub fn lines_with<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// `nginx -s reload` (the signal goes to the master named in the pid file).
pub(crate) fn reload(dir: &Path, conf: &Path) {
    run_ok(
        nginx_command(dir, conf).args(["-s", "reload"]),
        "nginx -s reload",
    );
}

/// Runs `cmd` to its end; fails the test with its stderr unless it succeeds.
pub(crate) fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `nginx -t` on a configuration with `http_body`, returning (success, stderr).
pub fn nginx_t(http_body: &str) -> (bool, String) {
    let dir = shared_tempdir();
    let conf_path = write_conf(dir.path(), http_body, false);
    let out = nginx_command(dir.path(), &conf_path)
        .arg("-t")
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
