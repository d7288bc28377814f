//! The per-worker table handle.
//!
//! Each worker maps the table read-only in `init_process` and answers every lookup from that
//! mapping: no syscall and no lock per request. Three things make it change:
//!
//! - the writer publishes a new generation (growth, compaction) and sets `superseded` in the old
//!   header: the next lookup sees it (one relaxed load) and maps the path again, once;
//! - the table was missing or invalid: a timer retries every [`RETRY`] until it maps;
//! - the writer died between the rename and setting `superseded`: the same timer compares the
//!   path's `(dev, inode)` with the mapped file's every [`CHECK`].
//!
//! A failure is logged once at `error` level when it starts, and a recovery once at `notice`.
//! While a mapping exists it keeps serving, even if a newer one cannot be opened.
//!
//! Workers are single-threaded, so the state lives in a thread-local `RefCell`; a handler that
//! finds it borrowed (it never should) answers "unavailable" instead of panicking.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use ngx::ffi::{
    ngx_add_timer, ngx_cycle, ngx_del_timer, ngx_event_t, ngx_exiting, ngx_log_t, ngx_msec_t,
    ngx_quit, ngx_terminate, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use shm_layout::{Status, Table, Value};

/// How often a worker without a usable table tries to map it.
const RETRY: ngx_msec_t = 1000;
/// How often a worker with a table checks that the path still names the mapped file.
const CHECK: ngx_msec_t = 5000;

/// The answer of a lookup, as the module acts on it.
pub enum Found {
    /// The entry, copied into the caller's `Value`.
    Hit,
    Miss,
    /// No table is mapped, or the lookup could not complete (`Busy`, `Corrupt`).
    Unavailable,
}

/// One worker's view of the table.
struct Worker {
    /// The table file (`set_backend_table`).
    path: PathBuf,
    /// The current mapping, if any.
    table: Option<Table>,
    /// The last attempt to map the path failed; set to log a failure only when it starts,
    /// and to leave retries to the timer instead of every request.
    failing: bool,
    /// A damaged record was reported for the current mapping (logged once per mapping).
    corrupt_logged: bool,
    /// The retry/check timer. Boxed: nginx keeps its address in the timer tree.
    timer: Box<ngx_event_t>,
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Maps the table at `path` (once, logging a failure) and starts the timer.
pub fn start(path: &[u8], log: *mut ngx_log_t) {
    let path = PathBuf::from(OsStr::from_bytes(path));
    // SAFETY: an all-zero `ngx_event_t` is the initial state nginx itself gives events
    // (`ngx_pcalloc`); the fields the timer needs are set just below.
    let mut timer: Box<ngx_event_t> = Box::new(unsafe { std::mem::zeroed() });
    timer.handler = Some(on_timer);
    timer.log = log;
    timer.set_cancelable(1);
    let mut w = Worker {
        path,
        table: None,
        failing: false,
        corrupt_logged: false,
        timer,
    };
    w.map();
    w.arm();
    let _ = WORKER.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some(mut old) = slot.take() {
                old.disarm();
            }
            *slot = Some(w);
        }
    });
}

/// Unmaps the table and stops the timer (`exit_process`).
pub fn stop() {
    let _ = WORKER.try_with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some(mut w) = slot.take() {
                w.disarm();
            }
        }
    });
}

/// Looks up a host in canonical form (nginx's `$host`), copying a hit into `out`. No
/// syscalls, except the few that map a new generation, once per generation.
pub fn lookup(host: &[u8], out: &mut Value) -> Found {
    WORKER
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => slot.as_mut().map(|w| w.lookup(host, out)),
            Err(_) => None,
        })
        .ok()
        .flatten()
        .unwrap_or(Found::Unavailable)
}

impl Worker {
    fn lookup(&mut self, host: &[u8], out: &mut Value) -> Found {
        if !self.failing && self.table.as_ref().is_some_and(Table::is_superseded) {
            self.map();
        }
        let Some(table) = &self.table else {
            return Found::Unavailable;
        };
        match table.lookup_into(host, out) {
            Status::Hit => Found::Hit,
            Status::Miss => Found::Miss,
            Status::Busy => Found::Unavailable,
            Status::Corrupt => {
                if !self.corrupt_logged {
                    self.corrupt_logged = true;
                    log(
                        NGX_LOG_ERR,
                        format_args!(
                            "set_backend: table \"{}\" has a damaged record (generation {})",
                            self.path.display(),
                            table.generation()
                        ),
                    );
                }
                Found::Unavailable
            }
        }
    }

    /// Maps the path (again). On failure keeps the current mapping, if any.
    fn map(&mut self) {
        match Table::open(&self.path) {
            Ok(table) => {
                if self.failing || self.table.is_none() {
                    log(
                        NGX_LOG_NOTICE,
                        format_args!(
                            "set_backend: mapped table \"{}\" (generation {})",
                            self.path.display(),
                            table.generation()
                        ),
                    );
                }
                self.table = Some(table);
                self.failing = false;
                self.corrupt_logged = false;
            }
            Err(e) => {
                if !self.failing {
                    let what = if self.table.is_some() {
                        "keeping the current mapping"
                    } else {
                        "answering as set_backend_unavailable says"
                    };
                    log(
                        NGX_LOG_ERR,
                        format_args!(
                        "set_backend: cannot map table \"{}\": {e}; {what} and retrying every {}s",
                        self.path.display(),
                        RETRY / 1000
                    ),
                    );
                }
                self.failing = true;
            }
        }
    }

    /// The timer's work: retry a failed mapping, or check that the path still names the
    /// mapped file.
    fn tick(&mut self) {
        let stale = match &self.table {
            None => true,
            Some(_) if self.failing => true,
            Some(t) => {
                t.is_superseded()
                    || std::fs::metadata(&self.path)
                        .is_ok_and(|m| (m.dev(), m.ino()) != t.file_id())
            }
        };
        if stale {
            self.map();
        }
    }

    /// How long until the next tick: soon while there is no usable table.
    fn interval(&self) -> ngx_msec_t {
        if self.table.is_none() || self.failing {
            RETRY
        } else {
            CHECK
        }
    }

    fn arm(&mut self) {
        let every = self.interval();
        // SAFETY: the timer is boxed, so its address is stable until `disarm` removes it;
        // workers are single-threaded.
        unsafe { ngx_add_timer(&mut *self.timer, every) };
    }

    fn disarm(&mut self) {
        if self.timer.timer_set() != 0 {
            // SAFETY: the timer is in nginx's timer tree (`timer_set`).
            unsafe { ngx_del_timer(&mut *self.timer) };
        }
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    crate::guard((), || {
        // SAFETY: plain reads of nginx's process flags, written by its signal handlers.
        let leaving = unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 };
        // The state is never borrowed when a timer fires (workers are single-threaded), but if
        // it were, the timer must not die with it: it re-arms from `ev`, at the retry pace.
        let every = WORKER
            .try_with(|cell| {
                let mut slot = cell.try_borrow_mut().ok()?;
                let w = slot.as_mut()?;
                w.tick();
                Some(w.interval())
            })
            .ok()
            .flatten()
            .unwrap_or(RETRY);
        if !leaving && !ev.is_null() {
            // SAFETY: `ev` is the worker's boxed timer, which nginx just took out of its timer
            // tree to call this handler; it lives until `stop` (which disarms it first).
            unsafe { ngx_add_timer(ev, every) };
        }
    })
}

/// Logs to the current cycle's log.
fn log(level: u32, args: std::fmt::Arguments<'_>) {
    // SAFETY: `ngx_cycle` is set before any module hook runs and stays valid in a worker.
    let log = unsafe { ngx_cycle.as_ref().map(|c| c.log) }.unwrap_or(std::ptr::null_mut());
    if log.is_null() {
        return;
    }
    ngx_log_error!(level, log, "{}", args);
}
