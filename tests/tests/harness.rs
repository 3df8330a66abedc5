//! The harness's own fixtures do what the suites rely on: Kafka behind the
//! TLS terminator speaks TLS only and verifies against the test CA; the
//! fault proxy fails exactly the batch POSTs of the rooms it was given and
//! forwards everything else, WebSockets included; a bridge started without
//! waiting can be watched as it exits; the worker starts once, without the
//! rebuild and restart that wrangler's build step makes.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use roomcast_tests::fault_proxy::INJECTED;
use roomcast_tests::{
    full_token, room, BridgeProcess, Broker, CaFile, Client, FaultProxy, Http, Worker, STEP,
};
use serde_json::{json, Value};
use tokio::time::timeout;

/// A client configuration for `broker` with exactly `properties` besides
/// the bootstrap address.
fn client(broker: &Broker, properties: Vec<(String, String)>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &broker.address);
    for (name, value) in properties {
        config.set(name, value);
    }
    config
}

/// Whether a client with exactly `properties` gets the cluster's metadata
/// from `broker` within a few seconds.
async fn metadata_with(broker: &Broker, properties: Vec<(String, String)>) -> bool {
    let consumer: BaseConsumer = client(broker, properties)
        .create()
        .expect("a metadata client");
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok()
    })
    .await
    .expect("the metadata request ran")
}

#[tokio::test]
async fn kafka_over_tls_is_tls_only() {
    let broker = Broker::start_tls().await;
    let topic = room("harness.tls");

    // Through the terminator, with the test CA: create a topic (tansu does
    // not create them on use), produce and consume, which also needs the
    // group coordinator at the advertised (TLS) address.
    let admin: AdminClient<DefaultClientContext> = client(&broker, broker.kafka_config())
        .create()
        .expect("an admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().request_timeout(Some(STEP)),
        )
        .await
        .expect("create a topic over TLS");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let consumer = broker.consumer(&topic);
    broker
        .producer()
        .send(
            FutureRecord::<str, str>::to(&topic)
                .key("k")
                .payload("over tls"),
            STEP,
        )
        .await
        .expect("produce over TLS");
    let record = timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("consume over TLS");
    assert_eq!(record.payload(), Some("over tls".as_bytes()));

    assert!(
        !metadata_with(&broker, Vec::new()).await,
        "a plaintext client got metadata from the TLS port"
    );
    let untrusting = vec![("security.protocol".into(), "ssl".into())];
    assert!(
        !metadata_with(&broker, untrusting).await,
        "a TLS client that does not trust the test CA got metadata"
    );
    assert!(metadata_with(&broker, broker.kafka_config()).await);
}

#[tokio::test]
async fn fault_proxy_fails_only_the_chosen_rooms() {
    let worker = Worker::start(&[]).await;
    let failing = room("harness.failing");
    let healthy = room("harness.healthy");
    let proxy = FaultProxy::start(&worker, &[&failing]).await;
    let http = Http::default();
    let t = full_token("proxy");
    let one = r#"{"data":"via proxy"}"#;

    let injected = http
        .post(
            &proxy.url(&format!("/v1/rooms/{failing}/messages")),
            &t,
            one,
        )
        .await;
    assert_eq!(injected, (503, Value::String(INJECTED.into())));
    let (_, history) = http
        .get(
            &worker.url(&format!("/v1/rooms/{failing}/messages?since=0")),
            Some(&t),
        )
        .await;
    assert_eq!(history["messages"], json!([]), "the worker never saw it");

    // Everything else reaches the worker: reads of the failing room, and
    // writes to another room over HTTP and over a WebSocket.
    let (status, history) = http
        .get(
            &proxy.url(&format!("/v1/rooms/{failing}/messages?since=0")),
            Some(&t),
        )
        .await;
    assert_eq!((status, &history["messages"]), (200, &json!([])));
    let mut client =
        Client::connect(&proxy.ws_url(&format!("/v1/rooms/{healthy}/ws?token={t}"))).await;
    client.expect("welcome").await;
    let (status, body) = http
        .post(
            &proxy.url(&format!("/v1/rooms/{healthy}/messages")),
            &t,
            one,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(client.expect("message").await["data"], "via proxy");
    client
        .send_json(json!({"type": "publish", "data": "over the spliced socket"}))
        .await;
    assert_eq!(
        client.expect("message").await["data"],
        "over the spliced socket"
    );
    client.expect("ack").await;
}

#[tokio::test]
async fn a_spawned_bridge_can_be_watched_as_it_exits() {
    let broker = Broker::start().await;
    let mut bridge = BridgeProcess::spawn(
        "https://127.0.0.1:9",
        &broker,
        "watched",
        CaFile::Omitted,
        &["--no-such-flag"],
    );
    let status = bridge.service.exited_within(STEP).await;
    let log = bridge.service.log_tail();
    assert!(
        matches!(status, Some(code) if code != 0),
        "{status:?}\n{log}"
    );
    assert!(log.contains("--no-such-flag"), "{log}");
}

/// `wrangler dev` with a build step rebuilds and restarts workerd once its
/// file watcher is ready, and the restarted workerd binds its ports again,
/// which a worker starting beside it may have taken ("Address already in
/// use"). The tests' configuration has no build step: one start, for good.
#[tokio::test]
async fn the_worker_starts_once_without_a_rebuild_and_restart() {
    let worker = Worker::start(&[]).await;
    // wrangler says "Ready on" once the server it keeps is up.
    worker.service.wait_log("Ready on", STEP).await;
    let log = worker.service.log();
    assert!(!log.contains("restarting build"), "{log}");
    assert_eq!(log.matches("Starting local server").count(), 1, "{log}");
}
