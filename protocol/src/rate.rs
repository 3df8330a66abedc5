//! Rate limiting (docs/protocol.md, "Limits"): a token bucket per subject
//! in each room, whose refill rate adapts to the room's load.
//!
//! The bucket belongs to the subject (the token's `sub`), not to a
//! connection, so reconnecting does not refill it and sixteen connections
//! share one budget; WebSocket publishes, HTTP publishes (one token per
//! message of a batch) and `auth` frames all draw from it. The state lives in
//! the room's memory ([`Limiter`]): a room that hibernates has been idle for
//! longer than any bucket takes to fill, so what eviction forgets is a full
//! bucket, which is what a subject starts with anyway. For the same reason a
//! bucket that is full again is forgotten, which bounds the memory by the
//! subjects active in the last few seconds.

use std::collections::HashMap;

use crate::config::Limits;

/// How many subjects a room tracks before it forgets the full buckets.
const FORGET_ABOVE: usize = 1024;

/// One subject's token bucket and strike counter.
#[derive(Debug, Clone, Copy, PartialEq)]
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

    /// Takes `n` tokens, all or none; otherwise how long (ms) until `n`
    /// would be there (a batch larger than the burst never fits: it is told
    /// to wait for a full bucket, and splitting is up to the sender).
    pub fn take(&mut self, n: u32, now_ms: u64, per_sec: f64, burst: u32) -> Result<(), u64> {
        self.refill(now_ms, per_sec, burst);
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let missing = n.min(f64::from(burst)) - self.tokens;
        let wait_ms = if per_sec > 0.0 {
            (missing.max(0.0) / per_sec * 1000.0).ceil() as u64
        } else {
            u64::MAX
        };
        Err(wait_ms.max(1))
    }

    /// Whether the bucket is full again at `now_ms`, i.e. indistinguishable
    /// from a fresh one, with no run of limited publishes in progress.
    fn idle(&self, now_ms: u64, per_sec: f64, burst: u32) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        let full = self.tokens + elapsed * per_sec >= f64::from(burst);
        let striking = now_ms.saturating_sub(self.last_limited_ms) <= 1000;
        full && !striking
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

/// What the limiter decided about a publish (or an `auth` frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// Over the limit: refuse with `rate_limited`; `n` tokens are there
    /// again after `retry_after_ms` (the HTTP `Retry-After`).
    Limited {
        retry_after_ms: u64,
    },
    /// Over the limit for `rate_strikes` seconds on end: a WebSocket is
    /// closed with 4029 (HTTP answers as for `Limited`).
    Close {
        retry_after_ms: u64,
    },
}

impl Admission {
    /// How long to wait, when refused.
    pub fn retry_after_ms(self) -> Option<u64> {
        match self {
            Admission::Accepted => None,
            Admission::Limited { retry_after_ms } | Admission::Close { retry_after_ms } => {
                Some(retry_after_ms)
            }
        }
    }
}

/// Decides `n` publishes at once from `bucket` in a room measured by `budget`.
pub fn admit(
    bucket: &mut Bucket,
    budget: &mut RoomBudget,
    n: u32,
    limits: &Limits,
    now_ms: u64,
) -> Admission {
    budget.roll(now_ms, limits.room_rate_per_sec);
    if bucket.enter_window(budget.window) {
        budget.publishers += 1;
    }
    budget.demand = budget.demand.saturating_add(n);
    let rate = budget.rate(limits.rate_per_sec);
    match bucket.take(n, now_ms, rate, limits.rate_burst) {
        Ok(()) => {
            budget.accepted = budget.accepted.saturating_add(n);
            Admission::Accepted
        }
        Err(retry_after_ms) => {
            if bucket.strike(now_ms) >= u64::from(limits.rate_strikes.max(1)) * 1000 {
                Admission::Close { retry_after_ms }
            } else {
                Admission::Limited { retry_after_ms }
            }
        }
    }
}

/// A room's rate state: a bucket per subject and the room's load.
#[derive(Debug, Default)]
pub struct Limiter {
    subjects: HashMap<String, Bucket>,
    room: RoomBudget,
}

impl Limiter {
    /// Decides `n` publishes (or one `auth` frame) by `subject`.
    pub fn admit(&mut self, subject: &str, n: u32, limits: &Limits, now_ms: u64) -> Admission {
        if self.subjects.len() >= FORGET_ABOVE {
            self.forget_idle(limits, now_ms);
        }
        let bucket = self
            .subjects
            .entry(subject.to_owned())
            .or_insert_with(|| Bucket::new(limits.rate_burst, now_ms));
        admit(bucket, &mut self.room, n, limits, now_ms)
    }

    /// Counts publishes no budget limits (the bridge's, from Kafka) in the
    /// room's load, so a flood from Kafka still turns on fair share for the
    /// room's other publishers.
    pub fn count_unlimited(&mut self, n: u32, limits: &Limits, now_ms: u64) {
        self.room.roll(now_ms, limits.room_rate_per_sec);
        self.room.demand = self.room.demand.saturating_add(n);
        self.room.accepted = self.room.accepted.saturating_add(n);
    }

    /// Subjects tracked now.
    pub fn subjects(&self) -> usize {
        self.subjects.len()
    }

    fn forget_idle(&mut self, limits: &Limits, now_ms: u64) {
        let rate = self.room.rate(limits.rate_per_sec);
        self.subjects
            .retain(|_, bucket| !bucket.idle(now_ms, rate, limits.rate_burst));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn limits(per_sec: u32, burst: u32, room: u32) -> Limits {
        Limits {
            rate_per_sec: per_sec,
            rate_burst: burst,
            room_rate_per_sec: room,
            ..Limits::default()
        }
    }

    fn one(b: &mut Bucket, room: &mut RoomBudget, l: &Limits, now: u64) -> Admission {
        admit(b, room, 1, l, now)
    }

    #[test]
    fn burst_then_refill() {
        let l = limits(10, 5, 1000);
        let (mut b, mut room) = (Bucket::new(5, 0), RoomBudget::default());
        for _ in 0..5 {
            assert_eq!(one(&mut b, &mut room, &l, 0), Admission::Accepted);
        }
        assert_eq!(
            one(&mut b, &mut room, &l, 0),
            Admission::Limited {
                retry_after_ms: 100
            }
        );
        assert_eq!(one(&mut b, &mut room, &l, 100), Admission::Accepted);
        assert!(matches!(
            one(&mut b, &mut room, &l, 100),
            Admission::Limited { .. }
        ));
    }

    #[test]
    fn a_batch_takes_all_its_tokens_or_none() {
        let l = limits(10, 20, 1000);
        let (mut b, mut room) = (Bucket::new(20, 0), RoomBudget::default());
        assert_eq!(admit(&mut b, &mut room, 15, &l, 0), Admission::Accepted);
        assert_eq!(
            admit(&mut b, &mut room, 10, &l, 0),
            Admission::Limited {
                retry_after_ms: 500
            },
            "5 left, 5 more in half a second"
        );
        assert_eq!(admit(&mut b, &mut room, 10, &l, 500), Admission::Accepted);
        assert_eq!(
            admit(&mut b, &mut room, 100, &l, 10_000)
                .retry_after_ms()
                .unwrap(),
            1,
            "over the burst: wait for a full bucket (it is full)"
        );
    }

    #[test]
    fn the_budget_belongs_to_the_subject() {
        let l = limits(1, 3, 1000);
        let mut limiter = Limiter::default();
        for _ in 0..3 {
            assert_eq!(limiter.admit("alice", 1, &l, 0), Admission::Accepted);
        }
        assert!(matches!(
            limiter.admit("alice", 1, &l, 0),
            Admission::Limited { .. }
        ));
        assert_eq!(limiter.admit("bob", 1, &l, 0), Admission::Accepted);
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let l = limits(10, 1, 1_000_000);
        let mut limiter = Limiter::default();
        for n in 0..FORGET_ABOVE {
            limiter.admit(&format!("s{n}"), 1, &l, 0);
        }
        assert_eq!(limiter.subjects(), FORGET_ABOVE);
        limiter.admit("late", 1, &l, 5_000);
        assert_eq!(limiter.subjects(), 1, "every earlier bucket refilled");
    }

    /// Sends a frame every 100 ms from `from_ms` and returns when the
    /// limiter first decided to close.
    fn first_close(b: &mut Bucket, room: &mut RoomBudget, l: &Limits, from_ms: u64) -> u64 {
        (from_ms..from_ms + 10_000)
            .step_by(100)
            .find(|t| matches!(one(b, room, l, *t), Admission::Close { .. }))
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
        assert!(matches!(
            one(&mut b, &mut room, &l, 0),
            Admission::Limited { .. }
        ));
        assert_eq!(one(&mut b, &mut room, &l, 2_500), Admission::Accepted);
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
                one(b, &mut room, &l, 0);
            }
        }
        assert!(!room.constrained());
        one(&mut conns[0], &mut room, &l, 1000);
        assert!(room.constrained());
        assert_eq!(room.rate(100), 10.0);
        assert_eq!(room.rate(5), 5.0);
    }

    /// Sends `n` single publishes at `now` and counts those accepted.
    fn send(b: &mut Bucket, room: &mut RoomBudget, l: &Limits, n: u32, now: u64) -> u32 {
        (0..n)
            .filter(|_| one(b, room, l, now) == Admission::Accepted)
            .count() as u32
    }

    #[test]
    fn a_refused_publish_says_how_long_to_wait() {
        assert_eq!(Admission::Accepted.retry_after_ms(), None);
        let limited = Admission::Limited { retry_after_ms: 7 };
        assert_eq!(limited.retry_after_ms(), Some(7));
        let close = Admission::Close { retry_after_ms: 9 };
        assert_eq!(close.retry_after_ms(), Some(9));
        // A bucket that does not refill never fits a batch over its burst.
        let mut b = Bucket::new(5, 0);
        assert_eq!(b.take(10, 0, 0.0, 5), Err(u64::MAX));
    }

    #[test]
    fn a_run_of_strikes_ends_after_a_pause_of_more_than_a_second() {
        let mut b = Bucket::new(1, 0);
        assert_eq!(b.strike(5_000), 0);
        assert_eq!(b.strike(6_000), 1_000, "a second apart: the same run");
        assert_eq!(b.strike(7_001), 0, "more than a second apart: a new run");
    }

    #[test]
    fn a_bucket_is_idle_once_full_and_a_second_past_its_last_strike() {
        let mut b = Bucket::new(5, 10_000);
        assert_eq!(b.take(5, 10_000, 10.0, 5), Ok(()));
        assert!(!b.idle(10_400, 10.0, 5), "4 of 5 tokens back");
        assert!(b.idle(10_500, 10.0, 5), "full again");

        let mut b = Bucket::new(1, 20_000);
        assert_eq!(b.take(1, 20_000, 10.0, 1), Ok(()));
        assert!(b.take(1, 20_000, 10.0, 1).is_err());
        b.strike(20_000);
        assert!(
            !b.idle(21_000, 10.0, 1),
            "full, but limited a second ago: forgetting it would forget the run"
        );
        assert!(b.idle(21_001, 10.0, 1));
    }

    #[test]
    fn fair_share_starts_after_a_second_over_the_budget() {
        let l = limits(1000, 1000, 40);
        let (mut b, mut room) = (Bucket::new(1000, 0), RoomBudget::default());
        assert_eq!(send(&mut b, &mut room, &l, 40, 999), 40);
        send(&mut b, &mut room, &l, 1, 1000);
        assert!(!room.constrained(), "a second at the budget is not over it");
        assert_eq!(send(&mut b, &mut room, &l, 40, 1999), 40);
        send(&mut b, &mut room, &l, 1, 2000);
        assert!(room.constrained(), "41 in a second is over 40");
        assert_eq!(room.rate(1000), 40.0, "one publisher: the whole budget");

        let (mut b, mut room) = (Bucket::new(1000, 0), RoomBudget::default());
        send(&mut b, &mut room, &l, 50, 0);
        send(&mut b, &mut room, &l, 1, 2000);
        assert!(
            !room.constrained(),
            "the second before this one was empty, whatever came earlier"
        );
    }

    #[test]
    fn refused_demand_alone_does_not_start_fair_share() {
        let l = limits(100, 10, 15);
        let (mut b, mut room) = (Bucket::new(10, 0), RoomBudget::default());
        assert_eq!(send(&mut b, &mut room, &l, 20, 0), 10);
        send(&mut b, &mut room, &l, 1, 1000);
        assert!(!room.constrained(), "20 asked, 10 accepted, budget 15");
    }

    /// Two publishers of burst 10 take 20 in the first second of a room
    /// with a budget of 15, then ask 10 each in the second at a fair share
    /// of 7.5/s: 14 accepted (within the budget), 20 asked (over it).
    fn busy_second_under_fair_share() -> (Limits, [Bucket; 2], RoomBudget) {
        let l = limits(100, 10, 15);
        let (mut conns, mut room) = (
            [Bucket::new(10, 0), Bucket::new(10, 0)],
            RoomBudget::default(),
        );
        for b in conns.iter_mut() {
            assert_eq!(send(b, &mut room, &l, 10, 0), 10);
        }
        for b in conns.iter_mut() {
            assert_eq!(send(b, &mut room, &l, 10, 1000), 7);
            assert!(room.constrained(), "for the whole second");
            assert_eq!(room.rate(100), 7.5);
        }
        (l, conns, room)
    }

    #[test]
    fn fair_share_lasts_while_demand_is_over_the_budget() {
        let (l, [mut a, mut b], mut room) = busy_second_under_fair_share();
        // 0.5 tokens left and 7.5 refilled: 8 of 15 accepted, 15 asked.
        assert_eq!(send(&mut b, &mut room, &l, 15, 2000), 8);
        assert!(room.constrained(), "20 were asked in the second before");
        assert_eq!(room.rate(100), 7.5, "by two publishers");
        send(&mut a, &mut room, &l, 1, 3000);
        assert!(!room.constrained(), "15 asked fits a budget of 15");
    }

    #[test]
    fn an_empty_second_ends_fair_share() {
        let (l, [mut a, _], mut room) = busy_second_under_fair_share();
        send(&mut a, &mut room, &l, 1, 3000);
        assert!(!room.constrained(), "nothing was asked in 2000..3000");
    }

    #[test]
    fn messages_from_kafka_count_toward_the_room_budget() {
        let l = limits(100, 100, 40);
        let mut limiter = Limiter::default();
        assert_eq!(limiter.admit("alice", 1, &l, 0), Admission::Accepted);
        limiter.count_unlimited(50, &l, 500);
        assert_eq!(limiter.admit("alice", 1, &l, 1000), Admission::Accepted);
        assert!(limiter.room.constrained());
        assert_eq!(limiter.room.rate(100), 40.0, "alice is the one publisher");
    }
}
