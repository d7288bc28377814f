//! Writes a table of `N` hosts `site<i>.bench.example`, all routed to one backend, for
//! `scripts/bench-upstream-mode.sh`:
//! `cargo run --release -p set-backend-tests --example bench_table -- PATH N BACKEND`.

use set_backend_tests::{Backend, Host, TableWriter, WriterOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_table PATH N BACKEND";
    let path = args.next().expect(usage);
    let n: usize = args.next().and_then(|n| n.parse().ok()).expect(usage);
    let backend = Backend::parse(&args.next().expect(usage)).expect("BACKEND");
    let entries = (0..n).map(|i| {
        let host = Host::parse(&format!("site{i}.bench.example")).expect("host");
        (host, backend.clone())
    });
    let options = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    drop(TableWriter::create(&path, entries, options).expect("create the table"));
    let _ = std::fs::remove_file(format!("{path}.lock"));
}
