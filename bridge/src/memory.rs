//! In-memory implementations of the broker seam, for unit tests of the
//! relay: a [`MemorySink`] that stores, refuses, or holds each delivery
//! until the test confirms it (and may fail dead letters first), and a
//! [`MemorySource`] that hands out prepared records, as the test watches,
//! and remembers commits.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use roomcast_protocol::wire::Message;
use tokio::sync::{mpsc, oneshot};

use crate::broker::{DeadLetter, Delivery, Record, Sink, SinkError, Source, SourceError};

/// How the sink answers.
enum Behaviour {
    /// Stores messages whose JSON is at most this long; refuses larger ones.
    RefuseOver(usize),
    /// Takes nothing.
    Unavailable,
    /// Stores every message, confirming each when the test says so.
    Hold(mpsc::UnboundedSender<Held>),
}

/// A delivery a holding sink waits to confirm.
pub struct Held {
    pub seq: u64,
    confirm: oneshot::Sender<()>,
}

pub struct MemorySink {
    behaviour: Behaviour,
    messages: Mutex<Vec<Message>>,
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

    /// Dead-letter writes attempted so far, stored or not.
    pub fn dead_letter_attempts(&self) -> usize {
        *self.dead_letter_attempts.lock().unwrap()
    }

    fn hold(
        &self,
        held: &mpsc::UnboundedSender<Held>,
        message: &Message,
    ) -> BoxFuture<'static, Delivery> {
        let (confirm, confirmed) = oneshot::channel();
        {
            let mut outstanding = self.outstanding.lock().unwrap();
            let before = outstanding.0;
            outstanding.1.push((message.seq, before));
            outstanding.0 += 1;
        }
        self.messages.lock().unwrap().push(message.clone());
        let _ = held.send(Held {
            seq: message.seq,
            confirm,
        });
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

    /// `(seq, deliveries outstanding before it)` for each message published
    /// to a holding sink.
    pub fn publications(&self) -> Vec<(u64, usize)> {
        self.outstanding.lock().unwrap().1.clone()
    }

    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters.lock().unwrap().clone()
    }
}

impl Sink for MemorySink {
    fn publish<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Delivery> {
        let outcome = match &self.behaviour {
            Behaviour::Hold(held) => return self.hold(held, message),
            Behaviour::Unavailable => Err(SinkError::Unavailable("memory sink is down".into())),
            Behaviour::RefuseOver(limit)
                if serde_json::to_string(message).unwrap().len() > *limit =>
            {
                Err(SinkError::Refused {
                    reason: "too_large".into(),
                    detail: format!("over {limit} bytes"),
                })
            }
            Behaviour::RefuseOver(_) => {
                self.messages.lock().unwrap().push(message.clone());
                Ok(())
            }
        };
        let delivery: Delivery = futures_util::future::ready(outcome).boxed();
        futures_util::future::ready(delivery).boxed()
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
