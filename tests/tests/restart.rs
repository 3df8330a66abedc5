//! End to end: a room's history, sequence and epoch live in Durable Object
//! storage, so they survive a restart of the whole runtime (`wrangler dev`
//! stopped and started again on the same `--persist-to` directory).

use roomcast_tests::{full_token, Client, Http, Worker};
use serde_json::json;

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
