//! The scenarios: each part of the report measures with the load clients
//! and renders its own tables, and `roomcast-bench profile` records a CPU
//! profile of one room ([`profile`]). The parts, numbered as in
//! `BENCHMARKS.md`: push against poll ([`push_poll`], 1), fan-out and many
//! rooms ([`fanout`], 2 and 3), the bridge ([`bridge`], 4, with its
//! resident memory from [`bridge_memory`]), footprint ([`footprint`], 5) and
//! sharded rooms ([`shards`], 6), a join storm with and without presence
//! ([`presence`], 7), and one client in many rooms on one multiplexed
//! connection against a socket per room ([`multiplex`], 8). Every run
//! prints a [`progress`] line.

pub mod bridge;
pub mod bridge_amqp;
pub mod bridge_memory;
pub mod fanout;
pub mod footprint;
pub mod multiplex;
pub mod presence;
pub mod profile;
pub mod push_poll;
pub mod shards;

use crate::measure::stats::Sample;
use crate::server::Server;
use crate::table::number;

/// One line per run on stderr, so a long benchmark shows it is alive.
pub fn progress(server: &Server, what: &str, sample: &Sample) {
    let rejected = if sample.rejected > 0 {
        format!(", {} REJECTED", sample.rejected)
    } else {
        String::new()
    };
    eprintln!(
        "[{}] {what}: p50 {} ms, p99 {} ms, {} deliveries/s, CPU s/1k: workerd {}, bench {}{rejected}",
        server.flavor.label(),
        number(sample.p50_ms),
        number(sample.p99_ms),
        number(sample.delivered_per_sec),
        number(sample.cpu_per_1k.workerd()),
        number(sample.cpu_per_1k.bench),
    );
}
