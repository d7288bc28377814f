//! [`Writer`]: the `set-backend serve` daemon on a unix socket in a data directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{is_root, show_if_failing, signal, stop_child};
use crate::{paths, unix_request, writer_built, WAIT};

/// The API token the tests start the writer with.
pub const TOKEN: &str = "e2e-test-token-0123456789abcdefghij";

/// The writer is part of the workspace build; a missing binary fails the test, loudly.
pub fn require_writer() {
    assert!(
        writer_built(),
        "the writer binary {} is not built: run `cargo build --workspace` (or `make test`)",
        paths().writer.display()
    );
}

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
            signal(c.id() as i32, libc::SIGKILL);
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

    /// `set-backend serve --data-dir DIR --socket DIR/api.sock ARGS`, with `API_TOKEN` set to
    /// `token` or, for `None`, removed (the writer then generates one): every test that runs
    /// the writer builds its command here, also those that expect it to fail.
    pub fn command(data_dir: &Path, token: Option<&str>, args: &[&str]) -> Command {
        let mut c = Command::new(&paths().writer);
        c.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--socket")
            .arg(data_dir.join("api.sock"))
            .args(args);
        match token {
            Some(t) => c.env("API_TOKEN", t),
            None => c.env_remove("API_TOKEN"),
        };
        c
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
        let child = Writer::command(data_dir, Some(token), args)
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
        show_if_failing("writer log", || self.log());
    }
}
