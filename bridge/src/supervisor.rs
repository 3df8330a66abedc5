//! Starting and stopping the bridge: everything that can be wrong with its
//! configuration is found before any task starts (credentials, TLS, the
//! worker's certificate, Kafka properties or RabbitMQ's URL and password
//! file), then the task tree runs (metrics endpoint, broker probe, registry
//! link with its room links, the inbound relay) until SIGTERM or SIGINT,
//! and drains in order. This is the one place that knows which broker runs:
//! it builds the broker's sink and sources and hands the tasks the seam.

use std::sync::Arc;
use std::time::Duration;

use roomcast_protocol::signing::SigningKey;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::amqp::sink::AmqpSink;
use crate::amqp::{Amqp, Target};
use crate::broker::{BrokerKind, Sink, Sources};
use crate::cli::RunArgs;
use crate::context::Bridge;
use crate::error::StartError;
use crate::kafka::sink::KafkaSink;
use crate::kafka::{reachable, Kafka, KafkaConfig};
use crate::limits::{InFlightBytes, Opens};
use crate::metrics::{BrokerHealth, Metrics};
use crate::stop::Stop;
use crate::token::TokenSource;
use crate::worker_api::{WorkerApi, WorkerUrls};
use crate::{embedded, endpoint, inbound, registry_link, tls};

/// How long startup waits for Kafka to create missing topics.
const TOPICS_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the broker's reachability is checked for `/healthz`.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long a shutdown may take in all.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the bridge until a signal; `Err` only for what stops it starting.
pub async fn run(args: RunArgs) -> Result<(), StartError> {
    let (trigger, stop) = Stop::new();
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let instance = args.instance_id.clone().unwrap_or_else(hostname);
    let urls = WorkerUrls::parse(&args.worker_url).map_err(|reason| StartError::WorkerUrl {
        url: args.worker_url.clone(),
        reason,
    })?;
    if urls.is_cleartext_to_remote() {
        if !args.allow_cleartext {
            return Err(StartError::Cleartext(args.worker_url.clone()));
        }
        warn!(
            worker = args.worker_url,
            "--allow-cleartext: the token and every message cross the network unencrypted"
        );
    }
    let tls = tls::client_config(args.ca_file.as_deref())?;
    let tokens = credentials(&args)?.start(stop.clone())?;
    let worker = Arc::new(WorkerApi::new(urls.clone(), tls.clone(), tokens.clone()));
    check_worker(&worker).await?;
    // `/healthz` answers from here on (503 until everything is up), so an
    // orchestrator sees a bridge that is starting, not a dead one.
    let metrics = Arc::new(Metrics::new(args.broker));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    let endpoint = tokio::spawn(endpoint::serve(
        listener,
        metrics.clone(),
        endpoint::Bounds::default(),
        stop.clone(),
    ));

    // Kept alive until the bridge stops.
    let mut _embedded = None;
    let (broker, sources): (Broker, Arc<dyn Sources>) = match args.broker {
        BrokerKind::Kafka => {
            let kafka = kafka(&args, &instance, &mut _embedded).await?;
            let sink = KafkaSink::new(kafka.clone()).map_err(|source| StartError::Kafka {
                client: "producer",
                source,
            })?;
            (Broker::Kafka(Arc::new(sink)), Arc::new(kafka))
        }
        BrokerKind::Amqp => {
            if args.embedded_kafka {
                return Err(StartError::EmbeddedWithAmqp);
            }
            let amqp = Amqp {
                target: Target::load(&args.amqp_url, args.amqp_password_file.as_deref())?,
                tls: tls.clone(),
                events_exchange: args.amqp_events_exchange.clone(),
                presence_exchange: switched(&args.amqp_presence_exchange),
                inbound_queue: args.amqp_inbound_queue.clone(),
                dead_letter_exchange: args.amqp_dead_letter_exchange.clone(),
                dead_letter_queue: args.amqp_dead_letter_queue.clone(),
                prefetch: args.amqp_prefetch,
                instance: instance.clone(),
            };
            info!(
                url = amqp.target.shown(),
                user = amqp.target.username(),
                "RabbitMQ"
            );
            check_amqp(&amqp).await?;
            let sink = AmqpSink::new(amqp.clone());
            (Broker::Amqp(Arc::new(sink)), Arc::new(amqp))
        }
    };

    let bridge = Arc::new(Bridge {
        instance: instance.clone(),
        urls,
        tls,
        tokens,
        worker,
        sources,
        sink: broker.sink(),
        metrics,
        max_links: args.max_links as usize,
        link_idle: Duration::from_secs(args.link_idle),
        opens: Opens::per_sec(args.link_opens_per_sec),
        in_flight: InFlightBytes::new(args.max_in_flight_bytes),
    });
    info!(instance, worker = args.worker_url, broker = %args.broker, metrics = %args.metrics_addr, "bridge running");
    let running = tokio::spawn(tasks(bridge, broker, endpoint, stop));
    tokio::select! {
        _ = terminate.recv() => info!("SIGTERM: draining"),
        _ = interrupt.recv() => info!("SIGINT: draining"),
    }
    trigger.fire();
    tokio::time::timeout(SHUTDOWN_TIMEOUT, running)
        .await
        .map(|_| ())
        .map_err(|_| StartError::SlowShutdown(SHUTDOWN_TIMEOUT))
}

/// The name a flag gives, where an empty one turns its feature off.
fn switched(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| name.to_owned())
}

/// Kafka's clients as the flags configure them (the embedded cluster,
/// started and kept in `embedded`, with `--embedded-kafka`), and the
/// topics' creation started in the background.
async fn kafka(
    args: &RunArgs,
    instance: &str,
    embedded: &mut Option<embedded::Embedded>,
) -> Result<Kafka, StartError> {
    let config = KafkaConfig::load(args.kafka_config_file.as_deref(), &args.kafka_config)?;
    if !config.describe().is_empty() {
        info!(properties = config.describe(), "Kafka client properties");
    }
    let brokers = if args.embedded_kafka {
        let presence = switched(&args.presence_topic);
        let topics: Vec<&str> = [&args.events_topic, &args.inbound_topic, &args.dlq_topic]
            .into_iter()
            .chain(&presence)
            .map(String::as_str)
            .collect();
        let cluster = embedded::start(&topics).await?;
        warn!(
            "EMBEDDED KAFKA on {} (mock cluster at {}): for development only, nothing is persisted",
            embedded::ADDRESS,
            cluster.bootstrap
        );
        let brokers = cluster.bootstrap.clone();
        *embedded = Some(cluster);
        brokers
    } else {
        args.brokers.clone()
    };
    let kafka = Kafka {
        brokers,
        config,
        events_topic: args.events_topic.clone(),
        inbound_topic: args.inbound_topic.clone(),
        dlq_topic: args.dlq_topic.clone(),
        presence_topic: switched(&args.presence_topic),
        group_id: args.group_id.clone(),
        instance: instance.to_owned(),
    };
    if !args.embedded_kafka {
        tokio::spawn(create_topics(kafka.clone()));
    }
    Ok(kafka)
}

/// The broker's own handle, for what the seam does not cover: its health
/// probe and the last flush on shutdown.
enum Broker {
    Kafka(Arc<KafkaSink>),
    Amqp(Arc<AmqpSink>),
}

impl Broker {
    fn sink(&self) -> Arc<dyn Sink> {
        match self {
            Broker::Kafka(sink) => sink.clone(),
            Broker::Amqp(sink) => sink.clone(),
        }
    }

    /// Whether the broker answers now.
    async fn health(&self) -> BrokerHealth {
        match self {
            Broker::Kafka(sink) => {
                let producer = sink.producer();
                let up = tokio::task::spawn_blocking(move || reachable(&producer))
                    .await
                    .unwrap_or(false);
                if up {
                    BrokerHealth::Up
                } else {
                    BrokerHealth::Down
                }
            }
            Broker::Amqp(sink) => sink.health().await,
        }
    }

    /// Sends what is still queued (Kafka) or waits for the confirms still
    /// outstanding (RabbitMQ), bounded.
    async fn finish(&self, timeout: Duration) {
        match self {
            Broker::Kafka(sink) => {
                if let Err(e) = sink.flush(timeout) {
                    warn!("flushing the producer: {e}");
                }
            }
            Broker::Amqp(sink) => sink.close(timeout).await,
        }
    }
}

/// Where the bridge's token comes from; exactly one source is given (the
/// command line enforces it).
fn credentials(args: &RunArgs) -> Result<TokenSource, StartError> {
    let minted = |key| {
        TokenSource::minted(
            key,
            args.jwt_issuer.clone(),
            args.jwt_audience.clone(),
            args.token_ttl,
        )
    };
    if let Some(path) = &args.token_file {
        return Ok(TokenSource::File(path.clone()));
    }
    if let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(TokenSource::Fixed(token.to_owned()));
    }
    if let Some(path) = &args.jwt_key_file {
        return Ok(minted(signing_key(path, args.jwt_kid.clone())?));
    }
    match args.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => Ok(minted(SigningKey::hs256(secret))),
        None => Err(StartError::NoCredentials),
    }
}

/// The private key in `path`.
pub fn signing_key(path: &std::path::Path, kid: Option<String>) -> Result<SigningKey, StartError> {
    let fail = |reason: String| StartError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    SigningKey::from_pem(&pem, kid).map_err(|e| fail(e.to_string()))
}

/// Reaches the worker once: a certificate that does not verify stops the
/// bridge here, with the URL; a worker that is merely down is waited for.
async fn check_worker(worker: &WorkerApi) -> Result<(), StartError> {
    let url = worker.urls.health();
    match worker.health().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) if response.status().is_redirection() => {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_default();
            warn!(url, status = %response.status(), location, "the worker's /healthz answered a redirect, which the bridge never follows: is --worker-url the worker's own address?");
            Ok(())
        }
        Ok(response) => {
            warn!(url, status = %response.status(), "the worker's /healthz did not answer 200: is --worker-url right?");
            Ok(())
        }
        Err(e) => match tls::certificate_problem(&e) {
            Some(reason) => Err(StartError::Certificate { url, reason }),
            None => {
                warn!(
                    url,
                    "the worker is not reachable yet ({e}); retrying in the background"
                );
                Ok(())
            }
        },
    }
}

/// Reaches RabbitMQ once, as the worker is reached: a certificate that does
/// not verify stops the bridge here, with the URL; a broker that is merely
/// down (or refuses the credentials) is waited for, and `/healthz` says so.
async fn check_amqp(amqp: &Amqp) -> Result<(), StartError> {
    match amqp.connect("startup check").await {
        Ok((connection, _channel)) => {
            let _ = connection.close(200, "checked".into()).await;
            Ok(())
        }
        Err(e) => match tls::certificate_problem(&e) {
            Some(reason) => Err(StartError::AmqpCertificate {
                url: amqp.target.shown().to_owned(),
                reason,
            }),
            None => {
                warn!("RabbitMQ is not reachable yet ({e}); retrying in the background");
                Ok(())
            }
        },
    }
}

/// Creates the topics that are missing, in the background: a cluster that is
/// slow to answer (or refuses the bridge's credentials) must not hold the
/// bridge's start, and `/healthz` and the log say what is wrong meanwhile.
async fn create_topics(kafka: Kafka) {
    match tokio::time::timeout(TOPICS_TIMEOUT, kafka.ensure_topics(&kafka.topics())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!("could not make sure the topics exist: {e}"),
        Err(_) => warn!("Kafka did not answer topic creation within {TOPICS_TIMEOUT:?}"),
    }
}

/// The task tree, until `stop`; then the broker's client is flushed.
async fn tasks(
    bridge: Arc<Bridge>,
    broker: Broker,
    endpoint: tokio::task::JoinHandle<()>,
    stop: Stop,
) {
    let broker = Arc::new(broker);
    let probe = tokio::spawn(probe(broker.clone(), bridge.metrics.clone(), stop.clone()));
    let rooms = tokio::spawn(registry_link::run(bridge.clone(), stop.clone()));
    let inbound = tokio::spawn(inbound::run(bridge.clone(), stop.clone()));
    for (name, task) in [
        ("room links", rooms),
        ("inbound", inbound),
        ("probe", probe),
        ("endpoint", endpoint),
    ] {
        if let Err(e) = task.await {
            warn!("{name} task failed: {e}");
        }
    }
    broker.finish(Duration::from_secs(10)).await;
    info!("bridge stopped");
}

async fn probe(broker: Arc<Broker>, metrics: Arc<Metrics>, mut stop: Stop) {
    loop {
        metrics.set_broker(broker.health().await);
        if !stop.sleep(PROBE_INTERVAL).await {
            return;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bridge".into())
}
