//! Fleet mode against a real etcd: writers on two nodes share one etcd; a write through one
//! is in the other's table; a restarted node resumes from the revision it applied; a node
//! whose revision was compacted re-reads and applies only the difference; replace-all goes
//! through a staged generation; with etcd down, routing goes on and writes answer 503 until
//! etcd is back.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::{table_entries, Daemon, TOKEN};
use hyper::Method;
use serde_json::{json, Value};
use set_backend_writer::client::{Connection, Response};

const PREFIX: &str = "/test/v1/";

/// A node: a writer in fleet mode on its own data directory.
fn node(dir: &Path, name: &str, etcd: &Etcd, log: &str) -> Daemon {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let args = [
        "--etcd",
        &etcd.url(),
        "--etcd-prefix",
        PREFIX,
        "--node-name",
        name,
        "--etcd-request-timeout",
        "1s",
        "--etcd-dial-timeout",
        "1s",
    ];
    Daemon::spawn(&data, Some(TOKEN), &args, log)
}

/// A node, once it routes (`/healthz`) and takes writes (`/readyz`: caught up with etcd).
async fn started(dir: &Path, name: &str, etcd: &Etcd, log: &str) -> Daemon {
    let mut d = node(dir, name, etcd, log);
    d.ready().await;
    eventually("the node is ready for writes", async || {
        call(&d, Method::GET, "/readyz", None).await.status == 200
    })
    .await;
    d
}

async fn call(d: &Daemon, method: Method, path: &str, body: Option<Value>) -> Response {
    let mut c = Connection::connect(&d.endpoint, Some(TOKEN.into()))
        .await
        .unwrap();
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    c.request(method, path, body).await.unwrap()
}

/// `POST /entries.json<query>` of `e`.
async fn post(d: &Daemon, query: &str, e: Value) -> Response {
    let path = format!("/entries.json{query}");
    call(d, Method::POST, &path, Some(e)).await
}

/// The node's table file, sorted.
fn table(dir: &Path, name: &str) -> Vec<(String, String)> {
    table_entries(&dir.join(name).join("table"))
}

/// The hosts of etcd's current generation, sorted, as `(host, value)`.
async fn etcd_entries(etcd: &Etcd) -> Vec<(String, String)> {
    let all = etcd.dump(PREFIX).await;
    let generation = all
        .iter()
        .find(|(k, _)| k == &format!("{PREFIX}data/generation"))
        .map_or("0".to_string(), |(_, v)| v.clone());
    let hosts = format!("{PREFIX}data/g/{generation}/");
    let mut e: Vec<_> = all
        .into_iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(&hosts)?;
            Some((rest.split_once('/')?.1.to_string(), v))
        })
        .collect();
    e.sort();
    e
}

/// Waits until `f` holds, failing after 10 s with `what`.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entry(i: usize, port: u16) -> Value {
    json!({"host": format!("h{i}.example"), "backend": format!("10.0.{}.{}:{port}", i / 250, i % 250 + 1)})
}

/// etcd, nodes `a` and `b` (log `b1.log`), and 100 entries written with `wait=all`.
async fn two_nodes_with_100_entries() -> (tempfile::TempDir, Etcd, Daemon, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = started(dir.path(), "a", &etcd, "a.log").await;
    let b = started(dir.path(), "b", &etcd, "b1.log").await;
    let upsert: Vec<_> = (0..100).map(|i| entry(i, 80)).collect();
    let body = json!({ "upsert": upsert });
    let r = call(&a, Method::PATCH, "/entries.json?wait=all", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (dir, etcd, a, b)
}

fn log_count(d: &Daemon, needle: &str) -> usize {
    d.log_text().matches(needle).count()
}

#[tokio::test]
async fn a_write_on_one_node_is_in_the_other_nodes_table() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = started(dir.path(), "a", &etcd, "a.log").await;
    let b = started(dir.path(), "b", &etcd, "b.log").await;

    // Acknowledged means in A's own table already (read-your-writes), with the revision.
    let r = post(&a, "", entry(1, 80)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let rev = r.json()["revision"].as_u64().expect("a revision");
    assert!(rev > 0);
    assert_eq!(
        table(dir.path(), "a"),
        vec![("h1.example".into(), "10.0.0.2:80".into())]
    );
    eventually("B applies A's write", async || {
        table(dir.path(), "b").len() == 1
    })
    .await;

    // wait=all: once answered, every registered node applied it.
    let r = post(&a, "?wait=all", entry(2, 80)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(table(dir.path(), "b").len(), 2);
    let r = post(&b, "?wait=all", entry(1, 81)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(table(dir.path(), "a")[0].1, "10.0.0.2:81");

    // A batch and a delete, each one transaction.
    let upsert: Vec<_> = (3..50).map(|i| entry(i, 80)).collect();
    let r = call(
        &b,
        Method::PATCH,
        "/entries.json?wait=all",
        Some(json!({"upsert": upsert, "delete": ["h2.example", "absent.example"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["created"], 47);
    assert_eq!(r.json()["deleted"], 1);
    assert_eq!(r.json()["absent"], 1);
    let r = call(
        &a,
        Method::DELETE,
        "/entries/h3.example.json?wait=all",
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = call(&a, Method::DELETE, "/entries/h3.example.json", None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = call(&a, Method::GET, "/entries/h1.example.json", None).await;
    assert_eq!(r.json()["backend"], "10.0.0.2:81");

    // Over etcd's 128 operations: refused, nothing written.
    let upsert: Vec<_> = (100..229).map(|i| entry(i, 80)).collect();
    let r = call(
        &a,
        Method::PATCH,
        "/entries.json",
        Some(json!({ "upsert": upsert })),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "batch_too_large");
    let r = call(
        &a,
        Method::POST,
        "/entries.json?wait=sometimes",
        Some(entry(1, 80)),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Every node's table is etcd's content.
    let expected = etcd_entries(&etcd).await;
    assert_eq!(expected.len(), 47);
    assert_eq!(table(dir.path(), "a"), expected);
    assert_eq!(table(dir.path(), "b"), expected);
    let m = call(&a, Method::GET, "/metrics", None).await.text();
    assert!(m.contains("set_backend_fleet_applied_revision "), "{m}");
    let h = call(&a, Method::GET, "/healthz", None).await.json();
    assert_eq!(h["writes"], "available", "{h}");
}

#[tokio::test]
async fn a_restarted_node_resumes_from_its_applied_revision_and_loses_nothing() {
    let (dir, etcd, a, mut b) = two_nodes_with_100_entries().await;
    assert_eq!(table(dir.path(), "b").len(), 100);

    // B killed; A goes on writing; B comes back and catches up from where it was.
    b.kill();
    for i in 0..20 {
        let r = post(&a, "", entry(i, 90)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = call(&a, Method::DELETE, "/entries/h99.example.json", None).await;
    assert_eq!(r.status, 204);
    // Routing from its last table while it is down, and at once when it starts.
    assert_eq!(table(dir.path(), "b").len(), 100);
    let b = started(dir.path(), "b", &etcd, "b2.log").await;
    let expected = etcd_entries(&etcd).await;
    eventually("B catches up", async || table(dir.path(), "b") == expected).await;
    assert_eq!(
        log_count(&b, "reading every entry from etcd"),
        0,
        "{}",
        b.log_text()
    );
    assert!(b.log_text().contains("watching etcd"), "{}", b.log_text());
    let m = call(&b, Method::GET, "/metrics", None).await.text();
    let boot = m
        .lines()
        .find_map(|l| l.strip_prefix("set_backend_fleet_bootstrap_seconds "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(boot.is_some_and(|s| s > 0.0), "{m}");
    assert_eq!(table(dir.path(), "a"), expected);
}

#[tokio::test]
async fn a_node_behind_a_compaction_rereads_and_applies_only_the_difference() {
    let (dir, etcd, a, mut b) = two_nodes_with_100_entries().await;
    b.kill();
    // Three changes and one delete, then etcd compacts past B's revision.
    for i in 0..3 {
        let r = post(&a, "", entry(i, 99)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = call(&a, Method::DELETE, "/entries/h50.example.json", None).await;
    assert_eq!(r.status, 204);
    let mut c = etcd.client().await.unwrap();
    let now = c.get("x", None).await.unwrap().header().unwrap().revision();
    c.compact(now, None).await.unwrap();

    let b = started(dir.path(), "b", &etcd, "b2.log").await;
    let expected = etcd_entries(&etcd).await;
    eventually("B re-reads", async || table(dir.path(), "b") == expected).await;
    let log = b.log_text();
    assert!(log.contains("compacted"), "{log}");
    assert!(log.contains("changed=3 removed=1"), "{log}");
}

#[tokio::test]
async fn replace_all_stages_a_generation_beyond_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = started(dir.path(), "a", &etcd, "a.log").await;
    let b = started(dir.path(), "b", &etcd, "b.log").await;
    let r = post(&a, "", entry(9999, 80)).await;
    assert_eq!(r.status, 201, "{}", r.text());

    let all: Vec<_> = (0..300).map(|i| entry(i, 80)).collect();
    let r = call(&a, Method::PUT, "/entries.json?wait=all", Some(json!(all))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["entries"], 300);
    let expected = etcd_entries(&etcd).await;
    assert_eq!(expected.len(), 300);
    assert_eq!(table(dir.path(), "a"), expected);
    assert_eq!(table(dir.path(), "b"), expected);

    // Again, smaller, through B: only the difference reaches the tables; the old generations
    // are deleted.
    let some: Vec<_> = (100..350).map(|i| entry(i, 80)).collect();
    let r = call(&b, Method::PUT, "/entries.json?wait=all", Some(json!(some))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = etcd_entries(&etcd).await;
    assert_eq!(expected.len(), 250);
    assert_eq!(table(dir.path(), "a"), expected);
    assert_eq!(table(dir.path(), "b"), expected);
    assert!(
        b.log_text().contains("applied this node's replace-all"),
        "{}",
        b.log_text()
    );
    assert!(
        a.log_text().contains("changed=50 removed=100"),
        "{}",
        a.log_text()
    );
    eventually("the old generations are deleted", async || {
        let keys = etcd.dump(&format!("{PREFIX}data/g/")).await;
        keys.len() == 250
    })
    .await;
    // Writes after the flip go to the new generation.
    let r = post(&a, "?wait=all", entry(1, 80)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(table(dir.path(), "b").len(), 251);
}

#[tokio::test]
async fn with_etcd_down_routing_goes_on_writes_fail_fast_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path()).await;
    let a = started(dir.path(), "a", &etcd, "a.log").await;
    let r = post(&a, "", entry(1, 80)).await;
    assert_eq!(r.status, 201, "{}", r.text());

    etcd.kill();
    let t0 = Instant::now();
    let r = post(&a, "", entry(2, 80)).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "store_unavailable");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // Routing is fine; writes are not.
    assert_eq!(call(&a, Method::GET, "/healthz", None).await.status, 200);
    assert_eq!(call(&a, Method::GET, "/readyz", None).await.status, 503);
    assert_eq!(table(dir.path(), "a").len(), 1);
    let r = call(&a, Method::GET, "/entries/h1.example.json", None).await;
    assert_eq!(r.status, 200);

    etcd.restart().await;
    eventually("writes recover", async || {
        post(&a, "", entry(2, 80)).await.status == 201
    })
    .await;
    eventually("ready again", async || {
        call(&a, Method::GET, "/readyz", None).await.status == 200
    })
    .await;
    assert_eq!(table(dir.path(), "a"), etcd_entries(&etcd).await);
}

#[tokio::test]
async fn two_nodes_writing_the_same_hosts_converge_to_etcds_order() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let a = started(dir.path(), "a", &etcd, "a.log").await;
    let b = started(dir.path(), "b", &etcd, "b.log").await;
    let storm = |d: &Daemon, port: u16| {
        let endpoint = d.endpoint.clone();
        async move {
            let mut c = Connection::connect(&endpoint, Some(TOKEN.into()))
                .await
                .unwrap();
            for round in 0..10 {
                for i in 0..20 {
                    let e = serde_json::to_vec(&entry(i, port + round)).unwrap();
                    let r = c
                        .request(Method::POST, "/entries.json", Some(e))
                        .await
                        .unwrap();
                    assert!(r.status == 200 || r.status == 201, "{}", r.text());
                }
            }
        }
    };
    tokio::join!(storm(&a, 1000), storm(&b, 2000));
    let expected = etcd_entries(&etcd).await;
    assert_eq!(expected.len(), 20);
    eventually("both tables equal etcd", async || {
        table(dir.path(), "a") == expected && table(dir.path(), "b") == expected
    })
    .await;
}
