//! The writer daemon end to end, in one process over its real unix socket:
//!
//! 1. ack → visible: a reader thread polls the mapped table (as an nginx worker does) for
//!    each write while a client sends it; we record when the client got its 2xx and when the
//!    reader first saw the new value. p50/p99 over `SET_BACKEND_BENCH_WRITES` writes.
//! 2. durable write throughput through the API: single-entry `POST /entries.json` with
//!    1, 16 and 64 concurrent clients, and `PATCH /entries.json` batches of 1000 upserts.
//! 3. the fsync cost: the daemon's own commit histogram (`/metrics`), and a raw
//!    `write + fdatasync` loop on the same file system.
//!
//! Run: `cargo bench -p set-backend-benches --bench writer_api`. The store lives in
//! `SET_BACKEND_BENCH_DIR` (default: the system temp dir; it must be a real disk for the
//! fsync numbers to mean anything). `SET_BACKEND_BENCH_SECS` sets each throughput run's
//! length (default 3).

use std::io::Write;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::json;
use set_backend_writer::client::{Connection, Endpoint};
use set_backend_writer::{listen, run, Config};
use shm_layout::{Lookup, Table};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  {name:<26} p50 {:>9.1} µs   p99 {:>9.1} µs   max {:>9.1} µs",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    );
}

/// The value of an unlabelled series in a Prometheus text answer.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

async fn metrics(endpoint: &Endpoint) -> String {
    let mut c = Connection::connect(endpoint, None).await.unwrap();
    c.request(Method::GET, "/metrics", None)
        .await
        .unwrap()
        .text()
}

/// The reader side of the latency benchmark: for each (host, backend) it is sent, spin on
/// lookups until the table shows that backend, then report the instant it did.
fn reader(table_path: &Path, rx: mpsc::Receiver<(String, String)>, tx: mpsc::Sender<Instant>) {
    let mut table = Table::open(table_path).unwrap();
    while let Ok((host, backend)) = rx.recv() {
        loop {
            if table.is_superseded() {
                table = Table::open(table_path).unwrap();
            }
            if let Lookup::Hit(v) = table.lookup(host.as_bytes()) {
                if v.as_str() == backend {
                    break;
                }
            }
            std::hint::spin_loop();
        }
        tx.send(Instant::now()).unwrap();
    }
}

async fn latency(endpoint: &Endpoint, table_path: &Path, writes: u64) {
    let (to_reader, rx) = mpsc::channel();
    let (tx, from_reader) = mpsc::channel();
    let path = table_path.to_path_buf();
    let reader = std::thread::spawn(move || reader(&path, rx, tx));
    let mut c = Connection::connect(endpoint, Some(TOKEN.into()))
        .await
        .unwrap();
    // A second mapping, read by the client itself the moment it has its answer.
    let mut own = Table::open(table_path).unwrap();
    let mut seen_at_ack = 0;
    let (mut to_ack, mut to_visible, mut ack_to_visible) = (Vec::new(), Vec::new(), Vec::new());
    let mut visible_after_ack = 0;
    for i in 0..writes {
        let host = format!("lat-{i}.example.com");
        let backend = format!("10.1.{}.{}:8080", (i / 250) % 250, i % 250);
        let body = serde_json::to_vec(&json!({"host": host, "backend": backend})).unwrap();
        let t0 = Instant::now();
        to_reader.send((host.clone(), backend.clone())).unwrap();
        let r = c
            .request(Method::POST, "/entries.json", Some(body))
            .await
            .unwrap();
        let acked = Instant::now();
        assert_eq!(r.status, 201);
        if own.is_superseded() {
            own = Table::open(table_path).unwrap();
        }
        if matches!(own.lookup(host.as_bytes()), Lookup::Hit(v) if v.as_str() == backend) {
            seen_at_ack += 1;
        }
        let seen = from_reader.recv().unwrap();
        to_ack.push((acked - t0).as_secs_f64() * 1e6);
        to_visible.push((seen - t0).as_secs_f64() * 1e6);
        // Negative when the reader saw it before the client had its answer (the usual case:
        // the change is published before the response is written).
        let lag = if seen > acked {
            visible_after_ack += 1;
            (seen - acked).as_secs_f64() * 1e6
        } else {
            -((acked - seen).as_secs_f64() * 1e6)
        };
        ack_to_visible.push(lag);
    }
    drop(to_reader);
    reader.join().unwrap();
    println!(
        "ack → visible in the table ({writes} sequential POSTs, a reader polling the mapping):"
    );
    summary("request → 2xx", to_ack);
    summary("request → visible", to_visible);
    summary("2xx → visible (≤0: before)", ack_to_visible.clone());
    let worst = ack_to_visible.iter().cloned().fold(f64::MIN, f64::max);
    println!(
        "  a lookup right after the 2xx found the new value in {seen_at_ack} of {writes} writes"
    );
    println!(
        "  the polling thread saw it only after the 2xx in {visible_after_ack} of {writes} \
         writes (latest {:.1} µs after it: that thread was not running)",
        worst.max(0.0)
    );
}

/// `clients` connections each sending writes for `secs`; returns acknowledged upserts/s.
async fn throughput(endpoint: &Endpoint, clients: u64, batch: u64, secs: u64, tag: &str) -> f64 {
    let before = metrics(endpoint).await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let endpoint = endpoint.clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut c = Connection::connect(&endpoint, Some(TOKEN.into()))
                .await
                .unwrap();
            let mut n = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let (method, body) = if batch == 1 {
                    let h = format!("{tag}-{w}-{i}.example.com");
                    (
                        Method::POST,
                        json!({"host": h, "backend": format!("10.2.{}.{}:80", w % 250, i % 250)}),
                    )
                } else {
                    let upsert: Vec<_> = (0..batch)
                        .map(|k| {
                            json!({"host": format!("{tag}-{w}-{i}-{k}.example.com"),
                                   "backend": format!("10.3.{}.{}:80", k % 250, i % 250)})
                        })
                        .collect();
                    (Method::PATCH, json!({"upsert": upsert}))
                };
                let r = c
                    .request(
                        method,
                        "/entries.json",
                        Some(serde_json::to_vec(&body).unwrap()),
                    )
                    .await
                    .unwrap();
                assert!(r.status < 300, "{}", r.text());
                n += batch;
                i += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = metrics(endpoint).await;
    let commits =
        metric(&after, "set_backend_commits_total") - metric(&before, "set_backend_commits_total");
    let commit_s = metric(&after, "set_backend_commit_seconds_sum")
        - metric(&before, "set_backend_commit_seconds_sum");
    let publish_s = metric(&after, "set_backend_publish_seconds_sum")
        - metric(&before, "set_backend_publish_seconds_sum");
    let rate = total as f64 / elapsed;
    println!(
        "  {:<30} {:>9.0} upserts/s   {:>6.0} commits/s   commit {:>6.2} ms   publish {:>6.1} µs/commit",
        format!("{clients} client(s), {batch}/request"),
        rate,
        commits / elapsed,
        commit_s / commits * 1e3,
        publish_s / commits * 1e6
    );
    rate
}

/// A raw `write(4 KiB) + fdatasync` loop in `dir`: what one durable commit costs at least.
fn raw_fsync(dir: &Path) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [0u8; 4096];
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let per = start.elapsed().as_secs_f64() / n as f64;
    let _ = std::fs::remove_file(&path);
    per
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run quickly then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let base = std::env::var_os("SET_BACKEND_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(&base).unwrap();
    let writes = if quick {
        50
    } else {
        env_u64("SET_BACKEND_BENCH_WRITES", 2000)
    };
    let secs = if quick {
        1
    } else {
        env_u64("SET_BACKEND_BENCH_SECS", 3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = dir.path().join("api.sock");
        let table = dir.path().join("table");
        let config = Config::new(dir.path().join("store.redb"), table.clone(), TOKEN.into());
        let listener = listen::bind_unix(&socket, 0o660, None).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(config, vec![listener], async move {
            let _ = stopped.await;
        }));
        let endpoint = Endpoint::Unix(socket);
        loop {
            if let Ok(mut c) = Connection::connect(&endpoint, None).await {
                if c.request(Method::GET, "/healthz", None)
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "writer benchmark: store and table in {}",
            dir.path().display()
        );
        latency(&endpoint, &table, writes).await;
        println!("durable write throughput through the API ({secs} s each):");
        throughput(&endpoint, 1, 1, secs, "s1").await;
        throughput(&endpoint, 16, 1, secs, "s16").await;
        throughput(&endpoint, 64, 1, secs, "s64").await;
        throughput(&endpoint, 1, 1000, secs, "b1").await;
        throughput(&endpoint, 4, 1000, secs, "b4").await;
        let m = metrics(&endpoint).await;
        println!(
            "  table after the runs: {} entries, generation {}",
            metric(&m, "set_backend_entries"),
            metric(&m, "set_backend_table_generation")
        );
        let per = raw_fsync(dir.path());
        println!(
            "fsync cost: raw write(4 KiB)+fdatasync on this file system: {:.2} ms",
            per * 1e3
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}
