//! End to end: real nginx (2 workers) with the module, tables on disk, upstream servers, and the
//! writer daemon for the API tests. Upstream mode (`set_backend_peer`) is in `e2e/upstream_mode.rs`, the reliability suite (faults, hostile files, abuse; `RELIABILITY.md`) in `e2e/reliability.rs`. Each test checks `error.log` for `[alert]`, `[crit]` and
//! `[emerg]` at the end.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

#[path = "e2e/upstream_mode.rs"]
mod upstream_mode;

#[path = "e2e/reliability.rs"]
mod reliability;

/// The usual server: every host routed by `set_backend`, answers tagged with the worker's pid.
fn routed(table: &Path) -> impl Fn(u16, &Path) -> String + '_ {
    move |port, _dir| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 location / {{
                     set_backend $backend;
                     add_header X-Worker $pid always;
                     add_header X-Backend $backend always;
                     proxy_pass http://$backend$request_uri;
                 }}
             }}",
            table = table.display()
        )
    }
}

/// A port nothing listens on, below the ephemeral range: a free ephemeral port can become the
/// source port of nginx's own connection to it, which then connects to itself (a 504, not 502).
fn dead_port() -> u16 {
    (1..1024)
        .find(|&p| {
            std::net::TcpStream::connect(("127.0.0.1", p))
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .expect("a refused port below 1024")
}

/// The sample configuration's `error_page` lines (the pages are under `html/`).
const ERROR_PAGES: &str = "error_page 404 /__set_backend/404.html;
                           error_page 502 /__set_backend/502.html;
                           error_page 503 /__set_backend/503.html;
                           error_page 504 /__set_backend/504.html;";

/// Backends for the 502 and 504 pages: `down.example` on a refused port, `slow.example` on
/// an upstream that answers after 3 s. Returns the table's writer (keep it), the dead port and
/// the slow upstream.
fn failing_backends(table: &Path) -> (TableWriter, u16, Upstream) {
    let dead = dead_port();
    let slow = Upstream::start_with_delay("slow", Duration::from_secs(3));
    let w = write_table(
        table,
        &[
            ("down.example", &format!("127.0.0.1:{dead}")),
            ("slow.example", &slow.addr()),
        ],
    );
    (w, dead, slow)
}

/// The 504, 502 and 404 pages for the hosts of [`failing_backends`], and their statuses in the
/// access log (which survive the redirect to the error page's location).
fn assert_error_pages(n: &Nginx) {
    let r = n.get("slow.example", "/");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        r.body.contains("This site is taking too long to answer."),
        "{r:?}"
    );
    let r = n.get("down.example", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(r.body.contains("This site is not answering."), "{r:?}");
    let r = n.get("unknown.example", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("There isn't a site here."), "{r:?}");
    let log = n.access_log();
    assert!(log.contains("unknown.example 404 miss"), "{log}");
    assert!(log.contains("down.example 502 hit"), "{log}");
}

fn body_is(upstream: &Upstream) -> impl Fn(&Response) -> bool + '_ {
    move |r| r.status == 200 && r.body.starts_with(&format!("upstream={} ", upstream.name))
}

#[test]
fn routes_by_host_whatever_its_case_port_or_trailing_dot() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(
        &table,
        &[("site-a.example", &a.addr()), ("site-b.example", &b.addr())],
    );
    let n = Nginx::start(routed(&table));

    let r = n.get("site-a.example", "/some/page?x=1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        "upstream=a host=127.0.0.1:".to_string() + &a.port.to_string() + " uri=/some/page?x=1"
    );
    assert_eq!(r.header("X-Backend"), Some(a.addr().as_str()));
    for host in [
        "SITE-B.example",
        "site-b.example:8080",
        "site-b.example.",
        "Site-B.Example.:80",
    ] {
        let r = n.get(host, "/");
        assert!(body_is(&b)(&r), "{host}: {r:?}");
    }
    // An absolute URI in the request line names the host too, as for $host.
    let r = n.get("site-a.example", "http://site-b.example/abs");
    assert!(body_is(&b)(&r), "{r:?}");

    let log = n.access_log();
    assert!(log.contains("site-a.example 200 hit"), "{log}");
    n.assert_clean_log();
}

#[test]
fn unknown_host_gets_the_404_page_and_a_miss_in_the_log() {
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("known.example", &a.addr())]);
    let n = Nginx::start(routed(&table));

    let r = n.get("unknown.example", "/");
    assert_eq!(r.status, 404);
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{r:?}"
    );
    assert!(r.body.contains("There isn't a site here."), "{}", r.body);
    assert_eq!(r.header("X-Worker").map(|w| !w.is_empty()), Some(true));

    // HEAD gets the status and headers only.
    let h = request(n.port, "HEAD", "unknown.example", "/", &[], None).expect("HEAD");
    assert_eq!(h.status, 404);
    assert!(h.body.is_empty());

    // A request without a usable host is a miss as well (HTTP/1.0, no Host header).
    let r = http10_without_host(n.port);
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");

    let log = n.access_log();
    assert!(log.contains("unknown.example 404 miss"), "{log}");
    n.assert_clean_log();
}

fn http10_without_host(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn an_update_is_seen_by_every_worker_and_a_delete_gives_404() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let data = shared_tempdir();
    let table = data.path().join("table");
    let mut w = write_table(&table, &[("moving.example", &a.addr())]);
    let n = Nginx::start(routed(&table));

    let pids = n.every_worker("moving.example", body_is(&a));
    assert_eq!(pids.len(), 2);

    upsert(&mut w, "moving.example", &b.addr());
    // The update is in shared memory: the very next request of each worker sees it.
    n.every_worker("moving.example", body_is(&b));

    upsert(&mut w, "new.example", &a.addr());
    n.every_worker("new.example", body_is(&a));

    assert!(w
        .delete(&Host::parse("moving.example").expect("host"))
        .expect("delete"));
    n.every_worker("moving.example", |r| r.status == 404);
    n.every_worker("new.example", body_is(&a));
    n.assert_clean_log();
}

#[test]
fn a_new_generation_is_remapped_by_every_worker() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let data = shared_tempdir();
    let table = data.path().join("table");
    let mut w = write_table(&table, &[("first.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("first.example", body_is(&a));

    // Grow the table well past its first capacity: several new generations.
    let generation = w.generation();
    for i in 0..5000 {
        upsert(&mut w, &format!("host-{i}.example"), &b.addr());
    }
    assert!(w.generation() > generation, "the table did not grow");
    n.every_worker("host-4999.example", body_is(&b));
    n.every_worker("first.example", body_is(&a));

    // A whole new file at the path (as after a writer restart) is picked up as well.
    drop(w);
    let _w2 = write_table(&table, &[("first.example", &b.addr())]);
    n.wait_every_worker("first.example", body_is(&b));
    n.assert_clean_log();
}

#[test]
fn a_file_replaced_without_the_superseded_flag_is_noticed_by_the_timer() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("swapped.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("swapped.example", body_is(&a));

    // As if a writer died between its rename and setting `superseded` in the old file.
    let elsewhere = data.path().join("other");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    drop(write_table(
        &elsewhere.join("table"),
        &[("swapped.example", &b.addr())],
    ));
    std::fs::rename(elsewhere.join("table"), &table).expect("rename");
    let started = Instant::now();
    n.wait_every_worker("swapped.example", body_is(&b));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    n.assert_clean_log();
}

#[test]
fn a_missing_table_gives_503_until_it_appears() {
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    let n = Nginx::start(routed(&table));

    let r = n.get("late.example", "/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("Routing is temporarily unavailable."),
        "{}",
        r.body
    );
    // Once per worker, at error level.
    let log = n.error_log();
    let lines = log
        .lines()
        .filter(|l| l.contains("set_backend: cannot map table"))
        .count();
    assert_eq!(lines, 2, "{log}");
    assert!(log
        .lines()
        .filter(|l| l.contains("cannot map"))
        .all(|l| l.contains("[error]")));

    let _w = write_table(&table, &[("late.example", &a.addr())]);
    n.wait_every_worker("late.example", body_is(&a));
    // Retries are silent: still one line per worker.
    let log = n.error_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("set_backend: cannot map table"))
            .count(),
        2
    );
    assert!(n.access_log().contains("late.example 503 unavailable"));
    n.assert_clean_log();
}

#[test]
fn a_corrupt_table_gives_503_and_never_crashes_a_worker() {
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    // Garbage of a plausible size, then a valid table with a damaged header.
    std::fs::write(&table, vec![0x5a; 64 * 1024]).expect("write garbage");
    let n = Nginx::start(routed(&table));
    let pids = n.every_worker("any.example", |r| r.status == 503);
    let log = n.error_log();
    assert!(log.contains("not a set-backend table"), "{log}");

    std::fs::remove_file(&table).expect("rm");
    drop(write_table(&table, &[("any.example", &a.addr())]));
    let mut bytes = std::fs::read(&table).expect("read table");
    bytes[100] ^= 0xff; // inside the checksummed header
    let tmp = data.path().join("table.tmp");
    std::fs::write(&tmp, &bytes).expect("write");
    std::fs::rename(&tmp, &table).expect("rename");
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(n.get("any.example", "/").status, 503);

    std::fs::remove_file(&table).expect("rm");
    let _w = write_table(&table, &[("any.example", &a.addr())]);
    n.wait_every_worker("any.example", body_is(&a));
    // The same workers: none crashed.
    let now = n.every_worker("any.example", body_is(&a));
    assert_eq!(now, pids);
    assert!(!n.error_log().contains("exited on signal"));
    n.assert_clean_log();
}

#[test]
fn miss_and_unavailable_can_continue_to_a_fallback() {
    let (a, fallback) = (Upstream::start("a"), Upstream::start("fallback"));
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("known.example", &a.addr())]);
    let n = Nginx::start(|port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 add_header X-Worker $pid always;
                 set_backend_miss continue;
                 location / {{
                     set_backend $backend;
                     if ($backend = '') {{ set $backend {fallback}; }}
                     proxy_pass http://$backend$request_uri;
                 }}
                 location /paged/ {{
                     set_backend $backend;
                     set_backend_miss 404;
                     error_page 404 /__set_backend/404.html;
                     proxy_pass http://$backend$request_uri;
                 }}
                 location /gone/ {{
                     set_backend_miss 410;
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                 }}
                 location /__set_backend/ {{
                     internal;
                     alias html/;
                 }}
                 location /off/ {{
                     set_backend off;
                     return 200 'off:$backend';
                 }}
             }}",
            table = table.display(),
            fallback = fallback.addr()
        )
    });
    assert!(body_is(&a)(&n.get("known.example", "/")));
    let r = n.get("other.example", "/x");
    assert!(body_is(&fallback)(&r), "{r:?}");

    // error_page takes over from the built-in page.
    let r = n.get("other.example", "/paged/");
    assert_eq!(r.status, 404);
    assert!(r.body.contains("There isn't a site here."), "{r:?}");
    // A status without a built-in page gets nginx's own.
    let r = n.get("other.example", "/gone/");
    assert_eq!(r.status, 410);
    // `off` stops the refusal; the variable still holds the lookup where it is used.
    let r = n.get("other.example", "/off/");
    assert_eq!((r.status, r.body.as_str()), (200, "off:"));
    let r = n.get("known.example", "/off/");
    assert_eq!(r.body, format!("off:{}", a.addr()));
    n.assert_clean_log();
}

#[test]
fn set_backend_works_in_if_and_stays_out_of_other_servers() {
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("iffy.example", &a.addr())]);
    let n = Nginx::start(|port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 add_header X-Worker $pid always;
                 location / {{
                     if ($http_x_route) {{
                         set_backend $routed;
                     }}
                     proxy_pass http://$routed$request_uri;
                 }}
                 location /status {{
                     return 200 'status=$set_backend_status';
                 }}
             }}
             server {{
                 listen 127.0.0.1:{port};
                 server_name static.example;
                 location / {{ return 200 'static'; }}
             }}",
            table = table.display()
        )
    });
    let r = request(
        n.port,
        "GET",
        "iffy.example",
        "/",
        &[("X-Route", "1")],
        None,
    )
    .expect("get");
    assert!(body_is(&a)(&r), "{r:?}");
    let r = request(
        n.port,
        "GET",
        "nowhere.example",
        "/",
        &[("X-Route", "1")],
        None,
    )
    .expect("get");
    assert_eq!(r.status, 404);
    // Outside the `if`, nothing refuses the request: the empty variable fails proxy_pass.
    let r = n.get("nowhere.example", "/");
    assert_eq!(r.status, 500, "{r:?}");
    let r = n.get("iffy.example", "/status");
    assert_eq!(
        r.body, "status=",
        "$set_backend_status is empty where set_backend is not used"
    );
    assert_eq!(n.get("static.example", "/").body, "static");
    n.assert_clean_log();
}

#[test]
fn the_sample_error_pages_are_served_through_error_page() {
    let data = shared_tempdir();
    let table = data.path().join("table");
    let (_w, _dead, _slow) = failing_backends(&table);
    let n = Nginx::start(|port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 {ERROR_PAGES}
                 location / {{
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                     proxy_read_timeout 300ms;
                 }}
                 location /__set_backend/ {{
                     internal;
                     alias html/;
                 }}
             }}",
            table = table.display()
        )
    });
    assert_error_pages(&n);
    // A refused connection is logged at error level by nginx, which is expected here.
    n.assert_clean_log();
}

#[test]
fn config_errors_are_reported_with_file_and_line() {
    let cases = [
        (
            "server { listen 127.0.0.1:1; location / { set_backend $a; set_backend $b; } }",
            "\"set_backend\" directive is duplicate in DIR/nginx.conf:",
        ),
        (
            "server { listen 127.0.0.1:1; location / { set_backend a; } }",
            "invalid variable name \"a\" in DIR/nginx.conf:",
        ),
        (
            "server { listen 127.0.0.1:1; set_backend_miss 200; }",
            "invalid value \"200\" in \"set_backend_miss\" directive in DIR/nginx.conf:",
        ),
        (
            "set_backend_unavailable sometimes;",
            "invalid value \"sometimes\" in \"set_backend_unavailable\" directive in DIR/nginx.conf:",
        ),
        (
            "set_backend_table /a; set_backend_table /b;",
            "\"set_backend_table\" directive is duplicate in DIR/nginx.conf:",
        ),
        (
            "server { listen 127.0.0.1:1; set_backend_table /a; }",
            "\"set_backend_table\" directive is not allowed here in DIR/nginx.conf:",
        ),
        ("set_backend $x;", "\"set_backend\" directive is not allowed here in DIR/nginx.conf:"),
        (
            "server { listen 127.0.0.1:1; set_backend $host; }",
            "the duplicate \"host\" variable in DIR/nginx.conf:",
        ),
    ];
    assert_nginx_t_rejects(&cases);
    let (ok, stderr) = nginx_t(
        "set_backend_table table; set_backend_miss continue;
         server { listen 127.0.0.1:1; set_backend $b; set_backend_unavailable 502;
                  location / { set_backend off; } location /x { set_backend $c; }
                  location /y { set_backend $b; if ($arg_x) { set_backend $b; } } }",
    );
    assert!(ok, "{stderr}");
}

#[test]
fn reload_while_requests_flow_fails_none() {
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("steady.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("steady.example", body_is(&a));
    reload_under_load(&n, "steady.example", &a);
}

/// Four clients send requests for `host` (routed to `upstream`) while nginx reloads three
/// times: every request must succeed, and the log must stay clean.
fn reload_under_load(n: &Nginx, host: &'static str, upstream: &Upstream) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, port, name) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                n.port,
                upstream.name.clone(),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match get(port, host, "/") {
                        Ok(r)
                            if r.status == 200
                                && r.body.starts_with(&format!("upstream={name} ")) =>
                        {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("failed: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(400));
        n.reload();
    }
    thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(
        n.error_log().matches("reconfiguring").count() >= 1,
        "{}",
        n.error_log()
    );
    n.assert_clean_log();
}

// ---------------------------------------------------------------------------------------------
// With the writer daemon
// ---------------------------------------------------------------------------------------------

/// The `make run` layout: `api.$DOMAIN` proxied to the writer's socket, every other host routed.
fn with_api(table: &Path, socket: &Path) -> impl Fn(u16, &Path) -> String {
    let (table, socket) = (table.to_path_buf(), socket.to_path_buf());
    move |port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 server_name api.test.example;
                 add_header X-Worker $pid always;
                 location / {{
                     proxy_pass http://unix:{socket}:;
                     proxy_set_header Host $host;
                 }}
             }}
             server {{
                 listen 127.0.0.1:{port} default_server;
                 add_header X-Worker $pid always;
                 location / {{
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                 }}
             }}",
            table = table.display(),
            socket = socket.display()
        )
    }
}

/// The writer is part of the workspace build; a missing binary fails the test, loudly.
fn require_writer() {
    assert!(
        writer_built(),
        "the writer binary {} is not built: run `cargo build --workspace` (or `make test`)",
        paths().writer.display()
    );
}

const TOKEN: &str = "e2e-test-token-0123456789";

fn api(n: &Nginx, method: &str, path: &str, body: Option<&str>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        n.port,
        method,
        "api.test.example",
        path,
        &[("Authorization", &auth)],
        body,
    )
    .expect("api request")
}

#[test]
fn the_api_through_api_domain_adds_lists_and_deletes() {
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let w = Writer::start(&data.path().join("writer"), TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));

    let body = format!(
        r#"{{"host": "Blog.Example.COM.", "backend": "{}"}}"#,
        a.addr()
    );
    let r = api(&n, "POST", "/entries.json", Some(&body));
    assert!(r.status == 201 || r.status == 200, "{r:?}");
    n.wait_every_worker("blog.example.com", body_is(&a));

    let r = api(&n, "GET", "/entries.json", None);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("blog.example.com") && r.body.contains(&a.addr()),
        "{r:?}"
    );
    let r = api(&n, "GET", "/entries/blog.example.com.json", None);
    assert_eq!(r.status, 200, "{r:?}");

    // Writes need the token.
    let r = request(
        n.port,
        "POST",
        "api.test.example",
        "/entries.json",
        &[],
        Some(&body),
    )
    .expect("post");
    assert_eq!(r.status, 401, "{r:?}");

    let r = api(&n, "DELETE", "/entries/blog.example.com.json", None);
    assert!(r.status == 200 || r.status == 204, "{r:?}");
    n.wait_every_worker("blog.example.com", |r| r.status == 404);
    n.assert_clean_log();
}

#[test]
fn nginx_keeps_serving_while_the_writer_restarts() {
    require_writer();
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let mut w = Writer::start(&dir, TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    let body = format!(
        r#"{{"host": "durable.example", "backend": "{}"}}"#,
        a.addr()
    );
    assert!(api(&n, "POST", "/entries.json", Some(&body)).status < 300);
    n.wait_every_worker("durable.example", body_is(&a));

    w.stop();
    // The mapping outlives the writer.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        assert!(body_is(&a)(&n.get("durable.example", "/")));
    }
    let w = Writer::start(&dir, TOKEN);
    n.every_worker("durable.example", body_is(&a));
    let body = format!(
        r#"{{"host": "durable.example", "backend": "{}"}}"#,
        b.addr()
    );
    assert!(api(&n, "POST", "/entries.json", Some(&body)).status < 300);
    n.wait_every_worker("durable.example", body_is(&b));
    drop(w);
    n.assert_clean_log();
}

// ---------------------------------------------------------------------------------------------
// Syscalls per request
// ---------------------------------------------------------------------------------------------

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
    let data = shared_tempdir();
    let table = data.path().join("table");
    let _w = write_table(&table, &[("measured.example", &a.addr())]);
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

// ---------------------------------------------------------------------------------------------
// make run
// ---------------------------------------------------------------------------------------------

#[test]
fn make_run_serves_the_curl_flow_and_stops_on_ctrl_c() {
    make_run(None);
}

#[test]
fn make_run_in_variable_mode_serves_the_curl_flow() {
    make_run(Some("variable"));
}

/// `scripts/run.sh` with `MODE` (unset: the default, upstream mode): the README's curl flow,
/// then Ctrl-C.
fn make_run(mode: Option<&str>) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    require_writer();
    let run_dir = shared_tempdir();
    let (port, demo) = (free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run.sh");
    let target_dir = paths()
        .module
        .parent()
        .and_then(Path::parent)
        .expect("target dir");
    let mut command = Command::new("bash");
    if let Some(mode) = mode {
        command.env("MODE", mode);
    }
    let mut child = command
        .arg(&script)
        .env("SKIP_BUILD", "1")
        .env("PORT", port.to_string())
        .env("DEMO_PORT", demo.to_string())
        .env("DOMAIN", "run.test")
        .env("API_TOKEN", TOKEN)
        .env("RUN_DIR", run_dir.path())
        .env("CARGO_TARGET_DIR", target_dir)
        .env("NGINX_BIN", &paths().nginx)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/run.sh");
    let output = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
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
    let text = || output.lock().map(|o| o.clone()).unwrap_or_default();
    let pgid = child.id() as libc::pid_t;
    let interrupt = || {
        // SAFETY: kill has no memory-safety preconditions; the group is the script's own.
        unsafe { libc::kill(-pgid, libc::SIGINT) };
    };

    let deadline = Instant::now() + WAIT;
    while !text().contains("Ctrl-C stops both") {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            interrupt();
            panic!("make run did not come up:\n{}", text());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let flow = || {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("Authorization", auth.as_str())];
        let body = format!(r#"{{"host": "example.com", "backend": "127.0.0.1:{demo}"}}"#);
        let r = request(
            port,
            "POST",
            "api.run.test",
            "/entries.json",
            &headers,
            Some(&body),
        )?;
        assert_eq!(r.status, 201, "{r:?}");
        let r = request(port, "GET", "api.run.test", "/entries.json", &headers, None)?;
        assert!(r.body.contains("example.com"), "{r:?}");
        let deadline = Instant::now() + WAIT;
        loop {
            let r = get(port, "Example.com", "/hello")?;
            if r.body.contains("hello from the demo backend") {
                break;
            }
            assert!(Instant::now() < deadline, "not routed: {r:?}");
        }
        let r = request(
            port,
            "DELETE",
            "api.run.test",
            "/entries/example.com.json",
            &headers,
            None,
        )?;
        assert!(r.status < 300, "{r:?}");
        let deadline = Instant::now() + WAIT;
        while get(port, "example.com", "/")?.status != 404 {
            assert!(Instant::now() < deadline, "still routed after the delete");
        }
        Ok::<(), std::io::Error>(())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(flow));
    let nginx_pid: Option<libc::pid_t> = std::fs::read_to_string(run_dir.path().join("nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());

    interrupt();
    let stopped = (0..(WAIT.as_millis() / 50)).any(|_| {
        thread::sleep(Duration::from_millis(50));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    for r in readers {
        let _ = r.join();
    }
    let log = text();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("make run: {e}\n{log}"),
        Err(p) => {
            eprintln!("---- make run output ----\n{log}");
            std::panic::resume_unwind(p);
        }
    }
    assert!(stopped, "make run did not stop on SIGINT:\n{log}");
    if let Some(pid) = nginx_pid {
        // SAFETY: signal 0 only checks that the process exists.
        assert!(
            unsafe { libc::kill(pid, 0) } != 0,
            "nginx {pid} still runs:\n{log}"
        );
    }
    assert!(unix_request(
        &run_dir.path().join("api.sock"),
        "GET",
        "/healthz",
        &[],
        None
    )
    .is_err());
    let routed = match mode {
        Some("variable") => format!("backend=\"127.0.0.1:{demo}\""),
        _ => format!("upstream=127.0.0.1:{demo}"),
    };
    for expected in [
        "[nginx]",
        "[writer]",
        "[access]",
        "set_backend=hit",
        &routed,
        "==> stopped",
    ] {
        assert!(
            log.contains(expected),
            "no {expected:?} in the output:\n{log}"
        );
    }
    for bad in ["[alert]", "[crit]", "[emerg]"] {
        assert!(!log.contains(bad), "{bad} in the output:\n{log}");
    }
}
