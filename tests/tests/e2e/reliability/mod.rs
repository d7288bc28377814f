//! Reliability (issue #7, `RELIABILITY.md`): what nginx and the writer do while things go wrong.
//!
//! - the writer SIGKILLed during a write storm while clients request routed hosts;
//! - hostile table files loaded by real nginx workers;
//! - `reload` and the binary upgrade (USR2, WINCH, QUIT) while clients send requests;
//! - a battery of bad API requests, with the store and the table compared byte for byte;
//! - a full disk under the store and the table, or under the table alone (tmpfs); a read-only
//!   store;
//! - the table file deleted or replaced under nginx;
//! - who may write the table and the store, connect to the socket, read the token.
//!
//! Each test prints one `RELIABILITY <name> key=value…` line with its figures. The defaults are
//! short (`make test`); `make soak` lengthens them with `SB_RELIABILITY_KILLS`,
//! `SB_RELIABILITY_RELOADS`, `SB_RELIABILITY_UPGRADES` and `SB_RELIABILITY_RANDOM_TABLES`.
//! The tests that mount file systems or switch users need root and say so when skipped.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use set_backend_tests::*;
use shm_layout::Lookup;

use super::{body_is, require_writer, routed, with_api, TOKEN};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A count from the environment (the soak run's knobs), else `default`.
fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift: random but reproducible from the seed the tests print.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(env_count("SB_RELIABILITY_SEED", t) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// True while `pid` exists and is not a zombie (masters that are not our children are reaped
/// by whoever adopted them, maybe late).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Clients sending `GET /` for `hosts` on new connections, round robin, until stopped: every
/// answer must come from `upstream` (200 and its body). Counts successes and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, hosts: &[String], upstream: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..clients)
            .map(|c| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let hosts = hosts.to_vec();
                let prefix = format!("upstream={upstream} ");
                thread::spawn(move || {
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        i = (i + 1) % hosts.len();
                        match get(port, &hosts[i], "/") {
                            Ok(r) if r.status == 200 && r.body.starts_with(&prefix) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            other => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                                    eprintln!("failed request for {}: {other:?}", hosts[i]);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients: (successful, failed) requests.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load client");
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// An authenticated request straight to the writer's socket.
fn socket_api(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Response {
    let auth = format!("Bearer {TOKEN}");
    unix_request(socket, method, path, &[("Authorization", &auth)], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One `PATCH /entries.json` upserting every host of `hosts` to `backend`.
fn upsert_all(socket: &Path, hosts: &[String], backend: &str) -> Response {
    let upsert: Vec<Value> = hosts
        .iter()
        .map(|h| json!({"host": h, "backend": backend}))
        .collect();
    socket_api(
        socket,
        "PATCH",
        "/entries.json",
        Some(&json!({"upsert": upsert}).to_string()),
    )
}

/// The store's entries, through `GET /entries.json`.
fn listed(socket: &Path) -> Vec<(String, String)> {
    let r = socket_api(socket, "GET", "/entries.json", None);
    assert_eq!(r.status, 200, "{r:?}");
    let v: Value = serde_json::from_str(&r.body).expect("the list is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|e| {
            (
                e["host"].as_str().expect("host").to_string(),
                e["backend"].as_str().expect("backend").to_string(),
            )
        })
        .collect()
}

/// The entries of the table file, sorted.
fn table_entries(path: &Path) -> Vec<(String, String)> {
    let mut e = Table::open(path).expect("open the table").entries();
    e.sort();
    e
}

/// Asserts that the table holds exactly what the store holds.
fn assert_table_matches_store(w: &Writer, when: &str) -> Vec<(String, String)> {
    let store = listed(&w.socket);
    assert_eq!(
        table_entries(&w.table()),
        store,
        "{when}: table and store differ"
    );
    store
}

// ---------------------------------------------------------------------------------------------
// Writer crashes under nginx
// ---------------------------------------------------------------------------------------------

/// What the storm client knows: acknowledged state of its hosts, and the changes of the request
/// in flight when the writer died (applied wholly or not at all).
#[derive(Default)]
struct Model {
    acked: HashMap<String, Option<String>>,
    pending: Vec<(String, Option<String>)>,
    acks: u64,
}

/// Upserts, deletes and batches on the churn hosts until the writer stops answering.
fn storm(socket: PathBuf, seed: u64, mut m: Model) -> Model {
    let mut rng = Rng(seed | 1);
    let host = |i: u64| format!("churn-{i}.example");
    let mut n = 0u64;
    loop {
        n += 1;
        let backend = |rng: &mut Rng| {
            format!(
                "10.9.{}.{}:{}",
                n % 250,
                rng.below(250),
                1 + rng.below(60000)
            )
        };
        let (method, path, body, changes) = match rng.below(10) {
            0..=5 => {
                let (h, b) = (host(rng.below(60)), backend(&mut rng));
                let body = json!({"host": h, "backend": b}).to_string();
                (
                    "POST",
                    "/entries.json".to_string(),
                    Some(body),
                    vec![(h, Some(b))],
                )
            }
            6..=7 => {
                let h = host(rng.below(60));
                (
                    "DELETE",
                    format!("/entries/{h}.json"),
                    None,
                    vec![(h, None)],
                )
            }
            _ => {
                let start = rng.below(55);
                let (mut upsert, mut delete, mut changes) = (vec![], vec![], vec![]);
                for i in start..start + 5 {
                    if rng.below(4) == 0 {
                        delete.push(host(i));
                        changes.push((host(i), None));
                    } else {
                        let b = backend(&mut rng);
                        upsert.push(json!({"host": host(i), "backend": b}));
                        changes.push((host(i), Some(b)));
                    }
                }
                let body = json!({"upsert": upsert, "delete": delete}).to_string();
                ("PATCH", "/entries.json".to_string(), Some(body), changes)
            }
        };
        m.pending = changes;
        let auth = format!("Bearer {TOKEN}");
        match unix_request(
            &socket,
            method,
            &path,
            &[("Authorization", &auth)],
            body.as_deref(),
        ) {
            Ok(r) if r.status < 300 || (r.status == 404 && method == "DELETE") => {
                for (h, b) in m.pending.drain(..) {
                    m.acked.insert(h, b);
                }
                m.acks += 1;
            }
            Ok(r) => panic!("{} {}: unexpected answer {r:?}", method, path),
            Err(_) => return m,
        }
    }
}

/// After a restart: every acknowledged write is in the store; the cut-off request was applied
/// wholly or not at all.
fn check_model(m: &mut Model, store: &[(String, String)], round: u64) {
    let actual: HashMap<&str, &str> = store
        .iter()
        .map(|(h, b)| (h.as_str(), b.as_str()))
        .collect();
    let pending: HashMap<String, Option<String>> = m.pending.iter().cloned().collect();
    for (h, want) in &m.acked {
        if !pending.contains_key(h) {
            assert_eq!(
                actual.get(h.as_str()).copied(),
                want.as_deref(),
                "round {round}: acknowledged write of {h} lost"
            );
        }
    }
    let applied = m
        .pending
        .iter()
        .all(|(h, b)| actual.get(h.as_str()).copied() == b.as_deref());
    let untouched = m.pending.iter().all(|(h, _)| {
        actual.get(h.as_str()).copied() == m.acked.get(h).cloned().flatten().as_deref()
    });
    assert!(
        applied || untouched,
        "round {round}: request applied in part: {:?}",
        m.pending
    );
    if applied {
        for (h, b) in m.pending.drain(..) {
            m.acked.insert(h, b);
        }
    }
    m.pending.clear();
}

#[test]
fn writer_sigkill_during_a_write_storm_fails_no_routed_request() {
    require_writer();
    let kills = env_count("SB_RELIABILITY_KILLS", 5);
    let mut rng = Rng::seeded();
    eprintln!(
        "writer kills: {kills}, seed {} (SB_RELIABILITY_SEED)",
        rng.0
    );
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let mut w = Writer::start(&dir, TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));

    let steady: Vec<String> = (0..20).map(|i| format!("steady-{i}.example")).collect();
    let r = upsert_all(&w.socket, &steady, &a.addr());
    assert_eq!(r.status, 200, "{r:?}");
    for h in &steady {
        n.wait_every_worker(h, body_is(&a));
    }

    let load = Load::start(n.port, &steady, "a", 3);
    let mut model = Model::default();
    let started = Instant::now();
    for round in 1..=kills {
        let (socket, seed) = (w.socket.clone(), rng.next());
        let m = std::mem::take(&mut model);
        let client = thread::spawn(move || storm(socket, seed, m));
        thread::sleep(Duration::from_millis(30 + rng.below(300)));
        w.kill();
        model = client.join().expect("storm client");
        w = Writer::start(&dir, TOKEN);
        let store = assert_table_matches_store(&w, &format!("round {round}"));
        check_model(&mut model, &store, round);
        for h in &steady {
            assert!(
                store.iter().any(|(s, b)| s == h && *b == a.addr()),
                "{h} lost"
            );
        }
    }
    let elapsed = started.elapsed();
    let (ok, failed) = load.finish();
    eprintln!(
        "RELIABILITY writer_kills kills={kills} acked_writes={} routed_requests={} failed={failed} secs={:.1}",
        model.acks,
        ok + failed,
        elapsed.as_secs_f64()
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} routed requests failed",
        ok + failed
    );
    assert!(ok >= kills, "only {ok} routed requests");
    assert!(
        model.acks >= kills,
        "only {} acknowledged writes",
        model.acks
    );
    n.assert_clean_log();
}

// ---------------------------------------------------------------------------------------------
// Hostile table files
// ---------------------------------------------------------------------------------------------

const KEY: (u64, u64) = (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
const CAPACITY: usize = 256;
const INDEX_AT: usize = 4096;
const ARENA_AT: usize = INDEX_AT + CAPACITY * 8;
const SITES: usize = 40;

fn site(i: usize) -> String {
    format!("site-{i}.example")
}

fn valid_table_bytes(backend: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("table");
    let entries = (0..SITES).map(|i| {
        (
            Host::parse(&site(i)).expect("host"),
            Backend::parse(backend).expect("backend"),
        )
    });
    let opts = WriterOptions {
        min_capacity: CAPACITY as u64,
        hash_key: Some(KEY),
        ..table_options()
    };
    drop(TableWriter::create(&path, entries, opts).expect("table"));
    fs::read(&path).expect("read table")
}

fn word(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn set(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn sip(k0: u64, k1: u64, bytes: &[u8]) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(k0, k1);
    h.write(bytes);
    h.finish()
}

/// Recomputes the header checksum, so that a crafted body gets past the open checks.
fn seal(b: &mut [u8]) {
    let c = sip(0, 0, &b[..112]);
    set(b, 112, c);
}

/// The arena word index of `host`'s record.
fn record_of(b: &[u8], host: &str) -> (usize, usize) {
    let h = sip(KEY.0, KEY.1, host.as_bytes());
    let cap = CAPACITY as u64;
    let slot = (0..cap)
        .map(|i| ((h & (cap - 1)) + i) & (cap - 1))
        .find(|&s| word(b, INDEX_AT + s as usize * 8) >> 48 == (h >> 48).max(1))
        .expect("the host's slot") as usize;
    (
        slot,
        (word(b, INDEX_AT + slot * 8) & ((1 << 48) - 1)) as usize,
    )
}

/// Where `host`'s value bytes start.
fn value_at(b: &[u8], host: &str) -> usize {
    let (_, rec) = record_of(b, host);
    let meta = word(b, ARENA_AT + (rec + 1) * 8);
    let key_len = (meta & 0xffff) as usize;
    ARENA_AT + (rec + 3 + key_len.div_ceil(8)) * 8
}

/// The crafted files: (name, bytes, Some(what the open error says) or None if it opens).
fn hostile_corpus(
    good: &[u8],
    random: u64,
    rng: &mut Rng,
) -> Vec<(String, Vec<u8>, Option<&'static str>)> {
    let mut out: Vec<(String, Vec<u8>, Option<&'static str>)> = Vec::new();
    let mut add =
        |name: &str, b: Vec<u8>, open: Option<&'static str>| out.push((name.to_string(), b, open));
    add("empty", vec![], Some("truncated"));
    add("short header", good[..4095].to_vec(), Some("truncated"));
    add(
        "cut arena",
        good[..good.len() - 8].to_vec(),
        Some("truncated"),
    );
    add("garbage", vec![0xa5; 64 * 1024], Some("bad magic"));
    add("zeros", vec![0; 64 * 1024], Some("bad magic"));
    let mut b = good.to_vec();
    b[0] = b'X';
    add("bad magic", b, Some("bad magic"));
    // The format's previous version and a future one.
    for version in [1u64, 3] {
        let mut b = good.to_vec();
        set(&mut b, 8, version | (0x0A0B_0C0D << 32));
        seal(&mut b);
        add(&format!("version {version}"), b, Some("version"));
    }
    let mut b = good.to_vec();
    set(
        &mut b,
        8,
        (1u32.swap_bytes() as u64) | ((0x0A0B_0C0Du32.swap_bytes() as u64) << 32),
    );
    add("big endian", b, Some("byte order"));
    let mut b = good.to_vec();
    b[40] ^= 1;
    add("checksum", b, Some("checksum"));
    for (off, value, field) in [
        (16, 8192, "header_len"),
        (24, 2, "hash_id"),
        (48, 255, "capacity"),
        (48, 0, "capacity"),
        (48, 1 << 41, "capacity"),
        (56, 0, "max_probe"),
        (56, CAPACITY as u64 + 1, "max_probe"),
        (64, 0, "index_offset"),
        (72, 4096, "arena_offset"),
        (80, 12, "arena_len"),
        (80, u64::MAX - 7, "arena_len"),
        (88, 1 << 40, "file_len"),
    ] {
        let mut b = good.to_vec();
        set(&mut b, off, value);
        seal(&mut b);
        add(&format!("{field} = {value}"), b, Some(field));
    }
    let mut b = good.to_vec();
    let (al, fl) = (word(&b, 80) + 8, word(&b, 88) + 8);
    set(&mut b, 80, al);
    set(&mut b, 88, fl);
    seal(&mut b);
    add("arena past the end", b, Some("truncated"));

    // Files that open, with damage inside.
    let mut b = good.to_vec();
    for s in 0..CAPACITY {
        let w = word(&b, INDEX_AT + s * 8);
        if w > 1 {
            set(
                &mut b,
                INDEX_AT + s * 8,
                (w & !((1 << 48) - 1)) | ((1 << 48) - 1),
            );
        }
    }
    add("slots outside the arena", b, None);
    let mut b = good.to_vec();
    set(&mut b, 56, CAPACITY as u64);
    seal(&mut b);
    for s in 0..CAPACITY {
        set(&mut b, INDEX_AT + s * 8, 1);
    }
    add("all tombstones", b, None);
    let mut b = good.to_vec();
    set(&mut b, 56, CAPACITY as u64);
    seal(&mut b);
    let tag = (sip(KEY.0, KEY.1, site(0).as_bytes()) >> 48).max(1);
    for s in 0..CAPACITY {
        set(&mut b, INDEX_AT + s * 8, tag << 48);
    }
    add("every slot one record", b, None);
    let mut b = good.to_vec();
    let (_, rec) = record_of(&b, &site(7));
    set(&mut b, ARENA_AT + rec * 8, 3);
    add("record stuck mid-write", b, None);
    for meta in [
        0,
        0xffff,
        14 | 0xffff << 16,
        14 | 12 << 16 | 9 << 32,
        14 | 12 << 16 | 1 << 40,
    ] {
        let mut b = good.to_vec();
        let (_, rec) = record_of(&b, &site(3));
        set(&mut b, ARENA_AT + (rec + 1) * 8, meta);
        add(&format!("record lengths {meta:#x}"), b, None);
    }
    for (name, bytes) in [
        ("slash in value", &b"/"[..]),
        ("unix: value", b"unix:"),
        ("space in value", b" "),
    ] {
        let mut b = good.to_vec();
        let at = value_at(&b, &site(5));
        b[at..at + bytes.len()].copy_from_slice(bytes);
        add(name, b, None);
    }
    for i in 0..random {
        let mut b = good.to_vec();
        for _ in 0..1 + rng.below(32) {
            // The index only: a slot may then point anywhere in the arena. (Damage inside a
            // value can make another valid address, which nginx would then try.)
            let at = INDEX_AT + rng.below((ARENA_AT - INDEX_AT) as u64) as usize;
            b[at] ^= 1 + rng.below(255) as u8;
        }
        add(&format!("random damage {i}"), b, None);
    }
    out
}

#[test]
fn hostile_table_files_never_crash_a_worker() {
    let random = env_count("SB_RELIABILITY_RANDOM_TABLES", 4);
    let mut rng = Rng::seeded();
    let a = Upstream::start("a");
    let good = valid_table_bytes(&a.addr());
    let corpus = hostile_corpus(&good, random, &mut rng);
    let data = shared_tempdir();
    let table = data.path().join("table");
    let mut requests = 0;
    let mut statuses: BTreeSet<u16> = BTreeSet::new();
    for (name, bytes, open_error) in &corpus {
        fs::write(&table, bytes).expect("write the table");
        fs::set_permissions(&table, fs::Permissions::from_mode(0o644)).expect("chmod");
        let n = Nginx::start(routed(&table));
        let mut workers = BTreeSet::new();
        for round in 0..2 {
            for i in (0..SITES).chain([1000, 1001]) {
                let host = site(i);
                let r = get(n.port, &host, "/").unwrap_or_else(|e| {
                    panic!("{name}: {host}: no answer ({e})\n{}", n.error_log())
                });
                requests += 1;
                statuses.insert(r.status);
                workers.insert(r.header("X-Worker").unwrap_or("").to_string());
                let allowed: &[u16] = if open_error.is_some() {
                    &[503]
                } else {
                    &[200, 404, 503]
                };
                assert!(
                    allowed.contains(&r.status),
                    "{name}: {host} (round {round}): {r:?}"
                );
                if r.status == 200 {
                    assert!(body_is(&a)(&r), "{name}: {host}: {r:?}");
                }
            }
        }
        let log = n.error_log();
        assert!(
            !log.contains("exited on signal"),
            "{name}: a worker crashed\n{log}"
        );
        assert!(
            workers.len() <= 2,
            "{name}: workers {workers:?}: one was replaced"
        );
        n.assert_clean_log();
        if let Some(what) = open_error {
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("cannot map table"))
                .collect();
            assert_eq!(lines.len(), 2, "{name}: one line per worker\n{log}");
            assert!(
                lines
                    .iter()
                    .all(|l| l.contains("[error]") && l.contains(what)),
                "{name}: the line names the fault ({what})\n{log}"
            );
        }
        let damaged = log.lines().filter(|l| l.contains("damaged record")).count();
        assert!(
            damaged <= 2,
            "{name}: damage is logged once per worker\n{log}"
        );
    }
    eprintln!(
        "RELIABILITY hostile_tables files={} requests={requests} statuses={statuses:?} crashed_workers=0",
        corpus.len()
    );
}

// ---------------------------------------------------------------------------------------------
// nginx operations under load
// ---------------------------------------------------------------------------------------------

/// A daemonized nginx (`daemon on`): the binary upgrade needs a master whose parent is not
/// the process that started it (nginx ignores USR2 otherwise), as in production.
struct Daemonized {
    dir: tempfile::TempDir,
    port: u16,
    conf: PathBuf,
}

impl Daemonized {
    fn start(table: &Path) -> Daemonized {
        let dir = shared_tempdir();
        let port = free_port();
        let user = if running_as_root() {
            "user nobody nogroup;\n"
        } else {
            ""
        };
        let body = routed(table)(port, dir.path());
        let d = dir.path().display();
        let conf = format!(
            "load_module {module};\n{user}worker_processes 2;\ndaemon on;\nmaster_process on;\n\
             error_log {d}/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n {body}\n}}\n",
            module = paths().module.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let out = Command::new(&paths().nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .output()
            .expect("start nginx");
        assert!(
            out.status.success(),
            "nginx: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = Daemonized {
            dir,
            port,
            conf: conf_path,
        };
        wait_until("nginx to answer", WAIT, || {
            get(port, "ready.invalid", "/").is_ok()
        });
        n
    }

    fn pid_file(&self, name: &str) -> Option<i32> {
        fs::read_to_string(self.dir.path().join(name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn master(&self) -> i32 {
        self.pid_file("nginx.pid").expect("nginx.pid")
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The pids of the workers answering now (by `X-Worker`).
    fn workers(&self, host: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            if let Ok(r) = get(self.port, host, "/") {
                seen.insert(r.header("X-Worker").unwrap_or("").to_string());
            }
        }
        seen
    }

    /// USR2 (a new master on the same binary), then WINCH and QUIT to the old one.
    fn upgrade(&self, host: &str) {
        let old = self.master();
        let old_workers = self.workers(host);
        signal(old, libc::SIGUSR2);
        wait_until("the new master", WAIT, || {
            self.pid_file("nginx.pid.oldbin") == Some(old)
                && self.pid_file("nginx.pid").is_some_and(|p| p != old)
        });
        // The new workers accept next to the old ones.
        wait_until("a new worker to answer", WAIT, || {
            get(self.port, host, "/").is_ok_and(|r| {
                r.header("X-Worker")
                    .is_some_and(|w| !old_workers.contains(w))
            })
        });
        signal(old, libc::SIGWINCH);
        thread::sleep(Duration::from_millis(300));
        signal(old, libc::SIGQUIT);
        wait_until("the old master to exit", WAIT, || !alive(old));
    }

    fn reload(&self) {
        let out = Command::new(&paths().nginx)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "reload"])
            .output()
            .expect("nginx -s reload");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Daemonized {
    fn drop(&mut self) {
        for name in ["nginx.pid.oldbin", "nginx.pid"] {
            if let Some(pid) = self.pid_file(name) {
                signal(pid, libc::SIGQUIT);
                let deadline = Instant::now() + WAIT;
                while alive(pid) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                if alive(pid) {
                    signal(pid, libc::SIGTERM);
                }
            }
        }
        if thread::panicking() {
            eprintln!("---- error.log ----\n{}", self.error_log());
        }
    }
}

#[test]
fn reload_and_binary_upgrade_under_load_fail_no_request() {
    let reloads = env_count("SB_RELIABILITY_RELOADS", 3);
    let upgrades = env_count("SB_RELIABILITY_UPGRADES", 2);
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let table = data.path().join("table");
    let hosts: Vec<String> = (0..10).map(|i| format!("ops-{i}.example")).collect();
    let entries: Vec<(&str, String)> = hosts.iter().map(|h| (h.as_str(), a.addr())).collect();
    let entries: Vec<(&str, &str)> = entries.iter().map(|(h, b)| (*h, b.as_str())).collect();
    let _w = write_table(&table, &entries);
    let n = Daemonized::start(&table);
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

// ---------------------------------------------------------------------------------------------
// API abuse
// ---------------------------------------------------------------------------------------------

/// The store file's bytes, and the table's without the heartbeat word (which the writer
/// refreshes every second): what a refused request must leave unchanged.
fn snapshot(w: &Writer) -> (Vec<u8>, Vec<u8>) {
    let store = fs::read(w.data_dir.join("store.redb")).expect("read the store");
    let mut table = fs::read(w.table()).expect("read the table");
    table[192..200].fill(0);
    (store, table)
}

/// A raw HTTP/1.1 request (`Connection: close`, `Content-Length` when there is a body).
fn raw(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: api.test.example\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

/// One bad input: the request, the documented status and error code (`|` between accepted
/// codes), and whether to replay it through nginx too.
struct Abuse {
    name: String,
    request: Vec<u8>,
    status: u16,
    code: &'static str,
    via_nginx: bool,
}

fn abuse_battery() -> Vec<Abuse> {
    let auth = format!("Bearer {TOKEN}");
    let json_h: Vec<(&str, &str)> = vec![
        ("Authorization", &auth),
        ("Content-Type", "application/json"),
    ];
    let mut out = Vec::new();
    let mut post = |name: &str, body: &[u8], status: u16, code: &'static str| {
        out.push(Abuse {
            name: name.to_string(),
            request: raw("POST", "/entries.json", &json_h, Some(body)),
            status,
            code,
            via_nginx: true,
        })
    };
    // Malformed and wrongly typed JSON.
    for (name, body) in [
        ("open brace", &b"{"[..]),
        ("not json", b"not json"),
        (
            "truncated",
            br#"{"host": "a.example", "backend": "10.0.0.1:80""#,
        ),
        ("empty body", b""),
        (
            "invalid utf-8",
            b"{\"host\": \"\xff.example\", \"backend\": \"10.0.0.1:80\"}",
        ),
        (
            "trailing garbage",
            br#"{"host": "a.example", "backend": "10.0.0.1:80"} x"#,
        ),
    ] {
        post(name, body, 400, "malformed_json|invalid_body");
    }
    for (name, body) in [
        ("array", &b"[]"[..]),
        ("null", b"null"),
        ("string", br#""a.example""#),
        ("host number", br#"{"host": 1, "backend": "10.0.0.1:80"}"#),
        ("backend number", br#"{"host": "a.example", "backend": 80}"#),
        (
            "host array",
            br#"{"host": ["a.example"], "backend": "10.0.0.1:80"}"#,
        ),
        ("host null", br#"{"host": null, "backend": "10.0.0.1:80"}"#),
        (
            "host object",
            br#"{"host": {"x": 1}, "backend": "10.0.0.1:80"}"#,
        ),
        ("missing backend", br#"{"host": "a.example"}"#),
        ("missing host", br#"{"backend": "10.0.0.1:80"}"#),
        (
            "unknown field",
            br#"{"host": "a.example", "backend": "10.0.0.1:80", "admin": true}"#,
        ),
        (
            "duplicate field",
            br#"{"host": "a.example", "host": "b.example", "backend": "10.0.0.1:80"}"#,
        ),
    ] {
        post(name, body, 400, "invalid_body");
    }
    let deep = "[".repeat(10_000);
    post(
        "nesting 10000 deep",
        deep.as_bytes(),
        400,
        "malformed_json|invalid_body",
    );
    let huge = json!({"host": "a".repeat(20_000), "backend": "10.0.0.1:80"}).to_string();
    post("20 KB entry", huge.as_bytes(), 413, "payload_too_large");
    // Hosts.
    let long_label = format!("{}.example", "x".repeat(64));
    let long_name = format!("{}.example", ["abcdefghi"; 30].join("."));
    for host in [
        "",
        " ",
        ".",
        "a b.example",
        "-a.example",
        "a-.example",
        "a..example",
        long_label.as_str(),
        long_name.as_str(),
        "10.0.0.1",
        "[::1]",
        "a.example/evil",
        "a.example?x=1",
        "a.example#x",
        "a.example\r\nX-Injected: 1",
        "a\u{0}.example",
        "user@a.example",
        "*.example",
        "a.example:99999",
        "a.example:",
        "xn--zz.example",
        "xn--.example",
        "ex\u{202e}ample.com",
        "a\u{ff0e}\u{ff0e}example",
        "\u{ff41}\u{ff0f}b.example",
        "a\u{2100}.example",
        "\u{200d}.example",
        "%61.example",
    ] {
        let body = json!({"host": host, "backend": "10.0.0.1:80"}).to_string();
        post(
            &format!("host {host:?}"),
            body.as_bytes(),
            400,
            "invalid_host",
        );
    }
    // Backends.
    let long_backend = format!("{}:80", "x".repeat(300));
    for backend in [
        "",
        "http://10.0.0.1:80",
        "10.0.0.1:80/path",
        "user@10.0.0.1:80",
        "user:pw@10.0.0.1:80",
        "10.0.0.1:80\r\nHost: evil",
        "10.0.0.1 :80",
        " 10.0.0.1:80",
        "10.0.0.1:80 ",
        "10.0.0.1",
        "10.0.0.1:0",
        "10.0.0.1:65536",
        "10.0.0.1:-1",
        "10.0.0.1:99999999999",
        "10.0.0.1:80?x",
        "10.0.0.1:80#x",
        "10.0.0.1:80;",
        "$host:80",
        "[::1]",
        "::1:80",
        "[::1:80",
        "999.1.1.1:80",
        "unix:80",
        "unix:/run/set-backend/api.sock",
        long_backend.as_str(),
    ] {
        let body = json!({"host": "ok.example", "backend": backend}).to_string();
        post(
            &format!("backend {backend:?}"),
            body.as_bytes(),
            400,
            "invalid_backend",
        );
    }
    let ok_entry = json!({"host": "ok.example", "backend": "10.0.0.1:80"}).to_string();
    let mut add =
        |name: &str, request: Vec<u8>, status: u16, code: &'static str, via_nginx: bool| {
            out.push(Abuse {
                name: name.to_string(),
                request,
                status,
                code,
                via_nginx,
            })
        };
    let ct = ("Content-Type", "application/json");
    // Content type and size.
    add(
        "text/plain body",
        raw(
            "POST",
            "/entries.json",
            &[("Authorization", &auth), ("Content-Type", "text/plain")],
            Some(ok_entry.as_bytes()),
        ),
        415,
        "unsupported_media_type",
        true,
    );
    add(
        "no content type",
        raw(
            "POST",
            "/entries.json",
            &[("Authorization", &auth)],
            Some(ok_entry.as_bytes()),
        ),
        415,
        "unsupported_media_type",
        true,
    );
    let mut claimed = raw(
        "POST",
        "/entries.json",
        &[
            ("Authorization", &auth),
            ct,
            ("Content-Length", "1000000000"),
        ],
        None,
    );
    claimed.extend_from_slice(ok_entry.as_bytes());
    add("claims 1 GB", claimed, 413, "payload_too_large", false);
    let mut claimed = raw(
        "PATCH",
        "/entries.json",
        &[
            ("Authorization", &auth),
            ct,
            ("Content-Length", "100000000"),
        ],
        None,
    );
    claimed.extend_from_slice(b"{\"upsert\": [");
    add(
        "batch claims 100 MB",
        claimed,
        413,
        "payload_too_large",
        false,
    );
    // Tokens.
    let wrong = "Bearer wrong-token-0123456789";
    let short = format!("Bearer {}", &TOKEN[..10]);
    let longer = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for (name, h) in [
        ("no token", None),
        ("wrong token", Some(wrong)),
        ("token prefix", Some(short.as_str())),
        ("token with a suffix", Some(longer.as_str())),
        ("basic scheme", Some(basic.as_str())),
        ("bare token", Some(TOKEN)),
    ] {
        let headers: Vec<(&str, &str)> = h
            .map(|v| ("Authorization", v))
            .into_iter()
            .chain([ct])
            .collect();
        add(
            &format!("POST, {name}"),
            raw("POST", "/entries.json", &headers, Some(ok_entry.as_bytes())),
            401,
            "unauthorized",
            true,
        );
    }
    add(
        "DELETE without token",
        raw("DELETE", "/entries/keep-0.example.json", &[], None),
        401,
        "unauthorized",
        true,
    );
    add(
        "PUT without token",
        raw("PUT", "/entries.json", &[ct], Some(b"[]")),
        401,
        "unauthorized",
        true,
    );
    add(
        "GET list without token",
        raw("GET", "/entries.json", &[], None),
        401,
        "unauthorized",
        true,
    );
    // Methods and routes.
    let a = [("Authorization", auth.as_str())];
    for (method, path) in [
        ("PUT", "/entries/keep-0.example.json"),
        ("POST", "/entries/keep-0.example.json"),
        ("PATCH", "/entries/keep-0.example.json"),
        ("DELETE", "/entries.json"),
        ("POST", "/"),
        ("DELETE", "/healthz"),
    ] {
        add(
            &format!("{method} {path}"),
            raw(method, path, &a, None),
            405,
            "method_not_allowed",
            true,
        );
    }
    for (method, path, status, code) in [
        ("DELETE", "/entries/keep-0.example", 404, "no_route"),
        ("DELETE", "/entries/keep-0.example.json/x", 404, "no_route"),
        ("DELETE", "/entries/..%2f..%2fetc.json", 400, "invalid_host"),
        ("DELETE", "/entries/%00.json", 400, "invalid_host"),
        ("DELETE", "/entries/a%20b.json", 400, "invalid_host"),
        ("DELETE", "/entries/%ff.json", 400, "invalid_host"),
        ("DELETE", "/entries/.json", 400, "invalid_host"),
        ("DELETE", "/entries/absent.example.json", 404, "not_found"),
    ] {
        add(
            &format!("{method} {path}"),
            raw(method, path, &a, None),
            status,
            code,
            true,
        );
    }
    // Batches and replace-all: one bad entry refuses everything.
    let ja: Vec<(&str, &str)> = vec![("Authorization", &auth), ct];
    for (name, method, body, code) in [
        (
            "batch duplicate",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "N1.example.", "backend": "10.0.0.2:80"}]}),
            "duplicate_host",
        ),
        (
            "batch upsert and delete one host",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}], "delete": ["n1.example"]}),
            "duplicate_host",
        ),
        (
            "batch second entry bad",
            "PATCH",
            json!({"upsert": [{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "n2.example", "backend": "http://x:80"}], "delete": ["keep-0.example"]}),
            "invalid_backend",
        ),
        (
            "batch bad delete",
            "PATCH",
            json!({"delete": ["keep-0.example", "bad host"]}),
            "invalid_host",
        ),
        (
            "batch unknown field",
            "PATCH",
            json!({"upsert": [], "drop_all": true}),
            "invalid_body",
        ),
        (
            "batch wrong type",
            "PATCH",
            json!({"upsert": "n1.example"}),
            "invalid_body",
        ),
        (
            "replace-all bad entry",
            "PUT",
            json!([{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "", "backend": "10.0.0.1:80"}]),
            "invalid_host",
        ),
        ("replace-all object", "PUT", json!({}), "invalid_body"),
        (
            "replace-all duplicate",
            "PUT",
            json!([{"host": "n1.example", "backend": "10.0.0.1:80"}, {"host": "n1.example", "backend": "10.0.0.1:81"}]),
            "duplicate_host",
        ),
    ] {
        add(
            name,
            raw(
                method,
                "/entries.json",
                &ja,
                Some(body.to_string().as_bytes()),
            ),
            400,
            code,
            true,
        );
    }
    out
}

/// nginx in front of the writer with short client timeouts, for the slow-request cases.
fn api_with_timeouts(table: &Path, socket: &Path) -> impl Fn(u16, &Path) -> String {
    let (table, socket) = (table.to_path_buf(), socket.to_path_buf());
    move |port, _| {
        format!(
            "set_backend_table {table};
             server {{
                 listen 127.0.0.1:{port} reuseport;
                 server_name api.test.example;
                 client_header_timeout 2s;
                 client_body_timeout 2s;
                 location / {{
                     proxy_pass http://unix:{socket}:;
                     proxy_set_header Host $host;
                 }}
             }}
             server {{
                 listen 127.0.0.1:{port} default_server;
                 client_header_timeout 2s;
                 location / {{ set_backend $backend; proxy_pass http://$backend$request_uri; }}
             }}",
            table = table.display(),
            socket = socket.display()
        )
    }
}

fn error_code(r: &Response) -> String {
    serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "-".into())
}

#[test]
fn api_abuse_gets_the_documented_4xx_and_changes_nothing() {
    require_writer();
    let data = shared_tempdir();
    let w = Writer::start(&data.path().join("writer"), TOKEN);
    let n = Nginx::start(api_with_timeouts(&w.table(), &w.socket));
    let keep: Vec<Value> = (0..3)
        .map(|i| json!({"host": format!("keep-{i}.example"), "backend": format!("10.0.0.{i}:80")}))
        .collect();
    let r = socket_api(
        &w.socket,
        "PATCH",
        "/entries.json",
        Some(&json!({"upsert": keep}).to_string()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let before = snapshot(&w);
    let generation = Table::open(w.table()).expect("table").generation();

    let battery = abuse_battery();
    let mut failures = Vec::new();
    let mut tried = 0;
    for case in &battery {
        let direct = raw_unix_request(&w.socket, &case.request);
        tried += 1;
        match &direct {
            Ok(r)
                if r.status == case.status && case.code.split('|').any(|c| c == error_code(r)) => {}
            other => failures.push(format!(
                "{} (direct): want {} {}, got {other:?}",
                case.name, case.status, case.code
            )),
        }
        if case.via_nginx {
            tried += 1;
            match raw_request(n.port, &case.request) {
                Ok(r) if r.status == case.status => {}
                other => failures.push(format!(
                    "{} (nginx): want {}, got {other:?}",
                    case.name, case.status
                )),
            }
        }
    }

    // Slow and oversized requests through nginx: nginx's own 4xx, the writer never sees them.
    let slow_body = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        let head = format!(
            "POST /entries.json HTTP/1.1\r\nHost: api.test.example\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"host\""
        );
        s.write_all(head.as_bytes()).expect("write");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // nginx logs 408 and closes the connection without an answer.
    tried += 1;
    if !(slow_body.is_empty() || slow_body.starts_with("HTTP/1.1 408")) {
        failures.push(format!("slow body: want a close or 408, got {slow_body:?}"));
    }
    let slow_head = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
        s.write_all(b"POST /entries.json HTTP/1.1\r\nHost: api.test.ex")
            .expect("write");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let started = Instant::now();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        (out, started.elapsed())
    };
    tried += 1;
    if !(slow_head.0.is_empty() || slow_head.0.starts_with("HTTP/1.1 408"))
        || slow_head.1 > Duration::from_secs(10)
    {
        failures.push(format!(
            "slow header: want a close within the timeout, got {slow_head:?}"
        ));
    }
    let big_header = raw(
        "GET",
        "/entries.json",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("X-Big", &"x".repeat(64 * 1024)),
        ],
        None,
    );
    tried += 2;
    match raw_request(n.port, &big_header) {
        Ok(r) if r.status == 400 || r.status == 431 || r.status == 494 => {}
        other => failures.push(format!("64 KB header (nginx): got {other:?}")),
    }
    let huge_header = raw(
        "GET",
        "/entries.json",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("X-Big", &"x".repeat(1024 * 1024)),
        ],
        None,
    );
    match raw_unix_request(&w.socket, &huge_header) {
        Ok(r) if (400..500).contains(&r.status) => {}
        Err(_) => {} // hyper may close the connection without an answer
        other => failures.push(format!("1 MB header (direct): got {other:?}")),
    }
    let big_body = raw(
        "POST",
        "/entries.json",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        Some(&vec![b' '; 2 * 1024 * 1024]),
    );
    tried += 1;
    match raw_request(n.port, &big_body) {
        Ok(r) if r.status == 413 => {}
        other => failures.push(format!("2 MB body (nginx): got {other:?}")),
    }
    // A stalled client on the socket does not hold up others.
    {
        use std::io::Write;
        let mut stalled = std::os::unix::net::UnixStream::connect(&w.socket).expect("connect");
        stalled
            .write_all(b"POST /entries.json HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
            .expect("write");
        tried += 1;
        let r = socket_api(&w.socket, "GET", "/entries/keep-1.example.json", None);
        if r.status != 200 {
            failures.push(format!("a stalled client blocked a request: {r:?}"));
        }
    }

    let after = snapshot(&w);
    let store_same = before.0 == after.0;
    let table_same = before.1 == after.1;
    let generation_after = Table::open(w.table()).expect("table").generation();
    eprintln!(
        "RELIABILITY api_abuse inputs={} requests={tried} wrong_answers={} store_unchanged={store_same} table_unchanged={table_same}",
        battery.len() + 6,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(store_same, "the store file changed");
    assert!(table_same, "the table file changed");
    assert_eq!(generation, generation_after);
    assert!(battery.len() >= 50);
    n.assert_clean_log();
}

// ---------------------------------------------------------------------------------------------
// Resource faults
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for a test, unmounted on drop (lazily if something still holds it).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        fs::create_dir_all(dir).expect("mkdir mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Mount(dir.to_path_buf())
    }

    fn remount(&self, opts: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn skip_unless_root(test: &str) -> bool {
    if running_as_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: needs root (mounts a tmpfs / switches users); CI runs as root");
    true
}

/// Fills the file system holding `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = fs::File::create(&path).expect("create filler");
    let chunk = vec![0x42u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let small = [0x42u8; 512];
    while f.write_all(&small).is_ok() {}
    path
}

#[test]
fn a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers() {
    if skip_unless_root("a_full_disk_refuses_writes_with_503_loses_nothing_and_recovers") {
        return;
    }
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let disk = Mount::tmpfs(&data.path().join("disk"), "6m");
    let dir = disk.0.join("writer");
    let mut w = Writer::start(&dir, TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    let r = socket_api(
        &w.socket,
        "POST",
        "/entries.json",
        Some(&json!({"host": "before.example", "backend": a.addr()}).to_string()),
    );
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("before.example", body_is(&a));

    let filler = fill(&disk.0);
    let load = Load::start(n.port, &["before.example".to_string()], "a", 2);
    // Batches of new hosts until the store refuses: each answer is a 2xx or the 503.
    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    let mut attempts = 0;
    let mut message = String::new();
    for batch in 0..200 {
        attempts += 1;
        let hosts: Vec<String> = (0..200)
            .map(|i| format!("full-{batch}-{i}.example"))
            .collect();
        let r = upsert_all(&w.socket, &hosts, &a.addr());
        match r.status {
            200 => acked.extend(hosts),
            503 => {
                assert_eq!(error_code(&r), "store_unavailable", "{r:?}");
                message = r.body.clone();
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            _ => panic!("batch {batch}: {r:?}\n{}", w.log()),
        }
    }
    assert!(refused > 0, "the full disk never refused a write");
    assert!(message.contains("full"), "the message says why: {message}");
    // Single writes are refused as well, and reads still answer.
    let r = socket_api(&w.socket, "GET", "/entries/before.example.json", None);
    assert!(r.status == 200 || r.status == 503, "{r:?}");

    // Room again: writes succeed after the store is reopened (within a heartbeat or at once).
    fs::remove_file(&filler).expect("remove filler");
    let mut recovered = None;
    let deadline = Instant::now() + WAIT;
    while recovered.is_none() && Instant::now() < deadline {
        let r = socket_api(
            &w.socket,
            "POST",
            "/entries.json",
            Some(&json!({"host": "after.example", "backend": a.addr()}).to_string()),
        );
        if r.status < 300 {
            recovered = Some(r);
        } else {
            assert_eq!(r.status, 503, "{r:?}");
            thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(recovered.is_some(), "writes never recovered\n{}", w.log());
    n.wait_every_worker("after.example", body_is(&a));
    let (ok, failed) = load.finish();

    let check = |w: &Writer, when: &str| {
        let store = assert_table_matches_store(w, when);
        let hosts: BTreeSet<&str> = store.iter().map(|(h, _)| h.as_str()).collect();
        for h in acked
            .iter()
            .chain(["before.example".to_string(), "after.example".to_string()].iter())
        {
            assert!(hosts.contains(h.as_str()), "{when}: acknowledged {h} lost");
        }
    };
    check(&w, "after recovery");
    w.stop();
    let w = Writer::start(&dir, TOKEN);
    check(&w, "after a restart");
    eprintln!(
        "RELIABILITY disk_full batches={attempts} acked_batches={} refused={refused} routed_requests={} failed={failed} lost=0",
        acked.len() / 200,
        ok + failed
    );
    assert_eq!(failed, 0, "routing failed while the disk was full");
    drop(w);
    drop(n);
}

#[test]
fn a_full_table_disk_answers_503_until_the_table_is_rebuilt() {
    if skip_unless_root("a_full_table_disk_answers_503_until_the_table_is_rebuilt") {
        return;
    }
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    // The store on the usual disk, the table alone on a small tmpfs: commits succeed, a new
    // generation of the table cannot be allocated.
    let disk = Mount::tmpfs(&data.path().join("tables"), "1m");
    let table = disk.0.join("table");
    let dir = data.path().join("writer");
    let table_arg = table.to_string_lossy().into_owned();
    let w = Writer::start_with_args(&dir, TOKEN, &["--table", &table_arg]);
    let n = Nginx::start(with_api(&table, &w.socket));
    let post = |host: &str| {
        socket_api(
            &w.socket,
            "POST",
            "/entries.json",
            Some(&json!({"host": host, "backend": a.addr()}).to_string()),
        )
    };
    assert!(post("steady.example").status < 300);
    n.wait_every_worker("steady.example", body_is(&a));
    let filler = fill(&disk.0);
    let load = Load::start(n.port, &["steady.example".to_string()], "a", 2);

    // Batches until the table must grow: every 2xx is visible in the table at once; the batch
    // that cannot be published is stored and answered 503 table_unavailable.
    let (mut visible, mut unavailable, mut message) = (0, 0, String::new());
    for batch in 0..100 {
        let hosts: Vec<String> = (0..300)
            .map(|i| format!("grow-{batch}-{i}.example"))
            .collect();
        let r = upsert_all(&w.socket, &hosts, &a.addr());
        match r.status {
            200 => {
                let t = Table::open(&table).expect("table");
                for h in &hosts {
                    assert!(
                        matches!(t.lookup(h.as_bytes()), Lookup::Hit(_)),
                        "acknowledged {h} is not in the table"
                    );
                }
                visible += 1;
            }
            503 => {
                assert_eq!(error_code(&r), "table_unavailable", "{r:?}");
                message = r.body.clone();
                unavailable += 1;
                break;
            }
            _ => panic!("batch {batch}: {r:?}\n{}", w.log()),
        }
    }
    assert_eq!(unavailable, 1, "the table never ran out of room");
    assert!(
        message.contains("stored") && message.contains("full"),
        "{message}"
    );
    assert_eq!(
        unix_request(&w.socket, "GET", "/healthz", &[], None)
            .expect("healthz")
            .status,
        503
    );

    fs::remove_file(&filler).expect("remove filler");
    wait_until("the table to be rebuilt", WAIT, || {
        unix_request(&w.socket, "GET", "/healthz", &[], None).is_ok_and(|r| r.status == 200)
    });
    let store = listed(&w.socket);
    assert_eq!(
        table_entries(&table),
        store,
        "after the rebuild: table and store differ"
    );
    let (ok, failed) = load.finish();
    eprintln!(
        "RELIABILITY table_disk_full visible_batches={visible} unavailable_batches={unavailable} entries={} routed_requests={} failed={failed}",
        store.len(),
        ok + failed
    );
    assert_eq!(failed, 0, "routing failed while the table could not grow");
    drop(n);
    drop(w);
}

#[test]
fn a_read_only_store_fails_the_start_clearly() {
    if skip_unless_root("a_read_only_store_fails_the_start_clearly") {
        return;
    }
    require_writer();
    let data = shared_tempdir();
    let ro = Mount::tmpfs(&data.path().join("ro"), "1m");
    assert!(ro.remount("ro"), "remount read-only");
    let dir = data.path().join("writer");
    fs::create_dir_all(&dir).expect("mkdir");
    let out = Command::new(&paths().writer)
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .arg("--socket")
        .arg(dir.join("api.sock"))
        .arg("--store")
        .arg(ro.0.join("store.redb"))
        .env("API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .output()
        .expect("run the writer");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("Read-only file system"),
        "the log says why:\n{log}"
    );
    eprintln!("RELIABILITY read_only_store start_refused=1");
}

#[test]
fn the_table_deleted_or_replaced_under_nginx_fails_no_request() {
    require_writer();
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let mut w = Writer::start(&dir, TOKEN);
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    let hosts: Vec<String> = (0..5).map(|i| format!("kept-{i}.example")).collect();
    assert_eq!(upsert_all(&w.socket, &hosts, &a.addr()).status, 200);
    for h in &hosts {
        n.wait_every_worker(h, body_is(&a));
    }
    let load = Load::start(n.port, &hosts, "a", 2);

    // Deleted: the workers keep their mapping; the writer keeps publishing into it.
    fs::remove_file(w.table()).expect("rm table");
    thread::sleep(Duration::from_millis(5500)); // past a 5 s check of the path
    let r = socket_api(
        &w.socket,
        "POST",
        "/entries.json",
        Some(&json!({"host": "late.example", "backend": a.addr()}).to_string()),
    );
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("late.example", body_is(&a));

    // Replaced by garbage: the workers log it once each and keep serving.
    let tmp = data.path().join("garbage");
    fs::write(&tmp, vec![0x5a; 64 * 1024]).expect("write");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).expect("chmod");
    fs::rename(&tmp, w.table()).expect("rename");
    wait_until(
        "the workers to notice the garbage",
        Duration::from_secs(15),
        || n.error_log().matches("not a set-backend table").count() >= 2,
    );
    // A restarted writer publishes a good table again; the workers map it.
    w.stop();
    let w = Writer::start(&dir, TOKEN);
    let r = socket_api(
        &w.socket,
        "POST",
        "/entries.json",
        Some(&json!({"host": "again.example", "backend": a.addr()}).to_string()),
    );
    assert!(r.status < 300, "{r:?}");
    n.wait_every_worker("again.example", body_is(&a));
    let (ok, failed) = load.finish();
    let log = n.error_log();
    eprintln!(
        "RELIABILITY table_deleted_replaced requests={} failed={failed}",
        ok + failed
    );
    assert_eq!(failed, 0, "{failed} requests failed\n{log}");
    assert_eq!(log.matches("not a set-backend table").count(), 2, "{log}");
    assert!(!log.contains("exited on signal"), "{log}");
    n.assert_clean_log();
}

// ---------------------------------------------------------------------------------------------
// Permissions
// ---------------------------------------------------------------------------------------------

/// Runs `sh -c script` as `uid:gid`; true when it succeeds.
fn as_user(uid: u32, gid: u32, script: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn workers_cannot_write_the_table_or_the_store_and_only_nginx_reaches_the_socket() {
    if skip_unless_root(
        "workers_cannot_write_the_table_or_the_store_and_only_nginx_reaches_the_socket",
    ) {
        return;
    }
    require_writer();
    const NOBODY: u32 = 65534; // nginx's workers run as nobody:nogroup in these tests
    const DAEMON: u32 = 1; // any other user
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let w = Writer::start_with_args(
        &dir,
        TOKEN,
        &["--socket-mode", "660", "--socket-group", "nogroup"],
    );
    let n = Nginx::start(with_api(&w.table(), &w.socket));
    let r = super::api(
        &n,
        "POST",
        "/entries.json",
        Some(&json!({"host": "perm.example", "backend": a.addr()}).to_string()),
    );
    assert!(r.status < 300, "the workers reach the socket: {r:?}");
    n.wait_every_worker("perm.example", body_is(&a));

    let (table, store, socket) = (w.table(), dir.join("store.redb"), w.socket.clone());
    let q = |p: &Path| format!("'{}'", p.display());
    let mut checks = 0;
    let mut check = |what: &str, allowed: bool, uid: u32, script: String| {
        checks += 1;
        assert_eq!(as_user(uid, uid, &script), allowed, "{what}: {script}");
    };
    check(
        "workers read the table",
        true,
        NOBODY,
        format!("cat {} > /dev/null", q(&table)),
    );
    check(
        "workers cannot write the table",
        false,
        NOBODY,
        format!("printf x >> {}", q(&table)),
    );
    check(
        "workers cannot read the store",
        false,
        NOBODY,
        format!("cat {} > /dev/null", q(&store)),
    );
    check(
        "workers cannot write the store",
        false,
        NOBODY,
        format!("printf x >> {}", q(&store)),
    );
    check(
        "workers cannot replace the table",
        false,
        NOBODY,
        format!("touch {}", q(&dir.join("table.new"))),
    );
    let curl = |p: &Path| {
        format!(
            "curl -sf --max-time 5 --unix-socket {} http://api/healthz",
            q(p)
        )
    };
    check(
        "nginx's user reaches the socket",
        true,
        NOBODY,
        curl(&socket),
    );
    check("another user cannot", false, DAEMON, curl(&socket));
    assert_eq!(
        fs::metadata(&socket).expect("socket").permissions().mode() & 0o777,
        0o660
    );
    assert_eq!(
        fs::metadata(&table).expect("table").permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(&store).expect("store").permissions().mode() & 0o777,
        0o600
    );

    // A generated token file is 0600 and unreadable by the workers.
    let tdir = data.path().join("generated");
    fs::create_dir_all(&tdir).expect("mkdir");
    let mut child = Command::new(&paths().writer)
        .arg("serve")
        .arg("--data-dir")
        .arg(&tdir)
        .arg("--socket")
        .arg(tdir.join("api.sock"))
        .env_remove("API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let token = tdir.join("token");
    wait_until("the token file", WAIT, || {
        tdir.join("api.sock").exists() && token.exists()
    });
    signal(child.id() as i32, libc::SIGTERM);
    let _ = child.wait();
    assert_eq!(
        fs::metadata(&token).expect("token").permissions().mode() & 0o777,
        0o600
    );
    check(
        "workers cannot read the token",
        false,
        NOBODY,
        format!("cat {} > /dev/null", q(&token)),
    );
    eprintln!("RELIABILITY permissions checks={} violations=0", checks + 4);
    n.assert_clean_log();
}
