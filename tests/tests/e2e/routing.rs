//! Variable mode (`set_backend $backend;`): routing by host, misses and the 404 page, the
//! fallback of a miss or an unavailable table, `if` blocks and other servers, the sample error
//! pages, configuration errors, and a reload while requests flow.

use set_backend_tests::*;

#[test]
fn routes_by_host_whatever_its_case_port_or_trailing_dot() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, _w) =
        table_with(&[("site-a.example", &a.addr()), ("site-b.example", &b.addr())]);
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
    let (_data, table, _w) = table_with(&[("known.example", &a.addr())]);
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
fn miss_and_unavailable_can_continue_to_a_fallback() {
    let (a, fallback) = (Upstream::start("a"), Upstream::start("fallback"));
    let (_data, table, _w) = table_with(&[("known.example", &a.addr())]);
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
                 {PAGES_LOCATION}
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
    let (_data, table, _w) = table_with(&[("iffy.example", &a.addr())]);
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
    let (_data, table) = table_in_tempdir();
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
                 {PAGES_LOCATION}
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
    let (_data, table, _w) = table_with(&[("steady.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("steady.example", body_is(&a));
    reload_under_load(&n, "steady.example", &a);
}
