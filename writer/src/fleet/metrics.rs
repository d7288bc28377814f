//! The fleet mode's metrics, rendered after the writer's own by `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters and gauges of the follower, the writes and the registry.
#[derive(Default)]
pub struct FleetMetrics {
    /// The etcd revision this node's table and store reflect.
    pub applied_revision: AtomicU64,
    /// The highest etcd revision seen in any answer.
    pub etcd_revision: AtomicU64,
    /// The revision up to which the watch reported every event sent (progress notices): with
    /// no change of ours since, the table is current up to there.
    pub progress_revision: AtomicU64,
    /// Watches started again after a disconnect or an error (each resumed from the applied
    /// revision).
    pub watch_restarts: AtomicU64,
    /// Watches created (the first one included).
    pub watches: AtomicU64,
    /// Full re-reads (bootstrap, compaction, a new generation, a changed cluster).
    pub full_rereads: AtomicU64,
    /// How long the last full re-read took, in milliseconds (read and applied).
    pub reread_ms: AtomicU64,
    /// From the start of following until caught up with etcd's revision at the first
    /// contact, in milliseconds: a bootstrap (full read) or a restart's catch-up. 0 until then.
    pub bootstrap_ms: AtomicU64,
    /// Whether the last etcd request succeeded.
    pub reachable: AtomicBool,
    /// Whether this node is registered under a live lease.
    pub registered: AtomicBool,
}

impl FleetMetrics {
    /// Records an etcd answer's revision.
    pub fn saw(&self, revision: i64) {
        self.etcd_revision
            .fetch_max(revision.max(0) as u64, Ordering::Relaxed);
        self.reachable.store(true, Ordering::Relaxed);
    }

    /// How many revisions this node is behind the newest one it knows of.
    pub fn lag(&self) -> u64 {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let through = load(&self.applied_revision).max(load(&self.progress_revision));
        load(&self.etcd_revision).saturating_sub(through)
    }

    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let flag = |a: &AtomicBool| f64::from(u8::from(a.load(Ordering::Relaxed)));
        let series: [(&str, &str, &str, f64); 9] = [
            (
                "set_backend_fleet_bootstrap_seconds",
                "gauge",
                "From the start until caught up with etcd: the bootstrap, or a restart's catch-up.",
                load(&self.bootstrap_ms) / 1000.0,
            ),
            (
                "set_backend_fleet_applied_revision",
                "gauge",
                "The etcd revision the table reflects.",
                load(&self.applied_revision),
            ),
            (
                "set_backend_fleet_etcd_revision",
                "gauge",
                "The newest etcd revision seen.",
                load(&self.etcd_revision),
            ),
            (
                "set_backend_fleet_lag_revisions",
                "gauge",
                "Revisions between the newest seen and the applied one (or the watch's progress).",
                self.lag() as f64,
            ),
            (
                "set_backend_fleet_watch_restarts_total",
                "counter",
                "Watches resumed after a disconnect or an error.",
                load(&self.watch_restarts),
            ),
            (
                "set_backend_fleet_full_rereads_total",
                "counter",
                "Full re-reads of the generation (bootstrap, compaction, replace-all).",
                load(&self.full_rereads),
            ),
            (
                "set_backend_fleet_reread_seconds",
                "gauge",
                "Duration of the last full re-read, applied.",
                load(&self.reread_ms) / 1000.0,
            ),
            (
                "set_backend_fleet_etcd_reachable",
                "gauge",
                "1 if the last etcd request succeeded.",
                flag(&self.reachable),
            ),
            (
                "set_backend_fleet_registered",
                "gauge",
                "1 if this node is registered under a live lease.",
                flag(&self.registered),
            ),
        ];
        for (name, kind, help, v) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}
