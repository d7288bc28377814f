//! The per-request context, as nginx modules keep their `*_ctx_t`: the lookup of the request's
//! host, made once per request and kept in the request pool, and the test of where it is
//! needed. The request-time handlers (`request`) and the balancer (`peer`) both read it; neither
//! depends on the other.
//!
//! The lookup happens the first time anything needs it: the `set_backend` variable (in
//! `proxy_pass`, an `if`, a log format), `$set_backend_status`, `$set_backend_match`, the
//! precontent phase handler, or upstream mode's `peer.init`.

use std::ffi::c_void;
use std::net::SocketAddr;

use ngx::ffi::{ngx_http_request_t, ngx_http_upstream_conf_t, ngx_str_t};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, Request,
};

use shm_layout::{Match, Value};

use crate::random;
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
/// request, in the request pool. Made once, by [`lookup`]; an internal redirect clears it.
/// Everything a request-time handler or the balancer needs to share lives here, so that they
/// depend on this file and not on each other: a later field (the backend chosen among several,
/// the tries left) goes beside these.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub outcome: Outcome,
    /// The backend (a copy in the request pool); empty unless `outcome` is `Hit`.
    pub backend: ngx_str_t,
    /// The entry that matched (`$set_backend_match`): the host itself, `*.suffix` (a copy in
    /// the request pool) or `*`; empty unless `outcome` is `Hit`.
    pub matched: ngx_str_t,
    /// The backend set (upstream mode's peers); empty unless `outcome` is `Hit`.
    pub set: Set,
}

/// The most members a set has (the table's limit).
pub const MAX_MEMBERS: usize = shm_layout::MAX_MEMBERS;

/// The request's backend set, copied into the request pool, and the balancer's progress
/// through it.
#[derive(Clone, Copy)]
pub struct Set {
    /// `len` members in the request pool: the primaries, then the backups.
    pub members: *mut Member,
    pub len: usize,
    /// Bit `i` set: member `i` has been tried for this request.
    pub tried: u8,
    /// The member of the current try.
    pub current: usize,
}

const _: () = assert!(MAX_MEMBERS <= u8::BITS as usize);

impl Set {
    const EMPTY: Set = Set {
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
        // SAFETY: `members` points to `len` initialized members in the request pool, which
        // outlives every user of the request's context.
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
    /// The backend as stored (a copy in the request pool): nginx's peer name
    /// (`$upstream_addr`).
    pub name: ngx_str_t,
    /// Its address, pre-parsed by the writer, when it is an IP literal.
    pub addr: Option<SocketAddr>,
    /// 1 to 100.
    pub weight: u8,
    /// Used only when no primary can be.
    pub backup: bool,
}

/// The default entry's key, for `$set_backend_match`.
static DEFAULT_KEY: &[u8] = b"*";

/// A copy of the concatenation of `parts` in `pool`; `None` when the pool is exhausted.
fn pool_copy(pool: &ngx::core::Pool, parts: &[&[u8]]) -> Option<ngx_str_t> {
    let len = parts.iter().map(|p| p.len()).sum();
    let data = pool.alloc_unaligned(len).cast::<u8>();
    if data.is_null() {
        return None;
    }
    let mut at = 0;
    for part in parts {
        // SAFETY: `data` was just allocated with `len` bytes, the sum of the parts' lengths,
        // so each part lands inside it.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), data.add(at), part.len()) };
        at += part.len();
    }
    Some(ngx_str_t { len, data })
}

/// The members of `v`'s set, copied into `pool` with their names in one allocation (the
/// members, then the names); `None` when the pool is exhausted.
fn copy_set(pool: &ngx::core::Pool, v: &Value) -> Option<Set> {
    let len = v.members().min(MAX_MEMBERS);
    let array = len * std::mem::size_of::<Member>();
    let mut names = 0;
    for i in 0..len {
        names += v.member(i)?.as_bytes().len();
    }
    let members = pool.alloc(array + names).cast::<Member>();
    if members.is_null() {
        return None;
    }
    // SAFETY: the allocation holds `array` bytes of members, then `names` bytes.
    let mut name = unsafe { members.cast::<u8>().add(array) };
    for i in 0..len {
        let m = v.member(i)?;
        let bytes = m.as_bytes();
        // SAFETY: `name` points into the allocation's names part, which has room for every
        // member's name (their lengths were summed above from the same value); `members` is
        // aligned as nginx aligns every pool allocation (to a word, a `Member`'s alignment),
        // and `i < len`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), name, bytes.len());
            members.add(i).write(Member {
                name: ngx_str_t {
                    len: bytes.len(),
                    data: name,
                },
                addr: m.addr(),
                weight: m.weight(),
                backup: m.backup(),
            });
            name = name.add(bytes.len());
        }
    }
    Some(Set {
        members,
        len,
        ..Set::EMPTY
    })
}

/// Variable mode's member of `v`'s set: a weighted pick among the primaries, per request (as
/// nginx's `random` balancer); a set of one draws nothing. Upstream mode's balancer makes its
/// own picks (`peer.rs`).
fn pick_primary(v: &Value) -> usize {
    if v.members() == 1 {
        return 0;
    }
    v.pick_primary(random::next(), |_| false).unwrap_or(0)
}

/// The lookup for this request, done once and kept in the request context (which an internal
/// redirect clears). `None` only when the request pool is exhausted.
pub fn lookup(r: &mut Request) -> Option<Ctx> {
    // SAFETY: `in_pool` returns a valid, initialized context in the request pool.
    in_pool(r).map(|ctx| unsafe { *ctx })
}

/// [`lookup`], answered with the request's context itself (in the request pool, valid as long
/// as the request), for the balancer, which keeps its progress through the set there.
pub fn in_pool(r: &mut Request) -> Option<*mut Ctx> {
    let module = Module::module();
    // SAFETY: `ctx` is the request's array of `ngx_http_max_module` module contexts, and this
    // module's `ctx_index` is below that; the slot is null or a `Ctx` this function made.
    let ctx = unsafe { *r.as_ref().ctx.add(module.ctx_index) }.cast::<Ctx>();
    if !ctx.is_null() {
        return Some(ctx);
    }
    // nginx's normalized host: lowercase, no port, no trailing dot (`$host` without the
    // `server_name` fallback).
    let host = r.as_ref().headers_in.server;
    let pool = r.pool();
    let ctx = pool.calloc_type::<Ctx>();
    if ctx.is_null() {
        return None;
    }
    let none = |outcome| Ctx {
        outcome,
        backend: ngx_str_t::default(),
        matched: ngx_str_t::default(),
        set: Set::EMPTY,
    };
    let answer = |found: Found<'_>| match found {
        Found::Hit(v) => {
            let set = copy_set(&pool, v)?;
            let pick = pick_primary(v);
            let backend = set.members().get(pick)?.name;
            let matched = match v.matched() {
                Match::Exact => host,
                Match::Wildcard { dot } => pool_copy(&pool, &[b"*", host.as_bytes().get(dot..)?])?,
                Match::Default => ngx_str_t {
                    len: DEFAULT_KEY.len(),
                    data: DEFAULT_KEY.as_ptr().cast_mut(),
                },
            };
            Some(Ctx {
                outcome: Outcome::Hit,
                backend,
                matched,
                set,
            })
        }
        Found::Miss => Some(none(Outcome::Miss)),
        Found::Unavailable => Some(none(Outcome::Unavailable)),
    };
    let value = if host.len == 0 {
        answer(Found::Miss)
    } else {
        worker::lookup(host.as_bytes(), answer)
    }?;
    // SAFETY: `ctx` is a fresh, aligned allocation of a `Ctx` in the request pool.
    unsafe { ctx.write(value) };
    r.set_module_ctx(ctx.cast::<c_void>(), module);
    Some(ctx)
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
