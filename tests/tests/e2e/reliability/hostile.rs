//! Hostile table files (`RELIABILITY.md`): a corpus of crafted files loaded by real nginx
//! workers, one nginx per file.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

use set_backend_tests::*;
use shm_layout::testkit::{hostile_corpus, site, valid_table, Hostile};

/// The known hosts of the table every crafted file is made from.
const SITES: usize = 40;

#[test]
fn hostile_table_files_never_crash_a_worker() {
    let random = env_count("SB_RELIABILITY_RANDOM_TABLES", 4);
    let mut rng = seeded_rng();
    let a = Upstream::start("a");
    let good = valid_table(SITES, |_| a.addr());
    let corpus = hostile_corpus(&good, random, &mut |n| rng.below(n));
    let (_data, table) = table_in_tempdir();
    let mut requests = 0;
    let mut statuses: BTreeSet<u16> = BTreeSet::new();
    for Hostile {
        name,
        bytes,
        open_error,
    } in &corpus
    {
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
            let lines = lines_with(&log, "cannot map table");
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
