//! End to end, what a publish costs the room, counted exactly: SQLite
//! statements and rows written as the runtime reports them (Cloudflare bills
//! by row), and socket attachments written, read from `/stats`. Timings stay
//! in the benchmarks; these counts are deterministic, so a publish that goes
//! back to more statements or rows fails here.
//!
//! Every limit is on, with budgets big enough for the load.

use roomcast_tests::{full_token, room, Client, Http, Worker};
use serde_json::{json, Value};

const LIMITS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
];

/// What a room has done so far: statements, rows written, attachments.
async fn cost(worker: &Worker, room: &str) -> (f64, f64, f64) {
    let stats = worker.stats(room).await;
    let n = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("a number: {stats}"));
    (
        n(&stats["storage"]["statements"]),
        n(&stats["storage"]["rows_written"]),
        n(&stats["attachment_writes"]),
    )
}

/// Publishes `count` messages with ids over the socket, pipelined, and
/// waits for every ack.
async fn publish_ws(client: &mut Client, from: u64, count: u64) {
    for n in from..from + count {
        client
            .send_json(json!({"type": "publish", "data": {"n": n}, "id": format!("m-{n}"), "ref": n.to_string()}))
            .await;
    }
    let mut acked = 0;
    while acked < count {
        let frame = client.next_json().await;
        match frame["type"].as_str() {
            Some("ack") => acked += 1,
            Some("message") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

#[tokio::test]
async fn a_publish_costs_one_statement_and_one_row() {
    let worker = Worker::start(LIMITS).await;
    let r = room("cost");
    let token = full_token("publisher");
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"))).await;
    client.expect("welcome").await;
    // Fill the room to its history limit first: in the steady state every
    // publish overwrites the oldest message's slot.
    publish_ws(&mut client, 0, 1000).await;
    let before = cost(&worker, &r).await;
    publish_ws(&mut client, 1000, 1000).await;
    let after = cost(&worker, &r).await;
    let per = |i: usize| {
        let pick = |c: (f64, f64, f64)| [c.0, c.1, c.2][i];
        (pick(after) - pick(before)) / 1000.0
    };
    let (statements, rows, attachments) = (per(0), per(1), per(2));
    println!("per WebSocket publish: {statements:.3} statements, {rows:.3} rows written, {attachments:.3} attachment writes");
    assert!(statements <= 1.05, "{statements} statements per publish");
    assert!(rows <= 1.05, "{rows} rows written per publish");
    assert!(
        attachments <= 0.05,
        "{attachments} attachment writes per publish"
    );
}

#[tokio::test]
async fn a_batch_of_500_costs_one_row_a_message() {
    let worker = Worker::start(LIMITS).await;
    let r = room("batch-cost");
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("batcher");
    let batch = |from: u64| {
        let messages: Vec<Value> = (from..from + 500)
            .map(|n| json!({"data": {"n": n}, "id": format!("b-{n}")}))
            .collect();
        json!({ "messages": messages }).to_string()
    };
    // Two batches fill the room; the next two are the steady state.
    for from in [0, 500] {
        assert_eq!(http.post(&url, &token, &batch(from)).await.0, 201);
    }
    let before = cost(&worker, &r).await;
    for from in [1000, 1500] {
        let (status, body) = http.post(&url, &token, &batch(from)).await;
        assert_eq!(status, 201, "{body}");
    }
    let after = cost(&worker, &r).await;
    let statements = (after.0 - before.0) / 2.0;
    let rows = (after.1 - before.1) / 1000.0;
    println!("per batch of 500: {statements} statements; {rows:.3} rows written per message");
    assert!(
        statements <= 45.0,
        "{statements} statements per batch of 500"
    );
    assert!(rows <= 1.05, "{rows} rows written per message");
}
