//! What the broker suites put into rooms and read back from them over
//! HTTP: a load of messages published in batches, a room's stored
//! messages, and the check that each message of a load is stored exactly
//! once (what at-least-once delivery with idempotency keys promises).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

use crate::{full_token, Http, Worker};

/// Messages per batch of [`publish`].
const BATCH: u64 = 25;

/// Publishes `count` messages (`data` 0, 1, …) into `room` over HTTP, a
/// batch of 25 at a time with a pause between, so that a relay carries
/// them as a stream rather than one burst.
pub async fn publish(worker: &Worker, room: &str, count: u64) {
    let http = Http::default();
    let token = full_token("load");
    for start in (0..count).step_by(BATCH as usize) {
        let messages: Vec<Value> = (start..(start + BATCH).min(count))
            .map(|n| json!({"data": n}))
            .collect();
        let (status, body) = http
            .post(
                &worker.url(&format!("/v1/rooms/{room}/messages")),
                &token,
                &json!({"messages": messages}).to_string(),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// What `room` stores now, in seq order (up to 1000 messages).
pub async fn stored(worker: &Worker, room: &str) -> Vec<Value> {
    let (_, page) = Http::default()
        .get(
            &worker.url(&format!("/v1/rooms/{room}/messages?since=0&limit=1000")),
            Some(&full_token("check")),
        )
        .await;
    page["messages"].as_array().cloned().unwrap_or_default()
}

/// Waits until `room` stores at least `count` messages; them, in seq order.
pub async fn wait_stored(worker: &Worker, room: &str, count: usize, wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let messages = stored(worker, room).await;
        if messages.len() >= count {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} messages reached {room}",
            messages.len()
        );
        sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `room` stores `count` messages whose `data.n` are 0 to
/// `count - 1`, and checks each is there exactly once.
pub async fn expect_stored_once(worker: &Worker, room: &str, count: u64, wait: Duration) {
    let messages = wait_stored(worker, room, count as usize, wait).await;
    let ns: Vec<u64> = messages
        .iter()
        .map(|m| m["data"]["n"].as_u64().expect("data.n"))
        .collect();
    let distinct: BTreeSet<u64> = ns.iter().copied().collect();
    assert_eq!(ns.len(), distinct.len(), "a message was stored twice");
    assert_eq!(distinct, (0..count).collect::<BTreeSet<_>>());
}
