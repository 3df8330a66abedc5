//! End to end: a room written by an earlier release opens under this one
//! with nothing lost. Rooms live as long as their storage, so the schema
//! migrations run on rooms that are months old, in production, once.
//!
//! The earlier release's storage is made the way it left it: the worker
//! writes two rooms, stops, and their SQLite files (workerd keeps one per
//! Durable Object under `--persist-to`) are rewritten to schema version 2,
//! one `messages` log per room. The restarted worker must adopt that log:
//! the newest `HISTORY_LIMIT` into its ring, the unconfirmed rest of an
//! outbox into its outbox, every id still owned, seq continuing.

use std::path::{Path, PathBuf};

use roomcast_tests::{full_token, room, Client, Http, Worker};
use rusqlite::Connection;
use serde_json::{json, Value};

const VARS: &[(&str, &str)] = &[
    ("BRIDGE", "on"),
    ("HISTORY_LIMIT", "100"),
    ("OUTBOX_LIMIT", "1000"),
    ("RATE_BURST", "1000"),
];

/// Schema version 2 (before the ring), as that release created it.
const LEGACY: &str = "
    CREATE TABLE messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT);
    INSERT INTO messages SELECT seq, id, ts, sender, origin, data, trace FROM outbox UNION ALL SELECT seq, id, ts, sender, origin, data, trace FROM ring;
    DROP TABLE ring;
    DROP TABLE outbox;
    UPDATE meta SET value = '2' WHERE key = 'schema';
    DELETE FROM meta WHERE key = 'ring';
";

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

/// Every `.sqlite` file under `dir`.
fn sqlite_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("persist directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(sqlite_files(&path));
        } else if path.extension().is_some_and(|e| e == "sqlite") {
            found.push(path);
        }
    }
    found
}

/// The storage of the room named `name`.
fn room_storage(persist: &Path, name: &str) -> Connection {
    sqlite_files(persist)
        .into_iter()
        .filter_map(|path| Connection::open(path).ok())
        .find(|db| {
            db.query_row("SELECT value FROM meta WHERE key = 'room'", [], |r| {
                r.get::<_, String>(0)
            })
            .is_ok_and(|room| room == name)
        })
        .unwrap_or_else(|| panic!("no storage for room {name} under {}", persist.display()))
}

async fn seqs_after(http: &Http, worker: &Worker, room: &str, since: u64) -> Vec<u64> {
    let url = worker.url(&format!(
        "/v1/rooms/{room}/messages?since={since}&limit=1000"
    ));
    let (status, page) = http.get(&url, Some(&full_token("reader"))).await;
    assert_eq!(status, 200, "{page}");
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test]
async fn rooms_from_the_release_before_the_ring_keep_everything() {
    let http = Http::default();
    let token = full_token("upgrader");
    let (outbox, plain) = (room("legacy-outbox"), room("legacy-plain"));
    let mut first = Worker::start(VARS).await;
    publish(&http, &first, &outbox, &token, 1, 250).await;
    publish(&http, &first, &plain, &token, 1, 250).await;
    let epoch = first.stats(&plain).await["epoch"].clone();
    first.stop();

    for name in [&outbox, &plain] {
        let db = room_storage(&first.persist, name);
        db.execute_batch(LEGACY).expect("rewrite to schema 2");
        if name == &plain {
            // A room no bridge ever linked: it holds only its history.
            db.execute("DELETE FROM meta WHERE key = 'bridged'", [])
                .expect("unbridge");
        }
        let rows: u64 = db
            .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 250, "the legacy log holds every message");
    }

    let second = Worker::start_in(first.persist.clone(), VARS).await;
    assert_eq!(
        seqs_after(&http, &second, &outbox, 0).await,
        (1..=250).collect::<Vec<_>>(),
        "an outbox keeps every unconfirmed message, visible"
    );
    assert_eq!(second.stats(&outbox).await["pending"], 250);
    assert_eq!(
        seqs_after(&http, &second, &plain, 0).await,
        (151..=250).collect::<Vec<_>>(),
        "a plain room keeps its newest HISTORY_LIMIT"
    );
    let before = second.stats(&plain).await;
    assert_eq!(before["epoch"], epoch, "the epoch survives: clients resume");

    let (status, dup) = http
        .post(
            &second.url(&format!("/v1/rooms/{plain}/messages")),
            &token,
            r#"{"data":0,"id":"u-200"}"#,
        )
        .await;
    assert_eq!(
        (status, dup["seq"].as_u64(), dup["duplicate"].as_bool()),
        (201, Some(200), Some(true)),
        "ids stored before the upgrade are still owned: {dup}"
    );
    let (status, conflict) = http
        .post(
            &second.url(&format!("/v1/rooms/{plain}/messages")),
            &full_token("someone-else"),
            r#"{"data":0,"id":"u-201"}"#,
        )
        .await;
    assert_eq!(status, 409, "{conflict}");

    publish(&http, &second, &plain, &token, 251, 350).await;
    let after = second.stats(&plain).await;
    let rows = |s: &Value| s["storage"]["rows_written"].as_f64().expect("rows");
    let per_message = (rows(&after) - rows(&before)) / 100.0;
    assert!(
        per_message <= 1.1,
        "{per_message} rows written per message after the upgrade: the ring is in use"
    );

    let mut client = Client::connect(&second.ws_url(&format!(
        "/v1/rooms/{plain}/ws?token={token}&since=340&epoch={}",
        epoch.as_str().expect("epoch")
    )))
    .await;
    let welcome = client.expect("welcome").await;
    assert_eq!(welcome["recovered"], true, "{welcome}");
    for seq in 341..=350 {
        assert_eq!(client.expect("message").await["seq"], seq);
    }
    client
        .send_json(json!({"type": "publish", "data": "after the upgrade"}))
        .await;
    assert_eq!(client.expect("message").await["seq"], 351);
    publish(&http, &second, &outbox, &token, 251, 260).await;
    assert_eq!(
        seqs_after(&http, &second, &outbox, 0).await.len(),
        260,
        "the outbox keeps growing past the history while no bridge confirms"
    );
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
