//! Following etcd into the local store and table.
//!
//! A session starts by reading the generation key: its answer's revision and the key's
//! `mod_revision` say whether the local state (the store's recorded revision `A`) can be
//! resumed — the generation did not change after `A` and etcd is not behind `A` — or must be
//! re-read in full. Then one watch on `P` `data/` from `A + 1`: each answer's events of the
//! current generation become one engine op (latest event per host wins), committed with the
//! answer's revision and published before the applied revision moves on. A new generation
//! (a replace-all), a compacted start revision or a cancelled watch ends the session with a
//! full re-read; an error ends it with a resume from the revision applied, never from "now".
//!
//! A full re-read takes the generation key's answer revision `R`, reads that generation's 256
//! buckets at `R` (a few at a time, paged), compares them with the local store and hands the
//! engine only the difference, recorded with `R`; the watch then starts at `R + 1`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, GetResponse, KvClient, WatchOptions};
use shm_layout::Host;

use crate::route::{self, Route};
use tokio::sync::watch;

use super::keys::{prefix_end, DataKey, BUCKETS, FIRST_GENERATION};
use super::{Fleet, FleetError, Generation};
use crate::engine::Op;

/// Buckets read at once during a full re-read.
const READS_IN_FLIGHT: usize = 16;
/// Keys per page of one bucket.
const PAGE: i64 = 10_000;
/// The largest answer accepted from etcd (a page of large entries).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// How often the watch is asked for its progress (for the lag metric).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Waits between failed sessions: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// Why a session ended without an error.
enum End {
    Stopped,
    /// Watch again from the revision applied.
    Resume,
    /// Re-read everything, for this reason.
    Reread(&'static str),
}

/// Follows etcd until `stop` is set.
pub(super) async fn run(fleet: Arc<Fleet>, mut stop: watch::Receiver<bool>) {
    let started = Instant::now();
    let mut reread: Option<&'static str> = None;
    let mut backoff = BACKOFF.0;
    loop {
        if *stop.borrow() {
            return;
        }
        let watched = fleet.metrics.watches.load(Ordering::Relaxed);
        let ended = session(&fleet, reread.take(), &mut stop, started).await;
        if fleet.metrics.watches.load(Ordering::Relaxed) != watched {
            // The session got as far as watching: a new failure starts the back-off afresh
            // (a member killed under a working watch is left at once).
            backoff = BACKOFF.0;
        }
        match ended {
            Ok(End::Stopped) => return,
            Ok(End::Resume) => backoff = BACKOFF.0,
            Ok(End::Reread(why)) => {
                reread = Some(why);
                backoff = BACKOFF.0;
            }
            Err(e) => {
                if matches!(e, FleetError::Unavailable(_)) {
                    fleet.metrics.reachable.store(false, Ordering::Relaxed);
                }
                tracing::warn!(error = ?e, applied = fleet.applied(), retry_in = ?backoff,
                    "following etcd failed; resuming from the applied revision");
                fleet.metrics.watch_restarts.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// The generation named by an answer to a get of the generation key.
pub(super) fn generation_of(resp: &GetResponse) -> Generation {
    match resp.kvs().first() {
        Some(kv) => Generation {
            id: String::from_utf8_lossy(kv.value()).into_owned(),
            mod_revision: kv.mod_revision(),
        },
        None => Generation {
            id: FIRST_GENERATION.into(),
            mod_revision: 0,
        },
    }
}

fn revision_of(resp: &GetResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

/// One connection's worth of following: see the module docs.
async fn session(
    fleet: &Arc<Fleet>,
    mut reread: Option<&'static str>,
    stop: &mut watch::Receiver<bool>,
    started: Instant,
) -> Result<End, FleetError> {
    let client = fleet.client().await?;
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE);
    let resp = kv.get(fleet.layout.generation(), None).await?;
    let now = revision_of(&resp);
    fleet.metrics.saw(now);
    let cluster = resp.header().map_or(0, |h| h.cluster_id());
    let known = fleet.cluster.swap(cluster, Ordering::Relaxed);
    let mut generation = generation_of(&resp);
    let applied = fleet.applied() as i64;
    if reread.is_none() {
        if applied == 0 {
            reread = Some("bootstrap: nothing applied yet");
        } else if known != 0 && known != cluster {
            reread = Some("etcd's cluster id changed: another or a rebuilt cluster");
        } else if now < applied {
            reread = Some("etcd is behind the applied revision: another or a restored cluster");
        } else if generation.mod_revision > applied {
            reread = Some("a new generation since the applied revision");
        }
    }
    if let Some(why) = reread {
        generation = full_reread(fleet, &mut kv, why).await?;
    } else {
        fleet.set_generation(generation.clone());
    }
    let start = fleet.applied() as i64 + 1;
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    // One answer can batch many revisions' events (a replace-all's staging): no 4 MiB cap.
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE)
        .watch(fleet.layout.data(), Some(opts))
        .await?;
    fleet.metrics.watches.fetch_add(1, Ordering::Relaxed);
    tracing::info!(from = start, generation = %generation.id, "watching etcd");
    // Caught up once everything up to the revision read at the start is applied.
    let caught_up = |fleet: &Fleet| {
        let through = fleet
            .applied()
            .max(fleet.metrics.progress_revision.load(Ordering::Relaxed));
        if through >= now as u64 {
            let ms = started.elapsed().as_millis().max(1) as u64;
            let m = &fleet.metrics.bootstrap_ms;
            let _ = m.compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed);
        }
    };
    caught_up(fleet);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    loop {
        let resp = tokio::select! {
            _ = stop.changed() => return Ok(End::Stopped),
            _ = progress.tick() => {
                stream.request_progress().await?;
                continue;
            }
            msg = stream.message() => msg?
                .ok_or_else(|| FleetError::Unavailable("the watch stream ended".into()))?,
        };
        if resp.compact_revision() > 0 {
            return Ok(End::Reread("the watch's start revision was compacted"));
        }
        if resp.canceled() {
            tracing::warn!(reason = resp.cancel_reason(), "etcd cancelled the watch");
            return Ok(End::Reread("etcd cancelled the watch"));
        }
        let revision = resp.header().map_or(0, |h| h.revision());
        fleet.metrics.saw(revision);
        if resp.events().is_empty() {
            if !resp.created() {
                // A progress notice: every event up to `revision` was sent.
                fleet
                    .metrics
                    .progress_revision
                    .fetch_max(revision.max(0) as u64, Ordering::Relaxed);
                caught_up(fleet);
            }
            continue;
        }
        // Latest event per host wins; `None` is a delete.
        let mut changes: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
        let mut last = 0;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            last = last.max(kv.mod_revision());
            let Ok(key) = kv.key_str() else { continue };
            match fleet.layout.parse(key) {
                DataKey::Generation => {
                    let id = match ev.event_type() {
                        EventType::Put => String::from_utf8_lossy(kv.value()).into_owned(),
                        EventType::Delete => FIRST_GENERATION.into(),
                    };
                    if id == generation.id {
                        continue;
                    }
                    // This node's own replace-all: its content is known. The watch then
                    // resumes after the switch; any other switch is read from etcd.
                    if let Some(entries) = fleet.take_prepared(&id) {
                        let next = Generation {
                            id,
                            mod_revision: kv.mod_revision(),
                        };
                        apply_own_replace(fleet, next, entries).await?;
                        return Ok(End::Resume);
                    }
                    return Ok(End::Reread("a replace-all switched the generation"));
                }
                DataKey::Host {
                    generation: g,
                    host,
                } if g == generation.id => {
                    let v = match ev.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    };
                    changes.insert(host, v);
                }
                _ => {}
            }
        }
        if !changes.is_empty() {
            let (upserts, deletes) = split(changes.into_iter());
            apply(fleet, upserts, deletes, last as u64).await?;
        }
        fleet.set_applied(last as u64);
        caught_up(fleet);
    }
}

/// Parsed upserts and deletes from `(host, value or None)`; an entry that does not parse
/// (written by a newer version, or by hand) is skipped with a warning, as a table build does.
fn split<'a>(
    changes: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> (Vec<(Host, Route)>, Vec<Host>) {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (h, v) in changes {
        let Ok(host) = Host::parse(h) else {
            tracing::warn!(host = h, "skipping an invalid host key in etcd");
            continue;
        };
        match v {
            None => deletes.push(host),
            Some(v) => match std::str::from_utf8(v).ok().map(route::decode) {
                Some(Ok(b)) => upserts.push((host, b)),
                _ => tracing::warn!(host = h, "skipping an invalid entry in etcd"),
            },
        }
    }
    (upserts, deletes)
}

/// Commits and publishes a change set through the engine, recorded with `revision`.
async fn apply(
    fleet: &Fleet,
    upserts: Vec<(Host, Route)>,
    deletes: Vec<Host>,
    revision: u64,
) -> Result<(), FleetError> {
    let op = Op::Follow {
        upserts,
        deletes,
        revision,
    };
    fleet.engine.submit(op).await.map_err(FleetError::Engine)?;
    Ok(())
}

/// Reads the whole current generation at one revision and applies it as a diff.
async fn full_reread(
    fleet: &Arc<Fleet>,
    kv: &mut KvClient,
    why: &'static str,
) -> Result<Generation, FleetError> {
    let t0 = Instant::now();
    tracing::info!(reason = why, "reading every entry from etcd");
    let resp = kv.get(fleet.layout.generation(), None).await?;
    let revision = revision_of(&resp);
    let generation = generation_of(&resp);
    let entries = read_generation(fleet, kv, &generation.id, revision).await?;
    let read = t0.elapsed();
    let n = entries.len();
    let (changed, removed) = apply_snapshot(fleet, entries, revision as u64).await?;
    fleet.set_generation(generation.clone());
    let took = t0.elapsed();
    fleet.metrics.full_rereads.fetch_add(1, Ordering::Relaxed);
    fleet
        .metrics
        .reread_ms
        .store(took.as_millis() as u64, Ordering::Relaxed);
    tracing::info!(entries = n, changed, removed, revision, generation = %generation.id,
        ?read, ?took, "applied a full read of etcd");
    Ok(generation)
}

/// Makes the local store and table hold exactly `entries` (host → entry text), as of
/// `revision`: only the difference with the store is written and published. Returns how many
/// entries changed and how many were removed.
async fn apply_snapshot(
    fleet: &Fleet,
    entries: HashMap<String, Vec<u8>>,
    revision: u64,
) -> Result<(usize, usize), FleetError> {
    let store = fleet.store.clone();
    let (upserts, deletes) = tokio::task::spawn_blocking(move || {
        let mut etcd = entries;
        let mut changed: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        store.for_each(&mut |h, b| {
            match etcd.remove(h) {
                Some(v) if v == b.as_bytes() => {}
                Some(v) => changed.push((h.to_string(), Some(v))),
                None => changed.push((h.to_string(), None)),
            }
            true
        })?;
        changed.extend(etcd.into_iter().map(|(h, v)| (h, Some(v))));
        // In host order: the store's B-tree takes a million inserts in order several times
        // faster than in the hash map's order.
        changed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let it = changed.iter().map(|(h, v)| (h.as_str(), v.as_deref()));
        Ok::<_, crate::store::StoreError>(split(it))
    })
    .await
    .map_err(|e| FleetError::Unavailable(e.to_string()))?
    .map_err(|e| FleetError::Engine(crate::engine::EngineError::Store(e)))?;
    let (changed, removed) = (upserts.len(), deletes.len());
    apply(fleet, upserts, deletes, revision).await?;
    fleet.set_applied(revision);
    Ok((changed, removed))
}

/// A replace-all of this node switched the generation to `generation` at `revision`: its
/// content, which this node staged itself, is applied without reading it back from etcd.
async fn apply_own_replace(
    fleet: &Fleet,
    generation: Generation,
    entries: HashMap<String, Vec<u8>>,
) -> Result<(), FleetError> {
    let t0 = Instant::now();
    let n = entries.len();
    let revision = generation.mod_revision as u64;
    let (changed, removed) = apply_snapshot(fleet, entries, revision).await?;
    tracing::info!(entries = n, changed, removed, revision, generation = %generation.id,
        took = ?t0.elapsed(), "applied this node's replace-all");
    fleet.set_generation(generation);
    Ok(())
}

/// Every host of `generation` at `revision`: its buckets read [`READS_IN_FLIGHT`] at a time.
async fn read_generation(
    fleet: &Arc<Fleet>,
    kv: &mut KvClient,
    generation: &str,
    revision: i64,
) -> Result<HashMap<String, Vec<u8>>, FleetError> {
    let mut all = HashMap::new();
    let mut reads = tokio::task::JoinSet::new();
    let mut next = 0u16;
    loop {
        while reads.len() < READS_IN_FLIGHT && next < BUCKETS {
            let prefix = fleet.layout.bucket(generation, next);
            reads.spawn(read_prefix(kv.clone(), prefix, revision));
            next += 1;
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        let kvs = done.map_err(|e| FleetError::Unavailable(e.to_string()))??;
        for (k, v) in kvs {
            if let DataKey::Host { host, .. } = fleet.layout.parse(&k) {
                all.insert(host.to_string(), v);
            }
        }
    }
    Ok(all)
}

/// Every key and value under `prefix` at `revision`, a page at a time.
async fn read_prefix(
    mut kv: KvClient,
    prefix: String,
    revision: i64,
) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
    let end = prefix_end(&prefix);
    let mut from = prefix.into_bytes();
    let mut out = Vec::new();
    loop {
        let opts = GetOptions::new()
            .with_range(end.clone())
            .with_revision(revision)
            .with_limit(PAGE);
        let mut resp = kv.get(from.clone(), Some(opts)).await?;
        let more = resp.more();
        let kvs = resp.take_kvs();
        for kv in kvs {
            let (k, v) = kv.into_key_value();
            from = k.clone();
            out.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        if !more {
            return Ok(out);
        }
        from.push(0);
    }
}
