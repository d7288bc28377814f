//! What a lookup hands out: [`Value`], a backend set copied out of the table with the
//! [`Match`] that found it, its [`Member`]s, [`pick_weighted`] for a pick among them, and the
//! answers [`Lookup`] and [`Status`]. Fixed-size, so a lookup allocates nothing.

use crate::format::{ADDR_NONE, ADDR_V4, ADDR_V6};
use crate::host::MAX_BACKEND_LEN;
use crate::set::MAX_MEMBERS;
#[cfg(all(test, not(loom)))]
use crate::set::MAX_WEIGHT;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Bytes of the value buffer: the longest backend, rounded up to whole 16-byte blocks (the
/// value check reads it 16 bytes at a time).
pub(crate) const VALUE_BUF: usize = MAX_BACKEND_LEN.div_ceil(16) * 16;

/// One member of a set as copied out of the table: its text, its parsed address, its weight
/// and backup flag.
#[derive(Clone, Copy)]
pub(crate) struct Slot {
    /// Bytes of `bytes` that hold the backend.
    pub(crate) len: u16,
    /// `ADDR_NONE`, `ADDR_V4` or `ADDR_V6`: which of `ip` holds the parsed address.
    pub(crate) addr_kind: u8,
    /// 1 to `MAX_WEIGHT` (1 in a set of one, which stores no weight).
    pub(crate) weight: u8,
    pub(crate) backup: bool,
    pub(crate) port: u16,
    /// The address's octets in network order (the first four for IPv4).
    pub(crate) ip: [u8; 16],
    /// The backend's text, followed by whatever the last read left (past `len`).
    pub(crate) bytes: [u8; VALUE_BUF],
}

impl Slot {
    const EMPTY: Slot = Slot {
        len: 0,
        addr_kind: ADDR_NONE,
        weight: 1,
        backup: false,
        port: 0,
        ip: [0; 16],
        bytes: [0; VALUE_BUF],
    };
}

/// A backend set copied out of the table, with the [`Match`] that found it. Its first member
/// is always a primary; [`Value::as_str`] and [`Value::addr`] are the first member's, so a
/// caller that knows only single backends reads a set as its first member. Fixed-size, so a
/// lookup allocates nothing.
#[derive(Clone)]
pub struct Value {
    /// The first member (a primary): the only one of a set of one.
    pub(crate) head: Slot,
    /// Members held: 1 to `MAX_MEMBERS` after a hit.
    pub(crate) members: u8,
    /// Members 1.. of a larger set; meaningful up to `members - 1`.
    pub(crate) rest: [Slot; MAX_MEMBERS - 1],
    /// Which key matched: [`MATCH_EXACT`], [`MATCH_DEFAULT`], or the position of the dot in the
    /// host where the matching `*.suffix` starts.
    pub(crate) matched: u16,
}

/// `Value::matched` for the host's own key (a dot's position is below 253, and may be 0).
pub(crate) const MATCH_EXACT: u16 = u16::MAX - 1;
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

/// One member of a [`Value`]'s set.
#[derive(Clone, Copy)]
pub struct Member<'a>(&'a Slot);

impl<'a> Member<'a> {
    /// The backend as stored (`10.0.0.7:3000`, `name:80`, `[::1]:8080`).
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0.bytes.get(..self.0.len as usize).unwrap_or(&[])
    }

    /// The backend as text; the writer only stores ASCII, so this is lossless for a valid file.
    pub fn as_str(&self) -> &'a str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The pre-parsed socket address, when the backend is an IP literal.
    #[inline]
    pub fn addr(&self) -> Option<SocketAddr> {
        let s = self.0;
        match s.addr_kind {
            ADDR_V4 => {
                let ip = Ipv4Addr::new(s.ip[0], s.ip[1], s.ip[2], s.ip[3]);
                Some(SocketAddr::new(IpAddr::V4(ip), s.port))
            }
            ADDR_V6 => Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s.ip)), s.port)),
            _ => None,
        }
    }

    /// 1 to 100; 1 for the member of a set of one.
    #[inline]
    pub fn weight(&self) -> u8 {
        self.0.weight
    }

    /// Used only when no primary can be.
    #[inline]
    pub fn backup(&self) -> bool {
        self.0.backup
    }
}

impl std::fmt::Debug for Member<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("backend", &self.as_str())
            .field("addr", &self.addr())
            .field("weight", &self.weight())
            .field("backup", &self.backup())
            .finish()
    }
}

impl Value {
    /// An empty buffer, to pass to `Table::lookup_into` again and again.
    pub const fn empty() -> Value {
        Value {
            head: Slot::EMPTY,
            members: 1,
            rest: [Slot::EMPTY; MAX_MEMBERS - 1],
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

    /// The first member's backend as stored (`10.0.0.7:3000`, `name:80`, `[::1]:8080`).
    pub fn as_bytes(&self) -> &[u8] {
        Member(&self.head).as_bytes()
    }

    /// The first member's backend as text.
    pub fn as_str(&self) -> &str {
        Member(&self.head).as_str()
    }

    /// The first member's pre-parsed socket address, when it is an IP literal.
    pub fn addr(&self) -> Option<SocketAddr> {
        Member(&self.head).addr()
    }

    /// How many members the set has: 1 to `MAX_MEMBERS`.
    #[inline]
    pub fn members(&self) -> usize {
        (self.members as usize).clamp(1, MAX_MEMBERS)
    }

    /// Member `i` (`0..members()`): the primaries first, then the backups.
    #[inline]
    pub fn member(&self, i: usize) -> Option<Member<'_>> {
        if i >= self.members() {
            return None;
        }
        match i.checked_sub(1) {
            None => Some(Member(&self.head)),
            Some(j) => self.rest.get(j).map(Member),
        }
    }
}

/// A weighted random pick among `n` candidates: candidate `i` with probability
/// `weight(i) / Σ weight` (a weight of 0 leaves it out), `r` being a uniform random number the
/// caller draws. `None` when every weight is 0. Allocates nothing; `weight` is called at most
/// twice per candidate and must answer the same both times. The module's picks among a set's
/// members use it: variable mode's among the primaries, upstream mode's balancer among those not
/// tried yet or marked failed.
#[inline]
pub fn pick_weighted(n: usize, r: u32, weight: impl Fn(usize) -> u64) -> Option<usize> {
    let total: u64 = (0..n).map(&weight).sum();
    // `r` scaled into 0..total: uniform when `r` is, without a division.
    let mut x = (u64::from(r) * total) >> 32;
    for i in 0..n {
        let w = weight(i);
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    None
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let members: Vec<Member<'_>> = (0..self.members()).filter_map(|i| self.member(i)).collect();
        f.debug_struct("Value")
            .field("backend", &self.as_str())
            .field("addr", &self.addr())
            .field("members", &members)
            .field("matched", &self.matched())
            .finish()
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        let same = |a: Member, b: Member| {
            a.as_bytes() == b.as_bytes()
                && a.addr() == b.addr()
                && a.weight() == b.weight()
                && a.backup() == b.backup()
        };
        self.members() == other.members()
            && (0..self.members()).all(|i| match (self.member(i), other.member(i)) {
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            })
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The pick the balancers make with [`pick_weighted`]: among the members of `v` of the kind
    /// asked for (backups or primaries) that `skip` does not exclude, by weight.
    fn pick(v: &Value, backup: bool, r: u32, skip: impl Fn(usize) -> bool) -> Option<usize> {
        pick_weighted(v.members(), r, |i| match v.member(i) {
            Some(m) if m.backup() == backup && !skip(i) => u64::from(m.weight()),
            _ => 0,
        })
    }

    fn pick_primary(v: &Value, r: u32, skip: impl Fn(usize) -> bool) -> Option<usize> {
        pick(v, false, r, skip)
    }

    fn pick_backup(v: &Value, r: u32, skip: impl Fn(usize) -> bool) -> Option<usize> {
        pick(v, true, r, skip)
    }

    /// A value holding a set of `members` (weight, backup), texts `m0:1`, `m1:1`, ….
    fn set_of(members: &[(u8, bool)]) -> Value {
        let mut v = Value::empty();
        v.members = members.len() as u8;
        for (i, &(weight, backup)) in members.iter().enumerate() {
            let slot = if i == 0 {
                &mut v.head
            } else {
                &mut v.rest[i - 1]
            };
            let text = format!("m{i}:1");
            slot.bytes[..text.len()].copy_from_slice(text.as_bytes());
            slot.len = text.len() as u16;
            (slot.weight, slot.backup) = (weight, backup);
        }
        v
    }

    /// `r` spread evenly over `0..2^32` in `n` steps (each rounded up, so that `r · total / 2^32`
    /// is exactly `k · total / n` rounded down).
    fn spread(n: u64) -> impl Iterator<Item = u32> {
        (0..n).map(move |k| ((k << 32).div_ceil(n)) as u32)
    }

    #[test]
    fn a_pick_follows_the_weights_exactly() {
        let v = set_of(&[(1, false), (2, false), (7, false), (5, true)]);
        let mut count = [0u64; 4];
        for r in spread(10_000) {
            count[pick_primary(&v, r, |_| false).unwrap()] += 1;
        }
        assert_eq!(count, [1000, 2000, 7000, 0]);
        let mut count = [0u64; 4];
        for r in spread(10_000) {
            count[pick_primary(&v, r, |i| i == 2).unwrap()] += 1;
        }
        assert_eq!(count, [3334, 6666, 0, 0]);
        assert_eq!(pick_backup(&v, 0, |_| false), Some(3));
        assert_eq!(pick_backup(&v, u32::MAX, |_| false), Some(3));
        assert_eq!(pick_backup(&v, 7, |i| i == 3), None);
        assert_eq!(pick_primary(&v, 7, |i| i < 3), None);
        let one = set_of(&[(1, false)]);
        assert_eq!(pick_primary(&one, u32::MAX, |_| false), Some(0));
        assert_eq!(pick_primary(&one, 0, |i| i == 0), None);
        assert_eq!(one.member(0).unwrap().as_str(), "m0:1");
        assert!(one.member(1).is_none());
    }

    proptest! {
        /// Whatever the set, the skips and `r`: the pick is a member of the asked kind that is
        /// not skipped, `None` only when there is none, and over `r` spread evenly each
        /// candidate gets its weight's share, to within one in the count.
        #[test]
        fn a_pick_is_an_allowed_member_in_proportion(
            members in proptest::collection::vec((1u8..=MAX_WEIGHT, any::<bool>()), 1..=MAX_MEMBERS),
            skipped in any::<u8>(),
            r in any::<u32>(),
            backup in any::<bool>(),
        ) {
            // A table's first member is a primary.
            let mut members = members;
            members[0].1 = false;
            let v = set_of(&members);
            let skip = |i: usize| skipped >> i & 1 == 1;
            let allowed = |i: usize| members[i].1 == backup && !skip(i);
            let pick = |r| if backup { pick_backup(&v, r, skip) } else { pick_primary(&v, r, skip) };
            let total: u64 = (0..members.len()).filter(|&i| allowed(i)).map(|i| u64::from(members[i].0)).sum();
            match pick(r) {
                Some(i) => prop_assert!(allowed(i)),
                None => prop_assert_eq!(total, 0),
            }
            if total > 0 {
                let n = total * 100;
                let mut count = [0u64; MAX_MEMBERS];
                for r in spread(n) {
                    count[pick(r).unwrap()] += 1;
                }
                for (i, &c) in count.iter().enumerate().take(members.len()) {
                    let want = if allowed(i) { u64::from(members[i].0) * 100 } else { 0 };
                    prop_assert!(c.abs_diff(want) <= 1, "member {} got {} of {}, want {}", i, c, n, want);
                }
            }
        }
    }
}
