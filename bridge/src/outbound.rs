//! Room → broker: one task per room this instance owns, holding the room
//! link (docs/protocol.md, "Bridge links") and handing every message to the [`Sink`].
//!
//! Deliveries are awaited in seq order, and `bridge_ack` only ever names a
//! seq whose message, and every one before it, the broker stored, or, when
//! the broker refused it for good, the dead-letter topic stored. Anything
//! unacknowledged when the link or the broker fails is replayed by the room
//! on the next link: duplicates are possible, gaps are not, and no message
//! can stall its room's relay forever.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::wire::{BridgeFrame, Message, ServerFrame};
use roomcast_protocol::CloseCode;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::broker::{DeadLetter, Delivery, Sink, SinkError};
use crate::context::Bridge;
use crate::dlq;
use crate::link::{Link, LinkError};
use crate::metrics::{Metrics, TO_KAFKA};
use crate::stop::Stop;

/// How often confirmed progress is acknowledged to the room.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// How long a shutdown waits for outstanding deliveries.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a link ended.
enum End {
    /// Another instance took the room over (4009): do not reconnect.
    Superseded,
    /// The room retired (4010): its series go; the registry announces it
    /// again when it has a message.
    Retired,
    /// The bridge is shutting down.
    Stopped,
    /// Anything else: reconnect with backoff.
    Lost(String),
}

impl From<LinkError> for End {
    fn from(e: LinkError) -> End {
        match e.close_code() {
            Some(code) if code == CloseCode::Superseded.code() => End::Superseded,
            Some(code) if code == CloseCode::Retired.code() => End::Retired,
            _ => End::Lost(e.to_string()),
        }
    }
}

/// Relays `room` until superseded or stopped.
pub async fn run(bridge: Arc<Bridge>, room: String, mut stop: Stop) {
    let mut backoff = Backoff::network();
    let mut connected_before = false;
    loop {
        let end = relay(
            &bridge,
            &room,
            &mut stop,
            &mut backoff,
            &mut connected_before,
        )
        .await;
        bridge
            .metrics
            .link_up
            .with_label_values(&[room.as_str()])
            .set(0);
        match end {
            End::Superseded => {
                // The new owner exports the room's series from now on.
                info!(room, "room link superseded by another bridge instance");
                bridge.metrics.forget_room(&room);
                return;
            }
            End::Retired => {
                info!(room, "room retired");
                bridge.metrics.forget_room(&room);
                return;
            }
            End::Stopped => return,
            End::Lost(why) => {
                warn!(room, "room link lost: {why}");
                if !stop.pause(&mut backoff).await {
                    return;
                }
            }
        }
    }
}

async fn relay(
    bridge: &Bridge,
    room: &str,
    stop: &mut Stop,
    backoff: &mut Backoff,
    connected_before: &mut bool,
) -> End {
    let url = bridge.urls.room_link(room, &bridge.instance);
    let mut link = match Link::open(&url, &bridge.tokens, &bridge.tls).await {
        Ok(link) => link,
        Err(e) => return End::Lost(e.to_string()),
    };
    backoff.reset();
    // Touching the series exports it at 0 before the first reconnect.
    let reconnects = bridge.metrics.link_reconnects.with_label_values(&[room]);
    if std::mem::replace(connected_before, true) {
        reconnects.inc();
    }
    bridge.metrics.link_up.with_label_values(&[room]).set(1);
    let mut pending = Pending::new(bridge.sink.clone(), bridge.metrics.clone(), stop.clone());
    let mut acked: Option<u64> = None;
    let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
    loop {
        tokio::select! {
            frame = link.next() => match frame {
                Ok(ServerFrame::Message(message)) => pending.push(message.into_owned()).await,
                Ok(ServerFrame::Stats(report)) => bridge.metrics.room_stats(report.into_owned()),
                Ok(ServerFrame::Welcome(welcome)) => {
                    info!(room, cursor = welcome.cursor, head = welcome.head, "room link up")
                }
                Ok(ServerFrame::Error { code, message, .. }) => {
                    warn!(room, %code, "the room reported: {message}")
                }
                Ok(other) => debug!(room, "ignoring {other:?}"),
                Err(e) => return e.into(),
            },
            confirmed = pending.next_confirmed(), if !pending.is_empty() => {
                if let Err(why) = confirmed {
                    return End::Lost(why);
                }
            },
            _ = ack_tick.tick() => {
                if let Some(seq) = pending.confirmed.filter(|c| Some(*c) > acked) {
                    if let Err(e) = link.send(&BridgeFrame::BridgeAck { seq }).await {
                        return e.into();
                    }
                    acked = Some(seq);
                }
            },
            _ = stop.stopping() => {
                drain(room, link, pending, acked).await;
                return End::Stopped;
            },
        }
    }
}

/// On shutdown: waits (bounded) for outstanding deliveries, acknowledges
/// what the broker confirmed, and closes the link with 1001.
async fn drain(room: &str, mut link: Link, mut pending: Pending, acked: Option<u64>) {
    let wait = async {
        while !pending.is_empty() {
            if pending.next_confirmed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, wait).await.is_err() {
        warn!(
            room,
            "shutdown: deliveries still outstanding; the room will replay them"
        );
    }
    if let Some(seq) = pending.confirmed.filter(|c| Some(*c) > acked) {
        let _ = link.send(&BridgeFrame::BridgeAck { seq }).await;
    }
    link.close("bridge shutting down").await;
}

/// Where a message handed to the broker stands.
enum Stage {
    /// Waiting for the broker's report.
    Delivering(Delivery),
    /// Refused for good; waiting for the dead-letter topic (`false`: stopped).
    DeadLettering(BoxFuture<'static, bool>),
}

struct InFlight {
    message: Message,
    stage: Stage,
}

/// The messages handed to the broker and not yet confirmed, in seq order.
///
/// Each keeps its pending future inside the queue until it resolves, so
/// waiting on [`Pending::next_confirmed`] can be cancelled (by `select!`)
/// at any point without losing track of a message.
struct Pending {
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    stop: Stop,
    queue: VecDeque<InFlight>,
    /// The highest seq confirmed so far, with every one before it.
    confirmed: Option<u64>,
}

impl Pending {
    fn new(sink: Arc<dyn Sink>, metrics: Arc<Metrics>, stop: Stop) -> Pending {
        Pending {
            sink,
            metrics,
            stop,
            queue: VecDeque::new(),
            confirmed: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands `message` to the broker (waiting while its queue is full).
    async fn push(&mut self, message: Message) {
        let delivery = self.sink.publish(&message).await;
        self.queue.push_back(InFlight {
            message,
            stage: Stage::Delivering(delivery),
        });
    }

    /// Waits until the oldest message is confirmed, dead-lettering it first
    /// if the broker refused it for good. `Err` when the broker is not
    /// taking messages now (the room replays them on the next link).
    async fn next_confirmed(&mut self) -> Result<u64, String> {
        loop {
            let front = self
                .queue
                .front_mut()
                .ok_or_else(|| "nothing is pending".to_owned())?;
            match &mut front.stage {
                Stage::Delivering(delivery) => match delivery.await {
                    Ok(()) => return Ok(self.confirm()),
                    Err(SinkError::Refused { reason, detail }) => {
                        let message = &front.message;
                        warn!(
                            room = message.room,
                            id = message.id,
                            seq = message.seq,
                            reason,
                            "Kafka refused the message for good: {detail}"
                        );
                        let value = serde_json::to_vec(message).unwrap_or_default();
                        let letter = DeadLetter::message(message, value, &reason);
                        let (sink, metrics, mut stop) =
                            (self.sink.clone(), self.metrics.clone(), self.stop.clone());
                        let id = message.id.clone();
                        front.stage =
                            Stage::DeadLettering(
                                async move {
                                    dlq::send(&*sink, &letter, &id, &metrics, &mut stop).await
                                }
                                .boxed(),
                            );
                    }
                    Err(SinkError::Unavailable(why)) => {
                        let message = &front.message;
                        return Err(format!(
                            "Kafka did not take message {} (seq {}): {why}",
                            message.id, message.seq
                        ));
                    }
                },
                Stage::DeadLettering(writing) => {
                    return match writing.await {
                        true => Ok(self.confirm()),
                        false => Err("stopped while dead-lettering".into()),
                    };
                }
            }
        }
    }

    /// The front message is stored (in its topic or the dead-letter topic).
    fn confirm(&mut self) -> u64 {
        let done = self
            .queue
            .pop_front()
            .expect("confirming the front message");
        let message = done.message;
        if matches!(done.stage, Stage::Delivering(_)) {
            self.metrics.relayed.with_label_values(&[TO_KAFKA]).inc();
            let age = now_ms().saturating_sub(message.ts) as f64 / 1000.0;
            self.metrics
                .relay_seconds
                .with_label_values(&[TO_KAFKA])
                .observe(age);
            debug!(
                room = message.room,
                id = message.id,
                seq = message.seq,
                "delivered to Kafka"
            );
        }
        self.confirmed = Some(message.seq);
        message.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemorySink;
    use roomcast_protocol::wire::Origin;
    use serde_json::value::RawValue;

    fn message(seq: u64, data: &str) -> Message {
        Message {
            room: "r".into(),
            id: format!("m{seq}"),
            seq,
            ts: now_ms(),
            sender: "s".into(),
            origin: Origin::Ws,
            data: RawValue::from_string(data.into()).unwrap(),
            trace: None,
        }
    }

    #[tokio::test]
    async fn a_refused_message_is_dead_lettered_and_the_relay_moves_on() {
        let sink = Arc::new(MemorySink::refusing_over(100));
        let (_trigger, stop) = Stop::new();
        let mut pending = Pending::new(sink.clone(), Arc::new(Metrics::default()), stop);
        pending.push(message(1, "1")).await;
        pending
            .push(message(2, &format!("\"{}\"", "x".repeat(200))))
            .await;
        pending.push(message(3, "3")).await;
        let mut confirmed = Vec::new();
        while !pending.is_empty() {
            confirmed.push(pending.next_confirmed().await.unwrap());
        }
        assert_eq!(confirmed, [1, 2, 3]);
        let stored: Vec<u64> = sink.messages().iter().map(|m| m.seq).collect();
        assert_eq!(stored, [1, 3]);
        let letters = sink.dead_letters();
        assert_eq!(letters.len(), 1);
        let headers: Vec<(&str, &str)> = letters[0]
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            &headers[..4],
            [
                ("error", "too_large"),
                ("room", "r"),
                ("seq", "2"),
                ("message-id", "m2")
            ]
        );
    }

    #[tokio::test]
    async fn an_unavailable_broker_fails_the_link_without_confirming() {
        let sink = Arc::new(MemorySink::unavailable());
        let (_trigger, stop) = Stop::new();
        let mut pending = Pending::new(sink, Arc::new(Metrics::default()), stop);
        pending.push(message(1, "1")).await;
        assert!(pending.next_confirmed().await.is_err());
        assert_eq!(pending.confirmed, None);
    }
}
