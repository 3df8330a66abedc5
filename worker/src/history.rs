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
//! One publish, one row. The history is a ring of `HISTORY_LIMIT` slots
//! (`ring`, slot = seq modulo the capacity): a message overwrites the one
//! `HISTORY_LIMIT` older, so keeping the history at its limit costs no
//! deletes, and an overwrite is one row written, as an insert is. Only a
//! message the bridge has not confirmed yet is moved aside before its slot
//! is taken (`outbox`, deleted once confirmed): that costs rows only while
//! the bridge is more than a whole history behind. Age trimming deletes,
//! but a message is deleted at most once, and then never overwritten. Reads
//! write nothing: a room that was never written has no tables at all.

use std::cell::{Cell, RefCell};

use roomcast_protocol::config::{Config, Limits};
use roomcast_protocol::history::{
    count_floor, dropped_unconfirmed, outbox_room, trim_ceiling, ttl_cutoff_ms, Outbox, Retained,
    TURN_BYTES,
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
    // keeps them in memory), so a keyed publish writes no key row.
    &["DROP TABLE idempotency"],
    // 3: the history becomes a ring of slots and an outbox; the log's rows
    // move over when the room opens with its limits (see `History::open`).
    &[
        "CREATE TABLE ring (slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT)",
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT)",
        "ALTER TABLE messages RENAME TO legacy",
    ],
];

/// The migration that made the ring: rooms from before it adopt their log.
const RING_MIGRATION: usize = 3;

/// The columns of a stored message, in the order the tables hold them.
const COLUMNS: &str = "seq, id, ts, sender, origin, data, trace";

/// Rows per INSERT of a batch: seven or eight bound values a row keep a
/// statement under the runtime's limit of 100 bound parameters.
const ROWS_PER_INSERT: usize = 12;

/// How often age trimming runs on the publish path (the alarm runs it too).
const AGE_TRIM_INTERVAL_MS: u64 = 60_000;

/// A timestamp bound no message reaches, and still exact as a JavaScript
/// number (the runtime passes bound values through JavaScript).
const NO_CUTOFF: i64 = (1 << 53) - 1;

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

/// What a write dropped, for the counters and the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Unconfirmed messages dropped because the outbox was full, and their
    /// seq range.
    pub dropped: u64,
    pub range: Option<(u64, u64)>,
}

impl From<Span> for Trimmed {
    fn from(lost: Span) -> Trimmed {
        Trimmed {
            dropped: lost.n,
            range: lost.lo.zip(lost.hi),
        }
    }
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
    capacity: Option<u64>,
    stats: Option<String>,
    name: Option<String>,
    shards: u32,
}

pub struct History {
    db: Db,
    /// The tables exist (false for a room that was never written).
    created: Cell<bool>,
    /// Slots in the ring.
    capacity: Cell<u64>,
    head: Cell<u64>,
    /// Lowest stored seq, and how many messages wait in the outbox.
    oldest: Cell<Option<u64>>,
    outboxed: Cell<u64>,
    epoch: RefCell<Option<String>>,
    /// Highest seq the bridge confirmed as written to Kafka.
    cursor: Cell<u64>,
    /// The room holds unconfirmed messages for the bridge.
    bridged: Cell<bool>,
    /// The registry knows this room.
    registered: Cell<bool>,
    /// The head as last written to `meta` (an age trim may empty the tables).
    saved_head: Cell<u64>,
    /// When the head message was stored, as written with the head: it is
    /// still known once that message is trimmed (retirement counts from it).
    saved_last_ms: Cell<Option<u64>>,
    last_age_trim_ms: Cell<u64>,
    name: RefCell<Option<String>>,
    stats: RefCell<Option<String>>,
    /// Shard objects the room has placed connections on (docs/scaling.md).
    shards: Cell<u32>,
}

impl History {
    /// Opens the room's storage without writing anything, unless it holds
    /// an older release's tables, which are brought up to date first (with
    /// the room's limits from `config`).
    pub fn open(db: Db, config: &Config) -> Result<History> {
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
            capacity: Cell::new(1),
            head: Cell::new(0),
            oldest: Cell::new(None),
            outboxed: Cell::new(0),
            epoch: RefCell::new(None),
            cursor: Cell::new(0),
            bridged: Cell::new(false),
            registered: Cell::new(false),
            saved_head: Cell::new(0),
            saved_last_ms: Cell::new(None),
            last_age_trim_ms: Cell::new(0),
            name: RefCell::new(None),
            stats: RefCell::new(None),
            shards: Cell::new(0),
        };
        if created {
            let applied = history.migrate()?;
            history.load()?;
            if applied < RING_MIGRATION {
                let limits = config.limits_for(&history.name().unwrap_or_default());
                history.adopt_legacy(&limits)?;
            }
        }
        Ok(history)
    }

    /// Creates the tables and the epoch on the room's first write; `bridged`
    /// when every room is an outbox from its first message.
    pub fn create(&self, name: &str, limits: &Limits, bridged: bool) -> Result<()> {
        if self.created.get() {
            return Ok(());
        }
        for statement in SCHEMA {
            self.db.run(statement, vec![])?;
        }
        self.created.set(true);
        self.migrate()?;
        self.db.run("DROP TABLE legacy", vec![])?;
        let epoch = ids::epoch();
        self.set_meta("epoch", &epoch)?;
        self.set_meta("room", name)?;
        self.set_capacity(limits.history_limit)?;
        *self.epoch.borrow_mut() = Some(epoch);
        *self.name.borrow_mut() = Some(name.to_owned());
        if bridged {
            self.mark_bridged()?;
        }
        Ok(())
    }

    /// Applies the migrations this room has not, and says how many it had.
    /// They and the new version are written with no `await` between them,
    /// which the runtime commits atomically, so a room never holds half a
    /// migration.
    fn migrate(&self) -> Result<usize> {
        let applied = self
            .db
            .rows::<MetaRow>("SELECT key, value FROM meta WHERE key = 'schema'", vec![])?
            .first()
            .and_then(|r| r.value.parse().ok())
            .unwrap_or(0usize);
        let Some(pending) = MIGRATIONS.get(applied..).filter(|p| !p.is_empty()) else {
            return Ok(applied);
        };
        for migration in pending {
            for statement in *migration {
                self.db.run(statement, vec![])?;
            }
        }
        self.set_meta("schema", &MIGRATIONS.len().to_string())?;
        Ok(applied)
    }

    /// Moves an older release's log of messages into the ring (the newest
    /// `HISTORY_LIMIT`) and the outbox (older ones the bridge still needs).
    fn adopt_legacy(&self, limits: &Limits) -> Result<()> {
        let legacy = self.span("legacy")?;
        self.head.set(self.head().max(legacy.hi.unwrap_or(0)));
        let capacity = limits.history_limit.max(1);
        let floor = self.head().saturating_sub(capacity);
        self.db.run(
            &format!("INSERT INTO ring (slot, {COLUMNS}) SELECT seq % ?, {COLUMNS} FROM legacy WHERE seq > ?"),
            vec![seq_value(capacity), seq_value(floor)],
        )?;
        if self.bridged.get() {
            self.db.run(
                &format!("INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM legacy WHERE seq <= ? AND seq > ? AND origin != 'kafka'"),
                vec![seq_value(floor), seq_value(self.cursor())],
            )?;
        }
        self.db.run("DROP TABLE legacy", vec![])?;
        self.set_capacity(capacity)?;
        self.measure()
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
                "ring" => meta.capacity = row.value.parse().ok(),
                "stats" => meta.stats = Some(row.value.clone()),
                "room" => meta.name = Some(row.value.clone()),
                "shards" => meta.shards = row.value.parse().unwrap_or(0),
                _ => {}
            }
        }
        self.capacity.set(meta.capacity.unwrap_or(1).max(1));
        self.head.set(meta.head);
        self.saved_head.set(meta.head);
        self.saved_last_ms.set(meta.last_ms);
        self.cursor.set(meta.cursor);
        self.bridged.set(meta.bridged);
        self.registered.set(meta.registered);
        *self.epoch.borrow_mut() = meta.epoch;
        *self.name.borrow_mut() = meta.name;
        *self.stats.borrow_mut() = meta.stats;
        self.shards.set(meta.shards);
        self.measure()
    }

    /// Reads the head, the oldest seq and the outbox's size from the tables.
    fn measure(&self) -> Result<()> {
        let ring = self.span("ring")?;
        let outbox = self.span("outbox")?;
        self.head.set(
            self.head()
                .max(ring.hi.unwrap_or(0))
                .max(outbox.hi.unwrap_or(0)),
        );
        self.oldest.set(match (outbox.lo, ring.lo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });
        self.outboxed.set(outbox.n);
        Ok(())
    }

    fn span(&self, table: &str) -> Result<Span> {
        let rows = self.db.rows::<Span>(
            &format!("SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM {table}"),
            vec![],
        )?;
        Ok(rows.into_iter().next().unwrap_or(Span {
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

    /// How many shard objects the room has used: every one of them is fed
    /// after a wake, until it says it holds no connections.
    pub fn shard_count(&self) -> u32 {
        self.shards.get()
    }

    pub fn set_shard_count(&self, count: u32) -> Result<()> {
        if self.created.get() && self.shards.replace(count) != count {
            self.set_meta("shards", &count.to_string())?;
        }
        Ok(())
    }

    pub fn save_stats(&self, json: &str) -> Result<()> {
        if self.created.get() {
            self.set_meta("stats", json)?;
        }
        Ok(())
    }

    /// The range clients see, for resume decisions and history pages.
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

    /// The highest seq the limits hide from clients: past the count limit
    /// (the ring may be larger, after `HISTORY_LIMIT` was lowered), or older
    /// than the age limit; messages held for the bridge stay visible, as
    /// they stay stored. Costs a read only while messages past the age limit
    /// wait for their trim.
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
                &format!(
                    "SELECT MIN(seq) AS seq FROM ({}) WHERE ts >= ?",
                    self.all("seq, ts")
                ),
                vec![ms_value(cutoff)],
            )?
            .first()
            .and_then(|f| f.seq);
        let by_age = first_young.map_or(head, |seq| seq.saturating_sub(1));
        Ok(by_count.max(trim_ceiling(head, by_age, outbox)))
    }

    /// Every stored message's `columns`, from the outbox and the ring.
    fn all(&self, columns: &str) -> String {
        format!("SELECT {columns} FROM outbox UNION ALL SELECT {columns} FROM ring")
    }

    /// The stored messages after `since` (`columns` of them): the outbox's,
    /// then the ring's slots that can hold them (a range of the primary key,
    /// so only those rows are read). Binds `since` twice, then the slots.
    fn after_query(&self, columns: &str, since: u64) -> (String, Vec<SqlStorageValue>) {
        let capacity = self.capacity.get();
        let (first, last) = (since + 1, self.head());
        let mut bindings = vec![seq_value(since), seq_value(since)];
        let slots = if last < first || last - first + 1 >= capacity {
            String::new()
        } else {
            let (a, b) = (first % capacity, last % capacity);
            bindings.extend([seq_value(a), seq_value(b)]);
            if a <= b {
                "AND slot BETWEEN ? AND ?".into()
            } else {
                "AND (slot >= ? OR slot <= ?)".into()
            }
        };
        let query = format!(
            "SELECT {columns} FROM outbox WHERE seq > ? UNION ALL SELECT {columns} FROM ring WHERE seq > ? {slots}"
        );
        (query, bindings)
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
        let (inner, bindings) = self.after_query("data", since);
        let rows = self.db.rows::<Size>(
            &format!("SELECT COUNT(*) AS n, SUM(octet_length(data)) AS bytes FROM ({inner})"),
            bindings,
        )?;
        Ok(rows.first().map_or((0, 0), |r| (r.n, r.bytes.unwrap_or(0))))
    }

    /// The next seq.
    pub fn next_seq(&self) -> u64 {
        self.head() + 1
    }

    /// Stores `messages`, whose seqs follow the head in order, each in its
    /// slot of the ring, a few per statement. What they overwrite that the
    /// bridge still needs moves to the outbox first; past `OUTBOX_LIMIT`,
    /// the outbox's oldest are dropped, and reported.
    pub fn append(&self, messages: &[Message], limits: &Limits) -> Result<Trimmed> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(Trimmed::default());
        };
        self.fit(limits)?;
        let capacity = self.capacity.get();
        self.spill(first.seq, last.seq, capacity)?;
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut values = Vec::with_capacity(chunk.len() * 8);
            for m in chunk {
                values.extend([
                    seq_value(m.seq % capacity),
                    seq_value(m.seq),
                    m.id.as_str().into(),
                    ms_value(m.ts),
                    m.sender.as_str().into(),
                    m.origin.as_str().into(),
                    m.data.get().into(),
                    m.trace.as_deref().into(),
                ]);
            }
            self.db.run(
                &format!(
                    "INSERT INTO ring (slot, {COLUMNS}) VALUES {placeholders} \
                     ON CONFLICT(slot) DO UPDATE SET seq = excluded.seq, id = excluded.id, ts = excluded.ts, \
                     sender = excluded.sender, origin = excluded.origin, data = excluded.data, trace = excluded.trace"
                ),
                values,
            )?;
        }
        self.head.set(last.seq);
        let overwritten_below = (last.seq + 1).saturating_sub(capacity);
        let oldest_in_ring = overwritten_below.max(1);
        self.oldest.set(Some(match self.oldest.get() {
            Some(oldest) if self.outboxed.get() > 0 => oldest,
            Some(oldest) => oldest.max(oldest_in_ring),
            None => first.seq,
        }));
        self.cap_outbox(limits)
    }

    /// Moves what the slots of `first..=last` hold that the bridge has not
    /// confirmed into the outbox, before they are overwritten.
    fn spill(&self, first: u64, last: u64, capacity: u64) -> Result<()> {
        let (from, to) = (
            first.saturating_sub(capacity),
            last.saturating_sub(capacity),
        );
        if !self.bridged.get() || to == 0 || to <= self.cursor() {
            return Ok(());
        }
        let moved = self.db.run(
            &format!("INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM ring WHERE seq >= ? AND seq <= ? AND seq > ? AND origin != 'kafka'"),
            vec![seq_value(from), seq_value(to), seq_value(self.cursor())],
        )?;
        self.outboxed.set(self.outboxed.get() + moved);
        Ok(())
    }

    /// Keeps the outbox within `OUTBOX_LIMIT` (the ring counting toward
    /// it), dropping its oldest.
    fn cap_outbox(&self, limits: &Limits) -> Result<Trimmed> {
        let room = outbox_room(limits.outbox_limit, self.capacity.get());
        if self.outboxed.get() <= room {
            return Ok(Trimmed::default());
        }
        let excess = self.outboxed.get() - room;
        let lost = self.db.rows::<Span>(
            "SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
            vec![seq_value(excess)],
        )?;
        let Some(lost) = lost.into_iter().next().filter(|l| l.n > 0) else {
            return Ok(Trimmed::default());
        };
        if let Some(hi) = lost.hi {
            self.db
                .run("DELETE FROM outbox WHERE seq <= ?", vec![seq_value(hi)])?;
        }
        self.outboxed.set(self.outboxed.get() - lost.n);
        self.measure()?;
        Ok(Trimmed::from(lost))
    }

    /// Makes the ring `HISTORY_LIMIT` slots, re-slotting it when the limit
    /// changed since the room was created (messages that no longer fit and
    /// the bridge still needs go to the outbox).
    fn fit(&self, limits: &Limits) -> Result<()> {
        let wanted = limits.history_limit.max(1);
        if wanted == self.capacity.get() {
            return Ok(());
        }
        let floor = self.head().saturating_sub(wanted);
        if self.bridged.get() {
            let moved = self.db.run(
                &format!("INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM ring WHERE seq <= ? AND seq > ? AND origin != 'kafka'"),
                vec![seq_value(floor), seq_value(self.cursor())],
            )?;
            self.outboxed.set(self.outboxed.get() + moved);
        }
        // The ring as the migrations leave it now: a migration that changes
        // the ring's columns changes this table too.
        self.db.run(
            "CREATE TABLE ring_next (slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT)",
            vec![],
        )?;
        self.db.run(
            &format!("INSERT INTO ring_next (slot, {COLUMNS}) SELECT seq % ?, {COLUMNS} FROM ring WHERE seq > ?"),
            vec![seq_value(wanted), seq_value(floor)],
        )?;
        self.db.run("DROP TABLE ring", vec![])?;
        self.db
            .run("ALTER TABLE ring_next RENAME TO ring", vec![])?;
        self.set_capacity(wanted)?;
        self.measure()
    }

    fn set_capacity(&self, capacity: u64) -> Result<()> {
        let capacity = capacity.max(1);
        self.set_meta("ring", &capacity.to_string())?;
        self.capacity.set(capacity);
        Ok(())
    }

    /// The ids of the stored messages, oldest first, to seed the room's
    /// in-memory key window when it wakes.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        if !self.created.get() {
            return Ok(Vec::new());
        }
        self.db.rows(
            &format!(
                "SELECT id, sender, origin, seq FROM ({}) ORDER BY seq",
                self.all("id, sender, origin, seq")
            ),
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
            "WHERE origin != 'kafka'"
        } else {
            ""
        };
        let (inner, mut bindings) = self.after_query(COLUMNS, since);
        let query = format!(
            "SELECT {COLUMNS} FROM (\
               SELECT {COLUMNS}, \
                 SUM(octet_length(data)) OVER (ORDER BY seq) - octet_length(data) AS before \
               FROM ({inner}) {filter} ORDER BY seq LIMIT ?\
             ) WHERE before < ? ORDER BY seq"
        );
        bindings.extend([seq_value(limit), (TURN_BYTES as i64).into()]);
        let rows: Vec<MessageRow> = self.db.rows(&query, bindings)?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    /// When the oldest stored message was stored.
    pub fn oldest_ts(&self) -> Result<Option<u64>> {
        let Some(oldest) = self.oldest.get().filter(|_| self.created.get()) else {
            return Ok(None);
        };
        self.ts_of(oldest)
    }

    /// When the latest message was stored, if it still is (else as saved).
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
            "SELECT ts FROM ring WHERE slot = ? AND seq = ? UNION ALL SELECT ts FROM outbox WHERE seq = ?",
            vec![
                seq_value(seq % self.capacity.get()),
                seq_value(seq),
                seq_value(seq),
            ],
        )?;
        Ok(rows.first().map(|r| r.ts))
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.get()
    }

    /// Records the bridge's confirmation of everything up to `seq`, and lets
    /// the outbox go up to it.
    pub fn confirm(&self, seq: u64) -> Result<()> {
        let seq = seq.min(self.head());
        if seq <= self.cursor.get() {
            return Ok(());
        }
        self.set_meta("cursor", &seq.to_string())?;
        self.cursor.set(seq);
        if self.outboxed.get() > 0 {
            self.db
                .run("DELETE FROM outbox WHERE seq <= ?", vec![seq_value(seq)])?;
            self.measure()?;
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
        let (inner, bindings) = self.after_query("origin", self.cursor());
        let rows = self.db.rows::<Count>(
            &format!("SELECT COUNT(*) AS n FROM ({inner}) WHERE origin != 'kafka'"),
            bindings,
        )?;
        Ok(rows.first().map_or(0, |r| r.n))
    }

    fn outbox(&self, limits: &Limits) -> Option<Outbox> {
        self.bridged.get().then(|| Outbox {
            cursor: self.cursor(),
            limit: limits.outbox_limit,
        })
    }

    /// Drops messages older than `history_ttl_secs`, besides those held for
    /// the bridge; on the publish path at most once a minute.
    pub fn trim_age(&self, limits: &Limits, now_ms: u64, force: bool) -> Result<Trimmed> {
        if !self.created.get()
            || self.oldest.get().is_none()
            || (!force && now_ms < self.last_age_trim_ms.get() + AGE_TRIM_INTERVAL_MS)
        {
            return Ok(Trimmed::default());
        }
        self.last_age_trim_ms.set(now_ms);
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(Trimmed::default());
        }
        let ceiling = trim_ceiling(self.head(), self.head(), self.outbox(limits));
        // The head message may go: keep what it said first.
        if ceiling >= self.head() && self.saved_head.get() < self.head() {
            self.set_meta("head", &self.head().to_string())?;
            self.saved_head.set(self.head());
            if let Some(last) = self.ts_of(self.head())? {
                self.set_meta("last_ms", &last.to_string())?;
                self.saved_last_ms.set(Some(last));
            }
        }
        let trimmed = self.unconfirmed_lost(ceiling, cutoff, limits)?;
        for table in ["ring", "outbox"] {
            self.db.run(
                &format!("DELETE FROM {table} WHERE ts < ? AND seq <= ?"),
                vec![ms_value(cutoff), seq_value(ceiling)],
            )?;
        }
        self.measure()?;
        Ok(trimmed)
    }

    /// What an age trim up to `ceiling` loses that the bridge never had.
    fn unconfirmed_lost(&self, ceiling: u64, cutoff: u64, limits: &Limits) -> Result<Trimmed> {
        let Some((from, to)) = dropped_unconfirmed(ceiling, self.outbox(limits)) else {
            return Ok(Trimmed::default());
        };
        let lost = self.db.rows::<Span>(
            &format!("SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM ({}) WHERE seq >= ? AND seq <= ? AND ts < ? AND origin != 'kafka'", self.all("seq, ts, origin")),
            vec![seq_value(from), seq_value(to), ms_value(cutoff)],
        )?;
        Ok(lost
            .into_iter()
            .next()
            .map(Trimmed::from)
            .unwrap_or_default())
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
        self.capacity.set(1);
        self.head.set(0);
        self.oldest.set(None);
        self.outboxed.set(0);
        self.cursor.set(0);
        self.bridged.set(false);
        self.registered.set(false);
        self.saved_head.set(0);
        self.saved_last_ms.set(None);
        self.shards.set(0);
        *self.epoch.borrow_mut() = None;
        *self.stats.borrow_mut() = None;
    }
}

/// A seq as a bound value; seqs never come near JavaScript's exact limit,
/// and a client's `since` beyond it reads as "after everything".
fn seq_value(seq: u64) -> SqlStorageValue {
    (seq.min(NO_CUTOFF as u64) as i64).into()
}

/// A time in ms as a bound value.
fn ms_value(ms: u64) -> SqlStorageValue {
    (ms.min(NO_CUTOFF as u64) as i64).into()
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
