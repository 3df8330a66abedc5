//! End to end, the bridge's failure modes (issue: "a crash at any point
//! loses nothing"): `kill -9` of the bridge mid-stream in both directions,
//! the broker frozen (SIGSTOP) mid-stream, and a second bridge instance
//! that shares the rooms and takes over the rooms of one that dies.
//!
//! Duplicates in Kafka are allowed (at-least-once); gaps never are, and
//! rooms store each inbound record exactly once thanks to idempotency keys.

use std::collections::BTreeSet;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use roomcast_tests::records::{header, produce};
use roomcast_tests::rooms::{expect_stored_once, publish};
use roomcast_tests::{metric, room, BridgeProcess, Broker, Http, Worker};
use serde_json::json;
use tokio::time::{sleep, Instant};

const TOTAL: u64 = 1000;

/// A worker whose rate limits let this suite's load through: it measures
/// the bridge, not the limiter.
const LOAD: &[(&str, &str)] = &[("RATE_PER_SEC", "100000"), ("RATE_BURST", "100000")];

/// What the events topic has delivered so far, as (room, seq) pairs.
type Seen = BTreeSet<(String, u64)>;

/// Waits until the events topic has held every seq in `1..=last` of each room.
async fn expect_every_seq(
    consumer: &StreamConsumer,
    seen: &mut Seen,
    rooms: &[String],
    last: u64,
    wait: Duration,
) {
    let deadline = Instant::now() + wait;
    let wanted = rooms.len() * last as usize;
    let complete = |seen: &Seen| {
        seen.iter()
            .filter(|(r, s)| rooms.contains(r) && *s <= last)
            .count()
            >= wanted
    };
    while !complete(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {wanted} (room, seq) pairs reached Kafka",
            seen.len()
        );
        if let Ok(Ok(m)) = tokio::time::timeout(left, consumer.recv()).await {
            let m = m.detach();
            let (Some(room), Some(seq)) = (
                header(&m, "room"),
                header(&m, "seq").and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            seen.insert((room, seq));
        }
    }
}

async fn produce_range(producer: &FutureProducer, room: &str, range: std::ops::Range<u64>) {
    for n in range {
        produce(
            producer,
            "roomcast.inbound",
            room,
            &json!({"n": n}).to_string(),
            &[],
        )
        .await;
    }
}

#[tokio::test]
async fn a_killed_bridge_loses_nothing() {
    let broker = Broker::start().await;
    let worker = Worker::start(LOAD).await;
    let consumer = broker.consumer("roomcast.events");
    let out = room("crash-out");
    let inbound = room("crash-in");
    let mut bridge = BridgeProcess::start(&worker, &broker, "one", &[]).await;
    let kafka = broker.producer();

    let publishing = publish(&worker, &out, TOTAL);
    let producing = produce_range(&kafka, &inbound, 0..TOTAL);
    let killing = async {
        sleep(Duration::from_millis(700)).await;
        bridge.service.signal("KILL");
        bridge.service.exited_within(Duration::from_secs(5)).await;
        BridgeProcess::start(&worker, &broker, "one", &[]).await
    };
    let (_, _, restarted) = tokio::join!(publishing, producing, killing);

    expect_every_seq(
        &consumer,
        &mut Seen::new(),
        std::slice::from_ref(&out),
        TOTAL,
        Duration::from_secs(90),
    )
    .await;
    expect_stored_once(&worker, &inbound, TOTAL, Duration::from_secs(90)).await;
    drop(restarted);
}

#[tokio::test]
async fn a_frozen_broker_loses_nothing() {
    let broker = Broker::start().await;
    let worker = Worker::start(LOAD).await;
    let consumer = broker.consumer("roomcast.events");
    let bridge = BridgeProcess::start(&worker, &broker, "one", &[]).await;
    let http = Http::default();
    let out = room("frozen-out");
    let inbound = room("frozen-in");
    let kafka = broker.producer();
    produce_range(&kafka, &inbound, 0..200).await;
    publish(&worker, &out, 200).await;

    broker.service.signal("STOP");
    let stopped = Instant::now();
    // Rooms keep accepting messages while Kafka is away: they are the outbox.
    publish(&worker, &out, 100).await;
    let deadline = Instant::now() + Duration::from_secs(14);
    loop {
        if http.get(&bridge.url("/healthz"), None).await.0 == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never reported Kafka down"
        );
        sleep(Duration::from_millis(200)).await;
    }
    sleep(Duration::from_secs(15).saturating_sub(stopped.elapsed())).await;
    broker.service.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(&bridge.url("/healthz"), None).await.0 != 200 {
        assert!(Instant::now() < deadline, "/healthz did not recover");
        sleep(Duration::from_millis(200)).await;
    }
    produce_range(&kafka, &inbound, 200..300).await;
    // 200 before the freeze and 100 during it: seqs 1..=300, no gap.
    expect_every_seq(
        &consumer,
        &mut Seen::new(),
        std::slice::from_ref(&out),
        300,
        Duration::from_secs(90),
    )
    .await;
    expect_stored_once(&worker, &inbound, 300, Duration::from_secs(90)).await;
}

/// The rooms whose link is up on `bridge`, from its metrics.
async fn linked(bridge: &BridgeProcess, rooms: &[String]) -> BTreeSet<String> {
    let text = bridge.metrics_text().await;
    rooms
        .iter()
        .filter(|r| metric(&text, &format!("roomcast_bridge_link_up{{room=\"{r}\"}}")) == Some(1.0))
        .cloned()
        .collect()
}

#[tokio::test]
async fn instances_share_rooms_and_take_over() {
    let broker = Broker::start().await;
    let worker = Worker::start(LOAD).await;
    let consumer = broker.consumer("roomcast.events");
    let a = BridgeProcess::start(&worker, &broker, "a", &[]).await;
    let b = BridgeProcess::start(&worker, &broker, "b", &[]).await;
    let rooms: Vec<String> = (0..8).map(|_| room("shared")).collect();
    for r in &rooms {
        publish(&worker, r, 10).await;
    }
    let all: BTreeSet<String> = rooms.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (on_a, on_b) = (linked(&a, &rooms).await, linked(&b, &rooms).await);
        if on_a.is_disjoint(&on_b)
            && on_a.union(&on_b).cloned().collect::<BTreeSet<_>>() == all
            && !on_b.is_empty()
            && !on_a.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rooms not split one per instance: a {on_a:?}, b {on_b:?}"
        );
        sleep(Duration::from_millis(300)).await;
    }
    let mut seen = Seen::new();
    expect_every_seq(&consumer, &mut seen, &rooms, 10, Duration::from_secs(30)).await;

    b.service.signal("KILL");
    let killed = Instant::now();
    while linked(&a, &rooms).await != all {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "b's rooms did not move to a within 10 s"
        );
        sleep(Duration::from_millis(200)).await;
    }
    for r in &rooms {
        publish(&worker, r, 5).await;
    }
    // Each room now has seqs 1..=15 in Kafka, with no gap across the takeover.
    expect_every_seq(&consumer, &mut seen, &rooms, 15, Duration::from_secs(30)).await;
}
