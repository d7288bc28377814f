//! Upstream mode: `set_backend_peer;` inside an `upstream {}` block makes the table the
//! upstream's balancer, so that `proxy_pass http://<upstream>;` connects to the backend of the
//! request's host and the stock `keepalive` module caches connections per backend address.
//!
//! nginx calls a balancer through these hooks, and `keepalive` (or any module after us in the
//! block) wraps them the same way it wraps round-robin:
//!
//! - `init_upstream` (configuration): installs [`init_peer`] as the upstream's `peer.init`.
//! - `peer.init` (once per request, before the first connect): takes this request's lookup
//!   (made by the precontent handler, or made now) and prepares the peer: a `sockaddr` in the
//!   request pool built from the address the table stores pre-parsed, and the backend's text
//!   as the peer name (`$upstream_addr`). One try: a single backend.
//! - `peer.get` / `peer.free` (per try): hand that address to nginx; count the try down.
//! - `peer.set_session` / `peer.save_session` (`https://`): no session cache of our own.
//!
//! A miss and an unavailable table never get here with the defaults: the precontent handler
//! answers them (404 / 503) before the content phase, because a balancer can only fail a
//! request with 500 or 502. It recognizes upstream mode through `ctx::applies`. What does
//! get here without an address (a backend given as a host name, or `set_backend_miss
//! continue`) fails the connection: one `error` line, then 502 as for a backend that is down.
//!
//! No system call and no lock: the lookup reads the mapped table, the rest is pool memory.

use std::ffi::c_void;
use std::net::SocketAddr;

use ngx::core::Status;
use ngx::ffi::{
    in6_addr, in6_addr__bindgen_ty_1, in_addr, ngx_conf_t, ngx_http_request_t,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_peer_connection_t, ngx_sockaddr_t, ngx_str_t,
    ngx_uint_t, sa_family_t, sockaddr_in, sockaddr_in6, socklen_t, AF_INET, AF_INET6,
    NGX_LOG_EMERG, NGX_LOG_ERR,
};
use ngx::http::Request;
use ngx::ngx_log_error;

use crate::ctx::{self, Outcome};
use crate::guard;

/// One request's peer, in the request pool.
#[derive(Clone, Copy)]
struct Peer {
    /// The backend's address; `socklen` is 0 when there is none to connect to.
    sockaddr: ngx_sockaddr_t,
    socklen: socklen_t,
    /// The backend as stored (`10.0.0.7:3000`): nginx's peer name, shown by `$upstream_addr`.
    name: ngx_str_t,
    /// Why there is no address, for the error line; `None` when there is one.
    unroutable: Option<Unroutable>,
}

/// Why a request reached the balancer without an address to connect to.
#[derive(Clone, Copy)]
enum Unroutable {
    /// The table stores a `name:port` backend: upstream mode has no resolver.
    HostName,
    /// A miss or an unavailable table that `set_backend_miss` / `set_backend_unavailable`
    /// let through with `continue`.
    NoBackend(Outcome),
}

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

/// `peer.init`: this request's backend becomes the only peer of the upstream.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request, whose upstream is being set up, and the block.
        let (req, us) = unsafe { (Request::from_ngx_http_request(r), &*us) };
        let Some(ctx) = ctx::lookup(req) else {
            return Status::NGX_ERROR.into();
        };
        let mut peer = Peer {
            // SAFETY: all-zero is a valid `ngx_sockaddr_t` (a union of plain C structs), and
            // keepalive compares whole `sockaddr`s, padding included: it must be zeroed.
            sockaddr: unsafe { std::mem::zeroed() },
            socklen: 0,
            name: if ctx.backend.len > 0 {
                ctx.backend
            } else {
                us.host
            },
            unroutable: None,
        };
        match (ctx.outcome, ctx.addr) {
            (Outcome::Hit, Some(addr)) => peer.socklen = set_sockaddr(&mut peer.sockaddr, addr),
            (Outcome::Hit, None) => peer.unroutable = Some(Unroutable::HostName),
            (outcome, _) => peer.unroutable = Some(Unroutable::NoBackend(outcome)),
        }
        let p = req.pool().alloc_type::<Peer>();
        if p.is_null() {
            return Status::NGX_ERROR.into();
        }
        // SAFETY: `p` is a fresh, aligned allocation of a `Peer` in the request pool, which
        // outlives the upstream.
        unsafe { p.write(peer) };
        // SAFETY: nginx calls `peer.init` with the request's upstream allocated.
        let Some(u) = (unsafe { req.as_ref().upstream.as_mut() }) else {
            return Status::NGX_ERROR.into();
        };
        u.peer.data = p.cast::<c_void>();
        u.peer.get = Some(get_peer);
        u.peer.free = Some(free_peer);
        // nginx calls these unconditionally for `https://` with `proxy_ssl_session_reuse on`
        // (the default).
        u.peer.set_session = Some(set_session);
        u.peer.save_session = Some(save_session);
        u.peer.tries = 1;
        Status::NGX_OK.into()
    })
}

/// `peer.get`: the address to connect to, or a failed try without one.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request's peer connection and the data `init_peer` set
        // (possibly through `keepalive`, which hands back ours): a `Peer` in the request pool.
        let (pc, peer) = unsafe { (&mut *pc, &mut *data.cast::<Peer>()) };
        pc.name = &mut peer.name;
        let Some(why) = peer.unroutable else {
            pc.sockaddr = std::ptr::addr_of_mut!(peer.sockaddr).cast();
            pc.socklen = peer.socklen;
            return Status::NGX_OK.into();
        };
        let what = match why {
            Unroutable::HostName => "is a host name: upstream mode connects to IP addresses only",
            Unroutable::NoBackend(Outcome::Miss) => "is empty: the host is not in the table",
            Unroutable::NoBackend(_) => "is empty: the table is unavailable",
        };
        // `ngx_log_error!` takes a pointer expression.
        let log = pc.log;
        if !log.is_null() {
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "set_backend: backend \"{}\" {what}",
                peer.name
            );
        }
        // No other try: nginx ends the request with 502, as for a backend that is down.
        pc.tries = 0;
        pc.set_cached(0);
        Status::NGX_DECLINED.into()
    })
}

/// `peer.free`: one try used.
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    _data: *mut c_void,
    _state: ngx_uint_t,
) {
    guard((), || {
        // SAFETY: nginx passes the request's peer connection.
        let pc = unsafe { &mut *pc };
        pc.tries = pc.tries.saturating_sub(1);
    })
}

/// `peer.set_session`: no TLS session to resume. Sessions are not cached per backend; with
/// `keepalive`, a TLS connection is reused as a whole instead.
unsafe extern "C" fn set_session(_pc: *mut ngx_peer_connection_t, _data: *mut c_void) -> ngx_int_t {
    Status::NGX_OK.into()
}

/// `peer.save_session`: nothing kept (see [`set_session`]).
unsafe extern "C" fn save_session(_pc: *mut ngx_peer_connection_t, _data: *mut c_void) {}

/// Writes `addr` as a `sockaddr_in` or `sockaddr_in6` into zeroed memory; returns its length.
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
