//! RabbitMQ (AMQP 0-9-1, through lapin) as the bridge's broker
//! (docs/bridge.md, "RabbitMQ mapping"): how a connection is made, and the
//! topology the bridge declares. The relay talks to RabbitMQ only through
//! [`sink::AmqpSink`] and [`source::AmqpSource`], the two halves of
//! `crate::broker`'s seam, as it talks to Kafka through `crate::kafka`.
//!
//! Publishing and consuming use a connection each, as RabbitMQ advises: a
//! connection the broker blocks for publishing (a memory or disk alarm)
//! then cannot hold up the consumer's acks. Either is rebuilt whole when it
//! fails (connection or channel lost, the broker restarted), with
//! `crate::backoff`'s backoff, and redeclares the topology first, so a
//! broker that lost it (a fresh node) gets it back; lapin's own recovery
//! stays off, so there is one reconnect policy in the bridge.
//!
//! TLS (`amqps://`) uses the bridge's one rustls configuration
//! (`crate::tls`: the platform's roots and `--ca-file`), the same trust as
//! for the worker; lapin's own certificate stores are not used.

pub mod config;
pub mod sink;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

pub use config::{AmqpUrl, Target};

/// How long a connection (TCP, TLS, AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where RabbitMQ is and what the bridge calls its exchanges and queues.
#[derive(Debug, Clone)]
pub struct Amqp {
    pub target: Target,
    /// The bridge's rustls configuration, for `amqps://`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Durable topic exchange every room message is published to, routing
    /// key = room.
    pub events_exchange: String,
    /// Durable topic exchange rooms' presence events are published to,
    /// routing key = room; `None`: they are not published (acknowledged
    /// unwritten).
    pub presence_exchange: Option<String>,
    /// Durable quorum queue whose messages go into rooms; also the name of
    /// the durable topic exchange bound to it with `#`, so that publishing
    /// to it with the room as routing key mirrors producing to Kafka with
    /// the room as key.
    pub inbound_queue: String,
    /// Durable fanout exchange for what cannot be delivered, either way.
    pub dead_letter_exchange: String,
    /// Durable quorum queue bound to the dead-letter exchange, so that no
    /// dead letter is dropped for want of a queue.
    pub dead_letter_queue: String,
    /// Unacknowledged deliveries the consumer may hold (basic.qos).
    pub prefetch: u16,
    /// The instance id: connection names and the consumer tag.
    pub instance: String,
}

/// Why a connection or its topology could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {url}: {source}")]
    Connect { url: String, source: lapin::Error },
    #[error("connecting to {0}: no answer within {CONNECT_TIMEOUT:?}")]
    TimedOut(String),
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("declaring {what}: {source}")]
    Declare { what: String, source: lapin::Error },
}

impl Amqp {
    /// A connection named after this instance and `purpose` (what
    /// RabbitMQ's management UI shows), and a channel on it.
    pub async fn connect(&self, purpose: &str) -> Result<(Connection, Channel), ConnectError> {
        let url = self.target.shown().to_owned();
        let connecting = async {
            let addresses = self.resolve().await?;
            let connection =
                self.open(addresses, purpose)
                    .await
                    .map_err(|source| ConnectError::Connect {
                        url: url.clone(),
                        source,
                    })?;
            let channel =
                connection
                    .create_channel()
                    .await
                    .map_err(|source| ConnectError::Connect {
                        url: url.clone(),
                        source,
                    })?;
            Ok((connection, channel))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| ConnectError::TimedOut(url.clone()))?
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, ConnectError> {
        let host = self.target.host().to_owned();
        tokio::net::lookup_host((host.as_str(), self.target.port()))
            .await
            .map(Iterator::collect)
            .map_err(|source| ConnectError::Resolve { host, source })
    }

    /// lapin's connection over a stream the bridge dials itself: TCP to
    /// `addresses` (the host as written, resolved here), then TLS with the
    /// bridge's configuration for `amqps://`.
    async fn open(
        &self,
        addresses: Vec<SocketAddr>,
        purpose: &str,
    ) -> Result<Connection, lapin::Error> {
        let runtime = lapin::runtime::default_runtime()?;
        let tls = self.target.is_tls().then(|| {
            (
                RustlsConnector::from(self.tls.clone()),
                self.target.host().to_owned(),
            )
        });
        let name = format!("roomcast-bridge {} {purpose}", self.instance);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        Connection::connector(
            self.target.uri().clone(),
            runtime,
            async move |_uri, runtime| {
                let stream = AsyncTcpStream::connect(&runtime, addresses.clone()).await?;
                Ok(match &tls {
                    Some((connector, host)) => stream.into_rustls(connector, host).await?,
                    None => stream,
                })
            },
            properties,
        )
        .await
    }

    /// Declares the exchanges, queues and bindings of docs/bridge.md,
    /// "RabbitMQ mapping" (each is a no-op when it exists alike; one that
    /// exists with other arguments fails the declaration, which is
    /// reported and retried, never worked around).
    pub async fn declare(&self, channel: &Channel) -> Result<(), ConnectError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let exchanges = [
            (&self.events_exchange, ExchangeKind::Topic),
            (&self.inbound_queue, ExchangeKind::Topic),
            (&self.dead_letter_exchange, ExchangeKind::Fanout),
        ];
        let presence = self
            .presence_exchange
            .iter()
            .map(|name| (name, ExchangeKind::Topic));
        for (name, kind) in exchanges.into_iter().chain(presence) {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await
                .map_err(|source| ConnectError::Declare {
                    what: format!("exchange {name}"),
                    source,
                })?;
        }
        let queues = [
            (&self.inbound_queue, Some(&self.dead_letter_exchange)),
            (&self.dead_letter_queue, None),
        ];
        for (name, dead_letters) in queues {
            channel
                .queue_declare(
                    name.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    queue_arguments(dead_letters.map(String::as_str)),
                )
                .await
                .map_err(|source| ConnectError::Declare {
                    what: format!("queue {name}"),
                    source,
                })?;
        }
        let bindings = [
            (&self.inbound_queue, &self.inbound_queue, "#"),
            (&self.dead_letter_queue, &self.dead_letter_exchange, ""),
        ];
        for (queue, exchange, key) in bindings {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| ConnectError::Declare {
                    what: format!("the binding of queue {queue} to exchange {exchange}"),
                    source,
                })?;
        }
        Ok(())
    }
}

/// A quorum queue's arguments: replicated and durable, the only kind
/// RabbitMQ keeps through a node's loss; with `dead_letters`, what the
/// queue itself drops (a delivery limit, a length limit) goes there.
fn queue_arguments(dead_letters: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    if let Some(exchange) = dead_letters {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(exchange)),
        );
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_are_quorum_queues_and_the_inbound_one_dead_letters() {
        let text = |table: &FieldTable, key: &str| match table.inner().get(key) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        };
        let inbound = queue_arguments(Some("roomcast.dlx"));
        assert_eq!(text(&inbound, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(
            text(&inbound, "x-dead-letter-exchange").as_deref(),
            Some("roomcast.dlx")
        );
        let dlq = queue_arguments(None);
        assert_eq!(text(&dlq, "x-queue-type").as_deref(), Some("quorum"));
        assert_eq!(text(&dlq, "x-dead-letter-exchange"), None);
    }
}
