//! Building a generation of the table from the store, and growing the table without stopping
//! the writes.
//!
//! Every build streams the store's entries in key order into the new file ([`fill`]); nothing
//! is collected, so memory stays flat whatever the table's size. A first build or a
//! replace-all reads one snapshot, sized by one pass over it ([`sizing`]) before filling it.
//!
//! A growth ([`Growth`]) runs beside the engine:
//!
//! 1. When the table wants to grow (its index half full, or two thirds of its arena used), the
//!    engine starts it between two groups: every change committed so far is in the table.
//! 2. A thread creates the next generation's file (same hash key, twice the index slots if the
//!    index filled up, room for twice the live records), fills it from the store read in
//!    pieces of 10,000 entries, each under its own short read transaction
//!    ([`Store::pieces`]), and fsyncs it. Meanwhile the engine goes on committing and
//!    publishing into the current table, which still has room (it grows in place only if it
//!    fills up first), and records the host of every change it publishes: an entry the thread
//!    read before or after its change is copied over in step 3 either way. (One snapshot held
//!    for the whole fill made the store keep every page freed by the commits meanwhile and
//!    free them all in the first commit after it: a 35–80 ms write at 3M hosts, more at 10M.)
//! 3. When the thread is done, the engine copies the recorded hosts' entries from the current
//!    table into the new one (or deletes them there), in slices of a few milliseconds after
//!    each group, until none is left.
//! 4. Between two groups, with nothing left to copy, it renames the new file over the path and
//!    marks the current one superseded (`TableWriter::install`). Every change acknowledged so
//!    far is in both files; readers move over at their next lookup.
//!
//! No write waits for steps 2 and 3 beyond the slice after its group; step 4 is a rename. A
//! growth is abandoned (its thread cancelled and waited for, its file removed) by a replace-all,
//! a rebuild, a store failure or the engine's stop, and retried later after a failure. The
//! thread holds no table lock: the new generation takes the current one's at install.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::route;
use shm_layout::{record_words_of, Host, NextGeneration, NextSpec, Sizing, TableWriter};

use crate::store::{Snapshot, Store, StoreError};

/// Why a build failed: the store could not be read, or the file not written.
#[derive(Debug)]
pub(crate) enum BuildError {
    Store(StoreError),
    Table(shm_layout::WriteError),
    /// The growth was abandoned.
    Cancelled,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Store(e) => write!(f, "reading the store: {e}"),
            BuildError::Table(e) => write!(f, "writing the table: {e}"),
            BuildError::Cancelled => f.write_str("abandoned"),
        }
    }
}

/// The size of a generation holding `snapshot`'s entries: one pass over it.
pub(crate) fn sizing(snapshot: &dyn Snapshot) -> Result<Sizing, StoreError> {
    let mut s = Sizing::default();
    snapshot.for_each(&mut |h, b| {
        s.entries += 1;
        // An entry that does not decode is skipped by `fill`; it needs no room.
        if let Ok(route) = route::decode(b) {
            s.record_words += record_words_of(h, &route);
        }
        true
    })?;
    Ok(s)
}

/// Upserts every entry of `snapshot` into `next`, in key order, until `cancel` is set. An
/// entry that no longer parses (a store written by a version with looser rules) is skipped
/// with a warning rather than keeping the table from being built.
pub(crate) fn fill(
    next: &mut NextGeneration,
    snapshot: &dyn Snapshot,
    cancel: &AtomicBool,
) -> Result<(), BuildError> {
    let mut failed = None;
    snapshot
        .for_each(&mut |h, b| {
            match (Host::parse(h), route::decode(b)) {
                (Ok(host), Ok(route)) => {
                    if let Err(e) = next.upsert(&host, &route) {
                        failed = Some(e);
                        return false;
                    }
                }
                _ => tracing::warn!(host = h, backend = b, "skipping an invalid stored entry"),
            }
            !cancel.load(Ordering::Relaxed)
        })
        .map_err(BuildError::Store)?;
    match failed {
        Some(e) => Err(BuildError::Table(e)),
        None if cancel.load(Ordering::Relaxed) => Err(BuildError::Cancelled),
        None => Ok(()),
    }
}

/// A growth in progress (see the module docs). Dropping it abandons it and waits for its
/// thread, so that nothing of it (its store reads, its file) outlives it.
pub(crate) struct Growth {
    /// Set to make the thread stop early.
    cancel: Arc<AtomicBool>,
    /// The thread, joined on drop.
    thread: Option<thread::JoinHandle<()>>,
    /// Where the thread sends the built generation, or why it failed.
    built: mpsc::Receiver<Result<NextGeneration, BuildError>>,
    /// The built generation being brought up to date, once the thread is done.
    next: Option<NextGeneration>,
    /// The hosts changed since the growth started, each followed by `\n`.
    changed: String,
    /// How much of `changed` is copied into `next`.
    copied: usize,
    /// When the growth started, for the log.
    pub started: Instant,
}

/// Where a growth is.
pub(crate) enum Step {
    /// The thread is building, or changes remain to be copied.
    Working,
    /// Complete and up to date: install it now, before the next group.
    Ready(Box<NextGeneration>),
    Failed(BuildError),
}

impl Growth {
    /// Starts building the next generation from `store` on a thread, reading it in pieces
    /// ([`Store::pieces`]): every change committed so far is in `table` and in the store, and
    /// every one from now on is recorded ([`Growth::record`]) and copied over before install,
    /// so an entry the thread reads before or after such a change ends up right either way.
    pub(crate) fn start(table: &TableWriter, store: &dyn Store) -> Result<Growth, BuildError> {
        let spec: NextSpec = table.next_growth().map_err(BuildError::Table)?;
        let snapshot = store.pieces().map_err(BuildError::Store)?;
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, built) = mpsc::channel();
        let stop = cancel.clone();
        let thread = thread::Builder::new()
            .name("set-backend-growth".into())
            .spawn(move || {
                let r = spec
                    .create()
                    .map_err(BuildError::Table)
                    .and_then(|mut next| {
                        fill(&mut next, &*snapshot, &stop)?;
                        drop(snapshot);
                        next.sync().map_err(|e| BuildError::Table(e.into()))?;
                        Ok(next)
                    });
                let _ = tx.send(r);
            })
            .map_err(|e| BuildError::Table(e.into()))?;
        Ok(Growth {
            cancel,
            thread: Some(thread),
            built,
            next: None,
            changed: String::new(),
            copied: 0,
            started: Instant::now(),
        })
    }

    /// Notes that `host` changed in the current table (after the snapshot).
    pub(crate) fn record(&mut self, host: &Host) {
        self.changed.push_str(host.as_str());
        self.changed.push('\n');
    }

    /// Advances for about `budget`: collects the thread's result, then copies recorded changes
    /// from `table` into it.
    pub(crate) fn step(&mut self, table: &TableWriter, budget: Duration) -> Step {
        if self.next.is_none() {
            match self.built.try_recv() {
                Ok(Ok(next)) => self.next = Some(next),
                Ok(Err(e)) => return Step::Failed(e),
                Err(TryRecvError::Empty) => return Step::Working,
                Err(TryRecvError::Disconnected) => return Step::Failed(BuildError::Cancelled),
            }
        }
        let Some(next) = self.next.as_mut() else {
            return Step::Working;
        };
        let t0 = Instant::now();
        let mut n = 0u32;
        while self.copied < self.changed.len() {
            let rest = &self.changed[self.copied..];
            let host = rest.split('\n').next().unwrap_or_default();
            if let Err(e) = next.copy_from(table, host) {
                return Step::Failed(BuildError::Table(e));
            }
            self.copied += host.len() + 1;
            n += 1;
            if n.is_multiple_of(256) && t0.elapsed() >= budget {
                return Step::Working;
            }
        }
        self.changed = String::new();
        self.copied = 0;
        match self.next.take() {
            Some(next) => Step::Ready(Box::new(next)),
            None => Step::Working,
        }
    }
}

impl Drop for Growth {
    fn drop(&mut self) {
        // The thread stops at its next entry and drops its file (a finished one is dropped
        // with `next` or in the channel); the wait is at most the creation or the fsync of the
        // file, which are not interrupted.
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
