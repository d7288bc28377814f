//! Atomics used on the shared file: std's, or loom's when the protocol is model-checked
//! (`RUSTFLAGS="--cfg loom"`).

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};

/// One relaxed load of a shared word, converted from little-endian: how every word of the file
/// is read.
#[inline]
pub(crate) fn word(w: &AtomicU64) -> u64 {
    u64::from_le(w.load(Ordering::Relaxed))
}

/// Reads the word at byte offset `off` of `words`, if in bounds and aligned.
#[inline]
pub(crate) fn load(words: &[AtomicU64], off: usize) -> Option<u64> {
    if !off.is_multiple_of(8) {
        return None;
    }
    words.get(off / 8).map(word)
}

/// Stores a little-endian `u64` at byte offset `off` (writer side; offsets are its own).
#[inline]
pub(crate) fn store(words: &[AtomicU64], off: usize, v: u64, order: Ordering) {
    debug_assert_eq!(off % 8, 0);
    words[off / 8].store(v.to_le(), order)
}
