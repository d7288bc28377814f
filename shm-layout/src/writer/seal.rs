//! The seal of a cleanly stopped table ([`TableWriter::seal`]) and the reopening of a sealed
//! file as is ([`TableLock::reopen`]).
//!
//! A seal is a number the owner draws and records in its store, with the entry count and a
//! digest of the index and the used arena ([`Seal`]). A file is reopened only if its header
//! carries that number and its index and arena still have that digest, so a record damaged
//! after the stop (bit rot, a stray write, a restore of a damaged copy) makes the owner build
//! the table again instead of serving it.

use super::*;

/// What a clean stop records about the file, in the file's header (`id`) and in the owner's
/// store (all of it): what [`TableLock::reopen`] checks the file against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seal {
    /// A random non-zero number; 0 means no seal.
    pub id: u64,
    /// Live entries in the file.
    pub entries: u64,
    /// CRC-32 of the index (high half) and of the arena up to its bump pointer (low half).
    pub digest: u64,
}

/// What a sealed file holds besides its layout: arena end, free words, entries, tombstones.
type Sealed = (Layout, usize, usize, u64, u64);

/// The words `at..at + len` of `t`'s file, little-endian, through a CRC-32 (SIMD where the CPU
/// has it: several GB/s, a fraction of a second for a table of ten million entries).
fn crc_of(t: &Layout, at: usize, len: usize) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = [0u8; 8 * 1024];
    for chunk in t.words()[at..at + len].chunks(1024) {
        for (b, w) in buf.chunks_exact_mut(8).zip(chunk) {
            b.copy_from_slice(&word(w).to_le_bytes());
        }
        crc.update(&buf[..chunk.len() * 8]);
    }
    crc.finalize()
}

/// The digest of the index and of the arena's first `arena_end` words.
fn digest(t: &Layout, arena_end: usize) -> u64 {
    let index = crc_of(t, t.index_at, t.geo.capacity);
    let arena = crc_of(t, t.arena_at, arena_end);
    (index as u64) << 32 | arena as u64
}

impl TableLock {
    /// The table at the path as it is, if it is a valid, current file whose header carries
    /// `seal.id` (non-zero) from [`TableWriter::seal`], whose index agrees with its counters
    /// and with `seal.entries`, and whose index and arena still have `seal.digest`; otherwise
    /// the lock back and why not, to build a new generation instead. Accepted, the file no
    /// longer carries the seal, durably, before any change is made to it.
    pub fn reopen(
        self,
        opts: WriterOptions,
        seal: &Seal,
    ) -> Result<TableWriter, (TableLock, String)> {
        let (t, bump, free_words, entries, tombstones) = match self.sealed(seal) {
            Ok(s) => s,
            Err(why) => return Err((self, why)),
        };
        // The mode asked for now, as a build would give it.
        let _ = t
            .file
            .set_permissions(fs::Permissions::from_mode(opts.mode));
        // From now on the file may change: only the next clean stop seals it again. Made
        // durable now, so that no later state of the file can carry this seal.
        store(t.words(), H_SEAL, 0, Ordering::Release);
        if opts.sync {
            if let Err(e) = t.map.flush().and_then(|()| t.file.sync_data()) {
                return Err((self, format!("cannot clear its seal: {e}")));
            }
        }
        Ok(TableWriter {
            path: self.path,
            // Before `t` moves in.
            patterns: load(t.words(), H_PATTERNS).unwrap_or(0),
            t,
            bump,
            // Freed records are not listed in the file: their space waits for the next
            // generation (it is counted, so a compaction still sees it).
            free: HashMap::new(),
            free_words,
            entries,
            tombstones,
            published: true,
            opts,
            buf: Vec::new(),
            lock: Some(self.lock),
        })
    }

    /// The state of the file at the path if it is sealed with `seal` and consistent.
    fn sealed(&self, seal: &Seal) -> Result<Sealed, String> {
        let table = Table::open(&self.path).map_err(|e| e.to_string())?;
        let t = Layout::open_published(&self.path, &table).map_err(|e| e.to_string())?;
        let h = |off| load(t.words(), off).unwrap_or(0);
        if seal.id == 0 || h(H_SEAL) != seal.id {
            return Err(format!("its seal {:#x} is not {:#x}", h(H_SEAL), seal.id));
        }
        if h(H_SUPERSEDED) != 0 {
            return Err("it is marked superseded".into());
        }
        let end = h(H_SEAL_ARENA_END) as usize;
        let used = h(H_ARENA_USED) as usize / 8;
        let (entries, tombstones) = (h(H_ENTRIES), h(H_TOMBSTONES));
        if end > t.arena_words || used > end {
            return Err("its arena counters are out of range".into());
        }
        if entries != seal.entries {
            return Err(format!(
                "it holds {entries} entries, {} when it was sealed",
                seal.entries
            ));
        }
        let (mut live, mut tombs) = (0u64, 0u64);
        for i in 0..t.geo.capacity {
            match t.slot(i) {
                SLOT_EMPTY => {}
                SLOT_TOMBSTONE => tombs += 1,
                w if (w & SLOT_OFFSET_MASK) as usize >= end => {
                    return Err(format!("slot {i} points past the arena's end"));
                }
                _ => live += 1,
            }
        }
        if (live, tombs) != (entries, tombstones) {
            return Err(format!(
                "its index holds {live} entries and {tombs} tombstones, its header says \
                 {entries} and {tombstones}"
            ));
        }
        let found = digest(&t, end);
        if found != seal.digest {
            return Err(format!(
                "its index or records changed since it was sealed (digest {found:#x}, sealed \
                 {:#x})",
                seal.digest
            ));
        }
        Ok((t, end, end - used, entries, tombstones))
    }
}

impl TableWriter {
    /// Makes the whole file durable, lets `commit` record the [`Seal`] (`id`, with the entry
    /// count and the digest of the file) elsewhere (the owner's store), then writes `id` into
    /// the header and makes that durable too: from then on [`TableLock::reopen`] with the same
    /// seal accepts the file as is. Whatever step fails, the file is not reopened with this
    /// seal.
    pub fn seal<E: From<io::Error>>(
        &mut self,
        id: u64,
        commit: impl FnOnce(&Seal) -> Result<(), E>,
    ) -> Result<(), E> {
        self.sync_counters();
        self.t.sync()?;
        let seal = Seal {
            id,
            entries: self.entries,
            digest: digest(&self.t, self.bump),
        };
        commit(&seal)?;
        self.t.set_counter(H_SEAL_ARENA_END, self.bump as u64);
        store(self.t.words(), H_SEAL, id, Ordering::Release);
        self.t.sync()?;
        Ok(())
    }
}
