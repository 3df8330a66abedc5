//! Kafka clients as the bridge configures them (SPEC section 6), topic
//! creation, and the reachability probe behind `/healthz`.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

/// How long a produced record may wait for the broker before it fails; long
/// enough to ride out a broker restart, after which the room link replays.
const DELIVERY_TIMEOUT_MS: &str = "120000";

/// The producer: idempotent, `acks=all`, batched with a short linger so that
/// throughput grows with load without adding latency at low rates.
pub fn producer(brokers: &str) -> Result<FutureProducer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", DELIVERY_TIMEOUT_MS)
        .create()
}

/// The inbound consumer: offsets are stored and committed by the bridge only
/// after the room acknowledged the record (or it went to the dead-letter
/// topic).
///
/// The instance id doubles as the static group membership id, so a restarted
/// instance takes its partitions straight back instead of waiting for the
/// group to notice the old member is gone; and the poll interval (which is
/// also how long a rebalance waits for members) is short, so a member that
/// died for good is replaced quickly.
pub fn consumer(
    brokers: &str,
    group: &str,
    instance: &str,
) -> Result<StreamConsumer, rdkafka::error::KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("group.instance.id", instance)
        .set("max.poll.interval.ms", "30000")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        // Kafka answers a fetch as soon as a record is there, but brokers
        // that hold it for the whole wait (tansu) would add up to 500 ms,
        // librdkafka's default, to every Kafka → room message.
        .set("fetch.wait.max.ms", "50")
        .create()
}

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(brokers: &str, topics: &[&str]) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| format!("creating topics: {e}"))?;
    for result in results {
        match result {
            Ok(topic) => info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// Whether the cluster answers a metadata request now.
pub fn reachable(producer: &FutureProducer) -> bool {
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(2))
        .is_ok()
}
