//! The process harness for the end-to-end tests: real nginx, the real writer, real HTTP.
//!
//! # Layout
//!
//! - [`paths`]: where the nginx binary (nginx-sys's build), the module `.so`, the writer and
//!   the error pages are; all come from this workspace's cargo build.
//! - `process`: free ports, shared temporary directories, signals, bounded waits, the graceful
//!   stop of a child.
//! - `http`: a minimal HTTP/1.1 client (one request per connection): [`get`], [`request`],
//!   [`unix_request`], [`raw_request`], returning a [`Response`].
//! - `upstream`: [`Upstream`], a tiny HTTP server on a free port that answers with its name and
//!   the request it saw, keeps HTTP/1.1 connections alive, and counts connections and requests.
//! - `nginx`: [`Nginx`], a real nginx (2 workers, `reuseport` so both get connections) in a
//!   temporary prefix with a generated configuration (readiness waited for, `stop` sends QUIT,
//!   `error.log` printed on a failing test); [`nginx_t`] and [`assert_nginx_t_rejects`].
//! - `etcd`: [`Etcd`], a real etcd cluster (Debian's `etcd`, N members on free loopback
//!   ports, data in a temporary directory): kill a member (SIGKILL), stop and restart members on
//!   their data, compact, read keys with `etcdctl`; dropping it stops every member.
//! - `daemonized`: [`Daemonized`], nginx with `daemon on`, for the binary upgrade.
//! - `conf`: the `http {}` bodies the tests share ([`routed`], [`upstream_routed`],
//!   [`with_api`], the error pages).
//! - `table`: tables built directly, without the writer daemon ([`table_with`]).
//! - `tls`: [`self_signed`] certificates and [`tls_backend`], an nginx `server {}` answering over
//!   TLS with what it saw (the server name of the connection), for `https://` backends.
//! - `writer`: [`Writer`], the `set-backend serve` daemon on a unix socket in a data directory;
//!   [`Writer::command`] is the one command line every test that runs the writer uses.
//! - `writer_api`: requests to the writer's API (straight to its socket or through nginx),
//!   [`writer_behind_nginx`], and the check that the table holds what the store holds.
//! - `load`: [`Load`], clients requesting routed hosts non-stop, counting failures;
//!   [`reload_under_load`].
//! - [`Acked`] (the writes the writer acknowledged, checked after a fault) and [`Rng`] come
//!   from shm-layout's `testkit`, shared with the table's and the writer's tests.
//! - `script`: [`Script`], a repository script (`scripts/run.sh`, `scripts/fleet.sh`) run in
//!   its own process group, its output collected, stopped with Ctrl-C.
//! - `storm`: [`write_storm`], a client writing non-stop until the writer stops answering.
//! - `fleet`: [`Node`], a node of a fleet (the writer following etcd, nginx in front of it);
//!   [`etcd_entries`] and [`assert_converged`]: every node's store and table hold etcd's
//!   entries.
//! - `soak`: the soak run's knobs ([`env_count`]) and a replayable [`seeded_rng`].
//!
//! Every wait is bounded; nothing is killed with SIGKILL except the writer and etcd members,
//! where a test crashes them on purpose.

mod conf;
mod daemonized;
mod etcd;
mod fleet;
mod http;
mod load;
mod nginx;
mod paths;
mod process;
mod script;
mod soak;
mod storm;
mod table;
mod tls;
mod upstream;
mod writer;
mod writer_api;

use std::time::Duration;

pub use conf::{
    assert_error_pages, failing_backends, routed, upstream_routed, with_api, with_api_and,
    ERROR_PAGES, PAGES_LOCATION,
};
pub use daemonized::Daemonized;
pub use etcd::Etcd;
pub use fleet::{assert_converged, etcd_entries, Node, FLEET_PREFIX};
pub use http::{get, raw_request, raw_unix_request, request, unix_request, Response};
pub use load::{reload_under_load, Load};
pub use nginx::{assert_nginx_t_rejects, lines_with, nginx_t, Nginx};
pub use paths::{paths, writer_built, Paths};
pub use process::{
    alive, dead_port, free_port, free_ports_in_a_row, running_as_root, shared_tempdir, signal,
    wait_until,
};
pub use script::Script;
pub use shm_layout::testkit::{Acked, Rng};
pub use shm_layout::{Backend, Host, Table, TableWriter, WriterOptions};
pub use soak::{env_count, seeded_rng};
pub use storm::write_storm;
pub use table::{
    table_entries, table_in_tempdir, table_options, table_with, upsert, upsert_set, write_table,
};
pub use tls::{self_signed, tls_backend, tls_connections};
pub use upstream::{body_is, Upstream};
pub use writer::{require_writer, Writer, TOKEN};
pub use writer_api::{
    api, assert_table_matches_store, error_code, listed, post_entry, socket_api, upsert_all,
    writer_behind_nginx,
};

/// How long any single wait lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);
