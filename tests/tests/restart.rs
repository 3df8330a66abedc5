//! End to end: a room's history, sequence and epoch live in Durable Object
//! storage, so they survive a restart of the whole runtime (`wrangler dev`
//! stopped and started again on the same `--persist-to` directory), and so
//! do its counters and its record of the Kafka records it stored.

use roomcast_tests::{bridge_token, full_token, room, Client, Http, Worker};
use serde_json::{json, Value};

#[tokio::test]
async fn state_survives_a_restart() {
    let t = full_token("restart");
    let http = Http::default();
    let mut first = Worker::start(&[]).await;
    let url = first.url("/v1/rooms/durable/messages");
    let batch = json!({"messages": [{"data": 1}, {"data": 2, "id": "k"}, {"data": 3}]}).to_string();
    assert_eq!(http.post(&url, &t, &batch).await.0, 201);
    let (_, before) = http.get(&url, Some(&t)).await;
    first.stop();

    let second = Worker::start_in(first.persist.clone(), &[]).await;
    let url = second.url("/v1/rooms/durable/messages");
    let (_, after) = http.get(&url, Some(&t)).await;
    assert_eq!(after["epoch"], before["epoch"]);
    assert_eq!(after["head"], 3);
    assert_eq!(after["messages"], before["messages"]);
    let (status, dup) = http.post(&url, &t, r#"{"data":2,"id":"k"}"#).await;
    assert_eq!(
        (status, dup["seq"].as_u64(), dup["duplicate"].as_bool()),
        (201, Some(2), Some(true)),
        "idempotency keys survive too"
    );

    let epoch = before["epoch"].as_str().unwrap();
    let mut c = Client::connect(&second.ws_url(&format!(
        "/v1/rooms/durable/ws?token={t}&since=1&epoch={epoch}"
    )))
    .await;
    let welcome = c.expect("welcome").await;
    assert_eq!(
        (welcome["recovered"].as_bool(), welcome["head"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(c.expect("message").await["seq"], 2);
    assert_eq!(c.expect("message").await["seq"], 3);
    c.send_json(json!({"type": "publish", "data": 4})).await;
    assert_eq!(c.expect("message").await["seq"], 4);
}

#[tokio::test]
async fn counting_goes_on_from_the_stored_counters() {
    let http = Http::default();
    let mut first = Worker::start(&[]).await;
    let r = room("restart-counted");
    let url = first.url(&format!("/v1/rooms/{r}/messages"));
    let user = full_token("user");
    // The room's first event: its counters are stored when it ends (later
    // ones within 10 s may be lost to the kill, as the contract allows).
    let batch = json!({"messages": [{"data": 1}, {"data": 2}, {"data": 3}]}).to_string();
    assert_eq!(http.post(&url, &user, &batch).await.0, 201);
    first.stop();

    let second = Worker::start_in(first.persist.clone(), &[]).await;
    let url = second.url(&format!("/v1/rooms/{r}/messages"));
    assert_eq!(http.post(&url, &user, r#"{"data":"after"}"#).await.0, 201);
    let after = second.stats(&r).await;
    assert_eq!(after["head"], 4, "{after}");
    assert_eq!(
        after["messages_total"]["http"], 4,
        "the wake's first publish counts on from what was stored: {after}"
    );
}

#[tokio::test]
async fn kafka_records_consumed_again_after_a_restart_are_duplicates() {
    let http = Http::default();
    // A ring of 2: the records' ids leave the history before the restart.
    let vars = [("HISTORY_LIMIT", "2")];
    let mut first = Worker::start(&vars).await;
    let r = room("restart-offsets");
    let url = first.url(&format!("/v1/rooms/{r}/messages"));
    let records = |partition: i32, offsets: std::ops::Range<i64>| {
        let messages: Vec<Value> = offsets
            .map(|o| {
                json!({
                    "data": o,
                    "id": format!("kafka:in:{partition}:{o}"),
                    "kafka": {"topic": "in", "partition": partition, "offset": o}
                })
            })
            .collect();
        json!({ "messages": messages }).to_string()
    };
    for (partition, offsets) in [(3, 10..13), (4, 20..22)] {
        let (status, stored) = http
            .post(&url, &bridge_token(), &records(partition, offsets))
            .await;
        assert_eq!(status, 201, "{stored}");
    }
    first.stop();

    let second = Worker::start_in(first.persist.clone(), &vars).await;
    let url = second.url(&format!("/v1/rooms/{r}/messages"));
    // The bridge crashed before committing: Kafka hands it the same
    // records again, long after their ids left the room's history.
    let (status, again) = http.post(&url, &bridge_token(), &records(3, 10..14)).await;
    assert_eq!(status, 201, "{again}");
    let duplicates: Vec<bool> = again["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["duplicate"].as_bool().expect("duplicate"))
        .collect();
    assert_eq!(duplicates, [true, true, true, false], "{again}");
    assert_eq!(second.stats(&r).await["head"], 6);
}
