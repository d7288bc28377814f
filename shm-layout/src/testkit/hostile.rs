//! Hostile tables: the bytes of a valid table with a pinned hash key and capacity, the ways to
//! damage them named by the format's constants, and one corpus of crafted files.
//!
//! Offsets are `docs/FORMAT.md`'s: header fields `H_*` (re-exported here), slot words from
//! [`INDEX_AT`], record words from [`ARENA_AT`].

use std::fs;

use crate::format::{hash_key, tag_of, words_for};
pub use crate::format::{
    ENDIAN_MARK, FORMAT_VERSION, HEADER_LEN, H_ARENA_LEN, H_ARENA_OFFSET, H_CAPACITY, H_CHECKSUM,
    H_FILE_LEN, H_HASH_ID, H_HASH_K1, H_HEADER_LEN, H_HEARTBEAT_MS, H_INDEX_OFFSET, H_MAGIC,
    H_MAX_PROBE, H_PATTERNS, H_VERSION, MEMBER_FLAGS_SHIFT, META_ADDR_KIND_SHIFT,
    META_KEY_LEN_SHIFT, META_MEMBERS_SHIFT, META_VAL_LEN_SHIFT, RECORD_FIXED_WORDS,
    SLOT_OFFSET_MASK, SLOT_TOMBSTONE, TAG_SHIFT,
};
pub use crate::set::MAX_MEMBERS;
use crate::{Backend, Host, TableWriter, WriterOptions};

/// The hash key of every kit table, so that a host's slot is known.
pub const KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
/// The index size of every kit table (slots).
pub const CAPACITY: usize = 256;
/// Where the index starts: right after the header.
pub const INDEX_AT: usize = HEADER_LEN;
/// Where the arena starts: right after the index.
pub const ARENA_AT: usize = INDEX_AT + CAPACITY * 8;

/// `site-<i>.example`: the hosts of kit tables.
pub fn site(i: usize) -> String {
    format!("site-{i}.example")
}

/// The bytes of a valid table of `sites` hosts ([`site`]`(0..sites)`), host `i` routed to
/// `backend(i)`, with [`KEY`] and [`CAPACITY`].
pub fn valid_table(sites: usize, backend: impl Fn(usize) -> String) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("table");
    let entries = (0..sites).map(|i| {
        (
            Host::parse(&site(i)).expect("host"),
            Backend::parse(&backend(i)).expect("backend"),
        )
    });
    let opts = WriterOptions {
        min_capacity: CAPACITY as u64,
        hash_key: Some(KEY),
        sync: false,
        ..WriterOptions::default()
    };
    drop(TableWriter::create(&path, entries, opts).expect("create the table"));
    fs::read(&path).expect("read the table")
}

/// The little-endian word at byte `off`.
pub fn word(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Writes the little-endian word `v` at byte `off`.
pub fn set(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the header checksum, so that a crafted header gets past the open checks.
pub fn seal(b: &mut [u8]) {
    let c = hash_key(0, 0, &b[..H_CHECKSUM]);
    set(b, H_CHECKSUM, c);
}

/// The version word of format `version`, written by a little-endian writer.
pub fn version_word(version: u32) -> u64 {
    version as u64 | ((ENDIAN_MARK as u64) << 32)
}

/// The version word as a big-endian writer storing native words would leave it.
pub fn big_endian_version_word() -> u64 {
    FORMAT_VERSION.swap_bytes() as u64 | ((ENDIAN_MARK.swap_bytes() as u64) << 32)
}

/// The byte offset of slot `s`.
pub fn slot_at(s: usize) -> usize {
    INDEX_AT + s * 8
}

/// The byte offset of word `i` of the record at arena word `rec` (0: seq, 1: meta, 2: hash).
pub fn record_word_at(rec: usize, i: usize) -> usize {
    ARENA_AT + (rec + i) * 8
}

/// The byte offset of the meta word of the record at arena word `rec`.
pub fn meta_at(rec: usize) -> usize {
    record_word_at(rec, 1)
}

/// The hash of `host` under [`KEY`] (a record's hash word).
pub fn key_hash(host: &str) -> u64 {
    hash_key(KEY.0, KEY.1, crate::host::table_key(host))
}

/// The slot tag of `host` under [`KEY`].
pub fn tag(host: &str) -> u64 {
    tag_of(key_hash(host))
}

/// A slot word: `tag` and the record's arena word offset.
pub fn slot_word(tag: u64, rec: usize) -> u64 {
    (tag << TAG_SHIFT) | rec as u64
}

/// `host`'s slot and the arena word offset of its record.
pub fn record_of(b: &[u8], host: &str) -> (usize, usize) {
    let h = key_hash(host);
    let mask = CAPACITY - 1;
    let slot = (0..CAPACITY)
        .map(|i| ((h as usize & mask) + i) & mask)
        .find(|&s| word(b, slot_at(s)) >> TAG_SHIFT == tag_of(h))
        .expect("the host's slot");
    (slot, (word(b, slot_at(slot)) & SLOT_OFFSET_MASK) as usize)
}

/// Where `host`'s value bytes start.
pub fn value_at(b: &[u8], host: &str) -> usize {
    let (_, rec) = record_of(b, host);
    let key_len = ((word(b, meta_at(rec)) >> META_KEY_LEN_SHIFT) & 0xffff) as usize;
    record_word_at(rec, RECORD_FIXED_WORDS + words_for(key_len))
}

/// A meta word: key length, value length, address kind.
pub fn meta(key_len: u64, val_len: u64, addr_kind: u64) -> u64 {
    (key_len << META_KEY_LEN_SHIFT)
        | (val_len << META_VAL_LEN_SHIFT)
        | (addr_kind << META_ADDR_KIND_SHIFT)
        | (1 << META_MEMBERS_SHIFT)
}

/// `meta` claiming a set of `members` instead of the members it has.
pub fn with_members(meta: u64, members: u64) -> u64 {
    meta & !(0xff << META_MEMBERS_SHIFT) | (members & 0xff) << META_MEMBERS_SHIFT
}

/// Header fields set out of range (with the checksum resealed): (offset, value, the field the
/// open error names).
pub fn header_field_damage() -> Vec<(usize, u64, &'static str)> {
    vec![
        (H_HEADER_LEN, 2 * HEADER_LEN as u64, "header_len"),
        (H_HASH_ID, 2, "hash_id"),
        (H_CAPACITY, CAPACITY as u64 - 1, "capacity"),
        (H_CAPACITY, 0, "capacity"),
        (H_CAPACITY, 1 << 41, "capacity"),
        (H_MAX_PROBE, 0, "max_probe"),
        (H_MAX_PROBE, CAPACITY as u64 + 1, "max_probe"),
        (H_INDEX_OFFSET, 0, "index_offset"),
        (H_ARENA_OFFSET, INDEX_AT as u64, "arena_offset"),
        (H_ARENA_LEN, 12, "arena_len"),
        (H_ARENA_LEN, u64::MAX - 7, "arena_len"),
        (H_FILE_LEN, 1 << 40, "file_len"),
    ]
}

/// Meta words no record may have: lengths of zero, past the limits, an unknown address kind, a
/// bit set outside every field.
pub fn impossible_metas() -> [u64; 6] {
    [
        0,
        0xffff << META_KEY_LEN_SHIFT,
        meta(14, 0xffff, 0),
        meta(14, 12, 9),
        with_members(meta(14, 12, 0), 0),
        with_members(meta(14, 12, 0), MAX_MEMBERS as u64 + 1),
    ]
}

/// One crafted file: its name, its bytes, and what opening it must fail with (a word of the
/// open error) or `None` if it opens.
pub struct Hostile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub open_error: Option<&'static str>,
}

/// The crafted files made from `good` (a [`valid_table`] of at least 8 sites): every way the
/// header can be wrong, then files that open with damage inside, then `random` files with
/// random damage in the index (`below(n)` draws a number in `0..n`).
pub fn hostile_corpus(good: &[u8], random: u64, below: &mut dyn FnMut(u64) -> u64) -> Vec<Hostile> {
    let mut out = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>, open_error: Option<&'static str>| {
        out.push(Hostile {
            name: name.to_string(),
            bytes,
            open_error,
        })
    };
    let damaged = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.to_vec();
        f(&mut b);
        b
    };
    add("empty", vec![], Some("truncated"));
    add(
        "short header",
        good[..HEADER_LEN - 1].to_vec(),
        Some("truncated"),
    );
    add(
        "cut arena",
        good[..good.len() - 8].to_vec(),
        Some("truncated"),
    );
    add("garbage", vec![0xa5; 64 * 1024], Some("bad magic"));
    add("zeros", vec![0; 64 * 1024], Some("bad magic"));
    add(
        "bad magic",
        damaged(&|b| b[H_MAGIC] = b'X'),
        Some("bad magic"),
    );
    // The format's previous version and a future one.
    for version in [FORMAT_VERSION - 1, FORMAT_VERSION + 1] {
        let b = damaged(&|b| {
            set(b, H_VERSION, version_word(version));
            seal(b);
        });
        add(&format!("version {version}"), b, Some("version"));
    }
    let b = damaged(&|b| set(b, H_VERSION, big_endian_version_word()));
    add("big endian", b, Some("byte order"));
    // The hash key changed without resealing.
    add(
        "checksum",
        damaged(&|b| b[H_HASH_K1] ^= 1),
        Some("checksum"),
    );
    for (off, value, field) in header_field_damage() {
        let b = damaged(&|b| {
            set(b, off, value);
            seal(b);
        });
        add(&format!("{field} = {value}"), b, Some(field));
    }
    let b = damaged(&|b| {
        let (al, fl) = (word(b, H_ARENA_LEN) + 8, word(b, H_FILE_LEN) + 8);
        set(b, H_ARENA_LEN, al);
        set(b, H_FILE_LEN, fl);
        seal(b);
    });
    add("arena past the end", b, Some("truncated"));

    // Files that open, with damage inside.
    add(
        "slots outside the arena",
        slots_outside_the_arena(good),
        None,
    );
    add("all tombstones", every_slot(good, SLOT_TOMBSTONE), None);
    add(
        "every slot one record",
        every_slot(good, slot_word(tag(&site(0)), 0)),
        None,
    );
    let b = damaged(&|b| {
        let (_, rec) = record_of(b, &site(7));
        set(b, record_word_at(rec, 0), 3);
    });
    add("record stuck mid-write", b, None);
    for m in impossible_metas() {
        let b = damaged(&|b| {
            let (_, rec) = record_of(b, &site(3));
            set(b, meta_at(rec), m);
        });
        add(&format!("record lengths {m:#x}"), b, None);
    }
    // A set of one claiming more members: the words after it (the next record's, or the end
    // of the arena) read as members.
    for members in [2, 3, MAX_MEMBERS as u64] {
        let b = damaged(&|b| {
            let (_, rec) = record_of(b, &site(3));
            let m = word(b, meta_at(rec));
            set(b, meta_at(rec), with_members(m, members));
        });
        add(&format!("{members} members claimed"), b, None);
    }
    for (name, bytes) in [
        ("slash in value", &b"/"[..]),
        ("unix: value", b"unix:"),
        ("space in value", b" "),
    ] {
        let b = damaged(&|b| {
            let at = value_at(b, &site(5));
            b[at..at + bytes.len()].copy_from_slice(bytes);
        });
        add(name, b, None);
    }
    for i in 0..random {
        let mut b = good.to_vec();
        for _ in 0..1 + below(32) {
            // The index only: a slot may then point anywhere in the arena. (Damage inside a
            // value can make another valid address, which nginx would then try.)
            let at = INDEX_AT + below((ARENA_AT - INDEX_AT) as u64) as usize;
            b[at] ^= 1 + below(255) as u8;
        }
        add(&format!("random damage {i}"), b, None);
    }
    out
}

/// `good` with every used slot pointing at the last possible arena word.
pub fn slots_outside_the_arena(good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    for s in 0..CAPACITY {
        let w = word(&b, slot_at(s));
        if w > SLOT_TOMBSTONE {
            set(
                &mut b,
                slot_at(s),
                (w & !SLOT_OFFSET_MASK) | SLOT_OFFSET_MASK,
            );
        }
    }
    b
}

/// `good` with `max_probe` = capacity (resealed) and every slot set to `slot`: a probe then
/// visits every slot.
pub fn every_slot(good: &[u8], slot: u64) -> Vec<u8> {
    let mut b = good.to_vec();
    set(&mut b, H_MAX_PROBE, CAPACITY as u64);
    seal(&mut b);
    for s in 0..CAPACITY {
        set(&mut b, slot_at(s), slot);
    }
    b
}
