//! End to end: a room bigger than one Durable Object (docs/internals.md, "Sharding"). With
//! a small `ROOM_SHARD_SIZE`, clients spread over the room and its shards;
//! every one of them must get every message once, in seq order, whichever
//! object the publisher and the subscriber are on; resume must work on a
//! shard; a restart while publishers run must leave no gap and no
//! duplicate; a shard that lost its state and missed messages must fetch
//! them from the room before anything newer, or close its clients (1011)
//! when the room no longer has them; and Kafka must relay a sharded room
//! both ways.
//!
//! Readers stop at a sentinel, a message published after everything a
//! test expects, so what came before it is all a client got: a late
//! duplicate cannot hide behind a count.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::message::Message as _;
use roomcast_tests::records::{collect, header, produce};
use roomcast_tests::{full_token, room, BridgeProcess, Broker, Client, Frame, Http, Worker, STEP};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, timeout, Instant};

/// Budgets big enough that only the sharding is under test.
const BUDGETS: [(&str, &str); 3] = [
    ("RATE_PER_SEC", "1000"),
    ("RATE_BURST", "1000"),
    ("ROOM_RATE_PER_SEC", "100000"),
];

/// The id of the message a test publishes last.
const SENTINEL: &str = "sentinel";

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

/// Publishes `body` into `room` over HTTP; the answer, which must be 201.
async fn post(worker: &Worker, room: &str, body: &str) -> Value {
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    let (status, answer) = Http::default()
        .post(&url, &full_token("publisher"), body)
        .await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Publishes the sentinel into `room`; its seq.
async fn post_sentinel(worker: &Worker, room: &str) -> u64 {
    let body = json!({ "data": "end", "id": SENTINEL }).to_string();
    post(worker, room, &body).await["seq"]
        .as_u64()
        .expect("seq")
}

/// What one subscriber saw: the messages (seq, id) and its acks (ref, seq).
#[derive(Default)]
struct Seen {
    messages: Vec<(u64, String)>,
    acks: Vec<(String, u64)>,
}

impl Seen {
    fn seqs(&self) -> Vec<u64> {
        self.messages.iter().map(|m| m.0).collect()
    }

    fn ids(&self) -> Vec<&str> {
        self.messages.iter().map(|m| m.1.as_str()).collect()
    }

    /// Whether the last message is the one with `id`.
    fn got(&self, id: &str) -> bool {
        self.messages.last().is_some_and(|m| m.1 == id)
    }
}

/// Why a read stopped before what it waited for.
#[derive(Debug, PartialEq)]
enum Cut {
    /// The connection closed, with this code.
    Closed(u16),
    /// Nothing arrived for [`STEP`].
    Silent,
}

/// Reads `client` into `seen` until `done` holds (checked first).
async fn read_until(
    client: &mut Client,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) -> Result<(), Cut> {
    while !done(seen) {
        let text = match client.next_frame_within(STEP).await {
            Some(Frame::Text(text)) => text,
            Some(Frame::Closed(code)) => return Err(Cut::Closed(code)),
            None => return Err(Cut::Silent),
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
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
    Ok(())
}

/// Reads `client` to the sentinel, which must come before any close.
async fn read_to_sentinel(client: &mut Client, seen: &mut Seen, who: &str) {
    if let Err(cut) = read_until(client, seen, |s| s.got(SENTINEL)).await {
        let last = seen.messages.last();
        panic!(
            "{who}: {cut:?} after {} messages (last {last:?})",
            seen.messages.len()
        );
    }
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
    let mut expected: HashSet<String> = HashSet::from([SENTINEL.to_owned()]);
    for (p, index) in publishers.iter().enumerate() {
        let client = &mut clients[*index];
        for n in 0..50 {
            let id = format!("ws-{p}-{n}");
            client
                .send_json(json!({"type": "publish", "data": n, "id": id, "ref": format!("{n}")}))
                .await;
            expected.insert(id);
        }
    }
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let mut posts = Vec::new();
    for (p, index) in publishers.iter().enumerate() {
        let ids: Vec<Vec<String>> = (0..5)
            .map(|batch| (0..10).map(|n| format!("http-{p}-{batch}-{n}")).collect())
            .collect();
        expected.extend(ids.iter().flatten().cloned());
        let (http, url) = (&http, &url);
        posts.push(async move {
            let token = full_token(&format!("sub-{index}"));
            for batch in ids {
                let messages: Vec<Value> = batch
                    .iter()
                    .enumerate()
                    .map(|(n, id)| json!({"data": n, "id": id}))
                    .collect();
                let body = json!({ "messages": messages }).to_string();
                publish_until_stored(http, || url.clone(), &token, &body).await;
            }
        });
    }
    // A publisher's reader says when its 50 acks are in: with the HTTP
    // posts answered, every message is stored, and the sentinel comes last.
    let (acked, mut all_acked) = mpsc::unbounded_channel();
    let readers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, mut client)| {
            let publisher = publishers.contains(&n);
            let acked = acked.clone();
            tokio::spawn(async move {
                let who = format!("client {n}");
                let mut seen = Seen::default();
                if publisher {
                    let acks = read_until(&mut client, &mut seen, |s| s.acks.len() >= 50).await;
                    assert_eq!(acks, Ok(()), "{who}");
                    acked.send(()).expect("the test hears the acks");
                }
                read_to_sentinel(&mut client, &mut seen, &who).await;
                seen
            })
        })
        .collect();
    let seen = timeout(Duration::from_secs(180), async {
        join_all(posts).await;
        for _ in publishers {
            all_acked.recv().await.expect("a publisher's reader");
        }
        let sentinel = json!({ "data": "end", "id": SENTINEL }).to_string();
        let token = full_token("publisher");
        publish_until_stored(&http, || url.clone(), &token, &sentinel).await;
        join_all(readers).await
    })
    .await
    .expect("every subscriber got every message within 3 minutes");

    let all: Vec<u64> = (1..=501).collect();
    for (n, seen) in seen.into_iter().enumerate() {
        let seen = seen.expect("reader");
        let who = format!("client {n}");
        assert_eq!(seen.seqs(), all, "{who}: every seq once, in order");
        let ids: HashSet<String> = seen.ids().into_iter().map(str::to_owned).collect();
        assert!(ids == expected, "{who}: not every message, or another one");
        if let Some(p) = publishers.iter().position(|i| *i == n) {
            let refs: HashSet<&str> = seen.acks.iter().map(|(r, _)| r.as_str()).collect();
            assert_eq!(
                (refs.len(), seen.acks.len()),
                (50, 50),
                "{who}: one ack for each publish"
            );
            for (reference, seq) in &seen.acks {
                let id = format!("ws-{p}-{reference}");
                assert!(
                    seen.messages.iter().any(|m| m.0 == *seq && m.1 == id),
                    "{who}: ack {reference} names seq {seq}, which is not its message"
                );
            }
        } else {
            assert!(seen.acks.is_empty(), "{who}: acks for another's publishes");
        }
    }
    let after = worker.stats(&r).await;
    assert_eq!(after["head"], 501);
    assert!(
        after["deliveries_total"].as_u64().unwrap_or(0) >= 275 * 501,
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
    let batch = |from: u64, count: u64| {
        let messages: Vec<Value> = (from..from + count)
            .map(|n| json!({"data": n, "id": format!("m-{n}")}))
            .collect();
        json!({ "messages": messages }).to_string()
    };
    post(&worker, &r, &batch(0, 5)).await;
    let epoch = clients[0].1["epoch"].as_str().expect("epoch").to_owned();
    // The last two clients are on shard 1; they leave having seen seq 5,
    // and nothing else.
    for _ in 0..2 {
        let (mut leaving, _) = clients.pop().expect("client");
        let mut seen = Seen::default();
        read_until(&mut leaving, &mut seen, |s| s.got("m-4"))
            .await
            .expect("open");
        assert_eq!(seen.seqs(), [1, 2, 3, 4, 5]);
    }
    for from in [5, 55] {
        post(&worker, &r, &batch(from, 50)).await;
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
    post(&worker, &r, &batch(105, 1)).await;
    assert_eq!(post_sentinel(&worker, &r).await, 107);
    for (n, mut client) in back.into_iter().enumerate() {
        let mut seen = Seen::default();
        read_to_sentinel(&mut client, &mut seen, &format!("resumed {n}")).await;
        assert_eq!(
            seen.seqs(),
            (6..=107).collect::<Vec<_>>(),
            "missed ones first, then live, each once"
        );
    }
    for (n, (mut client, _)) in clients.into_iter().enumerate() {
        let mut seen = Seen::default();
        read_to_sentinel(&mut client, &mut seen, &format!("client {n}")).await;
        assert_eq!(seen.seqs(), (1..=107).collect::<Vec<_>>(), "client {n}");
    }
}

/// Where the worker is: its HTTP and WebSocket bases, which a restart
/// changes (the new `wrangler dev` listens on another port).
#[derive(Clone)]
struct Base {
    http: String,
    ws: String,
}

impl Base {
    fn of(worker: &Worker) -> Base {
        Base {
            http: worker.url(""),
            ws: worker.ws_url(""),
        }
    }
}

/// Publishes `body` (messages with ids, so a repeat is stored once) until
/// the worker answers 201, to wherever `url()` says the worker is then. A
/// request that got no answer is sent again: the worker went away (a
/// restart), took longer than a minute (a publish is answered once every
/// shard has it, which under load takes seconds), or wrangler answered 503
/// because the runtime dropped the request.
async fn publish_until_stored(http: &Http, url: impl Fn() -> String, token: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let answer = http
            .raw()
            .post(url())
            .bearer_auth(token)
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(60))
            .body(body.to_owned())
            .send()
            .await;
        match answer.map(|a| a.status().as_u16()) {
            Ok(201) => return,
            Ok(status) if status < 500 => panic!("publishing {body:.100}: {status}"),
            failed => assert!(
                Instant::now() < deadline,
                "publishing {body:.100}: {failed:?}"
            ),
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `count` messages into `room` over HTTP, one per request with
/// ids `h-0`, `h-1`, …, through a restart (see [`publish_until_stored`]).
/// `progress` counts what was stored.
async fn publish_over_http(
    base: watch::Receiver<Base>,
    room: String,
    count: u64,
    progress: watch::Sender<u64>,
) {
    let http = Http::default();
    let token = full_token("http-publisher");
    for n in 0..count {
        let body = json!({"data": n, "id": format!("h-{n}")}).to_string();
        let url = || format!("{}/v1/rooms/{room}/messages", base.borrow().http);
        publish_until_stored(&http, url, &token, &body).await;
        progress.send_replace(n + 1);
    }
}

/// Joins `room` as the WebSocket publisher; `None` when the worker is not
/// there (it is restarting).
async fn join_to_publish(base: &watch::Receiver<Base>, room: &str) -> Option<Client> {
    let url = format!(
        "{}/v1/rooms/{room}/ws?token={}",
        base.borrow().ws,
        full_token("ws-publisher")
    );
    let mut client = Client::connect_with(&url, &[]).await.ok()?;
    match client.next_frame_within(STEP).await {
        Some(Frame::Text(welcome)) => {
            assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
            Some(client)
        }
        _ => None,
    }
}

/// Publishes `count` messages into `room` over a WebSocket, ids `w-0`,
/// `w-1`, …, each once the one before is acked, through a restart: when
/// the connection is lost it joins again and sends the unacked one again
/// (a repeat is acked as a duplicate and stored once). `progress` counts
/// what was acked.
async fn publish_over_ws(
    base: watch::Receiver<Base>,
    room: String,
    count: u64,
    progress: watch::Sender<u64>,
) {
    let mut client: Option<Client> = None;
    let mut n = 0;
    while n < count {
        let Some(open) = client.as_mut() else {
            client = join_to_publish(&base, &room).await;
            if client.is_none() {
                sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let frame =
            json!({"type": "publish", "data": n, "id": format!("w-{n}"), "ref": n.to_string()});
        // Its ack comes after the messages every client gets.
        let mut lost = !open.try_send_text(&frame.to_string()).await;
        while !lost {
            let text = match open.next_frame_within(STEP).await {
                Some(Frame::Text(text)) => text,
                Some(Frame::Closed(_)) => {
                    lost = true;
                    continue;
                }
                None => panic!("w-{n}: no ack within {STEP:?}"),
            };
            let frame: Value = serde_json::from_str(&text).expect("JSON");
            if frame["type"] == "ack" {
                assert_eq!(frame["ref"], n.to_string(), "{frame}");
                break;
            }
            assert_eq!(frame["type"], "message", "{frame}");
        }
        if lost {
            client = None;
        } else {
            n += 1;
            progress.send_replace(n);
        }
    }
}

/// A subscriber through a restart: reads until its connection drops,
/// resumes on the new worker from the last seq it got, and reads on to the
/// sentinel. What it saw, and the welcome of each resume.
async fn subscribe_through_restart(
    mut client: Client,
    mut base: watch::Receiver<Base>,
    room: String,
    sub: String,
    epoch: String,
) -> (Seen, Vec<Value>) {
    let mut seen = Seen::default();
    let mut resumes: Vec<Value> = Vec::new();
    while let Err(cut) = read_until(&mut client, &mut seen, |s| s.got(SENTINEL)).await {
        let last = seen.messages.last().map(|m| m.0);
        let resumed = resumes.last().map(|w| (&w["recovered"], &w["head"]));
        assert!(
            cut != Cut::Silent && resumes.is_empty(),
            "{sub}: {cut:?} at seq {last:?}, after a resume (recovered, head) {resumed:?}"
        );
        timeout(Duration::from_secs(180), base.changed())
            .await
            .expect("the worker came back")
            .expect("the test holds the worker's base");
        let since = seen.messages.last().map_or(0, |m| m.0);
        let url = format!(
            "{}/v1/rooms/{room}/ws?token={}&since={since}&epoch={epoch}",
            base.borrow().ws,
            full_token(&sub)
        );
        client = Client::connect(&url).await;
        resumes.push(client.expect("welcome").await);
    }
    (seen, resumes)
}

#[tokio::test]
async fn a_restart_while_publishers_run_leaves_no_gap_and_no_duplicate() {
    const COUNT: u64 = 60;
    let vars = vars("3");
    let mut first = Worker::start(&vars).await;
    let r = room("sharded-restart");
    let (moved, base) = watch::channel(Base::of(&first));
    // Twelve subscribers: three on the room's own object and three on each
    // of three shards; the WebSocket publisher joins a fourth.
    let mut clients = Vec::new();
    for n in 0..12 {
        clients.push(join(&first, &r, &format!("sub-{n}")).await);
    }
    assert_eq!(first.stats(&r).await["shards"], 3);
    let epoch = clients[0].1["epoch"].as_str().expect("epoch").to_owned();
    let subscribers: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(n, (client, _))| {
            let (base, room, epoch) = (base.clone(), r.clone(), epoch.clone());
            tokio::spawn(subscribe_through_restart(
                client,
                base,
                room,
                format!("sub-{n}"),
                epoch,
            ))
        })
        .collect();
    let (http_stored, mut http_progress) = watch::channel(0);
    let (ws_acked, mut ws_progress) = watch::channel(0);
    let http_publisher = tokio::spawn(publish_over_http(
        base.clone(),
        r.clone(),
        COUNT,
        http_stored,
    ));
    let ws_publisher = tokio::spawn(publish_over_ws(base.clone(), r.clone(), COUNT, ws_acked));

    // The restart, once a quarter of each publisher's messages are in.
    timeout(Duration::from_secs(60), async {
        http_progress
            .wait_for(|n| *n >= COUNT / 4)
            .await
            .expect("HTTP publisher");
        ws_progress
            .wait_for(|n| *n >= COUNT / 4)
            .await
            .expect("WebSocket publisher");
    })
    .await
    .expect("both publishers got going");
    first.stop();
    let at_restart = (*http_progress.borrow(), *ws_progress.borrow());
    assert!(
        at_restart.0 < COUNT && at_restart.1 < COUNT,
        "the restart came after the publishers finished: {at_restart:?}"
    );
    let second = Worker::start_in(first.persist.clone(), &vars).await;
    moved.send_replace(Base::of(&second));
    timeout(Duration::from_secs(120), async {
        http_publisher.await.expect("HTTP publisher");
        ws_publisher.await.expect("WebSocket publisher");
    })
    .await
    .expect("the publishers finished after the restart");

    let head = post_sentinel(&second, &r).await;
    let expected: HashSet<String> = (0..COUNT)
        .flat_map(|n| [format!("h-{n}"), format!("w-{n}")])
        .chain([SENTINEL.to_owned()])
        .collect();
    assert_eq!(head, expected.len() as u64, "each message stored once");
    for (n, subscriber) in subscribers.into_iter().enumerate() {
        let (seen, resumes) = timeout(Duration::from_secs(60), subscriber)
            .await
            .expect("every subscriber reached the sentinel")
            .expect("subscriber");
        let who = format!("sub-{n}");
        assert_eq!(resumes.len(), 1, "{who}: the restart dropped it once");
        assert_eq!(resumes[0]["recovered"], true, "{who}: {}", resumes[0]);
        assert_eq!(
            seen.seqs(),
            (1..=head).collect::<Vec<_>>(),
            "{who}: every message once, in order"
        );
        let ids: HashSet<String> = seen.ids().into_iter().map(str::to_owned).collect();
        assert!(ids == expected, "{who}: not every message, or another one");
    }
}

/// A batch of `count` messages (ids `big-{n}` from `from`) whose frames
/// add up to more than the room keeps ready for its shards (a turn's
/// worth, 4 MiB): the batch each shard then gets starts well after what
/// it has, so the shard has missed messages, as after a failed batch.
fn too_big_to_keep(from: u64, count: u64) -> String {
    let messages: Vec<Value> = (from..from + count)
        .map(|n| json!({"data": format!("{n:05}{}", "x".repeat(60_000)), "id": format!("big-{n}")}))
        .collect();
    json!({ "messages": messages }).to_string()
}

/// The worker for the tests of shards that lose their state: one object
/// per client, requests that may carry more than a room keeps ready for
/// its shards, and rooms named `forgetful.*` that keep only 20 messages.
async fn worker_for_lost_state() -> Worker {
    let mut vars = vars("1");
    vars.push(("MAX_BODY_BYTES", "8388608"));
    vars.push((
        "ROOM_POLICIES",
        r#"[{"match":"forgetful.*","history_limit":20}]"#,
    ));
    Worker::start(&vars).await
}

/// Room `r` with a client on its own object and one on shard 0, both
/// having read seqs 1..=3; the room's epoch.
async fn room_with_a_shard(worker: &Worker, r: &str) -> (Vec<(Client, Seen)>, String) {
    let (here, welcome) = join(worker, r, "here").await;
    let (there, _) = join(worker, r, "there").await;
    assert_eq!(worker.stats(r).await["shards"], 1);
    let small: Vec<Value> = (0..3)
        .map(|n| json!({"data": n, "id": format!("small-{n}")}))
        .collect();
    post(worker, r, &json!({ "messages": small }).to_string()).await;
    let mut pair = Vec::new();
    for mut client in [here, there] {
        let mut seen = Seen::default();
        read_until(&mut client, &mut seen, |s| s.got("small-2"))
            .await
            .expect("open");
        assert_eq!(seen.seqs(), [1, 2, 3]);
        pair.push((client, seen));
    }
    let epoch = welcome["epoch"].as_str().expect("epoch").to_owned();
    (pair, epoch)
}

/// Waits until workerd has evicted the objects that had no event: it
/// evicts an object whose sockets are all hibernatable after 10 s without
/// one (measured under wrangler dev: an object idle for 9 s kept its
/// memory, one idle for 10 s had lost it). The `awake` rooms are asked
/// for a page every 2 s, so they keep theirs. Nothing tells a client that
/// an object was evicted, so this waits on the clock.
async fn evict_idle_objects(worker: &Worker, awake: &[&str]) {
    let http = Http::default();
    let keeper = full_token("keeper");
    let until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < until {
        for r in awake {
            let url = worker.url(&format!("/v1/rooms/{r}/messages?since=3&limit=1"));
            assert_eq!(http.get(&url, Some(&keeper)).await.0, 200);
        }
        sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn a_shard_that_lost_its_state_fetches_what_it_missed_or_closes_1011() {
    let worker = worker_for_lost_state().await;
    let (kept, forgot) = (room("sharded-gap"), room("forgetful"));
    let (mut kept_pair, _) = room_with_a_shard(&worker, &kept).await;
    let (mut forgot_pair, epoch) = room_with_a_shard(&worker, &forgot).await;
    // The shards lose their state (their clients send nothing); the rooms
    // keep theirs, and so where each shard was.
    evict_idle_objects(&worker, &[&kept, &forgot]).await;
    // Messages 4..=103 at once, more than the rooms keep ready: the shards
    // get batches that start well after seq 3.
    for r in [&kept, &forgot] {
        post(&worker, r, &too_big_to_keep(3, 100)).await;
        assert_eq!(post_sentinel(&worker, r).await, 104);
    }
    let all: Vec<u64> = (1..=104).collect();

    // The room that still has 4..: its shard fetches them before anything
    // newer, and both clients get every message once, in order.
    for (n, (client, seen)) in kept_pair.iter_mut().enumerate() {
        read_to_sentinel(client, seen, &format!("{kept} client {n}")).await;
        assert_eq!(seen.seqs(), all, "{kept} client {n}");
    }

    // The room that kept only the last 20: its own client gets them all;
    // the shard's client, nothing past 3 but a close (1011). It resumes
    // like any client that fell behind: not recovered, and then live
    // messages from the head on.
    let (here, seen) = &mut forgot_pair[0];
    read_to_sentinel(here, seen, &format!("{forgot} room client")).await;
    assert_eq!(seen.seqs(), all);
    let (there, _) = &mut forgot_pair[1];
    assert_eq!(
        there.next_frame_within(STEP).await,
        Some(Frame::Closed(1011)),
        "{forgot}: the shard's client"
    );
    let url = worker.ws_url(&format!(
        "/v1/rooms/{forgot}/ws?token={}&since=3&epoch={epoch}",
        full_token("there")
    ));
    let mut again = Client::connect(&url).await;
    let welcome = again.expect("welcome").await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["head"].as_u64()),
        (Some(false), Some(104)),
        "{welcome}"
    );
    post(&worker, &forgot, r#"{"data":"live","id":"live"}"#).await;
    let mut seen = Seen::default();
    read_until(&mut again, &mut seen, |s| s.got("live"))
        .await
        .expect("open");
    assert_eq!(seen.seqs(), [105], "no replay after a resume that failed");
}

/// When the room lost its state too, it no longer knows where its shard
/// was, and the shard does not either: the room presumes the shard had
/// everything up to the head it woke with, so its first batch (which starts
/// at what it kept ready, seq 35 here, after one POST larger than it
/// keeps) makes the shard fill 4..=34 from history first.
#[tokio::test]
async fn a_shard_and_its_room_that_both_lost_their_state_leave_no_gap() {
    let worker = worker_for_lost_state().await;
    let r = room("sharded-both-lost");
    let (mut pair, _) = room_with_a_shard(&worker, &r).await;
    evict_idle_objects(&worker, &[]).await;
    post(&worker, &r, &too_big_to_keep(3, 100)).await;
    post_sentinel(&worker, &r).await;
    for (n, (client, seen)) in pair.iter_mut().enumerate() {
        read_to_sentinel(client, seen, &format!("client {n}")).await;
        assert_eq!(seen.seqs(), (1..=104).collect::<Vec<_>>(), "client {n}");
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
        clients.push((
            join(&worker, &r, &format!("sub-{n}")).await.0,
            Seen::default(),
        ));
    }
    assert_eq!(worker.stats(&r).await["shards"], 2);

    // Room → Kafka, from a client on the second shard (stored once acked).
    let (client, seen) = &mut clients[2];
    client
        .send_json(
            json!({"type": "publish", "data": {"from": "shard"}, "id": "from-shard", "ref": "x"}),
        )
        .await;
    read_until(client, seen, |s| !s.acks.is_empty())
        .await
        .expect("open");
    // Kafka → room; once it is in, the sentinel over HTTP.
    produce(
        &broker.producer(),
        "roomcast.inbound",
        &r,
        r#"{"from":"kafka"}"#,
        &[("message-id", "from-kafka")],
    )
    .await;
    let (client, seen) = &mut clients[0];
    read_until(client, seen, |s| s.got("from-kafka"))
        .await
        .expect("open");
    post_sentinel(&worker, &r).await;

    // Every client, on the room and on both shards, gets the three.
    for (n, (client, seen)) in clients.iter_mut().enumerate() {
        read_to_sentinel(client, seen, &format!("client {n}")).await;
        assert_eq!(
            seen.ids(),
            ["from-shard", "from-kafka", SENTINEL],
            "client {n}"
        );
    }
    // Kafka gets the two that did not come from Kafka, each once.
    let records = collect(&events, Duration::from_secs(30), |got| {
        got.last()
            .is_some_and(|r| header(r, "message-id").as_deref() == Some(SENTINEL))
    })
    .await;
    let relayed: Vec<(Option<String>, Option<String>)> = records
        .iter()
        .map(|r| (header(r, "message-id"), header(r, "origin")))
        .collect();
    assert_eq!(
        relayed,
        [
            (Some("from-shard".to_owned()), Some("ws".to_owned())),
            (Some(SENTINEL.to_owned()), Some("http".to_owned())),
        ]
    );
    let value: Value =
        serde_json::from_slice(records[0].payload().expect("payload")).expect("JSON");
    assert_eq!(value["data"]["from"], "shard");
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
    // From a shard's client first; its ack follows its message, so from
    // then on the message is stored and nothing later can overtake it.
    clients[2]
        .send_text(
            "{\"type\": \"publish\",\n \"data\": {\n  \"from\": \"shard\"\n },\n \"ref\": \"p\"}",
        )
        .await;
    let mut early = Vec::new();
    loop {
        let text = clients[2].next_text().await;
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        match frame["type"].as_str() {
            Some("message") => early.push((frame["seq"].as_u64().expect("seq"), text)),
            Some("ack") if frame["ref"] == "p" => break,
            _ => panic!("unexpected frame {frame}"),
        }
    }
    // As `JSON.stringify(v, null, 2)` writes it, and a line that reads as
    // a seq and a frame of the old line-based framing.
    let pretty = "{\n  \"data\": {\n    \"a\": [\n      1,\n      2\n    ]\n  }\n}";
    let tricky = "{\"data\": [\n99999999999 ]\n}";
    for body in [pretty, tricky] {
        let (status, answer) = http.post(&url, &token, body).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (status, _) = http.post(&url, &token, r#"{"data":"sentinel"}"#).await;
    assert_eq!(status, 201);
    let expected = [
        r#""data":{"from":"shard"}"#,
        r#""data":{"a":[1,2]}"#,
        r#""data":[99999999999]"#,
        r#""data":"sentinel""#,
    ];
    for (n, client) in clients.iter_mut().enumerate() {
        let mut frames = if n == 2 {
            std::mem::take(&mut early)
        } else {
            Vec::new()
        };
        let from = frames.last().map_or(0, |(seq, _)| *seq);
        if from < 4 {
            frames.extend(frames_until(client, 4).await);
        }
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

/// Each refusal is counted once in the room's `/stats`, wherever its
/// publisher is: a shard counts what it answers its clients (and hands its
/// counters to the room with its next answer), the room does not count it
/// again.
#[tokio::test]
async fn refusals_on_a_shard_are_counted_once() {
    let mut vars = vars("1");
    vars.push((
        "ROOM_POLICIES",
        r#"[{"match":"sharded-counted.*","rate_burst":3,"rate_per_sec":1}]"#,
    ));
    let worker = Worker::start(&vars).await;
    let r = room("sharded-counted");
    let (mut here, _) = join(&worker, &r, "here").await;
    let (mut there, _) = join(&worker, &r, "there").await;
    assert_eq!(worker.stats(&r).await["shards"], 1);
    // Three forbidden ids and two over the budget on each side.
    let on_room = answers(&mut here, 4, "kafka:x-").await;
    let on_shard = answers(&mut there, 4, "kafka:x-").await;
    assert_eq!(on_shard, on_room);
    // The sentinel's batch brings the shard's counters to the room before
    // the publish is answered.
    post_sentinel(&worker, &r).await;
    let stats = worker.stats(&r).await;
    assert_eq!(
        (
            &stats["rejects_total"]["forbidden"],
            &stats["rejects_total"]["rate_limited"]
        ),
        (&json!(6), &json!(4)),
        "{stats}"
    );
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
