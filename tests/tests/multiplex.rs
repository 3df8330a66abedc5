//! End to end: several rooms on one connection (docs/protocol.md,
//! "Several rooms on one connection"). A client on `GET /v1/ws` is placed
//! on a hub; it subscribes to rooms over its socket and gets each room's
//! `subscribed`, replay and messages, publishes naming the room, and is
//! told, room by room, what it may not do. A fresh token that no longer
//! allows a room takes the connection out of that room only; a token's
//! `channels` subscribe it when it connects.

use std::collections::HashMap;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use roomcast_tests::{full_token, room, token, Client, Http, Worker, SECRET};
use serde_json::{json, Value};

/// Budgets big enough that only multiplexing is under test.
const BUDGETS: [(&str, &str); 2] = [("RATE_PER_SEC", "1000"), ("RATE_BURST", "1000")];

/// Opens a multiplexed connection with `token`; the client and its
/// `connected` frame.
async fn connect(worker: &Worker, token: &str) -> (Client, Value) {
    let mut client = Client::connect(&worker.ws_url(&format!("/v1/ws?token={token}"))).await;
    let connected = client.expect("connected").await;
    (client, connected)
}

/// The next `n` frames, which must be `subscribed`, by room.
async fn subscribed(client: &mut Client, n: usize) -> HashMap<String, Value> {
    let mut by_room = HashMap::new();
    for _ in 0..n {
        let frame = client.expect("subscribed").await;
        let room = frame["room"].as_str().expect("room").to_owned();
        by_room.insert(room, frame);
    }
    by_room
}

/// Publishes `data` into `room` over HTTP; its seq.
async fn post(worker: &Worker, room: &str, data: Value) -> u64 {
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    let body = json!({ "data": data }).to_string();
    let (status, answer) = Http::default()
        .post(&url, &full_token("publisher"), &body)
        .await;
    assert_eq!(status, 201, "{answer}");
    answer["seq"].as_u64().expect("seq")
}

#[tokio::test]
async fn one_connection_hears_and_publishes_in_several_rooms() {
    let worker = Worker::start(&BUDGETS).await;
    let (a, b) = (room("mux.a"), room("mux.b"));
    let (mut client, connected) = connect(&worker, &full_token("u")).await;
    assert_eq!(connected["max_rooms"], 128, "{connected}");
    let conn_id = connected["conn_id"].as_str().expect("conn_id").to_owned();

    client
        .send_json(json!({"type":"subscribe","rooms":[{"room":a},{"room":b}],"ref":"s"}))
        .await;
    let welcomes = subscribed(&mut client, 2).await;
    for r in [&a, &b] {
        let welcome = &welcomes[r.as_str()];
        assert_eq!(welcome["conn_id"], conn_id.as_str(), "{welcome}");
        assert_eq!(welcome["head"], 0, "{welcome}");
    }

    let seq = post(&worker, &a, json!("from http")).await;
    let message = client.expect("message").await;
    assert_eq!(
        (message["room"].as_str(), message["seq"].as_u64()),
        (Some(a.as_str()), Some(seq)),
        "{message}"
    );

    client
        .send_json(json!({"type":"publish","room":b,"data":"from ws","ref":"p1"}))
        .await;
    let message = client.expect("message").await;
    assert_eq!(message["room"], b.as_str(), "{message}");
    assert_eq!(message["data"], "from ws", "{message}");
    let ack = client.expect("ack").await;
    assert_eq!(
        (
            ack["room"].as_str(),
            ack["ref"].as_str(),
            ack["seq"].as_u64()
        ),
        (Some(b.as_str()), Some("p1"), message["seq"].as_u64()),
        "the publisher hears its message before its ack: {ack}"
    );

    // A second connection in room `a` only hears `a`.
    let (mut other, _) = connect(&worker, &full_token("v")).await;
    other.send_json(json!({"type":"subscribe","room":a})).await;
    subscribed(&mut other, 1).await;
    post(&worker, &b, json!("not for other")).await;
    let seq = post(&worker, &a, json!("for both")).await;
    let heard = other.expect("message").await;
    assert_eq!(
        (heard["room"].as_str(), heard["seq"].as_u64()),
        (Some(a.as_str()), Some(seq))
    );
    let mut rooms = vec![
        client.expect("message").await["room"].to_string(),
        client.expect("message").await["room"].to_string(),
    ];
    rooms.sort();
    let mut expected = vec![json!(a).to_string(), json!(b).to_string()];
    expected.sort();
    assert_eq!(rooms, expected, "the first connection hears both rooms");
}

#[tokio::test]
async fn a_subscribe_with_since_replays_what_the_room_stored() {
    let worker = Worker::start(&BUDGETS).await;
    let r = room("mux.resume");
    let mut seqs = Vec::new();
    for n in 0..3 {
        seqs.push(post(&worker, &r, json!(n)).await);
    }
    let (mut client, _) = connect(&worker, &full_token("u")).await;
    client.send_json(json!({"type":"subscribe","room":r})).await;
    let welcome = client.expect("subscribed").await;
    assert_eq!(welcome["head"].as_u64(), Some(seqs[2]), "{welcome}");
    let epoch = welcome["epoch"].as_str().expect("epoch").to_owned();
    client
        .send_json(json!({"type":"unsubscribe","room":r}))
        .await;
    client.expect("unsubscribed").await;

    // A resume names the room's epoch: then what came after `since` is
    // replayed before anything else.
    client
        .send_json(json!({"type":"subscribe","room":r,"since":seqs[0],"epoch":epoch}))
        .await;
    let welcome = client.expect("subscribed").await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    for seq in &seqs[1..] {
        let message = client.expect("message").await;
        assert_eq!(
            (message["room"].as_str(), message["seq"].as_u64()),
            (Some(r.as_str()), Some(*seq)),
            "{message}"
        );
    }

    // The same in the list form, on another connection.
    let (mut again, _) = connect(&worker, &full_token("u")).await;
    again
        .send_json(json!({"type":"subscribe","rooms":[{"room":r,"since":seqs[1],"epoch":epoch}]}))
        .await;
    let welcome = again.expect("subscribed").await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(again.expect("message").await["seq"].as_u64(), Some(seqs[2]));
}

#[tokio::test]
async fn refusals_name_their_room_and_leaving_is_answered() {
    let vars = [BUDGETS[0], BUDGETS[1], ("MAX_ROOMS_PER_CONNECTION", "2")];
    let worker = Worker::start(&vars).await;
    let (a, b, c) = (room("mux.a"), room("mux.b"), room("mux.c"));
    let allowed = token("u", &["mux.*"], &["mux.*"], 3600);
    let (mut client, connected) = connect(&worker, &allowed).await;
    assert_eq!(connected["max_rooms"], 2, "{connected}");

    client
        .send_json(json!({"type":"publish","room":a,"data":1,"ref":"early"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (
            error["code"].as_str(),
            error["room"].as_str(),
            error["ref"].as_str()
        ),
        (Some("not_subscribed"), Some(a.as_str()), Some("early")),
        "{error}"
    );

    client
        .send_json(json!({"type":"subscribe","room":"elsewhere","ref":"f"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("forbidden"), Some("elsewhere")),
        "{error}"
    );

    client
        .send_json(json!({"type":"subscribe","rooms":[{"room":a},{"room":b}]}))
        .await;
    subscribed(&mut client, 2).await;
    client
        .send_json(json!({"type":"subscribe","room":c,"ref":"third"}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("too_many_rooms"), Some(c.as_str())),
        "{error}"
    );
    client.send_json(json!({"type":"subscribe","room":a})).await;
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["room"].as_str()),
        (Some("bad_request"), Some(a.as_str())),
        "subscribing twice: {error}"
    );

    client
        .send_json(json!({"type":"unsubscribe","room":a,"ref":"u"}))
        .await;
    let left = client.expect("unsubscribed").await;
    assert_eq!(
        (left["room"].as_str(), left["reason"].as_str()),
        (Some(a.as_str()), Some("client")),
        "{left}"
    );
    // Out of `a`: its messages no longer come, `b`'s still do.
    post(&worker, &a, json!("gone")).await;
    let seq = post(&worker, &b, json!("still")).await;
    let message = client.expect("message").await;
    assert_eq!(
        (message["room"].as_str(), message["seq"].as_u64()),
        (Some(b.as_str()), Some(seq))
    );
    // And its place is free again.
    client.send_json(json!({"type":"subscribe","room":c})).await;
    subscribed(&mut client, 1).await;
}

#[tokio::test]
async fn a_token_without_a_room_takes_the_connection_out_of_it_only() {
    let worker = Worker::start(&BUDGETS).await;
    let (keep, lose) = (room("mux.keep"), room("mux.lose"));
    let rooms = [keep.as_str(), lose.as_str()];
    let both = token("u", &rooms, &rooms, 3600);
    let (mut client, _) = connect(&worker, &both).await;
    client
        .send_json(json!({"type":"subscribe","rooms":[{"room":keep},{"room":lose}]}))
        .await;
    subscribed(&mut client, 2).await;

    let fewer = token("u", &[keep.as_str()], &[keep.as_str()], 3600);
    client.send_json(json!({"type":"auth","token":fewer})).await;
    client.expect("auth_ok").await;
    let left = client.expect("unsubscribed").await;
    assert_eq!(
        (left["room"].as_str(), left["reason"].as_str()),
        (Some(lose.as_str()), Some("forbidden")),
        "{left}"
    );
    post(&worker, &lose, json!("not any more")).await;
    let seq = post(&worker, &keep, json!("still")).await;
    let message = client.expect("message").await;
    assert_eq!(
        (message["room"].as_str(), message["seq"].as_u64()),
        (Some(keep.as_str()), Some(seq))
    );
}

#[tokio::test]
async fn a_tokens_channels_are_subscribed_when_it_connects() {
    let worker = Worker::start(&BUDGETS).await;
    let (first, second) = (room("mux.ch"), room("mux.ch"));
    let spec = TokenSpec {
        sub: "u".into(),
        channels: vec![first.clone(), second.clone()],
        ttl_secs: 3600,
        ..TokenSpec::default()
    };
    let token = mint_hs256(SECRET, &spec, now_ms());
    let (mut client, _) = connect(&worker, &token).await;
    let welcomes = subscribed(&mut client, 2).await;
    assert!(welcomes.contains_key(&first) && welcomes.contains_key(&second));
    let seq = post(&worker, &second, json!("pushed")).await;
    let message = client.expect("message").await;
    assert_eq!(
        (message["room"].as_str(), message["seq"].as_u64()),
        (Some(second.as_str()), Some(seq))
    );
}
