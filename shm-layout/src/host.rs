//! Host normalization and backend validation, shared by the writer and the module.
//!
//! nginx normalizes the request host before a module sees it (`r->headers_in.server`):
//! lowercase, port stripped, one trailing dot stripped. The table stores keys in that same
//! form, so a lookup is a plain byte comparison. Internationalized names are stored as
//! A-labels (`bücher.example` → `xn--bcher-kva.example`), which is what browsers send.
//!
//! A key may also be a pattern, with nginx's `server_name` meaning: `*.example.com` (any name
//! ending in `.example.com`, at any depth) or `*`, the default entry. `*` is allowed only as a
//! whole first label or alone. nginx's shorthand `.example.com` names two keys, `example.com` and
//! `*.example.com` ([`Host::parse_keys`]).
//!
//! A backend is what `proxy_pass http://$backend$request_uri` will see, so anything that could
//! change the meaning of that URL (a scheme, a path, userinfo, whitespace, `?`, `#`, …) is
//! rejected. Three shapes are accepted: `name:port`, `a.b.c.d:port` and `[v6]:port`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest host name accepted (RFC 1035: 253 characters in text form).
pub const MAX_HOST_LEN: usize = 253;

/// The longest backend accepted: a maximal host name, a colon and a five-digit port.
pub const MAX_BACKEND_LEN: usize = MAX_HOST_LEN + 1 + 5;

/// A table key in canonical form: a host name (lowercase ASCII, A-labels, no port, no trailing
/// dot), a wildcard `*.` + such a name, or the default entry `*`. Only [`Host::parse`] (and
/// [`Host::parse_keys`]) make one, so holding a `Host` means it is valid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);

/// Why a host was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    Empty,
    TooLong {
        len: usize,
    },
    /// A label is empty (`a..b`) or longer than 63 bytes.
    BadLabel,
    /// A character that cannot appear in a host name.
    BadChar(char),
    /// A port after the name was not a valid port number.
    BadPort,
    /// The IDNA conversion of an internationalized name failed.
    Idna,
    /// An IP literal: routing is by name, nginx never sees these as `$host` keys worth storing.
    IpLiteral,
    /// A `*` anywhere but as a whole first label (`*.example.com`) or alone (`*`).
    BadWildcard,
    /// nginx's `.example.com`, which names two keys: only [`Host::parse_keys`] takes it.
    Shorthand,
}

/// What kind of key a [`Host`] is, in the order a lookup tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A host name, matched exactly.
    Exact,
    /// `*.example.com`: any name ending in `.example.com`.
    Wildcard,
    /// `*`: every host that matches nothing else.
    Default,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => f.write_str("host is empty"),
            HostError::TooLong { len } => {
                write!(f, "host is {len} bytes long, the limit is {MAX_HOST_LEN}")
            }
            HostError::BadLabel => {
                f.write_str("host has an empty label or a label longer than 63 bytes")
            }
            HostError::BadChar(c) => write!(f, "host contains an invalid character {c:?}"),
            HostError::BadPort => f.write_str("host has an invalid port"),
            HostError::Idna => f.write_str("host is not a valid internationalized domain name"),
            HostError::IpLiteral => f.write_str("host is an IP address, not a name"),
            HostError::BadWildcard => f.write_str(
                "host has a \"*\" that is not a whole first label: accepted are a name \
                 (example.com), a wildcard (*.example.com), .example.com (both) and * (the default)",
            ),
            HostError::Shorthand => f.write_str(
                "host .example.com names two entries (example.com and *.example.com): \
                 name one of them",
            ),
        }
    }
}

impl std::error::Error for HostError {}

impl Host {
    /// Normalizes what a user typed into the canonical key: `Example.COM.` → `example.com`,
    /// `example.com:8080` → `example.com`, `bücher.example` → `xn--bcher-kva.example`,
    /// `*.Bücher.example` → `*.xn--bcher-kva.example`, `*` → `*`. The shorthand `.example.com`
    /// is refused ([`HostError::Shorthand`]): it names two keys, see [`Host::parse_keys`].
    pub fn parse(input: &str) -> Result<Host, HostError> {
        if input == "*" {
            return Ok(Host(input.to_owned()));
        }
        if let Some(name) = input.strip_prefix("*.") {
            if name.contains('*') {
                return Err(HostError::BadWildcard);
            }
            let name = Self::parse_name(name)?;
            let len = name.0.len() + 2;
            if len > MAX_HOST_LEN {
                return Err(HostError::TooLong { len });
            }
            return Ok(Host(format!("*.{}", name.0)));
        }
        if input.contains('*') {
            return Err(HostError::BadWildcard);
        }
        if input.len() > 1 && input.starts_with('.') && !input[1..].starts_with('.') {
            return Err(HostError::Shorthand);
        }
        Self::parse_name(input)
    }

    /// The keys an entry's host names: [`Host::parse`]'s one, or for nginx's shorthand
    /// `.example.com` the two it stands for, `example.com` and `*.example.com` (in that order).
    pub fn parse_keys(input: &str) -> Result<Vec<Host>, HostError> {
        match input.strip_prefix('.') {
            Some(name) if !name.is_empty() && !name.starts_with('.') => {
                let exact = Self::parse(name)?;
                if exact.kind() != KeyKind::Exact {
                    return Err(HostError::BadWildcard);
                }
                let wildcard = Self::parse(&format!("*.{name}"))?;
                Ok(vec![exact, wildcard])
            }
            _ => Ok(vec![Self::parse(input)?]),
        }
    }

    /// Which kind of key this is.
    pub fn kind(&self) -> KeyKind {
        match self.0.as_bytes() {
            b"*" => KeyKind::Default,
            [b'*', ..] => KeyKind::Wildcard,
            _ => KeyKind::Exact,
        }
    }

    /// A host name (no pattern) in canonical form.
    fn parse_name(input: &str) -> Result<Host, HostError> {
        if input.is_empty() {
            return Err(HostError::Empty);
        }
        if input.len() > 4 * MAX_HOST_LEN {
            return Err(HostError::TooLong { len: input.len() });
        }
        if input.starts_with('[') {
            return Err(HostError::IpLiteral);
        }
        // Strip a port, as nginx does for the Host header.
        let name = match input.rsplit_once(':') {
            Some((name, port)) => {
                if port.is_empty()
                    || port.len() > 5
                    || !port.bytes().all(|b| b.is_ascii_digit())
                    || port.parse::<u16>().is_err()
                {
                    return Err(HostError::BadPort);
                }
                name
            }
            None => input,
        };
        // One trailing dot is the root label; nginx strips exactly one.
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        let ascii = if name.is_ascii() {
            name.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(name).map_err(|_| HostError::Idna)?
        };
        check_name(&ascii)?;
        if ascii.parse::<Ipv4Addr>().is_ok() {
            return Err(HostError::IpLiteral);
        }
        // An A-label must decode: `xn--` labels that are not valid punycode are refused so
        // that the stored key is what a browser would send for some real name.
        if ascii.split('.').any(|l| l.starts_with("xn--"))
            && idna::domain_to_unicode(&ascii).1.is_err()
        {
            return Err(HostError::Idna);
        }
        Ok(Host(ascii))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's bytes in the table ([`table_key`]).
    pub fn table_key(&self) -> &[u8] {
        table_key(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// The bytes a canonical key is stored under in the table: a wildcard `*.example.com` without
/// its `*` (`.example.com`, a slice of every host it covers, so the pattern walk probes the
/// host's own bytes), anything else as it is. No host starts with a dot, so the two never meet.
pub fn table_key(key: &str) -> &[u8] {
    match key.as_bytes() {
        [b'*', rest @ ..] if !rest.is_empty() => rest,
        k => k,
    }
}

/// The canonical key of the table bytes `key`: [`table_key`] undone.
pub(crate) fn key_of_table(key: String) -> String {
    if key.starts_with('.') {
        format!("*{key}")
    } else {
        key
    }
}

/// Whether the table key bytes `key` are a pattern (`.…`, stored for `*.…`, or `*`): what the
/// writer counts in the header's `patterns` word.
pub(crate) fn is_pattern(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'.' | b'*'))
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Host {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Checks a lowercase ASCII name: LDH labels of 1..=63 bytes (underscores allowed, as in
/// real-world service names), at most 253 bytes in all.
fn check_name(name: &str) -> Result<(), HostError> {
    if name.is_empty() {
        return Err(HostError::Empty);
    }
    if name.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong { len: name.len() });
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(HostError::BadLabel);
        }
        for c in label.chars() {
            if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
                return Err(HostError::BadChar(c));
            }
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(HostError::BadChar('-'));
        }
    }
    Ok(())
}

/// A validated backend, `name:port`, `a.b.c.d:port` or `[v6]:port`, with its address parsed
/// when it is an IP literal (upstream mode connects to it without a resolver).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    text: String,
    addr: Option<SocketAddr>,
}

/// Why a backend was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    Empty,
    TooLong {
        len: usize,
    },
    /// `http://…`, `user@…`, a path, a query, whitespace, control characters: anything that
    /// would change the meaning of `proxy_pass http://$backend$request_uri`.
    Forbidden(char),
    MissingPort,
    BadPort,
    BadHost(HostError),
    BadIpv6,
    /// The name `unix`: nginx reads `http://unix:…` as a unix-domain socket path, so
    /// `unix:80` would send requests to the socket file `80<request_uri>`.
    UnixSocket,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Empty => f.write_str("backend is empty"),
            BackendError::TooLong { len } => {
                write!(
                    f,
                    "backend is {len} bytes long, the limit is {MAX_BACKEND_LEN}"
                )
            }
            BackendError::Forbidden(c) => write!(
                f,
                "backend contains {c:?}; it must be host:port, a.b.c.d:port or [v6]:port \
                 (no scheme, path, userinfo or whitespace)"
            ),
            BackendError::MissingPort => f.write_str("backend has no port; use host:port"),
            BackendError::BadPort => f.write_str("backend port must be a number from 1 to 65535"),
            BackendError::BadHost(e) => write!(f, "backend {e}"),
            BackendError::BadIpv6 => f.write_str("backend has an invalid IPv6 address"),
            BackendError::UnixSocket => f.write_str(
                "backend host \"unix\" is refused: nginx would read unix:… as a unix socket path",
            ),
        }
    }
}

impl std::error::Error for BackendError {}

impl Backend {
    /// Validates a backend as typed by a user. Host names are lowercased; IP literals are
    /// stored in their canonical text form (`[::1]:80`, not `[0:0::1]:80`).
    pub fn parse(input: &str) -> Result<Backend, BackendError> {
        if input.is_empty() {
            return Err(BackendError::Empty);
        }
        if input.len() > MAX_BACKEND_LEN {
            return Err(BackendError::TooLong { len: input.len() });
        }
        if let Some(c) = input.chars().find(|&c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']'))
        }) {
            return Err(BackendError::Forbidden(c));
        }
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or(BackendError::BadIpv6)?;
            let port = after.strip_prefix(':').ok_or(BackendError::MissingPort)?;
            let ip: Ipv6Addr = v6.parse().map_err(|_| BackendError::BadIpv6)?;
            (HostPart::Ip(IpAddr::V6(ip)), port)
        } else {
            if input.contains('[') || input.contains(']') {
                return Err(BackendError::BadIpv6);
            }
            let (name, port) = input.rsplit_once(':').ok_or(BackendError::MissingPort)?;
            if name.contains(':') {
                return Err(BackendError::BadIpv6);
            }
            match name.parse::<Ipv4Addr>() {
                Ok(ip) => (HostPart::Ip(IpAddr::V4(ip)), port),
                Err(_) => {
                    let lower = name.to_ascii_lowercase();
                    if lower.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                        // Looks numeric but is not a valid IPv4 address (e.g. 999.1.1.1).
                        return Err(BackendError::BadHost(HostError::BadLabel));
                    }
                    check_name(&lower).map_err(BackendError::BadHost)?;
                    if lower == "unix" {
                        return Err(BackendError::UnixSocket);
                    }
                    (HostPart::Name(lower), port)
                }
            }
        };
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BackendError::BadPort);
        }
        let port: u16 = port.parse().map_err(|_| BackendError::BadPort)?;
        if port == 0 {
            return Err(BackendError::BadPort);
        }
        Ok(match host {
            HostPart::Ip(ip) => {
                let addr = SocketAddr::new(ip, port);
                Backend {
                    text: addr.to_string(),
                    addr: Some(addr),
                }
            }
            HostPart::Name(name) => Backend {
                text: format!("{name}:{port}"),
                addr: None,
            },
        })
    }

    /// The canonical text, as stored in the table and given to `$backend`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The socket address when the backend is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

enum HostPart {
    Ip(IpAddr),
    Name(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalized_like_nginx() {
        for (input, want) in [
            ("Example.COM.", "example.com"),
            ("example.com:8080", "example.com"),
            ("a.b.example.com", "a.b.example.com"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("under_score.example", "under_score.example"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(Host::parse(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn bad_hosts_are_rejected() {
        for input in [
            "",
            ".",
            "a..b",
            "a b.com",
            "a/b.com",
            "exa\r\nmple.com",
            "example.com:",
            "example.com:abc",
            "example.com:123456",
            "example.com:65536",
            "example.com:99999",
            "-lead.example",
            "trail-.example",
            "1.2.3.4",
            "[::1]",
            "example.com..",
            "xn--zz.example",
            &"a".repeat(64),
            &format!("{}.com", ["abcdefghi"; 30].join(".")),
        ] {
            assert!(Host::parse(input).is_err(), "{input:?} accepted");
        }
    }

    #[test]
    fn patterns_are_normalized_like_hosts() {
        for (input, want, kind) in [
            ("*", "*", KeyKind::Default),
            ("*.Example.COM.", "*.example.com", KeyKind::Wildcard),
            (
                "*.bücher.example",
                "*.xn--bcher-kva.example",
                KeyKind::Wildcard,
            ),
            ("*.com", "*.com", KeyKind::Wildcard),
            ("example.com", "example.com", KeyKind::Exact),
        ] {
            let h = Host::parse(input).unwrap();
            assert_eq!((h.as_str(), h.kind()), (want, kind), "{input}");
        }
        let keys = Host::parse_keys(".Example.com").unwrap();
        let keys: Vec<&str> = keys.iter().map(Host::as_str).collect();
        assert_eq!(keys, ["example.com", "*.example.com"]);
        assert_eq!(Host::parse_keys("*.a.b").unwrap()[0].as_str(), "*.a.b");
    }

    #[test]
    fn bad_patterns_are_rejected_with_what_is_accepted() {
        for input in [
            "a*.example.com",
            "example.*",
            "*.*.com",
            "**",
            "*example.com",
            "a.*.example.com",
            "*.",
            "*.-a.com",
            "*.1.2.3.4",
            ".*.example.com",
            "..example.com",
            ".",
        ] {
            let e = Host::parse_keys(input).expect_err(input);
            if input.contains('*') && input != "*." && !input.contains('-') && !input.contains('1')
            {
                assert_eq!(e, HostError::BadWildcard, "{input}");
                assert!(e.to_string().contains("*.example.com"), "{e}");
            }
        }
        assert_eq!(Host::parse(".example.com"), Err(HostError::Shorthand));
        let long = format!("*.{}", "a".repeat(62) + &".bcdefghij".repeat(19));
        assert!(Host::parse(&long[2..]).is_ok());
        assert!(matches!(Host::parse(&long), Err(HostError::TooLong { .. })));
    }

    #[test]
    fn backends_are_validated() {
        for (input, want, ip) in [
            ("10.0.0.7:3000", "10.0.0.7:3000", true),
            ("Backend.Example:80", "backend.example:80", false),
            ("[::1]:8080", "[::1]:8080", true),
            ("[0:0::1]:8080", "[::1]:8080", true),
            ("localhost:1", "localhost:1", false),
        ] {
            let b = Backend::parse(input).unwrap();
            assert_eq!(b.as_str(), want);
            assert_eq!(b.addr().is_some(), ip, "{input}");
        }
        for input in [
            "",
            "10.0.0.7",
            "10.0.0.7:0",
            "10.0.0.7:65536",
            "http://10.0.0.7:80",
            "user@host:80",
            "host:80/path",
            "host:80?q",
            "host:80#f",
            "host :80",
            "host:80\r\n",
            "999.1.1.1:80",
            "[::1:80",
            "::1:80",
            "[zz]:80",
            "host:-1",
            "host:+80",
            "unix:80",
            "UNIX:8080",
        ] {
            assert!(Backend::parse(input).is_err(), "{input:?} accepted");
        }
    }
}
