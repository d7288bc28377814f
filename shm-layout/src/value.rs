//! What a lookup hands out: [`Value`], a backend copied out of the table, and the answers
//! [`Lookup`] and [`Status`]. Fixed-size, so a lookup allocates nothing.

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

/// The outcome of `Table::lookup_into`: like [`Lookup`], with the value left in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Hit,
    Miss,
    Busy,
    Corrupt,
}
