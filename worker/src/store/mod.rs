//! A room's durable state in its SQLite storage: its messages, which are
//! also the bridge's outbox and, through the ids they carry, the record of
//! idempotency keys, and the room's [`Facts`].
//!
//! Every accepted message is written here before it is sent anywhere. All
//! statements are synchronous: a publish and its broadcast happen in one
//! turn of the room, which keeps `seq` gapless and replays unmixed with live
//! messages, and the runtime commits a turn's writes atomically.
//!
//! What goes where is [`Ring`]'s decision (`roomcast_protocol::ring`, where
//! it is tested against a model, with the slot arithmetic and the trim
//! bounds); [`tables`] runs it over the two tables, [`reads`] reads them,
//! [`schema`] creates them and brings an older release's up to date.

mod facts;
mod reads;
mod schema;
mod tables;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use roomcast_protocol::config::{Config, Limits};
use roomcast_protocol::history::{count_floor, trim_ceiling, ttl_cutoff_ms, Outbox, Retained};
use roomcast_protocol::ids;
use roomcast_protocol::ring::{Lost, Ring, Run, Shape, Tables};
use roomcast_protocol::wire::Message;
use serde::Deserialize;
use worker::Result;

use crate::storage::Db;

pub use facts::Facts;
use schema::{migrate, RING_MIGRATION, SCHEMA};
use tables::{ring_row, seq_value, Count, RingRow, SqlTables, COLUMNS};

/// How often age trimming runs on the publish path (the alarm runs it too).
const AGE_TRIM_INTERVAL_MS: u64 = 60_000;

#[derive(Deserialize)]
struct Bounds {
    lo: Option<u64>,
    hi: Option<u64>,
}

pub struct Store {
    db: Rc<Db>,
    facts: Facts,
    ring: RefCell<Ring>,
    /// The statement of every publish ([`tables::ring_row`]).
    ring_row: RingRow,
    last_age_trim_ms: Cell<u64>,
    /// The head when the room opened its storage in this wake.
    woke_at: Cell<u64>,
}

impl Store {
    /// Opens the room's storage without writing anything, unless it holds
    /// an older release's tables, which are brought up to date first (with
    /// the room's limits from `config`).
    pub fn open(db: Db, config: &Config) -> Result<Store> {
        let exist = db
            .rows::<Count>(
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                vec![],
            )?
            .first()
            .is_some_and(|c| c.n > 0);
        let db = Rc::new(db);
        let store = Store {
            facts: Facts::new(db.clone(), exist),
            ring_row: ring_row(&db),
            db,
            ring: RefCell::new(Ring::default()),
            last_age_trim_ms: Cell::new(0),
            woke_at: Cell::new(0),
        };
        if exist {
            let applied = migrate(&store.db, &store.facts)?;
            store.load()?;
            if applied < RING_MIGRATION {
                let limits = config.limits_for(&store.facts.name().unwrap_or_default());
                store.adopt_legacy(&limits)?;
            }
        }
        Ok(store)
    }

    /// Moves an older release's log of messages into the ring (the newest
    /// `HISTORY_LIMIT`) and the outbox (older ones the bridge still needs,
    /// from wherever they came, so the history stays contiguous).
    fn adopt_legacy(&self, limits: &Limits) -> Result<()> {
        let legacy = self.bounds("SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM legacy")?;
        let (head, cursor, bridged) = {
            let ring = self.ring.borrow();
            let head = ring.head().max(legacy.map_or(0, |r| r.hi));
            (head, ring.cursor(), ring.bridged())
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
        self.facts.set("ring", &capacity.to_string())?;
        let shape = self.measure(capacity, head, cursor, bridged)?;
        *self.ring.borrow_mut() = Ring::from_shape(shape);
        Ok(())
    }

    /// Reads the facts and measures the ring, once per wake.
    fn load(&self) -> Result<()> {
        let facts = self.facts.load()?;
        let ring = Ring::from_shape(self.measure(
            facts.capacity,
            facts.saved_head,
            facts.cursor,
            facts.bridged,
        )?);
        self.woke_at.set(ring.head());
        *self.ring.borrow_mut() = ring;
        Ok(())
    }

    /// Creates the tables and the epoch on the room's first write; `bridged`
    /// when every room is an outbox from its first message.
    pub fn create(&self, name: &str, limits: &Limits, bridged: bool) -> Result<()> {
        if self.facts.exist() {
            return Ok(());
        }
        for statement in SCHEMA {
            self.db.run(statement, vec![])?;
        }
        migrate(&self.db, &self.facts)?;
        self.db.run("DROP TABLE legacy", vec![])?;
        let capacity = limits.history_limit.max(1);
        self.facts.create(ids::epoch(), name, capacity)?;
        *self.ring.borrow_mut() = Ring::empty(capacity, false);
        self.last_age_trim_ms.set(0);
        self.woke_at.set(0);
        if bridged {
            self.mark_bridged()?;
        }
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
            ring_row: &self.ring_row,
            capacity,
        }
    }

    /// Runs `change` on the ring over the tables.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Ring, &mut SqlTables<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut ring = self.ring.borrow_mut();
        let mut tables = self.tables(ring.capacity());
        change(&mut ring, &mut tables)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the room was ever written (since its storage was last deleted).
    pub fn exists(&self) -> bool {
        self.facts.exist()
    }

    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn head(&self) -> u64 {
        self.ring.borrow().head()
    }

    /// The head when this wake of the room opened its storage: what it had
    /// before anything of this wake was stored.
    pub fn woke_at(&self) -> u64 {
        self.woke_at.get()
    }

    /// The range clients see, for resume decisions and history pages.
    pub fn retained(&self, limits: &Limits, now_ms: u64) -> Result<Retained> {
        let floor = self.floor(limits, now_ms)?;
        let head = self.head();
        Ok(Retained {
            head,
            oldest: self
                .ring
                .borrow()
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
            .max(self.facts.contiguous_from().saturating_sub(1));
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(by_count);
        }
        Ok(by_count.max(trim_ceiling(head, self.aged_through(cutoff)?, outbox)))
    }

    /// The next seq.
    pub fn next_seq(&self) -> u64 {
        self.head() + 1
    }

    /// Stores `messages`, whose seqs follow the head in order (see
    /// [`Ring::append`]); returns what a full outbox dropped.
    pub fn append(&self, messages: &[Message], limits: &Limits) -> Result<Lost> {
        let resized = self.ring.borrow().capacity() != limits.history_limit.max(1);
        let lost = self.change(|ring, tables| {
            ring.append(tables, messages, limits.history_limit, limits.outbox_limit)
        })?;
        if resized {
            let capacity = self.ring.borrow().capacity();
            self.facts.set("ring", &capacity.to_string())?;
        }
        Ok(lost)
    }

    pub fn cursor(&self) -> u64 {
        self.ring.borrow().cursor()
    }

    /// Records the bridge's confirmation of everything up to `seq`, and lets
    /// the outbox go up to it.
    pub fn confirm(&self, seq: u64) -> Result<()> {
        if self.change(|ring, tables| ring.confirm(tables, seq))? {
            self.facts.set("cursor", &self.cursor().to_string())?;
        }
        Ok(())
    }

    /// Makes this room hold unconfirmed messages for the bridge from now on.
    pub fn mark_bridged(&self) -> Result<()> {
        if self.exists() && self.change(|ring, tables| ring.mark_bridged(tables))? {
            self.facts.set("bridged", "1")?;
        }
        Ok(())
    }

    pub fn bridged(&self) -> bool {
        self.ring.borrow().bridged()
    }

    /// Messages the bridge has yet to confirm (none unless the room holds
    /// them for a bridge). Messages from Kafka are not relayed, so they do
    /// not count. Kept up to date by every change: reading it reads nothing.
    pub fn pending(&self) -> u64 {
        self.ring.borrow().pending()
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
        let due = now_ms >= self.last_age_trim_ms.get() + AGE_TRIM_INTERVAL_MS;
        let oldest = self.ring.borrow().oldest();
        if !self.exists() || oldest.is_none() || !(force || due) {
            return Ok(Lost::default());
        }
        self.last_age_trim_ms.set(now_ms);
        let cutoff = ttl_cutoff_ms(now_ms, limits.history_ttl_secs);
        if self.oldest_ts()?.is_none_or(|ts| ts >= cutoff) {
            return Ok(Lost::default());
        }
        let head = self.head();
        let upto = trim_ceiling(head, self.aged_through(cutoff)?, self.outbox(limits));
        // The head message may go: keep what it said first.
        if upto >= head && self.facts.saved_head().0 < head {
            self.facts.save_head(head, self.ts_of(head)?)?;
        }
        self.change(|ring, tables| ring.trim_through(tables, upto))
    }

    /// Forgets everything after the room's storage was deleted: the next
    /// write creates it afresh, under a new epoch.
    pub fn forget(&self) {
        self.facts.forget();
        *self.ring.borrow_mut() = Ring::default();
        self.last_age_trim_ms.set(0);
        self.woke_at.set(0);
    }
}
