//! The bridge's room link (SPEC section 5): the room as a durable outbox.
//!
//! One link per room; a newer one supersedes the older (4009), so a bridge
//! instance taking over a room never races the previous one. The link first
//! replays every message after the bridge's cursor that did not come from
//! Kafka, then carries live ones; `bridge_ack` moves the cursor, which is
//! what lets the room trim its history. Counters go out every 10 s, from the
//! same alarm that runs the client sweeps.

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

/// Tag of bridge links among the room's sockets.
const LINK_TAG: &str = "bridge";
/// How often the room's counters go to the bridge.
const STATS_INTERVAL_MS: u64 = 10_000;

/// A link's state, in its socket attachment.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    instance: String,
    last_stats_ms: u64,
    /// Superseded: no more frames go to it.
    closed: bool,
}

impl Attachment for Link {}

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
        Link {
            instance,
            last_stats_ms: now,
            closed: false,
        }
        .save(&pair.server)?;
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
            .send_with_str(ServerFrame::Welcome(&welcome).to_json())?;
        self.replay(&pair.server, room, history.cursor(), welcome.head, true)?;
        pair.server
            .send_with_str(ServerFrame::Stats(&self.stats_report(room)?).to_json())?;
        self.schedule_sweep(now + STATS_INTERVAL_MS).await?;
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
            Ok(BridgeFrame::Ack { seq }) => {
                let history = self.history()?;
                history.confirm(seq)?;
                let room = self.name()?;
                history.trim_count(&self.settings()?.config.limits_for(&room))
            }
            Err(rejection) => send_error(ws, rejection.code, &rejection.message, None),
        }
    }

    /// Sends the counters to links that are due; returns when the next is due.
    pub(super) fn link_tick(&self, room: &str, now: u64) -> Result<Option<u64>> {
        let mut next = None;
        for (ws, mut link) in self.links() {
            if now >= link.last_stats_ms + STATS_INTERVAL_MS {
                ws.send_with_str(ServerFrame::Stats(&self.stats_report(room)?).to_json())?;
                link.last_stats_ms = now;
                link.save(&ws)?;
            }
            let due = link.last_stats_ms + STATS_INTERVAL_MS;
            next = Some(next.map_or(due, |n: u64| n.min(due)));
        }
        Ok(next)
    }
}
