//! A restart reopens the table file as is when it matches the store (the writer stopped
//! cleanly and nothing changed since), and rebuilds it from the store when it does not: an
//! older file, a damaged one, one from another store, or one left by a killed writer.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{table_entries, Daemon, TOKEN};
use hyper::Method;
use serde_json::json;
use set_backend_writer::client::Connection;
use shm_layout::Table;

/// Starts the daemon on `dir` and waits until it is healthy.
async fn start(dir: &Path, run: &str) -> Daemon {
    let mut d = Daemon::spawn(dir, Some(TOKEN), &[], &format!("{run}.log"));
    d.ready().await;
    d
}

/// SIGTERM, and waits for a clean exit.
fn stop(mut d: Daemon) -> String {
    d.signal(libc::SIGTERM);
    let start = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            assert!(status.success(), "{status}:\n{}", d.log_text());
            return d.log_text();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Upserts `n` entries `<prefix>-<i>.example` in one batch.
async fn write(d: &Daemon, prefix: &str, n: usize) {
    let mut c = Connection::connect(&d.endpoint, Some(TOKEN.into()))
        .await
        .unwrap();
    let upsert: Vec<_> = (0..n)
        .map(|i| json!({"host": format!("{prefix}-{i}.example"), "backend": format!("10.0.{}.{}:80", i / 250, i % 250 + 1)}))
        .collect();
    let body = serde_json::to_vec(&json!({ "upsert": upsert })).unwrap();
    let r = c
        .request(Method::PATCH, "/entries.json", Some(body))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Every entry through the API, sorted.
async fn listed(d: &Daemon) -> Vec<(String, String)> {
    let mut c = Connection::connect(&d.endpoint, Some(TOKEN.into()))
        .await
        .unwrap();
    common::entries_of(&c.request(Method::GET, "/entries.json", None).await.unwrap())
}

/// The generation and inode of the table file.
fn identity(dir: &Path) -> (u64, u64) {
    let path = dir.join("table");
    let generation = Table::open(&path).unwrap().generation();
    (generation, std::fs::metadata(&path).unwrap().ino())
}

const REOPENED: &str = "reopened as is";
const REBUILT: &str = "building the table from the store";

#[tokio::test]
async fn a_clean_restart_reopens_a_matching_table_without_a_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(dir.path(), "1").await;
    write(&d, "a", 300).await;
    let before = listed(&d).await;
    stop(d);
    let sealed = identity(dir.path());

    let d = start(dir.path(), "2").await;
    assert!(d.log_text().contains(REOPENED), "{}", d.log_text());
    assert_eq!(
        identity(dir.path()),
        sealed,
        "the same file, the same generation"
    );
    assert_eq!(listed(&d).await, before);
    assert_eq!(table_entries(&dir.path().join("table")), before);
    // It is written in place as before; the next clean stop seals it again.
    write(&d, "b", 10).await;
    let after = listed(&d).await;
    assert_eq!(after.len(), 310);
    stop(d);

    let d = start(dir.path(), "3").await;
    assert!(d.log_text().contains(REOPENED), "{}", d.log_text());
    assert_eq!(identity(dir.path()), sealed);
    assert_eq!(table_entries(&dir.path().join("table")), after);
    stop(d);
}

#[tokio::test]
async fn a_table_that_does_not_match_the_store_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let d = start(dir.path(), "1").await;
    write(&d, "a", 100).await;
    stop(d);
    let older = dir.path().join("older");
    std::fs::copy(&table, &older).unwrap();

    // Older: the store moved on after this file was sealed.
    let d = start(dir.path(), "2").await;
    write(&d, "b", 100).await;
    let expected = listed(&d).await;
    stop(d);
    let (generation, _) = identity(dir.path());
    std::fs::rename(&older, &table).unwrap();
    let d = start(dir.path(), "3").await;
    assert!(d.log_text().contains(REBUILT), "{}", d.log_text());
    assert_eq!(identity(dir.path()).0, generation + 1, "a new generation");
    assert_eq!(table_entries(&table), expected);
    stop(d);

    // Damaged: one byte of the header's checksummed part.
    let mut bytes = std::fs::read(&table).unwrap();
    bytes[0x30] ^= 0x40;
    std::fs::write(&table, &bytes).unwrap();
    let d = start(dir.path(), "4").await;
    assert!(d.log_text().contains(REBUILT), "{}", d.log_text());
    assert_eq!(table_entries(&table), expected);
    stop(d);

    // Damaged: one byte of a record's value after a clean stop (the header, its seal and its
    // counters intact): the digest sealed with it no longer matches.
    let mut bytes = std::fs::read(&table).unwrap();
    let at = bytes.windows(11).position(|w| w == b"10.0.0.1:80").unwrap();
    bytes[at + 7] = b'9';
    std::fs::write(&table, &bytes).unwrap();
    let d = start(dir.path(), "4b").await;
    assert!(
        d.log_text().contains("changed since it was sealed"),
        "{}",
        d.log_text()
    );
    assert_eq!(table_entries(&table), expected);
    stop(d);

    // From another store: a sealed table of a second data directory.
    let other = tempfile::tempdir().unwrap();
    let o = start(other.path(), "1").await;
    write(&o, "other", 20).await;
    stop(o);
    std::fs::copy(other.path().join("table"), &table).unwrap();
    let d = start(dir.path(), "5").await;
    assert!(d.log_text().contains(REBUILT), "{}", d.log_text());
    assert_eq!(table_entries(&table), expected);

    // Killed after a write: the store's seal went with the write's commit.
    write(&d, "c", 5).await;
    let expected = listed(&d).await;
    let mut d = d;
    d.kill();
    let d = start(dir.path(), "6").await;
    assert!(d.log_text().contains(REBUILT), "{}", d.log_text());
    assert_eq!(table_entries(&table), expected);
    assert_eq!(listed(&d).await, expected);
    stop(d);
}
