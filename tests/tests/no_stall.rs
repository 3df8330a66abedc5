//! End to end, the bridge never stalls and never loses: a message Kafka
//! refuses for good goes to the dead-letter topic and its room's relay
//! moves on; a room whose publishes keep failing holds no other room up,
//! and its records wait, neither dead-lettered nor committed past, until
//! it recovers; and a 4xx that did not come from roomcast (here: a wrong
//! path prefix in `--worker-url`) is an outage, not a reason to
//! dead-letter anything.

use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_tests::records::{collect, header, produce};
use roomcast_tests::{
    full_token, metric, room, BridgeProcess, Broker, CaFile, Client, FaultProxy, Http, Worker,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// The bridge's consumer group (its `--group-id` default).
const GROUP: &str = "roomcast-bridge";
const INBOUND: &str = "roomcast.inbound";

/// Every `roomcast_bridge_dlq_total` series on a bridge's `/metrics`, as
/// `(labels, value)`: empty while nothing was dead-lettered.
fn dead_letters(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("roomcast_bridge_dlq_total"))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Stops `bridge` the way an operator does (SIGTERM: lanes drain, offsets
/// are committed synchronously, then it exits), so what its group has
/// committed afterwards is all it will ever commit.
async fn stop(bridge: &mut BridgeProcess) {
    bridge.service.signal("TERM");
    let code = bridge.service.exited_within(Duration::from_secs(40)).await;
    assert_eq!(code, Some(0), "{}", bridge.service.log_tail());
}

/// Starts a bridge that reaches the worker through `proxy`.
async fn bridge_via(proxy: &FaultProxy, broker: &Broker, instance: &str) -> BridgeProcess {
    let mut bridge = BridgeProcess::spawn(&proxy.url(""), broker, instance, CaFile::TestCa, &[]);
    let health = bridge.url("/healthz");
    roomcast_tests::wait_http_ok(&health, &mut bridge.service, Duration::from_secs(60)).await;
    bridge
}

#[tokio::test]
async fn a_message_kafka_refuses_is_dead_lettered_and_the_room_moves_on() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    // Kafka refuses records over 4 KiB; the room accepts up to 64 KiB.
    let _bridge = BridgeProcess::start(
        &worker,
        &broker,
        "refusals",
        &["--kafka-config", "message.max.bytes=4096"],
    )
    .await;
    let events = broker.consumer("roomcast.events");
    let dlq = broker.consumer("roomcast.dlq");
    let http = Http::default();
    let r = room("refused");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("refusals");
    for data in [json!("before"), json!("x".repeat(8192)), json!("after")] {
        let (status, body) = http
            .post(&url, &token, &json!({ "data": data }).to_string())
            .await;
        assert_eq!(status, 201, "{body}");
    }

    let delivered = collect(&events, Duration::from_secs(30), |got| got.len() >= 2).await;
    let seqs: Vec<String> = delivered.iter().filter_map(|r| header(r, "seq")).collect();
    assert_eq!(
        seqs,
        ["1", "3"],
        "the refused message did not hold the next one"
    );
    let dead = collect(&dlq, Duration::from_secs(30), |got| !got.is_empty()).await;
    assert_eq!(header(&dead[0], "error").as_deref(), Some("too_large"));
    assert_eq!(header(&dead[0], "room").as_deref(), Some(r.as_str()));
    assert_eq!(header(&dead[0], "seq").as_deref(), Some("2"));
    assert!(header(&dead[0], "message-id").is_some_and(|id| !id.is_empty()));
    assert_eq!(dead[0].key(), Some(r.as_bytes()));
}

#[tokio::test]
async fn a_failing_room_does_not_hold_the_others_and_loses_nothing() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    let stuck = room("stuck");
    let others: Vec<String> = (0..20).map(|_| room("flowing")).collect();
    let proxy = FaultProxy::start(&worker, &[stuck.as_str()]).await;
    let mut bridge = bridge_via(&proxy, &broker, "lanes").await;
    let kafka = broker.producer();
    // Each round, the other rooms' records come before the stuck room's,
    // so the commit point has somewhere to stop short of its first one.
    let mut first_stuck = None;
    for n in 0..5 {
        for other in &others {
            let value = json!({ "n": n }).to_string();
            produce(&kafka, INBOUND, other, &value, &[]).await;
        }
        let value = json!({ "n": n }).to_string();
        let at = produce(&kafka, INBOUND, &stuck, &value, &[]).await;
        first_stuck.get_or_insert(at);
    }
    let (partition, first_stuck) = first_stuck.expect("the stuck room's first record");

    let http = Http::default();
    let token = full_token("check");
    let deadline = Instant::now() + Duration::from_secs(60);
    for other in &others {
        loop {
            let (_, page) = http
                .get(
                    &worker.url(&format!("/v1/rooms/{other}/messages?since=0")),
                    Some(&token),
                )
                .await;
            let ns: Vec<u64> = page["messages"]
                .as_array()
                .map(|m| m.iter().filter_map(|m| m["data"]["n"].as_u64()).collect())
                .unwrap_or_default();
            if ns.len() == 5 {
                assert_eq!(ns, [0, 1, 2, 3, 4], "{other} in order");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{other} got {ns:?} while {stuck} kept failing\n{}",
                bridge.service.log_tail()
            );
            sleep(Duration::from_millis(200)).await;
        }
    }
    let (_, page) = http
        .get(
            &worker.url(&format!("/v1/rooms/{stuck}/messages?since=0")),
            Some(&token),
        )
        .await;
    assert_eq!(
        page["messages"],
        json!([]),
        "the fault proxy let {stuck} through"
    );

    // While it fails, its records are neither dead-lettered nor committed
    // past: after a clean stop the group resumes at its first record,
    // though the other rooms' records after it are all in their rooms.
    let text = bridge.metrics_text().await;
    assert_eq!(dead_letters(&text), [], "{text}");
    stop(&mut bridge).await;
    assert_eq!(
        broker.committed(GROUP, INBOUND, partition),
        Some(first_stuck),
        "the commit point while {stuck} failed\n{}",
        bridge.service.log_tail()
    );

    // Another bridge takes over from there while the room still fails,
    // and delivers the records once it recovers: in order, each once,
    // before a record produced after them.
    let bridge = bridge_via(&proxy, &broker, "lanes").await;
    let mut subscriber =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{stuck}/ws?token={token}"))).await;
    subscriber.expect("welcome").await;
    // It consumes again from the stuck room's first record: once the other
    // rooms' later records are back in (duplicates, which the rooms
    // recognise), it has tried the stuck room's too, and failed.
    let again = (others.len() * 4) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = bridge.metrics_text().await;
        let series = r#"roomcast_bridge_relayed_total{direction="to_room"}"#;
        if metric(&text, series).unwrap_or(0.0) >= again {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second bridge did not take over\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
    proxy.recover(&stuck);
    let (_, last) = produce(&kafka, INBOUND, &stuck, r#""sentinel""#, &[]).await;
    // The new bridge's lane is in its backoff (up to 10 s) when the room
    // recovers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(text) = subscriber.next_text_within(left).await else {
            panic!(
                "only {got:?} reached {stuck} after it recovered\n{}",
                bridge.service.log_tail()
            );
        };
        let message: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(message["type"], "message", "{message}");
        if message["data"] == "sentinel" {
            break;
        }
        got.push(message["data"]["n"].clone());
    }
    assert_eq!(got, [0, 1, 2, 3, 4], "{}", bridge.service.log_tail());
    let text = bridge.metrics_text().await;
    assert_eq!(dead_letters(&text), [], "{text}");
    // And the commit point moves past them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.committed(GROUP, INBOUND, partition) != Some(last + 1) {
        assert!(
            Instant::now() < deadline,
            "the group never committed past the recovered room's records\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_wrong_path_prefix_is_an_outage_not_a_dead_letter() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    let mut bridge = BridgeProcess::spawn(
        &worker.url("/not-roomcast"),
        &broker,
        "misrouted",
        CaFile::TestCa,
        &[],
    );
    let r = room("misrouted");
    let kafka = broker.producer();
    let (partition, offset) = produce(&kafka, INBOUND, &r, r#"{"n":1}"#, &[]).await;

    let http = Http::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = http.raw().get(bridge.url("/healthz")).send().await {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status == 503 && body["publish"] == "down" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never reported the publish outage\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert!(bridge.service.log().contains("did not come from roomcast"));

    // A record without a key, produced after the outage showed, is
    // dead-lettered at once: once the bridge counts it, it is the only
    // dead letter, and the first record in the dead-letter topic (read by
    // a consumer that starts now, when the topic surely exists).
    produce(&kafka, INBOUND, "", r#""sentinel""#, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = bridge.metrics_text().await;
        if metric(&text, r#"roomcast_bridge_dlq_total{reason="no_key"}"#).is_some() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the key-less record was never dead-lettered\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        dead_letters(&text),
        [(r#"{reason="no_key"}"#.to_owned(), 1.0)],
        "{text}"
    );
    let dlq = broker.consumer("roomcast.dlq");
    let dead = collect(&dlq, Duration::from_secs(30), |got| {
        got.last()
            .is_some_and(|d| header(d, "error").as_deref() == Some("no_key"))
    })
    .await;
    assert_eq!(
        dead.len(),
        1,
        "dead-lettered during an outage: {:?}",
        dead.iter()
            .map(|d| d.payload().map(String::from_utf8_lossy))
            .collect::<Vec<_>>()
    );
    // Nor was it consumed: after a clean stop the group resumes at it.
    stop(&mut bridge).await;
    let committed = broker.committed(GROUP, INBOUND, partition);
    assert!(
        committed.is_none_or(|at| at <= offset),
        "committed {committed:?}, past the record at {offset}"
    );
}
