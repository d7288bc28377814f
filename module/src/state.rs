//! Where a request's context lives: the module's per-request types, and the worker's supply of
//! the memory that holds them.
//!
//! nginx modules usually keep their `*_ctx_t` in the request pool. This one needs a few hundred
//! bytes per request (the context, the backend set with its names, the balancer's address), and
//! a request pool is 4 KiB blocks: on a proxied request nginx's own allocations nearly fill two,
//! so those bytes cost a third block, a `posix_memalign` and a `free` per request (callgrind:
//! ≈ 600 instructions, 3% of a worker's). So a request takes a [`State`] from its worker
//! instead, and gives it back through a cleanup handler of the request pool, which is all that
//! stays in the pool (24 bytes). A worker keeps up to [`KEEP`] returned states for the next
//! requests: in a steady state nothing is allocated.

use std::cell::RefCell;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use ngx::ffi::{ngx_http_request_t, ngx_pool_cleanup_add, ngx_pool_t, ngx_sockaddr_t, ngx_str_t};

use crate::health::Params;

/// What the lookup of this request's host gave.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Miss,
    Unavailable,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The module's request context (nginx's `ngx_http_<module>_ctx_t`): what was decided for this
/// request. Made once, by `ctx::lookup`; an internal redirect clears the request's pointer to
/// it. Everything a request-time handler or the balancer needs to share lives here, so that
/// they depend on this file and not on each other.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub outcome: Outcome,
    /// Variable mode's backend (one of the set's names), picked when first asked for
    /// (`ctx::backend`); empty until then, and unless `outcome` is `Hit`.
    pub backend: ngx_str_t,
    /// The entry that matched (`$set_backend_match`): the host itself, `*.suffix` or `*`;
    /// empty unless `outcome` is `Hit`.
    pub matched: ngx_str_t,
    /// The backend set (upstream mode's peers); empty unless `outcome` is `Hit`.
    pub set: Set,
}

/// The most members a set has (the table's limit).
pub const MAX_MEMBERS: usize = shm_layout::MAX_MEMBERS;

/// The request's backend set, copied out of the table, and the balancer's progress through it.
#[derive(Clone, Copy)]
pub struct Set {
    /// `len` members: the primaries, then the backups.
    pub members: *mut Member,
    pub len: usize,
    /// Bit `i` set: member `i` has been tried for this request.
    pub tried: u8,
    /// The member of the current try.
    pub current: usize,
}

const _: () = assert!(MAX_MEMBERS <= u8::BITS as usize);

impl Set {
    pub const EMPTY: Set = Set {
        members: std::ptr::null_mut(),
        len: 0,
        tried: 0,
        current: 0,
    };

    /// The members.
    pub fn members(&self) -> &[Member] {
        if self.members.is_null() {
            return &[];
        }
        // SAFETY: `members` points to `len` initialized members in the request's `State` (or
        // its pool), which outlives every user of the request's context.
        unsafe { std::slice::from_raw_parts(self.members, self.len) }
    }

    /// Member `i`, mutable (for nginx's pointer to its name).
    pub fn member_mut(&mut self, i: usize) -> Option<&mut Member> {
        if self.members.is_null() || i >= self.len {
            return None;
        }
        // SAFETY: as in `members`; `i` is in bounds, and nothing else holds a reference into
        // the array while the balancer, on the worker's one thread, holds this one.
        Some(unsafe { &mut *self.members.add(i) })
    }
}

/// One backend of the request's set.
#[derive(Clone, Copy)]
pub struct Member {
    /// The backend as stored (a copy): nginx's peer name (`$upstream_addr`).
    pub name: ngx_str_t,
    /// Its address, pre-parsed by the writer, when it is an IP literal.
    pub addr: Option<SocketAddr>,
    /// 1 to 100.
    pub weight: u8,
    /// Used only when no primary can be.
    pub backup: bool,
}

/// Upstream mode's per-request balancer data (`peer.rs`).
#[derive(Clone, Copy)]
pub struct Balancer {
    /// The request, for the server name of a TLS upstream.
    pub request: *mut ngx_http_request_t,
    /// The block's `max_fails` and `fail_timeout`.
    pub params: Params,
    /// The current try's address (and, for TLS, server name: see `peer::name_key`).
    pub sockaddr: ngx_sockaddr_t,
    /// The block's name, for a request without a backend.
    pub upstream: ngx_str_t,
    /// The TLS server name of this request, once evaluated: `Some(empty)` for plain HTTP.
    pub server_name: Option<ngx_str_t>,
}

/// Bytes of backend names a [`State`] holds: a set of eight IPv6 backends. A set whose names
/// need more keeps them in the request pool.
pub const NAMES: usize = 8 * 48;

/// A request's context and what it points to, outside the request pool. `ctx` comes first: the
/// request's module context pointer points to the `State` and reads it as a `Ctx`.
#[repr(C)]
pub struct State {
    pub ctx: Ctx,
    pub balancer: Balancer,
    /// Room for the set's members (`ctx.set.members` points here).
    pub members: [MaybeUninit<Member>; MAX_MEMBERS],
    /// Room for the members' names and a wildcard's `*.suffix`.
    pub names: [MaybeUninit<u8>; NAMES],
}

/// How many returned states a worker keeps for later requests (1.1 MB): more concurrent
/// requests than this allocate and free theirs.
pub const KEEP: usize = 1024;
const _: () = assert!(std::mem::size_of::<State>() <= 1100);

thread_local! {
    /// Each state is boxed: its address is handed to nginx and must not move.
    #[allow(clippy::vec_box)]
    static FREE: RefCell<Vec<Box<MaybeUninit<State>>>> = const { RefCell::new(Vec::new()) };
}

/// A state for a request whose pool is `pool`, given back when the pool is destroyed; its
/// fields are uninitialized. `None` when the pool cannot take the cleanup handler.
pub fn take(pool: *mut ngx_pool_t) -> Option<*mut State> {
    // SAFETY: `pool` is the request's pool; a cleanup with no data of its own is 24 bytes.
    let cleanup = unsafe { ngx_pool_cleanup_add(pool, 0).as_mut() }?;
    let state = FREE
        .try_with(|f| f.try_borrow_mut().ok().and_then(|mut f| f.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(Box::new_uninit);
    let state = Box::into_raw(state);
    cleanup.handler = Some(give_back);
    cleanup.data = state.cast::<c_void>();
    Some(state.cast::<State>())
}

/// The pool cleanup: the request is gone, and with it every pointer into its state.
unsafe extern "C" fn give_back(data: *mut c_void) {
    // SAFETY: `data` is the pointer `take` made with `Box::into_raw`, given back once: nginx
    // runs a pool's cleanups once, when it destroys the pool.
    let state = unsafe { Box::from_raw(data.cast::<MaybeUninit<State>>()) };
    // At worker exit the list may be gone: the state is then freed.
    let _ = FREE.try_with(|f| {
        if let Ok(mut f) = f.try_borrow_mut() {
            if f.len() < KEEP {
                f.push(state);
            }
        }
    });
}
