//! The facts a room keeps in its `meta` table besides its messages: its
//! name and epoch, whether the registry knows it, the head and its time as
//! last saved, the counters, the shards and hubs it has used, the highest
//! offset it stored of each inbound partition. One row per fact, all read in
//! one statement when the room wakes, each written only when it changes.
//!
//! The ring's own facts (its capacity, the bridge's cursor, whether the room
//! is bridged) are in `meta` too, but live in [`Ring`] once loaded
//! (`super::Store`).
//!
//! [`Ring`]: roomcast_protocol::ring::Ring

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::Deserialize;
use worker::Result;

use crate::storage::Db;

/// The `meta` key prefix of an inbound topic-partition's highest stored
/// offset.
const OFFSET_PREFIX: &str = "offset:";

#[derive(Deserialize)]
struct MetaRow {
    key: String,
    value: String,
}

/// What `meta` says of the ring, for the store to measure it from.
pub(super) struct RingFacts {
    pub capacity: u64,
    pub cursor: u64,
    pub bridged: bool,
    pub saved_head: u64,
}

pub struct Facts {
    db: Rc<Db>,
    /// The tables exist (false for a room that was never written): facts
    /// are written only then.
    exist: Cell<bool>,
    values: RefCell<Values>,
}

/// Every fact, loaded together and forgotten together.
#[derive(Default)]
struct Values {
    epoch: Option<String>,
    name: Option<String>,
    /// The registry knows this room.
    registered: bool,
    /// The head as last written to `meta` (an age trim may empty the tables).
    saved_head: u64,
    /// When the head message was stored, as written with the head: it is
    /// still known once that message is trimmed (retirement counts from it).
    saved_last_ms: Option<u64>,
    stats: Option<String>,
    /// Shard objects the room has placed connections on.
    shards: u32,
    /// Hub objects the room has admitted connections from (one past the
    /// highest number).
    hubs: u32,
    /// Per inbound `topic:partition`, the highest offset stored.
    offsets: BTreeMap<String, i64>,
    /// Clients see the history from here on (a room that an earlier
    /// release left with holes).
    contiguous_from: u64,
}

impl Facts {
    pub(super) fn new(db: Rc<Db>, exist: bool) -> Facts {
        Facts {
            db,
            exist: Cell::new(exist),
            values: RefCell::new(Values::default()),
        }
    }

    /// Whether the room was ever written (since its storage was last deleted).
    pub fn exist(&self) -> bool {
        self.exist.get()
    }

    /// Reads every fact.
    pub(super) fn load(&self) -> Result<RingFacts> {
        let mut values = Values::default();
        let mut ring = RingFacts {
            capacity: 1,
            cursor: 0,
            bridged: false,
            saved_head: 0,
        };
        for row in self
            .db
            .rows::<MetaRow>("SELECT key, value FROM meta", vec![])?
        {
            let number = || row.value.parse().unwrap_or(0);
            match row.key.as_str() {
                "epoch" => values.epoch = Some(row.value.clone()),
                "cursor" => ring.cursor = number(),
                "bridged" => ring.bridged = true,
                "registered" => values.registered = row.value == "1",
                "head" => values.saved_head = number(),
                "last_ms" => values.saved_last_ms = row.value.parse().ok(),
                "ring" => ring.capacity = number().max(1),
                "stats" => values.stats = Some(row.value.clone()),
                "room" => values.name = Some(row.value.clone()),
                "shards" => values.shards = row.value.parse().unwrap_or(0),
                "hubs" => values.hubs = row.value.parse().unwrap_or(0),
                "contiguous_from" => values.contiguous_from = number(),
                key => {
                    if let (Some(partition), Ok(offset)) =
                        (key.strip_prefix(OFFSET_PREFIX), row.value.parse())
                    {
                        values.offsets.insert(partition.to_owned(), offset);
                    }
                }
            }
        }
        ring.saved_head = values.saved_head;
        *self.values.borrow_mut() = values;
        Ok(ring)
    }

    /// The facts of a room's first write (its tables were just created).
    pub(super) fn create(&self, epoch: String, name: &str, capacity: u64) -> Result<()> {
        self.exist.set(true);
        self.set("epoch", &epoch)?;
        self.set("room", name)?;
        self.set("ring", &capacity.to_string())?;
        *self.values.borrow_mut() = Values {
            epoch: Some(epoch),
            name: Some(name.to_owned()),
            ..Values::default()
        };
        Ok(())
    }

    /// Forgets every fact (the room's storage was deleted).
    pub(super) fn forget(&self) {
        self.exist.set(false);
        *self.values.borrow_mut() = Values::default();
    }

    /// Writes one fact.
    pub(super) fn set(&self, key: &str, value: &str) -> Result<()> {
        self.db.run(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// The epoch, once the room exists.
    pub fn epoch(&self) -> Option<String> {
        self.values.borrow().epoch.clone()
    }

    /// The room's name as its first write stored it.
    pub fn name(&self) -> Option<String> {
        self.values.borrow().name.clone()
    }

    pub fn registered(&self) -> bool {
        self.values.borrow().registered
    }

    /// Records whether the registry knows this room.
    pub fn set_registered(&self, registered: bool) -> Result<()> {
        let changed =
            std::mem::replace(&mut self.values.borrow_mut().registered, registered) != registered;
        if self.exist() && changed {
            self.set("registered", if registered { "1" } else { "0" })?;
        }
        Ok(())
    }

    /// The counters a previous wake stored, as JSON.
    pub fn stored_stats(&self) -> Option<String> {
        self.values.borrow().stats.clone()
    }

    pub fn save_stats(&self, json: &str) -> Result<()> {
        if self.exist() {
            self.set("stats", json)?;
        }
        Ok(())
    }

    /// How many shard objects the room has used: every one of them is fed
    /// after a wake, until it says it holds no connections.
    pub fn shard_count(&self) -> u32 {
        self.values.borrow().shards
    }

    pub fn set_shard_count(&self, count: u32) -> Result<()> {
        let changed = std::mem::replace(&mut self.values.borrow_mut().shards, count) != count;
        if self.exist() && changed {
            self.set("shards", &count.to_string())?;
        }
        Ok(())
    }

    /// How many hubs the room may have connections on (one past the
    /// highest number it admitted one from): every one of them is fed after
    /// a wake, until it says it holds none of this room's.
    pub fn hub_count(&self) -> u32 {
        self.values.borrow().hubs
    }

    pub fn set_hub_count(&self, count: u32) -> Result<()> {
        let changed = std::mem::replace(&mut self.values.borrow_mut().hubs, count) != count;
        if self.exist() && changed {
            self.set("hubs", &count.to_string())?;
        }
        Ok(())
    }

    /// The highest offset of inbound `partition` (`topic:partition`) this
    /// room stored, if any.
    pub fn inbound_offset(&self, partition: &str) -> Option<i64> {
        self.values.borrow().offsets.get(partition).copied()
    }

    /// Records that the room stored inbound `partition` up to `offset`.
    pub fn set_inbound_offset(&self, partition: &str, offset: i64) -> Result<()> {
        let higher = self
            .inbound_offset(partition)
            .is_none_or(|stored| offset > stored);
        if self.exist() && higher {
            self.set(&format!("{OFFSET_PREFIX}{partition}"), &offset.to_string())?;
            self.values
                .borrow_mut()
                .offsets
                .insert(partition.to_owned(), offset);
        }
        Ok(())
    }

    /// Where clients see the history from.
    pub(super) fn contiguous_from(&self) -> u64 {
        self.values.borrow().contiguous_from
    }

    /// The head as last saved, and when its message was stored.
    pub(super) fn saved_head(&self) -> (u64, Option<u64>) {
        let values = self.values.borrow();
        (values.saved_head, values.saved_last_ms)
    }

    /// Saves the head and when its message was stored, before an age trim
    /// lets that message go.
    pub(super) fn save_head(&self, head: u64, last_ms: Option<u64>) -> Result<()> {
        self.set("head", &head.to_string())?;
        self.values.borrow_mut().saved_head = head;
        if let Some(last) = last_ms {
            self.set("last_ms", &last.to_string())?;
            self.values.borrow_mut().saved_last_ms = Some(last);
        }
        Ok(())
    }
}
