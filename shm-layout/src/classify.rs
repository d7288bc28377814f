//! Which bytes a stored backend may contain, checked on every hit while the value is copied
//! out: a damaged file must never hand `proxy_pass` a `/`, `@`, space or `unix:` it would read
//! as part of a URL. On x86_64 the check takes 16 bytes at a time with SSE2 (the one unsafe
//! call here); elsewhere, and as the reference in tests, a byte table.

/// The bytes a canonical backend consists of (`Backend::parse` output: lowercase names, IPv4
/// and bracketed IPv6 literals, a port).
static BACKEND_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']');
        b += 1;
    }
    t
};

/// Non-zero when one of the first `live` bytes of the 16 bytes `lo` (bytes 0–7, little-endian)
/// and `hi` (8–15) is not a backend byte; bytes from `live` on are ignored.
#[inline(always)]
pub(crate) fn bad16(lo: u64, hi: u64, live: usize) -> u32 {
    let live_mask = match live {
        n if n >= 16 => 0xffff,
        n => (1u32 << n) - 1,
    };
    live_mask & !allowed16(lo, hi)
}

/// Whether a value of `len` bytes whose first word is `first` starts with `unix:`, which
/// nginx's `proxy_pass` would read as a socket path (`Backend::parse` refuses it).
#[inline(always)]
pub(crate) fn is_unix(first: u64, len: usize) -> bool {
    const UNIX: u64 = u64::from_le_bytes(*b"unix:\0\0\0");
    len >= 5 && first & 0xff_ffff_ffff == UNIX
}

/// The portable classification: one table load per byte.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(test)),
    allow(dead_code)
)]
fn allowed16_scalar(lo: u64, hi: u64) -> u32 {
    let bytes = (u128::from(hi) << 64 | u128::from(lo)).to_le_bytes();
    bytes
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | u32::from(BACKEND_BYTE[b as usize]) << i)
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn allowed16(lo: u64, hi: u64) -> u32 {
    allowed16_scalar(lo, hi)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn allowed16(lo: u64, hi: u64) -> u32 {
    // SAFETY: `allowed16_sse2` needs SSE2, which this build's target has (the cfg above);
    // every x86_64 CPU does.
    unsafe { allowed16_sse2(lo, hi) }
}

/// One bit per byte, set for a backend byte. Signed byte compares: every allowed byte is
/// below 0x80, so bytes from 0x80 up (negative) fall outside every range.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn allowed16_sse2(lo: u64, hi: u64) -> u32 {
    use std::arch::x86_64::*;
    let x = _mm_set_epi64x(hi as i64, lo as i64);
    let c = |b: u8| _mm_set1_epi8(b as i8);
    let within =
        |lo: u8, hi: u8| _mm_and_si128(_mm_cmpgt_epi8(x, c(lo - 1)), _mm_cmplt_epi8(x, c(hi + 1)));
    // `-` `.` `0`–`9` `:` (the range without `/`), then `[` `]` `_`, then `a`–`z`.
    let punct_digits = _mm_andnot_si128(_mm_cmpeq_epi8(x, c(b'/')), within(b'-', b':'));
    let brackets = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(x, c(b'[')), _mm_cmpeq_epi8(x, c(b']'))),
        _mm_cmpeq_epi8(x, c(b'_')),
    );
    let ok = _mm_or_si128(_mm_or_si128(punct_digits, brackets), within(b'a', b'z'));
    _mm_movemask_epi8(ok) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u8]) -> (u64, u64) {
        let mut b = [0u8; 16];
        b[..v.len()].copy_from_slice(v);
        let (lo, hi) = b.split_at(8);
        (
            u64::from_le_bytes(lo.try_into().unwrap()),
            u64::from_le_bytes(hi.try_into().unwrap()),
        )
    }

    #[test]
    fn every_byte_at_every_position_agrees_with_the_table() {
        let base = *b"abcdefghijklmnop";
        for at in 0..16 {
            for b in 0..=255u8 {
                let mut v = base;
                v[at] = b;
                let (lo, hi) = words(&v);
                let want = BACKEND_BYTE[b as usize];
                assert_eq!(
                    allowed16(lo, hi),
                    allowed16_scalar(lo, hi),
                    "{b:#x} at {at}"
                );
                assert_eq!(allowed16(lo, hi) >> at & 1 == 1, want, "{b:#x} at {at}");
                for live in 0..=16 {
                    assert_eq!(bad16(lo, hi, live) == 0, want || at >= live);
                }
            }
        }
    }

    #[test]
    fn canonical_backends_pass_and_others_do_not() {
        let ok = |v: &[u8]| {
            v.chunks(16).enumerate().all(|(i, c)| {
                let (lo, hi) = words(c);
                bad16(lo, hi, v.len() - 16 * i) == 0
            }) && !is_unix(words(&v[..v.len().min(16)]).0, v.len())
        };
        for good in [
            &b"10.0.0.7:3000"[..],
            b"[2001:db8::1]:8080",
            b"app-1.internal_x:80",
        ] {
            assert!(ok(good), "{good:?}");
        }
        for bad in [
            &b"unix:/run/app.sock"[..],
            b"unix:",
            b"10.0.0.7:3000/x",
            b"user@host:80",
            b"Host:80",
            b"a b:80",
            b"h\xc3\xa9:80",
        ] {
            assert!(!ok(bad), "{bad:?}");
        }
        // A short value is not `unix:` whatever follows it in its last word.
        assert!(!is_unix(u64::from_le_bytes(*b"unix:abc"), 4));
    }
}
