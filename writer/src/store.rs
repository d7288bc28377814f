//! The durable store: every read and write of the source of truth goes through the [`Store`]
//! trait, so the engine and the handlers never see the database behind it. [`RedbStore`] is
//! the one implementation today: one `redb` file holding every entry, host → backend, both in
//! canonical text form. The table file is rebuilt from it at start unless it carries the
//! store's seal (below).
//!
//! Only the engine thread writes it ([`Store::apply`], one durable commit per group of
//! requests); request handlers and table builds read it through snapshots (read transactions),
//! which never block the writer.
//!
//! Besides the entries the store keeps the table's seal: a random number the engine records
//! when it stops cleanly, after making the table file durable, with the table's entry count
//! and digest ([`Store::set_seal`]), and writes into the table's header too. Every commit that changes an entry clears it in the same
//! transaction, so a table whose seal equals the store's holds exactly the store's entries
//! and can be reopened as is; any other table is rebuilt.
//!
//! Errors carry a [`Fault`] decided where the error arises (an `io::Error`'s kind, redb's own
//! variants), never by matching text. After an I/O error (a full disk, a read-only file
//! system) `redb` refuses every later operation until the database is closed and opened again;
//! [`Store::reopen`] does that, and the engine calls it before the next write and on its
//! heartbeat, so the daemon recovers by itself once the disk has room again.

use std::fmt;
use std::fs;
use std::io;
use std::ops::Bound;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use shm_layout::Seal;

/// The one table of the store: canonical host → canonical backend.
const ENTRIES: TableDefinition<&str, &str> = TableDefinition::new("entries");
/// What the store knows about the table: `table_seal` and, beside it, the sealed table's entry
/// count and digest.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The key of the table's seal in [`META`]; absent means no table matches the store.
const SEAL: &str = "table_seal";
/// The keys of the sealed table's entry count and digest in [`META`].
const SEAL_ENTRIES: &str = "table_seal_entries";
const SEAL_DIGEST: &str = "table_seal_digest";
/// The key in [`META`] of the source's revision the entries reflect ([`Change::Revision`]).
const REVISION: &str = "source_revision";
/// The default size of redb's page cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// One change of a group given to [`Store::apply`]; hosts and backends are canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// Store `backend` for `host`.
    Put { host: &'a str, backend: &'a str },
    /// Remove `host` if it is stored.
    Remove(&'a str),
    /// Remove every entry (a replace-all is `Clear` followed by its `Put`s).
    Clear,
    /// Record the revision of the source the entries now reflect (fleet mode: the etcd
    /// revision applied); not an entry, so it leaves the table's seal alone.
    Revision(u64),
}

/// The source of truth, as the engine and the handlers use it. Implementations are shared
/// between threads; every method is one consistent transaction.
pub trait Store: Send + Sync {
    /// Applies `changes` in order in one transaction and commits it durably (the call returns
    /// only once the commit would survive a power loss), all or nothing. A group that changes
    /// nothing (deletes of absent hosts) is not committed.
    fn apply(&self, changes: &[Change<'_>]) -> Result<Applied, StoreError>;

    /// The backend stored for `host`.
    fn get(&self, host: &str) -> Result<Option<String>, StoreError>;

    /// A consistent view of every entry as of now, readable from any thread while writes go
    /// on.
    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError>;

    /// A view of every entry read in pieces, each from its own read transaction: an entry
    /// changed during the pass may be seen before or after its change. For a reader that hears
    /// of every change made after it started from elsewhere (a growth records them); a
    /// [`Store::snapshot`] held for a pass of many seconds would make every commit meanwhile
    /// keep the pages it frees, and the first commit after the pass free them all at once.
    fn pieces(&self) -> Result<Box<dyn Snapshot>, StoreError>;

    /// How many entries the store holds.
    fn count(&self) -> Result<u64, StoreError> {
        self.snapshot()?.count()
    }

    /// Calls `f` with every entry in host order, from one consistent snapshot, until it
    /// returns false. Streams: nothing is collected.
    fn for_each(&self, f: &mut dyn FnMut(&str, &str) -> bool) -> Result<(), StoreError> {
        self.snapshot()?.for_each(f)
    }

    /// The revision last recorded by [`Change::Revision`]; 0 if none.
    fn revision(&self) -> Result<u64, StoreError>;

    /// The table's seal recorded by [`Store::set_seal`]; its `id` is 0 if none (or if an
    /// entry changed since).
    fn seal(&self) -> Result<Seal, StoreError>;

    /// Records the seal of a table that holds exactly the store's entries, durably.
    fn set_seal(&self, seal: &Seal) -> Result<(), StoreError>;

    /// Closes the store and opens it again: the way out of a failed state after an I/O
    /// error. Fails (and stays closed, to be retried) while the cause persists.
    fn reopen(&self) -> Result<(), StoreError>;
}

/// A consistent, read-only view of the store's entries.
pub trait Snapshot: Send {
    /// How many entries it holds.
    fn count(&self) -> Result<u64, StoreError>;

    /// Calls `f` with every entry in host order until it returns false.
    fn for_each(&self, f: &mut dyn FnMut(&str, &str) -> bool) -> Result<(), StoreError>;
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Per change, whether its host was stored just before it (`false` for
    /// [`Change::Clear`]).
    pub existed: Vec<bool>,
    /// Whether anything changed, so that a commit was made.
    pub committed: bool,
}

/// A store shared by the engine and the handlers.
pub type SharedStore = Arc<dyn Store>;

/// What kind of failure a [`StoreError`] is: what an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The file system is full (or over quota).
    NoSpace,
    /// The file system is mounted read-only.
    ReadOnly,
    /// The process may not read or write the file.
    Permission,
    /// Another process has the store open.
    Locked,
    /// The store is closed after an earlier I/O error, until it is reopened.
    Closed,
    /// The file's content is invalid.
    Corrupt,
    /// Any other I/O error.
    Io,
    /// Anything else (a bug, an unexpected state of the database).
    Other,
}

impl Fault {
    /// The kind of an I/O error, from its `ErrorKind` or its errno.
    pub fn of_io(e: &io::Error) -> Fault {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Fault::NoSpace,
            io::ErrorKind::ReadOnlyFilesystem => Fault::ReadOnly,
            io::ErrorKind::PermissionDenied => Fault::Permission,
            _ => match e.raw_os_error() {
                Some(libc::ENOSPC) | Some(libc::EDQUOT) => Fault::NoSpace,
                Some(libc::EROFS) => Fault::ReadOnly,
                Some(libc::EACCES) | Some(libc::EPERM) => Fault::Permission,
                _ => Fault::Io,
            },
        }
    }

    /// The kind in words safe to show to a client (no paths, no internals).
    pub fn describe(self) -> &'static str {
        match self {
            Fault::NoSpace => "its file system is full",
            Fault::ReadOnly => "its file system is read-only",
            Fault::Permission => "permission denied",
            Fault::Locked => "another process holds it",
            Fault::Corrupt => "its file is damaged; see the writer's log",
            Fault::Closed | Fault::Io | Fault::Other => "an I/O error; see the writer's log",
        }
    }
}

/// Why the store failed.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// What kind of failure, decided at the source.
    pub kind: Fault,
    /// What was being done, for the log line.
    context: &'static str,
    /// The underlying error, as text, for the log line.
    message: String,
}

impl StoreError {
    pub fn new(kind: Fault, context: &'static str, e: impl fmt::Display) -> StoreError {
        StoreError {
            kind,
            context,
            message: e.to_string(),
        }
    }

    /// A redb error, its kind taken from the `io::Error` inside when there is one.
    fn redb(context: &'static str, e: impl Into<redb::Error>) -> StoreError {
        let e: redb::Error = e.into();
        let kind = match &e {
            redb::Error::Io(io) => Fault::of_io(io),
            redb::Error::PreviousIo | redb::Error::DatabaseClosed => Fault::Closed,
            redb::Error::Corrupted(_) => Fault::Corrupt,
            redb::Error::DatabaseAlreadyOpen => Fault::Locked,
            _ => Fault::Other,
        };
        StoreError::new(kind, context, e)
    }
}

/// `map_err(at("what"))`: a redb error of any type as a [`StoreError`].
fn at<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::redb(context, e)
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> StoreError {
        StoreError::new(Fault::of_io(&e), "I/O", e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for StoreError {}

/// The store in one `redb` file.
pub struct RedbStore {
    /// The open database; `redb` locks the file, so a second daemon on it fails to open.
    /// `None` after an I/O error, until [`Store::reopen`] succeeds.
    db: RwLock<Option<Arc<Database>>>,
    /// Where the file is, for reopening and error messages.
    path: PathBuf,
    /// Bytes of redb's page cache.
    cache_bytes: usize,
}

impl RedbStore {
    /// Opens the store at `path` with a page cache of `cache_bytes`, creating it (mode 0600)
    /// and its tables if needed.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<RedbStore, StoreError> {
        let db = open_database(path, cache_bytes)?;
        Ok(RedbStore {
            db: RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            cache_bytes,
        })
    }

    /// [`RedbStore::open`] with the default cache, shared.
    pub fn open_shared(path: &Path) -> Result<SharedStore, StoreError> {
        Ok(Arc::new(RedbStore::open(path, DEFAULT_CACHE_BYTES)?))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database, or an error while it is closed after an I/O failure.
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                StoreError::new(Fault::Closed, "the store is closed after an I/O error", "")
            })
    }

    fn read(&self) -> Result<redb::ReadOnlyTable<&'static str, &'static str>, StoreError> {
        let txn = self.db()?.begin_read().map_err(at("begin read"))?;
        txn.open_table(ENTRIES).map_err(at("open table"))
    }
}

impl Store for RedbStore {
    fn apply(&self, changes: &[Change<'_>]) -> Result<Applied, StoreError> {
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(at("begin write"))?;
        // redb's default, stated: `commit` returns only once the data is fsynced. The whole
        // acknowledgement guarantee rests on this line.
        txn.set_durability(redb::Durability::Immediate)
            .map_err(at("set durability"))?;
        let mut existed = Vec::with_capacity(changes.len());
        // Whether the group changed anything: one that did not (deletes of absent hosts) is
        // aborted, so a refused or idle request never writes the store file.
        let mut changed = false;
        let mut revision = None;
        {
            let mut t = txn.open_table(ENTRIES).map_err(at("open table"))?;
            for c in changes {
                let was = match *c {
                    Change::Put { host, backend } => {
                        changed = true;
                        t.insert(host, backend).map_err(at("insert"))?.is_some()
                    }
                    Change::Remove(host) => {
                        let was = t.remove(host).map_err(at("remove"))?.is_some();
                        changed |= was;
                        was
                    }
                    Change::Clear => {
                        changed = true;
                        t.retain(|_, _| false).map_err(at("clear"))?;
                        false
                    }
                    Change::Revision(r) => {
                        revision = Some(r);
                        false
                    }
                };
                existed.push(was);
            }
        }
        if changed || revision.is_some() {
            let mut meta = txn.open_table(META).map_err(at("open meta"))?;
            if changed {
                // The table no longer matches a seal recorded before this change.
                meta.remove(SEAL).map_err(at("clear seal"))?;
            }
            if let Some(r) = revision {
                meta.insert(REVISION, r).map_err(at("write revision"))?;
            }
            drop(meta);
            txn.commit().map_err(at("commit"))?;
        } else {
            txn.abort().map_err(at("abort"))?;
        }
        Ok(Applied {
            existed,
            committed: changed,
        })
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let txn = self.db()?.begin_read().map_err(at("begin read"))?;
        let meta = txn.open_table(META).map_err(at("open meta"))?;
        let v = meta.get(REVISION).map_err(at("read revision"))?;
        Ok(v.map_or(0, |v| v.value()))
    }

    fn get(&self, host: &str) -> Result<Option<String>, StoreError> {
        let v = self.read()?.get(host).map_err(at("get"))?;
        Ok(v.map(|v| v.value().to_string()))
    }

    fn snapshot(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        Ok(Box::new(RedbSnapshot(self.read()?)))
    }

    fn pieces(&self) -> Result<Box<dyn Snapshot>, StoreError> {
        Ok(Box::new(RedbPieces(self.db()?)))
    }

    fn seal(&self) -> Result<Seal, StoreError> {
        let txn = self.db()?.begin_read().map_err(at("begin read"))?;
        let meta = txn.open_table(META).map_err(at("open meta"))?;
        let get = |key| -> Result<u64, StoreError> {
            Ok(meta
                .get(key)
                .map_err(at("read seal"))?
                .map_or(0, |v| v.value()))
        };
        Ok(Seal {
            id: get(SEAL)?,
            entries: get(SEAL_ENTRIES)?,
            digest: get(SEAL_DIGEST)?,
        })
    }

    fn set_seal(&self, seal: &Seal) -> Result<(), StoreError> {
        let db = self.db()?;
        let mut txn = db.begin_write().map_err(at("begin write"))?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(at("set durability"))?;
        {
            let mut meta = txn.open_table(META).map_err(at("open meta"))?;
            for (key, v) in [
                (SEAL, seal.id),
                (SEAL_ENTRIES, seal.entries),
                (SEAL_DIGEST, seal.digest),
            ] {
                meta.insert(key, v).map_err(at("write seal"))?;
            }
        }
        txn.commit().map_err(at("commit"))
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        drop(slot.take());
        let db = open_database(&self.path, self.cache_bytes)?;
        *slot = Some(Arc::new(db));
        Ok(())
    }
}

/// A read transaction on the entries.
struct RedbSnapshot(redb::ReadOnlyTable<&'static str, &'static str>);

impl Snapshot for RedbSnapshot {
    fn count(&self) -> Result<u64, StoreError> {
        self.0.len().map_err(at("len"))
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str) -> bool) -> Result<(), StoreError> {
        for item in self.0.iter().map_err(at("iterate"))? {
            let (k, v) = item.map_err(at("iterate"))?;
            if !f(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }
}

/// [`Store::pieces`]: the entries in host order, [`PIECE`] at a time, each piece from its own
/// read transaction (a few milliseconds long), starting after the last key of the one before.
struct RedbPieces(Arc<Database>);

/// The entries read under one read transaction by [`RedbPieces`].
const PIECE: usize = 10_000;

impl Snapshot for RedbPieces {
    fn count(&self) -> Result<u64, StoreError> {
        let txn = self.0.begin_read().map_err(at("begin read"))?;
        let t = txn.open_table(ENTRIES).map_err(at("open table"))?;
        t.len().map_err(at("len"))
    }

    fn for_each(&self, f: &mut dyn FnMut(&str, &str) -> bool) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let txn = self.0.begin_read().map_err(at("begin read"))?;
            let t = txn.open_table(ENTRIES).map_err(at("open table"))?;
            let items = match after.as_deref() {
                None => t.iter(),
                Some(key) => t.range::<&str>((Bound::Excluded(key), Bound::Unbounded)),
            }
            .map_err(at("iterate"))?;
            let mut n = 0;
            for item in items {
                let (k, v) = item.map_err(at("iterate"))?;
                if !f(k.value(), v.value()) {
                    return Ok(());
                }
                n += 1;
                if n == PIECE {
                    after = Some(k.value().to_owned());
                    break;
                }
            }
            if n < PIECE {
                return Ok(());
            }
        }
    }
}

/// Opens (or creates) the database at `path` with mode 0600, its tables, and a page cache of
/// `cache_bytes`.
fn open_database(path: &Path, cache_bytes: usize) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::new(
                Fault::Locked,
                "store is already open in another process (is another writer running?)",
                path.display(),
            ),
            e => {
                let mut se = StoreError::redb("cannot open the store", e);
                se.message = format!("{}: {}", path.display(), se.message);
                se
            }
        })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::new(Fault::of_io(&e), "cannot set the store's permissions", e))?;
    let txn = db.begin_write().map_err(at("begin write"))?;
    txn.open_table(ENTRIES).map_err(at("open table"))?;
    txn.open_table(META).map_err(at("open meta"))?;
    txn.commit().map_err(at("commit"))?;
    Ok(db)
}
