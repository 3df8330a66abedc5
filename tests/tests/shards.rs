//! End to end: a room bigger than one Durable Object (docs/scaling.md). With
//! a small `ROOM_SHARD_SIZE`, clients spread over the room and its shards;
//! every one of them must get every message once, in seq order, whichever
//! object the publisher and the subscriber are on; resume must work on a
//! shard; a restart mid-stream must leave no gap and no duplicate; and
//! Kafka must relay a sharded room both ways.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::message::{Headers, Message as _};
use roomcast_tests::records::{collect, produce};
use roomcast_tests::{full_token, room, BridgeProcess, Broker, Client, Frame, Http, Worker};
use serde_json::{json, Value};
use tokio::time::timeout;

/// Budgets big enough that only the sharding is under test.
const BUDGETS: [(&str, &str); 3] = [
    ("RATE_PER_SEC", "1000"),
    ("RATE_BURST", "1000"),
    ("ROOM_RATE_PER_SEC", "100000"),
];

fn vars(shard_size: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut vars = vec![("ROOM_SHARD_SIZE", shard_size)];
    vars.extend(BUDGETS);
    vars
}

async fn join(worker: &Worker, room: &str, sub: &str) -> (Client, Value) {
    let url = worker.ws_url(&format!("/v1/rooms/{room}/ws?token={}", full_token(sub)));
    let mut client = Client::connect(&url).await;
    let welcome = client.expect("welcome").await;
    (client, welcome)
}

/// What one subscriber saw: the messages (seq, id) and its acks (ref, seq).
#[derive(Default)]
struct Seen {
    messages: Vec<(u64, String)>,
    acks: Vec<(String, u64)>,
}

/// Reads until `count` messages (and `acks` acks) arrived.
async fn read(mut client: Client, count: usize, acks: usize) -> Seen {
    let mut seen = Seen::default();
    while seen.messages.len() < count || seen.acks.len() < acks {
        let frame = client.next_json().await;
        match frame["type"].as_str() {
            Some("message") => seen.messages.push((
                frame["seq"].as_u64().expect("seq"),
                frame["id"].as_str().expect("id").to_owned(),
            )),
            Some("ack") => seen.acks.push((
                frame["ref"].as_str().expect("ref").to_owned(),
                frame["seq"].as_u64().expect("seq"),
            )),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    seen
}

fn assert_in_order_once(messages: &[(u64, String)], who: &str) {
    for pair in messages.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{who}: seq {} then {}",
            pair[0].0,
            pair[1].0
        );
    }
    let ids: HashSet<&str> = messages.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), messages.len(), "{who}: an id twice");
}

#[tokio::test]
async fn every_subscriber_gets_every_message_once_in_order() {
    let worker = Worker::start(&vars("25")).await;
    let r = room("sharded");
    // 275 clients: 25 on the room itself and 25 on each of 10 shards.
    let mut clients = Vec::new();
    for n in 0..275 {
        clients.push(join(&worker, &r, &format!("sub-{n}")).await.0);
    }
    let before = worker.stats(&r).await;
    assert_eq!(
        (before["connections"].as_u64(), before["shards"].as_u64()),
        (Some(275), Some(10)),
        "{before}"
    );

    // Five publishers, each on another shard, 50 messages over their
    // socket and 50 over HTTP each.
    let publishers = [30, 80, 130, 180, 230];
    for (p, index) in publishers.iter().enumerate() {
        let client = &mut clients[*index];
        for n in 0..50 {
            client
                .send_json(json!({"type": "publish", "data": n, "id": format!("ws-{p}-{n}"), "ref": format!("{n}")}))
                .await;
        }
    }
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let posts = publishers.iter().enumerate().map(|(p, index)| {
        let (http, url) = (&http, &url);
        async move {
            let token = full_token(&format!("sub-{index}"));
            for batch in 0..5 {
                let messages: Vec<Value> = (0..10)
                    .map(|n| json!({"data": n, "id": format!("http-{p}-{batch}-{n}")}))
                    .collect();
                let (status, body) = http
                    .post(url, &token, &json!({ "messages": messages }).to_string())
                    .await;
                assert_eq!(status, 201, "{body}");
            }
        }
    });
    let readers = clients.into_iter().enumerate().map(|(n, client)| {
        let acks = if publishers.contains(&n) { 50 } else { 0 };
        tokio::spawn(read(client, 500, acks))
    });
    let (_, seen) = timeout(Duration::from_secs(180), async {
        tokio::join!(join_all(posts), join_all(readers))
    })
    .await
    .expect("every subscriber got 500 messages within 3 minutes");

    for (n, seen) in seen.into_iter().enumerate() {
        let seen = seen.expect("reader");
        let who = format!("client {n}");
        assert_eq!(seen.messages.len(), 500, "{who}");
        assert_in_order_once(&seen.messages, &who);
        if let Some(p) = publishers.iter().position(|i| *i == n) {
            let refs: HashSet<&str> = seen.acks.iter().map(|(r, _)| r.as_str()).collect();
            assert_eq!(refs.len(), 50, "{who}: an ack for each publish");
            for (reference, seq) in &seen.acks {
                let id = format!("ws-{p}-{reference}");
                assert!(
                    seen.messages.iter().any(|m| m.0 == *seq && m.1 == id),
                    "{who}: ack {reference} names seq {seq}, which is not its message"
                );
            }
        }
    }
    let after = worker.stats(&r).await;
    assert_eq!(after["head"], 500);
    assert!(
        after["deliveries_total"].as_u64().unwrap_or(0) >= 275 * 500,
        "deliveries on shards count in the room's stats: {after}"
    );
}

#[tokio::test]
async fn a_shard_client_resumes_with_what_it_missed_first() {
    let worker = Worker::start(&vars("2")).await;
    let r = room("sharded-resume");
    let mut clients = Vec::new();
    for n in 0..6 {
        clients.push(join(&worker, &r, &format!("sub-{n}")).await);
    }
    assert_eq!(worker.stats(&r).await["shards"], 2);
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("publisher");
    let post = |from: u64, count: u64| {
        let messages: Vec<Value> = (from..from + count)
            .map(|n| json!({"data": n, "id": format!("m-{n}")}))
            .collect();
        json!({ "messages": messages }).to_string()
    };
    assert_eq!(http.post(&url, &token, &post(0, 5)).await.0, 201);
    let epoch = clients[0].1["epoch"].as_str().expect("epoch").to_owned();
    // The last two clients are on shard 1; they leave having seen seq 5.
    let (left_a, _) = clients.pop().expect("client");
    let (left_b, _) = clients.pop().expect("client");
    for client in [left_a, left_b] {
        let seen = read(client, 5, 0).await;
        assert_eq!(seen.messages.last().map(|m| m.0), Some(5));
    }
    for from in [5, 55] {
        assert_eq!(http.post(&url, &token, &post(from, 50)).await.0, 201);
    }
    let mut back = Vec::new();
    for n in 4..6 {
        let url = worker.ws_url(&format!(
            "/v1/rooms/{r}/ws?token={}&since=5&epoch={epoch}",
            full_token(&format!("sub-{n}"))
        ));
        let mut client = Client::connect(&url).await;
        let welcome = client.expect("welcome").await;
        assert_eq!(
            (welcome["recovered"].as_bool(), welcome["head"].as_u64()),
            (Some(true), Some(105)),
            "{welcome}"
        );
        back.push(client);
    }
    assert_eq!(http.post(&url, &token, &post(105, 1)).await.0, 201);
    for client in back {
        let seen = read(client, 101, 0).await;
        let seqs: Vec<u64> = seen.messages.iter().map(|m| m.0).collect();
        assert_eq!(
            seqs,
            (6..=106).collect::<Vec<_>>(),
            "missed ones first, then live"
        );
    }
    for (n, (client, _)) in clients.into_iter().enumerate() {
        let seen = read(client, 106, 0).await;
        assert_in_order_once(&seen.messages, &format!("client {n}"));
    }
}

/// Reads `client` until it has the messages up to `head` or its connection
/// drops; returns whether it dropped.
async fn read_until(client: &mut Client, seen: &mut Vec<(u64, String)>, head: u64) -> bool {
    while seen.last().map_or(0, |m| m.0) < head {
        match client.next_frame_within(Duration::from_secs(30)).await {
            Some(Frame::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                if frame["type"] == "message" {
                    seen.push((
                        frame["seq"].as_u64().expect("seq"),
                        frame["id"].as_str().expect("id").to_owned(),
                    ));
                }
            }
            Some(Frame::Closed(_)) | None => return true,
        }
    }
    false
}

#[tokio::test]
async fn a_restart_mid_stream_leaves_no_gap_and_no_duplicate() {
    let vars = vars("3");
    let mut first = Worker::start(&vars).await;
    let r = room("sharded-restart");
    let mut clients = Vec::new();
    for n in 0..9 {
        clients.push(join(&first, &r, &format!("sub-{n}")).await.0);
    }
    let epoch = first.stats(&r).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let http = Http::default();
    let token = full_token("publisher");
    for n in 0..40 {
        let body = json!({"data": n, "id": format!("m-{n}")}).to_string();
        let url = first.url(&format!("/v1/rooms/{r}/messages"));
        assert_eq!(http.post(&url, &token, &body).await.0, 201);
    }
    // Some clients read everything, some only part, before the restart.
    let mut seen: Vec<Vec<(u64, String)>> = vec![Vec::new(); clients.len()];
    for (n, client) in clients.iter_mut().enumerate() {
        let upto = if n % 2 == 0 { 40 } else { 20 };
        assert!(!read_until(client, &mut seen[n], upto).await);
    }
    first.stop();
    let second = Worker::start_in(first.persist.clone(), &vars).await;
    for n in 40..80 {
        let body = json!({"data": n, "id": format!("m-{n}")}).to_string();
        let url = second.url(&format!("/v1/rooms/{r}/messages"));
        assert_eq!(http.post(&url, &token, &body).await.0, 201);
    }
    for (n, client) in clients.iter_mut().enumerate() {
        // What was in flight before the restart, until the connection drops.
        let dropped = read_until(client, &mut seen[n], 80).await;
        assert!(dropped, "client {n}: the restart dropped its connection");
        let since = seen[n].last().map_or(0, |m| m.0);
        let url = second.ws_url(&format!(
            "/v1/rooms/{r}/ws?token={}&since={since}&epoch={epoch}",
            full_token(&format!("sub-{n}"))
        ));
        let mut again = Client::connect(&url).await;
        let welcome = again.expect("welcome").await;
        assert_eq!(welcome["recovered"], true, "client {n}: {welcome}");
        assert!(!read_until(&mut again, &mut seen[n], 80).await);
        let seqs: Vec<u64> = seen[n].iter().map(|m| m.0).collect();
        assert_eq!(
            seqs,
            (1..=80).collect::<Vec<_>>(),
            "client {n}: no gap, no duplicate"
        );
    }
}

#[tokio::test]
async fn kafka_relays_a_sharded_room_both_ways() {
    let broker = Broker::start().await;
    let worker = Worker::start(&vars("1")).await;
    let _bridge = BridgeProcess::start(&worker, &broker, "solo", &[]).await;
    let events = broker.consumer("roomcast.events");
    let r = room("sharded-kafka");
    let mut clients = Vec::new();
    for n in 0..3 {
        clients.push(join(&worker, &r, &format!("sub-{n}")).await.0);
    }
    assert_eq!(worker.stats(&r).await["shards"], 2);

    // Room → Kafka, from a client on the second shard.
    clients[2]
        .send_json(json!({"type": "publish", "data": {"from": "shard"}, "ref": "x"}))
        .await;
    let records = collect(&events, Duration::from_secs(30), |r| !r.is_empty()).await;
    let value: Value =
        serde_json::from_slice(records[0].payload().expect("payload")).expect("JSON");
    assert_eq!(value["data"]["from"], "shard");
    let origin = records[0]
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "origin").and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(origin.as_deref(), Some("ws"));

    // Kafka → room: every client, on the room and on both shards.
    produce(
        &broker.producer(),
        "roomcast.inbound",
        &r,
        r#"{"from":"kafka"}"#,
        &[],
    )
    .await;
    for (n, client) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 2 {
            let frame = client.next_json().await;
            if frame["type"] == "message" {
                got.push(frame);
            }
        }
        assert_eq!(got[0]["data"]["from"], "shard", "client {n}");
        assert_eq!(
            (got[1]["data"]["from"].as_str(), got[1]["origin"].as_str()),
            (Some("kafka"), Some("kafka")),
            "client {n}"
        );
    }
}
