//! Syscalls per request: `strace -c` of the workers, with and without `set_backend`.

use std::thread;
use std::time::Duration;

use set_backend_tests::*;

/// `strace -c` of both workers while `requests` requests go to `path`: syscall name → calls.
fn strace_requests(
    n: &Nginx,
    pids: &std::collections::BTreeSet<String>,
    host: &str,
    path: &str,
    requests: usize,
) -> Option<std::collections::BTreeMap<String, u64>> {
    use std::process::{Command, Stdio};
    let out = n
        .path()
        .join(format!("strace{}.txt", path.replace('/', "-")));
    let mut cmd = Command::new("strace");
    cmd.arg("-f").arg("-c").arg("-o").arg(&out);
    for p in pids {
        cmd.arg("-p").arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    // Attaching is quick; give it a moment, then check that it is still there.
    thread::sleep(Duration::from_millis(500));
    if child.try_wait().ok()?.is_some() {
        return None;
    }
    for _ in 0..requests {
        let r = n.get(host, path);
        assert_eq!(r.status, 200, "{r:?}");
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    child.wait().ok()?;
    let text = std::fs::read_to_string(&out).ok()?;
    eprintln!("---- strace -c, {requests} requests to {path} ----\n{text}");
    let mut calls = std::collections::BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if cols.len() >= 5 && cols[0].parse::<f64>().is_ok() && cols[cols.len() - 1] != "total" {
            let name = cols[cols.len() - 1].to_string();
            if let Ok(c) = cols[3].parse::<u64>() {
                calls.insert(name, c);
            }
        }
    }
    Some(calls)
}

#[test]
fn set_backend_adds_no_syscalls_per_request() {
    let strace_works = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok();
    if !strace_works {
        eprintln!("SKIPPED: strace is not installed");
        return;
    }
    let a = Upstream::start("a");
    let (_data, table, _w) = table_with(&[("measured.example", &a.addr())]);
    let n = Nginx::start(|port, _| {
        format!(
            "set_backend_table {table};
             upstream set_backend {{ set_backend_peer; keepalive 8; }}
             upstream fixed {{ server {addr}; keepalive 8; }}
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 add_header X-Worker $pid always;
                 location = / {{
                     return 200 'ok';
                 }}
                 location /set_backend {{
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                 }}
                 location /set {{
                     set $fixed {addr};
                     proxy_pass http://$fixed$request_uri;
                 }}
                 location /fixed {{
                     proxy_pass http://{addr};
                 }}
                 location /peer {{
                     proxy_pass http://set_backend;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                 }}
                 location /keepalive {{
                     proxy_pass http://fixed;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                 }}
             }}",
            table = table.display(),
            addr = a.addr()
        )
    });
    let pids = n.every_worker("measured.example", |r| r.status == 200);
    let paths = ["/set_backend", "/set", "/fixed", "/peer", "/keepalive"];
    for path in paths {
        for _ in 0..20 {
            assert_eq!(n.get("measured.example", path).status, 200);
        }
    }
    const N: usize = 300;
    let mut totals = Vec::new();
    let mut tables = Vec::new();
    for path in paths {
        let Some(calls) = strace_requests(&n, &pids, "measured.example", path, N) else {
            eprintln!("SKIPPED: strace cannot attach to the workers here");
            return;
        };
        let total: u64 = calls.values().sum();
        eprintln!(
            "{path}: {total} syscalls for {N} requests = {:.2} per request",
            total as f64 / N as f64
        );
        totals.push(total);
        tables.push(calls);
    }
    // The same syscalls with and without set_backend: nothing opens, maps or stats a file per
    // request. The only extra calls allowed are the 5-second timer's `stat` (one per worker).
    // The per-connection calls match (within a few retries under load); reads and waits
    // depend on timing. Variable mode is compared with `set`, upstream mode with a static
    // `upstream {}` with the same `keepalive`.
    let compare = |with: &std::collections::BTreeMap<String, u64>,
                   baseline: &std::collections::BTreeMap<String, u64>,
                   what: &str| {
        for (name, count) in with {
            match baseline.get(name) {
                Some(base)
                    if ["accept4", "socket", "connect", "close"].contains(&name.as_str()) =>
                {
                    assert!(
                        count.abs_diff(*base) <= base / 50 + 2,
                        "{what}: {name}: {count}, {base} without"
                    )
                }
                Some(_) => {}
                None if name.contains("stat") && *count <= 2 => {}
                None if ["socket", "connect", "getsockopt", "ioctl"].contains(&name.as_str())
                    && *count <= 4 => {} // a keepalive connection (re)opened
                None => panic!("{what} made {count} {name} calls, the baseline none"),
            }
        }
    };
    compare(&tables[0], &tables[1], "set_backend");
    compare(&tables[3], &tables[4], "upstream mode");
    assert!(
        totals[0] <= totals[1] + totals[1] / 20,
        "set_backend: {} syscalls, `set`: {}",
        totals[0],
        totals[1]
    );
    assert!(
        totals[3] <= totals[4] + totals[4] / 20,
        "upstream mode: {} syscalls, static upstream with keepalive: {}",
        totals[3],
        totals[4]
    );
    // Keepalive at work: no connection to the upstream per request.
    let connects = tables[3].get("connect").copied().unwrap_or(0);
    assert!(
        connects <= 4,
        "upstream mode: {connects} connect calls for {N} requests"
    );
    n.assert_clean_log();
}
