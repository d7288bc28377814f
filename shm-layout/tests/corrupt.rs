//! Damaged and hostile table files: every one gives a precise open error, a miss, `Busy` or
//! `Corrupt`; never a panic, a hang or an out-of-bounds read.

use proptest::prelude::*;
use shm_layout::testkit::Rng;
use shm_layout::testkit::*;
use shm_layout::{Backend, Host, Lookup, OpenError, Table, TableWriter, WriterOptions};
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
    set(&mut b, H_VERSION, version_word(1));
    seal(&mut b);
    assert!(matches!(
        open_bytes(&b),
        Err(OpenError::Version {
            expected: 2,
            got: 1
        })
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
    set(&mut b, H_VERSION, version_word(1));
    seal(&mut b);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    std::fs::write(&path, &b).unwrap();
    assert!(matches!(
        Table::open(&path),
        Err(OpenError::Version {
            expected: 2,
            got: 1
        })
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
