//! [`Etcd`]: a real etcd cluster for the fleet tests, from Debian's `etcd` binary (3.4): N
//! members on free 127.0.0.1 ports below the ephemeral range (a port the kernel handed out for
//! a moment could be taken by any outgoing connection before etcd binds it, or while a member
//! is stopped), each with its data directory in one temporary directory.
//! A member can be SIGKILLed, stopped, restarted with its data; the cluster compacted; its keys
//! read with `etcdctl`. Dropping it stops every member it started.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{show_if_failing, stop_child};
use crate::{free_ports_in_a_row, get, signal, WAIT};

/// Debian's etcd server and client (`etcd-server`, `etcd-client`; scripts/deps.sh).
const ETCD: &str = "etcd";
const ETCDCTL: &str = "etcdctl";

/// One member: its ports, its data, its process while it runs.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True when this member answers `/health` with `"health":"true"` (it has a leader).
    fn healthy(&self) -> bool {
        get(self.client_port, "127.0.0.1", "/health")
            .is_ok_and(|r| r.status == 200 && r.body.contains("\"true\""))
    }
}

/// A running etcd cluster on loopback.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
}

impl Etcd {
    /// Starts `n` members (a new cluster) and waits until every one of them is healthy.
    pub fn start(n: usize) -> Etcd {
        require_etcd();
        let dir = tempfile::Builder::new()
            .prefix("set-backend-etcd.")
            .tempdir()
            .expect("tempdir");
        let base = free_ports_in_a_row(2 * n as u16);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: base + 2 * i as u16,
                peer_port: base + 2 * i as u16 + 1,
                data_dir: dir.path().join(format!("m{i}.etcd")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut etcd = Etcd {
            dir,
            members,
            initial_cluster,
            token,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_healthy(i);
        }
        etcd
    }

    /// Starts member `i` (a new member or one restarting on its data: etcd then ignores the
    /// initial cluster flags and rejoins with what its data directory says).
    fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        assert!(m.child.is_none(), "etcd member {} already runs", m.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let child = Command::new(ETCD)
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Waits until member `i` is healthy (fails the test, with its log, if it exits or does not
    /// get there within [`WAIT`]).
    pub fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = &mut self.members[i];
            if m.healthy() {
                return;
            }
            if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
                panic!("etcd member {} exited: {st}\n{}", m.name, m.log());
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not get healthy\n{}",
                m.name,
                m.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Always false: a cluster has at least one member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, comma-separated (the writer's `--etcd` value), whether it
    /// runs or not.
    pub fn endpoints(&self) -> String {
        self.urls(|_| true)
    }

    /// The client URLs of the members that run now.
    pub fn live_endpoints(&self) -> String {
        self.urls(|m| m.child.is_some())
    }

    fn urls(&self, keep: impl Fn(&Member) -> bool) -> String {
        self.members
            .iter()
            .filter(|m| keep(m))
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Member `i`'s pid while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// SIGKILLs member `i` by its pid and reaps it (its data stays, for [`Etcd::restart`]).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            signal(c.id() as i32, libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops member `i` gracefully (SIGTERM; SIGKILL if it is still running after [`WAIT`]).
    pub fn stop(&mut self, i: usize) {
        stop_child(&mut self.members[i].child, libc::SIGTERM, libc::SIGKILL);
    }

    /// Stops every member.
    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }

    /// Starts member `i` again on its ports and its data, and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Starts every stopped member again and waits until all are healthy (all at once: a
    /// single member of a stopped cluster has no quorum, so it cannot get healthy alone).
    pub fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_none())
            .collect();
        for &i in &stopped {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
    }

    /// Runs `etcdctl ARGS` against the running members; returns its stdout, fails the test on a
    /// non-zero exit.
    pub fn ctl(&self, args: &[&str]) -> String {
        ctl_output(self.ctl_command(args), args)
    }

    /// Runs `etcdctl ARGS` against member `i` alone (with `--consistency=s`, a read answers
    /// from that member's own data).
    pub fn ctl_at(&self, i: usize, args: &[&str]) -> String {
        ctl_output(etcdctl(&self.members[i].client_url(), args), args)
    }

    /// `etcdctl ARGS` on the running members, to run (or to expect failing) as the caller likes.
    pub fn ctl_command(&self, args: &[&str]) -> Command {
        etcdctl(&self.live_endpoints(), args)
    }

    /// `etcdctl put KEY VALUE`.
    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.range(key, false).pop().map(|(_, v)| v)
    }

    /// Every key under `prefix` and its value, in key order. The values are one line each
    /// (etcdctl's simple output; the writer stores single-line JSON).
    pub fn prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.range(prefix, true)
    }

    fn range(&self, key: &str, prefix: bool) -> Vec<(String, String)> {
        let mut args = vec!["get", key];
        if prefix {
            args.push("--prefix");
        }
        let out = self.ctl(&args);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines.len().is_multiple_of(2),
            "etcdctl get {key}: a value spans lines\n{out}"
        );
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["get", "revision-probe", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no revision in {out}"))
    }

    /// Compacts the key history up to `revision` (physically: watches from before it fail with
    /// `compact_revision` from then on).
    pub fn compact(&self, revision: i64) {
        self.ctl(&["compact", &revision.to_string(), "--physical"]);
    }

    /// The members' logs, one after the other.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("== {} ==\n{}", m.name, m.log()))
            .collect()
    }

    /// The temporary directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
        show_if_failing("etcd logs", || self.logs());
    }
}

/// `etcdctl --endpoints ENDPOINTS ARGS` (v3 API, bounded timeouts).
fn etcdctl(endpoints: &str, args: &[&str]) -> Command {
    let mut c = Command::new(ETCDCTL);
    c.env("ETCDCTL_API", "3")
        .arg("--endpoints")
        .arg(endpoints)
        .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Runs an etcdctl command; its stdout, or the test fails with its stderr.
fn ctl_output(mut c: Command, args: &[&str]) -> String {
    let out = c.output().expect("run etcdctl");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The tests need Debian's etcd; a missing binary fails them, loudly.
fn require_etcd() {
    let found = Command::new(ETCD)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{ETCD}` not found: install Debian's etcd-server and etcd-client (make deps)"
    );
}
