//! Permissions (`RELIABILITY.md`): who may write the table and the store, connect to the
//! socket, read the token.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::json;
use set_backend_tests::*;

use super::skip_unless_root;

/// Runs `sh -c script` as `uid:gid`; true when it succeeds.
fn as_user(uid: u32, gid: u32, script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn workers_cannot_write_the_table_or_the_store_and_only_nginx_reaches_the_socket() {
    if skip_unless_root(
        "workers_cannot_write_the_table_or_the_store_and_only_nginx_reaches_the_socket",
    ) {
        return;
    }
    require_writer();
    const NOBODY: u32 = 65534; // nginx's workers run as nobody:nogroup in these tests
    const DAEMON: u32 = 1; // any other user
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let w = Writer::start_with_args(
        &dir,
        TOKEN,
        &["--socket-mode", "660", "--socket-group", "nogroup"],
    );
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    let r = api(
        &n,
        "POST",
        "/entries.json",
        Some(&json!({"host": "perm.example", "backend": a.addr()}).to_string()),
    );
    assert!(r.status < 300, "the workers reach the socket: {r:?}");
    n.wait_every_worker("perm.example", body_is(&a));

    let (table, store, socket) = (w.table(), dir.join("store.redb"), w.socket.clone());
    let q = |p: &Path| format!("'{}'", p.display());
    let mut checks = 0;
    let mut check = |what: &str, allowed: bool, uid: u32, script: String| {
        checks += 1;
        assert_eq!(as_user(uid, uid, &script), allowed, "{what}: {script}");
    };
    let read = |p: &Path| format!("cat {} > /dev/null", q(p));
    let write = |p: &Path| format!("printf x >> {}", q(p));
    check("workers read the table", true, NOBODY, read(&table));
    check(
        "workers cannot write the table",
        false,
        NOBODY,
        write(&table),
    );
    check("workers cannot read the store", false, NOBODY, read(&store));
    check(
        "workers cannot write the store",
        false,
        NOBODY,
        write(&store),
    );
    let new_table = dir.join("table.new");
    check(
        "workers cannot replace the table",
        false,
        NOBODY,
        format!("touch {}", q(&new_table)),
    );
    let curl = |p: &Path| {
        format!(
            "curl -sf --max-time 5 --unix-socket {} http://api/healthz",
            q(p)
        )
    };
    check(
        "nginx's user reaches the socket",
        true,
        NOBODY,
        curl(&socket),
    );
    check("another user cannot", false, DAEMON, curl(&socket));
    assert_eq!(
        fs::metadata(&socket).expect("socket").permissions().mode() & 0o777,
        0o660
    );
    assert_eq!(
        fs::metadata(&table).expect("table").permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(&store).expect("store").permissions().mode() & 0o777,
        0o600
    );

    // A generated token file is 0600 and unreadable by the workers.
    let tdir = data.path().join("generated");
    fs::create_dir_all(&tdir).expect("mkdir");
    let mut child = Writer::command(&tdir, None, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let token = tdir.join("token");
    wait_until("the token file", WAIT, || {
        tdir.join("api.sock").exists() && token.exists()
    });
    signal(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
    assert_eq!(
        fs::metadata(&token).expect("token").permissions().mode() & 0o777,
        0o600
    );
    check("workers cannot read the token", false, NOBODY, read(&token));
    eprintln!("RELIABILITY permissions checks={} violations=0", checks + 4);
    n.assert_clean_log();
}
