//! Reading the room's messages: pages after a seq (for history pages,
//! replays, the bridge's feed and shards' gaps), their sizes, their ids,
//! and the times the age limit and retirement go by.
//!
//! Every statement reads rows by key ranges the ring's shape gives (a slot
//! range, a seq range), so what a read costs follows what it returns, never
//! what is stored; no statement sorts. Reads write nothing: a room that was
//! never written has no tables at all.
//!
//! Rows come back as one JSON array per statement (SQLite's
//! `json_group_array`), not row by row: each value read through the
//! runtime's cursor is a call out of Wasm, and a page of a thousand
//! messages would make seven thousand of them.

use roomcast_protocol::draft::Origin;
use roomcast_protocol::history::TURN_BYTES;
use roomcast_protocol::ring::{slots, Reading};
use roomcast_protocol::wire::Message;
use serde::Deserialize;
use serde_json::value::RawValue;
use worker::{Result, SqlStorageValue};

use super::tables::{ms_value, seq_value, COLUMNS};
use super::Store;

/// The most data a page read as one JSON string holds. SQLite here refuses
/// a string over 2 MB, and a message's data is escaped inside the string
/// (at most twice its length); a page with more data is read row by row.
const JSON_PAGE_BYTES: u64 = 512 * 1024;

/// A stored message as one element of the JSON array a read returns.
const MESSAGE_JSON: &str = "json_object('seq', seq, 'id', id, 'ts', ts, 'sender', sender, \
     'origin', origin, 'data', data, 'trace', trace)";

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

/// Stored messages after some seq, as one read returns them.
pub struct Page {
    pub messages: Vec<Message>,
    /// The last seq the page covers: the next page starts after it (it may
    /// be past the last message, when the page skipped Kafka's).
    pub through: u64,
}

impl Store {
    /// The highest seq such that it and every message before it is older
    /// than `cutoff`: an age limit removes the bottom of the history, never
    /// a message from its middle (clocks may step back between messages).
    pub(super) fn aged_through(&self, cutoff: u64) -> Result<u64> {
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
            let capacity = self.ring.borrow().capacity();
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

    /// The rows of a [`Reading`] as `element` makes each of them, in seq
    /// order: every statement's rows come as one JSON array. An aggregate
    /// has no order SQL promises, so the rows are put in order here (they
    /// arrive in key order, which costs the sort one pass).
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        element: &str,
        filter: &str,
        reading: &Reading,
        seq: impl Fn(&T) -> u64,
    ) -> Result<Vec<T>> {
        let columns = format!("json_group_array({element}) AS rows");
        let mut all = Vec::new();
        for (query, bindings) in self.reading_statements(&columns, filter, reading) {
            all.extend(self.db.json_rows(&query, bindings)?);
        }
        all.sort_by_key(seq);
        Ok(all)
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
        let reading = self.ring.borrow().reading(since, limit);
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

    /// The ids of the stored messages, oldest first, to seed the room's
    /// in-memory key window when it wakes.
    pub fn keys(&self) -> Result<Vec<KeyRow>> {
        if !self.facts.exist() {
            return Ok(Vec::new());
        }
        // Row by row: once per wake, and the outbox can hold more ids than
        // one JSON string may.
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
        let reading = self.ring.borrow().reading(since, limit);
        let Some(reading) = reading.filter(|_| self.facts.exist()) else {
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
        let Some((reading, bytes)) = self.within_turn(&reading, filter)? else {
            return Ok(Page {
                messages: Vec::new(),
                through: reading.through,
            });
        };
        let rows: Vec<MessageRow> = if bytes <= JSON_PAGE_BYTES {
            self.read_json(MESSAGE_JSON, filter, &reading, |r: &MessageRow| r.seq)?
        } else {
            // Large messages: the calls per value are few beside the data.
            self.read_all(self.reading_statements(COLUMNS, filter, &reading))?
        };
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
    /// until one that starts past [`TURN_BYTES`], with the bytes of data
    /// they hold; `None` when `filter` leaves nothing to read.
    fn within_turn(&self, reading: &Reading, filter: &str) -> Result<Option<(Reading, u64)>> {
        let sizes: Vec<(u64, u64)> = self.read_json(
            "json_array(seq, octet_length(data))",
            filter,
            reading,
            |&(seq, _)| seq,
        )?;
        let mut before = 0;
        let mut last = None;
        for (seq, bytes) in sizes {
            if before >= TURN_BYTES {
                return Ok(last.map(|seq| (reading.through_at_most(seq), before)));
            }
            before += bytes;
            last = Some(seq);
        }
        Ok(last.map(|_| (*reading, before)))
    }

    /// When the oldest stored message was stored.
    pub fn oldest_ts(&self) -> Result<Option<u64>> {
        let oldest = self.ring.borrow().oldest();
        match oldest.filter(|_| self.facts.exist()) {
            Some(oldest) => self.ts_of(oldest),
            None => Ok(None),
        }
    }

    /// When the latest message was stored, if it still is (else as saved).
    pub fn last_message_ms(&self) -> Result<Option<u64>> {
        if !self.facts.exist() {
            return Ok(None);
        }
        let (_, saved) = self.facts.saved_head();
        Ok(self.ts_of(self.head())?.or(saved))
    }

    pub(super) fn ts_of(&self, seq: u64) -> Result<Option<u64>> {
        #[derive(Deserialize)]
        struct Ts {
            ts: u64,
        }
        let capacity = self.ring.borrow().capacity();
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
