//! A room's SQLite storage, counted: every statement goes through [`Db`],
//! which adds up the statements run and the rows read and written as the
//! runtime reports them on the cursor (the same numbers Cloudflare bills).
//! The room reports them in `/stats`, so the cost of a publish is a number
//! tests can hold, not a timing.
//!
//! The statement a publish makes is a [`HotStatement`], run from
//! JavaScript in one call (`worker/js/hot_statement.js`), which counts its
//! runs there; [`Db::counts`] adds them in.

use std::cell::{Cell, RefCell};

use roomcast_protocol::stats::StorageStats;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::{Result, SqlCursor, SqlStorage, SqlStorageValue};

#[wasm_bindgen(module = "/js/hot_statement.js")]
extern "C" {
    /// One query, run from JavaScript with its values in one call; the
    /// methods that bind a given statement's values are declared beside
    /// the statement.
    pub type HotStatement;

    #[wasm_bindgen(constructor)]
    fn new(sql: &JsValue, query: &str) -> HotStatement;

    /// `[statements, rows read, rows written]` of its runs.
    #[wasm_bindgen(method)]
    fn counts(this: &HotStatement) -> Vec<f64>;
}

pub struct Db {
    sql: SqlStorage,
    counts: Cell<StorageStats>,
    /// The hot statements made on this storage, counted with the rest.
    hot: RefCell<Vec<HotStatement>>,
}

impl Db {
    pub fn new(sql: SqlStorage) -> Db {
        Db {
            sql,
            counts: Cell::new(StorageStats::default()),
            hot: RefCell::new(Vec::new()),
        }
    }

    /// `query` as a [`HotStatement`] of this storage, counted with the rest.
    pub fn hot(&self, query: &str) -> HotStatement {
        let statement = HotStatement::new(self.sql.as_ref(), query);
        self.hot
            .borrow_mut()
            .push(JsValue::clone(&statement).unchecked_into());
        statement
    }

    /// Runs a statement whose rows (if any) nobody reads; the rows written.
    pub fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<u64> {
        let cursor = self.sql.exec(query, bindings)?;
        cursor.to_array::<IgnoredAny>()?;
        Ok(self.count(&cursor).rows_written)
    }

    /// Runs a query and reads every row it returns.
    pub fn rows<T: DeserializeOwned>(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<T>> {
        let cursor = self.sql.exec(query, bindings)?;
        let rows = cursor.to_array()?;
        self.count(&cursor);
        Ok(rows)
    }

    /// Runs a query whose one row holds a JSON array in its column `rows`
    /// (SQLite's `json_group_array`), and reads the array's elements: one
    /// value through the runtime's cursor, where reading the rows
    /// themselves costs a call out of Wasm per value.
    pub fn json_rows<T: DeserializeOwned>(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<T>> {
        #[derive(Deserialize)]
        struct Rows {
            rows: String,
        }
        match self.rows::<Rows>(query, bindings)?.first() {
            Some(json) => Ok(serde_json::from_str(&json.rows)?),
            None => Ok(Vec::new()),
        }
    }

    /// Everything counted so far, including what earlier wakes of the room
    /// counted (`base`, restored from its counters).
    pub fn counts(&self) -> StorageStats {
        let mut all = self.counts.get();
        for statement in self.hot.borrow().iter() {
            if let [statements, rows_read, rows_written] = statement.counts()[..] {
                all.statements += statements as u64;
                all.rows_read += rows_read as u64;
                all.rows_written += rows_written as u64;
            }
        }
        all
    }

    /// Continues the counts a previous wake of the room stored.
    pub fn restore(&self, base: StorageStats) {
        let now = self.counts.get();
        self.counts.set(StorageStats {
            statements: base.statements + now.statements,
            rows_read: base.rows_read + now.rows_read,
            rows_written: base.rows_written + now.rows_written,
        });
    }

    fn count(&self, cursor: &SqlCursor) -> StorageStats {
        let this = StorageStats {
            statements: 1,
            rows_read: cursor.rows_read() as u64,
            rows_written: cursor.rows_written() as u64,
        };
        let all = self.counts.get();
        self.counts.set(StorageStats {
            statements: all.statements + 1,
            rows_read: all.rows_read + this.rows_read,
            rows_written: all.rows_written + this.rows_written,
        });
        this
    }
}
