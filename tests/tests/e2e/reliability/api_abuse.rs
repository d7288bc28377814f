//! API abuse (`RELIABILITY.md`): a battery of bad requests, straight to the writer's socket and
//! through nginx, with the store and the table compared byte for byte.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use set_backend_tests::*;
use shm_layout::testkit::H_HEARTBEAT_MS;

/// The store file's bytes, and the table's without the heartbeat word (which the writer
/// refreshes every second): what a refused request must leave unchanged.
fn snapshot(w: &Writer) -> (Vec<u8>, Vec<u8>) {
    let store = fs::read(w.data_dir.join("store.redb")).expect("read the store");
    let mut table = fs::read(w.table()).expect("read the table");
    table[H_HEARTBEAT_MS..H_HEARTBEAT_MS + 8].fill(0);
    (store, table)
}

/// A raw HTTP/1.1 request (`Connection: close`, `Content-Length` when there is a body).
fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: api.test.example\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// One bad input: the request, the documented status and error code (`|` between accepted
/// codes), and whether to replay it through nginx too.
struct Abuse {
    name: String,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
    via_nginx: bool,
}

fn abuse_battery() -> Vec<Abuse> {
    let auth = format!("Bearer {TOKEN}");
    let json_h: Vec<(&str, &str)> = vec![
        ("Authorization", &auth),
        ("Content-Type", "application/json"),
    ];
    let mut out = Vec::new();
    let mut post = |name: &str, body: &[u8], status: u16, code: &'static str| {
        out.push(Abuse {
            name: name.to_string(),
            request: raw("POST", "/entries.json", &json_h, Some(body)),
            status,
            code,
            via_nginx: true,
        })
    };
    // Malformed and wrongly typed JSON.
    for (name, body) in [
        ("open brace", &b"{"[..]),
        ("not json", b"not json"),
        (
            "truncated",
            br#"{"host": "a.example", "backend": "10.0.0.1:80""#,
        ),
        ("empty body", b""),
        (
            "invalid utf-8",
            b"{\"host\": \"\xff.example\", \"backend\": \"10.0.0.1:80\"}",
        ),
        (
            "trailing garbage",
            br#"{"host": "a.example", "backend": "10.0.0.1:80"} x"#,
        ),
    ] {
        post(name, body, 400, "malformed_json|invalid_body");
    }
    for (name, body) in [
        ("array", &b"[]"[..]),
        ("null", b"null"),
        ("string", br#""a.example""#),
        ("host number", br#"{"host": 1, "backend": "10.0.0.1:80"}"#),
        ("backend number", br#"{"host": "a.example", "backend": 80}"#),
        (
            "host array",
            br#"{"host": ["a.example"], "backend": "10.0.0.1:80"}"#,
        ),
        ("host null", br#"{"host": null, "backend": "10.0.0.1:80"}"#),
        (
            "host object",
            br#"{"host": {"x": 1}, "backend": "10.0.0.1:80"}"#,
        ),
        ("missing backend", br#"{"host": "a.example"}"#),
        ("missing host", br#"{"backend": "10.0.0.1:80"}"#),
        (
            "unknown field",
            br#"{"host": "a.example", "backend": "10.0.0.1:80", "admin": true}"#,
        ),
        (
            "duplicate field",
            br#"{"host": "a.example", "host": "b.example", "backend": "10.0.0.1:80"}"#,
        ),
    ] {
        post(name, body, 400, "invalid_body");
    }
    let deep = "[".repeat(10_000);
    post(
        "nesting 10000 deep",
        deep.as_bytes(),
        400,
        "malformed_json|invalid_body",
    );
    let huge = json!({"host": "a".repeat(20_000), "backend": "10.0.0.1:80"}).to_string();
    post("20 KB entry", huge.as_bytes(), 413, "payload_too_large");
    // Hosts.
    let long_label = format!("{}.example", "x".repeat(64));
    let long_name = format!("{}.example", ["abcdefghi"; 30].join("."));
    for host in [
        "",
        " ",
        ".",
        "a b.example",
        "-a.example",
        "a-.example",
        "a..example",
        long_label.as_str(),
        long_name.as_str(),
        "10.0.0.1",
        "[::1]",
        "a.example/evil",
        "a.example?x=1",
        "a.example#x",
        "a.example\r\nX-Injected: 1",
        "a\u{0}.example",
        "user@a.example",
        "a*.example",
        "*.*.example",
        "example.*",
        "a.example:99999",
        "a.example:",
        "xn--zz.example",
        "xn--.example",
        "ex\u{202e}ample.com",
        "a\u{ff0e}\u{ff0e}example",
        "\u{ff41}\u{ff0f}b.example",
        "a\u{2100}.example",
        "\u{200d}.example",
        "%61.example",
    ] {
        let body = json!({"host": host, "backend": "10.0.0.1:80"}).to_string();
        post(
            &format!("host {host:?}"),
            body.as_bytes(),
            400,
            "invalid_host",
        );
    }
    // Backends.
    let long_backend = format!("{}:80", "x".repeat(300));
    for backend in [
        "",
        "http://10.0.0.1:80",
        "10.0.0.1:80/path",
        "user@10.0.0.1:80",
        "user:pw@10.0.0.1:80",
        "10.0.0.1:80\r\nHost: evil",
        "10.0.0.1 :80",
        " 10.0.0.1:80",
        "10.0.0.1:80 ",
        "10.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "10.0.0.1:-1",
        "10.0.0.1:99999999999",
        "10.0.0.1:80?x",
        "10.0.0.1:80#x",
        "10.0.0.1:80;",
        "$host:80",
        "[::1]",
        "::1:80",
        "[::1:80",
        "999.1.1.1:80",
        "unix:80",
        "unix:/run/set-backend/api.sock",
        long_backend.as_str(),
    ] {
        let body = json!({"host": "ok.example", "backend": backend}).to_string();
        post(
            &format!("backend {backend:?}"),
            body.as_bytes(),
            400,
            "invalid_backend",
        );
    }
    let ok_entry = json!({"host": "ok.example", "backend": "10.0.0.1:80"}).to_string();
    let mut add =
        |name: &str, request: Vec<u8>, status: u16, code: &'static str, via_nginx: bool| {
            out.push(Abuse {
                name: name.to_string(),
                request,
                status,
                code,
                via_nginx,
            })
        };
    let ct = ("Content-Type", "application/json");
    // Content type and size.
    add(
        "text/plain body",
        raw(
            "POST",
            "/entries.json",
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            Some(ok_entry.as_bytes()),
        ),
        415,
        "unsupported_media_type",
        true,
    );
    add(
        "no content type",
        raw(
            "POST",
            "/entries.json",
            &[("Authorization", &auth)],
            Some(ok_entry.as_bytes()),
        ),
        415,
        "unsupported_media_type",
        true,
    );
    let mut claimed = raw(
        "POST",
        "/entries.json",
        &[
            ("Authorization", &auth),
            ct,
            ("Content-Length", "1000000000"),
        ],
        None,
    );
    claimed.extend_from_slice(ok_entry.as_bytes());
    add("claims 1 GB", claimed, 413, "payload_too_large", false);
    let mut claimed = raw(
        "PATCH",
        "/entries.json",
        &[
            ("Authorization", &auth),
            ct,
            ("Content-Length", "100000000"),
        ],
        None,
    );
    claimed.extend_from_slice(b"{\"upsert\": [");
    add(
        "batch claims 100 MB",
        claimed,
        413,
        "payload_too_large",
        false,
    );
    // Tokens.
    let wrong = "Bearer wrong-token-0123456789";
    let short = format!("Bearer {}", &TOKEN[..10]);
    let longer = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for (name, h) in [
        ("no token", None),
        ("wrong token", Some(wrong)),
        ("token prefix", Some(short.as_str())),
        ("token with a suffix", Some(longer.as_str())),
        ("basic scheme", Some(basic.as_str())),
        ("bare token", Some(TOKEN)),
    ] {
        let headers: Vec<(&str, &str)> = h
            .map(|v| ("Authorization", v))
            .into_iter()
            .chain([ct])
            .collect();
        add(
            &format!("POST, {name}"),
            raw("POST", "/entries.json", &headers, Some(ok_entry.as_bytes())),
            401,
            "unauthorized",
            true,
        );
    }
    add(
        "DELETE without token",
        raw("DELETE", "/entries/keep-0.example.json", &[], None),
        401,
        "unauthorized",
        true,
    );
    add(
        "PUT without token",
        raw("PUT", "/entries.json", &[ct], Some(b"[]")),
        401,
        "unauthorized",
        true,
    );
    add(
        "GET list without token",
        raw("GET", "/entries.json", &[], None),
        401,
        "unauthorized",
        true,
    );
    // Methods and routes.
    let a = [("Authorization", auth.as_str())];
    for (method, path) in [
        ("PUT", "/entries/keep-0.example.json"),
        ("POST", "/entries/keep-0.example.json"),
        ("PATCH", "/entries/keep-0.example.json"),
        ("DELETE", "/entries.json"),
        ("POST", "/"),
        ("DELETE", "/healthz"),
    ] {
        add(
            &format!("{method} {path}"),
            raw(method, path, &a, None),
            405,
            "method_not_allowed",
            true,
        );
    }
    for (method, path, status, code) in [
        ("DELETE", "/entries/keep-0.example", 404, "no_route"),
        ("DELETE", "/entries/keep-0.example.json/x", 404, "no_route"),
        ("DELETE", "/entries/..%2f..%2fetc.json", 400, "invalid_host"),
        ("DELETE", "/entries/%00.json", 400, "invalid_host"),
        ("DELETE", "/entries/a%20b.json", 400, "invalid_host"),
        ("DELETE", "/entries/%ff.json", 400, "invalid_host"),
        ("DELETE", "/entries/.json", 400, "invalid_host"),
        ("DELETE", "/entries/absent.example.json", 404, "not_found"),
    ] {
        add(
            &format!("{method} {path}"),
            raw(method, path, &a, None),
            status,
            code,
            true,
        );
    }
    // Batches and replace-all: one bad entry refuses everything.
    let ja: Vec<(&str, &str)> = vec![("Authorization", &auth), ct];
    for (name, method, body, code) in [
        (
            "batch duplicate",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "N1.example.", "backend": "10.0.0.2:80"}]}),
            "duplicate_host",
        ),
        (
            "batch upsert and delete one host",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}], "delete": ["n1.example"]}),
            "duplicate_host",
        ),
        (
            "batch second entry bad",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "n2.example", "backend": "http://x:80"}], "delete": ["keep-0.example"]}),
            "invalid_backend",
        ),
        (
            "batch bad delete",
            "PATCH",
            json!({"delete": ["keep-0.example", "bad host"]}),
            "invalid_host",
        ),
        (
            "batch unknown field",
            "PATCH",
            json!({"upsert": [], "drop_all": true}),
            "invalid_body",
        ),
        (
            "batch wrong type",
            "PATCH",
            json!({"upsert": "n1.example"}),
            "invalid_body",
        ),
        (
            "replace-all bad entry",
            "PUT",
            json!([{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "", "backend": "10.0.0.1:80"}]),
            "invalid_host",
        ),
        ("replace-all object", "PUT", json!({}), "invalid_body"),
        (
            "replace-all duplicate",
            "PUT",
            json!([{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "n1.example", "backend": "10.0.0.1:81"}]),
            "duplicate_host",
        ),
    ] {
        add(
            name,
            raw(
                method,
                "/entries.json",
                &ja,
                Some(body.to_string().as_bytes()),
            ),
            400,
            code,
            true,
        );
    }
    out
}

/// nginx in front of the writer with short client timeouts, for the slow-request cases.
fn api_with_timeouts(table: &Path, socket: &Path) -> impl Fn(u16, &Path) -> String {
    with_api_and(
        table,
        socket,
        "client_header_timeout 2s; client_body_timeout 2s;",
        "client_header_timeout 2s;",
    )
}

#[test]
fn api_abuse_gets_the_documented_4xx_and_changes_nothing() {
    require_writer();
    let data = shared_tempdir();
    let w = Writer::start(&data.path().join("writer"), TOKEN);
    let n = Nginx::start(api_with_timeouts(&w.table(), &w.socket));
    let keep: Vec<Value> = (0..3)
        .map(|i| json!({"host": format!("keep-{i}.example"), "backend": format!("10.0.0.{i}:80")}))
        .collect();
    let r = socket_api(
        &w.socket,
        "PATCH",
        "/entries.json",
        Some(&json!({"upsert": keep}).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let before = snapshot(&w);
    let generation = Table::open(w.table()).expect("table").generation();

    let battery = abuse_battery();
    let mut failures = Vec::new();
    let mut tried = 0;
    for case in &battery {
        let direct = raw_unix_request(&w.socket, &case.request);
        tried += 1;
        match &direct {
            Ok(r)
                if r.status == case.status && case.code.split('|').any(|c| c == error_code(r)) => {}
            other => failures.push(format!(
                "{} (direct): want {} {}, got {other:?}",
                case.name, case.status, case.code
            )),
        }
        if case.via_nginx {
            tried += 1;
            match raw_request(n.port, &case.request) {
                Ok(r) if r.status == case.status => {}
                other => failures.push(format!(
                    "{} (nginx): want {}, got {other:?}",
                    case.name, case.status
                )),
            }
        }
    }

    // Slow and oversized requests through nginx: nginx's own 4xx, the writer never sees them.
    let slow_body = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        let head = format!(
            "POST /entries.json HTTP/1.1\r\nHost: api.test.example\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"host\""
        );
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // nginx logs 408 and closes the connection without an answer.
    tried += 1;
    if !(slow_body.is_empty() || slow_body.starts_with("HTTP/1.1 408")) {
        failures.push(format!("slow body: want a close or 408, got {slow_body:?}"));
    }
    let slow_head = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        s.write_all(b"POST /entries.json HTTP/1.1\r\nHost: api.test.ex")
            .expect("write");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let started = Instant::now();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (out, started.elapsed())
    };
    tried += 1;
    if !(slow_head.0.is_empty() || slow_head.0.starts_with("HTTP/1.1 408"))
        || slow_head.1 > Duration::from_secs(10)
    {
        failures.push(format!(
            "slow header: want a close within the timeout, got {slow_head:?}"
        ));
    }
    let auth = format!("Bearer {TOKEN}");
    let big_header = |size: usize| {
        raw(
            "GET",
            "/entries.json",
            &[("Authorization", &auth), ("X-Big", &"x".repeat(size))],
            None,
        )
    };
    tried += 2;
    match raw_request(n.port, &big_header(64 * 1024)) {
        Ok(r) if r.status == 400 || r.status == 431 || r.status == 494 => {}
        other => failures.push(format!("64 KB header (nginx): got {other:?}")),
    }
    match raw_unix_request(&w.socket, &big_header(1024 * 1024)) {
        Ok(r) if (400..500).contains(&r.status) => {}
        Err(_) => {} // hyper may close the connection without an answer
        other => failures.push(format!("1 MB header (direct): got {other:?}")),
    }
    let big_body = raw(
        "POST",
        "/entries.json",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some(&vec![b' '; 2 * 1024 * 1024]),
    );
    tried += 1;
    match raw_request(n.port, &big_body) {
        Ok(r) if r.status == 413 => {}
        other => failures.push(format!("2 MB body (nginx): got {other:?}")),
    }
    // A stalled client on the socket does not hold up others.
    {
        use std::io::Write;
        let mut stalled = std::os::unix::net::UnixStream::connect(&w.socket).expect("connect");
        stalled
            .write_all(b"POST /entries.json HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
            .expect("write");
        tried += 1;
        let r = socket_api(&w.socket, "GET", "/entries/keep-1.example.json", None);
        if r.status != 200 {
            failures.push(format!("a stalled client blocked a request: {r:?}"));
        }
    }

    let after = snapshot(&w);
    let store_same = before.0 == after.0;
    let table_same = before.1 == after.1;
    let generation_after = Table::open(w.table()).expect("table").generation();
    eprintln!(
        "RELIABILITY api_abuse inputs={} requests={tried} wrong_answers={} store_unchanged={store_same} table_unchanged={table_same}",
        battery.len() + 6,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(store_same, "the store file changed");
    assert!(table_same, "the table file changed");
    assert_eq!(generation, generation_after);
    assert!(battery.len() >= 50);
    n.assert_clean_log();
}
