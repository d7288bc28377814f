//! Fleet mode: etcd is the source of truth for many nodes, each running nginx and its own
//! writer; every writer follows etcd into its local store and table. The protocol (key
//! layout, bootstrap, watch, resume, replace-all, acknowledgements) is in `docs/FLEET.md`.
//!
//! # Layout
//!
//! - `config`: the `--etcd…` options and the client built from them.
//! - `keys`: the key layout under the versioned prefix.
//! - `follower`: bootstrap at one revision, watch from the next, resume from the applied
//!   revision, full re-read applied as a diff; hands each change set to the engine.
//! - `writes`: the API's writes as etcd transactions, acknowledged once applied here.
//! - `replace`: replace-all through a staged generation flipped by compare-and-swap.
//! - `registry`: the node's lease, its applied revision under `nodes/`, and `wait=all`.
//! - `metrics`: applied revision, lag, watch restarts, re-reads.
//!
//! [`Fleet`] is what they share: the client, the applied revision (a watch channel the
//! writes wait on), the generation writes go to, the lease.

pub mod config;
mod follower;
pub mod http;
pub mod keys;
pub mod metrics;
mod registry;
mod replace;
mod writes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;

pub use config::{EtcdArgs, FleetConfig};
pub use writes::Written;

use crate::engine::EngineHandle;
use crate::error::ApiError;
use crate::store::SharedStore;
use keys::Layout;
use metrics::FleetMetrics;

/// etcd's limit of operations in one transaction (`--max-txn-ops`, default 128).
pub const MAX_TXN_OPS: usize = 128;

/// A generation's content: host → entry text.
pub(crate) type Content = HashMap<String, Vec<u8>>;

/// The generation writes go to, as last seen: its id and the generation key's
/// `mod_revision` (0 while the key is absent), which every write compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generation {
    pub id: String,
    pub mod_revision: i64,
}

/// Why a fleet write was not acknowledged.
#[derive(Debug)]
pub enum FleetError {
    /// etcd could not be reached or did not answer in time: nothing was written.
    Unavailable(String),
    /// A batch over etcd's limits (operations per transaction, bytes per request): why.
    TooLarge(String),
    /// Another replace-all holds the lock.
    Conflict(String),
    /// Committed at `revision`, but not applied by these nodes within the timeout.
    NotApplied { revision: u64, pending: Vec<String> },
    /// The local engine failed to apply (see its error).
    Engine(crate::engine::EngineError),
}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> FleetError {
        match &e {
            // etcd's own refusals of a request's size ("too many operations in txn request",
            // "request is too large"); every other error is etcd being unreachable or slow.
            etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::InvalidArgument => {
                FleetError::TooLarge(format!("etcd refused the request: {}", s.message()))
            }
            _ => FleetError::Unavailable(e.to_string()),
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> ApiError {
        match e {
            FleetError::Unavailable(why) => {
                tracing::warn!(error = %why, "write refused: etcd is unavailable");
                ApiError::StoreUnavailable("etcd cannot be reached")
            }
            FleetError::TooLarge(why) => ApiError::BatchTooLarge(why),
            FleetError::Conflict(m) => ApiError::Conflict(m),
            FleetError::NotApplied { revision, pending } => {
                ApiError::WaitTimeout { revision, pending }
            }
            FleetError::Engine(e) => e.into(),
        }
    }
}

/// The fleet state one writer shares between its follower, its registry and its handlers.
pub struct Fleet {
    pub(crate) config: FleetConfig,
    pub(crate) layout: Layout,
    /// The client, once connected.
    client: tokio::sync::Mutex<Option<Client>>,
    /// The revision the local store and table reflect; writes wait on it.
    applied: watch::Sender<u64>,
    /// The generation writes go to; `None` until known.
    generation: Mutex<Option<Generation>>,
    /// The node's lease (0: none yet).
    lease: AtomicI64,
    /// The id of the etcd cluster last followed (0: none yet).
    pub(crate) cluster: AtomicU64,
    /// The content of the generation this node's replace-all is about to switch to (its id,
    /// host → entry text): the follower applies it without reading it back.
    prepared: Mutex<Option<(String, Content)>>,
    pub metrics: FleetMetrics,
    pub(crate) engine: EngineHandle,
    pub(crate) store: SharedStore,
}

/// The fleet's background tasks; [`Tasks::stop`] ends them.
pub struct Tasks {
    stop: watch::Sender<bool>,
    set: tokio::task::JoinSet<()>,
}

impl Tasks {
    /// Stops the follower and the registry (revoking the lease, so that `wait=all` no
    /// longer counts this node), waiting up to `grace`.
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        self.set.abort_all();
    }
}

impl Fleet {
    /// The fleet state of a writer whose local store and engine are running, and its
    /// follower and registry tasks (they connect and retry by themselves: a node starts,
    /// and routes from its table, while etcd is down).
    pub async fn start(
        config: FleetConfig,
        store: SharedStore,
        engine: EngineHandle,
    ) -> Result<(Arc<Fleet>, Tasks), crate::store::StoreError> {
        let s = store.clone();
        let applied = tokio::task::spawn_blocking(move || s.revision())
            .await
            .map_err(|e| {
                crate::store::StoreError::new(crate::store::Fault::Other, "revision", e)
            })??;
        let fleet = Arc::new(Fleet {
            layout: Layout::new(&config.prefix),
            config,
            client: tokio::sync::Mutex::new(None),
            applied: watch::Sender::new(applied),
            generation: Mutex::new(None),
            lease: AtomicI64::new(0),
            cluster: AtomicU64::new(0),
            prepared: Mutex::new(None),
            metrics: FleetMetrics::default(),
            engine,
            store,
        });
        fleet
            .metrics
            .applied_revision
            .store(applied, Ordering::Relaxed);
        let (stop, stopped) = watch::channel(false);
        let mut set = tokio::task::JoinSet::new();
        set.spawn(follower::run(fleet.clone(), stopped.clone()));
        set.spawn(registry::run(fleet.clone(), stopped));
        Ok((fleet, Tasks { stop, set }))
    }

    /// The client, connecting on first use.
    pub(crate) async fn client(&self) -> Result<Client, FleetError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = self.config.connect();
        let c = tokio::time::timeout(self.config.dial_timeout, connect)
            .await
            .map_err(|_| FleetError::Unavailable("connecting to etcd timed out".into()))??;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Notes an etcd failure (for readiness) and passes it on.
    pub(crate) fn failed<T>(&self, e: impl Into<FleetError>) -> Result<T, FleetError> {
        let e = e.into();
        if matches!(e, FleetError::Unavailable(_)) {
            self.metrics
                .reachable
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        Err(e)
    }

    /// The revision the local table reflects.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Records that the local store and table now reflect `revision`.
    pub(crate) fn set_applied(&self, revision: u64) {
        self.applied.send_if_modified(|a| {
            let newer = revision > *a;
            if newer {
                *a = revision;
            }
            newer
        });
        self.metrics
            .applied_revision
            .fetch_max(revision, Ordering::Relaxed);
    }

    /// A receiver of the applied revision, for waiting on it.
    pub(crate) fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Waits until the local table reflects `revision`, up to `timeout`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<(), FleetError> {
        let mut rx = self.applied.subscribe();
        let applied = tokio::time::timeout(timeout, async {
            rx.wait_for(|a| *a >= revision).await.is_ok()
        })
        .await;
        match applied {
            Ok(true) => Ok(()),
            _ => Err(FleetError::NotApplied {
                revision,
                pending: vec![self.config.node_name.clone()],
            }),
        }
    }

    pub(crate) fn generation(&self) -> Option<Generation> {
        self.generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_generation(&self, g: Generation) {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(g);
    }

    /// Offers the content of generation `id` (or withdraws it: `None`).
    pub(crate) fn set_prepared(&self, prepared: Option<(String, Content)>) {
        *self.prepared.lock().unwrap_or_else(PoisonError::into_inner) = prepared;
    }

    /// The content offered for generation `id`, if it is that one's (anything else offered is
    /// dropped: stale).
    pub(crate) fn take_prepared(&self, id: &str) -> Option<Content> {
        let taken = self
            .prepared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        taken.filter(|(g, _)| g == id).map(|(_, e)| e)
    }

    pub(crate) fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    pub(crate) fn set_lease(&self, id: i64) {
        self.lease.store(id, Ordering::Relaxed);
    }

    /// Whether writes can be accepted: this node has caught up with etcd once since it
    /// started (else a write would wait for that before its answer), and etcd answered the
    /// last request.
    pub fn writable(&self) -> bool {
        self.metrics.bootstrap_ms.load(Ordering::Relaxed) > 0
            && self.metrics.reachable.load(Ordering::Relaxed)
    }

    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// Waits until every live node has applied `revision` (see `registry`).
    pub async fn wait_all(&self, revision: u64, timeout: Duration) -> Result<(), FleetError> {
        registry::wait_all(self, revision, timeout).await
    }
}
