//! The `Room` Durable Object: one per room name, the single writer of its
//! sequence and history, and the owner of its bridge link and of the client
//! sockets it has room for; clients past `ROOM_SHARD_SIZE` go to its shards
//! ([`crate::shard`]), which it feeds, as it feeds the hubs holding
//! multiplexed connections subscribed to it.
//!
//! It uses the WebSocket Hibernation API, so an idle room is evicted from
//! memory while its clients stay connected: what must survive lives in
//! socket attachments (the sessions, the bridge link's state) and in
//! SQLite ([`Store`]); what may be rebuilt lives in memory (rate buckets,
//! the idempotency key window, the last frame of each connection, counters
//! between flushes). Timers run from the Durable Object alarm, which also
//! works while hibernating.
//!
//! Each event (a request, a frame, a close, the alarm) starts from one
//! [`Ctx`]. The work is split by concern: `dispatch` (what a request asks),
//! `join` (WebSocket admission and resume), `publish` (the one path every
//! message takes, from a client's frame, an HTTP post or the bridge), `http` (the HTTP
//! surface), `link` (the bridge's outbox link and its feed), `fanout` and
//! `shard_requests` (the room's shards and hubs), `sweep` (the alarm), `lifecycle` (registration and
//! retirement) and `stats`. The sockets themselves are [`Clients`], shared
//! with the shards.
//!
//! The router has already authenticated the request; it passes the room name
//! and the verified identity in internal headers ([`crate::headers`]).

mod dispatch;
mod fanout;
mod holders;
mod http;
mod idempotency;
mod join;
mod lifecycle;
mod link;
mod link_upgrade;
mod presence;
mod publish;
mod shard_requests;
mod stats;
mod sweep;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::lifecycle::Reannounce;
use roomcast_protocol::presence::Presence;
use roomcast_protocol::rate::Limiter;
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{
    console_error, Env, Request, Response, Result, State, WebSocket, WebSocketIncomingMessage,
    WebSocketRequestResponsePair,
};

use crate::alarm::Alarm;
use crate::clients::frames::Step;
use crate::clients::{self, Clients};
use crate::context::{Ctx, WakeCtx};
use crate::counters::Counters;
use crate::event::{self, Handlers};
use crate::reply;
use crate::settings;
use crate::storage::Db;
use crate::store::Store;

use fanout::{HolderFanout, Kind};
use idempotency::Idempotency;
use link::BridgeLink;

/// The room's own object (its class is [`RoomObject`]).
pub struct Room {
    state: State,
    env: Env,
    store: OnceCell<Store>,
    counters: Rc<Counters>,
    clients: Clients,
    alarm: Alarm,
    limiter: RefCell<Limiter>,
    idempotency: Idempotency,
    link: BridgeLink,
    /// The registry is to hear of this room after the current event: when
    /// it is not registered, or when its bridge link is gone and it has
    /// messages for the bridge (`announce` paces that).
    register: Cell<bool>,
    announce: Cell<Reannounce>,
    /// A message arrived: the alarm must come by then to consider retiring.
    retire_check: Cell<Option<u64>>,
    /// The shards it feeds.
    shards: HolderFanout,
    /// The hubs it feeds.
    hubs: HolderFanout,
    /// The room, settings and limits this wake serves.
    wake: WakeCtx,
    /// Who is connected, once built this wake (see [`presence`]).
    presence: RefCell<Option<Presence>>,
}

event::durable_object_class!(RoomObject, Room, Room);

impl Handlers for Room {
    fn new(state: State, env: Env) -> Self {
        // A literal pair is always constructible; without it pings would
        // wake the room, which costs money but breaks nothing.
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let counters = Rc::new(Counters::default());
        Room {
            clients: Clients::new(&state, counters.clone()),
            alarm: Alarm::new(state.storage()),
            link: BridgeLink::new(&state, counters.clone()),
            shards: HolderFanout::new(Kind::Shards, &env, counters.clone()),
            hubs: HolderFanout::new(Kind::Hubs, &env, counters.clone()),
            state,
            env,
            store: OnceCell::new(),
            counters,
            limiter: RefCell::new(Limiter::default()),
            idempotency: Idempotency::default(),
            register: Cell::new(false),
            announce: Cell::new(Reannounce::default()),
            retire_check: Cell::new(None),
            wake: WakeCtx::default(),
            presence: RefCell::new(None),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.after_event(now_ms()).await;
        result.or_else(|e| {
            console_error!("room {}: request failed: {e}", self.name_or_unknown());
            reply::error(ErrorCode::Internal, "the room failed to handle the request")
        })
    }

    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage) {
        let (result, now) = match self.named_ctx() {
            Ok(ctx) if self.link.is_link(&ws) => (
                self.store()
                    .and_then(|store| self.link.on_frame(&ws, message, store, &ctx)),
                ctx.now,
            ),
            Ok(ctx) => (self.on_frame(&ws, message, &ctx).await, ctx.now),
            Err(e) => (Err(e), now_ms()),
        };
        self.after_event(now).await;
        if let Err(e) = result {
            console_error!("room {}: frame failed: {e}", self.name_or_unknown());
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some(CloseCode::Internal.reason()),
            );
        }
    }

    async fn close(&self, ws: WebSocket, code: usize) {
        self.gone(&ws, code == clients::ABNORMAL_CLOSURE);
        let _ = ws.close(Some(clients::echo(code)), Some("closing"));
        self.after_event(now_ms()).await;
    }

    async fn error(&self, ws: WebSocket, error: worker::Error) {
        console_error!("room {}: websocket error: {error}", self.name_or_unknown());
        self.gone(&ws, true);
        self.after_event(now_ms()).await;
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.fired();
        let result = self.sweep().await;
        self.after_event(now_ms()).await;
        if let Err(e) = &result {
            console_error!("room {}: sweep failed: {e}", self.name_or_unknown());
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

impl Room {
    fn store(&self) -> Result<&Store> {
        if let Some(store) = self.store.get() {
            return Ok(store);
        }
        let store = Store::open(
            Db::new(self.state.storage().sql()),
            &settings::load(&self.env)
                .map_err(worker::Error::RustError)?
                .config,
        )?;
        Ok(self.store.get_or_init(|| store))
    }

    /// The context of an event that names no room (a frame, the alarm):
    /// the room's name is the one its first write stored.
    fn named_ctx(&self) -> Result<Ctx> {
        if let Some(ctx) = self.wake.now() {
            return Ok(ctx);
        }
        let name = self
            .store()?
            .facts()
            .name()
            .ok_or_else(|| worker::Error::RustError("room has no name yet".into()))?;
        self.wake.of(&self.env, &name)
    }

    fn name_or_unknown(&self) -> String {
        self.store()
            .ok()
            .and_then(|store| store.facts().name())
            .unwrap_or_else(|| "<unnamed>".into())
    }

    /// Work that follows every event, outside its synchronous turn: the
    /// counters when a flush is due, the registry when it must hear of
    /// this room, and the room's shards and hubs when they have something
    /// coming.
    /// `now` is the event's time: what is due after it need not be timed
    /// closer than the event itself.
    async fn after_event(&self, now: u64) {
        if let Ok(store) = self.store() {
            self.counters.flush_if_due(store, now);
        }
        let link_stats = self.store().ok().and_then(|h| self.link.stats_due(h, now));
        // The event's time: a flush needs no clock read of its own.
        let ctx = self.wake.at(now).map_or_else(|| self.named_ctx(), Ok);
        let presence = match ctx {
            Ok(ctx) => self.flush_presence(&ctx).await,
            Err(_) => None,
        };
        let due = [link_stats, self.retire_check.take(), presence];
        if let Some(at) = due.into_iter().flatten().min() {
            if let Err(e) = self.alarm.no_later_than(at).await {
                console_error!("room {}: scheduling the alarm: {e}", self.name_or_unknown());
            }
        }
        if self.register.replace(false) {
            self.register_now().await;
        }
        if let Ok(store) = self.store() {
            self.fan_out(store).await;
        }
    }
}

impl Room {
    /// A client's frame: read by [`Clients`] the same way as on a shard;
    /// a `publish` takes the one path every message takes ([`publish`]).
    async fn on_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        ctx: &Ctx,
    ) -> Result<()> {
        let Some(mut session) = self.clients.session(ws)? else {
            return Ok(());
        };
        let seen_stale = self.clients.heard(&mut session, ctx);
        let read = self
            .clients
            .read(ws, message, &mut session, ctx, &self.limiter, &self.alarm)
            .await?;
        let outcome = match read {
            Step::Done(outcome) => outcome,
            Step::Publish { draft, reference } => {
                self.publish_frame(ws, &mut session, ctx, draft, reference)?
            }
        };
        self.clients
            .settle(ws, &mut session, outcome, ctx.now, seen_stale)
    }

    /// A socket the other side closed or (`dropped`) lost.
    fn gone(&self, ws: &WebSocket, dropped: bool) {
        if self.link.is_link(ws) {
            self.link_lost(ws);
        } else {
            self.clients.gone(ws, dropped);
        }
    }
}
