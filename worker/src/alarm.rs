//! The Durable Object alarm as a deadline.
//!
//! An object has one alarm but many deadlines (one or more per socket), so
//! a new deadline only ever moves the alarm earlier, and the sweep the alarm
//! runs sets it to the earliest deadline left. Rooms, their shards and the
//! registry all keep their timers this way, which is what lets them
//! hibernate in between. [`Alarm`] remembers the time it last read or set,
//! so an event that only needs the alarm no later than some deadline costs
//! no storage call when it already is.

use std::cell::Cell;

use roomcast_protocol::clock::now_ms;
use worker::{Result, Storage};

/// The earliest an alarm is set after now, so a burst of deadlines coalesces.
const MIN_DELAY_MS: u64 = 50;

/// Sets the alarm for `at_ms` (ms since the epoch), replacing any other.
pub async fn set(storage: &Storage, at_ms: u64) -> Result<()> {
    let delay = at_ms.saturating_sub(now_ms()).max(MIN_DELAY_MS);
    storage.set_alarm(delay as i64).await
}

/// One object's alarm, with its time as last read or set.
pub struct Alarm {
    storage: Storage,
    /// `None` while unknown; `Some(None)` when no alarm is set.
    at: Cell<Option<Option<u64>>>,
}

impl Alarm {
    pub fn new(storage: Storage) -> Alarm {
        Alarm {
            storage,
            at: Cell::new(None),
        }
    }

    /// The alarm is firing: it is no longer set.
    pub fn fired(&self) {
        self.at.set(Some(None));
    }

    /// When the alarm fires next, if it is set.
    pub async fn next(&self) -> Result<Option<u64>> {
        if let Some(known) = self.at.get() {
            return Ok(known);
        }
        let current = self
            .storage
            .get_alarm()
            .await?
            .filter(|t| *t >= 0)
            .map(|t| t as u64);
        self.at.set(Some(current));
        Ok(current)
    }

    /// Makes sure the alarm fires no later than `at_ms`.
    pub async fn no_later_than(&self, at_ms: u64) -> Result<()> {
        if self.next().await?.is_some_and(|current| current <= at_ms) {
            return Ok(());
        }
        set(&self.storage, at_ms).await?;
        self.at.set(Some(Some(at_ms)));
        Ok(())
    }

    /// Sets the alarm to exactly `at` (none: no alarm).
    pub async fn set(&self, at: Option<u64>) -> Result<()> {
        match at {
            Some(at_ms) => set(&self.storage, at_ms).await?,
            None => self.storage.delete_alarm().await?,
        }
        self.at.set(Some(at));
        Ok(())
    }
}
