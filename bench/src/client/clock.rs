//! The one clock every latency is read from.
//!
//! Publishers and receivers live in this process, so a send stamp taken from
//! a process-local monotonic clock and compared at receipt needs no clock
//! synchronisation and is immune to wall-clock steps.

use std::sync::OnceLock;
use std::time::Instant;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Microseconds from the first use of this clock to `at`.
pub fn micros(at: Instant) -> u64 {
    let origin = *ORIGIN.get_or_init(Instant::now);
    at.saturating_duration_since(origin).as_micros() as u64
}

/// Microseconds from the first use of this clock to now.
pub fn now_us() -> u64 {
    micros(Instant::now())
}
