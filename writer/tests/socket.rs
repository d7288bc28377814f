//! The daemon over a real socket: streaming, group commit, graceful shutdown, a stalled
//! client, and where TCP may listen.

mod common;

use std::collections::BTreeSet;

use common::{entries_of, table_entries, ServerHarness, TOKEN};
use hyper::Method;
use serde_json::{json, Value};
use shm_layout::Table;

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
    let store = set_backend_writer::store::RedbStore::open_shared(&dir.join("store.redb")).unwrap();
    for h in &acked {
        assert!(
            in_table.contains(h),
            "{h} acknowledged but not in the table"
        );
        assert!(
            store
                .get(shm_layout::Host::parse(h).unwrap().as_str())
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
