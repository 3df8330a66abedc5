//! What one bridge instance may spend on room links, shared by every room
//! task: how fast links are opened ([`Opens`]) and how many message bytes
//! wait for the broker's confirmation at once ([`InFlightBytes`]). With the
//! cap on links held at once (`room_tasks`), they bound the instance's
//! memory and its load on the worker however many rooms it owns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::stop::Stop;

/// Link opens, at most `per_sec` a second after a burst of as many: a
/// restart or a rebalance that hands the instance thousands of rooms opens
/// them gradually instead of all at once against the worker.
pub struct Opens {
    interval: Duration,
    /// How far ahead of the schedule a burst may run.
    burst: Duration,
    /// When the next open is due if none came early (the generic cell rate
    /// algorithm's "theoretical arrival time").
    due: Mutex<Instant>,
}

impl Opens {
    pub fn per_sec(per_sec: u32) -> Opens {
        let per_sec = per_sec.max(1);
        let interval = Duration::from_secs(1) / per_sec;
        Opens {
            interval,
            burst: interval * (per_sec - 1),
            due: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this open's turn; `false` when the bridge started stopping
    /// first. The turn is taken when asked, so waiting tasks go in order.
    pub async fn take(&self, stop: &mut Stop) -> bool {
        let at = {
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = now.max(due.checked_sub(self.burst).unwrap_or(now));
            *due = (*due).max(at) + self.interval;
            at
        };
        if stop.is_stopping() {
            return false;
        }
        match at.saturating_duration_since(Instant::now()) {
            wait if wait.is_zero() => true,
            wait => stop.sleep(wait).await,
        }
    }
}

/// Message bytes handed to the broker and not yet confirmed, across all
/// links. A message holds its permit until it is confirmed (or its link
/// gives it up for the room to replay), so a slow broker makes links stop
/// reading instead of the bridge buffering without bound.
#[derive(Clone)]
pub struct InFlightBytes {
    semaphore: Arc<Semaphore>,
    max: u32,
}

impl InFlightBytes {
    pub fn new(max: u32) -> InFlightBytes {
        let max = max.max(1);
        InFlightBytes {
            semaphore: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// Resolves once `bytes` fit, in the order the waits began; a message
    /// larger than the whole bound takes all of it, so it goes alone
    /// rather than never.
    pub fn acquire(&self, bytes: usize) -> BoxFuture<'static, OwnedSemaphorePermit> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, self.max);
        let semaphore = self.semaphore.clone();
        async move {
            match semaphore.acquire_many_owned(bytes).await {
                Ok(permit) => permit,
                // Never closed: nothing calls `close` on it.
                Err(_) => std::future::pending().await,
            }
        }
        .boxed()
    }

    /// Bytes free right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_are_paced_after_a_burst() {
        let opens = Opens::per_sec(10);
        let (_trigger, mut stop) = Stop::new();
        let start = Instant::now();
        for _ in 0..10 {
            assert!(opens.take(&mut stop).await);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a burst of one second's worth"
        );
        for _ in 0..20 {
            assert!(opens.take(&mut stop).await);
        }
        let paced = start.elapsed();
        assert!(
            paced >= Duration::from_millis(1900) && paced <= Duration::from_millis(2100),
            "20 opens past the burst at 10/s took {paced:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opens_are_shared_between_tasks() {
        let opens = Arc::new(Opens::per_sec(5));
        let start = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let opens = opens.clone();
                tokio::spawn(async move {
                    let (_trigger, mut stop) = Stop::new();
                    for _ in 0..5 {
                        assert!(opens.take(&mut stop).await);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // 20 opens at 5/s with a burst of 5: the last one at 3 s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(2900) && took <= Duration::from_millis(3100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_for_an_open() {
        let opens = Opens::per_sec(1);
        let (trigger, mut stop) = Stop::new();
        assert!(opens.take(&mut stop).await);
        trigger.fire();
        assert!(!opens.take(&mut stop).await);
    }

    #[tokio::test]
    async fn bytes_wait_for_confirmations() {
        let budget = InFlightBytes::new(100);
        let first = budget.acquire(60).await;
        let mut second = Box::pin(budget.acquire(60));
        assert!(
            futures_util::poll!(second.as_mut()).is_pending(),
            "60 + 60 bytes do not fit in 100"
        );
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("released bytes are handed on");
        assert_eq!(budget.available(), 40);
        drop(second);
        // Larger than the bound: it takes all of it, and only once free.
        let whole = budget.acquire(1_000).await;
        assert_eq!(budget.available(), 0);
        drop(whole);
        assert_eq!(budget.available(), 100);
    }
}
