//! Fleet mode under faults (`RELIABILITY.md`, "Fleet"): two nodes on a real 3-member etcd
//! cluster, clients requesting hosts that do not change through both nodes' nginx the whole
//! time. Each fault must lose no acknowledged write and fail no request for those hosts; after
//! each, every node's store and table hold exactly etcd's entries.

use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

use crate::fleet::{entry, fleet};

/// The steady hosts: written once through `a`, routed by both nodes to `up` before the fault.
fn steady(a: &Node, b: &Node, up: &Upstream) -> Vec<String> {
    let hosts: Vec<String> = (0..10).map(|i| format!("steady-{i}.example")).collect();
    let r = upsert_all(&a.writer.socket, &hosts, &up.addr());
    assert_eq!(r.status, 200, "{r:?}");
    for n in [a, b] {
        for h in &hosts {
            n.nginx.wait_every_worker(h, body_is(up));
        }
    }
    hosts
}

/// Clients on both nodes' nginx for `hosts` (routed to `up`).
fn loads(a: &Node, b: &Node, hosts: &[String], up: &Upstream) -> [Load; 2] {
    [a, b].map(|n| Load::start(n.nginx.port, hosts, &up.name, 2))
}

/// Stops the clients: no request may have failed.
fn no_failed_request(loads: [Load; 2], fault: &str) -> u64 {
    let mut total = 0;
    for (l, node) in loads.into_iter().zip(["a", "b"]) {
        let (ok, failed) = l.finish();
        assert_eq!(
            failed,
            0,
            "{fault}: {failed} of {} requests through {node} failed",
            ok + failed
        );
        assert!(ok > 0, "{fault}: no request through {node}");
        total += ok;
    }
    total
}

/// How the writes of [`writes`] were answered besides 2xx.
#[derive(Default, Debug, Clone, Copy)]
struct Refusals {
    /// `503 store_unavailable`: nothing written; retried.
    unavailable: u32,
    /// `504 wait_timeout`: committed in etcd, not yet applied by this node within the request
    /// timeout; counted as acknowledged (etcd holds it, every node will apply it).
    late: u32,
}

/// `count` upserts of `prefix-N.example` alternately through each node's socket, recorded in
/// `model`. Each must be acknowledged: a `503 store_unavailable` is retried (up to 10 times a
/// write), a `504 wait_timeout` says the write is committed; both are counted.
fn writes(nodes: [&Node; 2], prefix: &str, count: usize, model: &mut Acked) -> Refusals {
    let mut refused = Refusals::default();
    for i in 0..count {
        let (h, b) = (
            format!("{prefix}-{}.example", i % 20),
            format!("10.7.{}.{}:80", i / 200, i % 200),
        );
        let node = nodes[i % 2];
        let mut tries = 0;
        loop {
            model.send(vec![(h.clone(), Some(b.clone()))]);
            let r = post_entry(&node.writer.socket, &h, &b);
            let code = error_code(&r);
            if r.status < 300 || (r.status == 504 && code == "wait_timeout") {
                refused.late += u32::from(r.status == 504);
                model.acknowledged();
                break;
            }
            assert!(
                r.status == 503 && code == "store_unavailable" && tries < 10,
                "{prefix} write {i} through {} (try {tries}): {r:?}",
                node.name
            );
            refused.unavailable += 1;
            tries += 1;
            thread::sleep(Duration::from_millis(200));
        }
    }
    refused
}

#[test]
fn fleet_one_etcd_member_killed_writes_go_on() {
    let dir = shared_tempdir();
    let (mut etcd, a, b) = fleet(dir.path());
    let up = Upstream::start("steady");
    let hosts = steady(&a, &b, &up);
    let load = loads(&a, &b, &hosts, &up);
    let mut model = Acked::default();
    writes([&a, &b], "before", 20, &mut model);

    // Each member in turn: writes go on with the other two. Every write is acknowledged in the
    // end; those refused first (503) or answered late (504, committed) are counted and printed
    // (RELIABILITY.md).
    let (mut unavailable, mut late) = (0, 0);
    for member in 0..etcd.len() {
        etcd.kill(member);
        let started = Instant::now();
        let r = writes([&a, &b], &format!("without-m{member}"), 40, &mut model);
        eprintln!(
            "40 writes with member {member} killed: {:?}, {r:?}",
            started.elapsed()
        );
        unavailable += r.unavailable;
        late += r.late;
        etcd.restart(member);
    }
    let routed = no_failed_request(load, "one member killed");
    let entries = assert_converged(&etcd, &[&a, &b], "after the members' kills");
    model.check(&entries, "after the members' kills");
    eprintln!(
        "RELIABILITY fleet_member_killed kills={} acked_writes={} retried_503={unavailable} \
         late_504={late} routed_requests={routed} failed=0",
        etcd.len(),
        model.acks()
    );
}

#[test]
fn fleet_all_etcd_members_stopped_routing_goes_on_writes_503() {
    let dir = shared_tempdir();
    let (mut etcd, a, b) = fleet(dir.path());
    let up = Upstream::start("steady");
    let hosts = steady(&a, &b, &up);
    let load = loads(&a, &b, &hosts, &up);
    let mut model = Acked::default();
    writes([&a, &b], "before", 10, &mut model);

    etcd.stop_all();
    for n in [&a, &b] {
        // A write is refused within the request timeout (3 s) and changes nothing.
        let started = Instant::now();
        let r = socket_api(
            &n.writer.socket,
            "POST",
            "/entries.json",
            Some(&entry("lost.example", "10.0.0.1:80")),
        );
        assert_eq!(r.status, 503, "{}: {r:?}", n.name);
        assert_eq!(error_code(&r), "store_unavailable", "{r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{}: answered after {:?}",
            n.name,
            started.elapsed()
        );
        // Routing is fine, writes are not: /healthz stays 200, /readyz says 503.
        wait_until("readyz to say writes are unavailable", WAIT, || {
            socket_api(&n.writer.socket, "GET", "/readyz", None).status == 503
        });
        let h = socket_api(&n.writer.socket, "GET", "/healthz", None);
        assert_eq!(h.status, 200, "{}: {h:?}", n.name);
    }
    thread::sleep(Duration::from_secs(2));

    etcd.restart_all();
    let started = Instant::now();
    for n in [&a, &b] {
        wait_until("writes to be available again", WAIT, || {
            socket_api(&n.writer.socket, "GET", "/readyz", None).status == 200
        });
    }
    let ready = started.elapsed();
    let r = writes([&a, &b], "after", 10, &mut model);
    eprintln!(
        "etcd healthy again: /readyz 200 after {ready:?}, 10 writes acknowledged after {:?} \
         ({r:?})",
        started.elapsed()
    );
    let routed = no_failed_request(load, "etcd stopped");
    let entries = assert_converged(&etcd, &[&a, &b], "after etcd came back");
    model.check(&entries, "after etcd came back");
    assert!(
        !entries.iter().any(|e| e.0 == "lost.example"),
        "a refused write was applied"
    );
    eprintln!(
        "RELIABILITY fleet_etcd_stopped acked_writes={} ready_after_ms={} \
         retried_503_after={} late_504_after={} routed_requests={routed} failed=0",
        model.acks(),
        ready.as_millis(),
        r.unavailable,
        r.late
    );
}

#[test]
fn fleet_writer_sigkill_during_a_write_storm() {
    let dir = shared_tempdir();
    let (etcd, mut a, b) = fleet(dir.path());
    let up = Upstream::start("steady");
    let hosts = steady(&a, &b, &up);
    let load = loads(&a, &b, &hosts, &up);
    let kills = env_count("SB_FLEET_KILLS", 4);
    let mut rng = seeded_rng();
    eprintln!(
        "writer kills: {kills}, seed {} (SB_RELIABILITY_SEED)",
        rng.0
    );
    let mut model = Acked::default();
    for round in 1..=kills {
        let (socket, seed) = (a.writer.socket.clone(), rng.next_u64());
        let m = std::mem::take(&mut model);
        let client = thread::spawn(move || write_storm(socket, seed, m));
        thread::sleep(Duration::from_millis(100 + rng.below(400)));
        a.kill_writer();
        model = client.join().expect("storm client");
        a.restart_writer();
        let entries = assert_converged(&etcd, &[&a, &b], &format!("round {round}"));
        model.check(&entries, &format!("round {round}"));
    }
    let routed = no_failed_request(load, "writer killed");
    assert!(
        model.acks() >= kills,
        "only {} acknowledged writes",
        model.acks()
    );
    eprintln!(
        "RELIABILITY fleet_writer_kills kills={kills} acked_writes={} routed_requests={routed} failed=0",
        model.acks()
    );
}

#[test]
fn fleet_node_down_while_etcd_compacts_re_reads_and_converges() {
    let dir = shared_tempdir();
    let (etcd, a, mut b) = fleet(dir.path());
    let up = Upstream::start("steady");
    let hosts = steady(&a, &b, &up);
    let load = loads(&a, &b, &hosts, &up);
    let mut model = Acked::default();
    writes([&a, &a], "early", 30, &mut model);

    // b's writer is down (its nginx routes on) while a writes, deletes, and etcd compacts.
    b.stop_writer();
    writes([&a, &a], "missed", 60, &mut model);
    for i in 0..5 {
        let h = format!("early-{i}.example");
        let r = socket_api(
            &a.writer.socket,
            "DELETE",
            &format!("/entries/{h}.json"),
            None,
        );
        assert!(r.status < 300, "{r:?}");
        model.record(vec![(h, None)]);
    }
    let rereads_before = metric(&a, "set_backend_fleet_full_rereads_total");
    etcd.compact(etcd.revision());

    b.restart_writer();
    let entries = assert_converged(&etcd, &[&a, &b], "after b's restart past the compaction");
    model.check(&entries, "after b's restart");
    assert!(
        metric(&b, "set_backend_fleet_full_rereads_total") >= 1.0,
        "b did not re-read:\n{}",
        b.writer.log()
    );
    assert_eq!(
        metric(&a, "set_backend_fleet_full_rereads_total"),
        rereads_before,
        "a re-read"
    );
    let routed = no_failed_request(load, "node down during compaction");
    eprintln!(
        "RELIABILITY fleet_compaction acked_writes={} routed_requests={routed} failed=0",
        model.acks()
    );
}

/// The value of an unlabelled metric of the node's writer (`GET /metrics`).
fn metric(n: &Node, name: &str) -> f64 {
    let r = socket_api(&n.writer.socket, "GET", "/metrics", None);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{}", r.body))
}
