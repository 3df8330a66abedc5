//! A room's counters (docs/protocol.md, "Stats"), as served by `GET /stats`
//! and sent to the bridge.
//!
//! The room persists them as one JSON document so they survive hibernation and
//! restarts; the bridge turns them into Prometheus series.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::draft::Origin;
use crate::error::ErrorCode;

/// Upper bounds (seconds) of the connection-lifetime histogram buckets.
pub const CONNECTION_SECONDS_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0,
];

/// A cumulative histogram in the Prometheus shape: one count per upper bound,
/// each including the observations of the bounds below it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds another histogram's observations (same bounds) to this one.
    pub fn absorb(&mut self, other: &Histogram) {
        if other.bounds != self.bounds {
            return;
        }
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    pub fn observe(&mut self, value: f64) {
        for (bound, count) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if value <= *bound {
                *count += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Counters of one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomStats {
    /// Accepted messages by origin.
    pub messages_total: BTreeMap<String, u64>,
    /// Frames delivered to clients (messages, live and replayed).
    pub deliveries_total: u64,
    /// Rejected frames by error code.
    pub rejects_total: BTreeMap<String, u64>,
    /// Connects that asked to resume (`since`).
    pub reconnects_total: u64,
    /// Lifetime of closed connections, seconds.
    pub connection_seconds: Histogram,
    /// Messages trimmed before the bridge confirmed them (the outbox was
    /// over `OUTBOX_LIMIT`): they never reached Kafka.
    #[serde(default)]
    pub outbox_dropped_total: u64,
    /// The room's SQLite work.
    #[serde(default)]
    pub storage: StorageStats,
    /// Socket attachments written (a hibernating room's per-socket state).
    #[serde(default)]
    pub attachment_writes: u64,
    /// Batches of messages the room sent to hubs (the objects holding
    /// multiplexed connections): with `messages_total`, the requests a
    /// message costs the room however many connections hold it.
    #[serde(default)]
    pub hub_batches: u64,
}

/// Statements run and rows read and written on a room's SQLite storage
/// (cumulative), as the runtime counts them for billing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageStats {
    pub statements: u64,
    pub rows_read: u64,
    pub rows_written: u64,
}

/// Every origin and every reason a client frame is rejected for start at
/// zero: a series that appears only with its first event makes `rate()` and
/// the error ratio read "no data" instead of 0 until then.
const ORIGINS: [Origin; 3] = [Origin::Ws, Origin::Http, Origin::Kafka];
const FRAME_REJECTS: [ErrorCode; 7] = [
    ErrorCode::BadFormat,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::Forbidden,
    ErrorCode::BadToken,
    ErrorCode::IdConflict,
    ErrorCode::TooManyConnections,
];

impl Default for RoomStats {
    fn default() -> Self {
        RoomStats {
            messages_total: zeros(ORIGINS.map(Origin::as_str)),
            deliveries_total: 0,
            rejects_total: zeros(FRAME_REJECTS.map(ErrorCode::as_str)),
            reconnects_total: 0,
            connection_seconds: Histogram::new(&CONNECTION_SECONDS_BUCKETS),
            outbox_dropped_total: 0,
            storage: StorageStats::default(),
            attachment_writes: 0,
            hub_batches: 0,
        }
    }
}

fn zeros<const N: usize>(names: [&str; N]) -> BTreeMap<String, u64> {
    names.iter().map(|name| (name.to_string(), 0)).collect()
}

impl RoomStats {
    pub fn message(&mut self, origin: Origin) {
        *self
            .messages_total
            .entry(origin.as_str().to_owned())
            .or_default() += 1;
    }

    pub fn reject(&mut self, code: ErrorCode) {
        *self
            .rejects_total
            .entry(code.as_str().to_owned())
            .or_default() += 1;
    }

    /// Adds counters counted elsewhere to these: a shard's (the connections
    /// it holds are the room's, and so is what happened on them), or what a
    /// room counted in a wake before it read its stored counters. Storage
    /// work stays each object's own (the storage counts restart from theirs).
    pub fn absorb(&mut self, shard: &RoomStats) {
        for (into, from) in [
            (&mut self.messages_total, &shard.messages_total),
            (&mut self.rejects_total, &shard.rejects_total),
        ] {
            for (key, n) in from {
                *into.entry(key.clone()).or_default() += n;
            }
        }
        self.deliveries_total += shard.deliveries_total;
        self.reconnects_total += shard.reconnects_total;
        self.connection_seconds.absorb(&shard.connection_seconds);
        self.attachment_writes += shard.attachment_writes;
        self.hub_batches += shard.hub_batches;
        self.outbox_dropped_total += shard.outbox_dropped_total;
    }
}

/// The body of `GET /v1/rooms/{room}/stats` and the bridge's `stats` frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    pub room: String,
    pub epoch: String,
    pub head: u64,
    /// Open client connections, on the room and all its shards.
    pub connections: u64,
    /// Distinct subjects holding them, and those shown as members
    /// (docs/protocol.md, "Presence").
    #[serde(default)]
    pub users: u64,
    #[serde(default)]
    pub members: u64,
    /// Shard objects holding connections of this room (docs/internals.md, "Sharding").
    #[serde(default)]
    pub shards: u64,
    /// Highest seq the bridge confirmed to Kafka.
    #[serde(default)]
    pub cursor: u64,
    /// Messages not yet confirmed to Kafka (the outbox).
    #[serde(default)]
    pub pending: u64,
    #[serde(flatten)]
    pub counters: RoomStats,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        assert_eq!(h.counts, vec![1, 2]);
        assert_eq!((h.count, h.sum), (3, 55.5));
    }

    #[test]
    fn a_shards_counters_add_up() {
        let mut room = RoomStats::default();
        room.reject(ErrorCode::BadFormat);
        room.deliveries_total = 10;
        let mut shard = RoomStats::default();
        shard.reject(ErrorCode::BadFormat);
        shard.deliveries_total = 5;
        shard.connection_seconds.observe(2.0);
        shard.storage.rows_written = 7;
        room.absorb(&shard);
        assert_eq!(room.rejects_total["bad_format"], 2);
        assert_eq!(room.deliveries_total, 15);
        assert_eq!(room.connection_seconds.count, 1);
        assert_eq!(room.storage.rows_written, 0, "storage stays each object's");
    }

    #[test]
    fn counters_by_label() {
        let mut s = RoomStats::default();
        s.message(Origin::Ws);
        s.message(Origin::Ws);
        s.reject(ErrorCode::RateLimited);
        s.hub_batches = 3;
        assert_eq!(s.messages_total["ws"], 2);
        assert_eq!(s.rejects_total["rate_limited"], 1);
        assert_eq!(s.messages_total["kafka"], 0, "every origin starts at zero");
        assert_eq!(
            s.rejects_total["too_large"], 0,
            "every reject reason starts at zero"
        );
        let json = serde_json::to_value(StatsReport {
            room: "r".into(),
            epoch: "e".into(),
            head: 2,
            connections: 1,
            users: 1,
            members: 0,
            shards: 0,
            cursor: 0,
            pending: 2,
            counters: s,
        })
        .unwrap();
        assert_eq!(json["messages_total"]["ws"], 2);
        assert_eq!(json["connections"], 1);
        assert_eq!(json["pending"], 2);
        assert_eq!(json["hub_batches"], 3, "beside the other counters");
    }
}
