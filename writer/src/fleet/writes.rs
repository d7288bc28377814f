//! The API's writes in fleet mode: one etcd transaction each, acknowledged once etcd
//! committed it and this node's table applied its revision (read-your-writes).
//!
//! Every transaction compares the generation key's `mod_revision` (or its absence) with the
//! generation the write is for: a write never lands in a generation a replace-all has just
//! retired. On a mismatch the transaction's other branch returns the current generation key,
//! and the write is tried again there.

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use shm_layout::Host;

use crate::route::Route;

use super::follower::generation_of;
use super::keys::Layout;
use super::{Fleet, FleetError, Generation, MAX_TXN_OPS};
use crate::engine::{count_batch, Op, Outcome};

/// How often a write is tried again after the generation changed under it, or its etcd
/// member was lost.
const ATTEMPTS: usize = 5;
/// How many of those attempts may follow a lost member, and the pause before each.
const LOST_MEMBER_RETRIES: usize = 2;
const LOST_MEMBER_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether a request failed because its member could not be reached (a connection refused or
/// reset: the balancer tries another member next), rather than timing out or being refused.
/// Sending the transaction again is what any etcd client does: a put is idempotent; if the
/// lost member had committed it before dying, the second answer reports it as an update (a
/// delete: absent), and the state is the same.
fn member_lost(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// What a fleet write did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub outcome: Outcome,
    /// The etcd revision it was committed at (for a write that changed nothing, the revision
    /// it was checked at).
    pub revision: u64,
}

/// The comparison a write to generation `g` makes.
pub(super) fn same_generation(layout: &Layout, g: &Generation) -> Compare {
    match g.mod_revision {
        0 => Compare::version(layout.generation(), CompareOp::Equal, 0),
        m => Compare::mod_revision(layout.generation(), CompareOp::Equal, m),
    }
}

impl Fleet {
    /// Writes `op` into etcd and waits until this node applied it.
    pub async fn write(&self, op: Op) -> Result<Written, FleetError> {
        match op {
            Op::ReplaceAll(entries) => super::replace::replace_all(self, entries).await,
            op => self.transaction(&op).await,
        }
    }

    /// The generation writes go to: as the follower last saw it, else read.
    pub(super) async fn current_generation(&self) -> Result<Generation, FleetError> {
        if let Some(g) = self.generation() {
            return Ok(g);
        }
        let mut client = self.client().await?;
        let resp = match client.get(self.layout.generation(), None).await {
            Ok(r) => r,
            Err(e) => return self.failed(e),
        };
        let g = generation_of(&resp);
        self.set_generation(g.clone());
        Ok(g)
    }

    async fn transaction(&self, op: &Op) -> Result<Written, FleetError> {
        let changes = changes_of(op);
        if changes.len() > MAX_TXN_OPS {
            return Err(FleetError::TooLarge(format!(
                "{} changes: in fleet mode a batch is one etcd transaction of at most \
                 {MAX_TXN_OPS} changes; split it, or use PUT to replace everything",
                changes.len()
            )));
        }
        let mut client = self.client().await?;
        let mut lost = 0;
        for _ in 0..ATTEMPTS {
            let g = self.current_generation().await?;
            let ops: Vec<TxnOp> = changes
                .iter()
                .map(|(h, b)| {
                    let key = self.layout.host(&g.id, h.as_str());
                    match b {
                        Some(b) => {
                            TxnOp::put(key, b.as_str(), Some(PutOptions::new().with_prev_key()))
                        }
                        None => TxnOp::delete(key, Some(DeleteOptions::new())),
                    }
                })
                .collect();
            let txn = Txn::new()
                .when([same_generation(&self.layout, &g)])
                .and_then(ops)
                .or_else([TxnOp::get(self.layout.generation(), None)]);
            let resp = match client.txn(txn).await {
                Ok(r) => r,
                // A member that just died: the client's balancer moves to another one.
                Err(e) if lost < LOST_MEMBER_RETRIES && member_lost(&e) => {
                    lost += 1;
                    tracing::debug!(error = %e, "etcd member lost; the write is sent again");
                    tokio::time::sleep(LOST_MEMBER_PAUSE).await;
                    continue;
                }
                Err(e) => return self.failed(e),
            };
            let revision = resp.header().map_or(0, |h| h.revision());
            self.metrics.saw(revision);
            let answers = resp.op_responses();
            if !resp.succeeded() {
                // A replace-all switched the generation: write into the new one.
                if let Some(TxnOpResponse::Get(r)) = answers.first() {
                    self.set_generation(generation_of(r));
                }
                continue;
            }
            let existed: Vec<bool> = answers
                .iter()
                .map(|r| match r {
                    TxnOpResponse::Put(p) => p.prev_key().is_some(),
                    TxnOpResponse::Delete(d) => d.deleted() > 0,
                    _ => false,
                })
                .collect();
            let changed = changes
                .iter()
                .zip(&existed)
                .any(|((_, b), e)| b.is_some() || *e);
            let revision = revision as u64;
            if changed {
                self.wait_applied(revision, self.config.request_timeout)
                    .await?;
            }
            return Ok(Written {
                outcome: outcome_of(op, existed),
                revision,
            });
        }
        Err(FleetError::Conflict(
            "the generation kept changing (replace-alls in a row); try again".into(),
        ))
    }
}

/// The changes of a write in the order they are sent: deletes first, then upserts (as the
/// engine applies a batch).
fn changes_of(op: &Op) -> Vec<(&Host, Option<&Route>)> {
    match op {
        Op::Upsert(h, b) => vec![(h, Some(b))],
        Op::Delete(h) => vec![(h, None)],
        Op::Batch { upserts, deletes } => deletes
            .iter()
            .map(|h| (h, None))
            .chain(upserts.iter().map(|(h, b)| (h, Some(b))))
            .collect(),
        Op::ReplaceAll(_) | Op::Follow { .. } => Vec::new(),
    }
}

/// The answer to `op`, given whether each of its changes' hosts was stored before.
fn outcome_of(op: &Op, existed: Vec<bool>) -> Outcome {
    let mut it = existed.into_iter();
    let mut next = || it.next().unwrap_or(false);
    match op {
        Op::Upsert(..) if next() => Outcome::Updated,
        Op::Upsert(..) => Outcome::Created,
        Op::Delete(_) if next() => Outcome::Deleted,
        Op::Delete(_) => Outcome::Absent,
        Op::Batch { upserts, deletes }
        | Op::Follow {
            upserts, deletes, ..
        } => Outcome::Batch(count_batch(upserts, deletes, &mut next)),
        Op::ReplaceAll(entries) => Outcome::Replaced {
            entries: entries.len() as u64,
        },
    }
}
