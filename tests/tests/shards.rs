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

/// Joins `room` as `sub` and returns the welcome, or the HTTP status of a
/// refused join.
async fn try_join(
    worker: &Worker,
    room: &str,
    sub: &str,
    query: &str,
) -> Result<(Client, Value), u16> {
    let url = worker.ws_url(&format!(
        "/v1/rooms/{room}/ws?token={}{query}",
        full_token(sub)
    ));
    match Client::connect_with(&url, &[]).await {
        Ok(mut client) => {
            let welcome = client.expect("welcome").await;
            Ok((client, welcome))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("join {room}: {e}"),
    }
}

/// The `data` of every `message` frame up to `seq`, as sent (the raw text
/// of each frame), in order.
async fn frames_until(client: &mut Client, seq: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    while got.last().is_none_or(|(s, _)| *s < seq) {
        let text = client.next_text().await;
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        if frame["type"] == "message" {
            got.push((frame["seq"].as_u64().expect("seq"), text));
        }
    }
    got
}

#[tokio::test]
async fn pretty_printed_data_reaches_every_shard_compact_and_in_order() {
    let worker = Worker::start(&vars("1")).await;
    let r = room("sharded-pretty");
    // One client on the room's own object, one on each of two shards.
    let mut clients = Vec::new();
    for n in 0..3 {
        clients.push(join(&worker, &r, &format!("sub-{n}")).await.0);
    }
    assert_eq!(worker.stats(&r).await["shards"], 2);
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("publisher");
    // As `JSON.stringify(v, null, 2)` writes it, and a line that reads as
    // a seq and a frame of the old line-based framing.
    let pretty = "{\n  \"data\": {\n    \"a\": [\n      1,\n      2\n    ]\n  }\n}";
    let tricky = "{\"data\": [\n99999999999 ]\n}";
    for body in [pretty, tricky] {
        let (status, answer) = http.post(&url, &token, body).await;
        assert_eq!(status, 201, "{answer}");
    }
    clients[2]
        .send_text(
            "{\"type\": \"publish\",\n \"data\": {\n  \"from\": \"shard\"\n },\n \"ref\": \"p\"}",
        )
        .await;
    let (status, _) = http.post(&url, &token, r#"{"data":"sentinel"}"#).await;
    assert_eq!(status, 201);
    let expected = [
        r#""data":{"a":[1,2]}"#,
        r#""data":[99999999999]"#,
        r#""data":{"from":"shard"}"#,
        r#""data":"sentinel""#,
    ];
    for (n, client) in clients.iter_mut().enumerate() {
        let frames = frames_until(client, 4).await;
        let seqs: Vec<u64> = frames.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "client {n}");
        for ((_, text), data) in frames.iter().zip(expected) {
            assert!(text.contains(data), "client {n}: {text} lacks {data}");
            assert!(!text.contains('\n'), "client {n}: {text:?}");
        }
    }
    // A resume placed on a shard replays them from history.
    let epoch = worker.stats(&r).await["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let (mut again, welcome) = try_join(&worker, &r, "sub-9", &format!("&since=0&epoch={epoch}"))
        .await
        .expect("a resume onto a shard is accepted");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let replayed: Vec<u64> = frames_until(&mut again, 4)
        .await
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(replayed, [1, 2, 3, 4]);
}

/// Sends `frames` publishes with ids `{id}0`, `{id}1`, … and then a plain
/// one, and returns the answer to each (the `code` of an `error`, or
/// `ack`) until the connection closes, with its close code.
async fn answers(client: &mut Client, frames: usize, id: &str) -> (Vec<String>, Option<u16>) {
    for n in 0..frames {
        client
            .send_json(json!({"type": "publish", "data": n, "id": format!("{id}{n}")}))
            .await;
    }
    client
        .send_json(json!({"type": "publish", "data": "sentinel"}))
        .await;
    let mut seen = Vec::new();
    while seen.len() <= frames {
        match client.next_frame_within(Duration::from_secs(10)).await {
            Some(Frame::Text(text)) => {
                let frame: Value = serde_json::from_str(&text).expect("JSON");
                match frame["type"].as_str() {
                    Some("error") => seen.push(frame["code"].as_str().unwrap_or("?").to_owned()),
                    Some("ack") => seen.push("ack".to_owned()),
                    _ => {}
                }
            }
            Some(Frame::Closed(code)) => return (seen, Some(code)),
            None => panic!("no answer to every publish, nor a close: {seen:?}"),
        }
    }
    (seen, None)
}

/// Twenty refused publishes in a row close the connection (1008), wherever
/// it is.
#[tokio::test]
async fn refusals_on_a_shard_strike_as_on_the_room() {
    let worker = Worker::start(&vars("1")).await;
    let r = room("sharded-strikes");
    let (mut here, _) = join(&worker, &r, "here").await;
    let (mut there, _) = join(&worker, &r, "there").await;
    assert_eq!(worker.stats(&r).await["shards"], 1);
    let on_room = answers(&mut here, 20, "kafka:reserved-").await;
    let on_shard = answers(&mut there, 20, "kafka:reserved-").await;
    assert_eq!(on_room, (vec!["forbidden".to_owned(); 20], Some(1008)));
    assert_eq!(
        on_shard, on_room,
        "a shard's client gets what the room's gets"
    );
}

/// Refused ids draw from the budget (3 here) like stored publishes,
/// wherever the publisher is.
#[tokio::test]
async fn refusals_cost_their_budget_on_the_room_and_on_a_shard() {
    let mut vars = vars("1");
    vars.push((
        "ROOM_POLICIES",
        r#"[{"match":"sharded-strict.*","rate_burst":3,"rate_per_sec":1}]"#,
    ));
    let worker = Worker::start(&vars).await;
    let r = room("sharded-strict");
    let (mut here, _) = join(&worker, &r, "here").await;
    let (mut there, _) = join(&worker, &r, "there").await;
    let on_room = answers(&mut here, 4, "kafka:x-").await;
    let on_shard = answers(&mut there, 4, "kafka:x-").await;
    let codes: Vec<&str> = on_room.0.iter().map(String::as_str).collect();
    assert_eq!(
        (codes.as_slice(), on_room.1),
        (
            &[
                "forbidden",
                "forbidden",
                "forbidden",
                "rate_limited",
                "rate_limited"
            ][..],
            None
        )
    );
    assert_eq!(on_shard, on_room);
}

#[tokio::test]
async fn a_subject_holds_only_the_shard_connections_it_has() {
    let mut vars = vars("1");
    vars.push(("MAX_CONNECTIONS_PER_SUBJECT", "2"));
    let worker = Worker::start(&vars).await;
    let r = room("sharded-places");
    let (_filler, welcome) = join(&worker, &r, "filler").await;
    let epoch = welcome["epoch"].as_str().expect("epoch").to_owned();
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let (status, _) = http
        .post(&url, &full_token("publisher"), "{\"data\": [\n1 ]\n}")
        .await;
    assert_eq!(status, 201);
    // Two resumes onto shards, closed again (or refused, which must not
    // hold a place either).
    for _ in 0..2 {
        if let Ok((client, _)) =
            try_join(&worker, &r, "alice", &format!("&since=0&epoch={epoch}")).await
        {
            client.close().await;
        }
    }
    // Both places are free again once the shards have said so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut open = Vec::new();
    while open.len() < 2 {
        match try_join(&worker, &r, "alice", "").await {
            Ok((client, _)) => open.push(client),
            Err(status) => {
                assert_eq!(status, 429);
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "alice still holds places for connections that are gone"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(
        try_join(&worker, &r, "alice", "").await.err(),
        Some(429),
        "and the limit still holds"
    );
}
