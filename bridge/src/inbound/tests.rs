//! The dispatcher and its lanes over the in-memory broker and a fake worker.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::wire::{Message, PresenceEvent};
use tokio::sync::Semaphore;

use super::*;
use crate::broker::{Delivery, Position, PositionKind, Sink, SinkError};
use crate::fake_worker::{self, Spec};
use crate::memory::{MemorySink, MemorySource};
use crate::metrics::{Metrics, TO_ROOM};
use crate::stop::Trigger;
use crate::worker_api::{Outgoing, PublishError, Rooms};

/// A worker whose `failing` rooms answer 503 forever, whose `stalled` rooms
/// never answer, and which refuses any record whose data is `"refuse me"`;
/// before that, it gives the answers in `script`, one per publish, and
/// answers 503 to a batch of more than `most` records. With a `gate`, each
/// record a room takes waits for one of its permits. Every publish is
/// recorded in `attempts`, answered or not.
#[derive(Default)]
struct FakeRooms {
    failing: HashSet<String>,
    stalled: HashSet<String>,
    gate: Option<Arc<Semaphore>>,
    script: Mutex<VecDeque<PublishError>>,
    most: Option<usize>,
    published: Mutex<Vec<(String, String)>>,
    /// Bytes of `data` of the records in `published`.
    published_bytes: AtomicUsize,
    /// Every publish: when, and the ids of its batch.
    attempts: Mutex<Vec<(Instant, Vec<String>)>>,
}

impl FakeRooms {
    fn gated(gate: Arc<Semaphore>) -> FakeRooms {
        FakeRooms {
            gate: Some(gate),
            ..FakeRooms::default()
        }
    }

    fn scripted(answers: impl IntoIterator<Item = PublishError>) -> FakeRooms {
        FakeRooms {
            script: Mutex::new(answers.into_iter().collect()),
            ..FakeRooms::default()
        }
    }

    fn published(&self) -> usize {
        self.published.lock().unwrap().len()
    }

    /// The ids of every batch published, answered or not.
    fn batches(&self) -> Vec<Vec<String>> {
        let attempts = self.attempts.lock().unwrap();
        attempts.iter().map(|(_, ids)| ids.clone()).collect()
    }
}

fn unavailable(after: Option<Duration>) -> PublishError {
    PublishError::Retry {
        why: "503".into(),
        after,
    }
}

/// A 503 that asks for a retry at once (the tests need not wait).
fn soon() -> PublishError {
    unavailable(Some(Duration::from_millis(1)))
}

impl Rooms for FakeRooms {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        let ids = batch.iter().map(|o| o.id.to_owned()).collect();
        self.attempts.lock().unwrap().push((Instant::now(), ids));
        let scripted = self.script.lock().unwrap().pop_front();
        async move {
            if let Some(answer) = scripted {
                return Err(answer);
            }
            if self.stalled.contains(room) {
                return futures_util::future::pending().await;
            }
            if self.failing.contains(room) || self.most.is_some_and(|most| batch.len() > most) {
                return Err(unavailable(Some(Duration::from_millis(5))));
            }
            if batch.iter().any(|o| o.data.get() == r#""refuse me""#) {
                return Err(PublishError::Refused {
                    code: "too_large".into(),
                    message: "no".into(),
                });
            }
            if let Some(gate) = &self.gate {
                let permits = u32::try_from(batch.len()).unwrap();
                gate.acquire_many(permits).await.unwrap().forget();
            }
            let mut published = self.published.lock().unwrap();
            published.extend(batch.iter().map(|o| (room.to_owned(), o.id.to_owned())));
            let bytes: usize = batch.iter().map(|o| o.data.get().len()).sum();
            self.published_bytes.fetch_add(bytes, Ordering::SeqCst);
            Ok(())
        }
        .boxed()
    }
}

fn record(offset: i64, key: Option<&str>, value: &str) -> Record {
    Record {
        topic: "in".into(),
        position: Position {
            partition: 0,
            offset,
        },
        kind: PositionKind::Offset,
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

/// What docs/protocol.md ("Delivery") lets the inbound relay hold before
/// consumption pauses: records taken from the source and not yet in their
/// room, and the bytes of their values.
const HELD_RECORDS: usize = 10_000;
const HELD_BYTES: usize = 64 * 1024 * 1024;

/// A record for `room` at `partition`/`offset` with `value` as its JSON.
fn record_at(partition: i32, offset: i64, room: &str, value: String) -> Record {
    Record {
        position: Position { partition, offset },
        id: format!("kafka:in:{partition}:{offset}"),
        ..record(offset, Some(room), &value)
    }
}

/// Lets every task run until none can move. The clock is paused, and a
/// paused clock only moves on when the runtime has nothing else to do, so
/// when this sleep ends the relay and its lanes are waiting for the rooms
/// (or for records) and what they took and published is settled.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// What the relay took from the source, as the source saw it.
#[derive(Default)]
struct Taken {
    records: usize,
    bytes: usize,
    /// The most records and bytes held at any point a record was taken:
    /// what was taken less what the rooms had stored. (The relay learns of
    /// a stored record a moment after the room has it, so what it holds is
    /// at least this much.)
    most_held_records: usize,
    most_held_bytes: usize,
}

impl Taken {
    fn held_bytes(&self, rooms: &FakeRooms) -> usize {
        self.bytes - rooms.published_bytes.load(Ordering::SeqCst)
    }
}

/// A source of `records` that counts into `taken` what the relay takes.
fn watched(records: Vec<Record>, rooms: Arc<FakeRooms>, taken: Arc<Mutex<Taken>>) -> MemorySource {
    MemorySource::watched(records, move |record| {
        let mut taken = taken.lock().unwrap();
        taken.records += 1;
        taken.bytes += record.value.as_ref().map_or(0, Vec::len);
        let held_records = taken.records - rooms.published();
        let held_bytes = taken.held_bytes(&rooms);
        taken.most_held_records = taken.most_held_records.max(held_records);
        taken.most_held_bytes = taken.most_held_bytes.max(held_bytes);
    })
}

/// What lanes share: `rooms`, and a dead-letter topic that takes anything.
fn shared_with(rooms: Arc<FakeRooms>) -> Shared {
    Shared {
        rooms,
        sink: Arc::new(MemorySink::refusing_over(usize::MAX)),
        metrics: Arc::new(Metrics::default()),
    }
}

/// Each room's record ids in the order the records were made, which is
/// the order the room must get them in.
fn ids_by_room(records: &[Record]) -> BTreeMap<String, Vec<String>> {
    let mut rooms: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let room = String::from_utf8(r.key.clone().unwrap()).unwrap();
        rooms.entry(room).or_default().push(r.id.clone());
    }
    rooms
}

/// Checks that every room got each of its records once, in order, and
/// that every partition was committed past its last record.
fn assert_all_delivered_in_order(records: &[Record], rooms: &FakeRooms, source: &MemorySource) {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (room, id) in rooms.published.lock().unwrap().iter() {
        got.entry(room.clone()).or_default().push(id.clone());
    }
    let expected = ids_by_room(records);
    for (room, ids) in &expected {
        assert!(
            got.get(room) == Some(ids),
            "{room} got {} records, not its {} in order: first difference at {:?}",
            got.get(room).map_or(0, Vec::len),
            ids.len(),
            got.get(room)
                .and_then(|g| g.iter().zip(ids).position(|(a, b)| a != b))
        );
    }
    assert_eq!(got.len(), expected.len(), "records went to unknown rooms");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for r in records {
        let end = ends.entry(r.position.partition).or_default();
        *end = (*end).max(r.position.offset + 1);
    }
    let mut committed: BTreeMap<i32, i64> = BTreeMap::new();
    for (partition, offset) in &source.commits {
        committed.insert(*partition, *offset);
    }
    assert_eq!(
        committed, ends,
        "each partition committed past its last record"
    );
    assert!(source.closed, "the source's commits were made durable");
}

#[tokio::test(start_paused = true)]
async fn consumption_pauses_at_10_000_records_held_and_resumes_without_loss_or_reordering() {
    const TOTAL: i64 = 12_500;
    // Seven rooms over two partitions, interleaved, so that the rooms'
    // lanes finish records of one partition out of order.
    let records: Vec<Record> = (0..TOTAL)
        .map(|n| {
            record_at(
                (n % 2) as i32,
                n / 2,
                &format!("room.{}", n % 7),
                n.to_string(),
            )
        })
        .collect();
    let gate = Arc::new(Semaphore::new(0));
    let rooms = Arc::new(FakeRooms::gated(gate.clone()));
    let taken = Arc::new(Mutex::new(Taken::default()));
    let mut source = watched(records.clone(), rooms.clone(), taken.clone());
    let shared = shared_with(rooms.clone());
    let (trigger, stop) = Stop::new();
    let driving = async {
        // The rooms take nothing yet: consumption stops at the bound.
        settle().await;
        assert_eq!(rooms.published(), 0);
        assert_eq!(
            taken.lock().unwrap().records,
            HELD_RECORDS,
            "taken while nothing finished"
        );
        // Some go into their rooms: consumption resumes, up to the bound again.
        gate.add_permits(2_500);
        settle().await;
        let published = rooms.published();
        assert!(published > 0, "the rooms took nothing");
        assert_eq!(
            taken.lock().unwrap().records,
            published + HELD_RECORDS,
            "after {published} were in their rooms"
        );
        gate.add_permits(TOTAL as usize);
        settle().await;
        trigger.fire();
    };
    let (ended, ()) = tokio::join!(relay(&mut source, &shared, stop), driving);
    assert_eq!(ended, Ended::Stopped);
    let taken = taken.lock().unwrap();
    assert_eq!(taken.records, TOTAL as usize);
    assert!(
        taken.most_held_records <= HELD_RECORDS,
        "{} records held at once",
        taken.most_held_records
    );
    assert_all_delivered_in_order(&records, &rooms, &source);
}

#[tokio::test(start_paused = true)]
async fn consumption_pauses_once_64_mib_of_values_are_held_and_resumes_without_loss_or_reordering()
{
    // Values of a million bytes: 64 MiB is crossed by the 68th record.
    const VALUE: usize = 1_000_000;
    const TOTAL: i64 = 150;
    let value = format!("\"{}\"", "x".repeat(VALUE - 2));
    let records: Vec<Record> = (0..TOTAL)
        .map(|n| record_at(0, n, &format!("room.{}", n % 3), value.clone()))
        .collect();
    let gate = Arc::new(Semaphore::new(0));
    let rooms = Arc::new(FakeRooms::gated(gate.clone()));
    let taken = Arc::new(Mutex::new(Taken::default()));
    let mut source = watched(records.clone(), rooms.clone(), taken.clone());
    let shared = shared_with(rooms.clone());
    let (trigger, stop) = Stop::new();
    // Paused on the bytes bound: the last record taken is the one that
    // reached it, and none was taken after.
    let assert_paused_at_the_bound = |when: &str| {
        let taken = taken.lock().unwrap();
        let held = taken.held_bytes(&rooms);
        assert!(
            held >= HELD_BYTES && held - VALUE < HELD_BYTES,
            "{when}: {held} bytes held ({} records taken)",
            taken.records
        );
    };
    let driving = async {
        settle().await;
        assert_eq!(rooms.published(), 0);
        assert_paused_at_the_bound("nothing finished");
        gate.add_permits(20);
        settle().await;
        assert!(rooms.published() > 0, "the rooms took nothing");
        assert_paused_at_the_bound("after some finished");
        gate.add_permits(TOTAL as usize);
        settle().await;
        trigger.fire();
    };
    let (ended, ()) = tokio::join!(relay(&mut source, &shared, stop), driving);
    assert_eq!(ended, Ended::Stopped);
    let taken = taken.lock().unwrap();
    assert_eq!(taken.records, TOTAL as usize);
    assert!(
        taken.most_held_bytes < HELD_BYTES + VALUE,
        "{} bytes held at once",
        taken.most_held_bytes
    );
    assert_all_delivered_in_order(&records, &rooms, &source);
}

#[tokio::test(start_paused = true)]
async fn a_stop_lets_lanes_finish_what_they_hold_then_commits_and_closes() {
    let records: Vec<Record> = (0..6)
        .map(|n| record_at(0, n, ["a", "b"][n as usize % 2], n.to_string()))
        .collect();
    let gate = Arc::new(Semaphore::new(0));
    let rooms = Arc::new(FakeRooms::gated(gate.clone()));
    let taken = Arc::new(Mutex::new(Taken::default()));
    let mut source = watched(records.clone(), rooms.clone(), taken.clone());
    let shared = shared_with(rooms.clone());
    let (trigger, stop) = Stop::new();
    let driving = async {
        settle().await;
        assert_eq!(taken.lock().unwrap().records, 6);
        trigger.fire();
        // Stopping, the relay waits for the lanes' publishes.
        settle().await;
        assert_eq!(rooms.published(), 0);
        gate.add_permits(6);
    };
    let (ended, ()) = tokio::join!(relay(&mut source, &shared, stop), driving);
    assert_eq!(ended, Ended::Stopped);
    assert_all_delivered_in_order(&records, &rooms, &source);
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_10_s_for_a_stalled_lane_and_does_not_commit_its_record() {
    let records = vec![
        record(0, Some("flowing"), "0"),
        record(1, Some("stuck"), "1"),
        record(2, Some("flowing"), "2"),
    ];
    let rooms = Arc::new(FakeRooms {
        stalled: ["stuck".to_owned()].into(),
        ..FakeRooms::default()
    });
    let mut source = MemorySource::new(records);
    let shared = shared_with(rooms.clone());
    let (trigger, stop) = Stop::new();
    let stopped = async {
        settle().await;
        assert_eq!(rooms.published(), 2);
        trigger.fire();
        tokio::time::Instant::now()
    };
    let (ended, stopped) = tokio::join!(relay(&mut source, &shared, stop), stopped);
    let drained = stopped.elapsed();
    assert_eq!(ended, Ended::Stopped);
    assert!(
        drained >= Duration::from_secs(10) && drained < Duration::from_secs(11),
        "the relay ended {drained:?} after the stop"
    );
    assert_eq!(
        source.commits.last(),
        Some(&(0, 1)),
        "committed up to the stalled record, which is consumed again next time"
    );
    assert!(source.closed, "the source's commits were made durable");
}

/// A record for room `r` holding `data` (JSON), ready for its lane.
fn ready(offset: i64, data: &str) -> Ready {
    Ready {
        record: Record {
            value: None,
            ..record(offset, Some("r"), data)
        },
        data: RawValue::from_string(data.to_owned()).unwrap(),
    }
}

/// Runs one lane over `queued` (all queued before it starts, so its
/// batches are decided by its own bounds) until its queue is empty; the
/// records it finished, in order.
async fn run_lane(shared: &Shared, queued: Vec<Ready>) -> Vec<i64> {
    let (queue, rx) = mpsc::unbounded_channel();
    let (finished, mut done) = mpsc::unbounded_channel();
    for ready in queued {
        queue.send(ready).unwrap();
    }
    drop(queue);
    let (_trigger, stop) = Stop::new();
    let lane = Lane::new("r".into(), rx, finished, shared.clone(), stop);
    tokio::time::timeout(Duration::from_secs(30), lane.run())
        .await
        .expect("the lane emptied its queue");
    let mut offsets = Vec::new();
    while let Ok(f) = done.try_recv() {
        offsets.push(f.position.offset);
    }
    offsets
}

fn ids(offsets: impl IntoIterator<Item = i64>) -> Vec<String> {
    offsets
        .into_iter()
        .map(|n| format!("kafka:in:0:{n}"))
        .collect()
}

#[tokio::test]
async fn a_lane_batches_up_to_500_records() {
    let rooms = Arc::new(FakeRooms::default());
    let shared = shared_with(rooms.clone());
    let queued = (0..501).map(|n| ready(n, "1")).collect();
    assert_eq!(
        run_lane(&shared, queued).await,
        (0..501).collect::<Vec<_>>()
    );
    assert_eq!(rooms.batches(), [ids(0..500), ids([500])]);
}

#[tokio::test]
async fn a_lane_batches_up_to_a_mebibyte_of_values() {
    let rooms = Arc::new(FakeRooms::default());
    let shared = shared_with(rooms.clone());
    // Two of these are exactly 1 MiB.
    let half = format!("\"{}\"", "x".repeat(512 * 1024 - 2));
    let queued = (0..3).map(|n| ready(n, &half)).collect();
    assert_eq!(run_lane(&shared, queued).await, [0, 1, 2]);
    assert_eq!(rooms.batches(), [ids([0, 1]), ids([2])]);

    // A byte short of 1 MiB, then one byte: the batch is full.
    let rooms = Arc::new(FakeRooms::default());
    let shared = shared_with(rooms.clone());
    let almost = format!("\"{}\"", "x".repeat(1024 * 1024 - 3));
    let queued = vec![ready(0, &almost), ready(1, "1"), ready(2, "2")];
    assert_eq!(run_lane(&shared, queued).await, [0, 1, 2]);
    assert_eq!(rooms.batches(), [ids([0, 1]), ids([2])]);
}

#[tokio::test]
async fn a_lane_retries_a_failed_batch_whole_then_splits_it() {
    // Two failures: the third attempt takes the batch as it was.
    let rooms = Arc::new(FakeRooms::scripted([soon(), soon()]));
    let shared = shared_with(rooms.clone());
    assert_eq!(
        run_lane(&shared, vec![ready(0, "1"), ready(1, "2")]).await,
        [0, 1]
    );
    assert_eq!(rooms.batches(), [ids([0, 1]), ids([0, 1]), ids([0, 1])]);

    // A batch the room never takes whole is split after the third failure.
    let rooms = Arc::new(FakeRooms {
        most: Some(1),
        ..FakeRooms::default()
    });
    let shared = shared_with(rooms.clone());
    assert_eq!(
        run_lane(&shared, vec![ready(0, "1"), ready(1, "2")]).await,
        [0, 1]
    );
    assert_eq!(
        rooms.batches(),
        [ids([0, 1]), ids([0, 1]), ids([0, 1]), ids([0]), ids([1])]
    );
    assert_eq!(
        shared.metrics.relayed.with_label_values(&[TO_ROOM]).get(),
        2
    );
}

#[tokio::test]
async fn a_lane_retries_one_record_as_long_as_it_takes() {
    let rooms = Arc::new(FakeRooms::scripted((0..4).map(|_| soon())));
    let shared = shared_with(rooms.clone());
    assert_eq!(run_lane(&shared, vec![ready(0, "1")]).await, [0]);
    assert_eq!(
        rooms.batches(),
        vec![ids([0]); 5],
        "never split, never empty"
    );
}

#[tokio::test]
async fn a_lane_waits_as_long_as_the_room_asks() {
    let after = Duration::from_millis(400);
    let rooms = Arc::new(FakeRooms::scripted([unavailable(Some(after))]));
    let shared = shared_with(rooms.clone());
    assert_eq!(run_lane(&shared, vec![ready(0, "1")]).await, [0]);
    let attempts = rooms.attempts.lock().unwrap();
    let waited = attempts[1].0 - attempts[0].0;
    // Its own backoff would have waited 100 ms at most.
    assert!(waited >= after, "waited {waited:?}");
}

#[tokio::test]
async fn a_lane_counts_what_it_relayed_and_how_late() {
    let rooms = Arc::new(FakeRooms::default());
    let shared = shared_with(rooms.clone());
    let mut late = ready(0, "1");
    late.record.timestamp_ms = Some(now_ms() - 2_000);
    assert_eq!(run_lane(&shared, vec![late, ready(1, "2")]).await, [0, 1]);
    assert_eq!(
        shared.metrics.relayed.with_label_values(&[TO_ROOM]).get(),
        2
    );
    let seconds = shared.metrics.relay_seconds.with_label_values(&[TO_ROOM]);
    assert_eq!(
        seconds.get_sample_count(),
        1,
        "only a record with a timestamp"
    );
    let age = seconds.get_sample_sum();
    assert!((2.0..60.0).contains(&age), "{age} s");
}

/// A source of `make(offset)` records without end, which fires `trigger`
/// as it hands out the `stop_at`-th: a relay that takes no more by then
/// sees the stop before it asks again, one that would take more asks first.
/// A record is made when the relay polls for it, as Kafka's source does
/// (`select!` creates a future for a disabled branch too, and drops it).
struct Feed {
    made: i64,
    stop_at: i64,
    trigger: Trigger,
    make: Box<dyn Fn(i64) -> Record + Send>,
}

impl Source for Feed {
    fn next(&mut self) -> BoxFuture<'_, Result<Record, SourceError>> {
        async move {
            let record = (self.make)(self.made);
            self.made += 1;
            if self.made == self.stop_at {
                self.trigger.fire();
            }
            Ok(record)
        }
        .boxed()
    }

    fn commit(&mut self, _: i32, _: i64) -> Result<(), SourceError> {
        Ok(())
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// How many records the relay takes for a room that never answers before
/// it pauses, each record being `make(offset)`.
async fn taken_before_pausing(stop_at: usize, make: Box<dyn Fn(i64) -> Record + Send>) -> i64 {
    let rooms = Arc::new(FakeRooms {
        failing: ["r".to_owned()].into(),
        ..FakeRooms::default()
    });
    let (trigger, stop) = Stop::new();
    let mut feed = Feed {
        made: 0,
        stop_at: stop_at as i64,
        trigger,
        make,
    };
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        relay(&mut feed, &shared_with(rooms), stop),
    )
    .await
    .expect("the relay stopped");
    assert_eq!(ended, Ended::Stopped);
    feed.made
}

// On a paused clock, the drain's 10 s wait for the failing lane, and the
// bound on a relay that paused too early, pass as soon as nothing can move.
#[tokio::test(start_paused = true)]
async fn consumption_pauses_at_exactly_64_mib_of_values_held() {
    // Values of exactly 1 MiB: the 64th reaches the bound, and no more is taken.
    let mib = format!("\"{}\"", "x".repeat(1024 * 1024 - 2));
    let made = taken_before_pausing(64, Box::new(move |n| record(n, Some("r"), &mib))).await;
    assert_eq!(made as usize * 1024 * 1024, HELD_BYTES);
}

/// The dispatcher over `shared`, as `relay` makes it.
fn dispatcher(
    shared: &Shared,
    stop: Stop,
    finished: mpsc::UnboundedSender<Finished>,
) -> Dispatcher<'_> {
    Dispatcher {
        shared,
        stop,
        offsets: Offsets::default(),
        held_bytes: 0,
        lanes: HashMap::new(),
        tasks: JoinSet::new(),
        finished,
    }
}

async fn next_finished(done: &mut mpsc::UnboundedReceiver<Finished>) -> Finished {
    tokio::time::timeout(Duration::from_secs(10), done.recv())
        .await
        .expect("a lane finished a record")
        .expect("lanes are running")
}

#[tokio::test]
async fn a_room_has_a_lane_while_it_has_records_and_none_when_idle() {
    let shared = shared_with(Arc::new(FakeRooms::default()));
    let (_trigger, stop) = Stop::new();
    let (finished, mut done) = mpsc::unbounded_channel();
    let mut d = dispatcher(&shared, stop, finished);
    let mut source = MemorySource::new(Vec::new());
    assert!(d.take(&mut source, record(0, Some("r"), "1")).await);
    assert!(d.take(&mut source, record(1, Some("r"), "[2]")).await);
    assert_eq!((d.lanes["r"].outstanding, d.held_bytes), (2, 4));
    d.finish(&mut source, next_finished(&mut done).await);
    assert_eq!((d.lanes["r"].outstanding, d.held_bytes), (1, 3));
    d.finish(&mut source, next_finished(&mut done).await);
    assert!(d.lanes.is_empty(), "an idle room costs nothing");
    assert_eq!(d.held_bytes, 0);
    assert_eq!(source.commits, [(0, 1), (0, 2)]);
}

#[tokio::test]
async fn a_record_reaches_its_lane_holding_its_value_once() {
    let shared = shared_with(Arc::new(FakeRooms::default()));
    let (_trigger, stop) = Stop::new();
    let (finished, _done) = mpsc::unbounded_channel();
    let mut d = dispatcher(&shared, stop, finished);
    let (queue, mut lane) = mpsc::unbounded_channel();
    d.lanes.insert(
        "r".into(),
        LaneHandle {
            queue,
            outstanding: 0,
        },
    );
    let mut source = MemorySource::new(Vec::new());
    assert!(
        d.take(&mut source, record(0, Some("r"), r#"{"a": 1}"#))
            .await
    );
    let ready = lane.try_recv().expect("queued on the room's lane");
    assert_eq!(ready.data.get(), r#"{"a": 1}"#);
    assert!(ready.record.value.is_none(), "only as its checked data");
    assert_eq!(d.held_bytes, ready.bytes());
}

/// A broker that is down: it takes neither messages, presence events nor
/// dead letters.
struct Down;

impl Down {
    fn delivery() -> BoxFuture<'static, Delivery> {
        let delivery: Delivery = futures_util::future::ready(Err(down())).boxed();
        futures_util::future::ready(delivery).boxed()
    }
}

impl Sink for Down {
    fn publish<'a>(&'a self, _: &'a Message) -> BoxFuture<'a, Delivery> {
        Down::delivery()
    }

    fn relays_presence(&self) -> bool {
        true
    }

    fn presence<'a>(&'a self, _: &'a PresenceEvent) -> BoxFuture<'a, Delivery> {
        Down::delivery()
    }

    fn dead_letter<'a>(&'a self, _: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        futures_util::future::ready(Err(down())).boxed()
    }
}

fn down() -> SinkError {
    SinkError::Unavailable("down".into())
}

#[tokio::test]
async fn a_stop_while_a_dead_letter_waits_for_the_broker_takes_nothing_more() {
    let shared = Shared {
        sink: Arc::new(Down),
        ..shared_with(Arc::new(FakeRooms::default()))
    };
    let (trigger, stop) = Stop::new();
    trigger.fire();
    let (finished, _done) = mpsc::unbounded_channel();
    let mut d = dispatcher(&shared, stop, finished);
    let mut source = MemorySource::new(Vec::new());
    assert!(!d.take(&mut source, record(0, None, "1")).await);
    assert!(source.commits.is_empty(), "nor is it committed");
}

/// A test bridge ([`fake_worker::bridge`]) with the Kafka client
/// properties `config`; its broker and its worker are nowhere.
fn bridge(config: &[&str]) -> Arc<Bridge> {
    let (_trigger, stop) = Stop::new();
    let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
    let bridge = fake_worker::bridge("http://127.0.0.1:9", sink, Spec::default(), stop);
    let mut bridge = Arc::into_inner(bridge).unwrap();
    bridge.sources = Arc::new(fake_worker::kafka(config));
    Arc::new(bridge)
}

#[tokio::test]
async fn the_consumer_is_up_while_relaying_and_rebuilt_until_the_stop() {
    let (trigger, stop) = Stop::new();
    trigger.fire();
    let consumer = |bridge: &Bridge| {
        let (_, health) = bridge.metrics.health();
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        health["consumer"].as_str().unwrap().to_owned()
    };

    let working = bridge(&[]);
    tokio::time::timeout(Duration::from_secs(30), run(working.clone(), stop.clone()))
        .await
        .expect("it stopped");
    assert_eq!(consumer(&working), "up");

    // librdkafka refuses the property: the consumer cannot be built.
    let broken = bridge(&["no.such.property=1"]);
    broken.metrics.set_consumer_up(true);
    tokio::time::timeout(Duration::from_secs(30), run(broken.clone(), stop))
        .await
        .expect("a consumer that cannot be built is tried again until the stop");
    assert_eq!(consumer(&broken), "down");
}

#[tokio::test]
async fn an_amqp_source_that_cannot_connect_is_opened_again_until_the_stop() {
    // A "broker" that takes each connection and hangs up at once: every
    // open fails its handshake, and each attempt shows as an accept.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "amqp://127.0.0.1:{}/%2f",
        listener.local_addr().unwrap().port()
    );
    let accepts = Arc::new(AtomicUsize::new(0));
    let counted = accepts.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let (_trigger, stop) = Stop::new();
    let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
    let bridge = fake_worker::bridge("http://127.0.0.1:9", sink, Spec::default(), stop);
    let mut bridge = Arc::into_inner(bridge).unwrap();
    bridge.sources = Arc::new(crate::amqp::Amqp {
        target: crate::amqp::Target::load(&url.parse().unwrap(), None).unwrap(),
        tls: crate::tls::client_config(None).unwrap(),
        events_exchange: "events".into(),
        presence_exchange: None,
        inbound_queue: "inbound".into(),
        dead_letter_exchange: "dlx".into(),
        dead_letter_queue: "dlq".into(),
        prefetch: 10,
        instance: "me".into(),
    });
    let bridge = Arc::new(bridge);
    bridge.metrics.set_consumer_up(true);
    let (trigger, stop) = Stop::new();
    let running = tokio::spawn(run(bridge.clone(), stop));
    tokio::time::timeout(Duration::from_secs(30), async {
        while accepts.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the source was opened again after each failure");
    let (healthy, health) = bridge.metrics.health();
    assert!(
        !healthy && health.contains(r#""consumer":"down""#),
        "{health}"
    );
    trigger.fire();
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("a stop ends the retries")
        .unwrap();
}
