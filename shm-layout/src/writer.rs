//! The write side: the single process that owns a table file.
//!
//! A table is built complete in `<path>.<generation>.tmp`, flushed, and renamed over `<path>`;
//! only then is the previous file marked `superseded`, which tells every reader to map the path
//! again. After that, upserts and deletes change the published file in place, one record and
//! one slot word at a time (see `seqlock`; records are encoded by `record`). When the index gets too full, a probe chain too
//! long, or the arena runs out, the writer builds the next generation the same way. A published
//! file is never truncated or shrunk: readers would die of SIGBUS.
//!
//! Growth can also happen without stopping the writes (the daemon does this): the owner asks
//! [`TableWriter::next_generation`] for a [`NextSpec`], builds the [`NextGeneration`] from it on
//! another thread while it keeps changing the current table in place, then brings it up to
//! date ([`NextGeneration::copy_from`] for every host changed meanwhile) and publishes it with
//! [`TableWriter::install`]. The in-place path above stays as the fallback when the current
//! table fills up before the next one is ready.
//!
//! A cleanly stopped table can be reopened as is instead of being rebuilt: [`TableWriter::seal`]
//! makes the whole file durable and then writes a seal (a number the owner chose, say one its
//! store also recorded) into the header; [`TableLock::reopen`] accepts a file only if its seal
//! is the expected one and its entry count and digest are still those recorded with it
//! ([`Seal`], in `seal.rs`). A record that no longer decodes is an error for the writer,
//! never a panic: its owner rebuilds the table.
//!
//! An exclusive lock on `<path>.lock` keeps a second writer away for the life of a
//! [`TableWriter`] (and of the [`TableLock`] that precedes it).

use crate::format::*;
use crate::host::{is_pattern, Host};
use crate::raw::Mapping;
use crate::reader::{stats_of, Stats, Table};
use crate::record::{self, Meta};
use crate::seqlock::{self, Geometry};
use crate::set::Routing;
use crate::sync::{load, store, word, AtomicU64, Ordering};
use crate::value::Lookup;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64 as TmpCounter;

/// How the writer builds tables.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The smallest index (slots) to create; rounded up to a power of two.
    pub min_capacity: u64,
    /// The probe limit written into every table this writer creates.
    pub max_probe: u64,
    /// Permission bits of the table file: readable by the nginx workers, writable by none of them.
    pub mode: u32,
    /// The SipHash key; random unless given (tests pin it to build identical files).
    pub hash_key: Option<(u64, u64)>,
    /// fsync each new generation before publishing it (on by default; off only for tests that
    /// build many throwaway tables).
    pub sync: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            min_capacity: 1024,
            max_probe: DEFAULT_MAX_PROBE,
            mode: 0o644,
            hash_key: None,
            sync: true,
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Inserted,
    Updated,
    /// The same backend was already stored; nothing was written.
    Unchanged,
}

/// Why a write failed. The table is unchanged when one is returned.
#[derive(Debug)]
pub enum WriteError {
    Io(io::Error),
    /// Another process holds `<path>.lock`.
    Locked(PathBuf),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "{e}"),
            WriteError::Locked(p) => {
                write!(f, "another writer holds {}", p.display())
            }
        }
    }
}

impl std::error::Error for WriteError {}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

mod files;
mod layout;
mod next;
mod seal;
use files::*;
use layout::Layout;
pub use next::{record_words_of, NextGeneration, NextSpec, Retired, Sizing, TableLock};
pub use seal::Seal;

/// What a rebuild is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Grow {
    /// The index is too loaded, or a probe chain too long, for an insert.
    Index,
    /// No free record of the needed size and no room at the end of the arena.
    Arena,
    /// An explicit compaction.
    Neither,
}

/// Where a key is, or where it would go.
enum Probe {
    Found {
        slot: usize,
        rec: usize,
    },
    /// Not present; the first reusable slot within `max_probe`, if any.
    Vacant(Option<usize>),
}

/// The single writer of a table file.
pub struct TableWriter {
    /// The published path readers open.
    path: PathBuf,
    t: Layout,
    /// Next never-used arena word.
    bump: usize,
    /// Freed records by size in words; reused only for records of exactly that size, so record
    /// boundaries (and the sequence word's position) never move.
    free: HashMap<usize, Vec<usize>>,
    /// Words held by freed records.
    free_words: usize,
    entries: u64,
    tombstones: u64,
    /// Live keys that are patterns (`*.…`, `*`), published in the header's `patterns` word so
    /// that readers of a table without any skip the pattern walk.
    patterns: u64,
    /// False while the first generation is being filled under its temporary name.
    published: bool,
    opts: WriterOptions,
    /// Scratch for encoding records.
    buf: Vec<u64>,
    /// Held for the writer's life; dropping it releases the lock. `None` in a generation
    /// still being built from a [`NextSpec`] (on any thread, holding no lock), which takes
    /// the current writer's at install.
    lock: Option<File>,
}

impl TableWriter {
    /// Inserts or replaces the backend of `host`. O(1); grows the table into a new generation
    /// when it must.
    pub fn upsert(&mut self, host: &Host, backend: &impl Routing) -> Result<Upserted, WriteError> {
        let key = host.table_key();
        let hash = self.t.geo.hash.of(key);
        let mut buf = std::mem::take(&mut self.buf);
        backend.encode_record(&mut buf, hash, key);
        let r = self.upsert_encoded(key, hash, &buf);
        self.buf = buf;
        r
    }

    fn upsert_encoded(
        &mut self,
        key: &[u8],
        hash: u64,
        data: &[u64],
    ) -> Result<Upserted, WriteError> {
        let words = 1 + data.len();
        loop {
            match self.probe(key, hash)? {
                Probe::Found { slot, rec } => {
                    let old = self.t.meta(rec)?;
                    if (0..data.len()).all(|i| self.t.arena_word(rec + 1 + i) == data[i])
                        && old.words == words
                    {
                        return Ok(Upserted::Unchanged);
                    }
                    let Some(new) = self.alloc(words) else {
                        self.rebuild(Grow::Arena, words)?;
                        continue;
                    };
                    seqlock::write_record(self.t.arena(), new, data);
                    seqlock::publish(self.t.index(), slot, record::slot_word(hash, new));
                    self.release(rec, old.words);
                    self.sync_counters();
                    return Ok(Upserted::Updated);
                }
                Probe::Vacant(slot) => {
                    let reuses_tombstone = slot.is_some_and(|s| self.t.slot(s) == SLOT_TOMBSTONE);
                    let over_load = !reuses_tombstone
                        && (self.entries + self.tombstones + 1) * 4
                            > self.t.geo.capacity as u64 * 3;
                    let Some(slot) = slot.filter(|_| !over_load) else {
                        self.rebuild(Grow::Index, words)?;
                        continue;
                    };
                    let Some(new) = self.alloc(words) else {
                        self.rebuild(Grow::Arena, words)?;
                        continue;
                    };
                    seqlock::write_record(self.t.arena(), new, data);
                    seqlock::publish(self.t.index(), slot, record::slot_word(hash, new));
                    self.entries += 1;
                    if reuses_tombstone {
                        self.tombstones -= 1;
                    }
                    if is_pattern(key) {
                        self.set_patterns(self.patterns + 1);
                    }
                    self.sync_counters();
                    return Ok(Upserted::Inserted);
                }
            }
        }
    }

    /// Removes `host`; returns whether it was present. The slot becomes a tombstone.
    pub fn delete(&mut self, host: &Host) -> Result<bool, WriteError> {
        let key = host.table_key();
        let hash = self.t.geo.hash.of(key);
        self.delete_key(key, hash)
    }

    fn delete_key(&mut self, key: &[u8], hash: u64) -> Result<bool, WriteError> {
        match self.probe(key, hash)? {
            Probe::Found { slot, rec } => {
                let words = self.t.meta(rec)?.words;
                seqlock::publish(self.t.index(), slot, SLOT_TOMBSTONE);
                self.release(rec, words);
                self.entries -= 1;
                self.tombstones += 1;
                if is_pattern(key) {
                    self.set_patterns(self.patterns - 1);
                }
                self.sync_counters();
                Ok(true)
            }
            Probe::Vacant(_) => Ok(false),
        }
    }

    /// The backend stored for `host`, read the way a reader would.
    pub fn get(&self, host: &Host) -> Option<crate::Value> {
        match seqlock::lookup(
            &self.t.geo,
            self.t.index(),
            self.t.arena(),
            host.table_key(),
        ) {
            Lookup::Hit(v) => Some(v),
            _ => None,
        }
    }

    /// Rebuilds the table into a new generation now (dropping tombstones and freed records).
    pub fn compact(&mut self) -> Result<(), WriteError> {
        self.rebuild(Grow::Neither, 0)
    }

    /// Stores the current time in the heartbeat word.
    pub fn heartbeat(&self) {
        store(self.t.words(), H_HEARTBEAT_MS, now_ms(), Ordering::Relaxed);
    }

    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn generation(&self) -> u64 {
        self.t.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> Stats {
        stats_of(self.t.words())
    }

    /// Where `key` is, or where it would go; an error if a record on the way is damaged.
    fn probe(&self, key: &[u8], hash: u64) -> io::Result<Probe> {
        let mask = self.t.geo.capacity - 1;
        let home = hash as usize & mask;
        let tag = tag_of(hash);
        let mut reusable = None;
        for i in 0..self.t.geo.max_probe {
            let slot = (home + i) & mask;
            let w = self.t.slot(slot);
            if w == SLOT_EMPTY {
                return Ok(Probe::Vacant(reusable.or(Some(slot))));
            }
            if w == SLOT_TOMBSTONE {
                reusable = reusable.or(Some(slot));
                continue;
            }
            if w >> TAG_SHIFT == tag {
                let rec = (w & SLOT_OFFSET_MASK) as usize;
                let m = self.t.meta(rec)?;
                if m.hash == hash
                    && m.key_len == key.len()
                    && (0..words_for(key.len()))
                        .all(|i| self.t.arena_word(m.key_at + i) == record::chunk(key, i))
                {
                    return Ok(Probe::Found { slot, rec });
                }
            }
        }
        Ok(Probe::Vacant(reusable))
    }

    fn alloc(&mut self, words: usize) -> Option<usize> {
        if let Some(rec) = self.free.get_mut(&words).and_then(Vec::pop) {
            self.free_words -= words;
            return Some(rec);
        }
        if self.bump + words <= self.t.arena_words {
            let rec = self.bump;
            self.bump += words;
            return Some(rec);
        }
        None
    }

    fn release(&mut self, rec: usize, words: usize) {
        self.free.entry(words).or_default().push(rec);
        self.free_words += words;
    }

    /// Publishes a new pattern count, after the slot store that changed it (a reader that sees
    /// the old count sees the table as it was before that write).
    fn set_patterns(&mut self, n: u64) {
        self.patterns = n;
        store(self.t.words(), H_PATTERNS, n, Ordering::Release);
    }

    fn sync_counters(&self) {
        self.t.set_counter(H_ENTRIES, self.entries);
        self.t.set_counter(H_TOMBSTONES, self.tombstones);
        self.t
            .set_counter(H_ARENA_USED, ((self.bump - self.free_words) * 8) as u64);
    }

    /// Builds the next generation with room for one more entry and a record of `extra_words`,
    /// copies every live record into it, and publishes it (or, before the first publication,
    /// just switches to it). The index doubles only when it is what ran out and tombstones are
    /// not the cause; the arena gets half again the live records, so a run of inserts rebuilds
    /// O(log n) times.
    fn rebuild(&mut self, grow: Grow, extra_words: usize) -> Result<(), WriteError> {
        let live_words = self.bump - self.free_words;
        let current = self.t.geo.capacity;
        let needed = capacity_for(self.entries + 1, self.opts.min_capacity);
        let mut capacity = match grow {
            // Tombstones are the cause when they are a quarter of the entries or more; with
            // none (`entries / 4` is 0 below 4 entries) the index itself is what ran out.
            Grow::Index if self.tombstones * 4 <= self.entries => needed.max(current * 2),
            Grow::Index | Grow::Neither => needed,
            Grow::Arena => needed.max(current),
        };
        let arena_words = live_words + live_words / 2 + extra_words + 4096;
        loop {
            let generation = self.t.generation + 1;
            let tmp = tmp_path(&self.path, generation);
            let mut next = Layout::create(
                tmp,
                capacity,
                arena_words,
                generation,
                self.t.geo.hash.keys(),
                &self.opts,
            )?;
            let copied = self.copy_into(&next).inspect_err(|_| {
                let _ = fs::remove_file(&next.path);
            })?;
            let Some(bump) = copied else {
                // A probe chain would exceed max_probe: try a larger index.
                let _ = fs::remove_file(&next.path);
                capacity *= 2;
                continue;
            };
            next.set_counter(H_ENTRIES, self.entries);
            next.set_counter(H_TOMBSTONES, 0);
            next.set_counter(H_PATTERNS, self.patterns);
            next.set_counter(H_ARENA_USED, (bump * 8) as u64);
            if self.published {
                // Until the rename succeeds nothing has changed: on failure the current table
                // stays the published one and the writer keeps using it.
                if let Err(e) = publish(&mut next, &self.path, self.opts.sync) {
                    let _ = fs::remove_file(&next.path);
                    return Err(e.into());
                }
            }
            let old = std::mem::replace(&mut self.t, next);
            self.bump = bump;
            self.free.clear();
            self.free_words = 0;
            self.tombstones = 0;
            if self.published {
                store(old.words(), H_SUPERSEDED, 1, Ordering::Release);
                self.heartbeat();
                if self.opts.sync {
                    sync_dir(&self.path)?;
                }
            } else {
                let _ = fs::remove_file(&old.path);
            }
            return Ok(());
        }
    }

    /// Copies every live record of the current table into `next` (same hash key). Returns the
    /// arena words used, or `None` if an entry could not be placed within `max_probe`.
    fn copy_into(&self, next: &Layout) -> io::Result<Option<usize>> {
        let mask = next.geo.capacity - 1;
        let mut bump = 0;
        let mut data = Vec::new();
        for s in 0..self.t.geo.capacity {
            let w = self.t.slot(s);
            if w == SLOT_EMPTY || w == SLOT_TOMBSTONE {
                continue;
            }
            let rec = (w & SLOT_OFFSET_MASK) as usize;
            let m = self.t.meta(rec)?;
            let home = m.hash as usize & mask;
            let Some(slot) = (0..next.geo.max_probe)
                .map(|i| (home + i) & mask)
                .find(|&slot| next.slot(slot) == SLOT_EMPTY)
            else {
                return Ok(None);
            };
            data.clear();
            data.extend((1..m.words).map(|i| self.t.arena_word(rec + i)));
            seqlock::write_record(next.arena(), bump, &data);
            seqlock::publish(next.index(), slot, record::slot_word(m.hash, bump));
            bump += m.words;
        }
        Ok(Some(bump))
    }
}
