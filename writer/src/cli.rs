//! The command line: `serve` runs the daemon; the other commands are for operators and talk
//! to a running daemon over its socket (with the token file), or read a table file directly.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::Method;

use crate::client::{encode_host, Connection, Endpoint, Response};
use crate::model::{BatchRequest, Entry};

/// The default data directory: the store, the table and the token file live here.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/set-backend";
/// The default API socket.
pub const DEFAULT_SOCKET: &str = "/run/set-backend/api.sock";

/// set-backend: Host → backend routing for nginx, changed at runtime through a REST API.
///
/// `serve` runs the writer daemon. The other commands manage a running daemon through its
/// unix socket, authenticating with its token file (or API_TOKEN), or check a table file.
#[derive(Debug, Parser)]
#[command(name = "set-backend", version, propagate_version = true)]
pub struct Cli {
    /// What to do: run the daemon, or one operator command.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the writer daemon: serve the API, store entries durably, publish the table.
    Serve(Box<ServeArgs>),
    /// Print every entry, one `host backend` per line.
    List(ClientArgs),
    /// Print one entry's backend (exit status 1 if absent).
    Get {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The host, as typed (it is normalized like the API does).
        host: String,
    },
    /// Create or update an entry.
    Add {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The host, e.g. `some.host.com`.
        host: String,
        /// The backend: `host:port`, `a.b.c.d:port` or `[v6]:port`; or a backend set in nginx's
        /// `server` syntax: `10.0.0.1:80 weight=3 10.0.0.2:80 10.0.0.3:80 backup`.
        #[arg(required = true, num_args = 1..)]
        backend: Vec<String>,
    },
    /// Delete an entry (exit status 1 if absent).
    Rm {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The host to delete.
        host: String,
    },
    /// Import a JSON array of {"host", "backend"} (as `export` writes) in one atomic batch.
    Import {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The file to read; `-` for standard input.
        file: PathBuf,
        /// Replace every entry with the file's content instead of adding to them.
        #[arg(long)]
        replace: bool,
    },
    /// Write every entry as a JSON array of {"host", "backend"}.
    Export {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The file to write; standard output if omitted.
        file: Option<PathBuf>,
    },
    /// Open a table file, check every slot and record, and print its statistics.
    Check {
        /// The table file.
        #[arg(default_value = shm_layout::DEFAULT_TABLE_PATH)]
        path: PathBuf,
    },
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for the store, the table and the token file (created if missing).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// The table file nginx maps (default: DATA_DIR/table). Mode 0644.
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// The redb store, the source of truth (default: DATA_DIR/store.redb). Mode 0600.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// The unix socket to serve the API on (parent directories are created). Default
    /// /run/set-backend/api.sock, unless --listen is given: then only TCP is served, unless
    /// --socket is given too.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Also (or, without --socket, only) serve the API over TCP at ADDR:PORT. Must be a
    /// loopback address unless --allow-remote.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Allow --listen on a non-loopback address (the API then travels unencrypted).
    #[arg(long)]
    pub allow_remote: bool,
    /// The file holding the API token (default: DATA_DIR/token). Generated (mode 0600) if
    /// missing. The API_TOKEN environment variable, when set, is used instead.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Permission bits of the socket, in octal: nginx's group connects, nobody else.
    #[arg(long, default_value = "660", value_parser = parse_octal)]
    pub socket_mode: u32,
    /// Group of the socket (a name or a gid), typically nginx's (`www-data`).
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Log format on standard error. The level comes from RUST_LOG (default `info`).
    #[arg(long, value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Which backends the API accepts: `any` (host:port, a.b.c.d:port, [v6]:port) or `ip`
    /// (IP literals only). Use `ip` when nginx routes in upstream mode (`set_backend_peer`),
    /// which connects to addresses and does not resolve names.
    #[arg(long, value_enum, default_value = "any")]
    pub backends: BackendKinds,
    /// Largest body of a batch (PATCH) or replace-all (PUT), in bytes.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    pub max_batch_bytes: usize,
    /// The store's page cache, in MiB: what the store keeps of its file in memory. The rest
    /// is read from the page cache of the file system.
    #[arg(long, default_value_t = 64)]
    pub store_cache_mib: usize,
    /// The domain the API is served under (`api.$DOMAIN`), shown in the docs' examples.
    #[arg(long, env = "DOMAIN")]
    pub domain: Option<String>,
    /// Fleet mode (etcd).
    #[command(flatten)]
    pub etcd: crate::fleet::EtcdArgs,
}

/// The `--backends` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKinds {
    /// Host names and IP literals.
    Any,
    /// IP literals only.
    Ip,
}

impl ServeArgs {
    pub fn table_path(&self) -> PathBuf {
        self.table
            .clone()
            .unwrap_or_else(|| self.data_dir.join("table"))
    }
    pub fn store_path(&self) -> PathBuf {
        self.store
            .clone()
            .unwrap_or_else(|| self.data_dir.join("store.redb"))
    }
    pub fn token_path(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("token"))
    }
    /// The node's default name in a fleet: the host name and the API's port (or socket).
    pub fn default_node_name(&self) -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        match (self.listen, self.socket_path()) {
            (Some(a), _) => format!("{host}:{}", a.port()),
            (None, Some(p)) => format!("{host}:{}", p.display()).replace('/', "_"),
            (None, None) => host,
        }
    }

    /// The socket to serve, following the rule in `--socket`'s help.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match (&self.socket, self.listen) {
            (Some(s), _) => Some(s.clone()),
            (None, None) => Some(PathBuf::from(DEFAULT_SOCKET)),
            (None, Some(_)) => None,
        }
    }
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 660"))
}

/// How the operator commands reach the daemon.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The daemon's unix socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Reach the daemon over TCP instead of the socket.
    #[arg(long, value_name = "ADDR:PORT")]
    pub connect: Option<SocketAddr>,
    /// The token file (API_TOKEN, when set, is used instead).
    #[arg(long, default_value = "/var/lib/set-backend/token")]
    pub token_file: PathBuf,
}

impl ClientArgs {
    async fn connect(&self) -> io::Result<Connection> {
        let token = match std::env::var("API_TOKEN") {
            Ok(t) => t.trim().to_string(),
            Err(_) => std::fs::read_to_string(&self.token_file)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("{}: {e}", self.token_file.display()))
                })?
                .trim()
                .to_string(),
        };
        let endpoint = match self.connect {
            Some(a) => Endpoint::Tcp(a),
            None => Endpoint::Unix(self.socket.clone()),
        };
        Connection::connect(&endpoint, Some(token)).await
    }
}

/// The entry an answer carries (without fleet mode's `revision`).
fn answered_entry(r: &Response) -> io::Result<Entry> {
    let mut v = r.json();
    if let Some(o) = v.as_object_mut() {
        o.remove("revision");
    }
    serde_json::from_value(v).map_err(io::Error::other)
}

/// Runs an operator command (anything but `serve`); returns the process exit status.
pub async fn run_command(cmd: Command) -> io::Result<i32> {
    match cmd {
        Command::Serve(_) => Err(io::Error::other("serve is run by main")),
        Command::List(c) => {
            let r = ok(c
                .connect()
                .await?
                .request(Method::GET, "/entries.json", None)
                .await?)?;
            let entries: Vec<Entry> = serde_json::from_slice(&r.body).map_err(io::Error::other)?;
            let mut out = io::stdout().lock();
            for e in entries {
                writeln!(out, "{} {}", e.host, e.route_text())?;
            }
            Ok(0)
        }
        Command::Get { client, host } => {
            let path = format!("/entries/{}.json", encode_host(&host));
            let r = client
                .connect()
                .await?
                .request(Method::GET, &path, None)
                .await?;
            if r.status == 404 {
                eprintln!("{}", message(&r));
                return Ok(1);
            }
            let r = ok(r)?;
            println!("{}", answered_entry(&r)?.route_text());
            Ok(0)
        }
        Command::Add {
            client,
            host,
            backend,
        } => {
            let entry = Entry::from_words(host, &backend).map_err(io::Error::other)?;
            let body = serde_json::to_vec(&entry).map_err(io::Error::other)?;
            let r = ok(client
                .connect()
                .await?
                .request(Method::POST, "/entries.json", Some(body))
                .await?)?;
            let e = answered_entry(&r)?;
            let what = if r.status == 201 {
                "created"
            } else {
                "updated"
            };
            println!("{what} {} {}", e.host, e.route_text());
            Ok(0)
        }
        Command::Rm { client, host } => {
            let path = format!("/entries/{}.json", encode_host(&host));
            let r = client
                .connect()
                .await?
                .request(Method::DELETE, &path, None)
                .await?;
            if r.status == 404 {
                eprintln!("{}", message(&r));
                return Ok(1);
            }
            ok(r)?;
            Ok(0)
        }
        Command::Import {
            client,
            file,
            replace,
        } => {
            let data = read_input(&file)?;
            let entries: Vec<Entry> = serde_json::from_slice(&data).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", file.display()),
                )
            })?;
            let n = entries.len();
            let (method, body) = if replace {
                (Method::PUT, serde_json::to_vec(&entries))
            } else {
                (
                    Method::PATCH,
                    serde_json::to_vec(&BatchRequest {
                        upsert: entries,
                        delete: vec![],
                    }),
                )
            };
            let body = body.map_err(io::Error::other)?;
            let r = ok(client
                .connect()
                .await?
                .request(method, "/entries.json", Some(body))
                .await?)?;
            println!("imported {n} entries: {}", r.text());
            Ok(0)
        }
        Command::Export { client, file } => {
            let r = ok(client
                .connect()
                .await?
                .request(Method::GET, "/entries.json", None)
                .await?)?;
            match file {
                Some(p) => std::fs::write(&p, &r.body)?,
                None => io::stdout().lock().write_all(&r.body)?,
            }
            Ok(0)
        }
        Command::Check { path } => check(&path),
    }
}

fn read_input(file: &Path) -> io::Result<Vec<u8>> {
    if file == Path::new("-") {
        let mut v = Vec::new();
        io::stdin().read_to_end(&mut v)?;
        Ok(v)
    } else {
        std::fs::read(file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))
    }
}

fn message(r: &Response) -> String {
    r.json()["error"]["message"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| r.text())
}

/// Turns a non-2xx answer into an error carrying the API's message.
fn ok(r: Response) -> io::Result<Response> {
    if (200..300).contains(&r.status) {
        Ok(r)
    } else {
        Err(io::Error::other(format!(
            "the daemon answered {}: {}",
            r.status,
            message(&r)
        )))
    }
}

/// `check PATH`: open, verify, print statistics. Exit status 1 if the file is invalid.
fn check(path: &Path) -> io::Result<i32> {
    let table = match shm_layout::Table::open(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot open: {e}", path.display());
            return Ok(1);
        }
    };
    match table.verify() {
        Ok(s) => {
            let load = if s.capacity == 0 {
                0.0
            } else {
                (s.entries + s.tombstones) as f64 / s.capacity as f64
            };
            println!("{}: ok", path.display());
            println!("generation   {}", s.generation);
            println!("entries      {}", s.entries);
            println!("tombstones   {}", s.tombstones);
            println!("capacity     {} slots (load {:.3})", s.capacity, load);
            println!(
                "arena        {} of {} bytes used",
                s.arena_used, s.arena_len
            );
            println!("file         {} bytes", s.file_len);
            println!("superseded   {}", table.is_superseded());
            println!("heartbeat    {} ms since the epoch", table.heartbeat_ms());
            Ok(0)
        }
        Err(e) => {
            eprintln!("{}: invalid: {e:?}", path.display());
            Ok(1)
        }
    }
}
