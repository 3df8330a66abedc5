//! End to end, a room's budget and fair share (docs/protocol.md, "Rate
//! budget"; `protocol/src/rate.rs`): load is measured per wall-clock
//! second; a second that accepted more than `ROOM_RATE_PER_SEC` puts every
//! publisher of the room on `min(own rate, budget / publishers)` from the
//! next second on, and fair share ends after a second whose demand
//! (accepted and refused) fits the budget again.
//!
//! Publishers send over their sockets at a steady pace well above any
//! rate here, so what the room accepts each second is what their buckets
//! refill. Every accepted message carries the server's time (`ts`, the same
//! clock the limiter reads), so the history says exactly how many each
//! publisher got in each second.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use roomcast_protocol::clock::now_ms;
use roomcast_tests::{bridge_token, full_token, room, Client, Frame, Http, Worker, STEP};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Own rate and burst 30, room budget 30: three publishers share it at 10
/// a second each. `RATE_STRIKES` is out of reach, so a publisher kept over
/// its limit is refused, never closed. In `solo.*` rooms a publisher's own
/// rate (10) is below what the budget would give it alone (30).
const VARS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "30"),
    ("RATE_BURST", "30"),
    ("ROOM_RATE_PER_SEC", "30"),
    ("RATE_STRIKES", "1000"),
    (
        "ROOM_POLICIES",
        r#"[{"match":"solo.*","rate_per_sec":10,"rate_burst":60}]"#,
    ),
];

/// A publisher's pace when it floods: five times the fair share.
const FLOOD: Duration = Duration::from_millis(20);

/// A subject publishing on its own socket; each publish carries its send
/// time (client clock, ms) as `ref`, and its answer is kept against it.
struct Publisher {
    client: Client,
    sent: usize,
    /// (sent at, accepted) per answered publish.
    answers: Vec<(u64, bool)>,
}

impl Publisher {
    async fn join(worker: &Worker, room: &str, sub: &str) -> Publisher {
        let token = full_token(sub);
        let mut client =
            Client::connect(&worker.ws_url(&format!("/v1/rooms/{room}/ws?token={token}"))).await;
        client.expect("welcome").await;
        Publisher {
            client,
            sent: 0,
            answers: Vec::new(),
        }
    }

    /// Publishes every `every` until `until`, reading answers (and the
    /// room's broadcasts) in between. A late turn is not made up with a
    /// burst: the pace only ever slows.
    async fn run(&mut self, every: Duration, until: Instant) {
        while Instant::now() < until {
            let at = now_ms();
            self.client
                .send_json(json!({"type": "publish", "data": at, "ref": at.to_string()}))
                .await;
            self.sent += 1;
            let next = Instant::now() + every;
            while let Some(frame) = self
                .client
                .next_frame_within(next.saturating_duration_since(Instant::now()))
                .await
            {
                self.take(frame);
            }
        }
    }

    /// Reads until every publish has its answer.
    async fn finish(&mut self) {
        while self.answers.len() < self.sent {
            let frame = self
                .client
                .next_frame_within(STEP)
                .await
                .expect("an answer to every publish");
            self.take(frame);
        }
    }

    fn take(&mut self, frame: Frame) {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Closed(code) => panic!("the room closed a publisher with {code}"),
        };
        let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        let sent_at = || {
            frame["ref"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .expect("the publish's ref")
        };
        match frame["type"].as_str() {
            Some("ack") => self.answers.push((sent_at(), true)),
            Some("error") => {
                assert_eq!(frame["code"], "rate_limited", "{frame}");
                self.answers.push((sent_at(), false));
            }
            Some("message") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

async fn run_all(publishers: &mut [&mut Publisher], every: &[Duration], until: Instant) {
    join_all(
        publishers
            .iter_mut()
            .zip(every)
            .map(|(p, every)| p.run(*every, until)),
    )
    .await;
}

/// Messages the room accepted, by sender and by the second of their `ts`
/// (read with the bridge's token, which draws on no budget).
async fn accepted(worker: &Worker, room: &str) -> BTreeMap<(String, u64), u64> {
    let http = Http::default();
    let mut counts = BTreeMap::new();
    let mut since = 0;
    loop {
        let url = worker.url(&format!(
            "/v1/rooms/{room}/messages?since={since}&limit=1000"
        ));
        let (status, page) = http.get(&url, Some(&bridge_token())).await;
        assert_eq!(status, 200, "{page}");
        for m in page["messages"].as_array().expect("messages") {
            let sender = m["sender"].as_str().expect("sender").to_owned();
            let second = m["ts"].as_u64().expect("ts") / 1000;
            *counts.entry((sender, second)).or_insert(0) += 1;
            since = m["seq"].as_u64().expect("seq");
        }
        if page["truncated"] != true {
            return counts;
        }
    }
}

/// What `sub` got in each second the whole room was flooding in, past the
/// first three (the bursts, spread over two seconds when the flood starts
/// late in one, and the second they put over budget) and before the last
/// (cut short).
fn steady(counts: &BTreeMap<(String, u64), u64>, sub: &str) -> Vec<u64> {
    let seconds: Vec<u64> = counts.keys().map(|(_, s)| *s).collect();
    let (first, last) = (
        *seconds.iter().min().expect("messages"),
        *seconds.iter().max().expect("messages"),
    );
    (first + 3..last)
        .map(|s| counts.get(&(sub.to_owned(), s)).copied().unwrap_or(0))
        .collect()
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

#[tokio::test]
async fn a_second_over_budget_puts_every_publisher_on_a_fair_share() {
    let worker = Worker::start(VARS).await;
    let (shared, solo) = (room("shared"), room("solo"));
    let mut a = Publisher::join(&worker, &shared, "a").await;
    let mut b = Publisher::join(&worker, &shared, "b").await;
    let mut c = Publisher::join(&worker, &shared, "c").await;
    let mut d = Publisher::join(&worker, &solo, "d").await;
    let until = Instant::now() + Duration::from_secs(10);
    run_all(&mut [&mut a, &mut b, &mut c, &mut d], &[FLOOD; 4], until).await;
    for p in [&mut a, &mut b, &mut c, &mut d] {
        p.finish().await;
    }

    // Three publishers over a budget of 30: each gets 10 a second, a third
    // of its own rate. (A median, so that one second the machine stalled
    // in does not decide.)
    let counts = accepted(&worker, &shared).await;
    for sub in ["a", "b", "c"] {
        let per_second = steady(&counts, sub);
        println!("{sub}: accepted per second {per_second:?}");
        assert!(per_second.len() >= 5, "too short a flood: {per_second:?}");
        let got = median(per_second.clone());
        assert!(
            (8..=12).contains(&got),
            "{sub} got {got} a second ({per_second:?}); fair share is 30 / 3 = 10"
        );
    }
    // Alone over the budget, a publisher keeps its own rate of 10: fair
    // share never gives more than that (here it would give 30).
    let counts = accepted(&worker, &solo).await;
    let per_second = steady(&counts, "d");
    println!("d (solo): accepted per second {per_second:?}");
    assert!(per_second.len() >= 5, "too short a flood: {per_second:?}");
    let got = median(per_second.clone());
    assert!(
        (8..=12).contains(&got),
        "d got {got} a second ({per_second:?}); its own rate is 10"
    );
}

#[tokio::test]
async fn fair_share_ends_after_a_second_whose_demand_fits() {
    let worker = Worker::start(VARS).await;
    let r = room("calming");
    let mut a = Publisher::join(&worker, &r, "a").await;
    let mut b = Publisher::join(&worker, &r, "b").await;
    let mut c = Publisher::join(&worker, &r, "c").await;
    // Everyone floods: fair share at 10 a second each.
    let until = Instant::now() + Duration::from_secs(3);
    run_all(&mut [&mut a, &mut b, &mut c], &[FLOOD; 3], until).await;
    // Then A wants 20 a second, more than its fair share, and B and C 2
    // each: 24 a second in all, within the budget of 30.
    let calm = now_ms();
    let until = Instant::now() + Duration::from_secs(8);
    let gentle = Duration::from_millis(500);
    run_all(
        &mut [&mut a, &mut b, &mut c],
        &[Duration::from_millis(50), gentle, gentle],
        until,
    )
    .await;
    for p in [&mut a, &mut b, &mut c] {
        p.finish().await;
    }

    assert!(
        a.answers.iter().any(|(at, ok)| *at < calm && !ok),
        "the flood never limited A: {:?}",
        a.answers
    );
    // The second the calm starts in still carries the flood, the next one
    // fits the budget, and fair share is over in the one after. From then
    // on A gets its 20 a second, twice what a fair share would give it.
    // (A median over those seconds: a second in which a stalled machine
    // bunched the publishes may put the room over budget by itself.)
    let counts = accepted(&worker, &r).await;
    let last = counts.keys().map(|(_, s)| *s).max().expect("messages");
    let calmed: Vec<u64> = (calm / 1000 + 3..last).collect();
    let per_second = |sub: &str| -> Vec<u64> {
        calmed
            .iter()
            .map(|s| counts.get(&(sub.to_owned(), *s)).copied().unwrap_or(0))
            .collect()
    };
    let got = per_second("a");
    println!("a: accepted per second after the calm {got:?}");
    assert!(got.len() >= 4, "too short a calm: {got:?}");
    assert!(
        median(got.clone()) >= 15,
        "A was still held to a fair share: {got:?} a second, wanting 20"
    );
    // B and C kept publishing meanwhile: had fair share stayed on, there
    // were three publishers to share the budget, and A would get 10.
    for sub in ["b", "c"] {
        let theirs = per_second(sub);
        assert!(
            theirs.iter().filter(|n| **n > 0).count() * 2 > theirs.len(),
            "{sub} published in too few of those seconds: {theirs:?}"
        );
    }
}
