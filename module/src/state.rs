//! Where a request's context lives: the module's per-request types, and the worker's supply of
//! the memory that holds them.
//!
//! nginx modules usually keep their `*_ctx_t` in the request pool. This one needs a few KB per
//! request (the context, the entry as the lookup copies it out of the table, the names
//! pointing into it, the balancer's address), and a request pool is 4 KiB blocks: on a proxied
//! request nginx's own allocations nearly fill two, so even a few hundred bytes cost a third
//! block, a `posix_memalign` and a `free` per request (callgrind: ≈ 600 instructions, 3% of a
//! worker's). So a request takes a [`State`] from its worker instead, and gives it back through
//! a cleanup handler of the request pool, which is all that stays in the pool (24 bytes). A
//! worker makes [`KEEP`] states at its first request and recycles them: nothing is allocated
//! per request.

use std::cell::Cell;
use std::ffi::c_void;
use std::mem::MaybeUninit;

use ngx::ffi::{ngx_http_request_t, ngx_pool_cleanup_add, ngx_pool_t, ngx_sockaddr_t, ngx_str_t};

use shm_layout::{Member, Value};

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

/// The request's backend set, as the lookup copied it out of the table into the request's
/// `State`, and the balancer's progress through it.
#[derive(Clone, Copy)]
pub struct Set {
    /// The entry (`State::value`): `len` members, the primaries, then the backups.
    value: *const Value,
    pub len: usize,
    /// Bit `i` set: member `i` has been tried for this request.
    pub tried: u8,
    /// The member of the current try.
    pub current: usize,
}

const _: () = assert!(MAX_MEMBERS <= u8::BITS as usize);

impl Set {
    pub const EMPTY: Set = Set {
        value: std::ptr::null(),
        len: 0,
        tried: 0,
        current: 0,
    };

    /// The set of `value`, a request's `State::value` holding a hit.
    ///
    /// # Safety
    /// `value` outlives every copy of the set and is not written while one is in use: it is the
    /// `value` of the request's state, which the request's context (holding the set) lives in.
    pub unsafe fn of(value: &Value) -> Set {
        Set {
            value,
            len: value.members(),
            ..Set::EMPTY
        }
    }

    /// Member `i`: its name, address, weight and backup flag, as the table holds them.
    #[inline]
    pub fn member(&self, i: usize) -> Option<Member<'_>> {
        // SAFETY: `value` is null or the request's `State::value`, written by the lookup and
        // not written again while the request lives; the state lives until the request pool's
        // cleanup gives it back, after every user of the request's context.
        unsafe { self.value.as_ref() }?.member(i)
    }
}

/// A member's text as nginx's string (read-only: nginx never writes through a peer's name or a
/// variable's value, it copies them).
pub fn name_of(m: &Member<'_>) -> ngx_str_t {
    let name = m.as_bytes();
    ngx_str_t {
        len: name.len(),
        data: name.as_ptr().cast_mut(),
    }
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

/// Bytes for the matching key of a wildcard hit, `*.suffix`: the longest host and the `*`.
pub const MATCHED: usize = shm_layout::MAX_HOST_LEN + 1;

/// A request's context and what it points to, outside the request pool. `ctx` comes first: the
/// request's module context pointer points to the `State` and reads it as a `Ctx`.
///
/// Only `value` (a `Value` holds `bool`s, so it cannot be left uninitialized) and the balancer's
/// address are initialized while a state is not in use (`prepare`); the rest is written by the
/// request that takes it.
#[repr(C)]
pub struct State {
    pub ctx: Ctx,
    pub balancer: Balancer,
    /// The names of the members tried, for nginx's `$upstream_addr` (`names[i]` is written when
    /// member `i` is chosen); they point into `value`.
    pub names: [MaybeUninit<ngx_str_t>; MAX_MEMBERS],
    /// Where the lookup copies the host's entry out of the table (`ctx.set` reads it).
    pub value: Value,
    /// Room for a wildcard hit's `*.suffix`.
    pub matched: [MaybeUninit<u8>; MATCHED],
    /// The next state of the worker's free list, while this one is on it.
    next: *mut State,
}

/// How many states a worker makes for its requests (3.1 MB of address space, in one block, of
/// which only the pages of states in use are touched): more requests in flight than this
/// allocate and free their own.
pub const KEEP: usize = 1024;
const _: () = assert!(std::mem::size_of::<State>() <= 3072);

/// A worker's states: one block of [`KEEP`], made at its first request and never freed (a
/// block this size is one `mmap`, apart from the heap that request pools come from), and the
/// ones of the block not in use, linked through their `next`. Plain cells: a worker is one
/// thread, and nothing here calls out while a cell is being changed.
struct Supply {
    /// The block's first state, null until the first request.
    start: Cell<*mut State>,
    /// States of the block not handed out yet start here (their `value` is not initialized).
    fresh: Cell<*mut State>,
    /// The block's end.
    end: Cell<*mut State>,
    /// States of the block given back, for the next requests: a stack linked through `next`.
    free: Cell<*mut State>,
}

thread_local! {
    static SUPPLY: Supply = const {
        Supply {
            start: Cell::new(std::ptr::null_mut()),
            fresh: Cell::new(std::ptr::null_mut()),
            end: Cell::new(std::ptr::null_mut()),
            free: Cell::new(std::ptr::null_mut()),
        }
    };
}

impl Supply {
    /// A state not in use, prepared.
    fn take(&self) -> *mut State {
        let state = self.free.get();
        if !state.is_null() {
            // SAFETY: a state on the free list is in the block, which is never freed, and no
            // request refers to it; `next` was written when it was given back.
            self.free.set(unsafe { (*state).next });
            return state;
        }
        if self.start.get().is_null() {
            let block: &'static mut [MaybeUninit<State>] = Box::leak(Box::new_uninit_slice(KEEP));
            let range = block.as_mut_ptr_range();
            self.start.set(range.start.cast());
            self.fresh.set(range.start.cast());
            self.end.set(range.end.cast());
        }
        let state = self.fresh.get();
        if state < self.end.get() {
            // SAFETY: `fresh` is inside the block (checked above), which is never freed; the
            // state was never handed out, so nothing refers to it.
            unsafe {
                prepare(state);
                self.fresh.set(state.add(1));
            }
            return state;
        }
        apart()
    }

    /// Takes `state` back if it is one of the block's; false for one allocated apart.
    fn give_back(&self, state: *mut State) -> bool {
        if !(self.start.get()..self.end.get()).contains(&state) {
            return false;
        }
        // SAFETY: a state of the block, which is never freed; its request is gone, so nothing
        // else refers to it.
        unsafe { std::ptr::addr_of_mut!((*state).next).write(self.free.get()) };
        self.free.set(state);
        true
    }
}

/// A state allocated on its own, prepared.
fn apart() -> *mut State {
    let state = Box::into_raw(Box::<State>::new_uninit()).cast::<State>();
    // SAFETY: a fresh allocation for a `State`, referred to by nothing else.
    unsafe { prepare(state) };
    state
}

/// Initializes what a state keeps from one request to the next: its `value`, and its
/// balancer's address, whose bytes past the address a try writes are never written otherwise.
///
/// # Safety
/// `state` is valid for writes and nothing refers to it.
unsafe fn prepare(state: *mut State) {
    // SAFETY: the caller's contract; all-zero is a valid `ngx_sockaddr_t` (a union of plain C
    // structs).
    unsafe {
        std::ptr::addr_of_mut!((*state).value).write(Value::empty());
        std::ptr::addr_of_mut!((*state).balancer.sockaddr).write(std::mem::zeroed());
    }
}

/// A state for a request whose pool is `pool`, given back when the pool is destroyed; prepared
/// (`value` and the balancer's address initialized), its other fields not. `None` when the pool cannot take the
/// cleanup handler.
pub fn take(pool: *mut ngx_pool_t) -> Option<*mut State> {
    // SAFETY: `pool` is the request's pool; a cleanup with no data of its own is 24 bytes.
    let cleanup = unsafe { ngx_pool_cleanup_add(pool, 0).as_mut() }?;
    let state = SUPPLY.try_with(Supply::take).unwrap_or_else(|_| apart());
    cleanup.handler = Some(give_back);
    cleanup.data = state.cast::<c_void>();
    Some(state)
}

/// The pool cleanup: the request is gone, and with it every pointer into its state.
unsafe extern "C" fn give_back(data: *mut c_void) {
    let state = data.cast::<State>();
    // A state of the block goes back to the free list; one allocated apart is freed.
    let kept = SUPPLY.try_with(|s| s.give_back(state)).unwrap_or(true);
    if !kept {
        // SAFETY: a state outside the block was allocated by `apart` with `Box::into_raw`, and
        // is given back once: nginx runs a pool's cleanups once, when it destroys the pool.
        // `MaybeUninit`: only part of it is initialized, and nothing in it needs a drop.
        drop(unsafe { Box::from_raw(state.cast::<MaybeUninit<State>>()) });
    }
}
