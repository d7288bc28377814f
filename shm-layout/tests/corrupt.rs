//! Damaged and hostile table files: every one gives a precise open error, a miss, `Busy` or
//! `Corrupt`; never a panic, a hang or an out-of-bounds read.

use proptest::prelude::*;
use shm_layout::{Backend, Host, Lookup, OpenError, Table, TableWriter, WriterOptions};
use std::hash::Hasher;
use std::path::Path;

const KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
const CAPACITY: usize = 256;
const INDEX_AT: usize = 4096;
const ARENA_AT: usize = INDEX_AT + CAPACITY * 8;

fn hosts() -> Vec<String> {
    (0..100).map(|i| format!("site-{i}.example")).collect()
}

/// The bytes of a valid table of 100 entries, capacity 256, with a pinned hash key.
fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let entries = hosts().into_iter().enumerate().map(|(i, h)| {
        (
            Host::parse(&h).unwrap(),
            Backend::parse(&format!("10.0.0.{i}:80")).unwrap(),
        )
    });
    let opts = WriterOptions {
        min_capacity: CAPACITY as u64,
        hash_key: Some(KEY),
        sync: false,
        ..WriterOptions::default()
    };
    drop(TableWriter::create(&path, entries, opts).unwrap());
    std::fs::read(&path).unwrap()
}

fn word(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn set(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn sip(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
    h.write(bytes);
    h.finish()
}

/// Recomputes the header checksum, so that a crafted body gets past `open`.
fn seal(b: &mut [u8]) {
    let c = sip(0, 0, &b[..112]);
    set(b, 112, c);
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
        open_bytes(&good[..4095]),
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
    b[0] = b'X';
    assert!(matches!(open_bytes(&b), Err(OpenError::BadMagic)));
    let mut b = good.clone();
    set(&mut b, 8, 1 | (0x0A0B_0C0D << 32));
    seal(&mut b);
    assert!(matches!(
        open_bytes(&b),
        Err(OpenError::Version {
            expected: 2,
            got: 1
        })
    ));
    let mut b = good.clone();
    set(
        &mut b,
        8,
        (1u32.swap_bytes() as u64) | ((0x0A0B_0C0Du32.swap_bytes() as u64) << 32),
    );
    assert!(matches!(open_bytes(&b), Err(OpenError::Endianness)));
    let mut b = good.clone();
    b[40] ^= 1; // hash key changed without resealing
    assert!(matches!(open_bytes(&b), Err(OpenError::Checksum)));
    for (off, value, field) in [
        (16, 8192, "header_len"),
        (24, 2, "hash_id"),
        (48, 255, "capacity"),
        (48, 0, "capacity"),
        (56, 0, "max_probe"),
        (56, CAPACITY as u64 + 1, "max_probe"),
        (64, 0, "index_offset"),
        (72, 4096, "arena_offset"),
        (80, 12, "arena_len"),
        (88, 1 << 40, "file_len"),
    ] {
        let msg = case(&|b| {
            set(b, off, value);
            seal(b);
        });
        assert!(msg.contains(field), "offset {off}: {msg}");
    }
    // A header promising more than the file holds.
    let msg = case(&|b| {
        let arena_len = word(b, 80) + 8;
        set(b, 80, arena_len);
        let file_len = word(b, 88) + 8;
        set(b, 88, file_len);
        seal(b);
    });
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn slots_pointing_outside_the_arena_are_corrupt_not_crashes() {
    let mut b = valid_bytes();
    for s in 0..CAPACITY {
        let w = word(&b, INDEX_AT + s * 8);
        if w > 1 {
            set(
                &mut b,
                INDEX_AT + s * 8,
                (w & !((1 << 48) - 1)) | ((1 << 48) - 1),
            );
        }
    }
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
    let mut b = valid_bytes();
    set(&mut b, 56, CAPACITY as u64);
    seal(&mut b);
    for s in 0..CAPACITY {
        set(&mut b, INDEX_AT + s * 8, 1);
    }
    let t = open_bytes(&b).unwrap();
    assert!(probe_all(&t).iter().all(|l| *l == Lookup::Miss));
}

#[test]
fn every_slot_claiming_every_record_ends_in_a_miss_or_hit() {
    // All slots carry the tag of `site-0.example` and point at one record: probing a key with
    // that tag visits every slot once and must stop.
    let mut b = valid_bytes();
    set(&mut b, 56, CAPACITY as u64);
    seal(&mut b);
    let h = sip(KEY.0, KEY.1, b"site-0.example");
    let tag = (h >> 48).max(1);
    for s in 0..CAPACITY {
        set(&mut b, INDEX_AT + s * 8, tag << 48);
    }
    let t = open_bytes(&b).unwrap();
    let answers = probe_all(&t);
    assert!(matches!(answers[0], Lookup::Hit(_) | Lookup::Miss));
}

#[test]
fn a_record_stuck_mid_write_answers_busy() {
    let mut b = valid_bytes();
    let h = sip(KEY.0, KEY.1, b"site-7.example");
    let cap = CAPACITY as u64;
    let slot = (0..cap)
        .map(|i| ((h & (cap - 1)) + i) & (cap - 1))
        .find(|&s| word(&b, INDEX_AT + s as usize * 8) >> 48 == (h >> 48).max(1))
        .unwrap();
    let rec = (word(&b, INDEX_AT + slot as usize * 8) & ((1 << 48) - 1)) as usize;
    set(&mut b, ARENA_AT + rec * 8, 3); // odd sequence number: a writer died mid-write
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-7.example"), Lookup::Busy);
    assert!(t.verify().is_err());
}

/// A table of the previous format version at the path (left by an older writer): readers refuse
/// it, and a writer does not read it but publishes its own generation 1 over it.
#[test]
fn a_writer_replaces_a_file_of_the_previous_version() {
    let mut b = valid_bytes();
    set(&mut b, 8, 1 | (0x0A0B_0C0D << 32));
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
    let h = sip(KEY.0, KEY.1, b"site-3.example");
    let cap = CAPACITY as u64;
    let slot = (0..cap)
        .map(|i| ((h & (cap - 1)) + i) & (cap - 1))
        .find(|&s| word(&good, INDEX_AT + s as usize * 8) >> 48 == (h >> 48).max(1))
        .unwrap();
    let rec = (word(&good, INDEX_AT + slot as usize * 8) & ((1 << 48) - 1)) as usize;
    let meta_at = ARENA_AT + (rec + 1) * 8;
    for meta in [
        0,
        0xffff,
        14 | 0xffff << 16,
        14 | 12 << 16 | 9 << 32,
        14 | 12 << 16 | 1 << 40,
    ] {
        let mut b = good.clone();
        set(&mut b, meta_at, meta);
        let t = open_bytes(&b).unwrap();
        assert_eq!(
            t.lookup(b"site-3.example"),
            Lookup::Corrupt,
            "meta {meta:#x}"
        );
    }
    // A stable record whose value holds a byte no backend has ('/' would change proxy_pass).
    let mut b = good.clone();
    let meta = word(&b, meta_at);
    let key_len = (meta & 0xffff) as usize;
    let value_at = ARENA_AT + (rec + 3 + key_len.div_ceil(8)) * 8;
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
    let arena_words = word(&b, 80) as usize / 8;
    let last = arena_words - 4;
    let tag_word = word(&b, INDEX_AT + slot as usize * 8) & !((1 << 48) - 1);
    set(&mut b, INDEX_AT + slot as usize * 8, tag_word | last as u64);
    set(&mut b, ARENA_AT + (last + 1) * 8, 14 | 200 << 16);
    set(&mut b, ARENA_AT + (last + 2) * 8, h);
    let t = open_bytes(&b).unwrap();
    assert_eq!(t.lookup(b"site-3.example"), Lookup::Corrupt);
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
