//! The Kafka side of the end-to-end tests: a real Kafka-protocol broker
//! (tansu) in its own process, plain, behind TLS, or behind TLS with SASL.
//!
//! tansu 0.6 cannot serve TLS itself, so [`Broker::start_tls`] puts socat in
//! front of it as a TLS terminator and has tansu advertise the terminator's
//! port: clients bootstrap, find the group coordinator and fetch through
//! TLS only, as against a production cluster. [`Broker::start_sasl`] adds
//! SCRAM-SHA-512 authentication, which tansu 0.6 keeps only with its sqlite
//! storage, and creates its user before it starts requiring it (tansu has
//! no other way to create the first user). tansu cannot re-authenticate a
//! connection, which librdkafka does after 90% of the 60 s session tansu
//! grants: SASL tests stay well under a minute.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::process::wait_listening;
use crate::tls::{ca_file, server_cert};
use crate::{free_port, fresh_dir, room, Service};

/// The SCRAM user [`Broker::start_sasl`] creates.
pub const SASL_USER: &str = "roomcast-bridge";
pub const SASL_PASSWORD: &str = "scram-test-password";

/// A running broker: tansu, and socat in front of it for TLS.
pub struct Broker {
    /// tansu. Tests freeze it (SIGSTOP) to make Kafka unreachable.
    pub service: Service,
    /// socat terminating TLS in front of tansu (not for a plain broker).
    pub tls: Option<Service>,
    /// What clients bootstrap from (the TLS port when there is one).
    pub address: String,
    /// The librdkafka properties a client needs besides the address.
    config: Vec<(String, String)>,
}

impl Broker {
    /// tansu on plaintext (installed by `make bootstrap`; `ROOMCAST_TANSU`
    /// overrides).
    pub async fn start() -> Broker {
        let address = format!("127.0.0.1:{}", free_port());
        let service = tansu(&address, &address).spawn();
        wait_listening(&address, &service).await;
        Broker {
            service,
            tls: None,
            address,
            config: Vec::new(),
        }
    }

    /// tansu on an internal loopback port, reachable only through socat
    /// serving TLS with a certificate from the test CA.
    pub async fn start_tls() -> Broker {
        let config = vec![
            ("security.protocol".into(), "ssl".into()),
            ("ssl.ca.location".into(), ca_file().display().to_string()),
        ];
        Broker::behind_tls(tansu, config).await
    }

    /// tansu requiring SCRAM-SHA-512 ([`SASL_USER`], [`SASL_PASSWORD`]),
    /// behind socat serving TLS: `SASL_SSL`, as managed clusters offer it.
    pub async fn start_sasl() -> Broker {
        let data = fresh_dir("tansu-sasl");
        let setup = format!("127.0.0.1:{}", free_port());
        let mut open = tansu(&setup, &setup).sqlite(&data).spawn();
        wait_listening(&setup, &open).await;
        let created = Command::new(tansu_binary())
            .args([
                "user",
                "create",
                SASL_USER,
                SASL_PASSWORD,
                "--mechanism",
                "scram512",
            ])
            .args(["--broker", &format!("tcp://{setup}")])
            .status()
            .expect("run tansu user create");
        assert!(
            created.success(),
            "tansu user create: {created}\n{}",
            open.log_tail()
        );
        open.stop();
        let config = vec![
            ("security.protocol".into(), "sasl_ssl".into()),
            ("ssl.ca.location".into(), ca_file().display().to_string()),
            ("sasl.mechanisms".into(), "SCRAM-SHA-512".into()),
            ("sasl.username".into(), SASL_USER.into()),
            ("sasl.password".into(), SASL_PASSWORD.into()),
        ];
        let secured = |listen: &str, advertised: &str| {
            let mut secured = tansu(listen, advertised).sqlite(&data);
            secured.cmd.arg("--authentication");
            secured
        };
        Broker::behind_tls(secured, config).await
    }

    /// The tansu `command(listen, advertised)` makes, on an internal
    /// loopback port, advertising and reachable only through socat serving
    /// TLS with a certificate from the test CA; clients need `config`.
    async fn behind_tls(
        command: impl FnOnce(&str, &str) -> Tansu,
        config: Vec<(String, String)>,
    ) -> Broker {
        let internal = format!("127.0.0.1:{}", free_port());
        let port = free_port();
        let address = format!("127.0.0.1:{port}");
        let service = command(&internal, &address).spawn();
        wait_listening(&internal, &service).await;
        let terminator = terminate_tls(port, &internal).await;
        Broker {
            service,
            tls: Some(terminator),
            address,
            config,
        }
    }

    /// The librdkafka properties, besides `bootstrap.servers` =
    /// [`Broker::address`], that a client of this broker needs.
    pub fn kafka_config(&self) -> Vec<(String, String)> {
        self.config.clone()
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

    /// Every record in `topic` (one partition, as the bridge creates its
    /// topics) written before this call, within `wait`. The end is a
    /// sentinel record this call writes and reads back, since tansu's
    /// high watermark can lag behind what it stored; the sentinel has no
    /// headers and stays in the topic.
    pub async fn read_all(&self, topic: &str, wait: Duration) -> Vec<OwnedMessage> {
        let consumer = self.consumer(topic);
        let sentinel = room("sentinel");
        crate::records::produce(&self.producer(), topic, "", &sentinel, &[]).await;
        let mut records = crate::records::collect(&consumer, wait, |got| {
            got.last()
                .is_some_and(|r| r.payload() == Some(sentinel.as_bytes()))
        })
        .await;
        records.pop();
        records
    }

    /// Where consumer group `group` resumes on `topic`'s `partition`: the
    /// offset it committed, or `None` when it committed nothing there. Asks
    /// the group coordinator without joining the group, so the group's own
    /// members are undisturbed (blocks for one round trip).
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer of the group's offsets");
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(topic, partition);
        let committed = consumer
            .committed_offsets(wanted, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("the offsets {group} committed: {e}"));
        match committed.find_partition(topic, partition)?.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }
    }
}

/// The tansu binary (installed by `make bootstrap`; `ROOMCAST_TANSU` overrides).
pub fn tansu_binary() -> PathBuf {
    std::env::var("ROOMCAST_TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/roomcast/tools/bin/tansu")
        })
}

/// A tansu process about to start.
struct Tansu {
    cmd: Command,
    storage: &'static str,
}

/// tansu listening on `listen` and telling clients to come back on
/// `advertised`, keeping its data in memory.
fn tansu(listen: &str, advertised: &str) -> Tansu {
    let mut cmd = Command::new(tansu_binary());
    cmd.args(["broker", "--listener-url", &format!("tcp://{listen}")])
        .args(["--advertised-listener-url", &format!("tcp://{advertised}")]);
    Tansu {
        cmd,
        storage: "memory://tansu/",
    }
}

impl Tansu {
    /// Keeps the data in sqlite in `dir` instead (tansu resolves the URL's
    /// path against its working directory).
    fn sqlite(mut self, dir: &Path) -> Tansu {
        self.cmd.current_dir(dir);
        self.storage = "sqlite://tansu.db";
        self
    }

    fn spawn(mut self) -> Service {
        self.cmd.args(["--storage-engine", self.storage]);
        Service::spawn("tansu", self.cmd, fresh_dir("tansu").join("tansu.log"))
    }
}

/// socat on `port`, terminating TLS with the test CA's certificate for the
/// broker on `internal`; returns once it listens.
async fn terminate_tls(port: u16, internal: &str) -> Service {
    let mut cmd = Command::new("socat");
    cmd.arg(format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={},verify=0,fork,reuseaddr",
        server_cert().combined.display()
    ))
    .arg(format!("TCP:{internal}"));
    let terminator = Service::spawn("socat", cmd, fresh_dir("socat").join("socat.log"));
    wait_listening(&format!("127.0.0.1:{port}"), &terminator).await;
    terminator
}
