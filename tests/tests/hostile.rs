//! End to end, a room against clients that lie: ids that belong to someone
//! else or to the bridge, budgets drawn on every path (HTTP batches,
//! reconnects, `auth` frames), too many connections, bodies too large to
//! read, and subjects in any script.

use std::time::Duration;

use futures_util::stream;
use roomcast_tests::{assert_error, full_token, room, Client, Frame, Http, Worker, STEP};
use serde_json::{json, Value};
use tokio::time::Instant;

/// A budget small enough to run out of in a test: a burst of 5, one more a
/// second.
const TIGHT: &[(&str, &str)] = &[("RATE_PER_SEC", "1"), ("RATE_BURST", "5")];

async fn joined(worker: &Worker, room: &str, token: &str) -> Client {
    let mut client =
        Client::connect(&worker.ws_url(&format!("/v1/rooms/{room}/ws?token={token}"))).await;
    client.expect("welcome").await;
    client
}

/// The next frame that is not a broadcast `message`.
async fn answer(client: &mut Client) -> Value {
    loop {
        let frame = client.next_json().await;
        if frame["type"] != "message" {
            return frame;
        }
    }
}

/// Whether the room acked a publish. A refusal is a `rate_limited` error,
/// or the 4029 close a subject gets once it has been over its limit for
/// `RATE_STRIKES` seconds (a slow machine stretches a loop past that).
async fn acked(client: &mut Client) -> bool {
    loop {
        match client
            .next_frame_within(STEP)
            .await
            .expect("no answer in time")
        {
            Frame::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame["type"].as_str() {
                    Some("message") => continue,
                    Some("ack") => return true,
                    _ => {
                        assert_eq!(frame["code"], "rate_limited", "{frame}");
                        return false;
                    }
                }
            }
            Frame::Closed(code) => {
                assert_eq!(code, 4029, "closed instead of an answer");
                return false;
            }
        }
    }
}

#[tokio::test]
async fn ids_belong_to_their_first_publisher() {
    let worker = Worker::start(&[]).await;
    let http = Http::default();
    let r = room("ids");
    let mut alice = joined(&worker, &r, &full_token("alice")).await;
    let mut mallory = joined(&worker, &r, &full_token("mallory")).await;

    // Mallory claims the id first; Alice's message with it is refused with
    // a clear error, never acknowledged as Mallory's.
    mallory
        .send_json(json!({"type": "publish", "data": "squat", "id": "order-42", "ref": "m"}))
        .await;
    let ack = answer(&mut mallory).await;
    assert_eq!(
        (ack["type"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );
    alice
        .send_json(json!({"type": "publish", "data": "mine", "id": "order-42", "ref": "a"}))
        .await;
    let refused = answer(&mut alice).await;
    assert_eq!(
        (
            refused["type"].as_str(),
            refused["code"].as_str(),
            refused["ref"].as_str()
        ),
        (Some("error"), Some("id_conflict"), Some("a")),
        "{refused}"
    );
    // Over HTTP too, and Alice's retry under a fresh id goes through.
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let body = json!({"data": "mine", "id": "order-42"}).to_string();
    assert_error(
        &http.post(&url, &full_token("alice"), &body).await,
        409,
        "id_conflict",
    );
    let (status, receipt) = http
        .post(
            &url,
            &full_token("alice"),
            &json!({"data": "mine", "id": "order-42b"}).to_string(),
        )
        .await;
    assert_eq!(
        (status, receipt["seq"].as_u64()),
        (201, Some(2)),
        "{receipt}"
    );
    // Mallory's own retry is a duplicate of its first message.
    mallory
        .send_json(json!({"type": "publish", "data": "squat", "id": "order-42"}))
        .await;
    let again = answer(&mut mallory).await;
    assert_eq!(
        (again["seq"].as_u64(), again["duplicate"].as_bool()),
        (Some(1), Some(true))
    );
    // Ids of the form the bridge gives Kafka records are the bridge's.
    alice
        .send_json(json!({"type": "publish", "data": "x", "id": "kafka:roomcast.inbound:0:7"}))
        .await;
    let reserved = answer(&mut alice).await;
    assert_eq!(reserved["code"], "forbidden", "{reserved}");
    let body = json!({"messages": [{"data": 1, "id": "kafka:roomcast.inbound:0:8"}]}).to_string();
    assert_error(
        &http.post(&url, &full_token("alice"), &body).await,
        403,
        "forbidden",
    );

    // A server-assigned id is its message's too: nobody else can reuse it.
    alice
        .send_json(json!({"type": "publish", "data": "no id", "ref": "n"}))
        .await;
    let assigned = answer(&mut alice).await["id"].as_str().unwrap().to_owned();
    mallory
        .send_json(json!({"type": "publish", "data": "copy", "id": assigned}))
        .await;
    assert_eq!(answer(&mut mallory).await["code"], "id_conflict");

    // History holds each id once.
    let (_, page) = http.get(&url, Some(&full_token("alice"))).await;
    let ids: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["order-42", "order-42b", assigned.as_str()]);
}

#[tokio::test]
async fn every_path_draws_from_the_subjects_budget() {
    let worker = Worker::start(TIGHT).await;
    let http = Http::default();
    let r = room("budget");
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    let token = full_token("spender");

    // A batch takes one token per message; the next batch is over.
    let batch = |n: usize| {
        json!({"messages": (0..n).map(|i| json!({"data": i})).collect::<Vec<_>>()}).to_string()
    };
    assert_eq!(http.post(&url, &token, &batch(4)).await.0, 201);
    let response = http
        .raw()
        .post(&url)
        .bearer_auth(&token)
        .body(batch(3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_error(&http.post(&url, &token, &batch(6)).await, 413, "too_large");

    // The budget is the subject's: reconnecting does not refill it.
    let started = Instant::now();
    let mut accepted = 0;
    for _ in 0..50 {
        let mut client = joined(&worker, &r, &token).await;
        client
            .send_json(json!({"type": "publish", "data": "again"}))
            .await;
        if acked(&mut client).await {
            accepted += 1;
        }
        client.close().await;
    }
    let refill = started.elapsed().as_secs() + 2;
    assert!(
        accepted <= refill,
        "{accepted} publishes accepted over 50 reconnects in {:?}",
        started.elapsed()
    );

    // `auth` frames cost a token too.
    let mut client = joined(&worker, &r, &full_token("refresher")).await;
    for _ in 0..10 {
        client
            .send_json(json!({"type": "auth", "token": full_token("refresher")}))
            .await;
    }
    let mut limited = 0;
    for _ in 0..10 {
        let frame = answer(&mut client).await;
        if frame["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 4, "{limited} of 10 auth frames limited");
}

#[tokio::test]
async fn a_subject_holds_at_most_sixteen_connections() {
    let worker = Worker::start(&[]).await;
    let r = room("conns");
    let token = full_token("hoarder");
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(joined(&worker, &r, &token).await);
    }
    let url = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"));
    match Client::connect_with(&url, &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 429);
            assert_eq!(
                response.headers()["x-roomcast-error"],
                "too_many_connections"
            );
        }
        Err(other) => panic!("refused without an HTTP answer: {other}"),
        Ok(_) => panic!("the 17th connection was accepted"),
    }
    // Another subject is not affected, and a closed connection frees a place.
    joined(&worker, &r, &full_token("other")).await;
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + STEP;
    loop {
        match Client::connect_with(&url, &[]).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no place freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_refused_unread() {
    let worker = Worker::start(&[]).await;
    let http = Http::default();
    let url = worker.url(&format!("/v1/rooms/{}/messages", room("body")));
    let token = full_token("big");
    let five_mib = format!("{{\"data\":\"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let (status, body) = http.post(&url, &token, &five_mib).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "too_large");
    // Chunked, with no length to refuse it by: cut off while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![b' '; 1024 * 1024 + 1])).collect();
    let response = http
        .raw()
        .post(&url)
        .bearer_auth(&token)
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
}

#[tokio::test]
async fn subjects_in_any_script_join_and_publish() {
    let worker = Worker::start(&[]).await;
    let r = room("unicode");
    let mut client = joined(&worker, &r, &full_token("Łukasz-東京")).await;
    client
        .send_json(json!({"type": "publish", "data": "cześć"}))
        .await;
    let message = client.expect("message").await;
    assert_eq!(message["sender"], "Łukasz-東京");
    assert_eq!(client.expect("ack").await["seq"], 1);
    let (status, page) = Http::default()
        .get(
            &worker.url(&format!("/v1/rooms/{r}/messages")),
            Some(&full_token("Łukasz-東京")),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["sender"], "Łukasz-東京");
}
