//! The soak run's knobs (`make soak` lengthens the reliability tests through the environment)
//! and a random generator that a printed seed replays.

use shm_layout::testkit::Rng;

/// A count from the environment (the soak run's knobs), else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A generator seeded from `SB_RELIABILITY_SEED`, else from the clock (the tests print the
/// seed, `rng.0`, so that a run can be replayed).
pub fn seeded_rng() -> Rng {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    Rng::new(env_count("SB_RELIABILITY_SEED", t))
}
