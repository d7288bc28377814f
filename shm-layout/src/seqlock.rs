//! The read/write protocol on the shared words: how one writer publishes records and how any
//! number of readers, in other processes, find and copy them without locks. How a record's
//! words encode a key and a value is `record`'s business; the answers are `value`'s types.
//!
//! The index is an open-addressing table of slot words (linear probing). A slot is empty (0),
//! a tombstone (1), or `tag << 48 | record_offset / 8`. Records live in the arena; the first
//! word of each is a sequence number, odd while the writer is filling it.
//!
//! The writer never changes a record that a slot points to. An update writes a complete new
//! record elsewhere and then stores the slot word (a single atomic store, so readers see the
//! old record or the new one, never a mix). The old record then goes to the writer's free list
//! and may be rewritten later, which is why readers still need the sequence check:
//!
//! ```text
//! writer, record R not yet reachable:          reader:
//!   R.seq.store(s + 1, Relaxed)   // odd         w1 = slot.load(Relaxed); fence(Acquire)
//!   fence(Release)                                s1 = R.seq.load(Relaxed); fence(Acquire)
//!   R.words[i].store(x, Relaxed)                  copy R.words[i] (Relaxed loads)
//!   R.seq.store(s + 2, Release)                   fence(Acquire)
//!   slot.store(tag | off, Release)                s2 = R.seq.load(Relaxed); w2 = slot.load(Relaxed)
//!                                                 accept iff s1 == s2 (even) && w1 == w2
//! ```
//!
//! The release fence keeps the data stores after the odd sequence number, so a reader that saw
//! any new data word also sees `s2 != s1`. The slot re-check catches a record that was freed
//! and reused for another key between the reader's slot load and its sequence load: without it
//! the reader would copy a stable but unrelated record and report a false miss.
//!
//! Entries never move and deletes leave tombstones, so a key that is present for the whole of
//! a lookup is always found: no empty slot ever appears inside its probe chain.
//!
//! Everything a reader loads is bounds-checked against the slices it was given, and every loop
//! is bounded (`max_probe` slots, `MAX_ATTEMPTS` unstable reads), so whatever the file holds, a
//! lookup ends with a hit, a miss, `Busy` or `Corrupt`.

use crate::format::*;
use crate::host::MAX_HOST_LEN;
use crate::record::{match_body, match_short, Needle, Read, WINDOW};
use crate::sync::{fence, word, AtomicU64, Ordering};
use crate::value::{Lookup, Status, Value};

/// How many unstable reads a lookup tolerates before it answers `Busy`. A reader only sees an
/// unstable record when the writer reused it during the read, so this is never reached in
/// practice; it bounds the work a lookup does against a hostile or wedged file.
pub(crate) const MAX_ATTEMPTS: u32 = 64;

/// Reads the record the slot word `w1` (already loaded from `slot`) points to, compares its
/// key with `key` and, on a match, copies the value into `out`.
///
/// Only a record carrying `key`'s full 64-bit hash is decoded and checked; any other record
/// is simply not `key`'s (the lookup that owns it checks it). So a hit costs one hash compare,
/// one meta decode, the key words and the value words.
///
/// Short keys and first values in a record with [`WINDOW`] words of arena from its start (all
/// but the last few records) take [`read_short`], whatever the set's size; the rest
/// [`read_any`].
#[inline(always)]
pub(crate) fn read_record(
    slot: &AtomicU64,
    w1: u64,
    arena: &[AtomicU64],
    key: &Needle,
    hash: u64,
    out: &mut Value,
) -> Read {
    let record = arena.get((w1 & SLOT_OFFSET_MASK) as usize..).unwrap_or(&[]);
    match record.first_chunk::<WINDOW>() {
        Some(rec) if key.short => read_short(slot, w1, rec, record, arena, key, hash, out),
        _ => read_any(slot, w1, arena, key.bytes, hash, out),
    }
}

/// [`read_record`] for a short key: a fixed number of loads at fixed or key-given positions, no
/// loops and no bounds checks. A value too long for it goes to [`read_any`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn read_short(
    slot: &AtomicU64,
    w1: u64,
    rec: &[AtomicU64; WINDOW],
    record: &[AtomicU64],
    arena: &[AtomicU64],
    key: &Needle,
    hash: u64,
    out: &mut Value,
) -> Read {
    let at = |i: usize| word(&rec[i]);
    fence(Ordering::Acquire);
    let s1 = at(0);
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return Read::Retry;
    }
    let outcome = if at(2) == hash {
        match match_short(rec, record, at(1), key, out) {
            Some(outcome) => outcome,
            None => return read_any(slot, w1, arena, key.bytes, hash, out),
        }
    } else {
        Read::Stable(false)
    };
    fence(Ordering::Acquire);
    if at(0) != s1 || word(slot) != w1 {
        Read::Retry
    } else {
        outcome
    }
}

/// [`read_record`] for any key and record: the general form, with loops over the key and
/// value words and every slice bounds-checked.
#[inline(never)]
fn read_any(
    slot: &AtomicU64,
    w1: u64,
    arena: &[AtomicU64],
    key: &[u8],
    hash: u64,
    out: &mut Value,
) -> Read {
    fence(Ordering::Acquire);
    let r = arena.get((w1 & SLOT_OFFSET_MASK) as usize..).unwrap_or(&[]);
    let [seq, meta, stored_hash, body @ ..] = r else {
        return outside_the_arena(slot, w1);
    };
    let s1 = word(seq);
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return Read::Retry;
    }
    let outcome = if word(stored_hash) == hash {
        match_body(word(meta), body, key, out)
    } else {
        Read::Stable(false)
    };
    fence(Ordering::Acquire);
    if word(seq) != s1 || word(slot) != w1 {
        Read::Retry
    } else {
        outcome
    }
}

/// A slot pointing past the arena: damage, unless the slot moved on meanwhile.
#[cold]
fn outside_the_arena(slot: &AtomicU64, w1: u64) -> Read {
    if word(slot) == w1 {
        Read::Corrupt
    } else {
        Read::Retry
    }
}

/// The geometry of a validated table: what a lookup needs besides the words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub hash: KeyHash,
    /// Power of two; `index.len() == capacity`.
    pub capacity: usize,
    pub max_probe: usize,
}

/// Looks `key` up, copying a hit into `out`. Allocates nothing, makes no syscalls, and ends
/// within `max_probe` slots and `MAX_ATTEMPTS` unstable reads whatever `index` and `arena`
/// contain. `out` is meaningful only after `Status::Hit`.
#[inline(always)]
pub(crate) fn lookup_into(
    g: &Geometry,
    index: &[AtomicU64],
    arena: &[AtomicU64],
    key: &[u8],
    out: &mut Value,
) -> Status {
    if key.is_empty() || key.len() > MAX_HOST_LEN {
        return Status::Miss;
    }
    let hash = g.hash.of(key);
    probe(g, index, arena, &Needle::new(key), hash, out)
}

/// The general probe from `key`'s home slot: linear probing over at most `max_probe` slots,
/// retrying records that change under the reader up to `MAX_ATTEMPTS` times.
#[inline(always)]
fn probe(
    g: &Geometry,
    index: &[AtomicU64],
    arena: &[AtomicU64],
    key: &Needle,
    hash: u64,
    out: &mut Value,
) -> Status {
    // Never 0, so empty (0) and tombstone (1) slot words, whose tag bits are 0, never match.
    let tag = tag_of(hash);
    // `index.len()` is the capacity, a power of two: masking keeps every slot in bounds.
    let mask = index.len().wrapping_sub(1);
    let mut slot = hash as usize;
    let mut probes = 1;
    let mut attempts = 0u32;
    loop {
        let Some(entry) = index.get(slot & mask) else {
            return Status::Miss;
        };
        let w = word(entry);
        if w == SLOT_EMPTY {
            return Status::Miss;
        }
        if w >> TAG_SHIFT == tag {
            match read_record(entry, w, arena, key, hash, out) {
                Read::Stable(true) => return Status::Hit,
                Read::Stable(false) => {}
                Read::Corrupt => return Status::Corrupt,
                Read::Retry => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Status::Busy;
                    }
                    std::hint::spin_loop();
                    continue;
                }
            }
        }
        if probes >= g.max_probe {
            return Status::Miss;
        }
        probes += 1;
        slot = slot.wrapping_add(1);
    }
}

/// [`lookup_into`] with the value returned inline.
pub(crate) fn lookup(g: &Geometry, index: &[AtomicU64], arena: &[AtomicU64], key: &[u8]) -> Lookup {
    let mut out = Value::empty();
    let status = lookup_into(g, index, arena, key, &mut out);
    Lookup::of(status, out)
}

/// Writer side: fills the unreachable record at word `rec` with `data` (every word after the
/// sequence number) under the sequence protocol. The caller publishes it afterwards with
/// [`publish`].
pub(crate) fn write_record(arena: &[AtomicU64], rec: usize, data: &[u64]) {
    let seq = &arena[rec];
    // The writer is the only one storing this word, so its own relaxed load is exact.
    let s = word(seq) & !1;
    seq.store((s + 1).to_le(), Ordering::Relaxed);
    fence(Ordering::Release);
    for (i, &w) in data.iter().enumerate() {
        arena[rec + 1 + i].store(w.to_le(), Ordering::Relaxed);
    }
    seq.store((s + 2).to_le(), Ordering::Release);
}

/// Writer side: makes a slot point at a fully written record, or empties it into a tombstone.
pub(crate) fn publish(index: &[AtomicU64], slot: usize, word: u64) {
    index[slot].store(word.to_le(), Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::host::MAX_BACKEND_LEN;
    use crate::record::{chunk, encode, slot_word};
    use std::net::SocketAddr;

    /// Looks `key` up in a one-slot table holding only the record `data` (words after the
    /// sequence number), followed by `spare` words of garbage.
    fn lookup_one(data: &[u64], spare: usize, key: &[u8]) -> (Status, Value) {
        let g = Geometry {
            hash: KeyHash::new(K.0, K.1),
            capacity: 1,
            max_probe: 1,
        };
        let arena: Vec<AtomicU64> = std::iter::once(0)
            .chain(data.iter().copied())
            .chain(std::iter::repeat_n(!0, spare))
            .map(AtomicU64::new)
            .collect();
        let index = [AtomicU64::new(slot_word(g.hash.of(key), 0))];
        let mut out = Value::empty();
        let status = lookup_into(&g, &index, &arena, key, &mut out);
        (status, out)
    }

    const K: (u64, u64) = (7, 11);

    /// The straight-line read (short keys and values, a full window of arena after the record)
    /// and the general one (the record at the arena's end) agree for every key and value length
    /// around the short limits and every address kind, hits and near misses alike.
    #[test]
    fn short_and_general_reads_agree() {
        let addrs: [Option<SocketAddr>; 3] = [
            None,
            Some("10.1.2.3:8080".parse().unwrap()),
            Some("[2001:db8::7]:443".parse().unwrap()),
        ];
        let mut data = Vec::new();
        for key_len in (1..=40).chain([MAX_HOST_LEN]) {
            let key: Vec<u8> = (0..key_len).map(|i| b'a' + (i % 26) as u8).collect();
            let hash = hash_key(K.0, K.1, &key);
            for val_len in (1..=40).chain([MAX_BACKEND_LEN]) {
                let value: Vec<u8> = (0..val_len).map(|i| b"0123456789.:"[i % 12]).collect();
                for addr in addrs {
                    encode(&mut data, hash, &key, &value, addr);
                    for spare in [0, WINDOW] {
                        let (status, out) = lookup_one(&data, spare, &key);
                        let at = format!("key {key_len}, value {val_len}, {addr:?}, spare {spare}");
                        assert_eq!(status, Status::Hit, "{at}");
                        assert_eq!(out.as_bytes(), &value[..], "{at}");
                        assert_eq!(out.addr(), addr, "{at}");
                        // The same hash and length, another key: a miss.
                        let mut other = key.clone();
                        *other.last_mut().unwrap() = b'#';
                        let mut forged = data.clone();
                        let last_key_word = 2 + words_for(key_len) - 1;
                        forged[last_key_word] = chunk(&other, words_for(key_len) - 1);
                        assert_eq!(lookup_one(&forged, spare, &key).0, Status::Miss, "{at}");
                        // A value byte no backend has, first and last: corrupt.
                        for pos in [0, val_len - 1] {
                            let mut bad = value.clone();
                            bad[pos] = b'/';
                            encode(&mut forged, hash, &key, &bad, addr);
                            assert_eq!(
                                lookup_one(&forged, spare, &key).0,
                                Status::Corrupt,
                                "{at} at {pos}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Damaged meta words are corrupt on both reads, never a hit or a panic.
    #[test]
    fn short_and_general_reads_refuse_bad_meta() {
        let key = b"example.com";
        let hash = hash_key(K.0, K.1, key);
        let mut data = Vec::new();
        encode(&mut data, hash, key, b"10.0.0.1:80", None);
        let meta = data[0];
        for bad in [
            meta & !(0xffff << META_VAL_LEN_SHIFT),
            meta | 0xffff << META_VAL_LEN_SHIFT,
            meta | 5 << META_ADDR_KIND_SHIFT,
            meta & !(0xff << META_MEMBERS_SHIFT),
            meta | (crate::set::MAX_MEMBERS as u64 + 1) << META_MEMBERS_SHIFT,
            // A set of two whose second member is missing.
            meta | 2 << META_MEMBERS_SHIFT,
        ] {
            for spare in [0, WINDOW] {
                let mut forged = data.clone();
                forged[0] = bad;
                assert_eq!(
                    lookup_one(&forged, spare, key).0,
                    Status::Corrupt,
                    "{bad:#x}"
                );
            }
        }
    }

    /// Sets of every size up to the limit, of every address kind, read back whole on both
    /// reads; a damaged byte or descriptor anywhere in them is corrupt, never a hit.
    #[test]
    fn sets_read_back_whole_and_damage_is_corrupt() {
        use crate::record::{encode_set, MemberRef};
        use crate::set::MAX_MEMBERS;
        let texts: Vec<String> = (0..MAX_MEMBERS)
            .map(|i| match i % 3 {
                0 => format!("10.0.0.{i}:80{i}"),
                1 => format!("[2001:db8::{i}]:443"),
                _ => format!("name-{i}.a-rather-long-backend-name.example:8080"),
            })
            .collect();
        let key = b"set.example";
        let hash = hash_key(K.0, K.1, key);
        for n in 1..=MAX_MEMBERS {
            let members: Vec<MemberRef> = (0..n)
                .map(|i| MemberRef {
                    text: texts[i].as_bytes(),
                    addr: texts[i].parse().ok(),
                    weight: if n == 1 { 1 } else { 1 + (i as u8 * 13) % 100 },
                    backup: i > 0 && i % 4 == 3,
                })
                .collect();
            let mut data = Vec::new();
            encode_set(&mut data, hash, key, &members);
            for spare in [0, WINDOW] {
                let (status, out) = lookup_one(&data, spare, key);
                assert_eq!(status, Status::Hit, "{n} members, spare {spare}");
                assert_eq!(out.members(), n);
                for (i, want) in members.iter().enumerate() {
                    let got = out.member(i).unwrap();
                    assert_eq!(got.as_bytes(), want.text);
                    assert_eq!(got.addr(), want.addr);
                    assert_eq!((got.weight(), got.backup()), (want.weight, want.backup));
                }
                assert!(out.member(n).is_none());
                // Any word after the first member's cut short: corrupt.
                let first_end = 2
                    + words_for(key.len())
                    + words_for(members[0].text.len())
                    + members[0]
                        .addr
                        .map_or(0, |a| if a.is_ipv4() { 1 } else { 2 });
                for cut in first_end..data.len() {
                    let (status, _) = lookup_one(&data[..cut], 0, key);
                    assert_eq!(status, Status::Corrupt, "{n} members cut at {cut}");
                }
                // A further member's byte that no backend has, or a descriptor with a bad
                // field: corrupt.
                if n > 1 {
                    let desc = first_end + 1;
                    for bad in [
                        data[desc] & !0xff,
                        data[desc] | 0xff,
                        data[desc] | 2 << MEMBER_FLAGS_SHIFT,
                        data[desc] | 1 << META_MEMBERS_SHIFT,
                        data[desc] | 5 << META_ADDR_KIND_SHIFT,
                        data[desc] & !(0xffff << META_VAL_LEN_SHIFT),
                    ] {
                        let mut forged = data.clone();
                        forged[desc] = bad;
                        assert_eq!(lookup_one(&forged, spare, key).0, Status::Corrupt);
                    }
                    let mut forged = data.clone();
                    forged[desc + 1] |= u64::from(b'/');
                    assert_eq!(lookup_one(&forged, spare, key).0, Status::Corrupt);
                    let mut forged = data.clone();
                    forged[first_end] = 0;
                    assert_eq!(lookup_one(&forged, spare, key).0, Status::Corrupt);
                }
            }
        }
    }
}

/// Model checks of the protocol with loom: `RUSTFLAGS="--cfg loom" cargo test -p shm-layout
/// --lib --release` (`make test` runs it).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::record::{encode, slot_word};
    use loom::sync::Arc;

    const K: (u64, u64) = (7, 11);
    const CAP: usize = 4;

    fn geometry() -> Geometry {
        Geometry {
            hash: KeyHash::new(K.0, K.1),
            capacity: CAP,
            max_probe: CAP,
        }
    }

    fn words(n: usize) -> Arc<Vec<AtomicU64>> {
        Arc::new((0..n).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(key: &[u8], value: &[u8]) -> (u64, Vec<u64>) {
        let hash = hash_key(K.0, K.1, key);
        let mut data = Vec::new();
        encode(&mut data, hash, key, value, None);
        (hash, data)
    }

    /// Probes like the writer does: the slot holding `key`'s tag, or the first empty one.
    fn slot_for(index: &[AtomicU64], hash: u64) -> usize {
        let home = hash as usize & (CAP - 1);
        (0..CAP)
            .map(|i| (home + i) & (CAP - 1))
            .find(|&s| {
                let w = word(&index[s]);
                w == SLOT_EMPTY || w >> TAG_SHIFT == tag_of(hash)
            })
            .unwrap()
    }

    const A: &[u8] = b"aaaaaaaaaaaaaaaa.a:1";
    const B: &[u8] = b"bbbbbbbbbbbbbbbb.b:2";
    const C: &[u8] = b"cccccccccccccccc.c:3";

    /// A key present for the whole lookup is always found, with one of its values and never a
    /// mix of two, while the writer updates it and reuses its old record for another key.
    #[test]
    fn update_and_reuse_never_tear_or_lose_a_present_key() {
        loom::model(|| {
            let index = words(CAP);
            let arena = words(64);
            let (h1, a) = record(b"one.example", A);
            let rec_a = 0;
            let rec_b = 1 + a.len();
            write_record(&arena, rec_a, &a);
            let s1 = slot_for(&index, h1);
            publish(&index, s1, slot_word(h1, rec_a));

            let (wi, wa) = (index.clone(), arena.clone());
            let writer = loom::thread::spawn(move || {
                let (_, b) = record(b"one.example", B);
                write_record(&wa, rec_b, &b);
                publish(&wi, s1, slot_word(h1, rec_b));
                // Record A is free now: reuse it (same size) for another key.
                let (h2, c) = record(b"two.example", C);
                write_record(&wa, rec_a, &c);
                let s2 = slot_for(&wi, h2);
                publish(&wi, s2, slot_word(h2, rec_a));
            });
            match lookup(&geometry(), &index, &arena, b"one.example") {
                Lookup::Hit(v) => assert!(v.as_bytes() == A || v.as_bytes() == B, "{v:?}"),
                Lookup::Busy => {}
                other => panic!("present key answered {other:?}"),
            }
            writer.join().unwrap();
        });
    }

    /// A reader racing the first publication sees nothing or the whole record.
    #[test]
    fn insert_is_all_or_nothing() {
        loom::model(|| {
            let index = words(CAP);
            let arena = words(32);
            let (wi, wa) = (index.clone(), arena.clone());
            let writer = loom::thread::spawn(move || {
                let (h, a) = record(b"new.example", A);
                write_record(&wa, 0, &a);
                let s = slot_for(&wi, h);
                publish(&wi, s, slot_word(h, 0));
            });
            match lookup(&geometry(), &index, &arena, b"new.example") {
                Lookup::Hit(v) => assert_eq!(v.as_bytes(), A),
                Lookup::Miss | Lookup::Busy => {}
                Lookup::Corrupt => panic!("torn record reported corrupt"),
            }
            writer.join().unwrap();
        });
    }

    /// Members of one word each, so that the model stays small.
    const SA: &[u8] = b"aaaa.a:1";
    const SB: &[u8] = b"bbbb.b:2";
    const SC: &[u8] = b"cccc.c:3";

    /// A set replaced by another is read whole: every member from the old set or every member
    /// from the new one (with its weights), never a mix.
    #[test]
    fn a_set_is_replaced_whole() {
        use crate::record::{encode_set, MemberRef};
        let set = |texts: [&'static [u8]; 2], weight: u8| -> Vec<u64> {
            let members = texts.map(|text| MemberRef {
                text,
                addr: None,
                weight,
                backup: false,
            });
            let mut data = Vec::new();
            encode_set(
                &mut data,
                hash_key(K.0, K.1, b"set.example"),
                b"set.example",
                &members,
            );
            data
        };
        loom::model(move || {
            let index = words(CAP);
            let arena = words(64);
            let h = hash_key(K.0, K.1, b"set.example");
            let old = set([SA, SB], 1);
            let rec_old = 0;
            let rec_new = 1 + old.len();
            write_record(&arena, rec_old, &old);
            let s = slot_for(&index, h);
            publish(&index, s, slot_word(h, rec_old));
            let (wi, wa) = (index.clone(), arena.clone());
            let writer = loom::thread::spawn(move || {
                write_record(&wa, rec_new, &set([SC, SA], 2));
                publish(&wi, s, slot_word(h, rec_new));
            });
            match lookup(&geometry(), &index, &arena, b"set.example") {
                Lookup::Hit(v) => {
                    let got: Vec<(&[u8], u8)> = (0..v.members())
                        .map(|i| v.member(i).unwrap())
                        .map(|m| (m.as_bytes(), m.weight()))
                        .collect();
                    let whole = [[(SA, 1), (SB, 1)], [(SC, 2), (SA, 2)]];
                    assert!(whole.iter().any(|w| got == w), "{v:?}");
                }
                Lookup::Busy => {}
                other => panic!("present set answered {other:?}"),
            }
            writer.join().unwrap();
        });
    }
}
