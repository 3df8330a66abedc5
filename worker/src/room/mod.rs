//! The `Room` Durable Object: one per room name, the single writer of its
//! sequence and history, and the owner of its WebSockets.
//!
//! It uses the WebSocket Hibernation API, so an idle room is evicted from
//! memory while its clients stay connected; per-connection state therefore
//! lives in socket attachments ([`Session`]) and per-room state in SQLite
//! ([`History`]). Timers (idle and token-expiry closes, the expiry notice)
//! run from the Durable Object alarm, which also works while hibernating.
//!
//! The router has already authenticated the request; it passes the room name
//! and the verified identity in internal headers.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::config::Limits;
use roomcast_protocol::history::{parse_u64, plan_resume, Page};
use roomcast_protocol::ids;
use roomcast_protocol::rate::{self, Admission, RoomBudget};
use roomcast_protocol::stats::{RoomStats, StatsReport};
use roomcast_protocol::trace;
use roomcast_protocol::wire::{
    parse_client_frame, parse_publish_body, ClientFrame, Draft, HistoryPage, Message, Origin,
    RateInfo, Receipt, Registration, Rejection, ServerFrame, Welcome,
};
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{
    console_error, durable_object, DurableObject, Env, Method, Request, Response, Result, State,
    WebSocket, WebSocketIncomingMessage, WebSocketPair, WebSocketRequestResponsePair,
};

mod link;

use crate::alarm;
use crate::attachment::Attachment;
use crate::hibernation::last_auto_response_ms;
use crate::history::{Appended, History};
use crate::registry;
use crate::reply;
use crate::session::Session;
use crate::settings::{self, Settings};

/// Header carrying the validated room name from the router.
pub const ROOM_HEADER: &str = "x-roomcast-room";
/// Header carrying the verified [`Identity`] (JSON) from the router.
pub const IDENTITY_HEADER: &str = "x-roomcast-identity";

/// Tag of client sockets (bridge links get their own).
const CLIENT_TAG: &str = "client";
/// Messages read from SQLite per step of a replay.
const REPLAY_CHUNK: u64 = 500;
/// Age trimming runs at most this often on the publish path.
const AGE_TRIM_INTERVAL_MS: u64 = 60_000;
/// How soon a failed registration is retried.
const ANNOUNCE_RETRY_MS: u64 = 5_000;

#[durable_object]
pub struct Room {
    state: State,
    env: Env,
    history: OnceCell<History>,
    name: RefCell<Option<String>>,
    budget: RefCell<RoomBudget>,
    stats: RefCell<Option<RoomStats>>,
    stats_dirty: Cell<bool>,
    last_age_trim_ms: Cell<u64>,
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
            name: RefCell::new(None),
            budget: RefCell::new(RoomBudget::default()),
            stats: RefCell::new(None),
            stats_dirty: Cell::new(false),
            last_age_trim_ms: Cell::new(0),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.flush_stats();
        self.flush_announce().await;
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
        let result = if self.is_link(&ws) {
            self.on_link_frame(&ws, message)
        } else {
            self.on_frame(&ws, message).await
        };
        self.flush_stats();
        self.flush_announce().await;
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
        self.account_closed(&ws);
        // Answer the client's close; codes it may not echo become a plain 1000.
        let echo = match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
            _ => CloseCode::Normal.code(),
        };
        let _ = ws.close(Some(echo), Some("closing"));
        self.flush_stats();
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_error!("room {}: websocket error: {error}", self.name_or_unknown());
        self.account_closed(&ws);
        self.flush_stats();
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        let result = self.sweep().await;
        self.flush_stats();
        self.flush_announce().await;
        if let Err(e) = &result {
            console_error!("room {}: sweep failed: {e}", self.name_or_unknown());
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

/// What a handled frame asks of the connection.
type Verdict = Result<Option<CloseCode>>;

impl Room {
    fn history(&self) -> Result<&History> {
        if let Some(history) = self.history.get() {
            return Ok(history);
        }
        let history = History::open(self.state.storage().sql())?;
        Ok(self.history.get_or_init(|| history))
    }

    fn settings(&self) -> Result<Rc<Settings>> {
        settings::load(&self.env).map_err(worker::Error::RustError)
    }

    /// The room's name, remembered from the first request that reached it.
    fn name(&self) -> Result<String> {
        if let Some(name) = self.name.borrow().clone() {
            return Ok(name);
        }
        let name = self
            .history()?
            .meta("room")?
            .ok_or_else(|| worker::Error::RustError("room has no name yet".into()))?;
        *self.name.borrow_mut() = Some(name.clone());
        Ok(name)
    }

    fn name_or_unknown(&self) -> String {
        self.name().unwrap_or_else(|_| "<unnamed>".into())
    }

    fn remember_name(&self, name: &str) -> Result<()> {
        if self.name.borrow().as_deref() != Some(name) {
            if self.history()?.meta("room")?.as_deref() != Some(name) {
                self.history()?.set_meta("room", name)?;
            }
            *self.name.borrow_mut() = Some(name.to_owned());
        }
        Ok(())
    }

    async fn serve(&self, req: Request) -> Result<Response> {
        let room = req
            .headers()
            .get(ROOM_HEADER)?
            .ok_or_else(|| worker::Error::RustError("request without room header".into()))?;
        self.remember_name(&room)?;
        let identity: Identity = match req.headers().get(IDENTITY_HEADER)? {
            Some(json) => serde_json::from_str(&json)?,
            None => return reply::error(ErrorCode::Unauthorized, "no identity"),
        };
        let settings = self.settings()?;
        let limits = settings.config.limits_for(&room);
        let url = req.url()?;
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let op = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or_default()
            .to_owned();
        match (op.as_str(), req.method()) {
            ("ws", Method::Get) => self.join(&req, &room, identity, &query, &limits).await,
            ("messages", Method::Post) => self.publish_http(req, &room, &identity, &limits).await,
            ("messages", Method::Get) => self.read_history(&room, &query, &limits),
            ("bridge", Method::Get) => self.link(&room, identity, &query, &limits).await,
            ("stats", Method::Get) => self.report_stats(&room),
            _ => reply::error(ErrorCode::NotFound, "no such room operation"),
        }
    }

    async fn join(
        &self,
        req: &Request,
        room: &str,
        identity: Identity,
        query: &HashMap<String, String>,
        limits: &Limits,
    ) -> Result<Response> {
        let since = match query.get("since") {
            None => None,
            Some(s) => match parse_u64("since", Some(s), 0) {
                Ok(v) => Some(v),
                Err(message) => return reply::error(ErrorCode::BadRequest, &message),
            },
        };
        let history = self.history()?;
        let epoch = history.epoch();
        let resume = plan_resume(
            since,
            query.get("epoch").map(String::as_str),
            &epoch,
            history.retained()?,
        );
        let now = now_ms();
        let exp = identity.exp;
        let session = Session::new(ids::conn_id(), identity, limits.rate_burst, now);

        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[CLIENT_TAG]);
        session.save(&pair.server)?;
        let welcome = Welcome {
            room: room.to_owned(),
            conn_id: session.conn_id.clone(),
            epoch,
            head: history.head(),
            recovered: resume.recovered,
            heartbeat_ms: limits.heartbeat_ms,
            max_message_bytes: limits.max_message_bytes,
            rate: RateInfo {
                per_sec: limits.rate_per_sec,
                burst: limits.rate_burst,
            },
            exp,
            cursor: None,
        };
        pair.server
            .send_with_str(ServerFrame::Welcome(Cow::Borrowed(&welcome)).to_json())?;
        // Replay runs in this same turn, so no live message can slip in between.
        if let Some(after) = resume.replay_after {
            self.replay(&pair.server, room, after, welcome.head, false)?;
        }
        if since.is_some() {
            self.with_stats(|s| s.reconnects_total += 1);
        }
        let settings = self.settings()?;
        self.schedule_sweep(self.next_deadline(&session, None, &settings, limits))
            .await?;

        let response = Response::from_websocket(pair.client)?;
        match chosen_subprotocol(req)? {
            Some(protocol) => {
                let headers = worker::Headers::new();
                headers.set("sec-websocket-protocol", &protocol)?;
                Ok(response.with_headers(headers))
            }
            None => Ok(response),
        }
    }

    /// Sends every stored message after `after` (only those bridged to Kafka
    /// when `relay_only`) in order, in this turn.
    fn replay(
        &self,
        ws: &WebSocket,
        room: &str,
        after: u64,
        head: u64,
        relay_only: bool,
    ) -> Result<()> {
        let history = self.history()?;
        let mut from = after;
        while from < head {
            let page = history.after(room, from, REPLAY_CHUNK, relay_only)?;
            let Some(last) = page.last() else { break };
            from = last.seq;
            for message in &page {
                ws.send_with_str(ServerFrame::Message(Cow::Borrowed(message)).to_json())?;
            }
            self.with_stats(|s| s.deliveries_total += page.len() as u64);
        }
        Ok(())
    }

    async fn on_frame(&self, ws: &WebSocket, message: WebSocketIncomingMessage) -> Result<()> {
        let Some(mut session) = Session::load(ws)? else {
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some("connection state lost"),
            );
            return Ok(());
        };
        if session.closed {
            return Ok(());
        }
        let now = now_ms();
        session.last_seen_ms = now;
        let room = self.name()?;
        let settings = self.settings()?;
        let limits = settings.config.limits_for(&room);
        let verdict = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                // Only reached when the auto-response is not installed.
                ws.send_with_str("pong").map(|_| None)
            }
            WebSocketIncomingMessage::String(text) => {
                match parse_client_frame(&text, limits.max_message_bytes) {
                    Ok(ClientFrame::Publish { draft, reference }) => {
                        self.publish_ws(ws, &mut session, &room, draft, reference, &limits, now)
                    }
                    Ok(ClientFrame::Auth { token }) => {
                        self.refresh(ws, &mut session, &room, &token, &settings, &limits, now)
                            .await
                    }
                    Err(rejection) => self.reject(ws, &mut session, &rejection),
                }
            }
            WebSocketIncomingMessage::Binary(_) => {
                let rejection = Rejection::new(
                    ErrorCode::BadFormat,
                    "binary frames are not supported; send JSON text",
                );
                self.reject(ws, &mut session, &rejection)
            }
        };
        match verdict? {
            Some(code) => self.close(ws, &mut session, code, now),
            None => session.save(ws),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish_ws(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        room: &str,
        draft: Draft,
        reference: Option<String>,
        limits: &Limits,
        now: u64,
    ) -> Verdict {
        if !session.rights.can_publish(room) {
            let rejection = Rejection::new(
                ErrorCode::Forbidden,
                "this token may not publish to this room",
            )
            .with_ref(reference);
            return self.reject(ws, session, &rejection);
        }
        match rate::admit(
            &mut session.bucket,
            &mut self.budget.borrow_mut(),
            limits,
            now,
        ) {
            Admission::Accepted => {}
            Admission::Limited => {
                self.with_stats(|s| s.reject(ErrorCode::RateLimited));
                send_error(
                    ws,
                    ErrorCode::RateLimited,
                    "slow down: over the rate limit",
                    reference.as_deref(),
                )?;
                return Ok(None);
            }
            Admission::Close => {
                self.with_stats(|s| s.reject(ErrorCode::RateLimited));
                return Ok(Some(CloseCode::RateLimited));
            }
        }
        let receipts = self.publish(room, vec![draft], &session.sub, Origin::Ws, limits, now)?;
        session.strikes.clear();
        for receipt in &receipts {
            ws.send_with_str(
                ServerFrame::Ack {
                    reference: reference.as_deref().map(Cow::Borrowed),
                    receipt: Cow::Borrowed(receipt),
                }
                .to_json(),
            )?;
        }
        Ok(None)
    }

    /// Stores `drafts` in order, then broadcasts the new ones. The writes of
    /// one call happen in one synchronous turn, so a batch lands together.
    fn publish(
        &self,
        room: &str,
        drafts: Vec<Draft>,
        sender: &str,
        origin: Origin,
        limits: &Limits,
        now: u64,
    ) -> Result<Vec<Receipt>> {
        let history = self.history()?;
        // The registry hears of a room on its first message and whenever its
        // outbox goes from empty to not (SPEC section 5).
        let first = history.head() == 0;
        let outbox_was_empty = history.cursor() >= history.head();
        let mut receipts = Vec::with_capacity(drafts.len());
        let mut fresh = Vec::new();
        for draft in drafts {
            match history.append(room, draft, sender, origin, now)? {
                Appended::Duplicate(receipt) => receipts.push(receipt),
                Appended::New(message) => {
                    receipts.push(Receipt {
                        id: message.id.clone(),
                        seq: message.seq,
                        duplicate: false,
                    });
                    fresh.push(message);
                }
            }
        }
        let relayed = fresh.iter().any(|m| m.origin != Origin::Kafka);
        if (first && !fresh.is_empty()) || (outbox_was_empty && relayed) {
            history.request_announce()?;
        }
        history.trim_count(limits)?;
        if now.saturating_sub(self.last_age_trim_ms.get()) >= AGE_TRIM_INTERVAL_MS {
            history.trim_age(limits, now)?;
            self.last_age_trim_ms.set(now);
        }
        for message in &fresh {
            self.broadcast(message);
        }
        self.with_stats(|s| {
            for _ in &fresh {
                s.message(origin);
            }
        });
        Ok(receipts)
    }

    fn broadcast(&self, message: &Message) {
        let frame = ServerFrame::Message(Cow::Borrowed(message)).to_json();
        let mut delivered = 0;
        for ws in self.state.get_websockets_with_tag(CLIENT_TAG) {
            // A socket that is closing can refuse the send; its client will
            // resume from history, so nothing is lost.
            if ws.send_with_str(&frame).is_ok() {
                delivered += 1;
            }
        }
        self.with_stats(|s| s.deliveries_total += delivered);
        if message.origin != Origin::Kafka {
            self.relay(&frame);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn refresh(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        room: &str,
        token: &str,
        settings: &Settings,
        limits: &Limits,
        now: u64,
    ) -> Verdict {
        let identity = match settings.verifier.verify(token, now) {
            Ok(identity) => identity,
            Err(e) => {
                return self.reject(
                    ws,
                    session,
                    &Rejection::new(ErrorCode::BadToken, e.to_string()),
                )
            }
        };
        if identity.sub != session.sub {
            return self.reject(
                ws,
                session,
                &Rejection::new(ErrorCode::BadToken, "token is for another subject"),
            );
        }
        if !identity.rights.can_subscribe(room) {
            return Ok(Some(CloseCode::RightsRevoked));
        }
        session.exp = identity.exp;
        session.rights = identity.rights;
        session.warned = false;
        session.strikes.clear();
        ws.send_with_str(ServerFrame::AuthOk { exp: session.exp }.to_json())?;
        self.schedule_sweep(self.next_deadline(session, None, settings, limits))
            .await?;
        Ok(None)
    }

    fn reject(&self, ws: &WebSocket, session: &mut Session, rejection: &Rejection) -> Verdict {
        self.with_stats(|s| s.reject(rejection.code));
        send_error(
            ws,
            rejection.code,
            &rejection.message,
            rejection.reference.as_deref(),
        )?;
        if rejection.fatal {
            return Ok(Some(CloseCode::TooBig));
        }
        Ok(session
            .strikes
            .violation()
            .then_some(CloseCode::PolicyViolation))
    }

    fn close(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        code: CloseCode,
        now: u64,
    ) -> Result<()> {
        if !session.closed {
            session.closed = true;
            self.with_stats(|s| s.connection_seconds.observe(session.lifetime_secs(now)));
        }
        session.save(ws)?;
        // The socket may already be closing from the other side.
        let _ = ws.close(Some(code.code()), Some(code.reason()));
        Ok(())
    }

    /// Counts the lifetime of a socket the client closed or lost.
    fn account_closed(&self, ws: &WebSocket) {
        if let Ok(Some(mut session)) = Session::load(ws) {
            if !session.closed {
                session.closed = true;
                self.with_stats(|s| {
                    s.connection_seconds
                        .observe(session.lifetime_secs(now_ms()))
                });
                let _ = session.save(ws);
            }
        }
    }

    /// Closes idle and expired connections, sends expiry notices, trims aged
    /// history and sets the alarm for the next deadline.
    async fn sweep(&self) -> Result<()> {
        let room = self.name()?;
        let settings = self.settings()?;
        let limits = settings.config.limits_for(&room);
        let now = now_ms();
        let mut next: Option<u64> = None;
        for ws in self.state.get_websockets_with_tag(CLIENT_TAG) {
            let Some(mut session) = Session::load(&ws)? else {
                continue;
            };
            if session.closed {
                continue;
            }
            let pinged = last_auto_response_ms(&self.state, &ws);
            if let Some(code) = self.due_close(&session, pinged, &settings, &limits, now) {
                self.close(&ws, &mut session, code, now)?;
                continue;
            }
            if session.notice_due_ms().is_some_and(|due| now >= due) {
                ws.send_with_str(ServerFrame::TokenExpiring { exp: session.exp }.to_json())?;
                session.warned = true;
                session.save(&ws)?;
            }
            let deadline = self.next_deadline(&session, pinged, &settings, &limits);
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        if let Some(at) = self.link_tick(&room, &settings, now)? {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        self.history()?.trim_age(&limits, now)?;
        if let Some(at) = next {
            alarm::set(&self.state.storage(), at).await?;
        }
        Ok(())
    }

    fn due_close(
        &self,
        session: &Session,
        pinged: Option<u64>,
        settings: &Settings,
        limits: &Limits,
        now: u64,
    ) -> Option<CloseCode> {
        let last_heard = session.last_seen_ms.max(pinged.unwrap_or(0));
        if now >= last_heard + limits.idle_timeout_ms {
            Some(CloseCode::IdleTimeout)
        } else if now
            >= session.expiry_close_ms(settings.config.auth.leeway_secs, limits.token_grace_ms)
        {
            Some(CloseCode::TokenExpired)
        } else {
            None
        }
    }

    /// The earliest moment the sweep has something to do for `session`.
    fn next_deadline(
        &self,
        session: &Session,
        pinged: Option<u64>,
        settings: &Settings,
        limits: &Limits,
    ) -> u64 {
        let last_heard = session.last_seen_ms.max(pinged.unwrap_or(0));
        let idle = last_heard + limits.idle_timeout_ms;
        let expiry =
            session.expiry_close_ms(settings.config.auth.leeway_secs, limits.token_grace_ms);
        let notice = session.notice_due_ms().unwrap_or(u64::MAX);
        idle.min(expiry).min(notice)
    }

    /// Makes sure the sweep runs no later than `at_ms`.
    async fn schedule_sweep(&self, at_ms: u64) -> Result<()> {
        alarm::no_later_than(&self.state.storage(), at_ms).await
    }

    async fn publish_http(
        &self,
        mut req: Request,
        room: &str,
        identity: &Identity,
        limits: &Limits,
    ) -> Result<Response> {
        let body = req.text().await?;
        let (mut drafts, batch) = match parse_publish_body(&body, limits.max_message_bytes) {
            Ok(parsed) => parsed,
            Err(rejection) => {
                self.with_stats(|s| s.reject(rejection.code));
                return reply::error(rejection.code, &rejection.message);
            }
        };
        trace::inherit(&mut drafts, req.headers().get("traceparent")?.as_deref());
        // The bridge publishes what it consumed from Kafka (SPEC section 5).
        let origin = if identity.rights.bridge {
            Origin::Kafka
        } else {
            Origin::Http
        };
        let receipts = self.publish(room, drafts, &identity.sub, origin, limits, now_ms())?;
        if batch {
            reply::json(201, &serde_json::json!({ "results": receipts }))
        } else {
            reply::json(201, &receipts[0])
        }
    }

    fn read_history(
        &self,
        room: &str,
        query: &HashMap<String, String>,
        limits: &Limits,
    ) -> Result<Response> {
        let page = match Page::parse(
            query.get("since").map(String::as_str),
            query.get("limit").map(String::as_str),
        ) {
            Ok(page) => page,
            Err(message) => return reply::error(ErrorCode::BadRequest, &message),
        };
        let history = self.history()?;
        history.trim_age(limits, now_ms())?;
        let mut messages = history.after(room, page.since, page.limit + 1, false)?;
        let truncated = messages.len() as u64 > page.limit;
        messages.truncate(page.limit as usize);
        let retained = history.retained()?;
        let body = HistoryPage {
            room: room.to_owned(),
            epoch: history.epoch(),
            head: retained.head,
            messages,
            truncated,
            oldest: retained.oldest,
        };
        reply::json(200, &body)
    }

    fn report_stats(&self, room: &str) -> Result<Response> {
        reply::json(200, &self.stats_report(room)?)
    }

    /// The counters with the room's current state (SPEC section 7).
    fn stats_report(&self, room: &str) -> Result<StatsReport> {
        let history = self.history()?;
        let connections = self
            .state
            .get_websockets_with_tag(CLIENT_TAG)
            .iter()
            .filter(|ws| Session::load(ws).ok().flatten().is_some_and(|s| !s.closed))
            .count() as u64;
        let counters = self
            .stats
            .borrow_mut()
            .get_or_insert_with(|| self.stored_stats())
            .clone();
        Ok(StatsReport {
            room: room.to_owned(),
            epoch: history.epoch(),
            head: history.head(),
            connections,
            cursor: history.cursor(),
            pending: history.pending()?,
            counters,
        })
    }

    /// Runs `f` on the counters, loading them on first use.
    fn with_stats<T>(&self, f: impl FnOnce(&mut RoomStats) -> T) -> T {
        let mut slot = self.stats.borrow_mut();
        let stats = slot.get_or_insert_with(|| self.stored_stats());
        self.stats_dirty.set(true);
        f(stats)
    }

    fn stored_stats(&self) -> RoomStats {
        self.history()
            .and_then(|h| h.meta("stats"))
            .ok()
            .flatten()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }

    /// Tells the registry about this room when a publish asked for it; on
    /// failure the durable request stays and a sweep soon retries.
    async fn flush_announce(&self) {
        let Ok(history) = self.history() else { return };
        if !history.announce_due() {
            return;
        }
        let result = async {
            let registration = Registration {
                room: self.name()?,
                pending: history.pending()?,
            };
            registry::register(&self.env, &registration).await?;
            history.announced()
        }
        .await;
        if let Err(e) = result {
            console_error!(
                "room {}: could not register with the registry: {e}",
                self.name_or_unknown()
            );
            if let Err(e) = self.schedule_sweep(now_ms() + ANNOUNCE_RETRY_MS).await {
                console_error!(
                    "room {}: could not schedule a retry: {e}",
                    self.name_or_unknown()
                );
            }
        }
    }

    /// Persists the counters if an event changed them.
    fn flush_stats(&self) {
        if !self.stats_dirty.replace(false) {
            return;
        }
        let Some(json) = self
            .stats
            .borrow()
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok())
        else {
            return;
        };
        if let Err(e) = self.history().and_then(|h| h.set_meta("stats", &json)) {
            console_error!(
                "room {}: could not store counters: {e}",
                self.name_or_unknown()
            );
        }
    }
}

fn send_error(
    ws: &WebSocket,
    code: ErrorCode,
    message: &str,
    reference: Option<&str>,
) -> Result<()> {
    ws.send_with_str(
        ServerFrame::Error {
            code,
            message: message.into(),
            reference: reference.map(Into::into),
        }
        .to_json(),
    )
}

/// The subprotocol to answer with: `roomcast.v1` when offered; otherwise the
/// first one offered, because a browser that offered only `bearer.<jwt>`
/// fails the handshake if the answer names none.
fn chosen_subprotocol(req: &Request) -> Result<Option<String>> {
    let Some(offered) = req.headers().get("sec-websocket-protocol")? else {
        return Ok(None);
    };
    let offers: Vec<&str> = offered
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    Ok(offers
        .iter()
        .find(|p| **p == "roomcast.v1")
        .or(offers.first())
        .map(|p| p.to_string()))
}
