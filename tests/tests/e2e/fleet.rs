//! Fleet mode (`docs/FLEET.md`): two nodes (real nginx and the real writer each) on one real
//! 3-member etcd cluster. A write through one node is routed by the other's nginx; two nodes
//! writing the same hosts at once end with etcd's order. After every test, every node's store
//! and table hold exactly etcd's entries. The faults are in `fleet_faults`.

use std::thread;

use serde_json::{json, Value};
use set_backend_tests::*;

/// Three etcd members and two nodes, `a` and `b`, in `dir`.
pub fn fleet(dir: &std::path::Path) -> (Etcd, Node, Node) {
    require_writer();
    let etcd = Etcd::start(3);
    let a = Node::start(&etcd, &dir.join("a"), "a");
    let b = Node::start(&etcd, &dir.join("b"), "b");
    (etcd, a, b)
}

/// The `revision` of a write's answer.
pub fn revision(r: &Response) -> i64 {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["revision"].as_i64())
        .unwrap_or_else(|| panic!("no revision in {r:?}"))
}

#[test]
fn fleet_a_write_through_one_node_is_routed_by_the_other() {
    let dir = shared_tempdir();
    let (etcd, a, b) = fleet(dir.path());
    let (up1, up2) = (Upstream::start("one"), Upstream::start("two"));

    // Acknowledged on a: a's nginx routes it at once (read-your-writes), b's follows.
    let r = api(
        &a.nginx,
        "POST",
        "/entries.json",
        Some(&entry("x.example", &up1.addr())),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let rev = revision(&r);
    assert!(rev > 0, "{r:?}");
    let routed = a.nginx.get("x.example", "/");
    assert!(body_is(&up1)(&routed), "{routed:?}");
    b.nginx.wait_every_worker("x.example", body_is(&up1));

    // wait=all: acknowledged once every node applied it; b's nginx routes it at once.
    let r = api(
        &a.nginx,
        "POST",
        "/entries.json?wait=all",
        Some(&entry("x.example", &up2.addr())),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(revision(&r) > rev, "{r:?}");
    for n in [&a, &b] {
        let routed = n.nginx.get("x.example", "/");
        assert!(body_is(&up2)(&routed), "{}: {routed:?}", n.name);
    }

    // A batch through b, a delete through b: a follows both.
    let batch = json!({"upsert": [
        {"host": "y.example", "backend": up1.addr()},
        {"host": "z.example", "backend": up2.addr()},
    ], "delete": ["x.example"]});
    let r = api(&b.nginx, "PATCH", "/entries.json", Some(&batch.to_string()));
    assert_eq!(r.status, 200, "{r:?}");
    a.nginx.wait_every_worker("y.example", body_is(&up1));
    a.nginx.wait_every_worker("z.example", body_is(&up2));
    a.nginx.wait_every_worker("x.example", |r| r.status == 404);

    let entries = assert_converged(&etcd, &[&a, &b], "after the writes");
    assert_eq!(entries.len(), 2, "{entries:?}");
    a.nginx.assert_clean_log();
    b.nginx.assert_clean_log();
}

#[test]
fn fleet_two_nodes_writing_the_same_hosts_end_in_etcd_s_order() {
    let dir = shared_tempdir();
    let (etcd, a, b) = fleet(dir.path());
    let hosts: Vec<String> = (0..8).map(|i| format!("same-{i}.example")).collect();
    let writes = env_count("SB_FLEET_CONCURRENT_WRITES", 150);

    // Each node's client writes every host in turn with backends of its own; every
    // acknowledged write says its revision.
    let client = |node: &Node, tag: u64| {
        let socket = node.writer.socket.clone();
        let hosts = hosts.clone();
        thread::spawn(move || {
            (0..writes)
                .map(|i| {
                    let host = &hosts[(i as usize) % hosts.len()];
                    let backend = format!("10.{tag}.{}.{}:80", i / 250, i % 250);
                    let r = post_entry(&socket, host, &backend);
                    assert!(r.status == 200 || r.status == 201, "{r:?}");
                    (revision(&r), host.clone(), backend)
                })
                .collect::<Vec<_>>()
        })
    };
    let (ta, tb) = (client(&a, 1), client(&b, 2));
    let mut acked = ta.join().expect("client a");
    acked.extend(tb.join().expect("client b"));

    // Revisions are etcd's order: no two writes share one, and each host ends with the
    // backend of its last acknowledged write.
    acked.sort();
    let revisions: std::collections::BTreeSet<i64> = acked.iter().map(|w| w.0).collect();
    assert_eq!(revisions.len(), acked.len(), "two writes with one revision");
    let entries = assert_converged(&etcd, &[&a, &b], "after the concurrent writes");
    for h in &hosts {
        let last = acked.iter().rev().find(|w| &w.1 == h).expect("written");
        let got = entries.iter().find(|e| &e.0 == h).map(|e| e.1.as_str());
        assert_eq!(got, Some(last.2.as_str()), "{h}: not its last write");
    }
    eprintln!(
        "RELIABILITY fleet_concurrent_writers writes={} hosts={}",
        acked.len(),
        hosts.len()
    );
}

/// A `POST /entries.json` body.
pub fn entry(host: &str, backend: &str) -> String {
    json!({"host": host, "backend": backend}).to_string()
}
