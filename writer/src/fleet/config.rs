//! The fleet mode's settings: the `--etcd…` options of `serve` and the client built from them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// The default key prefix; its `v1` is the layout's version (see `keys`).
pub const DEFAULT_PREFIX: &str = "/set-backend/v1/";

/// The `serve` options of the fleet mode. Without `--etcd` the writer runs on its own.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// Fleet mode: etcd is the source of truth, at these endpoints (comma-separated URLs,
    /// `http://host:2379` or `https://…`). Every write goes into etcd; this writer follows
    /// etcd into its table. Without it, the local store is the source of truth.
    #[arg(
        long = "etcd",
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub endpoints: Vec<String>,
    /// The key prefix in etcd (versioned): several fleets can share one etcd cluster.
    #[arg(long = "etcd-prefix", env = "ETCD_PREFIX", default_value = DEFAULT_PREFIX)]
    pub prefix: String,
    /// etcd user name (with a password from ETCD_PASSWORD, --etcd-password-file or
    /// --etcd-password).
    #[arg(long = "etcd-user", env = "ETCD_USER")]
    pub user: Option<String>,
    /// etcd password. Prefer ETCD_PASSWORD or --etcd-password-file: a command line is
    /// visible to every local user.
    #[arg(long = "etcd-password", env = "ETCD_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A file holding the etcd password (its first line).
    #[arg(long = "etcd-password-file", env = "ETCD_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify etcd's servers: turns TLS on.
    #[arg(long = "etcd-ca", env = "ETCD_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's client-certificate authentication.
    #[arg(long = "etcd-cert", env = "ETCD_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long = "etcd-key", env = "ETCD_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// How long connecting to an endpoint may take: `500ms`, `5s`.
    #[arg(long = "etcd-dial-timeout", env = "ETCD_DIAL_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// How long one etcd request may take; a write whose etcd request times out is answered
    /// 503 `store_unavailable`.
    #[arg(long = "etcd-request-timeout", env = "ETCD_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// This node's name in the fleet's registry (default: the host name and the API's port
    /// or socket).
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// The fleet mode's settings, resolved.
#[derive(Clone)]
pub struct FleetConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// User and password.
    pub user: Option<(String, String)>,
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub identity: Option<(PathBuf, PathBuf)>,
    pub dial_timeout: Duration,
    pub request_timeout: Duration,
    pub node_name: String,
    /// The time to live of the node's lease (registry, replace lock).
    pub lease_ttl: Duration,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("FleetConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|u| &u.0))
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

impl FleetConfig {
    /// A plain-text configuration with the defaults, for `endpoints` and `node_name`.
    pub fn new(endpoints: Vec<String>, node_name: &str) -> FleetConfig {
        FleetConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.into(),
            user: None,
            ca: None,
            identity: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            node_name: node_name.into(),
            lease_ttl: Duration::from_secs(10),
        }
    }

    /// Connects (lazily: no endpoint needs to answer yet, unless a user must log in).
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(5), self.request_timeout)
            .with_require_leader(true);
        if let Some((user, password)) = &self.user {
            opts = opts.with_user(user, password).with_auto_token_refresh(true);
        }
        if self.ca.is_some() || self.identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            opts = opts.with_tls(tls);
        }
        Client::connect(&self.endpoints, Some(opts)).await
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, etcd_client::Error> {
    std::fs::read(path)
        .map_err(|e| etcd_client::Error::InvalidArgs(format!("{}: {e}", path.display())))
}

impl EtcdArgs {
    /// The fleet configuration, or `None` without `--etcd`. `default_node` names the node
    /// when `--node-name` is not given.
    pub fn config(&self, default_node: &str) -> Result<Option<FleetConfig>, String> {
        let endpoints: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(f)) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| format!("--etcd-password-file {}: {e}", f.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => None,
        };
        let user = match (&self.user, password) {
            (Some(u), Some(p)) => Some((u.clone(), p)),
            (Some(_), None) => {
                return Err(
                    "--etcd-user needs a password: ETCD_PASSWORD or --etcd-password-file".into(),
                )
            }
            (None, Some(_)) => return Err("an etcd password without --etcd-user".into()),
            (None, None) => None,
        };
        let node_name = self
            .node_name
            .clone()
            .unwrap_or_else(|| default_node.to_string());
        if node_name.is_empty() || node_name.contains('/') {
            return Err(format!(
                "--node-name {node_name:?}: must be non-empty, without '/'"
            ));
        }
        Ok(Some(FleetConfig {
            endpoints,
            prefix: self.prefix.clone(),
            user,
            ca: self.ca.clone(),
            identity: self.cert.clone().zip(self.key.clone()),
            dial_timeout: self.dial_timeout,
            request_timeout: self.request_timeout,
            node_name,
            lease_ttl: Duration::from_secs(10),
        }))
    }
}

/// `250ms`, `5s`, `2m`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s or 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: the unit must be ms, s or m")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Option<FleetConfig>, String> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            etcd: EtcdArgs,
        }
        let argv = std::iter::once("serve").chain(extra.iter().copied());
        let cli = <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.etcd.config("host:8080")
    }

    #[test]
    fn without_etcd_nothing_changes_and_a_user_needs_a_password() {
        // clap also reads ETCD_* from the environment: these expect none set.
        assert!(args(&["--etcd", ""]).unwrap().is_none());
        let c = args(&["--etcd", "http://a:2379,http://b:2379"])
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoints, ["http://a:2379", "http://b:2379"]);
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.node_name, "host:8080");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let f = file.to_str().unwrap();
        let c = args(&[
            "--etcd",
            "http://a:2379",
            "--etcd-user",
            "u",
            "--etcd-password-file",
            f,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.user, Some(("u".into(), "s3cret".into())));
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let e = args(&["--etcd", "http://a:2379", "--etcd-user", "u"]).unwrap_err();
        assert!(e.contains("password"), "{e}");
        let e = args(&["--etcd", "http://a:2379", "--node-name", "a/b"]).unwrap_err();
        assert!(e.contains("node-name"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
