//! The seam between the relay and a message broker.
//!
//! The relay needs two things from a broker: a [`Sink`] that takes room
//! messages (and dead letters) and says when each is safely stored, and a
//! [`Source`] of records for rooms whose positions it commits once they are
//! in their room. Kafka implements both (`crate::kafka`); the unit tests use
//! in-memory ones (`crate::memory`). A second broker is one more
//! implementation of these two traits, not a change to the relay.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use roomcast_protocol::wire::Message;

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

    /// A source record no room took, with its `value` as it came.
    pub fn record(record: &Record, value: Option<&[u8]>, reason: &str) -> DeadLetter {
        DeadLetter {
            key: record.key.clone(),
            value: value.map(<[u8]>::to_vec),
            headers: vec![
                ("error", reason.to_owned()),
                ("source-topic", record.topic.to_string()),
                ("source-partition", record.position.partition.to_string()),
                ("source-offset", record.position.offset.to_string()),
                ("message-id", record.id.clone()),
            ],
        }
    }
}

/// Room → broker.
pub trait Sink: Send + Sync {
    /// Hands `message` to the broker, waiting while its queue is full. The
    /// returned [`Delivery`] resolves once the broker stored it.
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery>;

    /// Writes `letter` to the dead-letter topic and waits until it is stored.
    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Where a record sits in its source: what gets committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

/// One record from the broker, for the room its key names.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub position: Position,
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
    fn close(&mut self) -> Result<(), SourceError>;
}
