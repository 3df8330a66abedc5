//! Why the bridge could not start: each a configuration or environment
//! problem the operator must fix, said with the flag or URL it concerns.
//! Once running, the bridge does not exit on errors; it retries and says so
//! on `/healthz` and in its log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::amqp::config::ConfigError as AmqpConfigError;
use crate::embedded::EmbeddedError;
use crate::kafka::config::ConfigError;
use crate::tls::TlsError;
use crate::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--worker-url {url:?}: {reason}")]
    WorkerUrl { url: String, reason: String },
    #[error(
        "--worker-url {0:?} is cleartext to a host that is not loopback: the bridge's token and \
         every message would cross the network unencrypted. Use https:// (or wss://), or pass \
         --allow-cleartext for a private network you trust"
    )]
    Cleartext(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "the worker at {url} presented a certificate that does not verify ({reason}); \
         if it is signed by a private CA or is a local certificate, pass the CA with --ca-file"
    )]
    Certificate { url: String, reason: String },
    #[error("no credentials: pass --jwt-key-file, --jwt-secret, --token-file or --token")]
    NoCredentials,
    #[error("--jwt-key-file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    KafkaConfig(#[from] ConfigError),
    #[error("creating the Kafka {client}: {source}")]
    Kafka {
        client: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error(transparent)]
    AmqpConfig(#[from] AmqpConfigError),
    #[error(
        "RabbitMQ at {url} presented a certificate that does not verify ({reason}); \
         if it is signed by a private CA or is a local certificate, pass the CA with --ca-file"
    )]
    AmqpCertificate { url: String, reason: String },
    #[error("--embedded-kafka runs a Kafka broker: it cannot go with --broker amqp")]
    EmbeddedWithAmqp,
    #[error("binding --metrics-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("shutdown took longer than {0:?}")]
    SlowShutdown(Duration),
}
