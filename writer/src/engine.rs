//! The engine: the one thread that writes the store and the table file.
//!
//! Request handlers validate their input, then send an [`Op`] here and wait for its outcome.
//! The thread takes the first queued request, drains whatever else is queued (up to
//! [`MAX_GROUP`]), applies the whole group in one `redb` write transaction and commits it
//! (fsync). Only then does it publish each change into the table file (O(1) per change) and
//! answer the requests. So:
//!
//! - a request is acknowledged only after its change is durable, and visible to readers of
//!   the table before the acknowledgement is sent;
//! - concurrent requests share one fsync (group commit): under load the cost of a commit is
//!   spread over every request that arrived while the previous one was running, and a lone
//!   request never waits for company;
//! - a group fails or succeeds as a whole; nothing of a failed group is stored or published.
//!
//! Only after the answers are sent does the engine give a growth in progress a slice of time
//! (see `growth`): when the table fills up, its next generation is built by another thread
//! from a store snapshot while this one keeps committing and publishing into the current
//! generation; the hosts changed meanwhile are copied over, and the new file is renamed into
//! place between two groups. A write waits for a growth only if the current table fills up
//! before the next is ready (it then grows in place, as a last resort).
//!
//! A replace-all rebuilds the table from the store into a new generation (readers switch to
//! it atomically). If the table cannot be updated in place (an I/O error while growing it),
//! the engine rebuilds it from the store too; if that fails, the write is answered with an
//! error, the health check fails, and the next start rebuilds the table.
//!
//! Start: the table file is reopened as is when its seal matches the store's (the last stop
//! was clean and nothing changed since); otherwise it is rebuilt from the store. Order makes
//! every crash safe: a change is committed (clearing the store's seal) before it reaches the
//! table, and a seal is recorded only after the table file is durable, so a table that is
//! behind, damaged or from another store never carries the store's seal.
//!
//! Shutdown: [`EngineHandle::stop`] queues a stop message behind every pending request, so
//! the thread finishes them, writes a last heartbeat, seals the table and exits, releasing
//! the table lock.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use shm_layout::{Host, TableWriter, WriteError, WriterOptions};

use crate::route::Route;
use tokio::sync::oneshot;

mod generations;

use crate::growth::{BuildError, Growth};
use crate::metrics::Metrics;
use crate::model::BatchCounts;
use crate::store::{Change, Fault, SharedStore, StoreError};

/// The most requests committed together. Large enough to amortize an fsync, small enough
/// that the first request of a group does not wait long for the last one's work.
const MAX_GROUP: usize = 512;
/// The least time given to a growth after each group (and while idle): what a lone write may
/// wait behind one.
const GROWTH_SLICE: Duration = Duration::from_millis(10);
/// A followed change set larger than this, and than half the table, is published by a rebuild
/// from the store rather than entry by entry (a first bootstrap of a million hosts).
const FOLLOW_REBUILD_OVER: usize = 4096;
/// How often a growth is tended while no request comes.
const GROWTH_POLL: Duration = Duration::from_millis(5);
/// How long to wait before trying a growth again after one failed (a full disk, say).
const GROWTH_RETRY: Duration = Duration::from_secs(10);

/// A validated change, ready to be stored.
#[derive(Debug)]
pub enum Op {
    Upsert(Host, Route),
    Delete(Host),
    /// All of it or none of it; hosts are distinct (checked by the API).
    Batch {
        /// Entries to create or update.
        upserts: Vec<(Host, Route)>,
        /// Hosts to delete (absent ones are counted, not refused).
        deletes: Vec<Host>,
    },
    /// The store afterwards holds exactly these entries.
    ReplaceAll(Vec<(Host, Route)>),
    /// What the source of truth (etcd, in fleet mode) committed up to `revision`: applied like
    /// a batch, the revision recorded in the same commit. Only the fleet's follower sends it.
    Follow {
        upserts: Vec<(Host, Route)>,
        deletes: Vec<Host>,
        revision: u64,
    },
}

/// What a committed [`Op`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated,
    Deleted,
    Absent,
    Batch(BatchCounts),
    Replaced {
        /// Entries the store holds afterwards.
        entries: u64,
    },
}

/// Why an [`Op`] was not acknowledged.
#[derive(Debug, Clone)]
pub enum EngineError {
    /// The store failed; nothing of the request was stored.
    Store(StoreError),
    /// Committed but not published, and the table could not be rebuilt.
    Publish(PublishError),
    /// The engine has stopped (the daemon is shutting down).
    Stopped,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Store(e) => write!(f, "store: {e}"),
            EngineError::Publish(e) => write!(f, "publish: {e}"),
            EngineError::Stopped => f.write_str("the writer is shutting down"),
        }
    }
}

/// Why a committed change could not be published into the table.
#[derive(Debug, Clone)]
pub struct PublishError {
    /// The kind of failure (a full disk, mostly), decided from the `io::Error`.
    pub kind: Fault,
    /// The error, for the log line.
    message: String,
}

impl PublishError {
    fn table(e: &WriteError) -> PublishError {
        let kind = match e {
            WriteError::Io(io) => Fault::of_io(io),
            WriteError::Locked(_) => Fault::Locked,
        };
        PublishError {
            kind,
            message: e.to_string(),
        }
    }
}

impl From<BuildError> for PublishError {
    fn from(e: BuildError) -> PublishError {
        match e {
            BuildError::Store(e) => e.into(),
            BuildError::Table(e) => PublishError::table(&e),
            BuildError::Cancelled => PublishError {
                kind: Fault::Other,
                message: "the build was abandoned".into(),
            },
        }
    }
}

impl From<StoreError> for PublishError {
    fn from(e: StoreError) -> PublishError {
        PublishError {
            kind: e.kind,
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Where the answer to a request goes.
type Reply = oneshot::Sender<Result<Outcome, EngineError>>;

/// A queued request.
enum Msg {
    Op(Op, Reply),
    Stop,
}

/// The handlers' side of the engine: cheap to clone.
#[derive(Clone)]
pub struct EngineHandle {
    /// The engine thread's queue.
    tx: mpsc::Sender<Msg>,
}

impl EngineHandle {
    /// Queues `op` and waits until it is committed and published.
    pub async fn submit(&self, op: Op) -> Result<Outcome, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Op(op, tx))
            .map_err(|_| EngineError::Stopped)?;
        rx.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// Asks the engine to finish what is queued and stop.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// The engine thread's state.
struct Engine {
    /// The source of truth.
    store: SharedStore,
    /// The published table; `None` only after building it from the store failed.
    table: Option<TableWriter>,
    /// Where the table lives and how to build it, for rebuilds.
    table_path: std::path::PathBuf,
    /// Options for every table this engine builds.
    opts: WriterOptions,
    /// Counters and histograms for `/metrics`.
    metrics: Arc<Metrics>,
    /// How often to refresh the table's heartbeat when idle.
    heartbeat: Duration,
    /// A commit failed: the store must be reopened (redb refuses everything after an I/O
    /// error) before the next write, and the heartbeat retries until it is.
    store_failed: bool,
    /// The next generation being built beside the current one, if the table is growing.
    growth: Option<Growth>,
    /// No growth starts before this instant (set after one failed).
    growth_after: Instant,
}

/// Builds the table from the store (taking the table lock) and starts the engine thread.
/// Fails if another process holds the table.
pub fn start(
    store: SharedStore,
    table_path: std::path::PathBuf,
    opts: WriterOptions,
    metrics: Arc<Metrics>,
    heartbeat: Duration,
) -> Result<(EngineHandle, thread::JoinHandle<()>), StartError> {
    let table = generations::open_table(&*store, &table_path, &opts)?;
    table.heartbeat();
    metrics.set_table(&table.stats());
    let mut engine = Engine {
        store,
        table: Some(table),
        table_path,
        opts,
        metrics,
        heartbeat,
        store_failed: false,
        growth: None,
        growth_after: Instant::now(),
    };
    let (tx, rx) = mpsc::channel();
    let join = thread::Builder::new()
        .name("set-backend-engine".into())
        .spawn(move || engine.run(rx))
        .map_err(|e| StartError::Table(e.to_string()))?;
    Ok((EngineHandle { tx }, join))
}

/// Why the engine could not start.
#[derive(Debug)]
pub enum StartError {
    Store(StoreError),
    /// Another writer holds the table; names its lock file.
    Locked(std::path::PathBuf),
    Table(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Locked(p) => write!(
                f,
                "another writer is publishing this table (it holds {}); stop it first",
                p.display()
            ),
            StartError::Table(e) => write!(f, "cannot build the table: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl Engine {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        let mut group = Vec::new();
        let mut stopping = false;
        let mut last_beat = Instant::now();
        while !stopping {
            // The heartbeat is due every interval, busy or idle.
            if last_beat.elapsed() >= self.heartbeat {
                self.heartbeat();
                last_beat = Instant::now();
            }
            let mut wait = self.heartbeat.saturating_sub(last_beat.elapsed());
            if self.growth.is_some() {
                wait = wait.min(GROWTH_POLL);
            }
            match rx.recv_timeout(wait) {
                Ok(Msg::Op(op, reply)) => group.push((op, reply)),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.tend_growth(GROWTH_SLICE);
                    continue;
                }
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(Msg::Op(op, reply)) => group.push((op, reply)),
                    Ok(Msg::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            let t0 = Instant::now();
            self.process(&mut group);
            // Half the group's own time (at least a slice), so that the changes to copy do not
            // pile up faster than they are copied.
            self.tend_growth(GROWTH_SLICE.max(t0.elapsed() / 2));
        }
        // Anything queued after the stop message gets a clear refusal.
        while let Ok(msg) = rx.try_recv() {
            if let Msg::Op(_, reply) = msg {
                let _ = reply.send(Err(EngineError::Stopped));
            }
        }
        self.heartbeat();
        self.seal();
        tracing::info!("engine stopped");
    }

    fn heartbeat(&mut self) {
        if self.store_failed {
            if let Err(e) = self.reopen_store() {
                tracing::debug!(error = %e, "the store cannot be reopened yet");
            }
        }
        // Out of sync after a failed publication (say, a full disk): retry the rebuild every
        // heartbeat, so the table catches up with the store once the disk has room.
        match &self.table {
            Some(t) if self.metrics.table_in_sync.load(Ordering::Relaxed) => t.heartbeat(),
            _ => {
                let _ = self.rebuild_table();
            }
        }
    }

    /// Reopens the store after a failed commit. The failed commit may have reached the disk
    /// all the same (an error from its last fsync), so the table may now be behind the store:
    /// it is marked out of sync, rebuilt from the store by the next write or heartbeat, and
    /// never sealed before that.
    fn reopen_store(&mut self) -> Result<(), StoreError> {
        self.drop_growth();
        self.store.reopen().inspect(|()| {
            tracing::info!(
                "the store was reopened after an I/O error; the table is rebuilt from it"
            );
            self.store_failed = false;
            self.metrics.store_ok.store(true, Ordering::Relaxed);
            self.metrics.table_in_sync.store(false, Ordering::Relaxed);
        })
    }

    fn process(&mut self, group: &mut Vec<(Op, Reply)>) {
        let n = group.len() as u64;
        let result = if self.store_failed {
            match self.reopen_store() {
                Ok(()) => self.commit(group),
                Err(e) => Err(EngineError::Store(e)),
            }
        } else {
            self.commit(group)
        };
        if let Err(EngineError::Store(e)) = &result {
            if !self.store_failed {
                tracing::error!(error = %e, "the store failed; it is reopened before the next write");
            }
            self.store_failed = true;
            self.metrics.store_ok.store(false, Ordering::Relaxed);
        }
        let result = result.and_then(|outcomes| {
            let t0 = Instant::now();
            self.publish(group)?;
            self.metrics.publish_seconds.observe(t0.elapsed());
            Ok(outcomes)
        });
        self.metrics.commits.fetch_add(1, Ordering::Relaxed);
        if n > 1 {
            self.metrics.grouped_writes.fetch_add(n, Ordering::Relaxed);
        }
        match result {
            Ok(outcomes) => {
                for ((_, reply), outcome) in group.drain(..).zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = n, "write group failed");
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies the group to the store in one durable commit; answers each request's outcome.
    fn commit(&mut self, group: &[(Op, Reply)]) -> Result<Vec<Outcome>, EngineError> {
        let mut changes = Vec::new();
        for (op, _) in group {
            match op {
                Op::Upsert(h, b) => changes.push(put(h, b)),
                Op::Delete(h) => changes.push(Change::Remove(h.as_str())),
                Op::Batch { upserts, deletes } => {
                    changes.extend(deletes.iter().map(|h| Change::Remove(h.as_str())));
                    changes.extend(upserts.iter().map(|(h, b)| put(h, b)));
                }
                Op::Follow {
                    upserts,
                    deletes,
                    revision,
                } => {
                    changes.extend(deletes.iter().map(|h| Change::Remove(h.as_str())));
                    changes.extend(upserts.iter().map(|(h, b)| put(h, b)));
                    changes.push(Change::Revision(*revision));
                }
                Op::ReplaceAll(entries) => {
                    changes.push(Change::Clear);
                    changes.extend(entries.iter().map(|(h, b)| put(h, b)));
                }
            }
        }
        let t0 = Instant::now();
        let applied = self.store.apply(&changes).map_err(EngineError::Store)?;
        if applied.committed {
            self.metrics.commit_seconds.observe(t0.elapsed());
        }
        // Each op's answers, in the order its changes were listed above.
        let mut existed = applied.existed.into_iter();
        let mut next = || existed.next().unwrap_or(false);
        let outcomes = group
            .iter()
            .map(|(op, _)| match op {
                Op::Upsert(..) if next() => Outcome::Updated,
                Op::Upsert(..) => Outcome::Created,
                Op::Delete(_) if next() => Outcome::Deleted,
                Op::Delete(_) => Outcome::Absent,
                Op::Batch { upserts, deletes } => {
                    Outcome::Batch(count_batch(upserts, deletes, &mut next))
                }
                Op::Follow {
                    upserts, deletes, ..
                } => {
                    let c = count_batch(upserts, deletes, &mut next);
                    next(); // the revision
                    Outcome::Batch(c)
                }
                Op::ReplaceAll(entries) => {
                    for _ in 0..=entries.len() {
                        next();
                    }
                    Outcome::Replaced {
                        entries: entries.len() as u64,
                    }
                }
            })
            .collect();
        Ok(outcomes)
    }

    /// Publishes a committed group into the table, in order.
    fn publish(&mut self, group: &[(Op, Reply)]) -> Result<(), EngineError> {
        let entries = self.table.as_ref().map_or(0, |t| t.len() as usize);
        let replaces = group.iter().any(|(op, _)| match op {
            Op::ReplaceAll(_) => true,
            Op::Follow {
                upserts, deletes, ..
            } => {
                let n = upserts.len() + deletes.len();
                n > FOLLOW_REBUILD_OVER && n > entries / 2
            }
            _ => false,
        });
        // A table out of sync (after a store reopen, a failed rebuild) is not updated in
        // place: it is rebuilt from the store, this group included.
        if !replaces && self.metrics.table_in_sync.load(Ordering::Relaxed) {
            if let Some(table) = self.table.as_mut() {
                match apply(table, group) {
                    Ok(()) => {
                        self.metrics.set_table(&table.stats());
                        self.record_for_growth(group);
                        return Ok(());
                    }
                    Err(e) => tracing::error!(
                        error = %e,
                        "cannot update the table in place; rebuilding it from the store"
                    ),
                }
            }
        }
        // Acknowledged means visible: a rebuild that failed (a full disk) fails the group,
        // even though the old table is still mapped.
        self.rebuild_table().map_err(EngineError::Publish)
    }
}

/// The store's change for an upsert.
fn put<'a>(h: &'a Host, b: &'a Route) -> Change<'a> {
    Change::Put {
        host: h.as_str(),
        backend: b.as_str(),
    }
}

/// Counts a batch's outcomes, taking each change's "was stored" from `next` in the order the
/// changes were listed (deletes first).
pub(crate) fn count_batch<H, U>(
    upserts: &[U],
    deletes: &[H],
    next: &mut impl FnMut() -> bool,
) -> BatchCounts {
    let mut c = BatchCounts::default();
    for _ in deletes {
        if next() {
            c.deleted += 1;
        } else {
            c.absent += 1;
        }
    }
    for _ in upserts {
        if next() {
            c.updated += 1;
        } else {
            c.created += 1;
        }
    }
    c
}

/// Publishes a committed group into the table in order.
fn apply(table: &mut TableWriter, group: &[(Op, Reply)]) -> Result<(), WriteError> {
    let upsert = |table: &mut TableWriter, h: &Host, b: &Route| table.upsert(h, b).map(drop);
    for (op, _) in group {
        match op {
            Op::Upsert(h, b) => upsert(table, h, b)?,
            Op::Delete(h) => {
                table.delete(h)?;
            }
            Op::Batch { upserts, deletes }
            | Op::Follow {
                upserts, deletes, ..
            } => {
                for h in deletes {
                    table.delete(h)?;
                }
                for (h, b) in upserts {
                    upsert(table, h, b)?;
                }
            }
            // A group holding a replace-all is published by a rebuild, never through here.
            Op::ReplaceAll(_) => {}
        }
    }
    Ok(())
}
