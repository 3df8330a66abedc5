//! roomcast-bridge: relays every room's messages to a broker (Kafka, or
//! RabbitMQ) and the broker's records into rooms, at least once, with dead
//! letters and Prometheus metrics.
//!
//! Follow a message from a room to the broker: `registry_link` learns the
//! rooms this instance owns, `outbound` holds each room's `link` and hands
//! its messages to the `broker::Sink` (Kafka's is `kafka::sink`,
//! RabbitMQ's `amqp::sink`), and its presence events to `presence`, which
//! hands them to the same sink. The other way: `inbound` takes records from
//! the `broker::Source` (`kafka::source`, `amqp::source`) and gives each to
//! its room's `lane`, which publishes through `worker_api`; `offsets`
//! decides what may be committed (a Kafka offset, a RabbitMQ ack). `dlq`
//! writes what cannot be delivered. What the room links may spend together
//! is bounded by `room_tasks` (how many at once) and `limits` (opens per
//! second, bytes in flight). Around them: `supervisor` (start, which
//! broker, task tree, shutdown), `context` (what the tasks share), `stop`
//! (the shutdown signal and the one way to wait), `token` and `tls`
//! (credentials and trust for the worker and RabbitMQ), `metrics` and
//! `endpoint` (what operators watch).

pub mod amqp;
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
pub mod presence;
pub mod registry_link;
pub mod room_tasks;
pub mod stop;
pub mod supervisor;
pub mod tls;
pub mod token;
pub mod worker_api;
