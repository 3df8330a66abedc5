//! End to end through a real Kafka-protocol broker (tansu, its own process):
//! room → Kafka with the key, value and headers of docs/bridge.md, "Kafka mapping" (the
//! publisher's `traceparent` included); Kafka → rooms with idempotency keys
//! and trace context; nothing from Kafka echoed back; bad records
//! in the dead-letter topic while good ones keep flowing; the bridge's
//! `/metrics` and `/healthz` (and that the dashboard and alerts in `deploy/`
//! query only what it exports); and a graceful SIGTERM.

use std::time::Duration;

use rdkafka::message::Message as _;
use rdkafka::producer::FutureProducer;
use roomcast_bridge::metrics::METRIC_NAMES;
use roomcast_tests::records::{collect, headers, produce};
use roomcast_tests::{dashboards, full_token, room, BridgeProcess, Broker, Client, Http, Worker};
use serde_json::{json, Value};

/// The worker's message limit, small so that one Kafka record exceeds it:
/// the bridge dead-letters what the worker refuses as `too_large`.
const MAX_BYTES: &str = "1024";

/// Produces an inbound record, with a `message-id` header when given one.
async fn send(producer: &FutureProducer, key: Option<&str>, value: &str, message_id: Option<&str>) {
    let headers: Vec<(&str, &str)> = message_id
        .map(|id| ("message-id", id))
        .into_iter()
        .collect();
    produce(
        producer,
        "roomcast.inbound",
        key.unwrap_or_default(),
        value,
        &headers,
    )
    .await;
}

/// A W3C trace context, as a tracing library would send it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn relays_through_kafka() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[("MAX_MESSAGE_BYTES", MAX_BYTES)]).await;
    let mut bridge = BridgeProcess::start(&worker, &broker, "solo", &[]).await;
    let events = broker.consumer("roomcast.events");
    let dlq = broker.consumer("roomcast.dlq");
    let kafka = broker.producer();
    let http = Http::default();
    let r = room("kafka");

    // Room → Kafka.
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("alice"))))
            .await;
    client.expect("welcome").await;
    client
        .send_json(json!({"type": "publish", "data": {"n": 1}, "trace": TRACEPARENT}))
        .await;
    let sent = client.expect("message").await;
    client.expect("ack").await;
    let records = collect(&events, Duration::from_secs(30), |r| !r.is_empty()).await;
    let record = &records[0];
    assert_eq!(record.key(), Some(r.as_bytes()));
    let value: Value = serde_json::from_slice(record.payload().unwrap()).unwrap();
    let mut expected = sent.clone();
    expected.as_object_mut().unwrap().remove("type");
    assert_eq!(value, expected);
    let h = headers(record);
    assert_eq!(h["message-id"], sent["id"].as_str().unwrap());
    assert_eq!(
        (h["room"].as_str(), h["seq"].as_str(), h["origin"].as_str()),
        (r.as_str(), "1", "ws")
    );
    assert_eq!(
        h["traceparent"], TRACEPARENT,
        "the publisher's trace context"
    );

    // Kafka → room, once per message-id, never echoed back to Kafka.
    send(&kafka, Some(&r), r#"{"from":"kafka"}"#, Some("ext-1")).await;
    send(&kafka, Some(&r), r#"{"from":"kafka"}"#, Some("ext-1")).await;
    send(&kafka, Some(&r), r#"{"from":"kafka","n":2}"#, None).await;
    let first = client.expect("message").await;
    assert_eq!(
        (
            first["origin"].as_str(),
            first["id"].as_str(),
            first["data"]["from"].as_str()
        ),
        (Some("kafka"), Some("ext-1"), Some("kafka"))
    );
    let second = client.expect("message").await;
    assert!(
        second["id"]
            .as_str()
            .unwrap()
            .starts_with("kafka:roomcast.inbound:"),
        "{second}"
    );
    assert_eq!(
        second["data"]["n"], 2,
        "the duplicate ext-1 was delivered twice"
    );
    produce(
        &kafka,
        "roomcast.inbound",
        &r,
        r#"{"traced":true}"#,
        &[("traceparent", TRACEPARENT)],
    )
    .await;
    let traced = client.expect("message").await;
    assert_eq!(
        (traced["data"]["traced"].as_bool(), traced["trace"].as_str()),
        (Some(true), Some(TRACEPARENT)),
        "a Kafka record's trace context reaches the subscriber"
    );

    // Bad records go to the DLQ; a good one after them still flows.
    send(&kafka, None, r#"{"x":1}"#, None).await;
    send(&kafka, Some(".bad room"), r#"{"x":1}"#, None).await;
    send(&kafka, Some(&r), "not json", None).await;
    send(
        &kafka,
        Some(&r),
        &json!({"big": "x".repeat(2000)}).to_string(),
        None,
    )
    .await;
    // A `message-id` the room refuses is the producer's mistake: dead-lettered
    // as it is, never replaced by an id the producer did not give.
    let long_id = "m".repeat(200);
    send(&kafka, Some(&r), r#"{"x":2}"#, Some(&long_id)).await;
    send(&kafka, Some(&r), r#"{"after":"the bad ones"}"#, None).await;
    assert_eq!(
        client.expect("message").await["data"]["after"],
        "the bad ones"
    );
    let dead = collect(&dlq, Duration::from_secs(30), |r| r.len() >= 5).await;
    let reasons: Vec<String> = dead.iter().map(|d| headers(d)["error"].clone()).collect();
    assert_eq!(
        reasons,
        [
            "no_key",
            "bad_room",
            "bad_format",
            "too_large",
            "bad_format"
        ]
    );
    assert_eq!(headers(&dead[4])["message-id"], long_id);
    for d in &dead {
        let h = headers(d);
        assert_eq!(h["source-topic"], "roomcast.inbound");
        assert!(
            h["source-partition"].parse::<i32>().is_ok()
                && h["source-offset"].parse::<i64>().is_ok(),
            "{h:?}"
        );
    }
    assert_eq!(dead[1].key(), Some(".bad room".as_bytes()));
    assert_eq!(dead[2].payload(), Some("not json".as_bytes()));

    // Only the WebSocket message went to Kafka: nothing from Kafka came back.
    client
        .send_json(json!({"type": "publish", "data": "last"}))
        .await;
    let more = collect(&events, Duration::from_secs(30), |r| !r.is_empty()).await;
    let origins: Vec<String> = more.iter().map(|m| headers(m)["origin"].clone()).collect();
    assert_eq!(
        origins,
        ["ws"],
        "{:?}",
        more.iter().map(headers).collect::<Vec<_>>()
    );

    // Metrics: every documented name, with values that match the traffic.
    let (status, _) = http.get(&bridge.url("/healthz"), None).await;
    assert_eq!(status, 200);
    let text = http
        .raw()
        .get(bridge.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in METRIC_NAMES {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.contains(&format!("roomcast_bridge_link_up{{room=\"{r}\"}} 1")),
        "{text}"
    );
    // The dashboard and the alert rules query only what this bridge exports.
    let exported = dashboards::exported(&text);
    let missing: Vec<_> = dashboards::queried()
        .into_iter()
        .filter(|name| !exported.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "{:?} query {missing:?}, which the running bridge does not export:\n{text}",
        dashboards::FILES
    );
    for (reason, count) in [
        ("no_key", 1),
        ("bad_room", 1),
        ("bad_format", 2),
        ("too_large", 1),
    ] {
        assert!(
            text.contains(&format!(
                "roomcast_bridge_dlq_total{{reason=\"{reason}\"}} {count}"
            )),
            "{reason}: {text}"
        );
    }
    let relayed = |direction: &str| -> u64 {
        let prefix = format!("roomcast_bridge_relayed_total{{direction=\"{direction}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(relayed("to_kafka"), 2);
    assert!(relayed("to_room") >= 3, "{text}");

    // SIGTERM drains and exits cleanly.
    bridge.service.signal("TERM");
    assert_eq!(
        bridge.service.exited_within(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        bridge.service.log_tail()
    );
}
