//! A room's durable state in its SQLite storage: the message history (which
//! is also the bridge's outbox and, through the ids it stores, the record of
//! idempotency keys), and a few facts in `meta` (epoch, bridge cursor,
//! registration, counters, schema version, inbound offsets).
//!
//! Every accepted message is written here before it is sent anywhere. All
//! statements are synchronous: a publish and its broadcast happen in one
//! turn of the room, which keeps `seq` gapless and replays unmixed with live
//! messages, and the runtime commits a turn's writes atomically.
//!
//! What goes where is [`Ring`]'s decision (`roomcast_protocol::ring`, where
//! it is tested against a model); this module runs it over two tables:
//! `ring`, one row per slot (`seq % HISTORY_LIMIT`), so a publish writes one
//! row and deletes nothing, and `outbox`, keyed by seq, for what the bridge
//! has not confirmed when the ring moves past it. Every statement reads
//! rows by key ranges the ring's shape gives (a slot range, a seq range),
//! so what a read costs follows what it returns, never what is stored.
//! Reads write nothing: a room that was never written has no tables at all.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use roomcast_protocol::config::{Config, Limits};
use roomcast_protocol::history::{
    count_floor, trim_ceiling, ttl_cutoff_ms, Outbox, Retained, TURN_BYTES,
};
use roomcast_protocol::ids;
use roomcast_protocol::ring::{slots, Lost, Reading, Ring, Run, Shape, Tables};
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

/// The ring's columns as the migrations leave them now. A resize builds
/// the ring's replacement from the same text, so a migration that changes
/// the ring's columns changes them here, once.
macro_rules! ring_columns {
    () => {
        "(slot INTEGER PRIMARY KEY, seq INTEGER NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT)"
    };
}

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
        concat!("CREATE TABLE ring ", ring_columns!()),
        "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL, trace TEXT)",
        "ALTER TABLE messages RENAME TO legacy",
    ],
    // 4: earlier releases moved only messages not from Kafka to the
    // outbox, which could leave holes in a history; clients see it from
    // above the last one (the bridge still gets everything it needs).
    // The first stored seq above the last stored one whose next is missing.
    &[concat!(
        "INSERT INTO meta (key, value) SELECT 'contiguous_from', CAST(MIN(b.seq) AS TEXT) ",
        "FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM ring) b ",
        "WHERE b.seq > (SELECT MAX(a.seq) ",
        "FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM ring) a ",
        "WHERE a.seq < (SELECT MAX(seq) FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM ring)) ",
        "AND NOT EXISTS (SELECT 1 FROM outbox WHERE seq = a.seq + 1) ",
        "AND NOT EXISTS (SELECT 1 FROM ring WHERE slot = (a.seq + 1) % ",
        "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'ring') AND seq = a.seq + 1)) ",
        "HAVING MIN(b.seq) IS NOT NULL"
    )],
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

/// The `meta` key prefix of an inbound topic-partition's highest stored
/// offset.
const OFFSET_PREFIX: &str = "offset:";

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
struct Bounds {
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

/// Stored messages after some seq, as one read returns them.
pub struct Page {
    pub messages: Vec<Message>,
    /// The last seq the page covers: the next page starts after it (it may
    /// be past the last message, when the page skipped Kafka's).
    pub through: u64,
}

/// What the room knows of its storage: the ring's shape and the facts in
/// `meta`, loaded together and forgotten together.
#[derive(Default)]
struct State {
    ring: Ring,
    epoch: Option<String>,
    /// The registry knows this room.
    registered: bool,
    /// The head as last written to `meta` (an age trim may empty the tables).
    saved_head: u64,
    /// When the head message was stored, as written with the head: it is
    /// still known once that message is trimmed (retirement counts from it).
    saved_last_ms: Option<u64>,
    last_age_trim_ms: u64,
    name: Option<String>,
    stats: Option<String>,
    /// Shard objects the room has placed connections on (docs/scaling.md).
    shards: u32,
    /// Per inbound `topic:partition`, the highest offset stored.
    offsets: BTreeMap<String, i64>,
    /// Clients see the history from here on (a room that an earlier
    /// release left with holes).
    contiguous_from: u64,
    /// The head when the room opened its storage in this wake.
    woke_at: u64,
}

pub struct History {
    db: Db,
    /// The tables exist (false for a room that was never written).
    created: Cell<bool>,
    state: RefCell<State>,
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
            state: RefCell::new(State::default()),
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
        let capacity = limits.history_limit.max(1);
        self.set_meta("ring", &capacity.to_string())?;
        *self.state.borrow_mut() = State {
            ring: Ring::empty(capacity, false),
            epoch: Some(epoch),
            name: Some(name.to_owned()),
            ..State::default()
        };
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
    /// `HISTORY_LIMIT`) and the outbox (older ones the bridge still needs,
    /// from wherever they came, so the history stays contiguous).
    fn adopt_legacy(&self, limits: &Limits) -> Result<()> {
        let legacy = self.bounds("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM legacy")?;
        let (head, cursor, bridged) = {
            let state = self.state.borrow();
            let head = state.ring.head().max(legacy.map_or(0, |r| r.hi));
            (head, state.ring.cursor(), state.ring.bridged())
        };
        let capacity = limits.history_limit.max(1);
        let floor = head.saturating_sub(capacity);
        self.db.run(
            &format!("INSERT INTO ring (slot, {COLUMNS}) SELECT seq % ?, {COLUMNS} FROM legacy WHERE seq > ?"),
            vec![seq_value(capacity), seq_value(floor)],
        )?;
        if bridged {
            self.db.run(
                &format!("INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM legacy WHERE seq <= ? AND seq > ?"),
                vec![seq_value(floor), seq_value(cursor)],
            )?;
        }
        self.db.run("DROP TABLE legacy", vec![])?;
        self.set_meta("ring", &capacity.to_string())?;
        let shape = self.measure(capacity, head, cursor, bridged)?;
        self.state.borrow_mut().ring = Ring::from_shape(shape);
        Ok(())
    }

    fn load(&self) -> Result<()> {
        let mut state = State::default();
        let (mut capacity, mut cursor, mut bridged) = (1, 0, false);
        for row in self
            .db
            .rows::<MetaRow>("SELECT key, value FROM meta", vec![])?
        {
            let number = || row.value.parse().unwrap_or(0);
            match row.key.as_str() {
                "epoch" => state.epoch = Some(row.value.clone()),
                "cursor" => cursor = number(),
                "bridged" => bridged = true,
                "registered" => state.registered = row.value == "1",
                "head" => state.saved_head = number(),
                "last_ms" => state.saved_last_ms = row.value.parse().ok(),
                "ring" => capacity = number().max(1),
                "stats" => state.stats = Some(row.value.clone()),
                "room" => state.name = Some(row.value.clone()),
                "shards" => state.shards = row.value.parse().unwrap_or(0),
                "contiguous_from" => state.contiguous_from = number(),
                key => {
                    if let (Some(partition), Ok(offset)) =
                        (key.strip_prefix(OFFSET_PREFIX), row.value.parse())
                    {
                        state.offsets.insert(partition.to_owned(), offset);
                    }
                }
            }
        }
        state.ring = Ring::from_shape(self.measure(capacity, state.saved_head, cursor, bridged)?);
        state.woke_at = state.ring.head();
        *self.state.borrow_mut() = state;
        Ok(())
    }

    /// The history's shape as the tables hold it: each table's lowest and
    /// highest seq (the outbox's by its key; the ring is at most one
    /// history), and what is pending for the bridge, counted once per wake.
    fn measure(&self, capacity: u64, head: u64, cursor: u64, bridged: bool) -> Result<Shape> {
        let outbox = self.bounds("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM outbox")?;
        let ring = self.bounds("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM ring")?;
        let mut shape = Ring::from_shape(Shape {
            capacity,
            head,
            cursor,
            bridged,
            outbox,
            ring,
            pending: 0,
        })
        .shape();
        if bridged {
            let stored = outbox.map(|o| o.lo).or(ring.map(|r| r.lo));
            if let Some(lo) = stored.map(|lo| lo.max(cursor + 1)) {
                shape.pending = self.tables(capacity).count_relayable(lo, shape.head)?;
            }
        }
        Ok(shape)
    }

    fn bounds(&self, query: &str) -> Result<Option<Run>> {
        let rows = self.db.rows::<Bounds>(query, vec![])?;
        Ok(rows
            .first()
            .and_then(|b| b.lo.zip(b.hi))
            .and_then(|(lo, hi)| Run::of(lo, hi)))
    }

    /// The tables, as the ring drives them.
    fn tables(&self, capacity: u64) -> SqlTables<'_> {
        SqlTables {
            db: &self.db,
            capacity,
        }
    }

    /// Runs `change` on the ring over the tables.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Ring, &mut SqlTables<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.state.borrow_mut();
        let mut tables = self.tables(state.ring.capacity());
        change(&mut state.ring, &mut tables)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the room was ever written (since its storage was last deleted).
    pub fn exists(&self) -> bool {
        self.created.get()
    }

    pub fn head(&self) -> u64 {
        self.state.borrow().ring.head()
    }

    /// The head when this wake of the room opened its storage: what it had
    /// before anything of this wake was stored.
    pub fn woke_at(&self) -> u64 {
        self.state.borrow().woke_at
    }

    /// The epoch, once the room exists.
    pub fn epoch(&self) -> Option<String> {
        self.state.borrow().epoch.clone()
    }

    /// The room's name as its first write stored it.
    pub fn name(&self) -> Option<String> {
        self.state.borrow().name.clone()
    }

    /// The counters a previous wake stored, as JSON.
    pub fn stored_stats(&self) -> Option<String> {
        self.state.borrow().stats.clone()
    }

    /// How many shard objects the room has used: every one of them is fed
    /// after a wake, until it says it holds no connections.
    pub fn shard_count(&self) -> u32 {
        self.state.borrow().shards
    }

    pub fn set_shard_count(&self, count: u32) -> Result<()> {
        let changed = std::mem::replace(&mut self.state.borrow_mut().shards, count) != count;
        if self.created.get() && changed {
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
        let head = self.head();
        Ok(Retained {
            head,
            oldest: self
                .state
                .borrow()
                .ring
                .oldest()
                .map(|oldest| oldest.max(floor + 1))
                .filter(|oldest| *oldest <= head),
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
        let by_count = trim_ceiling(head, count_floor(head, limits.history_limit), outbox)
            .max(self.state.borrow().contiguous_from.saturating_sub(1));
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(by_count);
        }
        Ok(by_count.max(trim_ceiling(head, self.aged_through(cutoff)?, outbox)))
    }

    /// The highest seq such that it and every message before it is older
    /// than `cutoff`: an age limit removes the bottom of the history, never
    /// a message from its middle (clocks may step back between messages).
    fn aged_through(&self, cutoff: u64) -> Result<u64> {
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
        Ok(first_young.map_or(self.head(), |seq| seq.saturating_sub(1)))
    }

    /// Every stored message's `columns`, from the outbox and the ring.
    fn all(&self, columns: &str) -> String {
        format!("SELECT {columns} FROM outbox UNION ALL SELECT {columns} FROM ring")
    }

    /// The statements that read the stored rows of a [`Reading`] (`columns`
    /// of them, those `filter` keeps), each table by its key and in key
    /// order, so their rows one after the other are in seq order: no
    /// statement sorts, and none reads a row it does not return.
    fn reading_statements(
        &self,
        columns: &str,
        filter: &str,
        reading: &Reading,
    ) -> Vec<(String, Vec<SqlStorageValue>)> {
        let mut statements = Vec::new();
        if let Some(run) = reading.outbox {
            statements.push((
                format!(
                    "SELECT {columns} FROM outbox WHERE seq BETWEEN ? AND ?{filter} ORDER BY seq"
                ),
                vec![seq_value(run.lo), seq_value(run.hi)],
            ));
        }
        if let Some(run) = reading.ring {
            let capacity = self.state.borrow().ring.capacity();
            for (a, b) in slots(run, capacity).into_iter().flatten() {
                statements.push((
                    format!(
                        "SELECT {columns} FROM ring WHERE slot BETWEEN ? AND ? AND seq BETWEEN ? AND ?{filter} ORDER BY slot"
                    ),
                    vec![
                        seq_value(a),
                        seq_value(b),
                        seq_value(run.lo),
                        seq_value(run.hi),
                    ],
                ));
            }
        }
        statements
    }

    /// The rows of every statement, one after the other.
    fn read_all<T: serde::de::DeserializeOwned>(
        &self,
        statements: Vec<(String, Vec<SqlStorageValue>)>,
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        for (query, bindings) in statements {
            rows.extend(self.db.rows(&query, bindings)?);
        }
        Ok(rows)
    }

    /// How many messages follow `since`, and, when there are at most
    /// `limit`, how many bytes of data they hold (a count needs no read:
    /// the history is contiguous).
    pub fn size_after(&self, since: u64, limit: u64) -> Result<(u64, Option<u64>)> {
        #[derive(Deserialize)]
        struct Size {
            bytes: Option<u64>,
        }
        let count = self.head().saturating_sub(since);
        let reading = self.state.borrow().ring.reading(since, limit);
        let Some(reading) = reading.filter(|_| count <= limit) else {
            return Ok((count, None));
        };
        let sizes: Vec<Size> = self.read_all(self.reading_statements(
            "SUM(octet_length(data)) AS bytes",
            "",
            &reading,
        ))?;
        Ok((count, Some(sizes.iter().filter_map(|s| s.bytes).sum())))
    }

    /// The next seq.
    pub fn next_seq(&self) -> u64 {
        self.head() + 1
    }

    /// Stores `messages`, whose seqs follow the head in order (see
    /// [`Ring::append`]); returns what a full outbox dropped.
    pub fn append(&self, messages: &[Message], limits: &Limits) -> Result<Lost> {
        let resized = self.state.borrow().ring.capacity() != limits.history_limit.max(1);
        let lost = self.change(|ring, tables| {
            ring.append(tables, messages, limits.history_limit, limits.outbox_limit)
        })?;
        if resized {
            self.set_meta("ring", &self.state.borrow().ring.capacity().to_string())?;
        }
        Ok(lost)
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
    /// relays to Kafka (not from Kafka). Reads only the rows it covers: their
    /// sizes first, then the rows within the byte budget.
    pub fn after(&self, room: &str, since: u64, limit: u64, relay_only: bool) -> Result<Page> {
        let reading = self.state.borrow().ring.reading(since, limit);
        let Some(reading) = reading.filter(|_| self.created.get()) else {
            return Ok(Page {
                messages: Vec::new(),
                through: since.max(self.head()),
            });
        };
        let filter = if relay_only {
            " AND origin != 'kafka'"
        } else {
            ""
        };
        let Some(reading) = self.within_turn(&reading, filter)? else {
            return Ok(Page {
                messages: Vec::new(),
                through: reading.through,
            });
        };
        let rows: Vec<MessageRow> =
            self.read_all(self.reading_statements(COLUMNS, filter, &reading))?;
        let messages = rows
            .into_iter()
            .map(|row| to_message(room, row))
            .collect::<Result<_>>()?;
        Ok(Page {
            messages,
            through: reading.through,
        })
    }

    /// `reading` cut where one turn's bytes of data run out: the messages
    /// until one that starts past [`TURN_BYTES`]; `None` when `filter`
    /// leaves nothing to read.
    fn within_turn(&self, reading: &Reading, filter: &str) -> Result<Option<Reading>> {
        #[derive(Deserialize)]
        struct Size {
            seq: u64,
            bytes: u64,
        }
        let sizes: Vec<Size> = self.read_all(self.reading_statements(
            "seq, octet_length(data) AS bytes",
            filter,
            reading,
        ))?;
        let mut before = 0;
        let mut last = None;
        for size in &sizes {
            if before >= TURN_BYTES {
                return Ok(last.map(|seq| reading.through_at_most(seq)));
            }
            before += size.bytes;
            last = Some(size.seq);
        }
        Ok(last.map(|_| *reading))
    }

    /// When the oldest stored message was stored.
    pub fn oldest_ts(&self) -> Result<Option<u64>> {
        let oldest = self.state.borrow().ring.oldest();
        match oldest.filter(|_| self.created.get()) {
            Some(oldest) => self.ts_of(oldest),
            None => Ok(None),
        }
    }

    /// When the latest message was stored, if it still is (else as saved).
    pub fn last_message_ms(&self) -> Result<Option<u64>> {
        if !self.created.get() {
            return Ok(None);
        }
        let saved = self.state.borrow().saved_last_ms;
        Ok(self.ts_of(self.head())?.or(saved))
    }

    fn ts_of(&self, seq: u64) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Ts {
            ts: u64,
        }
        let capacity = self.state.borrow().ring.capacity();
        let rows = self.db.rows::<Ts>(
            "SELECT ts FROM ring WHERE slot = ? AND seq = ? UNION ALL SELECT ts FROM outbox WHERE seq = ?",
            vec![
                seq_value(seq % capacity),
                seq_value(seq),
                seq_value(seq),
            ],
        )?;
        Ok(rows.first().map(|r| r.ts))
    }

    pub fn cursor(&self) -> u64 {
        self.state.borrow().ring.cursor()
    }

    /// Records the bridge's confirmation of everything up to `seq`, and lets
    /// the outbox go up to it.
    pub fn confirm(&self, seq: u64) -> Result<()> {
        if self.change(|ring, tables| ring.confirm(tables, seq))? {
            self.set_meta("cursor", &self.cursor().to_string())?;
        }
        Ok(())
    }

    /// Makes this room hold unconfirmed messages for the bridge from now on.
    pub fn mark_bridged(&self) -> Result<()> {
        if self.created.get() && self.change(|ring, tables| ring.mark_bridged(tables))? {
            self.set_meta("bridged", "1")?;
        }
        Ok(())
    }

    pub fn bridged(&self) -> bool {
        self.state.borrow().ring.bridged()
    }

    pub fn registered(&self) -> bool {
        self.state.borrow().registered
    }

    /// Records whether the registry knows this room.
    pub fn set_registered(&self, registered: bool) -> Result<()> {
        let changed =
            std::mem::replace(&mut self.state.borrow_mut().registered, registered) != registered;
        if self.created.get() && changed {
            self.set_meta("registered", if registered { "1" } else { "0" })?;
        }
        Ok(())
    }

    /// Messages the bridge has yet to confirm (none unless the room holds
    /// them for a bridge). Messages from Kafka are not relayed, so they do
    /// not count. Kept up to date by every change: reading it reads nothing.
    pub fn pending(&self) -> u64 {
        self.state.borrow().ring.pending()
    }

    fn outbox(&self, limits: &Limits) -> Option<Outbox> {
        self.bridged().then(|| Outbox {
            cursor: self.cursor(),
            limit: limits.outbox_limit,
        })
    }

    /// Drops messages older than `history_ttl_secs`, besides those held for
    /// the bridge; on the publish path at most once a minute.
    pub fn trim_age(&self, limits: &Limits, now_ms: u64, force: bool) -> Result<Lost> {
        let due = now_ms >= self.state.borrow().last_age_trim_ms + AGE_TRIM_INTERVAL_MS;
        let oldest = self.state.borrow().ring.oldest();
        if !self.created.get() || oldest.is_none() || !(force || due) {
            return Ok(Lost::default());
        }
        self.state.borrow_mut().last_age_trim_ms = now_ms;
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(Lost::default());
        }
        let head = self.head();
        let upto = trim_ceiling(head, self.aged_through(cutoff)?, self.outbox(limits));
        // The head message may go: keep what it said first.
        if upto >= head && self.state.borrow().saved_head < head {
            self.set_meta("head", &head.to_string())?;
            self.state.borrow_mut().saved_head = head;
            if let Some(last) = self.ts_of(head)? {
                self.set_meta("last_ms", &last.to_string())?;
                self.state.borrow_mut().saved_last_ms = Some(last);
            }
        }
        self.change(|ring, tables| ring.trim_through(tables, upto))
    }

    /// The highest offset of inbound `partition` (`topic:partition`) this
    /// room stored, if any.
    pub fn inbound_offset(&self, partition: &str) -> Option<i64> {
        self.state.borrow().offsets.get(partition).copied()
    }

    /// Records that the room stored inbound `partition` up to `offset`.
    pub fn set_inbound_offset(&self, partition: &str, offset: i64) -> Result<()> {
        let higher = self
            .inbound_offset(partition)
            .is_none_or(|stored| offset > stored);
        if self.created.get() && higher {
            self.set_meta(&format!("{OFFSET_PREFIX}{partition}"), &offset.to_string())?;
            self.state
                .borrow_mut()
                .offsets
                .insert(partition.to_owned(), offset);
        }
        Ok(())
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
        *self.state.borrow_mut() = State::default();
    }
}

/// The room's two tables, as [`Ring`] drives them. Each statement reads and
/// writes the rows of its key range only.
struct SqlTables<'a> {
    db: &'a Db,
    capacity: u64,
}

impl SqlTables<'_> {
    /// `WHERE` clauses (with their bindings) for the ring rows of `run`.
    fn ring_ranges(&self, run: Run) -> Vec<(String, Vec<SqlStorageValue>)> {
        slots(run, self.capacity)
            .into_iter()
            .flatten()
            .map(|(a, b)| {
                (
                    "slot BETWEEN ? AND ? AND seq BETWEEN ? AND ?".to_owned(),
                    vec![
                        seq_value(a),
                        seq_value(b),
                        seq_value(run.lo),
                        seq_value(run.hi),
                    ],
                )
            })
            .collect()
    }
}

impl Tables for SqlTables<'_> {
    type Error = worker::Error;

    fn spill(&mut self, lo: u64, hi: u64) -> Result<()> {
        for (range, bindings) in self.ring_ranges(Run { lo, hi }) {
            self.db.run(
                &format!("INSERT INTO outbox ({COLUMNS}) SELECT {COLUMNS} FROM ring WHERE {range}"),
                bindings,
            )?;
        }
        Ok(())
    }

    fn outbox_insert(&mut self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let values = chunk.iter().flat_map(row_values).collect();
            self.db.run(
                &format!("INSERT INTO outbox ({COLUMNS}) VALUES {placeholders}"),
                values,
            )?;
        }
        Ok(())
    }

    fn ring_write(&mut self, messages: &[Message], capacity: u64) -> Result<()> {
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut values = Vec::with_capacity(chunk.len() * 8);
            for m in chunk {
                values.push(seq_value(m.seq % capacity));
                values.extend(row_values(m));
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
        Ok(())
    }

    fn delete_through(&mut self, upto: u64, ring: bool) -> Result<()> {
        self.db
            .run("DELETE FROM outbox WHERE seq <= ?", vec![seq_value(upto)])?;
        if ring {
            self.db
                .run("DELETE FROM ring WHERE seq <= ?", vec![seq_value(upto)])?;
        }
        Ok(())
    }

    fn resize(&mut self, capacity: u64, floor: u64) -> Result<()> {
        self.db
            .run(concat!("CREATE TABLE ring_next ", ring_columns!()), vec![])?;
        self.db.run(
            &format!("INSERT INTO ring_next (slot, {COLUMNS}) SELECT seq % ?, {COLUMNS} FROM ring WHERE seq > ?"),
            vec![seq_value(capacity), seq_value(floor)],
        )?;
        self.db.run("DROP TABLE ring", vec![])?;
        self.db
            .run("ALTER TABLE ring_next RENAME TO ring", vec![])?;
        self.capacity = capacity;
        Ok(())
    }

    fn count_relayable(&mut self, lo: u64, hi: u64) -> Result<u64> {
        let mut n = 0;
        let mut count = |table: &str, range: &str, bindings| -> Result<()> {
            let rows = self.db.rows::<Count>(
                &format!("SELECT COUNT(*) AS n FROM {table} WHERE {range} AND origin != 'kafka'"),
                bindings,
            )?;
            n += rows.first().map_or(0, |c| c.n);
            Ok(())
        };
        count(
            "outbox",
            "seq BETWEEN ? AND ?",
            vec![seq_value(lo), seq_value(hi)],
        )?;
        for (range, bindings) in self.ring_ranges(Run { lo, hi }) {
            count("ring", &range, bindings)?;
        }
        Ok(n)
    }
}

/// A message's values in [`COLUMNS`] order.
fn row_values(m: &Message) -> [SqlStorageValue; 7] {
    [
        seq_value(m.seq),
        m.id.as_str().into(),
        ms_value(m.ts),
        m.sender.as_str().into(),
        m.origin.as_str().into(),
        m.data.get().into(),
        m.trace.as_deref().into(),
    ]
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
