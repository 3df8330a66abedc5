//! End to end, an HTTP batch is all or nothing (docs/protocol.md,
//! "Publishing"): a batch refused for one message's id stores none of its
//! messages. The head does not move, the history does not change, nothing
//! is broadcast, and the batch's other ids stay free: sent again without
//! the bad message, they are new messages, not duplicates of anything.

use roomcast_tests::{assert_error, bridge_token, full_token, room, Client, Http, Worker};
use serde_json::{json, Value};

/// What the room shows of itself: head, stored (seq, id) pairs, and
/// accepted messages by origin.
async fn snapshot(worker: &Worker, http: &Http, room: &str) -> (u64, Vec<(u64, String)>, Value) {
    let url = worker.url(&format!("/v1/rooms/{room}/messages?since=0"));
    let (status, page) = http.get(&url, Some(&bridge_token())).await;
    assert_eq!(status, 200, "{page}");
    let stored = page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {page}"))
        .iter()
        .map(|m| {
            (
                m["seq"].as_u64().expect("seq"),
                m["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect();
    let stats = worker.stats(room).await;
    (
        stats["head"].as_u64().expect("head"),
        stored,
        stats["messages_total"].clone(),
    )
}

/// Alice owns `a-1` (seq 1); Bob's batch carries two ids of his own, one
/// message without an id, and `bad` in the middle, which is refused with
/// `status` and `code`. Then nothing of Bob's batch is anywhere.
async fn refused_batch_stores_nothing(bad: Value, status: u16, code: &str) {
    let worker = Worker::start(&[]).await;
    let http = Http::default();
    let r = room("all-or-nothing");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let (alice, bob) = (full_token("alice"), full_token("bob"));
    let (got, first) = http
        .post(&url, &alice, r#"{"data":"first","id":"a-1"}"#)
        .await;
    assert_eq!((got, first["seq"].as_u64()), (201, Some(1)), "{first}");
    let mut listener =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={alice}"))).await;
    assert_eq!(listener.expect("welcome").await["head"], 1);
    let before = snapshot(&worker, &http, &r).await;

    let refused = json!({"messages": [
        {"data": 1, "id": "b-1"},
        bad,
        {"data": 3, "id": "b-3"},
        {"data": 4},
    ]});
    assert_error(
        &http.post(&url, &bob, &refused.to_string()).await,
        status,
        code,
    );
    assert_eq!(
        snapshot(&worker, &http, &r).await,
        before,
        "a refused batch changed head, history or counts"
    );

    // Bob's own ids were never stored: sent again without the bad message
    // they are new, and take the next seqs; the listener's next message is
    // the first of them, so the refused batch broadcast nothing.
    let retried = json!({"messages": [
        {"data": 1, "id": "b-1"},
        {"data": 3, "id": "b-3"},
    ]});
    let (got, receipts) = http.post(&url, &bob, &retried.to_string()).await;
    assert_eq!(got, 201, "{receipts}");
    assert_eq!(
        receipts["results"],
        json!([
            {"id": "b-1", "seq": 2, "duplicate": false},
            {"id": "b-3", "seq": 3, "duplicate": false},
        ])
    );
    let next = listener.expect("message").await;
    assert_eq!(
        (next["seq"].as_u64(), next["id"].as_str()),
        (Some(2), Some("b-1")),
        "{next}"
    );
    // Alice's id is still hers alone.
    let (got, again) = http
        .post(&url, &alice, r#"{"data":"first","id":"a-1"}"#)
        .await;
    assert_eq!(
        (got, again["seq"].as_u64(), again["duplicate"].as_bool()),
        (201, Some(1), Some(true)),
        "{again}"
    );
}

#[tokio::test]
async fn a_batch_refused_for_another_subjects_id_stores_nothing() {
    refused_batch_stores_nothing(json!({"data": 2, "id": "a-1"}), 409, "id_conflict").await;
}

#[tokio::test]
async fn a_batch_refused_for_a_kafka_id_stores_nothing() {
    refused_batch_stores_nothing(
        json!({"data": 2, "id": "kafka:roomcast.inbound:0:7"}),
        403,
        "forbidden",
    )
    .await;
}
