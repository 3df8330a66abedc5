//! The room's client sockets: how many are open, saving their state, and
//! sending one frame to all of them. The same on the room and on its
//! shards (docs/scaling.md).

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::session::Session;
use worker::{Result, WebSocket};

use super::{Room, CLIENT_TAG};
use crate::attachment::Attachment;

impl Room {
    /// A client socket the client closed or lost: its lifetime is counted
    /// unless the room closed it itself.
    pub(super) fn gone(&self, ws: &WebSocket) {
        if self.is_link(ws) {
            self.link_gone(ws);
            // The bridge let go with messages still to relay (an idle close
            // racing a publish, a bridge that went away): its owner links
            // the room again when the registry announces it.
            if self.history().is_ok_and(|h| h.pending() > 0) && !self.link_open() {
                self.reannounce(now_ms());
            }
            return;
        }
        if let Ok(Some(mut session)) = Session::load(ws) {
            if !session.closed {
                session.closed = true;
                self.counters.with(|s| {
                    s.connection_seconds
                        .observe(session.lifetime_secs(now_ms()))
                });
                self.count_client(-1);
                self.seen.borrow_mut().remove(&session.conn_id);
                self.shard_left(ws, &session.conn_id);
                let _ = self.keep(ws, &session);
            }
        }
    }

    /// Saves a socket's state, counted: attachments are written only when
    /// something that must survive hibernation changed, and `/stats` shows
    /// how often that is.
    pub(super) fn keep<A: Attachment>(&self, ws: &WebSocket, state: &A) -> Result<()> {
        self.counters.with(|s| s.attachment_writes += 1);
        state.save(ws)
    }

    /// Open client sockets, counted on first use after a wake.
    pub(super) fn clients(&self) -> u64 {
        if let Some(n) = self.clients.get() {
            return n;
        }
        let n = self
            .state
            .get_websockets_with_tag(CLIENT_TAG)
            .iter()
            .filter(|ws| Session::load(ws).ok().flatten().is_some_and(|s| !s.closed))
            .count() as u64;
        self.clients.set(Some(n));
        n
    }

    pub(super) fn count_client(&self, delta: i64) {
        let n = self.clients();
        self.clients.set(Some(n.saturating_add_signed(delta)));
    }

    /// Sends `frame` to every client socket; returns how many took it. A
    /// socket that is closing can refuse the send; its client will resume
    /// from history, so nothing is lost.
    pub(super) fn send_to_clients(&self, frame: &str) -> u64 {
        let mut delivered = 0;
        for ws in self.state.get_websockets_with_tag(CLIENT_TAG) {
            if ws.send_with_str(frame).is_ok() {
                delivered += 1;
            }
        }
        self.counters.with(|s| s.deliveries_total += delivered);
        delivered
    }
}
