//! [`Rng`]: xorshift, random enough for test schedules and reproducible from its seed.

/// A small deterministic generator (xorshift64). The seed must not be 0; [`Rng::new`] makes
/// sure of it.
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded with `seed` (made odd, so never 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
