//! RabbitMQ messages as the suites read and write them, with lapin (a real
//! client, as a backend would use): a queue of the test's own bound to an
//! exchange, a publisher that waits for each confirm, text headers, and
//! what a consumer receives until a condition holds (bounded).

use std::time::Duration;

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::Instant;

use crate::RabbitMq;

/// Declares a durable queue of the test's own (a quorum queue, as the
/// bridge's) bound to `exchange` with `key`.
pub async fn bind_queue(channel: &Channel, queue: &str, exchange: &str, key: &str) {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .unwrap_or_else(|e| panic!("declare queue {queue}: {e}"));
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("bind {queue} to {exchange}: {e}"));
}

/// Text headers, as the bridge reads them.
pub fn text_headers(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
    }
    table
}

/// A header of `properties` as text.
pub fn header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => Some(format!("{other:?}")),
    }
}

/// A publisher of the test's own, with confirms: each publish returns once
/// RabbitMQ has the message.
pub struct Publisher {
    pub channel: Channel,
    _connection: Connection,
}

impl Publisher {
    pub async fn new(rabbit: &RabbitMq) -> Publisher {
        let (connection, channel) = rabbit.channel().await;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Publisher {
            channel,
            _connection: connection,
        }
    }

    /// Publishes `body` to `exchange` under `routing_key` with `headers`,
    /// persistent, and waits for the broker's ack.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: FieldTable,
    ) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(headers),
            )
            .await
            .expect("publish");
        let confirmation = tokio::time::timeout(Duration::from_secs(30), confirm)
            .await
            .expect("a confirm within 30 s")
            .expect("the confirm");
        assert!(
            matches!(confirmation, Confirmation::Ack(None)),
            "RabbitMQ did not take the message: {confirmation:?}"
        );
    }
}

/// A message the tests read from a queue.
#[derive(Debug, Clone)]
pub struct Received {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.properties, name)
    }
}

/// Consumes `queue` on `channel` (auto-ack: the test only reads) until
/// `done` says enough; panics after `wait`.
pub async fn collect(
    channel: &Channel,
    queue: &str,
    wait: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    use futures_util::StreamExt;

    let tag = crate::room("test-consumer");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"));
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while !done(&got) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} messages from {queue} within {wait:?}",
            got.len()
        );
        if let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, consumer.next()).await {
            got.push(Received {
                routing_key: delivery.routing_key.to_string(),
                properties: delivery.properties,
                body: delivery.data,
            });
        }
    }
    let _ = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    got
}
