//! Passive health, as nginx's round-robin balancer keeps it (`ngx_http_upstream_round_robin.c`):
//! `set_backend_peer max_fails=N fail_timeout=T;` marks a backend failed after `max_fails`
//! failed tries within `fail_timeout`, and the balancer then skips it for `fail_timeout`.
//!
//! nginx keeps this state in each `server` of an `upstream {}` block. Upstream mode has no
//! `server`s: a host's set comes from the table, and a million hosts may share a few hundred
//! backends. So the state is kept per worker and per backend address, in a fixed table of
//! [`SLOTS`] slots allocated when the worker starts, and only for backends that failed: a
//! backend without a recent failure has no slot, and a worker where nothing failed finds the
//! table empty with one comparison. The table is [`WAYS`]-way set associative: an address
//! hashes to a bucket of `WAYS` slots; a failure of a new address takes a free slot of its
//! bucket, else the slot whose last failure is the oldest (that backend's failures are
//! forgotten, as after a success). A slot is freed by the backend's first success after a
//! failure's `fail_timeout` has passed (nginx's "mark peer live if check passed").
//!
//! The bookkeeping is nginx's, per slot:
//!
//! - `fails`: failed tries counted since the backend was last seen healthy;
//! - `accessed`: when the last failure happened;
//! - `checked`: when the last failure happened, or when a request was let through to test the
//!   backend after `fail_timeout`.
//!
//! A backend is *down* while `fails >= max_fails` and less than `fail_timeout` has passed since
//! `checked`. Choosing a backend whose `fail_timeout` has passed sets `checked`: one request
//! goes through to test it, the others skip it again for `fail_timeout`. A success resets
//! `fails` only if it came from a try chosen after the last failure (`accessed < checked`),
//! not from a request already in flight when the backend failed.
//!
//! Times are nginx's cached clock in milliseconds (`ngx_current_msec`): no system call. Workers
//! are single-threaded, so the table lives in a thread-local `RefCell`; a caller that finds it
//! borrowed (it never should) treats every backend as healthy. How many slots are in use is
//! also kept in a plain process-wide counter, so that the common question, in a worker where
//! nothing failed, costs one load and not a thread-local lookup (from a shared library, a call
//! into the dynamic linker).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use ngx::ffi::{ngx_current_msec, ngx_msec_t, ngx_str_t};

/// Slots in a worker's table: the most backends with recent failures a worker remembers.
pub const SLOTS: usize = 1024;
/// Slots per bucket: the eviction looks at these.
pub const WAYS: usize = 8;
const BUCKETS: usize = SLOTS / WAYS;
const _: () = assert!(SLOTS.is_multiple_of(WAYS) && BUCKETS.is_power_of_two());

/// nginx's defaults for `server`: `max_fails=1 fail_timeout=10s`.
pub const DEFAULT: Params = Params {
    max_fails: 1,
    fail_timeout: 10_000,
};

/// The parameters of `set_backend_peer`, per `upstream {}` block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Failed tries within `fail_timeout` that mark a backend failed; 0 disables the
    /// accounting.
    pub max_fails: u32,
    /// How long the failures are counted over, and how long a failed backend is skipped, in
    /// milliseconds.
    pub fail_timeout: ngx_msec_t,
}

impl Default for Params {
    fn default() -> Params {
        DEFAULT
    }
}

impl Params {
    /// Parses `max_fails=N` and `fail_timeout=T` (nginx's time syntax: `10s`, `500ms`, `1m`);
    /// each at most once. The error is the parameter, for nginx's `invalid parameter "…"`.
    pub fn parse<'a>(args: impl Iterator<Item = &'a ngx_str_t>) -> Result<Params, &'a ngx_str_t> {
        let mut p = DEFAULT;
        let (mut max_fails, mut fail_timeout) = (false, false);
        for arg in args {
            let bytes = arg.as_bytes();
            let ok = if let Some(v) = bytes.strip_prefix(b"max_fails=") {
                let n = std::str::from_utf8(v)
                    .ok()
                    .and_then(|v| v.parse::<u32>().ok());
                let fresh = !std::mem::replace(&mut max_fails, true);
                n.filter(|_| fresh).map(|n| p.max_fails = n).is_some()
            } else if let Some(v) = bytes.strip_prefix(b"fail_timeout=") {
                let t = parse_time(v);
                let fresh = !std::mem::replace(&mut fail_timeout, true);
                t.filter(|_| fresh).map(|t| p.fail_timeout = t).is_some()
            } else {
                false
            };
            if !ok {
                return Err(arg);
            }
        }
        Ok(p)
    }
}

/// nginx's time syntax (`ngx_parse_time` in milliseconds): numbers with units `ms`, `s`, `m`,
/// `h`, `d`, `w`, `M`, `y`, concatenated (`1m30s`); a bare number is seconds. At most a year.
fn parse_time(s: &[u8]) -> Option<ngx_msec_t> {
    const UNITS: [(&[u8], u64); 8] = [
        (b"ms", 1),
        (b"s", 1000),
        (b"m", 60_000),
        (b"h", 3_600_000),
        (b"d", 86_400_000),
        (b"w", 604_800_000),
        (b"M", 2_592_000_000),
        (b"y", 31_536_000_000),
    ];
    let mut rest = s;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        rest = &rest[digits..];
        let (unit, scale) = UNITS
            .iter()
            .find(|(u, _)| rest.starts_with(u))
            .map_or((&b""[..], 1000), |&(u, s)| (u, s));
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = &rest[unit.len()..];
    }
    (total <= 31_536_000_000).then_some(total as ngx_msec_t)
}

/// One backend's failures.
#[derive(Clone, Copy)]
struct Slot {
    /// The backend; `None` for a free slot.
    addr: Option<SocketAddr>,
    fails: u32,
    accessed: ngx_msec_t,
    checked: ngx_msec_t,
}

const FREE: Slot = Slot {
    addr: None,
    fails: 0,
    accessed: 0,
    checked: 0,
};

/// A worker's table.
struct Table {
    slots: Box<[Slot; SLOTS]>,
    /// Slots in use: 0 makes every question one comparison.
    used: usize,
}

thread_local! {
    static TABLE: RefCell<Option<Table>> = const { RefCell::new(None) };
}

/// The worker's `Table::used`, readable without the thread-local (a worker is one process
/// with one thread: this is its own count).
static USED: AtomicUsize = AtomicUsize::new(0);

/// True when some backend has a slot (a recent failure): only then is the table consulted.
pub fn any_failed() -> bool {
    USED.load(Ordering::Relaxed) != 0
}

/// Allocates the worker's table (`init_process`).
pub fn start() {
    let _ = TABLE.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            *t = Some(Table {
                slots: Box::new([FREE; SLOTS]),
                used: 0,
            });
            USED.store(0, Ordering::Relaxed);
        }
    });
}

/// Runs `f` on the worker's table, or answers `default` without one.
fn with<R>(default: R, f: impl FnOnce(&mut Table) -> R) -> R {
    TABLE
        .try_with(|t| match t.try_borrow_mut() {
            Ok(mut t) => t.as_mut().map(f),
            Err(_) => None,
        })
        .ok()
        .flatten()
        .unwrap_or(default)
}

/// The bucket of `addr`: a multiplicative hash of its octets and port.
fn bucket(addr: &SocketAddr) -> usize {
    let mut h: u64 = u64::from(addr.port());
    match addr {
        SocketAddr::V4(a) => h ^= u64::from(u32::from_be_bytes(a.ip().octets())) << 16,
        SocketAddr::V6(a) => {
            for chunk in a.ip().octets().chunks_exact(8) {
                let mut w = [0u8; 8];
                w.copy_from_slice(chunk);
                h = (h ^ u64::from_ne_bytes(w)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
        }
    }
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & (BUCKETS - 1)
}

impl Table {
    fn ways(&mut self, addr: &SocketAddr) -> &mut [Slot] {
        let b = bucket(addr) * WAYS;
        &mut self.slots[b..b + WAYS]
    }

    fn find(&mut self, addr: &SocketAddr) -> Option<&mut Slot> {
        if self.used == 0 {
            return None;
        }
        self.ways(addr).iter_mut().find(|s| s.addr == Some(*addr))
    }
}

/// The clock the bookkeeping uses.
pub fn now() -> ngx_msec_t {
    // SAFETY: a plain read of nginx's cached clock, written by the worker's own event loop.
    unsafe { ngx_current_msec }
}

/// True while `addr` is marked failed: `max_fails` failures, the last test less than
/// `fail_timeout` ago.
pub fn is_down(addr: &SocketAddr, p: Params, now: ngx_msec_t) -> bool {
    if p.max_fails == 0 || !any_failed() {
        return false;
    }
    with(false, |t| {
        t.find(addr).is_some_and(|s| {
            s.fails >= p.max_fails && now.wrapping_sub(s.checked) <= p.fail_timeout
        })
    })
}

/// `addr` was chosen for a try: past `fail_timeout` since the last test, this try is the test.
pub fn chosen(addr: &SocketAddr, p: Params, now: ngx_msec_t) {
    if !any_failed() {
        return;
    }
    with((), |t| {
        if let Some(s) = t.find(addr) {
            if now.wrapping_sub(s.checked) > p.fail_timeout {
                s.checked = now;
            }
        }
    })
}

/// A try of `addr` failed. True when this failure marks it failed (it reached `max_fails`),
/// for nginx's warning.
pub fn failed(addr: &SocketAddr, p: Params, now: ngx_msec_t) -> bool {
    if p.max_fails == 0 {
        return false;
    }
    with(false, |t| {
        let ways = t.ways(addr);
        let (i, taken) = match ways.iter().position(|s| s.addr == Some(*addr)) {
            Some(i) => (i, false),
            None => {
                // A free slot, else the oldest failure of the bucket.
                let i = (0..WAYS)
                    .min_by_key(|&i| (ways[i].addr.is_some(), ways[i].accessed))
                    .unwrap_or(0);
                let taken = ways[i].addr.is_none();
                ways[i] = Slot {
                    addr: Some(*addr),
                    ..FREE
                };
                (i, taken)
            }
        };
        let s = &mut ways[i];
        s.fails = s.fails.saturating_add(1);
        s.accessed = now;
        s.checked = now;
        let marked = s.fails == p.max_fails;
        if taken {
            t.used += 1;
            USED.store(t.used, Ordering::Relaxed);
        }
        marked
    })
}

/// A try of `addr` succeeded: if it was chosen after its last failure, its failures are
/// forgotten and its slot freed.
pub fn succeeded(addr: &SocketAddr) {
    if !any_failed() {
        return;
    }
    with((), |t| {
        let Some(s) = t.find(addr) else {
            return;
        };
        if s.accessed < s.checked {
            *s = FREE;
            t.used -= 1;
            USED.store(t.used, Ordering::Relaxed);
        }
    })
}
