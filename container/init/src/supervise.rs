//! Supervision: the two children, the signals this PID 1 takes synchronously, reaping, and
//! the stop (see the crate documentation, "Supervision").

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::settings::Settings;
use crate::template::write_nginx_conf;
use crate::{log, STOP_TIMEOUT};

/// The two children and what became of them.
pub struct Children {
    /// The writer's pid while it runs.
    pub writer: Option<i32>,
    /// The nginx master's pid while it runs (its workers are its own children).
    pub nginx: Option<i32>,
    /// Set when a stop began: the signal that asked for it, or the child that died.
    pub stopping: Option<Instant>,
    /// The exit status to return, once decided (a child that died unexpectedly).
    pub failure: Option<u8>,
    /// Whether every child that stopped did so cleanly (exit status 0).
    pub clean: bool,
}

impl Children {
    fn running(&self) -> bool {
        self.writer.is_some() || self.nginx.is_some()
    }

    /// Asks both children to stop: QUIT to nginx (graceful), TERM to the writer.
    pub fn stop(&mut self) {
        if self.stopping.is_none() {
            self.stopping = Some(Instant::now());
        }
        if let Some(pid) = self.nginx {
            kill(pid, libc::SIGQUIT);
        }
        if let Some(pid) = self.writer {
            kill(pid, libc::SIGTERM);
        }
    }

    /// Records the end of `pid`, one of ours or an orphan.
    fn exited(&mut self, pid: i32, status: i32) {
        let name = if self.nginx == Some(pid) {
            self.nginx = None;
            "nginx"
        } else if self.writer == Some(pid) {
            self.writer = None;
            "the writer"
        } else {
            return; // an orphan reaped, e.g. an nginx worker whose master was killed
        };
        let (how, code) = describe(status);
        if self.stopping.is_some() {
            log(&format!("{name} stopped ({how})"));
            if code != 0 {
                self.clean = false;
            }
        } else {
            log(&format!("{name} exited unexpectedly ({how}); stopping"));
            self.failure = Some(if code == 0 { 1 } else { code });
            self.clean = false;
            self.stop();
        }
    }
}

/// "exit status N" / "killed by signal N", and the matching shell-style exit code.
fn describe(status: i32) -> (String, u8) {
    if libc::WIFEXITED(status) {
        let c = libc::WEXITSTATUS(status);
        (format!("exit status {c}"), c as u8)
    } else if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (format!("killed by signal {s}"), (128 + s).min(255) as u8)
    } else {
        (format!("wait status {status}"), 1)
    }
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a pid that is gone only gives ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The signals this process takes synchronously, blocked from start to end.
pub fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set before sigaddset uses it; the pointers are to a
    // local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGCHLD,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

pub fn block(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is initialized; this process has no other threads yet. Children get an
    // empty mask back from std's spawn before exec.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes `cmd`'s process start with no signal blocked: a blocked mask survives exec, and std's
/// spawn does not reset it, so without this the writer would never see its SIGTERM.
pub fn unblock_in_child(cmd: &mut Command, set: libc::sigset_t) {
    // SAFETY: the closure runs between fork and exec and only calls sigprocmask, which is
    // async-signal-safe, on a copy of `set`.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// Waits up to `timeout` for one of the blocked signals.
pub fn next_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` and `ts` are initialized locals; the siginfo pointer may be null.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// Reaps every child that has exited (ours and orphans).
fn reap(children: &mut Children) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        children.exited(pid, status);
    }
}

/// Handles one signal (or a timeout tick, `None`).
pub fn handle(sig: Option<i32>, children: &mut Children, settings: &Settings) {
    match sig {
        Some(libc::SIGCHLD) | None => reap(children),
        Some(libc::SIGHUP) => {
            if children.stopping.is_none() {
                match write_nginx_conf(settings) {
                    Ok(()) => {
                        log("SIGHUP: configuration rendered again, reloading nginx");
                        if let Some(pid) = children.nginx {
                            kill(pid, libc::SIGHUP);
                        }
                    }
                    Err(e) => log(&format!("SIGHUP: not reloading nginx: {e}")),
                }
            }
        }
        Some(s) => {
            if children.stopping.is_none() {
                log(&format!(
                    "signal {s} received: stopping nginx and the writer"
                ));
            }
            children.stop();
        }
    }
}

/// Runs until both children have stopped: takes the signals, reaps, and kills what is left
/// [`STOP_TIMEOUT`] after a stop began. Returns the exit status of the container.
pub fn supervise(mut children: Children, set: &libc::sigset_t, settings: &Settings) -> u8 {
    let mut killed = false;
    while children.running() {
        let sig = next_signal(set, Duration::from_millis(500));
        handle(sig, &mut children, settings);
        if let Some(t) = children.stopping {
            if !killed && t.elapsed() > STOP_TIMEOUT {
                log(&format!(
                    "still running {}s after the stop: killing what is left",
                    STOP_TIMEOUT.as_secs()
                ));
                for pid in [children.nginx, children.writer].into_iter().flatten() {
                    kill(pid, libc::SIGKILL);
                }
                children.clean = false;
                killed = true;
            }
        }
    }
    match children.failure {
        Some(code) => code,
        None if children.clean => {
            log("stopped");
            0
        }
        None => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses() {
        assert_eq!(describe(0), ("exit status 0".to_string(), 0));
        assert_eq!(describe(3 << 8), ("exit status 3".to_string(), 3));
        assert_eq!(describe(9), ("killed by signal 9".to_string(), 137));
    }
}
