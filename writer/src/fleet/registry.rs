//! The node registry: each writer holds a lease and keeps `P` `nodes/<node>` under it, its
//! value the revision its table applied. A node that stops cleanly revokes its lease; one
//! that dies disappears when its lease expires (its time to live, 10 s).
//!
//! `wait=all` ([`wait_all`]) reads the registry and watches it until every registered node
//! reports at least the write's revision, or the timeout passes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Fleet, FleetError};

/// The least time between two updates of this node's applied revision.
const UPDATE_EVERY: Duration = Duration::from_millis(5);

/// A node's registration.
#[derive(Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node: String,
    /// The revision its table applied.
    pub applied: u64,
}

/// Keeps this node registered until `stop` is set, then revokes its lease.
pub(super) async fn run(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&fleet, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                fleet.set_lease(0);
                fleet.metrics.registered.store(false, Ordering::Relaxed);
                tracing::warn!(error = ?e, retry_in = ?backoff, "the node's registration failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn session(fleet: &Fleet, stop: &mut watch::Receiver<bool>) -> Result<(), FleetError> {
    let mut client = fleet.client().await?;
    let ttl = fleet.config.lease_ttl.as_secs().max(2) as i64;
    let lease = client.lease_grant(ttl, None).await?.id();
    fleet.set_lease(lease);
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let key = fleet.layout.node(fleet.node_name());
    let mut applied = fleet.watch_applied();
    let record = |applied: u64| {
        serde_json::to_string(&NodeRecord {
            node: fleet.node_name().to_string(),
            applied,
        })
        .unwrap_or_default()
    };
    let put = PutOptions::new().with_lease(lease);
    let current = *applied.borrow_and_update();
    client
        .put(key.clone(), record(current), Some(put.clone()))
        .await?;
    fleet.metrics.registered.store(true, Ordering::Relaxed);
    tracing::info!(node = fleet.node_name(), lease, "registered in the fleet");
    let mut renew = tokio::time::interval(Duration::from_secs((ttl / 3).max(1) as u64));
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = tokio::time::timeout(
                    fleet.config.request_timeout,
                    client.lease_revoke(lease),
                ).await;
                fleet.metrics.registered.store(false, Ordering::Relaxed);
                return Ok(());
            }
            _ = renew.tick() => keeper.keep_alive().await?,
            answer = answers.message() => match answer? {
                Some(a) if a.ttl() > 0 => {}
                _ => return Err(FleetError::Unavailable("the node's lease expired".into())),
            },
            changed = applied.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let a = *applied.borrow_and_update();
                client.put(key.clone(), record(a), Some(put.clone())).await?;
                // At most one update per interval: under a write storm the registry must not
                // double etcd's load per node; changes meanwhile are folded into the next.
                tokio::time::sleep(UPDATE_EVERY).await;
            }
        }
    }
}

/// Waits until every registered node has applied `revision`; on timeout, names the ones
/// that have not.
pub(super) async fn wait_all(
    fleet: &Fleet,
    revision: u64,
    timeout: Duration,
) -> Result<(), FleetError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut client = fleet.client().await?;
    let prefix = fleet.layout.nodes();
    let resp = client
        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut nodes: HashMap<String, u64> = HashMap::new();
    for kv in resp.kvs() {
        if let Ok(r) = serde_json::from_slice::<NodeRecord>(kv.value()) {
            nodes.insert(String::from_utf8_lossy(kv.key()).into_owned(), r.applied);
        }
    }
    let pending = |nodes: &HashMap<String, u64>| -> Vec<String> {
        let mut p: Vec<String> = nodes
            .iter()
            .filter(|(_, a)| **a < revision)
            .map(|(k, _)| k.rsplit('/').next().unwrap_or(k).to_string())
            .collect();
        p.sort();
        p
    };
    if pending(&nodes).is_empty() {
        return Ok(());
    }
    let from = resp.header().map_or(0, |h| h.revision()) + 1;
    let opts = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client.watch(prefix, Some(opts)).await?;
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(m) => m?,
            Err(_) => {
                return Err(FleetError::NotApplied {
                    revision,
                    pending: pending(&nodes),
                })
            }
        };
        let Some(msg) = msg else {
            return Err(FleetError::Unavailable("the registry's watch ended".into()));
        };
        for ev in msg.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match ev.event_type() {
                EventType::Delete => {
                    nodes.remove(&key);
                }
                EventType::Put => {
                    if let Ok(r) = serde_json::from_slice::<NodeRecord>(kv.value()) {
                        nodes.insert(key, r.applied);
                    }
                }
            }
        }
        if pending(&nodes).is_empty() {
            return Ok(());
        }
    }
}
