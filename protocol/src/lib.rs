//! roomcast's protocol: everything about rooms that needs no runtime.
//!
//! The worker (Wasm, Durable Objects) and the bridge (tokio) are thin adapters
//! over this crate. Keeping the rules here, free of I/O, means they are unit-
//! and property-tested natively and behave identically on `wasm32`.

pub mod admission;
pub mod assign;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dedupe;
pub mod draft;
pub mod error;
pub mod history;
pub mod ids;
pub mod lifecycle;
pub mod mux;
pub mod policy;
pub mod presence;
pub mod rate;
pub mod rights;
pub mod ring;
pub mod room;
pub mod session;
pub mod shard;
pub mod signing;
pub mod stats;
pub mod trace;
pub mod wire;

pub use error::{CloseCode, ErrorCode, Refusal};
pub use room::RoomName;
