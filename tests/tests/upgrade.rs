//! End to end: rooms written by earlier releases open under this one with
//! nothing lost. A room's storage lives as long as the room, so every
//! release must open what every earlier release wrote, months later, once.
//!
//! The rooms are fixtures (tests/fixtures/storage, README there): SQLite
//! files that earlier releases wrote themselves, under `wrangler dev`,
//! driven by real HTTP and WebSocket traffic (scripts/storage-fixtures.sh
//! regenerates them). A test copies one release's files into a fresh
//! `--persist-to` directory, reads from them what each room held (the
//! release's own tables: a `messages` log, or a ring and an outbox), starts
//! this release on them and checks every way a room is read: `/stats`, a
//! history page, a resume, the ids it owns, the bridge's link, and the next
//! message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roomcast_tests::{
    bridge_token, fresh_copy, full_token, repo_root, room, Client, Http, Worker, STEP,
};
use rusqlite::{Connection, Row};
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};

/// `HISTORY_LIMIT` as every fixture was written with.
const LIMIT: u64 = 5;

/// The fixtures' `HISTORY_LIMIT`, and age and retirement limits that no
/// fixture reaches however old its messages get: these tests check what
/// an upgrade keeps, not what ages out.
const VARS: &[(&str, &str)] = &[
    ("BRIDGE", "on"),
    ("HISTORY_LIMIT", "5"),
    ("HISTORY_TTL_SECS", "3153600000"),
    ("ROOM_RETIRE_MS", "3153600000000"),
    ("RATE_BURST", "1000"),
];

/// A message as an earlier release stored it.
#[derive(Debug)]
struct Stored {
    seq: u64,
    id: String,
    ts: u64,
    sender: String,
    origin: String,
    data: Value,
    trace: Option<String>,
}

impl Stored {
    fn read(row: &Row) -> rusqlite::Result<Stored> {
        let data: String = row.get("data")?;
        Ok(Stored {
            seq: row.get("seq")?,
            id: row.get("id")?,
            ts: row.get("ts")?,
            sender: row.get("sender")?,
            origin: row.get("origin")?,
            data: serde_json::from_str(&data).expect("stored data is JSON"),
            // Schema 0 has no trace column.
            trace: row.get("trace").ok().flatten(),
        })
    }

    /// The message as this release must serve it.
    fn served(&self) -> Value {
        json!({
            "seq": self.seq, "id": self.id, "ts": self.ts, "sender": self.sender,
            "origin": self.origin, "data": self.data, "trace": self.trace,
        })
    }

    fn is_from_kafka(&self) -> bool {
        self.origin == "kafka"
    }
}

/// A served message (page entry or frame), as [`Stored::served`] shapes it.
fn served(message: &Value) -> Value {
    json!({
        "seq": message["seq"], "id": message["id"], "ts": message["ts"],
        "sender": message["sender"], "origin": message["origin"],
        "data": message["data"], "trace": message["trace"],
    })
}

/// What a room held when the earlier release stopped.
#[derive(Debug)]
struct Held {
    name: String,
    epoch: String,
    head: u64,
    cursor: u64,
    bridged: bool,
    /// Every stored message, in seq order.
    rows: Vec<Stored>,
}

impl Held {
    fn read(path: &Path) -> Held {
        let db = Connection::open(path).expect("open a room's storage");
        let meta: HashMap<String, String> = db
            .prepare("SELECT key, value FROM meta")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("meta");
        let log = db
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'messages'",
                [],
                |r| r.get::<_, u64>(0),
            )
            .expect("tables")
            == 1;
        let query = if log {
            "SELECT * FROM messages ORDER BY seq"
        } else {
            "SELECT seq, id, ts, sender, origin, data, trace FROM outbox UNION ALL \
             SELECT seq, id, ts, sender, origin, data, trace FROM ring ORDER BY seq"
        };
        let rows: Vec<Stored> = db
            .prepare(query)
            .and_then(|mut s| s.query_map([], Stored::read)?.collect())
            .expect("stored messages");
        let number = |key: &str| meta.get(key).map_or(0, |v| v.parse().expect("a number"));
        Held {
            name: meta["room"].clone(),
            epoch: meta["epoch"].clone(),
            head: number("head").max(rows.last().map_or(0, |r| r.seq)),
            cursor: number("cursor"),
            bridged: meta.contains_key("bridged"),
            rows,
        }
    }

    /// What clients read: the newest `HISTORY_LIMIT`, and what the bridge
    /// has not confirmed in a room that holds it for the bridge; from above
    /// the last hole, where an earlier release left one.
    fn visible(&self) -> Vec<&Stored> {
        let by_count = self.head.saturating_sub(LIMIT);
        let floor = if self.bridged {
            by_count.min(self.cursor)
        } else {
            by_count
        };
        let shown: Vec<&Stored> = self.rows.iter().filter(|r| r.seq > floor).collect();
        let from = shown
            .windows(2)
            .rposition(|w| w[1].seq != w[0].seq + 1)
            .map_or(0, |i| i + 1);
        shown[from..].to_vec()
    }

    /// What the bridge gets: every message above its cursor not from Kafka.
    fn relayed(&self) -> Vec<&Stored> {
        self.rows
            .iter()
            .filter(|r| r.seq > self.cursor && !r.is_from_kafka())
            .collect()
    }

    /// Seqs below the head missing from the stored run.
    fn holes(&self) -> Vec<u64> {
        let lo = self.rows.first().map_or(self.head, |r| r.seq);
        (lo..=self.head)
            .filter(|seq| !self.rows.iter().any(|r| r.seq == *seq))
            .collect()
    }

    fn holds_traces(&self) -> bool {
        self.rows.iter().any(|r| r.trace.is_some())
    }

    fn holds_kafka(&self) -> bool {
        self.rows.iter().any(Stored::is_from_kafka)
    }
}

/// A fixture's rooms, copied into a fresh state directory, and what each
/// held, by name.
fn fixture(name: &str) -> (PathBuf, HashMap<String, Held>) {
    let from = repo_root().join("tests/fixtures/storage").join(name);
    let persist = fresh_copy(name, &from);
    let dir = persist.join("v3/do/roomcast-Room");
    let rooms: HashMap<String, Held> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .map(|p| Held::read(&p))
        .map(|held| (held.name.clone(), held))
        .collect();
    assert!(!rooms.is_empty(), "no rooms in {}", from.display());
    (persist, rooms)
}

/// Starts this release on the fixture `name`, after `expect` checked that
/// its rooms hold the states it was written for, and checks every room.
async fn adopt(name: &str, expect: impl FnOnce(&HashMap<String, Held>)) {
    let (persist, rooms) = fixture(name);
    expect(&rooms);
    let worker = Worker::start_in(persist, VARS).await;
    let http = Http::default();
    let mut names: Vec<&String> = rooms.keys().collect();
    names.sort();
    for name in names {
        keeps_everything(&worker, &http, &rooms[name]).await;
    }
}

async fn get(http: &Http, worker: &Worker, path: &str) -> Value {
    let (status, body) = http
        .get(&worker.url(path), Some(&full_token("reader")))
        .await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// Every way the room is read under this release shows what it held.
async fn keeps_everything(worker: &Worker, http: &Http, held: &Held) {
    let r = held.name.as_str();
    let visible = held.visible();
    let expected: Vec<Value> = visible.iter().map(|m| m.served()).collect();
    let oldest = visible
        .first()
        .map(|m| m.seq)
        .expect("a fixture room shows messages");
    let pending = if held.bridged {
        held.relayed().len()
    } else {
        0
    };

    let stats = worker.stats(r).await;
    assert_eq!(
        (
            &stats["epoch"],
            &stats["head"],
            &stats["cursor"],
            &stats["pending"]
        ),
        (
            &json!(held.epoch),
            &json!(held.head),
            &json!(held.cursor),
            &json!(pending)
        ),
        "{r}: epoch, head, cursor and pending survive: {stats}"
    );

    let page = get(
        http,
        worker,
        &format!("/v1/rooms/{r}/messages?since=0&limit=1000"),
    )
    .await;
    let messages: Vec<Value> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(served)
        .collect();
    let seqs: Vec<u64> = messages
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (oldest..=held.head).collect::<Vec<_>>(),
        "{r}: clients read a contiguous run oldest..=head"
    );
    assert_eq!(messages, expected, "{r}: every message as it was stored");
    assert_eq!(
        (&page["epoch"], &page["head"], &page["oldest"]),
        (&json!(held.epoch), &json!(held.head), &json!(oldest)),
        "{r}: epoch and head survive, and `oldest` is the first message a client can read: {page}"
    );

    // A resume from just below the oldest replays everything shown; one
    // from further below (past a trimmed message or inside a hole) cannot.
    let resume = |since: u64| {
        worker.ws_url(&format!(
            "/v1/rooms/{r}/ws?token={}&since={since}&epoch={}",
            full_token("resumer"),
            held.epoch
        ))
    };
    let mut client = Client::connect(&resume(oldest - 1)).await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["recovered"], true, "{r}: {welcome}");
    let mut replayed = Vec::new();
    for _ in oldest..=held.head {
        replayed.push(served(&client.expect("message").await));
    }
    assert_eq!(
        replayed, expected,
        "{r}: the resume replays what was stored"
    );
    client.close().await;
    if oldest >= 2 {
        let mut client = Client::connect(&resume(oldest - 2)).await;
        let welcome = client.expect("welcome").await;
        assert_eq!(
            welcome["recovered"],
            false,
            "{r}: seq {} is not stored, so a resume needing it is not recovered: {welcome}",
            oldest - 1
        );
        client.close().await;
    }

    // Every id shown is still its publisher's (the bridge's for Kafka's).
    let url = worker.url(&format!("/v1/rooms/{r}/messages"));
    for m in &visible {
        let owner = if m.is_from_kafka() {
            bridge_token()
        } else {
            full_token(&m.sender)
        };
        let body = json!({"data": "again", "id": m.id}).to_string();
        let (status, receipt) = http.post(&url, &owner, &body).await;
        assert_eq!(
            (status, &receipt["seq"], &receipt["duplicate"]),
            (201, &json!(m.seq), &json!(true)),
            "{r}: id {} is still owned: {receipt}",
            m.id
        );
    }

    // The bridge's link resumes from the cursor with everything it has not
    // confirmed that did not come from Kafka, in order.
    let mut link = None;
    if held.bridged {
        let mut bridge = Client::connect(&worker.ws_url(&format!(
            "/v1/rooms/{r}/bridge?instance=upgrade&token={}",
            bridge_token()
        )))
        .await;
        let welcome = bridge.expect("welcome").await;
        assert_eq!(
            (&welcome["epoch"], &welcome["head"], &welcome["cursor"]),
            (&json!(held.epoch), &json!(held.head), &json!(held.cursor)),
            "{r}: {welcome}"
        );
        let mut relayed = Vec::new();
        for _ in 0..pending {
            relayed.push(served(&next_message(&mut bridge).await));
        }
        let expected: Vec<Value> = held.relayed().iter().map(|m| m.served()).collect();
        assert_eq!(
            relayed, expected,
            "{r}: the bridge gets what it had not confirmed"
        );
        bridge
            .send_json(json!({"type": "bridge_ack", "seq": held.head}))
            .await;
        confirmed(worker, r, held.head).await;
        link = Some(bridge);
    }

    // The next message continues the seqs (and reaches the bridge).
    let (status, receipt) = http
        .post(
            &url,
            &full_token("upgraded"),
            r#"{"data":"after the upgrade"}"#,
        )
        .await;
    assert_eq!(
        (status, &receipt["seq"]),
        (201, &json!(held.head + 1)),
        "{r}: {receipt}"
    );
    let after = get(
        http,
        worker,
        &format!("/v1/rooms/{r}/messages?since={}", held.head),
    )
    .await;
    assert_eq!(
        after["messages"][0]["data"], "after the upgrade",
        "{r}: {after}"
    );
    if let Some(mut bridge) = link {
        assert_eq!(next_message(&mut bridge).await["seq"], held.head + 1, "{r}");
        bridge.close().await;
    }
}

/// The next `message` on a bridge link, past its `stats` frames.
async fn next_message(link: &mut Client) -> Value {
    loop {
        let frame = link.next_json().await;
        match frame["type"].as_str() {
            Some("stats") => continue,
            Some("message") => return frame,
            _ => panic!("expected a message on the bridge link, got {frame}"),
        }
    }
}

/// Waits until `/stats` shows the bridge confirmed `seq` and nothing is pending.
async fn confirmed(worker: &Worker, room: &str, seq: u64) {
    let deadline = Instant::now() + STEP;
    loop {
        let stats = worker.stats(room).await;
        if stats["cursor"] == seq && stats["pending"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{room}: the acknowledgement of {seq} never showed: {stats}"
        );
        sleep(Duration::from_millis(50)).await;
    }
}

fn seqs(held: &Held) -> Vec<u64> {
    held.rows.iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn rooms_of_the_first_release_keep_everything() {
    adopt("schema-0", |rooms| {
        let plain = &rooms["s0-plain"];
        assert_eq!(seqs(plain), [4, 5, 6, 7, 8], "trimmed to its newest 5");
        assert!(!plain.bridged && !plain.holds_traces());
        assert_eq!(seqs(&rooms["s0-short"]), [1, 2]);
    })
    .await;
}

/// The two rooms schemas 1 and 2 were written with (`{prefix}-plain`
/// and `{prefix}-linked`): traces and Kafka messages kept, and the linked
/// room's unconfirmed messages past the limit.
fn plain_and_linked(rooms: &HashMap<String, Held>, prefix: &str) {
    let plain = &rooms[&format!("{prefix}-plain")];
    assert!(!plain.bridged && plain.holds_traces() && plain.holds_kafka());
    let linked = &rooms[&format!("{prefix}-linked")];
    assert!(linked.bridged && linked.cursor == 3 && linked.holds_kafka());
    assert!(
        linked.rows.len() as u64 > LIMIT,
        "unconfirmed past the limit"
    );
}

#[tokio::test]
async fn rooms_with_traces_keep_everything() {
    adopt("schema-1", |rooms| plain_and_linked(rooms, "s1")).await;
}

#[tokio::test]
async fn rooms_from_the_release_before_the_ring_keep_everything() {
    adopt("schema-2", |rooms| plain_and_linked(rooms, "s2")).await;
}

/// The first ring moved only messages not from Kafka to the outbox, which
/// left holes: clients read from above the last one, the bridge still gets
/// everything above its cursor.
#[tokio::test]
async fn rooms_from_the_first_ring_keep_everything_above_their_holes() {
    adopt("schema-3", |rooms| {
        let plain = &rooms["s3-plain"];
        assert!(!plain.bridged && plain.holds_traces() && plain.holds_kafka());
        let hole = &rooms["s3-hole"];
        assert!(hole.bridged && hole.cursor == 0);
        assert_eq!(
            hole.holes(),
            [3],
            "the Kafka message fell out of the history"
        );
        let linked = &rooms["s3-linked"];
        assert!(linked.bridged && linked.cursor == 3);
        assert_eq!(linked.holes(), [5]);
        let wide = &rooms["s3-wide"];
        assert!(wide.bridged && wide.cursor == 0);
        assert_eq!(wide.holes(), [3, 4], "a hole of two messages");
    })
    .await;
}

async fn publish(http: &Http, worker: &Worker, room: &str, token: &str, from: u64, to: u64) {
    let url = worker.url(&format!("/v1/rooms/{room}/messages"));
    for start in (from..=to).step_by(100) {
        let messages: Vec<Value> = (start..=to.min(start + 99))
            .map(|n| json!({"data": {"n": n}, "id": format!("u-{n}")}))
            .collect();
        let (status, body) = http
            .post(&url, token, &json!({ "messages": messages }).to_string())
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

async fn seqs_after(http: &Http, worker: &Worker, room: &str, since: u64) -> Vec<u64> {
    let page = get(
        http,
        worker,
        &format!("/v1/rooms/{room}/messages?since={since}&limit=1000"),
    )
    .await;
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn a_changed_history_limit_resizes_the_ring() {
    let http = Http::default();
    let token = full_token("resizer");
    let r = room("resized");
    let limit = |n: &'static str| [("HISTORY_LIMIT", n), ("RATE_BURST", "1000")];
    let mut worker = Worker::start(&limit("100")).await;
    publish(&http, &worker, &r, &token, 1, 150).await;
    assert_eq!(
        seqs_after(&http, &worker, &r, 0).await,
        (51..=150).collect::<Vec<_>>()
    );
    worker.stop();

    let mut worker = Worker::start_in(worker.persist.clone(), &limit("200")).await;
    publish(&http, &worker, &r, &token, 151, 250).await;
    assert_eq!(
        seqs_after(&http, &worker, &r, 0).await,
        (51..=250).collect::<Vec<_>>(),
        "a larger ring keeps what the smaller one held, and fills up"
    );
    worker.stop();

    let worker = Worker::start_in(worker.persist.clone(), &limit("50")).await;
    assert_eq!(
        seqs_after(&http, &worker, &r, 0).await,
        (201..=250).collect::<Vec<_>>(),
        "a lower limit shows at once, before the next write"
    );
    publish(&http, &worker, &r, &token, 251, 260).await;
    assert_eq!(
        seqs_after(&http, &worker, &r, 0).await,
        (211..=260).collect::<Vec<_>>()
    );
}
