//! Table lookups against the alternatives, in one run: a `HashMap<String, String>` with the
//! same keys (the in-process ceiling) and a unix-socket round trip to a lookup server (the
//! original prototype's design). Tables of 1k and 1M entries; 10M with `SB_BENCH_10M=1`.
//! Also host patterns (a wildcard and the default entry) and the writer's in-process update rate.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use set_backend_benches::{add_patterns, backend, build_table, host, random_hosts, PATTERN_HOSTS};
use shm_layout::{Backend, Host, Lookup, Status, Table, Value};
use std::collections::HashMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

fn sizes() -> Vec<u64> {
    let mut s = vec![1_000, 1_000_000];
    if std::env::var_os("SB_BENCH_10M").is_some() {
        s.push(10_000_000);
    }
    s
}

fn found(l: Lookup) -> usize {
    match l {
        Lookup::Hit(v) => v.as_bytes().len(),
        _ => 0,
    }
}

/// A line-protocol lookup server on a unix socket: `host\n` → `backend\n` (empty if absent).
fn socket_server(map: HashMap<String, String>, path: &std::path::Path) -> UnixStream {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut out = conn.try_clone().unwrap();
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let v = map.get(line.trim_end()).map(String::as_str).unwrap_or("");
            if out.write_all(format!("{v}\n").as_bytes()).is_err() {
                break;
            }
            line.clear();
        }
    });
    UnixStream::connect(path).unwrap()
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    for n in sizes() {
        let path = dir.path().join(format!("table-{n}"));
        let writer = build_table(&path, n);
        let table = Table::open(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "table of {n} entries: file {len} bytes ({:.1} MB), capacity {} slots",
            len as f64 / 1e6,
            table.stats().capacity
        );
        let map: HashMap<String, String> = (0..n).map(|i| (host(i), backend(i))).collect();
        let hot = host(n / 2);
        let missing = "not-there.example.com".to_string();
        let random = random_hosts(n, 1 << 16);

        let mut g = c.benchmark_group(format!("lookup/{n}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        g.bench_function(BenchmarkId::new("hot", "table"), |b| {
            b.iter(|| found(table.lookup(black_box(hot.as_bytes()))))
        });
        let mut out = Value::empty();
        g.bench_function(BenchmarkId::new("hot", "table-into"), |b| {
            b.iter(|| table.lookup_into(black_box(hot.as_bytes()), &mut out) == Status::Hit)
        });
        g.bench_function(BenchmarkId::new("hot", "hashmap"), |b| {
            b.iter(|| map.get(black_box(hot.as_str())).map(String::len))
        });
        // The same work our lookup does after finding the entry: copy the backend out.
        let mut buf = [0u8; 300];
        g.bench_function(BenchmarkId::new("hot", "hashmap-copy"), |b| {
            b.iter(|| {
                map.get(black_box(hot.as_str())).map(|v| {
                    buf[..v.len()].copy_from_slice(v.as_bytes());
                    v.len()
                })
            })
        });
        // 64 hot hosts in turn: one host's cost depends on how far from its home slot the
        // table's hash key put it (0, 1, 2… slots); 64 average that out.
        let set: Vec<String> = (0..64).map(|i| host((n / 2 + i * 37) % n)).collect();
        let mut k = 0;
        g.bench_function(BenchmarkId::new("hot64", "table-into"), |b| {
            b.iter(|| {
                k = (k + 1) & 63;
                table.lookup_into(black_box(set[k].as_bytes()), &mut out) == Status::Hit
            })
        });
        g.bench_function(BenchmarkId::new("hot64", "hashmap"), |b| {
            b.iter(|| {
                k = (k + 1) & 63;
                map.get(black_box(set[k].as_str())).map(String::len)
            })
        });
        g.bench_function(BenchmarkId::new("hot64", "hashmap-copy"), |b| {
            b.iter(|| {
                k = (k + 1) & 63;
                map.get(black_box(set[k].as_str())).map(|v| {
                    buf[..v.len()].copy_from_slice(v.as_bytes());
                    v.len()
                })
            })
        });
        g.bench_function(BenchmarkId::new("missing", "table-into"), |b| {
            b.iter(|| table.lookup_into(black_box(missing.as_bytes()), &mut out) == Status::Hit)
        });
        g.bench_function(BenchmarkId::new("missing", "hashmap"), |b| {
            b.iter(|| map.get(black_box(missing.as_str())).map(String::len))
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("random", "table-into"), |b| {
            b.iter(|| {
                i = (i + 1) & (random.len() - 1);
                table.lookup_into(random[i].as_bytes(), &mut out) == Status::Hit
            })
        });
        g.bench_function(BenchmarkId::new("random", "hashmap"), |b| {
            b.iter(|| {
                i = (i + 1) & (random.len() - 1);
                map.get(random[i].as_str()).map(String::len)
            })
        });
        if n == 1_000 {
            let sock = dir.path().join("lookup.sock");
            let mut conn = socket_server(map.clone(), &sock);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let query = format!("{hot}\n");
            g.bench_function(BenchmarkId::new("hot", "unix-socket"), |b| {
                b.iter(|| {
                    conn.write_all(query.as_bytes()).unwrap();
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    line.len()
                })
            });
        }
        g.finish();
        drop(writer);
    }
}

/// Host patterns (`docs/FORMAT.md`, §8): the 1k-entry table of `lookups` plus `*.example.com`
/// and `*`, looked up for a host of its own, one under the wildcard, one four labels under it,
/// and one that falls to the default. Compare with `lookup/1000/hot/table-into` (the same host
/// in the table without patterns) in the same run.
fn patterns(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table");
    let mut writer = build_table(&path, 1_000);
    add_patterns(&mut writer, "10.9.9.9:80");
    let table = Table::open(&path).unwrap();
    let mut out = Value::empty();
    let mut g = c.benchmark_group("patterns/1000");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, h, key) in PATTERN_HOSTS {
        assert_eq!(table.lookup_into(h.as_bytes(), &mut out), Status::Hit);
        assert_eq!(out.matched().key(h), key);
        g.bench_function(BenchmarkId::new(name, "table-into"), |b| {
            b.iter(|| table.lookup_into(black_box(h.as_bytes()), &mut out) == Status::Hit)
        });
    }
    g.finish();
}

fn updates(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let n = 1_000_000u64;
    let mut writer = build_table(&dir.path().join("table"), n);
    let hosts: Vec<Host> = (0..4096)
        .map(|i| Host::parse(&host(i * 241 % n)).unwrap())
        .collect();
    let backends: Vec<Backend> = (0..2)
        .map(|v| Backend::parse(&backend(v + 7)).unwrap())
        .collect();
    let mut g = c.benchmark_group("update/1000000");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut i = 0usize;
    g.bench_function("upsert-existing", |b| {
        b.iter(|| {
            i += 1;
            writer
                .upsert(&hosts[i % hosts.len()], &backends[(i / hosts.len()) % 2])
                .unwrap()
        })
    });
    let mut next = n;
    g.bench_function("insert-new", |b| {
        b.iter(|| {
            next += 1;
            let h = Host::parse(&host(next)).unwrap();
            writer.upsert(&h, &backends[0]).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, lookups, patterns, updates);
criterion_main!(benches);
