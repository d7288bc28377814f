//! The pattern walk: what a lookup does after the host's own key missed, in a table that holds
//! patterns. nginx's `server_name` order: the longest matching `*.suffix`, then the default
//! entry `*`.
//!
//! For `a.b.example.com` the keys tried are `.b.example.com`, `.example.com`, `.com` and `*`:
//! the writer stores `*.suffix` as `.suffix` (`host::table_key`), so each key is a slice of the
//! host itself, probed in place (no copy, no buffer). One probe of the same table per label,
//! like the exact one (`seqlock::lookup_into`), bounded by the host's length (at most 127 labels
//! in 253 bytes); no allocation, no syscall. (`ngx_hash_find_wc_head` walks the labels the
//! other way, through nested hashes; one flat table needs the full key.)

use crate::seqlock::{self, Geometry};
use crate::sync::AtomicU64;
use crate::value::{Status, Value, MATCH_DEFAULT};

/// The default entry's key.
const DEFAULT_KEY: &[u8] = b"*";

/// Looks up the patterns that cover `host` (its own key already missed), longest suffix
/// first, then the default, recording in `out` which one answered. A `Busy` or `Corrupt` probe
/// ends the walk with that answer: a shorter pattern must not stand in for a longer one that
/// could not be read.
#[inline(never)]
pub(crate) fn walk(
    g: &Geometry,
    index: &[AtomicU64],
    arena: &[AtomicU64],
    host: &[u8],
    out: &mut Value,
) -> Status {
    // The last byte's dot (a trailing one) has no suffix after it. A dot at 0 (a host nginx
    // lets through as `.example.com`) is `*.example.com`'s own key, as in nginx.
    for dot in 0..host.len().saturating_sub(1) {
        if host[dot] != b'.' {
            continue;
        }
        match seqlock::lookup_into(g, index, arena, &host[dot..], out) {
            Status::Miss => {}
            Status::Hit => {
                out.matched = dot as u16;
                return Status::Hit;
            }
            other => return other,
        }
    }
    let status = seqlock::lookup_into(g, index, arena, DEFAULT_KEY, out);
    if status == Status::Hit {
        out.matched = MATCH_DEFAULT;
    }
    status
}
