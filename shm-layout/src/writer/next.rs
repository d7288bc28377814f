//! The next generation of a table, built while the current one keeps serving: the lock taken
//! before the first generation ([`TableLock`]), the sizing of a
//! generation built from a stream ([`Sizing`]), and the generation under construction
//! ([`NextGeneration`]) with what brings it up to date. `TableWriter::install` is the other
//! half; the seal of a cleanly stopped file and its reopening are in `seal.rs`.

use super::*;

/// How to size a generation built from a stream of entries: the index gets room for the
/// entries twice over (at most half full when published, so that its owner has time to build
/// the next one before this one must grow in place), the arena for the records and half as
/// much again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sizing {
    /// Entries the generation starts with.
    pub entries: u64,
    /// Their records' words in all (see [`record_words_of`]).
    pub record_words: u64,
}

impl Sizing {
    fn capacity(&self, opts: &WriterOptions) -> usize {
        capacity_for(self.entries + self.entries / 3, opts.min_capacity)
    }

    fn arena_words(&self) -> usize {
        let need = self.record_words as usize;
        need + need / 2 + 4096
    }
}

/// The words of the record of one canonical entry (`host` and `backend` as a store keeps
/// them): what a [`Sizing`] adds up.
pub fn record_words_of(host: &str, backend: &impl Routing) -> u64 {
    backend.record_words(host.len()) as u64
}

/// The exclusive right to publish at a path, taken before deciding whether the file there can
/// be reopened ([`TableLock::reopen`]) or a first generation must be built ([`TableLock::begin`]).
pub struct TableLock {
    /// The published path.
    pub(super) path: PathBuf,
    /// The locked `<path>.lock`; dropping it releases the lock.
    pub(super) lock: File,
}

impl TableLock {
    /// Takes `<path>.lock` (failing with [`WriteError::Locked`] if another writer holds it) and
    /// removes temporary files a dead writer left.
    pub fn acquire(path: impl AsRef<Path>) -> Result<TableLock, WriteError> {
        let path = path.as_ref().to_path_buf();
        let lock_path = sibling(&path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(WriteError::Locked(lock_path)),
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        remove_stale_tmp(&path);
        Ok(TableLock { path, lock })
    }

    /// Starts the first generation this writer publishes at the path (the one after the valid
    /// table there, if any), sized by `sizing`; fill it, then [`NextGeneration::publish`] it.
    pub fn begin(self, opts: WriterOptions, sizing: Sizing) -> Result<NextGeneration, WriteError> {
        let capacity = sizing.capacity(&opts);
        self.begin_sized(opts, capacity, sizing.arena_words())
    }

    fn begin_sized(
        self,
        opts: WriterOptions,
        capacity: usize,
        arena_words: usize,
    ) -> Result<NextGeneration, WriteError> {
        let (previous, previous_map) = open_previous(&self.path);
        let key = opts.hash_key.unwrap_or_else(random_key);
        let spec = NextSpec {
            path: self.path,
            lock: Some(self.lock),
            generation: previous + 1,
            key,
            opts,
            capacity,
            arena_words,
        };
        let mut next = spec.create()?;
        next.previous = previous_map;
        Ok(next)
    }
}

/// The generation an install replaced. [`Retired::finish`] makes the rename durable (fsync of
/// the directory) and unmaps the old file: both can take a while for a large table, so the
/// owner may do it on another thread; until then the rename may not survive a power cut (the
/// old file, or the new one, is at the path after reboot: both complete).
#[must_use = "finish it, to make the rename durable"]
pub struct Retired(TableWriter);

impl Retired {
    pub fn finish(self) -> io::Result<()> {
        if self.0.opts.sync {
            sync_dir(&self.0.path)?;
        }
        Ok(())
    }
}

/// Everything needed to create the next generation's file, taken from the current table on the
/// owner's thread so that the file can be created and filled on another one.
pub struct NextSpec {
    /// The published path.
    path: PathBuf,
    /// The lock, for a writer's first generation; none for a later one (it takes the current
    /// writer's at install), so that a thread building it holds no lock.
    lock: Option<File>,
    /// The generation number it gets if the current table does not grow in place meanwhile.
    generation: u64,
    /// The SipHash key.
    key: (u64, u64),
    /// The writer's options.
    opts: WriterOptions,
    /// Index slots.
    capacity: usize,
    /// Arena words.
    arena_words: usize,
}

impl NextSpec {
    /// Creates the (unpublished, empty) file.
    pub fn create(self) -> Result<NextGeneration, WriteError> {
        let tmp = tmp_path(&self.path, self.generation);
        let t = Layout::create(
            tmp,
            self.capacity,
            self.arena_words,
            self.generation,
            self.key,
            &self.opts,
        )?;
        Ok(NextGeneration {
            w: Some(TableWriter {
                path: self.path,
                t,
                bump: 0,
                free: HashMap::new(),
                free_words: 0,
                entries: 0,
                tombstones: 0,
                patterns: 0,
                published: false,
                opts: self.opts,
                buf: Vec::new(),
                lock: self.lock,
            }),
            previous: None,
            synced: false,
            written: (self.generation, 0),
            pacer: Pacer::default(),
        })
    }
}

/// Words written back at a time while a generation is built (1 MiB, at most two ranges in
/// flight: see `Pacer`): about the most of it a commit of the store, an fsync on the same disk,
/// can find queued before it (see [`NextGeneration::sync`]).
const PACE_WORDS: usize = 1 << 17;

/// A generation being built: a complete table file under a temporary name, invisible to
/// readers until it is published. Dropped unpublished, its file is removed.
pub struct NextGeneration {
    /// The writer of the new file; `None` once published.
    w: Option<TableWriter>,
    /// The file it replaces when it is a writer's first, to mark superseded.
    previous: Option<Mapping>,
    /// Whether the file was made durable ([`NextGeneration::sync`]).
    synced: bool,
    /// The generation of the file being filled and the arena words of it written back
    /// already: a file rebuilt in place (a new generation) starts again from its first word.
    written: (u64, usize),
    /// The range being written back.
    pacer: Pacer,
}

/// Writes a file back one range at a time while the next is filled: each range is started
/// when it is full, and the one before it waited for then, so that at most two ranges of the
/// file are in flight at any moment.
#[derive(Default)]
struct Pacer {
    /// The range started last, as (generation of its file, first word, words).
    pending: Option<(u64, usize, usize)>,
}

impl Pacer {
    fn push(&mut self, t: &Layout, at: usize, words: usize) -> io::Result<()> {
        t.start_write_back(at, words)?;
        let previous = self.pending.replace((t.generation, at, words));
        self.wait(t, previous)
    }

    fn finish(&mut self, t: &Layout) -> io::Result<()> {
        let previous = self.pending.take();
        self.wait(t, previous)
    }

    /// Waits for `range` if it is a range of `t` (a file rebuilt in place meanwhile replaced
    /// the one it was in: nothing to wait for).
    fn wait(&self, t: &Layout, range: Option<(u64, usize, usize)>) -> io::Result<()> {
        match range {
            Some((generation, at, words)) if generation == t.generation => t.write_back(at, words),
            _ => Ok(()),
        }
    }
}

impl NextGeneration {
    fn w(&mut self) -> &mut TableWriter {
        self.w
            .as_mut()
            .expect("an unpublished generation has its writer")
    }

    /// Inserts or updates `host`, then writes back the arena filled since the last write-back
    /// once it reaches [`PACE_WORDS`], so that dirty pages never pile up while a generation is
    /// filled (records are appended, so the arena is filled from its start).
    pub fn upsert(&mut self, host: &Host, backend: &impl Routing) -> Result<Upserted, WriteError> {
        let upserted = self.w().upsert(host, backend)?;
        let w = self
            .w
            .as_ref()
            .expect("an unpublished generation has its writer");
        let from = match self.written {
            (generation, words) if generation == w.t.generation => words,
            _ => 0,
        };
        if w.opts.sync && w.bump.saturating_sub(from) >= PACE_WORDS {
            self.pacer.push(&w.t, w.t.arena_at + from, w.bump - from)?;
            self.written = (w.t.generation, w.bump);
        }
        Ok(upserted)
    }

    pub fn delete(&mut self, host: &Host) -> Result<bool, WriteError> {
        self.w().delete(host)
    }

    /// Makes `host`'s entry here what it is in `current` (copied, or deleted if absent there):
    /// how the changes made to the current table while this one was built are carried over.
    /// Both must have the same hash key, as [`TableWriter::next_generation`] gives.
    pub fn copy_from(&mut self, current: &TableWriter, host: &str) -> Result<(), WriteError> {
        let w = self.w();
        if w.t.geo.hash.keys() != current.t.geo.hash.keys() {
            return Err(io::Error::other("the generations have different hash keys").into());
        }
        let key = crate::host::table_key(host);
        let hash = current.t.geo.hash.of(key);
        match current.probe(key, hash)? {
            Probe::Found { rec, .. } => {
                let m = current.t.meta(rec)?;
                let mut data = std::mem::take(&mut w.buf);
                data.clear();
                data.extend((1..m.words).map(|i| current.t.arena_word(rec + i)));
                let r = w.upsert_encoded(key, hash, &data);
                w.buf = data;
                r.map(drop)
            }
            Probe::Vacant(_) => w.delete_key(key, hash).map(drop),
        }
    }

    pub fn len(&self) -> u64 {
        self.w.as_ref().map_or(0, |w| w.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// msync and fsync the file: the bulk of a build made durable off the owner's thread, so
    /// that publishing it later only renames it. The index, written all over while filling, is
    /// written back [`PACE_WORDS`] at a time first (like the arena while it was filled), so
    /// that the final msync and fsync (the header page and the arena filled since the last
    /// [`NextGeneration::upsert`] write-back) have little left.
    pub fn sync(&mut self) -> io::Result<()> {
        let w = self
            .w
            .as_ref()
            .expect("an unpublished generation has its writer");
        if w.opts.sync {
            let (at, len) = (w.t.index_at, w.t.geo.capacity);
            for start in (0..len).step_by(PACE_WORDS) {
                self.pacer
                    .push(&w.t, at + start, PACE_WORDS.min(len - start))?;
            }
            self.pacer.finish(&w.t)?;
            w.t.sync()?;
        }
        self.synced = true;
        Ok(())
    }

    /// Publishes a writer's first generation (from [`TableLock::begin`]) and marks the file it
    /// replaces superseded.
    pub fn publish(mut self) -> Result<TableWriter, WriteError> {
        let mut w = self
            .w
            .take()
            .expect("an unpublished generation has its writer");
        if let Err(e) = publish(&mut w.t, &w.path, w.opts.sync && !self.synced) {
            let _ = fs::remove_file(&w.t.path);
            return Err(e.into());
        }
        w.published = true;
        if let Some(previous) = self.previous.take() {
            store(previous.words(), H_SUPERSEDED, 1, Ordering::Release);
        }
        w.heartbeat();
        if w.opts.sync {
            sync_dir(&w.path)?;
        }
        Ok(w)
    }
}

impl Drop for NextGeneration {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            let _ = fs::remove_file(&w.t.path);
        }
    }
}

/// Building and publishing whole generations.
impl TableWriter {
    /// Builds a table holding `entries` (a later duplicate host wins) and publishes it at
    /// `path` as the generation after the file already there, if any; the previous file is
    /// then marked superseded so readers move over.
    pub fn create<B: Routing>(
        path: impl AsRef<Path>,
        entries: impl IntoIterator<Item = (Host, B)>,
        opts: WriterOptions,
    ) -> Result<TableWriter, WriteError> {
        let entries: Vec<(Host, B)> = entries.into_iter().collect();
        let (capacity, arena_words) = exact_size(&entries, &opts);
        let mut next = TableLock::acquire(path)?.begin_sized(opts, capacity, arena_words)?;
        for (host, backend) in &entries {
            next.upsert(host, backend)?;
        }
        next.publish()
    }

    /// Replaces every entry with `entries` in one step: the next generation is built complete
    /// and published by rename, so readers see the old set or the new one, never a mix. The
    /// lock stays held throughout. On error nothing has changed.
    pub fn replace_all<B: Routing>(
        &mut self,
        entries: impl IntoIterator<Item = (Host, B)>,
    ) -> Result<(), WriteError> {
        let entries: Vec<(Host, B)> = entries.into_iter().collect();
        let mut spec = self.next_generation(Sizing::default(), true)?;
        (spec.capacity, spec.arena_words) = exact_size(&entries, &self.opts);
        let mut next = spec.create()?;
        for (host, backend) in &entries {
            next.upsert(host, backend)?;
        }
        self.install(next)?.finish()?;
        Ok(())
    }

    /// What the next generation will be: sized by `sizing`, with the same hash key (so that
    /// [`NextGeneration::copy_from`] works) unless `new_key` (a new set of entries draws a new
    /// one). Cheap: the file is made by [`NextSpec::create`], on any thread.
    pub fn next_generation(&self, sizing: Sizing, new_key: bool) -> Result<NextSpec, WriteError> {
        let key = match new_key {
            true => self.opts.hash_key.unwrap_or_else(random_key),
            false => self.t.geo.hash.keys(),
        };
        Ok(NextSpec {
            path: self.path.clone(),
            lock: None,
            generation: self.t.generation + 1,
            key,
            opts: self.opts.clone(),
            capacity: sizing.capacity(&self.opts),
            arena_words: sizing.arena_words(),
        })
    }

    /// The next generation of a growth, the same hash key: when the index is what filled up
    /// (and not with tombstones), twice the slots; otherwise enough for the entries at most
    /// half full. Its arena holds the live records twice over.
    pub fn next_growth(&self) -> Result<NextSpec, WriteError> {
        let mut spec = self.next_generation(Sizing::default(), false)?;
        let current = self.t.geo.capacity;
        let index_full = (self.entries + self.tombstones) * 2 > current as u64;
        let sizing = Sizing {
            entries: self.entries,
            record_words: 0,
        };
        spec.capacity = match index_full && self.tombstones * 4 <= self.entries {
            true => current * 2,
            false => sizing.capacity(&self.opts),
        };
        spec.arena_words = 2 * (self.bump - self.free_words) + 4096;
        Ok(spec)
    }

    /// True when the table should be replaced by a larger (or compacted) generation soon: the
    /// index is half full (entries and tombstones), or two thirds of the arena are used.
    /// Writes still fit in place until the index is three quarters full or the arena full
    /// (after a growth: half again the entries), which leaves time to build the next
    /// generation off the writer's thread.
    pub fn wants_growth(&self) -> bool {
        (self.entries + self.tombstones) * 2 > self.t.geo.capacity as u64
            || self.bump * 3 > self.t.arena_words * 2
    }

    /// Publishes `next` (made from [`TableWriter::next_generation`] and brought up to date) in
    /// place of the current table: renumbered if the current one grew in place meanwhile,
    /// renamed over the path, the current file marked superseded. On error nothing has changed.
    pub fn install(&mut self, mut next: NextGeneration) -> Result<Retired, WriteError> {
        let mut w = next
            .w
            .take()
            .expect("an unpublished generation has its writer");
        let generation = self.t.generation + 1;
        let renumbered = w.t.generation != generation;
        if renumbered {
            w.t.set_generation(generation);
        }
        // A renumbering rewrites two words of the header page: not worth an fsync of the
        // whole file on the owner's thread (a torn header fails its checksum, and a writer
        // rebuilds an invalid file at start).
        let sync = w.opts.sync && !next.synced;
        if let Err(e) = publish(&mut w.t, &self.path, sync) {
            let _ = fs::remove_file(&w.t.path);
            return Err(e.into());
        }
        w.published = true;
        w.lock = self.lock.take();
        let old = std::mem::replace(self, w);
        store(old.t.words(), H_SUPERSEDED, 1, Ordering::Release);
        self.heartbeat();
        Ok(Retired(old))
    }
}
