//! The API contract, every error case and the token check, through the real router; then the
//! same daemon over a real unix socket (streaming, group commit, graceful shutdown); and the
//! OpenAPI document checked against what the router does.

mod common;

use std::collections::BTreeSet;

use common::{entries_of, table_entries, RouterHarness, ServerHarness, TOKEN};
use hyper::Method;
use serde_json::{json, Value};
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

/// Every operation the OpenAPI document lists is routed, answers its example with a
/// documented status and body shape; every method it does not list is a 405.
#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let h = RouterHarness::new();
    let spec = h.call(Method::GET, "/openapi.json", &[], "").await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let schemas = &spec["components"]["schemas"];
    let all = ["get", "post", "put", "patch", "delete"];
    let paths = spec["paths"].as_object().unwrap();
    let mut seen = BTreeSet::new();
    // Order matters for the entry routes: create before read and delete.
    let order = ["post", "patch", "put", "get", "delete"];
    let mut ops = Vec::new();
    for (path, item) in paths {
        for m in order {
            if let Some(op) = item.get(m) {
                ops.push((path.clone(), m, op.clone()));
            }
        }
        for m in all {
            if item.get(m).is_none() {
                let uri = path.replace("{file}", "some.host.com.json");
                let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
                let auth = format!("Bearer {TOKEN}");
                let r = h.call(method, &uri, &[("authorization", &auth)], "").await;
                assert_eq!(
                    r.status, 405,
                    "{m} {path} is not documented, so not allowed"
                );
            }
        }
    }
    for (path, m, op) in ops {
        let mut uri = path.clone();
        for p in op["parameters"].as_array().into_iter().flatten() {
            uri = uri.replace(
                &format!("{{{}}}", p["name"].as_str().unwrap()),
                p["example"].as_str().unwrap(),
            );
        }
        let body = op["requestBody"]["content"]["application/json"]["example"].clone();
        let body = (!body.is_null()).then_some(body);
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let r = h.api(method, &uri, body).await;
        let status = r.status.to_string();
        let documented = &op["responses"][&status];
        assert!(
            documented.is_object(),
            "{m} {path} answered {status}, not documented: {}",
            r.text()
        );
        if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
            check_shape(
                &r.json(),
                &Value::Object(schema.clone()),
                schemas,
                &format!("{m} {path}"),
            );
        }
        if op.get("security").is_some() {
            let r = h
                .call(
                    Method::from_bytes(m.to_uppercase().as_bytes()).unwrap(),
                    &uri,
                    &[],
                    "",
                )
                .await;
            assert_eq!(r.status, 401);
            assert!(
                op["responses"]["401"].is_object(),
                "{m} {path} documents its 401"
            );
        }
        seen.insert((path, m));
    }
    for (path, m) in [
        ("/", "get"),
        ("/openapi.json", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/entries.json", "get"),
        ("/entries.json", "post"),
        ("/entries.json", "patch"),
        ("/entries.json", "put"),
        ("/entries/{file}", "get"),
        ("/entries/{file}", "delete"),
    ] {
        assert!(
            seen.contains(&(path.to_string(), m)),
            "{m} {path} is served but not documented"
        );
    }
    // Every error code the server uses is in the document's enum.
    let codes = &schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"];
    for c in [
        "unauthorized",
        "invalid_host",
        "invalid_backend",
        "duplicate_host",
        "malformed_json",
        "invalid_body",
        "payload_too_large",
        "unsupported_media_type",
        "not_found",
        "no_route",
        "method_not_allowed",
        "unavailable",
        "internal",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&json!(c)),
            "{c} not documented"
        );
    }
}

/// A small structural check: `$ref`, object required fields and no extra fields when
/// `additionalProperties` is false, arrays item by item, scalar types.
fn check_shape(v: &Value, schema: &Value, schemas: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return check_shape(v, &schemas[name], schemas, at);
    }
    match schema["type"].as_str() {
        Some("object") => {
            let o = v
                .as_object()
                .unwrap_or_else(|| panic!("{at}: {v} is not an object"));
            for req in schema["required"].as_array().into_iter().flatten() {
                assert!(
                    o.contains_key(req.as_str().unwrap()),
                    "{at}: {v} lacks {req}"
                );
            }
            for (k, sub) in o {
                match schema["properties"].get(k) {
                    Some(s) => check_shape(sub, s, schemas, at),
                    None => assert!(
                        schema["additionalProperties"] != json!(false),
                        "{at}: extra field {k}"
                    ),
                }
            }
        }
        Some("array") => {
            for item in v
                .as_array()
                .unwrap_or_else(|| panic!("{at}: {v} is not an array"))
            {
                check_shape(item, &schema["items"], schemas, at);
            }
        }
        Some("string") => assert!(v.is_string(), "{at}: {v} is not a string"),
        Some("integer") => assert!(v.is_u64() || v.is_i64(), "{at}: {v} is not an integer"),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_real_socket() {
    let mut s = ServerHarness::start().await;
    let mut c = s.connect().await;
    let r = c
        .request(
            Method::POST,
            "/entries.json",
            Some(br#"{"host": "Sock.Example", "backend": "[::1]:8080"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"host": "sock.example", "backend": "[::1]:8080"})
    );
    // The same keep-alive connection serves the next requests.
    let r = c
        .request(Method::GET, "/entries/sock.example.json", None)
        .await
        .unwrap();
    assert_eq!(r.json()["backend"], "[::1]:8080");
    let r = c
        .request(Method::DELETE, "/entries/sock.example.json", None)
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let mut anon = set_backend_writer::client::Connection::connect(&s.endpoint, None)
        .await
        .unwrap();
    let r = anon
        .request(Method::GET, "/entries.json", None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (401, Some("unauthorized"))
    );
    let r = c
        .request(
            Method::POST,
            "/entries.json",
            Some(br#"{"host": "x.example", "backend": "x"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_deref()),
        (400, Some("invalid_backend"))
    );

    // A large listing is streamed in chunks and parses as one array.
    let upsert: Vec<Value> = (0..20_000)
        .map(|i| json!({"host": format!("host-{i:05}.example.com"), "backend": format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256)}))
        .collect();
    let r = c
        .request(
            Method::PATCH,
            "/entries.json",
            Some(serde_json::to_vec(&json!({"upsert": upsert})).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.json()["created"], 20_000);
    let r = c.request(Method::GET, "/entries.json", None).await.unwrap();
    assert!(r.body.len() > 64 * 1024, "bigger than one chunk");
    let list = entries_of(&r);
    assert_eq!(list.len(), 20_000);
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "in host order");
    assert_eq!(table_entries(&s.table_path), list);

    // Concurrent single writes are all acknowledged and all present.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let endpoint = s.endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut c =
                set_backend_writer::client::Connection::connect(&endpoint, Some(TOKEN.into()))
                    .await
                    .unwrap();
            let body = format!(r#"{{"host": "con{i}.example", "backend": "10.7.0.{i}:80"}}"#);
            c.request(Method::POST, "/entries.json", Some(body.into_bytes()))
                .await
                .unwrap()
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let m = c
        .request(Method::GET, "/metrics", None)
        .await
        .unwrap()
        .text();
    let grouped: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("set_backend_grouped_writes_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        grouped > 0,
        "64 simultaneous writes shared at least one commit"
    );
    let list = entries_of(&c.request(Method::GET, "/entries.json", None).await.unwrap());
    assert_eq!(list.len(), 20_064);
    assert_eq!(table_entries(&s.table_path), list);
    // The index stays near the size the entries need (shm-layout alone would double it at
    // every arena growth during the batch).
    let stats = Table::open(&s.table_path).unwrap().stats();
    let want = (20_064u64 * 3 / 2).next_power_of_two();
    assert!(
        stats.capacity <= 4 * want,
        "index of {} slots for {} entries",
        stats.capacity,
        stats.entries
    );
    drop(c);
    drop(anon);
    s.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let mut s = ServerHarness::start().await;
    let endpoint = s.endpoint.clone();
    let mut writers = Vec::new();
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for w in 0..4 {
        let endpoint = endpoint.clone();
        let progress = progress.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let Ok(mut c) =
                set_backend_writer::client::Connection::connect(&endpoint, Some(TOKEN.into()))
                    .await
            else {
                return acked;
            };
            for i in 0.. {
                let host = format!("w{w}-{i}.example");
                let body = format!(r#"{{"host": "{host}", "backend": "10.0.0.1:80"}}"#);
                match c
                    .request(Method::POST, "/entries.json", Some(body.into_bytes()))
                    .await
                {
                    Ok(r) if r.status == 201 => {
                        acked.push(host);
                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    // Shut down once the writers are well under way (each write is an fsync; a loaded machine
    // may take a while to reach this).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 20
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let table_path = s.table_path.clone();
    let dir = s.dir.path().to_path_buf();
    s.shutdown().await.unwrap();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 10, "the writers got going ({})", acked.len());
    let in_table: BTreeSet<String> = table_entries(&table_path)
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    let store = set_backend_writer::store::Store::open(&dir.join("store.redb")).unwrap();
    for h in &acked {
        assert!(
            in_table.contains(h),
            "{h} acknowledged but not in the table"
        );
        assert!(
            store
                .get(&shm_layout::Host::parse(h).unwrap())
                .unwrap()
                .is_some(),
            "{h} not stored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_the_shutdown_up() {
    use tokio::io::AsyncWriteExt;
    let mut s =
        ServerHarness::start_with(|c| c.shutdown_grace = std::time::Duration::from_millis(500))
            .await;
    let set_backend_writer::client::Endpoint::Unix(path) = s.endpoint.clone() else {
        unreachable!()
    };
    let mut stalled = tokio::net::UnixStream::connect(&path).await.unwrap();
    let head = format!(
        "POST /entries.json HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"host\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let start = std::time::Instant::now();
    s.shutdown().await.unwrap();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn tcp_is_loopback_only_unless_allowed() {
    let err = set_backend_writer::listen::bind_tcp("0.0.0.0:0".parse().unwrap(), false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("loopback"), "{err}");
    assert!(set_backend_writer::listen::bind_tcp("127.0.0.1:0".parse().unwrap(), false).is_ok());
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
