//! Part 4, the bridge: room → Kafka and Kafka → room, each against a plain
//! rdkafka producer and consumer on the same broker in the same run.
//!
//! Three paths carry the same stamps: plain (producer → broker →
//! consumer), outbound (WebSocket publish → room → bridge → broker →
//! consumer of `roomcast.events`) and inbound (producer to
//! `roomcast.inbound` → bridge → room → WebSocket subscriber). The plain
//! producer is configured exactly as the bridge's (it is the bridge's own
//! constructor), so the ratio isolates what the bridge's hop costs.
//!
//! It gets a fresh roomcast server of its own: the bridge relays every room
//! the registry knows, and rooms left by the other parts would flood it.
//! Every path is primed before measuring (the first message waits for the
//! registry to assign the room and for consumer groups to settle).

use std::fmt::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use roomcast_bridge::kafka::{Kafka, KafkaConfig};
use roomcast_tests::broker::tansu_binary;
use roomcast_tests::{repo_root, BridgeCommand, Broker};
use tokio::time::{sleep_until, Instant};

use crate::client::clock;
use crate::client::fleet::Timing;
use crate::client::load::{self, Outlet};
use crate::client::net::Traffic;
use crate::client::publisher::Publisher;
use crate::client::receiver::{Receivers, RecordShape};
use crate::client::recorder::{Recorder, Stamp};
use crate::client::ws;
use crate::measure::memory::resident_kib;
use crate::measure::probe::Probe;
use crate::measure::stats::{Sample, Summary};
use crate::scenario::bridge_memory::{self, Memory};
use crate::server::{Flavor, Server};
use crate::table::{cell, number, ratio, Table};

const EVENTS: &str = "roomcast.events";
const INBOUND: &str = "roomcast.inbound";
const PLAIN: &str = "bench.plain";
/// Messages in flight when saturating a Kafka path.
const WINDOW: u64 = 20_000;
/// How long a path may take to carry its first message.
const PRIME: Duration = Duration::from_secs(120);
/// How long stragglers of a run may take.
const DRAIN: Duration = Duration::from_secs(10);

pub struct Plan {
    /// Messages/s of the latency runs.
    pub rate: f64,
    /// Room links held when the bridge's memory is read.
    pub links: usize,
    pub timing: Timing,
    pub state_root: PathBuf,
    /// roomcast's wrangler configuration.
    pub config: PathBuf,
}

/// One path's figures.
pub struct PathResult {
    pub name: &'static str,
    /// Closed loop: highest messages/s.
    pub max: Summary,
    /// Open loop at the plan's rate.
    pub latency: Summary,
}

pub struct BridgeResults {
    pub broker: String,
    pub memory: Memory,
    pub rate: f64,
    pub plain: PathResult,
    pub to_kafka: PathResult,
    pub to_room: PathResult,
}

pub async fn run(plan: &Plan) -> Result<BridgeResults> {
    let server = Server::start(Flavor::Ours, &plan.config, &plan.state_root).await?;
    let version = Command::new(tansu_binary())
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "{} (installed by `make bootstrap`)",
                tansu_binary().display()
            )
        })?;
    let broker = Broker::start().await;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    eprintln!("[bridge] {version} on {}", broker.address);
    kafka(&broker.address)
        .ensure_topics(&[EVENTS, INBOUND, PLAIN])
        .await
        .context("creating the topics")?;
    // The release build, logging warnings only: its log lines would cost
    // CPU inside the measurement. Links stay open for the whole run, so the
    // memory figure is of links held, not of links closed as idle.
    let bridge = BridgeCommand {
        binary: repo_root().join("target/release/roomcast-bridge"),
        log_filter: "warn",
    }
    .start(server.worker(), &broker, "bench", &["--link-idle", "1h"])
    .await;
    let idle_kib = resident_kib(bridge.service.pid())?;

    let plain = {
        let recorder = Recorder::new();
        let mut receivers = Receivers::default();
        let key = "plain".to_owned();
        let consumer = consumer(&broker.address, PLAIN)?;
        receivers.kafka(consumer, key.clone(), RecordShape::Stamp, recorder.clone());
        let mut outlet = KafkaOutlet::new(&broker.address, PLAIN, key)?;
        let result = measure(
            "plain rdkafka",
            &server,
            &mut outlet,
            &recorder,
            plan,
            WINDOW,
        )
        .await;
        receivers.stop().await?;
        result?
    };
    let to_kafka = {
        let room = server.fresh_room("bridge.out");
        let recorder = Recorder::new();
        let mut receivers = Receivers::default();
        let consumer = consumer(&broker.address, EVENTS)?;
        receivers.kafka(consumer, room.clone(), RecordShape::Event, recorder.clone());
        let mut outlet = Publisher::connect(&server, &room).await?;
        let result = measure(
            "room → Kafka",
            &server,
            &mut outlet,
            &recorder,
            plan,
            WINDOW,
        )
        .await;
        outlet.close().await;
        receivers.stop().await?;
        result?
    };
    let to_room = {
        let room = server.fresh_room("bridge.in");
        let recorder = Recorder::new();
        let mut receivers = Receivers::default();
        let socket = ws::connect(server.addr(), &server.ws_path(&room), Traffic::new()).await?;
        receivers.push(socket, recorder.clone());
        let mut outlet = KafkaOutlet::new(&broker.address, INBOUND, room)?;
        let result = measure(
            "Kafka → room",
            &server,
            &mut outlet,
            &recorder,
            plan,
            WINDOW,
        )
        .await;
        receivers.stop().await?;
        result?
    };
    let memory = bridge_memory::measure(&server, &bridge, idle_kib, plan.links)
        .await
        .context("bridge memory")?;
    Ok(BridgeResults {
        broker: format!("{version} (in-memory storage), one partition per topic"),
        memory,
        rate: plan.rate,
        plain,
        to_kafka,
        to_room,
    })
}

/// Primes the path, then saturates it and paces it `runs` times each.
pub async fn measure(
    name: &'static str,
    server: &Server,
    outlet: &mut impl Outlet,
    recorder: &Arc<Recorder>,
    plan: &Plan,
    window: u64,
) -> Result<PathResult> {
    prime(outlet, recorder)
        .await
        .with_context(|| format!("{name}: no message got through"))?;
    let timing = &plan.timing;
    let mut run = 0;
    let mut max = Vec::new();
    for _ in 0..timing.runs {
        run += 1;
        let sample = saturate(server, outlet, recorder, run, timing, window).await?;
        crate::scenario::progress(server, &format!("bridge {name} max"), &sample);
        max.push(sample);
    }
    let mut latency = Vec::new();
    for _ in 0..timing.runs {
        run += 1;
        recorder.begin(run);
        let traffic = Traffic::new();
        let recorders = [recorder.clone()];
        let probe = Probe::start(server, &traffic, &recorders)?;
        let sent = load::paced(outlet, run, plan.rate, timing.duration, Duration::ZERO).await?;
        recorder.wait_for(sent, Instant::now() + DRAIN).await;
        let sample = probe.finish(server, &traffic, &recorders, timing.duration)?;
        crate::scenario::progress(
            server,
            &format!("bridge {name} at {} msg/s", plan.rate),
            &sample,
        );
        latency.push(sample);
    }
    Ok(PathResult {
        name,
        max: Summary::of(&max),
        latency: Summary::of(&latency),
    })
}

async fn saturate(
    server: &Server,
    outlet: &mut impl Outlet,
    recorder: &Arc<Recorder>,
    run: u32,
    timing: &Timing,
    window: u64,
) -> Result<Sample> {
    recorder.begin(run);
    let traffic = Traffic::new();
    let recorders = [recorder.clone()];
    let start = Instant::now();
    let until = start + timing.warmup + timing.duration;
    let sending = load::windowed(outlet, run, recorder, 1, window, until);
    // The window is a span of time, not a synchronisation point.
    let measuring = async {
        sleep_until(start + timing.warmup).await;
        let probe = Probe::start(server, &traffic, &recorders)?;
        sleep_until(until).await;
        let window = probe.elapsed();
        probe.finish(server, &traffic, &recorders, window)
    };
    let (sent, sample) = tokio::join!(sending, measuring);
    recorder.wait_for(sent?, Instant::now() + DRAIN).await;
    sample
}

/// Sends a message a second (run 0, ignored by every measured run) until
/// one arrives.
async fn prime(outlet: &mut impl Outlet, recorder: &Recorder) -> Result<()> {
    recorder.begin(0);
    let deadline = Instant::now() + PRIME;
    for i in 0.. {
        let stamp = Stamp {
            r: 0,
            i,
            t: clock::now_us(),
        };
        outlet.send(&[stamp]).await?;
        let next = (Instant::now() + Duration::from_secs(1)).min(deadline);
        if recorder.wait_for(1, next).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    bail!("nothing arrived within {PRIME:?}")
}

/// Kafka as the bridge sees it, so plain rdkafka is measured with the
/// bridge's own producer settings.
fn kafka(brokers: &str) -> Kafka {
    Kafka {
        brokers: brokers.to_owned(),
        config: KafkaConfig::default(),
        events_topic: EVENTS.into(),
        inbound_topic: INBOUND.into(),
        dlq_topic: "roomcast.dlq".into(),
        presence_topic: None,
        group_id: "roomcast-bench".into(),
        instance: "bench".into(),
    }
}

/// Produces stamps as JSON values under one key.
struct KafkaOutlet {
    producer: FutureProducer,
    topic: &'static str,
    key: String,
}

impl KafkaOutlet {
    fn new(brokers: &str, topic: &'static str, key: String) -> Result<KafkaOutlet> {
        Ok(KafkaOutlet {
            producer: kafka(brokers).producer().context("a producer")?,
            topic,
            key,
        })
    }
}

impl Outlet for KafkaOutlet {
    async fn send(&mut self, stamps: &[Stamp]) -> Result<()> {
        for stamp in stamps {
            let value = serde_json::to_vec(stamp)?;
            let record = FutureRecord::to(self.topic).key(&self.key).payload(&value);
            // Delivery is observed at the consumer; the future is not needed.
            self.producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .context("producing")?;
        }
        Ok(())
    }
}

/// A consumer of `topic` from its start, in a group of its own. It is an
/// instrument, so it asks the broker to answer fetches within 10 ms;
/// librdkafka's default of 500 ms would put up to half a second of the
/// broker's fetch wait into every figure (tansu waits it out even when data
/// is there). The bridge's own consumer keeps the default, and the
/// Kafka → room latency shows what that costs.
fn consumer(brokers: &str, topic: &str) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-{topic}-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .context("a consumer")?;
    consumer.subscribe(&[topic]).context("subscribing")?;
    Ok(consumer)
}

pub fn render(out: &mut String, results: &BridgeResults) {
    render_paths(
        out,
        &results.broker,
        results.rate,
        &[&results.plain, &results.to_kafka, &results.to_room],
    );
    let memory = &results.memory;
    let _ = writeln!(out);
    let mut table = Table::new(&["bridge resident memory", "KiB"]);
    table.row(vec![
        "idle (started, no room linked)".into(),
        memory.idle_kib.to_string(),
    ]);
    table.row(vec![
        format!("{} room links up (after the runs above)", memory.links),
        memory.loaded_kib.to_string(),
    ]);
    table.row(vec!["per room link".into(), number(memory.per_link_kib())]);
    table.render_into(out);
}

/// The broker line and one row per path, each against the first (the
/// plain client's path).
pub fn render_paths(out: &mut String, broker: &str, rate: f64, paths: &[&PathResult]) {
    let _ = writeln!(
        out,
        "Broker: {broker}. Latency runs at {} msg/s.\n",
        number(rate)
    );
    let plain = paths[0];
    let mut table = Table::new(&[
        "path",
        "max msg/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "throughput / plain",
        "added p50 ms",
        "added p99 ms",
    ]);
    for path in paths {
        table.row(vec![
            path.name.into(),
            cell(&path.max.delivered_per_sec),
            cell(&path.latency.p50_ms),
            cell(&path.latency.p95_ms),
            cell(&path.latency.p99_ms),
            ratio(&path.max.delivered_per_sec, &plain.max.delivered_per_sec),
            number(path.latency.p50_ms.median - plain.latency.p50_ms.median),
            number(path.latency.p99_ms.median - plain.latency.p99_ms.median),
        ]);
    }
    table.render_into(out);
}
