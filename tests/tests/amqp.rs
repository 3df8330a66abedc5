//! End to end through a real RabbitMQ node (Debian's rabbitmq-server, its
//! own process) with the bridge on its TLS listener: room → RabbitMQ with
//! the routing key, properties and headers of docs/bridge.md, "RabbitMQ
//! mapping", and RabbitMQ → rooms once per `message-id`, 1000 messages
//! each way, in order per room; nothing echoed; the password never shown;
//! `/healthz` and `/metrics` naming the broker. Dead letters: a record the
//! room refuses, and an event no queue is bound for, land in the
//! dead-letter queue with their reason while the relay moves on. A broker
//! certificate that does not verify stops the bridge at startup.
//!
//! The test's own clients are lapin on the plain listener: a real consumer
//! and a real publisher with confirms.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use roomcast_tests::deliveries::{bind_queue, collect, text_headers, Publisher};
use roomcast_tests::rabbitmq::AMQP_PASSWORD;
use roomcast_tests::rooms::wait_stored;
use roomcast_tests::{
    fresh_dir, full_token, metric, room, BridgeProcess, CaFile, Client, Http, RabbitMq, Worker,
    WorkerSpec,
};
use serde_json::{json, Value};

/// A worker whose rate limits let this suite's load through, and whose
/// message limit is small enough for one record to exceed it.
const VARS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("MAX_MESSAGE_BYTES", "1024"),
];

/// A W3C trace context, as a tracing library would send it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const ROOMS: usize = 4;
const PER_ROOM: u64 = 250;

/// Publishes `count` messages into `room` over HTTP in batches of 50, with
/// the request's `traceparent` given to each.
async fn publish_http(worker: &Worker, room: &str, count: u64) {
    let http = Http::default();
    let token = full_token("load");
    for start in (0..count).step_by(50) {
        let messages: Vec<Value> = (start..(start + 50).min(count))
            .map(|n| json!({"data": {"n": n}}))
            .collect();
        let response = http
            .raw()
            .post(worker.url(&format!("/v1/rooms/{room}/messages")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("traceparent", TRACEPARENT)
            .body(json!({ "messages": messages }).to_string())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
}

#[tokio::test]
async fn relays_1000_messages_each_way_through_rabbitmq_over_tls() {
    let rabbit = RabbitMq::start().await;
    let worker = Worker::start(VARS).await;
    let bridge = BridgeProcess::start(&worker, &rabbit, "amqp-solo", &[]).await;
    let (_connection, channel) = rabbit.channel().await;
    // The bridge declared the events exchange before /healthz said up.
    let events = room("amqp-events");
    bind_queue(&channel, &events, "roomcast.events", "#").await;

    // Room → RabbitMQ: 4 rooms, 250 messages each.
    let out: Vec<String> = (0..ROOMS).map(|_| room("amqp-out")).collect();
    for r in &out {
        publish_http(&worker, r, PER_ROOM).await;
    }
    let total = ROOMS * PER_ROOM as usize;
    let got = collect(&channel, &events, Duration::from_secs(90), |got| {
        got.len() >= total
    })
    .await;
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &got {
        let room = m.header("room").expect("a room header");
        assert_eq!(m.routing_key, room, "the routing key is the room");
        let seq: u64 = m.header("seq").expect("a seq header").parse().unwrap();
        let id = m.header("message-id").expect("a message-id header");
        assert_eq!(
            m.properties.message_id().as_ref().map(|i| i.to_string()),
            Some(id.clone()),
            "the message id is the AMQP message_id too"
        );
        assert_eq!(*m.properties.delivery_mode(), Some(2), "persistent");
        assert_eq!(m.header("origin").as_deref(), Some("http"));
        assert_eq!(m.header("traceparent").as_deref(), Some(TRACEPARENT));
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(
            (
                body["room"].as_str(),
                body["seq"].as_u64(),
                body["id"].as_str()
            ),
            (Some(room.as_str()), Some(seq), Some(id.as_str()))
        );
        assert_eq!(body["data"]["n"].as_u64(), Some(seq - 1));
        seqs.entry(room).or_default().push(seq);
    }
    for r in &out {
        assert_eq!(
            seqs.get(r).cloned().unwrap_or_default(),
            (1..=PER_ROOM).collect::<Vec<_>>(),
            "{r}: every seq once, in order"
        );
    }

    // RabbitMQ → rooms: 1000 messages to the inbound exchange with the room
    // as routing key (one room by its `room` header through the default
    // exchange), each with a `message-id`; one id sent twice.
    let publisher = Publisher::new(&rabbit).await;
    let inbound: Vec<String> = (0..ROOMS).map(|_| room("amqp-in")).collect();
    for n in 0..PER_ROOM {
        for (i, r) in inbound.iter().enumerate() {
            let id = format!("{r}-{n}");
            let body = json!({ "n": n }).to_string();
            if i == 0 {
                let headers = text_headers(&[("message-id", &id), ("room", r)]);
                publisher
                    .publish("", "roomcast.inbound", body.as_bytes(), headers)
                    .await;
            } else {
                let headers = text_headers(&[("message-id", &id)]);
                publisher
                    .publish("roomcast.inbound", r, body.as_bytes(), headers)
                    .await;
            }
        }
    }
    let again = text_headers(&[("message-id", &format!("{}-0", inbound[1]))]);
    publisher
        .publish("roomcast.inbound", &inbound[1], br#"{"n":0}"#, again)
        .await;
    for r in &inbound {
        let held = wait_stored(&worker, r, PER_ROOM as usize, Duration::from_secs(90)).await;
        let ns: Vec<Option<u64>> = held.iter().map(|m| m["data"]["n"].as_u64()).collect();
        assert_eq!(
            ns,
            (0..PER_ROOM).map(Some).collect::<Vec<_>>(),
            "{r}: each once, in order"
        );
        assert!(
            held.iter().all(|m| m["origin"] == "kafka"),
            "the bridge's origin"
        );
    }

    // Nothing from RabbitMQ came back: a last room message is the next
    // thing the events queue holds.
    let mut client = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{}/ws?token={}",
        inbound[2],
        full_token("alice")
    )))
    .await;
    client.expect("welcome").await;
    client
        .send_json(json!({"type": "publish", "data": "last"}))
        .await;
    let next = collect(&channel, &events, Duration::from_secs(30), |got| {
        !got.is_empty()
    })
    .await;
    assert_eq!(
        (next[0].header("room"), next[0].header("origin")),
        (Some(inbound[2].clone()), Some("ws".to_owned())),
        "an inbound record was relayed back out"
    );

    // The password never shows; /healthz and /metrics name the broker.
    let log = bridge.service.log();
    assert!(
        !log.contains(AMQP_PASSWORD),
        "the password is in the bridge's log"
    );
    let (status, health) = Http::default().get(&bridge.url("/healthz"), None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        (health["broker"].as_str(), health["amqp"].as_str()),
        (Some("amqp"), Some("up"))
    );
    assert!(!health.to_string().contains(AMQP_PASSWORD));
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(&text, r#"roomcast_bridge_broker{broker="amqp"}"#),
        Some(1.0),
        "{text}"
    );
    let relayed = metric(
        &text,
        r#"roomcast_bridge_relayed_total{direction="to_amqp"}"#,
    );
    assert!(relayed >= Some(total as f64 + 1.0), "{relayed:?}\n{text}");
    let into_rooms = metric(
        &text,
        r#"roomcast_bridge_relayed_total{direction="to_room"}"#,
    );
    assert!(into_rooms >= Some(total as f64), "{into_rooms:?}");
}

#[tokio::test]
async fn refused_and_unroutable_messages_are_dead_lettered_and_the_relay_moves_on() {
    let rabbit = RabbitMq::start().await;
    let worker = Worker::start(VARS).await;
    let bridge = BridgeProcess::start(&worker, &rabbit, "amqp-dlq", &[]).await;
    let (_connection, channel) = rabbit.channel().await;
    let publisher = Publisher::new(&rabbit).await;

    // RabbitMQ → room: a record too large for the room, one that is not
    // JSON, then a good one; the subscriber sees only the good one.
    let r = room("amqp-refused");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={}", full_token("bob"))))
            .await;
    client.expect("welcome").await;
    let big = json!({ "big": "x".repeat(2000) }).to_string();
    publisher
        .publish(
            "roomcast.inbound",
            &r,
            big.as_bytes(),
            text_headers(&[("message-id", "too-big")]),
        )
        .await;
    publisher
        .publish("roomcast.inbound", &r, b"not json", text_headers(&[]))
        .await;
    publisher
        .publish(
            "roomcast.inbound",
            &r,
            br#"{"after":"the bad ones"}"#,
            text_headers(&[]),
        )
        .await;
    let good = client.expect("message").await;
    assert_eq!(good["data"]["after"], "the bad ones", "{good}");

    // Room → RabbitMQ with no queue bound for the room: returned, then
    // dead-lettered; once a queue is bound, the room's next message is
    // relayed: the first did not hold the room's relay.
    let unbound = room("amqp-unroutable");
    let mut sender = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{unbound}/ws?token={}",
        full_token("carol")
    )))
    .await;
    sender.expect("welcome").await;
    sender
        .send_json(json!({"type": "publish", "data": "nobody listens"}))
        .await;
    sender.expect("message").await;

    let dead = collect(&channel, "roomcast.dlq", Duration::from_secs(60), |got| {
        got.len() >= 3
    })
    .await;
    let reasons: Vec<Option<String>> = dead.iter().map(|d| d.header("error")).collect();
    let expected: BTreeSet<&str> = ["too_large", "bad_format", "unroutable"].into();
    let got: BTreeSet<&str> = reasons.iter().flatten().map(String::as_str).collect();
    assert_eq!(got, expected, "{reasons:?}");
    for d in &dead {
        match d.header("error").as_deref() {
            Some("too_large") => {
                assert_eq!(d.header("message-id").as_deref(), Some("too-big"));
                assert_eq!(
                    d.header("source-queue").as_deref(),
                    Some("roomcast.inbound")
                );
                assert_eq!(d.routing_key, r);
                assert_eq!(d.body, big.as_bytes());
            }
            Some("bad_format") => {
                assert_eq!(
                    d.header("source-queue").as_deref(),
                    Some("roomcast.inbound")
                );
                assert_eq!(d.body, b"not json");
                assert!(d
                    .header("message-id")
                    .is_some_and(|id| id.starts_with("amqp:")));
            }
            _ => {
                assert_eq!(d.header("room").as_deref(), Some(unbound.as_str()));
                assert_eq!(d.header("seq").as_deref(), Some("1"));
                let body: Value = serde_json::from_slice(&d.body).unwrap();
                assert_eq!(body["data"], "nobody listens");
            }
        }
    }

    let events = room("amqp-late-queue");
    bind_queue(&channel, &events, "roomcast.events", &unbound).await;
    sender
        .send_json(json!({"type": "publish", "data": "someone listens"}))
        .await;
    let relayed = collect(&channel, &events, Duration::from_secs(30), |got| {
        !got.is_empty()
    })
    .await;
    assert_eq!(
        (relayed[0].header("room"), relayed[0].header("seq")),
        (Some(unbound.clone()), Some("2".to_owned())),
        "the room's relay moved on past the dead letter"
    );

    let text = bridge.metrics_text().await;
    for reason in ["too_large", "bad_format", "unroutable"] {
        assert_eq!(
            metric(
                &text,
                &format!("roomcast_bridge_dlq_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{reason}: {text}"
        );
    }
}

#[tokio::test]
async fn a_rabbitmq_certificate_that_does_not_verify_stops_the_bridge() {
    // A plain-HTTP worker, so that the one certificate the bridge meets is
    // RabbitMQ's (from the test CA, which it is not told to trust).
    let worker = WorkerSpec::default()
        .plain_http()
        .start_in(fresh_dir("state"), &[])
        .await;
    let rabbit = RabbitMq::start().await;
    let url = rabbit.bridge_url(true);
    let mut bridge =
        BridgeProcess::spawn(&worker.url(""), &rabbit, "untrusting", CaFile::Omitted, &[]);
    let code = bridge.service.exited_within(Duration::from_secs(30)).await;
    let log = bridge.service.log_tail();
    assert_eq!(code, Some(1), "the bridge must refuse to start:\n{log}");
    assert!(
        log.contains(&url) && log.contains("does not verify") && log.contains("--ca-file"),
        "the error names the URL, the problem and the fix:\n{log}"
    );
}
