//! Shared helpers for the benchmarks: the same keys and backends for every contender.

use shm_layout::{Backend, Host, TableWriter, WriterOptions};
use std::path::Path;

/// `site-<i>.example.com`: a realistic 20–26 byte host.
pub fn host(i: u64) -> String {
    format!("site-{i}.example.com")
}

/// `10.<a>.<b>.<c>:<port>`: an IPv4 backend as most deployments store.
pub fn backend(i: u64) -> String {
    format!(
        "10.{}.{}.{}:{}",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255,
        3000 + i % 1000
    )
}

/// The benchmark tables' hash key.
pub const HASH_KEY: (u64, u64) = (0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344);

/// Builds a table of `n` entries at `path` (fsync off: benchmarks measure lookups, not disks).
pub fn build_table(path: &Path, n: u64) -> TableWriter {
    let entries = (0..n).map(|i| {
        (
            Host::parse(&host(i)).unwrap(),
            Backend::parse(&backend(i)).unwrap(),
        )
    });
    let opts = WriterOptions {
        sync: false,
        // A fixed hash key (the first digits of pi), so that every run places every host in
        // the same slot: a host's cost depends on how far from its home slot it landed, and
        // with a random key the hot host's figure moved from run to run.
        hash_key: Some(HASH_KEY),
        ..WriterOptions::default()
    };
    TableWriter::create(path, entries, opts).expect("build table")
}

/// The patterns added to a [`build_table`] table for the pattern benchmarks: a wildcard over
/// every benchmark host's domain and the default entry.
pub const PATTERNS: [&str; 2] = ["*.example.com", "*"];

/// What the pattern benchmarks look up in a table of [`build_table`] hosts plus [`PATTERNS`],
/// with the entry that must answer: the host's own, `*.example.com` one and four labels deep,
/// and the default.
pub const PATTERN_HOSTS: [(&str, &str, &str); 4] = [
    ("exact", "site-500.example.com", "site-500.example.com"),
    ("wildcard", "a.example.com", "*.example.com"),
    ("wildcard-4-deep", "a.b.c.d.example.com", "*.example.com"),
    ("default", "nothing.example.net", "*"),
];

/// Adds [`PATTERNS`] to a benchmark table.
pub fn add_patterns(writer: &mut TableWriter, backend: &str) {
    let b = Backend::parse(backend).unwrap();
    for p in PATTERNS {
        writer
            .upsert(&Host::parse(p).unwrap(), &b)
            .expect("upsert pattern");
    }
}

/// `count` hosts drawn uniformly from `0..n` by a fixed xorshift sequence, so that random
/// lookups defeat the caches the same way for every contender.
pub fn random_hosts(n: u64, count: usize) -> Vec<String> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            host(x % n)
        })
        .collect()
}
