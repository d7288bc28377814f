//! Fleet mode (`ETCD_ENDPOINTS`): the settings of the writer's etcd client, validated, and the
//! `--etcd…` options made from them.
//!
//! The writer runs as its own user and cannot read secrets mounted for root (docker and
//! compose secrets are root's, mode 0400 or 0600): the password file and the TLS files are read
//! here, as root, before anything starts (so a missing or empty one is a clear error now), and
//! copied into [`ETCD_DIR`], the writer's alone (0700, files 0600).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::users::User;

/// Where the writer's copies of the etcd secrets go.
pub const ETCD_DIR: &str = "/run/set-backend-etcd";

/// The fleet mode's settings, present when `ETCD_ENDPOINTS` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etcd {
    /// The client URLs, `http://host:port` or `https://…`.
    pub endpoints: Vec<String>,
    /// The key prefix (`ETCD_PREFIX`), else the writer's default.
    pub prefix: Option<String>,
    /// `ETCD_USER`, with the password in `ETCD_PASSWORD_FILE`.
    pub user: Option<String>,
    pub password_file: Option<String>,
    /// `ETCD_CA` (turns TLS on), `ETCD_CERT` and `ETCD_KEY` (a client certificate).
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// `ETCD_DIAL_TIMEOUT`, `ETCD_REQUEST_TIMEOUT`: `500ms`, `5s`.
    pub dial_timeout: Option<String>,
    pub request_timeout: Option<String>,
    /// `NODE_NAME`: this node's name in the fleet (the writer's default: host name and socket).
    pub node_name: Option<String>,
}

/// The variables of the fleet mode besides `ETCD_ENDPOINTS`.
const FRIENDS: [&str; 10] = [
    "ETCD_PREFIX",
    "ETCD_USER",
    "ETCD_PASSWORD",
    "ETCD_PASSWORD_FILE",
    "ETCD_CA",
    "ETCD_CERT",
    "ETCD_KEY",
    "ETCD_DIAL_TIMEOUT",
    "ETCD_REQUEST_TIMEOUT",
    "NODE_NAME",
];

impl Etcd {
    /// The fleet settings (`get` returns a trimmed, non-empty value), or `None` without
    /// `ETCD_ENDPOINTS`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Etcd>, String> {
        let Some(list) = get("ETCD_ENDPOINTS") else {
            if let Some(k) = FRIENDS.iter().find(|k| get(k).is_some()) {
                return Err(format!(
                    "{k} is set but ETCD_ENDPOINTS is not: the fleet mode needs etcd's \
                     client URLs (ETCD_ENDPOINTS=http://etcd1:2379,http://etcd2:2379,…)"
                ));
            }
            return Ok(None);
        };
        let endpoints = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(parse_endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(format!("ETCD_ENDPOINTS={list:?}: no URL in it"));
        }
        if get("ETCD_PASSWORD").is_some() && get("ETCD_PASSWORD_FILE").is_some() {
            return Err("ETCD_PASSWORD and ETCD_PASSWORD_FILE are both set: give one".into());
        }
        let user = get("ETCD_USER")
            .map(|u| plain("ETCD_USER", u))
            .transpose()?;
        let password_file = get("ETCD_PASSWORD_FILE");
        if password_file.is_some() && user.is_none() {
            return Err("ETCD_PASSWORD_FILE is set but ETCD_USER is not".into());
        }
        let (cert, key) = (get("ETCD_CERT"), get("ETCD_KEY"));
        if cert.is_some() != key.is_some() {
            return Err(
                "ETCD_CERT and ETCD_KEY go together: a client certificate and its key".into(),
            );
        }
        let prefix = get("ETCD_PREFIX")
            .map(|p| plain("ETCD_PREFIX", p))
            .transpose()?;
        let node_name = get("NODE_NAME")
            .map(|n| plain("NODE_NAME", n))
            .transpose()?;
        let duration = |k: &str| get(k).map(|v| parse_duration(k, v)).transpose();
        Ok(Some(Etcd {
            endpoints,
            prefix,
            user,
            password_file,
            ca: get("ETCD_CA"),
            cert,
            key,
            dial_timeout: duration("ETCD_DIAL_TIMEOUT")?,
            request_timeout: duration("ETCD_REQUEST_TIMEOUT")?,
            node_name,
        }))
    }

    /// Copies the secret files into [`ETCD_DIR`] for `writer` (read here as root: a missing,
    /// empty or unreadable one is an error before anything starts) and returns the writer's
    /// `--etcd…` options.
    pub fn writer_args(&self, writer: User) -> Result<Vec<String>, String> {
        let mut args = vec!["--etcd".to_string(), self.endpoints.join(",")];
        let mut opt = |flag: &str, v: &Option<String>| {
            if let Some(v) = v {
                args.extend([flag.to_string(), v.clone()]);
            }
        };
        opt("--etcd-prefix", &self.prefix);
        opt("--etcd-user", &self.user);
        opt("--etcd-dial-timeout", &self.dial_timeout);
        opt("--etcd-request-timeout", &self.request_timeout);
        opt("--node-name", &self.node_name);
        let secrets = [
            (
                "ETCD_PASSWORD_FILE",
                &self.password_file,
                "password",
                "--etcd-password-file",
            ),
            ("ETCD_CA", &self.ca, "ca.pem", "--etcd-ca"),
            ("ETCD_CERT", &self.cert, "cert.pem", "--etcd-cert"),
            ("ETCD_KEY", &self.key, "key.pem", "--etcd-key"),
        ];
        if secrets.iter().any(|(_, v, _, _)| v.is_some()) {
            private_dir(Path::new(ETCD_DIR), writer).map_err(|e| format!("{ETCD_DIR}: {e}"))?;
        }
        for (var, path, name, flag) in secrets {
            let Some(path) = path else { continue };
            let bytes = std::fs::read(path).map_err(|e| format!("{var}={path}: {e}"))?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Err(format!("{var}={path}: the file is empty"));
            }
            let copy = Path::new(ETCD_DIR).join(name);
            write_private(&copy, &bytes, writer).map_err(|e| format!("{}: {e}", copy.display()))?;
            args.extend([flag.to_string(), copy.display().to_string()]);
        }
        Ok(args)
    }
}

/// One client URL: `http://` or `https://`, a host (name, IPv4, `[IPv6]`) and a port.
fn parse_endpoint(e: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "ETCD_ENDPOINTS: {e:?} is not an etcd client URL (http://host:port or \
             https://host:port, comma-separated)"
        )
    };
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(e.to_string()),
        _ => Err(bad()),
    }
}

/// A value passed on as one argument: printable, no spaces.
fn plain(var: &str, v: String) -> Result<String, String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{var}={v:?}: no spaces or control characters"));
    }
    Ok(v)
}

/// A duration as the writer reads it: a number and `ms` or `s`.
fn parse_duration(var: &str, v: String) -> Result<String, String> {
    let number = v.strip_suffix("ms").or_else(|| v.strip_suffix('s'));
    match number.map(str::parse::<u64>) {
        Some(Ok(n)) if n > 0 => Ok(v),
        _ => Err(format!("{var}={v:?}: expected a duration like 500ms or 5s")),
    }
}

/// `dir`, the writer's alone (0700).
fn private_dir(dir: &Path, owner: User) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path`, 0600, the writer's.
fn write_private(path: &Path, bytes: &[u8], owner: User) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, bytes)?;
    std::os::unix::fs::chown(path, Some(owner.uid), Some(owner.gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn etcd(pairs: &[(&str, &str)]) -> Result<Option<Etcd>, String> {
        let env: HashMap<&str, &str> = pairs.iter().copied().collect();
        Etcd::from_env(|k| env.get(k).map(|v| v.to_string()))
    }

    #[test]
    fn no_endpoints_no_fleet() {
        assert_eq!(etcd(&[]), Ok(None));
        let e = etcd(&[("ETCD_CA", "/ca.pem")]).unwrap_err();
        assert!(e.contains("ETCD_ENDPOINTS is not"), "{e}");
    }

    #[test]
    fn endpoints_and_options_become_the_writer_s_flags() {
        let e = etcd(&[
            (
                "ETCD_ENDPOINTS",
                "http://etcd1:2379, http://10.0.0.2:2379/,https://[fd00::1]:2379",
            ),
            ("ETCD_PREFIX", "/fleet-a/v1/"),
            ("ETCD_USER", "sb"),
            ("ETCD_REQUEST_TIMEOUT", "2s"),
            ("NODE_NAME", "front-1"),
        ])
        .unwrap()
        .unwrap();
        let owner = User { uid: 0, gid: 0 };
        assert_eq!(
            e.writer_args(owner).unwrap(),
            [
                "--etcd",
                "http://etcd1:2379,http://10.0.0.2:2379/,https://[fd00::1]:2379",
                "--etcd-prefix",
                "/fleet-a/v1/",
                "--etcd-user",
                "sb",
                "--etcd-request-timeout",
                "2s",
                "--node-name",
                "front-1"
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_variable_named() {
        for (pairs, says) in [
            (&[("ETCD_ENDPOINTS", "etcd1:2379")][..], "ETCD_ENDPOINTS"),
            (&[("ETCD_ENDPOINTS", "http://etcd1")], "ETCD_ENDPOINTS"),
            (&[("ETCD_ENDPOINTS", "http://e;1:2379")], "ETCD_ENDPOINTS"),
            (&[("ETCD_ENDPOINTS", " , ")], "no URL"),
            (
                &[("ETCD_ENDPOINTS", "http://e:2379"), ("ETCD_CERT", "/c.pem")],
                "ETCD_KEY",
            ),
            (
                &[
                    ("ETCD_ENDPOINTS", "http://e:2379"),
                    ("ETCD_PASSWORD_FILE", "/p"),
                ],
                "ETCD_USER",
            ),
            (
                &[
                    ("ETCD_ENDPOINTS", "http://e:2379"),
                    ("ETCD_DIAL_TIMEOUT", "5"),
                ],
                "ETCD_DIAL_TIMEOUT",
            ),
            (
                &[("ETCD_ENDPOINTS", "http://e:2379"), ("NODE_NAME", "a b")],
                "NODE_NAME",
            ),
        ] {
            let e = etcd(pairs).unwrap_err();
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }
}
