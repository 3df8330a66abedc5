//! The room's two tables as the ring (`roomcast_protocol::ring::Ring`)
//! drives them: `ring`, one row per slot (`seq % HISTORY_LIMIT`), so a
//! publish writes one row and deletes nothing, and `outbox`, keyed by seq,
//! for what the bridge has not confirmed when the ring moves past it. What
//! goes where is the ring's decision, tested against a model there; every
//! statement here reads and writes the rows of its key range only.
//!
//! A message is a row of seven columns ([`COLUMNS`]) in both tables; its
//! values are bound as the runtime needs them (every bound value passes
//! through a JavaScript number).

use roomcast_protocol::ring::{slots, Run, Tables};
use roomcast_protocol::wire::Message;
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{Result, SqlStorageValue};

use super::schema::CREATE_RING_NEXT;
use crate::storage::{Db, HotStatement};

/// The columns of a stored message, in the order the tables hold them.
pub(super) const COLUMNS: &str = "seq, id, ts, sender, origin, data, trace";

/// A timestamp bound no message reaches, and still exact as a JavaScript
/// number (the runtime passes bound values through JavaScript).
const NO_CUTOFF: i64 = (1 << 53) - 1;

/// A message's values in [`COLUMNS`] order.
pub(super) fn row_values(m: &Message) -> [SqlStorageValue; 7] {
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

/// A seq (or a time in ms) as [`seq_value`] binds it, for a value bound
/// from JavaScript.
fn seq_number(n: u64) -> f64 {
    n.min(NO_CUTOFF as u64) as f64
}

/// A seq as a bound value; seqs never come near JavaScript's exact limit,
/// and a client's `since` beyond it reads as "after everything".
pub(super) fn seq_value(seq: u64) -> SqlStorageValue {
    (seq.min(NO_CUTOFF as u64) as i64).into()
}

/// A time in ms as a bound value.
pub(super) fn ms_value(ms: u64) -> SqlStorageValue {
    (ms.min(NO_CUTOFF as u64) as i64).into()
}

/// The ring's write of the rows `placeholders` holds: a slot's row is
/// replaced, so a publish writes one row and deletes none.
fn ring_write(placeholders: &str) -> String {
    format!(
        "INSERT INTO ring (slot, {COLUMNS}) VALUES {placeholders} \
         ON CONFLICT(slot) DO UPDATE SET seq = excluded.seq, id = excluded.id, ts = excluded.ts, \
         sender = excluded.sender, origin = excluded.origin, data = excluded.data, trace = excluded.trace"
    )
}

/// The ring's write of one row, the statement of every publish, made from
/// JavaScript in one call.
pub(super) fn ring_row(db: &Db) -> RingRow {
    db.hot(&ring_write("(?, ?, ?, ?, ?, ?, ?, ?)"))
        .unchecked_into()
}

#[wasm_bindgen]
extern "C" {
    /// [`ring_row`]'s statement, with its values in the order of `slot,`
    /// [`COLUMNS`].
    #[wasm_bindgen(extends = HotStatement)]
    pub(super) type RingRow;

    #[wasm_bindgen(method, catch)]
    #[allow(clippy::too_many_arguments)]
    fn run(
        this: &RingRow,
        slot: f64,
        seq: f64,
        id: &str,
        ts: f64,
        sender: &str,
        origin: &str,
        data: &str,
        trace: Option<&str>,
    ) -> std::result::Result<(), JsValue>;
}

/// Rows per INSERT of a batch: seven or eight bound values a row keep a
/// statement under the runtime's limit of 100 bound parameters.
const ROWS_PER_INSERT: usize = 12;

#[derive(Deserialize)]
pub(super) struct Count {
    pub n: u64,
}

/// The room's two tables, as the ring drives them. Each statement reads and
/// writes the rows of its key range only.
pub(super) struct SqlTables<'a> {
    pub db: &'a Db,
    pub ring_row: &'a RingRow,
    pub capacity: u64,
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
        if let [m] = messages {
            return self
                .ring_row
                .run(
                    seq_number(m.seq % capacity),
                    seq_number(m.seq),
                    &m.id,
                    seq_number(m.ts),
                    &m.sender,
                    m.origin.as_str(),
                    m.data.get(),
                    m.trace.as_deref(),
                )
                .map_err(worker::Error::from);
        }
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let placeholders = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let mut values = Vec::with_capacity(chunk.len() * 8);
            for m in chunk {
                values.push(seq_value(m.seq % capacity));
                values.extend(row_values(m));
            }
            self.db.run(&ring_write(&placeholders), values)?;
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
        self.db.run(CREATE_RING_NEXT, vec![])?;
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
