//! The `Hub` Durable Object: holds multiplexed client sockets, each
//! subscribed to any number of rooms over one connection
//! (docs/protocol.md, "Several rooms on one connection"). The router
//! places a connection on hub `n` of a fixed pool ([`hub_index`]); the
//! hub is, for every room one of its sockets is subscribed to, what a
//! shard is for its room: an [`Outlet`] the room admits joins through,
//! feeds batches to and takes publishes from, addressed as
//! [`Holder::Hub`]. The per-room work is [`crate::outlet`]'s; what is the
//! hub's own is which socket is in which room:
//!
//! - [`connect`]: the router's upgrade becomes a socket with a session
//!   (one heartbeat, idle timeout and token expiry for all its rooms), the
//!   `connected` frame, and the token's server-side subscriptions;
//! - [`frames`]: a client's `subscribe`, `unsubscribe`, `publish`, `auth`;
//! - [`subscribe`]: joining a room (the room's join, then `subscribed`,
//!   replay and presence to that socket alone) and leaving it;
//! - [`refresh`]: a new token, and the rooms it no longer allows;
//! - [`index`]: the rooms and their sockets, in memory and in SQLite (a
//!   socket's attachment cannot hold 128 room names), rebuilt after a wake.
//!
//! A room whose stream the hub cannot fill (the room no longer stores what
//! it missed) closes its subscribers' connections (1011), as a shard
//! closes its clients: they resume every room with its `since`, and are
//! told of the gap there.
//!
//! [`hub_index`]: roomcast_protocol::mux::hub_index

mod connect;
mod frames;
mod index;
mod refresh;
mod subscribe;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::mux::hub_name;
use roomcast_protocol::presence::News;
use roomcast_protocol::rate::Limiter;
use roomcast_protocol::session::Session;
use roomcast_protocol::stats::RoomStats;
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{
    console_error, Env, Method, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage, WebSocketRequestResponsePair,
};

use crate::alarm::Alarm;
use crate::clients::{Clients, Ended};
use crate::context::{Ctx, WakeCtx};
use crate::counters::Counters;
use crate::event::{self, Handlers};
use crate::headers::{CONN_HEADER, HUB_HEADER, IDENTITY_HEADER, OP_HEADER, ROOM_HEADER};
use crate::internal::{Holder, Op};
use crate::outlet::{forward, stream, Outlet, Subscription};
use crate::reply;
use crate::sends::{self, Frames};
use crate::storage::Db;

use index::Index;

/// Tag naming the hub a socket is on: `hub:<n>`, read after a wake.
const HUB_TAG: &str = "hub:";

event::durable_object_class!(HubObject, Hub, Hub);

/// A hub's object (its class is [`HubObject`]).
pub struct Hub {
    env: Env,
    counters: Rc<Counters>,
    clients: Clients,
    alarm: Alarm,
    /// The subjects' budgets for token refreshes; each room draws
    /// publishes from its own.
    limiter: RefCell<Limiter>,
    /// The subjects' budgets for subscribing: a token per room joined, a
    /// whole connection's rooms at once ([`Hub::charge`]).
    subscriptions: RefCell<Limiter>,
    /// This hub's number, from the requests that reach it or its sockets'
    /// tags.
    number: Cell<Option<u32>>,
    index: Index,
    /// The context of the hub's own events (frames, the alarm): the limits
    /// of a room named like the hub, the defaults unless a policy matches
    /// every room.
    wake: WakeCtx,
}

impl Handlers for Hub {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let counters = Rc::new(Counters::default());
        Hub {
            clients: Clients::new(&state, counters.clone()),
            alarm: Alarm::new(state.storage()),
            index: Index::new(Db::new(state.storage().sql())),
            env,
            counters,
            limiter: RefCell::new(Limiter::default()),
            subscriptions: RefCell::new(Limiter::default()),
            number: Cell::new(None),
            wake: WakeCtx::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.after_event().await;
        result.or_else(|e| {
            console_error!("hub {}: request failed: {e}", self.label());
            reply::error(ErrorCode::Internal, "the hub failed to handle the request")
        })
    }

    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage) {
        let result = self.on_frame(&ws, message).await;
        self.after_event().await;
        if let Err(e) = result {
            console_error!("hub {}: frame failed: {e}", self.label());
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some(CloseCode::Internal.reason()),
            );
        }
    }

    async fn close(&self, ws: WebSocket, code: usize) {
        self.index_before_an_end();
        self.clients
            .gone(&ws, code == crate::clients::ABNORMAL_CLOSURE);
        let _ = ws.close(Some(crate::clients::echo(code)), Some("closing"));
        self.after_event().await;
    }

    async fn error(&self, ws: WebSocket, error: worker::Error) {
        console_error!("hub {}: websocket error: {error}", self.label());
        self.index_before_an_end();
        self.clients.gone(&ws, true);
        self.after_event().await;
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.fired();
        let result = self.sweep().await;
        self.after_event().await;
        if let Err(e) = &result {
            console_error!("hub {}: sweep failed: {e}", self.label());
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

impl Hub {
    /// A request from the router (a connection) or from a room.
    async fn serve(&self, req: Request) -> Result<Response> {
        let headers = req.headers();
        let Some(number) = headers.get(HUB_HEADER)?.and_then(|s| s.parse().ok()) else {
            return reply::error(ErrorCode::BadRequest, "a hub's request names its hub");
        };
        self.number.set(Some(number));
        let op = headers.get(OP_HEADER)?.as_deref().and_then(Op::parse);
        let Some(room) = headers.get(ROOM_HEADER)? else {
            let identity = headers
                .get(IDENTITY_HEADER)?
                .as_deref()
                .and_then(Identity::from_header);
            let conn_id = headers.get(CONN_HEADER)?;
            return match (op, identity, conn_id) {
                (None, Some(identity), Some(conn_id))
                    if req.method() == Method::Get && req.path().ends_with("/ws") =>
                {
                    self.connect(&req, identity, conn_id).await
                }
                (None, None, _) => reply::error(ErrorCode::Unauthorized, "no identity"),
                _ => reply::error(ErrorCode::NotFound, "no such hub operation"),
            };
        };
        self.ensure_index()?;
        self.index.serve(&room, Holder::Hub(number));
        let ctx = Ctx::of(&self.env, &room)?;
        match op {
            Some(Op::Deliver) => stream::deliver(self, req, &ctx).await,
            Some(Op::Count) => stream::report(self, &room, true),
            Some(Op::Presence) => self.tell(req, &ctx).await,
            _ => reply::error(ErrorCode::NotFound, "no such hub operation"),
        }
    }

    /// Rooms hear of the connections that ended with the next request to
    /// them, and everything queued for a room goes to it; rooms left with
    /// nothing to do here are forgotten.
    async fn after_event(&self) {
        for Ended { session, dropped } in self.clients.take_ended() {
            if let Err(e) = self.index.close(&session.conn_id, dropped) {
                console_error!("hub {}: forgetting a connection: {e}", self.label());
            }
        }
        let pumps = self.index.busy().into_iter().filter_map(|room| {
            let ctx = Ctx::of(&self.env, &room).ok()?;
            Some(async move { forward::pump(self, &ctx).await })
        });
        futures_util::future::join_all(pumps).await;
        self.index.prune();
    }

    /// Closes idle and expired connections and sets the alarm for the
    /// next deadline.
    async fn sweep(&self) -> Result<()> {
        let Some(ctx) = self.ctx()? else {
            return self.alarm.set(None).await;
        };
        self.ensure_index()?;
        let next = self.clients.sweep(&ctx)?;
        self.alarm.set(next).await
    }

    /// What a presence flush of a room tells its subscribers here: members'
    /// news to those who may see that room's members, counts to all.
    async fn tell(&self, mut req: Request, ctx: &Ctx) -> Result<Response> {
        let news: News = serde_json::from_str(&req.text().await?)?;
        let mut frames = Frames::default();
        for frame in news.state.iter().chain(&news.diff) {
            frames.push(frame);
        }
        let subscribers = self.subscribers(&ctx.room);
        if !frames.is_empty() {
            let shown = subscribers
                .iter()
                .filter(|(_, s)| s.rights.can_see_presence(&ctx.room))
                .map(|(ws, _)| ws);
            sends::broadcast_to(shown, &frames);
        }
        if let Some(occupancy) = &news.occupancy {
            sends::broadcast_to(subscribers.iter().map(|(ws, _)| ws), occupancy);
        }
        stream::report(self, &ctx.room, false)
    }

    /// This hub's number, known from a request or, after a wake, from its
    /// sockets' tags; `None` while it holds none.
    fn number(&self) -> Option<u32> {
        if let Some(n) = self.number.get() {
            return Some(n);
        }
        let n = self
            .clients
            .find_tag(|t| t.strip_prefix(HUB_TAG)?.parse().ok())?;
        self.number.set(Some(n));
        Some(n)
    }

    /// The context of the hub's own events; `None` while its number is
    /// unknown (it holds no sockets).
    fn ctx(&self) -> Result<Option<Ctx>> {
        self.number()
            .map(|n| self.wake.of(&self.env, &hub_name(n)))
            .transpose()
    }

    /// The rooms and their sockets, rebuilt from storage on the first
    /// event of a wake that needs them.
    fn ensure_index(&self) -> Result<()> {
        match self.number() {
            Some(n) => self
                .index
                .load(&self.clients, Holder::Hub(n), self.max_rooms()?),
            // No request and no socket yet: nothing to rebuild.
            None => Ok(()),
        }
    }

    /// A connection is about to end, maybe as the first event of a wake:
    /// the index must know its rooms first, for them to hear of it.
    fn index_before_an_end(&self) {
        if let Err(e) = self.ensure_index() {
            console_error!("hub {}: rebuilding the index: {e}", self.label());
        }
    }

    fn max_rooms(&self) -> Result<usize> {
        let settings = crate::settings::load(&self.env).map_err(worker::Error::RustError)?;
        Ok(settings.config.max_rooms_per_connection)
    }

    fn label(&self) -> String {
        self.number()
            .map_or_else(|| "<unknown>".into(), |n| n.to_string())
    }
}

/// A hub's subscribers of a room are the sockets its index lists there.
impl Outlet for Hub {
    fn env(&self) -> &Env {
        &self.env
    }

    fn clients(&self) -> &Clients {
        &self.clients
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn with_subscription<T>(
        &self,
        room: &str,
        f: impl FnOnce(&mut Subscription) -> T,
    ) -> Option<T> {
        self.index.with_subscription(room, f)
    }

    fn serves(&self, room: &str) -> bool {
        !self.index.sockets(room).is_empty()
    }

    fn broadcast(&self, room: &str, frames: &str) {
        let delivered = sends::broadcast_to(&self.index.sockets(room), frames);
        self.delivered(room, delivered);
    }

    fn delivered(&self, room: &str, n: u64) {
        self.index.delivered(room, n);
    }

    fn subscribers(&self, room: &str) -> Vec<(WebSocket, Session)> {
        self.index
            .sockets(room)
            .into_iter()
            .filter_map(|ws| {
                let session = self.clients.session(&ws).ok().flatten()?;
                Some((ws, session))
            })
            .collect()
    }

    fn take_stats(&self, room: &str) -> RoomStats {
        // The hub's own counters (frames refused, connections closed) go
        // to whichever room asks first: each is counted once.
        let mut stats = self.counters.take();
        stats.deliveries_total += self.index.take_deliveries(room);
        stats
    }

    fn frame_room<'a>(&self, room: &'a str) -> Option<&'a str> {
        Some(room)
    }
}
