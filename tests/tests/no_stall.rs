//! End to end, the bridge never stalls and never loses: a message Kafka
//! refuses for good goes to the dead-letter topic and its room's relay
//! moves on; a room whose publishes keep failing holds no other room up;
//! and a 4xx that did not come from roomcast (here: a wrong path prefix in
//! `--worker-url`) is an outage, not a reason to dead-letter anything.

use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_tests::records::{collect, header, produce};
use roomcast_tests::{
    full_token, room, BridgeProcess, Broker, CaFile, FaultProxy, Http, Worker, STEP,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

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
async fn a_failing_room_does_not_hold_the_others() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    let stuck = room("stuck");
    let others: Vec<String> = (0..20).map(|_| room("flowing")).collect();
    let proxy = FaultProxy::start(&worker, &[stuck.as_str()]).await;
    let mut bridge = BridgeProcess::spawn(&proxy.url(""), &broker, "lanes", CaFile::TestCa, &[]);
    let health = bridge.url("/healthz");
    roomcast_tests::wait_http_ok(&health, &mut bridge.service, Duration::from_secs(60)).await;
    let kafka = broker.producer();
    for n in 0..5 {
        produce(
            &kafka,
            "roomcast.inbound",
            &stuck,
            &json!({"n": n}).to_string(),
            &[],
        )
        .await;
        for other in &others {
            produce(
                &kafka,
                "roomcast.inbound",
                other,
                &json!({"n": n}).to_string(),
                &[],
            )
            .await;
        }
    }

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
    assert!(
        bridge.service.log().contains(&stuck),
        "the failing room is named in the log"
    );
}

#[tokio::test]
async fn a_wrong_path_prefix_is_an_outage_not_a_dead_letter() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    let dlq = broker.consumer("roomcast.dlq");
    let bridge = BridgeProcess::spawn(
        &worker.url("/not-roomcast"),
        &broker,
        "misrouted",
        CaFile::TestCa,
        &[],
    );
    let r = room("misrouted");
    produce(
        &broker.producer(),
        "roomcast.inbound",
        &r,
        r#"{"n":1}"#,
        &[],
    )
    .await;

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
    // The record stays unconsumed for good: nothing reaches the DLQ while
    // the outage lasts (a bounded look, since this is an absence). The
    // consumer's own errors (the topic may not exist yet) are no record.
    let deadline = Instant::now() + STEP / 2;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(Ok(dead)) = tokio::time::timeout(left, dlq.recv()).await {
            panic!(
                "a record was dead-lettered during an outage: {:?}\n{}",
                dead.payload().map(String::from_utf8_lossy),
                bridge.service.log_tail()
            );
        }
    }
}
