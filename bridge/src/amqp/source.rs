//! Records for rooms from the inbound queue (docs/bridge.md, "RabbitMQ
//! mapping"), consumed with manual acks and a bounded prefetch.
//!
//! What a [`Position`] means here: RabbitMQ numbers the deliveries of a
//! channel 1, 2, 3, … (the delivery tag), in the order it hands them out,
//! and one ack with `multiple` settles every delivery up to a tag. So the
//! offset is the delivery tag and the partition is the channel (one
//! channel per source, numbered per process): the relay's commit of
//! `(channel, n)`, "everything before `n` is in its room", is
//! `basic.ack(n - 1, multiple)`, sent in order, never past a delivery that
//! is still out; nothing is acked before its room stored it (or it was
//! dead-lettered). A delivery tag means nothing on another channel: when
//! the channel or its connection goes, the source fails for good, the relay
//! opens a new one, RabbitMQ delivers again whatever was not acked, under
//! new tags, and commits still arriving for the old channel are dropped.
//! Tags name deliveries, not messages, so records carry
//! [`PositionKind::DeliveryTag`] and rooms are never told them as places.
//!
//! A record's idempotency key is its `message-id` header, else its AMQP
//! `message_id` property: a message delivered again after a crash is then
//! stored once in its room. A message with neither has nothing stable to be
//! known by, so it gets a fresh `amqp:` id per delivery and may be stored
//! twice after a crash (at least once, as documented). Its room is its
//! `room` header, else its routing key.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use roomcast_protocol::trace::is_traceparent;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::Amqp;
use crate::broker::{Position, PositionKind, Record, Source, SourceError, Sources};

/// How long closing waits for the acks still queued to be sent.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The channels of this process, numbered: a source's partition.
static CHANNELS: AtomicI32 = AtomicI32::new(0);

/// A consumer of the inbound queue, on a connection and channel of its own.
pub struct AmqpSource {
    queue: Arc<str>,
    /// This source's channel, as the partition of its positions.
    channel_number: i32,
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    /// Delivery tags to ack through, in order, to [`acknowledge`].
    acks: Option<mpsc::UnboundedSender<u64>>,
    acker: Option<JoinHandle<()>>,
}

impl AmqpSource {
    /// Connects, declares the topology, sets the prefetch and starts
    /// consuming.
    pub async fn open(amqp: &Amqp) -> Result<AmqpSource, SourceError> {
        let fatal = |e: &dyn std::fmt::Display| SourceError::Fatal(e.to_string());
        let (connection, channel) = amqp.connect("consumer").await.map_err(|e| fatal(&e))?;
        amqp.declare(&channel).await.map_err(|e| fatal(&e))?;
        channel
            .basic_qos(amqp.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| SourceError::Fatal(format!("setting the prefetch: {e}")))?;
        let consumer = channel
            .basic_consume(
                amqp.inbound_queue.as_str().into(),
                format!("roomcast-bridge {}", amqp.instance).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                SourceError::Fatal(format!("consuming from {}: {e}", amqp.inbound_queue))
            })?;
        let (acks, tags) = mpsc::unbounded_channel();
        let acker = tokio::spawn(acknowledge(channel.clone(), tags));
        Ok(AmqpSource {
            queue: amqp.inbound_queue.as_str().into(),
            channel_number: CHANNELS.fetch_add(1, Ordering::Relaxed),
            connection,
            channel,
            consumer,
            acks: Some(acks),
            acker: Some(acker),
        })
    }

    async fn receive(&mut self) -> Result<Record, SourceError> {
        match self.consumer.next().await {
            Some(Ok(delivery)) => Ok(record(
                &self.queue,
                self.channel_number,
                delivery.delivery_tag,
                delivery.routing_key.as_str(),
                &delivery.properties,
                delivery.data,
            )),
            Some(Err(e)) => Err(SourceError::Fatal(format!("consuming: {e}"))),
            None => Err(SourceError::Fatal(
                "the broker cancelled the consumer (was the queue deleted?)".into(),
            )),
        }
    }
}

/// Acks through each tag it is sent, in order, skipping those a later
/// one already covers (`multiple` settles everything up to it).
async fn acknowledge(channel: Channel, mut tags: mpsc::UnboundedReceiver<u64>) {
    let mut through = 0;
    while let Some(mut tag) = tags.recv().await {
        while let Ok(later) = tags.try_recv() {
            tag = tag.max(later);
        }
        if tag <= through {
            continue;
        }
        let multiple = BasicAckOptions { multiple: true };
        if let Err(e) = channel.basic_ack(tag, multiple).await {
            // The channel is gone: what was not acked is delivered again,
            // and the consumer's stream ends with the error.
            warn!("acking deliveries through {tag}: {e}");
            return;
        }
        through = tag;
    }
}

/// The delivery tag to ack through when everything before `offset` is
/// done; none while nothing is (tags start at 1).
pub fn ack_through(offset: i64) -> Option<u64> {
    u64::try_from(offset)
        .ok()?
        .checked_sub(1)
        .filter(|t| *t > 0)
}

/// Header `name` as text (AMQP's long and short strings).
fn header(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The record for delivery `tag` on channel `channel_number` of `queue`.
pub fn record(
    queue: &Arc<str>,
    channel_number: i32,
    tag: u64,
    routing_key: &str,
    properties: &BasicProperties,
    data: Vec<u8>,
) -> Record {
    let headers = properties.headers().as_ref();
    // A `message-id` is used as it is, even when the room will refuse it:
    // the room decides, and the record is dead-lettered with its reason
    // instead of being stored under an id its producer did not give it.
    let id = header(headers, "message-id")
        .or_else(|| {
            properties
                .message_id()
                .as_ref()
                .map(|i| i.as_str().to_owned())
        })
        .unwrap_or_else(|| format!("amqp:{:032x}", rand::random::<u128>()));
    let room = header(headers, "room").unwrap_or_else(|| routing_key.to_owned());
    Record {
        topic: queue.clone(),
        position: Position {
            partition: channel_number,
            offset: i64::try_from(tag).unwrap_or(i64::MAX),
        },
        kind: PositionKind::DeliveryTag,
        key: Some(room.into_bytes()),
        value: Some(data),
        id,
        // An invalid traceparent is dropped, not dead-lettered: W3C asks
        // receivers to ignore what they cannot parse.
        trace: header(headers, "traceparent").filter(|t| is_traceparent(t)),
        // AMQP timestamps are seconds; 0 is no timestamp.
        timestamp_ms: properties
            .timestamp()
            .filter(|s| *s > 0)
            .map(|s| s.saturating_mul(1000)),
    }
}

impl Source for AmqpSource {
    fn next(&mut self) -> BoxFuture<'_, Result<Record, SourceError>> {
        self.receive().boxed()
    }

    fn commit(&mut self, partition: i32, offset: i64) -> Result<(), SourceError> {
        if partition != self.channel_number {
            debug!(
                partition,
                offset, "a commit for a channel that is gone: dropped"
            );
            return Ok(());
        }
        let (Some(tag), Some(acks)) = (ack_through(offset), &self.acks) else {
            return Ok(());
        };
        acks.send(tag)
            .map_err(|_| SourceError::Transient("the acker stopped (the channel is gone)".into()))
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        async move {
            // The acks queued so far go out before the channel closes; what
            // is not acked then is delivered again, to whoever consumes next.
            self.acks.take();
            if let Some(acker) = self.acker.take() {
                if tokio::time::timeout(CLOSE_TIMEOUT, acker).await.is_err() {
                    warn!("the last acks were not sent within {CLOSE_TIMEOUT:?}; RabbitMQ delivers those records again");
                }
            }
            let closing = async {
                let _ = self.channel.close(200, "bridge stopping".into()).await;
                let _ = self.connection.close(200, "bridge stopping".into()).await;
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
            Ok(())
        }
        .boxed()
    }
}

/// A consumer of the inbound queue, on a fresh connection each time the
/// relay asks.
impl Sources for Amqp {
    fn open(&self) -> BoxFuture<'_, Result<Box<dyn Source>, SourceError>> {
        async move {
            let source = AmqpSource::open(self).await?;
            Ok(Box::new(source) as Box<dyn Source>)
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!(
            "RabbitMQ queue {} at {}",
            self.inbound_queue,
            self.target.shown()
        )
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{LongString, ShortString};

    use super::*;

    fn table(pairs: &[(&str, &str)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (k, v) in pairs {
            table.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
        }
        table
    }

    #[test]
    fn a_commit_acks_through_the_delivery_before_it() {
        assert_eq!(ack_through(2), Some(1), "tag 1 done: ack through 1");
        assert_eq!(ack_through(501), Some(500));
        assert_eq!(ack_through(1), None, "nothing done yet");
        assert_eq!(ack_through(0), None);
        assert_eq!(ack_through(-3), None);
    }

    #[test]
    fn a_delivery_is_a_record_positioned_by_channel_and_tag() {
        let queue: Arc<str> = "roomcast.inbound".into();
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from("prop-id"))
            .with_timestamp(1_700_000_000)
            .with_headers(table(&[("message-id", "hdr-id"), ("traceparent", trace)]));
        let r = record(&queue, 3, 17, "chat.1", &properties, b"{}".to_vec());
        assert_eq!(
            r.position,
            Position {
                partition: 3,
                offset: 17
            }
        );
        assert_eq!(r.kind, PositionKind::DeliveryTag);
        assert_eq!(
            r.key.as_deref(),
            Some(b"chat.1".as_slice()),
            "the routing key"
        );
        assert_eq!(r.id, "hdr-id", "the header wins over the property");
        assert_eq!(r.trace.as_deref(), Some(trace));
        assert_eq!(r.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(&*r.topic, "roomcast.inbound");
    }

    #[test]
    fn the_room_header_and_message_id_property_are_used_when_given() {
        let queue: Arc<str> = "q".into();
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from("prop-id"))
            .with_headers(table(&[("room", "chat.2"), ("traceparent", "garbage")]));
        let r = record(&queue, 0, 1, "q", &properties, Vec::new());
        assert_eq!(r.key.as_deref(), Some(b"chat.2".as_slice()));
        assert_eq!(r.id, "prop-id");
        assert_eq!(r.trace, None, "an invalid traceparent is dropped");
        assert_eq!(r.timestamp_ms, None);
    }

    #[test]
    fn a_message_without_an_id_gets_a_fresh_one_per_delivery() {
        let queue: Arc<str> = "q".into();
        let properties = BasicProperties::default();
        let a = record(&queue, 0, 1, "r", &properties, Vec::new());
        let b = record(&queue, 0, 1, "r", &properties, Vec::new());
        assert!(a.id.starts_with("amqp:") && a.id.len() == 37, "{}", a.id);
        assert_ne!(a.id, b.id);
    }
}
