//! With the writer daemon: the API through nginx (`api.$DOMAIN`), and nginx serving on while
//! the writer restarts.

use std::time::{Duration, Instant};

use set_backend_tests::*;

#[test]
fn the_api_through_api_domain_adds_lists_and_deletes() {
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let (_w, n) = writer_behind_nginx(&data.path().join("writer"));

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
    let (mut w, n) = writer_behind_nginx(&dir);
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
