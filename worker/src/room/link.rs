//! The bridge's room link (docs/protocol.md, "Bridge links"): the room as a
//! durable outbox.
//!
//! One link per room; a newer one supersedes the older (4009), so a bridge
//! instance taking over a room never races the previous one. The link is fed
//! every message after the bridge's cursor that did not come from Kafka, in
//! order, through a window ([`super::feed`]). `bridge_ack` moves the cursor
//! (which is what lets the room trim) and opens the window again. A link's token is held to its expiry like a client's: the bridge
//! refreshes it with `auth` ([`crate::bridge_token`]), or the alarm closes
//! the link (4001). Counters go out when they changed, at most every
//! [`STATS_INTERVAL_MS`]. A room that retires closes its link with 4010.

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::ids;
use roomcast_protocol::lifecycle::Reannounce;
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame, RateInfo, ServerFrame, Welcome};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{Response, Result, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use super::feed::{Feed, LinkCache};
use super::Room;
use crate::attachment::Attachment;
use crate::bridge_token;
use crate::clients::send_error;
use crate::context::Ctx;

/// Tag of bridge links among the room's sockets.
const LINK_TAG: &str = "bridge";
/// How often changed counters go to the bridge at most.
const STATS_INTERVAL_MS: u64 = 10_000;

/// A link's state, in its socket attachment.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    instance: String,
    /// Expiry of the last token the bridge presented, seconds since the epoch.
    exp: u64,
    last_stats_ms: u64,
    /// Superseded, expired or retired: no more frames go to it.
    closed: bool,
}

impl Attachment for Link {}

impl Room {
    pub(super) fn is_link(&self, ws: &WebSocket) -> bool {
        if let LinkCache::Open(feed) = &*self.link.borrow() {
            if feed.ws.as_ref() == ws.as_ref() {
                return true;
            }
        }
        self.state.get_tags(ws).iter().any(|t| t == LINK_TAG)
    }

    /// Open links with their state (at most one, unless one is being superseded).
    fn links(&self) -> Vec<(WebSocket, Link)> {
        self.state
            .get_websockets_with_tag(LINK_TAG)
            .into_iter()
            .filter_map(|ws| {
                Link::load(&ws)
                    .ok()
                    .flatten()
                    .filter(|l| !l.closed)
                    .map(|l| (ws, l))
            })
            .collect()
    }

    /// Finds the open link after a wake, once.
    pub(super) fn resolve_link(&self) -> Result<()> {
        if !matches!(*self.link.borrow(), LinkCache::Unknown) {
            return Ok(());
        }
        let cursor = self.history()?.cursor();
        let found = self
            .links()
            .into_iter()
            .next()
            .map(|(ws, _)| Feed::at(ws, cursor));
        *self.link.borrow_mut() = found.map_or(LinkCache::None, LinkCache::Open);
        Ok(())
    }

    /// Accepts a bridge link, superseding any older one.
    pub(super) async fn link(
        &self,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        if !identity.rights.bridge {
            return crate::reply::error(ErrorCode::Forbidden, "room links need the bridge's token");
        }
        let Some(instance) = query.get("instance").filter(|i| !i.is_empty()).cloned() else {
            return crate::reply::error(
                ErrorCode::BadRequest,
                "the room link needs ?instance=<id>",
            );
        };
        for (ws, old) in self.links() {
            self.close_link(&ws, old, CloseCode::Superseded)?;
        }
        let history = self.history()?;
        history.create(&ctx.room, &ctx.limits, true)?;
        history.mark_bridged()?;
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[LINK_TAG]);
        let link = Link {
            instance,
            exp: identity.exp,
            last_stats_ms: ctx.now,
            closed: false,
        };
        self.clients.keep(&pair.server, &link)?;
        let welcome = Welcome {
            room: ctx.room.clone(),
            conn_id: ids::conn_id(),
            epoch: history.epoch().unwrap_or_default(),
            head: history.head(),
            recovered: true,
            heartbeat_ms: ctx.limits.heartbeat_ms,
            max_message_bytes: ctx.limits.max_message_bytes,
            rate: RateInfo {
                per_sec: ctx.limits.rate_per_sec,
                burst: ctx.limits.rate_burst,
            },
            exp: identity.exp,
            cursor: Some(history.cursor()),
            catch_up: None,
        };
        pair.server
            .send_with_str(ServerFrame::Welcome(Cow::Borrowed(&welcome)).to_json())?;
        *self.link.borrow_mut() = LinkCache::Open(Feed::at(pair.server.clone(), history.cursor()));
        self.announce.set(Reannounce::default());
        self.pump(ctx)?;
        self.send_stats(ctx)?;
        let close_at = bridge_token::close_at_ms(link.exp, &ctx.settings);
        self.alarm
            .no_later_than(close_at.min(ctx.now + STATS_INTERVAL_MS))
            .await?;
        Response::from_websocket(pair.client)
    }

    pub(super) fn on_link_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        ctx: &Ctx,
    ) -> Result<()> {
        let text = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                return ws.send_with_str("pong")
            }
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                return send_error(
                    ws,
                    ErrorCode::BadFormat,
                    "bridge frames are JSON text",
                    None,
                )
            }
        };
        match parse_bridge_frame(&text) {
            Ok(BridgeFrame::BridgeAck { seq }) => {
                let history = self.history()?;
                history.confirm(seq)?;
                self.skip_confirmed()?;
                self.pump(ctx)
            }
            Ok(BridgeFrame::Auth { token }) => self.refresh_link(ws, &token, ctx),
            Err(rejection) => send_error(ws, rejection.code, &rejection.message, None),
        }
    }

    /// Moves the link's expiry to that of a fresh bridge token. No alarm is
    /// needed for the later deadline: the one already set for the old
    /// deadline comes first, and its sweep reads the new expiry.
    fn refresh_link(&self, ws: &WebSocket, token: &str, ctx: &Ctx) -> Result<()> {
        let Some(mut link) = Link::load(ws)?.filter(|l| !l.closed) else {
            return Ok(());
        };
        bridge_token::refresh(ws, token, &ctx.settings, ctx.now, |exp| {
            link.exp = exp;
            self.clients.keep(ws, &link)
        })
    }

    /// Sends the counters to the link if they changed since the last time.
    fn send_stats(&self, ctx: &Ctx) -> Result<()> {
        if !self.link_stats_stale() {
            return Ok(());
        }
        self.skip_confirmed()?;
        let version = self.stats_version();
        let frame = ServerFrame::Stats(Cow::Owned(self.stats_report(ctx)?)).to_json();
        if let LinkCache::Open(feed) = &mut *self.link.borrow_mut() {
            feed.ws.send_with_str(&frame)?;
            feed.stats_version = Some(version);
        }
        Ok(())
    }

    /// What a `stats` frame reports changes with: the counters, and the
    /// cursor (a `bridge_ack` moves the cursor and `pending`, no counter).
    fn stats_version(&self) -> (u64, u64) {
        let cursor = self.history().map_or(0, |h| h.cursor());
        (self.counters.version(), cursor)
    }

    /// The alarm's part for links: closes those whose token expired, sends
    /// changed counters to the open one; returns when the next link
    /// deadline is.
    pub(super) fn link_tick(&self, ctx: &Ctx) -> Result<Option<u64>> {
        self.resolve_link()?;
        let mut next = None;
        for (ws, mut link) in self.links() {
            let close_at = bridge_token::close_at_ms(link.exp, &ctx.settings);
            if ctx.now >= close_at {
                self.close_link(&ws, link, CloseCode::TokenExpired)?;
                continue;
            }
            let stats_due = link.last_stats_ms + STATS_INTERVAL_MS;
            if ctx.now >= stats_due && self.link_stats_stale() {
                self.send_stats(ctx)?;
                link.last_stats_ms = ctx.now;
                self.clients.keep(&ws, &link)?;
            }
            self.pump(ctx)?;
            // An idle linked room sleeps until its link's token needs
            // checking; new counters bring the next stats tick forward.
            let due = if self.link_stats_stale() {
                close_at.min(link.last_stats_ms + STATS_INTERVAL_MS)
            } else {
                close_at
            };
            next = Some(next.map_or(due, |n: u64| n.min(due)));
        }
        Ok(next)
    }

    /// When new counters should reach the link, if they should.
    pub(super) fn link_stats_due(&self, now_ms: u64) -> Option<u64> {
        self.link_stats_stale()
            .then_some(now_ms + STATS_INTERVAL_MS)
    }

    /// Whether the open link's last `stats` frame is out of date.
    fn link_stats_stale(&self) -> bool {
        let version = self.stats_version();
        matches!(&*self.link.borrow(), LinkCache::Open(feed) if feed.stats_version != Some(version))
    }

    /// Closes the link because the room retires.
    pub(super) fn retire_links(&self) -> Result<()> {
        for (ws, link) in self.links() {
            self.close_link(&ws, link, CloseCode::Retired)?;
        }
        Ok(())
    }

    fn close_link(&self, ws: &WebSocket, mut link: Link, code: CloseCode) -> Result<()> {
        link.closed = true;
        self.clients.keep(ws, &link)?;
        self.link_gone(ws);
        // The socket may already be closing from the other side.
        let _ = ws.close(Some(code.code()), Some(code.reason()));
        Ok(())
    }

    /// The bridge closed the link or lost it. If it let go with messages
    /// still to relay (an idle close racing a publish, a bridge that went
    /// away), its owner links the room again when the registry announces it.
    pub(super) fn link_lost(&self, ws: &WebSocket) {
        self.link_gone(ws);
        if self.history().is_ok_and(|h| h.pending() > 0) && !self.link_open() {
            self.reannounce(now_ms());
        }
    }

    /// The link is gone (closed by the room or by the bridge).
    fn link_gone(&self, ws: &WebSocket) {
        let mut cache = self.link.borrow_mut();
        let gone = match &*cache {
            LinkCache::Open(feed) => feed.ws.as_ref() == ws.as_ref(),
            _ => false,
        };
        if gone {
            *cache = LinkCache::None;
        } else if matches!(*cache, LinkCache::Open(_)) {
            // Another link is open: nothing to forget.
        } else {
            *cache = LinkCache::Unknown;
        }
    }
}
