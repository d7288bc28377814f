//! Property test: random sequences of upserts, deletes and compactions against a `HashMap`
//! model, checked through a reader that follows generations like an nginx worker does.

use proptest::prelude::*;
use shm_layout::{Backend, Host, Lookup, Table, TableWriter, Upserted, WriterOptions};
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
        let mut w = TableWriter::create(&path, [], opts).unwrap();
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
