//! Room messages into RabbitMQ: the events exchange with the routing key,
//! properties and headers of docs/bridge.md, "RabbitMQ mapping", rooms'
//! presence events into the presence exchange ("Presence"), and the
//! dead-letter exchange.
//!
//! Every publish is persistent, `mandatory`, and on a channel in confirm
//! mode, so the [`Delivery`] resolves on the broker's own verdict: an ack
//! is stored (in every queue it was routed to); a message the broker
//! returned (basic.return: no queue is bound for its room) or nacked is
//! [`SinkError::Refused`] (`unroutable`, `nacked`), which the relay
//! dead-letters before it moves on; everything else (the connection or
//! channel lost, no confirm within [`DELIVERY_TIMEOUT`], a blocked
//! connection) is [`SinkError::Unavailable`] and the room replays. The
//! relay awaits deliveries in seq order, so a room's cursor only ever
//! passes what RabbitMQ confirmed. Presence events are published the same
//! way but not `mandatory`: an event no queue is bound for is one nobody
//! asked for, as a Kafka topic nobody reads, not a refusal to dead-letter.
//!
//! One connection and channel publish for every room, in the order each
//! room's link hands them over. When they fail they are rebuilt on the
//! next publish (or health check), no sooner than the backoff allows:
//! meanwhile publishes fail at once rather than queue, since the rooms
//! hold what the broker has not confirmed.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use roomcast_protocol::wire::{Message, PresenceEvent};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::Amqp;
use crate::backoff::Backoff;
use crate::broker::{message_headers, presence_value, DeadLetter, Delivery, Sink, SinkError};
use crate::metrics::BrokerHealth;

/// How long a published message may wait for its confirm, as Kafka's
/// producer waits: long enough to ride out a broker's restart, after which
/// the room link replays.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a dead letter may wait for its confirm.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);
/// AMQP's persistent delivery mode: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The publishing connection behind every exchange.
pub struct AmqpSink {
    amqp: Amqp,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    current: Option<Publisher>,
    /// After a failed connect: no new attempt before this.
    retry_at: Option<Instant>,
    backoff: Option<Backoff>,
    /// Whether the last attempt (or health check) found the broker up, so
    /// that a change is logged once, not every publish.
    up: bool,
}

struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }
}

impl AmqpSink {
    pub fn new(amqp: Amqp) -> AmqpSink {
        AmqpSink {
            amqp,
            state: Mutex::new(State::default()),
        }
    }

    /// The channel to publish on, connecting first if it is gone (no sooner
    /// than the backoff allows); `Err` when there is none, or the broker
    /// blocked the connection.
    async fn channel(&self) -> Result<Channel, SinkError> {
        match self.current().await {
            (Some(channel), false) => Ok(channel),
            (Some(_), true) => Err(SinkError::Unavailable(
                "RabbitMQ blocked the publishing connection (a memory or disk alarm)".into(),
            )),
            (None, _) => Err(SinkError::Unavailable(format!(
                "not connected to RabbitMQ at {}",
                self.amqp.target.shown()
            ))),
        }
    }

    /// The current channel, if any, and whether its connection is blocked.
    async fn current(&self) -> (Option<Channel>, bool) {
        let mut state = self.state.lock().await;
        if let Some(publisher) = &state.current {
            if publisher.usable() {
                return (
                    Some(publisher.channel.clone()),
                    publisher.connection.status().blocked(),
                );
            }
            warn!(
                url = self.amqp.target.shown(),
                "the publishing connection to RabbitMQ was lost; reconnecting"
            );
            state.current = None;
            state.up = false;
        }
        if state.retry_at.is_some_and(|at| Instant::now() < at) {
            return (None, false);
        }
        match self.connect().await {
            Ok(publisher) => {
                info!(url = self.amqp.target.shown(), "publishing to RabbitMQ");
                let channel = publisher.channel.clone();
                state.current = Some(publisher);
                state.retry_at = None;
                state.backoff = None;
                state.up = true;
                (Some(channel), false)
            }
            Err(why) => {
                if std::mem::take(&mut state.up) || state.backoff.is_none() {
                    warn!("RabbitMQ publishing connection: {why}; retrying with backoff");
                }
                let delay = state
                    .backoff
                    .get_or_insert_with(Backoff::network)
                    .next_delay();
                state.retry_at = Some(Instant::now() + delay);
                (None, false)
            }
        }
    }

    async fn connect(&self) -> Result<Publisher, String> {
        let (connection, channel) = self
            .amqp
            .connect("publisher")
            .await
            .map_err(|e| e.to_string())?;
        self.amqp
            .declare(&channel)
            .await
            .map_err(|e| e.to_string())?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("enabling publisher confirms: {e}"))?;
        Ok(Publisher {
            connection,
            channel,
        })
    }

    /// What `/healthz` says of the broker: connecting first if needed.
    pub async fn health(&self) -> BrokerHealth {
        match self.current().await {
            (Some(_), false) => BrokerHealth::Up,
            (Some(_), true) => BrokerHealth::Blocked,
            (None, _) => BrokerHealth::Down,
        }
    }

    /// On shutdown: waits (bounded) for the confirms still outstanding and
    /// closes the connection.
    pub async fn close(&self, timeout: Duration) {
        let mut state = self.state.lock().await;
        let Some(publisher) = state.current.take() else {
            return;
        };
        if tokio::time::timeout(timeout, publisher.channel.wait_for_confirms())
            .await
            .is_err()
        {
            warn!("RabbitMQ did not confirm everything within {timeout:?}; the rooms replay it");
        }
        let _ = publisher
            .connection
            .close(200, "bridge stopping".into())
            .await;
    }

    async fn send_message(&self, message: &Message) -> Delivery {
        let value = match serde_json::to_vec(message) {
            Ok(value) => value,
            Err(e) => return ready(Err(SinkError::Unavailable(e.to_string()))),
        };
        let events = self.amqp.events_exchange.as_str();
        self.send(events, &message.room, true, &value, properties(message))
            .await
    }

    async fn send_presence(&self, event: &PresenceEvent) -> Delivery {
        // Off: nothing to publish, so nothing to wait for.
        let Some(exchange) = &self.amqp.presence_exchange else {
            return ready(Ok(()));
        };
        let value = presence_value(event);
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("application/json".into())
            .with_timestamp(event.at / 1000);
        self.send(exchange, &event.room, false, value.as_bytes(), properties)
            .await
    }

    /// Publishes `body` to `exchange` under `key`; the [`Delivery`]
    /// resolves with the broker's confirm.
    async fn send(
        &self,
        exchange: &str,
        key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Delivery {
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(e) => return ready(Err(e)),
        };
        let options = BasicPublishOptions {
            mandatory,
            ..BasicPublishOptions::default()
        };
        let published = channel
            .basic_publish(exchange.into(), key.into(), options, body, properties)
            .await;
        match published {
            Ok(confirm) => confirmed(confirm, DELIVERY_TIMEOUT).boxed(),
            Err(e) => ready(Err(SinkError::Unavailable(format!("publishing: {e}")))),
        }
    }

    async fn send_dead_letter(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let channel = self.channel().await?;
        let confirm = channel
            .basic_publish(
                self.amqp.dead_letter_exchange.as_str().into(),
                routing_key(letter.key.as_deref()),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                letter.value.as_deref().unwrap_or_default(),
                BasicProperties::default()
                    .with_delivery_mode(PERSISTENT)
                    .with_headers(table(letter.headers.iter().map(|(k, v)| (*k, v.as_str())))),
            )
            .await
            .map_err(|e| SinkError::Unavailable(format!("publishing a dead letter: {e}")))?;
        confirmed(confirm, DEAD_LETTER_TIMEOUT).await
    }
}

fn ready(outcome: Result<(), SinkError>) -> Delivery {
    futures_util::future::ready(outcome).boxed()
}

/// The broker's verdict on one publish, within `timeout`.
async fn confirmed(confirm: PublisherConfirm, timeout: Duration) -> Result<(), SinkError> {
    match tokio::time::timeout(timeout, confirm).await {
        Err(_) => Err(SinkError::Unavailable(format!(
            "RabbitMQ confirmed nothing within {timeout:?}"
        ))),
        Ok(Err(e)) => Err(SinkError::Unavailable(e.to_string())),
        Ok(Ok(Confirmation::NotRequested)) => Err(SinkError::Unavailable(
            "the channel is not in confirm mode".into(),
        )),
        Ok(Ok(Confirmation::Ack(returned))) => verdict(
            true,
            returned.map(|r| (r.reply_code, r.reply_text.to_string())),
        ),
        Ok(Ok(Confirmation::Nack(returned))) => verdict(
            false,
            returned.map(|r| (r.reply_code, r.reply_text.to_string())),
        ),
    }
}

/// An ack of a message nobody returned is stored; a returned message
/// (basic.return, then its ack) reached no queue; a nack is the broker
/// refusing it. Both refusals are for good: publishing the same message
/// again would meet the same bindings or the same queue.
fn verdict(acked: bool, returned: Option<(u16, String)>) -> Result<(), SinkError> {
    match (acked, returned) {
        (true, None) => Ok(()),
        (_, Some((code, text))) => Err(SinkError::Refused {
            reason: "unroutable".into(),
            detail: format!("returned by the broker ({code} {text})"),
        }),
        (false, None) => Err(SinkError::Refused {
            reason: "nacked".into(),
            detail: "the broker nacked the message".into(),
        }),
    }
}

/// The properties of a room message: persistent, JSON, its id as the AMQP
/// `message_id` (what AMQP consumers deduplicate on), its `ts` as the
/// timestamp (seconds, as AMQP has it), and the headers of
/// docs/bridge.md, "RabbitMQ mapping".
pub fn properties(message: &Message) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(ShortString::from(message.id.as_str()))
        .with_timestamp(message.ts / 1000)
        .with_headers(headers(message))
}

/// [`message_headers`] as AMQP long strings: the names and values Kafka's
/// records carry.
pub fn headers(message: &Message) -> FieldTable {
    table(
        message_headers(message)
            .iter()
            .map(|(k, v)| (*k, v.as_str())),
    )
}

fn table<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    table
}

/// A dead letter's routing key: its key when that is text that fits a
/// routing key (255 bytes), else none; the dead-letter exchange is a
/// fanout, so the key only informs whoever reads the queue.
fn routing_key(key: Option<&[u8]>) -> ShortString {
    key.and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| k.len() <= 255)
        .unwrap_or_default()
        .into()
}

impl Sink for AmqpSink {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery> {
        self.send_message(message).boxed()
    }

    fn relays_presence(&self) -> bool {
        self.amqp.presence_exchange.is_some()
    }

    fn presence<'a>(&'a self, event: &'a PresenceEvent) -> BoxFuture<'a, Delivery> {
        self.send_presence(event).boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        self.send_dead_letter(letter).boxed()
    }
}

#[cfg(test)]
mod tests {
    use roomcast_protocol::draft::Origin;
    use serde_json::value::RawValue;

    use super::*;

    fn text(table: &FieldTable, key: &str) -> Option<String> {
        match table.inner().get(key)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            other => panic!("{key} is {other:?}, not text"),
        }
    }

    fn message(trace: Option<&str>) -> Message {
        Message {
            room: "chat.1".into(),
            id: "m-7".into(),
            seq: 42,
            ts: 1_700_000_123_456,
            sender: "alice".into(),
            origin: Origin::Http,
            data: RawValue::from_string(r#"{"x":1}"#.into()).unwrap(),
            trace: trace.map(str::to_owned),
        }
    }

    #[test]
    fn a_room_message_carries_its_id_room_seq_origin_and_trace() {
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let props = properties(&message(Some(trace)));
        assert_eq!(*props.delivery_mode(), Some(PERSISTENT));
        assert_eq!(props.message_id().as_ref().map(|i| i.as_str()), Some("m-7"));
        assert_eq!(*props.timestamp(), Some(1_700_000_123));
        let table = props.headers().as_ref().expect("headers");
        assert_eq!(text(table, "message-id").as_deref(), Some("m-7"));
        assert_eq!(text(table, "room").as_deref(), Some("chat.1"));
        assert_eq!(text(table, "seq").as_deref(), Some("42"));
        assert_eq!(text(table, "origin").as_deref(), Some("http"));
        assert_eq!(text(table, "traceparent").as_deref(), Some(trace));
        let untraced = headers(&message(None));
        assert_eq!(text(&untraced, "traceparent"), None);
        assert_eq!(untraced.inner().len(), 4);
    }

    #[test]
    fn only_an_unreturned_ack_is_stored() {
        assert_eq!(verdict(true, None), Ok(()));
        assert!(matches!(
            verdict(true, Some((312, "NO_ROUTE".into()))),
            Err(SinkError::Refused { reason, detail }) if reason == "unroutable" && detail.contains("NO_ROUTE")
        ));
        assert!(matches!(
            verdict(false, None),
            Err(SinkError::Refused { reason, .. }) if reason == "nacked"
        ));
    }

    #[test]
    fn a_dead_letter_is_routed_by_its_key_when_it_can_be() {
        assert_eq!(routing_key(Some(b"chat.1")).as_str(), "chat.1");
        assert_eq!(routing_key(None).as_str(), "");
        assert_eq!(routing_key(Some(&[0xff, 0xfe])).as_str(), "");
        assert_eq!(routing_key(Some("r".repeat(256).as_bytes())).as_str(), "");
    }
}
