//! Kafka → rooms (SPEC section 6): consumes the inbound topic in the
//! consumer group, publishes records into their rooms with the batch API,
//! and commits offsets only once every record of a batch is either in its
//! room (201) or in the dead-letter topic.
//!
//! Each record's idempotency key is its `message-id` header, or
//! `kafka:<topic>:<partition>:<offset>`, so a batch retried after a crash or
//! a timeout is stored once: delivery into rooms is effectively once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::policy::{depth, MAX_DEPTH};
use roomcast_protocol::wire::MAX_BATCH;
use roomcast_protocol::RoomName;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::metrics::TO_ROOM;
use crate::relay::Bridge;
use crate::worker_api::{Batch, Outgoing};

/// How long the consumer waits for more records to fill a batch.
const LINGER: Duration = Duration::from_millis(5);

/// A record that may go into a room.
struct Ready<'a> {
    record: &'a OwnedMessage,
    data: &'a RawValue,
    id: String,
}

pub async fn run(bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let Some(consumer) = subscribe(&bridge, &mut stop).await else {
        return;
    };
    loop {
        let first = tokio::select! {
            received = consumer.recv() => received,
            _ = stop.changed() => break,
        };
        let first = match first {
            Ok(m) => m.detach(),
            Err(e) => {
                warn!("inbound consumer: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout(LINGER, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                _ => break,
            }
        }
        if !deliver(&bridge, &batch, &mut stop).await {
            break;
        }
        for record in &batch {
            if let Err(e) =
                consumer.store_offset(record.topic(), record.partition(), record.offset())
            {
                warn!(
                    "storing offset {}:{}: {e}",
                    record.partition(),
                    record.offset()
                );
            }
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            warn!("committing offsets: {e}");
        }
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        debug!("final commit: {e}");
    }
}

async fn subscribe(bridge: &Bridge, stop: &mut watch::Receiver<bool>) -> Option<StreamConsumer> {
    let mut backoff = Backoff::network();
    loop {
        match kafka_consumer(bridge) {
            Ok(consumer) => return Some(consumer),
            Err(e) => warn!("inbound consumer: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return None,
        }
    }
}

fn kafka_consumer(bridge: &Bridge) -> Result<StreamConsumer, String> {
    let consumer = crate::kafka::consumer(&bridge.brokers, &bridge.group_id, &bridge.instance)
        .map_err(|e| e.to_string())?;
    consumer
        .subscribe(&[&bridge.inbound_topic])
        .map_err(|e| e.to_string())?;
    info!(
        topic = bridge.inbound_topic,
        group = bridge.group_id,
        "consuming"
    );
    Ok(consumer)
}

/// Why a record cannot go into a room: the DLQ `error` header.
fn check<'a>(
    bridge: &Bridge,
    record: &'a OwnedMessage,
) -> Result<(String, &'a RawValue), &'static str> {
    let key = record.key().ok_or("no_key")?;
    let room = std::str::from_utf8(key)
        .ok()
        .and_then(RoomName::parse)
        .ok_or("bad_room")?;
    let payload = record.payload().ok_or("bad_format")?;
    if payload.len() > bridge.max_message_bytes {
        return Err("too_large");
    }
    let data: &RawValue = serde_json::from_slice(payload).map_err(|_| "bad_format")?;
    let value: Value = serde_json::from_str(data.get()).map_err(|_| "bad_format")?;
    if depth(&value) > MAX_DEPTH {
        return Err("bad_format");
    }
    Ok((room.as_str().to_owned(), data))
}

fn idempotency_key(record: &OwnedMessage) -> String {
    let header = record.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == "message-id")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_owned)
    });
    header.unwrap_or_else(|| {
        format!(
            "kafka:{}:{}:{}",
            record.topic(),
            record.partition(),
            record.offset()
        )
    })
}

/// Delivers a batch: bad records to the DLQ, the rest into their rooms in
/// order. Returns false only when stopped before finishing.
async fn deliver(
    bridge: &Bridge,
    batch: &[OwnedMessage],
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut by_room: BTreeMap<String, Vec<Ready<'_>>> = BTreeMap::new();
    for record in batch {
        match check(bridge, record) {
            Ok((room, data)) => by_room.entry(room).or_default().push(Ready {
                record,
                data,
                id: idempotency_key(record),
            }),
            Err(reason) => {
                if !dead_letter(bridge, record, reason, stop).await {
                    return false;
                }
            }
        }
    }
    for (room, records) in by_room {
        if !publish(bridge, &room, &records, stop).await {
            return false;
        }
    }
    true
}

/// Publishes `records` into `room`, retrying transient failures; records the
/// room refuses go to the DLQ one by one.
async fn publish(
    bridge: &Bridge,
    room: &str,
    records: &[Ready<'_>],
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut backoff = Backoff::network();
    loop {
        match post(bridge, room, records).await {
            Ok(()) => {
                let now = now_ms();
                for ready in records {
                    bridge.metrics.relayed.with_label_values(&[TO_ROOM]).inc();
                    if let Some(ts) = ready.record.timestamp().to_millis() {
                        let age = now.saturating_sub(ts.max(0) as u64) as f64 / 1000.0;
                        bridge
                            .metrics
                            .relay_seconds
                            .with_label_values(&[TO_ROOM])
                            .observe(age);
                    }
                    debug!(room, id = ready.id, "delivered to room");
                }
                return true;
            }
            Err(Refusal::Rejected(code)) if records.len() == 1 => {
                return dead_letter(bridge, records[0].record, &code, stop).await;
            }
            Err(Refusal::Rejected(_)) => {
                // All or nothing: find the culprit by publishing one at a time.
                for single in records.chunks(1) {
                    if !Box::pin(publish(bridge, room, single, stop)).await {
                        return false;
                    }
                }
                return true;
            }
            Err(Refusal::Transient(why)) => {
                warn!(
                    room,
                    "publishing {} records: {why}; retrying",
                    records.len()
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.changed() => return false,
                }
            }
        }
    }
}

enum Refusal {
    /// The room refused the content (4xx other than auth): dead-letter it.
    Rejected(String),
    /// The worker, the network or the token: retry.
    Transient(String),
}

async fn post(bridge: &Bridge, room: &str, records: &[Ready<'_>]) -> Result<(), Refusal> {
    let messages: Vec<Outgoing<'_>> = records
        .iter()
        .map(|r| Outgoing {
            data: r.data,
            id: &r.id,
        })
        .collect();
    let body = serde_json::to_string(&Batch {
        messages: &messages,
    })
    .map_err(|e| Refusal::Transient(e.to_string()))?;
    let response = bridge
        .http
        .post(bridge.urls.messages(room))
        .bearer_auth(&bridge.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Refusal::Transient(e.to_string()))?;
    let status = response.status().as_u16();
    match status {
        201 => Ok(()),
        400 | 404 | 413 | 422 => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or("rejected")
                .to_owned();
            Err(Refusal::Rejected(code))
        }
        _ => Err(Refusal::Transient(format!("worker answered {status}"))),
    }
}

/// Writes `record` to the DLQ with its error and source; waits for Kafka's
/// acknowledgement, since the offset may only be committed after it.
async fn dead_letter(
    bridge: &Bridge,
    record: &OwnedMessage,
    reason: &str,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let partition = record.partition().to_string();
    let offset = record.offset().to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "error",
            value: Some(reason),
        })
        .insert(Header {
            key: "source-topic",
            value: Some(record.topic()),
        })
        .insert(Header {
            key: "source-partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "source-offset",
            value: Some(offset.as_str()),
        });
    let mut backoff = Backoff::network();
    loop {
        let mut dlq = FutureRecord::<[u8], [u8]>::to(&bridge.dlq_topic).headers(headers.clone());
        if let Some(key) = record.key() {
            dlq = dlq.key(key);
        }
        if let Some(payload) = record.payload() {
            dlq = dlq.payload(payload);
        }
        match bridge.producer.send(dlq, Duration::from_secs(30)).await {
            Ok(_) => {
                bridge.metrics.dlq.with_label_values(&[reason]).inc();
                warn!(
                    reason,
                    partition, offset, "record sent to the dead-letter topic"
                );
                return true;
            }
            Err((e, _)) => warn!("dead-lettering {partition}:{offset}: {e}; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => return false,
        }
    }
}
