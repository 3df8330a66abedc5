//! A room's durable state in its SQLite storage: the message history, the
//! idempotency keys, the sequence head, the epoch and the counters.
//!
//! Every accepted message is written here before it is sent anywhere, so the
//! history is both the resume buffer and (for the bridge) the outbox. All
//! statements are synchronous: a publish and its broadcast happen in one turn
//! of the room, which is what keeps `seq` gapless and replays unmixed with
//! live messages.

use std::cell::{Cell, RefCell};

use roomcast_protocol::history::{count_floor, ttl_cutoff_ms, Retained};
use roomcast_protocol::ids;
use roomcast_protocol::wire::{Draft, Message, Origin, Receipt};
use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{Result, SqlStorage, SqlStorageValue};

/// Idempotency keys kept at most, besides the time limit: enough for any
/// realistic retry window without letting a busy room's key table grow
/// without bound.
const MAX_KEYS: u64 = 100_000;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, ts INTEGER NOT NULL, sender TEXT NOT NULL, origin TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idempotency (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, ts INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

#[derive(Deserialize)]
struct MessageRow {
    seq: u64,
    id: String,
    ts: u64,
    sender: String,
    origin: String,
    data: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<u64>,
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
}

impl History {
    /// Opens (creating on first use) the room's tables and loads head and epoch.
    pub fn open(sql: SqlStorage) -> Result<History> {
        for statement in SCHEMA {
            sql.exec(statement, None)?;
        }
        let history = History {
            sql,
            head: Cell::new(0),
            epoch: RefCell::new(String::new()),
        };
        let head = history
            .meta("head")?
            .and_then(|h| h.parse().ok())
            .unwrap_or(0);
        history.head.set(head);
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
            "INSERT INTO messages (seq, id, ts, sender, origin, data) VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                (seq as i64).into(),
                id.as_str().into(),
                ts.clone(),
                sender.into(),
                origin.as_str().into(),
                draft.data.get().into(),
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

    /// Up to `limit` stored messages with `seq > since`, in order.
    pub fn after(&self, room: &str, since: u64, limit: u64) -> Result<Vec<Message>> {
        let rows: Vec<MessageRow> = self
            .sql
            .exec(
                "SELECT seq, id, ts, sender, origin, data FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                vec![(since.min(i64::MAX as u64) as i64).into(), (limit as i64).into()],
            )?
            .to_array()?;
        rows.into_iter().map(|row| to_message(room, row)).collect()
    }

    /// Keeps at most `limit` messages.
    pub fn trim_count(&self, limit: u64) -> Result<()> {
        let floor = count_floor(self.head(), limit) as i64;
        self.sql
            .exec("DELETE FROM messages WHERE seq <= ?", vec![floor.into()])?;
        let key_floor = count_floor(self.head(), MAX_KEYS) as i64;
        self.sql.exec(
            "DELETE FROM idempotency WHERE seq <= ?",
            vec![key_floor.into()],
        )?;
        Ok(())
    }

    /// Drops messages and keys older than `ttl_secs`.
    pub fn trim_age(&self, ttl_secs: u64, now_ms: u64) -> Result<()> {
        let cutoff = SqlStorageValue::try_from_i64(ttl_cutoff_ms(now_ms, ttl_secs) as i64)?;
        self.sql
            .exec("DELETE FROM messages WHERE ts < ?", vec![cutoff.clone()])?;
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
    })
}
