//! The running bridge: the handles every task shares, and the task tree
//! (metrics endpoint, Kafka probe, registry link with its room links, and
//! the inbound consumer) with its orderly shutdown.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, Producer};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::metrics::Metrics;
use crate::worker_api::WorkerUrls;
use crate::{endpoint, inbound, kafka, registry_link};

/// A WebSocket link to the worker.
pub type Link = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connect to the worker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The read chunk of every worker link (see [`link_config`]).
const LINK_READ_BUFFER: usize = 8 * 1024;
/// How often Kafka's reachability is checked for `/healthz`.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// What every task of the bridge shares.
pub struct Bridge {
    pub urls: WorkerUrls,
    pub token: String,
    pub instance: String,
    pub producer: FutureProducer,
    pub events_topic: String,
    pub inbound_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub brokers: String,
    pub max_message_bytes: usize,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

impl Bridge {
    pub fn new(
        args: &RunArgs,
        brokers: String,
        token: String,
        instance: String,
    ) -> Result<Bridge, String> {
        Ok(Bridge {
            urls: WorkerUrls::parse(&args.worker_url)?,
            token,
            instance,
            producer: kafka::producer(&brokers)
                .map_err(|e| format!("creating the producer: {e}"))?,
            events_topic: args.events_topic.clone(),
            inbound_topic: args.inbound_topic.clone(),
            dlq_topic: args.dlq_topic.clone(),
            group_id: args.group_id.clone(),
            brokers,
            max_message_bytes: args.max_message_bytes,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| format!("creating the HTTP client: {e}"))?,
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// Opens a link to the worker with the bridge's token.
    pub async fn connect(&self, url: &str) -> Result<Link, String> {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {}", self.token)).map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", bearer);
        let connecting =
            tokio_tungstenite::connect_async_with_config(request, Some(link_config()), false);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// A bridge holds one link per room, so the per-socket read buffer is what
/// its memory scales with: tungstenite's default 128 KiB made 1000 links
/// cost 150 MiB. Room frames are small, and a larger message still arrives
/// whole (the buffer is the read chunk, not a message limit).
fn link_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(LINK_READ_BUFFER)
}

/// Runs the bridge until `stop` turns true, then drains and returns.
pub async fn run(
    bridge: Arc<Bridge>,
    metrics_listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) {
    let endpoint = tokio::spawn(endpoint::serve(
        metrics_listener,
        bridge.metrics.clone(),
        stop.clone(),
    ));
    let probe = tokio::spawn(probe_kafka(bridge.clone(), stop.clone()));
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
    if let Err(e) = bridge.producer.flush(Duration::from_secs(10)) {
        warn!("flushing the producer: {e}");
    }
    info!("bridge stopped");
}

async fn probe_kafka(bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let producer = bridge.clone();
                let up = tokio::task::spawn_blocking(move || kafka::reachable(&producer.producer)).await.unwrap_or(false);
                bridge.metrics.set_kafka_up(up);
            }
            _ = stop.changed() => return,
        }
    }
}
