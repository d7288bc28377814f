//! Property test: random sequences of upserts, deletes and compactions against a `HashMap`
//! model, checked through a reader that follows generations like an nginx worker does.

use proptest::prelude::*;
use shm_layout::{Backend, Host, Lookup, Table, TableWriter, Upserted, WriterOptions};

/// No entries, for a table created empty.
const NONE: [(Host, Backend); 0] = [];
use std::collections::HashMap;

#[derive(Debug, Clone)]
enum Op {
    Upsert(u16, u16),
    Delete(u16),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..300, 0u16..1000).prop_map(|(h, b)| Op::Upsert(h, b)),
        3 => (0u16..300).prop_map(Op::Delete),
        1 => Just(Op::Compact),
    ]
}

fn host(i: u16) -> Host {
    // Varying lengths exercise records of different sizes (and so the free lists).
    Host::parse(&format!("{}{i}.example", "h".repeat(i as usize % 40 + 1))).unwrap()
}

fn backend(i: u16) -> Backend {
    match i % 3 {
        0 => Backend::parse(&format!("10.0.{}.{}:{}", i / 256, i % 256, 1000 + i)),
        1 => Backend::parse(&format!("[fd00::{i:x}]:{}", 2000 + i)),
        _ => Backend::parse(&format!(
            "backend-{}b.internal:{}",
            "x".repeat(i as usize % 50),
            80
        )),
    }
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_a_hashmap(ops in prop::collection::vec(op(), 1..400)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        let opts = WriterOptions { min_capacity: 64, sync: false, ..WriterOptions::default() };
        let mut w = TableWriter::create(&path, NONE, opts).unwrap();
        let mut reader = Table::open(&path).unwrap();
        let mut model: HashMap<u16, u16> = HashMap::new();
        for op in &ops {
            match *op {
                Op::Upsert(h, b) => {
                    let got = w.upsert(&host(h), &backend(b)).unwrap();
                    let want = match model.insert(h, b) {
                        None => Upserted::Inserted,
                        Some(old) if backend(old) == backend(b) => Upserted::Unchanged,
                        Some(_) => Upserted::Updated,
                    };
                    prop_assert_eq!(got, want);
                }
                Op::Delete(h) => {
                    prop_assert_eq!(w.delete(&host(h)).unwrap(), model.remove(&h).is_some());
                }
                Op::Compact => w.compact().unwrap(),
            }
            if reader.is_superseded() {
                reader = Table::open(&path).unwrap();
                prop_assert_eq!(reader.generation(), w.generation());
            }
        }
        for h in 0..300u16 {
            let key = host(h);
            let got = reader.lookup(key.as_str().as_bytes());
            match model.get(&h) {
                Some(&b) => match got {
                    Lookup::Hit(v) => {
                        let want = backend(b);
                        prop_assert_eq!(v.as_str(), want.as_str());
                        prop_assert_eq!(v.addr(), want.addr());
                    }
                    other => prop_assert!(false, "host {} expected hit, got {:?}", h, other),
                },
                None => prop_assert_eq!(got, Lookup::Miss),
            }
        }
        let stats = reader.verify().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(stats.entries, model.len() as u64);
        prop_assert_eq!(w.len(), model.len() as u64);
    }
}

/// A key from a small alphabet of labels, so that hosts and patterns overlap often: `n` picks
/// the labels, `kind` whether it is a name, a `*.` wildcard over it, or the default `*`.
fn key(kind: u8, labels: &[u8]) -> String {
    let name: Vec<&str> = labels
        .iter()
        .map(|&l| ["a", "b", "cc", "d-d"][l as usize % 4])
        .collect();
    match kind % 8 {
        0 => "*".to_owned(),
        1..=3 => format!("*.{}", name.join(".")),
        _ => name.join("."),
    }
}

/// nginx's `server_name` order over a map of keys: the host itself, the longest `*.suffix`,
/// then `*`.
fn model_lookup<'a>(model: &'a HashMap<String, u16>, host: &str) -> Option<(String, &'a u16)> {
    if let Some(b) = model.get(host) {
        return Some((host.to_owned(), b));
    }
    let suffixes = host
        .match_indices('.')
        .map(|(i, _)| format!("*{}", &host[i..]));
    suffixes
        .chain(["*".to_owned()])
        .find_map(|k| model.get(&k).map(|b| (k, b)))
}

fn labels() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random names and patterns, upserted and deleted, then random hosts looked up: the
    /// backend and the matching key are the model's.
    #[test]
    fn patterns_match_the_server_name_model(
        ops in prop::collection::vec((any::<u8>(), labels(), 0u16..50, any::<bool>()), 1..120),
        hosts in prop::collection::vec((labels(), any::<u8>()), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        let opts = WriterOptions { min_capacity: 64, sync: false, ..WriterOptions::default() };
        let mut w = TableWriter::create(&path, NONE, opts).unwrap();
        let mut model: HashMap<String, u16> = HashMap::new();
        for (kind, l, b, delete) in &ops {
            let k = key(*kind, l);
            let h = Host::parse(&k).unwrap();
            if *delete {
                prop_assert_eq!(w.delete(&h).unwrap(), model.remove(&k).is_some());
            } else {
                w.upsert(&h, &backend(*b)).unwrap();
                model.insert(k, *b);
            }
        }
        let reader = Table::open(&path).unwrap();
        for (l, lead) in &hosts {
            // Now and then a host with a leading dot, which nginx lets through: no name's own
            // key, it falls to the patterns (`.a.b` is covered by `*.a.b`, as in nginx).
            let host = if lead % 8 == 0 { format!(".{}", key(4, l)) } else { key(4, l) };
            let got = reader.lookup(host.as_bytes());
            match model_lookup(&model, &host) {
                Some((k, &b)) => match got {
                    Lookup::Hit(v) => {
                        let want = backend(b);
                        prop_assert_eq!(v.as_str(), want.as_str(), "{}", host);
                        prop_assert_eq!(v.matched().key(&host), k, "{}", host);
                    }
                    other => prop_assert!(false, "{host}: {other:?}, want {k}"),
                },
                None => prop_assert_eq!(got, Lookup::Miss, "{}", host),
            }
        }
        reader.verify().unwrap();
    }
}
