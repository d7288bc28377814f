//! The unsafe code of the table around the mapping (the other is the SSE2 value check in
//! `classify`): turning a file mapping into `&[AtomicU64]`.
//!
//! Readers and the writer touch the shared file exclusively through 8-byte atomic loads and
//! stores (see `docs/FORMAT.md`, "Memory model"). Plain reads of bytes another process may be
//! writing would be undefined behaviour, and `memmap2::Mmap` hands out exactly such a `&[u8]`,
//! so the mapping is kept as a raw pointer (`MmapRaw`) and exposed only as a slice of atomics,
//! whose interior mutability makes concurrent access through a shared reference sound.

use std::fs::File;
use std::io;

use crate::sync::AtomicU64;

/// Allocates the blocks of `file`'s first `len` bytes (`posix_fallocate`), so that a full
/// disk is an error here rather than a `SIGBUS` when the writer first stores into a hole of
/// its mapping. File systems without `fallocate` fall back to glibc's emulation.
pub(crate) fn allocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is open for as
    // long as `file` is borrowed.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A shared mapping of a whole table file, viewed as words.
pub(crate) struct Mapping {
    map: memmap2::MmapRaw,
    words: usize,
    /// The index and the arena as word ranges, checked against `words` once (by
    /// [`Mapping::set_regions`]) so that the lookup path takes them without bounds checks.
    index: Region,
    arena: Region,
}

#[derive(Clone, Copy, Default)]
struct Region {
    start: usize,
    len: usize,
}

impl Mapping {
    /// Maps `file` read-only (`PROT_READ`, `MAP_SHARED`): what nginx workers do.
    pub(crate) fn read_only(file: &File) -> io::Result<Mapping> {
        let map = memmap2::MmapOptions::new().map_raw_read_only(file)?;
        Ok(Self::new(map))
    }

    /// Maps `file` read-write and shared: only the writer does this.
    pub(crate) fn read_write(file: &File) -> io::Result<Mapping> {
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        Ok(Self::new(map))
    }

    fn new(map: memmap2::MmapRaw) -> Mapping {
        // mmap returns page-aligned memory, so the start is 8-byte aligned; a trailing partial
        // word is simply not part of the view.
        debug_assert_eq!(map.as_ptr() as usize % std::mem::align_of::<u64>(), 0);
        let words = map.len() / 8;
        Mapping {
            map,
            words,
            index: Region::default(),
            arena: Region::default(),
        }
    }

    /// Records where the index and the arena lie, as `(first word, words)`. False, changing
    /// nothing, if either range is not inside the mapping.
    pub(crate) fn set_regions(&mut self, index: (usize, usize), arena: (usize, usize)) -> bool {
        let inside = |(start, len): (usize, usize)| {
            start.checked_add(len).is_some_and(|end| end <= self.words)
        };
        if !inside(index) || !inside(arena) {
            return false;
        }
        self.index = Region {
            start: index.0,
            len: index.1,
        };
        self.arena = Region {
            start: arena.0,
            len: arena.1,
        };
        true
    }

    /// The index's words (empty until [`Mapping::set_regions`]).
    #[inline]
    pub(crate) fn index(&self) -> &[AtomicU64] {
        self.region(self.index)
    }

    /// The arena's words (empty until [`Mapping::set_regions`]).
    #[inline]
    pub(crate) fn arena(&self) -> &[AtomicU64] {
        self.region(self.arena)
    }

    #[inline]
    fn region(&self, r: Region) -> &[AtomicU64] {
        debug_assert!(r.start + r.len <= self.words);
        // SAFETY: `set_regions`, the only place that stores a region other than the empty
        // default, checked that `start + len <= self.words`, so the range lies inside the part
        // of the mapping that `words()` exposes; the same reasoning as there applies (aligned,
        // valid while `self.map` lives, only ever accessed atomically). The empty default is
        // sound too: the pointer is the start of a live mapping, never null and page-aligned
        // (memmap2 maps one byte for an empty file).
        unsafe {
            std::slice::from_raw_parts((self.map.as_ptr() as *const AtomicU64).add(r.start), r.len)
        }
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The whole mapping as atomic words.
    pub(crate) fn words(&self) -> &[AtomicU64] {
        if self.words == 0 {
            return &[];
        }
        // SAFETY: the pointer is page-aligned (so aligned for AtomicU64) and valid for
        // `self.words * 8 <= len` bytes for as long as `self.map` lives, which the returned
        // borrow cannot outlive. The memory is shared with other processes, which is sound for
        // `AtomicU64` (interior mutability, no `&mut` ever exists), as long as every access is
        // an 8-byte aligned atomic one: the writer and readers of this crate access the file
        // only through this slice. Atomic loads from a PROT_READ mapping are allowed for
        // 8-byte atomics (no read-modify-write is ever issued on a read-only mapping). The
        // file is never truncated while mapped (the writer never shrinks a published file),
        // so the pages stay backed.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.words) }
    }

    /// Flushes dirty pages to the file (msync), for the writer before it publishes.
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Writes back the dirty pages of `len` bytes of `file` (the mapped file) from byte
    /// `offset`, and if `wait`, waits until the disk has them (and the file system has
    /// recorded them as written), without flushing the disk's cache or the file's metadata
    /// (`sync_file_range`): a file being filled goes to the disk in small steps, so that no
    /// one's `fsync` queues behind a large write-back of it. Not durable until an `fsync` of
    /// the file (which then has little left to write).
    #[cfg(target_os = "linux")]
    pub(crate) fn write_back(
        &self,
        file: &File,
        offset: usize,
        len: usize,
        wait: bool,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let range = |v: usize| {
            libc::off64_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        let (offset, len) = (range(offset)?, range(len)?);
        let mut flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE;
        if wait {
            flags |= libc::SYNC_FILE_RANGE_WAIT_AFTER;
        }
        // SAFETY: sync_file_range only reads its integer arguments; the descriptor is open for
        // as long as `file` is borrowed.
        match unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Elsewhere: the pages holding the range are flushed (`msync` `MS_SYNC`, waiting) or
    /// scheduled for write-back (`MS_ASYNC`).
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn write_back(
        &self,
        _file: &File,
        offset: usize,
        len: usize,
        wait: bool,
    ) -> io::Result<()> {
        match wait {
            true => self.map.flush_range(offset, len),
            false => self.map.flush_async_range(offset, len),
        }
    }
}
