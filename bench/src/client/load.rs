//! How load is offered, whatever carries it (a room's WebSocket, a Kafka
//! producer): paced, open loop, for latency; windowed, closed loop, for
//! capacity.
//!
//! Paced: message `i` is due at `start + i / rate` whatever happened to
//! earlier ones, and its stamp carries that due time, so a slow server
//! shows up as latency rather than as a politely slower publisher. The
//! timer ticks at most every millisecond; each tick releases every message
//! that has come due.
//!
//! Windowed: at most `window` messages not yet delivered to all of their
//! receivers. It is bounded by deliveries, not acks: the room acks a
//! publish before the broadcast has reached anyone, so an ack-bounded
//! publisher would measure how fast the room queues, not how fast it
//! delivers.

use std::future::Future;
use std::time::Duration;

use anyhow::Result;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::client::clock;
use crate::client::recorder::{Recorder, Stamp};

/// Something that publishes stamps.
pub trait Outlet {
    /// Sends `stamps` in order.
    fn send(&mut self, stamps: &[Stamp]) -> impl Future<Output = Result<()>> + Send;
}

/// Sends at `rate` per second for `duration`, starting after `phase`; how
/// many were sent. Several outlets at the same rate get different phases,
/// so that together they offer a steady load rather than bursts.
pub async fn paced(
    outlet: &mut impl Outlet,
    run: u32,
    rate: f64,
    duration: Duration,
    phase: Duration,
) -> Result<u64> {
    let total = messages(rate, duration);
    let period = Duration::from_secs_f64(1.0 / rate).max(Duration::from_millis(1));
    let start = Instant::now() + phase;
    let mut tick = interval_at(start, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let due_us = |i: u64| clock::micros((start + period_of(i, rate)).into_std());
    let mut sent = 0;
    let mut batch = Vec::new();
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        batch.clear();
        batch.extend((sent..due).map(|i| Stamp {
            r: run,
            i,
            t: due_us(i),
        }));
        if !batch.is_empty() {
            outlet.send(&batch).await?;
            sent = due;
        }
    }
    Ok(sent)
}

/// How many messages a paced run at `rate` per second for `duration` sends.
pub fn messages(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).round().max(1.0) as u64
}

fn period_of(i: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(i as f64 / rate)
}

/// Sends until `until`, keeping at most `window` messages not yet
/// delivered to all `fanout` receivers of `recorder`; how many were sent.
pub async fn windowed(
    outlet: &mut impl Outlet,
    run: u32,
    recorder: &Recorder,
    fanout: u64,
    window: u64,
    until: Instant,
) -> Result<u64> {
    let mut sent: u64 = 0;
    while Instant::now() < until {
        let needed = (sent + 1).saturating_sub(window) * fanout;
        if !recorder.wait_for(needed, until).await {
            break;
        }
        let stamp = Stamp {
            r: run,
            i: sent,
            t: clock::now_us(),
        };
        outlet.send(&[stamp]).await?;
        sent += 1;
    }
    Ok(sent)
}
