//! The table grows while writes go on: a small table (64 slots) is grown several times by
//! concurrent writers; every write is in the table when it is acknowledged (in whichever
//! generation a reader opens then), and the final table holds exactly the store's entries.

mod common;

use std::sync::Arc;

use common::{table_entries, RouterHarness};
use hyper::Method;
use serde_json::json;
use shm_layout::{Lookup, Table};

/// The value of one metric line `name value`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_during_a_growth_are_all_in_the_new_generation() {
    let h = Arc::new(RouterHarness::new());
    let first = Table::open(&h.table_path).unwrap().stats().capacity;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let host = format!("w{t}-{i}.example");
                let backend = format!("10.{t}.{}.{}:80", i / 200, i % 200 + 1);
                let r = if i % 5 == 0 {
                    // Some writes as batches, some of them updating earlier hosts.
                    let upsert = [
                        json!({"host": host, "backend": backend}),
                        json!({"host": format!("w{t}-{}.example", i / 2), "backend": backend}),
                    ];
                    let body = if i == 0 {
                        json!({"upsert": [upsert[0]]})
                    } else {
                        json!({"upsert": upsert})
                    };
                    h.api(Method::PATCH, "/entries.json", Some(body)).await
                } else {
                    let body = json!({"host": host, "backend": backend});
                    h.api(Method::POST, "/entries.json", Some(body)).await
                };
                assert!(r.status / 100 == 2, "{}", r.text());
                // Acknowledged means visible: a reader opening the path now finds it.
                let table = Table::open(&h.table_path).unwrap();
                match table.lookup(host.as_bytes()) {
                    Lookup::Hit(v) => assert_eq!(v.as_str(), backend, "{host}"),
                    other => panic!("{host} acknowledged but {other:?}"),
                }
                if i % 50 == 49 {
                    let r = h
                        .api(
                            Method::DELETE,
                            &format!("/entries/w{t}-{}.example.json", i - 1),
                            None,
                        )
                        .await;
                    assert_eq!(r.status, 204, "{}", r.text());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Let a growth in progress finish, then compare the table with the store.
    let mut text = String::new();
    for _ in 0..500 {
        text = h.api(Method::GET, "/metrics", None).await.text();
        if metric(&text, "set_backend_table_growing") == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&text, "set_backend_table_growing"), 0.0);
    assert!(
        metric(&text, "set_backend_table_growths_total") >= 2.0,
        "the table grew beside the writes:\n{text}"
    );
    let table = Table::open(&h.table_path).unwrap();
    assert!(table.stats().capacity >= 16 * first, "{:?}", table.stats());
    assert_eq!(table_entries(&h.table_path), h.list().await);
    assert_eq!(h.list().await.len(), 8 * 250 - 8 * 5);
}
