//! Writes a small valid table to the path given: a seed for the fuzzer and a sample for
//! readers in other languages. `cargo run -p shm-layout --example make_table -- PATH [N]`.

use shm_layout::{Backend, Host, TableWriter, WriterOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: make_table PATH [ENTRIES]");
    let n: u32 = args
        .next()
        .map(|s| s.parse().expect("ENTRIES must be a number"))
        .unwrap_or(40);
    let entries = (0..n).map(|i| {
        let backend = match i % 3 {
            0 => format!("10.0.0.{}:{}", i % 256, 3000 + i),
            1 => format!("[fd00::{i:x}]:8080"),
            _ => format!("backend-{i}.internal:80"),
        };
        (
            Host::parse(&format!("site-{i}.example")).unwrap(),
            Backend::parse(&backend).unwrap(),
        )
    });
    let opts = WriterOptions {
        min_capacity: 64,
        sync: false,
        ..WriterOptions::default()
    };
    drop(TableWriter::create(&path, entries, opts).expect("create table"));
    let _ = std::fs::remove_file(format!("{path}.lock"));
}
