//! A room's durable state in its SQLite storage: the message history (which
//! is also the bridge's outbox and, through the ids it stores, the record of
//! idempotency keys), and a few facts in `meta` (epoch, bridge cursor,
//! registration, counters, schema version).
//!
//! Every accepted message is written here before it is sent anywhere. All
//! statements are synchronous: a publish and its broadcast happen in one
//! turn of the room, which keeps `seq` gapless and replays unmixed with live
//! messages, and the runtime commits a turn's writes atomically.
//!
//! A publish costs one statement and one row (the message); trimming is
//! batched (one DELETE per [`count_trim_due`] of slack, so each message's
//! eventual delete is its second row), the head is written only when a
//! trim could remove it, and nothing is written for reads: a room that was
//! never written has no tables at all until its first write.

use std::cell::{Cell, RefCell};

use roomcast_protocol::config::Limits;
use roomcast_protocol::history::{
    count_floor, count_trim_due, dropped_unconfirmed, trim_ceiling, ttl_cutoff_ms, Outbox,
    Retained, TURN_BYTES,
};
use roomcast_protocol::ids;
use roomcast_protocol::wire::{Message, Origin};
use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{Result, SqlStorageValue};

use crate::storage::Db;

/// The tables as the first release created them (schema version 0).
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idempotency (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// Changes since [`SCHEMA`], in order; `meta.schema` counts those a room has
/// applied. Rooms live as long as their storage, so a room created by any
/// earlier release opens with this release's tables: a new room creates
/// version 0 and applies them all, an old one applies the rest. Append only.
const MIGRATIONS: &[&[&str]] = &[
    // 1: the publisher's W3C traceparent (NULL when it sent none).
    &["ALTER TABLE messages ADD COLUMN trace TEXT"],
    // 2: the ids of the stored messages are the idempotency keys (the room
    // keeps them in memory), so a keyed publish writes one row, not three.
    &["DROP TABLE idempotency"],
];

/// Rows per INSERT of a batch: eight bound values a row keeps a statement
/// well under the runtime's limit on bound parameters.
const ROWS_PER_INSERT: usize = 10;

/// A timestamp bound no message reaches, and still exact as a JavaScript
/// number (the runtime passes bound values through JavaScript).
const NO_CUTOFF: i64 = (1 << 53) - 1;

/// How often age trimming runs on the publish path (the alarm runs it too).
const AGE_TRIM_INTERVAL_MS: u64 = 60_000;

#[derive(Deserialize)]
struct MessageRow {
    seq: u64,
    id: String,
    ts: u64,
    sender: String,
    origin: String,
    data: String,
    trace: Option<String>,
}

/// A stored message's id and who owns it.
#[derive(Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub sender: String,
    pub origin: String,
    pub seq: u64,
}

#[derive(Deserialize)]
struct Span {
    n: u64,
    lo: Option<u64>,
    hi: Option<u64>,
}

#[derive(Deserialize)]
struct MetaRow {
    key: String,
    value: String,
}

#[derive(Deserialize)]
struct Count {
    n: u64,
}

/// What a trim did, for the counters and the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Unconfirmed messages dropped because the outbox was full, and their
    /// seq range.
    pub dropped: u64,
    pub range: Option<(u64, u64)>,
}

/// The facts kept in `meta`, loaded once.
#[derive(Default)]
struct Meta {
    epoch: Option<String>,
    cursor: u64,
    bridged: bool,
    registered: bool,
    head: u64,
    last_ms: Option<u64>,
    stats: Option<String>,
    name: Option<String>,
}

pub struct History {
    db: Db,
    /// The tables exist (false for a room that was never written).
    created: Cell<bool>,
    head: Cell<u64>,
    /// Lowest stored seq and how many are stored.
    oldest: Cell<Option<u64>>,
    stored: Cell<u64>,
    epoch: RefCell<Option<String>>,
    /// Highest seq the bridge confirmed as written to Kafka.
    cursor: Cell<u64>,
    /// The room holds unconfirmed messages for the bridge.
    bridged: Cell<bool>,
    /// The registry knows this room.
    registered: Cell<bool>,
    /// The head as last written to `meta` (a trim writes it first).
    saved_head: Cell<u64>,
    /// When the head message was stored, as written with the head: it is
    /// still known once that message is trimmed (retirement counts from it).
    saved_last_ms: Cell<Option<u64>>,
    last_age_trim_ms: Cell<u64>,
    name: RefCell<Option<String>>,
    stats: RefCell<Option<String>>,
}

impl History {
    /// Opens the room's storage without writing anything.
    pub fn open(db: Db) -> Result<History> {
        let created = db
            .rows::<Count>(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                vec![],
            )?
            .first()
            .is_some_and(|c| c.n > 0);
        let history = History {
            db,
            created: Cell::new(created),
            head: Cell::new(0),
            oldest: Cell::new(None),
            stored: Cell::new(0),
            epoch: RefCell::new(None),
            cursor: Cell::new(0),
            bridged: Cell::new(false),
            registered: Cell::new(false),
            saved_head: Cell::new(0),
            saved_last_ms: Cell::new(None),
            last_age_trim_ms: Cell::new(0),
            name: RefCell::new(None),
            stats: RefCell::new(None),
        };
        if created {
            history.migrate()?;
            history.load()?;
        }
        Ok(history)
    }

    /// Creates the tables and the epoch on the room's first write; `bridged`
    /// when every room is an outbox from its first message.
    pub fn create(&self, name: &str, bridged: bool) -> Result<()> {
        if self.created.get() {
            return Ok(());
        }
        for statement in SCHEMA {
            self.db.run(statement, vec![])?;
        }
        self.created.set(true);
        self.migrate()?;
        let epoch = ids::epoch();
        self.set_meta("epoch", &epoch)?;
        self.set_meta("room", name)?;
        *self.epoch.borrow_mut() = Some(epoch);
        *self.name.borrow_mut() = Some(name.to_owned());
        if bridged {
            self.mark_bridged()?;
        }
        Ok(())
    }

    /// Applies the migrations this room has not. They and the new version
    /// are written with no `await` between them, which the runtime commits
    /// atomically, so a room never holds half a migration.
    fn migrate(&self) -> Result<()> {
        let applied = self
            .db
            .rows::<MetaRow>("SELECT key, value FROM meta WHERE key = 'schema'", vec![])?
            .first()
            .and_then(|r| r.value.parse().ok())
            .unwrap_or(0usize);
        let Some(pending) = MIGRATIONS.get(applied..).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        for migration in pending {
            for statement in *migration {
                self.db.run(statement, vec![])?;
            }
        }
        self.set_meta("schema", &MIGRATIONS.len().to_string())
    }

    fn load(&self) -> Result<()> {
        let mut meta = Meta::default();
        for row in self
            .db
            .rows::<MetaRow>("SELECT key, value FROM meta", vec![])?
        {
            let number = || row.value.parse().unwrap_or(0);
            match row.key.as_str() {
                "epoch" => meta.epoch = Some(row.value.clone()),
                "cursor" => meta.cursor = number(),
                "bridged" => meta.bridged = true,
                "registered" => meta.registered = row.value == "1",
                "head" => meta.head = number(),
                "last_ms" => meta.last_ms = row.value.parse().ok(),
                "stats" => meta.stats = Some(row.value.clone()),
                "room" => meta.name = Some(row.value.clone()),
                _ => {}
            }
        }
        let span = self.span()?;
        self.head.set(meta.head.max(span.hi.unwrap_or(0)));
        self.saved_head.set(meta.head);
        self.saved_last_ms.set(meta.last_ms);
        self.oldest.set(span.lo);
        self.stored.set(span.n);
        self.cursor.set(meta.cursor);
        self.bridged.set(meta.bridged);
        self.registered.set(meta.registered);
        *self.epoch.borrow_mut() = meta.epoch;
        *self.name.borrow_mut() = meta.name;
        *self.stats.borrow_mut() = meta.stats;
        Ok(())
    }

    /// Count, lowest and highest seq of the stored messages.
    fn span(&self) -> Result<Span> {
        let row = self.db.rows::<Span>(
            "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM messages",
            vec![],
        )?;
        Ok(row.into_iter().next().unwrap_or(Span {
            n: 0,
            lo: None,
            hi: None,
        }))
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the room was ever written (since its storage was last deleted).
    pub fn exists(&self) -> bool {
        self.created.get()
    }

    pub fn head(&self) -> u64 {
        self.head.get()
    }

    /// The epoch, once the room exists.
    pub fn epoch(&self) -> Option<String> {
        self.epoch.borrow().clone()
    }

    /// The room's name as its first write stored it.
    pub fn name(&self) -> Option<String> {
        self.name.borrow().clone()
    }

    /// The counters a previous wake stored, as JSON.
    pub fn stored_stats(&self) -> Option<String> {
        self.stats.borrow().clone()
    }

    pub fn save_stats(&self, json: &str) -> Result<()> {
        if self.created.get() {
            self.set_meta("stats", json)?;
        }
        Ok(())
    }

    /// The range clients see, for resume decisions and history pages. Rows
    /// are deleted in batches, so some past the limits may still be stored;
    /// they are already out of sight.
    pub fn retained(&self, limits: &Limits, now_ms: u64) -> Result<Retained> {
        let floor = self.floor(limits, now_ms)?;
        Ok(Retained {
            head: self.head(),
            oldest: self
                .oldest
                .get()
                .map(|oldest| oldest.max(floor + 1))
                .filter(|oldest| *oldest <= self.head()),
        })
    }

    /// The highest seq the limits hide from clients: past the count limit,
    /// or older than the age limit (messages held for the bridge stay
    /// visible, as they stay stored). Costs a read only while messages past
    /// the age limit wait for their trim.
    pub fn floor(&self, limits: &Limits, now_ms: u64) -> Result<u64> {
        let head = self.head();
        let outbox = self.outbox(limits);
        let by_count = trim_ceiling(head, count_floor(head, limits.history_limit), outbox);
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(by_count);
        }
        #[derive(Deserialize)]
        struct First {
            seq: Option<u64>,
        }
        let first_young = self
            .db
            .rows::<First>(
                "SELECT MIN(seq) AS seq FROM messages WHERE ts >= ?",
                vec![SqlStorageValue::from(cutoff.min(NO_CUTOFF as u64) as i64)],
            )?
            .first()
            .and_then(|f| f.seq);
        let by_age = first_young.map_or(head, |seq| seq.saturating_sub(1));
        Ok(by_count.max(trim_ceiling(head, by_age, outbox)))
    }

    /// How many messages follow `since`, and how many bytes of data they hold.
    pub fn size_after(&self, since: u64) -> Result<(u64, u64)> {
        if !self.created.get() || since >= self.head() {
            return Ok((0, 0));
        }
        #[derive(Deserialize)]
        struct Size {
            n: u64,
            bytes: Option<u64>,
        }
        let rows = self.db.rows::<Size>(
            "SELECT COUNT(*) AS n, SUM(octet_length(data)) AS bytes FROM messages WHERE seq > ?",
            vec![seq_value(since)],
        )?;
        Ok(rows.first().map_or((0, 0), |r| (r.n, r.bytes.unwrap_or(0))))
    }

    /// The next seq.
    pub fn next_seq(&self) -> u64 {
        self.head() + 1
    }

    /// Stores `messages`, whose seqs follow the head in order, a few rows
    /// per statement.
    pub fn append(&self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut values = Vec::with_capacity(chunk.len() * 7);
            for m in chunk {
                values.extend([
                    seq_value(m.seq),
                    m.id.as_str().into(),
                    SqlStorageValue::try_from_i64(m.ts as i64)?,
                    m.sender.as_str().into(),
                    m.origin.as_str().into(),
                    m.data.get().into(),
                    m.trace.as_deref().into(),
                ]);
            }
            self.db.run(
                &format!("INSERT INTO messages (seq, id, ts, sender, origin, data, trace) VALUES {placeholders}"),
                values,
            )?;
        }
        if let (Some(first), Some(last)) = (messages.first(), messages.last()) {
            self.head.set(last.seq);
            if self.oldest.get().is_none() {
                self.oldest.set(Some(first.seq));
            }
            self.stored.set(self.stored.get() + messages.len() as u64);
        }
        Ok(())
    }

    /// The ids of the stored messages, oldest first, to seed the room's
    /// in-memory key window when it wakes.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        if !self.created.get() {
            return Ok(Vec::new());
        }
        self.db.rows(
            "SELECT id, sender, origin, seq FROM messages ORDER BY seq",
            vec![],
        )
    }

    /// Stored messages with `seq > since`, in order: at most `limit`, and no
    /// more data than [`TURN_BYTES`] (but always at least one message, so a
    /// reader makes progress); with `relay_only`, only those the bridge
    /// relays to Kafka (not from Kafka).
    pub fn after(
        &self,
        room: &str,
        since: u64,
        limit: u64,
        relay_only: bool,
    ) -> Result<Vec<Message>> {
        if !self.created.get() || since >= self.head() {
            return Ok(Vec::new());
        }
        let filter = if relay_only {
            "AND origin != 'kafka'"
        } else {
            ""
        };
        let query = format!(
            "SELECT seq, id, ts, sender, origin, data, trace FROM (\
               SELECT seq, id, ts, sender, origin, data, trace, \
                 SUM(octet_length(data)) OVER (ORDER BY seq) - octet_length(data) AS before \
               FROM messages WHERE seq > ? {filter} ORDER BY seq LIMIT ?\
             ) WHERE before < ? ORDER BY seq"
        );
        let rows: Vec<MessageRow> = self.db.rows(
            &query,
            vec![
                seq_value(since),
                seq_value(limit),
                (TURN_BYTES as i64).into(),
            ],
        )?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    /// When the oldest stored message was stored.
    pub fn oldest_ts(&self) -> Result<Option<u64>> {
        let Some(oldest) = self.oldest.get().filter(|_| self.created.get()) else {
            return Ok(None);
        };
        self.ts_of(oldest)
    }

    /// When the latest message was stored, if it still is.
    pub fn last_message_ms(&self) -> Result<Option<u64>> {
        if !self.created.get() {
            return Ok(None);
        }
        Ok(self.ts_of(self.head())?.or(self.saved_last_ms.get()))
    }

    fn ts_of(&self, seq: u64) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Ts {
            ts: u64,
        }
        let rows = self.db.rows::<Ts>(
            "SELECT ts FROM messages WHERE seq = ?",
            vec![seq_value(seq)],
        )?;
        Ok(rows.first().map(|r| r.ts))
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.get()
    }

    /// Records the bridge's confirmation of everything up to `seq`.
    pub fn confirm(&self, seq: u64) -> Result<()> {
        let seq = seq.min(self.head());
        if seq > self.cursor.get() {
            self.set_meta("cursor", &seq.to_string())?;
            self.cursor.set(seq);
        }
        Ok(())
    }

    /// Makes this room hold unconfirmed messages for the bridge from now on.
    pub fn mark_bridged(&self) -> Result<()> {
        if self.created.get() && !self.bridged.replace(true) {
            self.set_meta("bridged", "1")?;
        }
        Ok(())
    }

    pub fn registered(&self) -> bool {
        self.registered.get()
    }

    /// Records whether the registry knows this room.
    pub fn set_registered(&self, registered: bool) -> Result<()> {
        if self.created.get() && self.registered.replace(registered) != registered {
            self.set_meta("registered", if registered { "1" } else { "0" })?;
        }
        Ok(())
    }

    /// Messages the bridge has yet to confirm (none unless the room holds
    /// them for a bridge). Messages from Kafka are not relayed, so they do
    /// not count. Costs nothing once the bridge has caught up (the usual
    /// case), and a read of the unconfirmed rows otherwise.
    pub fn pending(&self) -> Result<u64> {
        if !self.created.get() || !self.bridged.get() || self.cursor() >= self.head() {
            return Ok(0);
        }
        let rows = self.db.rows::<Count>(
            "SELECT COUNT(*) AS n FROM messages WHERE seq > ? AND origin != 'kafka'",
            vec![seq_value(self.cursor())],
        )?;
        Ok(rows.first().map_or(0, |r| r.n))
    }

    fn outbox(&self, limits: &Limits) -> Option<Outbox> {
        self.bridged.get().then(|| Outbox {
            cursor: self.cursor(),
            limit: limits.outbox_limit,
        })
    }

    /// Deletes what the count limit hides, besides what is held for the
    /// bridge; runs only once the slack has filled up.
    pub fn trim_count(&self, limits: &Limits) -> Result<Trimmed> {
        if !count_trim_due(self.stored.get(), limits.history_limit) {
            return Ok(Trimmed::default());
        }
        let head = self.head();
        let ceiling = trim_ceiling(
            head,
            count_floor(head, limits.history_limit),
            self.outbox(limits),
        );
        self.trim(ceiling, None, limits)
    }

    /// Drops messages older than `history_ttl_secs`, besides those held for
    /// the bridge; on the publish path at most once a minute.
    pub fn trim_age(&self, limits: &Limits, now_ms: u64, force: bool) -> Result<Trimmed> {
        if !self.created.get()
            || self.stored.get() == 0
            || (!force && now_ms < self.last_age_trim_ms.get() + AGE_TRIM_INTERVAL_MS)
        {
            return Ok(Trimmed::default());
        }
        self.last_age_trim_ms.set(now_ms);
        let ceiling = trim_ceiling(self.head(), self.head(), self.outbox(limits));
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        self.trim(ceiling, Some(cutoff), limits)
    }

    /// Deletes messages up to `ceiling` (older than `cutoff`, when given),
    /// after saving the head (the table may end up empty) and counting what
    /// the bridge never confirmed.
    fn trim(&self, ceiling: u64, cutoff: Option<u64>, limits: &Limits) -> Result<Trimmed> {
        if self.oldest.get().is_none_or(|oldest| oldest > ceiling) {
            return Ok(Trimmed::default());
        }
        if self.saved_head.get() < self.head() {
            self.set_meta("head", &self.head().to_string())?;
            self.saved_head.set(self.head());
            if let Some(last) = self.ts_of(self.head())? {
                self.set_meta("last_ms", &last.to_string())?;
                self.saved_last_ms.set(Some(last));
            }
        }
        let mut trimmed = Trimmed::default();
        let cutoff_value =
            SqlStorageValue::from(cutoff.map_or(NO_CUTOFF, |ms| ms.min(NO_CUTOFF as u64) as i64));
        if let Some((from, to)) = dropped_unconfirmed(ceiling, self.outbox(limits)) {
            #[derive(Deserialize)]
            struct Lost {
                n: u64,
                lo: Option<u64>,
                hi: Option<u64>,
            }
            let lost = self.db.rows::<Lost>(
                "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM messages WHERE seq >= ? AND seq <= ? AND ts < ? AND origin != 'kafka'",
                vec![seq_value(from), seq_value(to), cutoff_value.clone()],
            )?;
            if let Some(lost) = lost.into_iter().next().filter(|l| l.n > 0) {
                trimmed.dropped = lost.n;
                trimmed.range = lost.lo.zip(lost.hi);
            }
        }
        self.db.run(
            "DELETE FROM messages WHERE seq <= ? AND ts < ?",
            vec![seq_value(ceiling), cutoff_value],
        )?;
        let span = self.span()?;
        self.oldest.set(span.lo);
        self.stored.set(span.n);
        Ok(trimmed)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.db.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// Forgets everything after the room's storage was deleted: the next
    /// write creates it afresh, under a new epoch.
    pub fn forget(&self) {
        self.created.set(false);
        self.head.set(0);
        self.oldest.set(None);
        self.stored.set(0);
        self.cursor.set(0);
        self.bridged.set(false);
        self.registered.set(false);
        self.saved_head.set(0);
        self.saved_last_ms.set(None);
        *self.epoch.borrow_mut() = None;
        *self.stats.borrow_mut() = None;
    }
}

/// A seq as a bound value; seqs never come near JavaScript's exact limit,
/// and a client's `since` beyond it reads as "after everything".
fn seq_value(seq: u64) -> SqlStorageValue {
    (seq.min(NO_CUTOFF as u64) as i64).into()
}

fn to_message(room: &str, row: MessageRow) -> Result<Message> {
    let origin = Origin::parse(&row.origin).ok_or_else(|| {
        worker::Error::RustError(format!(
            "stored message {} has unknown origin {:?}",
            row.seq, row.origin
        ))
    })?;
    let data = RawValue::from_string(row.data)?;
    Ok(Message {
        room: room.to_owned(),
        id: row.id,
        seq: row.seq,
        ts: row.ts,
        sender: row.sender,
        origin,
        data,
        trace: row.trace,
    })
}
