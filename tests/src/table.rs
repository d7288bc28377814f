//! Tables built directly in tests, without the writer daemon.

use std::path::{Path, PathBuf};

use shm_layout::{Backend, BackendSet, Host, SetMember, Table, TableWriter, WriterOptions};

use crate::shared_tempdir;

/// Options for tables built directly in tests: no fsync, so they build fast.
pub fn table_options() -> WriterOptions {
    WriterOptions {
        sync: false,
        ..WriterOptions::default()
    }
}

/// Creates (or publishes a new generation of) the table at `path` with `entries`.
pub fn write_table(path: &Path, entries: &[(&str, &str)]) -> TableWriter {
    let entries: Vec<(Host, Backend)> = entries
        .iter()
        .map(|(h, b)| {
            (
                Host::parse(h).expect("host"),
                Backend::parse(b).expect("backend"),
            )
        })
        .collect();
    TableWriter::create(path, entries, table_options()).expect("create table")
}

/// Upserts `host → backend` through `w`.
pub fn upsert(w: &mut TableWriter, host: &str, backend: &str) {
    w.upsert(
        &Host::parse(host).expect("host"),
        &Backend::parse(backend).expect("backend"),
    )
    .expect("upsert");
}

/// Routes `host` to the backend set `members` (`(backend, weight, backup)`), replacing its
/// entry.
pub fn upsert_set(w: &mut TableWriter, host: &str, members: &[(String, u8, bool)]) {
    let members = members
        .iter()
        .map(|(b, weight, backup)| SetMember {
            backend: Backend::parse(b).expect("backend"),
            weight: *weight,
            backup: *backup,
        })
        .collect();
    let set = BackendSet::new(members).expect("backend set");
    w.upsert(&Host::parse(host).expect("host"), &set)
        .expect("upsert");
}

/// The entries of the table file, sorted.
pub fn table_entries(path: &Path) -> Vec<(String, String)> {
    let mut e = Table::open(path).expect("open the table").entries();
    e.sort();
    e
}

/// A directory nginx's workers can read and the path of a table in it (not created yet).
pub fn table_in_tempdir() -> (tempfile::TempDir, PathBuf) {
    let data = shared_tempdir();
    let table = data.path().join("table");
    (data, table)
}

/// [`table_in_tempdir`] with the table written with `entries`: keep the directory and the
/// table's writer while the test runs.
pub fn table_with(entries: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, TableWriter) {
    let (data, table) = table_in_tempdir();
    let w = write_table(&table, entries);
    (data, table, w)
}
