//! Room messages into Kafka: the events topic with the key, value and
//! headers of docs/bridge.md, "Kafka mapping", rooms' presence events into
//! the presence topic ("Presence"), and the dead-letter topic.
//!
//! Each message's delivery report says whether Kafka stored it. A refusal
//! that retrying cannot fix (too large, invalid, against a policy) is
//! reported as [`SinkError::Refused`], so the relay dead-letters the message
//! and moves on instead of replaying it forever; everything else is
//! [`SinkError::Unavailable`] and the room replays. An idempotent producer
//! that hit a fatal error refuses everything after it, so it is replaced.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use roomcast_protocol::wire::{Message, PresenceEvent};
use tracing::{error, warn};

use super::Kafka;
use crate::backoff::Backoff;
use crate::broker::{message_headers, presence_value, DeadLetter, Delivery, Sink, SinkError};

/// How long a dead letter may wait for the broker.
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer behind every topic.
pub struct KafkaSink {
    kafka: Kafka,
    producer: RwLock<FutureProducer>,
}

impl KafkaSink {
    pub fn new(kafka: Kafka) -> Result<KafkaSink, KafkaError> {
        let producer = RwLock::new(kafka.producer()?);
        Ok(KafkaSink { kafka, producer })
    }

    /// The current producer, replaced first if it hit a fatal error.
    pub fn producer(&self) -> FutureProducer {
        let current = self
            .producer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((code, reason)) = current.client().fatal_error() else {
            return current;
        };
        let mut slot = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if slot.client().fatal_error().is_none() {
            return slot.clone();
        }
        error!("the Kafka producer hit a fatal error ({code:?}: {reason}); replacing it");
        match self.kafka.producer() {
            Ok(fresh) => *slot = fresh,
            Err(e) => error!("replacing the Kafka producer failed: {e}"),
        }
        slot.clone()
    }

    /// Sends what is still queued, on shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }
}

/// Sorts a delivery error: refusals that retrying cannot fix, by reason.
fn sorted(e: KafkaError) -> SinkError {
    let refused = |reason: &str| SinkError::Refused {
        reason: reason.into(),
        detail: e.to_string(),
    };
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize) => {
            refused("too_large")
        }
        Some(
            RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidTimestamp,
        ) => refused("invalid"),
        Some(RDKafkaErrorCode::PolicyViolation) => refused("policy_violation"),
        _ => SinkError::Unavailable(e.to_string()),
    }
}

fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs
        .iter()
        .fold(OwnedHeaders::new(), |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(*value),
            })
        })
}

impl KafkaSink {
    async fn send_message(&self, message: &Message) -> Delivery {
        let value = match serde_json::to_string(message) {
            Ok(value) => value,
            Err(e) => {
                return futures_util::future::ready(Err(SinkError::Unavailable(e.to_string())))
                    .boxed()
            }
        };
        let owned = message_headers(message);
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let events = &self.kafka.events_topic;
        self.send(events, &message.room, &value, headers(&pairs))
            .await
    }

    /// Hands one record to the producer, waiting while its queue is full;
    /// the [`Delivery`] resolves with Kafka's report.
    async fn send(&self, topic: &str, key: &str, value: &str, headers: OwnedHeaders) -> Delivery {
        let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(500));
        loop {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(value)
                .headers(headers.clone());
            match self.producer().send_result(record) {
                Ok(delivery) => {
                    return delivery
                        .map(|report| match report {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(sorted(e)),
                            Err(_) => Err(SinkError::Unavailable("the producer went away".into())),
                        })
                        .boxed()
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err((e, _)) => return futures_util::future::ready(Err(sorted(e))).boxed(),
            }
        }
    }

    async fn send_presence(&self, event: &PresenceEvent) -> Delivery {
        // Off: nothing to write, so nothing to wait for.
        let Some(topic) = &self.kafka.presence_topic else {
            return futures_util::future::ready(Ok(())).boxed();
        };
        let value = presence_value(event);
        self.send(topic, &event.room, &value, OwnedHeaders::new())
            .await
    }

    async fn send_dead_letter(&self, letter: &DeadLetter) -> Result<(), SinkError> {
        let pairs: Vec<(&str, &str)> = letter
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        let mut record =
            FutureRecord::<[u8], [u8]>::to(&self.kafka.dlq_topic).headers(headers(&pairs));
        if let Some(key) = &letter.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &letter.value {
            record = record.payload(value.as_slice());
        }
        match self.producer().send(record, DEAD_LETTER_TIMEOUT).await {
            Ok(_) => Ok(()),
            Err((e, _)) => {
                match sorted(e) {
                    // The dead-letter topic refuses what the events topic did
                    // (the same size limit, typically): keep the headers, which
                    // say where the message is, and drop the value.
                    SinkError::Refused { reason, .. } if letter.value.is_some() => {
                        warn!(reason, "the dead-letter topic refused the value too; writing the headers alone");
                        let mut bare = letter.clone();
                        bare.value = None;
                        bare.headers.push(("value-dropped", reason));
                        Box::pin(self.send_dead_letter(&bare)).await
                    }
                    other => Err(other),
                }
            }
        }
    }
}

impl Sink for KafkaSink {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery> {
        self.send_message(message).boxed()
    }

    fn relays_presence(&self) -> bool {
        self.kafka.presence_topic.is_some()
    }

    fn presence<'a>(&'a self, event: &'a PresenceEvent) -> BoxFuture<'a, Delivery> {
        self.send_presence(event).boxed()
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        self.send_dead_letter(letter).boxed()
    }
}

/// A shared sink, as the relay tasks hold it.
pub type SharedSink = Arc<dyn Sink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_content_refusals_are_final() {
        let e = |code| KafkaError::MessageProduction(code);
        assert!(matches!(
            sorted(e(RDKafkaErrorCode::MessageSizeTooLarge)),
            SinkError::Refused { reason, .. } if reason == "too_large"
        ));
        assert!(matches!(
            sorted(e(RDKafkaErrorCode::PolicyViolation)),
            SinkError::Refused { reason, .. } if reason == "policy_violation"
        ));
        for transient in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert!(matches!(sorted(e(transient)), SinkError::Unavailable(_)));
        }
    }
}
