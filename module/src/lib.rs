//! The set-backend nginx module: `set_backend $var;` resolves the request's host through the
//! shared-memory table that the writer daemon keeps up to date, and `set_backend_peer;` makes
//! the same table the balancer of an `upstream {}` block (upstream mode, for `keepalive`).
//!
//! # Layout
//!
//! - this file: the module itself, in nginx's order: configuration types, the commands table,
//!   the module context, the module, then the configuration-time handlers and the process hooks.
//! - `worker`: the per-worker table handle (mapped in `init_process`, remapped once per new
//!   generation, retried on a timer). Any request-time handler looks hosts up through it.
//! - `ctx`: the per-request context (nginx's `*_ctx_t`): the lookup of the request's host, made
//!   once per request, and where it applies (`set_backend`, or a location passing to an upstream
//!   with `set_backend_peer`). `request` and `peer` both depend on it, not on each other.
//! - `request`: the request-time half: the variables (`$set_backend_status`,
//!   `$set_backend_match`) and the precontent phase handler that answers misses and an
//!   unavailable table.
//! - `peer`: upstream mode: the balancer hooks (`init_upstream`, `peer.init`, `peer.get`,
//!   `peer.free`): the pick among a host's backend set, tries, backups, and the `keepalive` key
//!   of TLS connections.
//! - `health`: upstream mode's passive health (`max_fails`, `fail_timeout`): a fixed table per
//!   worker, keyed by backend address.
//! - `pages`: the built-in error pages (the files of `html/`, compiled in).
//!
//! Every `extern "C"` entry point runs its body inside [`guard`], so a panic never unwinds into
//! nginx.

mod ctx;
mod health;
mod pages;
mod peer;
mod random;
mod request;
mod state;
mod worker;

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{addr_of, addr_of_mut};

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_array_push, ngx_command_t, ngx_conf_full_name, ngx_conf_t, ngx_cycle_t,
    ngx_http_add_variable, ngx_http_get_variable_index, ngx_http_handler_pt, ngx_http_module_t,
    ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE, ngx_http_upstream_server_t, ngx_int_t, ngx_module_t,
    ngx_process, ngx_str_t, ngx_uint_t, NGX_CONF_ANY, NGX_CONF_TAKE1, NGX_HTTP_LIF_CONF,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF, NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF,
    NGX_HTTP_VAR_CHANGEABLE, NGX_LOG_EMERG, NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx::http::{
    HttpModule, HttpModuleLocationConf, HttpModuleMainConf, HttpModuleServerConf, Merge,
    MergeConfigError, NgxHttpCoreModule, NgxHttpUpstreamModule,
};
use ngx::{ngx_conf_log_error, ngx_string};

// ---------------------------------------------------------------------------------------------
// Configuration types
// ---------------------------------------------------------------------------------------------

/// `http`-level configuration.
#[derive(Default)]
pub struct MainConf {
    /// `set_backend_table`: the table file, made absolute against the prefix. Empty until the
    /// directive or `init_main_conf` sets it.
    table: ngx_str_t,
    /// True once a directive needs the table (`set_backend`; any later handler that looks
    /// hosts up through `worker::lookup` sets it too): only then do workers map it.
    pub(crate) used: bool,
    /// Index of `$set_backend_status`, evaluated where `set_backend` applies so that its value
    /// survives an `error_page` redirect to a location without `set_backend`.
    pub(crate) status_index: ngx_uint_t,
    /// True once an `upstream {}` block has `set_backend_peer`: only then does the precontent
    /// handler look for locations that pass requests to one.
    pub(crate) peer_used: bool,
    /// `ctx_index` of the loaded modules of `ctx::PASS_MODULES` (postconfiguration).
    pub(crate) pass_modules: [ngx_uint_t; ctx::PASS_MODULES.len()],
    /// How many of `pass_modules` are set.
    pub(crate) pass_count: usize,
}

/// `upstream {}`-level configuration (nginx also creates one per `server {}`, unused there).
#[derive(Default)]
pub struct SrvConf {
    /// `set_backend_peer;` is in this upstream block.
    pub(crate) peer: bool,
    /// Its `max_fails=` and `fail_timeout=` (nginx's defaults unless given).
    pub(crate) params: health::Params,
}

/// What to do with a request whose host has no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Finish the request with this status (the built-in page unless `error_page` covers it).
    Status(u16),
    /// Let the request go on with the variable empty.
    Continue,
}

/// `server`, `location` and `if`-level configuration. Unset fields inherit in `merge`.
#[derive(Default)]
pub struct LocConf {
    /// `set_backend $var;` (true) or `set_backend off;` (false).
    enabled: Option<bool>,
    /// `set_backend_miss`: for a host that is not in the table. Default 404.
    miss: Option<Action>,
    /// `set_backend_unavailable`: when the table cannot be read. Default 503.
    unavailable: Option<Action>,
}

impl LocConf {
    pub(crate) fn enabled(&self) -> bool {
        self.enabled == Some(true)
    }

    pub(crate) fn miss(&self) -> Action {
        self.miss.unwrap_or(Action::Status(404))
    }

    pub(crate) fn unavailable(&self) -> Action {
        self.unavailable.unwrap_or(Action::Status(503))
    }
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &LocConf) -> Result<(), MergeConfigError> {
        self.enabled = self.enabled.or(prev.enabled).or(Some(false));
        self.miss = self.miss.or(prev.miss).or(Some(Action::Status(404)));
        self.unavailable = self
            .unavailable
            .or(prev.unavailable)
            .or(Some(Action::Status(503)));
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

const ANY_LEVEL: u32 =
    NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_HTTP_LIF_CONF;

static mut COMMANDS: [ngx_command_t; 6] = [
    ngx_command_t {
        name: ngx_string!("set_backend"),
        type_: (NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_HTTP_LIF_CONF | NGX_CONF_TAKE1)
            as ngx_uint_t,
        set: Some(set_backend),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: std::ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("set_backend_table"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_backend_table),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: std::ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("set_backend_miss"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_backend_action),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, miss),
        post: std::ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("set_backend_unavailable"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_backend_action),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: std::mem::offset_of!(LocConf, unavailable),
        post: std::ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("set_backend_peer"),
        type_: (NGX_HTTP_UPS_CONF | NGX_CONF_ANY) as ngx_uint_t,
        set: Some(set_backend_peer),
        conf: NGX_HTTP_SRV_CONF_OFFSET,
        offset: 0,
        post: std::ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

// ---------------------------------------------------------------------------------------------
// Module context and module
// ---------------------------------------------------------------------------------------------

static MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: Some(Module::init_main_conf),
    create_srv_conf: Some(Module::create_srv_conf),
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_set_backend_module);

#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_set_backend_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(MODULE_CTX) as *mut c_void,
    commands: addr_of_mut!(COMMANDS).cast(),
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(init_process),
    exit_process: Some(exit_process),
    ..ngx_module_t::default()
};

/// The type the `ngx` traits hang the configuration accessors on.
pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module object is only written by nginx while it loads the configuration
        // (indexes), never concurrently with this read.
        unsafe { &*addr_of!(ngx_http_set_backend_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || {
            // SAFETY: nginx passes the configuration being parsed.
            let cf = unsafe { &mut *cf };
            request::add_variables(cf).into()
        })
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        guard(Status::NGX_ERROR.into(), || {
            // SAFETY: nginx passes the configuration being parsed.
            let cf = unsafe { &mut *cf };
            let Some(cmcf) = NgxHttpCoreModule::main_conf_mut(cf) else {
                return Status::NGX_ERROR.into();
            };
            let Some(phase) = cmcf
                .phases
                .get_mut(ngx_http_phases_NGX_HTTP_PRECONTENT_PHASE as usize)
            else {
                return Status::NGX_ERROR.into();
            };
            // SAFETY: the phase's handlers array holds `ngx_http_handler_pt` elements.
            let h = unsafe { ngx_array_push(&mut phase.handlers) }.cast::<ngx_http_handler_pt>();
            if h.is_null() {
                return Status::NGX_ERROR.into();
            }
            // SAFETY: `h` is a fresh, aligned element of that array.
            unsafe { h.write(Some(request::precontent_handler)) };
            let mut name = ngx_string!("set_backend_status");
            // SAFETY: `cf` is valid; the variable was added in preconfiguration.
            let index = unsafe { ngx_http_get_variable_index(cf, &mut name) };
            match (ngx_uint_t::try_from(index), Module::main_conf_mut(cf)) {
                (Ok(index), Some(mcf)) => {
                    mcf.status_index = index;
                    find_pass_modules(cf, mcf);
                }
                _ => return Status::NGX_ERROR.into(),
            }
            Status::NGX_OK.into()
        })
    }

    unsafe extern "C" fn init_main_conf(_cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
        guard(NGX_CONF_ERROR, || {
            // SAFETY: nginx passes this module's main configuration.
            let mcf = unsafe { &mut *conf.cast::<MainConf>() };
            if mcf.table.len == 0 {
                let path = shm_layout::DEFAULT_TABLE_PATH;
                // The data is only ever read: nginx strings are `u_char *` by convention.
                mcf.table = ngx_str_t {
                    len: path.len(),
                    data: path.as_ptr().cast_mut(),
                };
            }
            NGX_CONF_OK
        })
    }
}

// SAFETY: the main configuration slot of this module holds a `MainConf` (create_main_conf).
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

// SAFETY: the server configuration slot of this module (in `server {}` and `upstream {}`
// blocks) holds a `SrvConf` (create_srv_conf).
unsafe impl HttpModuleServerConf for Module {
    type ServerConf = SrvConf;
}

// SAFETY: the location configuration slot of this module holds a `LocConf` (create_loc_conf).
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

// ---------------------------------------------------------------------------------------------
// Directive handlers
// ---------------------------------------------------------------------------------------------

/// The directive's arguments, name first.
///
/// # Safety
///
/// `cf` must be the configuration nginx passed to a directive handler.
unsafe fn args(cf: &ngx_conf_t) -> &[ngx_str_t] {
    // SAFETY: while a directive is parsed, `cf.args` is an array of `ngx_str_t`.
    unsafe {
        cf.args
            .as_ref()
            .map(|a| a.as_slice::<ngx_str_t>())
            .unwrap_or(&[])
    }
}

/// Logs `invalid value "…" in "…" directive` and fails the directive, as nginx does.
fn invalid_value(cf: &mut ngx_conf_t, value: &ngx_str_t, directive: &ngx_str_t) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "invalid value \"{}\" in \"{}\" directive",
        value,
        directive
    );
    NGX_CONF_ERROR
}

/// A static message for nginx to append to `"<directive>" directive `.
fn conf_message(msg: &'static CStr) -> *mut c_char {
    msg.as_ptr().cast_mut()
}

/// `set_backend $var | off;`
unsafe extern "C" fn set_backend(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the configuration being parsed and this module's location
        // configuration (the command's `conf` offset).
        let (cf, lcf) = unsafe { (&mut *cf, &mut *conf.cast::<LocConf>()) };
        if lcf.enabled.is_some() {
            return conf_message(c"is duplicate");
        }
        // SAFETY: called as a directive handler.
        let Some(&value) = (unsafe { args(cf) }).get(1) else {
            return NGX_CONF_ERROR;
        };
        if value.as_bytes() == b"off" {
            lcf.enabled = Some(false);
            return NGX_CONF_OK;
        }
        if value.len < 2 || value.as_bytes().first() != Some(&b'$') {
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid variable name \"{}\"", value);
            return NGX_CONF_ERROR;
        }
        // SAFETY: `value` has at least two bytes, so skipping the `$` stays inside it.
        let mut name = ngx_str_t {
            len: value.len - 1,
            data: unsafe { value.data.add(1) },
        };
        // SAFETY: `cf` is valid; nginx copies the name.
        let var = unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_CHANGEABLE as _) };
        // SAFETY: non-null results point into the configuration's variables.
        let Some(var) = (unsafe { var.as_mut() }) else {
            return NGX_CONF_ERROR;
        };
        var.get_handler = Some(request::backend_variable);
        var.data = 0;
        lcf.enabled = Some(true);
        if let Some(mcf) = Module::main_conf_mut(cf) {
            mcf.used = true;
        }
        NGX_CONF_OK
    })
}

/// `set_backend_table path;`
unsafe extern "C" fn set_backend_table(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the configuration being parsed and this module's main
        // configuration.
        let (cf, mcf) = unsafe { (&mut *cf, &mut *conf.cast::<MainConf>()) };
        if mcf.table.len != 0 {
            return conf_message(c"is duplicate");
        }
        // SAFETY: called as a directive handler.
        let Some(&value) = (unsafe { args(cf) }).get(1) else {
            return NGX_CONF_ERROR;
        };
        if value.len == 0 {
            // SAFETY: called as a directive handler, so the name is present.
            let name = unsafe { args(cf) }.first().copied().unwrap_or_default();
            return invalid_value(cf, &value, &name);
        }
        let mut path = value;
        // SAFETY: `cf.cycle` is the cycle being configured; the result lives in its pool.
        if unsafe { ngx_conf_full_name(cf.cycle, &mut path, 0) } != Status::NGX_OK.into() {
            return NGX_CONF_ERROR;
        }
        mcf.table = path;
        NGX_CONF_OK
    })
}

/// `set_backend_peer [max_fails=N] [fail_timeout=T];` in an `upstream {}` block: the table
/// becomes the block's balancer.
/// Balancer wrappers such as `keepalive` must come after it, as after any balancer; `server`
/// and `zone` cannot be used with it (checked in `peer::init_upstream`, once the block is
/// complete).
unsafe extern "C" fn set_backend_peer(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the configuration being parsed and this module's server
        // configuration of the upstream block.
        let (cf, scf) = unsafe { (&mut *cf, &mut *conf.cast::<SrvConf>()) };
        if scf.peer {
            return conf_message(c"is duplicate");
        }
        // SAFETY: called as a directive handler.
        match health::Params::parse(unsafe { args(cf) }.iter().skip(1)) {
            Ok(params) => scf.params = params,
            Err(arg) => {
                let arg = *arg;
                ngx_conf_log_error!(NGX_LOG_EMERG, cf, "invalid parameter \"{}\"", arg);
                return NGX_CONF_ERROR;
            }
        }
        let Some(uscf) = NgxHttpUpstreamModule::server_conf_mut(cf) else {
            return NGX_CONF_ERROR;
        };
        if uscf.peer.init_upstream.is_some() {
            return conf_message(c"must come before \"keepalive\" and any other balancer");
        }
        // SAFETY: inside `upstream {}`, `servers` is an array of `ngx_http_upstream_server_t`.
        let Some(servers) = (unsafe { uscf.servers.as_mut() }) else {
            return NGX_CONF_ERROR;
        };
        if servers.nelts != 0 {
            return conf_message(c"cannot be used with \"server\"");
        }
        // nginx refuses an upstream block without servers: one placeholder, never connected
        // to (the balancer below never looks at it).
        // SAFETY: the array's elements are `ngx_http_upstream_server_t`.
        let server = unsafe { ngx_array_push(servers) }.cast::<ngx_http_upstream_server_t>();
        if server.is_null() {
            return NGX_CONF_ERROR;
        }
        // SAFETY: `server` is a fresh element of that array; all-zero is a server without
        // addresses (`naddrs` 0), which round-robin would refuse.
        unsafe { server.write_bytes(0, 1) };
        uscf.peer.init_upstream = Some(peer::init_upstream);
        scf.peer = true;
        if let Some(mcf) = Module::main_conf_mut(cf) {
            mcf.used = true;
            mcf.peer_used = true;
        }
        NGX_CONF_OK
    })
}

/// Records the `ctx_index` of each module of `ctx::PASS_MODULES` that nginx has.
fn find_pass_modules(cf: &ngx_conf_t, mcf: &mut MainConf) {
    // SAFETY: `cf.cycle` is the cycle being configured; its `modules` is a null-terminated
    // array of the loaded modules, each with a NUL-terminated `name`.
    let cycle = unsafe { &*cf.cycle };
    let mut i = 0;
    loop {
        // SAFETY: as above; the loop stops at the terminating null.
        let m = unsafe { *cycle.modules.add(i) };
        // SAFETY: non-null entries are valid modules.
        let Some(m) = (unsafe { m.as_ref() }) else {
            break;
        };
        i += 1;
        if m.type_ != NGX_HTTP_MODULE as ngx_uint_t || m.name.is_null() {
            continue;
        }
        // SAFETY: `name` is a NUL-terminated string set by nginx's module table.
        let name = unsafe { CStr::from_ptr(m.name) }.to_bytes();
        if ctx::PASS_MODULES.contains(&name) && mcf.pass_count < mcf.pass_modules.len() {
            mcf.pass_modules[mcf.pass_count] = m.ctx_index;
            mcf.pass_count += 1;
        }
    }
}

/// `set_backend_miss code | continue;` and `set_backend_unavailable code | continue;`: the
/// command's `offset` names the `LocConf` field.
unsafe extern "C" fn set_backend_action(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(NGX_CONF_ERROR, || {
        // SAFETY: nginx passes the configuration being parsed, the command being handled and
        // this module's location configuration.
        let (cf, cmd, lcf) = unsafe { (&mut *cf, &*cmd, &mut *conf.cast::<LocConf>()) };
        let field = if cmd.offset == std::mem::offset_of!(LocConf, miss) {
            &mut lcf.miss
        } else {
            &mut lcf.unavailable
        };
        if field.is_some() {
            return conf_message(c"is duplicate");
        }
        // SAFETY: called as a directive handler.
        let Some(&value) = (unsafe { args(cf) }).get(1) else {
            return NGX_CONF_ERROR;
        };
        match parse_action(value.as_bytes()) {
            Some(action) => {
                *field = Some(action);
                NGX_CONF_OK
            }
            None => invalid_value(cf, &value, &cmd.name),
        }
    })
}

/// `continue`, or an error status from 400 to 599.
fn parse_action(value: &[u8]) -> Option<Action> {
    if value == b"continue" {
        return Some(Action::Continue);
    }
    let code: u16 = std::str::from_utf8(value).ok()?.parse().ok()?;
    (400..=599).contains(&code).then_some(Action::Status(code))
}

// ---------------------------------------------------------------------------------------------
// Process hooks
// ---------------------------------------------------------------------------------------------

/// Maps the table in each worker (not in the master, nor in the cache helpers).
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    guard(Status::NGX_OK.into(), || {
        // SAFETY: a plain read of nginx's process type, set before any module hook runs.
        let process = unsafe { ngx_process } as u32;
        if process != NGX_PROCESS_WORKER && process != NGX_PROCESS_SINGLE {
            return Status::NGX_OK.into();
        }
        // SAFETY: nginx passes the new cycle.
        let Some(cycle) = (unsafe { cycle.as_ref() }) else {
            return Status::NGX_OK.into();
        };
        let Some(mcf) = Module::main_conf(cycle) else {
            return Status::NGX_OK.into();
        };
        if mcf.used {
            worker::start(mcf.table.as_bytes(), cycle.log);
        }
        if mcf.peer_used {
            health::start();
        }
        Status::NGX_OK.into()
    })
}

unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    guard((), worker::stop)
}

/// Runs `f`, turning a panic into `fallback` so it never unwinds into nginx (the panic message
/// still reaches the error log through stderr).
pub(crate) fn guard<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}
