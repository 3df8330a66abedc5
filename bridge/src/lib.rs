//! roomcast-bridge: relays every room's messages to Kafka and Kafka records
//! into rooms, at least once, with a dead-letter topic and Prometheus
//! metrics.
//!
//! Follow a message from a room to Kafka: `registry_link` learns the rooms
//! this instance owns, `outbound` holds each room's `link` and hands its
//! messages to the `broker::Sink` (Kafka's is `kafka::sink`). The other
//! way: `inbound` takes records from the `broker::Source` (`kafka::source`)
//! and gives each to its room's `lane`, which publishes through
//! `worker_api`; `offsets` decides what may be committed. `dlq` writes what
//! cannot be delivered. What the room links may spend together is bounded
//! by `room_tasks` (how many at once) and `limits` (opens per second, bytes
//! in flight). Around them: `supervisor` (start, task tree,
//! shutdown), `context` (what the tasks share), `stop` (the shutdown signal
//! and the one way to wait), `token` and `tls` (credentials and trust for
//! the worker), `metrics` and `endpoint` (what operators watch).

pub mod backoff;
pub mod broker;
pub mod cli;
pub mod context;
pub mod dlq;
pub mod embedded;
pub mod endpoint;
pub mod error;
#[cfg(test)]
mod fake_worker;
pub mod inbound;
pub mod kafka;
pub mod lane;
pub mod limits;
pub mod link;
#[cfg(test)]
mod memory;
pub mod metrics;
pub mod offsets;
pub mod outbound;
pub mod registry_link;
pub mod room_tasks;
pub mod stop;
pub mod supervisor;
pub mod tls;
pub mod token;
pub mod worker_api;
