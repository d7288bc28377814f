//! The real `set-backend` binary: token generation, file modes, the operator commands,
//! SIGTERM, the table lock, and the crash test (SIGKILL at random moments while clients
//! write; every acknowledged write must survive).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{binary, entries_of, table_entries, Daemon};
use hyper::Method;
use serde_json::json;
use set_backend_writer::client::{Connection, Endpoint};
use shm_layout::testkit::{Acked, Rng};
use shm_layout::Table;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .env_remove("API_TOKEN")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_exit(d: &mut Daemon, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            return s;
        }
        assert!(start.elapsed() < timeout, "did not exit:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a daemon that is expected to refuse to start: its exit status (within 10 s) and its log.
fn run_refused(
    dir: &Path,
    token: &str,
    extra: &[&str],
    log_name: &str,
) -> (std::process::ExitStatus, String) {
    let mut d = Daemon::spawn(dir, Some(token), extra, log_name);
    let status = wait_exit(&mut d, Duration::from_secs(10));
    (status, d.log_text())
}

#[tokio::test]
async fn generated_token_modes_operator_commands_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut daemon = Daemon::spawn(d, None, &[], "daemon.log");
    daemon.ready().await;
    let token_path = d.join("token");
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains(&token_path.display().to_string())),
        "the generated token's path is printed:\n{log}"
    );
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(
        !log.contains(token.trim()),
        "the token itself is not logged"
    );
    assert_eq!(mode(&token_path), 0o600);
    assert_eq!(mode(&d.join("store.redb")), 0o600);
    assert_eq!(mode(&d.join("table")), 0o644);
    assert_eq!(mode(&d.join("api.sock")), 0o660);

    let o = cli(d, &["add", "Example.COM.", "10.0.0.7:3000"]);
    assert_eq!(stdout(&o), "created example.com 10.0.0.7:3000\n");
    let o = cli(d, &["add", "example.com", "10.0.0.8:3000"]);
    assert_eq!(stdout(&o), "updated example.com 10.0.0.8:3000\n");
    assert_eq!(stdout(&cli(d, &["get", "EXAMPLE.com"])), "10.0.0.8:3000\n");
    let o = cli(d, &["add", "bad host", "10.0.0.8:3000"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("400"), "{o:?}");

    let import = d.join("import.json");
    std::fs::write(
        &import,
        serde_json::to_vec(&json!([
            {"host": "a.example", "backend": "10.0.0.1:80"},
            {"host": "b.example", "backend": "10.0.0.2:80"}
        ]))
        .unwrap(),
    )
    .unwrap();
    stdout(&cli(d, &["import", import.to_str().unwrap()]));
    assert_eq!(
        stdout(&cli(d, &["list"])),
        "a.example 10.0.0.1:80\nb.example 10.0.0.2:80\nexample.com 10.0.0.8:3000\n"
    );
    let export = d.join("export.json");
    stdout(&cli(d, &["export", export.to_str().unwrap()]));
    let exported: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    assert_eq!(exported.as_array().unwrap().len(), 3);
    stdout(&cli(d, &["import", "--replace", import.to_str().unwrap()]));
    assert_eq!(
        stdout(&cli(d, &["list"])),
        "a.example 10.0.0.1:80\nb.example 10.0.0.2:80\n"
    );
    stdout(&cli(d, &["rm", "a.example"]));
    let o = cli(d, &["rm", "a.example"]);
    assert_eq!(o.status.code(), Some(1), "absent host");
    assert_eq!(cli(d, &["get", "a.example"]).status.code(), Some(1));

    let o = Command::new(binary())
        .arg("check")
        .arg(d.join("table"))
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(
        out.contains(": ok") && out.contains("entries      1"),
        "{out}"
    );
    std::fs::write(d.join("junk"), b"not a table").unwrap();
    let o = Command::new(binary())
        .arg("check")
        .arg(d.join("junk"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));

    // Wrong token: refused with the JSON error.
    let o = Command::new(binary())
        .args(["list", "--socket"])
        .arg(d.join("api.sock"))
        .env("API_TOKEN", "wrong-token-wrong-token")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("401"), "{o:?}");

    daemon.signal(libc::SIGTERM);
    let status = wait_exit(&mut daemon, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(!d.join("api.sock").exists(), "the socket is removed");
    // The data survives a restart, with the same token.
    let mut again = Daemon::spawn(d, None, &[], "daemon2.log");
    again.ready().await;
    assert_eq!(stdout(&cli(d, &["list"])), "b.example 10.0.0.2:80\n");
    again.signal(libc::SIGINT);
    assert_eq!(
        wait_exit(&mut again, Duration::from_secs(10)).code(),
        Some(0)
    );
}

#[tokio::test]
async fn listen_serves_tcp_on_loopback_alongside_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut daemon = Daemon::spawn(
        d,
        Some("tcp-token-0123456789abcdefghijklmn"),
        &["--listen", "127.0.0.1:0"],
        "tcp.log",
    );
    daemon.ready().await;
    let start = Instant::now();
    let addr: std::net::SocketAddr = loop {
        let log = daemon.log_text();
        let found = log
            .lines()
            .find_map(|l| l.split("listener=tcp:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.parse().unwrap());
        if let Some(a) = found {
            break a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no TCP listener in the log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(addr.ip().is_loopback());
    let mut c = Connection::connect(
        &Endpoint::Tcp(addr),
        Some("tcp-token-0123456789abcdefghijklmn".into()),
    )
    .await
    .unwrap();
    let r = c
        .request(
            Method::POST,
            "/entries.json",
            Some(br#"{"host": "tcp.example", "backend": "10.0.0.1:80"}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let mut s = Connection::connect(
        &daemon.endpoint,
        Some("tcp-token-0123456789abcdefghijklmn".into()),
    )
    .await
    .unwrap();
    let r = s
        .request(Method::GET, "/entries/tcp.example.json", None)
        .await
        .unwrap();
    assert_eq!(r.json()["backend"], "10.0.0.1:80");

    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (status, log) = run_refused(
        &other,
        "tcp-token-0123456789abcdefghijklmn",
        &["--listen", "0.0.0.0:0"],
        "remote.log",
    );
    assert!(!status.success());
    assert!(log.contains("loopback"), "{log}");
}

#[tokio::test]
async fn socket_mode_and_group_are_applied() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    let gid_arg = gid.to_string();
    let mut daemon = Daemon::spawn(
        d,
        Some("mode-token-0123456789abcdefghijklmn"),
        &["--socket-mode", "600", "--socket-group", &gid_arg],
        "mode.log",
    );
    daemon.ready().await;
    let meta = std::fs::metadata(d.join("api.sock")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.gid(), gid);
    drop(daemon);

    let other = d.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (status, log) = run_refused(
        &other,
        "mode-token-0123456789abcdefghijklmn",
        &["--socket-group", "no-such-group-here"],
        "bad.log",
    );
    assert!(!status.success());
    assert!(log.contains("no group named"), "{log}");
}

#[test]
fn help_explains_every_serve_option() {
    let o = Command::new(binary())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = stdout(&o);
    for opt in [
        "--data-dir",
        "--table",
        "--store",
        "--socket",
        "--listen",
        "--token-file",
        "--socket-mode",
        "--socket-group",
        "--log-format",
        "API_TOKEN",
    ] {
        assert!(help.contains(opt), "{opt} missing from\n{help}");
    }
    let top = stdout(&Command::new(binary()).arg("--help").output().unwrap());
    for cmd in [
        "serve", "list", "get", "add", "rm", "import", "export", "check",
    ] {
        assert!(top.contains(cmd), "{cmd} missing from\n{top}");
    }
}

#[tokio::test]
async fn a_second_writer_on_the_same_table_or_store_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut first = Daemon::spawn(
        &a,
        Some("token-token-token-1-0123456789abcdef"),
        &[],
        "a.log",
    );
    first.ready().await;

    let table = a.join("table");
    let (status, log) = run_refused(
        &b,
        "token-token-token-1-0123456789abcdef",
        &["--table", table.to_str().unwrap()],
        "b.log",
    );
    assert!(!status.success());
    assert!(log.contains("another writer"), "{log}");

    let store = a.join("store.redb");
    let (status, log) = run_refused(
        &b,
        "token-token-token-1-0123456789abcdef",
        &[
            "--store",
            store.to_str().unwrap(),
            "--table",
            b.join("t2").to_str().unwrap(),
        ],
        "c.log",
    );
    assert!(!status.success());
    assert!(log.contains("already open"), "{log}");

    // And a second daemon on a live socket refuses to steal it.
    let (status, log) = run_refused(
        &a,
        "token-token-token-1-0123456789abcdef",
        &[
            "--table",
            b.join("t3").to_str().unwrap(),
            "--store",
            b.join("s3").to_str().unwrap(),
        ],
        "d.log",
    );
    assert!(!status.success());
    assert!(log.contains("another daemon is listening"), "{log}");
    first.ready().await;
}

const WRITERS: usize = 4;
const HOSTS_PER_WRITER: u64 = 40;

/// One client: random upserts, deletes and small batches on its own hosts, until the
/// connection fails.
async fn write_until_killed(
    endpoint: Endpoint,
    token: String,
    w: usize,
    seed: u64,
    mut m: Acked,
) -> Acked {
    let mut rng = Rng::new(seed);
    let Ok(mut c) = Connection::connect(&endpoint, Some(token)).await else {
        return m;
    };
    let host = |i: u64| format!("w{w}-h{i}.crash.example");
    let mut n = 0u64;
    loop {
        n += 1;
        let backend = format!(
            "10.{w}.{}.{}:{}",
            (n / 250) % 250,
            n % 250,
            1 + rng.below(60000)
        );
        let (method, path, body, changes) = match rng.below(10) {
            0..=5 => {
                let h = host(rng.below(HOSTS_PER_WRITER));
                let body = json!({"host": h, "backend": backend});
                (
                    Method::POST,
                    "/entries.json".to_string(),
                    Some(body),
                    vec![(h, Some(backend))],
                )
            }
            6..=7 => {
                let h = host(rng.below(HOSTS_PER_WRITER));
                (
                    Method::DELETE,
                    format!("/entries/{h}.json"),
                    None,
                    vec![(h, None)],
                )
            }
            _ => {
                let start = rng.below(HOSTS_PER_WRITER - 5);
                let mut upsert = Vec::new();
                let mut delete = Vec::new();
                let mut changes = Vec::new();
                for i in start..start + 5 {
                    if rng.below(4) == 0 {
                        delete.push(host(i));
                        changes.push((host(i), None));
                    } else {
                        let b = format!("10.{w}.{}.{}:{}", n % 250, i, 1 + rng.below(60000));
                        upsert.push(json!({"host": host(i), "backend": b}));
                        changes.push((host(i), Some(b)));
                    }
                }
                let body = json!({"upsert": upsert, "delete": delete});
                (
                    Method::PATCH,
                    "/entries.json".to_string(),
                    Some(body),
                    changes,
                )
            }
        };
        m.send(changes);
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        match c.request(method, &path, body).await {
            Ok(r) if r.status < 300 || r.status == 404 => m.acknowledged(),
            Ok(r) => panic!("unexpected answer {}: {}", r.status, r.text()),
            Err(_) => return m,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_sigkill_loses_no_acknowledged_write() {
    let secs: u64 = std::env::var("SET_BACKEND_CRASH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = std::env::var("SET_BACKEND_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    // The soak run (`make soak`) asks for a number of kills rather than a duration.
    let min_kills: u64 = std::env::var("SET_BACKEND_CRASH_MIN_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    eprintln!(
        "crash test: {secs} s and at least {min_kills} kills, seed {seed} \
         (SET_BACKEND_CRASH_SECS, SET_BACKEND_CRASH_MIN_KILLS, SET_BACKEND_CRASH_SEED)"
    );
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = "crash-test-token-0123456789abcdefgh";
    let mut models: Vec<Acked> = (0..WRITERS).map(|_| Acked::default()).collect();
    let start = Instant::now();
    let mut round = 0;
    let mut kills = 0;
    while start.elapsed() < Duration::from_secs(secs) || kills < min_kills {
        round += 1;
        let mut daemon = Daemon::spawn(d, Some(token), &[], &format!("round{round}.log"));
        daemon.ready().await;

        // After a restart: the store (through the API) holds every acknowledged write, and
        // the table rebuilt from it matches it exactly.
        let mut c = Connection::connect(&daemon.endpoint, Some(token.into()))
            .await
            .unwrap();
        let listed = entries_of(&c.request(Method::GET, "/entries.json", None).await.unwrap());
        for (w, m) in models.iter_mut().enumerate() {
            m.check(&listed, &format!("round {round}, writer {w}"));
        }
        assert_eq!(
            table_entries(&d.join("table")),
            listed,
            "round {round}: table and store differ"
        );
        drop(c);

        let writers: Vec<_> = std::mem::take(&mut models)
            .into_iter()
            .enumerate()
            .map(|(w, m)| {
                tokio::spawn(write_until_killed(
                    daemon.endpoint.clone(),
                    token.into(),
                    w,
                    rng.next_u64(),
                    m,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20 + rng.below(300))).await;
        daemon.kill();
        kills += 1;
        for w in writers {
            models.push(w.await.unwrap());
        }

        // The table file the killed writer left: every acknowledged entry is readable in it.
        let table = Table::open(d.join("table")).unwrap();
        for m in &models {
            m.check_table(&table, &format!("round {round}"));
        }
    }
    let acks: u64 = models.iter().map(Acked::acks).sum();
    eprintln!("crash test: {kills} SIGKILLs, {acks} acknowledged writes, none lost");
    assert!(kills >= 3);
    assert!(
        acks >= 100,
        "the clients wrote enough to mean something ({acks})"
    );
}
