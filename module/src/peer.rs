//! Upstream mode: `set_backend_peer;` inside an `upstream {}` block makes the table the
//! upstream's balancer, so that `proxy_pass http://<upstream>;` connects to a backend of the
//! request's host's set and the stock `keepalive` module caches connections per backend.
//!
//! nginx calls a balancer through these hooks, and `keepalive` (or any module after us in the
//! block) wraps them the same way it wraps round-robin:
//!
//! - `init_upstream` (configuration): installs [`init_peer`] as the upstream's `peer.init`.
//! - `peer.init` (once per request, before the first connect): takes this request's lookup
//!   (made by the precontent handler, or made now), whose context holds the host's backend set
//!   copied into the request's state (`state.rs`); one try per member (`proxy_next_upstream_tries` may lower
//!   it).
//! - `peer.get` (per try): picks the member, as nginx's round-robin does with `server`s
//!   (`ngx_http_upstream_round_robin.c`): a primary by weight among those not tried yet in
//!   this request and not marked failed (`health`); when none is left, a backup likewise; when
//!   none is left either, the members marked failed, primaries first ("try them anyway":
//!   nginx does so for a block of one server, and answers "no live upstreams" for more; a
//!   host's set is always tried before its 502 page). Never the same member twice in a
//!   request, except after a cached `keepalive` connection the backend had closed: nginx then
//!   retries on a new connection, and the member was not really tried. The member's address,
//!   pre-parsed by the writer, becomes a `sockaddr` in the request's peer data; its text is
//!   the peer's name (`$upstream_addr` lists the tries, as nginx does).
//! - `peer.free` (per try): a failure counts against the member (`max_fails`), a success
//!   clears it, as round-robin's free does; a set of one keeps no state, like nginx's single
//!   server. Counts the try down.
//! - `peer.set_session` / `peer.save_session` (`https://`): no session cache of our own.
//!
//! `https://` and `keepalive`: the stock `keepalive` module matches a cached connection by
//! comparing the peer's `sockaddr` (length and bytes) with the one it was opened for, so a
//! connection opened with one host's server name (`proxy_ssl_name $host`) would serve the next
//! host on the same backend. For a TLS upstream, the `sockaddr` handed to nginx is therefore
//! the backend's address followed by the server name of the request ([`name_key`]): the kernel
//! connects to the address and reads no further (Linux accepts an address longer than its
//! family's), and `keepalive` reuses a connection only for the same address and server name.
//! Plain HTTP gets the bare address, exactly as before.
//!
//! A miss and an unavailable table never get here with the defaults: the precontent handler
//! answers them (404 / 503) before the content phase, because a balancer can only fail a
//! request with 500 or 502. It recognizes upstream mode through `ctx::applies`. What does
//! get here without an address (a set of host names, or `set_backend_miss continue`) fails
//! the connection: one `error` line, then 502 as for a backend that is down.
//!
//! No system call, no lock, no allocation per try: the lookup reads the mapped table, the set
//! and the balancer's data are in the request's state (recycled by the worker), the health
//! table is the worker's, allocated when it started.

use std::ffi::c_void;
use std::net::SocketAddr;

use ngx::core::Status;
use ngx::ffi::{
    in6_addr, in6_addr__bindgen_ty_1, in_addr, ngx_conf_t, ngx_connection_t,
    ngx_http_complex_value, ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_int_t,
    ngx_peer_connection_t, ngx_sockaddr_t, ngx_str_t, ngx_uint_t, sa_family_t, sockaddr_in,
    sockaddr_in6, socklen_t, AF_INET, AF_INET6, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_WARN,
    NGX_PEER_FAILED,
};
use ngx::http::{HttpModuleServerConf, Request};
use ngx::ngx_log_error;

use crate::ctx::{self, name_of, Ctx, Outcome, Set, MAX_MEMBERS};
use crate::health::{self, Params};
use crate::state::{Balancer, State};
use crate::{guard, random, Module};

/// `init_upstream` of an `upstream {}` block with `set_backend_peer`: checks what the block
/// holds once it is complete, then installs the per-request initializer.
pub unsafe extern "C" fn init_upstream(
    cf: *mut ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the configuration and this upstream block.
        let (cf, us) = unsafe { (&mut *cf, &mut *us) };
        // SAFETY: `servers` is the block's array of `ngx_http_upstream_server_t`, holding the
        // placeholder `set_backend_peer` added and any `server` directive.
        let servers = unsafe { us.servers.as_ref() }.map_or(0, |a| a.nelts);
        let problem = if servers != 1 {
            Some("\"server\" cannot be used")
        } else if !us.shm_zone.is_null() {
            Some("\"zone\" cannot be used")
        } else {
            None
        };
        if let Some(problem) = problem {
            // SAFETY: `file_name` is the NUL-terminated name of the file the block is in.
            let file = unsafe { std::ffi::CStr::from_ptr(us.file_name.cast()) };
            ngx_log_error!(
                NGX_LOG_EMERG,
                cf.log,
                "{problem} with \"set_backend_peer\" in upstream \"{}\" in {}:{}",
                us.host,
                file.to_string_lossy(),
                us.line
            );
            return Status::NGX_ERROR.into();
        }
        us.peer.init = Some(init_peer);
        Status::NGX_OK.into()
    })
}

/// `peer.init`: this request's backend set becomes the upstream's peers.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request, whose upstream is being set up, and the block.
        let (req, us) = unsafe { (Request::from_ngx_http_request(r), &*us) };
        let Some(state) = ctx::state(req) else {
            return Status::NGX_ERROR.into();
        };
        let params = Module::server_conf(us).map_or(health::DEFAULT, |s| s.params);
        // SAFETY: `state` is the request's, valid for the request's life; its context is
        // initialized, its balancer data is written here before any use, but for the address,
        // which each try writes (and `state::take` initialized).
        let members = unsafe {
            let b = std::ptr::addr_of_mut!((*state).balancer);
            std::ptr::addr_of_mut!((*b).request).write(r);
            std::ptr::addr_of_mut!((*b).params).write(params);
            std::ptr::addr_of_mut!((*b).upstream).write(us.host);
            std::ptr::addr_of_mut!((*b).server_name).write(None);
            (*state).ctx.set.len
        };
        // SAFETY: nginx calls `peer.init` with the request's upstream allocated.
        let Some(u) = (unsafe { req.as_ref().upstream.as_mut() }) else {
            return Status::NGX_ERROR.into();
        };
        u.peer.data = state.cast::<c_void>();
        u.peer.get = Some(get_peer);
        u.peer.free = Some(free_peer);
        // nginx calls these unconditionally for `https://` with `proxy_ssl_session_reuse on`
        // (the default).
        u.peer.set_session = Some(set_session);
        u.peer.save_session = Some(save_session);
        u.peer.tries = members.max(1) as ngx_uint_t;
        Status::NGX_OK.into()
    })
}

/// What a balancer hook works on: the peer connection and, from the request's `State`, its
/// context, its balancer data and the names of its members.
struct Peer<'a> {
    pc: &'a mut ngx_peer_connection_t,
    ctx: &'a mut Ctx,
    balancer: &'a mut Balancer,
    /// `State::names`, `MAX_MEMBERS` slots: a raw pointer, so that no hook re-borrows the
    /// names nginx keeps pointers to (`pc.name`, `$upstream_addr`) across the request.
    names: *mut ngx_str_t,
}

/// The [`Peer`] of a hook's arguments.
///
/// # Safety
/// `pc` is the request's peer connection and `data` the pointer `init_peer` set (possibly
/// handed back by `keepalive`): the request's `State`, with its context and balancer data
/// initialized, valid for the request's life.
unsafe fn peer_data<'a>(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> Peer<'a> {
    let state = data.cast::<State>();
    // SAFETY: the caller's contract. Only the context and the balancer data, disjoint fields,
    // are borrowed: the value the set reads and the names point into is not, nor the names.
    unsafe {
        Peer {
            pc: &mut *pc,
            ctx: &mut *std::ptr::addr_of_mut!((*state).ctx),
            balancer: &mut *std::ptr::addr_of_mut!((*state).balancer),
            names: std::ptr::addr_of_mut!((*state).names).cast::<ngx_str_t>(),
        }
    }
}

/// `peer.get`: the address of the member to try, or a failed try without one.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request's peer connection and the data `init_peer` set.
        let Peer {
            pc,
            ctx,
            balancer: peer,
            names,
        } = unsafe { peer_data(pc, data) };
        pc.set_cached(0);
        pc.connection = std::ptr::null_mut();
        if ctx.outcome != Outcome::Hit {
            pc.name = &mut peer.upstream;
            let what = match ctx.outcome {
                Outcome::Miss => "is empty: the host is not in the table",
                _ => "is empty: the table is unavailable",
            };
            return unroutable(pc, &peer.upstream, what);
        }
        let now = health::now();
        let set = &mut ctx.set;
        let chosen = choose(set, peer.params, now);
        let Some((i, name, addr)) = chosen.and_then(|i| {
            let m = set.member(i)?;
            Some((i, name_of(&m), m.addr()?))
        }) else {
            let names_only =
                (0..set.len).all(|i| set.member(i).is_some_and(|m| m.addr().is_none()));
            if let Some(first) = set.member(0).filter(|_| names_only) {
                // A set of host names: say so once, for its first member.
                let name = name_of(&first);
                // SAFETY: slot 0 of the state's names, which nothing borrows.
                unsafe { names.write(name) };
                pc.name = names;
                return unroutable(
                    pc,
                    &name,
                    "is a host name: upstream mode connects to IP addresses only",
                );
            }
            // Every member was tried (only once `tries` allowed more than the set's size).
            pc.name = &mut peer.upstream;
            return Status::NGX_BUSY.into();
        };
        set.tried |= 1 << i;
        set.current = i;
        if i >= MAX_MEMBERS {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: slot `i` (below `MAX_MEMBERS`, checked) of the state's names, which nothing
        // borrows; nginx keeps the pointer for the rest of the request.
        let slot = unsafe { names.add(i) };
        // SAFETY: as above.
        unsafe { slot.write(name) };
        pc.name = slot;
        if set.len > 1 {
            health::chosen(&addr, peer.params, now);
        }
        let mut socklen = set_sockaddr(&mut peer.sockaddr, addr);
        let name = match peer.server_name {
            Some(name) => name,
            None => {
                let name = server_name(peer.request).unwrap_or_default();
                peer.server_name = Some(name);
                name
            }
        };
        if name.len > 0 {
            socklen = name_key(&mut peer.sockaddr, socklen, name.as_bytes());
        }
        pc.sockaddr = std::ptr::addr_of_mut!(peer.sockaddr).cast();
        pc.socklen = socklen;
        Status::NGX_OK.into()
    })
}

/// Logs why a request has no address to connect to, and ends its tries: nginx answers 502, as
/// for a backend that is down.
fn unroutable(pc: &mut ngx_peer_connection_t, name: &ngx_str_t, what: &str) -> ngx_int_t {
    // `ngx_log_error!` takes a pointer expression.
    let log = pc.log;
    if !log.is_null() {
        ngx_log_error!(NGX_LOG_ERR, log, "set_backend: backend \"{}\" {what}", name);
    }
    pc.tries = 0;
    Status::NGX_DECLINED.into()
}

/// The member to try next (see the file's header), or `None` when every member with an
/// address has been tried.
fn choose(set: &Set, p: Params, now: ngx::ffi::ngx_msec_t) -> Option<usize> {
    if set.len <= 1 {
        let open = set.tried & 1 == 0 && set.member(0)?.addr().is_some();
        return open.then_some(0);
    }
    if health::any_failed() {
        return choose_among_failed(set, p, now);
    }
    // Nothing failed in this worker (the usual case): a primary by weight among those not
    // tried, else a backup likewise.
    let mut weights = [[0u64; MAX_MEMBERS]; 2];
    for (i, m) in (0..set.len).map_while(|i| Some((i, set.member(i)?))) {
        if set.tried & (1 << i) == 0 && m.addr().is_some() {
            if let Some(w) = weights[usize::from(m.backup())].get_mut(i) {
                *w = u64::from(m.weight());
            }
        }
    }
    let r = random::next();
    weights
        .iter()
        .find_map(|w| shm_layout::pick_weighted(set.len, r, |i| w[i]))
}

/// [`choose`] in a worker where some backend failed recently: primaries, then backups; first
/// those not marked failed, then those anyway.
#[inline(never)]
fn choose_among_failed(set: &Set, p: Params, now: ngx::ffi::ngx_msec_t) -> Option<usize> {
    let r = random::next();
    for (backup, anyway) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut weights = [0u64; MAX_MEMBERS];
        for (i, w) in weights.iter_mut().enumerate().take(set.len) {
            let Some(m) = set.member(i).filter(|_| set.tried & (1 << i) == 0) else {
                continue;
            };
            let usable = m.backup() == backup
                && m.addr()
                    .is_some_and(|a| anyway || !health::is_down(&a, p, now));
            if usable {
                *w = u64::from(m.weight());
            }
        }
        if let Some(i) = shm_layout::pick_weighted(set.len, r, |i| weights[i]) {
            return Some(i);
        }
    }
    None
}

/// The TLS server name of the request's upstream (`proxy_ssl_name`, else the upstream's
/// name), or `None` for plain HTTP.
fn server_name(r: *mut ngx_http_request_t) -> Option<ngx_str_t> {
    // SAFETY: `r` is the request whose upstream is connecting; its upstream and the
    // upstream's configuration are set before `peer.init`.
    let r = unsafe { &mut *r };
    // SAFETY: as above.
    let u = unsafe { r.upstream.as_ref() }?;
    if u.ssl() == 0 {
        return None;
    }
    // SAFETY: as above.
    let conf = unsafe { u.conf.as_ref() }?;
    if conf.ssl_name.is_null() {
        return Some(u.ssl_name);
    }
    let mut name = ngx_str_t::default();
    // SAFETY: `ssl_name` is the location's compiled `proxy_ssl_name`; nginx evaluates it for
    // this request the same way when it opens the connection.
    let rc = unsafe { ngx_http_complex_value(r, conf.ssl_name, &mut name) };
    (rc == Status::NGX_OK.into()).then_some(name)
}

/// `peer.free`: one try used; its outcome counts for the member's health.
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    guard((), || {
        // SAFETY: nginx passes the request's peer connection and the data `init_peer` set.
        let Peer {
            pc,
            ctx,
            balancer: peer,
            ..
        } = unsafe { peer_data(pc, data) };
        pc.tries = pc.tries.saturating_sub(1);
        let set = &mut ctx.set;
        let i = set.current;
        let Some(addr) = set.member(i).and_then(|m| m.addr()) else {
            return;
        };
        if state & NGX_PEER_FAILED as ngx_uint_t == 0 {
            if set.len > 1 {
                health::succeeded(&addr);
            }
            return;
        }
        if pc.cached() != 0 && !timed_out(pc.connection) {
            // A kept-alive connection the backend had closed: nginx retries on a new one.
            set.tried &= !(1 << i);
            return;
        }
        if set.len > 1 && health::failed(&addr, peer.params, health::now()) {
            let log = pc.log;
            if !log.is_null() {
                ngx_log_error!(
                    NGX_LOG_WARN,
                    log,
                    "set_backend: upstream server temporarily disabled"
                );
            }
        }
    })
}

/// True when the try on `c` ended by a timeout (a failure of the backend, even on a cached
/// connection).
fn timed_out(c: *mut ngx_connection_t) -> bool {
    // SAFETY: nginx frees the peer before it closes the connection: `c` is null or valid, and
    // so are its events.
    unsafe {
        c.as_ref().is_some_and(|c| {
            c.read.as_ref().is_some_and(|e| e.timedout() != 0)
                || c.write.as_ref().is_some_and(|e| e.timedout() != 0)
        })
    }
}

/// `peer.set_session`: no TLS session to resume. Sessions are not cached per backend; with
/// `keepalive`, a TLS connection is reused as a whole instead.
unsafe extern "C" fn set_session(_pc: *mut ngx_peer_connection_t, _data: *mut c_void) -> ngx_int_t {
    Status::NGX_OK.into()
}

/// `peer.save_session`: nothing kept (see [`set_session`]).
unsafe extern "C" fn save_session(_pc: *mut ngx_peer_connection_t, _data: *mut c_void) {}

/// Appends the TLS server name to the address of `len` bytes in `out`, so that `keepalive`,
/// which compares whole `sockaddr`s, matches address and server name; returns the new length.
/// A name longer than the room left is its first bytes followed by a 64-bit hash (FNV-1a) of
/// all of it.
fn name_key(out: &mut ngx_sockaddr_t, len: socklen_t, name: &[u8]) -> socklen_t {
    const SIZE: usize = std::mem::size_of::<ngx_sockaddr_t>();
    // SAFETY: `ngx_sockaddr_t` is a union of plain C structs: any bytes are a valid value,
    // and its `SIZE` bytes are all writable through `out`.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(std::ptr::from_mut(out).cast::<u8>(), SIZE) };
    let at = len as usize;
    let Some(room) = SIZE.checked_sub(at).filter(|&r| r > 8) else {
        return len;
    };
    if name.len() <= room {
        bytes[at..at + name.len()].copy_from_slice(name);
        return (at + name.len()) as socklen_t;
    }
    let head = room - 8;
    bytes[at..at + head].copy_from_slice(&name[..head]);
    let hash = name.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    bytes[at + head..SIZE].copy_from_slice(&hash.to_ne_bytes());
    SIZE as socklen_t
}

/// Writes `addr` as a whole `sockaddr_in` or `sockaddr_in6` at the start of `out`; returns its
/// length.
fn set_sockaddr(out: &mut ngx_sockaddr_t, addr: SocketAddr) -> socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            out.sockaddr_in = sockaddr_in {
                sin_family: AF_INET as sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            std::mem::size_of::<sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            out.sockaddr_in6 = sockaddr_in6 {
                sin6_family: AF_INET6 as sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: in6_addr {
                    __in6_u: in6_addr__bindgen_ty_1 {
                        __u6_addr8: a.ip().octets(),
                    },
                },
                sin6_scope_id: 0,
            };
            std::mem::size_of::<sockaddr_in6>() as socklen_t
        }
    }
}
