//! The bridge's room link (SPEC section 5): the room as a durable outbox.
//!
//! One link per room; a newer one supersedes the older (4009), so a bridge
//! instance taking over a room never races the previous one. The link first
//! replays every message after the bridge's cursor that did not come from
//! Kafka, then carries live ones; `bridge_ack` moves the cursor, which is
//! what lets the room trim its history. Counters go out every 10 s, from the
//! same alarm that runs the client sweeps; that alarm also closes a link
//! whose token expired (4001) unless the bridge refreshed it with `auth`
//! ([`crate::bridge_token`]).

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::config::Limits;
use roomcast_protocol::ids;
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame, RateInfo, ServerFrame, Welcome};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{Response, Result, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use super::{send_error, Room};
use crate::attachment::Attachment;
use crate::bridge_token;
use crate::settings::Settings;

/// Tag of bridge links among the room's sockets.
const LINK_TAG: &str = "bridge";
/// How often the room's counters go to the bridge.
const STATS_INTERVAL_MS: u64 = 10_000;

/// A link's state, in its socket attachment.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    instance: String,
    /// Expiry of the last token the bridge presented, seconds since the epoch.
    exp: u64,
    last_stats_ms: u64,
    /// Superseded or expired: no more frames go to it.
    closed: bool,
}

impl Attachment for Link {}

impl Link {
    fn stats_due_ms(&self) -> u64 {
        self.last_stats_ms + STATS_INTERVAL_MS
    }
}

impl Room {
    pub(super) fn is_link(&self, ws: &WebSocket) -> bool {
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

    /// Accepts a bridge link, superseding any older one.
    pub(super) async fn link(
        &self,
        room: &str,
        identity: Identity,
        query: &HashMap<String, String>,
        limits: &Limits,
    ) -> Result<Response> {
        if !identity.rights.bridge {
            return crate::reply::error(ErrorCode::Forbidden, "room links need the bridge's token");
        }
        for (ws, mut old) in self.links() {
            old.closed = true;
            old.save(&ws)?;
            let _ = ws.close(
                Some(CloseCode::Superseded.code()),
                Some(CloseCode::Superseded.reason()),
            );
        }
        let history = self.history()?;
        history.mark_bridged()?;
        let now = now_ms();
        let instance = query
            .get("instance")
            .cloned()
            .unwrap_or_else(|| "unnamed".into());
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[LINK_TAG]);
        let link = Link {
            instance,
            exp: identity.exp,
            last_stats_ms: now,
            closed: false,
        };
        link.save(&pair.server)?;
        let welcome = Welcome {
            room: room.to_owned(),
            conn_id: ids::conn_id(),
            epoch: history.epoch(),
            head: history.head(),
            recovered: true,
            heartbeat_ms: limits.heartbeat_ms,
            max_message_bytes: limits.max_message_bytes,
            rate: RateInfo {
                per_sec: limits.rate_per_sec,
                burst: limits.rate_burst,
            },
            exp: identity.exp,
            cursor: Some(history.cursor()),
        };
        pair.server
            .send_with_str(ServerFrame::Welcome(Cow::Borrowed(&welcome)).to_json())?;
        self.replay(&pair.server, room, history.cursor(), welcome.head, true)?;
        pair.server
            .send_with_str(ServerFrame::Stats(Cow::Owned(self.stats_report(room)?)).to_json())?;
        let close_at = bridge_token::close_at_ms(link.exp, &*self.settings()?);
        self.schedule_sweep(link.stats_due_ms().min(close_at))
            .await?;
        Response::from_websocket(pair.client)
    }

    /// Sends a live message frame to the link.
    pub(super) fn relay(&self, frame: &str) {
        for (ws, link) in self.links() {
            // A failed send leaves the message above the cursor: the next
            // link replays it, so nothing is lost.
            if let Err(e) = ws.send_with_str(frame) {
                worker::console_warn!("bridge link {} refused a frame: {e}", link.instance);
            }
        }
    }

    pub(super) fn on_link_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
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
                let room = self.name()?;
                history.trim_count(&self.settings()?.config.limits_for(&room))
            }
            Ok(BridgeFrame::Auth { token }) => self.refresh_link(ws, &token),
            Err(rejection) => send_error(ws, rejection.code, &rejection.message, None),
        }
    }

    /// Moves the link's expiry to that of a fresh bridge token. No alarm is
    /// needed for the later deadline: the one already set for the old
    /// deadline (or the stats tick) comes first, and its sweep reads the new
    /// expiry.
    fn refresh_link(&self, ws: &WebSocket, token: &str) -> Result<()> {
        let Some(mut link) = Link::load(ws)?.filter(|l| !l.closed) else {
            return Ok(());
        };
        bridge_token::refresh(ws, token, &*self.settings()?, now_ms(), |exp| {
            link.exp = exp;
            link.save(ws)
        })
    }

    /// Closes links whose token expired and sends the counters to those that
    /// are due; returns when the next link deadline is.
    pub(super) fn link_tick(
        &self,
        room: &str,
        settings: &Settings,
        now: u64,
    ) -> Result<Option<u64>> {
        let mut next = None;
        for (ws, mut link) in self.links() {
            let close_at = bridge_token::close_at_ms(link.exp, settings);
            if now >= close_at {
                link.closed = true;
                link.save(&ws)?;
                bridge_token::close_expired(&ws);
                continue;
            }
            if now >= link.stats_due_ms() {
                let stats = self.stats_report(room)?;
                ws.send_with_str(ServerFrame::Stats(Cow::Owned(stats)).to_json())?;
                link.last_stats_ms = now;
                link.save(&ws)?;
            }
            let due = link.stats_due_ms().min(close_at);
            next = Some(next.map_or(due, |n: u64| n.min(due)));
        }
        Ok(next)
    }
}
