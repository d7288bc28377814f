//! `make run` (`scripts/run.sh`): the README's curl flow, in both modes, then Ctrl-C.

use std::time::Instant;

use set_backend_tests::*;

#[test]
fn make_run_serves_the_curl_flow_and_stops_on_ctrl_c() {
    make_run(None);
}

#[test]
fn make_run_in_variable_mode_serves_the_curl_flow() {
    make_run(Some("variable"));
}

/// `scripts/run.sh` with `MODE` (unset: the default, upstream mode): the README's curl flow,
/// then Ctrl-C.
fn make_run(mode: Option<&str>) {
    require_writer();
    let run_dir = shared_tempdir();
    let (port, demo) = (free_port(), free_port());
    let mut env = vec![
        ("PORT", port.to_string()),
        ("DEMO_PORT", demo.to_string()),
        ("DOMAIN", "run.test".to_string()),
        ("API_TOKEN", TOKEN.to_string()),
        ("RUN_DIR", run_dir.path().display().to_string()),
    ];
    if let Some(mode) = mode {
        env.push(("MODE", mode.to_string()));
    }
    let mut script = Script::start("run.sh", &env);
    script.wait_for("Ctrl-C stops both", WAIT);
    let flow = || {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("Authorization", auth.as_str())];
        let body = format!(r#"{{"host": "example.com", "backend": "127.0.0.1:{demo}"}}"#);
        let r = request(
            port,
            "POST",
            "api.run.test",
            "/entries.json",
            &headers,
            Some(&body),
        )?;
        assert_eq!(r.status, 201, "{r:?}");
        let r = request(port, "GET", "api.run.test", "/entries.json", &headers, None)?;
        assert!(r.body.contains("example.com"), "{r:?}");
        let deadline = Instant::now() + WAIT;
        loop {
            let r = get(port, "Example.com", "/hello")?;
            if r.body.contains("hello from the demo backend") {
                break;
            }
            assert!(Instant::now() < deadline, "not routed: {r:?}");
        }
        let r = request(
            port,
            "DELETE",
            "api.run.test",
            "/entries/example.com.json",
            &headers,
            None,
        )?;
        assert!(r.status < 300, "{r:?}");
        let deadline = Instant::now() + WAIT;
        while get(port, "example.com", "/")?.status != 404 {
            assert!(Instant::now() < deadline, "still routed after the delete");
        }
        Ok::<(), std::io::Error>(())
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(flow));
    let nginx_pid: Option<libc::pid_t> = std::fs::read_to_string(run_dir.path().join("nginx.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());

    let stopped = script.interrupt_and_wait();
    let log = script.output();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("make run: {e}\n{log}"),
        Err(p) => {
            eprintln!("---- make run output ----\n{log}");
            std::panic::resume_unwind(p);
        }
    }
    assert!(stopped, "make run did not stop on SIGINT:\n{log}");
    if let Some(pid) = nginx_pid {
        // SAFETY: signal 0 only checks that the process exists.
        assert!(
            unsafe { libc::kill(pid, 0) } != 0,
            "nginx {pid} still runs:\n{log}"
        );
    }
    assert!(unix_request(
        &run_dir.path().join("api.sock"),
        "GET",
        "/healthz",
        &[],
        None
    )
    .is_err());
    let routed = match mode {
        Some("variable") => format!("backend=\"127.0.0.1:{demo}\""),
        _ => format!("upstream=127.0.0.1:{demo}"),
    };
    for expected in [
        "[nginx]",
        "[writer]",
        "[access]",
        "set_backend=hit",
        &routed,
        "==> stopped",
    ] {
        assert!(
            log.contains(expected),
            "no {expected:?} in the output:\n{log}"
        );
    }
    for bad in ["[alert]", "[crit]", "[emerg]"] {
        assert!(!log.contains(bad), "{bad} in the output:\n{log}");
    }
}
