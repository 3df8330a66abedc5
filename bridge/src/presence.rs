//! Room presence → broker: the presence events one room link carries, in
//! `pseq` order, and how far they may be acknowledged (`presence_ack`).
//!
//! An event counts as done once the broker stored it or, refused for good,
//! the dead-letter topic did; `confirmed` only ever names a `pseq` that is
//! done with every one before it. A broker that is not taking events fails
//! the link, as for messages: the room keeps what was not acknowledged and
//! sends it again on the next link (duplicates possible, gaps only where
//! the room itself dropped events and said so with `gap`). With presence
//! off each event is done as it arrives, unwritten.
//!
//! Each event's whole course (its delivery, then its dead letter if it was
//! refused) is one future kept in the queue until it resolves, so waiting
//! on [`PresenceRelay::next_confirmed`] can be cancelled by `select!` at
//! any point without losing track of an event.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::wire::PresenceEvent;
use tracing::{debug, warn};

use crate::broker::{DeadLetter, Delivery, Sink, SinkError};
use crate::dlq;
use crate::metrics::Metrics;
use crate::stop::Stop;

/// An event's course: `Err` when the link must go (the broker is not
/// taking events, or the bridge stopped while dead-lettering).
type Course = BoxFuture<'static, Result<(), String>>;

pub struct PresenceRelay {
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    stop: Stop,
    queue: VecDeque<(u64, Course)>,
    /// The highest `pseq` done so far, with every one before it.
    pub confirmed: Option<u64>,
}

impl PresenceRelay {
    pub fn new(sink: Arc<dyn Sink>, metrics: Arc<Metrics>, stop: Stop) -> PresenceRelay {
        PresenceRelay {
            sink,
            metrics,
            stop,
            queue: VecDeque::new(),
            confirmed: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands `event` to the broker (waiting while its queue is full), or,
    /// with presence off, queues it as done.
    pub async fn push(&mut self, event: PresenceEvent) {
        let pseq = event.pseq;
        let course = if self.sink.relays_presence() {
            let delivery = self.sink.presence(&event).await;
            let (sink, metrics, stop) =
                (self.sink.clone(), self.metrics.clone(), self.stop.clone());
            settle(delivery, event, sink, metrics, stop).boxed()
        } else {
            futures_util::future::ready(Ok(())).boxed()
        };
        self.queue.push_back((pseq, course));
    }

    /// Waits until the oldest event is done and returns its `pseq`.
    pub async fn next_confirmed(&mut self) -> Result<u64, String> {
        let (pseq, course) = self
            .queue
            .front_mut()
            .ok_or_else(|| "no presence event is pending".to_owned())?;
        course.await?;
        let pseq = *pseq;
        self.queue.pop_front();
        self.confirmed = Some(pseq);
        Ok(pseq)
    }
}

/// Waits for `event`'s delivery, dead-lettering it if the broker refused
/// it for good.
async fn settle(
    delivery: Delivery,
    event: PresenceEvent,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    mut stop: Stop,
) -> Result<(), String> {
    let (room, pseq) = (event.room.as_str(), event.pseq);
    match delivery.await {
        Ok(()) => {
            metrics.presence_stored();
            debug!(room, pseq, "presence event stored in the broker");
            Ok(())
        }
        Err(SinkError::Refused { reason, detail }) => {
            warn!(
                room,
                pseq, reason, "the broker refused the presence event for good: {detail}"
            );
            let letter = DeadLetter::presence(&event, &reason);
            let id = format!("presence:{room}:{pseq}");
            match dlq::send(&*sink, &letter, &id, &metrics, &mut stop).await {
                true => Ok(()),
                false => Err("stopped while dead-lettering a presence event".into()),
            }
        }
        Err(SinkError::Unavailable(why)) => Err(format!(
            "the broker did not take presence event {pseq}: {why}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySink;
    use crate::stop::Trigger;
    use serde_json::value::RawValue;

    fn event(pseq: u64, joins: &str) -> PresenceEvent {
        let raw = |text: &str| RawValue::from_string(text.into()).unwrap();
        PresenceEvent {
            room: "r".into(),
            pseq,
            at: 1,
            joins: raw(joins),
            leaves: raw("[]"),
            occupancy: raw(r#"{"connections":1,"users":1,"members":1}"#),
            gap: false,
        }
    }

    /// A relay into `sink`, with the trigger that keeps it from stopping.
    fn relay(sink: Arc<MemorySink>) -> (PresenceRelay, Arc<Metrics>, Trigger) {
        let metrics = Arc::new(Metrics::default());
        let (trigger, stop) = Stop::new();
        let relay = PresenceRelay::new(sink, metrics.clone(), stop);
        (relay, metrics, trigger)
    }

    async fn confirm_all(relay: &mut PresenceRelay) -> Vec<u64> {
        let mut confirmed = Vec::new();
        while !relay.is_empty() {
            confirmed.push(relay.next_confirmed().await.unwrap());
        }
        confirmed
    }

    #[tokio::test]
    async fn a_refused_event_is_dead_lettered_and_the_relay_moves_on() {
        let sink = Arc::new(MemorySink::refusing_over(100));
        let (mut relay, metrics, _trigger) = relay(sink.clone());
        let big = format!(r#"[{{"sub":"{}","metas":[]}}]"#, "u".repeat(200));
        for (pseq, joins) in [(1, "[]"), (2, big.as_str()), (3, "[]")] {
            relay.push(event(pseq, joins)).await;
        }
        assert_eq!(confirm_all(&mut relay).await, [1, 2, 3]);
        assert_eq!(relay.confirmed, Some(3));
        let stored: Vec<u64> = sink.presence_events().iter().map(|e| e.pseq).collect();
        assert_eq!(stored, [1, 3]);
        let letters = sink.dead_letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].headers[2], ("pseq", "2".to_owned()));
        assert!(metrics
            .render()
            .contains(r#"roomcast_bridge_presence_events_total{broker="kafka"} 2"#));
    }

    #[tokio::test]
    async fn an_unavailable_broker_fails_the_link_without_confirming() {
        let (mut relay, _, _trigger) = relay(Arc::new(MemorySink::unavailable()));
        relay.push(event(1, "[]")).await;
        assert!(relay.next_confirmed().await.is_err());
        assert_eq!(relay.confirmed, None);
    }

    #[tokio::test]
    async fn with_presence_off_events_are_done_unwritten() {
        let sink = Arc::new(MemorySink::unavailable().without_presence());
        let (mut relay, metrics, _trigger) = relay(sink.clone());
        relay.push(event(1, "[]")).await;
        relay.push(event(2, "[]")).await;
        assert_eq!(confirm_all(&mut relay).await, [1, 2]);
        assert!(sink.presence_events().is_empty());
        assert!(metrics
            .render()
            .contains(r#"roomcast_bridge_presence_events_total{broker="kafka"} 0"#));
    }
}
