//! Damaged and hostile table files: every one gives a precise open error, a miss, `Busy` or
//! `Corrupt`; never a panic, a hang or an out-of-bounds read.

use proptest::prelude::*;
use shm_layout::testkit::Rng;
use shm_layout::testkit::*;
use shm_layout::{Backend, Host, Lookup, Match, OpenError, Table, TableWriter, WriterOptions};
use std::path::Path;

const SITES: usize = 100;

fn hosts() -> Vec<String> {
    (0..SITES).map(site).collect()
}

/// The bytes of a valid table of 100 entries, capacity 256, with a pinned hash key.
fn valid_bytes() -> Vec<u8> {
    valid_table(SITES, |i| format!("10.0.0.{i}:80"))
}

fn open_bytes(bytes: &[u8]) -> Result<Table, OpenError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    std::fs::write(&path, bytes).unwrap();
    Table::open(&path)
}

/// Every key and some strangers: none may panic; returns the answers.
fn probe_all(t: &Table) -> Vec<Lookup> {
    let mut keys = hosts();
    keys.extend(["missing.example".into(), "a".into(), "x".repeat(253)]);
    keys.extend(["a.b.c.site-1.example".into(), labels_127()]);
    let answers = keys.iter().map(|k| t.lookup(k.as_bytes())).collect();
    let _ = t.verify();
    let _ = t.entries();
    let _ = t.stats();
    answers
}

#[test]
fn the_valid_file_is_valid() {
    let t = open_bytes(&valid_bytes()).unwrap();
    assert_eq!(t.verify().unwrap().entries, 100);
    assert!(probe_all(&t)[..100]
        .iter()
        .all(|l| matches!(l, Lookup::Hit(_))));
}

#[test]
fn header_damage_gives_precise_errors() {
    let good = valid_bytes();
    let case = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        open_bytes(&b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(matches!(
        open_bytes(&[]),
        Err(OpenError::Truncated { len: 0, .. })
    ));
    assert!(matches!(
        open_bytes(&good[..HEADER_LEN - 1]),
        Err(OpenError::Truncated { .. })
    ));
    assert!(matches!(
        open_bytes(&good[..good.len() - 8]),
        Err(OpenError::Truncated { .. })
    ));
    assert!(matches!(
        open_bytes(&vec![0xa5; 8192]),
        Err(OpenError::BadMagic)
    ));
    let mut b = good.clone();
    b[H_MAGIC] = b'X';
    assert!(matches!(open_bytes(&b), Err(OpenError::BadMagic)));
    let mut b = good.clone();
    set(&mut b, H_VERSION, version_word(FORMAT_VERSION - 1));
    seal(&mut b);
    assert!(matches!(
        open_bytes(&b),
        Err(OpenError::Version {
            expected: FORMAT_VERSION,
            got
        }) if got == FORMAT_VERSION - 1
    ));
    let mut b = good.clone();
    set(&mut b, H_VERSION, big_endian_version_word());
    assert!(matches!(open_bytes(&b), Err(OpenError::Endianness)));
    let mut b = good.clone();
    b[H_HASH_K1] ^= 1; // hash key changed without resealing
    assert!(matches!(open_bytes(&b), Err(OpenError::Checksum)));
    for (off, value, field) in header_field_damage() {
        let msg = case(&|b| {
            set(b, off, value);
            seal(b);
        });
        assert!(msg.contains(field), "offset {off}: {msg}");
    }
    // A header promising more than the file holds.
    let msg = case(&|b| {
        let arena_len = word(b, H_ARENA_LEN) + 8;
        set(b, H_ARENA_LEN, arena_len);
        let file_len = word(b, H_FILE_LEN) + 8;
        set(b, H_FILE_LEN, file_len);
        seal(b);
    });
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn slots_pointing_outside_the_arena_are_corrupt_not_crashes() {
    let b = slots_outside_the_arena(&valid_bytes());
    let t = open_bytes(&b).unwrap();
    let answers = probe_all(&t);
    assert!(
        answers[..100].iter().all(|l| *l == Lookup::Corrupt),
        "{answers:?}"
    );
    assert!(t.verify().is_err());
}

#[test]
fn a_full_index_of_tombstones_ends_in_a_miss() {
    let b = every_slot(&valid_bytes(), SLOT_TOMBSTONE);
    let t = open_bytes(&b).unwrap();
    assert!(probe_all(&t).iter().all(|l| *l == Lookup::Miss));
}

#[test]
fn every_slot_claiming_every_record_ends_in_a_miss_or_hit() {
    // All slots carry the tag of `site-0.example` and point at one record: probing a key with
    // that tag visits every slot once and must stop.
    let b = every_slot(&valid_bytes(), slot_word(tag(&site(0)), 0));
    let t = open_bytes(&b).unwrap();
    let answers = probe_all(&t);
    assert!(matches!(answers[0], Lookup::Hit(_) | Lookup::Miss));
}

#[test]
fn a_record_stuck_mid_write_answers_busy() {
    let mut b = valid_bytes();
    let (_, rec) = record_of(&b, &site(7));
    set(&mut b, record_word_at(rec, 0), 3); // odd sequence number: a writer died mid-write
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-7.example"), Lookup::Busy);
    assert!(t.verify().is_err());
}

/// A table of the previous format version at the path (left by an older writer): readers refuse
/// it, and a writer does not read it but publishes its own generation 1 over it.
#[test]
fn a_writer_replaces_a_file_of_the_previous_version() {
    let mut b = valid_bytes();
    set(&mut b, H_VERSION, version_word(FORMAT_VERSION - 1));
    seal(&mut b);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        Table::open(&path),
        Err(OpenError::Version {
            expected: FORMAT_VERSION,
            got
        }) if got == FORMAT_VERSION - 1
    ));
    let opts = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let entries = [(
        Host::parse("new.example").unwrap(),
        Backend::parse("10.9.9.9:80").unwrap(),
    )];
    let w = TableWriter::create(&path, entries, opts).unwrap();
    assert_eq!(w.generation(), 1);
    let t = Table::open(&path).unwrap();
    assert_eq!(t.generation(), 1);
    assert_eq!(t.verify().unwrap().entries, 1);
    assert!(matches!(t.lookup(b"new.example"), Lookup::Hit(v) if v.as_str() == "10.9.9.9:80"));
    assert_eq!(t.lookup(b"site-3.example"), Lookup::Miss);
}

#[test]
fn record_lengths_out_of_range_are_corrupt() {
    let good = valid_bytes();
    let (slot, rec) = record_of(&good, &site(3));
    for meta in impossible_metas() {
        let mut b = good.clone();
        set(&mut b, meta_at(rec), meta);
        let t = open_bytes(&b).unwrap();
        assert_eq!(
            t.lookup(b"site-3.example"),
            Lookup::Corrupt,
            "meta {meta:#x}"
        );
    }
    // A stable record whose value holds a byte no backend has ('/' would change proxy_pass).
    let mut b = good.clone();
    let value_at = value_at(&b, &site(3));
    b[value_at] = b'/';
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-3.example"), Lookup::Corrupt);
    assert!(t.verify().is_err());
    // A value nginx would read as a unix socket path (`http://unix:…`).
    let mut b = good.clone();
    b[value_at..value_at + 5].copy_from_slice(b"unix:");
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-3.example"), Lookup::Corrupt);
    // A record at the very end of the arena whose value would run past it.
    let mut b = good.clone();
    let arena_words = word(&b, H_ARENA_LEN) as usize / 8;
    let last = arena_words - 4;
    set(&mut b, slot_at(slot), slot_word(tag(&site(3)), last));
    set(&mut b, meta_at(last), meta(14, 200, 0));
    set(&mut b, record_word_at(last, 2), key_hash(&site(3)));
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-3.example"), Lookup::Corrupt);
}

/// The corpus the end-to-end tests load into nginx, opened here without it: each file fails to
/// open with the error it is labelled with, or opens and answers every lookup.
#[test]
fn the_hostile_corpus_opens_as_labelled() {
    let good = valid_bytes();
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let corpus = hostile_corpus(&good, 16, &mut |n| rng.below(n));
    assert!(corpus.len() >= 50, "{} files", corpus.len());
    for h in &corpus {
        match (open_bytes(&h.bytes), h.open_error) {
            (Err(e), Some(what)) => assert!(e.to_string().contains(what), "{}: {e}", h.name),
            (Ok(t), None) => {
                probe_all(&t);
            }
            (Ok(_), Some(what)) => panic!("{}: opened, want an error naming {what}", h.name),
            (Err(e), None) => panic!("{}: {e}", h.name),
        }
    }
}

/// `a.a.….a`: the most labels a host can have (127 in 253 bytes).
fn labels_127() -> String {
    vec!["a"; 127].join(".")
}

/// A table of `entries` made by the writer with the kit's hash key and capacity (so that the
/// kit finds its records), as bytes.
fn table_bytes(entries: &[(String, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let entries = entries
        .iter()
        .map(|(h, b)| (Host::parse(h).unwrap(), Backend::parse(b).unwrap()));
    let opts = WriterOptions {
        sync: false,
        hash_key: Some(KEY),
        min_capacity: CAPACITY as u64,
        ..WriterOptions::default()
    };
    drop(TableWriter::create(&path, entries, opts).unwrap());
    std::fs::read(&path).unwrap()
}

/// A host of 127 labels walks all 126 suffixes and the default, within its bounds: the longest
/// wildcard present answers, whichever it is, and with none the default does.
#[test]
fn a_host_of_127_labels_walks_every_suffix() {
    let host = labels_127();
    assert_eq!(host.len(), 253);
    let mut entries = vec![("*".to_owned(), "10.0.0.1:80")];
    let t = open_bytes(&table_bytes(&entries)).unwrap();
    assert!(matches!(t.lookup(host.as_bytes()), Lookup::Hit(v) if v.matched() == Match::Default));
    entries.push(("*.a".to_owned(), "10.0.0.2:80"));
    let t = open_bytes(&table_bytes(&entries)).unwrap();
    match t.lookup(host.as_bytes()) {
        Lookup::Hit(v) => {
            assert_eq!(v.as_str(), "10.0.0.2:80");
            assert_eq!(v.matched(), Match::Wildcard { dot: 251 });
        }
        other => panic!("{other:?}"),
    }
}

/// Every suffix of a long host has its wildcard: each lookup takes the longest, and as the
/// longer ones go, the next longest answers, down to the default.
#[test]
fn every_suffix_present_gives_the_longest() {
    let host = labels_127();
    let dots: Vec<usize> = host.match_indices('.').map(|(i, _)| i).collect();
    let backends: Vec<String> = (0..dots.len())
        .map(|i| format!("10.1.{}.{}:80", i / 256, i % 256))
        .collect();
    let mut entries: Vec<(String, &str)> = dots
        .iter()
        .zip(&backends)
        .map(|(&d, b)| (format!("*{}", &host[d..]), b.as_str()))
        .collect();
    entries.push(("*".to_owned(), "10.0.0.9:80"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let parsed = entries
        .iter()
        .map(|(h, b)| (Host::parse(h).unwrap(), Backend::parse(b).unwrap()));
    let opts = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let mut w = TableWriter::create(&path, parsed, opts).unwrap();
    let t = Table::open(&path).unwrap();
    for (i, &d) in dots.iter().enumerate() {
        match t.lookup(host.as_bytes()) {
            Lookup::Hit(v) => {
                assert_eq!(v.as_str(), backends[i]);
                assert_eq!(v.matched(), Match::Wildcard { dot: d });
            }
            other => panic!("suffix {i}: {other:?}"),
        }
        assert!(w
            .delete(&Host::parse(&format!("*{}", &host[d..])).unwrap())
            .unwrap());
    }
    assert!(matches!(t.lookup(host.as_bytes()), Lookup::Hit(v) if v.matched() == Match::Default));
    assert_eq!(t.verify().unwrap().patterns, 1);
}

/// Damaged pattern records answer `Corrupt` (or `Busy` mid-write), never the next shorter
/// pattern or the default in their place; a lying pattern count costs probes, not answers.
#[test]
fn damaged_pattern_records_are_corrupt_not_skipped() {
    let mut entries: Vec<(String, &str)> = (0..20).map(|i| (site(i), "10.0.0.1:80")).collect();
    entries.push(("*.example".to_owned(), "10.0.0.2:80"));
    entries.push(("*".to_owned(), "10.0.0.3:80"));
    let good = table_bytes(&entries);
    assert_eq!(word(&good, H_PATTERNS), 2);
    let (_, rec) = record_of(&good, "*.example");
    for m in impossible_metas() {
        let mut b = good.clone();
        set(&mut b, meta_at(rec), m);
        let t = open_bytes(&b).unwrap();
        assert_eq!(t.lookup(b"new.example"), Lookup::Corrupt, "{m:#x}");
        assert!(matches!(t.lookup(b"site-3.example"), Lookup::Hit(_)));
    }
    let mut b = good.clone();
    set(&mut b, record_word_at(rec, 0), 5);
    assert_eq!(open_bytes(&b).unwrap().lookup(b"a.b.example"), Lookup::Busy);
    let mut b = good.clone();
    let at = value_at(&b, "*");
    b[at] = b'/';
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"elsewhere.test"), Lookup::Corrupt);
    assert!(matches!(t.lookup(b"a.example"), Lookup::Hit(v) if v.as_str() == "10.0.0.2:80"));
    // The count is not trusted for anything but skipping the walk.
    let mut b = good.clone();
    set(&mut b, H_PATTERNS, 0);
    assert_eq!(open_bytes(&b).unwrap().lookup(b"a.example"), Lookup::Miss);
    let mut b = valid_bytes();
    set(&mut b, H_PATTERNS, u64::MAX);
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(labels_127().as_bytes()), Lookup::Miss);
    assert!(matches!(t.lookup(b"site-3.example"), Lookup::Hit(_)));
}

fn mutate(path: &Path, good: &[u8], flips: &[(usize, u8)], reseal: bool) -> Option<Table> {
    let mut b = good.to_vec();
    for &(at, x) in flips {
        let at = at % b.len();
        b[at] ^= x;
    }
    if reseal {
        seal(&mut b);
    }
    std::fs::write(path, &b).unwrap();
    Table::open(path).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random damage anywhere (header resealed or not): open fails cleanly or every operation
    /// returns.
    #[test]
    fn random_damage_never_panics(
        flips in prop::collection::vec((0usize..1 << 20, 1u8..=255), 1..64),
        reseal: bool,
    ) {
        let good = valid_bytes();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        // Bias half of the flips into the index and the first records.
        let flips: Vec<_> = flips
            .into_iter()
            .enumerate()
            .map(|(i, (at, x))| if i % 2 == 0 { (INDEX_AT + at % (good.len() - INDEX_AT), x) } else { (at, x) })
            .collect();
        if let Some(t) = mutate(&path, &good, &flips, reseal) {
            probe_all(&t);
        }
    }
}

/// The header test vector of `docs/FORMAT.md` §3 is a header of this version: its bytes,
/// padded with zeros to the file length they declare, open as an empty table, and the checksum
/// it shows is the one the reader computes.
#[test]
fn the_documented_header_vector_opens() {
    let doc = include_str!("../../docs/FORMAT.md");
    let start = doc
        .find("Example (a test vector for the checksum")
        .expect("FORMAT.md §3 has its test vector");
    let dump = doc[start..].split("```").nth(1).unwrap();
    let mut bytes = Vec::new();
    for line in dump.lines().filter(|l| l.contains(": ")) {
        let hex = line.split(": ").nth(1).unwrap();
        let hex = hex.split("  ").next().unwrap().replace(' ', "");
        for i in (0..hex.len()).step_by(2) {
            bytes.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
        }
    }
    assert_eq!(
        bytes.len(),
        H_CHECKSUM + 8,
        "the dump ends with the checksum"
    );
    let shown = dump.rsplit("checksum 0x").next().unwrap().trim();
    let shown = u64::from_str_radix(shown, 16).unwrap();
    assert_eq!(
        word(&bytes, H_CHECKSUM),
        shown,
        "the dump and its comment agree"
    );
    assert_eq!(word(&bytes, H_VERSION), version_word(FORMAT_VERSION));
    let file_len = word(&bytes, H_FILE_LEN) as usize;
    bytes.resize(file_len, 0);
    let mut sealed = bytes.clone();
    seal(&mut sealed);
    assert_eq!(
        word(&sealed, H_CHECKSUM),
        shown,
        "the reader's checksum of the header"
    );
    let t = open_bytes(&bytes).expect("the documented header opens");
    assert!(matches!(t.lookup(b"www.example.com"), Lookup::Miss));
}
