//! The bridge's shutdown signal, and the one way every loop waits.
//!
//! Every reconnect or retry loop of the bridge does the same two things:
//! wait before the next attempt, and give up at once when the bridge is
//! stopping. [`Stop::pause`] is that wait, so no loop can forget the second
//! half and hold a SIGTERM up for a whole backoff.

use std::time::Duration;

use tokio::sync::watch;

use crate::backoff::Backoff;

/// Tells every task to stop; dropping it stops them too.
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

/// A task's view of the shutdown signal; cheap to clone.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    pub fn new() -> (Trigger, Stop) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Stop(rx))
    }

    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the bridge is stopping (at once if it already is).
    pub async fn stopping(&mut self) {
        // An error means the trigger is gone, which is a stop as well.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Sleeps `delay`; `false` when the bridge started stopping first.
    pub async fn sleep(&mut self, delay: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(delay) => true,
            _ = self.stopping() => false,
        }
    }

    /// Waits out the next delay of `backoff`; `false` when stopping.
    pub async fn pause(&mut self, backoff: &mut Backoff) -> bool {
        let delay = backoff.next_delay();
        self.sleep(delay).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_cuts_a_wait_short() {
        let (trigger, mut stop) = Stop::new();
        let waiting = tokio::spawn(async move { stop.sleep(Duration::from_secs(3600)).await });
        trigger.fire();
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(!outcome.expect("the pause ended").expect("no panic"));
    }

    #[tokio::test]
    async fn a_dropped_trigger_is_a_stop() {
        let (trigger, mut stop) = Stop::new();
        drop(trigger);
        assert!(!stop.sleep(Duration::from_secs(3600)).await);
    }
}
