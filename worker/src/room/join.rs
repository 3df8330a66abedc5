//! A client joining over WebSocket (docs/protocol.md, "Connecting"): the
//! per-subject connection limit, the resume decision, `welcome`, and the
//! replay of missed messages before any live one.
//!
//! The replay runs in the same turn as `welcome`, so no live message can
//! slip in between; it is bounded ([`replay_route`]): a resume that would
//! replay more than one turn may carry is told to page through HTTP
//! instead (`welcome.catch_up`).

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::admission::answer_subprotocol;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::history::{parse_u64, plan_resume, replay_route, Replay, MAX_PAGE};
use roomcast_protocol::ids::{self, subject_tag};
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::{CatchUp, RateInfo, ServerFrame, Welcome};
use roomcast_protocol::ErrorCode;
use worker::{Request, Response, Result, WebSocket, WebSocketPair};

use super::{Ctx, Room, CLIENT_TAG};
use crate::attachment::Attachment;
use crate::reply;

impl Room {
    pub(super) async fn join(
        &self,
        req: &Request,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let since = match query.get("since") {
            None => None,
            Some(s) => match parse_u64("since", Some(s), 0) {
                Ok(v) => Some(v),
                Err(message) => return reply::error(ErrorCode::BadRequest, &message),
            },
        };
        let tag = subject_tag(&identity.sub);
        let limit = ctx.limits.max_connections_per_subject;
        if self.open_of(&tag) >= limit as usize {
            self.counters
                .with(|s| s.reject(ErrorCode::TooManyConnections));
            return reply::error(
                ErrorCode::TooManyConnections,
                &format!("this subject already holds {limit} connections to this room"),
            );
        }
        let history = self.history()?;
        // Joining makes the room exist: the epoch handed out in `welcome`
        // must be the one its messages will carry.
        history.create(&ctx.room, ctx.settings.config.bridge)?;
        let epoch = history.epoch().unwrap_or_default();
        let resume = plan_resume(
            since,
            query.get("epoch").map(String::as_str),
            &epoch,
            history.retained(&ctx.limits, ctx.now)?,
        );
        let replay = match resume.replay_after {
            Some(after) => {
                let (count, bytes) = history.size_after(after)?;
                Some(replay_route(after, count, bytes))
            }
            None => None,
        };
        let session = Session::new(ids::conn_id(), identity, ctx.now);
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[CLIENT_TAG, &tag]);
        session.save(&pair.server)?;
        let head = history.head();
        let welcome = Welcome {
            room: ctx.room.clone(),
            conn_id: session.conn_id.clone(),
            epoch,
            head,
            recovered: resume.recovered,
            heartbeat_ms: ctx.limits.heartbeat_ms,
            max_message_bytes: ctx.limits.max_message_bytes,
            rate: RateInfo {
                per_sec: ctx.limits.rate_per_sec,
                burst: ctx.limits.rate_burst,
            },
            exp: session.exp,
            cursor: None,
            catch_up: match replay {
                Some(Replay::Http { after }) => Some(CatchUp {
                    since: after,
                    until: head,
                }),
                _ => None,
            },
        };
        pair.server
            .send_with_str(ServerFrame::Welcome(Cow::Borrowed(&welcome)).to_json())?;
        if let Some(Replay::Socket { after }) = replay {
            self.replay(&pair.server, ctx, after, head)?;
        }
        self.count_client(1);
        self.seen
            .borrow_mut()
            .insert(session.conn_id.clone(), ctx.now);
        if since.is_some() {
            self.counters.with(|s| s.reconnects_total += 1);
        }
        self.alarm_no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        let response = Response::from_websocket(pair.client)?;
        let offered = req.headers().get("sec-websocket-protocol")?;
        match answer_subprotocol(offered.as_deref()) {
            Some(protocol) => {
                let headers = worker::Headers::new();
                headers.set("sec-websocket-protocol", &protocol)?;
                Ok(response.with_headers(headers))
            }
            None => Ok(response),
        }
    }

    /// Connections `tag`'s subject holds open.
    fn open_of(&self, tag: &str) -> usize {
        self.state
            .get_websockets_with_tag(tag)
            .iter()
            .filter(|ws| Session::load(ws).ok().flatten().is_some_and(|s| !s.closed))
            .count()
    }

    /// Sends every stored message after `after` up to `head`, in order, in
    /// this turn (its size was checked before).
    fn replay(&self, ws: &WebSocket, ctx: &Ctx, after: u64, head: u64) -> Result<()> {
        let history = self.history()?;
        let mut from = after;
        while from < head {
            let page = history.after(&ctx.room, from, MAX_PAGE, false)?;
            let Some(last) = page.last() else { break };
            from = last.seq;
            for message in &page {
                ws.send_with_str(ServerFrame::Message(Cow::Borrowed(message)).to_json())?;
            }
            self.counters
                .with(|s| s.deliveries_total += page.len() as u64);
        }
        Ok(())
    }
}
