//! The store read in pieces (`Store::pieces`), as a growth reads it while the engine commits.

use set_backend_writer::store::{Change, RedbStore, Store};

fn host(i: u32) -> String {
    format!("h{i:06}.example")
}

/// 25,000 entries are three pieces: each entry that does not change is seen exactly once, in
/// host order; changes ahead of the pass are seen, changes behind it are not; a pass stops
/// when told to.
#[test]
fn pieces_give_every_entry_once_in_order_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&dir.path().join("store.redb"), 1 << 20).unwrap();
    let n = 25_000u32;
    let entries: Vec<(String, String)> = (0..n)
        .map(|i| (host(i), format!("10.0.{}.{}:80", i / 250, i % 250 + 1)))
        .collect();
    let puts: Vec<Change<'_>> = entries
        .iter()
        .map(|(host, backend)| Change::Put { host, backend })
        .collect();
    store.apply(&puts).unwrap();

    let pieces = store.pieces().unwrap();
    assert_eq!(pieces.count().unwrap(), u64::from(n));
    let (gone, added_ahead, added_behind) = (host(20_000), "h020000a.example", "a.example");
    let mut seen = Vec::new();
    pieces
        .for_each(&mut |h, b| {
            if seen.len() == 15_000 {
                // In the middle of the second piece.
                let changes = [
                    Change::Remove(&gone),
                    Change::Put {
                        host: added_ahead,
                        backend: "10.9.9.9:80",
                    },
                    Change::Put {
                        host: added_behind,
                        backend: "10.9.9.9:80",
                    },
                ];
                store.apply(&changes).unwrap();
            }
            seen.push((h.to_owned(), b.to_owned()));
            true
        })
        .unwrap();
    let mut want: Vec<(String, String)> = entries.into_iter().filter(|(h, _)| *h != gone).collect();
    want.push((added_ahead.into(), "10.9.9.9:80".into()));
    want.sort();
    assert_eq!(seen.len(), want.len());
    assert!(seen == want, "the pass differs from the store's entries");

    let mut k = 0;
    pieces
        .for_each(&mut |_, _| {
            k += 1;
            k < 12_345
        })
        .unwrap();
    assert_eq!(k, 12_345);
}
