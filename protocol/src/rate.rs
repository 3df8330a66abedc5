//! Rate limiting (SPEC section 3): a token bucket per connection whose refill
//! rate adapts to the room's load.
//!
//! The per-connection state ([`Bucket`]) is small and serializable because the
//! worker keeps it in the WebSocket attachment, which survives hibernation.
//! The room-wide state ([`RoomBudget`]) lives in memory: losing it when a room
//! hibernates only forgets a load measurement that a hibernating room does
//! not have anyway.

use serde::{Deserialize, Serialize};

use crate::config::Limits;

/// One connection's token bucket and strike counter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    tokens: f64,
    last_ms: u64,
    /// When the current run of rate-limited frames started, and when its
    /// latest frame came. A pause of more than a second ends the run.
    limited_since_ms: Option<u64>,
    last_limited_ms: u64,
    /// The room-budget window in which this connection last published.
    window: Option<u64>,
}

impl Bucket {
    /// A full bucket, so a fresh connection may burst at once.
    pub fn new(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            last_ms: now_ms,
            limited_since_ms: None,
            last_limited_ms: 0,
            window: None,
        }
    }

    fn refill(&mut self, now_ms: u64, per_sec: f64, burst: u32) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * per_sec).min(f64::from(burst));
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn take(&mut self, now_ms: u64, per_sec: f64, burst: u32) -> bool {
        self.refill(now_ms, per_sec, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Records a rate-limited frame; returns for how long (ms) the connection
    /// has kept sending over its limit without a pause of a second or more.
    fn strike(&mut self, now_ms: u64) -> u64 {
        let since = match self.limited_since_ms {
            Some(since) if now_ms.saturating_sub(self.last_limited_ms) <= 1000 => since,
            _ => now_ms,
        };
        self.limited_since_ms = Some(since);
        self.last_limited_ms = self.last_limited_ms.max(now_ms);
        now_ms.saturating_sub(since)
    }

    /// Marks this connection as a publisher in `window`; `true` the first time.
    fn enter_window(&mut self, window: u64) -> bool {
        let first = self.window != Some(window);
        self.window = Some(window);
        first
    }
}

/// The room-wide load measurement that turns on fair-share mode.
///
/// Load is measured per one-second window. When a window accepted more than
/// the room budget, the next windows give every publisher `budget / publishers`
/// per second (never more than its own rate). Fair-share mode ends only when
/// a window's demand (accepted and refused publishes) fits the budget again,
/// so the room does not oscillate between modes every second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomBudget {
    window: u64,
    accepted: u32,
    demand: u32,
    publishers: u32,
    /// Per-connection refill rate while the room is over budget.
    fair_share: Option<f64>,
}

impl RoomBudget {
    fn roll(&mut self, now_ms: u64, budget: u32) {
        let window = now_ms / 1000;
        if window == self.window {
            return;
        }
        let contiguous = window == self.window + 1;
        let over = contiguous && self.accepted > budget;
        let still_busy = contiguous && self.fair_share.is_some() && self.demand > budget;
        self.fair_share =
            (over || still_busy).then(|| f64::from(budget) / f64::from(self.publishers.max(1)));
        *self = RoomBudget {
            window,
            fair_share: self.fair_share,
            ..RoomBudget::default()
        };
    }

    /// The refill rate a connection gets now.
    pub fn rate(&self, per_sec: u32) -> f64 {
        let own = f64::from(per_sec);
        self.fair_share.map_or(own, |share| share.min(own))
    }

    /// Whether the room is in fair-share mode.
    pub fn constrained(&self) -> bool {
        self.fair_share.is_some()
    }
}

/// What the limiter decided about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// Over the limit: reject this frame with `rate_limited`.
    Limited,
    /// Over the limit for `rate_strikes` seconds on end: close with 4029.
    Close,
}

/// Decides one publish from `bucket` in a room measured by `budget`.
pub fn admit(
    bucket: &mut Bucket,
    budget: &mut RoomBudget,
    limits: &Limits,
    now_ms: u64,
) -> Admission {
    budget.roll(now_ms, limits.room_rate_per_sec);
    if bucket.enter_window(budget.window) {
        budget.publishers += 1;
    }
    budget.demand = budget.demand.saturating_add(1);
    if bucket.take(now_ms, budget.rate(limits.rate_per_sec), limits.rate_burst) {
        budget.accepted = budget.accepted.saturating_add(1);
        return Admission::Accepted;
    }
    if bucket.strike(now_ms) >= u64::from(limits.rate_strikes.max(1)) * 1000 {
        Admission::Close
    } else {
        Admission::Limited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_sec: u32, burst: u32, room: u32) -> Limits {
        Limits {
            rate_per_sec: per_sec,
            rate_burst: burst,
            room_rate_per_sec: room,
            ..Limits::default()
        }
    }

    #[test]
    fn burst_then_refill() {
        let l = limits(10, 5, 1000);
        let (mut b, mut room) = (Bucket::new(5, 0), RoomBudget::default());
        for _ in 0..5 {
            assert_eq!(admit(&mut b, &mut room, &l, 0), Admission::Accepted);
        }
        assert_eq!(admit(&mut b, &mut room, &l, 0), Admission::Limited);
        assert_eq!(admit(&mut b, &mut room, &l, 100), Admission::Accepted);
        assert_eq!(admit(&mut b, &mut room, &l, 100), Admission::Limited);
    }

    /// Sends a frame every 100 ms from `from_ms` and returns when the
    /// limiter first decided to close.
    fn first_close(b: &mut Bucket, room: &mut RoomBudget, l: &Limits, from_ms: u64) -> u64 {
        (from_ms..from_ms + 10_000)
            .step_by(100)
            .find(|t| admit(b, room, l, *t) == Admission::Close)
            .expect("never closed")
    }

    #[test]
    fn limited_for_rate_strikes_seconds_closes() {
        let l = limits(1, 1, 1000);
        let (mut b, mut room) = (Bucket::new(1, 0), RoomBudget::default());
        // Accepted at 0, limited from 100 on (one refill a second is accepted).
        assert_eq!(first_close(&mut b, &mut room, &l, 0), 3100);
    }

    #[test]
    fn a_pause_ends_the_run() {
        let l = limits(1, 1, 1000);
        let (mut b, mut room) = (Bucket::new(0, 0), RoomBudget::default());
        assert_eq!(admit(&mut b, &mut room, &l, 0), Admission::Limited);
        assert_eq!(admit(&mut b, &mut room, &l, 2_500), Admission::Accepted);
        assert_eq!(first_close(&mut b, &mut room, &l, 2_600), 5_600);
    }

    #[test]
    fn over_budget_room_scales_everyone_to_a_fair_share() {
        let l = limits(100, 100, 40);
        let mut room = RoomBudget::default();
        let mut conns = [
            Bucket::new(100, 0),
            Bucket::new(100, 0),
            Bucket::new(100, 0),
            Bucket::new(100, 0),
        ];
        for b in conns.iter_mut() {
            for _ in 0..20 {
                admit(b, &mut room, &l, 0);
            }
        }
        assert!(!room.constrained());
        admit(&mut conns[0], &mut room, &l, 1000);
        assert!(room.constrained());
        assert_eq!(room.rate(100), 10.0);
        assert_eq!(room.rate(5), 5.0);
    }
}
