//! End to end, a room's history where it meets the bridge's outbox
//! (docs/protocol.md, "History and resume"): what a client reads is always
//! the contiguous run `oldest..=head`, whatever the messages' origins and
//! however far behind the bridge is; nothing the bridge still needs is
//! overwritten, not even by a batch larger than the ring; and a read costs
//! its reader its budget and the storage its own rows, never the room's.

use roomcast_tests::{bridge_token, full_token, room, Client, Http, Worker};
use serde_json::{json, Value};

/// Every room is an outbox from its first message, and no bridge confirms
/// anything: the whole history past `HISTORY_LIMIT` sits in the outbox.
fn vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("BRIDGE", "on"),
        ("HISTORY_LIMIT", "5"),
        (
            "ROOM_POLICIES",
            r#"[{"match":"ring10.*","history_limit":10},{"match":"budget.*","rate_burst":3,"rate_per_sec":1},{"match":"rows.*","rate_burst":1000,"rate_per_sec":1000}]"#,
        ),
    ]
}

async fn post(http: &Http, worker: &Worker, room: &str, token: &str, body: Value) -> Value {
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    let (status, answer) = http.post(&url, token, &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

async fn page(http: &Http, worker: &Worker, room: &str, query: &str) -> (u16, Value) {
    let url = worker.url(&format!("/v1/rooms/{room}/messages?{query}"));
    http.get(&url, Some(&full_token("reader"))).await
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

/// One message of ten comes from Kafka while the bridge is a whole history
/// behind: the history stays `1..=10`, and a resume from 1 replays 2.
#[tokio::test]
async fn kafka_messages_leave_no_hole() {
    let (worker, http) = (Worker::start(&vars()).await, Http::default());
    let (worker, http) = (&worker, &http);
    let r = room("holes");
    let user = full_token("user");
    for n in 1..=10 {
        let token = if n == 2 { bridge_token() } else { user.clone() };
        post(http, worker, &r, &token, json!({ "data": n })).await;
    }
    let (status, page) = page(http, worker, &r, "since=0").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(seqs(&page), (1..=10).collect::<Vec<_>>(), "{page}");
    assert_eq!(page["oldest"], 1);
    assert_eq!(page["messages"][1]["origin"], "kafka");

    let epoch = page["epoch"].as_str().expect("epoch");
    let url = worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={user}&since=1&epoch={epoch}"
    ));
    let mut client = Client::connect(&url).await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let mut replayed = Vec::new();
    for _ in 2..=10 {
        replayed.push(client.expect("message").await["seq"].as_u64().expect("seq"));
    }
    assert_eq!(
        replayed,
        (2..=10).collect::<Vec<_>>(),
        "recovered, so no skip"
    );
    client.close().await;
}

/// A batch of 30 into a ring of 10 with the bridge not caught up: all 30
/// stay for the bridge (and for readers), none is overwritten in the
/// statement that stores them.
#[tokio::test]
async fn a_batch_larger_than_the_ring_loses_nothing() {
    let (worker, http) = (Worker::start(&vars()).await, Http::default());
    let (worker, http) = (&worker, &http);
    let r = room("ring10");
    let batch: Vec<Value> = (1..=30).map(|n| json!({ "data": n })).collect();
    post(
        http,
        worker,
        &r,
        &full_token("user"),
        json!({ "messages": batch }),
    )
    .await;
    let (_, page) = page(http, worker, &r, "since=0").await;
    assert_eq!(seqs(&page), (1..=30).collect::<Vec<_>>(), "{page}");
    assert_eq!(worker.stats(&r).await["pending"], 30);

    let url = worker.ws_url(&format!(
        "/v1/rooms/{r}/bridge?instance=test&token={}",
        bridge_token()
    ));
    let mut link = Client::connect(&url).await;
    assert_eq!(link.expect("welcome").await["cursor"], 0);
    let mut relayed = Vec::new();
    while relayed.len() < 30 {
        let frame = link.next_json().await;
        if frame["type"] == "message" {
            relayed.push(frame["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(relayed, (1..=30).collect::<Vec<_>>());
    assert_eq!(worker.stats(&r).await["outbox_dropped_total"], 0);
    link.close().await;
}

/// Rows read by the room so far.
async fn rows_read(worker: &Worker, room: &str) -> u64 {
    worker.stats(room).await["storage"]["rows_read"]
        .as_u64()
        .expect("rows_read")
}

/// A room with 300 messages, 295 of them in the outbox: a page of 10 reads
/// its own rows (their sizes, then the rows) wherever it starts, and
/// `/stats` reads none.
#[tokio::test]
async fn reads_cost_their_own_rows() {
    let (worker, http) = (Worker::start(&vars()).await, Http::default());
    let (worker, http) = (&worker, &http);
    let r = room("rows");
    let user = full_token("user");
    for from in (0..300).step_by(30) {
        let batch: Vec<Value> = (from..from + 30).map(|n| json!({ "data": n })).collect();
        post(http, worker, &r, &user, json!({ "messages": batch })).await;
    }
    let before = rows_read(worker, &r).await;
    let again = rows_read(worker, &r).await;
    assert_eq!(again, before, "/stats read rows");
    assert_eq!(
        worker.stats(&r).await["pending"],
        300,
        "and still knows what is pending"
    );
    for since in [0, 150, 290] {
        let before = rows_read(worker, &r).await;
        let (status, got) = page(http, worker, &r, &format!("since={since}&limit=10")).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(seqs(&got), (since + 1..=since + 10).collect::<Vec<_>>());
        assert_eq!(got["truncated"], since + 10 < 300);
        let read = rows_read(worker, &r).await - before;
        assert!(read <= 24, "a page of 10 from {since} read {read} rows");
    }
}

/// Pages and resumes cost a token of the reader's budget (3 here): the
/// fourth in a row is refused with `Retry-After`, on HTTP and on a join.
#[tokio::test]
async fn reads_draw_from_the_budget() {
    let (worker, http) = (Worker::start(&vars()).await, Http::default());
    let (worker, http) = (&worker, &http);
    let r = room("budget");
    post(
        http,
        worker,
        &r,
        &full_token("writer"),
        json!({ "data": 1 }),
    )
    .await;
    let url = worker.url(&format!("/v1/rooms/{r}/messages?since=0"));
    let token = full_token("pager");
    for _ in 0..3 {
        assert_eq!(http.get(&url, Some(&token)).await.0, 200);
    }
    let refused = http
        .raw()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().get("retry-after").is_some());

    let (_, first) = page(http, worker, &r, "since=0").await;
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    let resumer = full_token("resumer");
    let url = worker.ws_url(&format!(
        "/v1/rooms/{r}/ws?token={resumer}&since=0&epoch={epoch}"
    ));
    for _ in 0..3 {
        let mut client = Client::connect(&url).await;
        assert_eq!(client.expect("welcome").await["recovered"], true);
        client.close().await;
    }
    assert_eq!(Client::refused(&url).await, 429, "a fourth resume in a row");
}
