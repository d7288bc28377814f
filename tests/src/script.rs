//! [`Script`]: one of the repository's scripts (`scripts/run.sh`, `scripts/fleet.sh`) run as a
//! user runs it from `make`: in its own process group, its output collected, stopped with
//! Ctrl-C (SIGINT to the group).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{paths, WAIT};

/// A running script.
pub struct Script {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Script {
    /// Starts `scripts/NAME` with `env`, on the workspace's build (`SKIP_BUILD=1`, this build's
    /// target directory and nginx).
    pub fn start(name: &str, env: &[(&str, String)]) -> Script {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts")
            .join(name);
        let target_dir = paths()
            .module
            .parent()
            .and_then(Path::parent)
            .expect("target dir");
        let mut command = Command::new("bash");
        command
            .arg(&script)
            .env("SKIP_BUILD", "1")
            .env("CARGO_TARGET_DIR", target_dir)
            .env("NGINX_BIN", &paths().nginx);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let pipes = [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ];
        let readers = pipes
            .into_iter()
            .map(|mut pipe| {
                let output = output.clone();
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if let Ok(mut o) = output.lock() {
                            o.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                    }
                })
            })
            .collect();
        Script {
            child,
            output,
            readers,
        }
    }

    /// Everything it printed so far (stdout and stderr, interleaved).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits until its output contains `text`; on a timeout or an early exit, stops it and
    /// fails the test with its output.
    pub fn wait_for(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.output().contains(text) {
            if Instant::now() > deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                self.interrupt();
                panic!("no {text:?} in the output:\n{}", self.output());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-C: SIGINT to its process group.
    fn interrupt(&self) {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory-safety preconditions; the group is the script's own.
        unsafe { libc::kill(-pgid, libc::SIGINT) };
    }

    /// Ctrl-C, then waits up to [`WAIT`] for it to exit and for its output to end; true if it
    /// exited.
    pub fn interrupt_and_wait(&mut self) -> bool {
        self.interrupt();
        let stopped = (0..(WAIT.as_millis() / 50)).any(|_| {
            thread::sleep(Duration::from_millis(50));
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        stopped
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt_and_wait();
        }
    }
}
