//! On-disk constants of the table file. `docs/FORMAT.md` is the normative description; every
//! constant here is named there.

/// `SBTABLE\0`, the first eight bytes of every table file.
pub const MAGIC: [u8; 8] = *b"SBTABLE\0";
/// Bumped on any incompatible change; readers reject every other value.
pub const FORMAT_VERSION: u32 = 5;
/// The high half of the version word. Like every word it is stored little-endian; a file
/// written by a big-endian writer storing native words reads back as its byte swap.
pub const ENDIAN_MARK: u32 = 0x0A0B_0C0D;
/// SipHash-1-3 keyed with the header's 128-bit key, over the key bytes.
pub const HASH_SIPHASH13: u64 = 1;

/// The header occupies the first 4 KiB; the index starts right after it.
pub const HEADER_LEN: usize = 4096;

// Header fields: byte offsets of little-endian u64 words.
pub const H_MAGIC: usize = 0;
/// `version: u32` in the low half, `ENDIAN_MARK: u32` in the high half.
pub const H_VERSION: usize = 8;
pub const H_HEADER_LEN: usize = 16;
pub const H_HASH_ID: usize = 24;
pub const H_HASH_K0: usize = 32;
pub const H_HASH_K1: usize = 40;
pub const H_CAPACITY: usize = 48;
pub const H_MAX_PROBE: usize = 56;
pub const H_INDEX_OFFSET: usize = 64;
pub const H_ARENA_OFFSET: usize = 72;
pub const H_ARENA_LEN: usize = 80;
pub const H_FILE_LEN: usize = 88;
pub const H_GENERATION: usize = 96;
pub const H_CREATED_MS: usize = 104;
/// SipHash-1-3 with a zero key over bytes `0..H_CHECKSUM`.
pub const H_CHECKSUM: usize = 112;
/// Everything before this offset is fixed for the life of the file and covered by the checksum.
pub const STATIC_HEADER_LEN: usize = H_CHECKSUM;

// Words the writer changes while readers run, each on its own 64-byte cache line.
pub const H_SUPERSEDED: usize = 128;
/// How many keys are patterns (`*.…`, `*`); on `superseded`'s line, which every lookup loads
/// already. Zero: a miss is a miss, with no pattern probes.
pub const H_PATTERNS: usize = 136;
pub const H_HEARTBEAT_MS: usize = 192;
/// Informational counters (one line): live entries, tombstones, arena bytes in use.
pub const H_ENTRIES: usize = 256;
pub const H_TOMBSTONES: usize = 264;
pub const H_ARENA_USED: usize = 272;
/// Writer-only words (one line), ignored by readers: the seal of a cleanly stopped table
/// (0 while it may be changing) and the end of the arena's used part when it was sealed.
pub const H_SEAL: usize = 320;
pub const H_SEAL_ARENA_END: usize = 328;

// Slot words.
pub const SLOT_EMPTY: u64 = 0;
pub const SLOT_TOMBSTONE: u64 = 1;
pub const TAG_SHIFT: u32 = 48;
/// Low 48 bits: record offset in the arena, in 8-byte units.
pub const SLOT_OFFSET_MASK: u64 = (1 << TAG_SHIFT) - 1;

// Records.
/// seq, meta, hash: the fixed words that start every record.
pub const RECORD_FIXED_WORDS: usize = 3;
pub const META_KEY_LEN_SHIFT: u32 = 0;
pub const META_VAL_LEN_SHIFT: u32 = 16;
pub const META_ADDR_KIND_SHIFT: u32 = 32;
/// The set's member count, 1 to `MAX_MEMBERS` (reserved, 0, in version 3).
pub const META_MEMBERS_SHIFT: u32 = 40;
pub const META_PORT_SHIFT: u32 = 48;
/// In a set of two or more, the word after the first member's address: its weight in the low
/// byte, every other bit 0. Then each further member: a descriptor word (below), its value
/// words, its address words.
pub const SET_WEIGHT_MASK: u64 = 0xff;
/// A further member's descriptor word: weight (bits 0..8), flags (8..16), and its value
/// length, address kind and port at the meta word's positions; bits 40..48 are 0.
pub const MEMBER_WEIGHT_SHIFT: u32 = 0;
pub const MEMBER_FLAGS_SHIFT: u32 = 8;
/// The one defined member flag: used only when no primary can be.
pub const MEMBER_BACKUP: u64 = 1;
/// No parsed address: the backend is a host name.
pub const ADDR_NONE: u8 = 0;
/// One address word: the four IPv4 octets in the low four bytes, in network order.
pub const ADDR_V4: u8 = 4;
/// Two address words: the sixteen IPv6 octets, in network order.
pub const ADDR_V6: u8 = 6;

/// The writer's default probe limit.
pub const DEFAULT_MAX_PROBE: u64 = 128;
/// The largest `max_probe` a reader accepts (it also must not exceed `capacity`): the bound on
/// the slots one lookup may visit, whatever the file says.
pub const MAX_PROBE_LIMIT: usize = 4096;
/// The smallest index the writer makes.
pub const MIN_CAPACITY: u64 = 64;

const _: () = assert!(H_SEAL_ARENA_END + 8 <= HEADER_LEN && H_SEAL.is_multiple_of(64));
const _: () = assert!(
    H_SUPERSEDED.is_multiple_of(64)
        && H_HEARTBEAT_MS.is_multiple_of(64)
        && H_ENTRIES.is_multiple_of(64)
);
const _: () = assert!(STATIC_HEADER_LEN <= H_SUPERSEDED);
const _: () = assert!(HEADER_LEN.is_multiple_of(8));

/// The number of address words for an address kind.
pub const fn addr_words(kind: u8) -> usize {
    // 0 → 0, 4 → 1, 6 → 2 without branches (the reader checks the kind separately).
    (kind as usize + 2) >> 2
}

/// Bytes rounded up to whole 8-byte words.
pub const fn words_for(bytes: usize) -> usize {
    bytes.div_ceil(8)
}

/// The 64-bit SipHash-1-3 of `key` under `(k0, k1)`: the hash of the table.
#[inline]
pub fn hash_key(k0: u64, k1: u64, key: &[u8]) -> u64 {
    KeyHash::new(k0, k1).of(key)
}

/// A table's keyed hash with its initial state computed once, at open, rather than on every
/// lookup.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(siphasher::sip::SipHasher13);

impl KeyHash {
    pub fn new(k0: u64, k1: u64) -> KeyHash {
        KeyHash(siphasher::sip::SipHasher13::new_with_keys(k0, k1))
    }

    /// `(k0, k1)`, as stored in the header.
    pub fn keys(&self) -> (u64, u64) {
        self.0.keys()
    }

    /// The 64-bit SipHash-1-3 of `key`. Out of line: inlined, it leaves the probe loop fewer
    /// registers (`benches/instructions.sh` counts more instructions per lookup).
    #[inline(never)]
    pub fn of(&self, key: &[u8]) -> u64 {
        self.0.hash(key)
    }
}

/// The 16-bit tag stored in a slot word: the hash's high bits, never 0 (so that a used slot
/// is never mistaken for empty or tombstone).
pub fn tag_of(hash: u64) -> u64 {
    let t = hash >> TAG_SHIFT;
    if t == 0 {
        1
    } else {
        t
    }
}
