//! Any bytes as a table file: `open` must fail cleanly or every lookup, `verify` and `entries`
//! must return. Run by hand: `cargo +nightly fuzz run open_lookup` in `shm-layout/`, or
//! `make fuzz` (time-bounded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shm_layout::Table;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("sb-fuzz-{}", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    if let Ok(t) = Table::open(&path) {
        for key in [&b"www.example.com"[..], b"a", b"site-0.example", &[b'x'; 253]] {
            let _ = t.lookup(key);
        }
        let _ = t.verify();
        let _ = t.entries();
        let _ = t.is_superseded();
    }
    let _ = std::fs::remove_file(&path);
});
