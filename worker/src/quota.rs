//! The `Quota` Durable Object: one per subject, for the limits that span
//! rooms. Every other budget belongs to a subject in one room, which lets
//! one token with `publish: ["chat.*"]` create a room per message, each
//! registered with the registry and relayed by the bridge for a week. This
//! object holds how fast the subject creates rooms (`ROOM_CREATE_PER_MIN`,
//! a bucket of that many refilled over a minute); a room asks it only when
//! a subject's request would create it, so established rooms never call it.
//!
//! The bucket lives in memory, like the rooms' rate buckets
//! ([`roomcast_protocol::rate`]): an evicted quota has been idle long
//! enough to be full again, which is what it forgets.

use std::cell::RefCell;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::rate::Bucket;
use serde::{Deserialize, Serialize};
use worker::{
    durable_object, DurableObject, Env, Method, Request, RequestInit, Response, Result, State,
};

use crate::settings::{self, Settings};

/// The Durable Object namespace of quotas (see `wrangler.toml`).
const QUOTAS_BINDING: &str = "QUOTAS";
/// The one operation rooms ask for.
const CREATE_PATH: &str = "/create-room";

/// A quota's answer to a room creation.
#[derive(Serialize, Deserialize)]
struct Answer {
    /// How long until the subject may create another room; absent when
    /// this one may be created.
    retry_after_ms: Option<u64>,
}

/// Asks `sub`'s quota whether it may create a room now: `None` when it
/// may, else how long until it may (ms).
pub async fn create_room(env: &Env, sub: &str) -> Result<Option<u64>> {
    let stub = env
        .durable_object(QUOTAS_BINDING)?
        .id_from_name(sub)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post);
    let request = Request::new_with_init(&format!("https://quota{CREATE_PATH}"), &init)?;
    let mut response = stub.fetch_with_request(request).await?;
    let answer: Answer = response.json().await?;
    Ok(answer.retry_after_ms)
}

#[durable_object]
pub struct Quota {
    env: Env,
    creations: RefCell<Option<Bucket>>,
}

impl DurableObject for Quota {
    fn new(_state: State, env: Env) -> Self {
        Quota {
            env,
            creations: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        if req.path() != CREATE_PATH || req.method() != Method::Post {
            return Response::error("no such quota operation", 404);
        }
        let settings = self.settings()?;
        let per_min = settings.config.room_create_per_min;
        let now = now_ms();
        let mut creations = self.creations.borrow_mut();
        let bucket = creations.get_or_insert_with(|| Bucket::new(per_min, now));
        let retry_after_ms = bucket
            .take(1, now, f64::from(per_min) / 60.0, per_min)
            .err();
        Response::from_json(&Answer { retry_after_ms })
    }
}

impl Quota {
    fn settings(&self) -> Result<std::rc::Rc<Settings>> {
        settings::load(&self.env).map_err(worker::Error::RustError)
    }
}
