//! The request-time half: the variables that expose the request's lookup (kept in the request
//! context, `ctx`), and the precontent phase handler that answers a miss or an unavailable table
//! as configured.
//!
//! The phase handler runs after the rewrite phase, so `set_backend` inside `if` applies too; it
//! also runs for locations in upstream mode (`ctx::applies`), so that a miss gets its 404 before
//! the upstream is set up.

use ngx::core::Status;
use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_conf_t, ngx_http_add_variable, ngx_http_discard_request_body,
    ngx_http_err_page_t, ngx_http_finalize_request, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_http_variable_value_t, ngx_int_t, ngx_pcalloc, ngx_str_t, off_t,
};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule, Request,
};
use ngx::ngx_string;

use crate::ctx::{self, lookup, Ctx, Outcome};
use crate::{guard, pages, Action, Module};

/// A variable's getter, as nginx calls it.
type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

/// Registers `$set_backend_status` and `$set_backend_match` (preconfiguration).
pub fn add_variables(cf: &mut ngx_conf_t) -> Status {
    let vars: [(ngx_str_t, Getter); 2] = [
        (ngx_string!("set_backend_status"), status_variable),
        (ngx_string!("set_backend_match"), match_variable),
    ];
    for (mut name, get) in vars {
        // SAFETY: `cf` is the configuration being parsed; nginx copies the name.
        let var = unsafe { ngx_http_add_variable(cf, &mut name, 0) };
        // SAFETY: non-null results point into the configuration's variables.
        let Some(var) = (unsafe { var.as_mut() }) else {
            return Status::NGX_ERROR;
        };
        var.get_handler = Some(get);
        var.data = 0;
    }
    Status::NGX_OK
}

/// Points `v` at `bytes` (which outlive the request): valid, cacheable, found.
///
/// The flags share one 32-bit bit-field word with the length (`len:28`, then `valid`,
/// `no_cacheable`, `not_found`, `escape`, from the lowest bit: how C compilers lay out
/// bit-fields on the little-endian targets). It is written in one store: bindgen's setters
/// write it a bit at a time, which cost ~570 instructions per request for the length alone
/// (callgrind).
fn set_value(v: &mut ngx_http_variable_value_t, bytes: &ngx_str_t) {
    const VALID: u32 = 1 << 28;
    // Values here are backends, host names and short words: far below the 28-bit limit.
    let len = bytes.len.min(VALID as usize - 1) as u32;
    #[cfg(target_endian = "little")]
    {
        v._bitfield_1 = ngx::ffi::__BindgenBitfieldUnit::new((len | VALID).to_le_bytes());
    }
    #[cfg(not(target_endian = "little"))]
    {
        v.set_len(len);
        v.set_valid(1);
        v.set_no_cacheable(0);
        v.set_not_found(0);
        v.set_escape(0);
    }
    debug_assert!(
        v.len() == len
            && v.valid() == 1
            && v.no_cacheable() == 0
            && v.not_found() == 0
            && v.escape() == 0
    );
    v.data = bytes.data;
}

/// `s` as nginx's string (nginx never writes through a variable's value).
fn static_str(s: &'static str) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    }
}

/// The variable named in `set_backend $var;`: the backend, or empty.
pub unsafe extern "C" fn backend_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request and the value to fill.
        let (r, v) = unsafe { (Request::from_ngx_http_request(r), &mut *v) };
        match ctx::backend(r) {
            Some(backend) => {
                set_value(v, &backend);
                Status::NGX_OK.into()
            }
            None => Status::NGX_ERROR.into(),
        }
    })
}

/// `$set_backend_status`: `hit`, `miss` or `unavailable` where `set_backend` applies (or was
/// evaluated), not found elsewhere.
unsafe extern "C" fn status_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    let applies = |r: &Request| Module::location_conf(r).is_some_and(|l| l.enabled());
    let fill = |ctx: Ctx, v: &mut ngx_http_variable_value_t| {
        set_value(v, &static_str(ctx.outcome.as_str()));
    };
    // SAFETY: nginx passes a getter's arguments.
    unsafe { lookup_variable(r, v, applies, fill) }
}

/// `$set_backend_match`: the entry that answered (the host itself, `*.suffix` or `*`) where the
/// lookup found one, not found elsewhere (a miss, an unavailable table, no `set_backend`).
unsafe extern "C" fn match_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    let fill = |ctx: Ctx, v: &mut ngx_http_variable_value_t| {
        if ctx.outcome == Outcome::Hit {
            set_value(v, &ctx.matched);
        } else {
            v.set_not_found(1);
        }
    };
    // SAFETY: nginx passes a getter's arguments.
    unsafe { lookup_variable(r, v, ctx::applies, fill) }
}

/// What the variables' getters share: where `applies` to the request (or its lookup already
/// ran), `fill` sets `v` from the lookup; elsewhere the variable is not found. A lookup that
/// cannot keep its context is an error.
///
/// # Safety
/// `r` and `v` are the request and the value nginx passes to a variable's getter.
unsafe fn lookup_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    applies: fn(&Request) -> bool,
    fill: fn(Ctx, &mut ngx_http_variable_value_t),
) -> ngx_int_t {
    guard(Status::NGX_ERROR.into(), || {
        // SAFETY: nginx passes the request and the value to fill (the caller's contract).
        let (r, v) = unsafe { (Request::from_ngx_http_request(r), &mut *v) };
        if r.get_module_ctx::<Ctx>(Module::module()).is_none() && !applies(r) {
            v.set_not_found(1);
            return Status::NGX_OK.into();
        }
        match lookup(r) {
            Some(ctx) => {
                fill(ctx, v);
                Status::NGX_OK.into()
            }
            None => Status::NGX_ERROR.into(),
        }
    })
}

/// The precontent phase handler: where `set_backend` applies, or where the location passes the
/// request to an `upstream {}` block with `set_backend_peer`, a miss or an unavailable table
/// ends the request as `set_backend_miss` / `set_backend_unavailable` say.
pub unsafe extern "C" fn precontent_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(Status::NGX_DECLINED.into(), || {
        // SAFETY: nginx passes the request being processed.
        let req = unsafe { Request::from_ngx_http_request(r) };
        let Some(lcf) = Module::location_conf(req) else {
            return Status::NGX_DECLINED.into();
        };
        // An error page being served for this request (a miss redirected by `error_page`)
        // must not be refused again.
        if req.as_ref().error_page() != 0 || !ctx::applies(req) {
            return Status::NGX_DECLINED.into();
        }
        let Some(ctx) = lookup(req) else {
            return ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        if let Some(mcf) = Module::main_conf(req) {
            // Caches `$set_backend_status` in the request, where error_page redirects keep it:
            // what `ngx_http_get_indexed_variable` does with the getter's answer, written
            // directly.
            // SAFETY: `variables` is the request's array of one value per indexed variable of
            // this configuration (shared with its subrequests), and the index is one of them.
            let v = unsafe { &mut *req.as_ref().variables.add(mcf.status_index) };
            if v.valid() == 0 && v.not_found() == 0 {
                set_value(v, &static_str(ctx.outcome.as_str()));
            }
        }
        let action = match ctx.outcome {
            Outcome::Hit => return Status::NGX_DECLINED.into(),
            Outcome::Miss => lcf.miss(),
            Outcome::Unavailable => lcf.unavailable(),
        };
        let status = match action {
            Action::Continue => return Status::NGX_DECLINED.into(),
            Action::Status(s) => s,
        };
        // With an `error_page` for the status, or no page of our own, nginx answers.
        let page = match pages::page(status) {
            Some(page) if !has_error_page(req, status) => page,
            _ => return status as ngx_int_t,
        };
        // SAFETY: `r` is the request nginx passed; `send_page` finishes the response.
        let rc = unsafe { send_page(r, status, page) };
        // SAFETY: the response is complete; nginx finalizes it (and may free `r`), after
        // which nothing here touches the request.
        unsafe { ngx_http_finalize_request(r, rc) };
        Status::NGX_DONE.into()
    })
}

/// True when `error_page` covers `status` in the request's location.
fn has_error_page(r: &Request, status: u16) -> bool {
    let Some(clcf) = NgxHttpCoreModule::location_conf(r) else {
        return false;
    };
    // SAFETY: `error_pages` is null or an array of `ngx_http_err_page_t`.
    let pages = unsafe {
        clcf.error_pages
            .as_ref()
            .map(|a| a.as_slice::<ngx_http_err_page_t>())
    };
    pages
        .unwrap_or(&[])
        .iter()
        .any(|p| p.status == status as ngx_int_t)
}

/// Sends `body` as a complete `text/html` response with `status`; returns what nginx's output
/// chain returned, for `ngx_http_finalize_request`.
///
/// # Safety
///
/// `r` must be a request in its precontent phase that has not sent a header.
unsafe fn send_page(r: *mut ngx_http_request_t, status: u16, body: &'static [u8]) -> ngx_int_t {
    // SAFETY: see the function's contract.
    unsafe {
        let rc = ngx_http_discard_request_body(r);
        if rc != Status::NGX_OK.into() {
            return rc;
        }
        let out = &mut (*r).headers_out;
        out.status = status as _;
        let content_type = ngx_string!("text/html; charset=utf-8");
        out.content_type_len = content_type.len;
        out.content_type = content_type;
        out.content_type_lowcase = std::ptr::null_mut();
        out.content_length_n = body.len() as off_t;

        let rc = ngx_http_send_header(r);
        if rc == Status::NGX_ERROR.into() || rc > Status::NGX_OK.into() || (*r).header_only() != 0 {
            return rc;
        }

        let b = ngx_pcalloc((*r).pool, std::mem::size_of::<ngx_buf_t>()).cast::<ngx_buf_t>();
        let Some(buf) = b.as_mut() else {
            return Status::NGX_ERROR.into();
        };
        // Memory buffers are read-only: nginx never writes through these pointers.
        let start = body.as_ptr().cast_mut();
        buf.start = start;
        buf.pos = start;
        buf.last = start.add(body.len());
        buf.end = buf.last;
        buf.set_memory(1);
        buf.set_last_buf(if r == (*r).main { 1 } else { 0 });
        buf.set_last_in_chain(1);
        let mut chain = ngx_chain_t {
            buf: b,
            next: std::ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut chain)
    }
}
