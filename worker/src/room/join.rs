//! A client joining over WebSocket (docs/protocol.md, "Connecting"): where
//! it goes (here, or a shard once the room is full), the per-subject
//! connection limit, the resume decision, `welcome`, and the replay of
//! missed messages before any live one.
//!
//! The replay runs in the same turn as `welcome`, so no live message can
//! slip in between; it is bounded ([`replay_route`]): a resume that would
//! replay more than one turn may carry is told to page through HTTP
//! instead (`welcome.catch_up`). A shard's client gets the same welcome and
//! replay, built here and carried by the shard ([`crate::shard`]).

use std::borrow::Cow;
use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::history::{plan_resume, replay_route, Replay, MAX_PAGE, MAX_REPLAY};
use roomcast_protocol::ids::{self, subject_tag};
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::{CatchUp, RateInfo, ServerFrame, Welcome};
use roomcast_protocol::ErrorCode;
use worker::{Headers, Request, Response, Result, WebSocketPair};

use super::Room;
use crate::clients;
use crate::context::Ctx;
use crate::headers::{CONN_HEADER, SHARD_HEADER};
use crate::reply;
use crate::sends::{self, Frames};

/// What a joining connection is told first, and what it is replayed.
pub(super) struct Greeting {
    pub welcome: Welcome,
    /// Replay the stored messages after this seq (up to `welcome.head`).
    pub replay_after: Option<u64>,
}

impl Room {
    pub(super) async fn join(
        &self,
        req: &Request,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let since = match clients::since(query) {
            Ok(since) => since,
            Err(refusal) => return reply::refusal(&refusal),
        };
        if let Some(refusal) = self.creation_refused(ctx, &identity).await? {
            return Ok(refusal);
        }
        if let Some(refusal) = self.connection_limit(ctx, &identity.sub).await {
            return refusal;
        }
        let own = self.clients.count();
        let store = self.store()?;
        if let Some((index, conn_id)) = self.shards.place(store, ctx, own, &identity.sub).await? {
            return shard_redirect(index, &conn_id);
        }
        if let Some(refusal) = self.replay_budget(ctx, &identity.sub, since) {
            return refusal;
        }
        let ctx = &ctx.refreshed();
        let session = Session::new(ids::conn_id(), identity, ctx.now);
        let epoch = query.get("epoch").map(String::as_str);
        let greeting = self.greet(ctx, &session, since, epoch)?;
        let pair = WebSocketPair::new()?;
        // Known to presence before its socket is, so it joins rather than
        // being found there.
        self.presence_joined(ctx, &session);
        self.clients.accept(
            &pair.server,
            &session,
            &[&subject_tag(&session.sub)],
            ctx.now,
        )?;
        // The welcome, the replay and who is here go out in one call.
        let mut frames = Frames::default();
        frames.push(&ServerFrame::Welcome(Cow::Borrowed(&greeting.welcome)).to_json());
        if let Some(after) = greeting.replay_after {
            self.replay(ctx, after, greeting.welcome.head, |_, frame| {
                frames.push(frame);
                Ok(())
            })?;
        }
        for frame in self.presence_greeting(ctx, &session) {
            frames.push(&frame);
        }
        sends::send_each(&pair.server, &frames)?;
        self.alarm
            .no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        clients::upgraded(req, pair.client)
    }

    /// The refusal of a subject that holds its limit of connections to
    /// this room, on the room, its shards and hubs.
    pub(super) async fn connection_limit(&self, ctx: &Ctx, sub: &str) -> Option<Result<Response>> {
        let limit = ctx.limits.max_connections_per_subject;
        let held = match self.store() {
            Ok(store) => self.held_by(store, ctx, sub).await,
            Err(e) => return Some(Err(e)),
        };
        let open = held + self.clients.open(&subject_tag(sub)).len();
        if open < limit as usize {
            return None;
        }
        self.counters
            .with(|s| s.reject(ErrorCode::TooManyConnections));
        Some(reply::error(
            ErrorCode::TooManyConnections,
            &format!("this subject already holds {limit} connections to this room"),
        ))
    }

    /// A resume replays what it missed, up to a turn's worth of history: it
    /// costs its subject a token of its budget, as a history page does, so
    /// reconnecting in a loop is limited like publishing in a loop.
    pub(super) fn replay_budget(
        &self,
        ctx: &Ctx,
        sub: &str,
        since: Option<u64>,
    ) -> Option<Result<Response>> {
        since?;
        let refusal = self.admit(ctx, sub, 1).err()?;
        Some(self.http_refusal(&refusal))
    }

    /// Creates the room if needed (the epoch handed out in `welcome` must
    /// be the one its messages will carry) and decides the resume.
    pub(super) fn greet(
        &self,
        ctx: &Ctx,
        session: &Session,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Greeting> {
        let store = self.store()?;
        store.create(&ctx.room, &ctx.limits, ctx.settings.config.bridge)?;
        let room_epoch = store.facts().epoch().unwrap_or_default();
        let resume = plan_resume(
            since,
            epoch,
            &room_epoch,
            store.retained(&ctx.limits, ctx.now)?,
        );
        let replay = match resume.replay_after {
            Some(after) => {
                let (count, bytes) = store.size_after(after, MAX_REPLAY)?;
                Some(replay_route(after, count, bytes.unwrap_or(u64::MAX)))
            }
            None => None,
        };
        if since.is_some() {
            self.counters.with(|s| s.reconnects_total += 1);
        }
        let head = store.head();
        let welcome = Welcome {
            room: ctx.room.to_string(),
            conn_id: session.conn_id.clone(),
            epoch: room_epoch,
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
        Ok(Greeting {
            welcome,
            replay_after: match replay {
                Some(Replay::Socket { after }) => Some(after),
                _ => None,
            },
        })
    }

    /// Hands every stored message after `after` up to `head` to `send`, in
    /// order, in this turn (its size was checked before).
    pub(super) fn replay(
        &self,
        ctx: &Ctx,
        after: u64,
        head: u64,
        mut send: impl FnMut(u64, &str) -> Result<()>,
    ) -> Result<()> {
        let store = self.store()?;
        let mut from = after;
        while from < head {
            let page = store.after(&ctx.room, from, MAX_PAGE.min(head - from), false)?;
            from = page.through;
            for message in &page.messages {
                send(
                    message.seq,
                    &ServerFrame::Message(Cow::Borrowed(message)).to_json(),
                )?;
            }
            self.counters
                .with(|s| s.deliveries_total += page.messages.len() as u64);
        }
        Ok(())
    }
}

/// Tells the router to take the join to shard `index`, as connection
/// `conn_id`; no client sees it.
fn shard_redirect(index: u32, conn_id: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set(SHARD_HEADER, &index.to_string())?;
    headers.set(CONN_HEADER, conn_id)?;
    Ok(Response::empty()?.with_status(204).with_headers(headers))
}
