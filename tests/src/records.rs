//! Kafka records as the suites read and write them: collect what a consumer
//! receives until a condition holds (bounded), read headers, produce a
//! record with headers.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::time::Instant;

/// Records from `consumer` until `done` says enough; panics after `wait`.
pub async fn collect(
    consumer: &StreamConsumer,
    wait: Duration,
    done: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let deadline = Instant::now() + wait;
    let mut records = Vec::new();
    while !done(&records) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} records within {wait:?}",
            records.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
            records.push(m.detach());
        }
    }
    records
}

/// The value of header `name`, as text.
pub fn header(record: &OwnedMessage, name: &str) -> Option<String> {
    record
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
}

/// Every header of `record`, as text.
pub fn headers(record: &OwnedMessage) -> HashMap<String, String> {
    record
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Produces `value` under `key` (none when empty) to `topic` with `headers`,
/// and waits for the broker's acknowledgement; where the record went
/// (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    value: &str,
    headers: &[(&str, &str)],
) -> (i32, i64) {
    let mut record = FutureRecord::<str, str>::to(topic).payload(value);
    if !key.is_empty() {
        record = record.key(key);
    }
    if !headers.is_empty() {
        let owned = headers.iter().fold(OwnedHeaders::new(), |all, (k, v)| {
            all.insert(Header {
                key: k,
                value: Some(*v),
            })
        });
        record = record.headers(owned);
    }
    let delivery = producer
        .send(record, Duration::from_secs(30))
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    (delivery.partition, delivery.offset)
}
