//! End to end, one subject spraying rooms (docs/protocol.md, "Limits"):
//! every budget belongs to a subject in one room, so without a limit across
//! rooms one token with `publish: ["spray.*"]` creates a room per message,
//! each registered and relayed by the bridge. Rooms are created at most
//! `ROOM_CREATE_PER_MIN` a minute per subject, so 5000 attempts leave the
//! room count, and the bridge's links and memory, where the budget puts
//! them; what was created still reaches Kafka.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use rdkafka::message::Message as _;
use roomcast_tests::records::collect;
use roomcast_tests::{token, BridgeProcess, Broker, Http, Worker};
use serde_json::json;
use tokio::time::Instant;

const ROOMS: usize = 5000;
const PER_MIN: u64 = 60;

/// The bridge's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the bridge runs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn a_subject_spraying_rooms_is_limited_and_the_bridge_stays_bounded() {
    let broker = Broker::start().await;
    let worker = Worker::start(&[("BRIDGE", "on")]).await;
    let bridge = BridgeProcess::start(&worker, &broker, "spray", &[]).await;
    let events = broker.consumer("roomcast.events");
    let bridge_pid = bridge.service.pid();
    let rss_before = rss_kib(bridge_pid);

    let sprayer = token("sprayer", &["spray.*"], &["spray.*"], 3600);
    let http = Http::default();
    let started = Instant::now();
    let answers: Vec<(usize, u16, bool)> = stream::iter(0..ROOMS)
        .map(|n| {
            let (http, url, sprayer) = (
                &http,
                worker.url(&format!("/v1/rooms/spray.{n}/messages")),
                &sprayer,
            );
            async move {
                // A request that gets no answer is status 0: a worker that
                // cannot keep up is a failure of its own, reported below.
                match http
                    .raw()
                    .post(url)
                    .bearer_auth(sprayer)
                    .body(json!({ "data": n }).to_string())
                    .send()
                    .await
                {
                    Ok(response) => {
                        let retry_after = response.headers().contains_key("retry-after");
                        (n, response.status().as_u16(), retry_after)
                    }
                    Err(_) => (n, 0, false),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let created: BTreeSet<String> = answers
        .iter()
        .filter(|(_, status, _)| *status == 201)
        .map(|(n, _, _)| format!("spray.{n}"))
        .collect();
    let refused = answers
        .iter()
        .filter(|(_, status, retry_after)| *status == 429 && *retry_after)
        .count();
    // A full bucket, and what refilled while the spray ran.
    let budget = PER_MIN + elapsed.as_secs() * PER_MIN / 60 + 1;
    assert!(
        created.len() as u64 <= budget,
        "{} rooms created in {elapsed:?}",
        created.len()
    );
    let others: Vec<&(usize, u16, bool)> = answers
        .iter()
        .filter(|(_, status, retry_after)| *status != 201 && !(*status == 429 && *retry_after))
        .collect();
    assert!(
        others.is_empty(),
        "every attempt is created or refused with Retry-After: {others:?}\n{}",
        worker.service.log_tail()
    );
    assert!(
        created.len() as u64 >= PER_MIN.min(ROOMS as u64),
        "the budget itself is usable"
    );

    // Every room that was created reaches Kafka, and only those.
    let records = collect(&events, Duration::from_secs(120), |r| {
        r.len() >= created.len()
    })
    .await;
    let relayed: BTreeSet<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.key().expect("key")).into_owned())
        .collect();
    assert_eq!(relayed, created);
    let metrics = bridge.metrics_text().await;
    let links = metrics
        .lines()
        .filter(|l| l.starts_with("roomcast_bridge_link_up{") && l.ends_with(" 1"))
        .count();
    assert!(
        links <= created.len(),
        "{links} links for {} rooms",
        created.len()
    );
    let rss_after = rss_kib(bridge_pid);
    eprintln!(
        "spray: {ROOMS} attempts in {elapsed:?}: {} rooms created, {refused} refused; bridge links {links}, RSS {rss_before} KiB -> {rss_after} KiB",
        created.len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "the bridge grew from {rss_before} to {rss_after} KiB"
    );
}
