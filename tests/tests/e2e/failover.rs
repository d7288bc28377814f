//! Backend sets in upstream mode: weights, failover (tries, `max_fails`, `fail_timeout`),
//! backups, and a set changed while `keepalive` holds connections to its old backends. Real
//! nginx, real upstreams killed and restarted on their ports.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

/// Requests answered by each upstream name, out of `count` sent for `host` by 4 clients; every
/// answer must be a 200 from one of the set's upstreams.
fn shares(n: &Nginx, host: &str, count: usize) -> BTreeMap<String, usize> {
    shares_by(n, host, count, 4)
}

/// [`shares`] with `clients` clients.
fn shares_by(n: &Nginx, host: &str, count: usize, clients: usize) -> BTreeMap<String, usize> {
    let port = n.port;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let host = host.to_string();
            thread::spawn(move || {
                let mut seen = BTreeMap::<String, usize>::new();
                for _ in (c..count).step_by(clients) {
                    let r = get(port, &host, "/").expect("GET");
                    assert_eq!(r.status, 200, "{r:?}");
                    let name = r.body.split(' ').next().unwrap_or("").to_string();
                    *seen.entry(name).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().expect("client") {
            *all.entry(k).or_default() += v;
        }
    }
    all
}

/// Lines of `error.log` about a failed connection to `port`.
fn refused(n: &Nginx, port: u16) -> usize {
    n.error_log()
        .lines()
        .filter(|l| l.contains("connect() failed") && l.contains(&format!(":{port}/")))
        .count()
}

/// Waits until the upstream's request count holds still (it counts after answering).
fn settled(u: &Upstream) -> usize {
    let mut before = u.requests();
    loop {
        thread::sleep(Duration::from_millis(100));
        let now = u.requests();
        if now == before {
            return now;
        }
        before = now;
    }
}

#[test]
fn weights_share_the_requests_within_three_points() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let (_data, table, mut w) = table_with(&[("weighted.example", &a.addr())]);
    let set = [(&a, 1u8), (&b, 3), (&c, 6)];
    let members: Vec<(String, u8, bool)> =
        set.iter().map(|(u, wt)| (u.addr(), *wt, false)).collect();
    upsert_set(&mut w, "weighted.example", &members);
    let n = Nginx::start(upstream_routed(&table, "", ""));

    const N: usize = 10_000;
    let got = shares(&n, "weighted.example", N);
    eprintln!("{N} requests: {got:?}");
    let total: usize = set.iter().map(|(_, wt)| usize::from(*wt)).sum();
    for (u, wt) in set {
        let share = got
            .get(&format!("upstream={}", u.name))
            .copied()
            .unwrap_or(0) as f64
            / N as f64
            * 100.0;
        let want = f64::from(wt) / total as f64 * 100.0;
        assert!(
            (share - want).abs() <= 3.0,
            "{}: {share:.1}% of the requests, weight's share {want:.1}%: {got:?}",
            u.name
        );
    }
    n.assert_clean_log();
}

/// Two primaries; one is killed, then the other, each restarted later, while four clients send
/// GETs non-stop: no client request fails. A dead backend is tried about once per
/// `fail_timeout` per worker, and gets requests again once it is back.
#[test]
fn failover_under_load_fails_no_request() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, mut w) = table_with(&[("pair.example", &a.addr())]);
    upsert_set(
        &mut w,
        "pair.example",
        &[(a.addr(), 1, false), (b.addr(), 1, false)],
    );
    let n = Nginx::start(upstream_routed(&table, "max_fails=1 fail_timeout=2s", ""));
    n.every_worker("pair.example", |r| r.status == 200);

    let load = Load::start_any(n.port, &["pair.example".to_string()], &["a", "b"], 4);
    thread::sleep(Duration::from_millis(800));
    let mut ups = [a, b];
    for victim in [1, 0] {
        let (name, port) = (ups[victim].name.clone(), ups[victim].port);
        let other = &ups[1 - victim];
        ups[victim].kill();
        let (sent, served) = (load.ok(), other.requests());
        // Dead for 3 s, 1.5 fail_timeouts: a few tries per worker, not one per request.
        thread::sleep(Duration::from_secs(3));
        let during = load.ok() - sent;
        let tries = refused(&n, port);
        eprintln!("{name} dead: {during} requests answered, {tries} connections tried to it");
        assert!(during >= 100, "only {during} requests in 3 s");
        assert!(
            (1..=12).contains(&tries),
            "{tries} connections tried to the dead backend in 3 s"
        );
        assert!(other.requests() - served >= during as usize / 2);
        assert!(n
            .error_log()
            .contains("upstream server temporarily disabled"));

        ups[victim] = Upstream::restart(&name, port);
        // Within fail_timeout (2 s) of its last failed try, it gets requests again.
        let back = Instant::now();
        while ups[victim].requests() == 0 {
            assert!(
                back.elapsed() < Duration::from_secs(6),
                "{name} never used again"
            );
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{name} back: used again after {:?}", back.elapsed());
        thread::sleep(Duration::from_secs(1));
        assert!(ups[victim].requests() > 20, "{name} hardly used once back");
    }
    let (ok, failed) = load.finish();
    eprintln!(
        "RELIABILITY backend_failover requests={} backends_killed=2 failed={failed}",
        ok + failed
    );
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    n.assert_clean_log();
}

/// A backup gets requests only while every primary is down, and the primaries get them back
/// once up again; a set whose every member is marked failed is tried anyway.
#[test]
fn a_backup_serves_only_while_every_primary_is_down() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let (_data, table, mut w) = table_with(&[("backed.example", &a.addr())]);
    upsert_set(
        &mut w,
        "backed.example",
        &[
            (a.addr(), 1, false),
            (b.addr(), 1, false),
            (c.addr(), 1, true),
        ],
    );
    let n = Nginx::start(upstream_routed(&table, "fail_timeout=1s", ""));
    let got = shares(&n, "backed.example", 200);
    assert_eq!(got.get("upstream=c"), None, "{got:?}");
    assert!(got.len() == 2, "{got:?}");

    a.kill();
    let got = shares(&n, "backed.example", 100);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["upstream=b"], "{got:?}");
    b.kill();
    let got = shares(&n, "backed.example", 100);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["upstream=c"], "{got:?}");

    let (a, b) = (
        Upstream::restart("a", a.port),
        Upstream::restart("b", b.port),
    );
    thread::sleep(Duration::from_millis(1500));
    let served = settled(&c);
    // One client: with several, a request arriving while the primaries' tests are in flight
    // goes to the backup (the primaries still count as failed until a test succeeds), as in
    // nginx.
    let got = shares_by(&n, "backed.example", 200, 1);
    assert_eq!(got.get("upstream=c"), None, "{got:?}");
    assert_eq!(c.requests(), served);
    assert!(a.requests() > 0 && b.requests() > 0, "{got:?}");

    // Every member down and marked failed (10 s by default): 502 after one try each, then,
    // as soon as they are back, tried anyway.
    let (_data2, table2, mut w2) = table_with(&[("both.example", &a.addr())]);
    let d = Upstream::start("d");
    upsert_set(
        &mut w2,
        "both.example",
        &[(a.addr(), 1, false), (d.addr(), 1, false)],
    );
    let n2 = Nginx::start(upstream_routed(&table2, "", ""));
    a.kill();
    d.kill();
    for _ in 0..4 {
        let r = n2.get("both.example", "/");
        assert_eq!(r.status, 502, "{r:?}");
        let tried = r.header("X-Upstream-Addr").unwrap_or("");
        assert_eq!(tried.split(", ").count(), 2, "{r:?}");
    }
    let _d = Upstream::restart("d", d.port);
    for _ in 0..4 {
        let r = n2.get("both.example", "/");
        assert_eq!(
            (r.status, r.body.starts_with("upstream=d ")),
            (200, true),
            "{r:?}"
        );
    }
    n.assert_clean_log();
    n2.assert_clean_log();
}

/// `$upstream_addr` lists the tries; `proxy_next_upstream` and its `tries` bound them;
/// `max_fails=0` keeps no state (the dead member is tried first every time).
#[test]
fn tries_follow_proxy_next_upstream_and_show_in_upstream_addr() {
    let a = Upstream::start("a");
    let dead = format!("127.0.0.1:{}", dead_port());
    let (_data, table, mut w) = table_with(&[("tries.example", &a.addr())]);
    upsert_set(
        &mut w,
        "tries.example",
        &[(dead.clone(), 100, false), (a.addr(), 1, false)],
    );
    let n = Nginx::start(upstream_routed(&table, "max_fails=0", ""));
    let mut first_dead = 0;
    for _ in 0..20 {
        let r = n.get("tries.example", "/");
        assert!(body_is(&a)(&r), "{r:?}");
        let tried = r.header("X-Upstream-Addr").unwrap_or("");
        if tried == format!("{dead}, {}", a.addr()) {
            first_dead += 1;
        } else {
            assert_eq!(tried, a.addr(), "{r:?}");
        }
    }
    assert!(
        first_dead >= 15,
        "the dead member was tried first {first_dead} times in 20"
    );
    assert!(!n.error_log().contains("temporarily disabled"));

    for limit in ["proxy_next_upstream off;", "proxy_next_upstream_tries 1;"] {
        let n = Nginx::start(upstream_routed(&table, "max_fails=0", limit));
        let statuses: Vec<u16> = (0..20)
            .map(|_| n.get("tries.example", "/").status)
            .collect();
        assert!(statuses.contains(&502), "{limit}: {statuses:?}");
        for r in (0..5).map(|_| n.get("tries.example", "/")) {
            assert!(
                !r.header("X-Upstream-Addr").unwrap_or("").contains(','),
                "{r:?}"
            );
        }
        n.assert_clean_log();
    }
    n.assert_clean_log();
}

/// A set changed while `keepalive` holds connections to its members routes by the new set at
/// the next request: a member added, reweighted, removed.
#[test]
fn a_changed_set_routes_at_once_despite_cached_connections() {
    let (a, b, c) = (
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    );
    let (_data, table, mut w) = table_with(&[("changing.example", &a.addr())]);
    let n = Nginx::start(upstream_routed(&table, "", ""));
    let got = shares(&n, "changing.example", 100);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["upstream=a"]);

    // Added.
    upsert_set(
        &mut w,
        "changing.example",
        &[(a.addr(), 1, false), (b.addr(), 1, false)],
    );
    let got = shares(&n, "changing.example", 400);
    assert!(got.get("upstream=b").copied().unwrap_or(0) > 100, "{got:?}");

    // Reweighted: a's share drops to 1 in 100 with connections to it cached.
    upsert_set(
        &mut w,
        "changing.example",
        &[(a.addr(), 1, false), (b.addr(), 99, false)],
    );
    let got = shares(&n, "changing.example", 400);
    assert!(got.get("upstream=a").copied().unwrap_or(0) <= 16, "{got:?}");

    // Removed: neither old member gets another request.
    let (sa, sb) = (settled(&a), settled(&b));
    upsert_set(&mut w, "changing.example", &[(c.addr(), 1, false)]);
    let got = shares(&n, "changing.example", 100);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["upstream=c"], "{got:?}");
    assert_eq!((a.requests(), b.requests()), (sa, sb));
    n.assert_clean_log();
}
