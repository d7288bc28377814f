//! The table under running workers: updates and deletes, new generations, a file replaced,
//! missing or corrupt.

use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

#[test]
fn an_update_is_seen_by_every_worker_and_a_delete_gives_404() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, mut w) = table_with(&[("moving.example", &a.addr())]);
    let n = Nginx::start(routed(&table));

    let pids = n.every_worker("moving.example", body_is(&a));
    assert_eq!(pids.len(), 2);

    upsert(&mut w, "moving.example", &b.addr());
    // The update is in shared memory: the very next request of each worker sees it.
    n.every_worker("moving.example", body_is(&b));

    upsert(&mut w, "new.example", &a.addr());
    n.every_worker("new.example", body_is(&a));

    assert!(w
        .delete(&Host::parse("moving.example").expect("host"))
        .expect("delete"));
    n.every_worker("moving.example", |r| r.status == 404);
    n.every_worker("new.example", body_is(&a));
    n.assert_clean_log();
}

#[test]
fn a_new_generation_is_remapped_by_every_worker() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (_data, table, mut w) = table_with(&[("first.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("first.example", body_is(&a));

    // Grow the table well past its first capacity: several new generations.
    let generation = w.generation();
    for i in 0..5000 {
        upsert(&mut w, &format!("host-{i}.example"), &b.addr());
    }
    assert!(w.generation() > generation, "the table did not grow");
    n.every_worker("host-4999.example", body_is(&b));
    n.every_worker("first.example", body_is(&a));

    // A whole new file at the path (as after a writer restart) is picked up as well.
    drop(w);
    let _w2 = write_table(&table, &[("first.example", &b.addr())]);
    n.wait_every_worker("first.example", body_is(&b));
    n.assert_clean_log();
}

#[test]
fn a_file_replaced_without_the_superseded_flag_is_noticed_by_the_timer() {
    let (a, b) = (Upstream::start("a"), Upstream::start("b"));
    let (data, table, _w) = table_with(&[("swapped.example", &a.addr())]);
    let n = Nginx::start(routed(&table));
    n.every_worker("swapped.example", body_is(&a));

    // As if a writer died between its rename and setting `superseded` in the old file.
    let elsewhere = data.path().join("other");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    drop(write_table(
        &elsewhere.join("table"),
        &[("swapped.example", &b.addr())],
    ));
    std::fs::rename(elsewhere.join("table"), &table).expect("rename");
    let started = Instant::now();
    n.wait_every_worker("swapped.example", body_is(&b));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    n.assert_clean_log();
}

#[test]
fn a_missing_table_gives_503_until_it_appears() {
    let a = Upstream::start("a");
    let (_data, table) = table_in_tempdir();
    let n = Nginx::start(routed(&table));

    let r = n.get("late.example", "/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        r.body.contains("Routing is temporarily unavailable."),
        "{}",
        r.body
    );
    // Once per worker, at error level.
    let log = n.error_log();
    let lines = log
        .lines()
        .filter(|l| l.contains("set_backend: cannot map table"))
        .count();
    assert_eq!(lines, 2, "{log}");
    assert!(log
        .lines()
        .filter(|l| l.contains("cannot map"))
        .all(|l| l.contains("[error]")));

    let _w = write_table(&table, &[("late.example", &a.addr())]);
    n.wait_every_worker("late.example", body_is(&a));
    // Retries are silent: still one line per worker.
    let log = n.error_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("set_backend: cannot map table"))
            .count(),
        2
    );
    assert!(n.access_log().contains("late.example 503 unavailable"));
    n.assert_clean_log();
}

#[test]
fn a_corrupt_table_gives_503_and_never_crashes_a_worker() {
    let a = Upstream::start("a");
    let (data, table) = table_in_tempdir();
    // Garbage of a plausible size, then a valid table with a damaged header.
    std::fs::write(&table, vec![0x5a; 64 * 1024]).expect("write garbage");
    let n = Nginx::start(routed(&table));
    let pids = n.every_worker("any.example", |r| r.status == 503);
    let log = n.error_log();
    assert!(log.contains("not a set-backend table"), "{log}");

    std::fs::remove_file(&table).expect("rm");
    drop(write_table(&table, &[("any.example", &a.addr())]));
    let mut bytes = std::fs::read(&table).expect("read table");
    bytes[100] ^= 0xff; // inside the checksummed header
    let tmp = data.path().join("table.tmp");
    std::fs::write(&tmp, &bytes).expect("write");
    std::fs::rename(&tmp, &table).expect("rename");
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(n.get("any.example", "/").status, 503);

    std::fs::remove_file(&table).expect("rm");
    let _w = write_table(&table, &[("any.example", &a.addr())]);
    n.wait_every_worker("any.example", body_is(&a));
    // The same workers: none crashed.
    let now = n.every_worker("any.example", body_is(&a));
    assert_eq!(now, pids);
    assert!(!n.error_log().contains("exited on signal"));
    n.assert_clean_log();
}
