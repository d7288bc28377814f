//! Requests to the writer's API, straight to its socket or through nginx (`api.test.example`),
//! and the check that the table file holds exactly what the store holds.

use std::path::Path;

use serde_json::{json, Value};

use crate::{request, table_entries, unix_request, with_api, Nginx, Response, Writer, TOKEN};

/// An authenticated request straight to the writer's socket.
pub fn socket_api(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    unix_request(socket, method, path, &[("Authorization", &auth)], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// An authenticated request through nginx's `api.test.example` server ([`crate::with_api`]).
pub fn api(n: &Nginx, method: &str, path: &str, body: Option<&str>) -> Response {
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

/// One `PATCH /entries.json` upserting every host of `hosts` to `backend`.
pub fn upsert_all(socket: &Path, hosts: &[String], backend: &str) -> Response {
    let upsert: Vec<Value> = hosts
        .iter()
        .map(|h| json!({"host": h, "backend": backend}))
        .collect();
    socket_api(
        socket,
        "PATCH",
        "/entries.json",
        Some(&json!({"upsert": upsert}).to_string()),
    )
}

/// The store's entries, through `GET /entries.json`.
pub fn listed(socket: &Path) -> Vec<(String, String)> {
    let r = socket_api(socket, "GET", "/entries.json", None);
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).expect("the list is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["host"].as_str().expect("host").to_string(),
                e["backend"].as_str().expect("backend").to_string(),
            )
        })
        .collect()
}

/// Asserts that the table holds exactly what the store holds; returns the store's entries.
pub fn assert_table_matches_store(w: &Writer, when: &str) -> Vec<(String, String)> {
    let store = listed(&w.socket);
    assert_eq!(
        table_entries(&w.table()),
        store,
        "{when}: table and store differ"
    );
    store
}

/// The `error.code` of a JSON error answer, or `-`.
pub fn error_code(r: &Response) -> String {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

/// `POST /entries.json` of `host → backend`, straight to the socket.
pub fn post_entry(socket: &Path, host: &str, backend: &str) -> Response {
    socket_api(
        socket,
        "POST",
        "/entries.json",
        Some(&json!({"host": host, "backend": backend}).to_string()),
    )
}

/// The writer on `dir` (started with [`TOKEN`]) and nginx in front of it ([`with_api`]).
pub fn writer_behind_nginx(dir: &Path) -> (Writer, Nginx) {
    let w = Writer::start(dir, TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    (w, n)
}
