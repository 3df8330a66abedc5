//! Records for rooms from the inbound topic, in the consumer group (docs/bridge.md,
//! "Kafka mapping").
//!
//! A record's idempotency key is its `message-id` header, or
//! `kafka:<topic>:<partition>:<offset>`, so a record delivered again after a
//! crash or a rebalance is stored once in its room. Offsets are committed
//! only when the relay says everything before them is done; the consumer
//! never commits by itself.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use roomcast_protocol::trace::is_traceparent;

use super::Kafka;
use crate::broker::{Position, PositionKind, Record, Source, SourceError, Sources};

/// The consumer, subscribed to the inbound topic.
pub struct KafkaSource {
    consumer: StreamConsumer,
    topic: Arc<str>,
    /// The last commit point of each partition, committed once more,
    /// synchronously, when the source closes.
    committed: BTreeMap<i32, i64>,
}

impl KafkaSource {
    pub fn subscribe(kafka: &Kafka) -> Result<KafkaSource, SourceError> {
        let consumer = kafka
            .consumer()
            .map_err(|e| SourceError::Fatal(format!("creating the consumer: {e}")))?;
        consumer.subscribe(&[&kafka.inbound_topic]).map_err(|e| {
            SourceError::Fatal(format!("subscribing to {}: {e}", kafka.inbound_topic))
        })?;
        Ok(KafkaSource {
            consumer,
            topic: kafka.inbound_topic.as_str().into(),
            committed: BTreeMap::new(),
        })
    }

    async fn receive(&mut self) -> Result<Record, SourceError> {
        match self.consumer.recv().await {
            Ok(message) => Ok(record(&self.topic, &message)),
            Err(e) => match self.consumer.client().fatal_error() {
                Some((code, reason)) => Err(SourceError::Fatal(format!("{code:?}: {reason}"))),
                None => Err(SourceError::Transient(e.to_string())),
            },
        }
    }
}

fn header<'a>(message: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn record(topic: &Arc<str>, message: &BorrowedMessage<'_>) -> Record {
    let position = Position {
        partition: message.partition(),
        offset: message.offset(),
    };
    // A `message-id` header is used as it is, even when the room will
    // refuse it (too long, empty, not text): the room decides, and the
    // record is dead-lettered with its reason instead of being stored under
    // an id its producer did not give it.
    let id = match message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "message-id"))
    {
        Some(header) => header
            .value
            .and_then(|v| std::str::from_utf8(v).ok())
            .unwrap_or_default()
            .to_owned(),
        None => format!("kafka:{topic}:{}:{}", position.partition, position.offset),
    };
    Record {
        topic: topic.clone(),
        position,
        kind: PositionKind::Offset,
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        id,
        // An invalid traceparent is dropped, not dead-lettered: W3C asks
        // receivers to ignore what they cannot parse.
        trace: header(message, "traceparent")
            .filter(|t| is_traceparent(t))
            .map(str::to_owned),
        timestamp_ms: message.timestamp().to_millis().map(|ms| ms.max(0) as u64),
    }
}

impl KafkaSource {
    fn send_commits(&self, points: &[(i32, i64)], mode: CommitMode) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for (partition, offset) in points {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .map_err(|e| SourceError::Transient(e.to_string()))?;
        }
        self.consumer
            .commit(&list, mode)
            .map_err(|e| SourceError::Transient(format!("committing {points:?}: {e}")))
    }
}

impl Source for KafkaSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Record, SourceError>> {
        self.receive().boxed()
    }

    fn commit(&mut self, partition: i32, offset: i64) -> Result<(), SourceError> {
        self.committed.insert(partition, offset);
        self.send_commits(&[(partition, offset)], CommitMode::Async)
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        let all: Vec<(i32, i64)> = self.committed.iter().map(|(p, o)| (*p, *o)).collect();
        let closed = if all.is_empty() {
            Ok(())
        } else {
            self.send_commits(&all, CommitMode::Sync)
        };
        futures_util::future::ready(closed).boxed()
    }
}

/// A consumer in the group, subscribed afresh each time the relay asks.
impl Sources for Kafka {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Source>, SourceError>> {
        let opened = KafkaSource::subscribe(self).map(|s| Box::new(s) as Box<dyn Source>);
        futures_util::future::ready(opened).boxed()
    }

    fn describe(&self) -> String {
        format!(
            "Kafka topic {} in group {}",
            self.inbound_topic, self.group_id
        )
    }
}
