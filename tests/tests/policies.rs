//! End to end, per-room overrides (docs/protocol.md, "Configuration",
//! `ROOM_POLICIES`): a policy's `rate_burst`, `history_limit` and
//! `max_message_bytes` change what the rooms it matches do, and nothing in
//! the rooms it does not match, which keep the deployment's defaults.
//!
//! Every test runs a `strict.N` room (the policy) beside an `open.N` room
//! (the defaults: a burst of 40, 1000 messages of history, 64 KiB
//! messages), with the same subject and the same requests in both.

use std::time::Duration;

use roomcast_tests::{assert_error, bridge_token, full_token, room, Client, Frame, Http, Worker};
use serde_json::{json, Value};

const POLICIES: &str = r#"[{"match":"strict.*","rate_burst":3,"rate_per_sec":1,"history_limit":5,"max_message_bytes":64}]"#;

async fn start() -> Worker {
    Worker::start(&[("ROOM_POLICIES", POLICIES)]).await
}

/// Both rooms of a test: the one the policy matches, and one it does not.
fn rooms() -> (String, String) {
    (room("strict"), room("open"))
}

async fn welcome(worker: &Worker, room: &str, token: &str) -> (Client, Value) {
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{room}/ws?token={token}"))).await;
    let welcome = client.expect("welcome").await;
    (client, welcome)
}

fn batch(n: usize) -> String {
    json!({"messages": (0..n).map(|i| json!({"data": i})).collect::<Vec<_>>()}).to_string()
}

/// The answer to a publish, past the broadcast of its message.
async fn answer(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame["type"] != "message" {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_policys_rate_burst_applies_to_its_rooms_only() {
    let worker = start().await;
    let http = Http::default();
    let token = full_token("publisher");
    let (strict, open) = rooms();
    let (_, w) = welcome(&worker, &strict, &token).await;
    assert_eq!(w["rate"], json!({"per_sec": 1, "burst": 3}), "{w}");
    let (_, w) = welcome(&worker, &open, &token).await;
    assert_eq!(w["rate"], json!({"per_sec": 20, "burst": 40}), "{w}");

    let url = |r: &str| worker.url(&format!("/v1/rooms/{r}/messages"));
    // The burst caps a request's batch...
    assert_error(
        &http.post(&url(&strict), &token, &batch(4)).await,
        413,
        "too_large",
    );
    let (status, body) = http.post(&url(&open), &token, &batch(4)).await;
    assert_eq!(status, 201, "{body}");
    // ...and is the subject's whole budget: three messages, then nothing
    // until the next one refills (a second at one a second).
    let (status, body) = http.post(&url(&strict), &token, &batch(3)).await;
    assert_eq!(status, 201, "{body}");
    let refused = http
        .raw()
        .post(url(&strict))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"data":"one more"}"#)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "one token at one a second"
    );
    // The same subject next door still has most of its 40.
    let (status, body) = http.post(&url(&open), &token, &batch(30)).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_policys_history_limit_applies_to_its_rooms_only() {
    let worker = start().await;
    let http = Http::default();
    // The bridge's token has no budget, so the strict room's burst of 3
    // does not get in the way of eight messages.
    let bridge = bridge_token();
    let (strict, open) = rooms();
    for r in [&strict, &open] {
        let url = worker.url(&format!("/v1/rooms/{r}/messages"));
        let (status, body) = http.post(&url, &bridge, &batch(8)).await;
        assert_eq!(status, 201, "{body}");
    }
    let page = |r: &str| {
        let url = worker.url(&format!("/v1/rooms/{r}/messages?since=0"));
        let http = &http;
        let bridge = &bridge;
        async move {
            let (status, page) = http.get(&url, Some(bridge)).await;
            assert_eq!(status, 200, "{page}");
            let seqs: Vec<u64> = page["messages"]
                .as_array()
                .unwrap_or_else(|| panic!("a page: {page}"))
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq"))
                .collect();
            (seqs, page)
        }
    };
    let (seqs, strict_page) = page(&strict).await;
    assert_eq!(seqs, [4, 5, 6, 7, 8], "{strict_page}");
    assert_eq!(
        (strict_page["oldest"].as_u64(), strict_page["head"].as_u64()),
        (Some(4), Some(8))
    );
    let (seqs, open_page) = page(&open).await;
    assert_eq!(seqs, (1..=8).collect::<Vec<_>>(), "{open_page}");

    // A resume from 1 needs messages 2 and 3: gone from the strict room,
    // replayed in the open one.
    let token = full_token("reader");
    for (r, page, recovered) in [(&strict, &strict_page, false), (&open, &open_page, true)] {
        let epoch = page["epoch"].as_str().expect("epoch");
        let mut client = Client::connect(&worker.ws_url(&format!(
            "/v1/rooms/{r}/ws?token={token}&since=1&epoch={epoch}"
        )))
        .await;
        let w = client.expect("welcome").await;
        assert_eq!(w["recovered"], recovered, "{r}: {w}");
        if recovered {
            for seq in 2..=8 {
                assert_eq!(client.expect("message").await["seq"], seq);
            }
        }
    }
}

#[tokio::test]
async fn a_policys_max_message_bytes_applies_to_its_rooms_only() {
    let worker = start().await;
    let http = Http::default();
    let token = full_token("publisher");
    let (strict, open) = rooms();
    let (mut strict_ws, w) = welcome(&worker, &strict, &token).await;
    assert_eq!(w["max_message_bytes"], 64, "{w}");
    let (mut open_ws, w) = welcome(&worker, &open, &token).await;
    assert_eq!(w["max_message_bytes"], 65536, "{w}");

    // Over HTTP the limit is on each message's compact `data`: a string of
    // 62 characters is 64 bytes with its quotes, one more is over.
    let url = |r: &str| worker.url(&format!("/v1/rooms/{r}/messages"));
    let data = |n: usize| json!({ "data": "x".repeat(n) }).to_string();
    let (status, body) = http.post(&url(&strict), &token, &data(62)).await;
    assert_eq!(status, 201, "{body}");
    assert_error(
        &http.post(&url(&strict), &token, &data(63)).await,
        413,
        "too_large",
    );
    let (status, body) = http.post(&url(&open), &token, &data(63)).await;
    assert_eq!(status, 201, "{body}");

    // Over a socket it is on the whole frame.
    let frame = json!({"type": "publish", "data": "x".repeat(100), "ref": "big"});
    strict_ws.send_json(frame.clone()).await;
    let refused = answer(&mut strict_ws).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("too_large")),
        "{refused}"
    );
    open_ws.send_json(frame).await;
    assert_eq!(answer(&mut open_ws).await["type"], "ack");

    // Four times the limit closes the socket (1009), by the room's limit.
    let huge = json!({"type": "publish", "data": "x".repeat(300)});
    open_ws.send_json(huge.clone()).await;
    assert_eq!(answer(&mut open_ws).await["type"], "ack");
    strict_ws.send_json(huge).await;
    assert_eq!(answer(&mut strict_ws).await["code"], "too_large");
    assert_eq!(
        strict_ws.next_frame_within(Duration::from_secs(10)).await,
        Some(Frame::Closed(1009))
    );
}
