//! End to end, the bridge's failure modes with RabbitMQ as its broker, as
//! `kafka_failures.rs` checks them with Kafka: `kill -9` of the bridge
//! mid-stream in both directions, RabbitMQ restarted mid-stream (the
//! bridge reconnects, redeclares and resumes, `/healthz` saying `amqp`
//! down meanwhile), a memory alarm blocking the bridge's publishing
//! connection (`/healthz` saying `blocked` until it clears), and the
//! inbound queue deleted under the consumer (declared again, consumed again).
//!
//! Duplicates in RabbitMQ are allowed (at least once: a room replays what
//! was not confirmed); gaps never are; and rooms store each inbound message
//! exactly once, since each carries a `message-id`.

use std::collections::BTreeSet;
use std::time::Duration;

use roomcast_tests::deliveries::{bind_queue, collect, text_headers, Publisher, Received};
use roomcast_tests::rooms::{expect_stored_once, publish};
use roomcast_tests::{room, BridgeProcess, Http, RabbitMq, Worker};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

const TOTAL: u64 = 1000;

/// A worker whose rate limits let this suite's load through.
const LOAD: &[(&str, &str)] = &[("RATE_PER_SEC", "100000"), ("RATE_BURST", "100000")];

/// Publishes messages `range` for `room` to the inbound exchange, each
/// with the `message-id` `room-n`.
async fn produce_range(publisher: &Publisher, room: &str, range: std::ops::Range<u64>) {
    for n in range {
        let id = format!("{room}-{n}");
        publisher
            .publish(
                "roomcast.inbound",
                room,
                json!({ "n": n }).to_string().as_bytes(),
                text_headers(&[("message-id", &id)]),
            )
            .await;
    }
}

/// Reads `queue` until it has held every seq in `1..=last` of `room`
/// (duplicates allowed: at least once).
async fn expect_every_seq(rabbit: &RabbitMq, queue: &str, room: &str, last: u64, wait: Duration) {
    let (_connection, channel) = rabbit.channel().await;
    let seqs = |got: &[Received]| -> BTreeSet<u64> {
        got.iter()
            .filter(|m| m.header("room").as_deref() == Some(room))
            .filter_map(|m| m.header("seq")?.parse().ok())
            .collect()
    };
    let got = collect(&channel, queue, wait, |got| seqs(got).len() as u64 >= last).await;
    assert_eq!(seqs(&got), (1..=last).collect::<BTreeSet<_>>());
}

/// Polls the bridge's `/healthz` until `healthy(status, body)`, or fails
/// saying `what` never happened, with the bridge's log.
async fn wait_health(bridge: &BridgeProcess, what: &str, healthy: impl Fn(u16, &Value) -> bool) {
    let http = Http::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = http.get(&bridge.url("/healthz"), None).await;
        if healthy(status, &body) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never {what}: {status} {body}\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_killed_bridge_loses_nothing() {
    let rabbit = RabbitMq::start().await;
    let worker = Worker::start(LOAD).await;
    let mut bridge = BridgeProcess::start(&worker, &rabbit, "one", &[]).await;
    let events = room("amqp-crash-events");
    {
        let (_connection, channel) = rabbit.channel().await;
        bind_queue(&channel, &events, "roomcast.events", "#").await;
    }
    let out = room("amqp-crash-out");
    let inbound = room("amqp-crash-in");
    let publisher = Publisher::new(&rabbit).await;

    let publishing = publish(&worker, &out, TOTAL);
    let producing = produce_range(&publisher, &inbound, 0..TOTAL);
    let killing = async {
        sleep(Duration::from_millis(700)).await;
        bridge.service.signal("KILL");
        bridge.service.exited_within(Duration::from_secs(5)).await;
        BridgeProcess::start(&worker, &rabbit, "one", &[]).await
    };
    let (_, _, restarted) = tokio::join!(publishing, producing, killing);

    expect_every_seq(&rabbit, &events, &out, TOTAL, Duration::from_secs(90)).await;
    expect_stored_once(&worker, &inbound, TOTAL, Duration::from_secs(90)).await;
    drop(restarted);
}

#[tokio::test]
async fn a_restarted_broker_loses_nothing() {
    let mut rabbit = RabbitMq::start().await;
    let worker = Worker::start(LOAD).await;
    let bridge = BridgeProcess::start(&worker, &rabbit, "one", &[]).await;
    let events = room("amqp-restart-events");
    {
        let (_connection, channel) = rabbit.channel().await;
        bind_queue(&channel, &events, "roomcast.events", "#").await;
    }
    let out = room("amqp-restart-out");
    let inbound = room("amqp-restart-in");
    {
        let publisher = Publisher::new(&rabbit).await;
        produce_range(&publisher, &inbound, 0..200).await;
    }
    publish(&worker, &out, 200).await;

    rabbit.stop_node().await;
    // Rooms keep accepting messages while RabbitMQ is away: they are the outbox.
    publish(&worker, &out, 100).await;
    wait_health(&bridge, "reported RabbitMQ down", |status, health| {
        status == 503 && health["amqp"] == "down"
    })
    .await;
    rabbit.restart().await;
    wait_health(&bridge, "recovered", |status, _| status == 200).await;
    {
        let publisher = Publisher::new(&rabbit).await;
        produce_range(&publisher, &inbound, 200..300).await;
    }
    // 200 before the restart and 100 while the broker was down: seqs
    // 1..=300, no gap, in the durable queue that outlived the restart.
    expect_every_seq(&rabbit, &events, &out, 300, Duration::from_secs(90)).await;
    expect_stored_once(&worker, &inbound, 300, Duration::from_secs(90)).await;
}

#[tokio::test]
async fn a_blocked_connection_shows_on_healthz_and_loses_nothing() {
    let rabbit = RabbitMq::start().await;
    let worker = Worker::start(LOAD).await;
    let bridge = BridgeProcess::start(&worker, &rabbit, "one", &[]).await;
    let events = room("amqp-blocked-events");
    {
        let (_connection, channel) = rabbit.channel().await;
        bind_queue(&channel, &events, "roomcast.events", "#").await;
    }
    let out = room("amqp-blocked-out");
    publish(&worker, &out, 50).await;

    // A memory alarm: RabbitMQ blocks connections as they publish.
    rabbit.ctl(&["set_vm_memory_high_watermark", "absolute", "1MB"]);
    publish(&worker, &out, 50).await;
    wait_health(
        &bridge,
        "reported the connection blocked",
        |status, health| status == 503 && health["amqp"] == "blocked",
    )
    .await;
    rabbit.ctl(&["set_vm_memory_high_watermark", "0.4"]);
    wait_health(&bridge, "recovered", |status, _| status == 200).await;
    expect_every_seq(&rabbit, &events, &out, 100, Duration::from_secs(90)).await;
}

#[tokio::test]
async fn a_deleted_queue_is_declared_again_and_consumption_resumes() {
    let rabbit = RabbitMq::start().await;
    let worker = Worker::start(LOAD).await;
    let bridge = BridgeProcess::start(&worker, &rabbit, "one", &[]).await;
    let inbound = room("amqp-redeclared");
    let publisher = Publisher::new(&rabbit).await;
    produce_range(&publisher, &inbound, 0..10).await;
    expect_stored_once(&worker, &inbound, 10, Duration::from_secs(30)).await;

    // Deleting the queue cancels the bridge's consumer (and its channel's
    // deliveries): the bridge opens a new source, which declares the queue
    // and its binding again.
    let (_connection, channel) = rabbit.channel().await;
    channel
        .queue_delete(
            "roomcast.inbound".into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the inbound queue");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rabbit
        .ctl(&["list_queues", "name", "consumers"])
        .lines()
        .any(|line| line.split_whitespace().collect::<Vec<_>>() == ["roomcast.inbound", "1"])
    {
        assert!(
            Instant::now() < deadline,
            "the queue was not declared and consumed again\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(300)).await;
    }
    produce_range(&publisher, &inbound, 10..20).await;
    expect_stored_once(&worker, &inbound, 20, Duration::from_secs(60)).await;
    wait_health(&bridge, "recovered", |status, _| status == 200).await;
}
