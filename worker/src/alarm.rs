//! The Durable Object alarm as a deadline.
//!
//! An object has one alarm but many deadlines (one or more per socket), so
//! a new deadline only ever moves the alarm earlier, and the sweep the alarm
//! runs sets it to the earliest deadline left. Rooms and the registry both
//! keep their timers this way, which is what lets them hibernate in between.

use roomcast_protocol::clock::now_ms;
use worker::{Result, Storage};

/// The earliest an alarm is set after now, so a burst of deadlines coalesces.
const MIN_DELAY_MS: u64 = 50;

/// Sets the alarm for `at_ms` (ms since the epoch), replacing any other.
pub async fn set(storage: &Storage, at_ms: u64) -> Result<()> {
    let delay = at_ms.saturating_sub(now_ms()).max(MIN_DELAY_MS);
    storage.set_alarm(delay as i64).await
}
