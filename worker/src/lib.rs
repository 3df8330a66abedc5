//! roomcast's edge worker: the HTTP router, the `Room` Durable Object and
//! the `Shard`s that hold the sockets of rooms too big for one object, the
//! `Registry` that assigns rooms to bridge instances, and the `Quota` of
//! each subject across rooms.
//!
//! Everything here is glue between the Workers runtime and
//! `roomcast-protocol`, where the rules live. The router authenticates and
//! admits requests; each room is one Durable Object that owns its sequence,
//! its history and its WebSockets (on the Hibernation API, so idle rooms cost
//! nothing).

mod alarm;
mod attachment;
mod bridge_token;
mod clients;
mod context;
mod counters;
mod headers;
mod hibernation;
mod internal;
mod quota;
mod registry;
mod reply;
mod room;
mod router;
mod settings;
mod shard;
mod storage;
mod store;

use roomcast_protocol::ErrorCode;
use worker::{console_error, event, Context, Env, Request, Response, Result};

pub use quota::Quota;
pub use registry::Registry;
pub use room::Room;
pub use shard::Shard;

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
