//! End to end, what the bridge writes when the dead-letter topic refuses a
//! dead letter (docs/bridge.md, "Dead letters"): the record without its
//! value and with `value-dropped: <reason>`, in both directions; and when
//! even that is refused, a `dead_letter_refused` count and a log line,
//! while the relay goes on.
//!
//! The refusal comes from the Kafka client's own size limit
//! (`message.max.bytes`), which the bridge takes from `--kafka-config` and
//! which librdkafka reports as the same `too_large` error a broker's topic
//! limit gives: what crosses into the dead-letter topic is the contract,
//! so it runs against the real bridge binary and broker.

use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage};
use roomcast_tests::records::{collect, headers, produce};
use roomcast_tests::{full_token, metric, room, BridgeProcess, Broker, Client, Http, Worker};
use serde_json::json;

/// The producer's limit on a record (key, value and headers): room
/// messages and inbound records of a few hundred bytes fit; their dead
/// letters' headers alone fit too.
const KAFKA_LIMIT: usize = 2000;
/// The rooms' limit on `data`, above [`KAFKA_LIMIT`], so a room takes a
/// message that Kafka then refuses.
const ROOM_LIMIT: &str = "3000";

#[tokio::test]
async fn dead_letters_whose_value_is_refused_keep_their_headers_and_say_why() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[("MAX_MESSAGE_BYTES", ROOM_LIMIT)]).await;
    let limit = format!("message.max.bytes={KAFKA_LIMIT}");
    let bridge =
        BridgeProcess::start(&worker, &broker, "fallbacks", &["--kafka-config", &limit]).await;
    let dlq = broker.consumer("roomcast.dlq");
    let events = broker.consumer("roomcast.events");
    let r = room("fallbacks");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("alice"))))
            .await;
    client.expect("welcome").await;

    // Room → Kafka: a message the room takes and Kafka refuses, then a
    // small one that must follow it.
    let big = "x".repeat(2500);
    client
        .send_json(json!({"type": "publish", "data": big}))
        .await;
    let refused = client.expect("message").await;
    client.expect("ack").await;
    client
        .send_json(json!({"type": "publish", "data": "after"}))
        .await;
    client.expect("message").await;
    client.expect("ack").await;

    // Kafka → room: a record the room refuses (too large), whose value
    // the dead-letter topic refuses too.
    let kafka = broker.producer();
    let big_record = json!({ "big": "y".repeat(4000) }).to_string();
    produce(&kafka, "roomcast.inbound", &r, &big_record, &[]).await;

    let dead = collect(&dlq, Duration::from_secs(60), |got| got.len() >= 2).await;
    let (outbound, inbound): (Vec<&OwnedMessage>, Vec<&OwnedMessage>) =
        dead.iter().partition(|d| headers(d).contains_key("room"));
    assert_eq!((outbound.len(), inbound.len()), (1, 1), "{dead:?}");

    let out = outbound[0];
    let h = headers(out);
    assert_eq!(out.payload(), None, "the refused value was kept");
    assert_eq!(out.key(), Some(r.as_bytes()));
    assert_eq!(
        h.get("value-dropped").map(String::as_str),
        Some("too_large"),
        "{h:?}"
    );
    assert_eq!(h["error"], "too_large");
    assert_eq!(h["room"], r);
    assert_eq!(h["seq"], "1");
    assert_eq!(h["message-id"], refused["id"].as_str().unwrap());
    assert_eq!(h["origin"], "ws");

    let into = inbound[0];
    let h = headers(into);
    assert_eq!(into.payload(), None, "the refused value was kept");
    assert_eq!(into.key(), Some(r.as_bytes()));
    assert_eq!(
        h.get("value-dropped").map(String::as_str),
        Some("too_large"),
        "{h:?}"
    );
    assert_eq!(h["error"], "too_large");
    assert_eq!(h["source-topic"], "roomcast.inbound");
    assert_eq!(h["source-partition"], "0");
    let offset = &h["source-offset"];
    assert_eq!(
        h["message-id"],
        format!("kafka:roomcast.inbound:0:{offset}")
    );

    // The room's relay went on past the refused message.
    let delivered = collect(&events, Duration::from_secs(30), |got| !got.is_empty()).await;
    assert_eq!(headers(&delivered[0])["seq"], "2");
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(&text, r#"roomcast_bridge_dlq_total{reason="too_large"}"#),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_dead_letter_refused_even_without_its_value_is_counted_and_logged() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[]).await;
    let limit = format!("message.max.bytes={KAFKA_LIMIT}");
    let bridge =
        BridgeProcess::start(&worker, &broker, "refused", &["--kafka-config", &limit]).await;
    let r = room("refused");
    let kafka = broker.producer();
    // The room refuses a `message-id` over 128 bytes (`bad_format`); the
    // dead letter carries it as a header, which alone is over the limit.
    let long_id = "i".repeat(KAFKA_LIMIT + 500);
    produce(
        &kafka,
        "roomcast.inbound",
        &r,
        r#"{"n":1}"#,
        &[("message-id", &long_id)],
    )
    .await;
    produce(&kafka, "roomcast.inbound", &r, r#"{"n":2}"#, &[]).await;

    // The relay moved on: the next record is in the room.
    let http = Http::default();
    let token = full_token("check");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, page) = http
            .get(
                &worker.url(&format!("/v1/rooms/{r}/messages?since=0")),
                Some(&token),
            )
            .await;
        let ns: Vec<u64> = page["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["data"]["n"].as_u64()).collect())
            .unwrap_or_default();
        if !ns.is_empty() {
            assert_eq!(ns, [2], "only the record after the refused one");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record after the refused one never reached the room\n{}",
            bridge.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Counted once the refused dead letter is given up, before the relay
    // moved on to the next record.
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            r#"roomcast_bridge_dlq_total{reason="dead_letter_refused"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"roomcast_bridge_dlq_total{reason="bad_format"}"#),
        None,
        "counted as written: {text}"
    );
    let log = bridge.service.log();
    assert!(
        log.lines()
            .any(|l| l.contains("the dead-letter topic refused the record") && l.contains(&long_id)),
        "no log line names the refused dead letter\n{}",
        bridge.service.log_tail()
    );
}
