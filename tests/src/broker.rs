//! The Kafka side of the end-to-end tests: a real Kafka-protocol broker
//! (tansu with in-memory storage) in its own process, plain or behind TLS.
//!
//! tansu 0.6 cannot serve TLS itself, so [`Broker::start_tls`] puts socat in
//! front of it as a TLS terminator and has tansu advertise the terminator's
//! port: clients bootstrap, find the group coordinator and fetch through
//! TLS only, as against a production cluster.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use tokio::net::TcpStream;
use tokio::time::{sleep, Instant};

use crate::tls::{ca_file, server_cert};
use crate::{free_port, fresh_dir, room, Service};

/// How long tansu and socat may take to accept connections.
const LISTEN: Duration = Duration::from_secs(30);

/// A running broker: tansu, and socat in front of it for TLS.
pub struct Broker {
    /// tansu. Tests freeze it (SIGSTOP) to make Kafka unreachable.
    pub service: Service,
    /// socat terminating TLS in front of tansu ([`Broker::start_tls`] only).
    pub tls: Option<Service>,
    /// What clients bootstrap from (the TLS port when there is one).
    pub address: String,
}

impl Broker {
    /// tansu on plaintext (installed by `make bootstrap`; `ROOMCAST_TANSU`
    /// overrides).
    pub async fn start() -> Broker {
        let address = format!("127.0.0.1:{}", free_port());
        let service = tansu(&address, &address);
        wait_listening(&address, &service).await;
        Broker {
            service,
            tls: None,
            address,
        }
    }

    /// tansu on an internal loopback port, reachable only through socat
    /// serving TLS with a certificate from the test CA.
    pub async fn start_tls() -> Broker {
        let internal = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let service = tansu(&internal, &address);
        wait_listening(&internal, &service).await;
        let mut cmd = Command::new("socat");
        cmd.arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={},verify=0,fork,reuseaddr",
            server_cert().combined.display()
        ))
        .arg(format!("TCP:{internal}"));
        let log = fresh_dir("socat").join("socat.log");
        let terminator = Service::spawn("socat", cmd, log);
        wait_listening(&address, &terminator).await;
        Broker {
            service,
            tls: Some(terminator),
            address,
        }
    }

    /// The librdkafka properties, besides `bootstrap.servers` =
    /// [`Broker::address`], that a client of this broker needs.
    pub fn kafka_config(&self) -> Vec<(String, String)> {
        match self.tls {
            None => Vec::new(),
            Some(_) => vec![
                ("security.protocol".into(), "ssl".into()),
                ("ssl.ca.location".into(), ca_file().display().to_string()),
            ],
        }
    }

    /// A client configuration that reaches this broker.
    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.address);
        for (name, value) in self.kafka_config() {
            config.set(name, value);
        }
        config
    }

    /// A producer for the test's own records (patient enough for a frozen broker).
    pub fn producer(&self) -> FutureProducer {
        self.client_config()
            .set("message.timeout.ms", "60000")
            .create()
            .expect("a test producer")
    }

    /// An independent consumer of `topic` from its start, in a group of its own.
    pub fn consumer(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = self
            .client_config()
            .set("group.id", room("test-consumer"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a test consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        consumer
    }
}

/// tansu listening on `listen` and telling clients to come back on `advertised`.
fn tansu(listen: &str, advertised: &str) -> Service {
    let binary = std::env::var("ROOMCAST_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/roomcast/tools/bin/tansu")
        });
    let mut cmd = Command::new(binary);
    cmd.args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")])
        .args(["--storage-engine", "memory://tansu/"]);
    Service::spawn("tansu", cmd, fresh_dir("tansu").join("tansu.log"))
}

/// Waits until `address` accepts TCP connections, or panics with `service`'s log.
async fn wait_listening(address: &str, service: &Service) {
    let deadline = Instant::now() + LISTEN;
    while TcpStream::connect(address).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{address} did not listen within {LISTEN:?}\n{}",
            service.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    }
}
