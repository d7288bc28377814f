//! One generation's file as the writer holds it: created at its temporary name or opened
//! once published, mapped for writing, with its geometry; the raw words and record headers.

use super::*;

/// One mapped table file and its geometry.
pub(super) struct Layout {
    pub(super) map: Mapping,
    pub(super) file: File,
    /// Where this file is right now: the temporary name until it is published.
    pub(super) path: PathBuf,
    pub(super) geo: Geometry,
    pub(super) index_at: usize,
    pub(super) arena_at: usize,
    pub(super) arena_words: usize,
    pub(super) generation: u64,
}

impl Layout {
    pub(super) fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }
    pub(super) fn index(&self) -> &[AtomicU64] {
        &self.words()[self.index_at..self.index_at + self.geo.capacity]
    }
    pub(super) fn arena(&self) -> &[AtomicU64] {
        &self.words()[self.arena_at..self.arena_at + self.arena_words]
    }
    pub(super) fn slot(&self, i: usize) -> u64 {
        word(&self.index()[i])
    }
    pub(super) fn arena_word(&self, i: usize) -> u64 {
        word(&self.arena()[i])
    }
    /// The decoded header of the record at arena word `rec`. The writer only publishes
    /// well-formed records, so an error means the file was damaged behind its back.
    pub(super) fn meta(&self, rec: usize) -> io::Result<Meta> {
        Meta::decode(rec, self.arena()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the table's record at arena word {rec} is damaged"),
            )
        })
    }

    /// Creates a new file of the given geometry at `path` (unpublished), header written. On
    /// error the file is removed (a failed `fallocate` may keep the blocks it got).
    pub(super) fn create(
        path: PathBuf,
        capacity: usize,
        arena_words: usize,
        generation: u64,
        key: (u64, u64),
        opts: &WriterOptions,
    ) -> io::Result<Layout> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(opts.mode)
            .open(&path)?;
        let arena_offset = HEADER_LEN + capacity * 8;
        let file_len = arena_offset + arena_words * 8;
        let sized = file
            .set_permissions(fs::Permissions::from_mode(opts.mode))
            .and_then(|()| file.set_len(file_len as u64))
            // A hole in the file would turn a full disk into a SIGBUS at the first store.
            .and_then(|()| crate::raw::allocate(&file, file_len as u64))
            .and_then(|()| Mapping::read_write(&file));
        let map = match sized {
            Ok(map) => map,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        let (k0, k1) = key;
        let w = map.words();
        let created = now_ms();
        let max_probe = (opts.max_probe as usize).clamp(1, capacity.min(MAX_PROBE_LIMIT));
        for (off, v) in [
            (H_MAGIC, u64::from_le_bytes(MAGIC)),
            (
                H_VERSION,
                FORMAT_VERSION as u64 | (ENDIAN_MARK as u64) << 32,
            ),
            (H_HEADER_LEN, HEADER_LEN as u64),
            (H_HASH_ID, HASH_SIPHASH13),
            (H_HASH_K0, k0),
            (H_HASH_K1, k1),
            (H_CAPACITY, capacity as u64),
            (H_MAX_PROBE, max_probe as u64),
            (H_INDEX_OFFSET, HEADER_LEN as u64),
            (H_ARENA_OFFSET, arena_offset as u64),
            (H_ARENA_LEN, (arena_words * 8) as u64),
            (H_FILE_LEN, file_len as u64),
            (H_GENERATION, generation),
            (H_CREATED_MS, created),
        ] {
            store(w, off, v, Ordering::Relaxed);
        }
        store(
            w,
            H_CHECKSUM,
            crate::reader::header_checksum(w),
            Ordering::Relaxed,
        );
        Ok(Layout {
            geo: Geometry {
                hash: KeyHash::new(k0, k1),
                capacity,
                max_probe,
            },
            index_at: HEADER_LEN / 8,
            arena_at: arena_offset / 8,
            arena_words,
            generation,
            map,
            file,
            path,
        })
    }

    pub(super) fn set_counter(&self, off: usize, v: u64) {
        store(self.words(), off, v, Ordering::Relaxed);
    }

    /// Renumbers a file that is not published yet (the header checksum follows).
    pub(super) fn set_generation(&mut self, generation: u64) {
        let w = self.words();
        store(w, H_GENERATION, generation, Ordering::Relaxed);
        store(
            w,
            H_CHECKSUM,
            crate::reader::header_checksum(w),
            Ordering::Relaxed,
        );
        self.generation = generation;
    }

    /// The published file at `path`, mapped for writing, with the geometry its header (already
    /// validated by `table`) gives.
    pub(super) fn open_published(path: &Path, table: &Table) -> io::Result<Layout> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let map = Mapping::read_write(&file)?;
        let h = |off| load(map.words(), off).unwrap_or(0);
        if h(H_GENERATION) != table.generation() || h(H_FILE_LEN) != map.len() as u64 {
            return Err(io::Error::other("the file changed while it was opened"));
        }
        Ok(Layout {
            geo: Geometry {
                hash: KeyHash::new(h(H_HASH_K0), h(H_HASH_K1)),
                capacity: h(H_CAPACITY) as usize,
                max_probe: h(H_MAX_PROBE) as usize,
            },
            index_at: h(H_INDEX_OFFSET) as usize / 8,
            arena_at: h(H_ARENA_OFFSET) as usize / 8,
            arena_words: h(H_ARENA_LEN) as usize / 8,
            generation: table.generation(),
            map,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes back `words` words of the file from word `at` and waits for them (not durable
    /// before [`Layout::sync`]; see `Mapping::write_back`).
    pub(super) fn write_back(&self, at: usize, words: usize) -> io::Result<()> {
        self.map.write_back(&self.file, at * 8, words * 8, true)
    }

    /// Starts writing back `words` words of the file from word `at`, without waiting.
    pub(super) fn start_write_back(&self, at: usize, words: usize) -> io::Result<()> {
        self.map.write_back(&self.file, at * 8, words * 8, false)
    }

    /// msync the mapping and fsync the file.
    pub(super) fn sync(&self) -> io::Result<()> {
        self.map.flush()?;
        self.file.sync_all()
    }
}
