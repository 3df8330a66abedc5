//! End to end: several rooms on one connection (docs/protocol.md, "Several
//! rooms on one connection"). One connection in 50 rooms with publishers in
//! each, killed and resumed in all 50 with one frame; rights decided room by
//! room (a refused room alone, a server-side subscription from the token, a
//! refresh that drops a room, the room limit, the subject's connections);
//! 500 multiplexed subscribers of one room on a pool of hubs, where a
//! message costs one request per hub (docs/internals.md, "Hubs"); a hub
//! woken from hibernation; and Kafka both ways through the bridge.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::message::Message as _;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_tests::records::{collect, header, produce};
use roomcast_tests::{
    full_token, presence_token, room, token, BridgeProcess, Broker, Client, Http, Worker, SECRET,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const VARS: [(&str, &str); 4] = [
    ("RATE_PER_SEC", "1000"),
    ("RATE_BURST", "1000"),
    ("ROOM_RATE_PER_SEC", "100000"),
    ("ROOM_CREATE_PER_MIN", "1000"),
];

/// How long every expected frame may take to arrive, all of them together.
const SETTLE: Duration = Duration::from_secs(30);

/// Opens a multiplexed connection and reads its `connected`.
async fn connect(worker: &Worker, token: &str) -> (Client, Value) {
    let mut client = Client::connect(&worker.ws_url(&format!("/v1/ws?token={token}"))).await;
    let connected = client.expect("connected").await;
    (client, connected)
}

/// Publishes `data` to `room` over HTTP; the seq it was stored under.
async fn publish(worker: &Worker, room: &str, data: Value) -> u64 {
    let (status, body) = Http::default()
        .post(
            &worker.url(&format!("/v1/rooms/{room}/messages")),
            &full_token("publisher"),
            &json!({ "data": data }).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["seq"].as_u64().expect("a seq")
}

/// What one connection has read, room by room.
#[derive(Default)]
struct Seen {
    /// Seqs of `message` frames, in arrival order.
    messages: BTreeMap<String, Vec<u64>>,
    /// `subscribed` frames by room.
    subscribed: HashMap<String, Value>,
    /// Every other frame.
    other: Vec<Value>,
}

impl Seen {
    fn take(&mut self, frame: Value) {
        let room = frame["room"].as_str().unwrap_or_default().to_owned();
        match frame["type"].as_str() {
            Some("message") => {
                let seq = frame["seq"].as_u64().expect("seq");
                self.messages.entry(room).or_default().push(seq);
            }
            Some("subscribed") => {
                assert!(
                    self.subscribed.insert(room, frame.clone()).is_none(),
                    "subscribed twice: {frame}"
                );
            }
            _ => self.other.push(frame),
        }
    }

    fn count(&self) -> usize {
        self.messages.values().map(Vec::len).sum()
    }
}

/// Reads frames into `seen` until `done` holds, within [`SETTLE`].
async fn read_until(client: &mut Client, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let text = client
            .next_text_within(left)
            .await
            .unwrap_or_else(|| panic!("not all frames within {SETTLE:?}: {:?}", seen.messages));
        seen.take(serde_json::from_str(&text).expect("a JSON frame"));
    }
}

#[tokio::test]
async fn one_connection_in_fifty_rooms_gets_every_message_once_in_order_and_resumes_all() {
    let worker = Worker::start(&VARS).await;
    let rooms: Vec<String> = (0..50).map(|_| room("mux50")).collect();
    let token = full_token("reader");
    let (mut client, connected) = connect(&worker, &token).await;
    assert_eq!(connected["max_rooms"], 128, "{connected}");
    let all: Vec<Value> = rooms.iter().map(|r| json!({ "room": r })).collect();
    client
        .send_json(json!({"type": "subscribe", "rooms": all}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut client, &mut seen, |s| {
        s.subscribed.len() == rooms.len()
    })
    .await;
    for round in 1..=3u64 {
        let stored = join_all(
            rooms
                .iter()
                .map(|r| publish(&worker, r, json!({ "round": round }))),
        )
        .await;
        assert!(stored.iter().all(|seq| *seq == round), "{stored:?}");
    }
    read_until(&mut client, &mut seen, |s| s.count() == 3 * rooms.len()).await;
    for r in &rooms {
        assert_eq!(seen.messages[r], [1, 2, 3], "room {r}");
    }
    assert!(seen.other.is_empty(), "{:?}", seen.other);

    // Killed: no close frame. Two messages per room while it is away.
    drop(client);
    for round in 4..=5u64 {
        join_all(
            rooms
                .iter()
                .map(|r| publish(&worker, r, json!({ "round": round }))),
        )
        .await;
    }
    let (mut client, _) = connect(&worker, &token).await;
    let resume: Vec<Value> = rooms
        .iter()
        .map(|r| json!({"room": r, "since": 3, "epoch": seen.subscribed[r]["epoch"]}))
        .collect();
    client
        .send_json(json!({"type": "subscribe", "rooms": resume}))
        .await;
    let mut resumed = Seen::default();
    read_until(&mut client, &mut resumed, |s| {
        s.subscribed.len() == rooms.len() && s.count() == 2 * rooms.len()
    })
    .await;
    for r in &rooms {
        let subscribed = &resumed.subscribed[r];
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        assert_eq!(subscribed["head"], 5, "{subscribed}");
    }
    join_all(
        rooms
            .iter()
            .map(|r| publish(&worker, r, json!({"round": 6}))),
    )
    .await;
    read_until(&mut client, &mut resumed, |s| s.count() == 3 * rooms.len()).await;
    for r in &rooms {
        assert_eq!(resumed.messages[r], [4, 5, 6], "room {r}");
    }
}

/// A token for `sub` with subscribe and publish rights to exactly `rooms`,
/// subscribed at connect to `channels`.
fn rooms_token(sub: &str, rooms: &[&str], channels: &[&str]) -> String {
    let names = |list: &[&str]| list.iter().map(|r| r.to_string()).collect();
    let spec = TokenSpec {
        sub: sub.into(),
        rooms: names(rooms),
        publish: names(rooms),
        channels: names(channels),
        ttl_secs: 3600,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, roomcast_protocol::clock::now_ms())
}

#[tokio::test]
async fn rights_decide_room_by_room_and_a_refresh_unsubscribes_what_it_drops() {
    let vars: Vec<(&str, &str)> = VARS
        .iter()
        .copied()
        .chain([("MAX_ROOMS_PER_CONNECTION", "3")])
        .collect();
    let worker = Worker::start(&vars).await;
    let alice = |rooms: &[&str]| rooms_token("alice", rooms, &["ch.0"]);
    let (mut client, _) = connect(&worker, &alice(&["ok.1", "ok.2", "ok.3"])).await;
    // The token's channel, subscribed without a frame.
    let channel = client.expect("subscribed").await;
    assert_eq!(channel["room"], "ch.0", "{channel}");

    client
        .send_json(json!({"type": "subscribe", "rooms": [
            {"room": "ok.1"}, {"room": "no.1"}, {"room": "ok.2"}
        ]}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut client, &mut seen, |s| {
        s.subscribed.len() == 2 && !s.other.is_empty()
    })
    .await;
    assert!(seen.subscribed.contains_key("ok.1") && seen.subscribed.contains_key("ok.2"));
    let refused = &seen.other[0];
    assert_eq!(
        (&refused["type"], &refused["room"], &refused["code"]),
        (&json!("error"), &json!("no.1"), &json!("forbidden")),
        "{refused}"
    );

    // Publishing names the room; one the connection is not in is refused.
    client
        .send_json(json!({"type": "publish", "room": "ok.1", "data": 1, "ref": "p1"}))
        .await;
    let message = client.expect("message").await;
    assert_eq!(
        (&message["room"], &message["seq"]),
        (&json!("ok.1"), &json!(1))
    );
    let ack = client.expect("ack").await;
    assert_eq!((&ack["room"], &ack["ref"]), (&json!("ok.1"), &json!("p1")));
    client
        .send_json(json!({"type": "publish", "room": "ok.3", "data": 1, "ref": "p2"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (&error["room"], &error["code"], &error["ref"]),
        (&json!("ok.3"), &json!("not_subscribed"), &json!("p2")),
        "{error}"
    );
    // Three rooms held (ch.0, ok.1, ok.2): a fourth is over the limit.
    client
        .send_json(json!({"type": "subscribe", "room": "ok.3"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (&error["room"], &error["code"]),
        (&json!("ok.3"), &json!("too_many_rooms")),
        "{error}"
    );

    // A refreshed token without ok.2 ends that subscription alone.
    client
        .send_json(json!({"type": "auth", "token": alice(&["ok.1"])}))
        .await;
    client.expect("auth_ok").await;
    let unsubscribed = client.expect("unsubscribed").await;
    assert_eq!(
        unsubscribed,
        json!({"type": "unsubscribed", "room": "ok.2", "reason": "forbidden"})
    );
    publish(&worker, "ok.2", json!("gone")).await;
    publish(&worker, "ok.1", json!("still")).await;
    let next = client.expect("message").await;
    assert_eq!(
        (&next["room"], &next["data"]),
        (&json!("ok.1"), &json!("still")),
        "ok.2's message reached a connection no longer in it: {next}"
    );

    // Unsubscribing by the client; the room's messages stop.
    client
        .send_json(json!({"type": "unsubscribe", "room": "ok.1"}))
        .await;
    let unsubscribed = client.expect("unsubscribed").await;
    assert_eq!(unsubscribed["reason"], "client", "{unsubscribed}");
    publish(&worker, "ok.1", json!("after")).await;
    publish(&worker, "ch.0", json!("channel")).await;
    let next = client.expect("message").await;
    assert_eq!(next["room"], "ch.0", "{next}");
}

#[tokio::test]
async fn five_hundred_subscribers_on_four_hubs_cost_four_requests_per_message() {
    const SUBSCRIBERS: usize = 500;
    const HUBS: u64 = 4;
    const MESSAGES: u64 = 10;
    let vars: Vec<(&str, &str)> = VARS.iter().copied().chain([("HUB_OBJECTS", "4")]).collect();
    let worker = Worker::start(&vars).await;
    let r = room("mux500");
    let mut clients = Vec::with_capacity(SUBSCRIBERS);
    for chunk in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(50) {
        let joined = join_all(chunk.iter().map(|i| {
            let (worker, r) = (&worker, &r);
            async move {
                let token = token(&format!("u{i}"), &[r.as_str()], &[], 3600);
                let (mut client, _) = connect(worker, &token).await;
                client
                    .send_json(json!({"type": "subscribe", "room": r}))
                    .await;
                client.expect("subscribed").await;
                client
            }
        }))
        .await;
        clients.extend(joined);
    }
    let before = worker.stats(&r).await;
    assert_eq!(before["connections"], SUBSCRIBERS, "{before}");
    for n in 1..=MESSAGES {
        assert_eq!(publish(&worker, &r, json!(n)).await, n);
        // Every subscriber has it before the next is sent, so each message
        // travels in batches of its own.
        let seqs = join_all(
            clients
                .iter_mut()
                .map(|c| async move { c.expect("message").await["seq"].as_u64() }),
        )
        .await;
        assert!(seqs.iter().all(|s| *s == Some(n)), "message {n}: {seqs:?}");
    }
    let after = worker.stats(&r).await;
    let batches = after["hub_batches"].as_u64().expect("hub_batches")
        - before["hub_batches"].as_u64().unwrap_or(0);
    println!(
        "{SUBSCRIBERS} multiplexed subscribers on {HUBS} hubs: {batches} hub requests for \
         {MESSAGES} messages ({} per message); deliveries {}",
        batches as f64 / MESSAGES as f64,
        after["deliveries_total"]
    );
    assert_eq!(
        batches,
        MESSAGES * HUBS,
        "one request per hub per message: {after}"
    );
}

#[tokio::test]
async fn a_connection_resumes_all_its_rooms_at_once_and_churn_is_bounded_room_by_room() {
    // A publish budget of 2, a room limit of 10: ten rooms in one frame
    // still join (the subscription budget holds a connection's rooms),
    // and the rooms after them wait for its refill, one per second.
    let vars = [
        ("RATE_PER_SEC", "1"),
        ("RATE_BURST", "2"),
        ("MAX_ROOMS_PER_CONNECTION", "10"),
    ];
    let worker = Worker::start(&vars).await;
    let (mut client, _) = connect(&worker, &full_token("alice")).await;
    let rooms: Vec<String> = (0..10).map(|_| room("budget")).collect();
    let all: Vec<Value> = rooms.iter().map(|r| json!({ "room": r })).collect();
    client
        .send_json(json!({"type": "subscribe", "rooms": all}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut client, &mut seen, |s| {
        s.subscribed.len() + s.other.len() == rooms.len()
    })
    .await;
    assert_eq!(
        seen.subscribed.len(),
        rooms.len(),
        "ten rooms under a publish burst of two: {:?}",
        seen.other
    );
    // Re-subscribing all ten (each a request to its room) right away is
    // over the budget: every room of the frame is answered, none joins.
    let again: Vec<Value> = rooms.iter().map(|r| json!({ "room": r })).collect();
    client
        .send_json(json!({"type": "subscribe", "rooms": again, "ref": "s2"}))
        .await;
    for _ in &rooms {
        let error = client.expect("error").await;
        assert_eq!(
            (&error["code"], &error["ref"]),
            (&json!("rate_limited"), &json!("s2")),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_rooms_own_size_limit_holds_on_a_multiplexed_connection() {
    let policies = r#"[{"match":"small.*","max_message_bytes":100}]"#;
    let worker = Worker::start(&[("ROOM_POLICIES", policies)]).await;
    let (mut client, connected) = connect(&worker, &full_token("alice")).await;
    assert_eq!(connected["max_message_bytes"], 65536, "{connected}");
    client
        .send_json(json!({"type": "subscribe", "rooms": [{"room": "small.1"}, {"room": "big.1"}]}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut client, &mut seen, |s| s.subscribed.len() == 2).await;
    assert_eq!(seen.subscribed["small.1"]["max_message_bytes"], 100);
    let data = "x".repeat(150);
    for r in ["small.1", "big.1"] {
        client
            .send_json(json!({"type": "publish", "room": r, "data": data, "ref": r}))
            .await;
    }
    let error = client.expect("error").await;
    assert_eq!(
        (&error["room"], &error["code"], &error["ref"]),
        (&json!("small.1"), &json!("too_large"), &json!("small.1")),
        "the room's limit of 100 bytes, not the connection's: {error}"
    );
    let message = client.expect("message").await;
    assert_eq!(message["room"], "big.1", "{message}");
    client.expect("ack").await;
}

#[tokio::test]
async fn presence_reaches_a_multiplexed_connection_naming_its_room() {
    let vars = [("PRESENCE_INTERVAL_MS", "200")];
    let worker = Worker::start(&vars).await;
    let r = room("muxpresence");
    let (mut watcher, _) = connect(&worker, &presence_token("watcher", "*", None, 3600)).await;
    watcher.reads_presence = true;
    watcher
        .send_json(json!({"type": "subscribe", "room": r}))
        .await;
    watcher.expect("subscribed").await;
    let url = worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={}",
        presence_token("bob", "*", None, 3600)
    ));
    let mut bob = Client::connect(&url).await;
    bob.expect("welcome").await;
    // Frames until bob shows up as a member, each about this room.
    let shows_bob = |frame: &Value| {
        let members = match frame["type"].as_str() {
            Some("presence") => &frame["joins"],
            Some("presence_state") => &frame["members"],
            _ => return false,
        };
        members.to_string().contains("\"bob\"")
    };
    let mut seen = Seen::default();
    read_until(&mut watcher, &mut seen, |s| s.other.iter().any(shows_bob)).await;
    for frame in &seen.other {
        assert_eq!(frame["room"], json!(r), "{frame}");
    }
}

/// Sockets in no room cost a hub as much as any: a subject holds at most
/// `MAX_CONNECTIONS_PER_SUBJECT` multiplexed connections, however many
/// hubs the pool has, and a connection that ends gives its place back.
#[tokio::test]
async fn a_subject_holds_at_most_its_limit_of_multiplexed_connections() {
    let vars: Vec<(&str, &str)> = VARS
        .iter()
        .copied()
        .chain([("MAX_CONNECTIONS_PER_SUBJECT", "3"), ("HUB_OBJECTS", "8")])
        .collect();
    let worker = Worker::start(&vars).await;
    let url = |sub: &str| worker.ws_url(&format!("/v1/ws?token={}", full_token(sub)));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect(&worker, &full_token("alice")).await.0);
    }
    assert_eq!(Client::refused(&url("alice")).await, 429, "a fourth");
    let (_bob, _) = connect(&worker, &full_token("bob")).await;
    let first = held.pop().expect("a connection");
    assert_eq!(first.close_answered().await, 1000);
    let (_again, _) = connect(&worker, &full_token("alice")).await;
    assert_eq!(
        Client::refused(&url("alice")).await,
        429,
        "and the limit still holds"
    );
}

/// A hub whose sockets all hibernate is evicted after 10 s without an
/// event (measured under wrangler dev, tests/tests/shards.rs
/// `evict_idle_objects`), and so are its idle rooms. The next event wakes
/// it with nothing in memory: which connection is in which room comes back
/// from its storage, so the rooms' messages still reach the connection,
/// its publishes still go to its rooms, and a room it never joined is
/// still refused. Nothing tells a client that an object was evicted, so
/// this waits on the clock.
#[tokio::test]
async fn a_hub_woken_from_hibernation_still_knows_its_rooms() {
    let worker = Worker::start(&VARS).await;
    let (a, b) = (room("woken-a"), room("woken-b"));
    let (mut client, _) = connect(&worker, &full_token("alice")).await;
    client
        .send_json(json!({"type": "subscribe", "rooms": [{"room": a}, {"room": b}]}))
        .await;
    let mut seen = Seen::default();
    read_until(&mut client, &mut seen, |s| s.subscribed.len() == 2).await;
    tokio::time::sleep(Duration::from_secs(14)).await;

    assert_eq!(publish(&worker, &a, json!("after the wake")).await, 1);
    read_until(&mut client, &mut seen, |s| s.count() == 1).await;
    assert_eq!(seen.messages[&a], [1]);
    client
        .send_json(json!({"type": "publish", "room": b, "data": "from a woken hub", "ref": "p1"}))
        .await;
    read_until(&mut client, &mut seen, |s| s.count() == 2).await;
    assert_eq!(seen.messages[&b], [1]);
    let ack = client.expect("ack").await;
    assert_eq!((&ack["room"], &ack["seq"]), (&json!(b), &json!(1)), "{ack}");
    client
        .send_json(json!({"type": "publish", "room": room("never"), "data": 1, "ref": "p2"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "not_subscribed", "{error}");
    client
        .send_json(json!({"type": "unsubscribe", "room": a}))
        .await;
    let unsubscribed = client.expect("unsubscribed").await;
    assert_eq!(unsubscribed["room"], json!(a), "{unsubscribed}");
    publish(&worker, &a, json!("no longer")).await;
    publish(&worker, &b, json!("still")).await;
    read_until(&mut client, &mut seen, |s| s.count() == 3).await;
    assert_eq!(
        (seen.messages[&a].len(), &seen.messages[&b]),
        (1, &vec![1, 2])
    );
}

/// Kafka both ways through a multiplexed connection, over the bridge: the
/// connection's publish reaches Kafka once, as the room's own sockets' do,
/// and a record produced for the room reaches the connection, named by its
/// room, in seq order after it.
#[tokio::test]
async fn kafka_relays_a_room_of_a_multiplexed_connection_both_ways() {
    let broker = Broker::start().await;
    let worker = Worker::start(&VARS).await;
    let _bridge = BridgeProcess::start(&worker, &broker, "solo", &[]).await;
    let events = broker.consumer("roomcast.events");
    let r = room("muxkafka");
    let (mut client, _) = connect(&worker, &full_token("alice")).await;
    client
        .send_json(json!({"type": "subscribe", "room": r}))
        .await;
    client.expect("subscribed").await;

    // Connection → Kafka, stored once acked.
    client
        .send_json(json!({"type": "publish", "room": r, "data": {"from": "hub"}, "id": "from-hub", "ref": "p1"}))
        .await;
    let message = client.expect("message").await;
    assert_eq!(
        (&message["id"], &message["seq"]),
        (&json!("from-hub"), &json!(1))
    );
    let ack = client.expect("ack").await;
    assert_eq!(
        (&ack["room"], &ack["ref"]),
        (&json!(r), &json!("p1")),
        "{ack}"
    );
    // Kafka → connection.
    produce(
        &broker.producer(),
        "roomcast.inbound",
        &r,
        r#"{"from":"kafka"}"#,
        &[("message-id", "from-kafka")],
    )
    .await;
    let message = client.expect("message").await;
    assert_eq!(
        (&message["room"], &message["id"], &message["seq"]),
        (&json!(r), &json!("from-kafka"), &json!(2)),
        "{message}"
    );
    // A sentinel over HTTP closes what Kafka is read for.
    let (status, body) = Http::default()
        .post(
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            &full_token("publisher"),
            r#"{"data": "end", "id": "end"}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let records = collect(&events, Duration::from_secs(30), |got| {
        got.last()
            .is_some_and(|rec| header(rec, "message-id").as_deref() == Some("end"))
    })
    .await;
    let relayed: Vec<(Option<String>, Option<String>)> = records
        .iter()
        .map(|rec| (header(rec, "message-id"), header(rec, "origin")))
        .collect();
    assert_eq!(
        relayed,
        [
            (Some("from-hub".to_owned()), Some("ws".to_owned())),
            (Some("end".to_owned()), Some("http".to_owned())),
        ]
    );
    let value: Value =
        serde_json::from_slice(records[0].payload().expect("payload")).expect("JSON");
    assert_eq!(value["data"]["from"], "hub");
}
