//! The per-request context, as nginx modules keep their `*_ctx_t`: the lookup of the request's
//! host, made once per request and kept in the request's `State` (`state.rs`), and the test of
//! where it is needed. The request-time handlers (`request`) and the balancer (`peer`) both
//! read it; neither depends on the other.
//!
//! The lookup happens the first time anything needs it: the `set_backend` variable (in
//! `proxy_pass`, an `if`, a log format), `$set_backend_status`, `$set_backend_match`, the
//! precontent phase handler, or upstream mode's `peer.init`.

use std::ffi::c_void;
use std::mem::MaybeUninit;

use ngx::ffi::{ngx_http_request_t, ngx_http_upstream_conf_t, ngx_str_t};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, Request,
};

use shm_layout::Match;

use crate::random;
use crate::state;
pub use crate::state::{name_of, Ctx, Outcome, Set, State, MATCHED, MAX_MEMBERS};
use crate::worker::{self, Found};
use crate::Module;

/// The nginx modules whose location configuration starts with an `ngx_http_upstream_conf_t`
/// (and so with the `upstream {}` block the location passes requests to).
pub const PASS_MODULES: [&[u8]; 6] = [
    b"ngx_http_proxy_module",
    b"ngx_http_grpc_module",
    b"ngx_http_fastcgi_module",
    b"ngx_http_uwsgi_module",
    b"ngx_http_scgi_module",
    b"ngx_http_memcached_module",
];

/// The default entry's key, for `$set_backend_match`.
static DEFAULT_KEY: &[u8] = b"*";

/// `*` and `suffix` written into `room`: a wildcard hit's matching key. A suffix is part of a
/// host the table accepted (at most 253 bytes), so it always fits.
fn wildcard(room: &mut [MaybeUninit<u8>; MATCHED], suffix: &[u8]) -> ngx_str_t {
    let mut len = 0;
    for (dst, &b) in room.iter_mut().zip(b"*".iter().chain(suffix)) {
        dst.write(b);
        len += 1;
    }
    debug_assert_eq!(len, suffix.len() + 1);
    ngx_str_t {
        len,
        data: room.as_mut_ptr().cast::<u8>(),
    }
}

/// Variable mode's member of the set: a weighted pick among the primaries, per request (as
/// nginx's `random` balancer); a set of one draws nothing. Upstream mode's balancer makes its
/// own picks (`peer.rs`).
fn pick_primary(set: &Set) -> usize {
    if set.len <= 1 {
        return 0;
    }
    let weight = |i: usize| {
        set.member(i)
            .filter(|m| !m.backup())
            .map_or(0, |m| u64::from(m.weight()))
    };
    shm_layout::pick_weighted(set.len, random::next(), weight).unwrap_or(0)
}

/// The request's backend (variable mode's `$backend`): picked from the set the first time it is
/// asked for, then the same for the rest of the request. Empty unless the lookup hit. `None`
/// only when the request pool is exhausted.
pub fn backend(r: &mut Request) -> Option<ngx_str_t> {
    let state = state(r)?;
    // SAFETY: `state` is the request's, its context initialized; nothing else refers to the
    // context while this runs on the worker's one thread.
    let ctx = unsafe { &mut (*state).ctx };
    if ctx.outcome == Outcome::Hit && ctx.backend.data.is_null() {
        ctx.backend = name_of(&ctx.set.member(pick_primary(&ctx.set))?);
    }
    Some(ctx.backend)
}

/// The lookup for this request, done once and kept in the request context (which an internal
/// redirect clears). `None` only when the request pool is exhausted.
pub fn lookup(r: &mut Request) -> Option<Ctx> {
    // SAFETY: `state` returns a state whose context is initialized.
    state(r).map(|s| unsafe { (*s).ctx })
}

/// [`lookup`], answered with the request's state itself (valid as long as the request), for
/// the balancer, which keeps its progress through the set in the context and its own data
/// beside it.
pub fn state(r: &mut Request) -> Option<*mut State> {
    let module = Module::module();
    // SAFETY: `ctx` is the request's array of `ngx_http_max_module` module contexts, and this
    // module's `ctx_index` is below that; the slot is null or a `State` this function made.
    let known = unsafe { *r.as_ref().ctx.add(module.ctx_index) }.cast::<State>();
    if !known.is_null() {
        return Some(known);
    }
    // nginx's normalized host: lowercase, no port, no trailing dot (`$host` without the
    // `server_name` fallback).
    let host = r.as_ref().headers_in.server;
    let state = state::take(r.pool().as_ptr())?;
    // SAFETY: `state` is valid for writes (fresh from `take`, ours until the pool goes), its
    // value initialized; the key array is `MaybeUninit`, valid whatever it holds; nothing else
    // refers to either.
    let (value, room) = unsafe {
        (
            &mut *std::ptr::addr_of_mut!((*state).value),
            &mut *std::ptr::addr_of_mut!((*state).matched),
        )
    };
    let found = if host.len == 0 {
        Found::Miss
    } else {
        worker::lookup(host.as_bytes(), value)
    };
    let outcome = match found {
        Found::Hit => Outcome::Hit,
        Found::Miss => Outcome::Miss,
        Found::Unavailable => Outcome::Unavailable,
    };
    let mut ctx = Ctx {
        outcome,
        backend: ngx_str_t::default(),
        matched: ngx_str_t::default(),
        set: Set::EMPTY,
    };
    if outcome == Outcome::Hit {
        // SAFETY: `value` is the state's, which holds the context the set goes into; the next
        // write to it is the lookup of the state's next request.
        ctx.set = unsafe { Set::of(value) };
        ctx.matched = match value.matched() {
            Match::Exact => host,
            Match::Wildcard { dot } => wildcard(room, host.as_bytes().get(dot..).unwrap_or(&[])),
            Match::Default => ngx_str_t {
                len: DEFAULT_KEY.len(),
                data: DEFAULT_KEY.as_ptr().cast_mut(),
            },
        };
    }
    // SAFETY: as above; the context is the state's first field.
    unsafe { std::ptr::addr_of_mut!((*state).ctx).write(ctx) };
    r.set_module_ctx(state.cast::<c_void>(), module);
    Some(state)
}

/// True when set-backend decides this request's backend: its location has `set_backend $var;`
/// or passes the request to an `upstream {}` block with `set_backend_peer`.
pub fn applies(r: &Request) -> bool {
    Module::location_conf(r).is_some_and(|l| l.enabled()) || passes_to_peer(r)
}

/// True when the request's location passes it (`proxy_pass`, `grpc_pass`, …, without
/// variables) to an `upstream {}` block with `set_backend_peer`.
fn passes_to_peer(r: &Request) -> bool {
    let Some(mcf) = Module::main_conf(r).filter(|m| m.peer_used) else {
        return false;
    };
    let r: &ngx_http_request_t = r.as_ref();
    mcf.pass_modules[..mcf.pass_count].iter().any(|&index| {
        // SAFETY: `index` is the `ctx_index` of an HTTP module of this configuration, below
        // `ngx_http_max_module`, the length of `loc_conf`. The location configuration of each
        // module in `PASS_MODULES` begins with an `ngx_http_upstream_conf_t` (nginx's source,
        // unchanged since those modules exist), which begins with the upstream block or null.
        // An upstream block made implicitly by `proxy_pass http://addr` has no `srv_conf`.
        unsafe {
            let conf = (*r.loc_conf.add(index)).cast::<ngx_http_upstream_conf_t>();
            let Some(us) = conf.as_ref().and_then(|c| c.upstream.as_ref()) else {
                return false;
            };
            Module::server_conf(us).is_some_and(|s| s.peer)
        }
    })
}
