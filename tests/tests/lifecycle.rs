//! End to end, rooms over a long life: reads that leave nothing behind,
//! turns bounded whatever the history holds, an outbox from the first
//! message that loses nothing silently, rooms that retire and come back,
//! and a registry that rebalances thousands of rooms in small turns.
//!
//! Each scenario is a test of its own; those that need the same worker
//! configuration share one `wrangler dev`, one scenario at a time
//! (`scenarios/mod.rs` runs them).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use roomcast_protocol::assign::owner;
use roomcast_tests::records::{collect, header};
use roomcast_tests::{
    bridge_token, full_token, metric, room, BridgeProcess, Broker, Client, Frame, Http, Worker,
};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// Limits that let these tests publish in bulk.
const BULK: [(&str, &str); 3] = [
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
];

fn vars<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    BULK.iter().copied().chain(extra.iter().copied()).collect()
}

/// Publishes `count` small messages into `room` in batches of 500.
async fn publish_many(worker: &Worker, room: &str, count: u64) {
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    let token = full_token("bulk");
    for start in (0..count).step_by(500) {
        let messages: Vec<Value> = (start..(start + 500).min(count))
            .map(|n| json!({"data": n}))
            .collect();
        let (status, body) = http
            .post(&url, &token, &json!({ "messages": messages }).to_string())
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

async fn registry(worker: &Worker, room: Option<&str>) -> Value {
    let query = room.map(|r| format!("?room={r}")).unwrap_or_default();
    let (status, body) = Http::default()
        .get(
            &worker.url(&format!("/v1/registry{query}")),
            Some(&bridge_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[macro_use]
mod scenarios;

fn main() -> ExitCode {
    scenarios::main(vec![
        group!(
            with_long_history;
            a_room_nobody_wrote_answers_empty_and_stores_nothing,
            reading_a_long_history_writes_nothing_and_its_resume_is_paged,
            a_page_stops_at_a_turns_byte_budget,
        ),
        group!(
            with_bridge_on;
            with_bridge_on_rooms_are_outboxes_and_drops_are_counted
        ),
        group!(retiring_after_3_s; a_quiet_room_retires_and_comes_back),
        group!(retiring_after_1_s; a_room_written_only_over_http_retires),
        group!(
            with_room_budget_lifted;
            the_registry_rebalances_thousands_of_rooms_in_small_turns
        ),
    ])
}

async fn with_long_history() -> Worker {
    Worker::start(&vars(&[("HISTORY_LIMIT", "3000")])).await
}

async fn with_bridge_on() -> Worker {
    Worker::start(&vars(&[("BRIDGE", "on"), ("OUTBOX_LIMIT", "1500")])).await
}

async fn retiring_after_3_s() -> Worker {
    Worker::start(&[("ROOM_RETIRE_MS", "3000"), ("HISTORY_TTL_SECS", "1")]).await
}

async fn retiring_after_1_s() -> Worker {
    Worker::start(&[("ROOM_RETIRE_MS", "1000"), ("HISTORY_TTL_SECS", "1")]).await
}

/// One subject creates every room: its room budget is lifted.
async fn with_room_budget_lifted() -> Worker {
    Worker::start(&[("ROOM_CREATE_PER_MIN", "100000")]).await
}

/// A room nobody wrote: empty answers, and nothing stored.
async fn a_room_nobody_wrote_answers_empty_and_stores_nothing(worker: &Worker) {
    let http = Http::default();
    let reader = full_token("reader");
    let ghost = room("ghost");
    let (status, page) = http
        .get(
            &worker.url(&format!("/v1/rooms/{ghost}/messages?since=0")),
            Some(&reader),
        )
        .await;
    assert_eq!(
        (status, page["messages"].clone()),
        (200, json!([])),
        "{page}"
    );
    let before = worker.stats(&ghost).await;
    assert_eq!(
        (
            before["head"].as_u64(),
            before["epoch"].as_str(),
            &before["alarm"]
        ),
        (Some(0), Some(""), &Value::Null),
        "{before}"
    );
    assert_eq!(before["storage"]["rows_written"], 0, "{before}");
}

/// A written room: reading pages writes nothing, and a resume of more than
/// a turn may replay is sent to HTTP paging.
async fn reading_a_long_history_writes_nothing_and_its_resume_is_paged(worker: &Worker) {
    let http = Http::default();
    let reader = full_token("reader");
    let r = room("bounded");
    publish_many(worker, &r, 1200).await;
    let written = worker.stats(&r).await["storage"]["rows_written"].clone();
    let (_, page) = http
        .get(
            &worker.url(&format!("/v1/rooms/{r}/messages?since=0&limit=1000")),
            Some(&reader),
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1000);
    assert_eq!(page["truncated"], true);
    assert_eq!(worker.stats(&r).await["storage"]["rows_written"], written);

    // The resume is sent to HTTP paging; live messages follow on the
    // socket at once.
    let epoch = page["epoch"].as_str().unwrap();
    let mut client = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={reader}&since=0&epoch={epoch}"
    )))
    .await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["recovered"], true);
    assert_eq!(
        welcome["catch_up"],
        json!({"since": 0, "until": 1200}),
        "{welcome}"
    );
    assert_eq!(
        http.post(
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            &full_token("w"),
            r#"{"data":"live"}"#
        )
        .await
        .0,
        201
    );
    assert_eq!(
        client.expect("message").await["seq"],
        1201,
        "no replay before live"
    );
}

/// A page stops at a turn's byte budget, whatever the count asked.
async fn a_page_stops_at_a_turns_byte_budget(worker: &Worker) {
    let http = Http::default();
    let reader = full_token("reader");
    let big = room("big");
    let url = worker.url(&format!("/v1/rooms/{big}/messages"));
    for _ in 0..10 {
        let messages: Vec<Value> = (0..10)
            .map(|_| json!({"data": "x".repeat(60_000)}))
            .collect();
        let (status, body) = http
            .post(
                &url,
                &full_token("bulk"),
                &json!({ "messages": messages }).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, page) = http
        .get(&format!("{url}?since=0&limit=1000"), Some(&reader))
        .await;
    let n = page["messages"].as_array().unwrap().len();
    assert!((60..100).contains(&n), "{n} messages of 60 kB in one page");
    assert_eq!(page["truncated"], true);
}

async fn with_bridge_on_rooms_are_outboxes_and_drops_are_counted(worker: &Worker) {
    let kept = room("outbox");
    let overflowing = room("overflow");
    // No bridge yet: 3 batches of 500 are held past HISTORY_LIMIT (1000).
    publish_many(worker, &kept, 1500).await;
    publish_many(worker, &overflowing, 2000).await;
    assert_eq!(worker.stats(&kept).await["outbox_dropped_total"], 0);
    assert_eq!(
        worker.stats(&overflowing).await["outbox_dropped_total"],
        500,
        "2000 unconfirmed, 1500 held"
    );

    let broker = Broker::start().await;
    let events = broker.consumer("roomcast.events");
    let bridge = BridgeProcess::start(worker, &broker, "late", &[]).await;
    let records = collect(&events, Duration::from_secs(120), |got| {
        got.len() >= 1500 + 1500
    })
    .await;
    let seqs = |name: &str| -> BTreeSet<u64> {
        records
            .iter()
            .filter(|r| header(r, "room").as_deref() == Some(name))
            .filter_map(|r| header(r, "seq")?.parse().ok())
            .collect()
    };
    assert_eq!(
        seqs(&kept),
        (1..=1500).collect(),
        "every held message reached Kafka"
    );
    assert_eq!(seqs(&overflowing), (501..=2000).collect());
    let deadline = Instant::now() + Duration::from_secs(30);
    let series = format!("roomcast_room_outbox_dropped_total{{room=\"{overflowing}\"}}");
    loop {
        if metric(&bridge.metrics_text().await, &series) == Some(500.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{series} never reached 500");
        sleep(Duration::from_millis(300)).await;
    }
}

async fn a_quiet_room_retires_and_comes_back(worker: &Worker) {
    let broker = Broker::start().await;
    let events = broker.consumer("roomcast.events");
    let bridge = BridgeProcess::start(worker, &broker, "retiring", &[]).await;
    let http = Http::default();
    let r = room("retiring");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("once");
    assert_eq!(
        http.post(&url, &token, r#"{"data":"first life"}"#).await.0,
        201
    );
    collect(&events, Duration::from_secs(30), |got| !got.is_empty()).await;
    let link = format!("roomcast_bridge_link_up{{room=\"{r}\"}}");
    assert_eq!(metric(&bridge.metrics_text().await, &link), Some(1.0));
    let first = worker.stats(&r).await;
    assert_eq!(registry(worker, Some(&r)).await["registered"], true);

    // Quiet for ROOM_RETIRE_MS: link closed, series gone, out of the
    // registry, no alarm, storage deleted (its history aged out too).
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&bridge.metrics_text().await, &link).is_some() {
        assert!(
            Instant::now() < deadline,
            "{r} never retired\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(300)).await;
    }
    let text = bridge.metrics_text().await;
    assert!(
        !text.contains(&format!("room=\"{r}\"")),
        "series of {r} remain:\n{text}"
    );
    assert_eq!(registry(worker, Some(&r)).await["registered"], false);
    let retired = worker.stats(&r).await;
    assert_eq!(
        (
            retired["alarm"].clone(),
            retired["head"].as_u64(),
            retired["epoch"].as_str()
        ),
        (Value::Null, Some(0), Some("")),
        "{retired}"
    );

    // The next message revives it, under a new epoch.
    assert_eq!(
        http.post(&url, &token, r#"{"data":"second life"}"#).await.0,
        201
    );
    let revived = worker.stats(&r).await;
    assert_eq!(revived["head"], 1);
    assert_ne!(revived["epoch"], first["epoch"]);
    let mut resuming = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={token}&since=1&epoch={}",
        first["epoch"].as_str().unwrap()
    )))
    .await;
    assert_eq!(resuming.expect("welcome").await["recovered"], false);
    let again = collect(&events, Duration::from_secs(30), |got| !got.is_empty()).await;
    assert_eq!(header(&again[0], "room").as_deref(), Some(r.as_str()));
    assert_eq!(registry(worker, Some(&r)).await["registered"], true);
}

/// Every message arms the room's alarm for `ROOM_RETIRE_MS` later, so a
/// room nobody ever joined, written only over HTTP, retires and deletes its
/// storage too.
async fn a_room_written_only_over_http_retires(worker: &Worker) {
    let http = Http::default();
    let r = room("http-only");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    assert_eq!(
        http.post(&url, &full_token("poster"), r#"{"data":1}"#)
            .await
            .0,
        201
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = worker.stats(&r).await;
        if stats["epoch"] == "" {
            assert_eq!(stats["alarm"], Value::Null, "{stats}");
            break;
        }
        assert!(Instant::now() < deadline, "{r} never retired: {stats}");
        sleep(Duration::from_millis(300)).await;
    }
}

/// The rooms announced on a registry link until it is quiet for a moment.
async fn announced(link: &mut Client) -> BTreeSet<String> {
    let mut rooms = BTreeSet::new();
    while let Some(frame) = link.next_frame_within(Duration::from_secs(2)).await {
        let Frame::Text(text) = frame else {
            panic!("registry link closed: {frame:?}")
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "room" {
            rooms.insert(frame["room"].as_str().unwrap().to_owned());
        }
    }
    rooms
}

async fn the_registry_rebalances_thousands_of_rooms_in_small_turns(worker: &Worker) {
    const ROOMS: usize = 2000;
    let http = Http::default();
    let token = full_token("founder");
    let names: Vec<String> = (0..ROOMS).map(|_| room("many")).collect();
    stream::iter(&names)
        .for_each_concurrent(32, |name| {
            let (http, token) = (&http, &token);
            let url = worker.url(&format!("/v1/rooms/{name}/messages"));
            async move {
                // Keyed, so a retry after the runtime shed the request
                // (503 under load) stores nothing twice.
                let mut status = 0;
                for _ in 0..3 {
                    status = http.post(&url, token, r#"{"data":1,"id":"first"}"#).await.0;
                    if status != 503 {
                        break;
                    }
                }
                assert_eq!(status, 201);
            }
        })
        .await;
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry(worker, None).await["rooms"].as_u64() < Some(ROOMS as u64) {
        assert!(Instant::now() < deadline, "not every room registered");
        sleep(Duration::from_millis(300)).await;
    }

    let link_url = |instance: &str| {
        worker.ws_url(&format!(
            "/v1/bridge?instance={instance}&token={}",
            bridge_token()
        ))
    };
    let mut a = Client::connect(&link_url("a")).await;
    assert!(
        announced(&mut a).await.is_superset(&all),
        "a owns every room"
    );
    let pass = registry(worker, None).await["rebalance"].clone();
    assert_eq!(pass["done"], true, "{pass}");
    assert!(pass["rooms"].as_u64() >= Some(ROOMS as u64), "{pass}");
    assert!(
        pass["turns"].as_u64() >= Some((ROOMS as u64).div_ceil(500)),
        "one page of 500 rooms per turn: {pass}"
    );

    let mut b = Client::connect(&link_url("b")).await;
    let for_b = announced(&mut b).await;
    let expected: BTreeSet<String> = names
        .iter()
        .filter(|r| owner(r, &["a", "b"]) == Some("b"))
        .cloned()
        .collect();
    assert!(
        for_b.is_superset(&expected) && !expected.is_empty(),
        "b got {} of its {} rooms",
        for_b.intersection(&expected).count(),
        expected.len()
    );
}
