//! The `x-roomcast-` headers the worker's own parts pass each other: the
//! router to a room, one object of a room to another. Every request from
//! outside loses every header under [`INTERNAL_PREFIX`] at the router, so
//! no client can forge one; the one such name clients do see, the error
//! code on a refusal, is part of the contract
//! ([`roomcast_protocol::wire::ERROR_HEADER`]).

/// What the router strips from every request it admits.
pub const INTERNAL_PREFIX: &str = "x-roomcast-";
/// The validated room name (router → room, object → object).
pub const ROOM_HEADER: &str = "x-roomcast-room";
/// The verified identity ([`roomcast_protocol::auth::Identity::to_header`]).
pub const IDENTITY_HEADER: &str = "x-roomcast-identity";
/// The shard a request is for (router → shard, room → shard), and the
/// shard a join is placed on (the room's answer to the router).
pub const SHARD_HEADER: &str = "x-roomcast-shard";
/// The hub a request is for or comes from (router → hub, room ↔ hub):
/// the object holding multiplexed connections, which serves many rooms.
pub const HUB_HEADER: &str = "x-roomcast-hub";
/// The connection a join placed on a shard is admitted under (the room's
/// answer to the router, then the router to the shard).
pub const CONN_HEADER: &str = "x-roomcast-conn";
/// The internal operation a request asks for ([`crate::internal::Op`]).
pub const OP_HEADER: &str = "x-roomcast-op";
/// The last seq the room knows a joining shard was delivered.
pub const SENT_HEADER: &str = "x-roomcast-sent";
