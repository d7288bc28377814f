//! The read/write protocol on the shared words: how one writer publishes records and how any
//! number of readers, in other processes, find and copy them without locks.
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
use crate::host::{MAX_BACKEND_LEN, MAX_HOST_LEN};
use crate::sync::{fence, AtomicU64, Ordering};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How many unstable reads a lookup tolerates before it answers `Busy`. A reader only sees an
/// unstable record when the writer reused it during the read, so this is never reached in
/// practice; it bounds the work a lookup does against a hostile or wedged file.
pub(crate) const MAX_ATTEMPTS: u32 = 64;

/// Bytes of the value buffer: the longest backend, rounded up to whole words.
pub(crate) const VALUE_BUF: usize = words_for(MAX_BACKEND_LEN) * 8;

/// A backend copied out of the table: its text and, for IP literals, its parsed address.
/// Fixed-size, so a lookup allocates nothing.
#[derive(Clone)]
pub struct Value {
    len: u16,
    addr_kind: u8,
    port: u16,
    ip: [u8; 16],
    bytes: [u8; VALUE_BUF],
}

impl Value {
    /// An empty buffer, to pass to `Table::lookup_into` again and again.
    pub const fn empty() -> Value {
        Value {
            len: 0,
            addr_kind: ADDR_NONE,
            port: 0,
            ip: [0; 16],
            bytes: [0; VALUE_BUF],
        }
    }

    /// The backend as stored (`10.0.0.7:3000`, `name:80`, `[::1]:8080`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The backend as text; the writer only stores ASCII, so this is lossless for a valid file.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The pre-parsed socket address, when the backend is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.addr_kind {
            ADDR_V4 => {
                let ip = Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]);
                Some(SocketAddr::new(IpAddr::V4(ip), self.port))
            }
            ADDR_V6 => Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(self.ip)),
                self.port,
            )),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("backend", &self.as_str())
            .field("addr", &self.addr())
            .finish()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.as_bytes() == other.as_bytes() && self.addr() == other.addr()
    }
}

/// The answer of a lookup. The value travels inline (no allocation on the request path).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    Hit(Value),
    Miss,
    /// The record kept changing under the reader; try again later.
    Busy,
    /// A record the probe reached is stable but malformed: the file is damaged.
    Corrupt,
}

/// What reading one record produced.
pub(crate) enum Read {
    /// A consistent copy; `true` when its key is the one looked for (value copied out).
    Stable(bool),
    /// Consistent but malformed.
    Corrupt,
    /// Changed during the read; the slot now holds this word.
    Retry(u64),
}

/// The parts of a record header, decoded and bounds-checked against the arena.
pub(crate) struct Meta {
    pub key_len: usize,
    pub val_len: usize,
    pub addr_kind: u8,
    pub port: u16,
    pub hash: u64,
    /// Word index (in the arena) of the first address word, then key, then value.
    pub addr_at: usize,
    pub key_at: usize,
    pub val_at: usize,
    /// Total words of the record, seq included.
    pub words: usize,
}

impl Meta {
    /// Decodes `meta` and `hash` of the record at word `rec` and checks that the whole record
    /// fits in `arena_words` words. `None` if any field is out of range.
    pub(crate) fn decode(rec: usize, meta: u64, hash: u64, arena_words: usize) -> Option<Meta> {
        let key_len = ((meta >> META_KEY_LEN_SHIFT) & 0xffff) as usize;
        let val_len = ((meta >> META_VAL_LEN_SHIFT) & 0xffff) as usize;
        let addr_kind = ((meta >> META_ADDR_KIND_SHIFT) & 0xff) as u8;
        let reserved = (meta >> 40) & 0xff;
        let port = (meta >> META_PORT_SHIFT) as u16;
        if key_len == 0 || key_len > MAX_HOST_LEN || val_len == 0 || val_len > MAX_BACKEND_LEN {
            return None;
        }
        if !matches!(addr_kind, ADDR_NONE | ADDR_V4 | ADDR_V6) || reserved != 0 {
            return None;
        }
        let addr_at = rec.checked_add(RECORD_FIXED_WORDS)?;
        let key_at = addr_at + addr_words(addr_kind);
        let val_at = key_at + words_for(key_len);
        let end = val_at + words_for(val_len);
        if end > arena_words {
            return None;
        }
        Some(Meta {
            key_len,
            val_len,
            addr_kind,
            port,
            hash,
            addr_at,
            key_at,
            val_at,
            words: end - rec,
        })
    }
}

/// The word holding bytes `8 * i .. 8 * i + 8` of `bytes`, zero-padded: how keys and values are
/// laid out in a record.
#[inline]
pub(crate) fn chunk(bytes: &[u8], i: usize) -> u64 {
    let start = (i * 8).min(bytes.len());
    let end = (start + 8).min(bytes.len());
    bytes[start..end]
        .iter()
        .rev()
        .fold(0, |w, &b| w << 8 | b as u64)
}

/// Whether `words` hold exactly `key`, zero-padded.
#[inline]
fn key_eq(words: &[AtomicU64], key: &[u8]) -> bool {
    let chunks = key.chunks_exact(8);
    let rest = chunks.remainder();
    let full = chunks.len();
    // The last, partial word: the key's final 8 bytes shifted down, when the key has them.
    let tail = match (rest.len(), key.len().checked_sub(8)) {
        (0, _) => 0,
        (n, Some(at)) => key
            .get(at..)
            .and_then(|b| b.try_into().ok())
            .map_or(0, |b| u64::from_le_bytes(b) >> (64 - 8 * n)),
        (_, None) => chunk(rest, 0),
    };
    words.len() == full + usize::from(!rest.is_empty())
        && chunks
            .zip(words)
            .all(|(c, w)| c.try_into().map(u64::from_le_bytes).ok() == Some(load(w)))
        && (rest.is_empty() || words.get(full).map(load) == Some(tail))
}

#[inline]
fn load(w: &AtomicU64) -> u64 {
    u64::from_le(w.load(Ordering::Relaxed))
}

/// Reads the record the slot word `w1` (already loaded from `index[slot]`) points to, compares
/// its key with `key` and, on a match, copies the value into `out`.
#[inline(always)]
pub(crate) fn read_record(
    index: &[AtomicU64],
    slot: usize,
    w1: u64,
    arena: &[AtomicU64],
    key: &[u8],
    hash: u64,
    out: &mut Value,
) -> Read {
    fence(Ordering::Acquire);
    let rec = (w1 & SLOT_OFFSET_MASK) as usize;
    let recheck = |stable: Read| -> Read {
        let w2 = index.get(slot).map(load).unwrap_or(0);
        if w2 == w1 {
            stable
        } else {
            Read::Retry(w2)
        }
    };
    let Some(seq) = arena.get(rec) else {
        return recheck(Read::Corrupt);
    };
    let s1 = load(seq);
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        let w2 = index.get(slot).map(load).unwrap_or(0);
        return Read::Retry(w2);
    }
    let mut corrupt = true;
    let mut eq = false;
    let tail = arena.get(rec..).unwrap_or(&[]);
    if let (Some(meta), Some(stored_hash)) = (tail.get(1), tail.get(2)) {
        if let Some(m) = Meta::decode(0, load(meta), load(stored_hash), tail.len()) {
            // `decode` checked every offset of `m` (relative to `rec`) against `tail`, so
            // these `get`s always succeed; they only keep the code free of panic paths.
            let r = tail.get(..m.words).unwrap_or(&[]);
            let part = |from: usize, to: usize| r.get(from..to).unwrap_or(&[]);
            corrupt = false;
            if m.hash == hash && m.key_len == key.len() {
                eq = key_eq(part(m.key_at, m.val_at), key);
            }
            if eq {
                for (dst, w) in out.bytes.chunks_exact_mut(8).zip(part(m.val_at, m.words)) {
                    dst.copy_from_slice(&load(w).to_le_bytes());
                }
                for (dst, w) in out.ip.chunks_exact_mut(8).zip(part(m.addr_at, m.key_at)) {
                    dst.copy_from_slice(&load(w).to_le_bytes());
                }
                out.len = m.val_len as u16;
                out.addr_kind = m.addr_kind;
                out.port = m.port;
            }
        }
    }
    fence(Ordering::Acquire);
    let s2 = load(seq);
    let w2 = index.get(slot).map(load).unwrap_or(0);
    if s1 != s2 || w1 != w2 {
        return Read::Retry(w2);
    }
    if corrupt {
        Read::Corrupt
    } else {
        Read::Stable(eq)
    }
}

/// The bytes a canonical backend consists of (`Backend::parse` output): a value with any other
/// byte is damage, and is never handed to nginx.
static BACKEND_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']');
        b += 1;
    }
    t
};

/// Whether every byte of `v` can appear in a canonical backend (branch-free over the bytes),
/// and `v` does not start with `unix:` (which nginx's `proxy_pass` would read as a socket path;
/// `Backend::parse` refuses it).
#[inline]
fn valid_backend(v: &[u8]) -> bool {
    v.iter().fold(true, |ok, &b| ok & BACKEND_BYTE[b as usize]) && !v.starts_with(b"unix:")
}

/// The geometry of a validated table: what a lookup needs besides the words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub k0: u64,
    pub k1: u64,
    /// Power of two; `index.len() == capacity`.
    pub capacity: usize,
    pub max_probe: usize,
}

/// The outcome of [`lookup_into`]: like [`Lookup`], with the value left in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Busy,
    Corrupt,
}

/// Looks `key` up, copying a hit into `out`. Allocates nothing, makes no syscalls, and ends
/// within `max_probe` slots and `MAX_ATTEMPTS` unstable reads whatever `index` and `arena`
/// contain. `out` is meaningful only after `Status::Hit`.
pub(crate) fn lookup_into(
    g: &Geometry,
    index: &[AtomicU64],
    arena: &[AtomicU64],
    key: &[u8],
    out: &mut Value,
) -> Status {
    if key.is_empty() || key.len() > MAX_HOST_LEN || index.len() != g.capacity {
        return Status::Miss;
    }
    let hash = hash_key(g.k0, g.k1, key);
    let tag = tag_of(hash);
    let mask = g.capacity - 1;
    let home = hash as usize & mask;
    let mut attempts = 0u32;
    let mut i = 0usize;
    let mut w = load(&index[home]);
    while i < g.max_probe {
        let slot = (home + i) & mask;
        if w == SLOT_EMPTY {
            return Status::Miss;
        }
        if w != SLOT_TOMBSTONE && (w >> TAG_SHIFT) == tag {
            match read_record(index, slot, w, arena, key, hash, out) {
                Read::Stable(true) if valid_backend(out.as_bytes()) => return Status::Hit,
                // A stable record whose value no writer could have stored.
                Read::Stable(true) => return Status::Corrupt,
                Read::Stable(false) => {}
                Read::Corrupt => return Status::Corrupt,
                Read::Retry(w2) => {
                    attempts += 1;
                    if attempts >= MAX_ATTEMPTS {
                        return Status::Busy;
                    }
                    std::hint::spin_loop();
                    w = w2;
                    continue;
                }
            }
        }
        i += 1;
        w = load(&index[(home + i) & mask]);
    }
    Status::Miss
}

/// [`lookup_into`] with the value returned inline.
pub(crate) fn lookup(g: &Geometry, index: &[AtomicU64], arena: &[AtomicU64], key: &[u8]) -> Lookup {
    let mut out = Value::empty();
    match lookup_into(g, index, arena, key, &mut out) {
        Status::Hit => Lookup::Hit(out),
        Status::Miss => Lookup::Miss,
        Status::Busy => Lookup::Busy,
        Status::Corrupt => Lookup::Corrupt,
    }
}

/// Writer side: fills the unreachable record at word `rec` with `data` (every word after the
/// sequence number) under the sequence protocol. The caller publishes it afterwards with
/// [`publish`].
pub(crate) fn write_record(arena: &[AtomicU64], rec: usize, data: &[u64]) {
    let seq = &arena[rec];
    // The writer is the only one storing this word, so its own relaxed load is exact.
    let s = load(seq) & !1;
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

/// The slot word for a record at arena word `rec` with key hash `hash`.
pub(crate) fn slot_word(hash: u64, rec: usize) -> u64 {
    (tag_of(hash) << TAG_SHIFT) | (rec as u64 & SLOT_OFFSET_MASK)
}

/// Encodes a record's words after the sequence number: meta, hash, address, key, value.
pub(crate) fn encode(
    buf: &mut Vec<u64>,
    hash: u64,
    key: &[u8],
    value: &[u8],
    addr: Option<SocketAddr>,
) {
    buf.clear();
    let (kind, port, ip): (u8, u16, [u8; 16]) = match addr {
        Some(SocketAddr::V4(a)) => {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&a.ip().octets());
            (ADDR_V4, a.port(), ip)
        }
        Some(SocketAddr::V6(a)) => (ADDR_V6, a.port(), a.ip().octets()),
        None => (ADDR_NONE, 0, [0; 16]),
    };
    let meta = (key.len() as u64) << META_KEY_LEN_SHIFT
        | (value.len() as u64) << META_VAL_LEN_SHIFT
        | (kind as u64) << META_ADDR_KIND_SHIFT
        | (port as u64) << META_PORT_SHIFT;
    buf.push(meta);
    buf.push(hash);
    for i in 0..addr_words(kind) {
        buf.push(chunk(&ip, i));
    }
    for i in 0..words_for(key.len()) {
        buf.push(chunk(key, i));
    }
    for i in 0..words_for(value.len()) {
        buf.push(chunk(value, i));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn chunk_pads_with_zeroes() {
        assert_eq!(chunk(b"abc", 0), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_eq!(
            chunk(b"abcdefghij", 1),
            u64::from_le_bytes(*b"ij\0\0\0\0\0\0")
        );
    }

    #[test]
    fn meta_decode_rejects_out_of_bounds() {
        let meta = 10u64 | 12 << 16;
        assert!(Meta::decode(0, meta, 0, 3 + 2 + 2).is_some());
        assert!(Meta::decode(0, meta, 0, 3 + 2 + 1).is_none());
        assert!(Meta::decode(usize::MAX - 1, meta, 0, usize::MAX).is_none());
        assert!(Meta::decode(0, 0, 0, 100).is_none());
        assert!(Meta::decode(0, meta | 9 << 32, 0, 100).is_none());
    }
}

/// Model checks of the protocol with loom: `RUSTFLAGS="--cfg loom" cargo test -p shm-layout
/// --lib --release` (`make test` runs it).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    const K: (u64, u64) = (7, 11);
    const CAP: usize = 4;

    fn geometry() -> Geometry {
        Geometry {
            k0: K.0,
            k1: K.1,
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
                let w = load(&index[s]);
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
}
