//! Replace-all in fleet mode, at any size, without ever writing or deleting a million keys in
//! one request:
//!
//! 1. take the replace lock (a key under this node's lease: one replace-all at a time in the
//!    fleet; a node that dies releases it when its lease expires); the lock's revision names
//!    the new generation;
//! 2. remove what an interrupted replace-all left (the generation named by `meta/staging`,
//!    or the one still named by `meta/retired`), then name the new one in `meta/staging`;
//! 3. stage the entries under the new generation, [`MAX_TXN_OPS`] puts per transaction (and
//!    under a byte budget), a few transactions in flight; followers ignore these keys;
//! 4. flip the generation key to the new id by compare-and-swap, in one transaction that also
//!    moves the old id to `meta/retired` and clears `meta/staging`: this is the replace-all's
//!    revision, where every follower switches (a full re-read applied as a diff);
//! 5. release the lock, delete the old generation bucket by bucket (a 256th at a time) in the
//!    background, and acknowledge once this node applied the flip.

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use shm_layout::Host;

use crate::route::Route;

use super::follower::generation_of;
use super::keys::{Layout, BUCKETS};
use super::writes::same_generation;
use super::{Fleet, FleetError, Written, MAX_TXN_OPS};
use crate::engine::Outcome;

/// Staging transactions in flight.
const STAGING_IN_FLIGHT: usize = 32;
/// Bytes of keys and values per staging transaction (etcd refuses requests over ~1.5 MiB).
const STAGING_BYTES: usize = 1024 * 1024;
/// The least time a replace-all waits for this node to apply it (a re-read of a million
/// entries takes seconds).
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn replace_all(
    fleet: &Fleet,
    entries: Vec<(Host, Route)>,
) -> Result<Written, FleetError> {
    let mut client = fleet.client().await?;
    let lease = fleet.lease();
    if lease == 0 {
        return Err(FleetError::Unavailable(
            "this node holds no lease yet (is etcd reachable?)".into(),
        ));
    }
    let lock = fleet.layout.replace_lock();
    let take = Txn::new()
        .when([Compare::version(lock.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            lock.clone(),
            fleet.node_name(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(lock.clone(), None)]);
    let resp = match client.txn(take).await {
        Ok(r) => r,
        Err(e) => return fleet.failed(e),
    };
    if !resp.succeeded() {
        let holder = match resp.op_responses().first() {
            Some(TxnOpResponse::Get(g)) => g
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
            _ => None,
        };
        return Err(FleetError::Conflict(format!(
            "another replace-all is in progress (node {}); try again when it is done",
            holder.as_deref().unwrap_or("?")
        )));
    }
    let id = resp.header().map_or(0, |h| h.revision()).to_string();
    let n = entries.len() as u64;
    let staged = stage_and_flip(fleet, &mut client, &id, entries).await;
    let layout = fleet.layout.clone();
    match staged {
        Ok((revision, old)) => {
            let _ = client.delete(layout.replace_lock(), None).await;
            // The old generation goes in the background; `meta/retired` names it until it is
            // gone, so the next replace-all finishes the job if this one is interrupted.
            tokio::spawn(async move {
                if let Err(e) = retire(&mut client, &layout, &old).await {
                    tracing::warn!(error = ?e, generation = %old,
                        "deleting the replaced generation failed; the next replace-all finishes it");
                }
            });
            fleet
                .wait_applied(revision, fleet.config.request_timeout.max(APPLY_WAIT))
                .await?;
            Ok(Written {
                outcome: Outcome::Replaced { entries: n },
                revision,
            })
        }
        Err(e) => {
            fleet.set_prepared(None);
            // A flip whose answer was lost may have committed: the staged generation is
            // deleted only if it is not the current one.
            if let Ok(g) = client.get(layout.generation(), None).await {
                if generation_of(&g).id != id {
                    let _ = delete_generation(&mut client, &layout, &id).await;
                }
            }
            let _ = client.delete(layout.replace_lock(), None).await;
            Err(e)
        }
    }
}

/// Steps 2–4: returns the flip's revision and the replaced generation's id.
async fn stage_and_flip(
    fleet: &Fleet,
    client: &mut Client,
    id: &str,
    entries: Vec<(Host, Route)>,
) -> Result<(u64, String), FleetError> {
    let layout = &fleet.layout;
    let resp = client.get(layout.generation(), None).await?;
    let current = generation_of(&resp);
    for key in [layout.staging(), layout.retired()] {
        let resp = client.get(key.clone(), None).await?;
        if let Some(kv) = resp.kvs().first() {
            let left = String::from_utf8_lossy(kv.value()).into_owned();
            if left != current.id {
                tracing::info!(generation = %left, "removing what an interrupted replace-all left");
                delete_generation(client, layout, &left).await?;
            }
            client.delete(key, None).await?;
        }
    }
    client.put(layout.staging(), id, None).await?;
    let mut txns = tokio::task::JoinSet::new();
    let mut batch: Vec<TxnOp> = Vec::new();
    let mut bytes = 0;
    let mut content = std::collections::HashMap::with_capacity(entries.len());
    let mut entries = entries.into_iter().peekable();
    while let Some((h, b)) = entries.next() {
        let key = layout.host(id, h.as_str());
        bytes += key.len() + b.as_str().len();
        batch.push(TxnOp::put(key, b.as_str(), None));
        content.insert(h.into_string(), b.as_str().as_bytes().to_vec());
        let full = batch.len() == MAX_TXN_OPS || bytes >= STAGING_BYTES;
        if full || entries.peek().is_none() {
            if txns.len() >= STAGING_IN_FLIGHT {
                finish_one(&mut txns).await?;
            }
            let mut c = client.clone();
            let ops = std::mem::take(&mut batch);
            bytes = 0;
            txns.spawn(async move { c.txn(Txn::new().and_then(ops)).await.map(drop) });
        }
    }
    while !txns.is_empty() {
        finish_one(&mut txns).await?;
    }
    // The follower applies this content when it sees the switch (withdrawn if it fails).
    fleet.set_prepared(Some((id.to_string(), content)));
    let flip = Txn::new()
        .when([same_generation(layout, &current)])
        .and_then([
            TxnOp::put(layout.generation(), id, None),
            TxnOp::put(layout.retired(), current.id.as_str(), None),
            TxnOp::delete(layout.staging(), None),
        ]);
    let resp = client.txn(flip).await?;
    if !resp.succeeded() {
        return Err(FleetError::Conflict(
            "the generation changed during the replace-all; try again".into(),
        ));
    }
    let revision = resp.header().map_or(0, |h| h.revision());
    fleet.metrics.saw(revision);
    Ok((revision as u64, current.id))
}

async fn finish_one(
    txns: &mut tokio::task::JoinSet<Result<(), etcd_client::Error>>,
) -> Result<(), FleetError> {
    match txns.join_next().await {
        Some(r) => Ok(r.map_err(|e| FleetError::Unavailable(e.to_string()))??),
        None => Ok(()),
    }
}

/// Step 5: the old generation deleted, then its name.
async fn retire(client: &mut Client, layout: &Layout, old: &str) -> Result<(), FleetError> {
    delete_generation(client, layout, old).await?;
    let still = Txn::new()
        .when([Compare::value(layout.retired(), CompareOp::Equal, old)])
        .and_then([TxnOp::delete(layout.retired(), None)]);
    client.txn(still).await?;
    Ok(())
}

/// Deletes every host of generation `id`, one bucket per request.
async fn delete_generation(
    client: &mut Client,
    layout: &Layout,
    id: &str,
) -> Result<(), FleetError> {
    for b in 0..BUCKETS {
        client
            .delete(
                layout.bucket(id, b),
                Some(DeleteOptions::new().with_prefix()),
            )
            .await?;
    }
    Ok(())
}
