//! `QUERY_TOKENS` (docs/protocol.md, "Token sources"), against the real
//! worker: with `off`, a token in `?token=` is refused with `401
//! unauthorized` naming the header and the subprotocol to use instead,
//! even beside a header token, while those two still admit; a value other
//! than `on`/`off` is a configuration error that names the variable.

use std::time::Duration;

use roomcast_tests::{assert_error, full_token, room, Client, Http, Worker};
use tokio::time::{sleep, Instant};

#[tokio::test]
async fn query_tokens_off_refuses_tokens_in_urls() {
    let worker = Worker::start(&[("QUERY_TOKENS", "off")]).await;
    let http = Http::default();
    let t = full_token("careful");
    let r = room("qt");

    let history = worker.url(&format!("/v1/rooms/{r}/messages"));
    let in_url = http.get(&format!("{history}?token={t}"), None).await;
    assert_error(&in_url, 401, "unauthorized");
    let message = in_url.1["error"]["message"].as_str().unwrap_or_default();
    for hint in ["QUERY_TOKENS", "Authorization: Bearer", "bearer.<jwt>"] {
        assert!(message.contains(hint), "{hint} in {message}");
    }
    assert_error(
        &http.get(&format!("{history}?token={t}"), Some(&t)).await,
        401,
        "unauthorized",
    );
    assert_eq!(http.get(&history, Some(&t)).await.0, 200);

    let ws = worker.ws_url(&format!("/v1/rooms/{r}/ws"));
    assert_eq!(Client::refused(&format!("{ws}?token={t}")).await, 401);
    let offer = format!("roomcast.v1, bearer.{t}");
    assert_eq!(
        Client::refused_with(
            &format!("{ws}?token={t}"),
            &[("sec-websocket-protocol", &offer)]
        )
        .await,
        401,
        "refused even beside a subprotocol token"
    );
    let mut by_protocol = Client::connect_with(&ws, &[("sec-websocket-protocol", &offer)])
        .await
        .expect("the subprotocol still admits");
    by_protocol.expect("welcome").await;
    let bearer = format!("Bearer {t}");
    let mut by_header = Client::connect_with(&ws, &[("authorization", &bearer)])
        .await
        .expect("the header still admits");
    by_header.expect("welcome").await;
}

#[tokio::test]
async fn query_tokens_other_than_on_or_off_is_a_configuration_error() {
    let worker = Worker::start(&[("QUERY_TOKENS", "sometimes")]).await;
    let http = Http::default();
    let t = full_token("anyone");
    let url = worker.url(&format!("/v1/rooms/{}/messages", room("qt.bad")));
    assert_error(&http.get(&url, Some(&t)).await, 500, "internal");
    // The reason is in the worker's log, which wrangler writes as it comes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker
        .service
        .log()
        .contains("configuration variable QUERY_TOKENS")
    {
        assert!(
            Instant::now() < deadline,
            "no log line names QUERY_TOKENS\n{}",
            worker.service.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    }
}
