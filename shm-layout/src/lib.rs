//! The set-backend table file: a Host → backend map that one writer process updates in place
//! and any number of nginx workers read through a read-only shared mapping, with no locks and
//! no syscalls per lookup.
//!
//! # Layout
//!
//! - [`host`]: host normalization and backend validation, shared by the writer and the module.
//! - `format`: the on-disk constants and header fields (documented in `docs/FORMAT.md`).
//! - `set`: backend sets as the writer validates them: [`BackendSet`], [`SetMember`], the
//!   limits [`MAX_MEMBERS`] and [`MAX_WEIGHT`].
//! - `value`: what a lookup hands out: [`Value`] (a set, its [`Member`]s, the weighted pick),
//!   [`Match`], [`Lookup`], [`Status`].
//! - `record`: the record codec: a record's words, the slot word, the key compare and value copy.
//! - `seqlock`: the protocol on the shared words: the reader's probe and consistent read, the
//!   writer's record write and publication, and its loom model.
//! - `patterns`: the walk after an exact miss: the longest `*.suffix`, then the default `*`.
//! - `sync`: the atomics (std's, or loom's) and the one relaxed little-endian load.
//! - `raw`: the shared mapping and word-sized atomic access to it (unsafe: raw pointers).
//! - `classify`: the byte check of every value handed out (unsafe: one SSE2 call).
//! - `reader`: [`Table`], open + validate + [`Table::lookup`] (the protocol's read side).
//! - `writer`: [`TableWriter`], create / upsert / delete / grow (the protocol's write side);
//!   `writer/layout.rs`: one generation's mapped file; `writer/files.rs`: publishing by rename,
//!   directory syncs, leftovers, names and sizes;
//!   `writer/next.rs`: the lock ([`TableLock`]) and a generation built beside the current
//!   one ([`NextGeneration`], `TableWriter::install`); `writer/seal.rs`: the seal of a
//!   cleanly stopped table and its reopening as is ([`Seal`], `TableLock::reopen`).
//! - [`testkit`] (feature `testkit`): for tests: hostile tables damaged by the format's
//!   constants, the acknowledged-writes model, a seeded generator.
//!
//! Unsafe code is a compile error outside `raw` and `classify`.

// A loom build compiles only the protocol, leaving the file-backed helpers unused.
#![cfg_attr(loom, allow(dead_code, unused_imports))]
#![deny(unsafe_code)]

pub mod host;

#[allow(unsafe_code)]
mod classify;
mod format;
mod patterns;
mod record;
mod seqlock;
mod set;
mod sync;
mod value;

// The file-backed halves; a loom build (`--cfg loom`) checks only the protocol in `seqlock`.
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod raw;
#[cfg(not(loom))]
mod reader;
#[cfg(not(loom))]
mod writer;

#[cfg(all(feature = "testkit", not(loom)))]
pub mod testkit;

pub use format::{FORMAT_VERSION, MAGIC};
pub use host::{Backend, BackendError, Host, HostError, KeyKind, MAX_BACKEND_LEN, MAX_HOST_LEN};
#[cfg(not(loom))]
pub use reader::{OpenError, Stats, Table, VerifyError};
pub use set::{BackendSet, Routing, SetError, SetMember, MAX_MEMBERS, MAX_WEIGHT};
pub use value::{pick_weighted, Lookup, Match, Member, Status, Value};
#[cfg(not(loom))]
pub use writer::{
    record_words_of, NextGeneration, NextSpec, Retired, Seal, Sizing, TableLock, TableWriter,
    Upserted, WriteError, WriterOptions,
};

/// Where the writer publishes the table and where the module looks for it by default.
pub const DEFAULT_TABLE_PATH: &str = "/var/lib/set-backend/table";
