//! End to end: real nginx (2 workers) with the module, tables on disk, upstream servers, and the
//! writer daemon for the API tests; the harness is the `set_backend_tests` library
//! (`tests/src/`). Each test checks `error.log` for `[alert]`, `[crit]` and `[emerg]` at the end.
//!
//! - `variable_sets`: backend sets in variable mode: the weighted pick, a set changed under
//!   load.
//! - `routing`: variable mode (`set_backend $backend;`): hosts, misses, fallbacks, `if`, error
//!   pages, configuration errors, reload under load.
//! - `table_updates`: updates, new generations, replaced, missing and corrupt tables.
//! - `api`: the writer's API through nginx; nginx serving on while the writer restarts.
//! - `syscalls`: no syscall per request added by `set_backend`.
//! - `fleet`: fleet mode, two nodes on a real 3-member etcd cluster: writes through one node
//!   routed by the other, concurrent writers; `fleet_faults`: etcd members killed or all
//!   stopped, a writer SIGKILLed during a write storm, a node down while etcd compacts.
//! - `fleet_etcd`: the real etcd cluster the fleet tests run on (members killed, stopped,
//!   restarted, compaction).
//! - `fleet_make`: the README's `make fleet` flow (etcd, two nodes, Ctrl-C).
//! - `make_run`: the README's `make run` flow.
//! - `upstream_mode`: `set_backend_peer` in an `upstream {}` block with `keepalive`.
//! - `failover`: backend sets in upstream mode: weights, failover under load, backups, a set
//!   changed while connections to its old members are cached.
//! - `reliability`: faults, hostile files, abuse, one file per section of `RELIABILITY.md`.

#[path = "e2e/api.rs"]
mod api;
#[path = "e2e/failover.rs"]
mod failover;
#[path = "e2e/fleet.rs"]
mod fleet;
#[path = "e2e/fleet_etcd.rs"]
mod fleet_etcd;
#[path = "e2e/fleet_faults.rs"]
mod fleet_faults;
#[path = "e2e/fleet_make.rs"]
mod fleet_make;
#[path = "e2e/make_run.rs"]
mod make_run;
#[path = "e2e/patterns.rs"]
mod patterns;
#[path = "e2e/reliability/mod.rs"]
mod reliability;
#[path = "e2e/routing.rs"]
mod routing;
#[path = "e2e/syscalls.rs"]
mod syscalls;
#[path = "e2e/table_updates.rs"]
mod table_updates;
#[path = "e2e/upstream_mode.rs"]
mod upstream_mode;
#[path = "e2e/variable_sets.rs"]
mod variable_sets;
