//! A fixed number of hot-host lookups by one contender, for instruction counting under
//! `valgrind --tool=callgrind` (deterministic, unlike wall-clock time on a shared machine):
//! `benches/instructions.sh` runs it for each contender and prints instructions per lookup.
//!
//! `lookup_loop CONTENDER N` with CONTENDER one of `table`, `hashmap`, `hashmap-copy`,
//! `table-set`, `hashmap-set`, `none` (setup only, to subtract), or a pattern lookup
//! (`exact`, `wildcard`, `wildcard-4-deep`, `default`: `PATTERN_HOSTS` in a table with the
//! patterns).

use set_backend_benches::{add_patterns, backend, build_table, host, PATTERN_HOSTS};
use shm_layout::{Status, Table, Value};
use std::collections::HashMap;
use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1);
    let contender = args.next().unwrap_or_else(|| "table".into());
    let n: u64 = args
        .next()
        .map(|s| s.parse().expect("N"))
        .unwrap_or(1_000_000);
    let entries = 1000;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("table");
    let mut writer = build_table(&path, entries);
    let pattern = PATTERN_HOSTS.iter().find(|(name, _, _)| *name == contender);
    if pattern.is_some() {
        add_patterns(&mut writer, "10.9.9.9:80");
    }
    let table = Table::open(&path).expect("open");
    let map: HashMap<String, String> = (0..entries).map(|i| (host(i), backend(i))).collect();
    let hot = host(entries / 2);
    // 64 hot hosts in turn: their probe distances average out, where one host's depends on
    // where the table's random hash key put it.
    let set: Vec<String> = (0..64)
        .map(|i| host((entries / 2 + i * 37) % entries))
        .collect();
    let mut found = 0u64;
    match contender.as_str() {
        "table" => {
            let mut out = Value::empty();
            for _ in 0..n {
                found +=
                    (table.lookup_into(black_box(hot.as_bytes()), &mut out) == Status::Hit) as u64;
            }
        }
        "hashmap" => {
            for _ in 0..n {
                found += map
                    .get(black_box(hot.as_str()))
                    .map_or(0, |v| v.len() as u64);
            }
        }
        "hashmap-copy" => {
            let mut buf = [0u8; 300];
            for _ in 0..n {
                found += map.get(black_box(hot.as_str())).map_or(0, |v| {
                    buf[..v.len()].copy_from_slice(v.as_bytes());
                    black_box(&buf);
                    v.len() as u64
                });
            }
        }
        "table-set" => {
            let mut out = Value::empty();
            for i in 0..n {
                let h = &set[i as usize % set.len()];
                found +=
                    (table.lookup_into(black_box(h.as_bytes()), &mut out) == Status::Hit) as u64;
            }
        }
        "hashmap-set" => {
            for i in 0..n {
                let h = &set[i as usize % set.len()];
                found += map.get(black_box(h.as_str())).map_or(0, |v| v.len() as u64);
            }
        }
        _ if pattern.is_some() => {
            let host = pattern.map_or("", |(_, h, _)| *h);
            let mut out = Value::empty();
            for _ in 0..n {
                found +=
                    (table.lookup_into(black_box(host.as_bytes()), &mut out) == Status::Hit) as u64;
            }
        }
        "none" => {}
        other => panic!("unknown contender {other}"),
    }
    println!("{contender}: {found}");
}
