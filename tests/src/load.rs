//! [`Load`]: clients requesting routed hosts through nginx non-stop while a test does something
//! to nginx or the writer; every answer must come from the expected upstream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use std::time::Duration;

use crate::{get, Nginx, Upstream};

/// Clients sending `GET /` for `hosts` on new connections, round robin, until stopped: every
/// answer must come from `upstream` (200 and its body), or from one of a set's upstreams
/// ([`Load::start_any`]). Counts successes and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16, hosts: &[String], upstream: &str, clients: usize) -> Load {
        Load::start_any(port, hosts, &[upstream], clients)
    }

    /// [`Load::start`] where an answer from any of `upstreams` is a success.
    pub fn start_any(port: u16, hosts: &[String], upstreams: &[&str], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..clients)
            .map(|c| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let hosts = hosts.to_vec();
                let prefixes: Vec<String> =
                    upstreams.iter().map(|u| format!("upstream={u} ")).collect();
                thread::spawn(move || {
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        i = (i + 1) % hosts.len();
                        match get(port, &hosts[i], "/") {
                            Ok(r)
                                if r.status == 200
                                    && prefixes.iter().any(|p| r.body.starts_with(p)) =>
                            {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                                    eprintln!("failed request for {}: {other:?}", hosts[i]);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Failed requests so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Successful requests so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients: (successful, failed) requests.
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load client");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Four clients send requests for `host` (routed to `upstream`) while nginx reloads three
/// times: every request must succeed, and the log must stay clean.
pub fn reload_under_load(n: &Nginx, host: &str, upstream: &Upstream) {
    let load = Load::start(n.port, &[host.to_string()], &upstream.name, 4);
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(400));
        n.reload();
    }
    thread::sleep(Duration::from_millis(800));
    let (ok, failed) = load.finish();
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(
        n.error_log().matches("reconfiguring").count() >= 1,
        "{}",
        n.error_log()
    );
    n.assert_clean_log();
}
