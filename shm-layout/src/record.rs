//! The record codec: how a record's words hold a key, a value and its parsed address
//! (`docs/FORMAT.md`, "Records"), the slot word that points at one, and the decoding shared by
//! the reader and the writer. Plain functions of words already loaded or to be stored; the
//! fences and retries around them are the protocol's (`seqlock`).

use crate::classify::{bad16, is_unix};
use crate::format::*;
use crate::host::{MAX_BACKEND_LEN, MAX_HOST_LEN};
use crate::set::{MAX_MEMBERS, MAX_WEIGHT};
use crate::sync::{word, AtomicU64};
use crate::value::{Slot, Value, MATCH_EXACT, VALUE_BUF};
use std::net::SocketAddr;

/// What reading one record produced: the codec decides the first two, the protocol the last.
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
pub(crate) struct Shape {
    pub key_len: usize,
    pub val_len: usize,
    pub addr_kind: u8,
    pub port: u16,
    /// Members of the set, 1 to `MAX_MEMBERS`; the first one's value and address follow the
    /// key, the others the first one's address.
    pub members: usize,
    pub addr_words: usize,
    pub key_words: usize,
    pub val_words: usize,
}

impl Shape {
    /// `None` if a length is 0 or over its limit, the address kind is unknown or the member
    /// count is 0 or over `MAX_MEMBERS`. The checks are combined into one branch: this runs on
    /// every hit.
    #[inline(always)]
    pub(crate) fn of(meta: u64) -> Option<Shape> {
        let key_len = ((meta >> META_KEY_LEN_SHIFT) & 0xffff) as usize;
        let val_len = ((meta >> META_VAL_LEN_SHIFT) & 0xffff) as usize;
        let kind = (meta >> META_ADDR_KIND_SHIFT) & 0xff;
        let members = ((meta >> META_MEMBERS_SHIFT) & 0xff) as usize;
        let bad = (key_len.wrapping_sub(1) >= MAX_HOST_LEN)
            | (val_len.wrapping_sub(1) >= MAX_BACKEND_LEN)
            | !known_kind(kind)
            | (members.wrapping_sub(1) >= MAX_MEMBERS);
        if bad {
            return None;
        }
        Some(Shape {
            key_len,
            val_len,
            addr_kind: kind as u8,
            port: (meta >> META_PORT_SHIFT) as u16,
            members,
            addr_words: addr_words(kind as u8),
            key_words: words_for(key_len),
            val_words: words_for(val_len),
        })
    }

    /// Words after the fixed ones (seq, meta, hash) up to the first member's end: key, value,
    /// address.
    #[inline(always)]
    pub(crate) fn body_words(&self) -> usize {
        self.addr_words + self.key_words + self.val_words
    }
}

/// Whether `kind` (a byte) is one of `ADDR_NONE`, `ADDR_V4`, `ADDR_V6`, without branches.
#[inline(always)]
fn known_kind(kind: u64) -> bool {
    let known: u64 = 1 << ADDR_NONE | 1 << ADDR_V4 | 1 << ADDR_V6;
    (kind <= ADDR_V6 as u64) & ((known >> (kind & 63)) & 1 == 1)
}

/// A further member's descriptor word (`docs/FORMAT.md` §6), checked like [`Shape`].
#[derive(Clone, Copy)]
struct MemberShape {
    weight: u8,
    backup: bool,
    val_len: usize,
    addr_kind: u8,
    port: u16,
    val_words: usize,
    addr_words: usize,
}

impl MemberShape {
    fn of(d: u64) -> Option<MemberShape> {
        let weight = ((d >> MEMBER_WEIGHT_SHIFT) & 0xff) as u8;
        let flags = (d >> MEMBER_FLAGS_SHIFT) & 0xff;
        let val_len = ((d >> META_VAL_LEN_SHIFT) & 0xffff) as usize;
        let kind = (d >> META_ADDR_KIND_SHIFT) & 0xff;
        let reserved = (d >> META_MEMBERS_SHIFT) & 0xff;
        if weight == 0
            || weight > MAX_WEIGHT
            || flags & !MEMBER_BACKUP != 0
            || val_len.wrapping_sub(1) >= MAX_BACKEND_LEN
            || !known_kind(kind)
            || reserved != 0
        {
            return None;
        }
        Some(MemberShape {
            weight,
            backup: flags & MEMBER_BACKUP != 0,
            val_len,
            addr_kind: kind as u8,
            port: (d >> META_PORT_SHIFT) as u16,
            val_words: words_for(val_len),
            addr_words: addr_words(kind as u8),
        })
    }

    /// Words the member takes: its descriptor, its value, its address.
    fn words(&self) -> usize {
        1 + self.val_words + self.addr_words
    }
}

/// The words the part of a set's record after its first member takes (`words`, from the set
/// word on), for a set of `members`; `None` if the words do not hold such a set (a field out
/// of range, a member past the end). Nothing for a set of one. [`copy_set`] checks the same
/// while it copies.
fn set_words(words: &[AtomicU64], members: usize) -> Option<usize> {
    if members <= 1 {
        return Some(0);
    }
    set_weight(word(words.first()?))?;
    let mut at = 1;
    for _ in 1..members.min(MAX_MEMBERS) {
        at += MemberShape::of(word(words.get(at)?))?.words();
        if at > words.len() {
            return None;
        }
    }
    Some(at)
}

/// The first member's weight, from a set's set word; `None` if the word is not one.
#[inline(always)]
fn set_weight(set: u64) -> Option<u8> {
    let weight = (set & SET_WEIGHT_MASK) as u8;
    let bad = set & !SET_WEIGHT_MASK != 0 || weight == 0 || weight > MAX_WEIGHT;
    (!bad).then_some(weight)
}

/// Where a record's parts lie, decoded and bounds-checked against the arena: what the writer
/// and `verify` need (the lookup path uses [`Shape`] directly).
pub(crate) struct Meta {
    pub key_len: usize,
    pub hash: u64,
    /// Word index (in the arena) of the first key word.
    pub key_at: usize,
    /// Total words of the record, seq included.
    pub words: usize,
}

impl Meta {
    /// Decodes the record at word `rec` of `arena` (its meta and hash words, and a set's
    /// member descriptors) and checks that the whole record fits. `None` if any field is out
    /// of range.
    pub(crate) fn decode(rec: usize, arena: &[AtomicU64]) -> Option<Meta> {
        let (meta, hash) = (word(arena.get(rec + 1)?), word(arena.get(rec + 2)?));
        let l = Shape::of(meta)?;
        let key_at = rec.checked_add(RECORD_FIXED_WORDS)?;
        let first_end = key_at + l.body_words();
        let set = arena.get(first_end..).unwrap_or(&[]);
        let end = first_end + set_words(set, l.members)?;
        if end > arena.len() {
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

/// One member as the writer encodes it.
#[derive(Clone, Copy)]
pub(crate) struct MemberRef<'a> {
    pub text: &'a [u8],
    pub addr: Option<SocketAddr>,
    pub weight: u8,
    pub backup: bool,
}

/// The address kind, port and octets of a member's parsed address.
fn addr_parts(addr: Option<SocketAddr>) -> (u8, u16, [u8; 16]) {
    match addr {
        Some(SocketAddr::V4(a)) => {
            let mut ip = [0u8; 16];
            ip[..4].copy_from_slice(&a.ip().octets());
            (ADDR_V4, a.port(), ip)
        }
        Some(SocketAddr::V6(a)) => (ADDR_V6, a.port(), a.ip().octets()),
        None => (ADDR_NONE, 0, [0; 16]),
    }
}

/// Pushes a member's value words and address words.
fn push_member(buf: &mut Vec<u64>, value: &[u8], kind: u8, ip: &[u8; 16]) {
    for i in 0..words_for(value.len()) {
        buf.push(chunk(value, i));
    }
    for i in 0..addr_words(kind) {
        buf.push(chunk(ip, i));
    }
}

/// Encodes the record of a set of one after the sequence number: meta, hash, key, value,
/// address.
pub(crate) fn encode(
    buf: &mut Vec<u64>,
    hash: u64,
    key: &[u8],
    value: &[u8],
    addr: Option<SocketAddr>,
) {
    let one = MemberRef {
        text: value,
        addr,
        weight: 1,
        backup: false,
    };
    encode_set(buf, hash, key, &[one]);
}

/// Encodes a set's record after the sequence number: meta (with the first member's value
/// length, address kind and port), hash, key, the first member's value and address, then for
/// a set of two or more the set word and each further member (`docs/FORMAT.md` §6).
/// `members` is in the table's order (a primary first) and not empty.
pub(crate) fn encode_set(buf: &mut Vec<u64>, hash: u64, key: &[u8], members: &[MemberRef]) {
    buf.clear();
    let Some((first, rest)) = members.split_first() else {
        return;
    };
    let (kind, port, ip) = addr_parts(first.addr);
    let meta = (key.len() as u64) << META_KEY_LEN_SHIFT
        | (first.text.len() as u64) << META_VAL_LEN_SHIFT
        | (kind as u64) << META_ADDR_KIND_SHIFT
        | (members.len() as u64) << META_MEMBERS_SHIFT
        | (port as u64) << META_PORT_SHIFT;
    buf.push(meta);
    buf.push(hash);
    for i in 0..words_for(key.len()) {
        buf.push(chunk(key, i));
    }
    push_member(buf, first.text, kind, &ip);
    if rest.is_empty() {
        return;
    }
    buf.push(u64::from(first.weight) & SET_WEIGHT_MASK);
    for m in rest {
        let (kind, port, ip) = addr_parts(m.addr);
        buf.push(
            u64::from(m.weight) << MEMBER_WEIGHT_SHIFT
                | (u64::from(m.backup) * MEMBER_BACKUP) << MEMBER_FLAGS_SHIFT
                | (m.text.len() as u64) << META_VAL_LEN_SHIFT
                | (kind as u64) << META_ADDR_KIND_SHIFT
                | (port as u64) << META_PORT_SHIFT,
        );
        push_member(buf, m.text, kind, &ip);
    }
}

/// The slot word for a record at arena word `rec` with key hash `hash`.
pub(crate) fn slot_word(hash: u64, rec: usize) -> u64 {
    (tag_of(hash) << TAG_SHIFT) | (rec as u64 & SLOT_OFFSET_MASK)
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
        diff |= u64::from_le_bytes(*c) ^ word(w);
    }
    if !rest.is_empty() {
        // The last, partial word: the key's final 8 bytes shifted down when it has them.
        let tail = match key.last_chunk::<8>() {
            Some(last) => u64::from_le_bytes(*last) >> (64 - 8 * rest.len()),
            None => chunk(rest, 0),
        };
        diff |= words.get(full.len()).map_or(1, |w| word(w) ^ tail);
    }
    diff == 0
}

/// The key being looked up, with its zero-padded words when it is short enough for the
/// straight-line read (`seqlock::read_short`): computed once per lookup, not per probed record.
pub(crate) struct Needle<'a> {
    pub(crate) bytes: &'a [u8],
    /// Short enough for the straight-line read.
    pub(crate) short: bool,
    /// The key's words, zero-padded, and a mask per word: all ones for the key's own words,
    /// zero past them (where a record holds its value).
    words: [u64; SHORT_WORDS],
    masks: [u64; SHORT_WORDS],
    key_words: usize,
}

/// Keys and values of up to this many words are matched and copied without loops.
pub(crate) const SHORT_WORDS: usize = 4;

/// Words of a record the short read may touch, counted from its sequence word: the fixed
/// words, a short key, a short value and two address words.
pub(crate) const WINDOW: usize = RECORD_FIXED_WORDS + 2 * SHORT_WORDS + 2;
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

/// The key compare and value copy of `seqlock::read_short`, `rec` being the first words of
/// `record`; `None` when the first value is too long for it. A set's further members are
/// copied as the general read copies them.
#[inline(always)]
pub(crate) fn match_short(
    rec: &[AtomicU64; WINDOW],
    record: &[AtomicU64],
    meta: u64,
    key: &Needle,
    out: &mut Value,
) -> Option<Read> {
    // A first value of 0 or more than the short bytes goes to the general read, which tells
    // the long ones from the damaged ones.
    let long = ((meta >> META_VAL_LEN_SHIFT) as u16 as usize).wrapping_sub(1) >= SHORT_WORDS * 8;
    if long {
        return None;
    }
    let Some(l) = Shape::of(meta) else {
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
    for (i, (want, mask)) in key.words.iter().zip(key.masks).enumerate() {
        diff |= (word(&rec[RECORD_FIXED_WORDS + i]) ^ want) & mask;
    }
    if diff != 0 {
        return Some(Read::Stable(false));
    }
    // The value's words and the address words after them, as one fixed-size slice.
    let tail = rec
        .get(RECORD_FIXED_WORDS + key.key_words..)?
        .first_chunk::<{ SHORT_WORDS + 2 }>()?;
    if !copy_short(tail.first_chunk()?, l.val_len, &mut out.head.bytes) {
        return Some(Read::Corrupt);
    }
    let addr = tail
        .get(l.val_words..l.val_words + l.addr_words)
        .unwrap_or(&[]);
    fill_exact(out, &l, addr);
    if l.members > 1 {
        // `record` is the arena from the record's first word: the set's part, after the first
        // member, lies past the window's fixed loads, at a position the meta word gives.
        let set = record
            .get(RECORD_FIXED_WORDS + l.body_words()..)
            .unwrap_or(&[]);
        if !copy_set(set, l.members, out) {
            return Some(Read::Corrupt);
        }
    }
    Some(Read::Stable(true))
}

/// Compares the key of a record whose fixed words carried `key`'s hash and `meta` (`body` is
/// the arena from its first key word on) and, when it is `key`, copies the value and address
/// into `out`, checking the value's bytes on the way.
#[inline(always)]
pub(crate) fn match_body(meta: u64, body: &[AtomicU64], key: &[u8], out: &mut Value) -> Read {
    let Some(l) = Shape::of(meta) else {
        return Read::Corrupt;
    };
    let Some((first, set)) = body.split_at_checked(l.body_words()) else {
        return Read::Corrupt;
    };
    if l.key_len != key.len() {
        return Read::Stable(false);
    }
    let Some((key_words, rest)) = first.split_at_checked(l.key_words) else {
        return Read::Corrupt;
    };
    let Some((value, addr)) = rest.split_at_checked(l.val_words) else {
        return Read::Corrupt;
    };
    if !key_eq(key_words, key) {
        return Read::Stable(false);
    }
    if !copy_value(value, l.val_len, &mut out.head.bytes) {
        return Read::Corrupt;
    }
    fill_exact(out, &l, addr);
    if l.members > 1 && !copy_set(set, l.members, out) {
        return Read::Corrupt;
    }
    Read::Stable(true)
}

/// Copies the further members of a set of `members` (`words`: the record from its set word on)
/// into `out`, checking each value's bytes; false if the words do not hold such a set. Checks
/// what [`set_words`] checks (keep the two in step). Nothing for a set of one.
#[inline(never)]
fn copy_set(words: &[AtomicU64], members: usize, out: &mut Value) -> bool {
    if members <= 1 {
        return true;
    }
    let Some(weight) = words.first().and_then(|w| set_weight(word(w))) else {
        return false;
    };
    let mut at = 1;
    for slot in out.rest.iter_mut().take(members - 1) {
        match copy_member(words.get(at..).unwrap_or(&[]), slot) {
            Some(len) => at += len,
            None => return false,
        }
    }
    out.head.weight = weight;
    out.members = members as u8;
    true
}

/// Words of a further member the short copy may touch: its descriptor word, a short value and
/// two address words.
const MEMBER_WINDOW: usize = 1 + SHORT_WORDS + 2;

/// Copies the member whose descriptor word starts `words` into `slot`, checking its value's
/// bytes; returns the words it takes, or `None` if they do not hold a member. A short value
/// with a window of words after it (all but a table's last few records) is copied with fixed
/// loads, as the first member's in [`match_short`].
#[inline(always)]
fn copy_member(words: &[AtomicU64], slot: &mut Slot) -> Option<usize> {
    let m = MemberShape::of(word(words.first()?))?;
    let addr_at = 1 + m.val_words;
    let len = m.words();
    let (copied, addr) = match words.first_chunk::<MEMBER_WINDOW>() {
        Some(w) if m.val_len <= SHORT_WORDS * 8 => {
            let (_, value) = w.split_first()?;
            let copied = copy_short(value.first_chunk()?, m.val_len, &mut slot.bytes);
            (copied, w.get(addr_at..len)?)
        }
        _ => {
            let value = words.get(1..addr_at)?;
            let copied = copy_value(value, m.val_len, &mut slot.bytes);
            (copied, words.get(addr_at..len)?)
        }
    };
    if !copied {
        return None;
    }
    copy_addr(addr, &mut slot.ip);
    slot.len = m.val_len as u16;
    slot.addr_kind = m.addr_kind;
    slot.port = m.port;
    slot.weight = m.weight;
    slot.backup = m.backup;
    Some(len)
}

/// Copies a value of `len` bytes, at most `SHORT_WORDS` words (`words`, of which those past
/// the value are ignored), into `out` with fixed loads, checking its bytes on the way: false
/// if one is not a backend byte or the value starts with `unix:`.
#[inline(always)]
fn copy_short(words: &[AtomicU64; SHORT_WORDS], len: usize, out: &mut [u8; VALUE_BUF]) -> bool {
    let at = |i: usize| word(&words[i]);
    let (lo, hi) = (at(0), at(1));
    out[..8].copy_from_slice(&lo.to_le_bytes());
    out[8..16].copy_from_slice(&hi.to_le_bytes());
    let mut bad = bad16(lo, hi, len);
    if len > 16 {
        let (lo, hi) = (at(2), at(3));
        out[16..24].copy_from_slice(&lo.to_le_bytes());
        out[24..32].copy_from_slice(&hi.to_le_bytes());
        bad |= bad16(lo, hi, len - 16);
    }
    bad == 0 && !is_unix(lo, len)
}

/// Completes `out` for an exact match of a record of shape `l` whose first member's value
/// bytes are already copied: its address words, value length, address kind and port, as a set
/// of one (a larger set's other members are [`copy_set`]'s).
#[inline(always)]
fn fill_exact(out: &mut Value, l: &Shape, addr: &[AtomicU64]) {
    let head = &mut out.head;
    copy_addr(addr, &mut head.ip);
    head.len = l.val_len as u16;
    head.addr_kind = l.addr_kind;
    head.port = l.port;
    head.weight = 1;
    out.members = 1;
    out.matched = MATCH_EXACT;
}

/// Copies a member's address words (none, one for IPv4, two for IPv6) into its octets.
#[inline(always)]
fn copy_addr(words: &[AtomicU64], ip: &mut [u8; 16]) {
    for (dst, w) in ip.chunks_exact_mut(8).zip(words) {
        dst.copy_from_slice(&word(w).to_le_bytes());
    }
}

/// Copies the `len`-byte value held in `words` into `out`, 16 bytes at a time, checking its
/// bytes on the way: false if one is not a backend byte or the value starts with `unix:`.
#[inline(always)]
fn copy_value(words: &[AtomicU64], len: usize, out: &mut [u8; VALUE_BUF]) -> bool {
    let mut bad = 0;
    let mut left = len;
    for (dst, pair) in out.chunks_exact_mut(16).zip(words.chunks(2)) {
        let lo = pair.first().map_or(0, word);
        let hi = pair.get(1).map_or(0, word);
        dst[..8].copy_from_slice(&lo.to_le_bytes());
        dst[8..].copy_from_slice(&hi.to_le_bytes());
        bad |= bad16(lo, hi, left);
        left = left.saturating_sub(16);
    }
    let first = out.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b));
    bad == 0 && !is_unix(first, len)
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

    #[test]
    fn meta_decode_rejects_out_of_bounds() {
        let arena = |meta: u64, words: usize| -> Vec<AtomicU64> {
            (0..words)
                .map(|i| AtomicU64::new(if i == 1 { meta } else { 0 }))
                .collect()
        };
        let meta = 10u64 | 12 << 16 | 1 << META_MEMBERS_SHIFT;
        assert!(Meta::decode(0, &arena(meta, 3 + 2 + 2)).is_some());
        assert!(Meta::decode(0, &arena(meta, 3 + 2 + 1)).is_none());
        assert!(Meta::decode(usize::MAX - 1, &arena(meta, 7)).is_none());
        assert!(Meta::decode(0, &arena(0, 100)).is_none());
        assert!(Meta::decode(0, &arena(meta | 9 << 32, 100)).is_none());
        // Members: none, or more than the limit.
        assert!(Meta::decode(0, &arena(meta & !(0xff << META_MEMBERS_SHIFT), 100)).is_none());
        let many = meta | ((MAX_MEMBERS as u64 + 1) << META_MEMBERS_SHIFT);
        assert!(Meta::decode(0, &arena(many, 100)).is_none());
    }

    /// A set's record decodes to its own length, and every cut of it is refused.
    #[test]
    fn a_set_record_decodes_to_its_length_and_no_cut_of_it() {
        let members = [
            MemberRef {
                text: b"10.0.0.1:80",
                addr: Some("10.0.0.1:80".parse().unwrap()),
                weight: 3,
                backup: false,
            },
            MemberRef {
                text: b"name.example:8080",
                addr: None,
                weight: 100,
                backup: false,
            },
            MemberRef {
                text: b"[2001:db8::1]:443",
                addr: Some("[2001:db8::1]:443".parse().unwrap()),
                weight: 1,
                backup: true,
            },
        ];
        let mut buf = Vec::new();
        encode_set(&mut buf, 0, b"a.example", &members);
        let words: Vec<AtomicU64> = std::iter::once(0)
            .chain(buf.iter().copied())
            .map(AtomicU64::new)
            .collect();
        let m = Meta::decode(0, &words).unwrap();
        assert_eq!(m.words, words.len());
        for cut in 0..words.len() {
            assert!(Meta::decode(0, &words[..cut]).is_none(), "cut at {cut}");
        }
    }
}
