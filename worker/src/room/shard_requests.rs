//! What the room answers the objects holding its sockets, its shards
//! ([`crate::shard`]) and hubs alike ([`Holder`]): a join, with the same
//! admission, resume and welcome as a join here; their clients' publishes,
//! each taking the one path every message takes; and the stored messages
//! one missed.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::draft::Origin;
use roomcast_protocol::history::{parse_u64, MAX_PAGE};
use roomcast_protocol::shard::{encode_batch, encode_join_reply, Forward, JoinRequest, Outcome};
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::ErrorCode;
use worker::{Headers, Request, Response, Result};

use super::publish::Publisher;
use super::Room;
use crate::context::Ctx;
use crate::headers::SENT_HEADER;
use crate::internal::Holder;
use crate::reply;
use crate::store::Store;

impl Room {
    /// A holder's join: the same admission, resume and welcome as a join
    /// here; the reply carries the welcome and replay for the holder to send.
    pub(super) async fn join_from_holder(
        &self,
        mut req: Request,
        ctx: &Ctx,
        identity: Identity,
        holder: Holder,
    ) -> Result<Response> {
        let request: JoinRequest = serde_json::from_str(&req.text().await?)?;
        let (fanout, index) = (self.fanout_of(holder), holder.index());
        // A shard's connection was admitted when it was placed; a client
        // that took longer than the grace to get here is admitted again, if
        // it still may be. A hub's connection chose its hub itself, and may
        // be the first to touch the room: it is admitted here, as a join to
        // the room is.
        let store = self.store()?;
        let placed = fanout
            .get(store)
            .connections()
            .holds(&request.conn_id, index);
        if !placed {
            if let Some(refusal) = self.creation_refused(ctx, &identity).await? {
                return Ok(refusal);
            }
            if let Some(refusal) = self.connection_limit(ctx, &identity.sub).await {
                return refusal;
            }
            // Created first, so the room stores that it feeds this holder.
            store.create(&ctx.room, &ctx.limits, ctx.settings.config.bridge)?;
            fanout.admit(store, &request.conn_id, index, &identity.sub, now_ms())?;
        }
        if let Some(refusal) = self.replay_budget(ctx, &identity.sub, request.since) {
            fanout.get(store).left(&request.conn_id);
            return refusal;
        }
        let session = roomcast_protocol::session::Session::new(request.conn_id, identity, ctx.now);
        let greeting = self.greet(ctx, &session, request.since, request.epoch.as_deref())?;
        self.presence_joined(ctx, &session);
        let presence = self.presence_greeting(ctx, &session);
        let mut replay = Vec::new();
        if let Some(after) = greeting.replay_after {
            self.replay(ctx, after, greeting.welcome.head, |seq, frame| {
                replay.push((seq, frame.to_owned()));
                Ok(())
            })?;
        }
        let welcome = ServerFrame::Welcome(Cow::Borrowed(&greeting.welcome)).to_json();
        let body = encode_join_reply(
            &welcome,
            &presence,
            replay.iter().map(|(seq, f)| (*seq, f.as_str())),
        );
        let headers = Headers::new();
        let sent = fanout
            .get(store)
            .shards()
            .get(index as usize)
            .and_then(|s| s.sent);
        if let Some(sent) = sent {
            headers.set(SENT_HEADER, &sent.to_string())?;
        }
        Ok(Response::ok(body)?.with_headers(headers))
    }

    /// Publishes from a holder's clients, one by one as if sent here, and
    /// the holder's accepted and closed connections.
    pub(super) async fn forward_from_holder(
        &self,
        mut req: Request,
        ctx: &Ctx,
        holder: Holder,
    ) -> Result<Response> {
        let forward: Forward = serde_json::from_str(&req.text().await?)?;
        {
            let mut fanout = self.fanout_of(holder).get(self.store()?);
            for conn_id in &forward.joins {
                fanout.confirmed(conn_id);
            }
            for conn_id in &forward.leaves {
                fanout.left(conn_id);
            }
        }
        {
            let dropped: HashSet<&String> = forward.dropped.iter().collect();
            let mut presence = self.presence(ctx);
            for conn_id in &forward.leaves {
                if dropped.contains(conn_id) {
                    presence.dropped(conn_id, ctx.now);
                } else {
                    presence.left(conn_id);
                }
            }
        }
        let mut outcomes = Vec::with_capacity(forward.publishes.len());
        for forwarded in forward.publishes {
            let sub = forwarded.sub.clone();
            let publisher = Publisher {
                sub: &sub,
                bridge: forwarded.bridge,
                origin: Origin::Ws,
                ack_to: None,
            };
            outcomes.push(
                match self.publish(ctx, vec![forwarded.into_draft()], &publisher)? {
                    Ok(mut receipts) => Outcome::Stored(receipts.remove(0)),
                    // Counted by the holder, which answers its client.
                    Err(refusal) => Outcome::Refused(refusal),
                },
            );
        }
        reply::json(200, &outcomes)
    }
}

/// Stored messages after `after` up to `until` for a holder that missed
/// them; as many as one turn carries (the holder asks again for more).
pub(super) fn gap(store: &Store, ctx: &Ctx, query: &HashMap<String, String>) -> Result<Response> {
    let bound = |name: &str| parse_u64(name, query.get(name).map(String::as_str), 0);
    let (Ok(after), Ok(until)) = (bound("after"), bound("until")) else {
        return reply::error(ErrorCode::BadRequest, "a gap is ?after=<seq>&until=<seq>");
    };
    let page = store.after(
        &ctx.room,
        after,
        until.saturating_sub(after).min(MAX_PAGE),
        false,
    )?;
    let frames: Vec<(u64, String)> = page
        .messages
        .iter()
        .map(|m| (m.seq, ServerFrame::Message(Cow::Borrowed(m)).to_json()))
        .collect();
    Response::ok(encode_batch(
        Some(after),
        frames.iter().map(|(s, f)| (*s, f.as_str())),
    ))
}
