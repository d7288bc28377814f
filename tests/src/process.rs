//! Processes and ports: free ports, shared temporary directories, signals, bounded waits and the
//! graceful stop of a child (never SIGKILL, except where a test kills the writer on purpose).

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use crate::WAIT;

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The first of `n` consecutive ports free a moment ago on 127.0.0.1, below the ephemeral range
/// (the scripts number their ports from one base: `make fleet`'s PORT and ETCD_PORT).
pub fn free_ports_in_a_row(n: u16) -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = (std::process::id() ^ nanos) as u16;
    (0..2000u16)
        .map(|i| 20000 + (seed.wrapping_add(i.wrapping_mul(7919)) % 12000))
        .find(|&base| (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .expect("a run of free ports")
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

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `sig` to `pid` (a child of the test, or an nginx master it started).
pub fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// True while `pid` exists and is not a zombie (masters that are not our children are reaped
/// by whoever adopted them, maybe late).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits until `f` holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
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

/// On a failing test, prints `what` (a log) under a banner naming it.
pub(crate) fn show_if_failing(name: &str, what: impl FnOnce() -> String) {
    if thread::panicking() {
        eprintln!("---- {name} ----\n{}---- end of {name} ----", what());
    }
}

/// Stops `child` (if still held) with `first`, then with `then` if it is still running after
/// [`WAIT`]; never SIGKILL.
pub(crate) fn stop_child(child: &mut Option<Child>, first: libc::c_int, then: libc::c_int) {
    if let Some(mut c) = child.take() {
        signal(c.id() as i32, first);
        if !wait_exit(&mut c, WAIT) {
            signal(c.id() as i32, then);
            wait_exit(&mut c, WAIT);
        }
    }
}

/// A port nothing listens on, below the ephemeral range: a free ephemeral port can become the
/// source port of nginx's own connection to it, which then connects to itself (a 504, not 502).
pub fn dead_port() -> u16 {
    (1..1024)
        .find(|&p| {
            std::net::TcpStream::connect(("127.0.0.1", p))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .expect("a refused port below 1024")
}
