//! End to end, what keeps a room from retiring (docs/protocol.md,
//! "Retirement"): messages the bridge has not confirmed. A quiet room with
//! no clients retires after `ROOM_RETIRE_MS` (tests/tests/lifecycle.rs);
//! one that still holds messages for the bridge does not, however long it
//! has been quiet, and retires once a bridge link has confirmed them.

use std::time::Duration;

use roomcast_tests::{bridge_link, bridge_token, full_token, room, Http, Worker};
use serde_json::Value;
use tokio::time::{sleep, Instant};

async fn registered(worker: &Worker, room: &str) -> bool {
    let (status, body) = Http::default()
        .get(
            &worker.url(&format!("/v1/registry?room={room}")),
            Some(&bridge_token()),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["registered"].as_bool().expect("registered")
}

#[tokio::test]
async fn a_room_with_pending_messages_never_retires() {
    const RETIRE_MS: u64 = 1000;
    let retire_ms = RETIRE_MS.to_string();
    let worker = Worker::start(&[("ROOM_RETIRE_MS", &retire_ms), ("BRIDGE", "on")]).await;
    let http = Http::default();
    let r = room("pending");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("once");
    // One batch: one event, one `ts`, one alarm for ROOM_RETIRE_MS after it.
    let (status, body) = http
        .post(
            &url,
            &token,
            r#"{"messages":[{"data":1},{"data":2},{"data":3}]}"#,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, page) = http
        .get(&format!("{url}?since=0"), Some(&bridge_token()))
        .await;
    assert_eq!(status, 200, "{page}");
    let stored_at = page["messages"][2]["ts"].as_u64().expect("ts");
    let stored = worker.stats(&r).await;
    assert_eq!(stored["pending"], 3, "{stored}");
    // The room considers retiring when the alarm comes: by then it has
    // had no message for ROOM_RETIRE_MS and no client.
    let armed = stored["alarm"].as_u64().expect("an alarm");
    assert!(
        armed >= stored_at + RETIRE_MS,
        "alarm at {armed}, messages stored at {stored_at}: {stored}"
    );

    // The alarm fires, finds the messages pending, and the room stays:
    // still registered, with the same epoch, head and cursor. It has run
    // once the room reports another alarm than the one it fired for (here
    // none: nothing is due until a bridge link or a message comes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let swept = loop {
        let stats = worker.stats(&r).await;
        if stats["alarm"].as_u64() != Some(armed) {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the alarm set for {armed} never fired: {stats}"
        );
        sleep(Duration::from_millis(200)).await;
    };
    for field in ["epoch", "head", "pending", "cursor"] {
        assert_eq!(swept[field], stored[field], "{field}: {swept}");
    }
    assert!(
        registered(&worker, &r).await,
        "a room with pending messages left the registry: {swept}"
    );

    // A bridge link confirms them: the room retires, closing the link.
    let (mut link, welcome) = bridge_link(&worker, &r, "late").await;
    assert_eq!(
        (welcome["cursor"].as_u64(), welcome["head"].as_u64()),
        (Some(0), Some(3))
    );
    let mut relayed = Vec::new();
    while relayed.len() < 3 {
        let frame = link.next_json().await;
        if frame["type"] == "message" {
            relayed.push(frame["seq"].as_u64().expect("seq"));
        }
    }
    assert_eq!(relayed, [1, 2, 3]);
    link.send_json(serde_json::json!({"type": "bridge_ack", "seq": 3}))
        .await;
    assert_eq!(
        link.expect_close(Duration::from_secs(45)).await,
        4010,
        "the room retires once nothing is pending"
    );
    assert!(!registered(&worker, &r).await);
    let retired = worker.stats(&r).await;
    assert_eq!(retired["pending"], 0, "{retired}");
    assert_ne!(
        retired["alarm"],
        Value::Null,
        "one last alarm deletes the history once it ages out: {retired}"
    );
}
