//! End to end, the bridge's SIGTERM (docs/bridge.md, "Links and shutdown"): with
//! messages in flight both ways, the drain delivers them, moves the room's
//! cursor to what Kafka stored and commits the inbound offsets of what the
//! rooms stored, and the process exits within 30 s; nothing is lost, which
//! a second bridge shows by relaying whatever the first left. And with
//! Kafka gone for good, the shutdown is still bounded at 30 s.
//!
//! What crosses processes is the contract here (the room's cursor, the
//! consumer group's committed offset, records in topics, the exit), so
//! this runs the real bridge binary against the real worker and broker;
//! the drain's steps one by one are unit tests in the bridge.
//!
//! "In flight" is made certain, not hoped for: Kafka is frozen (SIGSTOP)
//! while the room's messages reach the bridge, so none can be confirmed
//! before the SIGTERM; and a proxy in front of the worker holds the
//! bridge's publishes into the inbound rooms until after it, so the proxy
//! has seen each of them arrive before the signal.

use std::collections::BTreeSet;
use std::time::Duration;

use roomcast_tests::records::{header, produce};
use roomcast_tests::{
    full_token, room, wait_http_ok, BridgeProcess, Broker, CaFile, FaultProxy, Http, Worker,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// The bridge's consumer group (`--group-id`'s default).
const GROUP: &str = "roomcast-bridge";
/// docs/protocol.md: "the whole shutdown is bounded at 30 s".
const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);
/// Room messages published while Kafka is frozen.
const OUTBOUND: u64 = 30;
/// Inbound rooms, one record each, so each has its own publish in flight.
const INBOUND_ROOMS: usize = 6;

/// A worker whose rate limits let this suite's publishes through.
const LOAD: &[(&str, &str)] = &[("RATE_PER_SEC", "100000"), ("RATE_BURST", "100000")];

async fn publish(worker: &Worker, room: &str, data: Value) {
    let (status, body) = Http::default()
        .post(
            &worker.url(&format!("/v1/rooms/{room}/messages")),
            &full_token("publisher"),
            &json!({ "data": data }).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The `data` of every message in `room`'s history.
async fn history(worker: &Worker, room: &str) -> Vec<Value> {
    let (status, page) = Http::default()
        .get(
            &worker.url(&format!("/v1/rooms/{room}/messages?since=0&limit=1000")),
            Some(&full_token("reader")),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

/// Waits until `room`'s history holds `count` messages.
async fn wait_history(worker: &Worker, room: &str, count: usize, bridge: &BridgeProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while history(worker, room).await.len() < count {
        assert!(
            Instant::now() < deadline,
            "{room} never held {count} messages\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// The seqs of `room` in the events topic now (duplicates allowed).
async fn seqs_in_kafka(broker: &Broker, room: &str) -> BTreeSet<u64> {
    broker
        .read_all("roomcast.events", Duration::from_secs(30))
        .await
        .iter()
        .filter(|r| header(r, "room").as_deref() == Some(room))
        .filter_map(|r| header(r, "seq")?.parse().ok())
        .collect()
}

/// Waits until the events topic holds every seq of `room` up to `last`.
async fn wait_in_kafka(broker: &Broker, room: &str, last: u64, bridge: &BridgeProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let all: BTreeSet<u64> = (1..=last).collect();
    while !seqs_in_kafka(broker, room).await.is_superset(&all) {
        assert!(
            Instant::now() < deadline,
            "{room} seqs 1..={last} never all reached Kafka\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the bridge's log shows it took the signal and is draining.
async fn wait_draining(bridge: &BridgeProcess) {
    bridge
        .service
        .wait_log("SIGTERM: draining", Duration::from_secs(10))
        .await;
}

/// A bridge reaching the worker through `proxy`, ready.
async fn bridge_through(proxy: &FaultProxy, broker: &Broker, instance: &str) -> BridgeProcess {
    let mut bridge = BridgeProcess::spawn(&proxy.url(""), broker, instance, CaFile::Omitted, &[]);
    let health = bridge.url("/healthz");
    wait_http_ok(&health, &mut bridge.service, Duration::from_secs(60)).await;
    bridge
}

#[tokio::test]
async fn sigterm_drains_what_is_in_flight_both_ways_and_loses_nothing() {
    let broker = Broker::start().await;
    let worker = Worker::start(LOAD).await;
    let out = room("drain-out");
    let warm = room("drain-warm");
    let inbound: Vec<String> = (0..INBOUND_ROOMS).map(|_| room("drain-in")).collect();
    let held: Vec<&str> = inbound.iter().map(String::as_str).collect();
    let proxy = FaultProxy::holding(&worker, &held).await;
    let mut bridge = bridge_through(&proxy, &broker, "drain").await;
    let kafka = broker.producer();

    // Both directions flow: the room's link is up and the consumer has
    // its partition.
    publish(&worker, &out, json!("warm")).await;
    produce(&kafka, "roomcast.inbound", &warm, r#"{"n":0}"#, &[]).await;
    wait_in_kafka(&broker, &out, 1, &bridge).await;
    wait_history(&worker, &warm, 1, &bridge).await;

    // Inbound in flight: every record taken, each room's publish held.
    for (n, r) in inbound.iter().enumerate() {
        produce(
            &kafka,
            "roomcast.inbound",
            r,
            &json!({ "n": n }).to_string(),
            &[],
        )
        .await;
    }
    proxy
        .wait_held(INBOUND_ROOMS, Duration::from_secs(60))
        .await;

    // Outbound in flight: Kafka is frozen while the room's messages reach
    // the bridge, so none can be confirmed before the signal.
    broker.service.signal("STOP");
    for n in 1..=OUTBOUND {
        publish(&worker, &out, json!(n)).await;
    }

    bridge.service.signal("TERM");
    let signalled = Instant::now();
    wait_draining(&bridge).await;
    proxy.release();
    broker.service.signal("CONT");
    let exit = bridge
        .service
        .exited_within(SHUTDOWN_BOUND + Duration::from_secs(10))
        .await;
    let took = signalled.elapsed();
    assert_eq!(exit, Some(0), "{}", bridge.service.log_tail());
    assert!(took < SHUTDOWN_BOUND, "the shutdown took {took:?}");

    // Room → Kafka: the cursor is exactly what Kafka has, which includes
    // messages confirmed only during the drain; the rest waits in the room.
    let stats = worker.stats(&out).await;
    let (head, cursor, pending) = (
        stats["head"].as_u64().unwrap(),
        stats["cursor"].as_u64().unwrap(),
        stats["pending"].as_u64().unwrap(),
    );
    assert_eq!(head, OUTBOUND + 1);
    let stored = seqs_in_kafka(&broker, &out).await;
    assert_eq!(
        stored,
        (1..=cursor).collect::<BTreeSet<u64>>(),
        "Kafka holds exactly the acknowledged messages (cursor {cursor})"
    );
    assert!(
        cursor > 1,
        "no message in flight at the signal was acknowledged in the drain\n{}",
        bridge.service.log_tail()
    );
    assert_eq!(pending, head - cursor, "{stats}");

    // Kafka → rooms: each held publish finished in the drain, and the
    // group's committed offset covers every record the rooms stored.
    for (n, r) in inbound.iter().enumerate() {
        assert_eq!(
            history(&worker, r).await,
            [json!({ "n": n })],
            "{r}\n{}",
            bridge.service.log_tail()
        );
    }
    let records = 1 + INBOUND_ROOMS as i64;
    assert_eq!(
        broker.committed(GROUP, "roomcast.inbound", 0),
        Some(records),
        "the committed offset covers the {records} records in rooms"
    );

    // Nothing was lost: the next bridge relays what the first left, and
    // stores no inbound record twice.
    let next = bridge_through(&proxy, &broker, "drain").await;
    wait_in_kafka(&broker, &out, OUTBOUND + 1, &next).await;
    produce(&kafka, "roomcast.inbound", &warm, r#"{"n":1}"#, &[]).await;
    wait_history(&worker, &warm, 2, &next).await;
    for r in &inbound {
        assert_eq!(history(&worker, r).await.len(), 1, "{r} got a record twice");
    }
}

#[tokio::test]
async fn sigterm_with_kafka_gone_still_ends_within_30_s() {
    let broker = Broker::start().await;
    let worker = Worker::start(LOAD).await;
    let out = room("gone-out");
    let warm = room("gone-in");
    let mut bridge = BridgeProcess::start(&worker, &broker, "gone", &[]).await;
    let kafka = broker.producer();
    publish(&worker, &out, json!("warm")).await;
    produce(&kafka, "roomcast.inbound", &warm, r#"{"n":0}"#, &[]).await;
    wait_in_kafka(&broker, &out, 1, &bridge).await;
    wait_history(&worker, &warm, 1, &bridge).await;

    // Kafka stops answering for good, with room messages in flight.
    broker.service.signal("STOP");
    for n in 1..=OUTBOUND {
        publish(&worker, &out, json!(n)).await;
    }
    bridge.service.signal("TERM");
    let signalled = Instant::now();
    let exit = bridge
        .service
        .exited_within(SHUTDOWN_BOUND + Duration::from_secs(60))
        .await;
    let took = signalled.elapsed();
    assert!(
        exit.is_some(),
        "still running {took:?} after SIGTERM\n{}",
        bridge.service.log_tail()
    );
    assert!(
        took < SHUTDOWN_BOUND + Duration::from_secs(1),
        "the shutdown took {took:?} (exit {exit:?})\n{}",
        bridge.service.log_tail()
    );
    // What Kafka never confirmed stays in the room for the next bridge.
    let stats = worker.stats(&out).await;
    assert_eq!(stats["cursor"], 1, "{stats}");
    assert_eq!(stats["pending"], OUTBOUND, "{stats}");
    broker.service.signal("CONT");
}
