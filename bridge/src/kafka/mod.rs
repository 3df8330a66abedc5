//! Kafka as the bridge's broker (docs/bridge.md, "Kafka mapping"): how each client is
//! configured, topic creation, and the reachability probe behind `/healthz`.
//! The relay talks to Kafka only through [`sink::KafkaSink`] and
//! [`source::KafkaSource`], the two halves of `crate::broker`'s seam.
//!
//! Every client gets the bridge's defaults, then the operator's
//! [`KafkaConfig`] (TLS, SASL, tuning: any librdkafka property), then the
//! properties at-least-once delivery rests on, which the operator's
//! configuration is not allowed to name.

pub mod config;
pub mod sink;
pub mod source;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::info;

pub use config::KafkaConfig;

/// The producer's compression unless the operator sets `compression.type`:
/// fast and well supported by librdkafka and the Java client. kafkajs reads
/// it only with an LZ4 codec plugin (see the README).
pub const DEFAULT_COMPRESSION: &str = "lz4";

/// How long a produced record may wait for the broker before it fails; long
/// enough to ride out a broker restart, after which the room link replays.
const DELIVERY_TIMEOUT_MS: &str = "120000";

/// Where Kafka is and what the bridge calls its topics and group.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
    pub config: KafkaConfig,
    pub events_topic: String,
    pub inbound_topic: String,
    pub dlq_topic: String,
    /// Where rooms' presence events go; `None`: nowhere (acknowledged
    /// unwritten).
    pub presence_topic: Option<String>,
    pub group_id: String,
    /// The static group membership id (the bridge instance id): a restarted
    /// instance takes its partitions straight back instead of waiting for
    /// the group to notice the old member is gone.
    pub instance: String,
}

impl Kafka {
    fn client(&self, defaults: &[(&str, &str)], owned: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        self.config.apply(&mut config);
        for (key, value) in owned {
            config.set(*key, *value);
        }
        config
    }

    /// The producer: idempotent and `acks=all` (so a retried send is stored
    /// once and only after every in-sync replica has it), batched with a
    /// short linger so throughput grows with load without adding latency at
    /// low rates.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.client(
            &[
                ("linger.ms", "5"),
                ("batch.num.messages", "10000"),
                ("compression.type", DEFAULT_COMPRESSION),
                ("message.timeout.ms", DELIVERY_TIMEOUT_MS),
            ],
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
        .create()
    }

    /// The inbound consumer. Offsets are stored and committed by the relay
    /// only after the room acknowledged a record (or it was dead-lettered),
    /// never automatically. The poll interval (also how long a rebalance
    /// waits for members) is short, so a member that died for good is
    /// replaced quickly; the fetch wait is short because brokers that hold a
    /// fetch for the whole wait (tansu) would add up to 500 ms, librdkafka's
    /// default, to every Kafka → room message.
    pub fn consumer(&self) -> Result<StreamConsumer, KafkaError> {
        self.client(
            &[
                ("max.poll.interval.ms", "30000"),
                ("session.timeout.ms", "10000"),
                ("auto.offset.reset", "earliest"),
                ("fetch.wait.max.ms", "50"),
            ],
            &[
                ("group.id", &self.group_id),
                ("group.instance.id", &self.instance),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        )
        .create()
    }

    /// The bridge's topics: three, and presence's when it is on.
    pub fn topics(&self) -> Vec<&str> {
        [&self.events_topic, &self.inbound_topic, &self.dlq_topic]
            .into_iter()
            .chain(&self.presence_topic)
            .map(String::as_str)
            .collect()
    }

    /// Creates those of `topics` that do not exist yet. Production clusters
    /// should create them ahead, with the partitions and replication they
    /// need: the bridge asks for one partition and the cluster's default
    /// replication.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), KafkaError> {
        let admin: AdminClient<DefaultClientContext> = self.client(&[], &[]).create()?;
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|t| NewTopic::new(t, 1, TopicReplication::Fixed(-1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in admin.create_topics(&new, &options).await? {
            match result {
                Ok(topic) => info!(topic, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }
}

/// Whether the cluster answers a metadata request now.
pub fn reachable(producer: &FutureProducer) -> bool {
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(2))
        .is_ok()
}
