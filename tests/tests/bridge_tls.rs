//! End to end, the bridge over TLS both ways: to the worker (served over
//! HTTPS by the harness) trusting only what it is told to, and to Kafka
//! behind a TLS terminator, configured through librdkafka properties alone,
//! with secrets kept out of its log and its metrics.

use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_tests::records::{collect, produce};
use roomcast_tests::{
    ca_file, fresh_dir, full_token, room, BridgeProcess, Broker, CaFile, Client, Worker,
};
use serde_json::{json, Value};

#[tokio::test]
async fn a_worker_certificate_that_does_not_verify_stops_the_bridge() {
    let worker = Worker::start(&[]).await;
    let broker = Broker::start().await;
    let mut bridge =
        BridgeProcess::spawn(&worker.url(""), &broker, "untrusting", CaFile::Omitted, &[]);
    let code = bridge.service.exited_within(Duration::from_secs(30)).await;
    let log = bridge.service.log_tail();
    assert_eq!(code, Some(1), "the bridge must refuse to start:\n{log}");
    assert!(
        log.contains(&worker.url("/healthz"))
            && log.contains("does not verify")
            && log.contains("--ca-file"),
        "the error names the URL, the problem and the fix:\n{log}"
    );
}

/// A secret the bridge is given and must never print.
const SASL_SECRET: &str = "never-in-a-log-7f3a9c";

#[tokio::test]
async fn relays_both_ways_over_tls_with_kafka_configured_by_properties() {
    let broker = Broker::start_tls().await;
    let worker = Worker::start(&[]).await;
    let properties = fresh_dir("kafka-properties").join("client.properties");
    std::fs::write(
        &properties,
        format!(
            "# the broker's TLS, as an operator keeps it\nsecurity.protocol=ssl\nssl.ca.location={}\n",
            ca_file().display()
        ),
    )
    .unwrap();
    let properties_arg = properties.display().to_string();
    let secret = format!("sasl.password={SASL_SECRET}");
    let bridge = BridgeProcess::start(
        &worker,
        &broker,
        "tls",
        &[
            "--kafka-config-file",
            &properties_arg,
            "--kafka-config",
            "compression.type=gzip",
            "--kafka-config",
            &secret,
        ],
    )
    .await;
    let events = broker.consumer("roomcast.events");
    let r = room("tls");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("tls"))))
            .await;
    client.expect("welcome").await;

    client
        .send_json(json!({"type": "publish", "data": "room to kafka"}))
        .await;
    let records = collect(&events, Duration::from_secs(30), |got| !got.is_empty()).await;
    let value: Value = serde_json::from_slice(records[0].payload().unwrap()).unwrap();
    assert_eq!(value["data"], "room to kafka");

    produce(
        &broker.producer(),
        "roomcast.inbound",
        &r,
        r#""kafka to room""#,
        &[],
    )
    .await;
    loop {
        let frame = client.next_json().await;
        if frame["type"] == "message" && frame["origin"] == "kafka" {
            assert_eq!(frame["data"], "kafka to room");
            break;
        }
    }

    let log = bridge.service.log();
    assert!(
        log.contains("sasl.password=[redacted]"),
        "{}",
        bridge.service.log_tail()
    );
    assert!(
        !log.contains(SASL_SECRET),
        "the secret is in the bridge's log"
    );
    assert!(!bridge.metrics_text().await.contains(SASL_SECRET));
}
