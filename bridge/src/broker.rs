//! The seam between the relay and a message broker.
//!
//! The relay needs two things from a broker: a [`Sink`] that takes room
//! messages, presence events (and dead letters) and says when each is
//! safely stored, and a
//! [`Source`] of records for rooms whose positions it commits once they are
//! in their room ([`Sources`] opens one, again after it failed). Kafka
//! implements them (`crate::kafka`), and so does RabbitMQ (`crate::amqp`);
//! the unit tests use in-memory ones (`crate::memory`). A broker is one
//! more implementation of these traits, not a change to the relay: what
//! differs between brokers and the relay must know (whether a position
//! names a record for good) travels with each [`Record`].

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use roomcast_protocol::wire::{Message, PresenceEvent};
use serde::Serialize;
use serde_json::value::RawValue;

/// Which broker the bridge relays to: `--broker`, the `broker` of
/// `/healthz` and of the `roomcast_bridge_broker` series, and the
/// `to_<broker>` relay direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BrokerKind {
    #[default]
    Kafka,
    Amqp,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Kafka => "kafka",
            BrokerKind::Amqp => "amqp",
        }
    }

    /// The `direction` label of what the relay stores in this broker.
    pub fn direction(self) -> &'static str {
        match self {
            BrokerKind::Kafka => "to_kafka",
            BrokerKind::Amqp => "to_amqp",
        }
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Resolves when the broker has acknowledged (or refused) one message.
pub type Delivery = BoxFuture<'static, Result<(), SinkError>>;

/// Why the broker did not take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Refused for good (too large, invalid, against a policy): retrying
    /// cannot help, so the message goes to the dead-letter topic under
    /// `reason` and the relay moves on.
    #[error("refused ({reason}): {detail}")]
    Refused { reason: String, detail: String },
    /// Not now (broker unreachable, timed out, producer restarting): the
    /// relay retries, and the room replays whatever was not acknowledged.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The headers a room message carries into the broker (docs/bridge.md,
/// "Kafka mapping" and "RabbitMQ mapping"), as text: `message-id`, `room`,
/// `seq`, `origin`, and `traceparent` when the publisher sent one.
pub fn message_headers(message: &Message) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("message-id", message.id.clone()),
        ("room", message.room.clone()),
        ("seq", message.seq.to_string()),
        ("origin", message.origin.as_str().to_owned()),
    ];
    if let Some(trace) = &message.trace {
        headers.push(("traceparent", trace.clone()));
    }
    headers
}

/// The value a presence event is stored under (docs/bridge.md,
/// "Presence"): the link frame without `type` and `pseq`, which only
/// number it on one link, with its member lists as the room wrote them.
pub fn presence_value(event: &PresenceEvent) -> String {
    #[derive(Serialize)]
    struct Value<'a> {
        room: &'a str,
        at: u64,
        joins: &'a RawValue,
        leaves: &'a RawValue,
        occupancy: &'a RawValue,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
    }
    let value = Value {
        room: &event.room,
        at: event.at,
        joins: &event.joins,
        leaves: &event.leaves,
        occupancy: &event.occupancy,
        gap: event.gap,
    };
    serde_json::to_string(&value).expect("a presence value is plain JSON")
}

/// A message or record the relay could not deliver, on its way to the
/// dead-letter topic with headers saying why and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// `error` (the reason) first, then the origin headers.
    pub headers: Vec<(&'static str, String)>,
}

impl DeadLetter {
    /// The reason, from the `error` header.
    pub fn reason(&self) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| *k == "error")
            .map_or("unknown", |(_, v)| v.as_str())
    }

    /// A room message the broker refused: keyed by room, with the room, seq
    /// and id headers a consumer of the dead-letter topic needs to find it.
    pub fn message(message: &Message, value: Vec<u8>, reason: &str) -> DeadLetter {
        let mut headers = vec![
            ("error", reason.to_owned()),
            ("room", message.room.clone()),
            ("seq", message.seq.to_string()),
            ("message-id", message.id.clone()),
            ("origin", message.origin.as_str().to_owned()),
        ];
        if let Some(trace) = &message.trace {
            headers.push(("traceparent", trace.clone()));
        }
        DeadLetter {
            key: Some(message.room.clone().into_bytes()),
            value: Some(value),
            headers,
        }
    }

    /// A presence event the broker refused: keyed and valued as it would
    /// have been stored, with the room and `pseq` headers.
    pub fn presence(event: &PresenceEvent, reason: &str) -> DeadLetter {
        DeadLetter {
            key: Some(event.room.clone().into_bytes()),
            value: Some(presence_value(event).into_bytes()),
            headers: vec![
                ("error", reason.to_owned()),
                ("room", event.room.clone()),
                ("pseq", event.pseq.to_string()),
            ],
        }
    }

    /// A source record no room took, with its `value` as it came and
    /// where it came from: a log's topic, partition and offset, or a
    /// queue (a delivery tag would name nothing once the channel is gone).
    pub fn record(record: &Record, value: Option<&[u8]>, reason: &str) -> DeadLetter {
        let mut headers = vec![("error", reason.to_owned())];
        match record.kind {
            PositionKind::Offset => headers.extend([
                ("source-topic", record.topic.to_string()),
                ("source-partition", record.position.partition.to_string()),
                ("source-offset", record.position.offset.to_string()),
            ]),
            PositionKind::DeliveryTag => headers.push(("source-queue", record.topic.to_string())),
        }
        headers.push(("message-id", record.id.clone()));
        DeadLetter {
            key: record.key.clone(),
            value: value.map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// Room → broker.
pub trait Sink: Send + Sync {
    /// Hands `message` to the broker, waiting while its queue is full. The
    /// returned [`Delivery`] resolves once the broker stored it.
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery>;

    /// Whether presence events are stored at all (an empty
    /// `--presence-topic` or `--amqp-presence-exchange` turns them off).
    fn relays_presence(&self) -> bool;

    /// Hands a room's presence event to the broker, keyed by its room, as
    /// [`Sink::publish`] does a message.
    fn presence<'a>(&'a self, event: &'a PresenceEvent) -> BoxFuture<'a, Delivery>;

    /// Writes `letter` to the dead-letter topic and waits until it is stored.
    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Where a record sits in its source: what gets committed. Within one
/// `partition`, offsets grow in the order the source hands records out,
/// and committing an offset says every record before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// What a record's [`Position`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionKind {
    /// A place in a log (Kafka's partition and offset): the record keeps
    /// it for good, so a room can recognise the record by it when it is
    /// consumed again, and a dead letter can point at it.
    Offset,
    /// One delivery on one channel (AMQP's delivery tag, the channel as
    /// the partition): it orders commits (acks) and nothing else; a record
    /// delivered again gets a new one.
    DeliveryTag,
}

/// One record from the broker, for the room its key names.
#[derive(Debug, Clone)]
pub struct Record {
    /// The topic (Kafka) or queue (AMQP) it came from.
    pub topic: Arc<str>,
    pub position: Position,
    pub kind: PositionKind,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The idempotency key the room stores it under, so redelivery after a
    /// crash is a duplicate in the room, not a second message.
    pub id: String,
    /// A valid W3C `traceparent` the producer attached.
    pub trace: Option<String>,
    /// When the broker got it, for the relay latency histogram.
    pub timestamp_ms: Option<u64>,
}

/// Why the source stopped giving records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A hiccup: try the next record.
    #[error("{0}")]
    Transient(String),
    /// The client cannot go on: it must be rebuilt.
    #[error("fatal: {0}")]
    Fatal(String),
}

/// Broker → rooms.
pub trait Source: Send {
    /// The next record, waiting for one.
    fn next(&mut self) -> BoxFuture<'_, Result<Record, SourceError>>;

    /// Everything of `partition` before `offset` is in its room (or
    /// dead-lettered): resume there after a restart.
    fn commit(&mut self, partition: i32, offset: i64) -> Result<(), SourceError>;

    /// Makes the commits so far durable before the source goes away.
    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>>;
}

/// Opens the [`Source`] the inbound relay consumes, and a fresh one after
/// a source failed for good.
pub trait Sources: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Source>, SourceError>>;

    /// Where records come from, for the log (no secrets).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: PositionKind) -> Record {
        Record {
            topic: "roomcast.inbound".into(),
            position: Position {
                partition: 2,
                offset: 7,
            },
            kind,
            key: Some(b"chat.1".to_vec()),
            value: None,
            id: "m-1".into(),
            trace: None,
            timestamp_ms: None,
        }
    }

    #[test]
    fn a_presence_value_is_the_frame_without_type_and_pseq() {
        let raw = |text: &str| RawValue::from_string(text.into()).unwrap();
        let mut event = PresenceEvent {
            room: "chat.1".into(),
            pseq: 7,
            at: 1700,
            joins: raw(r#"[{"sub":"u","metas":[{"conn_id":"c"}]}]"#),
            leaves: raw("[]"),
            occupancy: raw(r#"{"connections":1,"users":1,"members":1}"#),
            gap: false,
        };
        assert_eq!(
            presence_value(&event),
            r#"{"room":"chat.1","at":1700,"joins":[{"sub":"u","metas":[{"conn_id":"c"}]}],"leaves":[],"occupancy":{"connections":1,"users":1,"members":1}}"#
        );
        event.gap = true;
        assert!(presence_value(&event).ends_with(r#","gap":true}"#));
        let letter = DeadLetter::presence(&event, "too_large");
        assert_eq!(letter.reason(), "too_large");
        assert_eq!(letter.key.as_deref(), Some(b"chat.1".as_slice()));
        assert_eq!(letter.value, Some(presence_value(&event).into_bytes()));
        assert_eq!(letter.headers[2], ("pseq", "7".to_owned()));
    }

    #[test]
    fn a_dead_letter_points_at_a_log_place_but_only_names_a_queue() {
        let names =
            |letter: &DeadLetter| -> Vec<&str> { letter.headers.iter().map(|(k, _)| *k).collect() };
        let kafka = DeadLetter::record(&record(PositionKind::Offset), Some(b"x"), "too_large");
        assert_eq!(
            names(&kafka),
            [
                "error",
                "source-topic",
                "source-partition",
                "source-offset",
                "message-id"
            ]
        );
        assert_eq!(kafka.reason(), "too_large");
        let amqp = DeadLetter::record(&record(PositionKind::DeliveryTag), None, "bad_format");
        assert_eq!(names(&amqp), ["error", "source-queue", "message-id"]);
        assert_eq!(amqp.headers[1].1, "roomcast.inbound");
        assert_eq!(amqp.key.as_deref(), Some(b"chat.1".as_slice()));
    }
}
