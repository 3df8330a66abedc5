//! End to end, what one bridge instance may spend and whom it trusts
//! (docs/bridge.md, "Links and shutdown", "TLS and Kafka properties",
//! "`/metrics` and `/healthz`"): more rooms than `--max-links` all reach
//! Kafka while the links never exceed the cap; an idle link closes and the
//! room's next message comes over a new one; a link opened by someone else
//! with a bridge token is superseded when the room's owner comes back; a
//! cleartext worker URL to a remote host stops the bridge at startup; and a
//! client trickling a request to `/metrics` is cut off at the deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use roomcast_tests::records::header;
use roomcast_tests::{
    bridge_token, free_port, full_token, metric, room, BridgeProcess, Broker, CaFile, Client, Http,
    Worker,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// Every room an outbox from its first message, as in a deployment with a bridge.
const BRIDGED: &[(&str, &str)] = &[("BRIDGE", "on")];

/// Publishes `count` messages (`{"n": 1..=count}`) into `room` in one batch.
async fn publish(worker: &Worker, room: &str, first: u64, count: u64) {
    let messages: Vec<Value> = (first..first + count)
        .map(|n| json!({ "data": {"n": n} }))
        .collect();
    let (status, body) = Http::default()
        .post(
            &worker.url(&format!("/v1/rooms/{room}/messages")),
            &full_token("bounds"),
            &json!({ "messages": messages }).to_string(),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The seqs of `rooms` that reached Kafka from now on, in the order they
/// arrived, once each room has every seq in `wanted`; panics after `wait`.
async fn relayed(
    consumer: &StreamConsumer,
    rooms: &[String],
    wanted: RangeInclusive<u64>,
    wait: Duration,
) -> BTreeMap<String, Vec<u64>> {
    let deadline = Instant::now() + wait;
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let complete = |seqs: &BTreeMap<String, Vec<u64>>| {
        rooms.iter().all(|r| {
            let got: BTreeSet<u64> = seqs.get(r).into_iter().flatten().copied().collect();
            wanted.clone().all(|seq| got.contains(&seq))
        })
    };
    while !complete(&seqs) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "not every message reached Kafka: {seqs:?}");
        if let Ok(Ok(record)) = timeout(left, consumer.recv()).await {
            let record = record.detach();
            if let (Some(room), Some(seq)) = (
                header(&record, "room"),
                header(&record, "seq").and_then(|s| s.parse().ok()),
            ) {
                seqs.entry(room).or_default().push(seq);
            }
        }
    }
    seqs
}

/// Polls the bridge's `/metrics` until `ready` holds; panics after `wait`.
async fn metrics_until(
    bridge: &BridgeProcess,
    wait: Duration,
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + wait;
    loop {
        let text = bridge.metrics_text().await;
        if ready(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics did not get there within {wait:?}:\n{text}\n{}",
            bridge.service.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// What a sampler of `/metrics` saw of the link gauges.
#[derive(Debug, Default)]
struct Samples {
    count: usize,
    most_links: f64,
    most_waiting: f64,
    maxes: BTreeSet<u64>,
}

/// Samples the link gauges every 50 ms until `done`.
async fn sample_links(url: String, done: Arc<AtomicBool>) -> Samples {
    let http = reqwest::Client::new();
    let mut samples = Samples::default();
    while !done.load(Ordering::SeqCst) {
        if let Ok(response) = http.get(&url).send().await {
            let text = response.text().await.unwrap_or_default();
            if let (Some(links), Some(waiting), Some(max)) = (
                metric(&text, "roomcast_bridge_links"),
                metric(&text, "roomcast_bridge_links_waiting"),
                metric(&text, "roomcast_bridge_links_max"),
            ) {
                samples.count += 1;
                samples.most_links = samples.most_links.max(links);
                samples.most_waiting = samples.most_waiting.max(waiting);
                samples.maxes.insert(max as u64);
            }
        }
        sleep(Duration::from_millis(50)).await;
    }
    samples
}

#[tokio::test]
async fn more_rooms_than_links_all_reach_kafka_within_the_cap() {
    const MAX_LINKS: f64 = 2.0;
    const PER_ROOM: u64 = 5;
    let broker = Broker::start().await;
    let worker = Worker::start(BRIDGED).await;
    let events = broker.consumer("roomcast.events");
    // Every room has its messages before the bridge starts: its registry
    // link then hears of all of them at once.
    let rooms: Vec<String> = (0..6).map(|_| room("capped")).collect();
    for r in &rooms {
        publish(&worker, r, 1, PER_ROOM).await;
    }
    let bridge = BridgeProcess::start(
        &worker,
        &broker,
        "capped",
        &["--max-links", "2", "--link-idle", "2s"],
    )
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_links(bridge.url("/metrics"), done.clone()));

    let seqs = relayed(&events, &rooms, 1..=PER_ROOM, Duration::from_secs(90)).await;
    for r in &rooms {
        assert_eq!(
            seqs[r],
            (1..=PER_ROOM).collect::<Vec<_>>(),
            "{r}: every message once, in seq order (no link failed)"
        );
    }
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples.count >= 10, "too few samples: {samples:?}");
    assert_eq!(samples.maxes, BTreeSet::from([2]), "{samples:?}");
    assert_eq!(
        samples.most_links, MAX_LINKS,
        "the cap was reached and never exceeded: {samples:?}"
    );
    assert!(
        samples.most_waiting >= 1.0,
        "rooms waited for a link: {samples:?}"
    );
    // Every waiting room got its link: nothing waits any more.
    metrics_until(&bridge, Duration::from_secs(30), |text| {
        metric(text, "roomcast_bridge_links_waiting") == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn an_idle_link_closes_and_the_next_message_reopens_it() {
    let broker = Broker::start().await;
    let worker = Worker::start(BRIDGED).await;
    let events = broker.consumer("roomcast.events");
    let bridge = BridgeProcess::start(&worker, &broker, "idle", &["--link-idle", "2s"]).await;
    let r = room("idle");
    let link_up = format!("roomcast_bridge_link_up{{room=\"{r}\"}}");

    publish(&worker, &r, 1, 1).await;
    relayed(
        &events,
        std::slice::from_ref(&r),
        1..=1,
        Duration::from_secs(30),
    )
    .await;
    // Idle: the link closes and takes the room's series with it.
    metrics_until(&bridge, Duration::from_secs(20), |text| {
        metric(text, "roomcast_bridge_links") == Some(0.0) && metric(text, &link_up).is_none()
    })
    .await;
    assert!(
        bridge.service.log().contains("room link idle: closed"),
        "{}",
        bridge.service.log_tail()
    );

    // The room's next message registers it again and a new link relays it.
    publish(&worker, &r, 2, 1).await;
    let seqs = relayed(
        &events,
        std::slice::from_ref(&r),
        2..=2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(seqs[&r], [2], "only the new message, over the new link");
}

#[tokio::test]
async fn a_link_taken_by_an_impostor_comes_back_to_the_owner() {
    let broker = Broker::start().await;
    let worker = Worker::start(BRIDGED).await;
    let events = broker.consumer("roomcast.events");
    let bridge = BridgeProcess::start(&worker, &broker, "owner", &[]).await;
    let r = room("taken");
    publish(&worker, &r, 1, 1).await;
    relayed(
        &events,
        std::slice::from_ref(&r),
        1..=1,
        Duration::from_secs(30),
    )
    .await;

    let http = Http::default();
    let (status, report) = http
        .get(
            &worker.url(&format!("/v1/registry?room={r}")),
            Some(&bridge_token()),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["registered"].as_bool(), report["owner"].as_str()),
        (Some(true), Some("owner")),
        "{report}"
    );

    // Anyone with a bridge token can open the room's link...
    let mut impostor = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{r}/bridge?instance=impostor&token={}",
        bridge_token()
    )))
    .await;
    impostor.expect("welcome").await;
    // ...and the owner, told so by the registry, takes it back.
    assert_eq!(impostor.expect_close(Duration::from_secs(20)).await, 4009);

    publish(&worker, &r, 2, 1).await;
    let seqs = relayed(
        &events,
        std::slice::from_ref(&r),
        2..=2,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(seqs[&r], [2], "the owner relays the room again");
    let text = bridge.metrics_text().await;
    assert_eq!(
        metric(&text, &format!("roomcast_bridge_link_up{{room=\"{r}\"}}")),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            &format!("roomcast_bridge_link_reconnects_total{{room=\"{r}\"}}")
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
}

#[tokio::test]
async fn cleartext_to_a_remote_worker_is_refused_at_startup() {
    let broker = Broker::start().await;
    for url in [
        "http://roomcast-worker.invalid:8787",
        "ws://10.20.30.40:8787/prefix",
        "http://127.0.0.1@roomcast-worker.invalid",
    ] {
        let mut bridge = BridgeProcess::spawn(url, &broker, "cleartext", CaFile::Omitted, &[]);
        let code = bridge.service.exited_within(Duration::from_secs(30)).await;
        let log = bridge.service.log_tail();
        assert_eq!(code, Some(1), "{url} must stop the bridge:\n{log}");
        assert!(
            log.contains(url) && log.contains("cleartext") && log.contains("--allow-cleartext"),
            "the error names the URL and the way out:\n{log}"
        );
    }

    // Said on purpose, it starts (and waits for the worker like any other).
    let mut allowed = BridgeProcess::spawn(
        "http://roomcast-worker.invalid:8787",
        &broker,
        "cleartext-allowed",
        CaFile::Omitted,
        &["--allow-cleartext"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert_eq!(
            allowed.service.exited(),
            None,
            "{}",
            allowed.service.log_tail()
        );
        if let Ok(response) = reqwest::get(allowed.url("/metrics")).await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never served /metrics:\n{}",
            allowed.service.log_tail()
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert!(allowed.service.log().contains("unencrypted"));
}

#[tokio::test]
async fn a_slow_metrics_client_is_cut_off_at_the_deadline() {
    let broker = Broker::start().await;
    // No worker is needed to serve /metrics: the bridge waits for one
    // (on loopback, so cleartext is fine) in the background.
    let worker_url = format!("http://127.0.0.1:{}", free_port());
    let mut bridge = BridgeProcess::spawn(&worker_url, &broker, "slow", CaFile::Omitted, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while reqwest::get(bridge.url("/metrics")).await.is_err() {
        assert_eq!(
            bridge.service.exited(),
            None,
            "{}",
            bridge.service.log_tail()
        );
        assert!(Instant::now() < deadline, "{}", bridge.service.log_tail());
        sleep(Duration::from_millis(200)).await;
    }

    let (mut reader, mut writer) = TcpStream::connect(&bridge.metrics)
        .await
        .expect("connect to /metrics")
        .into_split();
    let connected = Instant::now();
    let closed = async {
        let mut buf = [0u8; 256];
        let mut answer = Vec::new();
        while let Ok(n @ 1..) = reader.read(&mut buf).await {
            answer.extend_from_slice(&buf[..n]);
        }
        answer
    };
    // One byte a second: every read is quick, the request never ends.
    let trickle = async {
        for byte in b"GET /metrics HTTP/1.1\r\nx-trickle: ".iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<Vec<u8>>().await
    };
    let answer = timeout(Duration::from_secs(30), async {
        tokio::select! {
            answer = closed => answer,
            never = trickle => never,
        }
    })
    .await
    .expect("the bridge held the trickling connection for 30 s");
    let held = connected.elapsed();
    assert!(
        held < Duration::from_secs(8),
        "held {held:?}, past the 5 s deadline"
    );
    assert!(answer.is_empty(), "a trickled request got an answer");
    // The endpoint still answers everyone else.
    assert_eq!(
        reqwest::get(bridge.url("/metrics")).await.unwrap().status(),
        200
    );
}
