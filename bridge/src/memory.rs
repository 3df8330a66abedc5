//! In-memory implementations of the broker seam, for unit tests of the
//! relay: a [`MemorySink`] that stores, refuses, or holds each delivery
//! (messages and presence events alike) until the test confirms it (and
//! may fail dead letters first), and a
//! [`MemorySource`] that hands out prepared records, as the test watches,
//! and remembers commits.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::wire::{Message, PresenceEvent};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{
    presence_value, DeadLetter, Delivery, Record, Sink, SinkError, Source, SourceError,
};

/// How the sink answers.
enum Behaviour {
    /// Stores messages (and presence values) whose JSON is at most this
    /// long; refuses larger ones.
    RefuseOver(usize),
    /// Takes nothing.
    Unavailable,
    /// Stores every message, confirming each when the test says so.
    Hold(mpsc::UnboundedSender<Held>),
}

/// A delivery a holding sink waits to confirm.
pub struct Held {
    /// The message's `seq`, or the presence event's `pseq`.
    pub seq: u64,
    confirm: oneshot::Sender<()>,
}

pub struct MemorySink {
    behaviour: Behaviour,
    messages: Mutex<Vec<Message>>,
    presence: Mutex<Vec<PresenceEvent>>,
    /// False: presence is off, as with an empty `--presence-topic`.
    relays_presence: bool,
    dead_letters: Mutex<Vec<DeadLetter>>,
    /// What the next dead-letter writes get instead of being stored, in
    /// order; once empty, dead letters are stored.
    dead_letter_failures: Mutex<VecDeque<SinkError>>,
    /// Dead-letter writes attempted, stored or not.
    dead_letter_attempts: Mutex<usize>,
    /// Holding sinks: deliveries not confirmed yet, and for each message
    /// published, how many were outstanding when it came.
    outstanding: Mutex<(usize, Vec<(u64, usize)>)>,
}

impl MemorySink {
    pub fn refusing_over(bytes: usize) -> MemorySink {
        MemorySink::with(Behaviour::RefuseOver(bytes))
    }

    pub fn unavailable() -> MemorySink {
        MemorySink::with(Behaviour::Unavailable)
    }

    /// A sink that stores every message and confirms none until the test
    /// calls [`MemorySink::confirm`] with what the receiver hands out.
    pub fn holding() -> (MemorySink, mpsc::UnboundedReceiver<Held>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MemorySink::with(Behaviour::Hold(tx)), rx)
    }

    fn with(behaviour: Behaviour) -> MemorySink {
        MemorySink {
            behaviour,
            messages: Mutex::default(),
            presence: Mutex::default(),
            relays_presence: true,
            dead_letters: Mutex::default(),
            dead_letter_failures: Mutex::default(),
            dead_letter_attempts: Mutex::default(),
            outstanding: Mutex::default(),
        }
    }

    /// This sink, answering its next dead-letter writes with `failures`
    /// (in order) before it stores any.
    pub fn failing_dead_letters(self, failures: Vec<SinkError>) -> MemorySink {
        *self.dead_letter_failures.lock().unwrap() = failures.into();
        self
    }

    /// This sink, with presence turned off.
    pub fn without_presence(self) -> MemorySink {
        MemorySink {
            relays_presence: false,
            ..self
        }
    }

    /// Dead-letter writes attempted so far, stored or not.
    pub fn dead_letter_attempts(&self) -> usize {
        *self.dead_letter_attempts.lock().unwrap()
    }

    /// Holds the delivery of what the caller just stored under `seq`.
    fn hold(&self, held: &mpsc::UnboundedSender<Held>, seq: u64) -> BoxFuture<'static, Delivery> {
        let (confirm, confirmed) = oneshot::channel();
        {
            let mut outstanding = self.outstanding.lock().unwrap();
            let before = outstanding.0;
            outstanding.1.push((seq, before));
            outstanding.0 += 1;
        }
        let _ = held.send(Held { seq, confirm });
        let delivery: Delivery = async move {
            confirmed
                .await
                .map_err(|_| SinkError::Unavailable("the test dropped the delivery".into()))
        }
        .boxed();
        futures_util::future::ready(delivery).boxed()
    }

    pub fn confirm(&self, held: Held) {
        self.outstanding.lock().unwrap().0 -= 1;
        let _ = held.confirm.send(());
    }

    /// `(seq, deliveries outstanding before it)` for each message (or
    /// presence event) published to a holding sink.
    pub fn publications(&self) -> Vec<(u64, usize)> {
        self.outstanding.lock().unwrap().1.clone()
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// The presence events stored (or held), in the order they came.
    pub fn presence_events(&self) -> Vec<PresenceEvent> {
        self.presence.lock().unwrap().clone()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().unwrap().clone()
    }
}

impl MemorySink {
    /// Answers a delivery of `bytes` under `seq` as the behaviour says,
    /// calling `store` for what it stores or holds.
    fn deliver(
        &self,
        seq: u64,
        bytes: usize,
        store: impl FnOnce(),
    ) -> BoxFuture<'static, Delivery> {
        let outcome = match &self.behaviour {
            Behaviour::Hold(held) => {
                store();
                return self.hold(held, seq);
            }
            Behaviour::Unavailable => Err(SinkError::Unavailable("memory sink is down".into())),
            Behaviour::RefuseOver(limit) if bytes > *limit => Err(SinkError::Refused {
                reason: "too_large".into(),
                detail: format!("over {limit} bytes"),
            }),
            Behaviour::RefuseOver(_) => {
                store();
                Ok(())
            }
        };
        let delivery: Delivery = futures_util::future::ready(outcome).boxed();
        futures_util::future::ready(delivery).boxed()
    }
}

impl Sink for MemorySink {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery> {
        let bytes = serde_json::to_string(message).unwrap().len();
        self.deliver(message.seq, bytes, || {
            self.messages.lock().unwrap().push(message.clone())
        })
    }

    fn relays_presence(&self) -> bool {
        self.relays_presence
    }

    fn presence<'a>(&'a self, event: &'a PresenceEvent) -> BoxFuture<'a, Delivery> {
        let bytes = presence_value(event).len();
        self.deliver(event.pseq, bytes, || {
            self.presence.lock().unwrap().push(event.clone())
        })
    }

    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), SinkError>> {
        *self.dead_letter_attempts.lock().unwrap() += 1;
        let outcome = match self.dead_letter_failures.lock().unwrap().pop_front() {
            Some(failure) => Err(failure),
            None => {
                self.dead_letters.lock().unwrap().push(letter.clone());
                Ok(())
            }
        };
        futures_util::future::ready(outcome).boxed()
    }
}

/// What a test calls with each record a [`MemorySource`] hands out.
type Watch = Box<dyn FnMut(&Record) + Send>;

/// Hands out `records`, then fails with `then` (or waits forever);
/// commits are recorded.
pub struct MemorySource {
    records: VecDeque<Record>,
    then: Option<SourceError>,
    /// Called with each record as it is handed out, while the relay holds
    /// the source: how a test watches what the relay takes.
    watch: Option<Watch>,
    pub commits: Vec<(i32, i64)>,
    pub closed: bool,
}

impl MemorySource {
    pub fn new(records: Vec<Record>) -> MemorySource {
        MemorySource {
            records: records.into(),
            then: None,
            watch: None,
            commits: Vec::new(),
            closed: false,
        }
    }

    /// A source that calls `watch` with each record it hands out.
    pub fn watched(
        records: Vec<Record>,
        watch: impl FnMut(&Record) + Send + 'static,
    ) -> MemorySource {
        MemorySource {
            watch: Some(Box::new(watch)),
            ..MemorySource::new(records)
        }
    }

    /// A source that fails with `error` once its records are out.
    pub fn failing(records: Vec<Record>, error: SourceError) -> MemorySource {
        MemorySource {
            then: Some(error),
            ..MemorySource::new(records)
        }
    }
}

impl Source for MemorySource {
    fn next(&mut self) -> BoxFuture<'_, Result<Record, SourceError>> {
        // A record is taken when the future is polled, not when it is made,
        // as with Kafka's consumer: `select!` makes the future of a disabled
        // branch (consumption paused) and drops it unpolled, which must not
        // lose a record.
        async move {
            match (self.records.pop_front(), self.then.take()) {
                (Some(record), then) => {
                    self.then = then;
                    if let Some(watch) = &mut self.watch {
                        watch(&record);
                    }
                    Ok(record)
                }
                (None, Some(error)) => Err(error),
                (None, None) => futures_util::future::pending().await,
            }
        }
        .boxed()
    }

    fn commit(&mut self, partition: i32, offset: i64) -> Result<(), SourceError> {
        self.commits.push((partition, offset));
        Ok(())
    }

    fn close(&mut self) -> BoxFuture<'_, Result<(), SourceError>> {
        self.closed = true;
        futures_util::future::ready(Ok(())).boxed()
    }
}
