//! A message on its way into a room, before the room numbers and stores it:
//! the [`Draft`] a publisher sent, where it entered ([`Origin`]) and, for a
//! record the bridge consumed, its place in Kafka ([`KafkaPosition`]).
//!
//! A leaf: it imports nothing from this crate, so the wire formats, a room's
//! counters and trace context all use these types without importing one
//! another.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a message entered the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Ws,
    Http,
    Kafka,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Ws => "ws",
            Origin::Http => "http",
            Origin::Kafka => "kafka",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        [Origin::Ws, Origin::Http, Origin::Kafka]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One message to publish, from a `publish` frame or an HTTP body.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The JSON payload, validated and compact (no whitespace between tokens).
    pub data: Box<RawValue>,
    /// The publisher's idempotency key.
    pub id: Option<String>,
    /// The publisher's W3C `traceparent`, carried with the message.
    pub trace: Option<String>,
    /// Where the bridge consumed it (HTTP messages of the bridge's token
    /// only): the room remembers the highest offset it stored per
    /// topic-partition, so a record consumed again is a duplicate however
    /// long ago it was stored.
    pub kafka: Option<KafkaPosition>,
}

/// A record's place in its Kafka topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl KafkaPosition {
    /// The topic-partition, as one key.
    pub fn partition_key(&self) -> String {
        format!("{}:{}", self.topic, self.partition)
    }
}
