//! Multi-process torn-read test. Reader processes map the table read-only and check a checksum
//! embedded in every value (every member of a backend set: all of them from the same write)
//! while a writer process churns upserts and deletes (growing the
//! table through several generations) and is SIGKILLed again and again. Asserts zero torn or
//! mixed values, zero corrupt answers, and that no reader hangs.
//!
//! Runs about 10 s; `SB_CHURN_SECS=600 cargo test -p shm-layout --release --test churn` for a
//! soak run.

use shm_layout::testkit::Rng;
use shm_layout::{
    Backend, BackendSet, Host, Lookup, SetMember, Table, TableWriter, Upserted, Value, WriteError,
    WriterOptions,
};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS: u64 = 4000;
const ROLE: &str = "SB_CHURN_ROLE";
const PATH: &str = "SB_CHURN_PATH";

fn host(i: u64) -> String {
    format!("churn-{i}.example")
}

fn check(host: &str, n: u64) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(1, 2);
    h.write(host.as_bytes());
    h.write(&n.to_le_bytes());
    h.finish()
}

/// `c<checksum>.n<n>.m<j>.example:<port>`, member `j` of write `n`: the checksum binds the
/// value to its host and counter, the port to the counter, so a value torn between two writes
/// or copied from another key fails the check.
fn value(host: &str, n: u64, j: u64) -> String {
    format!(
        "c{:016x}.n{n}.m{j}.example:{}",
        check(host, n),
        1 + n % 65000
    )
}

/// The members write `n` gives: `1 + n % 4` of them, weighted by `n`, the fourth a backup.
fn members_of(n: u64) -> u64 {
    1 + n % 4
}

fn weight_of(n: u64, j: u64) -> u8 {
    (1 + (n + j) % 100) as u8
}

/// Write `n` of `host`'s entry: a plain backend, or a set of two to four.
fn upsert(w: &mut TableWriter, host: &str, n: u64) -> Result<Upserted, WriteError> {
    let key = Host::parse(host).unwrap();
    let backend = |j| Backend::parse(&value(host, n, j)).unwrap();
    if members_of(n) == 1 {
        return w.upsert(&key, &backend(0));
    }
    let set = (0..members_of(n))
        .map(|j| SetMember {
            backend: backend(j),
            weight: weight_of(n, j),
            backup: j == 3,
        })
        .collect();
    w.upsert(&key, &BackendSet::new(set).unwrap())
}

/// `(n, j)` of a member's text, if its checksum binds it to `host`.
fn parse_member(host: &str, v: &str) -> Option<(u64, u64)> {
    let rest = v.strip_prefix('c')?;
    let (sum, rest) = rest.split_once(".n")?;
    let (n, rest) = rest.split_once(".m")?;
    let (j, port) = rest.split_once(".example:")?;
    let (n, j): (u64, u64) = (n.parse().ok()?, j.parse().ok()?);
    let ok = u64::from_str_radix(sum, 16).ok()? == check(host, n)
        && port.parse::<u64>().ok()? == 1 + n % 65000;
    ok.then_some((n, j))
}

/// Whether `v` is exactly one write's entry for `host`: every member from the same write, in
/// order, with that write's count, weights and backup.
fn value_ok(host: &str, v: &Value) -> bool {
    let Some((n, _)) = parse_member(host, v.as_str()) else {
        return false;
    };
    let set = members_of(n) > 1;
    v.members() as u64 == members_of(n)
        && (0..v.members()).all(|i| {
            let m = v.member(i).unwrap();
            let j = i as u64;
            parse_member(host, m.as_str()) == Some((n, j))
                && m.backup() == (j == 3)
                && m.weight() == if set { weight_of(n, j) } else { 1 }
        })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.as_nanos() as u64 ^ (std::process::id() as u64) << 32) | 1
}

fn writer_main(path: &Path) {
    let mut rng = Rng::new(seed());
    // Restarted after every kill: rebuild from "the store" (here, a fresh random state), which
    // publishes a new generation over the old file as the real writer does at start.
    let initial = (0..HOSTS / 2).map(|i| {
        let h = host(i);
        let v = value(&h, 4 * (rng.next_u64() % 1_000_000), 0);
        (Host::parse(&h).unwrap(), Backend::parse(&v).unwrap())
    });
    let opts = WriterOptions {
        min_capacity: 64,
        sync: false,
        ..WriterOptions::default()
    };
    let mut w = TableWriter::create(path, initial, opts).unwrap();
    loop {
        let i = rng.next_u64() % HOSTS;
        let h = host(i);
        if rng.next_u64().is_multiple_of(4) {
            w.delete(&Host::parse(&h).unwrap()).unwrap();
        } else {
            upsert(&mut w, &h, rng.next_u64() % 1_000_000).unwrap();
        }
        if rng.next_u64().is_multiple_of(20_000) {
            w.compact().unwrap();
        }
    }
}

fn reader_main(path: &Path, secs: u64) {
    let mut rng = Rng::new(seed());
    let deadline = Instant::now() + Duration::from_secs(secs);
    // The path always names a complete table: generations replace it by rename.
    let open = || Table::open(path).unwrap_or_else(|e| panic!("reader cannot open the table: {e}"));
    let mut t = open();
    let (mut lookups, mut hits, mut misses, mut busy, mut remaps) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut torn, mut corrupt) = (0u64, 0u64);
    while Instant::now() < deadline {
        for _ in 0..1000 {
            if t.is_superseded() {
                t = open();
                remaps += 1;
            }
            let h = host(rng.next_u64() % HOSTS);
            lookups += 1;
            match t.lookup(h.as_bytes()) {
                Lookup::Hit(v) => {
                    hits += 1;
                    if !value_ok(&h, &v) {
                        torn += 1;
                        eprintln!("torn value for {h}: {v:?}");
                    }
                }
                Lookup::Miss => misses += 1,
                Lookup::Busy => busy += 1,
                Lookup::Corrupt => corrupt += 1,
            }
        }
    }
    println!(
        "RESULT lookups={lookups} hits={hits} misses={misses} busy={busy} remaps={remaps} torn={torn} corrupt={corrupt}"
    );
}

fn spawn(role: &str, path: &Path, secs: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(PATH, path)
        .env("SB_CHURN_SECS", secs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The entry point of the child processes; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = PathBuf::from(std::env::var(PATH).unwrap());
    let secs: u64 = std::env::var("SB_CHURN_SECS").unwrap().parse().unwrap();
    match role.as_str() {
        "writer" => writer_main(&path),
        "reader" => reader_main(&path, secs),
        _ => unreachable!(),
    }
}

fn kill9(child: &mut Child) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn readers_never_see_torn_values_while_the_writer_is_killed() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let secs: u64 = std::env::var("SB_CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");

    let mut writer = spawn("writer", &path, secs);
    let start = Instant::now();
    while Table::open(&path).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the writer never published"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let readers: Vec<Child> = (0..2).map(|_| spawn("reader", &path, secs)).collect();

    let mut rng = Rng::new(seed());
    let mut kills = 0;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20 + rng.next_u64() % 200));
        kill9(&mut writer);
        kills += 1;
        writer = spawn("writer", &path, secs);
    }
    kill9(&mut writer);

    // Readers stop by themselves; one that does not within a grace period is hung.
    let hang_deadline = Instant::now() + Duration::from_secs(20);
    let mut totals = [0u64; 7];
    for mut r in readers {
        loop {
            if r.try_wait().unwrap().is_some() {
                break;
            }
            if Instant::now() > hang_deadline {
                kill9(&mut r);
                panic!("a reader hung");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = r.wait_with_output().unwrap();
        assert!(out.status.success(), "reader failed: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let at = text.find("RESULT ").expect("no RESULT line");
        let line = text[at + "RESULT ".len()..].lines().next().unwrap_or("");
        for (i, field) in line.split(' ').enumerate() {
            totals[i] += field.split_once('=').unwrap().1.parse::<u64>().unwrap();
        }
    }
    let [lookups, hits, misses, busy, remaps, torn, corrupt] = totals;
    eprintln!(
        "churn: {secs}s, {kills} writer kills, {lookups} lookups ({hits} hits, {misses} misses, \
         {busy} busy), {remaps} remaps, {torn} torn, {corrupt} corrupt"
    );
    assert_eq!(torn, 0, "torn or mixed values");
    assert_eq!(corrupt, 0, "corrupt answers");
    assert!(kills >= 10, "only {kills} kills");
    assert!(
        hits > 10_000 && misses > 0,
        "readers did not exercise the table"
    );
    assert!(remaps > 0, "readers never followed a new generation");
}
