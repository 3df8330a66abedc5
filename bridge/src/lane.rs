//! One room's lane of the inbound relay: its records, in order, into the
//! room through the worker's batch API.
//!
//! A lane owns its failures. A room that keeps failing is retried here,
//! with backoff, while every other lane keeps flowing; a batch that keeps
//! failing is split, so one bad record or one oversized batch cannot hold
//! the rest; a record the room refuses for its content is dead-lettered.
//! Records leave the lane only as finished, which is when the dispatcher
//! may commit past them.

use std::sync::Arc;
use std::time::Duration;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::draft::KafkaPosition;
use roomcast_protocol::wire::MAX_BATCH;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::backoff::Backoff;
use crate::broker::{DeadLetter, Position, PositionKind, Record, Sink};
use crate::dlq;
use crate::metrics::{Metrics, TO_ROOM};
use crate::stop::Stop;
use crate::worker_api::{Outgoing, PublishError, Rooms};

/// Most bytes of record values in one batch publish, well under the
/// worker's body limit.
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Failed attempts after which a batch of several records is split.
const SPLIT_AFTER: u32 = 3;
/// The longest `Retry-After` honoured; longer ones are capped.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A record on its way into its room. Its value is held once, as the
/// checked JSON in `data` (the record's own `value` is dropped).
pub struct Ready {
    pub record: Record,
    pub data: Box<RawValue>,
}

impl Ready {
    fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            data: &self.data,
            id: &self.record.id,
            trace: self.record.trace.as_deref(),
            // Only a log's offset names the record for good; a delivery
            // tag names one delivery on one channel, and a room that took it
            // as an offset would refuse the next channel's records as old.
            kafka: (self.record.kind == PositionKind::Offset).then(|| KafkaPosition {
                topic: self.record.topic.to_string(),
                partition: self.record.position.partition,
                offset: self.record.position.offset,
            }),
        }
    }

    pub fn bytes(&self) -> usize {
        self.data.get().len()
    }
}

/// A record the lane is done with (in the room, or dead-lettered).
pub struct Finished {
    pub room: Arc<str>,
    pub position: Position,
    pub bytes: usize,
}

/// What a lane shares with the other lanes.
#[derive(Clone)]
pub struct Shared {
    pub rooms: Arc<dyn Rooms>,
    pub sink: Arc<dyn Sink>,
    pub metrics: Arc<Metrics>,
}

pub struct Lane {
    room: Arc<str>,
    queue: mpsc::UnboundedReceiver<Ready>,
    finished: mpsc::UnboundedSender<Finished>,
    shared: Shared,
    stop: Stop,
}

impl Lane {
    pub fn new(
        room: Arc<str>,
        queue: mpsc::UnboundedReceiver<Ready>,
        finished: mpsc::UnboundedSender<Finished>,
        shared: Shared,
        stop: Stop,
    ) -> Lane {
        Lane {
            room,
            queue,
            finished,
            shared,
            stop,
        }
    }

    /// Runs until the dispatcher drops the queue or the bridge stops.
    pub async fn run(mut self) {
        while let Some(first) = self.queue.recv().await {
            let batch = self.fill(first);
            if !self.deliver(&batch).await {
                return;
            }
            for ready in batch {
                let _ = self.finished.send(Finished {
                    room: self.room.clone(),
                    position: ready.record.position,
                    bytes: ready.bytes(),
                });
            }
        }
    }

    /// `first` and whatever else is queued, up to a batch.
    fn fill(&mut self, first: Ready) -> Vec<Ready> {
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match self.queue.try_recv() {
                Ok(next) => {
                    bytes += next.bytes();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        batch
    }

    /// Puts `batch` into the room; `false` when stopped first.
    async fn deliver(&mut self, batch: &[Ready]) -> bool {
        let mut backoff = Backoff::network();
        let mut failures = 0;
        loop {
            let outgoing: Vec<Outgoing<'_>> = batch.iter().map(Ready::outgoing).collect();
            let error = match self.shared.rooms.publish(&self.room, &outgoing).await {
                Ok(()) => {
                    self.shared.metrics.set_publish_ok(true);
                    self.count(batch);
                    return true;
                }
                Err(PublishError::Refused { code, message }) if batch.len() == 1 => {
                    debug!(room = %self.room, id = batch[0].record.id, "the room refused it: {message}");
                    let letter = DeadLetter::record(
                        &batch[0].record,
                        Some(batch[0].data.get().as_bytes()),
                        &code,
                    );
                    let metrics = self.shared.metrics.clone();
                    return dlq::send(
                        &*self.shared.sink,
                        &letter,
                        &batch[0].record.id,
                        &metrics,
                        &mut self.stop,
                    )
                    .await;
                }
                Err(PublishError::Refused { .. }) => return self.split(batch).await,
                Err(e) => e,
            };
            if matches!(error, PublishError::Outage(_)) {
                self.shared.metrics.set_publish_ok(false);
            }
            failures += 1;
            warn!(
                room = %self.room,
                first = batch[0].record.id,
                records = batch.len(),
                "publishing into the room: {error}; retrying"
            );
            if batch.len() > 1 && failures >= SPLIT_AFTER {
                return self.split(batch).await;
            }
            let delay = match error {
                PublishError::Retry {
                    after: Some(after), ..
                } => after.min(MAX_RETRY_AFTER),
                _ => backoff.next_delay(),
            };
            if !self.stop.sleep(delay).await {
                return false;
            }
        }
    }

    async fn split(&mut self, batch: &[Ready]) -> bool {
        let (head, tail) = batch.split_at(batch.len() / 2);
        Box::pin(self.deliver(head)).await && Box::pin(self.deliver(tail)).await
    }

    fn count(&self, batch: &[Ready]) {
        let now = now_ms();
        let metrics = &self.shared.metrics;
        for ready in batch {
            metrics.relayed.with_label_values(&[TO_ROOM]).inc();
            if let Some(ts) = ready.record.timestamp_ms {
                let age = now.saturating_sub(ts) as f64 / 1000.0;
                metrics
                    .relay_seconds
                    .with_label_values(&[TO_ROOM])
                    .observe(age);
            }
            debug!(room = %self.room, id = ready.record.id, "delivered to the room");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures_util::future::BoxFuture;
    use futures_util::FutureExt;
    use tokio::time::Instant;

    use super::*;
    use crate::memory::MemorySink;

    /// A room that answers its first publish `429` with `Retry-After:
    /// after` and takes the next, noting when each attempt came.
    struct RateLimited {
        after: Duration,
        attempts: Mutex<Vec<Instant>>,
    }

    impl Rooms for RateLimited {
        fn publish<'a>(
            &'a self,
            _room: &'a str,
            _batch: &'a [Outgoing<'a>],
        ) -> BoxFuture<'a, Result<(), PublishError>> {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(Instant::now());
            let outcome = match attempts.len() {
                1 => Err(PublishError::Retry {
                    why: "rate limited".into(),
                    after: Some(self.after),
                }),
                _ => Ok(()),
            };
            futures_util::future::ready(outcome).boxed()
        }
    }

    /// How long a lane waits before retrying a publish its room answered
    /// with `Retry-After: after` (on a paused clock, so exactly).
    async fn wait_after_retry_after(after: Duration) -> Duration {
        let rooms = Arc::new(RateLimited {
            after,
            attempts: Mutex::default(),
        });
        let shared = Shared {
            rooms: rooms.clone(),
            sink: Arc::new(MemorySink::refusing_over(usize::MAX)),
            metrics: Arc::new(Metrics::default()),
        };
        let (queue, queued) = mpsc::unbounded_channel();
        let (finished, mut done) = mpsc::unbounded_channel();
        let (_trigger, stop) = Stop::new();
        let lane = Lane::new("r".into(), queued, finished, shared, stop);
        let running = tokio::spawn(lane.run());
        let record = Record {
            topic: "in".into(),
            position: Position {
                partition: 0,
                offset: 0,
            },
            kind: PositionKind::Offset,
            key: Some(b"r".to_vec()),
            value: None,
            id: "kafka:in:0:0".into(),
            trace: None,
            timestamp_ms: None,
        };
        let data = RawValue::from_string("1".into()).unwrap();
        queue.send(Ready { record, data }).unwrap();
        // Bounded far beyond any wait the lane could choose.
        let delivered = tokio::time::timeout(Duration::from_secs(24 * 3600), done.recv())
            .await
            .expect("the record went in within a day");
        assert_eq!(delivered.map(|d| d.position.offset), Some(0));
        drop(queue);
        running.await.unwrap();
        let attempts = rooms.attempts.lock().unwrap();
        assert_eq!(attempts.len(), 2);
        attempts[1] - attempts[0]
    }

    #[test]
    fn only_a_log_offset_is_sent_to_the_room_as_a_place() {
        let ready = |kind| Ready {
            record: Record {
                topic: "in".into(),
                position: Position {
                    partition: 1,
                    offset: 9,
                },
                kind,
                key: Some(b"r".to_vec()),
                value: None,
                id: "m".into(),
                trace: None,
                timestamp_ms: None,
            },
            data: RawValue::from_string("1".into()).unwrap(),
        };
        let kafka = ready(PositionKind::Offset);
        assert_eq!(
            kafka.outgoing().kafka,
            Some(KafkaPosition {
                topic: "in".into(),
                partition: 1,
                offset: 9
            })
        );
        // A delivery tag told to the room as an offset would make it refuse
        // the next channel's deliveries 1..9 as already stored.
        assert_eq!(ready(PositionKind::DeliveryTag).outgoing().kafka, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_over_60_s_is_cut_to_60_s() {
        let waited = wait_after_retry_after(Duration::from_secs(3600)).await;
        assert!(
            waited >= Duration::from_secs(60) && waited < Duration::from_millis(60_010),
            "retried {waited:?} after a Retry-After of an hour"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_under_60_s_is_honoured() {
        let waited = wait_after_retry_after(Duration::from_secs(7)).await;
        assert!(
            waited >= Duration::from_secs(7) && waited < Duration::from_millis(7_010),
            "retried {waited:?} after a Retry-After of 7 s"
        );
    }
}
