//! `make run` (`scripts/run.sh`): the README's curl flow, in both modes, then Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

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
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    require_writer();
    let run_dir = shared_tempdir();
    let (port, demo) = (free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run.sh");
    let target_dir = paths()
        .module
        .parent()
        .and_then(Path::parent)
        .expect("target dir");
    let mut command = Command::new("bash");
    if let Some(mode) = mode {
        command.env("MODE", mode);
    }
    let mut child = command
        .arg(&script)
        .env("SKIP_BUILD", "1")
        .env("PORT", port.to_string())
        .env("DEMO_PORT", demo.to_string())
        .env("DOMAIN", "run.test")
        .env("API_TOKEN", TOKEN)
        .env("RUN_DIR", run_dir.path())
        .env("CARGO_TARGET_DIR", target_dir)
        .env("NGINX_BIN", &paths().nginx)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/run.sh");
    let output = Arc::new(Mutex::new(String::new()));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
    .into_iter()
    .map(|mut pipe| {
        let output = output.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut o) = output.lock() {
                    o.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        })
    })
    .collect();
    let text = || output.lock().map(|o| o.clone()).unwrap_or_default();
    let pgid = child.id() as libc::pid_t;
    let interrupt = || {
        // SAFETY: kill has no memory-safety preconditions; the group is the script's own.
        unsafe { libc::kill(-pgid, libc::SIGINT) };
    };

    let deadline = Instant::now() + WAIT;
    while !text().contains("Ctrl-C stops both") {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            interrupt();
            panic!("make run did not come up:\n{}", text());
        }
        thread::sleep(Duration::from_millis(50));
    }
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

    interrupt();
    let stopped = (0..(WAIT.as_millis() / 50)).any(|_| {
        thread::sleep(Duration::from_millis(50));
        matches!(child.try_wait(), Ok(Some(_)))
    });
    for r in readers {
        let _ = r.join();
    }
    let log = text();
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
