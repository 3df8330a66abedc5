//! The `Room` Durable Object: one per room name, the single writer of its
//! sequence and history, and the owner of its WebSockets.
//!
//! It uses the WebSocket Hibernation API, so an idle room is evicted from
//! memory while its clients stay connected: what must survive lives in
//! socket attachments (the [`Session`]s, the bridge link's state) and in
//! SQLite ([`History`]); what may be rebuilt lives in memory (rate buckets,
//! the idempotency key window, the last frame of each connection, counters
//! between flushes). Timers run from the Durable Object alarm, which also
//! works while hibernating.
//!
//! Each event (a request, a frame, a close, the alarm) starts from one
//! [`Ctx`]: the room, the settings, its limits and the time. The work is
//! split by concern: `join` (WebSocket admission and resume), `frames`
//! (what clients send), `publish` (the one path every message takes),
//! `http` (the HTTP surface), `link` and `feed` (the bridge's outbox link),
//! `sweep` (the alarm), `lifecycle` (registration and retirement),
//! `counters` and `sockets`. A room too big for one object is also its
//! shards' sequencer (`shards`), and the same class serves as one of those
//! shards (`shard`, `shard_stream`, `forward`; docs/scaling.md).
//!
//! The router has already authenticated the request; it passes the room name
//! and the verified identity in internal headers.

mod counters;
mod dispatch;
mod feed;
mod forward;
mod frames;
mod http;
mod join;
mod lifecycle;
mod link;
mod publish;
mod shard;
mod shard_stream;
mod shards;
mod sockets;
mod sweep;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::config::Limits;
use roomcast_protocol::dedupe::Keys;
use roomcast_protocol::lifecycle::Reannounce;
use roomcast_protocol::rate::Limiter;
use roomcast_protocol::session::Timing;
use roomcast_protocol::shard::Fanout;
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketRequestResponsePair,
};

use crate::history::History;
use crate::reply;
use crate::settings::{self, Settings};
use crate::storage::Db;

use counters::Counters;
use feed::LinkCache;
use shard::ShardSide;

/// Header carrying the validated room name from the router.
pub const ROOM_HEADER: &str = "x-roomcast-room";
/// Header carrying the verified [`Identity`] from the router
/// ([`Identity::to_header`]).
pub const IDENTITY_HEADER: &str = "x-roomcast-identity";

/// Tag of client sockets (bridge links get their own).
const CLIENT_TAG: &str = "client";

#[durable_object]
pub struct Room {
    state: State,
    env: Env,
    history: OnceCell<History>,
    limiter: RefCell<Limiter>,
    /// The idempotency key window, seeded from history on first use.
    keys: RefCell<Option<Keys>>,
    /// When each connection (by `conn_id`) last sent a frame, exactly; the
    /// attachments hold it only to a quarter of the idle timeout.
    seen: RefCell<HashMap<String, u64>>,
    /// Open client sockets, counted once per wake and kept up to date.
    clients: Cell<Option<u64>>,
    counters: Counters,
    /// The bridge link as this wake knows it.
    link: RefCell<LinkCache>,
    /// The alarm as last read or set; `None` while unknown.
    alarm_at: Cell<Option<Option<u64>>>,
    /// The registry is to hear of this room after the current event: when
    /// it is not registered, or when its bridge link is gone and it has
    /// messages for the bridge (`announce` paces that).
    register: Cell<bool>,
    announce: Cell<Reannounce>,
    /// A message arrived: the alarm must come by then to consider retiring.
    retire_check: Cell<Option<u64>>,
    /// As a sequencer: the shards it feeds (docs/scaling.md).
    fanout: RefCell<Option<Fanout>>,
    /// As a shard: its room, stream and queue.
    shard: RefCell<Option<ShardSide>>,
}

/// What every event of a room starts from.
pub(super) struct Ctx {
    pub room: String,
    pub settings: Rc<Settings>,
    pub limits: Limits,
    pub now: u64,
}

impl Ctx {
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

impl DurableObject for Room {
    fn new(state: State, env: Env) -> Self {
        // A literal pair is always constructible; without it pings would
        // wake the room, which costs money but breaks nothing.
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        Room {
            state,
            env,
            history: OnceCell::new(),
            limiter: RefCell::new(Limiter::default()),
            keys: RefCell::new(None),
            seen: RefCell::new(HashMap::new()),
            clients: Cell::new(None),
            counters: Counters::default(),
            link: RefCell::new(LinkCache::Unknown),
            alarm_at: Cell::new(None),
            register: Cell::new(false),
            announce: Cell::new(Reannounce::default()),
            retire_check: Cell::new(None),
            fanout: RefCell::new(None),
            shard: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.after_event().await;
        result.or_else(|e| {
            console_error!("room {}: request failed: {e}", self.name_or_unknown());
            reply::error(ErrorCode::Internal, "the room failed to handle the request")
        })
    }

    async fn connect(&self, _socket: worker::Socket) -> Result<()> {
        Err(worker::Error::RustError(
            "rooms speak HTTP and WebSocket, not raw TCP".into(),
        ))
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let result = match self.named_ctx() {
            Ok(ctx) if self.is_link(&ws) => self.on_link_frame(&ws, message, &ctx),
            Ok(ctx) => self.on_frame(&ws, message, &ctx).await,
            Err(e) => Err(e),
        };
        self.after_event().await;
        if let Err(e) = result {
            console_error!("room {}: frame failed: {e}", self.name_or_unknown());
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some(CloseCode::Internal.reason()),
            );
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> Result<()> {
        self.gone(&ws);
        // Answer the client's close; codes it may not echo become a plain 1000.
        let echo = match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
            _ => CloseCode::Normal.code(),
        };
        let _ = ws.close(Some(echo), Some("closing"));
        self.after_event().await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_error!("room {}: websocket error: {error}", self.name_or_unknown());
        self.gone(&ws);
        self.after_event().await;
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm_at.set(Some(None));
        let result = self.sweep().await;
        self.after_event().await;
        if let Err(e) = &result {
            console_error!("room {}: sweep failed: {e}", self.name_or_unknown());
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

impl Room {
    fn history(&self) -> Result<&History> {
        if let Some(history) = self.history.get() {
            return Ok(history);
        }
        let history = History::open(
            Db::new(self.state.storage().sql()),
            &self.settings()?.config,
        )?;
        Ok(self.history.get_or_init(|| history))
    }

    fn settings(&self) -> Result<Rc<Settings>> {
        settings::load(&self.env).map_err(worker::Error::RustError)
    }

    fn ctx(&self, room: &str) -> Result<Ctx> {
        let settings = self.settings()?;
        let limits = settings.config.limits_for(room);
        Ok(Ctx {
            room: room.to_owned(),
            settings,
            limits,
            now: now_ms(),
        })
    }

    /// The context of an event that names no room (a frame, the alarm): the
    /// room's name is the one its first write stored, or a shard's room.
    fn named_ctx(&self) -> Result<Ctx> {
        let name = match self.history()?.name() {
            Some(name) => name,
            None => self
                .shard_of()
                .map(|(room, _)| room)
                .ok_or_else(|| worker::Error::RustError("room has no name yet".into()))?,
        };
        self.ctx(&name)
    }

    fn name_or_unknown(&self) -> String {
        self.history()
            .ok()
            .and_then(History::name)
            .unwrap_or_else(|| "<unnamed>".into())
    }

    /// Work that follows every event, outside its synchronous turn: the
    /// counters when a flush is due, the registry when it must hear of
    /// this room, and the room's shards (or, on a shard, its sequencer)
    /// when they have something coming.
    async fn after_event(&self) {
        let now = now_ms();
        if let Ok(history) = self.history() {
            self.counters.flush_if_due(history, now);
        }
        let due = [self.link_stats_due(now), self.retire_check.take()];
        if let Some(at) = due.into_iter().flatten().min() {
            if let Err(e) = self.alarm_no_later_than(at).await {
                console_error!("room {}: scheduling the alarm: {e}", self.name_or_unknown());
            }
        }
        if self.register.replace(false) {
            self.register_now().await;
        }
        if self.is_shard() {
            if let Ok(ctx) = self.named_ctx() {
                self.pump_forward(&ctx).await;
            }
        } else {
            self.feed_shards().await;
        }
    }
}
