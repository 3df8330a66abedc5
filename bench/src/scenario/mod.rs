//! The scenarios: each part of the report measures with the load clients
//! and renders its own tables, and `roomcast-bench profile` records a CPU
//! profile of one room ([`profile`]). The parts, numbered as in
//! `BENCHMARKS.md`: push against poll ([`push_poll`], 1), fan-out and many
//! rooms ([`fanout`], 2 and 3), the bridge ([`bridge`], 4, with its
//! resident memory from [`bridge_memory`]), footprint ([`footprint`], 5) and
//! sharded rooms ([`shards`], 6).

pub mod bridge;
pub mod bridge_memory;
pub mod fanout;
pub mod footprint;
pub mod profile;
pub mod push_poll;
pub mod shards;
