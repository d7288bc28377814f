//! What the container is asked for: the environment, validated (every value ends up in
//! nginx.conf), with its defaults.

use std::collections::HashMap;

use crate::access::parse_allow;
use crate::etcd::Etcd;
use crate::tls::Tls;

/// What the environment asks for, validated: every value ends up in nginx.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The API is served at `api.$DOMAIN`.
    pub domain: String,
    /// The port nginx listens on (all addresses).
    pub port: u16,
    /// How the routed server proxies: `upstream` (the table is an upstream block's balancer,
    /// with keepalive; IP backends) or `variable` (`proxy_pass http://$backend…`).
    pub mode: String,
    /// `worker_processes`: `auto` or a number.
    pub worker_processes: String,
    /// The `resolver` line's arguments, if any (needed for backends given by name).
    pub resolver: Option<String>,
    /// HTTPS on a second port, when `TLS_CERT` and `TLS_KEY` are given.
    pub tls: Option<Tls>,
    /// `API_ALLOW`: the addresses and blocks that may reach `api.$DOMAIN`; empty = all.
    pub api_allow: Vec<String>,
    /// `API_ALLOW_PLAIN_HTTP=1`: with TLS on, the API still answers over plain HTTP (a private
    /// network). Without TLS the API is on plain HTTP anyway and this changes nothing.
    pub api_plain_http: bool,
    /// Fleet mode, when `ETCD_ENDPOINTS` is set: the writer follows etcd.
    pub etcd: Option<Etcd>,
}

impl Settings {
    pub fn from_env(env: &HashMap<String, String>, resolv_conf: &str) -> Result<Settings, String> {
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
        let tls = Tls::from_env(|k| get(k).map(str::to_string), port)?;
        let api_allow = parse_allow(get("API_ALLOW").unwrap_or(""))?;
        let api_plain_http = match get("API_ALLOW_PLAIN_HTTP") {
            None | Some("0" | "false" | "no") => false,
            Some("1" | "true" | "yes") => true,
            Some(v) => {
                return Err(format!(
                    "API_ALLOW_PLAIN_HTTP={v:?}: expected 1 (the API also over plain HTTP, \
                     for a private network) or 0"
                ))
            }
        };
        let etcd = Etcd::from_env(|k| get(k).map(str::to_string))?;
        Ok(Settings {
            domain,
            port,
            mode,
            worker_processes,
            resolver,
            tls,
            api_allow,
            api_plain_http,
            etcd,
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

/// The settings of this process's environment (and the container's /etc/resolv.conf).
pub fn settings() -> Result<Settings, String> {
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let env: HashMap<String, String> = std::env::vars().collect();
    Settings::from_env(&env, &resolv)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// An environment of these pairs (also for the template's tests).
    pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
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
                tls: None,
                api_allow: vec![],
                api_plain_http: false,
                etcd: None,
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
        let s = Settings::from_env(
            &env(&[
                ("DOMAIN", "example.test"),
                ("TLS_CERT", "/run/secrets/cert.pem"),
                ("TLS_KEY", "/run/secrets/key.pem"),
                ("API_ALLOW", "10.0.0.0/8 192.0.2.7"),
                ("API_ALLOW_PLAIN_HTTP", "1"),
            ]),
            "",
        )
        .unwrap();
        assert_eq!(s.tls.map(|t| t.port), Some(443));
        assert_eq!(s.api_allow, ["10.0.0.0/8", "192.0.2.7"]);
        assert!(s.api_plain_http);

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
            vec![("DOMAIN", "example.com"), ("API_ALLOW", "10.0.0.0/40")],
            vec![("DOMAIN", "example.com"), ("API_ALLOW_PLAIN_HTTP", "maybe")],
            vec![("DOMAIN", "example.com"), ("TLS_CERT", "/c.pem")],
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
}
