//! End to end, a worker configured with a value that breaks what the rest
//! relies on (docs/protocol.md, "Configuration"): every request that needs
//! the configuration answers `500 internal` until it is fixed, and the log
//! names the variable. Nothing runs half-configured.

use roomcast_tests::{assert_error, full_token, room, Client, Http, Worker};

#[tokio::test]
async fn a_configuration_that_breaks_an_invariant_refuses_every_request() {
    // More than the runtime's largest WebSocket message.
    let worker = Worker::start(&[("MAX_MESSAGE_BYTES", "2000000")]).await;
    let http = Http::default();
    let r = room("misconfigured");
    let token = full_token("user");
    let messages = worker.url(&format!("/v1/rooms/{r}/messages"));
    assert_error(
        &http.post(&messages, &token, r#"{"data":1}"#).await,
        500,
        "internal",
    );
    assert_error(&http.get(&messages, Some(&token)).await, 500, "internal");
    let ws = worker.ws_url(&format!("/v1/rooms/{r}/ws?token={token}"));
    assert_eq!(Client::refused(&ws).await, 500);
    // The worker itself is up: only what needs the configuration refuses.
    assert_eq!(http.get(&worker.url("/healthz"), None).await.0, 200);
    let log = worker.service.log();
    assert!(
        log.contains("MAX_MESSAGE_BYTES"),
        "the log names the variable\n{}",
        worker.service.log_tail()
    );
}
