//! `--embedded-kafka`: librdkafka's mock cluster in this process, for local
//! runs without a broker. It keeps nothing on disk and is not Kafka: never
//! point anything you care about at it.
//!
//! The mock cluster listens on a random port; a small TCP forwarder makes it
//! reachable at the well-known 127.0.0.1:9092 so that tools like `kcat` find
//! it (they then follow the broker address it advertises, also on loopback).

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// The address the embedded broker is offered on.
pub const ADDRESS: &str = "127.0.0.1:9092";

pub struct Embedded {
    /// Kept alive for as long as the bridge runs.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    pub bootstrap: String,
}

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("starting the mock cluster: {0}")]
    Cluster(KafkaError),
    #[error("creating {topic} on the mock cluster: {source}")]
    Topic { topic: String, source: KafkaError },
    #[error("binding {ADDRESS} for the embedded broker (is another Kafka running?): {0}")]
    Bind(std::io::Error),
}

/// Starts the mock cluster with `topics` and the forwarder on [`ADDRESS`].
pub async fn start(topics: &[&str]) -> Result<Embedded, EmbeddedError> {
    let cluster = MockCluster::new(1).map_err(EmbeddedError::Cluster)?;
    for topic in topics {
        cluster
            .create_topic(topic, 1, 1)
            .map_err(|source| EmbeddedError::Topic {
                topic: topic.to_string(),
                source,
            })?;
    }
    let bootstrap = cluster.bootstrap_servers();
    let listener = TcpListener::bind(ADDRESS)
        .await
        .map_err(EmbeddedError::Bind)?;
    let target = bootstrap.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    let target = target.clone();
                    tokio::spawn(async move {
                        if let Err(e) = forward(client, &target).await {
                            debug!("embedded broker forwarder: {e}");
                        }
                    });
                }
                Err(e) => warn!("embedded broker forwarder: accept failed: {e}"),
            }
        }
    });
    Ok(Embedded {
        _cluster: cluster,
        bootstrap,
    })
}

async fn forward(mut client: TcpStream, target: &str) -> std::io::Result<()> {
    let mut broker = TcpStream::connect(target).await?;
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}
