//! Broker → rooms (docs/bridge.md, "Kafka mapping" and "RabbitMQ mapping"): takes records from the [`Source`], sends
//! each to its room's [`Lane`], and commits a partition's position once
//! every record before it is in its room or in the dead-letter topic.
//!
//! Delivery is at least once (nothing is committed before it is done) and
//! effectively once in the rooms (each record carries an idempotency key).
//! The rooms decide what they accept; this side only refuses what it
//! cannot route or carry: a record without a key, with a key that is no
//! room name, or whose value is not JSON. A room that fails does not hold
//! the others: it is retried in its own lane, and only the commit point of
//! its partitions waits for it. The records held in lanes are bounded in
//! number and bytes; at the bound, consumption pauses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use roomcast_protocol::RoomName;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::broker::{DeadLetter, Record, Source, SourceError};
use crate::context::Bridge;
use crate::dlq;
use crate::lane::{Finished, Lane, Ready, Shared};
use crate::offsets::Offsets;
use crate::stop::Stop;

/// Most records held (taken, not finished) before consumption pauses.
const MAX_HELD_RECORDS: usize = 10_000;
/// Most bytes of record values held before consumption pauses.
const MAX_HELD_BYTES: usize = 64 * 1024 * 1024;
/// How long a shutdown waits for lanes to finish what they are publishing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumes until stopped; a source that fails for good (a fatal consumer
/// error, a lost connection or channel) is opened again with backoff, and
/// `/healthz` reports the consumer down meanwhile.
pub async fn run(bridge: Arc<Bridge>, mut stop: Stop) {
    let shared = Shared {
        rooms: bridge.worker.clone(),
        sink: bridge.sink.clone(),
        metrics: bridge.metrics.clone(),
    };
    let mut backoff = Backoff::network();
    loop {
        // Opening first: a source that opens at once (Kafka's) is relayed,
        // and the relay drains it, even when the stop came first.
        let opened = tokio::select! {
            biased;
            opened = bridge.sources.open() => opened,
            _ = stop.stopping() => return,
        };
        match opened {
            Ok(mut source) => {
                backoff.reset();
                bridge.metrics.set_consumer_up(true);
                info!(from = %bridge.sources.describe(), "consuming");
                match relay(&mut *source, &shared, stop.clone()).await {
                    Ended::Stopped => return,
                    Ended::Fatal(why) => error!("the consumer failed ({why}); rebuilding it"),
                }
            }
            Err(e) => warn!("inbound consumer: {e}"),
        }
        bridge.metrics.set_consumer_up(false);
        if !stop.pause(&mut backoff).await {
            return;
        }
    }
}

/// How a relay over one source ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Stopped,
    Fatal(String),
}

/// A room's lane as the dispatcher sees it.
struct LaneHandle {
    queue: mpsc::UnboundedSender<Ready>,
    /// Records sent to the lane and not finished: at zero the lane is
    /// dropped, so an idle room costs nothing and a room never has two
    /// lanes at once (which could reorder its records).
    outstanding: usize,
}

/// The dispatcher's state over one source.
struct Dispatcher<'a> {
    shared: &'a Shared,
    stop: Stop,
    offsets: Offsets,
    held_bytes: usize,
    lanes: HashMap<Arc<str>, LaneHandle>,
    tasks: JoinSet<()>,
    finished: mpsc::UnboundedSender<Finished>,
}

/// Relays records from `source` until stopped or the source fails for good.
pub async fn relay(source: &mut dyn Source, shared: &Shared, mut stop: Stop) -> Ended {
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel();
    let mut d = Dispatcher {
        shared,
        stop: stop.clone(),
        offsets: Offsets::default(),
        held_bytes: 0,
        lanes: HashMap::new(),
        tasks: JoinSet::new(),
        finished: finished_tx,
    };
    loop {
        let room_for_more =
            d.offsets.unfinished() < MAX_HELD_RECORDS && d.held_bytes < MAX_HELD_BYTES;
        tokio::select! {
            biased;
            Some(done) = finished_rx.recv() => d.finish(source, done),
            received = source.next(), if room_for_more => match received {
                Ok(record) => {
                    if !d.take(source, record).await {
                        break;
                    }
                }
                Err(SourceError::Transient(why)) => {
                    warn!("inbound consumer: {why}");
                    if !stop.sleep(Duration::from_millis(500)).await {
                        break;
                    }
                }
                Err(SourceError::Fatal(why)) => {
                    d.tasks.abort_all();
                    return Ended::Fatal(why);
                }
            },
            _ = stop.stopping() => break,
        }
    }
    d.drain(source, &mut finished_rx).await;
    Ended::Stopped
}

impl Dispatcher<'_> {
    /// Routes one record; `false` when stopped while dead-lettering it.
    async fn take(&mut self, source: &mut dyn Source, record: Record) -> bool {
        self.offsets.taken(record.position);
        match check(&record) {
            Ok((room, data)) => {
                let ready = Ready {
                    record: Record {
                        value: None,
                        ..record
                    },
                    data,
                };
                self.held_bytes += ready.bytes();
                self.dispatch(room, ready);
                true
            }
            Err(reason) => {
                let letter = DeadLetter::record(&record, record.value.as_deref(), reason);
                let metrics = self.shared.metrics.clone();
                if !dlq::send(
                    &*self.shared.sink,
                    &letter,
                    &record.id,
                    &metrics,
                    &mut self.stop,
                )
                .await
                {
                    return false;
                }
                if let Some(point) = self.offsets.finished(record.position) {
                    commit(source, record.position.partition, point);
                }
                true
            }
        }
    }

    /// Queues `ready` on the lane of `room`, starting one if it has none.
    fn dispatch(&mut self, room: Arc<str>, ready: Ready) {
        let handle = self.lanes.entry(room.clone()).or_insert_with(|| {
            let (queue, rx) = mpsc::unbounded_channel();
            let lane = Lane::new(
                room,
                rx,
                self.finished.clone(),
                self.shared.clone(),
                self.stop.clone(),
            );
            self.tasks.spawn(lane.run());
            LaneHandle {
                queue,
                outstanding: 0,
            }
        });
        handle.outstanding += 1;
        // The lane lives while its handle does; it ends early only when the
        // bridge stops, and then the record is consumed again next time.
        let _ = handle.queue.send(ready);
    }

    fn finish(&mut self, source: &mut dyn Source, done: Finished) {
        self.held_bytes = self.held_bytes.saturating_sub(done.bytes);
        if let Some(handle) = self.lanes.get_mut(&done.room) {
            handle.outstanding = handle.outstanding.saturating_sub(1);
            if handle.outstanding == 0 {
                self.lanes.remove(&done.room);
            }
        }
        if let Some(point) = self.offsets.finished(done.position) {
            commit(source, done.position.partition, point);
        }
    }

    /// On stop: lanes finish the publish they are in (bounded), what they
    /// finish is committed, and the source's commits are made durable.
    async fn drain(
        mut self,
        source: &mut dyn Source,
        finished: &mut mpsc::UnboundedReceiver<Finished>,
    ) {
        self.lanes.clear();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        loop {
            tokio::select! {
                Some(done) = finished.recv() => self.finish(source, done),
                joined = self.tasks.join_next() => if joined.is_none() {
                    while let Ok(done) = finished.try_recv() {
                        self.finish(source, done);
                    }
                    break;
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("shutdown: lanes still publishing; their records will be consumed again");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        if let Err(e) = source.close().await {
            warn!("final commit: {e}");
        }
    }
}

fn commit(source: &mut dyn Source, partition: i32, offset: i64) {
    if let Err(e) = source.commit(partition, offset) {
        warn!("{e}");
    }
}

/// The room a record is for and its value as checked JSON, or the reason
/// it cannot be routed (the dead-letter `error` header).
fn check(record: &Record) -> Result<(Arc<str>, Box<RawValue>), &'static str> {
    let key = record.key.as_deref().ok_or("no_key")?;
    let room = std::str::from_utf8(key)
        .ok()
        .and_then(RoomName::parse)
        .ok_or("bad_room")?;
    let data = record
        .value
        .as_deref()
        .and_then(|v| serde_json::from_slice::<Box<RawValue>>(v).ok())
        .ok_or("bad_format")?;
    Ok((room.as_str().into(), data))
}

#[cfg(test)]
mod tests;
