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
//!    for backends given by name in variable mode), `TLS_CERT`, `TLS_KEY` and `HTTPS_PORT`
//!    (443) for HTTPS (both files are read now, so a missing one is an error here and not in
//!    nginx's log), `API_ALLOW` (who may reach the API) and `API_ALLOW_PLAIN_HTTP` (with TLS,
//!    the API refuses plain HTTP unless this is 1). `API_TOKEN` and `RUST_LOG` go to the
//!    writer as they are (the writer refuses a weak token). Fleet mode: `ETCD_ENDPOINTS`
//!    (etcd's client URLs, comma-separated) and `ETCD_PREFIX`, `ETCD_USER` with
//!    `ETCD_PASSWORD_FILE` (or `ETCD_PASSWORD`), `ETCD_CA`, `ETCD_CERT` and `ETCD_KEY`,
//!    `ETCD_DIAL_TIMEOUT`, `ETCD_REQUEST_TIMEOUT`, `NODE_NAME` become the writer's `--etcd…`
//!    options; the files are read now, as root, and copied for the writer ([`etcd`]).
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
//!
//! # Layout
//!
//! - `main.rs`: the commands, the paths and users of the image, the start sequence.
//! - [`settings`]: the environment, validated; [`tls`] (HTTPS and its policy) and [`access`]
//!   (`API_ALLOW`) are its parts with lines of their own in nginx.conf; [`etcd`] (fleet mode)
//!   is the part that becomes the writer's options.
//! - [`template`]: rendering `nginx.conf.template` (the template's test is beside it).
//! - [`users`]: the users of /etc/passwd and the ownership of the volume and socket directory.
//! - [`supervise`]: the children, the signals, reaping and stopping.
//! - [`health`]: the probes: the writer's socket at start, and the HEALTHCHECK.

mod access;
mod etcd;
mod health;
mod settings;
mod supervise;
mod template;
mod tls;
mod users;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::health::{health, writer_serves};
use crate::settings::settings;
use crate::supervise::{
    block, handle, next_signal, signal_set, supervise, unblock_in_child, Children,
};
use crate::template::write_nginx_conf;
use crate::users::{own_data_dir, own_socket_dir, user};

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
                 WORKER_PROCESSES (auto), RESOLVER, API_TOKEN, RUST_LOG,\nTLS_CERT and \
                 TLS_KEY (HTTPS on HTTPS_PORT, 443), API_ALLOW, API_ALLOW_PLAIN_HTTP.\n\n\
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

/// One `set-backend-init: …` line on stderr (the container log).
fn log(msg: &str) {
    eprintln!("set-backend-init: {msg}");
}

/// The entry point: prepares, starts the writer, then nginx, then supervises both.
fn run() -> Result<u8, String> {
    // Before anything else, so a SIGTERM during start is kept for the loop below.
    let set = signal_set();
    block(&set).map_err(|e| format!("sigprocmask: {e}"))?;
    // SAFETY: prctl with an integer argument. Orphans come to us even when a --init runs us.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }

    let mut settings = settings()?;
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
    if let Some(tls) = settings.tls.as_mut() {
        tls.inspect()?;
    }
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
    if let Some(etcd) = &settings.etcd {
        log(&format!(
            "fleet mode: the writer follows etcd at {}",
            etcd.endpoints.join(",")
        ));
        writer.args(etcd.writer_args(writer_user)?);
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
        let https = match &settings.tls {
            Some(t) => format!(" and {} (HTTPS)", t.port),
            None => String::new(),
        };
        let api = match (&settings.tls, settings.api_plain_http) {
            (Some(_), false) => " over HTTPS only",
            _ => "",
        };
        let allow = match settings.api_allow.as_slice() {
            [] => String::new(),
            list => format!(", from {} only", list.join(" ")),
        };
        log(&format!(
            "starting nginx on port {}{https} in {} mode (api.{}{api}{allow} -> the writer; \
             other hosts -> the table)",
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

    Ok(supervise(children, &set, &settings))
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
