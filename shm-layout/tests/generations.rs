//! Generations built beside the current table (`next_growth`, `copy_from`, `install`) and the
//! reopening of a sealed table (`seal`, `TableLock::reopen`).

use std::collections::BTreeMap;
use std::io;

use shm_layout::{Backend, Host, Lookup, Seal, Table, TableLock, TableWriter, WriterOptions};

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
    let mut recorded = Seal::default();
    w.seal(42, |s| -> io::Result<()> {
        recorded = *s;
        Ok(())
    })
    .unwrap();
    assert_eq!((recorded.id, recorded.entries), (42, 99));
    let generation = w.generation();
    let sealed = entries(&path);
    drop(w);

    // Another seal: refused, and the lock comes back to build instead.
    let (lock, why) = TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), &Seal { id: 41, ..recorded })
        .err()
        .unwrap();
    assert!(why.contains("seal"), "{why}");
    drop(lock);
    let mut w = TableLock::acquire(&path)
        .unwrap()
        .reopen(opts(), &recorded)
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
        .reopen(opts(), &recorded)
        .is_err());
}

/// A table built and sealed with id 7, then `damage` done to its bytes: why it is refused.
fn refused_after(damage: impl FnOnce(&mut Vec<u8>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut w = TableWriter::create(&path, (0..50).map(|i| (h(i), b(i))), opts()).unwrap();
    let mut seal = Seal::default();
    w.seal(7, |s| -> io::Result<()> {
        seal = *s;
        Ok(())
    })
    .unwrap();
    drop(w);
    let mut bytes = std::fs::read(&path).unwrap();
    damage(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    match TableLock::acquire(&path).unwrap().reopen(opts(), &seal) {
        Ok(_) => panic!("the damaged table was reopened"),
        Err((_, why)) => why,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn a_damaged_sealed_table_is_not_reopened() {
    // The entries counter (not checksummed) says one more than the index holds.
    let why = refused_after(|bytes| bytes[0x100] += 1);
    assert!(why.contains("entries"), "{why}");
}

#[test]
fn a_sealed_table_with_a_damaged_value_is_not_reopened() {
    // One byte of site-0's backend: 10.0.0.1:8080 becomes 10.0.0.9:8080, a well-formed
    // record a reader would serve.
    let why = refused_after(|bytes| {
        let at = find(bytes, b"10.0.0.1:8080");
        bytes[at + 7] = b'9';
    });
    assert!(why.contains("changed since it was sealed"), "{why}");
}

#[test]
fn a_sealed_table_with_a_damaged_record_header_is_not_reopened() {
    // The record words before site-0's key (its lengths), which the writer decodes at the
    // first write of that host.
    let why = refused_after(|bytes| {
        let key = find(bytes, b"site-0.example.com");
        bytes[key - 16..key].fill(0xff);
    });
    assert!(why.contains("changed since it was sealed"), "{why}");
}

#[test]
fn a_sealed_table_with_a_damaged_slot_is_not_reopened() {
    // A slot word still pointing inside the used arena, but not at a record's start.
    let why = refused_after(|bytes| {
        let index = shm_layout::testkit::HEADER_LEN;
        let slot = (0..)
            .map(|i| index + 8 * i)
            .find(|&at| bytes[at..at + 8] != [0; 8])
            .unwrap();
        bytes[slot] ^= 1;
    });
    assert!(why.contains("changed since it was sealed"), "{why}");
}

#[test]
fn a_damaged_record_met_by_the_writer_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut w = TableWriter::create(&path, (0..50).map(|i| (h(i), b(i))), opts()).unwrap();
    // Damaged behind the writer's back, through a second mapping of its file.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).unwrap();
    let key = find(&bytes, b"site-0.example.com");
    io::Seek::seek(&mut file, io::SeekFrom::Start((key - 16) as u64)).unwrap();
    io::Write::write_all(&mut file, &[0xff; 16]).unwrap();
    drop(file);
    let e = w.upsert(&h(0), &b(1)).unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
    let e = w.delete(&h(0)).unwrap_err();
    assert!(e.to_string().contains("damaged"), "{e}");
}

/// A next generation whose file cannot be made (here larger than `RLIMIT_FSIZE`, as with a
/// full disk) leaves no file behind, however often it is tried.
#[test]
fn a_next_generation_that_cannot_be_created_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let w = TableWriter::create(&path, (0..50).map(|i| (h(i), b(i))), opts()).unwrap();
    let big = shm_layout::Sizing {
        entries: 1_000_000,
        record_words: 8_000_000,
    };
    // SAFETY: a test binary of its own (this file's tests write small files only); SIGXFSZ
    // ignored so that going past the limit is EFBIG, not a kill.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 1 << 24,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    let results: Vec<bool> = (0..3)
        .map(|_| w.next_generation(big, false).unwrap().create().is_err())
        .collect();
    // SAFETY: as above.
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    assert_eq!(results, [true; 3]);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "table and lock only, found {names:?}");
}

#[test]
fn a_durable_generation_written_back_as_it_is_filled_is_complete() {
    // Enough entries that the arena passes many write-back ranges (1 MiB), and a first
    // arena sized for 40 entries, so that the generation also grows in place while filled.
    let n: u32 = 300_000;
    let backend = |i: u32| {
        Backend::parse(&format!(
            "10.{}.{}.{}:8080",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ))
        .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let durable = WriterOptions {
        sync: true,
        ..opts()
    };
    let mut w = TableWriter::create(&path, (0..40).map(|i| (h(i), backend(i))), durable).unwrap();
    let mut next = w.next_growth().unwrap().create().unwrap();
    for i in 0..n {
        next.upsert(&h(i), &backend(i)).unwrap();
    }
    next.sync().unwrap();
    w.install(next).unwrap().finish().unwrap();

    let t = Table::open(&path).unwrap();
    assert!(t.stats().arena_used > 8 * (1 << 20), "{:?}", t.stats());
    let got = entries(&path);
    assert_eq!(got.len(), n as usize);
    for i in (0..n).step_by(997) {
        assert_eq!(got[h(i).as_str()], backend(i).as_str());
    }
}
