//! What every task of the bridge shares: who this instance is, how to reach
//! the worker (URLs, TLS, the current token) and the broker (Kafka or
//! RabbitMQ, behind `crate::broker`'s seam), and where the metrics go. Built once at startup by the supervisor and handed to the
//! tasks; the tasks never reach back into the supervisor.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{Sink, Sources};
use crate::limits::{InFlightBytes, Opens};
use crate::metrics::Metrics;
use crate::token::Tokens;
use crate::worker_api::{WorkerApi, WorkerUrls};

pub struct Bridge {
    /// This instance's id among several bridges (registry links, rendezvous
    /// assignment, Kafka static membership).
    pub instance: String,
    pub urls: WorkerUrls,
    /// One TLS configuration for every link and request to the worker.
    pub tls: Arc<rustls::ClientConfig>,
    pub tokens: Tokens,
    /// The worker's HTTP API, where inbound records are published.
    pub worker: Arc<WorkerApi>,
    /// Where inbound records come from (the inbound topic's consumer group,
    /// or the inbound queue).
    pub sources: Arc<dyn Sources>,
    /// Room messages and dead letters go here.
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
    /// At most this many room links at once (`--max-links`); the rooms
    /// beyond wait for one.
    pub max_links: usize,
    /// A room link with nothing in flight and no message for this long is
    /// closed (`--link-idle`).
    pub link_idle: Duration,
    /// The turns every room link open waits for (`--link-opens-per-sec`).
    pub opens: Opens,
    /// Room message bytes the broker has not confirmed, across all links
    /// (`--max-in-flight-bytes`).
    pub in_flight: InFlightBytes,
}
