//! Writer crashes under nginx (`RELIABILITY.md`): the writer SIGKILLed during a write storm
//! while clients request routed hosts.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use set_backend_tests::*;

/// Upserts, deletes and batches on the churn hosts until the writer stops answering.
fn storm(socket: PathBuf, seed: u64, mut m: Acked) -> Acked {
    let mut rng = Rng::new(seed);
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
        m.send(changes);
        let auth = format!("Bearer {TOKEN}");
        match unix_request(
            &socket,
            method,
            &path,
            &[("Authorization", &auth)],
            body.as_deref(),
        ) {
            Ok(r) if r.status < 300 || (r.status == 404 && method == "DELETE") => m.acknowledged(),
            Ok(r) => panic!("{} {}: unexpected answer {r:?}", method, path),
            Err(_) => return m,
        }
    }
}

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
        let client = thread::spawn(move || storm(socket, seed, m));
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
