//! Writer + reader round trips on real files.

use std::path::PathBuf;

use shm_layout::{Backend, Host, Lookup, Table, TableWriter, Upserted, WriterOptions};

/// No entries, for a table created empty.
const NONE: [(Host, Backend); 0] = [];

fn h(s: &str) -> Host {
    Host::parse(s).unwrap()
}
fn b(s: &str) -> Backend {
    Backend::parse(s).unwrap()
}

/// A table of `entries` (host, backend) with the default options in a fresh directory: the
/// directory (keep it), the table's path and its writer.
fn create(entries: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, TableWriter) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let entries = entries.iter().map(|&(host, backend)| (h(host), b(backend)));
    let w = TableWriter::create(&path, entries, WriterOptions::default()).unwrap();
    (dir, path, w)
}

fn hit(t: &Table, host: &str) -> Option<String> {
    match t.lookup(host.as_bytes()) {
        Lookup::Hit(v) => Some(v.as_str().to_owned()),
        Lookup::Miss => None,
        other => panic!("{host}: {other:?}"),
    }
}

#[test]
fn create_upsert_delete_are_seen_by_a_reader() {
    let (_dir, path, mut w) = create(&[
        ("a.example", "10.0.0.1:80"),
        ("B.example.", "backend.local:8080"),
    ]);
    let t = Table::open(&path).unwrap();
    assert_eq!(t.generation(), 1);
    assert_eq!(hit(&t, "a.example").as_deref(), Some("10.0.0.1:80"));
    assert_eq!(hit(&t, "b.example").as_deref(), Some("backend.local:8080"));
    assert_eq!(hit(&t, "c.example"), None);
    match t.lookup(b"a.example") {
        Lookup::Hit(v) => assert_eq!(v.addr(), Some("10.0.0.1:80".parse().unwrap())),
        other => panic!("{other:?}"),
    }

    assert_eq!(
        w.upsert(&h("c.example"), &b("[::1]:9000")).unwrap(),
        Upserted::Inserted
    );
    assert_eq!(
        w.upsert(&h("a.example"), &b("10.0.0.2:80")).unwrap(),
        Upserted::Updated
    );
    assert_eq!(
        w.upsert(&h("a.example"), &b("10.0.0.2:80")).unwrap(),
        Upserted::Unchanged
    );
    assert_eq!(hit(&t, "a.example").as_deref(), Some("10.0.0.2:80"));
    assert_eq!(hit(&t, "c.example").as_deref(), Some("[::1]:9000"));
    assert!(w.delete(&h("b.example")).unwrap());
    assert!(!w.delete(&h("b.example")).unwrap());
    assert_eq!(hit(&t, "b.example"), None);
    let stats = t.verify().unwrap();
    assert_eq!((stats.entries, stats.tombstones), (2, 1));
    assert!(!t.is_superseded());
}

#[test]
fn growth_publishes_a_new_generation_and_supersedes_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let opts = WriterOptions {
        min_capacity: 64,
        ..WriterOptions::default()
    };
    let mut w = TableWriter::create(&path, NONE, opts).unwrap();
    let first = Table::open(&path).unwrap();
    for i in 0..5000 {
        w.upsert(
            &h(&format!("host-{i}.example")),
            &b(&format!("10.0.{}.{}:80", i / 256, i % 256)),
        )
        .unwrap();
    }
    assert!(first.is_superseded());
    let t = Table::open(&path).unwrap();
    assert!(t.generation() > 1);
    assert!(!t.is_superseded());
    for i in 0..5000 {
        let want = format!("10.0.{}.{}:80", i / 256, i % 256);
        assert_eq!(
            hit(&t, &format!("host-{i}.example")).as_deref(),
            Some(want.as_str())
        );
    }
    assert_eq!(t.verify().unwrap().entries, 5000);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["table", "table.lock"]);
}

#[test]
fn a_second_writer_is_refused_and_a_restart_bumps_the_generation() {
    let (_dir, path, w) = create(&[("a.example", "10.0.0.1:80")]);
    let old = Table::open(&path).unwrap();
    assert!(matches!(
        TableWriter::create(&path, NONE, Default::default()),
        Err(shm_layout::WriteError::Locked(_))
    ));
    drop(w);
    let w2 = TableWriter::create(
        &path,
        [(h("a.example"), b("10.0.0.9:80"))],
        Default::default(),
    )
    .unwrap();
    assert_eq!(w2.generation(), 2);
    assert!(old.is_superseded());
    assert_eq!(hit(&old, "a.example").as_deref(), Some("10.0.0.1:80"));
    let new = Table::open(&path).unwrap();
    assert_eq!(hit(&new, "a.example").as_deref(), Some("10.0.0.9:80"));
}

#[test]
fn odd_options_and_leftovers_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    // A temporary file left by a writer that died while building a generation.
    std::fs::write(dir.path().join("table.7.tmp"), b"partial").unwrap();
    std::fs::write(dir.path().join("table.notes"), b"not ours").unwrap();
    let opts = WriterOptions {
        max_probe: 0,
        min_capacity: 0,
        ..WriterOptions::default()
    };
    let mut w = TableWriter::create(&path, NONE, opts).unwrap();
    for i in 0..200 {
        w.upsert(&h(&format!("h{i}.example")), &b("10.0.0.1:80"))
            .unwrap();
    }
    let t = Table::open(&path).unwrap();
    assert_eq!(t.verify().unwrap().entries, 200);
    assert!(!dir.path().join("table.7.tmp").exists());
    assert!(dir.path().join("table.notes").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
}

/// Two hosts sharing a home slot in the smallest index, with one probe allowed: the second
/// insert must grow the index (it once rebuilt the same 64-slot index forever while fewer than
/// four entries made `entries / 4` zero).
#[test]
fn a_home_slot_collision_with_one_probe_grows_the_index() {
    const KEY: (u64, u64) = (1, 2);
    let hosts: Vec<String> = (0..100).map(|i| format!("c{i}.example")).collect();
    // The table's hash (FORMAT.md §5): SipHash-1-3 under the header key.
    let home =
        |h: &str| siphasher::sip::SipHasher13::new_with_keys(KEY.0, KEY.1).hash(h.as_bytes()) & 63;
    let (a, b) = hosts
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            hosts[i + 1..]
                .iter()
                .find(|b| home(b) == home(a))
                .map(|b| (a, b))
        })
        .expect("two of 100 hosts share one of 64 home slots");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let opts = WriterOptions {
        max_probe: 1,
        min_capacity: 0,
        hash_key: Some(KEY),
        sync: false,
        ..WriterOptions::default()
    };
    let (a, b) = (h(a), h(b));
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut w = TableWriter::create(&path, NONE, opts).unwrap();
        w.upsert(&a, &self::b("10.0.0.1:80")).unwrap();
        w.upsert(&b, &self::b("10.0.0.2:80")).unwrap();
        let _ = done.send((w.len(), Table::open(&path).unwrap().stats().capacity));
    });
    let (entries, capacity) = wait
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the second insert finishes");
    assert_eq!(entries, 2);
    assert!(capacity > 64, "capacity {capacity}");
}

#[test]
fn one_at_a_time_inserts_keep_the_index_and_file_proportionate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let opts = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let mut w = TableWriter::create(&path, NONE, opts).unwrap();
    let n = 100_000u64;
    for i in 0..n {
        w.upsert(&h(&format!("site-{i}.example.com")), &b("10.0.0.1:80"))
            .unwrap();
    }
    let stats = w.stats();
    // At most three quarters full, at least a quarter full: the index follows the entries.
    assert!(
        stats.capacity * 3 >= n * 4 && stats.capacity <= n * 4,
        "{stats:?}"
    );
    // Records are 8 words here; the arena holds them with at most 2x headroom.
    assert!(stats.arena_len <= 2 * n * 64 + 64 * 4096, "{stats:?}");
    assert!(stats.generation < 40, "{stats:?}");
    let t = Table::open(&path).unwrap();
    assert_eq!(t.verify().unwrap().entries, n);
}

#[test]
fn replace_all_swaps_the_whole_set_atomically_and_keeps_the_lock() {
    let (_dir, path, mut w) = create(&[
        ("old-1.example", "10.0.0.1:80"),
        ("both.example", "10.0.0.1:80"),
    ]);
    let before = Table::open(&path).unwrap();
    w.replace_all([
        (h("new-1.example"), b("10.0.0.2:80")),
        (h("both.example"), b("10.0.0.2:80")),
    ])
    .unwrap();
    assert!(before.is_superseded());
    assert_eq!(
        hit(&before, "old-1.example").as_deref(),
        Some("10.0.0.1:80")
    );
    let after = Table::open(&path).unwrap();
    assert_eq!(after.generation(), before.generation() + 1);
    assert_eq!(hit(&after, "old-1.example"), None);
    assert_eq!(hit(&after, "new-1.example").as_deref(), Some("10.0.0.2:80"));
    assert_eq!(hit(&after, "both.example").as_deref(), Some("10.0.0.2:80"));
    assert_eq!(w.len(), 2);
    assert!(matches!(
        TableWriter::create(&path, NONE, WriterOptions::default()),
        Err(shm_layout::WriteError::Locked(_))
    ));
    // The writer goes on working on the new generation.
    w.upsert(&h("later.example"), &b("10.0.0.3:80")).unwrap();
    assert_eq!(hit(&after, "later.example").as_deref(), Some("10.0.0.3:80"));
}
