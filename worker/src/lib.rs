//! roomcast's edge worker: the HTTP router, the `Room` Durable Object and
//! the `Shard`s that hold the sockets of rooms too big for one object, the
//! `Registry` that assigns rooms to bridge instances, and the `Quota` of
//! each subject across rooms. The rules live in `roomcast-protocol`; this
//! crate is the glue between them and the Workers runtime.
//!
//! Follow a message. `router` admits the client (origin, token, rights) and
//! forwards it to the room's object with the room and identity in
//! `headers`. In `room`, `dispatch` hands a WebSocket upgrade to `join`,
//! which accepts the socket into `clients` (the client sockets one object
//! holds, shared with the shards). A `publish` frame reaches the room's
//! class through `event` (each event run without a future when it never
//! waits), is read by `clients::frames` and taken by `room::publish`, the
//! one path every message takes (budget, ids, `room::idempotency`), which
//! writes it to the `store` (the ring over SQLite, counted by `storage`),
//! broadcasts it to the room's `clients` with the publisher's ack in one
//! call out of Wasm (`sends`), relays it to the bridge's link
//! (`room::link`) and keeps it for the room's shards (`room::fanout`). A
//! shard (`shard`) gets it in a batch (`outlet::stream`) and sends it to its
//! own clients; its clients' publishes go to the room (`outlet::forward`),
//! over `internal` requests. A hub (`hub`) does the same for the rooms its
//! multiplexed connections subscribe to, several on one socket; the
//! per-room steps both share are `outlet`. Who is connected is `room::presence`: joins
//! and ends (every end goes through `clients`) are marked there and flushed
//! once an interval to the room's clients, its shards and its link. Around
//! them: `context` (what every event
//! starts from), `alarm` (timers while hibernating), `counters`,
//! `registry`, `quota`, `settings`, `reply` (the error shape),
//! `attachment` and `hibernation` (per-socket state and runtime calls),
//! `bridge_token` (the bridge's tokens on its links). The JavaScript the
//! worker carries for its hot calls is in `worker/js/`.

mod alarm;
mod attachment;
mod bridge_token;
mod clients;
mod context;
mod counters;
mod event;
mod headers;
mod hibernation;
mod hub;
mod internal;
mod outlet;
mod quota;
mod registry;
mod reply;
mod room;
mod router;
mod sends;
mod settings;
mod shard;
mod storage;
mod store;

use roomcast_protocol::ErrorCode;
use worker::{console_error, event, Context, Env, Request, Response, Result};

pub use hub::HubObject;
pub use quota::Quota;
pub use registry::Registry;
pub use room::RoomObject;
pub use shard::ShardObject;

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    // A failure the router did not answer itself still gets roomcast's error
    // shape, so callers can tell it from a proxy's (see `reply`).
    router::handle(req, env).await.or_else(|e| {
        console_error!("request failed: {e}");
        reply::error(
            ErrorCode::Internal,
            "the worker failed to handle the request",
        )
    })
}
