//! The durable store: one `redb` file holding every entry, host → backend, both in canonical
//! text form. It is the source of truth; the table file is rebuilt from it at every start.
//!
//! Only the engine thread writes it (one write transaction per group of requests); request
//! handlers read it through their own read transactions, which never block the writer.
//!
//! After an I/O error (a full disk, a read-only file system) `redb` refuses every later
//! operation until the database is closed and opened again; [`Store::reopen`] does that, and
//! the engine calls it before the next write and on its heartbeat, so the daemon recovers by
//! itself once the disk has room again.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use shm_layout::{Backend, Host};

/// The one table of the store: canonical host → canonical backend.
pub(crate) const ENTRIES: TableDefinition<&str, &str> = TableDefinition::new("entries");

/// A shared handle on the store file.
#[derive(Clone)]
pub struct Store {
    /// The open database; `redb` locks the file, so a second daemon on it fails to open.
    /// `None` after an I/O error, until [`Store::reopen`] succeeds.
    db: Arc<RwLock<Option<Arc<Database>>>>,
    /// Where the file is, for error messages.
    path: PathBuf,
}

/// Why the store failed.
#[derive(Debug)]
pub struct StoreError {
    /// What was being done, for the log line.
    context: &'static str,
    /// The underlying error, as text (redb has several error types).
    message: String,
}

impl StoreError {
    pub(crate) fn new(context: &'static str, e: impl fmt::Display) -> StoreError {
        StoreError {
            context,
            message: e.to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

impl std::error::Error for StoreError {}

impl Store {
    /// Opens the store at `path`, creating it (mode 0600) and its table if needed.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = open_database(path)?;
        Ok(Store {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            path: path.to_path_buf(),
        })
    }

    /// The open database, or an error while it is closed after an I/O failure.
    pub(crate) fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::new("the store is closed after an I/O error", "reopening"))
    }

    /// Closes the database and opens it again: the way out of `redb`'s failed state after an
    /// I/O error. Fails (and stays closed, to be retried) while the disk still refuses, or
    /// while a reader still holds the old handle.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        drop(slot.take());
        let db = open_database(&self.path)?;
        *slot = Some(Arc::new(db));
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The backend stored for `host`.
    pub fn get(&self, host: &Host) -> Result<Option<String>, StoreError> {
        let txn = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::new("begin read", e))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|e| StoreError::new("open table", e))?;
        let v = table
            .get(host.as_str())
            .map_err(|e| StoreError::new("get", e))?;
        Ok(v.map(|v| v.value().to_string()))
    }

    /// How many entries the store holds.
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::new("begin read", e))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|e| StoreError::new("open table", e))?;
        table.len().map_err(|e| StoreError::new("len", e))
    }

    /// Every entry, parsed back into the table's types. An entry that no longer parses (a
    /// store written by a version with looser rules) is skipped with a warning rather than
    /// keeping the daemon down.
    pub fn load_all(&self) -> Result<Vec<(Host, Backend)>, StoreError> {
        let mut out = Vec::new();
        self.for_each(|h, b| {
            match (Host::parse(h), Backend::parse(b)) {
                (Ok(host), Ok(backend)) => out.push((host, backend)),
                _ => tracing::warn!(host = h, backend = b, "skipping an invalid stored entry"),
            }
            true
        })?;
        Ok(out)
    }

    /// Calls `f` with every entry in host order, from one consistent snapshot, until it
    /// returns false.
    pub fn for_each(&self, mut f: impl FnMut(&str, &str) -> bool) -> Result<(), StoreError> {
        let txn = self
            .db()?
            .begin_read()
            .map_err(|e| StoreError::new("begin read", e))?;
        let table = txn
            .open_table(ENTRIES)
            .map_err(|e| StoreError::new("open table", e))?;
        for item in table.iter().map_err(|e| StoreError::new("iterate", e))? {
            let (k, v) = item.map_err(|e| StoreError::new("iterate", e))?;
            if !f(k.value(), v.value()) {
                break;
            }
        }
        Ok(())
    }
}

/// Opens (or creates) the database at `path` with mode 0600 and its table.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::new(
            "store is already open in another process (is another writer running?)",
            path.display(),
        ),
        e => StoreError::new("cannot open the store", format!("{}: {e}", path.display())),
    })?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| StoreError::new("cannot set the store's permissions", e))?;
    let txn = db.begin_write().map_err(|e| StoreError::new("begin", e))?;
    txn.open_table(ENTRIES)
        .map_err(|e| StoreError::new("open table", e))?;
    txn.commit().map_err(|e| StoreError::new("commit", e))?;
    Ok(db)
}
