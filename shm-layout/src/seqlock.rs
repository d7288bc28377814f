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

use crate::classify::{bad16, is_unix};
use crate::format::*;
use crate::host::{MAX_BACKEND_LEN, MAX_HOST_LEN};
use crate::sync::{fence, AtomicU64, Ordering};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How many unstable reads a lookup tolerates before it answers `Busy`. A reader only sees an
/// unstable record when the writer reused it during the read, so this is never reached in
/// practice; it bounds the work a lookup does against a hostile or wedged file.
pub(crate) const MAX_ATTEMPTS: u32 = 64;

/// Bytes of the value buffer: the longest backend, rounded up to whole 16-byte blocks (the
/// value check reads it 16 bytes at a time).
pub(crate) const VALUE_BUF: usize = MAX_BACKEND_LEN.div_ceil(16) * 16;

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
#[derive(Clone, Copy)]
pub(crate) enum Read {
    /// A consistent copy; `true` when its key is the one looked for (value copied out).
    Stable(bool),
    /// Consistent but malformed: lengths out of range, or a value holding bytes no backend
    /// has.
    Corrupt,
    /// Changed during the read: read the slot again.
    Retry,
}

/// The lengths and address kind a record's meta word declares, checked against the format's
/// limits: the one place that says which meta words are valid.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    pub key_len: usize,
    pub val_len: usize,
    pub addr_kind: u8,
    pub port: u16,
    pub addr_words: usize,
    pub key_words: usize,
    pub val_words: usize,
}

impl Layout {
    /// `None` if a length is 0 or over its limit, the address kind is unknown or the reserved
    /// byte is not 0. The checks are combined into one branch: this runs on every hit.
    #[inline(always)]
    pub(crate) fn of(meta: u64) -> Option<Layout> {
        let key_len = ((meta >> META_KEY_LEN_SHIFT) & 0xffff) as usize;
        let val_len = ((meta >> META_VAL_LEN_SHIFT) & 0xffff) as usize;
        // The address kind and the reserved byte above it: the reserved byte must be 0 and
        // the kind one of 0, 4, 6.
        let kind = (meta >> META_ADDR_KIND_SHIFT) & 0xffff;
        let known: u64 = 1 << ADDR_NONE | 1 << ADDR_V4 | 1 << ADDR_V6;
        let bad = (key_len.wrapping_sub(1) >= MAX_HOST_LEN)
            | (val_len.wrapping_sub(1) >= MAX_BACKEND_LEN)
            | (kind > ADDR_V6 as u64)
            | ((known >> (kind & 63)) & 1 == 0);
        if bad {
            return None;
        }
        Some(Layout {
            key_len,
            val_len,
            addr_kind: kind as u8,
            port: (meta >> META_PORT_SHIFT) as u16,
            addr_words: addr_words(kind as u8),
            key_words: words_for(key_len),
            val_words: words_for(val_len),
        })
    }

    /// Words after the fixed ones (seq, meta, hash): key, value, address.
    #[inline(always)]
    pub(crate) fn body_words(&self) -> usize {
        self.addr_words + self.key_words + self.val_words
    }
}

/// Where a record's parts lie, decoded and bounds-checked against the arena: what the writer
/// and `verify` need (the lookup path uses [`Layout`] directly).
pub(crate) struct Meta {
    pub key_len: usize,
    pub hash: u64,
    /// Word index (in the arena) of the first key word.
    pub key_at: usize,
    /// Total words of the record, seq included.
    pub words: usize,
}

impl Meta {
    /// Decodes `meta` and `hash` of the record at word `rec` and checks that the whole record
    /// fits in `arena_words` words. `None` if any field is out of range.
    pub(crate) fn decode(rec: usize, meta: u64, hash: u64, arena_words: usize) -> Option<Meta> {
        let l = Layout::of(meta)?;
        let key_at = rec.checked_add(RECORD_FIXED_WORDS)?;
        let end = key_at + l.body_words();
        if end > arena_words {
            return None;
        }
        Some(Meta {
            key_len: l.key_len,
            hash,
            key_at,
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

/// Whether `words` hold exactly `key`, zero-padded. Out of line: inlined, its setup is hoisted
/// into the probe loop and costs spilled registers on every lookup (`benches/instructions.sh`).
#[inline(never)]
fn key_eq(words: &[AtomicU64], key: &[u8]) -> bool {
    let (full, rest) = key.as_chunks::<8>();
    if words.len() != words_for(key.len()) {
        return false;
    }
    let mut diff = 0;
    for (c, w) in full.iter().zip(words) {
        diff |= u64::from_le_bytes(*c) ^ load(w);
    }
    if !rest.is_empty() {
        // The last, partial word: the key's final 8 bytes shifted down when it has them.
        let tail = match key.last_chunk::<8>() {
            Some(last) => u64::from_le_bytes(*last) >> (64 - 8 * rest.len()),
            None => chunk(rest, 0),
        };
        diff |= words.get(full.len()).map_or(1, |w| load(w) ^ tail);
    }
    diff == 0
}

#[inline]
fn load(w: &AtomicU64) -> u64 {
    u64::from_le(w.load(Ordering::Relaxed))
}

/// The key being looked up, with its zero-padded words when it is short enough for the
/// straight-line read ([`read_short`]): computed once per lookup, not per probed record.
pub(crate) struct Needle<'a> {
    bytes: &'a [u8],
    short: bool,
    /// The key's words, zero-padded, and a mask per word: all ones for the key's own words,
    /// zero past them (where a record holds its value).
    words: [u64; SHORT_WORDS],
    masks: [u64; SHORT_WORDS],
    key_words: usize,
}

/// Keys and values of up to this many words are matched and copied without loops.
const SHORT_WORDS: usize = 4;

/// Words of a record the short read may touch, counted from its sequence word: the fixed
/// words, a short key, a short value and two address words.
const WINDOW: usize = RECORD_FIXED_WORDS + 2 * SHORT_WORDS + 2;
const _: () = assert!(SHORT_WORDS * 8 <= VALUE_BUF);

impl<'a> Needle<'a> {
    #[inline(always)]
    pub(crate) fn new(key: &'a [u8]) -> Needle<'a> {
        let short = key.len() <= SHORT_WORDS * 8;
        let key_words = words_for(key.len());
        Needle {
            bytes: key,
            short,
            words: if short {
                short_words(key)
            } else {
                [0; SHORT_WORDS]
            },
            masks: std::array::from_fn(|i| if i < key_words { !0 } else { 0 }),
            key_words,
        }
    }
}

/// The words of a key of at most 32 bytes, zero-padded, from at most four overlapping loads of
/// the key (no copy through memory: a copy's overlapping stores would stall the loads that
/// read the words back).
#[inline(always)]
fn short_words(key: &[u8]) -> [u64; SHORT_WORDS] {
    debug_assert!(key.len() <= SHORT_WORDS * 8);
    let n = key.len();
    if let (Some(head), Some(last)) = (key.first_chunk::<16>(), key.last_chunk::<16>()) {
        // Bytes 16.. are the last 16 shifted down past the ones the head already has.
        let tail = u128::from_le_bytes(*last)
            .checked_shr(8 * (32 - n) as u32)
            .unwrap_or(0);
        let head = u128::from_le_bytes(*head);
        [
            head as u64,
            (head >> 64) as u64,
            tail as u64,
            (tail >> 64) as u64,
        ]
    } else if let (Some(head), Some(last)) = (key.first_chunk::<8>(), key.last_chunk::<8>()) {
        let tail = u64::from_le_bytes(*last)
            .checked_shr(8 * (16 - n) as u32)
            .unwrap_or(0);
        [u64::from_le_bytes(*head), tail, 0, 0]
    } else {
        [chunk(key, 0), 0, 0, 0]
    }
}

/// Reads the record the slot word `w1` (already loaded from `slot`) points to, compares its
/// key with `key` and, on a match, copies the value into `out`.
///
/// Only a record carrying `key`'s full 64-bit hash is decoded and checked; any other record
/// is simply not `key`'s (the lookup that owns it checks it). So a hit costs one hash compare,
/// one meta decode, the key words and the value words.
///
/// Short keys and values in a record with [`WINDOW`] words of arena from its start (all but
/// the last few records) take [`read_short`]; the rest [`read_any`].
#[inline(always)]
pub(crate) fn read_record(
    slot: &AtomicU64,
    w1: u64,
    arena: &[AtomicU64],
    key: &Needle,
    hash: u64,
    out: &mut Value,
) -> Read {
    let window = arena
        .get((w1 & SLOT_OFFSET_MASK) as usize..)
        .and_then(|r| r.first_chunk::<WINDOW>());
    match window {
        Some(rec) if key.short => read_short(slot, w1, rec, arena, key, hash, out),
        _ => read_any(slot, w1, arena, key.bytes, hash, out),
    }
}

/// [`read_record`] for a short key: a fixed number of loads at fixed or key-given positions, no
/// loops and no bounds checks. A value too long for it goes to [`read_any`].
#[inline(always)]
fn read_short(
    slot: &AtomicU64,
    w1: u64,
    rec: &[AtomicU64; WINDOW],
    arena: &[AtomicU64],
    key: &Needle,
    hash: u64,
    out: &mut Value,
) -> Read {
    let at = |i: usize| load(&rec[i]);
    fence(Ordering::Acquire);
    let s1 = at(0);
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return Read::Retry;
    }
    let outcome = if at(2) == hash {
        match match_short(rec, at(1), key, out) {
            Some(outcome) => outcome,
            None => return read_any(slot, w1, arena, key.bytes, hash, out),
        }
    } else {
        Read::Stable(false)
    };
    fence(Ordering::Acquire);
    if at(0) != s1 || load(slot) != w1 {
        Read::Retry
    } else {
        outcome
    }
}

/// The key compare and value copy of [`read_short`]; `None` when the value is too long for it.
#[inline(always)]
fn match_short(
    rec: &[AtomicU64; WINDOW],
    meta: u64,
    key: &Needle,
    out: &mut Value,
) -> Option<Read> {
    // A value of 0 or more than the short bytes goes to the general read, which tells the
    // long ones from the damaged ones.
    if ((meta >> META_VAL_LEN_SHIFT) as u16 as usize).wrapping_sub(1) >= SHORT_WORDS * 8 {
        return None;
    }
    let Some(l) = Layout::of(meta) else {
        return Some(Read::Corrupt);
    };
    if l.key_len != key.bytes.len() {
        return Some(Read::Stable(false));
    }
    // The key and value lie at positions `key` alone gives (the record's key length is
    // `key`'s), so their loads need not wait for the meta word; only the address follows the
    // value. The fixed-count loads below stay inside the window, though they may run past a
    // short record's end (those words are ignored: masked out of the key compare, past the
    // value's length in the copy).
    let mut diff = 0;
    for (i, (word, mask)) in key.words.iter().zip(key.masks).enumerate() {
        diff |= (load(&rec[RECORD_FIXED_WORDS + i]) ^ word) & mask;
    }
    if diff != 0 {
        return Some(Read::Stable(false));
    }
    // The value's words and the address words after them, as one fixed-size slice.
    let tail = rec
        .get(RECORD_FIXED_WORDS + key.key_words..)?
        .first_chunk::<{ SHORT_WORDS + 2 }>()?;
    let word = |i: usize| load(&tail[i]);
    let (lo, hi) = (word(0), word(1));
    out.bytes[..8].copy_from_slice(&lo.to_le_bytes());
    out.bytes[8..16].copy_from_slice(&hi.to_le_bytes());
    let mut bad = bad16(lo, hi, l.val_len);
    if l.val_len > 16 {
        let (lo, hi) = (word(2), word(3));
        out.bytes[16..24].copy_from_slice(&lo.to_le_bytes());
        out.bytes[24..32].copy_from_slice(&hi.to_le_bytes());
        bad |= bad16(lo, hi, l.val_len - 16);
    }
    if bad != 0 || is_unix(lo, l.val_len) {
        return Some(Read::Corrupt);
    }
    if let Some(addr) = tail.get(l.val_words..l.val_words + l.addr_words) {
        for (dst, w) in out.ip.chunks_exact_mut(8).zip(addr) {
            dst.copy_from_slice(&load(w).to_le_bytes());
        }
    }
    out.len = l.val_len as u16;
    out.addr_kind = l.addr_kind;
    out.port = l.port;
    Some(Read::Stable(true))
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
    let s1 = load(seq);
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return Read::Retry;
    }
    let outcome = if load(stored_hash) == hash {
        match_body(load(meta), body, key, out)
    } else {
        Read::Stable(false)
    };
    fence(Ordering::Acquire);
    if load(seq) != s1 || load(slot) != w1 {
        Read::Retry
    } else {
        outcome
    }
}

/// A slot pointing past the arena: damage, unless the slot moved on meanwhile.
#[cold]
fn outside_the_arena(slot: &AtomicU64, w1: u64) -> Read {
    if load(slot) == w1 {
        Read::Corrupt
    } else {
        Read::Retry
    }
}

/// Compares the key of a record whose fixed words carried `key`'s hash and `meta` (`body` is
/// the arena from its first key word on) and, when it is `key`, copies the value and address
/// into `out`, checking the value's bytes on the way.
#[inline(always)]
fn match_body(meta: u64, body: &[AtomicU64], key: &[u8], out: &mut Value) -> Read {
    let Some(l) = Layout::of(meta) else {
        return Read::Corrupt;
    };
    let Some(body) = body.get(..l.body_words()) else {
        return Read::Corrupt;
    };
    if l.key_len != key.len() {
        return Read::Stable(false);
    }
    let Some((key_words, rest)) = body.split_at_checked(l.key_words) else {
        return Read::Corrupt;
    };
    let Some((value, addr)) = rest.split_at_checked(l.val_words) else {
        return Read::Corrupt;
    };
    if !key_eq(key_words, key) {
        return Read::Stable(false);
    }
    if !copy_value(value, l.val_len, &mut out.bytes) {
        return Read::Corrupt;
    }
    for (dst, w) in out.ip.chunks_exact_mut(8).zip(addr) {
        dst.copy_from_slice(&load(w).to_le_bytes());
    }
    out.len = l.val_len as u16;
    out.addr_kind = l.addr_kind;
    out.port = l.port;
    Read::Stable(true)
}

/// Copies the `len`-byte value held in `words` into `out`, 16 bytes at a time, checking its
/// bytes on the way: false if one is not a backend byte or the value starts with `unix:`.
#[inline(always)]
fn copy_value(words: &[AtomicU64], len: usize, out: &mut [u8; VALUE_BUF]) -> bool {
    let mut bad = 0;
    let mut left = len;
    for (dst, pair) in out.chunks_exact_mut(16).zip(words.chunks(2)) {
        let lo = pair.first().map_or(0, load);
        let hi = pair.get(1).map_or(0, load);
        dst[..8].copy_from_slice(&lo.to_le_bytes());
        dst[8..].copy_from_slice(&hi.to_le_bytes());
        bad |= bad16(lo, hi, left);
        left = left.saturating_sub(16);
    }
    let first = out.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
    bad == 0 && !is_unix(first, len)
}

/// The geometry of a validated table: what a lookup needs besides the words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub hash: KeyHash,
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
        let Some(word) = index.get(slot & mask) else {
            return Status::Miss;
        };
        let w = load(word);
        if w == SLOT_EMPTY {
            return Status::Miss;
        }
        if w >> TAG_SHIFT == tag {
            match read_record(word, w, arena, key, hash, out) {
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

/// Encodes a record's words after the sequence number: meta, hash, key, value, address.
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
    for i in 0..words_for(key.len()) {
        buf.push(chunk(key, i));
    }
    for i in 0..words_for(value.len()) {
        buf.push(chunk(value, i));
    }
    for i in 0..addr_words(kind) {
        buf.push(chunk(&ip, i));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn short_words_are_the_padded_chunks() {
        let bytes: Vec<u8> = (1..=32).collect();
        for n in 0..=32 {
            let key = &bytes[..n];
            let want: [u64; SHORT_WORDS] = std::array::from_fn(|i| chunk(key, i));
            assert_eq!(short_words(key), want, "{n} bytes");
        }
    }

    #[test]
    fn chunk_pads_with_zeroes() {
        assert_eq!(chunk(b"abc", 0), u64::from_le_bytes(*b"abc\0\0\0\0\0"));
        assert_eq!(
            chunk(b"abcdefghij", 1),
            u64::from_le_bytes(*b"ij\0\0\0\0\0\0")
        );
    }

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
            meta | 1 << (META_ADDR_KIND_SHIFT + 8),
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
