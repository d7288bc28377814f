//! The worker's random numbers for weighted picks among a set's members: its own xorshift64*
//! generator, per thread, seeded on first use from the process id and nginx's clock. No lock and
//! no system call (glibc's `random()`, behind nginx's `ngx_random()`, takes a lock per call).

use std::cell::Cell;

use ngx::ffi::{ngx_current_msec, ngx_pid};

thread_local! {
    /// The generator's state; 0 until seeded.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// A uniform random number over the whole `u32` range.
pub fn next() -> u32 {
    STATE
        .try_with(|s| {
            let mut x = s.get();
            if x == 0 {
                // SAFETY: plain reads of nginx's process id and of its cached clock, written by
                // the worker's own event loop.
                let (pid, now) = unsafe { (ngx_pid, ngx_current_msec) };
                x = ((pid as u64) << 32 ^ now as u64) | 1;
            }
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
        })
        .unwrap_or(0)
}
