//! The file-system side of generations: publishing by rename, directory syncs, leftovers of
//! earlier runs, names, sizes, and the random hash key of a new table.

use super::*;

/// Makes `t` the file at `path`: flush and fsync it (when `sync`), then rename it over `path`.
/// Once this returns `Ok`, readers opening `path` get `t`.
pub(super) fn publish(t: &mut Layout, path: &Path, sync: bool) -> io::Result<()> {
    if sync {
        t.map.flush()?;
        t.file.sync_all()?;
    }
    fs::rename(&t.path, path)?;
    t.path = path.to_path_buf();
    Ok(())
}

/// fsyncs the directory holding `path`, so that a rename into it survives a machine crash.
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// Removes `<path>.<generation>-<n>.tmp` (and the older `<path>.<n>.tmp`) files left by a
/// writer that died while building a generation.
/// Called with the lock held, so no other writer is building one.
pub(super) fn remove_stale_tmp(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let f = e.file_name();
        let Some(f) = f.to_str() else { continue };
        let stale = f
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b'-'));
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The generation of the valid table at `path` (0 if none) and a writable mapping of it, to
/// mark it superseded once the next generation has been renamed over it.
pub(super) fn open_previous(path: &Path) -> (u64, Option<Mapping>) {
    let Ok(table) = Table::open(path) else {
        return (0, None);
    };
    let map = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|f| Mapping::read_write(&f))
        .ok()
        .filter(|m| load(m.words(), H_GENERATION) == Some(table.generation()));
    (table.generation(), map)
}

/// Index slots for `entries`, a power of two at least 1.5 times `entries` (the writer grows the
/// index again when entries and tombstones pass three quarters of it).
pub(super) fn capacity_for(entries: u64, min: u64) -> usize {
    let want = (entries + entries / 2 + 1).max(min).max(MIN_CAPACITY);
    want.next_power_of_two() as usize
}

/// Index slots and arena words for a first build from a known list of entries.
pub(super) fn exact_size<B: Routing>(
    entries: &[(Host, B)],
    opts: &WriterOptions,
) -> (usize, usize) {
    let need: usize = entries
        .iter()
        .map(|(h, b)| b.record_words(h.as_str().len()))
        .sum();
    (
        capacity_for(entries.len() as u64, opts.min_capacity),
        need + need / 4 + 4096,
    )
}

/// `<path>.<generation>-<n>.tmp`, where a generation is built before it is published: `n`
/// counts the files this process made, so that a generation built in the background and one
/// built in place never share a name.
pub(super) fn tmp_path(path: &Path, generation: u64) -> PathBuf {
    static MADE: TmpCounter = TmpCounter::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    sibling(path, &format!(".{generation}-{n}.tmp"))
}

/// `<path><suffix>` in the same directory (so a rename is atomic).
pub(super) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh 128-bit SipHash key from the kernel.
pub(super) fn random_key() -> (u64, u64) {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Err(e) = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        panic!("cannot read /dev/urandom for the table's hash key: {e}");
    }
    (
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..].try_into().unwrap()),
    )
}
