//! End to end, the window of the bridge's room link (docs/internals.md,
//! "Room link", "Bounded turns"): the room sends at most the messages up to
//! `cursor + 1000`, and at most about 4 MiB per step; each `bridge_ack`
//! opens the window again. The link is opened as the bridge opens it, by a
//! plain WebSocket client that acks only when told.
//!
//! What arrives in a step is counted up to a sentinel: an unreadable frame,
//! which the room answers with `error` in order. Anything the step or a
//! publish could still send would come before that answer, so "nothing
//! more" is an observation, not a quiet timeout.

use roomcast_protocol::history::TURN_BYTES;
use roomcast_tests::{bridge_link, full_token, room, Client, Http, Worker};
use serde_json::{json, Value};

/// A bridge relays this deployment, so a room keeps every message for it
/// from the first one; budgets are big enough for bulk publishing.
const VARS: &[(&str, &str)] = &[
    ("BRIDGE", "on"),
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
];

/// The most messages beyond the cursor the link carries (docs/protocol.md).
const WINDOW: u64 = 1000;

/// Publishes `count` messages whose `data` is `size` bytes of string, in
/// batches that stay under the 4 MiB request body limit.
async fn publish(worker: &Worker, room: &str, count: usize, size: usize) {
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    let token = full_token("publisher");
    let per_batch = (3_000_000 / size.max(1)).clamp(1, 500);
    let mut left = count;
    while left > 0 {
        let n = left.min(per_batch);
        let messages: Vec<Value> = (0..n).map(|_| json!({"data": "x".repeat(size)})).collect();
        let (status, body) = http
            .post(&url, &token, &json!({ "messages": messages }).to_string())
            .await;
        assert_eq!(status, 201, "{body}");
        left -= n;
    }
}

/// A `message` frame's seq and length; `None` for `stats`; anything else
/// has no place on the link here.
fn relayed(text: &str) -> Option<(u64, usize)> {
    let frame: Value = serde_json::from_str(text).expect("a JSON frame");
    match frame["type"].as_str() {
        Some("message") => Some((frame["seq"].as_u64().expect("seq"), text.len())),
        Some("stats") => None,
        _ => panic!("unexpected frame on the link: {frame}"),
    }
}

/// The messages of the link's opening turn, which ends with its first
/// `stats` frame.
async fn opening_step(link: &mut Client) -> Vec<(u64, usize)> {
    let mut got = Vec::new();
    loop {
        let text = link.next_text().await;
        match relayed(&text) {
            Some(message) => got.push(message),
            None => return got,
        }
    }
}

/// The messages the room sends before it answers a sentinel.
async fn step_until_sentinel(link: &mut Client) -> Vec<(u64, usize)> {
    let frames = link.until_link_settled().await;
    frames.iter().filter_map(|text| relayed(text)).collect()
}

/// The seqs that arrived, as `lo..=hi` when they are that run in order
/// (a short line in a failure, not a thousand numbers), else all of them.
fn span(got: &[(u64, usize)]) -> String {
    let seqs: Vec<u64> = got.iter().map(|(seq, _)| *seq).collect();
    match (seqs.first(), seqs.last()) {
        (Some(&lo), Some(&hi)) if seqs == (lo..=hi).collect::<Vec<_>>() => format!("{lo}..={hi}"),
        _ => format!("{seqs:?}"),
    }
}

async fn ack(link: &mut Client, seq: u64) {
    link.send_json(json!({"type": "bridge_ack", "seq": seq}))
        .await;
}

#[tokio::test]
async fn the_link_carries_at_most_1000_messages_beyond_the_cursor() {
    let worker = Worker::start(VARS).await;
    let r = room("window");
    publish(&worker, &r, 1500, 8).await;
    let (mut link, welcome) = bridge_link(&worker, &r, "window").await;
    assert_eq!(
        (welcome["cursor"].as_u64(), welcome["head"].as_u64()),
        (Some(0), Some(1500))
    );
    // The link's first turn: the backlog the window allows, then `stats`.
    let first = opening_step(&mut link).await;
    assert_eq!(span(&first), format!("1..={WINDOW}"));
    // Neither a new message nor anything else moves the window: only an ack.
    publish(&worker, &r, 1, 8).await;
    assert_eq!(span(&step_until_sentinel(&mut link).await), "[]");

    // An ack of 500 lets 500 more through: up to 1500, not the new 1501.
    ack(&mut link, 500).await;
    let second = step_until_sentinel(&mut link).await;
    assert_eq!(span(&second), format!("{}..={}", WINDOW + 1, WINDOW + 500));
    ack(&mut link, 1500).await;
    assert_eq!(span(&step_until_sentinel(&mut link).await), "1501..=1501");
    ack(&mut link, 1501).await;
    assert_eq!(span(&step_until_sentinel(&mut link).await), "[]");
    let stats = worker.stats(&r).await;
    assert_eq!(
        (stats["cursor"].as_u64(), stats["pending"].as_u64()),
        (Some(1501), Some(0)),
        "{stats}"
    );
}

#[tokio::test]
async fn the_link_sends_about_4_mib_per_step() {
    const COUNT: u64 = 150;
    const SIZE: usize = 60_000;
    let worker = Worker::start(VARS).await;
    let r = room("step");
    publish(&worker, &r, COUNT as usize, SIZE).await;
    let (mut link, welcome) = bridge_link(&worker, &r, "window").await;
    assert_eq!(welcome["head"], COUNT);

    // Each step stops once TURN_BYTES of frames went out: all of them but
    // the last were under it, so a step is at most one message over.
    let mut steps = vec![opening_step(&mut link).await];
    assert_eq!(
        span(&step_until_sentinel(&mut link).await),
        "[]",
        "a step sent more after it"
    );
    let mut next = 1;
    loop {
        let step = steps.last().expect("a step");
        let bytes: usize = step.iter().map(|(_, len)| len).sum();
        let last = step.last().map_or(0, |(_, len)| *len);
        let through = step.last().map_or(0, |(seq, _)| *seq);
        assert_eq!(
            span(step),
            format!("{next}..={through}"),
            "steps continue in order"
        );
        assert!(
            ((bytes - last) as u64) < TURN_BYTES,
            "a step of {} messages, {bytes} bytes, went on after {TURN_BYTES}",
            step.len()
        );
        if through == COUNT {
            break;
        }
        assert!(
            bytes as u64 >= TURN_BYTES,
            "a step stopped at {bytes} bytes with messages left"
        );
        next = through + 1;
        ack(&mut link, through).await;
        steps.push(step_until_sentinel(&mut link).await);
    }
    let sizes: Vec<usize> = steps.iter().map(Vec::len).collect();
    println!("messages per step: {sizes:?}");
    assert!(
        steps.len() >= 3,
        "{COUNT} messages of {SIZE} bytes in {} steps",
        steps.len()
    );
}
