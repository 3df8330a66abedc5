//! The client sockets one object holds, on a room's own object and on its
//! shards alike: accepting them, how many are open, saving their sessions,
//! sending one frame to all of them, closing them, and what they send
//! ([`frames`]) and owe ([`deadlines`]).
//!
//! A room's object and a shard run their clients' sessions with this same
//! code (heartbeats, tokens, strikes, timers); what differs is only where a
//! `publish` goes, which each decides for itself. A session survives
//! hibernation in its socket's attachment; what may be rebuilt (the count,
//! the exact time each connection was last heard, the sessions decoded
//! this wake) lives here in memory.

mod deadlines;
pub mod frames;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use roomcast_protocol::admission::answer_subprotocol;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::history::parse_u64;
use roomcast_protocol::presence::News;
use roomcast_protocol::session::Session;
use roomcast_protocol::{CloseCode, Refusal};
use worker::{Headers, Request, Response, Result, State, WebSocket};

use crate::attachment::{socket_number, Attachment};
use crate::counters::Counters;
use crate::hibernation;
use crate::sends::{self, Frames};

/// Tag of client sockets (a room's bridge link gets its own).
pub const CLIENT_TAG: &str = "client";

/// The close code the runtime reports for a connection that ended without
/// a close frame (RFC 6455, 7.1.5): the client's network or process died.
pub const ABNORMAL_CLOSURE: usize = 1006;

/// A connection that ended: `dropped` when it went without a close (the
/// client's network or process died), which presence gives a grace period.
#[derive(Debug, Clone)]
pub struct Ended {
    pub session: Session,
    pub dropped: bool,
}

pub struct Clients {
    /// The object's own handle on its sockets.
    state: State,
    counters: Rc<Counters>,
    /// Open client sockets, counted once per wake and kept up to date.
    count: Cell<Option<u64>>,
    /// When each connection (by `conn_id`) last sent a frame, exactly; the
    /// attachments hold it only to a quarter of the idle timeout.
    seen: RefCell<HashMap<String, u64>>,
    /// Connections that ended since the object last asked
    /// ([`Clients::take_ended`]), whichever side ended them and however:
    /// the room's presence and a shard's report to its room hear of every
    /// one from here.
    ended: RefCell<Vec<Ended>>,
    /// Each socket's session as last read from or written to its
    /// attachment, by [`socket_number`]: a frame starts from a copy of it
    /// rather than decoding the attachment again. It holds no more than the
    /// attachments do, and goes with the socket or the wake.
    sessions: RefCell<HashMap<u64, Session>>,
}

impl Clients {
    pub fn new(state: &State, counters: Rc<Counters>) -> Clients {
        Clients {
            state: hibernation::handle(state),
            counters,
            count: Cell::new(None),
            seen: RefCell::new(HashMap::new()),
            ended: RefCell::new(Vec::new()),
            sessions: RefCell::new(HashMap::new()),
        }
    }

    /// Takes a new client socket in, tagged with `tags` besides
    /// [`CLIENT_TAG`], with its session saved.
    pub fn accept(&self, ws: &WebSocket, session: &Session, tags: &[&str], now: u64) -> Result<()> {
        let mut all = vec![CLIENT_TAG];
        all.extend_from_slice(tags);
        self.state.accept_websocket_with_tags(ws, &all);
        self.keep(ws, session)?;
        let n = self.count();
        self.count.set(Some(n + 1));
        self.seen.borrow_mut().insert(session.conn_id.clone(), now);
        Ok(())
    }

    /// Saves a connection's session, counted: attachments are written only
    /// when something that must survive hibernation changed, and `/stats`
    /// shows how often that is.
    pub fn keep(&self, ws: &WebSocket, session: &Session) -> Result<()> {
        self.counters.save(ws, session)?;
        self.sessions
            .borrow_mut()
            .insert(socket_number(ws), session.clone());
        Ok(())
    }

    /// The session saved on `ws`, or `None` before any was; decoded from
    /// the attachment once per wake.
    fn load(&self, ws: &WebSocket) -> Result<Option<Session>> {
        let number = socket_number(ws);
        if let Some(session) = self.sessions.borrow().get(&number) {
            return Ok(Some(session.clone()));
        }
        let loaded = Session::load(ws)?;
        if let Some(session) = &loaded {
            self.sessions.borrow_mut().insert(number, session.clone());
        }
        Ok(loaded)
    }

    /// Open client sockets, counted on first use after a wake.
    pub fn count(&self) -> u64 {
        if let Some(n) = self.count.get() {
            return n;
        }
        let n = self.open(CLIENT_TAG).len() as u64;
        self.count.set(Some(n));
        n
    }

    /// The open client sockets tagged `tag`, with their sessions.
    pub fn open(&self, tag: &str) -> Vec<(WebSocket, Session)> {
        self.state
            .get_websockets_with_tag(tag)
            .into_iter()
            .filter_map(|ws| {
                self.load(&ws)
                    .ok()
                    .flatten()
                    .filter(|s| !s.closed)
                    .map(|s| (ws, s))
            })
            .collect()
    }

    /// Sends `frames` (one frame, or [`Frames`](crate::sends::Frames)) to
    /// every client socket, then `ack`'s frames to its socket, in one call
    /// ([`sends::broadcast`]); counts the deliveries. A socket that is
    /// closing can refuse the send; its client will resume from history, so
    /// nothing is lost.
    pub fn broadcast(&self, frames: &str, ack: Option<(&WebSocket, &str)>) {
        let delivered = sends::broadcast(&self.state, CLIENT_TAG, frames, ack);
        self.counters.with(|s| s.deliveries_total += delivered);
    }

    /// Tells this object's clients what a presence flush says: members'
    /// news to those who may see members (by the token they hold now),
    /// counts to all. Not deliveries: `deliveries_total` counts messages.
    pub fn tell(&self, room: &str, news: &News) {
        let mut frames = Frames::default();
        for frame in news.state.iter().chain(&news.diff) {
            frames.push(frame);
        }
        if !frames.is_empty() {
            for (ws, session) in self.open(CLIENT_TAG) {
                if session.rights.can_see_presence(room) {
                    // A closing socket's client gets the state again when
                    // it reconnects.
                    let _ = sends::send_each(&ws, &frames);
                }
            }
        }
        if let Some(occupancy) = &news.occupancy {
            sends::broadcast(&self.state, CLIENT_TAG, occupancy, None);
        }
    }

    /// Closes a client connection on the object's initiative, counting its
    /// lifetime once; `true` when it was open until now.
    pub fn close(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        code: CloseCode,
        now: u64,
    ) -> Result<bool> {
        let was_open = self.count_out(session, now, false);
        self.keep(ws, &*session)?;
        // The socket may already be closing from the other side.
        let _ = ws.close(Some(code.code()), Some(code.reason()));
        Ok(was_open)
    }

    /// A client socket the client closed (`dropped`: or lost): its
    /// lifetime is counted unless the object closed it itself.
    pub fn gone(&self, ws: &WebSocket, dropped: bool) {
        let Some(mut session) = self.load(ws).ok().flatten() else {
            return;
        };
        if self.count_out(&mut session, now_ms(), dropped) {
            let _ = self.counters.save(ws, &session);
        }
        self.sessions.borrow_mut().remove(&socket_number(ws));
    }

    /// The connections that ended since the last call.
    pub fn take_ended(&self) -> Vec<Ended> {
        std::mem::take(&mut *self.ended.borrow_mut())
    }

    /// Whether a connection ended since [`Clients::take_ended`] was last called.
    pub fn any_ended(&self) -> bool {
        !self.ended.borrow().is_empty()
    }

    /// Marks a session closed and counts it out, once.
    fn count_out(&self, session: &mut Session, now: u64, dropped: bool) -> bool {
        if session.closed {
            return false;
        }
        session.closed = true;
        self.ended.borrow_mut().push(Ended {
            session: session.clone(),
            dropped,
        });
        self.counters
            .with(|s| s.connection_seconds.observe(session.lifetime_secs(now)));
        let n = self.count();
        self.count.set(Some(n.saturating_sub(1)));
        self.seen.borrow_mut().remove(&session.conn_id);
        true
    }

    /// The first of the client sockets' tags that `parse` reads.
    pub fn find_tag<T>(&self, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
        self.state
            .get_websockets_with_tag(CLIENT_TAG)
            .iter()
            .find_map(|ws| self.state.get_tags(ws).iter().find_map(|t| parse(t)))
    }
}

/// The answer to a WebSocket upgrade that accepted `client`, with the
/// subprotocol the client offered answered (never its token).
pub fn upgraded(req: &Request, client: WebSocket) -> Result<Response> {
    let response = Response::from_websocket(client)?;
    let offered = req.headers().get("sec-websocket-protocol")?;
    match answer_subprotocol(offered.as_deref()) {
        Some(protocol) => {
            let headers = Headers::new();
            headers.set("sec-websocket-protocol", &protocol)?;
            Ok(response.with_headers(headers))
        }
        None => Ok(response),
    }
}

/// The `since` a join asks for, or what is wrong with it.
pub fn since(query: &HashMap<String, String>) -> std::result::Result<Option<u64>, Refusal> {
    query
        .get("since")
        .map(|s| parse_u64("since", Some(s), 0))
        .transpose()
}

/// The code a socket's close is answered with: the client's own, unless it
/// is one a server may not echo.
pub fn echo(code: usize) -> u16 {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
        _ => CloseCode::Normal.code(),
    }
}
