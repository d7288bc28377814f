//! Test kit (feature `testkit`), for the table's own tests, the writer's and the end-to-end
//! tests:
//!
//! - `hostile`: hostile tables, damaged by the format's constants, and the corpus of crafted
//!   files that `tests/corrupt.rs` opens without nginx and the end-to-end tests load into real
//!   nginx workers.
//! - `acked`: [`Acked`], the writes a writer acknowledged, checked after a fault against what
//!   the store lists and what the table file holds.
//! - `rng`: [`Rng`], a small generator whose schedule a printed seed replays.

mod acked;
mod hostile;
mod rng;

pub use acked::Acked;
pub use hostile::*;
pub use rng::Rng;
