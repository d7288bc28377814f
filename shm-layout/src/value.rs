//! What a lookup hands out: [`Value`], a backend copied out of the table with the [`Match`]
//! that found it, and the answers [`Lookup`] and [`Status`]. Fixed-size, so a lookup allocates
//! nothing.

use crate::format::{ADDR_NONE, ADDR_V4, ADDR_V6};
use crate::host::MAX_BACKEND_LEN;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of the value buffer: the longest backend, rounded up to whole 16-byte blocks (the
/// value check reads it 16 bytes at a time).
pub(crate) const VALUE_BUF: usize = MAX_BACKEND_LEN.div_ceil(16) * 16;

/// A backend copied out of the table: its text and, for IP literals, its parsed address.
/// Fixed-size, so a lookup allocates nothing.
#[derive(Clone)]
pub struct Value {
    /// Bytes of `bytes` that hold the backend.
    pub(crate) len: u16,
    /// `ADDR_NONE`, `ADDR_V4` or `ADDR_V6`: which of `ip` holds the parsed address.
    pub(crate) addr_kind: u8,
    pub(crate) port: u16,
    /// The address's octets in network order (the first four for IPv4).
    pub(crate) ip: [u8; 16],
    /// The backend's text, followed by whatever the last read left (past `len`).
    pub(crate) bytes: [u8; VALUE_BUF],
    /// Which key matched: [`MATCH_EXACT`], [`MATCH_DEFAULT`], or the position of the dot in the
    /// host where the matching `*.suffix` starts.
    pub(crate) matched: u16,
}

/// `Value::matched` for the host's own key.
pub(crate) const MATCH_EXACT: u16 = 0;
/// `Value::matched` for the default entry `*`.
pub(crate) const MATCH_DEFAULT: u16 = u16::MAX;

/// The key that answered a lookup of `host`: what nginx logs as `$set_backend_match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The host itself.
    Exact,
    /// The wildcard `*` + `host[dot..]` (`host[dot]` is a `.`): the longest one present.
    Wildcard { dot: usize },
    /// The default entry `*`.
    Default,
}

impl Match {
    /// The matching key as text, given the host looked up (allocates; for tools and tests).
    pub fn key(&self, host: &str) -> String {
        match *self {
            Match::Exact => host.to_owned(),
            Match::Wildcard { dot } => format!("*{}", host.get(dot..).unwrap_or("")),
            Match::Default => "*".to_owned(),
        }
    }
}

impl Value {
    /// An empty buffer, to pass to `Table::lookup_into` again and again.
    pub const fn empty() -> Value {
        Value {
            len: 0,
            addr_kind: ADDR_NONE,
            port: 0,
            ip: [0; 16],
            bytes: [0; VALUE_BUF],
            matched: MATCH_EXACT,
        }
    }

    /// Which key answered the lookup that filled this value.
    pub fn matched(&self) -> Match {
        match self.matched {
            MATCH_EXACT => Match::Exact,
            MATCH_DEFAULT => Match::Default,
            dot => Match::Wildcard { dot: dot as usize },
        }
    }

    /// The backend as stored (`10.0.0.7:3000`, `name:80`, `[::1]:8080`).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The backend as text; the writer only stores ASCII, so this is lossless for a valid file.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The pre-parsed socket address, when the backend is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.addr_kind {
            ADDR_V4 => {
                let ip = Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]);
                Some(SocketAddr::new(IpAddr::V4(ip), self.port))
            }
            ADDR_V6 => Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(self.ip)),
                self.port,
            )),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("backend", &self.as_str())
            .field("addr", &self.addr())
            .field("matched", &self.matched())
            .finish()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        self.as_bytes() == other.as_bytes() && self.addr() == other.addr()
    }
}

/// The answer of a lookup. The value travels inline (no allocation on the request path).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    Hit(Value),
    Miss,
    /// The record kept changing under the reader; try again later.
    Busy,
    /// A record the probe reached is stable but malformed: the file is damaged.
    Corrupt,
}

impl Lookup {
    /// The answer of a lookup that left `status` and, on a hit, `value`.
    pub(crate) fn of(status: Status, value: Value) -> Lookup {
        match status {
            Status::Hit => Lookup::Hit(value),
            Status::Miss => Lookup::Miss,
            Status::Busy => Lookup::Busy,
            Status::Corrupt => Lookup::Corrupt,
        }
    }
}

/// The outcome of `Table::lookup_into`: like [`Lookup`], with the value left in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Busy,
    Corrupt,
}
