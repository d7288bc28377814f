//! Generations built beside the current table (`next_growth`, `copy_from`, `install`) and the
//! reopening of a sealed table (`seal`, `TableLock::reopen`).

use std::collections::BTreeMap;
use std::io;

use shm_layout::{Backend, Host, Lookup, Table, TableLock, TableWriter, WriterOptions};

fn h(i: u32) -> Host {
    Host::parse(&format!("site-{i}.example.com")).unwrap()
}

fn b(i: u32) -> Backend {
    Backend::parse(&format!("10.0.{}.{}:8080", i / 250, i % 250 + 1)).unwrap()
}

fn opts() -> WriterOptions {
    WriterOptions {
        min_capacity: 16,
        sync: false,
        ..WriterOptions::default()
    }
}

fn entries(path: &std::path::Path) -> BTreeMap<String, String> {
    let t = Table::open(path).unwrap();
    t.verify().unwrap();
    t.entries().into_iter().collect()
}

#[test]
fn a_generation_built_beside_the_current_one_carries_the_changes_made_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut w = TableWriter::create(&path, (0..40).map(|i| (h(i), b(i))), opts()).unwrap();
    let mut expected: BTreeMap<String, String> = (0..40)
        .map(|i| (h(i).into_string(), b(i).as_str().to_string()))
        .collect();
    let reader = Table::open(&path).unwrap();
    let capacity = reader.stats().capacity;

    // The next generation is filled from a snapshot of the 40 entries ...
    let mut next = w.next_growth().unwrap().create().unwrap();
    let filler = std::thread::spawn(move || {
        for i in 0..40 {
            next.upsert(&h(i), &b(i)).unwrap();
        }
        next.sync().unwrap();
        next
    });
    // ... while the current table changes in place, growing once (generations move on).
    let before = w.generation();
    let mut changed = Vec::new();
    for i in 40..200 {
        w.upsert(&h(i), &b(i + 1)).unwrap();
        expected.insert(h(i).into_string(), b(i + 1).as_str().to_string());
        changed.push(h(i));
    }
    for i in [3, 5, 7] {
        w.delete(&h(i)).unwrap();
        expected.remove(h(i).as_str());
        changed.push(h(i));
    }
    w.upsert(&h(9), &b(999)).unwrap();
    expected.insert(h(9).into_string(), b(999).as_str().to_string());
    changed.push(h(9));
    assert!(
        w.generation() > before,
        "the current table grew in place meanwhile"
    );
    let mut next = filler.join().unwrap();
    assert_eq!(next.len(), 40);
    for host in &changed {
        next.copy_from(&w, host.as_str()).unwrap();
    }
    assert_eq!(next.len(), expected.len() as u64);
    let generation = w.generation();
    w.install(next).unwrap().finish().unwrap();

    assert_eq!(
        w.generation(),
        generation + 1,
        "renumbered after the current one"
    );
    assert!(reader.is_superseded());
    let t = Table::open(&path).unwrap();
    assert_eq!(t.generation(), generation + 1);
    assert!(t.stats().capacity > capacity);
    assert_eq!(entries(&path), expected);
    assert!(matches!(t.lookup(b"site-3.example.com"), Lookup::Miss));
    // The installed generation is written in place as usual.
    w.upsert(&h(1000), &b(1)).unwrap();
    assert!(matches!(t.lookup(b"site-1000.example.com"), Lookup::Hit(_)));
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn a_dropped_generation_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let w = TableWriter::create(&path, (0..10).map(|i| (h(i), b(i))), opts()).unwrap();
    let mut next = w.next_growth().unwrap().create().unwrap();
    next.upsert(&h(1), &b(1)).unwrap();
    drop(next);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        2,
        "table and lock"
    );
}

#[test]
fn a_sealed_table_is_reopened_as_is_only_with_its_seal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut w = TableWriter::create(&path, (0..100).map(|i| (h(i), b(i))), opts()).unwrap();
    w.delete(&h(7)).unwrap();
    w.upsert(&h(8), &b(800)).unwrap();
    let mut recorded = 0;
    w.seal(42, || -> io::Result<()> {
        recorded = 42;
        Ok(())
    })
    .unwrap();
    assert_eq!(recorded, 42);
    let generation = w.generation();
    let sealed = entries(&path);
    drop(w);

    // Another seal: refused, and the lock comes back to build instead.
    let (lock, why) = TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), 41)
        .err()
        .unwrap();
    assert!(why.contains("seal"), "{why}");
    drop(lock);
    let mut w = TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), 42)
        .unwrap_or_else(|(_, why)| panic!("{why}"));
    assert_eq!(w.generation(), generation);
    assert_eq!(w.len(), 99);
    assert_eq!(entries(&path), sealed);
    // It takes writes in place, growing as usual, and reuses nothing it does not know.
    for i in 100..300 {
        w.upsert(&h(i), &b(i)).unwrap();
    }
    assert_eq!(w.len(), 299);
    assert_eq!(Table::open(&path).unwrap().verify().unwrap().entries, 299);
    drop(w);
    // Reopened, the file no longer carries the seal: a change may have followed.
    assert!(TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), 42)
        .is_err());
}

#[test]
fn a_damaged_sealed_table_is_not_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut w = TableWriter::create(&path, (0..50).map(|i| (h(i), b(i))), opts()).unwrap();
    w.seal(7, || -> io::Result<()> { Ok(()) }).unwrap();
    drop(w);
    let mut bytes = std::fs::read(&path).unwrap();
    // The entries counter (not checksummed) says one more than the index holds.
    bytes[0x100] += 1;
    std::fs::write(&path, &bytes).unwrap();
    let (_, why) = TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), 7)
        .err()
        .unwrap();
    assert!(why.contains("index holds"), "{why}");
}
