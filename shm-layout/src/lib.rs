//! The set-backend table file: a Host → backend map that one writer process updates in place
//! and any number of nginx workers read through a read-only shared mapping, with no locks and
//! no syscalls per lookup.
//!
//! # Layout
//!
//! - [`host`]: host normalization and backend validation, shared by the writer and the module.
//! - `format`: the on-disk constants and header fields (documented in `docs/FORMAT.md`).
//! - `raw`: the one unsafe module: the shared mapping and word-sized atomic access to it.
//! - `reader`: [`Table`], open + validate + [`Table::lookup`] (the seqlock read side).
//! - `writer`: [`TableWriter`], create / upsert / delete / grow (the seqlock write side).

pub mod host;

mod format;
mod raw;
mod reader;
mod seqlock;
mod sync;
mod writer;

pub use format::{FORMAT_VERSION, MAGIC};
pub use host::{Backend, BackendError, Host, HostError, MAX_BACKEND_LEN, MAX_HOST_LEN};
pub use reader::{Lookup, OpenError, Stats, Table, Value, VerifyError};
pub use writer::{TableWriter, Upserted, WriteError, WriterOptions};

/// Where the writer publishes the table and where the module looks for it by default.
pub const DEFAULT_TABLE_PATH: &str = "/var/lib/set-backend/table";
