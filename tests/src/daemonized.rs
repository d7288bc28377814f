//! [`Daemonized`]: nginx with `daemon on`, for the binary upgrade (USR2, WINCH, QUIT).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use crate::nginx::{nginx_command, reload, run_ok, write_conf};
use crate::process::show_if_failing;
use crate::{alive, free_port, get, shared_tempdir, signal, wait_until, WAIT};

/// A daemonized nginx (`daemon on`): the binary upgrade needs a master whose parent is not
/// the process that started it (nginx ignores USR2 otherwise), as in production.
pub struct Daemonized {
    dir: tempfile::TempDir,
    pub port: u16,
    conf: PathBuf,
}

impl Daemonized {
    /// Starts a daemonized nginx with `http(port, dir)` as the body of `http {}` and waits until
    /// it answers.
    pub fn start(http: impl Fn(u16, &Path) -> String) -> Daemonized {
        let dir = shared_tempdir();
        let port = free_port();
        let conf_path = write_conf(dir.path(), &http(port, dir.path()), true);
        run_ok(
            nginx_command(dir.path(), &conf_path).stdin(Stdio::null()),
            "start nginx",
        );
        let n = Daemonized {
            dir,
            port,
            conf: conf_path,
        };
        wait_until("nginx to answer", WAIT, || {
            get(port, "ready.invalid", "/").is_ok()
        });
        n
    }

    fn pid_file(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.dir.path().join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The current master's pid.
    pub fn master(&self) -> i32 {
        self.pid_file("nginx.pid").expect("nginx.pid")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The pids of the workers answering now (by `X-Worker`).
    fn workers(&self, host: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            if let Ok(r) = get(self.port, host, "/") {
                seen.insert(r.header("X-Worker").unwrap_or("").to_string());
            }
        }
        seen
    }

    /// USR2 (a new master on the same binary), then WINCH and QUIT to the old one.
    pub fn upgrade(&self, host: &str) {
        let old = self.master();
        let old_workers = self.workers(host);
        signal(old, libc::SIGUSR2);
        wait_until("the new master", WAIT, || {
            self.pid_file("nginx.pid.oldbin") == Some(old)
                && self.pid_file("nginx.pid").is_some_and(|p| p != old)
        });
        // The new workers accept next to the old ones.
        wait_until("a new worker to answer", WAIT, || {
            get(self.port, host, "/").is_ok_and(|r| {
                r.header("X-Worker")
                    .is_some_and(|w| !old_workers.contains(w))
            })
        });
        signal(old, libc::SIGWINCH);
        thread::sleep(Duration::from_millis(300));
        signal(old, libc::SIGQUIT);
        wait_until("the old master to exit", WAIT, || !alive(old));
    }

    /// `nginx -s reload`.
    pub fn reload(&self) {
        reload(self.dir.path(), &self.conf);
    }
}

impl Drop for Daemonized {
    fn drop(&mut self) {
        for name in ["nginx.pid.oldbin", "nginx.pid"] {
            if let Some(pid) = self.pid_file(name) {
                signal(pid, libc::SIGQUIT);
                let deadline = Instant::now() + WAIT;
                while alive(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                if alive(pid) {
                    signal(pid, libc::SIGTERM);
                }
            }
        }
        show_if_failing("error.log", || self.error_log());
    }
}
