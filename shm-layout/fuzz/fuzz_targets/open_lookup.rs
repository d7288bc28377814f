//! Any bytes as a table file: `open` must fail cleanly or every lookup, `verify` and `entries`
//! must return. The header checksum is recomputed over the input, so that the fuzzer explores
//! header fields and the body instead of stopping at the checksum. Hosts under a domain and one
//! of 127 labels (and one with a leading dot) walk the patterns (`*.suffix`, `*`) whenever the header's `patterns` word is
//! set. Run with `make fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shm_layout::{Match, Status, Table, Value};
use std::hash::Hasher;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 120 {
        let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
        h.write(&bytes[..112]);
        bytes[112..120].copy_from_slice(&h.finish().to_le_bytes());
    }
    let path = std::env::temp_dir().join(format!("sb-fuzz-{}", std::process::id()));
    if std::fs::write(&path, &bytes).is_err() {
        return;
    }
    if let Ok(t) = Table::open(&path) {
        let mut out = Value::empty();
        for i in 0..40 {
            let key = format!("site-{i}.example");
            if t.lookup_into(key.as_bytes(), &mut out) == Status::Hit {
                assert!(!out.as_bytes().is_empty());
            }
        }
        let deep = vec!["a"; 127].join(".");
        for host in ["a.b.site-1.example", ".site-1.example", "nothing.test", deep.as_str()] {
            if t.lookup_into(host.as_bytes(), &mut out) == Status::Hit {
                if let Match::Wildcard { dot } = out.matched() {
                    assert_eq!(host.as_bytes()[dot], b'.');
                }
            }
        }
        let _ = t.lookup(&[b'x'; 253]);
        let _ = t.verify();
        let _ = t.entries();
        let _ = t.is_superseded();
    }
    let _ = std::fs::remove_file(&path);
});
