//! What every event of a room starts from, on the room's own object and on
//! its shards alike: the room, the settings, the room's limits and the time.
//! One value, read once per event, so that no code deep in an event reads
//! the clock or the configuration again on its own; and, since only the
//! time changes while an object is awake, kept for the wake
//! ([`WakeCtx`]), so that an event reads nothing but the clock.

use std::cell::OnceCell;
use std::rc::Rc;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::config::Limits;
use roomcast_protocol::session::Timing;
use worker::{Env, Result};

use crate::settings::{self, Settings};

#[derive(Clone)]
pub struct Ctx {
    pub room: Rc<str>,
    pub settings: Rc<Settings>,
    pub limits: Rc<Limits>,
    pub now: u64,
}

impl Ctx {
    /// An event of `room`, now.
    pub fn of(env: &Env, room: &str) -> Result<Ctx> {
        let settings = settings::load(env).map_err(worker::Error::RustError)?;
        let limits = Rc::new(settings.config.limits_for(room));
        Ok(Ctx {
            room: room.into(),
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
            now: now_ms(),
            ..self.clone()
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

/// An object's context for the wake: the room it serves, its settings and
/// its limits, which nothing changes while the object is awake (settings
/// come from the deployment, limits from the settings and the name).
#[derive(Default)]
pub struct WakeCtx(OnceCell<Ctx>);

impl WakeCtx {
    /// An event of the room this wake serves, now; `None` until an event
    /// named it ([`WakeCtx::of`]).
    pub fn now(&self) -> Option<Ctx> {
        self.0.get().map(Ctx::refreshed)
    }

    /// The same at `now`, a time the event has already read.
    pub fn at(&self, now: u64) -> Option<Ctx> {
        self.0.get().map(|kept| Ctx {
            now,
            ..kept.clone()
        })
    }

    /// An event of `room`, now, kept for the wake's later events. An
    /// object serves one room, so another name is answered afresh and not
    /// kept.
    pub fn of(&self, env: &Env, room: &str) -> Result<Ctx> {
        match self.0.get() {
            Some(kept) if *kept.room == *room => Ok(kept.refreshed()),
            Some(_) => Ctx::of(env, room),
            None => {
                let ctx = Ctx::of(env, room)?;
                Ok(self.0.get_or_init(|| ctx).clone())
            }
        }
    }
}
