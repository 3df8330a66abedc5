//! The room's tables, and how a room written by any earlier release is
//! brought to this release's: the first release's tables ([`SCHEMA`]),
//! then every change since, in order ([`MIGRATIONS`]), and the log of
//! messages that releases before the ring kept, moved into the ring and
//! the outbox (`Store::adopt_legacy`). Each table's definition is written
//! here once.

use worker::Result;

use super::facts::Facts;
use crate::storage::Db;

/// The tables as the first release created them (schema version 0).
pub(super) const SCHEMA: &[&str] = &[
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
    // move over when the room opens with its limits (see `Store::open`).
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
pub(super) const RING_MIGRATION: usize = 3;

/// The ring's replacement when its capacity changes (see `Tables::resize`).
pub(super) const CREATE_RING_NEXT: &str = concat!("CREATE TABLE ring_next ", ring_columns!());

/// Applies the migrations this room has not, and says how many it had.
/// They and the new version are written with no `await` between them,
/// which the runtime commits atomically, so a room never holds half a
/// migration.
pub(super) fn migrate(db: &Db, facts: &Facts) -> Result<usize> {
    #[derive(serde::Deserialize)]
    struct Version {
        value: String,
    }
    let applied = db
        .rows::<Version>("SELECT value FROM meta WHERE key = 'schema'", vec![])?
        .first()
        .and_then(|r| r.value.parse().ok())
        .unwrap_or(0usize);
    let Some(pending) = MIGRATIONS.get(applied..).filter(|p| !p.is_empty()) else {
        return Ok(applied);
    };
    for migration in pending {
        for statement in *migration {
            db.run(statement, vec![])?;
        }
    }
    facts.set("schema", &MIGRATIONS.len().to_string())?;
    Ok(applied)
}
