//! Failed authentication, throttled per client address, so that a token cannot be guessed at
//! line rate.
//!
//! Each address has a budget of [`BURST`] failed authentications, refilled by one every
//! [`REFILL`] (a token bucket). While an address's budget is spent, its requests get 429
//! before their token is compared: an answer that told a right guess from a wrong one would
//! let the guessing go on at full speed. So the right token from that address works again as
//! soon as one attempt has been refilled, and from any other address at once. Successful
//! requests cost nothing.
//!
//! The client address is the connection's peer on TCP, and on the unix socket (which only
//! nginx can reach in the container) the `X-Forwarded-For` that nginx sets to
//! `$remote_addr`; requests with neither (a local process on the socket: the operator's
//! commands) are not throttled, the socket's permissions say who may connect. An IPv6 client
//! counts by its /64,
//! the block one host usually holds. The table keeps at most [`MAX_ADDRESSES`]: when full,
//! the addresses whose budget has refilled are dropped, and if none has, the one that failed
//! longest ago.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in a row.
pub const BURST: u32 = 10;
/// The time that gives back one attempt.
pub const REFILL: Duration = Duration::from_secs(1);
/// Addresses tracked at most.
pub const MAX_ADDRESSES: usize = 16_384;

/// An address's failures: the budget left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Attempts left, in units of 1/1000 attempt (refill is continuous).
    milli: u64,
    /// When `milli` was last computed.
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> u64 {
        let gained = now.saturating_duration_since(self.at).as_millis() as u64 * 1000
            / REFILL.as_millis().max(1) as u64;
        (self.milli + gained).min(u64::from(BURST) * 1000)
    }
}

/// The per-address budgets of failed authentication.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Throttle {
    /// `Ok` if `client` may present a token now; else how long until it may.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.get(&key(client)) {
            Some(b) => {
                let left = b.refilled(now);
                if left >= 1000 {
                    Ok(())
                } else {
                    let wait = (1000 - left) * REFILL.as_millis() as u64 / 1000;
                    Err(Duration::from_millis(wait.max(1)))
                }
            }
            None => Ok(()),
        }
    }

    /// Records a failed authentication by `client`.
    pub fn failed(&self, client: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let k = key(client);
        if !buckets.contains_key(&k) && buckets.len() >= MAX_ADDRESSES {
            buckets.retain(|_, b| b.refilled(now) < u64::from(BURST) * 1000);
            if buckets.len() >= MAX_ADDRESSES {
                if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| *k) {
                    buckets.remove(&oldest);
                }
            }
        }
        let full = Bucket {
            milli: u64::from(BURST) * 1000,
            at: now,
        };
        let b = buckets.entry(k).or_insert(full);
        let left = b.refilled(now);
        *b = Bucket {
            milli: left.saturating_sub(1000),
            at: now,
        };
    }
}

/// The budget's key: IPv4 as it is (also when mapped into IPv6), IPv6 by its /64.
fn key(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_burst_then_one_attempt_per_refill() {
        let t = Throttle::default();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..BURST {
            assert_eq!(t.check(a, t0), Ok(()));
            t.failed(a, t0);
        }
        let wait = t.check(a, t0).unwrap_err();
        assert_eq!(wait, REFILL);
        // Other addresses are not affected; nor is an address that only succeeds.
        assert_eq!(t.check(ip("192.0.2.2"), t0), Ok(()));
        // Half a refill later: still throttled, for the other half.
        assert_eq!(t.check(a, t0 + REFILL / 2).unwrap_err(), REFILL / 2);
        // One refill later: one attempt, and only one.
        let t1 = t0 + REFILL;
        assert_eq!(t.check(a, t1), Ok(()));
        t.failed(a, t1);
        assert!(t.check(a, t1).is_err());
        // Long after: the whole burst again, never more.
        let t2 = t1 + REFILL * 100;
        for _ in 0..BURST {
            assert_eq!(t.check(a, t2), Ok(()));
            t.failed(a, t2);
        }
        assert!(t.check(a, t2).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..BURST {
            t.failed(ip(&format!("2001:db8:1:2::{i:x}")), now);
        }
        assert!(t.check(ip("2001:db8:1:2:ffff::1"), now).is_err());
        assert_eq!(t.check(ip("2001:db8:1:3::1"), now), Ok(()));
        for _ in 0..BURST {
            t.failed(ip("::ffff:192.0.2.9"), now);
        }
        assert!(t.check(ip("192.0.2.9"), now).is_err());
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            t.failed(IpAddr::V4(i.into()), now);
        }
        assert!(t.buckets.lock().unwrap().len() <= MAX_ADDRESSES);
    }
}
