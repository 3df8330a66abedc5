//! What every event of a room starts from, on the room's own object and on
//! its shards alike: the room, the settings, the room's limits and the time.
//! One value, read once per event, so that no code deep in an event reads
//! the clock or the configuration again on its own.

use std::rc::Rc;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::config::Limits;
use roomcast_protocol::session::Timing;
use worker::{Env, Result};

use crate::settings::{self, Settings};

pub struct Ctx {
    pub room: String,
    pub settings: Rc<Settings>,
    pub limits: Limits,
    pub now: u64,
}

impl Ctx {
    /// An event of `room`, now.
    pub fn of(env: &Env, room: &str) -> Result<Ctx> {
        let settings = settings::load(env).map_err(worker::Error::RustError)?;
        let limits = settings.config.limits_for(room);
        Ok(Ctx {
            room: room.to_owned(),
            settings,
            limits,
            now: now_ms(),
        })
    }

    /// The same event's context with the time read again: after an `await`
    /// (another object asked, storage read) the event's start may be long
    /// past, and a connection's deadlines count from when it is accepted.
    pub fn refreshed(&self) -> Ctx {
        Ctx {
            room: self.room.clone(),
            settings: self.settings.clone(),
            limits: self.limits.clone(),
            now: now_ms(),
        }
    }

    /// The deadlines that apply to client sessions here.
    pub fn timing(&self) -> Timing {
        Timing {
            idle_timeout_ms: self.limits.idle_timeout_ms,
            leeway_secs: self.settings.config.auth.leeway_secs,
            token_grace_ms: self.limits.token_grace_ms,
        }
    }
}
