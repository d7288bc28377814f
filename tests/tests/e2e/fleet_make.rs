//! `make fleet` (`scripts/fleet.sh`): three etcd members and two nodes on loopback; the
//! README's flow writes through node 1 and reads through node 2, then Ctrl-C stops everything.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use set_backend_tests::*;

#[test]
fn make_fleet_writes_through_one_node_and_routes_through_the_other() {
    require_writer();
    let dir = shared_tempdir();
    // node1: nginx and its demo backend, node2 the same; etcd: three client + peer pairs.
    let port = free_ports_in_a_row(4);
    let etcd_port = free_ports_in_a_row(6);
    let mut script = Script::start(
        "fleet.sh",
        &[
            ("PORT", port.to_string()),
            ("ETCD_PORT", etcd_port.to_string()),
            ("DOMAIN", "fleet.test".to_string()),
            ("API_TOKEN", TOKEN.to_string()),
            ("FLEET_DIR", dir.path().display().to_string()),
        ],
    );
    script.wait_for("Ctrl-C stops everything", 3 * WAIT);
    let (node1, node2) = (port, port + 2);
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Authorization", auth.as_str())];
    let flow = || {
        let body = format!(
            r#"{{"host": "example.com", "backend": "127.0.0.1:{}"}}"#,
            port + 1
        );
        let api = |node, method, path: &str, body: Option<&str>| {
            request(node, method, "api.fleet.test", path, &headers, body)
        };
        let r = api(node1, "POST", "/entries.json", Some(&body))?;
        assert_eq!(r.status, 201, "{r:?}");
        assert!(r.body.contains("\"revision\""), "{r:?}");
        // node2's writer follows etcd: its nginx routes the host, its API lists it.
        wait_until("node2 to route example.com", WAIT, || {
            get(node2, "example.com", "/")
                .is_ok_and(|r| r.body.contains("hello from the demo backend"))
        });
        let r = api(node2, "GET", "/entries.json", None)?;
        assert!(r.body.contains("example.com"), "{r:?}");
        let r = api(node2, "DELETE", "/entries/example.com.json", None)?;
        assert!(r.status < 300, "{r:?}");
        wait_until("node1 to forget example.com", WAIT, || {
            get(node1, "example.com", "/").is_ok_and(|r| r.status == 404)
        });
        Ok::<(), std::io::Error>(())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(flow));
    let stopped = script.interrupt_and_wait();
    let log = script.output();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("make fleet: {e}\n{log}"),
        Err(p) => {
            eprintln!("---- make fleet output ----\n{log}");
            std::panic::resume_unwind(p);
        }
    }
    assert!(stopped, "make fleet did not stop on SIGINT:\n{log}");
    // Nothing it started listens any more: nginx, the demo backends, etcd.
    let deadline = Instant::now() + WAIT;
    for p in (port..port + 4).chain(etcd_port..etcd_port + 6) {
        while TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), Duration::from_secs(1))
            .is_ok()
        {
            assert!(Instant::now() < deadline, "port {p} still open:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for expected in [
        "[node1] [writer]",
        "[node2] [nginx]",
        "[etcd m1]",
        "==> stopped",
    ] {
        assert!(log.contains(expected), "no {expected:?} in:\n{log}");
    }
    for bad in ["[alert]", "[crit]", "[emerg]"] {
        assert!(!log.contains(bad), "{bad} in the output:\n{log}");
    }
}
