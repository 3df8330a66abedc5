//! roomcast-bridge: relays every room's messages to Kafka and Kafka records
//! into rooms (SPEC sections 5-7), at least once, with a dead-letter topic
//! and Prometheus metrics.
//!
//! Layout: `registry_link` learns which rooms this instance owns and runs an
//! `outbound` room link for each; `inbound` consumes Kafka into rooms through
//! the worker's batch API; `metrics` and `endpoint` serve what operators
//! watch. `relay` wires them together and shuts them down in order.

pub mod backoff;
pub mod cli;
pub mod embedded;
pub mod endpoint;
pub mod inbound;
pub mod kafka;
pub mod metrics;
pub mod outbound;
pub mod registry_link;
pub mod relay;
pub mod worker_api;
