//! End to end, the room's clocks and limits with short settings passed by
//! `--var`: the idle close (4008) and the ping that prevents it, the token
//! expiry notice and close (4001) and the in-band refresh that prevents it,
//! rate limiting with its 4029 escalation, and resume after history was
//! trimmed. The sweeps run from the Durable Object alarm, as in production.
//!
//! Each scenario is a test of its own on one shared worker, and they run
//! together: each mostly waits on the room's clocks, so one after another
//! would take about three times as long (`scenarios/mod.rs` runs them).

use std::process::ExitCode;
use std::time::Duration;

use roomcast_tests::{full_token, room, token, Client, Frame, Http, Worker};
use serde_json::json;
use tokio::time::{sleep, Instant};

const IDLE_MS: u64 = 1500;

#[macro_use]
mod scenarios;

fn main() -> ExitCode {
    scenarios::main(vec![group!(
        start;
        idle,
        heartbeat,
        expiry,
        refreshed,
        rate,
        trimmed,
    )
    .together()])
}

async fn start() -> Worker {
    Worker::start(&[
        ("IDLE_TIMEOUT_MS", "1500"),
        ("HEARTBEAT_MS", "500"),
        ("TOKEN_GRACE_MS", "300"),
        ("JWT_LEEWAY_SECS", "0"),
        ("RATE_PER_SEC", "2"),
        ("RATE_BURST", "3"),
        ("RATE_STRIKES", "2"),
        ("HISTORY_LIMIT", "5"),
    ])
    .await
}

async fn idle(worker: &Worker) {
    let mut c = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{}/ws?token={}",
        room("idle"),
        full_token("a")
    )))
    .await;
    assert_eq!(c.expect("welcome").await["heartbeat_ms"], 500);
    let started = Instant::now();
    assert_eq!(
        c.expect_close(Duration::from_millis(IDLE_MS + 8000)).await,
        4008
    );
    assert!(
        started.elapsed() >= Duration::from_millis(IDLE_MS - 100),
        "closed early: {:?}",
        started.elapsed()
    );
}

/// `ping` every heartbeat keeps a connection open well past the idle timeout,
/// although the auto-response never wakes the room.
async fn heartbeat(worker: &Worker) {
    let mut c = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{}/ws?token={}",
        room("beat"),
        full_token("b")
    )))
    .await;
    c.expect("welcome").await;
    let until = Instant::now() + Duration::from_millis(IDLE_MS * 3);
    while Instant::now() < until {
        c.send_text("ping").await;
        assert_eq!(c.next_text().await, "pong");
        sleep(Duration::from_millis(400)).await;
    }
    c.send_json(json!({"type": "publish", "data": "alive"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "alive");
}

async fn expiry(worker: &Worker) {
    let short = token("c", &["*"], &["*"], 3);
    let mut c =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{}/ws?token={short}", room("exp"))))
            .await;
    let exp = c.expect("welcome").await["exp"].as_u64().unwrap();
    // The token expires within a minute, so the notice comes at once, and once.
    assert_eq!(
        c.expect("token_expiring").await,
        json!({"type": "token_expiring", "exp": exp})
    );
    keep_alive_until_close(&mut c, 4001).await;
}

/// Pings (so the idle close cannot interfere) until the server closes with `code`.
async fn keep_alive_until_close(c: &mut Client, code: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no close {code} in time");
        c.send_text("ping").await;
        match c.next_frame_within(Duration::from_secs(5)).await {
            Some(Frame::Text(text)) if text == "pong" => sleep(Duration::from_millis(300)).await,
            Some(Frame::Closed(got)) => return assert_eq!(got, code),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn refreshed(worker: &Worker) {
    let mut c = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{}/ws?token={}",
        room("refresh"),
        token("d", &["*"], &["*"], 2)
    )))
    .await;
    c.expect("welcome").await;
    c.expect("token_expiring").await;
    c.send_json(json!({"type": "auth", "token": token("d", &["*"], &["*"], 3600)}))
        .await;
    c.expect("auth_ok").await;
    // Well past the old expiry plus grace, the connection is still served.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        c.send_text("ping").await;
        assert_eq!(c.next_text().await, "pong");
        sleep(Duration::from_millis(400)).await;
    }
}

async fn rate(worker: &Worker) {
    let mut c = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{}/ws?token={}",
        room("rate"),
        full_token("e")
    )))
    .await;
    c.expect("welcome").await;
    let (mut accepted, mut limited) = (0, 0);
    let started = Instant::now();
    let code = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never closed for rate"
        );
        c.send_json(json!({"type": "publish", "data": accepted + limited, "ref": "r"}))
            .await;
        let frame = match c.next_frame_within(Duration::from_secs(5)).await {
            Some(Frame::Text(text)) => serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            Some(Frame::Closed(code)) => break code,
            None => panic!("no answer to a publish"),
        };
        match frame["type"].as_str() {
            Some("message") => {
                accepted += 1;
                assert_eq!(c.expect("ack").await["type"], "ack");
            }
            Some("error") => {
                assert_eq!(
                    (frame["code"].as_str(), frame["ref"].as_str()),
                    (Some("rate_limited"), Some("r"))
                );
                limited += 1;
            }
            _ => panic!("unexpected frame {frame}"),
        }
        sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, 4029);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before RATE_STRIKES seconds: {:?}",
        started.elapsed()
    );
    // Burst of 3, then about 2 per second while over the limit.
    assert!((3..=12).contains(&accepted), "accepted {accepted}");
    assert!(limited > accepted, "limited {limited}, accepted {accepted}");
}

async fn trimmed(worker: &Worker) {
    let r = room("trim");
    let t = full_token("f");
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    // Eight messages, from three subjects: each has a burst of three.
    for (i, chunk) in (0..8).collect::<Vec<u64>>().chunks(3).enumerate() {
        let batch =
            json!({"messages": chunk.iter().map(|n| json!({"data": n})).collect::<Vec<_>>()});
        let publisher = full_token(&format!("trimmer-{i}"));
        assert_eq!(http.post(&url, &publisher, &batch.to_string()).await.0, 201);
    }
    let (_, page) = http.get(&url, Some(&t)).await;
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [4, 5, 6, 7, 8], "HISTORY_LIMIT keeps the newest 5");
    assert_eq!(page["oldest"], 4);
    let epoch = page["epoch"].as_str().unwrap();
    let base = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={t}&epoch={epoch}"));
    let mut gap = Client::connect(&format!("{base}&since=2")).await;
    assert_eq!(
        gap.expect("welcome").await["recovered"],
        false,
        "seq 3 was trimmed"
    );
    let mut fine = Client::connect(&format!("{base}&since=3")).await;
    assert_eq!(fine.expect("welcome").await["recovered"], true);
    for seq in 4..=8 {
        assert_eq!(fine.expect("message").await["seq"], seq);
    }
}
