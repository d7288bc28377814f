//! The etcd cluster the fleet tests run on ([`Etcd`]): three real members on loopback keep
//! writing with one of them SIGKILLed, a killed member comes back on its data, a stopped
//! cluster refuses writes and comes back with what it had, and compaction drops history.

use set_backend_tests::Etcd;

#[test]
fn etcd_cluster_keeps_quorum_with_one_member_killed() {
    let mut etcd = Etcd::start(3);
    assert_eq!(etcd.endpoints().split(',').count(), 3);
    etcd.put("/t/a", "1");
    assert_eq!(etcd.get("/t/a").as_deref(), Some("1"));

    let pid = etcd.pid(0).expect("member 0 runs");
    etcd.kill(0);
    assert!(!set_backend_tests::alive(pid as i32), "member 0 still runs");
    assert_eq!(etcd.live_endpoints().split(',').count(), 2);
    // Two of three members are a quorum: writes go on (once a new leader is elected, if the
    // killed member led: a put meanwhile times out).
    set_backend_tests::wait_until(
        "a write with member 0 killed",
        set_backend_tests::WAIT,
        || {
            etcd.ctl_command(&["put", "/t/b", "2"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
    assert_eq!(
        etcd.prefix("/t/"),
        [("/t/a".into(), "1".into()), ("/t/b".into(), "2".into())]
    );

    // Back on its data, it catches up with what it missed (read from its own copy).
    etcd.restart(0);
    set_backend_tests::wait_until("member 0 to catch up", set_backend_tests::WAIT, || {
        etcd.ctl_at(0, &["get", "/t/b", "--consistency=s", "--print-value-only"]) == "2\n"
    });
}

#[test]
fn etcd_cluster_stopped_refuses_writes_and_returns_with_its_data() {
    let mut etcd = Etcd::start(3);
    etcd.put("/t/kept", "yes");
    etcd.stop_all();
    let refused = etcd
        .ctl_command(&["put", "/t/lost", "no"])
        .output()
        .expect("etcdctl");
    assert!(
        !refused.status.success(),
        "a write succeeded with no etcd running"
    );

    etcd.restart_all();
    assert_eq!(etcd.get("/t/kept").as_deref(), Some("yes"));
    assert_eq!(etcd.get("/t/lost"), None);
}

#[test]
fn etcd_compaction_drops_the_history_before_it() {
    let etcd = Etcd::start(1);
    etcd.put("/t/k", "old");
    let old = etcd.revision();
    etcd.put("/t/k", "new");
    let old_read = |etcd: &Etcd| {
        etcd.ctl_command(&[
            "get",
            "/t/k",
            "--rev",
            &old.to_string(),
            "--print-value-only",
        ])
        .output()
        .expect("etcdctl")
    };
    assert_eq!(String::from_utf8_lossy(&old_read(&etcd).stdout), "old\n");

    etcd.compact(etcd.revision());
    let after = old_read(&etcd);
    assert!(!after.status.success());
    assert!(
        String::from_utf8_lossy(&after.stderr).contains("compacted"),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    assert_eq!(etcd.get("/t/k").as_deref(), Some("new"));
}
