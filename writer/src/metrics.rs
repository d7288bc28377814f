//! Prometheus metrics, kept in atomics and rendered as text by `GET /metrics`.
//!
//! A handful of fixed series do not need a metrics library: counters and gauges are
//! `AtomicU64`, each histogram a fixed bucket array.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use shm_layout::Stats;

/// Upper bounds (seconds) of the latency histograms: 10 µs to 2.5 s.
const BUCKETS: [f64; 15] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.5, 2.5,
];

/// A latency histogram with the fixed [`BUCKETS`].
#[derive(Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative; summed when rendered).
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of all observations in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Observations so far and their sum in seconds.
    pub fn count_and_sum(&self) -> (u64, f64) {
        let n = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        (n, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            acc += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        acc += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {acc}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {acc}");
    }
}

/// The kinds of write the API accepts, as the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Upsert,
    Delete,
    Batch,
    Replace,
}

impl WriteOp {
    const ALL: [WriteOp; 4] = [
        WriteOp::Upsert,
        WriteOp::Delete,
        WriteOp::Batch,
        WriteOp::Replace,
    ];
    fn label(self) -> &'static str {
        match self {
            WriteOp::Upsert => "upsert",
            WriteOp::Delete => "delete",
            WriteOp::Batch => "batch",
            WriteOp::Replace => "replace",
        }
    }
}

/// How a write ended, as the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Committed and published, creating a host.
    Created,
    /// Committed and published, replacing a stored backend.
    Updated,
    /// A delete that removed an entry.
    Deleted,
    /// A delete of a host that was not stored.
    Absent,
    /// A batch or replace-all, committed and published.
    Applied,
    /// Refused before reaching the store (validation, body, content type).
    Invalid,
    /// The store or the table failed; nothing was acknowledged.
    Error,
}

impl WriteOutcome {
    const ALL: [WriteOutcome; 7] = [
        WriteOutcome::Created,
        WriteOutcome::Updated,
        WriteOutcome::Deleted,
        WriteOutcome::Absent,
        WriteOutcome::Applied,
        WriteOutcome::Invalid,
        WriteOutcome::Error,
    ];
    fn label(self) -> &'static str {
        match self {
            WriteOutcome::Created => "created",
            WriteOutcome::Updated => "updated",
            WriteOutcome::Deleted => "deleted",
            WriteOutcome::Absent => "absent",
            WriteOutcome::Applied => "applied",
            WriteOutcome::Invalid => "invalid",
            WriteOutcome::Error => "error",
        }
    }
}

/// Every metric the daemon exports.
#[derive(Default)]
pub struct Metrics {
    /// `set_backend_writes_total{op, outcome}`, indexed `[op][outcome]`.
    writes: [[AtomicU64; 7]; 4],
    /// Requests to `/entries` refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Requests refused with 429: their client address failed authentication too often.
    pub throttled: AtomicU64,
    /// Store commits (one per group of concurrent writes).
    pub commits: AtomicU64,
    /// Write requests that shared a commit with at least one other.
    pub grouped_writes: AtomicU64,
    /// Table generations built beside the current one and installed (growths that did not
    /// stop the writes).
    pub table_growths: AtomicU64,
    /// The longest the engine spent on a growth at once (starting it, copying changes,
    /// installing it), in µs: the most a write waited behind a growth.
    pub growth_pause_max_us: AtomicU64,
    /// Time of each store commit, fsync included.
    pub commit_seconds: Histogram,
    /// Time to publish a committed group into the table file.
    pub publish_seconds: Histogram,
    /// Entries in the store (and so in the table).
    pub entries: AtomicU64,
    /// Header counters of the table, refreshed after every publication.
    pub table_generation: AtomicU64,
    /// Index slots of the current table.
    pub table_capacity: AtomicU64,
    /// Tombstone slots of the current table.
    pub table_tombstones: AtomicU64,
    /// Bytes of records in use in the arena.
    pub table_arena_used: AtomicU64,
    /// Bytes of the arena.
    pub table_arena_len: AtomicU64,
    /// Bytes of the table file.
    pub table_file_len: AtomicU64,
    /// False when the table could not be brought in line with the store (see the log); the
    /// health check then fails.
    pub table_in_sync: AtomicBool,
    /// False after a commit failed (full disk, read-only file system, I/O error) until the
    /// store has been reopened; writes are refused with 503 meanwhile.
    pub store_ok: AtomicBool,
    /// True while the table's next generation is being built beside the current one.
    pub table_growing: AtomicBool,
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        m.table_in_sync.store(true, Ordering::Relaxed);
        m.store_ok.store(true, Ordering::Relaxed);
        m
    }

    pub fn write(&self, op: WriteOp, outcome: WriteOutcome) {
        self.writes_add(op, outcome, 1);
    }

    pub fn writes_add(&self, op: WriteOp, outcome: WriteOutcome, n: u64) {
        let o = WriteOp::ALL.iter().position(|&x| x == op).unwrap_or(0);
        let r = WriteOutcome::ALL
            .iter()
            .position(|&x| x == outcome)
            .unwrap_or(0);
        self.writes[o][r].fetch_add(n, Ordering::Relaxed);
    }

    pub fn writes_count(&self, op: WriteOp, outcome: WriteOutcome) -> u64 {
        let o = WriteOp::ALL.iter().position(|&x| x == op).unwrap_or(0);
        let r = WriteOutcome::ALL
            .iter()
            .position(|&x| x == outcome)
            .unwrap_or(0);
        self.writes[o][r].load(Ordering::Relaxed)
    }

    pub fn set_table(&self, s: &Stats) {
        self.entries.store(s.entries, Ordering::Relaxed);
        self.table_generation.store(s.generation, Ordering::Relaxed);
        self.table_capacity.store(s.capacity, Ordering::Relaxed);
        self.table_tombstones.store(s.tombstones, Ordering::Relaxed);
        self.table_arena_used.store(s.arena_used, Ordering::Relaxed);
        self.table_arena_len.store(s.arena_len, Ordering::Relaxed);
        self.table_file_len.store(s.file_len, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let g = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let c = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        g(
            &mut out,
            "set_backend_entries",
            "Entries in the store.",
            load(&self.entries) as f64,
        );
        let _ = writeln!(
            out,
            "# HELP set_backend_writes_total Write requests by operation and outcome.\n\
             # TYPE set_backend_writes_total counter"
        );
        for (i, op) in WriteOp::ALL.iter().enumerate() {
            for (j, outcome) in WriteOutcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "set_backend_writes_total{{op=\"{}\",outcome=\"{}\"}} {}",
                    op.label(),
                    outcome.label(),
                    self.writes[i][j].load(Ordering::Relaxed)
                );
            }
        }
        c(
            &mut out,
            "set_backend_unauthorized_total",
            "Requests refused for a missing or wrong token.",
            load(&self.unauthorized),
        );
        c(
            &mut out,
            "set_backend_throttled_total",
            "Requests refused (429) from an address that failed authentication too often.",
            load(&self.throttled),
        );
        c(
            &mut out,
            "set_backend_commits_total",
            "Store commits (concurrent writes share one).",
            load(&self.commits),
        );
        c(
            &mut out,
            "set_backend_grouped_writes_total",
            "Write requests that shared a commit with another.",
            load(&self.grouped_writes),
        );
        g(
            &mut out,
            "set_backend_table_growth_pause_max_seconds",
            "The longest the engine spent on a table growth at once: what a write waited behind it.",
            load(&self.growth_pause_max_us) as f64 / 1e6,
        );
        c(
            &mut out,
            "set_backend_table_growths_total",
            "Table generations built beside the current one while writes went on.",
            load(&self.table_growths),
        );
        self.commit_seconds.render(
            &mut out,
            "set_backend_commit_seconds",
            "Durable store commit time (fsync included).",
        );
        self.publish_seconds.render(
            &mut out,
            "set_backend_publish_seconds",
            "Time to publish a committed change into the table file.",
        );
        let cap = load(&self.table_capacity);
        g(
            &mut out,
            "set_backend_table_generation",
            "Generation of the published table file.",
            load(&self.table_generation) as f64,
        );
        g(
            &mut out,
            "set_backend_table_capacity",
            "Index slots of the table.",
            cap as f64,
        );
        g(
            &mut out,
            "set_backend_table_tombstones",
            "Tombstone slots of the table.",
            load(&self.table_tombstones) as f64,
        );
        let used_slots = load(&self.entries) + load(&self.table_tombstones);
        g(
            &mut out,
            "set_backend_table_load_ratio",
            "Used index slots (entries and tombstones) over capacity.",
            if cap == 0 {
                0.0
            } else {
                used_slots as f64 / cap as f64
            },
        );
        g(
            &mut out,
            "set_backend_table_arena_used_bytes",
            "Bytes of live records in the table's arena.",
            load(&self.table_arena_used) as f64,
        );
        g(
            &mut out,
            "set_backend_table_arena_bytes",
            "Bytes of the table's arena.",
            load(&self.table_arena_len) as f64,
        );
        g(
            &mut out,
            "set_backend_table_file_bytes",
            "Bytes of the table file.",
            load(&self.table_file_len) as f64,
        );
        g(
            &mut out,
            "set_backend_table_in_sync",
            "1 when the table matches the store, 0 after a publication failure.",
            if self.table_in_sync.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        g(
            &mut out,
            "set_backend_table_growing",
            "1 while the table's next generation is being built beside the current one.",
            if self.table_growing.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        g(
            &mut out,
            "set_backend_store_ok",
            "1 when the store accepts writes, 0 after a failed commit until it is reopened.",
            if self.store_ok.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        out
    }
}
