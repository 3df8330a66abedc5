//! Room → broker: one task per room this instance relays, holding the room
//! link (docs/internals.md, "Bridge links") and handing every message to the [`Sink`].
//!
//! Deliveries are awaited in seq order, and `bridge_ack` only ever names a
//! seq whose message, and every one before it, the broker stored, or, when
//! the broker refused it for good, the dead-letter topic stored. Anything
//! unacknowledged when the link or the broker fails is replayed by the room
//! on the next link: duplicates are possible, gaps are not, and no message
//! can stall its room's relay forever. The room's presence events travel
//! the same link and go to the same broker under the same rules, numbered
//! apart (`pseq`, acknowledged with `presence_ack`): `crate::presence`.
//!
//! What a link may hold is bounded (docs/bridge.md, "Links and shutdown"): a message
//! goes to the broker only once its bytes fit in the instance's shared
//! in-flight bound, and until then the link reads nothing more (the room's
//! feed window keeps the rest); every open waits its turn among the
//! instance's opens; and a link with nothing in flight that received no
//! message for `--link-idle` is closed, so the instance holds links for
//! the rooms that are busy, not for every room it ever relayed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::wire::{BridgeFrame, Message, ServerFrame};
use roomcast_protocol::CloseCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::broker::{DeadLetter, Delivery, Sink, SinkError};
use crate::context::Bridge;
use crate::dlq;
use crate::link::{Link, LinkError};
use crate::metrics::Metrics;
use crate::presence::PresenceRelay;
use crate::stop::Stop;

/// How often confirmed progress is acknowledged to the room.
const ACK_INTERVAL: Duration = Duration::from_millis(50);
/// How long a shutdown waits for outstanding deliveries.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the registry is asked who owns a room whose link was
/// superseded, before the task gives the room up.
const OWNER_ATTEMPTS: u32 = 3;

/// Why a link ended.
enum End {
    /// A newer link replaced ours (4009): the room's owner took it over,
    /// or someone else did (then ours comes back).
    Superseded,
    /// The room retired (4010): its series go; the registry announces it
    /// again when it has a message.
    Retired,
    /// Nothing in flight and no message for `--link-idle`: closed (1000)
    /// to make room for busier rooms; the registry announces the room
    /// again when it has a message to relay.
    Idle,
    /// The bridge is shutting down.
    Stopped,
    /// Anything else: reconnect with backoff.
    Lost(String),
}

impl From<LinkError> for End {
    fn from(e: LinkError) -> End {
        match e.close_code() {
            Some(code) if code == CloseCode::Superseded.code() => End::Superseded,
            Some(code) if code == CloseCode::Retired.code() => End::Retired,
            _ => End::Lost(e.to_string()),
        }
    }
}

/// How a room task came to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// As the registry announced the room.
    Announced,
    /// After the room waited for a link (`room_tasks`): the registry may
    /// have moved it to another instance meanwhile.
    Waited,
}

/// Relays `room` until superseded, retired, idle or stopped.
pub async fn run(bridge: Arc<Bridge>, room: String, start: Start, mut stop: Stop) {
    if start == Start::Waited && owned_elsewhere(&bridge, &room).await {
        info!(
            room,
            "the room moved to another instance while it waited for a link"
        );
        return;
    }
    let mut backoff = Backoff::network();
    let mut connected_before = false;
    loop {
        let end = relay(
            &bridge,
            &room,
            &mut stop,
            &mut backoff,
            &mut connected_before,
        )
        .await;
        bridge
            .metrics
            .link_up
            .with_label_values(&[room.as_str()])
            .set(0);
        match end {
            End::Superseded if still_owner(&bridge, &room, &mut stop).await => {
                warn!(
                    room,
                    "room link superseded, but the registry assigns the room to this instance: taking it back"
                );
                if !stop.pause(&mut backoff).await {
                    return;
                }
            }
            End::Superseded => {
                // The new owner exports the room's series from now on.
                info!(room, "room link superseded by another bridge instance");
                bridge.metrics.forget_room(&room);
                return;
            }
            End::Retired => {
                info!(room, "room retired");
                bridge.metrics.forget_room(&room);
                return;
            }
            End::Idle => {
                // Its series go with the link: an instance exports the
                // rooms it holds, which is what keeps /metrics bounded too.
                info!(room, "room link idle: closed");
                bridge.metrics.forget_room(&room);
                return;
            }
            End::Stopped => return,
            End::Lost(why) => {
                warn!(room, "room link lost: {why}");
                if !stop.pause(&mut backoff).await {
                    return;
                }
            }
        }
    }
}

/// Whether the registry still assigns `room` to this instance. A link that
/// supersedes ours while we own the room is not the owner's (anyone with a
/// bridge token can open one), so ours comes back. When the registry cannot
/// say, the room is given up, as before owners could be asked: two real
/// instances must never fight over a room on a guess.
async fn still_owner(bridge: &Bridge, room: &str, stop: &mut Stop) -> bool {
    let mut backoff = Backoff::network();
    for attempt in 1..=OWNER_ATTEMPTS {
        match bridge.worker.owner(room).await {
            Ok(owner) => return owner.as_deref() == Some(bridge.instance.as_str()),
            Err(e) => warn!(room, attempt, "asking the registry who owns the room: {e}"),
        }
        if attempt < OWNER_ATTEMPTS && !stop.pause(&mut backoff).await {
            return false;
        }
    }
    false
}

/// Whether the registry now assigns `room` to another instance, whose link
/// ours would supersede. When the registry cannot say, the link is opened:
/// a room is not left unrelayed on a guess, and if it is not ours after
/// all, its owner takes it back ([`still_owner`]).
async fn owned_elsewhere(bridge: &Bridge, room: &str) -> bool {
    match bridge.worker.owner(room).await {
        Ok(owner) => owner.is_some_and(|owner| owner != bridge.instance),
        Err(e) => {
            warn!(room, "asking the registry who owns the room: {e}");
            false
        }
    }
}

async fn relay(
    bridge: &Bridge,
    room: &str,
    stop: &mut Stop,
    backoff: &mut Backoff,
    connected_before: &mut bool,
) -> End {
    if !bridge.opens.take(stop).await {
        return End::Stopped;
    }
    let url = bridge.urls.room_link(room, &bridge.instance);
    let mut link = match Link::open(&url, &bridge.tokens, &bridge.tls).await {
        Ok(link) => link,
        Err(e) => return End::Lost(e.to_string()),
    };
    backoff.reset();
    // Touching the series exports it at 0 before the first reconnect.
    let reconnects = bridge.metrics.link_reconnects.with_label_values(&[room]);
    if std::mem::replace(connected_before, true) {
        reconnects.inc();
    }
    bridge.metrics.link_up.with_label_values(&[room]).set(1);
    let mut pending = Pending::new(bridge.sink.clone(), bridge.metrics.clone(), stop.clone());
    let mut presence =
        PresenceRelay::new(bridge.sink.clone(), bridge.metrics.clone(), stop.clone());
    let mut acked = Acked::default();
    let mut ack_tick = tokio::time::interval(ACK_INTERVAL);
    // A message read but not yet handed to the broker, waiting for its
    // bytes; meanwhile the link reads nothing more.
    let mut parked: Option<Parked> = None;
    // Only room messages keep a link: `stats` and `presence` frames also
    // come from rooms that have clients but nothing to relay (the room keeps
    // unacknowledged presence events for the next link).
    let idle = tokio::time::sleep(bridge.link_idle);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            frame = link.next_unless_paused(parked.is_some()) => match frame {
                Ok(ServerFrame::Message(message)) => {
                    idle.as_mut().reset(Instant::now() + bridge.link_idle);
                    let message = message.into_owned();
                    let bytes = bridge.in_flight.acquire(weight(&message));
                    parked = Some((message, bytes));
                }
                Ok(ServerFrame::Stats(report)) => bridge.metrics.room_stats(report.into_owned()),
                Ok(ServerFrame::Presence(event)) => presence.push(event.into_owned()).await,
                Ok(ServerFrame::Welcome(welcome)) => {
                    info!(room, cursor = welcome.cursor, head = welcome.head, "room link up")
                }
                Ok(ServerFrame::Error { code, message, .. }) => {
                    warn!(room, %code, "the room reported: {message}")
                }
                Ok(other) => debug!(room, "ignoring {other:?}"),
                Err(e) => return e.into(),
            },
            permit = room_for(&mut parked), if parked.is_some() => {
                if let Some((message, _)) = parked.take() {
                    pending.push(message, permit).await;
                }
            },
            confirmed = pending.next_confirmed(), if !pending.is_empty() => {
                if let Err(why) = confirmed {
                    return End::Lost(why);
                }
            },
            confirmed = presence.next_confirmed(), if !presence.is_empty() => {
                if let Err(why) = confirmed {
                    return End::Lost(why);
                }
            },
            _ = ack_tick.tick() => {
                let confirmed = (pending.confirmed, presence.confirmed);
                if let Err(e) = acked.catch_up(&mut link, confirmed).await {
                    return e.into();
                }
            },
            _ = &mut idle, if pending.is_empty() && presence.is_empty() && parked.is_none() => {
                let confirmed = (pending.confirmed, presence.confirmed);
                if let Err(e) = acked.catch_up(&mut link, confirmed).await {
                    return e.into();
                }
                if link.close_idle("idle").await {
                    return End::Lost(
                        "a message arrived as the idle link closed; reopening for it".into(),
                    );
                }
                return End::Idle;
            },
            _ = stop.stopping() => {
                drain(room, link, pending, presence, acked).await;
                return End::Stopped;
            },
        }
    }
}

/// A message read from the link, and the wait for its bytes. The wait is
/// kept across turns of the loop so the link keeps its place in the queue
/// for bytes: the in-flight bound hands bytes out first come, first served.
type Parked = (Message, BoxFuture<'static, OwnedSemaphorePermit>);

/// The parked message's bytes, once they fit.
async fn room_for(parked: &mut Option<Parked>) -> OwnedSemaphorePermit {
    match parked {
        Some((_, bytes)) => bytes.await,
        None => std::future::pending().await,
    }
}

/// What a message counts against `--max-in-flight-bytes`: its variable
/// parts, which is what the producer's queue holds of it.
fn weight(message: &Message) -> usize {
    message.data.get().len()
        + message.id.len()
        + message.room.len()
        + message.sender.len()
        + message.trace.as_ref().map_or(0, String::len)
}

/// What the room was last told is done: its messages (`bridge_ack`) and
/// its presence events (`presence_ack`).
#[derive(Default)]
struct Acked {
    seq: Option<u64>,
    pseq: Option<u64>,
}

impl Acked {
    /// Acknowledges what was `confirmed` (the highest seq, the highest
    /// pseq) since the last acknowledgement.
    async fn catch_up(
        &mut self,
        link: &mut Link,
        (confirmed, presence_confirmed): (Option<u64>, Option<u64>),
    ) -> Result<(), LinkError> {
        if let Some(seq) = confirmed.filter(|c| Some(*c) > self.seq) {
            link.send(&BridgeFrame::BridgeAck { seq }).await?;
            self.seq = Some(seq);
        }
        if let Some(pseq) = presence_confirmed.filter(|c| Some(*c) > self.pseq) {
            link.send(&BridgeFrame::PresenceAck { pseq }).await?;
            self.pseq = Some(pseq);
        }
        Ok(())
    }
}

/// On shutdown: waits (bounded) for outstanding deliveries, acknowledges
/// what the broker confirmed, and closes the link with 1001.
async fn drain(
    room: &str,
    mut link: Link,
    mut pending: Pending,
    mut presence: PresenceRelay,
    mut acked: Acked,
) {
    let wait = async {
        while !pending.is_empty() {
            if pending.next_confirmed().await.is_err() {
                break;
            }
        }
        while !presence.is_empty() {
            if presence.next_confirmed().await.is_err() {
                break;
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, wait).await.is_err() {
        warn!(
            room,
            "shutdown: deliveries still outstanding; the room will replay them"
        );
    }
    let _ = acked
        .catch_up(&mut link, (pending.confirmed, presence.confirmed))
        .await;
    link.close("bridge shutting down").await;
}

/// Where a message handed to the broker stands.
enum Stage {
    /// Waiting for the broker's report.
    Delivering(Delivery),
    /// Refused for good; waiting for the dead-letter topic (`false`: stopped).
    DeadLettering(BoxFuture<'static, bool>),
}

struct InFlight {
    message: Message,
    stage: Stage,
    /// Its share of the instance's in-flight bytes, released with it.
    _bytes: OwnedSemaphorePermit,
}

/// The messages handed to the broker and not yet confirmed, in seq order.
///
/// Each keeps its pending future inside the queue until it resolves, so
/// waiting on [`Pending::next_confirmed`] can be cancelled (by `select!`)
/// at any point without losing track of a message.
struct Pending {
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    stop: Stop,
    queue: VecDeque<InFlight>,
    /// The highest seq confirmed so far, with every one before it.
    confirmed: Option<u64>,
}

impl Pending {
    fn new(sink: Arc<dyn Sink>, metrics: Arc<Metrics>, stop: Stop) -> Pending {
        Pending {
            sink,
            metrics,
            stop,
            queue: VecDeque::new(),
            confirmed: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Hands `message`, holding `bytes` of the in-flight bound, to the
    /// broker (waiting while its queue is full).
    async fn push(&mut self, message: Message, bytes: OwnedSemaphorePermit) {
        let delivery = self.sink.publish(&message).await;
        self.queue.push_back(InFlight {
            message,
            stage: Stage::Delivering(delivery),
            _bytes: bytes,
        });
    }

    /// Waits until the oldest message is confirmed, dead-lettering it first
    /// if the broker refused it for good. `Err` when the broker is not
    /// taking messages now (the room replays them on the next link).
    async fn next_confirmed(&mut self) -> Result<u64, String> {
        loop {
            let front = self
                .queue
                .front_mut()
                .ok_or_else(|| "nothing is pending".to_owned())?;
            match &mut front.stage {
                Stage::Delivering(delivery) => match delivery.await {
                    Ok(()) => return Ok(self.confirm()),
                    Err(SinkError::Refused { reason, detail }) => {
                        let message = &front.message;
                        warn!(
                            room = message.room,
                            id = message.id,
                            seq = message.seq,
                            reason,
                            "the broker refused the message for good: {detail}"
                        );
                        let value = serde_json::to_vec(message).unwrap_or_default();
                        let letter = DeadLetter::message(message, value, &reason);
                        let (sink, metrics, mut stop) =
                            (self.sink.clone(), self.metrics.clone(), self.stop.clone());
                        let id = message.id.clone();
                        front.stage =
                            Stage::DeadLettering(
                                async move {
                                    dlq::send(&*sink, &letter, &id, &metrics, &mut stop).await
                                }
                                .boxed(),
                            );
                    }
                    Err(SinkError::Unavailable(why)) => {
                        let message = &front.message;
                        return Err(format!(
                            "the broker did not take message {} (seq {}): {why}",
                            message.id, message.seq
                        ));
                    }
                },
                Stage::DeadLettering(writing) => {
                    return match writing.await {
                        true => Ok(self.confirm()),
                        false => Err("stopped while dead-lettering".into()),
                    };
                }
            }
        }
    }

    /// The front message is stored (in its topic or the dead-letter topic).
    fn confirm(&mut self) -> u64 {
        let done = self
            .queue
            .pop_front()
            .expect("confirming the front message");
        let message = done.message;
        if matches!(done.stage, Stage::Delivering(_)) {
            let direction = self.metrics.to_broker();
            self.metrics.relayed.with_label_values(&[direction]).inc();
            let age = now_ms().saturating_sub(message.ts) as f64 / 1000.0;
            self.metrics
                .relay_seconds
                .with_label_values(&[direction])
                .observe(age);
            debug!(
                room = message.room,
                id = message.id,
                seq = message.seq,
                "delivered to the broker"
            );
        }
        self.confirmed = Some(message.seq);
        message.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_worker::{self, FakeWorker, FromBridge, Owner, Spec, STEP};
    use crate::limits::InFlightBytes;
    use crate::memory::{Held, MemorySink};
    use roomcast_protocol::draft::Origin;
    use serde_json::value::RawValue;

    fn message(seq: u64, data: &str) -> Message {
        Message {
            room: "r".into(),
            id: format!("m{seq}"),
            seq,
            ts: now_ms(),
            sender: "s".into(),
            origin: Origin::Ws,
            data: RawValue::from_string(data.into()).unwrap(),
            trace: None,
        }
    }

    /// Hands `message` to `pending` with its bytes from an ample bound.
    async fn push(pending: &mut Pending, message: Message) {
        let bytes = InFlightBytes::new(1 << 20).acquire(weight(&message)).await;
        pending.push(message, bytes).await;
    }

    #[tokio::test]
    async fn a_refused_message_is_dead_lettered_and_the_relay_moves_on() {
        let sink = Arc::new(MemorySink::refusing_over(100));
        let (_trigger, stop) = Stop::new();
        let mut pending = Pending::new(sink.clone(), Arc::new(Metrics::default()), stop);
        push(&mut pending, message(1, "1")).await;
        push(
            &mut pending,
            message(2, &format!("\"{}\"", "x".repeat(200))),
        )
        .await;
        push(&mut pending, message(3, "3")).await;
        let mut confirmed = Vec::new();
        while !pending.is_empty() {
            confirmed.push(pending.next_confirmed().await.unwrap());
        }
        assert_eq!(confirmed, [1, 2, 3]);
        let stored: Vec<u64> = sink.messages().iter().map(|m| m.seq).collect();
        assert_eq!(stored, [1, 3]);
        let letters = sink.dead_letters();
        assert_eq!(letters.len(), 1);
        let headers: Vec<(&str, &str)> = letters[0]
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        assert_eq!(
            &headers[..4],
            [
                ("error", "too_large"),
                ("room", "r"),
                ("seq", "2"),
                ("message-id", "m2")
            ]
        );
    }

    #[tokio::test]
    async fn an_unavailable_broker_fails_the_link_without_confirming() {
        let sink = Arc::new(MemorySink::unavailable());
        let (_trigger, stop) = Stop::new();
        let mut pending = Pending::new(sink, Arc::new(Metrics::default()), stop);
        push(&mut pending, message(1, "1")).await;
        assert!(pending.next_confirmed().await.is_err());
        assert_eq!(pending.confirmed, None);
    }

    /// Runs the room task for `r` against `worker`.
    fn relay_room(
        worker: &FakeWorker,
        sink: Arc<dyn Sink>,
        spec: Spec,
    ) -> (
        Arc<Bridge>,
        tokio::task::JoinHandle<()>,
        crate::stop::Trigger,
    ) {
        start_room(worker, sink, spec, Start::Announced)
    }

    /// Runs the room task for `r`, started as `start` says.
    fn start_room(
        worker: &FakeWorker,
        sink: Arc<dyn Sink>,
        spec: Spec,
        start: Start,
    ) -> (
        Arc<Bridge>,
        tokio::task::JoinHandle<()>,
        crate::stop::Trigger,
    ) {
        let (trigger, stop) = Stop::new();
        let bridge = fake_worker::bridge(&worker.url(), sink, spec, stop.clone());
        let task = tokio::spawn(run(bridge.clone(), "r".into(), start, stop));
        (bridge, task, trigger)
    }

    async fn ends(task: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(STEP, task)
            .await
            .expect("the room task ended")
            .expect("without panicking");
    }

    #[tokio::test]
    async fn an_idle_link_is_closed_and_its_task_ends() {
        let mut worker = FakeWorker::start().await;
        let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
        let idle = Duration::from_millis(300);
        let spec = Spec {
            link_idle: idle,
            ..Spec::default()
        };
        let (bridge, task, _trigger) = relay_room(&worker, sink.clone(), spec);
        let mut link = worker.link().await;
        assert!(
            link.path.starts_with("/v1/rooms/r/bridge?instance=me"),
            "{}",
            link.path
        );
        link.welcome("r", 0).await;
        link.message("r", 1, "one").await;
        let sent = Instant::now();
        assert_eq!(link.next().await, FromBridge::Ack(1));
        assert_eq!(
            link.next().await,
            FromBridge::Closed(Some(1000), "idle".into())
        );
        assert!(
            sent.elapsed() >= idle,
            "closed {:?} after the last message",
            sent.elapsed()
        );
        ends(task).await;
        assert_eq!(sink.messages().len(), 1);
        let text = bridge.metrics.render();
        assert!(
            !text.contains("room=\"r\""),
            "the room's series stay:\n{text}"
        );
    }

    #[tokio::test]
    async fn a_link_with_a_message_in_flight_is_not_idle() {
        let mut worker = FakeWorker::start().await;
        let (sink, mut held) = MemorySink::holding();
        let sink = Arc::new(sink);
        let idle = Duration::from_millis(200);
        let spec = Spec {
            link_idle: idle,
            ..Spec::default()
        };
        let (_bridge, task, _trigger) = relay_room(&worker, sink.clone(), spec);
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        link.message("r", 1, "one").await;
        let delivery = receive(&mut held).await;
        // Held past the idle time: the link stays, and acks once Kafka has it.
        tokio::time::sleep(idle * 3).await;
        sink.confirm(delivery);
        assert_eq!(link.next().await, FromBridge::Ack(1));
        assert_eq!(
            link.next().await,
            FromBridge::Closed(Some(1000), "idle".into())
        );
        ends(task).await;
    }

    async fn receive(held: &mut tokio::sync::mpsc::UnboundedReceiver<Held>) -> Held {
        tokio::time::timeout(STEP, held.recv())
            .await
            .expect("a delivery in time")
            .expect("the sink is there")
    }

    #[tokio::test]
    async fn bytes_in_flight_stay_within_the_bound() {
        let mut worker = FakeWorker::start().await;
        let (sink, mut held) = MemorySink::holding();
        let sink = Arc::new(sink);
        let small = weight(&message(1, "\"0123456789\""));
        let spec = Spec {
            // Two small messages fit, a third does not.
            in_flight: (small * 5 / 2) as u32,
            ..Spec::default()
        };
        let (_bridge, _task, _trigger) = relay_room(&worker, sink.clone(), spec);
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        let huge = format!("{:0>1$}", 7, small * 4);
        for seq in 1..=7u64 {
            let data = if seq == 4 {
                huge.as_str()
            } else {
                "0123456789"
            };
            link.message("r", seq, data).await;
        }
        // Each delivery as the bridge hands it over; a delivery it handed
        // over too early would show in what the sink saw outstanding.
        let (d1, d2) = (receive(&mut held).await, receive(&mut held).await);
        sink.confirm(d1);
        let d3 = receive(&mut held).await;
        sink.confirm(d2);
        sink.confirm(d3);
        let d4 = receive(&mut held).await;
        assert_eq!(d4.seq, 4);
        sink.confirm(d4);
        let (d5, d6) = (receive(&mut held).await, receive(&mut held).await);
        sink.confirm(d5);
        let d7 = receive(&mut held).await;
        assert_eq!((d6.seq, d7.seq), (6, 7));
        sink.confirm(d6);
        sink.confirm(d7);
        while link.next().await != FromBridge::Ack(7) {}
        let publications = sink.publications();
        assert_eq!(
            publications,
            [(1, 0), (2, 1), (3, 1), (4, 0), (5, 0), (6, 1), (7, 1)],
            "at most two small messages in flight; the one over the bound alone"
        );
    }

    #[tokio::test]
    async fn a_presence_event_is_acknowledged_once_it_and_every_one_before_are_stored() {
        let mut worker = FakeWorker::start().await;
        let (sink, mut held) = MemorySink::holding();
        let sink = Arc::new(sink);
        let (bridge, _task, _trigger) = relay_room(&worker, sink.clone(), Spec::default());
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        link.presence("r", 1, "ann").await;
        link.presence("r", 2, "bob").await;
        let (first, second) = (receive(&mut held).await, receive(&mut held).await);
        assert_eq!((first.seq, second.seq), (1, 2));
        sink.confirm(second);
        // A message confirmed meanwhile is acknowledged; pseq 2 is not, as
        // long as pseq 1 is unconfirmed.
        link.message("r", 1, "one").await;
        sink.confirm(receive(&mut held).await);
        assert_eq!(link.next().await, FromBridge::Ack(1));
        sink.confirm(first);
        assert_eq!(link.next().await, FromBridge::PresenceAck(2));
        let events = sink.presence_events();
        let stored: Vec<(&str, u64, &str)> = events
            .iter()
            .map(|e| (e.room.as_str(), e.pseq, e.joins.get()))
            .collect();
        assert_eq!(
            stored,
            [
                ("r", 1, r#"[{"sub":"ann","metas":[{"conn_id":"c_1"}]}]"#),
                ("r", 2, r#"[{"sub":"bob","metas":[{"conn_id":"c_2"}]}]"#)
            ]
        );
        assert!(bridge
            .metrics
            .render()
            .contains(r#"roomcast_bridge_presence_events_total{broker="kafka"} 2"#));
    }

    #[tokio::test]
    async fn with_presence_off_events_are_acknowledged_unwritten() {
        let mut worker = FakeWorker::start().await;
        let sink = Arc::new(MemorySink::unavailable().without_presence());
        let (_bridge, _task, _trigger) = relay_room(&worker, sink.clone(), Spec::default());
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        for pseq in 1..=3 {
            link.presence("r", pseq, "ann").await;
        }
        while link.next().await != FromBridge::PresenceAck(3) {}
        assert!(sink.presence_events().is_empty());
    }

    #[tokio::test]
    async fn a_stop_waits_for_deliveries_acknowledges_them_and_closes_with_1001() {
        let mut worker = FakeWorker::start().await;
        let (sink, mut held) = MemorySink::holding();
        let sink = Arc::new(sink);
        let (_bridge, task, trigger) = relay_room(&worker, sink.clone(), Spec::default());
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        for seq in 1..=3 {
            link.message("r", seq, "in flight").await;
        }
        let mut deliveries = Vec::new();
        for _ in 1..=3 {
            deliveries.push(receive(&mut held).await);
        }
        trigger.fire();
        // Kafka confirms only a while after the stop: the link must still
        // be there to acknowledge them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for delivery in deliveries {
            sink.confirm(delivery);
        }
        assert_eq!(link.next().await, FromBridge::Ack(3));
        assert_eq!(
            link.next().await,
            FromBridge::Closed(Some(1001), "bridge shutting down".into())
        );
        ends(task).await;
    }

    #[tokio::test]
    async fn a_stop_gives_up_after_10_s_on_what_kafka_never_confirms() {
        let mut worker = FakeWorker::start().await;
        let (sink, mut held) = MemorySink::holding();
        let sink = Arc::new(sink);
        let (_bridge, task, trigger) = relay_room(&worker, sink.clone(), Spec::default());
        let mut link = worker.link().await;
        link.welcome("r", 0).await;
        link.message("r", 1, "confirmed").await;
        link.message("r", 2, "never confirmed").await;
        sink.confirm(receive(&mut held).await);
        let _never = receive(&mut held).await;
        assert_eq!(link.next().await, FromBridge::Ack(1));
        let stopped = Instant::now();
        trigger.fire();
        assert_eq!(
            link.next_within(DRAIN_TIMEOUT + STEP).await,
            FromBridge::Closed(Some(1001), "bridge shutting down".into()),
            "seq 2 was acknowledged without Kafka's confirmation"
        );
        let waited = stopped.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited < Duration::from_secs(12),
            "closed {waited:?} after the stop"
        );
        ends(task).await;
    }

    #[tokio::test]
    async fn a_superseded_link_comes_back_while_the_registry_says_the_room_is_ours() {
        let mut worker = FakeWorker::start().await;
        worker.set_owner(Owner::Is(Some("me".into())));
        let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
        let (bridge, task, _trigger) = relay_room(&worker, sink, Spec::default());
        let first = worker.link().await;
        first.close(4009, "superseded").await;
        let mut second = worker.link().await;
        second.welcome("r", 0).await;
        // Now the room is another instance's: superseded again, the task ends.
        worker.set_owner(Owner::Is(Some("other".into())));
        second.close(4009, "superseded").await;
        ends(task).await;
        assert_eq!(worker.reports.load(std::sync::atomic::Ordering::SeqCst), 2);
        let text = bridge.metrics.render();
        assert!(
            !text.contains("room=\"r\""),
            "the room's series went with it:\n{text}"
        );
    }

    #[tokio::test]
    async fn a_superseded_link_ends_when_the_registry_cannot_say() {
        let mut worker = FakeWorker::start().await;
        worker.set_owner(Owner::Fails);
        let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
        let (_bridge, task, _trigger) = relay_room(&worker, sink, Spec::default());
        worker.link().await.close(4009, "superseded").await;
        ends(task).await;
        assert_eq!(
            worker.reports.load(std::sync::atomic::Ordering::SeqCst),
            OWNER_ATTEMPTS as usize
        );
    }

    #[tokio::test]
    async fn a_room_that_waited_is_not_linked_when_it_moved_meanwhile() {
        let mut worker = FakeWorker::start().await;
        worker.set_owner(Owner::Is(Some("other".into())));
        let sink = Arc::new(MemorySink::refusing_over(usize::MAX));
        let (_bridge, task, _trigger) =
            start_room(&worker, sink.clone(), Spec::default(), Start::Waited);
        ends(task).await;
        assert_eq!(worker.reports.load(std::sync::atomic::Ordering::SeqCst), 1);

        // Still (or again) this instance's: it is linked.
        worker.set_owner(Owner::Is(Some("me".into())));
        let (_bridge, _task, _trigger) = start_room(&worker, sink, Spec::default(), Start::Waited);
        worker.link().await.welcome("r", 0).await;
        assert_eq!(worker.reports.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
