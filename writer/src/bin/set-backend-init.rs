//! `set-backend-init`: the entry point, PID 1, of the release container (`Dockerfile`,
//! `container/`). It has no shell to lean on, so it does the shell script's job itself.
//!
//! ```text
//! set-backend-init           start the writer and nginx and supervise them (the ENTRYPOINT)
//! set-backend-init health    the HEALTHCHECK: the API through nginx, and the table mapped
//! set-backend-init token     print the API token (API_TOKEN, or the one stored in the volume)
//! ```
//!
//! # Start
//!
//! 1. Read the environment: `DOMAIN` (required: the API is `api.$DOMAIN`), `PORT` (80),
//!    `MODE` (`upstream`, the default, or `variable`: see container/route-*.conf),
//!    `WORKER_PROCESSES` (`auto`), `RESOLVER` (default: the nameservers of /etc/resolv.conf,
//!    for backends given by name in variable mode). `API_TOKEN` and `RUST_LOG` go to the
//!    writer as they are.
//! 2. As root, set the ownership the security model needs: the data directory (the volume)
//!    belongs to the writer's user, mode 0755, so the nginx workers can read the table (0644)
//!    but write nothing; the socket directory belongs to the writer with nginx's group, mode
//!    2750 (setgid, so the socket gets that group): only the writer and the nginx workers can
//!    reach the API socket (0660).
//! 3. Render the nginx configuration template into [`NGINX_CONF`].
//! 4. Start `set-backend serve` as the writer's user; wait until it answers on its socket (it
//!    binds the socket first, then rebuilds the table from the store, then serves: nginx's
//!    workers must find the table when they start).
//! 5. Start nginx in the foreground: the master as root (it binds the port), the workers as
//!    the `nginx` user.
//!
//! Logs: both children inherit stdout and stderr; nginx logs errors to stderr and requests to
//! stdout, the writer logs to stderr, this program writes `set-backend-init: …` lines to stderr.
//!
//! # Supervision
//!
//! The signals below are blocked (the children get them unblocked before exec) and taken
//! synchronously with `sigtimedwait`, so no code runs in a signal handler and no signal is lost
//! between two checks (a PID 1 gets no default action for a signal it has no handler for:
//! without this, SIGTERM would do nothing).
//!
//! - SIGTERM, SIGINT, SIGQUIT: stop. nginx gets QUIT (graceful; `worker_shutdown_timeout`
//!   bounds it), the writer TERM (it finishes requests in flight and syncs the table). Whatever
//!   still runs after [`STOP_TIMEOUT`] gets KILL. Exit status 0 if both stopped cleanly.
//! - SIGHUP: render the template again and reload nginx with HUP.
//! - SIGCHLD: reap every child that exited; as PID 1 this process also inherits orphans.
//!   nginx or the writer exiting when no stop was asked for is a failure: the other one is
//!   stopped and the exit status is non-zero (the dead child's status, or 1).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The nginx binary (built with `--with-compat`; the module was built against its tree).
const NGINX: &str = "/usr/sbin/nginx";
/// The writer daemon.
const WRITER: &str = "/usr/bin/set-backend";
/// The configuration template; mount another one here to change the configuration.
const TEMPLATE: &str = "/etc/set-backend/nginx.conf.template";
/// Where the rendered configuration goes (root's directory: the writer cannot touch it).
const NGINX_CONF: &str = "/run/nginx/nginx.conf";
/// The writer's data: store, table and token file. The volume.
const DATA_DIR: &str = "/var/lib/set-backend";
/// The directory of the API socket: the writer's, with nginx's group.
const SOCKET_DIR: &str = "/run/set-backend";
/// The API socket nginx proxies `api.$DOMAIN` to.
const SOCKET: &str = "/run/set-backend/api.sock";
/// The user the writer runs as.
const WRITER_USER: &str = "set-backend";
/// The user (and group) of the nginx workers.
const NGINX_USER: &str = "nginx";
/// The host name the health check asks nginx about (`health.set-backend.invalid` server in the
/// template): it answers with `$set_backend_status`.
const HEALTH_HOST: &str = "health.set-backend.invalid";
/// How long the writer may take to open its store and rebuild the table at start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop may take before what is left is killed (docker stop waits 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(8);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None => run(),
        Some("health") => health(),
        Some("token") => token(),
        Some("-h" | "--help" | "help") => {
            println!(
                "usage: set-backend-init [health | token]\n\n\
                 Without arguments: the container's entry point (PID 1). Starts the set-backend \
                 writer and nginx,\nforwards SIGTERM/SIGINT/SIGHUP, exits non-zero if either \
                 dies. Environment: DOMAIN (required),\nPORT (80), MODE (upstream|variable), \
                 WORKER_PROCESSES (auto), RESOLVER, API_TOKEN, RUST_LOG.\n\n\
                 health  exit 0 if nginx serves the API and has the table mapped\n\
                 token   print the API token"
            );
            Ok(0)
        }
        Some(other) => Err(format!("unknown argument {other:?} (try --help)")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("set-backend-init: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the environment asks for, validated: every value ends up in nginx.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// The API is served at `api.$DOMAIN`.
    domain: String,
    /// The port nginx listens on (all addresses).
    port: u16,
    /// How the routed server proxies: `upstream` (the table is an upstream block's balancer,
    /// with keepalive; IP backends) or `variable` (`proxy_pass http://$backend…`).
    mode: String,
    /// `worker_processes`: `auto` or a number.
    worker_processes: String,
    /// The `resolver` line's arguments, if any (needed for backends given by name).
    resolver: Option<String>,
}

impl Settings {
    fn from_env(env: &HashMap<String, String>, resolv_conf: &str) -> Result<Settings, String> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let domain = get("DOMAIN").ok_or(
            "DOMAIN is not set: the API is served at api.$DOMAIN \
             (docker run -e DOMAIN=example.com …)",
        )?;
        let domain = parse_domain(domain)?;
        let port = match get("PORT") {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("PORT={p:?} is not a port number"))?,
        };
        let mode = match get("MODE") {
            None => "upstream".to_string(),
            Some(m @ ("upstream" | "variable")) => m.to_string(),
            Some(m) => return Err(format!("MODE={m:?}: expected upstream or variable")),
        };
        let worker_processes = match get("WORKER_PROCESSES") {
            None => "auto".to_string(),
            Some("auto") => "auto".to_string(),
            Some(n) => match n.parse::<u16>() {
                Ok(n) if (1..=1024).contains(&n) => n.to_string(),
                _ => return Err(format!("WORKER_PROCESSES={n:?}: expected auto or 1..1024")),
            },
        };
        let resolver = match get("RESOLVER") {
            Some(r) => {
                if r.chars().any(|c| {
                    matches!(c, ';' | '{' | '}' | '#' | '$' | '"' | '\'' | '\\') || c.is_control()
                }) {
                    return Err(format!(
                        "RESOLVER={r:?}: expected addresses and parameters, \
                         like \"127.0.0.11 valid=30s\""
                    ));
                }
                Some(r.to_string())
            }
            None => nameservers(resolv_conf),
        };
        Ok(Settings {
            domain,
            port,
            mode,
            worker_processes,
            resolver,
        })
    }
}

/// `DOMAIN` as nginx will compare it with `Host`: lowercase, no trailing dot, and only what a
/// DNS name may hold (nothing that could change the meaning of the configuration).
fn parse_domain(input: &str) -> Result<String, String> {
    let d = input.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if d.len() > 249 || !d.split('.').all(label_ok) {
        return Err(format!(
            "DOMAIN={input:?} is not a domain name (letters, digits, '-' and '.'; \
             internationalized names as xn-- A-labels)"
        ));
    }
    Ok(d)
}

/// The `nameserver` addresses of resolv.conf as a `resolver` argument (IPv6 in brackets).
fn nameservers(resolv_conf: &str) -> Option<String> {
    let addrs: Vec<String> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map(|ip| match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        })
        .collect();
    (!addrs.is_empty()).then(|| addrs.join(" "))
}

/// Replaces `${NAME}` for each known name; anything else (nginx's own `${var}`) stays.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), value);
    }
    out
}

/// The template's values for these settings.
fn template_vars(s: &Settings) -> Vec<(&'static str, String)> {
    let user = format!("user {NGINX_USER} {NGINX_USER};");
    let resolver = match &s.resolver {
        Some(r) => format!("resolver {r} valid=30s;"),
        None => "# no resolver: backends must be IP addresses (set RESOLVER for names)".to_string(),
    };
    vec![
        ("DOMAIN", s.domain.clone()),
        ("PORT", s.port.to_string()),
        ("MODE", s.mode.clone()),
        ("WORKER_PROCESSES", s.worker_processes.clone()),
        ("USER", user),
        ("RESOLVER", resolver),
        ("HEALTH_HOST", HEALTH_HOST.to_string()),
    ]
}

fn env_map() -> HashMap<String, String> {
    std::env::vars().collect()
}

fn settings() -> Result<Settings, String> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    Settings::from_env(&env_map(), &resolv)
}

/// Renders the template into [`NGINX_CONF`] (written aside, then renamed into place).
fn write_nginx_conf(s: &Settings) -> Result<(), String> {
    let template = std::fs::read_to_string(TEMPLATE).map_err(|e| format!("{TEMPLATE}: {e}"))?;
    let vars = template_vars(s);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let conf = render(&template, &vars);
    let dir = Path::new(NGINX_CONF).parent().unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = format!("{NGINX_CONF}.tmp");
    std::fs::write(&tmp, conf).map_err(|e| format!("{tmp}: {e}"))?;
    std::fs::rename(&tmp, NGINX_CONF).map_err(|e| format!("{NGINX_CONF}: {e}"))
}

/// A user of /etc/passwd (the image has no NSS modules to ask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct User {
    uid: u32,
    gid: u32,
}

fn lookup_user(passwd: &str, name: &str) -> Option<User> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then_some(())?;
        Some(User {
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

fn user(name: &str) -> Result<User, String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    lookup_user(&passwd, name).ok_or_else(|| format!("no user {name:?} in /etc/passwd"))
}

/// Makes `dir` and everything in it belong to `owner` (a volume made by another image, a
/// restored backup), and `dir` itself searchable by the nginx workers.
fn own_data_dir(dir: &Path, owner: User) -> io::Result<()> {
    fn walk(p: &Path, owner: User, fixed: &mut usize) -> io::Result<()> {
        let m = std::fs::symlink_metadata(p)?;
        if m.uid() != owner.uid || m.gid() != owner.gid {
            std::os::unix::fs::lchown(p, Some(owner.uid), Some(owner.gid))?;
            *fixed += 1;
        }
        if m.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), owner, fixed)?;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut fixed = 0;
    walk(dir, owner, &mut fixed)?;
    if fixed > 0 {
        log(&format!(
            "gave {fixed} file(s) of {} to the {WRITER_USER} user",
            dir.display()
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// The socket directory: the writer's, nginx's group, 2750.
fn own_socket_dir(writer: User, nginx_gid: u32) -> io::Result<()> {
    let dir = Path::new(SOCKET_DIR);
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(writer.uid), Some(nginx_gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2750))
}

fn log(msg: &str) {
    eprintln!("set-backend-init: {msg}");
}

/// The two children and what became of them.
struct Children {
    /// The writer's pid while it runs.
    writer: Option<i32>,
    /// The nginx master's pid while it runs (its workers are its own children).
    nginx: Option<i32>,
    /// Set when a stop began: the signal that asked for it, or the child that died.
    stopping: Option<Instant>,
    /// The exit status to return, once decided (a child that died unexpectedly).
    failure: Option<u8>,
    /// Whether every child that stopped did so cleanly (exit status 0).
    clean: bool,
}

impl Children {
    fn running(&self) -> bool {
        self.writer.is_some() || self.nginx.is_some()
    }

    /// Asks both children to stop: QUIT to nginx (graceful), TERM to the writer.
    fn stop(&mut self) {
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

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; a pid that is gone only gives ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The signals this process takes synchronously, blocked from start to end.
fn signal_set() -> libc::sigset_t {
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

fn block(set: &libc::sigset_t) -> io::Result<()> {
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
fn unblock_in_child(cmd: &mut Command, set: libc::sigset_t) {
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
fn next_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
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
fn handle(sig: Option<i32>, children: &mut Children, settings: &Settings) {
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

fn run() -> Result<u8, String> {
    // Before anything else, so a SIGTERM during start is kept for the loop below.
    let set = signal_set();
    block(&set).map_err(|e| format!("sigprocmask: {e}"))?;
    // SAFETY: prctl with an integer argument. Orphans come to us even when a --init runs us.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }

    let settings = settings()?;
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(format!(
            "must start as root (do not use --user): it gives the volume to the {WRITER_USER} \
             user and starts the writer as that user, and nginx's master binds the port and \
             starts its workers as {NGINX_USER}"
        ));
    }
    let writer_user = user(WRITER_USER)?;
    let nginx_user = user(NGINX_USER)?;
    own_data_dir(Path::new(DATA_DIR), writer_user).map_err(|e| format!("{DATA_DIR}: {e}"))?;
    own_socket_dir(writer_user, nginx_user.gid).map_err(|e| format!("{SOCKET_DIR}: {e}"))?;
    write_nginx_conf(&settings)?;

    log(&format!(
        "starting the writer (data in {DATA_DIR}, API on {SOCKET})"
    ));
    let mut writer = Command::new(WRITER);
    writer.args(["serve", "--data-dir", DATA_DIR, "--socket", SOCKET]);
    if settings.mode == "upstream" {
        // Upstream mode connects to addresses only: the API refuses backends given by name.
        writer.args(["--backends", "ip"]);
    }
    writer.env("DOMAIN", &settings.domain);
    if std::env::var("API_TOKEN").is_ok_and(|t| t.trim().is_empty()) {
        // `-e API_TOKEN=` means "no token given": use (or generate) the stored one.
        writer.env_remove("API_TOKEN");
    }
    writer.uid(writer_user.uid).gid(writer_user.gid);
    unblock_in_child(&mut writer, set);
    let writer = writer
        .spawn()
        .map_err(|e| format!("cannot start {WRITER}: {e}"))?;
    let mut children = Children {
        writer: Some(writer.id() as i32),
        nginx: None,
        stopping: None,
        failure: None,
        clean: true,
    };

    // Wait until the writer serves, still answering signals and noticing a writer that dies.
    // Its socket accepts connections before it has built the table; it answers once it has.
    let started = Instant::now();
    while children.stopping.is_none() && !writer_serves() {
        if started.elapsed() > START_TIMEOUT {
            log(&format!(
                "the writer did not answer on {SOCKET} within {}s; stopping",
                START_TIMEOUT.as_secs()
            ));
            children.failure = Some(1);
            children.stop();
            break;
        }
        let sig = next_signal(&set, Duration::from_millis(50));
        handle(sig, &mut children, &settings);
    }

    if children.stopping.is_none() {
        log(&format!(
            "starting nginx on port {} in {} mode (api.{} -> the writer; other hosts -> \
             the table)",
            settings.port, settings.mode, settings.domain
        ));
        let mut nginx = Command::new(NGINX);
        nginx.args(["-c", NGINX_CONF, "-e", "stderr"]);
        unblock_in_child(&mut nginx, set);
        match nginx.spawn() {
            Ok(c) => children.nginx = Some(c.id() as i32),
            Err(e) => {
                log(&format!("cannot start {NGINX}: {e}; stopping"));
                children.failure = Some(1);
                children.stop();
            }
        }
    }

    let mut killed = false;
    while children.running() {
        let sig = next_signal(&set, Duration::from_millis(500));
        handle(sig, &mut children, &settings);
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
        Some(code) => Ok(code),
        None if children.clean => {
            log("stopped");
            Ok(0)
        }
        None => Ok(1),
    }
}

/// Whether the writer answers `GET /healthz` on its socket (any status: 503 only means the
/// table is out of sync with the store, which nginx should not wait for).
fn writer_serves() -> bool {
    let attempt = || -> io::Result<bool> {
        let mut s = UnixStream::connect(SOCKET)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.set_write_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1."))
    };
    attempt().unwrap_or(false)
}

/// One HTTP/1.0 request to nginx on loopback: the status and the body.
fn http_get(port: u16, host: &str, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: set-backend-init health\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.trim().to_string()))
}

/// The HEALTHCHECK: nginx answers `api.$DOMAIN/healthz` with the writer's 200, and a lookup in
/// nginx finds the table mapped (`hit` or `miss`, not `unavailable`).
fn health() -> Result<u8, String> {
    let s = settings()?;
    let api = format!("api.{}", s.domain);
    match http_get(s.port, &api, "/healthz") {
        Ok((200, _)) => {}
        Ok((code, body)) => {
            return Err(format!("unhealthy: {api}/healthz answered {code}: {body}"))
        }
        Err(e) => return Err(format!("unhealthy: nginx on port {}: {e}", s.port)),
    }
    match http_get(s.port, HEALTH_HOST, "/") {
        Ok((200, body)) if body == "hit" || body == "miss" => {
            println!("healthy: the API answers and nginx has the table mapped");
            Ok(0)
        }
        Ok((code, body)) => Err(format!(
            "unhealthy: the nginx workers cannot use the table ({code}: {body})"
        )),
        Err(e) => Err(format!("unhealthy: nginx on port {}: {e}", s.port)),
    }
}

/// Prints the token clients must send: API_TOKEN if set, else the one the writer generated.
fn token() -> Result<u8, String> {
    if let Ok(t) = std::env::var("API_TOKEN") {
        if !t.trim().is_empty() {
            println!("{}", t.trim());
            return Ok(0);
        }
    }
    let path = format!("{DATA_DIR}/token");
    let t = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    println!("{}", t.trim());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_defaults_and_validation() {
        let s = Settings::from_env(&env(&[("DOMAIN", "Example.COM.")]), "").unwrap();
        assert_eq!(
            s,
            Settings {
                domain: "example.com".into(),
                port: 80,
                mode: "upstream".into(),
                worker_processes: "auto".into(),
                resolver: None,
            }
        );
        let s = Settings::from_env(
            &env(&[
                ("DOMAIN", "example.test"),
                ("PORT", "8080"),
                ("WORKER_PROCESSES", "2"),
            ]),
            "",
        )
        .unwrap();
        assert_eq!((s.port, s.worker_processes.as_str()), (8080, "2"));

        for bad in [
            vec![],
            vec![("DOMAIN", "")],
            vec![("DOMAIN", "a b")],
            vec![("DOMAIN", "x;}")],
            vec![("DOMAIN", "example..com")],
            vec![("DOMAIN", "-example.com")],
            vec![("DOMAIN", "example.com"), ("PORT", "0")],
            vec![("DOMAIN", "example.com"), ("PORT", "http")],
            vec![("DOMAIN", "example.com"), ("WORKER_PROCESSES", "0")],
            vec![("DOMAIN", "example.com"), ("MODE", "upstream;")],
            vec![
                ("DOMAIN", "example.com"),
                ("RESOLVER", "1.1.1.1; include /x"),
            ],
        ] {
            assert!(Settings::from_env(&env(&bad), "").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolver_from_resolv_conf_or_env() {
        let conf = "# generated\nsearch example\nnameserver 10.0.0.2\nnameserver fd00::1\n\
                    nameserver fe80::1%eth0\noptions ndots:1\n";
        assert_eq!(nameservers(conf).as_deref(), Some("10.0.0.2 [fd00::1]"));
        assert_eq!(nameservers("search x\n"), None);
        let s = Settings::from_env(
            &env(&[("DOMAIN", "e.test"), ("RESOLVER", "127.0.0.11 ipv6=off")]),
            conf,
        )
        .unwrap();
        assert_eq!(s.resolver.as_deref(), Some("127.0.0.11 ipv6=off"));
    }

    #[test]
    fn render_replaces_known_names_only() {
        let s =
            Settings::from_env(&env(&[("DOMAIN", "example.test"), ("PORT", "81")]), "").unwrap();
        let vars = template_vars(&s);
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = render(
            "${USER}\nlisten ${PORT};\nserver_name api.${DOMAIN};\nreturn 200 \"${host}\";\n",
            &vars,
        );
        assert_eq!(
            out,
            "user nginx nginx;\nlisten 81;\nserver_name api.example.test;\n\
             return 200 \"${host}\";\n"
        );
    }

    #[test]
    fn the_shipped_template_uses_only_known_names() {
        let t = include_str!("../../../container/nginx.conf.template");
        let known = [
            "DOMAIN",
            "PORT",
            "MODE",
            "WORKER_PROCESSES",
            "USER",
            "RESOLVER",
            "HEALTH_HOST",
        ];
        for (i, _) in t.match_indices("${") {
            let name: String = t[i + 2..].chars().take_while(|c| *c != '}').collect();
            if name.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    known.contains(&name.as_str()),
                    "unknown ${{{name}}} in the template"
                );
            }
        }
        for k in known {
            assert!(
                t.contains(&format!("${{{k}}}")),
                "the template does not use ${{{k}}}"
            );
        }
    }

    #[test]
    fn passwd_lookup() {
        let p =
            "root:x:0:0:root:/root:/sbin/nologin\nnginx:x:101:101::/nonexistent:/sbin/nologin\n";
        assert_eq!(lookup_user(p, "nginx"), Some(User { uid: 101, gid: 101 }));
        assert_eq!(lookup_user(p, "ngin"), None);
        assert_eq!(lookup_user("broken\n", "broken"), None);
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(describe(0), ("exit status 0".to_string(), 0));
        assert_eq!(describe(3 << 8), ("exit status 3".to_string(), 3));
        assert_eq!(describe(9), ("killed by signal 9".to_string(), 137));
    }
}
