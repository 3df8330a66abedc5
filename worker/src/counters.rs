//! The counters of a room's object or of one of its shards (docs/protocol.md,
//! "Stats"); a shard hands its own to the room with each answer.
//!
//! Counters change on nearly every event and matter only in aggregate, so
//! they live in memory and are written to storage at most every
//! [`FLUSH_INTERVAL_MS`] (and when the room retires): an evicted room loses
//! at most that much counting, which Prometheus reads as a counter reset,
//! rather than every publish paying a row for them. The storage counts
//! (statements, rows) restart from the flushed values the same way.

use std::cell::{Cell, RefCell};

use roomcast_protocol::stats::RoomStats;
use worker::{console_error, WebSocket};

use crate::attachment::Attachment;
use crate::store::Store;

/// How often changed counters are written at most.
const FLUSH_INTERVAL_MS: u64 = 10_000;

#[derive(Default)]
pub struct Counters {
    stats: RefCell<Option<RoomStats>>,
    /// The stored counters were taken over in this wake: what is counted
    /// before that (an event counts before it reads storage) is added to
    /// them then, never replaced by them.
    loaded: Cell<bool>,
    /// Changed since the last flush.
    dirty: Cell<bool>,
    flushed_ms: Cell<u64>,
    /// Bumped on every change, so a link can tell whether its last `stats`
    /// frame is still current.
    version: Cell<u64>,
}

impl Counters {
    /// Runs `f` on the counters, loading them on first use.
    pub fn with<T>(&self, f: impl FnOnce(&mut RoomStats) -> T) -> T {
        let mut slot = self.stats.borrow_mut();
        let stats = slot.get_or_insert_with(RoomStats::default);
        self.dirty.set(true);
        self.version.set(self.version.get() + 1);
        f(stats)
    }

    /// Saves a socket's state, counted: attachments are written only when
    /// something that must survive hibernation changed, and `/stats` shows
    /// how often that is.
    pub fn save<A: Attachment>(&self, ws: &WebSocket, state: &A) -> worker::Result<()> {
        self.with(|s| s.attachment_writes += 1);
        state.save(ws)
    }

    pub fn version(&self) -> u64 {
        self.version.get()
    }

    /// Takes over the counters a previous wake stored (and the storage
    /// counts they carry), once per wake, adding what this wake counted
    /// before.
    pub fn load(&self, store: &Store) {
        if self.loaded.replace(true) {
            return;
        }
        let mut stored: RoomStats = store
            .facts()
            .stored_stats()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        store.db().restore(stored.storage);
        if let Some(counted) = self.stats.borrow_mut().take() {
            stored.absorb(&counted);
        }
        *self.stats.borrow_mut() = Some(stored);
    }

    /// A copy with the storage counts as of now.
    pub fn snapshot(&self, store: &Store) -> RoomStats {
        self.load(store);
        let mut stats = self.stats.borrow().clone().unwrap_or_default();
        stats.storage = store.db().counts();
        stats
    }

    pub fn flush_if_due(&self, store: &Store, now_ms: u64) {
        if self.dirty.get() && now_ms >= self.flushed_ms.get() + FLUSH_INTERVAL_MS {
            self.flush(store, now_ms);
        }
    }

    /// Writes the counters now (when changed).
    pub fn flush(&self, store: &Store, now_ms: u64) {
        if !self.dirty.replace(false) || !store.exists() {
            return;
        }
        self.flushed_ms.set(now_ms);
        let json = serde_json::to_string(&self.snapshot(store)).unwrap_or_default();
        if let Err(e) = store.facts().save_stats(&json) {
            console_error!("could not store the room's counters: {e}");
        }
    }

    /// Hands over the counters and starts again from zero: a shard's
    /// counters since its last report, for the room to add to its own.
    pub fn take(&self) -> RoomStats {
        self.dirty.set(false);
        self.stats.take().unwrap_or_default()
    }

    /// Forgets everything (the room's storage was deleted).
    pub fn reset(&self) {
        *self.stats.borrow_mut() = None;
        self.loaded.set(false);
        self.dirty.set(false);
    }
}
