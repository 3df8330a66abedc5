//! What the receivers of one room saw during one run.
//!
//! Every published `data` is a [`Stamp`]: the run it belongs to, its index
//! and its scheduled send time on [`crate::client::clock`]. Receivers (WebSocket
//! subscribers, pollers, Kafka consumers) hand each stamp to the room's
//! [`Recorder`], which keeps the latency and counts the delivery. Stamps of
//! another run are ignored, so connections can be reused across runs
//! without a late frame of one run polluting the next.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

/// The `data` of every benchmark message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stamp {
    /// Run id.
    pub r: u32,
    /// Index of the message within the run, per publisher.
    pub i: u64,
    /// Scheduled send time, µs on [`crate::client::clock`]. Scheduled rather than
    /// actual, so a publisher that falls behind shows up as latency instead
    /// of hiding it (coordinated omission).
    pub t: u64,
}

#[derive(Default)]
pub struct Recorder {
    run: AtomicU32,
    delivered: AtomicU64,
    requests: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    progress: Notify,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder::default())
    }

    /// Starts counting `run` from zero.
    pub fn begin(&self, run: u32) {
        self.run.store(run, Ordering::SeqCst);
        self.delivered.store(0, Ordering::SeqCst);
        self.requests.store(0, Ordering::SeqCst);
        self.latencies().clear();
    }

    /// One delivery of `stamp`, received at `received_us` on the clock.
    pub fn record(&self, stamp: Stamp, received_us: u64) {
        if stamp.r != self.run.load(Ordering::Relaxed) {
            return;
        }
        let latency = received_us.saturating_sub(stamp.t).min(u64::from(u32::MAX)) as u32;
        self.latencies().push(latency);
        self.delivered.fetch_add(1, Ordering::SeqCst);
        self.progress.notify_waiters();
    }

    /// One HTTP request made to receive.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The latencies recorded so far in this run, µs, unsorted.
    pub fn latencies_us(&self) -> Vec<u32> {
        self.latencies().clone()
    }

    /// Waits until `deliveries` have been recorded in this run, or until
    /// `deadline`; whether they were.
    pub async fn wait_for(&self, deliveries: u64, deadline: Instant) -> bool {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            // Registered before the check, so no notification is missed.
            notified.as_mut().enable();
            if self.delivered() >= deliveries {
                return true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                return self.delivered() >= deliveries;
            }
        }
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.latencies_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
