//! The room's side of its bridge link (docs/internals.md, "Bridge links"):
//! the upgrade that opens a link, answered with the room's `welcome` and
//! what the link has not had, and a link the bridge let go.

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::ids;
use roomcast_protocol::lifecycle::Reannounce;
use roomcast_protocol::wire::{RateInfo, ServerFrame, Welcome};
use roomcast_protocol::ErrorCode;
use worker::{Response, Result, WebSocket, WebSocketPair};

use super::Room;
use crate::context::Ctx;

impl Room {
    /// Accepts a bridge link, superseding any older one.
    pub(super) async fn accept_link(
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
        let store = self.store()?;
        store.create(&ctx.room, &ctx.limits, true)?;
        store.mark_bridged()?;
        let pair = WebSocketPair::new()?;
        let first_deadline = self
            .link
            .accept(&pair.server, instance, identity.exp, store, ctx)?;
        let welcome = Welcome {
            room: ctx.room.to_string(),
            conn_id: ids::conn_id(),
            epoch: store.facts().epoch().unwrap_or_default(),
            head: store.head(),
            recovered: true,
            heartbeat_ms: ctx.limits.heartbeat_ms,
            max_message_bytes: ctx.limits.max_message_bytes,
            rate: RateInfo {
                per_sec: ctx.limits.rate_per_sec,
                burst: ctx.limits.rate_burst,
            },
            exp: identity.exp,
            cursor: Some(store.cursor()),
            catch_up: None,
        };
        pair.server
            .send_with_str(ServerFrame::Welcome(Cow::Borrowed(&welcome)).to_json())?;
        self.announce.set(Reannounce::default());
        self.link.pump(store, ctx)?;
        self.link.send_stats(store, &|| self.stats_report(ctx))?;
        self.alarm.no_later_than(first_deadline).await?;
        Response::from_websocket(pair.client)
    }

    /// The bridge closed the link or lost it. If it let go with messages
    /// still to relay (an idle close racing a publish, a bridge that went
    /// away), its owner links the room again when the registry announces it.
    pub(super) fn link_lost(&self, ws: &WebSocket) {
        self.link.gone(ws);
        if self.store().is_ok_and(|h| h.pending() > 0) && !self.link.is_open() {
            self.reannounce(now_ms());
        }
    }
}
