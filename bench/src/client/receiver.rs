//! The ways a receiver gets messages: WebSocket push, REST polling of
//! `GET /messages?since=`, and (for the bridge) consuming a Kafka topic or
//! a RabbitMQ queue;
//! each a task feeding a [`Recorder`], all of one scenario stopped together.
//!
//! Receipt time is read before a frame or page is parsed, so the client's
//! own parsing is not billed to the server. A poller records every message
//! of a page at the moment the page arrived: that is when a polling client
//! would see them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rdkafka::consumer::StreamConsumer;
use rdkafka::Message as _;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::client::clock;
use crate::client::http::HttpConn;
use crate::client::recorder::{Recorder, Stamp};
use crate::client::ws::{self, Incoming, Socket};

/// How often a subscriber sends the text `ping` (the room closes
/// connections silent for 90 s; some scenarios hold them that long).
const HEARTBEAT: Duration = Duration::from_secs(20);
/// How long stopping may take before receivers are abandoned.
const STOP: Duration = Duration::from_secs(15);
/// The largest page a poll asks for (the API's maximum).
const PAGE: u32 = 1000;

#[derive(Deserialize)]
struct Page {
    messages: Vec<Polled>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct Polled {
    seq: u64,
    data: Stamp,
}

/// A set of receiver tasks.
pub struct Receivers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
}

impl Default for Receivers {
    fn default() -> Self {
        Receivers {
            stop: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }
}

impl Receivers {
    /// Receives pushed messages on `socket` into `recorder`.
    pub fn push(&mut self, socket: Socket, recorder: Arc<Recorder>) {
        let stop = self.stop.subscribe();
        self.tasks.spawn(push(socket, recorder, stop));
    }

    /// Polls as `poll` says on `conn`.
    pub fn poll(&mut self, conn: HttpConn, poll: Poll, recorder: Arc<Recorder>) {
        let stop = self.stop.subscribe();
        self.tasks.spawn(poll_loop(conn, poll, recorder, stop));
    }

    /// Consumes `consumer`'s records with `key`, whose values are `shape`.
    pub fn kafka(
        &mut self,
        consumer: StreamConsumer,
        key: String,
        shape: RecordShape,
        recorder: Arc<Recorder>,
    ) {
        let stop = self.stop.subscribe();
        self.tasks
            .spawn(consume(consumer, key, shape, recorder, stop));
    }

    /// Consumes `consumer`'s messages with routing key `key`, whose bodies
    /// are `shape`.
    pub fn amqp(
        &mut self,
        consumer: lapin::Consumer,
        key: String,
        shape: RecordShape,
        recorder: Arc<Recorder>,
    ) {
        let stop = self.stop.subscribe();
        self.tasks
            .spawn(consume_amqp(consumer, key, shape, recorder, stop));
    }

    /// Runs a receiver of the caller's own, given the signal to stop; it
    /// stops with the others.
    pub fn spawn<F>(&mut self, receiver: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        self.tasks.spawn(receiver(self.stop.subscribe()));
    }

    /// Stops every receiver; the first error any of them ended with.
    pub async fn stop(mut self) -> Result<()> {
        let _ = self.stop.send(true);
        let mut first = Ok(());
        let joined = timeout(STOP, async {
            while let Some(result) = self.tasks.join_next().await {
                let result = result
                    .context("a receiver panicked")
                    .and_then(|ended| ended);
                if first.is_ok() {
                    first = result;
                }
            }
        })
        .await;
        if joined.is_err() {
            self.tasks.abort_all();
            bail!("receivers did not stop within {STOP:?}");
        }
        first
    }
}

/// What a poller asks for and how often.
pub struct Poll {
    pub messages_path: String,
    pub token: String,
    pub every: Duration,
    /// Delay of the first poll, so that pollers spread over the interval.
    pub phase: Duration,
}

/// How a Kafka record's value (or a RabbitMQ message's body) carries the stamp.
#[derive(Debug, Clone, Copy)]
pub enum RecordShape {
    /// The value is the stamp (plain producer, bridge inbound).
    Stamp,
    /// The value is a room message whose `data` is the stamp (docs/bridge.md, "Kafka mapping").
    Event,
}

#[derive(Deserialize)]
struct Event {
    data: Stamp,
}

async fn push(
    mut socket: Socket,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            frame = socket.next() => {
                let received = clock::now_us();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Incoming::Message(stamp) = ws::parse(&text)? {
                            recorder.record(stamp, received);
                        }
                    }
                    Some(Ok(Message::Close(close))) => bail!("the room closed a subscriber: {close:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("subscriber connection"),
                    None => bail!("subscriber connection ended"),
                }
            }
            _ = heartbeat.tick() => socket.send(Message::text("ping")).await.context("heartbeat")?,
            _ = stop.changed() => break,
        }
    }
    ws::close(socket).await;
    Ok(())
}

async fn poll_loop(
    mut conn: HttpConn,
    poll: Poll,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut since = 0;
    let mut tick = interval_at(Instant::now() + poll.phase, poll.every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        // A full page means more is waiting: fetch it now, not next tick.
        loop {
            let path = format!("{}?since={since}&limit={PAGE}", poll.messages_path);
            let (status, body) = conn.get(&path, Some(&poll.token)).await?;
            let received = clock::now_us();
            recorder.count_request();
            if !status.is_success() {
                bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
            }
            let page: Page = serde_json::from_slice(&body)
                .with_context(|| format!("{path}: not a history page"))?;
            for message in &page.messages {
                recorder.record(message.data, received);
                since = message.seq;
            }
            if !page.truncated {
                break;
            }
        }
    }
}

/// The stamp in `value`, as `shape` carries it.
fn stamp_of(value: &[u8], shape: RecordShape) -> Result<Stamp> {
    match shape {
        RecordShape::Stamp => serde_json::from_slice(value),
        RecordShape::Event => serde_json::from_slice::<Event>(value).map(|e| e.data),
    }
    .with_context(|| format!("record value: {}", String::from_utf8_lossy(value)))
}

async fn consume_amqp(
    consumer: lapin::Consumer,
    key: String,
    shape: RecordShape,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let received = consumer.map(|delivery| {
        let delivery = delivery.context("consuming")?;
        Ok((
            delivery.routing_key.as_str().as_bytes().to_vec(),
            delivery.data,
        ))
    });
    record_each(received, key, shape, recorder, stop).await
}

async fn consume(
    consumer: StreamConsumer,
    key: String,
    shape: RecordShape,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let received = consumer.stream().map(|record| {
        let record = record.context("consuming")?;
        let key = record.key().unwrap_or_default().to_vec();
        Ok((key, record.payload().unwrap_or_default().to_vec()))
    });
    record_each(received, key, shape, recorder, stop).await
}

/// Records the stamp of every message of `received` (its key and value)
/// under `key`, until stopped; the receipt time is read before anything
/// is parsed.
async fn record_each(
    received: impl futures_util::Stream<Item = Result<(Vec<u8>, Vec<u8>)>>,
    key: String,
    shape: RecordShape,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut received = std::pin::pin!(received);
    loop {
        tokio::select! {
            next = received.next() => {
                let at = clock::now_us();
                let Some(next) = next else {
                    bail!("the consumer ended");
                };
                let (got, value) = next?;
                if got != key.as_bytes() {
                    continue;
                }
                recorder.record(stamp_of(&value, shape)?, at);
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}
