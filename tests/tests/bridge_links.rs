//! End to end, the worker's side of the bridge (docs/internals.md, "Bridge links"): the room
//! link's welcome and cursor, the replay of everything not from Kafka, live
//! relay, `bridge_ack`, supersession (4009), Kafka-origin publishes through
//! the batch API, history held for the bridge until it confirms, the
//! registry that assigns rooms to bridge instances by rendezvous hashing,
//! and on both kinds of link the token the bridge refreshes with `auth` and
//! the 4001 close when it does not.
//!
//! Each scenario is a test of its own; those that need the same worker
//! configuration share one `wrangler dev`, one scenario at a time
//! (`scenarios/mod.rs` runs them).

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::Duration;

use roomcast_protocol::assign::owner;
use roomcast_protocol::auth::expiry_close_ms;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_tests::{
    assert_error, bridge_token, full_token, room, Client, Frame, Http, Worker, SECRET, STEP,
};
use serde_json::{json, Value};
use tokio::time::Instant;

/// The token grace of the worker in the expiry scenarios (its leeway is 0).
const GRACE_MS: u64 = 500;
/// Lifetime of the tokens links open with there: long enough to connect and
/// refresh, short enough to wait out.
const SHORT_TTL_SECS: u64 = 4;
/// How late after a deadline the alarm's sweep may run.
const ALARM_LATENCY: Duration = Duration::from_millis(1500);
/// A well-formed W3C traceparent.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[macro_use]
mod scenarios;

fn main() -> ExitCode {
    scenarios::main(vec![
        group!(
            with_short_history;
            admission,
            outbox,
            held_until_confirmed,
            registry,
        ),
        group!(with_short_tokens; room_link_tokens, registry_link_tokens),
        group!(with_bridge_on; an_ack_is_reported_in_the_next_stats_frame),
    ])
}

async fn with_short_history() -> Worker {
    Worker::start(&[("HISTORY_LIMIT", "5")]).await
}

async fn with_short_tokens() -> Worker {
    let grace = GRACE_MS.to_string();
    Worker::start(&[("JWT_LEEWAY_SECS", "0"), ("TOKEN_GRACE_MS", &grace)]).await
}

async fn with_bridge_on() -> Worker {
    Worker::start(&[("BRIDGE", "on")]).await
}

async fn admission(worker: &Worker) {
    let http = &Http::default();
    let r = room("link");
    let url = worker.ws_url(&format!("/v1/rooms/{r}/bridge?instance=a"));
    assert_eq!(
        Client::refused(&format!("{url}&token={}", full_token("user"))).await,
        403
    );
    assert_eq!(Client::refused(&url).await, 401);
    let nameless = worker.ws_url(&format!("/v1/rooms/{r}/bridge?token={}", bridge_token()));
    assert_eq!(
        Client::refused(&nameless).await,
        400,
        "instance is required"
    );
    let plain = worker.url(&format!("/v1/rooms/{r}/bridge"));
    assert_error(
        &http.get(&plain, Some(&bridge_token())).await,
        426,
        "upgrade_required",
    );
}

/// The bridge's `pending` gauge comes from the link's `stats` frames: an
/// ack that empties the outbox moves no counter, and must still be told.
async fn an_ack_is_reported_in_the_next_stats_frame(worker: &Worker) {
    let http = Http::default();
    let r = room("acked");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let batch = json!({"messages": [{"data": 1}, {"data": 2}]}).to_string();
    assert_eq!(http.post(&url, &full_token("user"), &batch).await.0, 201);
    let mut link = Client::connect(&link_url(worker, &r, "a")).await;
    link.expect("welcome").await;
    let mut pending = None;
    let mut relayed = 0;
    while relayed < 2 || pending.is_none() {
        let frame = link.next_json().await;
        match frame["type"].as_str() {
            Some("message") => relayed += 1,
            Some("stats") => pending = frame["pending"].as_u64(),
            _ => panic!("unexpected frame {frame}"),
        }
    }
    assert_eq!(pending, Some(2));
    link.send_json(json!({"type": "bridge_ack", "seq": 2}))
        .await;
    // At most one stats interval (10 s) later.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Frame::Text(text)) = link.next_frame_within(left).await else {
            panic!("no stats frame after the ack within 15 s");
        };
        let frame: Value = serde_json::from_str(&text).expect("JSON");
        if frame["type"] == "stats" {
            assert_eq!(
                (frame["pending"].as_u64(), frame["cursor"].as_u64()),
                (Some(0), Some(2)),
                "{frame}"
            );
            break;
        }
    }
}

fn link_url(worker: &Worker, room: &str, instance: &str) -> String {
    worker.ws_url(&format!(
        "/v1/rooms/{room}/bridge?instance={instance}&token={}",
        bridge_token()
    ))
}

async fn outbox(worker: &Worker) {
    let http = &Http::default();
    let r = room("outbox");
    let user = full_token("user");
    let messages = worker.url(&format!("/v1/rooms/{r}/messages"));
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{r}/ws?token={user}"))).await;
    client.expect("welcome").await;
    client
        .send_json(json!({"type": "publish", "data": "from ws"}))
        .await;
    client.expect("message").await;
    client.expect("ack").await;
    assert_eq!(
        http.post(&messages, &user, r#"{"data":"from http"}"#)
            .await
            .0,
        201
    );
    client.expect("message").await;
    let inbound = json!({"messages": [{"data": "k1", "id": "kafka:in:0:1"}, {"data": "k2", "id": "kafka:in:0:2"}, {"data": "k1", "id": "kafka:in:0:1"}]});
    let (status, results) = http
        .post(&messages, &bridge_token(), &inbound.to_string())
        .await;
    assert_eq!(status, 201, "{results}");
    let dups: Vec<bool> = results["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["duplicate"].as_bool().unwrap())
        .collect();
    assert_eq!(dups, [false, false, true]);
    // Another bridge instance (another `sub`) re-publishing a record after a
    // takeover gets a duplicate, never a conflict: the bridge is one owner.
    let other_instance = mint_hs256(
        SECRET,
        &TokenSpec {
            sub: "bridge-b".into(),
            role: Some("bridge".into()),
            ttl_secs: 600,
            ..TokenSpec::default()
        },
        now_ms(),
    );
    let again = json!({"messages": [{"data": "k2", "id": "kafka:in:0:2"}]});
    let (status, results) = http
        .post(&messages, &other_instance, &again.to_string())
        .await;
    assert_eq!(
        (status, results["results"][0]["duplicate"].as_bool()),
        (201, Some(true)),
        "{results}"
    );
    for expected in ["k1", "k2"] {
        let m = client.expect("message").await;
        assert_eq!(
            (
                m["origin"].as_str(),
                m["sender"].as_str(),
                m["data"].as_str()
            ),
            (Some("kafka"), Some("bridge"), Some(expected))
        );
    }

    let mut link = Client::connect(&link_url(worker, &r, "a")).await;
    let welcome = link.expect("welcome").await;
    assert_eq!(
        (welcome["cursor"].as_u64(), welcome["head"].as_u64()),
        (Some(0), Some(4))
    );
    // Only what did not come from Kafka goes to Kafka.
    let replayed: Vec<Value> = vec![link.expect("message").await, link.expect("message").await];
    assert_eq!(
        replayed
            .iter()
            .map(|m| m["origin"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ws", "http"]
    );
    let stats = link.expect("stats").await;
    assert_eq!(
        (
            stats["room"].as_str(),
            stats["pending"].as_u64(),
            stats["cursor"].as_u64()
        ),
        (Some(r.as_str()), Some(2), Some(0))
    );
    assert_eq!(
        stats["messages_total"],
        json!({"ws": 1, "http": 1, "kafka": 2})
    );

    client
        .send_json(json!({"type": "publish", "data": "live"}))
        .await;
    let live = link.expect("message").await;
    assert_eq!(
        (live["seq"].as_u64(), live["data"].as_str()),
        (Some(5), Some("live"))
    );
    let from_kafka = |data: &str| json!({"messages": [{ "data": data }]}).to_string();
    assert_eq!(
        http.post(&messages, &bridge_token(), &from_kafka("k3"))
            .await
            .0,
        201
    );
    // The next message on the link is one published after k3 (seq 6):
    // k3, from Kafka, did not go back to the bridge.
    client
        .send_json(json!({"type": "publish", "data": "after k3"}))
        .await;
    let next = next_of(&mut link, "message").await;
    assert_eq!(
        (next["seq"].as_u64(), next["data"].as_str()),
        (Some(7), Some("after k3")),
        "a Kafka-origin message went back to the bridge: {next}"
    );
    assert_eq!(
        http.post(&messages, &bridge_token(), &from_kafka("k4"))
            .await
            .0,
        201
    );

    link.send_json(json!({"type": "bridge_ack", "seq": 7}))
        .await;
    link.send_text("nonsense").await;
    // Answered before any message: k4 (seq 8) was not sent either.
    assert_eq!(next_of(&mut link, "error").await["code"], "bad_format");
    let mut successor = Client::connect(&link_url(worker, &r, "b")).await;
    assert_eq!(link.expect_close(Duration::from_secs(10)).await, 4009);
    let welcome = successor.expect("welcome").await;
    // The ack of 7 also moved the cursor over 8, which came from Kafka and
    // is never relayed: nothing is pending.
    assert_eq!(
        (welcome["cursor"].as_u64(), welcome["head"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(
        successor.expect("stats").await["pending"],
        0,
        "nothing to replay after the cursor"
    );
}

async fn held_until_confirmed(worker: &Worker) {
    let http = &Http::default();
    let r = room("held");
    let user = full_token("user");
    let messages = worker.url(&format!("/v1/rooms/{r}/messages"));
    let mut link = Client::connect(&link_url(worker, &r, "a")).await;
    link.expect("welcome").await;
    link.expect("stats").await;
    let batch =
        json!({"messages": (1..=8).map(|n| json!({"data": n})).collect::<Vec<_>>()}).to_string();
    assert_eq!(http.post(&messages, &user, &batch).await.0, 201);
    for seq in 1..=8 {
        assert_eq!(link.expect("message").await["seq"], seq);
    }
    let (_, page) = http.get(&messages, Some(&user)).await;
    assert_eq!(
        page["oldest"], 1,
        "unconfirmed messages stay beyond HISTORY_LIMIT"
    );
    link.send_json(json!({"type": "bridge_ack", "seq": 8}))
        .await;
    // The room answers a frame sent after the ack once it has handled the
    // ack (`ping` would not do: the runtime answers it without the room).
    link.send_text("nonsense").await;
    assert_eq!(next_of(&mut link, "error").await["code"], "bad_format");
    assert_eq!(http.post(&messages, &user, r#"{"data":9}"#).await.0, 201);
    let (_, page) = http.get(&messages, Some(&user)).await;
    assert_eq!(
        (page["oldest"].as_u64(), page["head"].as_u64()),
        (Some(5), Some(9)),
        "confirmed messages trim to HISTORY_LIMIT"
    );
}

fn registry_url(worker: &Worker, instance: &str) -> String {
    worker.ws_url(&format!(
        "/v1/bridge?instance={instance}&token={}",
        bridge_token()
    ))
}

/// Reads a `room` frame off a registry link: the room announced.
fn announcement(frame: &Value) -> String {
    assert_eq!(frame["type"], "room", "{frame}");
    assert!(frame["pending"].is_u64(), "{frame}");
    frame["room"].as_str().unwrap().to_owned()
}

/// The rooms the registry announced to `link` before now: everything read
/// up to its answer to a frame sent now (it refuses it, `bad_format`), as
/// it handles a link's frames after everything it did before.
async fn announced(link: &mut Client) -> BTreeSet<String> {
    link.send_text("sentinel").await;
    let mut rooms = BTreeSet::new();
    loop {
        let frame = link.next_json().await;
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "bad_format", "{frame}");
            return rooms;
        }
        rooms.insert(announcement(&frame));
    }
}

async fn registry(worker: &Worker) {
    let http = &Http::default();
    assert_eq!(
        Client::refused(&worker.ws_url(&format!(
            "/v1/bridge?instance=x&token={}",
            full_token("user")
        )))
        .await,
        403
    );
    assert_eq!(
        Client::refused(&worker.ws_url(&format!("/v1/bridge?token={}", bridge_token()))).await,
        400
    );
    let user = full_token("user");
    let rooms: Vec<String> = (0..8).map(|_| room("reg")).collect();
    for r in &rooms {
        assert_eq!(
            http.post(
                &worker.url(&format!("/v1/rooms/{r}/messages")),
                &user,
                r#"{"data":1}"#
            )
            .await
            .0,
            201
        );
    }
    let ours = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .filter(|r| r.starts_with("reg."))
            .cloned()
            .collect()
    };
    let all: BTreeSet<String> = rooms.iter().cloned().collect();
    let owned_by = |instance: &str, instances: &[&str]| -> BTreeSet<String> {
        rooms
            .iter()
            .filter(|r| owner(r, instances) == Some(instance))
            .cloned()
            .collect()
    };

    let mut a = Client::connect(&registry_url(worker, "a")).await;
    assert_eq!(
        ours(&announced(&mut a).await),
        all,
        "a lone instance owns every room"
    );
    let mut b = Client::connect(&registry_url(worker, "b")).await;
    let for_b = ours(&announced(&mut b).await);
    assert_eq!(for_b, owned_by("b", &["a", "b"]));
    assert!(
        !for_b.is_empty() && for_b.len() < rooms.len(),
        "8 rooms should split: {for_b:?}"
    );
    let for_a = ours(&announced(&mut a).await);
    assert_eq!(
        for_a,
        owned_by("a", &["a", "b"]),
        "the join re-announced a's rooms to a, and only those"
    );

    let late = room("reg");
    assert_eq!(
        http.post(
            &worker.url(&format!("/v1/rooms/{late}/messages")),
            &user,
            r#"{"data":1}"#
        )
        .await
        .0,
        201
    );
    let (owner_link, other) = if owner(&late, &["a", "b"]) == Some("a") {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(announced(owner_link).await, BTreeSet::from([late.clone()]));
    assert!(announced(other).await.is_empty());

    b.close().await;
    // The registry hears of b's close on its own time: a gets b's rooms
    // (and the late one) within a bounded wait.
    let mut moved = owned_by("b", &["a", "b"]);
    moved.insert(late.clone());
    let mut after_leave = BTreeSet::new();
    while !after_leave.is_superset(&moved) {
        let Some(Frame::Text(text)) = a.next_frame_within(STEP).await else {
            panic!("b's rooms did not all move to a: {after_leave:?}")
        };
        after_leave.insert(announcement(&serde_json::from_str(&text).unwrap()));
    }

    let mut successor = Client::connect(&registry_url(worker, "a")).await;
    assert_eq!(a.expect_close(Duration::from_secs(10)).await, 4009);
    assert!(ours(&announced(&mut successor).await).is_superset(&all));
}

/// A bridge token valid for `ttl_secs`, and its `exp`.
fn short_bridge_token(ttl_secs: u64) -> (String, u64) {
    let now = now_ms();
    let spec = TokenSpec {
        sub: "bridge".into(),
        role: Some("bridge".into()),
        ttl_secs,
        ..TokenSpec::default()
    };
    (mint_hs256(SECRET, &spec, now), now / 1000 + ttl_secs)
}

/// When the worker stops honouring a token that expires at `exp`.
fn deadline(exp: u64) -> Instant {
    let close_ms = expiry_close_ms(exp, 0, GRACE_MS);
    Instant::now() + Duration::from_millis(close_ms.saturating_sub(now_ms()))
}

/// The next frame of `kind`, past the frames links get unasked (`stats`,
/// `room`); panics on a close.
async fn next_of(link: &mut Client, kind: &str) -> Value {
    loop {
        let frame = link.next_json().await;
        if frame["type"] == kind {
            return frame;
        }
        assert!(
            matches!(frame["type"].as_str(), Some("stats" | "room")),
            "expected {kind}, got {frame}"
        );
    }
}

/// Reads `link` until `until`, failing if it closes meanwhile.
async fn stays_open_until(link: &mut Client, until: Instant) {
    while let Some(frame) = link
        .next_frame_within(until.saturating_duration_since(Instant::now()))
        .await
    {
        assert!(
            matches!(frame, Frame::Text(_)),
            "the link closed: {frame:?}"
        );
    }
}

/// Sends tokens a link must refuse, each answered `bad_token`.
async fn refused_auths(link: &mut Client) {
    for token in ["garbage".to_owned(), full_token("user")] {
        link.send_json(json!({"type": "auth", "token": token}))
            .await;
        let error = next_of(link, "error").await;
        assert_eq!(error["code"], "bad_token", "{error}");
    }
}

/// Refreshes `link` with a token valid for an hour.
async fn refresh(link: &mut Client) {
    let (fresh, exp) = short_bridge_token(3600);
    link.send_json(json!({"type": "auth", "token": fresh}))
        .await;
    assert_eq!(next_of(link, "auth_ok").await["exp"], exp);
}

/// Waits out a link that was not refreshed: closed with 4001, not before
/// its token's deadline.
async fn expires(link: &mut Client, exp: u64) {
    let due = deadline(exp);
    let code = link
        .expect_close(due.saturating_duration_since(Instant::now()) + ALARM_LATENCY * 4)
        .await;
    assert_eq!(code, 4001);
    assert!(
        Instant::now() + Duration::from_millis(100) >= due,
        "closed before its token expired"
    );
}

async fn room_link_tokens(worker: &Worker) {
    let http = &Http::default();
    let (kept_room, lapsed_room) = (room("kept"), room("lapsed"));
    let user = full_token("user");
    let kept_messages = worker.url(&format!("/v1/rooms/{kept_room}/messages"));
    let before = json!({"data": "before", "trace": TRACE}).to_string();
    assert_eq!(http.post(&kept_messages, &user, &before).await.0, 201);

    let (first, first_exp) = short_bridge_token(SHORT_TTL_SECS);
    let link = |r: &str, token: &str| {
        worker.ws_url(&format!("/v1/rooms/{r}/bridge?instance=a&token={token}"))
    };
    let mut kept = Client::connect(&link(&kept_room, &first)).await;
    assert_eq!(kept.expect("welcome").await["exp"], first_exp);
    let replayed = kept.expect("message").await;
    assert_eq!(replayed["trace"], TRACE, "the trace is replayed to Kafka");
    let (second, lapsed_exp) = short_bridge_token(SHORT_TTL_SECS);
    let mut lapsed = Client::connect(&link(&lapsed_room, &second)).await;
    lapsed.expect("welcome").await;

    refused_auths(&mut kept).await;
    refresh(&mut kept).await;
    // A refused token leaves the old one in force, until it expires.
    refused_auths(&mut lapsed).await;
    expires(&mut lapsed, lapsed_exp).await;
    stays_open_until(&mut kept, deadline(first_exp) + ALARM_LATENCY).await;

    let live = http
        .raw()
        .post(&kept_messages)
        .bearer_auth(&user)
        .header("traceparent", TRACE)
        .body(r#"{"data":"after"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 201);
    let relayed = next_of(&mut kept, "message").await;
    assert_eq!(
        (relayed["data"].as_str(), relayed["trace"].as_str()),
        (Some("after"), Some(TRACE)),
        "the refreshed link relays, trace included"
    );
}

async fn registry_link_tokens(worker: &Worker) {
    let http = &Http::default();
    // A room that, of instances a and b, b relays: it moves to a when b's
    // link expires.
    let moved = std::iter::repeat_with(|| room("moved"))
        .find(|r| owner(r, &["a", "b"]) == Some("b"))
        .unwrap();
    let messages = worker.url(&format!("/v1/rooms/{moved}/messages"));
    assert_eq!(
        http.post(&messages, &full_token("user"), r#"{"data":1}"#)
            .await
            .0,
        201
    );
    let registry = |instance: &str, token: &str| {
        worker.ws_url(&format!("/v1/bridge?instance={instance}&token={token}"))
    };
    let (first, first_exp) = short_bridge_token(SHORT_TTL_SECS);
    let mut kept = Client::connect(&registry("a", &first)).await;
    let (second, lapsed_exp) = short_bridge_token(SHORT_TTL_SECS);
    let mut lapsed = Client::connect(&registry("b", &second)).await;

    refused_auths(&mut kept).await;
    refresh(&mut kept).await;
    kept.send_json(json!({"type": "bridge_ack", "seq": 1}))
        .await;
    assert_eq!(
        next_of(&mut kept, "error").await["code"],
        "bad_format",
        "acks belong on room links"
    );
    refused_auths(&mut lapsed).await;
    expires(&mut lapsed, lapsed_exp).await;
    // The room frames before the error came from the joins; this one comes
    // from the rebalance after b's link closed.
    while next_of(&mut kept, "room").await["room"] != moved.as_str() {}
    stays_open_until(&mut kept, deadline(first_exp) + ALARM_LATENCY).await;
    kept.send_text("ping").await;
    assert_eq!(kept.next_text().await, "pong");
}
