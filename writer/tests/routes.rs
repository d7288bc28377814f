//! The API contract through the real router (no socket): every route, every error case, the
//! token check, batches, replace-all, metrics, the docs page, and the IP-only backend mode.

mod common;

use common::{table_entries, RouterHarness, ServerHarness, TOKEN};
use hyper::Method;
use serde_json::{json, Value};
use set_backend_writer::throttle;
use shm_layout::{Lookup, Table};

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn create_update_get_list_delete() {
    let h = RouterHarness::new();
    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "Example.COM.", "backend": "10.0.0.7:3000"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"host": "example.com", "backend": "10.0.0.7:3000"})
    );
    assert_eq!(r.content_type.as_deref(), Some("application/json"));

    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "example.com:8080", "backend": "10.0.0.8:3000"})),
        )
        .await;
    assert_eq!(r.status, 200, "an existing host is updated: {}", r.text());
    assert_eq!(
        r.json(),
        json!({"host": "example.com", "backend": "10.0.0.8:3000"})
    );

    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "Bücher.example", "backend": "Backend.Internal:80"})),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json(),
        json!({"host": "xn--bcher-kva.example", "backend": "backend.internal:80"})
    );

    for uri in [
        "/entries/example.com.json",
        "/entries/EXAMPLE.com..json",
        "/entries/example.com%3A443.json",
    ] {
        let r = h.api(Method::GET, uri, None).await;
        assert_eq!(r.status, 200, "{uri}: {}", r.text());
        assert_eq!(
            r.json(),
            json!({"host": "example.com", "backend": "10.0.0.8:3000"})
        );
    }
    let r = h
        .api(Method::GET, "/entries/b%C3%BCcher.example.json", None)
        .await;
    assert_eq!(r.json()["host"], "xn--bcher-kva.example");

    assert_eq!(
        h.list().await,
        pairs(&[
            ("example.com", "10.0.0.8:3000"),
            ("xn--bcher-kva.example", "backend.internal:80")
        ])
    );
    assert_eq!(
        table_entries(&h.table_path),
        h.list().await,
        "the table matches the store"
    );

    let r = h
        .api(Method::DELETE, "/entries/example.com.json", None)
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    let r = h
        .api(Method::DELETE, "/entries/example.com.json", None)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("not_found"))
    );
    let r = h.api(Method::GET, "/entries/example.com.json", None).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (404, Some("not_found"))
    );
    assert_eq!(
        table_entries(&h.table_path),
        pairs(&[("xn--bcher-kva.example", "backend.internal:80")])
    );
}

#[tokio::test]
async fn a_write_is_in_the_table_when_it_is_acknowledged() {
    let h = RouterHarness::new();
    let mut t = Table::open(&h.table_path).unwrap();
    for i in 0..200 {
        let host = format!("h{i}.example");
        let backend = format!("10.0.{}.{}:80", i / 256, i % 256);
        let r = h
            .api(
                Method::POST,
                "/entries.json",
                Some(json!({"host": host, "backend": backend})),
            )
            .await;
        assert_eq!(r.status, 201);
        // The table may have grown into a new generation: follow it like nginx does.
        if t.is_superseded() {
            t = Table::open(&h.table_path).unwrap();
        }
        match t.lookup(host.as_bytes()) {
            Lookup::Hit(v) => assert_eq!(v.as_str(), backend),
            _ => panic!("{host} not in the table after its acknowledgement"),
        }
    }
    assert_eq!(table_entries(&h.table_path).len(), 200);
}

/// method, uri, headers, body, expected status, expected error code.
type Case<'a> = (
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    String,
    u16,
    &'a str,
);

/// Every invalid request: the status, the code, the one error shape, and nothing stored.
#[tokio::test]
async fn invalid_requests_are_refused_and_nothing_is_stored() {
    let h = RouterHarness::new();
    let auth = format!("Bearer {TOKEN}");
    let auth = auth.as_str();
    let json_ct = ("content-type", "application/json");
    let big = format!(
        r#"{{"host": "a.example", "backend": "{}"}}"#,
        "x".repeat(20_000)
    );
    let cases: Vec<Case> = vec![
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "bad host", "backend": "10.0.0.1:80"}"#.into(), 400, "invalid_host"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "", "backend": "10.0.0.1:80"}"#.into(), 400, "invalid_host"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "10.0.0.1", "backend": "10.0.0.1:80"}"#.into(), 400, "invalid_host"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a..b", "backend": "10.0.0.1:80"}"#.into(), 400, "invalid_host"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "http://10.0.0.1:80"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "10.0.0.1:80/path"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "user@10.0.0.1:80"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "10.0.0.1:80\r\nX: y"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "a b:80"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "10.0.0.1"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "10.0.0.1:99999"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "x:1?q"}"#.into(), 400, "invalid_backend"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "backend": "10.0.0.1:80", "ttl": 5}"#.into(), 400, "invalid_body"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example"}"#.into(), 400, "invalid_body"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": 1, "backend": "10.0.0.1:80"}"#.into(), 400, "invalid_body"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"[]"#.into(), 400, "invalid_body"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], r#"{"host": "a.example", "#.into(), 400, "malformed_json"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], "".into(), 400, "malformed_json"),
        (Method::POST, "/entries.json", vec![("authorization", auth)], r#"{"host": "a.example", "backend": "10.0.0.1:80"}"#.into(), 415, "unsupported_media_type"),
        (Method::POST, "/entries.json", vec![("authorization", auth), ("content-type", "text/plain")], r#"{"host": "a.example", "backend": "10.0.0.1:80"}"#.into(), 415, "unsupported_media_type"),
        (Method::POST, "/entries.json", vec![("authorization", auth), ("content-type", "application/x-www-form-urlencoded")], "host=a.example&backend=10.0.0.1:80".into(), 415, "unsupported_media_type"),
        (Method::POST, "/entries.json", vec![("authorization", auth), json_ct], big, 413, "payload_too_large"),
        (Method::PATCH, "/entries.json", vec![("authorization", auth), json_ct], r#"{"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}, {"host": "b.example", "backend": "nope"}]}"#.into(), 400, "invalid_backend"),
        (Method::PATCH, "/entries.json", vec![("authorization", auth), json_ct], r#"{"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}], "delete": ["A.example."]}"#.into(), 400, "duplicate_host"),
        (Method::PATCH, "/entries.json", vec![("authorization", auth), json_ct], r#"{"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"}], "delete": ["bad host"]}"#.into(), 400, "invalid_host"),
        (Method::PATCH, "/entries.json", vec![("authorization", auth), json_ct], r#"{"upsert": [], "remove": []}"#.into(), 400, "invalid_body"),
        (Method::PUT, "/entries.json", vec![("authorization", auth), json_ct], r#"[{"host": "a.example", "backend": "10.0.0.1:80"}, {"host": "A.EXAMPLE", "backend": "10.0.0.2:80"}]"#.into(), 400, "duplicate_host"),
        (Method::PUT, "/entries.json", vec![("authorization", auth), json_ct], r#"[{"host": "a.example", "backend": "10.0.0.1:80"}, {"host": "", "backend": "10.0.0.2:80"}]"#.into(), 400, "invalid_host"),
        (Method::PUT, "/entries.json", vec![("authorization", auth)], r#"[]"#.into(), 415, "unsupported_media_type"),
        (Method::GET, "/entries/bad%20host.json", vec![("authorization", auth)], "".into(), 400, "invalid_host"),
        (Method::DELETE, "/entries/bad%20host.json", vec![("authorization", auth)], "".into(), 400, "invalid_host"),
        (Method::GET, "/entries/a.example", vec![("authorization", auth)], "".into(), 404, "no_route"),
        (Method::GET, "/nothing-here", vec![], "".into(), 404, "no_route"),
        (Method::DELETE, "/entries.json", vec![("authorization", auth)], "".into(), 405, "method_not_allowed"),
        (Method::POST, "/entries/a.example.json", vec![("authorization", auth), json_ct], "{}".into(), 405, "method_not_allowed"),
        (Method::POST, "/healthz", vec![], "".into(), 405, "method_not_allowed"),
    ];
    // Something stored first, to see that refused requests leave it alone.
    let r = h
        .api(
            Method::POST,
            "/entries.json",
            Some(json!({"host": "keep.example", "backend": "10.9.9.9:80"})),
        )
        .await;
    assert_eq!(r.status, 201);
    let before = h.list().await;
    for (method, uri, headers, body, status, code) in cases {
        let r = h.call(method.clone(), uri, &headers, body.clone()).await;
        assert_eq!(r.status, status, "{method} {uri} {body:.80}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{method} {uri} {body:.80}: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(v.as_object().unwrap().len(), 1, "only the error key: {v}");
        assert_eq!(
            v["error"].as_object().unwrap().len(),
            2,
            "only code and message: {v}"
        );
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(h.list().await, before, "no refused request stored anything");
    assert_eq!(
        table_entries(&h.table_path),
        before,
        "nor published anything"
    );
}

#[tokio::test]
async fn every_entries_route_needs_the_token() {
    let h = RouterHarness::new();
    let body = r#"{"host": "a.example", "backend": "10.0.0.1:80"}"#;
    let routes = [
        (Method::GET, "/entries.json"),
        (Method::POST, "/entries.json"),
        (Method::PATCH, "/entries.json"),
        (Method::PUT, "/entries.json"),
        (Method::GET, "/entries/a.example.json"),
        (Method::DELETE, "/entries/a.example.json"),
    ];
    let wrong = format!("Bearer {TOKEN}x");
    let short = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_string();
    let bad_headers: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", wrong.as_str())],
        vec![("authorization", short.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("authorization", bare.as_str())],
        vec![("authorization", "Bearer ")],
        vec![("x-api-token", TOKEN)],
    ];
    for (method, uri) in &routes {
        for headers in &bad_headers {
            let mut headers = headers.clone();
            headers.push(("content-type", "application/json"));
            let r = h.call(method.clone(), uri, &headers, body).await;
            assert_eq!(r.status, 401, "{method} {uri} {headers:?}");
            assert_eq!(r.error_code().as_deref(), Some("unauthorized"));
        }
    }
    assert!(
        h.list().await.is_empty(),
        "nothing was written without the token"
    );
    for uri in ["/", "/openapi.json", "/healthz"] {
        let r = h.call(Method::GET, uri, &[], "").await;
        assert_eq!(r.status, 200, "{uri} needs no token");
    }
    let r = h.call(Method::GET, "/metrics", &[], "").await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (401, Some("unauthorized"))
    );
    let bearer = format!("Bearer {TOKEN}");
    let m = h
        .call(Method::GET, "/metrics", &[("authorization", &bearer)], "")
        .await
        .text();
    // 42 refused /entries requests, and the /metrics one above.
    assert!(m.contains("set_backend_unauthorized_total 43"), "{m}");
}

#[tokio::test]
async fn failed_authentication_is_throttled_per_client_address() {
    let h = RouterHarness::new();
    let right = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    let get = |auth: &str, from: Option<&str>| {
        let mut headers = vec![("authorization", auth.to_string())];
        if let Some(a) = from {
            headers.push(("x-forwarded-for", a.to_string()));
        }
        let h = &h;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.call(Method::GET, "/entries.json", &headers, "").await
        }
    };
    for i in 0..throttle::BURST {
        let r = get(&wrong, Some("192.0.2.1")).await;
        assert_eq!(r.status, 401, "wrong token #{i}");
    }
    let r = get(&wrong, Some("192.0.2.1")).await;
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (429, Some("too_many_requests"))
    );
    let r = get(&right, Some("192.0.2.1")).await;
    assert_eq!(
        r.status, 429,
        "a throttled address's token is not looked at"
    );
    assert_eq!(
        get(&right, Some("192.0.2.2")).await.status,
        200,
        "another address"
    );
    // nginx's X-Forwarded-For is one address; a client's own list ends with nginx's entry.
    let r = get(&right, Some("203.0.113.9, 192.0.2.1")).await;
    assert_eq!(r.status, 429, "the last address of X-Forwarded-For counts");
    // A local process on the socket (no address) is not throttled.
    for _ in 0..=throttle::BURST {
        assert_eq!(get(&wrong, None).await.status, 401);
    }
    assert_eq!(get(&right, None).await.status, 200);
    let m = h
        .call(Method::GET, "/metrics", &[("authorization", &right)], "")
        .await;
    let text = String::from_utf8_lossy(&m.body).to_string();
    assert!(text.contains("set_backend_throttled_total 3"), "{text}");
}

#[tokio::test]
async fn batch_is_atomic_and_counts_what_it_did() {
    let h = RouterHarness::new();
    let r = h
        .api(
            Method::PATCH,
            "/entries.json",
            Some(json!({"upsert": [
                {"host": "a.example", "backend": "10.0.0.1:80"},
                {"host": "b.example", "backend": "10.0.0.2:80"},
            ]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"created": 2, "updated": 0, "deleted": 0, "absent": 0})
    );
    let r = h
        .api(Method::PATCH, "/entries.json", Some(json!({
            "upsert": [{"host": "A.example.", "backend": "10.0.0.9:80"}, {"host": "c.example", "backend": "10.0.0.3:80"}],
            "delete": ["b.example", "never.example"],
        })))
        .await;
    assert_eq!(
        r.json(),
        json!({"created": 1, "updated": 1, "deleted": 1, "absent": 1})
    );
    let want = pairs(&[("a.example", "10.0.0.9:80"), ("c.example", "10.0.0.3:80")]);
    assert_eq!(h.list().await, want);
    assert_eq!(table_entries(&h.table_path), want);

    // One bad entry at the end refuses the whole batch.
    let mut upsert: Vec<Value> = (0..100)
        .map(|i| json!({"host": format!("n{i}.example"), "backend": "10.0.0.1:80"}))
        .collect();
    upsert.push(json!({"host": "last.example", "backend": "10.0.0.1"}));
    let r = h
        .api(
            Method::PATCH,
            "/entries.json",
            Some(json!({"upsert": upsert, "delete": ["a.example"]})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("entry 100"));
    assert_eq!(h.list().await, want);
    assert_eq!(table_entries(&h.table_path), want);

    // An empty batch is a no-op.
    let r = h.api(Method::PATCH, "/entries.json", Some(json!({}))).await;
    assert_eq!(
        r.json(),
        json!({"created": 0, "updated": 0, "deleted": 0, "absent": 0})
    );
}

#[tokio::test]
async fn replace_all_swaps_the_whole_map_into_a_new_generation() {
    let h = RouterHarness::new();
    for i in 0..50 {
        let r = h
            .api(
                Method::POST,
                "/entries.json",
                Some(json!({"host": format!("old{i}.example"), "backend": "10.0.0.1:80"})),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let before = Table::open(&h.table_path).unwrap();
    let new: Vec<Value> = (0..30)
        .map(|i| json!({"host": format!("New{i}.Example"), "backend": format!("10.1.0.{i}:8080")}))
        .collect();
    let r = h
        .api(Method::PUT, "/entries.json", Some(Value::Array(new)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"entries": 30}));
    assert!(
        before.is_superseded(),
        "readers are told to switch to the new generation"
    );
    let list = h.list().await;
    assert_eq!(list.len(), 30);
    assert!(list.iter().all(|(host, _)| host.starts_with("new")));
    assert_eq!(table_entries(&h.table_path), list);

    // The listing is exactly what a replace-all takes back.
    let exported = h.api(Method::GET, "/entries.json", None).await;
    let body: Value = serde_json::from_slice(&exported.body).unwrap();
    let r = h.api(Method::PUT, "/entries.json", Some(body)).await;
    assert_eq!(r.json(), json!({"entries": 30}));
    assert_eq!(h.list().await, list);

    let r = h.api(Method::PUT, "/entries.json", Some(json!([]))).await;
    assert_eq!(r.json(), json!({"entries": 0}));
    assert!(h.list().await.is_empty());
    assert!(table_entries(&h.table_path).is_empty());
}

#[tokio::test]
async fn metrics_count_writes_and_describe_the_table() {
    let h = RouterHarness::new();
    h.api(
        Method::POST,
        "/entries.json",
        Some(json!({"host": "a.example", "backend": "10.0.0.1:80"})),
    )
    .await;
    h.api(
        Method::POST,
        "/entries.json",
        Some(json!({"host": "a.example", "backend": "10.0.0.2:80"})),
    )
    .await;
    h.api(
        Method::POST,
        "/entries.json",
        Some(json!({"host": "a example", "backend": "10.0.0.2:80"})),
    )
    .await;
    h.api(Method::DELETE, "/entries/zzz.example.json", None)
        .await;
    let bearer = format!("Bearer {TOKEN}");
    let r = h
        .call(Method::GET, "/metrics", &[("authorization", &bearer)], "")
        .await;
    assert!(r.content_type.clone().unwrap().starts_with("text/plain"));
    let m = r.text();
    for line in [
        "set_backend_entries 1",
        r#"set_backend_writes_total{op="upsert",outcome="created"} 1"#,
        r#"set_backend_writes_total{op="upsert",outcome="updated"} 1"#,
        r#"set_backend_writes_total{op="upsert",outcome="invalid"} 1"#,
        r#"set_backend_writes_total{op="delete",outcome="absent"} 1"#,
        // The delete of an absent host changes nothing: its transaction is aborted, not
        // committed (no fsync, the store file untouched).
        "set_backend_commit_seconds_count 2",
        "set_backend_publish_seconds_count 3",
        "set_backend_table_generation 1",
        "set_backend_table_capacity 64",
        "set_backend_table_load_ratio 0.015625",
        "set_backend_table_in_sync 1",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    let r = h.call(Method::GET, "/healthz", &[], "").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let beat = Table::open(&h.table_path).unwrap().heartbeat_ms();
    assert!(
        now_ms.abs_diff(beat) < 5_000,
        "the writer's heartbeat is current ({beat} vs {now_ms})"
    );
}

#[tokio::test]
async fn the_docs_page_shows_curl_examples_for_the_domain() {
    let h = RouterHarness::new();
    let r = h.call(Method::GET, "/", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.clone().unwrap().starts_with("text/html"));
    let page = r.text();
    for needle in [
        "curl -X POST https://api.example.org/entries.json",
        "https://api.example.org/entries/some.host.com.json",
        "curl -X PATCH",
        "curl -X PUT",
        "Authorization: Bearer",
        "/openapi.json",
    ] {
        assert!(page.contains(needle), "missing {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_backends_only_refuses_names_everywhere_and_stores_nothing() {
    let mut s = ServerHarness::start_with(|c| c.ip_backends_only = true).await;
    let mut c = s.connect().await;
    for (method, path, body) in [
        (
            Method::POST,
            "/entries.json",
            r#"{"host": "a.example", "backend": "web.internal:80"}"#,
        ),
        (
            Method::PATCH,
            "/entries.json",
            r#"{"upsert": [{"host": "a.example", "backend": "10.0.0.1:80"},
                           {"host": "b.example", "backend": "web.internal:80"}]}"#,
        ),
        (
            Method::PUT,
            "/entries.json",
            r#"[{"host": "a.example", "backend": "web.internal:80"}]"#,
        ),
    ] {
        let r = c
            .request(method.clone(), path, Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.error_code().as_deref()),
            (400, Some("invalid_backend")),
            "{method}"
        );
        assert!(r.text().contains("IP address"), "{}", r.text());
    }
    let r = c.request(Method::GET, "/entries.json", None).await.unwrap();
    assert_eq!(r.json(), json!([]));
    let r = c
        .request(
            Method::POST,
            "/entries.json",
            Some(br#"{"host": "a.example", "backend": "[fd00::1]:8080"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    s.shutdown().await.unwrap();
}
