//! Host patterns end to end (issue #14): `*.suffix` wildcards and the default entry `*`, looked
//! up by real nginx workers in both modes, with the matching entry in the access log through
//! `$set_backend_match`; and the writer's API taking, normalizing and refusing patterns.

use std::fs;
use std::path::Path;

use set_backend_tests::*;

/// The hosts every test here asks for, with the upstream that must answer each and the entry
/// `$set_backend_match` must name: the exact name, the longest wildcard, the default.
const CASES: [(&str, usize, &str); 6] = [
    ("www.example.org", 0, "www.example.org"),
    ("mail.example.org", 1, "*.example.org"),
    ("a.b.c.example.org", 1, "*.example.org"),
    ("x.sub.example.org", 2, "*.sub.example.org"),
    ("sub.example.org", 1, "*.example.org"),
    ("other.example", 3, "*"),
];

/// Three upstreams and a table with an exact name, two nested wildcards and the default entry.
fn patterned() -> (
    [Upstream; 4],
    tempfile::TempDir,
    std::path::PathBuf,
    shm_layout::TableWriter,
) {
    let ups = ["exact", "wild", "sub", "default"].map(Upstream::start);
    let (data, table, w) = table_with(&[
        ("www.example.org", &ups[0].addr()),
        ("*.example.org", &ups[1].addr()),
        ("*.sub.example.org", &ups[2].addr()),
        ("*", &ups[3].addr()),
    ]);
    (ups, data, table, w)
}

/// `log_format` and `access_log` lines writing `$host $set_backend_match
/// $set_backend_status` to `matched.log`.
fn match_log(dir: &Path) -> String {
    format!(
        "log_format matched '$host $set_backend_match $set_backend_status';
         access_log {}/matched.log matched;",
        dir.display()
    )
}

/// Asks for every host of [`CASES`] and checks who answered and what the log says.
fn assert_cases(n: &Nginx, ups: &[Upstream; 4]) {
    for (host, up, _) in CASES {
        let r = n.get(host, "/p");
        assert!(body_is(&ups[up])(&r), "{host}: {r:?}");
    }
    let log = fs::read_to_string(n.path().join("matched.log")).expect("matched.log");
    for (host, _, entry) in CASES {
        let line = format!("{host} {entry} hit");
        assert!(log.lines().any(|l| l == line), "no {line:?} in\n{log}");
    }
}

#[test]
fn patterns_route_in_variable_mode_and_log_the_match() {
    let (ups, _data, table, mut w) = patterned();
    let n = Nginx::start(|port, dir| {
        format!(
            "set_backend_table {table};
             {log}
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 location / {{
                     set_backend $backend;
                     proxy_pass http://$backend$request_uri;
                 }}
             }}",
            table = table.display(),
            log = match_log(dir)
        )
    });
    assert_cases(&n, &ups);
    // Without the default entry a host that matches nothing is a miss, logged as not found.
    assert!(w.delete(&shm_layout::Host::parse("*").unwrap()).unwrap());
    let r = n.get("other.example", "/");
    assert_eq!(r.status, 404, "{r:?}");
    let log = fs::read_to_string(n.path().join("matched.log")).unwrap();
    assert!(log.lines().any(|l| l == "other.example - miss"), "{log}");
    n.assert_clean_log();
}

#[test]
fn patterns_route_in_upstream_mode_and_log_the_match() {
    let (ups, _data, table, _w) = patterned();
    let n = Nginx::start(|port, dir| {
        format!(
            "set_backend_table {table};
             {log}
             upstream set_backend {{
                 set_backend_peer;
                 keepalive 16;
             }}
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 location / {{
                     proxy_pass http://set_backend;
                     proxy_http_version 1.1;
                     proxy_set_header Connection \"\";
                     proxy_set_header Host $host;
                 }}
             }}",
            table = table.display(),
            log = match_log(dir)
        )
    });
    assert_cases(&n, &ups);
    n.assert_clean_log();
}

/// The API takes patterns (the asterisk URL-encoded or not), normalizes them, stores the
/// `.example.com` shorthand as its two entries, and refuses every other use of `*` with a 400
/// that changes nothing.
#[test]
fn the_api_takes_patterns_and_refuses_bad_ones() {
    require_writer();
    let data = shared_tempdir();
    let (w, n) = writer_behind_nginx(data.path());
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let r = post_entry(&w.socket, "*.Pages.Example.", &a.addr());
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body.contains("\"*.pages.example\""), "{r:?}");
    let r = post_entry(&w.socket, ".shop.example", &b.addr());
    assert_eq!(r.status, 201, "{r:?}");
    let r = post_entry(&w.socket, "*", &b.addr());
    assert_eq!(r.status, 201, "{r:?}");
    let before = listed(&w.socket);
    let hosts: Vec<&str> = before.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        hosts,
        ["*", "*.pages.example", "*.shop.example", "shop.example"]
    );

    for bad in [
        "a*.example.com",
        "example.*",
        "*.*.com",
        "**",
        "www.*.example",
    ] {
        let r = post_entry(&w.socket, bad, &a.addr());
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert_eq!(error_code(&r), "invalid_host", "{bad}: {r:?}");
        assert!(r.body.contains("*.example.com"), "{bad}: {r:?}");
    }
    assert_eq!(
        listed(&w.socket),
        before,
        "a refused pattern changed nothing"
    );

    let r = socket_api(&w.socket, "GET", "/entries/%2A.pages.example.json", None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(&a.addr()), "{r:?}");
    let r = socket_api(&w.socket, "GET", "/entries/.shop.example.json", None);
    assert_eq!(r.status, 400, "{r:?}");

    n.wait_every_worker("site.pages.example", body_is(&a));
    assert!(body_is(&b)(&n.get("shop.example", "/")));
    assert!(body_is(&b)(&n.get("www.shop.example", "/")));
    assert!(body_is(&b)(&n.get("elsewhere.example", "/")));

    let r = socket_api(&w.socket, "DELETE", "/entries/%2A.json", None);
    assert_eq!(r.status, 204, "{r:?}");
    let r = socket_api(&w.socket, "DELETE", "/entries/.shop.example.json", None);
    assert_eq!(r.status, 204, "{r:?}");
    let r = socket_api(&w.socket, "DELETE", "/entries/.shop.example.json", None);
    assert_eq!(r.status, 404, "{r:?}");
    let left: Vec<String> = listed(&w.socket).into_iter().map(|(h, _)| h).collect();
    assert_eq!(left, ["*.pages.example"]);
    n.wait_every_worker("elsewhere.example", |r| r.status == 404);
    assert_table_matches_store(&w, "after the pattern deletes");
}
