//! roomcast's edge worker: the HTTP router and the `Room` Durable Object.
//!
//! Everything here is glue between the Workers runtime and
//! `roomcast-protocol`, where the rules live. The router authenticates and
//! admits requests; each room is one Durable Object that owns its sequence,
//! its history and its WebSockets (on the Hibernation API, so idle rooms cost
//! nothing).

mod attachment;
mod hibernation;
mod history;
mod registry;
mod reply;
mod room;
mod router;
mod session;
mod settings;

use worker::{event, Context, Env, Request, Response, Result};

pub use registry::Registry;
pub use room::Room;

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    router::handle(req, env).await
}
