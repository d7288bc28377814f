//! The engine against faults of its store and of its table file, in process: a commit that
//! fails although it reached the disk, a store that fails while a growth runs, a record damaged
//! behind the writer's back, a stop while a growth is being built.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use set_backend_writer::engine::{self, EngineHandle, Op};
use set_backend_writer::metrics::Metrics;
use set_backend_writer::route::Route;
use set_backend_writer::store::{Applied, Change, Fault, RedbStore, Snapshot, Store, StoreError};
use shm_layout::{Backend, Host, Lookup, Seal, Table, TableLock, WriterOptions};

/// A real store that can report an error for a commit it made (as an fsync error after redb
/// wrote its commit would), and whose snapshots can be made slow to read (a large store).
struct Faulty {
    inner: RedbStore,
    fail_after_commit: AtomicBool,
    slow: AtomicBool,
}

impl Faulty {
    fn open(path: &Path) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner: RedbStore::open(path, 1 << 20).unwrap(),
            fail_after_commit: AtomicBool::new(false),
            slow: AtomicBool::new(false),
        })
    }
}

impl Store for Faulty {
    fn apply(&self, changes: &[Change<'_>]) -> Result<Applied, StoreError> {
        let r = self.inner.apply(changes)?;
        if self.fail_after_commit.swap(false, Ordering::SeqCst) {
            return Err(StoreError::new(Fault::Io, "commit", "EIO after the commit"));
        }
        Ok(r)
    }
    fn get(&self, host: &str) -> Result<Option<String>, StoreError> {
        self.inner.get(host)
    }
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let slow = self.slow.load(Ordering::SeqCst);
        Ok(Box::new(SlowSnapshot(self.inner.snapshot()?, slow)))
    }
    fn pieces(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        let slow = self.slow.load(Ordering::SeqCst);
        Ok(Box::new(SlowSnapshot(self.inner.pieces()?, slow)))
    }
    fn revision(&self) -> Result<u64, StoreError> {
        self.inner.revision()
    }
    fn seal(&self) -> Result<Seal, StoreError> {
        self.inner.seal()
    }
    fn set_seal(&self, seal: &Seal) -> Result<(), StoreError> {
        self.inner.set_seal(seal)
    }
    fn reopen(&self) -> Result<(), StoreError> {
        self.inner.reopen()
    }
}

/// A snapshot (or a read in pieces) that takes 100 ms per entry if it was taken while the
/// store was slow.
struct SlowSnapshot(Box<dyn Snapshot>, bool);

impl Snapshot for SlowSnapshot {
    fn count(&self) -> Result<u64, StoreError> {
        self.0.count()
    }
    fn for_each(&self, f: &mut dyn FnMut(&str, &str) -> bool) -> Result<(), StoreError> {
        self.0.for_each(&mut |h, b| {
            if self.1 {
                std::thread::sleep(Duration::from_millis(100));
            }
            f(h, b)
        })
    }
}

fn up(h: &str, b: &str) -> Op {
    Op::Upsert(
        Host::parse(h).unwrap(),
        Route::one(Backend::parse(b).unwrap()),
    )
}

fn opts() -> WriterOptions {
    WriterOptions {
        min_capacity: 16,
        sync: false,
        ..WriterOptions::default()
    }
}

fn start(store: Arc<dyn Store>, table: &Path) -> (EngineHandle, JoinHandle<()>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let (h, join) = engine::start(
        store,
        table.to_path_buf(),
        opts(),
        metrics.clone(),
        Duration::from_millis(50),
    )
    .unwrap();
    (h, join, metrics)
}

fn stop(h: EngineHandle, join: JoinHandle<()>) {
    h.stop();
    join.join().unwrap();
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("store.redb"), dir.join("table"))
}

fn lookup(table: &Path, host: &str) -> Option<String> {
    match Table::open(table).unwrap().lookup(host.as_bytes()) {
        Lookup::Hit(v) => Some(v.as_str().to_string()),
        _ => None,
    }
}

/// An engine on a store in `dir`, written until a growth is in progress, whose build reads
/// a slow snapshot (100 ms per entry: seconds in all); later snapshots are not slow.
async fn growing(dir: &Path) -> (Arc<Faulty>, EngineHandle, JoinHandle<()>, PathBuf) {
    let (store_path, table) = paths(dir);
    let store = Faulty::open(&store_path);
    let (h, join, metrics) = start(store.clone(), &table);
    store.slow.store(true, Ordering::SeqCst);
    for i in 0..1000 {
        h.submit(up(&format!("h{i}.example"), "10.0.0.1:80"))
            .await
            .unwrap();
        if metrics.table_growing.load(Ordering::Relaxed) {
            store.slow.store(false, Ordering::SeqCst);
            return (store, h, join, table);
        }
    }
    panic!("no growth started");
}

#[tokio::test]
async fn a_commit_reported_failed_but_durable_is_published_once_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let (store_path, table) = paths(dir.path());
    {
        let store = Faulty::open(&store_path);
        let (h, join, _) = start(store.clone(), &table);
        h.submit(up("a.example", "10.0.0.1:80")).await.unwrap();
        store.fail_after_commit.store(true, Ordering::SeqCst);
        assert!(h.submit(up("x.example", "10.0.0.2:80")).await.is_err());
        // The store reopens at this write, and holds x: the table is rebuilt from it.
        h.submit(up("b.example", "10.0.0.3:80")).await.unwrap();
        assert_eq!(lookup(&table, "x.example").as_deref(), Some("10.0.0.2:80"));
        stop(h, join);
    }
    // The clean stop sealed a table that matches the store; each restart serves x.
    for _ in 0..2 {
        let store = Arc::new(RedbStore::open(&store_path, 1 << 20).unwrap());
        let (h, join, _) = start(store, &table);
        assert_eq!(lookup(&table, "x.example").as_deref(), Some("10.0.0.2:80"));
        assert_eq!(Table::open(&table).unwrap().verify().unwrap().entries, 3);
        stop(h, join);
    }
}

#[tokio::test]
async fn a_store_that_fails_during_a_growth_reopens_at_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let (store, h, join, table) = growing(dir.path()).await;
    // The growth reads its snapshot for seconds; the store fails meanwhile.
    store.fail_after_commit.store(true, Ordering::SeqCst);
    assert!(h.submit(up("x.example", "10.0.0.2:80")).await.is_err());
    h.submit(up("y.example", "10.0.0.3:80")).await.unwrap();
    assert_eq!(lookup(&table, "x.example").as_deref(), Some("10.0.0.2:80"));
    assert_eq!(lookup(&table, "y.example").as_deref(), Some("10.0.0.3:80"));
    stop(h, join);
}

#[tokio::test]
async fn a_stopped_engine_leaves_no_growth_holding_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, h, join, table) = growing(dir.path()).await;
    stop(h, join);
    // Stopped means no build is left running (its file is gone) and the lock is free.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    drop(TableLock::acquire(&table).unwrap());
}

#[tokio::test]
async fn a_damaged_record_met_by_the_engine_rebuilds_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (store_path, table) = paths(dir.path());
    let store = Arc::new(RedbStore::open(&store_path, 1 << 20).unwrap());
    let (h, join, _) = start(store, &table);
    for i in 0..20 {
        h.submit(up(&format!("site-{i}.example"), "10.0.0.1:80"))
            .await
            .unwrap();
    }
    // The record words before site-3's key (its lengths), damaged behind the writer's back
    // (written in place: the file is never truncated under its mappings).
    let bytes = std::fs::read(&table).unwrap();
    let key = bytes
        .windows(14)
        .position(|w| w == b"site-3.example")
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&table)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[0xff; 16], (key - 16) as u64).unwrap();
    drop(file);
    let generation = Table::open(&table).unwrap().generation();
    h.submit(up("site-3.example", "10.0.0.9:80")).await.unwrap();
    let t = Table::open(&table).unwrap();
    assert!(t.generation() > generation, "rebuilt into a new generation");
    assert_eq!(t.verify().unwrap().entries, 20);
    assert_eq!(
        lookup(&table, "site-3.example").as_deref(),
        Some("10.0.0.9:80")
    );
    stop(h, join);
}
