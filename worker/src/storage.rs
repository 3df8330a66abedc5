//! A room's SQLite storage, counted: every statement goes through [`Db`],
//! which adds up the statements run and the rows read and written as the
//! runtime reports them on the cursor (the same numbers Cloudflare bills).
//! The room reports them in `/stats`, so the cost of a publish is a number
//! tests can hold, not a timing.

use std::cell::Cell;

use roomcast_protocol::stats::StorageStats;
use serde::de::{DeserializeOwned, IgnoredAny};
use worker::{Result, SqlCursor, SqlStorage, SqlStorageValue};

pub struct Db {
    sql: SqlStorage,
    counts: Cell<StorageStats>,
}

impl Db {
    pub fn new(sql: SqlStorage) -> Db {
        Db {
            sql,
            counts: Cell::new(StorageStats::default()),
        }
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

    /// Everything counted so far, including what earlier wakes of the room
    /// counted (`base`, restored from its counters).
    pub fn counts(&self) -> StorageStats {
        self.counts.get()
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
