//! The dispatcher and its lanes over the in-memory broker and a fake worker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::*;
use crate::broker::Position;
use crate::memory::{MemorySink, MemorySource};
use crate::metrics::Metrics;
use crate::worker_api::{Outgoing, PublishError, Rooms};

/// A worker whose `failing` rooms answer 503 forever and which refuses any
/// record whose data is `"refuse me"`.
#[derive(Default)]
struct FakeRooms {
    failing: HashSet<String>,
    published: Mutex<Vec<(String, String)>>,
}

impl Rooms for FakeRooms {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        let outcome = if self.failing.contains(room) {
            Err(PublishError::Retry {
                why: "503".into(),
                after: Some(Duration::from_millis(5)),
            })
        } else if batch.iter().any(|o| o.data.get() == r#""refuse me""#) {
            Err(PublishError::Refused {
                code: "too_large".into(),
                message: "no".into(),
            })
        } else {
            let mut published = self.published.lock().unwrap();
            published.extend(batch.iter().map(|o| (room.to_owned(), o.id.to_owned())));
            Ok(())
        };
        futures_util::future::ready(outcome).boxed()
    }
}

fn record(offset: i64, key: Option<&str>, value: &str) -> Record {
    Record {
        topic: "in".into(),
        position: Position {
            partition: 0,
            offset,
        },
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        id: format!("kafka:in:0:{offset}"),
        trace: None,
        timestamp_ms: None,
    }
}

struct Run {
    rooms: Arc<FakeRooms>,
    sink: Arc<MemorySink>,
    source: MemorySource,
}

/// Relays `records` until `done` holds for what the rooms got (bounded),
/// then stops the relay and returns everything for inspection.
async fn relay_until(
    rooms: FakeRooms,
    records: Vec<Record>,
    done: impl Fn(&[(String, String)], &MemorySink) -> bool,
) -> Run {
    let rooms = Arc::new(rooms);
    let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
    let shared = Shared {
        rooms: rooms.clone(),
        sink: sink.clone(),
        metrics: Arc::new(Metrics::default()),
    };
    let mut source = MemorySource::new(records);
    let (trigger, stop) = Stop::new();
    let watching = async {
        for _ in 0..1000 {
            if done(&rooms.published.lock().unwrap(), &sink) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        trigger.fire();
    };
    let (ended, ()) = tokio::join!(relay(&mut source, &shared, stop), watching);
    assert_eq!(ended, Ended::Stopped);
    assert!(source.closed, "the source's commits were made durable");
    Run {
        rooms,
        sink,
        source,
    }
}

#[tokio::test]
async fn a_failing_room_holds_neither_the_others_nor_more_than_its_commit_point() {
    let mut records = vec![record(0, Some("stuck"), "0")];
    for n in 1..=40 {
        records.push(record(n, Some(&format!("room.{}", n % 20)), &n.to_string()));
    }
    let rooms = FakeRooms {
        failing: ["stuck".to_owned()].into(),
        ..FakeRooms::default()
    };
    let run = relay_until(rooms, records, |published, _| published.len() == 40).await;
    let published = run.rooms.published.lock().unwrap();
    assert_eq!(published.len(), 40, "every other room got its records");
    for room in 0..20 {
        let ids: Vec<&str> = published
            .iter()
            .filter(|(r, _)| *r == format!("room.{room}"))
            .map(|(_, id)| id.as_str())
            .collect();
        let n = if room == 0 { 20 } else { room };
        assert_eq!(
            ids,
            [format!("kafka:in:0:{n}"), format!("kafka:in:0:{}", n + 20)],
            "in order"
        );
    }
    assert!(
        run.source.commits.is_empty(),
        "nothing may be committed past the stuck record at offset 0: {:?}",
        run.source.commits
    );
}

#[tokio::test]
async fn a_refused_record_is_split_out_of_its_batch_and_dead_lettered() {
    let mut records: Vec<Record> = (0..6)
        .map(|n| record(n, Some("r"), &n.to_string()))
        .collect();
    records[2] = record(2, Some("r"), r#""refuse me""#);
    let run = relay_until(FakeRooms::default(), records, |published, sink| {
        published.len() == 5 && sink.dead_letters().len() == 1
    })
    .await;
    let ids: Vec<String> = run
        .rooms
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(
        ids,
        [0, 1, 3, 4, 5].map(|n| format!("kafka:in:0:{n}")),
        "the rest went in, in order"
    );
    let letter = &run.sink.dead_letters()[0];
    assert_eq!(letter.reason(), "too_large");
    assert_eq!(letter.value.as_deref(), Some(br#""refuse me""#.as_slice()));
    assert_eq!(run.source.commits.last(), Some(&(0, 6)));
}

#[tokio::test]
async fn records_that_cannot_be_routed_are_dead_lettered_with_their_reason() {
    let records = vec![
        record(0, None, "{}"),
        record(1, Some(".bad room"), "{}"),
        record(2, Some("r"), "not json"),
        record(3, Some("r"), r#"{"fine":true}"#),
    ];
    let run = relay_until(FakeRooms::default(), records, |published, sink| {
        published.len() == 1 && sink.dead_letters().len() == 3
    })
    .await;
    let reasons: Vec<String> = run
        .sink
        .dead_letters()
        .iter()
        .map(|l| l.reason().to_owned())
        .collect();
    assert_eq!(reasons, ["no_key", "bad_room", "bad_format"]);
    let offset_header = |l: &DeadLetter| {
        l.headers
            .iter()
            .find(|(k, _)| *k == "source-offset")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        offset_header(&run.sink.dead_letters()[1]).as_deref(),
        Some("1")
    );
    assert_eq!(run.source.commits.last(), Some(&(0, 4)));
}

#[tokio::test]
async fn a_fatal_source_error_ends_the_relay_for_a_rebuild() {
    let shared = Shared {
        rooms: Arc::new(FakeRooms::default()),
        sink: Arc::new(MemorySink::refusing_over(usize::MAX)),
        metrics: Arc::new(Metrics::default()),
    };
    let mut source = MemorySource::failing(
        vec![record(0, Some("r"), "1")],
        SourceError::Fatal("fenced".into()),
    );
    let (_trigger, stop) = Stop::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), relay(&mut source, &shared, stop))
        .await
        .expect("the relay ended");
    assert_eq!(ended, Ended::Fatal("fenced".into()));
}
