//! Backend sets in variable mode (`set_backend $backend;`): `$backend` is a weighted pick among
//! the set's primaries, per request, and a set changed while requests run is used at once.
//! (Failover, tries and backups are upstream mode's: `upstream_mode`.)

use set_backend_tests::*;
use shm_layout::{BackendSet, SetMember};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Upserts `host → members` (backend, weight, backup) through `w`.
fn upsert_members(w: &mut TableWriter, host: &str, members: &[(String, u8, bool)]) {
    let set = members
        .iter()
        .map(|(b, weight, backup)| SetMember {
            backend: Backend::parse(b).expect("backend"),
            weight: *weight,
            backup: *backup,
        })
        .collect();
    let set = BackendSet::new(set).expect("set");
    w.upsert(&Host::parse(host).expect("host"), &set)
        .expect("upsert");
}

/// Which of `upstreams` answered `r`, by its body.
fn answered_by(upstreams: &[&Upstream], r: &Response) -> Option<usize> {
    upstreams.iter().position(|u| body_is(u)(r))
}

#[test]
fn backend_is_a_weighted_pick_among_the_primaries() {
    let ups = [
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
        Upstream::start("spare"),
    ];
    let all: Vec<&Upstream> = ups.iter().collect();
    let (_data, table, mut w) = table_with(&[]);
    let members = [
        (ups[0].addr(), 1, false),
        (ups[1].addr(), 2, false),
        (ups[2].addr(), 7, false),
        // A backup: never `$backend` in variable mode.
        (ups[3].addr(), 50, true),
    ];
    upsert_members(&mut w, "set.example", &members);
    let n = Nginx::start(routed(&table));
    const REQUESTS: usize = 3000;
    let mut count = [0usize; 4];
    for _ in 0..REQUESTS {
        let r = n.get("set.example", "/");
        assert_eq!(r.status, 200, "{r:?}");
        let i = answered_by(&all, &r).unwrap_or_else(|| panic!("{r:?}"));
        count[i] += 1;
    }
    eprintln!("variable mode, weights 1/2/7 (+ a backup): {count:?} of {REQUESTS}");
    assert_eq!(count[3], 0, "the backup got requests: {count:?}");
    for (i, weight) in [1.0, 2.0, 7.0].iter().enumerate() {
        let share = 100.0 * count[i] as f64 / REQUESTS as f64;
        let want = 100.0 * weight / 10.0;
        assert!(
            (share - want).abs() <= 3.0,
            "member {i}: {share:.1}% of the requests, weight's share {want}% ({count:?})"
        );
    }
    n.assert_clean_log();
}

#[test]
fn a_set_changed_while_requests_run_is_used_at_once() {
    let ups = [
        Upstream::start("a"),
        Upstream::start("b"),
        Upstream::start("c"),
    ];
    let all: Vec<&Upstream> = ups.iter().collect();
    let (_data, table, mut w) = table_with(&[]);
    upsert_members(&mut w, "live.example", &[(ups[0].addr(), 1, false)]);
    let n = Nginx::start(routed(&table));
    let stop = AtomicBool::new(false);
    let changed = std::sync::Mutex::new(None::<Instant>);
    let seen = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let r = n.get("live.example", "/");
                seen.push((start, r.status, answered_by(&all, &r)));
            }
            seen
        });
        std::thread::sleep(Duration::from_millis(500));
        // Reweighted and grown: a out, b and c in.
        upsert_members(
            &mut w,
            "live.example",
            &[(ups[1].addr(), 1, false), (ups[2].addr(), 3, false)],
        );
        *changed.lock().unwrap() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        client.join().expect("client")
    });
    let changed = changed.into_inner().unwrap().expect("changed");
    let (before, after): (Vec<_>, Vec<_>) = seen.iter().partition(|(t, _, _)| *t < changed);
    assert!(
        before.len() > 10 && after.len() > 10,
        "{} / {}",
        before.len(),
        after.len()
    );
    assert!(seen.iter().all(|(_, status, _)| *status == 200));
    assert!(before.iter().all(|(_, _, u)| u.is_some()));
    let wrong = after
        .iter()
        .filter(|(_, _, u)| !matches!(u, Some(1 | 2)))
        .count();
    assert_eq!(
        wrong, 0,
        "requests sent after the change went to the old set"
    );
    for m in [1, 2] {
        assert!(
            after.iter().any(|(_, _, u)| *u == Some(m)),
            "member {m} unused"
        );
    }
    n.assert_clean_log();
}
