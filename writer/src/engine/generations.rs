//! The engine's side of the table's generations: the table opened at start (reopened as is
//! when sealed, else built from the store), a growth tended between groups and installed, a
//! rebuild from the store (replace-all, recovery), and the seal at a clean stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shm_layout::{NextGeneration, TableLock, TableWriter, WriteError, WriterOptions};

use super::{Engine, Op, PublishError, Reply, StartError, GROWTH_RETRY};
use crate::growth::{self, BuildError, Growth, Step};
use crate::store::Store;

/// The table at `path`: reopened as is if it carries the store's seal, else built from the
/// store as the next generation.
pub(super) fn open_table(
    store: &dyn Store,
    path: &std::path::Path,
    opts: &WriterOptions,
) -> Result<TableWriter, StartError> {
    let table_error = |e: WriteError| match e {
        WriteError::Locked(p) => StartError::Locked(p),
        e => StartError::Table(e.to_string()),
    };
    let lock = TableLock::acquire(path).map_err(table_error)?;
    let seal = store.seal().map_err(StartError::Store)?;
    let stored = store.count().map_err(StartError::Store)?;
    let reopened = match stored == seal.entries {
        true => lock.reopen(opts.clone(), &seal),
        false => Err((
            lock,
            format!(
                "the store holds {stored} entries, {} when the table was sealed",
                seal.entries
            ),
        )),
    };
    let lock = match reopened {
        Ok(table) => {
            tracing::info!("the table file matches the store: reopened as is");
            return Ok(table);
        }
        Err((lock, why)) => {
            tracing::info!(%why, "building the table from the store");
            lock
        }
    };
    let build = |lock: TableLock| -> Result<NextGeneration, PublishError> {
        let snapshot = store.snapshot()?;
        let mut next = lock
            .begin(opts.clone(), growth::sizing(&*snapshot)?)
            .map_err(|e| PublishError::table(&e))?;
        growth::fill(&mut next, &*snapshot, &AtomicBool::new(false))?;
        Ok(next)
    };
    let next = build(lock).map_err(|e| StartError::Table(e.to_string()))?;
    next.publish().map_err(table_error)
}

impl Engine {
    /// Starts a growth when the table wants one, or advances the one in progress for about
    /// `budget`, installing it once it is complete.
    pub(super) fn tend_growth(&mut self, budget: Duration) {
        let t0 = Instant::now();
        let growing = self.growth.is_some();
        self.grow(budget);
        if growing || self.growth.is_some() {
            // What a write queued meanwhile waited for: the longest such pause is a metric.
            let us = t0.elapsed().as_micros() as u64;
            self.metrics
                .growth_pause_max_us
                .fetch_max(us, Ordering::Relaxed);
        }
    }

    fn grow(&mut self, budget: Duration) {
        let Some(table) = self.table.as_mut() else {
            return;
        };
        if !self.metrics.table_in_sync.load(Ordering::Relaxed) {
            return;
        }
        let Some(g) = self.growth.as_mut() else {
            if table.wants_growth() && Instant::now() >= self.growth_after {
                match Growth::start(table, &*self.store) {
                    Ok(g) => {
                        tracing::info!(entries = table.len(), "table growth started");
                        self.growth = Some(g);
                        self.metrics.table_growing.store(true, Ordering::Relaxed);
                    }
                    Err(e) => self.growth_failed(e),
                }
            }
            return;
        };
        match g.step(table, budget) {
            Step::Working => {}
            Step::Ready(next) => {
                let started = g.started;
                self.growth = None;
                self.metrics.table_growing.store(false, Ordering::Relaxed);
                match table.install(*next) {
                    Ok(retired) => {
                        // The directory's fsync and the old file's unmapping, off this thread.
                        let _ = std::thread::Builder::new()
                            .name("set-backend-retire".into())
                            .spawn(move || {
                                if let Err(e) = retired.finish() {
                                    tracing::warn!(error = %e, "cannot sync the table's directory");
                                }
                            });
                        self.metrics.set_table(&table.stats());
                        self.metrics.table_growths.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            generation = table.generation(),
                            entries = table.len(),
                            took = ?started.elapsed(),
                            "table grown into a new generation"
                        );
                    }
                    Err(e) => self.growth_failed(BuildError::Table(e)),
                }
            }
            Step::Failed(e) => {
                self.growth = None;
                self.growth_failed(e);
            }
        }
    }

    fn growth_failed(&mut self, e: BuildError) {
        if let BuildError::Table(WriteError::Io(io)) = &e {
            if io.kind() == std::io::ErrorKind::InvalidData {
                // A damaged record of the current table: rebuilt from the store at the next
                // heartbeat, not grown.
                tracing::error!(error = %e, "the table is damaged; rebuilding it from the store");
                self.metrics.table_in_sync.store(false, Ordering::Relaxed);
            }
        }
        tracing::warn!(error = %e, "table growth failed; retried later");
        self.metrics.table_growing.store(false, Ordering::Relaxed);
        self.growth_after = Instant::now() + GROWTH_RETRY;
    }

    /// At a clean stop: makes the table durable and records its seal in the store and the
    /// table, so that the next start reopens it as is. Skipped when the table may not match
    /// the store.
    pub(super) fn seal(&mut self) {
        self.drop_growth();
        if self.store_failed || !self.metrics.table_in_sync.load(Ordering::Relaxed) {
            return;
        }
        let Some(table) = self.table.as_mut() else {
            return;
        };
        let Some(id) = random_seal() else {
            tracing::warn!("no random number for the table's seal; the next start rebuilds it");
            return;
        };
        let store = &self.store;
        match table.seal(id, |seal| store.set_seal(seal)) {
            Ok(()) => tracing::info!("table sealed: the next start reopens it as is"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot seal the table; the next start rebuilds it")
            }
        }
    }

    /// Replaces the table with a new generation built from the store. The table lock stays
    /// held when there is a table to replace.
    pub(super) fn rebuild_table(&mut self) -> Result<(), PublishError> {
        self.drop_growth();
        let built = self.build_from_store();
        match built {
            Ok(()) => {
                if let Some(t) = self.table.as_ref() {
                    t.heartbeat();
                    self.metrics.set_table(&t.stats());
                }
                self.metrics.table_in_sync.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild the table from the store");
                self.metrics.table_in_sync.store(false, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }
    /// A new generation (with a new hash key) streamed from a store snapshot, published in
    /// place of the current table.
    fn build_from_store(&mut self) -> Result<(), PublishError> {
        let snapshot = self.store.snapshot()?;
        let sizing = growth::sizing(&*snapshot)?;
        let table_error = |e: WriteError| PublishError::table(&e);
        let mut next = match self.table.as_ref() {
            Some(table) => table.next_generation(sizing, true).and_then(|s| s.create()),
            None => TableLock::acquire(&self.table_path)
                .and_then(|lock| lock.begin(self.opts.clone(), sizing)),
        }
        .map_err(table_error)?;
        growth::fill(&mut next, &*snapshot, &AtomicBool::new(false))?;
        drop(snapshot);
        match self.table.as_mut() {
            Some(table) => table
                .install(next)
                .and_then(|r| Ok(r.finish()?))
                .map_err(table_error),
            None => {
                self.table = Some(next.publish().map_err(table_error)?);
                Ok(())
            }
        }
    }

    /// Abandons the growth in progress, if any, and waits for its thread (which holds a store
    /// snapshot: a store cannot be reopened under it).
    pub(super) fn drop_growth(&mut self) {
        if self.growth.take().is_some() {
            self.metrics.table_growing.store(false, Ordering::Relaxed);
        }
    }

    /// Notes the hosts a published group changed, for the growth in progress.
    pub(super) fn record_for_growth(&mut self, group: &[(Op, Reply)]) {
        let Some(g) = self.growth.as_mut() else {
            return;
        };
        for (op, _) in group {
            match op {
                Op::Upsert(h, _) | Op::Delete(h) => g.record(h),
                Op::Batch { upserts, deletes }
                | Op::Follow {
                    upserts, deletes, ..
                } => {
                    deletes.iter().for_each(|h| g.record(h));
                    upserts.iter().for_each(|(h, _)| g.record(h));
                }
                // Published by a rebuild, which abandons the growth.
                Op::ReplaceAll(_) => {}
            }
        }
    }
}

/// A nonzero random number from the kernel, or none if it cannot be read (then no seal: a
/// constant one would let a table from another store or an older stop pass for this one).
fn random_seal() -> Option<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .ok()?;
    Some(u64::from_le_bytes(b).max(1))
}
