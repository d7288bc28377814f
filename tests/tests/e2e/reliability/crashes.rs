//! Writer crashes under nginx (`RELIABILITY.md`): the writer SIGKILLed during a write storm
//! while clients request routed hosts.

use std::thread;
use std::time::{Duration, Instant};

use set_backend_tests::*;

#[test]
fn writer_sigkill_during_a_write_storm_fails_no_routed_request() {
    require_writer();
    let kills = env_count("SB_RELIABILITY_KILLS", 5);
    let mut rng = seeded_rng();
    eprintln!(
        "writer kills: {kills}, seed {} (SB_RELIABILITY_SEED)",
        rng.0
    );
    let a = Upstream::start("a");
    let data = shared_tempdir();
    let dir = data.path().join("writer");
    let (mut w, n) = writer_behind_nginx(&dir);

    let steady: Vec<String> = (0..20).map(|i| format!("steady-{i}.example")).collect();
    let r = upsert_all(&w.socket, &steady, &a.addr());
    assert_eq!(r.status, 200, "{r:?}");
    for h in &steady {
        n.wait_every_worker(h, body_is(&a));
    }

    let load = Load::start(n.port, &steady, "a", 3);
    let mut model = Acked::default();
    let started = Instant::now();
    for round in 1..=kills {
        let (socket, seed) = (w.socket.clone(), rng.next_u64());
        let m = std::mem::take(&mut model);
        let client = thread::spawn(move || write_storm(socket, seed, m));
        thread::sleep(Duration::from_millis(30 + rng.below(300)));
        w.kill();
        model = client.join().expect("storm client");
        w = Writer::start(&dir, TOKEN);
        let store = assert_table_matches_store(&w, &format!("round {round}"));
        model.check(&store, &format!("round {round}"));
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
        model.acks(),
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
        model.acks() >= kills,
        "only {} acknowledged writes",
        model.acks()
    );
    n.assert_clean_log();
}
