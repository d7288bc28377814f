//! Upstream mode: `set_backend_peer;` in an `upstream {}` block with the stock `keepalive`,
//! and `proxy_pass http://set_backend;`.

use std::path::Path;
use std::thread;
use std::time::Duration;

use set_backend_tests::*;

#[test]
fn upstream_mode_routes_by_host() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, _w) =
        table_with(&[("site-a.example", &a.addr()), ("site-b.example", &b.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", ""));

    let r = n.get("site-a.example", "/some/page?x=1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "upstream=a host=site-a.example uri=/some/page?x=1");
    assert_eq!(r.header("X-Upstream-Addr"), Some(a.addr().as_str()));
    for host in ["SITE-B.example", "site-b.example:8080", "site-b.example."] {
        let r = n.get(host, "/");
        assert!(body_is(&b)(&r), "{host}: {r:?}");
        assert_eq!(r.header("X-Upstream-Addr"), Some(b.addr().as_str()));
    }
    n.every_worker("site-a.example", body_is(&a));
    n.every_worker("site-b.example", body_is(&b));
    assert!(n.access_log().contains("site-a.example 200 hit"));
    n.assert_clean_log();
}

#[test]
fn upstream_mode_reuses_upstream_connections() {
    let a = Upstream::start("a");
    let (_data, table, _w) = table_with(&[("reused.example", &a.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", ""));

    const N: usize = 200;
    for _ in 0..N {
        assert!(body_is(&a)(&n.get("reused.example", "/")));
    }
    // The upstream counts a request after writing its response, so the last count may land
    // just after the client has the answer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while a.requests() < N && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (requests, connections) = (a.requests(), a.connections());
    eprintln!("{requests} requests over {connections} upstream connections");
    assert_eq!(requests, N);
    // One cached connection per worker, give or take a connection closed meanwhile.
    assert!(
        connections <= 4,
        "{connections} connections for {N} requests"
    );
    n.assert_clean_log();
}

#[test]
fn upstream_mode_switches_a_host_while_old_connections_are_cached() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, mut w) = table_with(&[("moving.example", &a.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", ""));

    for _ in 0..20 {
        assert!(body_is(&a)(&n.get("moving.example", "/")));
    }
    // The upstream counts a request after it wrote the answer: wait until the count of the
    // 20 has landed and holds still.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut before = a.requests();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = a.requests();
        if (now >= 20 && now == before) || std::time::Instant::now() > deadline {
            break;
        }
        before = now;
    }
    assert!(a.connections() <= 4, "{} connections", a.connections());

    upsert(&mut w, "moving.example", &b.addr());
    // The very next request of each worker goes to the new backend, although both workers
    // hold an idle connection to the old one.
    n.every_worker("moving.example", body_is(&b));
    for _ in 0..20 {
        let r = n.get("moving.example", "/");
        assert!(body_is(&b)(&r), "{r:?}");
        assert_eq!(r.header("X-Upstream-Addr"), Some(b.addr().as_str()));
    }
    assert_eq!(
        a.requests(),
        before,
        "the old backend got requests after the update"
    );
    assert!(b.connections() <= 4, "{} connections", b.connections());

    // And back: the cached connections to the first backend are still good.
    upsert(&mut w, "moving.example", &a.addr());
    n.every_worker("moving.example", body_is(&a));
    n.assert_clean_log();
}

#[test]
fn upstream_mode_answers_misses_and_an_unavailable_table_like_variable_mode() {
    let a = Upstream::start("a");
    let (_data, table) = table_in_tempdir();
    // No table yet: 503 with the built-in page, before any upstream is tried.
    let n = Nginx::start(upstream_routed(&table, "", ""));
    let r = n.get("known.example", "/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("Routing is temporarily unavailable."),
        "{r:?}"
    );
    assert_eq!(
        r.header("X-Upstream-Addr"),
        None,
        "no upstream was tried: {r:?}"
    );

    let _w = write_table(&table, &[("known.example", &a.addr())]);
    n.wait_every_worker("known.example", body_is(&a));

    let r = n.get("unknown.example", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("There isn't a site here."), "{r:?}");
    assert_eq!(
        r.header("X-Upstream-Addr"),
        None,
        "no upstream was tried: {r:?}"
    );
    let h = request(n.port, "HEAD", "unknown.example", "/", &[], None).expect("HEAD");
    assert_eq!(h.status, 404);

    let log = n.access_log();
    assert!(log.contains("unknown.example 404 miss"), "{log}");
    assert!(log.contains("known.example 503 unavailable"), "{log}");
    assert!(!n.error_log().contains("no live upstreams"));
    n.assert_clean_log();
}

#[test]
fn upstream_mode_gives_502_for_a_dead_backend_and_504_for_a_slow_one() {
    let (_data, table) = table_in_tempdir();
    let (_w, dead, _slow) = failing_backends(&table);
    let n = Nginx::start(upstream_routed(
        &table,
        "",
        &format!("{ERROR_PAGES} proxy_read_timeout 300ms;"),
    ));

    assert_error_pages(&n);
    assert!(n.error_log().contains("upstream timed out"));
    let r = n.get("down.example", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("X-Upstream-Addr"),
        Some(format!("127.0.0.1:{dead}").as_str())
    );
    let refused = n
        .error_log()
        .lines()
        .filter(|l| l.contains("connect() failed") && l.contains("down.example"))
        .count();
    // Two requests to the dead backend, each with a single try whatever proxy_next_upstream
    // allows.
    assert_eq!(refused, 2, "{}", n.error_log());
    n.assert_clean_log();
}

#[test]
fn upstream_mode_refuses_a_host_name_backend_with_502_and_one_error_line() {
    let a = Upstream::start("a");
    let (_data, table) = table_in_tempdir();
    let named = format!("localhost:{}", a.port);
    let _w = write_table(
        &table,
        &[("named.example", &named), ("ip.example", &a.addr())],
    );
    let n = Nginx::start(upstream_routed(&table, "", ""));

    let r = n.get("named.example", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("X-Upstream-Addr"), Some(named.as_str()));
    assert_eq!(a.requests(), 0);
    let log = n.error_log();
    let lines = lines_with(&log, "set_backend: backend");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("[error]")
            && lines[0].contains(&format!(
                "set_backend: backend \"{named}\" is a host name: upstream mode connects to IP addresses only"
            ))
            && lines[0].contains("host: \"named.example\""),
        "{log}"
    );
    assert!(!log.contains("no live upstreams"), "{log}");
    assert!(n.access_log().contains("named.example 502 hit"));
    // IP literals next to it still route.
    assert!(body_is(&a)(&n.get("ip.example", "/")));
    n.assert_clean_log();
}

#[test]
fn upstream_mode_miss_continue_reaches_the_upstream_and_fails_with_502() {
    let a = Upstream::start("a");
    let (_data, table, _w) = table_with(&[("known.example", &a.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", "set_backend_miss continue;"));
    let r = n.get("other.example", "/");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        n.error_log().contains(
            "set_backend: backend \"set_backend\" is empty: the host is not in the table"
        ),
        "{}",
        n.error_log()
    );
    assert!(body_is(&a)(&n.get("known.example", "/")));
    n.assert_clean_log();
}

#[test]
fn upstream_mode_reload_while_requests_flow_fails_none() {
    let a = Upstream::start("a");
    let (_data, table, _w) = table_with(&[("steady.example", &a.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", ""));
    n.every_worker("steady.example", body_is(&a));
    reload_under_load(&n, "steady.example", &a);
    assert!(
        a.connections() < a.requests() / 10,
        "{} connections for {} requests",
        a.connections(),
        a.requests()
    );
}

#[test]
fn upstream_mode_config_errors_are_reported() {
    let cases = [
        (
            "upstream u { keepalive 8; set_backend_peer; }",
            "\"set_backend_peer\" directive must come before \"keepalive\" and any other balancer in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer; set_backend_peer; }",
            "\"set_backend_peer\" directive is duplicate in DIR/nginx.conf:",
        ),
        (
            "upstream u { server 127.0.0.1:1; set_backend_peer; }",
            "\"set_backend_peer\" directive cannot be used with \"server\" in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer; server 127.0.0.1:1; }",
            "\"server\" cannot be used with \"set_backend_peer\" in upstream \"u\" in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer; zone u 64k; }",
            "\"zone\" cannot be used with \"set_backend_peer\" in upstream \"u\" in DIR/nginx.conf:",
        ),
        (
            "server { listen 127.0.0.1:1; set_backend_peer; }",
            "\"set_backend_peer\" directive is not allowed here in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer x; }",
            "invalid parameter \"x\" in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer max_fails=three; }",
            "invalid parameter \"max_fails=three\" in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer fail_timeout=10q; }",
            "invalid parameter \"fail_timeout=10q\" in DIR/nginx.conf:",
        ),
        (
            "upstream u { set_backend_peer max_fails=2 max_fails=3; }",
            "invalid parameter \"max_fails=3\" in DIR/nginx.conf:",
        ),
    ];
    assert_nginx_t_rejects(&cases);
    let (ok, stderr) = nginx_t(
        "upstream u { set_backend_peer; keepalive 8; keepalive_timeout 30s; }
         upstream v { set_backend_peer max_fails=3 fail_timeout=1m30s; keepalive 8; }
         upstream w { set_backend_peer max_fails=0 fail_timeout=500ms; }
         server { listen 127.0.0.1:1; location / { proxy_pass http://u; } }
         server { listen 127.0.0.1:2; location / { proxy_pass http://v; } }
         server { listen 127.0.0.1:3; location / { proxy_pass http://w; } }",
    );
    assert!(ok, "{stderr}");
}

#[test]
fn upstream_mode_connects_to_an_ipv6_backend() {
    use std::io::{Read, Write};
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    };
    let port = listener.local_addr().expect("local_addr").port();
    // One answer per connection, `Connection: close`: enough to see where nginx connected.
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = "upstream=v6";
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let (_data, table) = table_in_tempdir();
    let backend = format!("[::1]:{port}");
    let _w = write_table(&table, &[("six.example", &backend)]);
    let n = Nginx::start(upstream_routed(&table, "", ""));
    let r = n.get("six.example", "/");
    assert_eq!((r.status, r.body.as_str()), (200, "upstream=v6"), "{r:?}");
    assert_eq!(r.header("X-Upstream-Addr"), Some(backend.as_str()));
    n.assert_clean_log();
}

/// The upstream-mode server in front of `https://` backends, sending each request's host as
/// the server name (SNI), and beside it the TLS backend of [`tls_backend`] answering `body`.
fn https_upstream_mode(
    table: &Path,
    tls_port: u16,
    body: &str,
) -> Option<impl Fn(u16, &Path) -> String> {
    let dir = table.parent()?.to_path_buf();
    let cert = self_signed(&dir, "tls.example")?;
    let (table, body) = (table.to_path_buf(), body.to_string());
    Some(move |port, _: &Path| {
        format!(
            "set_backend_table {table};
             upstream set_backend {{ set_backend_peer; keepalive 16; }}
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 add_header X-Worker $pid always;
                 location / {{
                     proxy_pass https://set_backend;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                     proxy_set_header Host $host;
                     proxy_ssl_server_name on;
                     proxy_ssl_name $host;
                 }}
             }}
             {backend}",
            table = table.display(),
            backend = tls_backend(tls_port, &cert, &body, &dir.join("tls.log")),
        )
    })
}

#[test]
fn upstream_mode_proxies_to_an_https_backend_and_keeps_its_connection() {
    let (data, table) = table_in_tempdir();
    let tls_port = free_port();
    let _w = write_table(&table, &[("tls.example", &format!("127.0.0.1:{tls_port}"))]);
    let Some(conf) = https_upstream_mode(&table, tls_port, "tls backend: $host $ssl_protocol")
    else {
        eprintln!("SKIPPED: openssl cannot make a certificate here");
        return;
    };
    let n = Nginx::start(conf);
    for _ in 0..20 {
        let r = n.get("tls.example", "/");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.starts_with("tls backend: tls.example TLS"), "{r:?}");
    }
    // Reused connections: one per worker at most, whatever the 20 requests.
    let connections = tls_connections(&data.path().join("tls.log"));
    assert!(connections <= 4, "{connections} TLS connections");
    n.assert_clean_log();
}

/// Stock `keepalive` matches cached connections by address alone: without the module's key, a
/// TLS connection opened with one host's server name would serve the next host on the same
/// backend address, and the backend would see the first host's SNI.
#[test]
fn upstream_mode_reuses_a_tls_connection_only_for_the_same_server_name() {
    let (data, table) = table_in_tempdir();
    let tls_port = free_port();
    let backend = format!("127.0.0.1:{tls_port}");
    let hosts = ["one.example", "two.example", "three.example"];
    let entries: Vec<(&str, &str)> = hosts.iter().map(|h| (*h, backend.as_str())).collect();
    let _w = write_table(&table, &entries);
    let Some(conf) = https_upstream_mode(&table, tls_port, "sni=$ssl_server_name host=$host")
    else {
        eprintln!("SKIPPED: openssl cannot make a certificate here");
        return;
    };
    let n = Nginx::start(conf);
    const ROUNDS: usize = 20;
    for _ in 0..ROUNDS {
        for host in hosts {
            let r = n.get(host, "/");
            assert_eq!(
                (r.status, r.body.as_str()),
                (200, format!("sni={host} host={host}").as_str()),
                "a connection opened for another server name served {host}"
            );
        }
    }
    // Still kept alive: a connection per server name and worker, not one per request.
    let connections = tls_connections(&data.path().join("tls.log"));
    assert!(
        connections <= 2 * hosts.len() + 2,
        "{connections} TLS connections for {} requests",
        ROUNDS * hosts.len()
    );
    n.assert_clean_log();
}
