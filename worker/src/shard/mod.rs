//! The `Shard` Durable Object (docs/internals.md, "Sharding"): an object that holds client
//! sockets of a room its own object has no room for, named after the room
//! and an index ([`shard_name`]). Clients see no difference: the shard runs
//! their sessions with the room's own code ([`crate::clients`]), and the
//! room, the sequencer, decides everything about messages.
//!
//! What a shard does for its room (a join, the stream of messages, the
//! publishes) is what every [`Outlet`] does, in [`crate::outlet`]; a shard
//! is the outlet whose sockets are all in one room, so that room's
//! subscribers are all its client sockets ([`join`] takes them in).
//!
//! A shard stores nothing: it knows its room and index from the requests
//! that reach it, and after a wake from its sockets' tags. What it keeps of
//! its room is a [`Subscription`], apart from what it keeps per object (the
//! sockets, the alarm, the counters).
//!
//! [`shard_name`]: roomcast_protocol::shard::shard_name

mod join;

use std::cell::RefCell;
use std::rc::Rc;

use roomcast_protocol::auth::Identity;
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
use crate::clients::frames::Step;
use crate::clients::{Clients, Ended, CLIENT_TAG};
use crate::context::{Ctx, WakeCtx};
use crate::counters::Counters;
use crate::event::{self, Handlers};
use crate::headers::{IDENTITY_HEADER, OP_HEADER, ROOM_HEADER, SHARD_HEADER};
use crate::internal::{Holder, Op};
use crate::outlet::{forward, stream, Outlet, Subscription};
use crate::reply;

/// Tag prefix naming a shard socket's room and shard: `shard:<index>:<room>`.
const SHARD_TAG: &str = "shard:";

event::durable_object_class!(ShardObject, Shard, Shard);

/// A shard's object (its class is [`ShardObject`]).
pub struct Shard {
    env: Env,
    counters: Rc<Counters>,
    clients: Clients,
    alarm: Alarm,
    /// Rate budgets here cover token refreshes only: the room draws every
    /// publish from its own.
    limiter: RefCell<Limiter>,
    subscription: RefCell<Option<Subscription>>,
    /// The room, settings and limits this wake serves.
    wake: WakeCtx,
}

impl Handlers for Shard {
    fn new(state: State, env: Env) -> Self {
        // As on the room: pings answered without waking the shard.
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let counters = Rc::new(Counters::default());
        Shard {
            clients: Clients::new(&state, counters.clone()),
            alarm: Alarm::new(state.storage()),
            env,
            counters,
            limiter: RefCell::new(Limiter::default()),
            subscription: RefCell::new(None),
            wake: WakeCtx::default(),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.after_event().await;
        result.or_else(|e| {
            console_error!("shard of {}: request failed: {e}", self.room_or_unknown());
            reply::error(
                ErrorCode::Internal,
                "the shard failed to handle the request",
            )
        })
    }

    async fn message(&self, ws: WebSocket, message: WebSocketIncomingMessage) {
        let result = self.on_frame(&ws, message).await;
        self.after_event().await;
        if let Err(e) = result {
            console_error!("shard of {}: frame failed: {e}", self.room_or_unknown());
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some(CloseCode::Internal.reason()),
            );
        }
    }

    async fn close(&self, ws: WebSocket, code: usize) {
        self.clients
            .gone(&ws, code == crate::clients::ABNORMAL_CLOSURE);
        let _ = ws.close(Some(crate::clients::echo(code)), Some("closing"));
        self.after_event().await;
    }

    async fn error(&self, ws: WebSocket, error: worker::Error) {
        console_error!(
            "shard of {}: websocket error: {error}",
            self.room_or_unknown()
        );
        self.clients.gone(&ws, true);
        self.after_event().await;
    }

    async fn alarm(&self) -> Result<Response> {
        self.alarm.fired();
        let result = self.sweep().await;
        self.after_event().await;
        if let Err(e) = &result {
            console_error!("shard of {}: sweep failed: {e}", self.room_or_unknown());
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

impl Shard {
    /// A request from the router (a client's join) or from the room.
    async fn serve(&self, req: Request) -> Result<Response> {
        let headers = req.headers();
        let room = headers
            .get(ROOM_HEADER)?
            .ok_or_else(|| worker::Error::RustError("request without room header".into()))?;
        let Some(index) = headers.get(SHARD_HEADER)?.and_then(|s| s.parse().ok()) else {
            return reply::error(ErrorCode::BadRequest, "a shard's request names its shard");
        };
        let op = headers.get(OP_HEADER)?.as_deref().and_then(Op::parse);
        let identity = headers
            .get(IDENTITY_HEADER)?
            .as_deref()
            .and_then(Identity::from_header);
        self.serve_room(&room, index);
        let ctx = self.wake.of(&self.env, &room)?;
        match (op, identity) {
            (Some(Op::Deliver), _) => stream::deliver(self, req, &ctx).await,
            (Some(Op::Count), _) => stream::report(self, &ctx.room, true),
            (Some(Op::Presence), _) => self.tell(req, &ctx).await,
            (None, Some(identity))
                if req.method() == Method::Get && req.path().ends_with("/ws") =>
            {
                self.join(&req, &ctx, identity, index).await
            }
            (None, None) => reply::error(ErrorCode::Unauthorized, "no identity"),
            _ => reply::error(ErrorCode::NotFound, "no such shard operation"),
        }
    }

    /// A client's frame.
    async fn on_frame(&self, ws: &WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let Some(ctx) = self.ctx()? else {
            return Ok(());
        };
        let Some(mut session) = self.clients.session(ws)? else {
            return Ok(());
        };
        let seen_stale = self.clients.heard(&mut session, &ctx);
        let read = self
            .clients
            .read(ws, message, &mut session, &ctx, &self.limiter, &self.alarm)
            .await?;
        let outcome = match read {
            Step::Done(outcome) => outcome,
            Step::Publish { draft, reference } => {
                // The room answers, and its answer strikes or forgives as
                // the room's own object would (see `forward`).
                forward::publish(self, ws, &session, &ctx, draft, reference).await;
                return Ok(());
            }
        };
        self.clients
            .settle(ws, &mut session, outcome, ctx.now, seen_stale)
    }

    /// Closes idle and expired connections and sets the alarm for the
    /// next deadline.
    async fn sweep(&self) -> Result<()> {
        let Some(ctx) = self.ctx()? else {
            return self.alarm.set(None).await;
        };
        let next = self.clients.sweep(&ctx)?;
        self.alarm.set(next).await
    }

    /// Work that follows every event, outside its synchronous turn: the
    /// publishes and ended connections the room has not heard of.
    async fn after_event(&self) {
        let ended = self.clients.take_ended();
        if let Some(room) = self.room() {
            self.with_subscription(&room, |s| {
                for Ended { session, dropped } in ended {
                    if dropped {
                        s.dropped.push(session.conn_id.clone());
                    }
                    s.leaves.push(session.conn_id);
                }
            });
        }
        if let Ok(Some(ctx)) = self.ctx() {
            forward::pump(self, &ctx).await;
        }
    }

    /// What a presence flush of the room tells this shard's clients.
    async fn tell(&self, mut req: Request, ctx: &Ctx) -> Result<Response> {
        let news: News = serde_json::from_str(&req.text().await?)?;
        self.clients.tell(&ctx.room, &news);
        stream::report(self, &ctx.room, false)
    }

    /// Serves `room` as shard `index` from now on.
    fn serve_room(&self, room: &str, index: u32) {
        let mut subscription = self.subscription.borrow_mut();
        if subscription.is_none() {
            *subscription = Some(Subscription::new(room, Holder::Shard(index)));
        }
    }

    /// The room this object serves, known from the requests that reach it
    /// or, after a wake, from its sockets' tags; `None` while it holds none.
    fn room(&self) -> Option<String> {
        if let Some(s) = self.subscription.borrow().as_ref() {
            return Some(s.room.clone());
        }
        let (index, room) = self.clients.find_tag(parse_tag)?;
        self.serve_room(&room, index);
        Some(room)
    }

    /// The context of an event that names no room (a frame, the alarm).
    fn ctx(&self) -> Result<Option<Ctx>> {
        self.room()
            .map(|room| self.wake.of(&self.env, &room))
            .transpose()
    }

    fn room_or_unknown(&self) -> String {
        self.room().unwrap_or_else(|| "<unknown>".into())
    }
}

/// A shard's subscribers are all its client sockets, in its one room.
impl Outlet for Shard {
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
        self.subscription
            .borrow_mut()
            .as_mut()
            .filter(|s| s.room == room)
            .map(f)
    }

    fn serves(&self, _room: &str) -> bool {
        self.clients.count() > 0
    }

    fn broadcast(&self, _room: &str, frames: &str) {
        self.clients.broadcast(frames, None);
    }

    fn delivered(&self, _room: &str, n: u64) {
        self.counters.with(|s| s.deliveries_total += n);
    }

    fn subscribers(&self, _room: &str) -> Vec<(WebSocket, Session)> {
        self.clients.open(CLIENT_TAG)
    }

    fn take_stats(&self, _room: &str) -> RoomStats {
        self.counters.take()
    }

    fn frame_room<'a>(&self, _room: &'a str) -> Option<&'a str> {
        None
    }
}

/// The shard and room a socket's tag names.
fn parse_tag(tag: &str) -> Option<(u32, String)> {
    let (index, room) = tag.strip_prefix(SHARD_TAG)?.split_once(':')?;
    Some((index.parse().ok()?, room.to_owned()))
}
