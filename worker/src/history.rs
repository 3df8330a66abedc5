//! A room's durable state in its SQLite storage: the message history, the
//! idempotency keys, the sequence head, the epoch and the counters.
//!
//! Every accepted message is written here before it is sent anywhere, so the
//! history is both the resume buffer and (for the bridge) the outbox. All
//! statements are synchronous: a publish and its broadcast happen in one turn
//! of the room, which is what keeps `seq` gapless and replays unmixed with
//! live messages.

use std::cell::{Cell, RefCell};

use roomcast_protocol::config::Limits;
use roomcast_protocol::history::{count_floor, trim_ceiling, ttl_cutoff_ms, Outbox, Retained};
use roomcast_protocol::ids;
use roomcast_protocol::wire::{Draft, Message, Origin, Receipt};
use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{Result, SqlStorage, SqlStorageValue};

/// Idempotency keys kept at most, besides the time limit: enough for any
/// realistic retry window without letting a busy room's key table grow
/// without bound.
const MAX_KEYS: u64 = 100_000;

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
const MIGRATIONS: &[&str] = &[
    // 1: the publisher's W3C traceparent (NULL when it sent none).
    "ALTER TABLE messages ADD COLUMN trace TEXT",
];

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

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct CountRow {
    n: u64,
}

#[derive(Deserialize)]
struct MetaRow {
    value: String,
}

/// What appending a draft did.
pub enum Appended {
    /// A new message, to broadcast.
    New(Message),
    /// The idempotency key was seen before; nothing was written.
    Duplicate(Receipt),
}

pub struct History {
    sql: SqlStorage,
    head: Cell<u64>,
    epoch: RefCell<String>,
    /// Highest seq the bridge confirmed as written to Kafka.
    cursor: Cell<u64>,
    /// A bridge has linked to this room, so it is an outbox from now on.
    bridged: Cell<bool>,
    /// The registry must hear of this room (kept durably until it has).
    announce_due: Cell<bool>,
}

impl History {
    /// Opens (creating or migrating on first use) the room's tables and loads
    /// head and epoch.
    pub fn open(sql: SqlStorage) -> Result<History> {
        for statement in SCHEMA {
            sql.exec(statement, None)?;
        }
        let history = History {
            sql,
            head: Cell::new(0),
            epoch: RefCell::new(String::new()),
            cursor: Cell::new(0),
            bridged: Cell::new(false),
            announce_due: Cell::new(false),
        };
        let number = |key| -> Result<u64> {
            Ok(history.meta(key)?.and_then(|v| v.parse().ok()).unwrap_or(0))
        };
        history.migrate(number("schema")? as usize)?;
        history.head.set(number("head")?);
        history.cursor.set(number("cursor")?);
        history.bridged.set(history.meta("bridged")?.is_some());
        match history.meta("announce")?.as_deref() {
            Some(flag) => history.announce_due.set(flag == "1"),
            // A room with messages from before the registry existed has
            // never been announced: do it now.
            None if history.head() > 0 => history.request_announce()?,
            None => {}
        }
        let epoch = match history.meta("epoch")? {
            Some(epoch) => epoch,
            None => {
                let epoch = ids::epoch();
                history.set_meta("epoch", &epoch)?;
                epoch
            }
        };
        *history.epoch.borrow_mut() = epoch;
        Ok(history)
    }

    /// Applies the migrations after the first `applied`. They and the new
    /// version are written with no `await` between them, which the runtime
    /// commits atomically, so a room never holds half a migration.
    fn migrate(&self, applied: usize) -> Result<()> {
        let Some(pending) = MIGRATIONS.get(applied..).filter(|p| !p.is_empty()) else {
            return Ok(());
        };
        for statement in pending {
            self.sql.exec(statement, None)?;
        }
        self.set_meta("schema", &MIGRATIONS.len().to_string())
    }

    pub fn head(&self) -> u64 {
        self.head.get()
    }

    pub fn epoch(&self) -> String {
        self.epoch.borrow().clone()
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let rows: Vec<MetaRow> = self
            .sql
            .exec("SELECT value FROM meta WHERE key = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| r.value))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.sql.exec(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// The stored range, for resume decisions.
    pub fn retained(&self) -> Result<Retained> {
        let row: SeqRow = self
            .sql
            .exec("SELECT MIN(seq) AS seq FROM messages", None)?
            .one()?;
        Ok(Retained {
            head: self.head(),
            oldest: row.seq,
        })
    }

    /// Writes `draft` as the next message, unless its idempotency key was seen.
    pub fn append(
        &self,
        room: &str,
        draft: Draft,
        sender: &str,
        origin: Origin,
        now_ms: u64,
    ) -> Result<Appended> {
        if let Some(key) = &draft.id {
            if let Some(seq) = self.seq_of_key(key)? {
                return Ok(Appended::Duplicate(Receipt {
                    id: key.clone(),
                    seq,
                    duplicate: true,
                }));
            }
        }
        let seq = self.head() + 1;
        let id = draft.id.clone().unwrap_or_else(|| ids::message_id(now_ms));
        let ts = SqlStorageValue::try_from_i64(now_ms as i64)?;
        self.sql.exec(
            "INSERT INTO messages (seq, id, ts, sender, origin, data, trace) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vec![
                (seq as i64).into(),
                id.as_str().into(),
                ts.clone(),
                sender.into(),
                origin.as_str().into(),
                draft.data.get().into(),
                draft.trace.as_deref().into(),
            ],
        )?;
        if draft.id.is_some() {
            self.sql.exec(
                "INSERT INTO idempotency (seq, key, ts) VALUES (?, ?, ?)",
                vec![(seq as i64).into(), id.as_str().into(), ts],
            )?;
        }
        self.set_meta("head", &seq.to_string())?;
        self.head.set(seq);
        Ok(Appended::New(Message {
            room: room.to_owned(),
            id,
            seq,
            ts: now_ms,
            sender: sender.to_owned(),
            origin,
            data: draft.data,
            trace: draft.trace,
        }))
    }

    fn seq_of_key(&self, key: &str) -> Result<Option<u64>> {
        let rows: Vec<SeqRow> = self
            .sql
            .exec(
                "SELECT seq FROM idempotency WHERE key = ?",
                vec![key.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().and_then(|r| r.seq))
    }

    /// Up to `limit` stored messages with `seq > since`, in order; with
    /// `relay_only`, only those the bridge relays to Kafka (not from Kafka).
    pub fn after(
        &self,
        room: &str,
        since: u64,
        limit: u64,
        relay_only: bool,
    ) -> Result<Vec<Message>> {
        let query = if relay_only {
            "SELECT seq, id, ts, sender, origin, data, trace FROM messages WHERE seq > ? AND origin != 'kafka' ORDER BY seq LIMIT ?"
        } else {
            "SELECT seq, id, ts, sender, origin, data, trace FROM messages WHERE seq > ? ORDER BY seq LIMIT ?"
        };
        let rows: Vec<MessageRow> = self
            .sql
            .exec(
                query,
                vec![
                    (since.min(i64::MAX as u64) as i64).into(),
                    (limit as i64).into(),
                ],
            )?
            .to_array()?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
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

    /// Records, in the same turn as the messages that caused it, that the
    /// registry must be told about this room.
    pub fn request_announce(&self) -> Result<()> {
        if !self.announce_due.replace(true) {
            self.set_meta("announce", "1")?;
        }
        Ok(())
    }

    pub fn announce_due(&self) -> bool {
        self.announce_due.get()
    }

    /// The registry has heard of this room.
    pub fn announced(&self) -> Result<()> {
        if self.announce_due.replace(false) {
            self.set_meta("announce", "0")?;
        }
        Ok(())
    }

    /// Makes this room hold unconfirmed messages for the bridge from now on.
    pub fn mark_bridged(&self) -> Result<()> {
        if !self.bridged.replace(true) {
            self.set_meta("bridged", "1")?;
        }
        Ok(())
    }

    /// Messages the bridge has yet to confirm to Kafka.
    pub fn pending(&self) -> Result<u64> {
        let row: CountRow = self
            .sql
            .exec(
                "SELECT COUNT(*) AS n FROM messages WHERE seq > ? AND origin != 'kafka'",
                vec![(self.cursor() as i64).into()],
            )?
            .one()?;
        Ok(row.n)
    }

    fn outbox(&self, limits: &Limits) -> Option<Outbox> {
        self.bridged.get().then(|| Outbox {
            cursor: self.cursor(),
            limit: limits.outbox_limit,
        })
    }

    /// Keeps at most `history_limit` messages, besides those held for the bridge.
    pub fn trim_count(&self, limits: &Limits) -> Result<()> {
        let head = self.head();
        let ceiling = trim_ceiling(
            head,
            count_floor(head, limits.history_limit),
            self.outbox(limits),
        );
        self.sql.exec(
            "DELETE FROM messages WHERE seq <= ?",
            vec![(ceiling as i64).into()],
        )?;
        let key_floor = count_floor(head, MAX_KEYS) as i64;
        self.sql.exec(
            "DELETE FROM idempotency WHERE seq <= ?",
            vec![key_floor.into()],
        )?;
        Ok(())
    }

    /// Drops messages and keys older than `history_ttl_secs`, besides those
    /// held for the bridge.
    pub fn trim_age(&self, limits: &Limits, now_ms: u64) -> Result<()> {
        let cutoff =
            SqlStorageValue::try_from_i64(ttl_cutoff_ms(now_ms, limits.history_ttl_secs) as i64)?;
        let ceiling = trim_ceiling(self.head(), self.head(), self.outbox(limits)) as i64;
        self.sql.exec(
            "DELETE FROM messages WHERE ts < ? AND seq <= ?",
            vec![cutoff.clone(), ceiling.into()],
        )?;
        self.sql
            .exec("DELETE FROM idempotency WHERE ts < ?", vec![cutoff])?;
        Ok(())
    }
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
