//! nginx operations under load (`RELIABILITY.md`): reloads and binary upgrades while clients
//! send requests.

use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

#[test]
fn reload_and_binary_upgrade_under_load_fail_no_request() {
    let reloads = env_count("SB_RELIABILITY_RELOADS", 3);
    let upgrades = env_count("SB_RELIABILITY_UPGRADES", 2);
    let a = Upstream::start("a");
    let (_data, table) = table_in_tempdir();
    let hosts: Vec<String> = (0..10).map(|i| format!("ops-{i}.example")).collect();
    let entries: Vec<(&str, String)> = hosts.iter().map(|h| (h.as_str(), a.addr())).collect();
    let entries: Vec<(&str, &str)> = entries.iter().map(|(h, b)| (*h, b.as_str())).collect();
    let _w = write_table(&table, &entries);
    let n = Daemonized::start(routed(&table));
    let first = n.master();

    let load = Load::start(n.port, &hosts, "a", 4);
    let started = Instant::now();
    wait_until("requests to flow", WAIT, || load.ok() > 50);
    for _ in 0..reloads {
        n.reload();
        thread::sleep(Duration::from_millis(300));
    }
    for _ in 0..upgrades {
        n.upgrade(&hosts[0]);
        thread::sleep(Duration::from_millis(300));
    }
    thread::sleep(Duration::from_millis(300));
    let elapsed = started.elapsed();
    let (ok, failed) = load.finish();
    assert_ne!(n.master(), first, "the master was replaced");
    let log = n.error_log();
    eprintln!(
        "RELIABILITY nginx_operations reloads={reloads} upgrades={upgrades} requests={} failed={failed} secs={:.1}",
        ok + failed,
        elapsed.as_secs_f64()
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed\n{log}",
        ok + failed
    );
    assert!(!log.contains("exited on signal"), "{log}");
    for bad in ["[alert]", "[crit]", "[emerg]"] {
        assert!(!log.contains(bad), "{log}");
    }
}
