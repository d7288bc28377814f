//! The read side: open a table file read-only, validate its header, and answer lookups.

use crate::format::*;
use crate::host::{Backend, Host};
use crate::patterns;
use crate::raw::Mapping;
use crate::record::{Meta, Needle, Read};
use crate::seqlock::{self, Geometry};
use crate::sync::{load, word, AtomicU64};
use crate::value::{Lookup, Status, Value};
use std::fmt;
use std::fs::File;
use std::io;
use std::path::Path;

/// A table file mapped read-only. Cheap to query from any thread; the mapping stays valid
/// until the value is dropped, even after the writer has replaced the file.
pub struct Table {
    map: Mapping,
    geo: Geometry,
    generation: u64,
    /// Device and inode of the opened file, to notice a replacement by `stat`.
    file_id: (u64, u64),
}

/// Why a table file could not be opened.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// The file is shorter than its header says (or than a header).
    Truncated {
        len: u64,
        expected: u64,
    },
    BadMagic,
    Version {
        expected: u32,
        got: u32,
    },
    /// Written on a machine of the other byte order.
    Endianness,
    Checksum,
    /// A header field is out of range; names the field.
    BadHeader(&'static str),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Io(e) => write!(f, "{e}"),
            OpenError::Truncated { len, expected } => {
                write!(f, "file is truncated: {len} bytes, expected {expected}")
            }
            OpenError::BadMagic => f.write_str("not a set-backend table (bad magic)"),
            OpenError::Version { expected, got } => {
                write!(
                    f,
                    "unsupported table format version {got} (this build reads {expected})"
                )
            }
            OpenError::Endianness => f.write_str("table was written with the other byte order"),
            OpenError::Checksum => f.write_str("table header checksum mismatch"),
            OpenError::BadHeader(field) => write!(f, "table header field {field} is invalid"),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Counters of a table, from its header (informational; the writer keeps them current).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub generation: u64,
    pub capacity: u64,
    pub entries: u64,
    pub tombstones: u64,
    pub arena_len: u64,
    pub arena_used: u64,
    pub file_len: u64,
    /// Keys that are patterns (`*.…`, `*`).
    pub patterns: u64,
}

/// What a deep check found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub slot: u64,
    pub reason: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slot {}: {}", self.slot, self.reason)
    }
}

impl std::error::Error for VerifyError {}

impl Table {
    /// Opens and validates the table at `path`: magic, version, byte order, checksum, and
    /// every size and offset against the file's real length.
    pub fn open(path: impl AsRef<Path>) -> Result<Table, OpenError> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        if len < HEADER_LEN as u64 {
            return Err(OpenError::Truncated {
                len,
                expected: HEADER_LEN as u64,
            });
        }
        let map = Mapping::read_only(&file)?;
        use std::os::unix::fs::MetadataExt;
        Self::validate(map, len, (meta.dev(), meta.ino()))
    }

    fn validate(mut map: Mapping, len: u64, file_id: (u64, u64)) -> Result<Table, OpenError> {
        let words = map.words();
        let h = |off: usize| load(words, off).unwrap_or(0);
        if h(H_MAGIC).to_le_bytes() != MAGIC {
            return Err(OpenError::BadMagic);
        }
        let v = h(H_VERSION);
        let (version, endian) = (v as u32, (v >> 32) as u32);
        if endian != ENDIAN_MARK {
            return Err(if endian.swap_bytes() == ENDIAN_MARK {
                OpenError::Endianness
            } else {
                OpenError::BadHeader("endianness marker")
            });
        }
        if version != FORMAT_VERSION {
            return Err(OpenError::Version {
                expected: FORMAT_VERSION,
                got: version,
            });
        }
        if header_checksum(words) != h(H_CHECKSUM) {
            return Err(OpenError::Checksum);
        }
        if h(H_HEADER_LEN) != HEADER_LEN as u64 {
            return Err(OpenError::BadHeader("header_len"));
        }
        if h(H_HASH_ID) != HASH_SIPHASH13 {
            return Err(OpenError::BadHeader("hash_id"));
        }
        let capacity = h(H_CAPACITY);
        if capacity == 0 || !capacity.is_power_of_two() || capacity > 1 << 40 {
            return Err(OpenError::BadHeader("capacity"));
        }
        let max_probe = h(H_MAX_PROBE);
        if max_probe == 0 || max_probe > capacity || max_probe > MAX_PROBE_LIMIT as u64 {
            return Err(OpenError::BadHeader("max_probe"));
        }
        if h(H_INDEX_OFFSET) != HEADER_LEN as u64 {
            return Err(OpenError::BadHeader("index_offset"));
        }
        let arena_offset = h(H_ARENA_OFFSET);
        if Some(arena_offset)
            != capacity
                .checked_mul(8)
                .and_then(|b| b.checked_add(HEADER_LEN as u64))
        {
            return Err(OpenError::BadHeader("arena_offset"));
        }
        let arena_len = h(H_ARENA_LEN);
        if arena_len % 8 != 0 || arena_len / 8 > SLOT_OFFSET_MASK {
            return Err(OpenError::BadHeader("arena_len"));
        }
        let file_len = h(H_FILE_LEN);
        if Some(file_len) != arena_offset.checked_add(arena_len) {
            return Err(OpenError::BadHeader("file_len"));
        }
        if len < file_len || (map.len() as u64) < file_len {
            return Err(OpenError::Truncated {
                len,
                expected: file_len,
            });
        }
        let generation = h(H_GENERATION);
        let geo = Geometry {
            hash: KeyHash::new(h(H_HASH_K0), h(H_HASH_K1)),
            capacity: capacity as usize,
            max_probe: max_probe as usize,
        };
        let index = (HEADER_LEN / 8, geo.capacity);
        let arena = (arena_offset as usize / 8, arena_len as usize / 8);
        if !map.set_regions(index, arena) {
            return Err(OpenError::Truncated {
                len,
                expected: file_len,
            });
        }
        Ok(Table {
            geo,
            generation,
            file_id,
            map,
        })
    }

    #[inline]
    fn index(&self) -> &[AtomicU64] {
        self.map.index()
    }

    #[inline]
    fn arena(&self) -> &[AtomicU64] {
        self.map.arena()
    }

    /// Looks up a host already in canonical form (as nginx's `$host` is): its own key, then,
    /// if the table holds patterns, the longest `*.suffix` and the default `*`
    /// ([`Value::matched`] says which answered). Allocates nothing and makes no syscalls.
    #[inline]
    pub fn lookup(&self, host: &[u8]) -> Lookup {
        let mut out = Value::empty();
        let status = self.lookup_into(host, &mut out);
        Lookup::of(status, out)
    }

    /// Like [`Table::lookup`], but copies a hit into `out`, a buffer the caller keeps: the
    /// request path's form (no 300-byte value zeroed and moved per request). Always inlined,
    /// as before patterns existed: out of line, its prologue cost a hit 6% more instructions
    /// (`benches/instructions.sh`).
    #[inline(always)]
    pub fn lookup_into(&self, host: &[u8], out: &mut Value) -> Status {
        // A host starting with a dot is no name's own key: in the table, `.example.com` is
        // `*.example.com` (`host::table_key`), which the walk reports as the pattern it is.
        if host.first() == Some(&b'.') {
            return self.after_miss(host, out);
        }
        match seqlock::lookup_into(&self.geo, self.index(), self.arena(), host, out) {
            Status::Miss => self.after_miss(host, out),
            status => status,
        }
    }

    /// A miss of the host's own key: the patterns that cover it, when the writer has stored
    /// any (one relaxed load, on `superseded`'s line). Out of line, so that a hit pays nothing
    /// for it.
    #[cold]
    #[inline(never)]
    fn after_miss(&self, host: &[u8], out: &mut Value) -> Status {
        if load(self.map.words(), H_PATTERNS).unwrap_or(0) == 0 {
            return Status::Miss;
        }
        patterns::walk(&self.geo, self.index(), self.arena(), host, out)
    }

    /// True once the writer has published a newer generation at the same path: the caller
    /// should open the path again. One relaxed load.
    #[inline]
    pub fn is_superseded(&self) -> bool {
        load(self.map.words(), H_SUPERSEDED).unwrap_or(1) != 0
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The writer's last heartbeat, in milliseconds since the Unix epoch (0 if never).
    pub fn heartbeat_ms(&self) -> u64 {
        load(self.map.words(), H_HEARTBEAT_MS).unwrap_or(0)
    }

    /// `(st_dev, st_ino)` of the opened file; a different pair at the path means it was
    /// replaced (the slow check for a writer that died before setting `superseded`).
    pub fn file_id(&self) -> (u64, u64) {
        self.file_id
    }

    pub fn stats(&self) -> Stats {
        stats_of(self.map.words())
    }

    /// Every live entry, in slot order (allocates; for tools, not the request path).
    pub fn entries(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let _ = self.scan(|_, key, value| {
            out.push((key, value.as_str().to_owned()));
            Ok(())
        });
        out
    }

    /// A deep check of every slot and record: offsets, lengths, hashes, tags, probe distances,
    /// that keys and backends are valid, that no key appears twice, and that the counters
    /// match. For tools and tests; it walks the whole file.
    pub fn verify(&self) -> Result<Stats, VerifyError> {
        let before = self.stats();
        let mut seen = std::collections::HashSet::new();
        let mut patterns = 0u64;
        let mut live = 0u64;
        let mut tombs = 0u64;
        let index = self.index();
        for w in index {
            match word(w) {
                SLOT_EMPTY => {}
                SLOT_TOMBSTONE => tombs += 1,
                _ => live += 1,
            }
        }
        self.scan(|slot, key, value| {
            let err = |reason: String| VerifyError {
                slot: slot as u64,
                reason,
            };
            let host = Host::parse(&key).map_err(|e| err(format!("key {key:?}: {e}")))?;
            if host.as_str() != key {
                return Err(err(format!("key {key:?} is not in canonical form")));
            }
            let backend = Backend::parse(value.as_str())
                .map_err(|e| err(format!("backend {:?}: {e}", value.as_str())))?;
            if backend.as_str() != value.as_str() || backend.addr() != value.addr() {
                return Err(err(format!(
                    "backend {:?} is not canonical",
                    value.as_str()
                )));
            }
            patterns += u64::from(host.kind() != crate::host::KeyKind::Exact);
            if !seen.insert(key.clone()) {
                return Err(err(format!("key {key:?} appears twice")));
            }
            Ok(())
        })?;
        let stats = self.stats();
        // The counters are exact only while the writer is idle: compare them only if they did
        // not move during the walk.
        let settled = self.stats() == before;
        if settled
            && (stats.entries != live || stats.tombstones != tombs || stats.patterns != patterns)
        {
            return Err(VerifyError {
                slot: 0,
                reason: format!(
                    "header counts {} entries, {} tombstones and {} patterns, index has {live}, \
                     {tombs} and {patterns}",
                    stats.entries, stats.tombstones, stats.patterns
                ),
            });
        }
        Ok(stats)
    }

    /// Visits every live slot with its key and value, checking the record against its slot.
    fn scan(
        &self,
        mut f: impl FnMut(usize, String, &Value) -> Result<(), VerifyError>,
    ) -> Result<(), VerifyError> {
        let index = self.index();
        let arena = self.arena();
        for slot in 0..index.len() {
            let err = |reason: &str| VerifyError {
                slot: slot as u64,
                reason: reason.to_owned(),
            };
            let mut attempts = 0;
            loop {
                let w = word(&index[slot]);
                if w == SLOT_EMPTY || w == SLOT_TOMBSTONE {
                    break;
                }
                let rec = (w & SLOT_OFFSET_MASK) as usize;
                let s1 = arena.get(rec).map(word);
                // A finding only counts if the record and its slot did not change meanwhile (the
                // writer may be reusing the record); otherwise read the slot again.
                let changed = || {
                    s1.is_some_and(|s| s & 1 == 1)
                        || arena.get(rec).map(word) != s1
                        || word(&index[slot]) != w
                };
                match self.check_slot(slot, w, rec, index, arena) {
                    Ok((key, value)) => {
                        let key = String::from_utf8(key).map_err(|_| err("key is not UTF-8"))?;
                        let key = crate::host::key_of_table(key);
                        f(slot, key, &value)?;
                        break;
                    }
                    Err(reason) if !changed() => return Err(err(reason)),
                    Err(reason) => {
                        attempts += 1;
                        if attempts >= seqlock::MAX_ATTEMPTS {
                            return Err(err(reason));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the live slot `slot` (holding `w`, pointing at record `rec`) and returns its key
    /// and value.
    fn check_slot(
        &self,
        slot: usize,
        w: u64,
        rec: usize,
        index: &[AtomicU64],
        arena: &[AtomicU64],
    ) -> Result<(Vec<u8>, Value), &'static str> {
        let mask = self.geo.capacity - 1;
        if arena.get(rec + 2).is_none() {
            return Err("record offset outside the arena");
        }
        let m = Meta::decode(rec, arena).ok_or("record lengths out of range")?;
        let key: Vec<u8> = (0..m.key_len)
            .map(|i| word(&arena[m.key_at + i / 8]).to_le_bytes()[i % 8])
            .collect();
        let h = self.geo.hash.of(&key);
        if h != m.hash {
            return Err("stored hash does not match the key");
        }
        if tag_of(h) != w >> TAG_SHIFT {
            return Err("slot tag does not match the key's hash");
        }
        let home = h as usize & mask;
        let dist = slot.wrapping_sub(home) & mask;
        if dist >= self.geo.max_probe {
            return Err("entry lies beyond max_probe from its home slot");
        }
        if (0..dist).any(|d| word(&index[(home + d) & mask]) == SLOT_EMPTY) {
            return Err("empty slot inside the entry's probe chain");
        }
        let mut value = Value::empty();
        let Some(slot_word) = index.get(slot) else {
            return Err("slot outside the index");
        };
        match seqlock::read_record(slot_word, w, arena, &Needle::new(&key), h, &mut value) {
            Read::Stable(true) => Ok((key, value)),
            Read::Stable(false) => Err("record does not match its slot"),
            Read::Corrupt => Err("record value holds bytes no backend has"),
            Read::Retry => Err("record kept changing"),
        }
    }
}

/// The header counters of a table's words.
pub(crate) fn stats_of(words: &[AtomicU64]) -> Stats {
    let h = |off: usize| load(words, off).unwrap_or(0);
    Stats {
        generation: h(H_GENERATION),
        capacity: h(H_CAPACITY),
        entries: h(H_ENTRIES),
        tombstones: h(H_TOMBSTONES),
        arena_len: h(H_ARENA_LEN),
        arena_used: h(H_ARENA_USED),
        file_len: h(H_FILE_LEN),
        patterns: h(H_PATTERNS),
    }
}

/// The checksum of the static header fields: SipHash-1-3, key (0, 0), over bytes
/// `0..STATIC_HEADER_LEN`.
pub(crate) fn header_checksum(words: &[AtomicU64]) -> u64 {
    let mut bytes = [0u8; STATIC_HEADER_LEN];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&load(words, i * 8).unwrap_or(0).to_le_bytes());
    }
    hash_key(0, 0, &bytes)
}
