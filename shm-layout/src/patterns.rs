//! The pattern walk: what a lookup does after the host's own key missed, in a table that holds
//! patterns. nginx's `server_name` order: the longest matching `*.suffix`, then the default
//! entry `*`.
//!
//! For `a.b.example.com` the keys tried are `*.b.example.com`, `*.example.com`, `*.com` and `*`:
//! one probe of the same table per label, like the exact one (`seqlock::lookup_into`), bounded
//! by the host's length (at most 127 labels in 253 bytes). Each `*.suffix` key is built in one
//! stack copy of the host: the byte before the suffix's dot becomes `*`, left to right, so no
//! probe needs more than one byte written (`ngx_hash_find_wc_head` walks the labels the other
//! way, through nested hashes; one flat table needs the full key). No allocation, no syscall.

use crate::host::MAX_HOST_LEN;
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
    let mut buf = [0u8; MAX_HOST_LEN];
    let Some(key) = buf.get_mut(..host.len()) else {
        return Status::Miss;
    };
    key.copy_from_slice(host);
    // A dot at 0 would leave no label before it to turn into `*`; the last byte's dot (a
    // trailing one) has no suffix after it.
    for dot in 1..host.len().saturating_sub(1) {
        if host[dot] != b'.' {
            continue;
        }
        key[dot - 1] = b'*';
        match seqlock::lookup_into(g, index, arena, &key[dot - 1..], out) {
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
