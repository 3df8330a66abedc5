//! End to end, the bridge over TLS both ways: to the worker (served over
//! HTTPS by the harness) trusting only what it is told to, and to Kafka
//! behind a TLS terminator, with and without SASL (SCRAM-SHA-512),
//! configured through librdkafka properties alone, with secrets kept out of
//! its log and its metrics.

use std::time::Duration;

use rdkafka::message::Message as _;
use roomcast_tests::records::{collect, produce};
use roomcast_tests::{
    fresh_dir, full_token, room, BridgeProcess, Broker, CaFile, Client, Http, Worker, SASL_PASSWORD,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

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
const SECRET_VALUE: &str = "never-in-a-log-7f3a9c";

#[tokio::test]
async fn relays_both_ways_over_tls_with_kafka_configured_by_properties() {
    let broker = Broker::start_tls().await;
    let worker = Worker::start(&[]).await;
    let properties = properties_file(&broker, None);
    let secret = format!("sasl.password={SECRET_VALUE}");
    let bridge = BridgeProcess::start(
        &worker,
        &broker,
        "tls",
        &[
            "--kafka-config-file",
            &properties,
            "--kafka-config",
            "compression.type=gzip",
            "--kafka-config",
            &secret,
        ],
    )
    .await;
    relays_both_ways(&worker, &broker, &room("tls")).await;

    let log = bridge.service.log();
    assert!(
        log.contains("sasl.password=[redacted]"),
        "{}",
        bridge.service.log_tail()
    );
    assert!(
        !log.contains(SECRET_VALUE),
        "the secret is in the bridge's log"
    );
    assert!(!bridge.metrics_text().await.contains(SECRET_VALUE));
}

#[tokio::test]
async fn relays_over_sasl_ssl_and_a_wrong_password_stays_unhealthy() {
    let broker = Broker::start_sasl().await;
    let worker = Worker::start(&[]).await;
    let good = properties_file(&broker, None);
    let bridge =
        BridgeProcess::start(&worker, &broker, "sasl", &["--kafka-config-file", &good]).await;
    relays_both_ways(&worker, &broker, &room("sasl")).await;
    assert!(
        !bridge.service.log().contains(SASL_PASSWORD),
        "the password is in the bridge's log"
    );

    let bad = properties_file(&broker, Some("not-the-password"));
    let wrong = BridgeProcess::spawn(
        &worker.url(""),
        &broker,
        "sasl-wrong",
        CaFile::TestCa,
        &["--kafka-config-file", &bad],
    );
    let http = Http::default();
    let mut refused = false;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && !refused {
        if let Ok(response) = http.raw().get(wrong.url("/healthz")).send().await {
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 200, "healthy with a wrong password: {body}");
            refused = body["kafka"] == "down" && wrong.service.log().contains("Authentication");
        }
        sleep(Duration::from_millis(300)).await;
    }
    assert!(
        refused,
        "no authentication failure reported\n{}",
        wrong.service.log_tail()
    );
}

/// `broker`'s client properties as an operator keeps them, in a properties
/// file; with `password`, a wrong SASL password in place of the right one.
fn properties_file(broker: &Broker, password: Option<&str>) -> String {
    let path = fresh_dir("kafka-properties").join("client.properties");
    let mut text = String::from("# the cluster's TLS (and SASL), as an operator keeps it\n");
    for (key, value) in broker.kafka_config() {
        let value = match password {
            Some(wrong) if key == "sasl.password" => wrong.to_owned(),
            _ => value,
        };
        text.push_str(&format!("{key}={value}\n"));
    }
    std::fs::write(&path, text).expect("write the properties");
    path.display().to_string()
}

/// A message from a WebSocket reaches Kafka, and a Kafka record reaches the
/// WebSocket, through the bridge already running between them.
async fn relays_both_ways(worker: &Worker, broker: &Broker, r: &str) {
    let events = broker.consumer("roomcast.events");
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
        r,
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
}
