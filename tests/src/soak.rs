//! The soak run's knobs (`make soak` lengthens the reliability tests through the environment)
//! and a random generator that a printed seed replays.

/// A count from the environment (the soak run's knobs), else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift: random but reproducible from the seed the tests print.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from `SB_RELIABILITY_SEED`, else from the clock (the tests print the seed).
    pub fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(env_count("SB_RELIABILITY_SEED", t) | 1)
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
