//! Part 4, the bridge with RabbitMQ as its broker: room → RabbitMQ against
//! plain lapin on the same node in the same run, the AMQP twin of
//! [`crate::scenario::bridge`]'s room → Kafka against plain rdkafka.
//!
//! Two paths carry the same stamps: plain (a lapin publisher → exchange →
//! queue → consumer) and outbound (WebSocket publish → room → bridge →
//! `roomcast.events` → queue → consumer). The plain publisher publishes as
//! the bridge does (persistent, `mandatory`, on a channel in confirm mode,
//! over the same kind of queue: a quorum queue), so the ratio isolates what
//! the bridge's hop costs. Each gets the same measuring as the Kafka part
//! ([`bridge::measure`]); the node is a private one (the test harness's
//! [`RabbitMq`]), and the bridge and the plain client both use its plain
//! listener.

use anyhow::{Context, Result};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use roomcast_tests::deliveries::bind_queue;
use roomcast_tests::{repo_root, BridgeCommand, RabbitMq};

use crate::client::load::Outlet;
use crate::client::publisher::Publisher;
use crate::client::receiver::{Receivers, RecordShape};
use crate::client::recorder::{Recorder, Stamp};
use crate::scenario::bridge::{self, PathResult, Plan};
use crate::server::{Flavor, Server};

const EVENTS: &str = "roomcast.events";
const PLAIN: &str = "bench.plain";
/// Messages in flight when saturating a path: about a third of a second of
/// one room's publishes. A window of 20 000 (the Kafka part's) fills in
/// the first 150 ms from one WebSocket, and the room takes seconds to
/// sequence it, so the messages reach the consumer after the measured
/// window has closed and the run counts nothing.
const WINDOW: u64 = 2_000;

pub struct AmqpResults {
    pub broker: String,
    pub rate: f64,
    pub plain: PathResult,
    pub to_amqp: PathResult,
}

pub async fn run(plan: &Plan) -> Result<AmqpResults> {
    let server = Server::start(Flavor::Ours, &plan.config, &plan.state_root).await?;
    let rabbit = RabbitMq::start().await;
    eprintln!("[bridge amqp] RabbitMQ on 127.0.0.1:{}", rabbit.port);
    // The release build, logging warnings only, as in the Kafka part, on
    // the plain listener as the plain client: the figures compare the
    // bridge's hop, not TLS.
    let url = rabbit.bridge_url(false);
    let _bridge = BridgeCommand {
        binary: repo_root().join("target/release/roomcast-bridge"),
        log_filter: "warn",
    }
    .start(
        server.worker(),
        &rabbit,
        "bench-amqp",
        &["--link-idle", "1h", "--amqp-url", &url],
    )
    .await;
    let connection = rabbit.connect().await;
    let setup = connection.create_channel().await.context("a channel")?;
    setup
        .exchange_declare(
            PLAIN.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("declaring the plain exchange")?;
    bind_queue(&setup, PLAIN, PLAIN, "#").await;
    bind_queue(&setup, "bench.events", EVENTS, "#").await;

    let plain = {
        let recorder = Recorder::new();
        let mut receivers = Receivers::default();
        let key = "plain".to_owned();
        receivers.amqp(
            consumer(&connection, PLAIN).await?,
            key.clone(),
            RecordShape::Stamp,
            recorder.clone(),
        );
        let mut outlet = LapinOutlet::new(&connection, PLAIN, key).await?;
        let result =
            bridge::measure("plain lapin", &server, &mut outlet, &recorder, plan, WINDOW).await;
        receivers.stop().await?;
        result?
    };
    let to_amqp = {
        let room = server.fresh_room("bridge.amqp.out");
        let recorder = Recorder::new();
        let mut receivers = Receivers::default();
        let consumer = consumer(&connection, "bench.events").await?;
        receivers.amqp(consumer, room.clone(), RecordShape::Event, recorder.clone());
        let mut outlet = Publisher::connect(&server, &room).await?;
        let result = bridge::measure(
            "room → RabbitMQ",
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
    Ok(AmqpResults {
        broker: "Debian's rabbitmq-server, a private node; quorum queues; plain AMQP both".into(),
        rate: plan.rate,
        plain,
        to_amqp,
    })
}

/// A consumer of `queue` on a channel of its own, auto-acking: an
/// instrument, which must not hold the queue back.
async fn consumer(connection: &Connection, queue: &str) -> Result<Consumer> {
    let channel = connection.create_channel().await.context("a channel")?;
    channel
        .basic_consume(
            queue.into(),
            format!("bench-{queue}").into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))
}

/// Publishes stamps as JSON under one routing key, as the bridge publishes
/// (persistent, `mandatory`, confirm mode). Delivery is observed at the
/// consumer, so the outlet does not wait for confirms; each is taken in a
/// task of its own, as the bridge takes its confirms (a confirm lapin saw
/// dropped would be kept until the channel's `wait_for_confirms`).
struct LapinOutlet {
    channel: Channel,
    exchange: &'static str,
    key: String,
}

impl LapinOutlet {
    async fn new(
        connection: &Connection,
        exchange: &'static str,
        key: String,
    ) -> Result<LapinOutlet> {
        let channel = connection.create_channel().await.context("a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm mode")?;
        Ok(LapinOutlet {
            channel,
            exchange,
            key,
        })
    }
}

impl Outlet for LapinOutlet {
    async fn send(&mut self, stamps: &[Stamp]) -> Result<()> {
        for stamp in stamps {
            let value = serde_json::to_vec(stamp)?;
            let confirm = self
                .channel
                .basic_publish(
                    self.exchange.into(),
                    self.key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &value,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .context("publishing")?;
            tokio::spawn(async move {
                let _ = confirm.await;
            });
        }
        Ok(())
    }
}

pub fn render(out: &mut String, results: &AmqpResults) {
    bridge::render_paths(
        out,
        &results.broker,
        results.rate,
        &[&results.plain, &results.to_amqp],
    );
}
