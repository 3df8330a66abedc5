//! The room as the sequencer of its shards ([`crate::shard`],
//! docs/scaling.md): where a
//! connection goes once the room holds `ROOM_SHARD_SIZE`, what a shard's
//! joins, publishes and gap fills get from the room, and the fan-out that
//! feeds every shard the room's new messages.
//!
//! The room's work per message is one batch per shard holding connections,
//! whatever the number of subscribers: each shard delivers to its own. A
//! shard's batch waits while the one before is in flight, so under load a
//! batch carries many messages. The fan-out runs after each event, so an
//! HTTP publish is answered once the shards have its message: a publisher
//! gets backpressure, not an unbounded queue in the room.

use std::cell::RefMut;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::history::{parse_u64, MAX_PAGE};
use roomcast_protocol::ids;
use roomcast_protocol::shard::{
    encode_batch, encode_join_reply, Fanout, Forward, JoinRequest, Outcome, Placement, ShardReport,
};
use roomcast_protocol::wire::{Origin, ServerFrame};
use roomcast_protocol::ErrorCode;
use std::borrow::Cow;
use std::collections::HashMap;
use worker::{console_warn, Delay, Headers, Request, Response, Result};

use super::publish::Publisher;
use super::Room;
use crate::context::Ctx;
use crate::headers::SENT_HEADER;
use crate::internal::{shard_stub, Call, Op};
use crate::reply;

/// Attempts at a batch a shard keeps failing before the room stops trying
/// until its next message (the shard fills the gap from history then).
const DELIVERY_ATTEMPTS: u32 = 5;

impl Room {
    /// The fan-out, set up on first use after a wake with every shard the
    /// room has used, each presumed to have had everything up to the head
    /// the room woke with (not what this wake stored since: its first
    /// publish may come before anything asks for the fan-out).
    fn fanout(&self) -> Result<RefMut<'_, Fanout>> {
        let history = self.history()?;
        let (count, head) = (history.shard_count(), history.woke_at());
        Ok(RefMut::map(self.fanout.borrow_mut(), |slot| {
            slot.get_or_insert_with(|| Fanout::woken(count, head))
        }))
    }

    /// Keeps a new message's frame for the shards, if the room has any.
    pub(super) fn keep_for_shards(&self, seq: u64, frame: String) {
        if let Ok(mut fanout) = self.fanout() {
            if !fanout.shards().is_empty() {
                fanout.remember(seq, Rc::from(frame));
            }
        }
    }

    /// Connections and shards over the room's shards, for `/stats` and
    /// for retiring.
    pub(super) fn shard_clients(&self) -> (u64, u64) {
        self.fanout()
            .map(|f| (f.clients(), f.in_use()))
            .unwrap_or((0, 0))
    }

    /// Where a joining connection of `sub` goes: `None` for here, else the
    /// shard and the `conn_id` it is admitted under there (it counts from
    /// now on, see [`roomcast_protocol::shard::Connections`]). A room that
    /// woke asks its shards how full they are first; a shard that did not
    /// answer is not placed on.
    pub(super) async fn placement(&self, ctx: &Ctx, sub: &str) -> Result<Option<(u32, String)>> {
        let size = ctx.limits.room_shard_size;
        let own = self.clients.count();
        if own < size.max(1) {
            return Ok(None);
        }
        let history = self.history()?;
        history.create(&ctx.room, &ctx.limits, ctx.settings.config.bridge)?;
        self.count_shards(ctx).await;
        let now = now_ms();
        let Placement::Shard(index) = self.fanout()?.place(own, size, now) else {
            return Ok(None);
        };
        let conn_id = ids::conn_id();
        self.fanout()?
            .admit(&conn_id, index, sub, history.head(), now);
        history.set_shard_count(history.shard_count().max(index + 1))?;
        Ok(Some((index, conn_id)))
    }

    /// Whether the room knows how many connections each shard holds.
    pub(super) fn shards_counted(&self) -> bool {
        self.fanout().map(|f| f.counted()).unwrap_or(true)
    }

    /// Connections the subject holds on shards: what they accepted, and
    /// what this object admitted there in the last moments. A room that
    /// woke asks its shards first.
    pub(super) async fn open_on_shards(&self, ctx: &Ctx, sub: &str) -> usize {
        if !self.shards_counted() {
            self.count_shards(ctx).await;
        }
        self.fanout()
            .map(|mut f| f.subject(sub, now_ms()) as usize)
            .unwrap_or(0)
    }

    /// Asks every shard whose connections this wake does not know.
    pub(super) async fn count_shards(&self, ctx: &Ctx) {
        let Ok(unknown) = self.fanout().map(|f| f.unlisted()) else {
            return;
        };
        let answers = join_all(
            unknown
                .iter()
                .map(|i| self.ask_shard(&ctx.room, *i, Op::Count, None)),
        )
        .await;
        for (index, answer) in unknown.into_iter().zip(answers) {
            match answer {
                Ok(report) => self.take_report(index, &report, false),
                Err(e) => console_warn!("room {}: shard {index} did not answer: {e}", ctx.room),
            }
        }
    }

    async fn ask_shard(
        &self,
        room: &str,
        index: u32,
        op: Op,
        body: Option<String>,
    ) -> Result<ShardReport> {
        let call = Call {
            op,
            room,
            shard: index,
            identity: None,
            query: "",
            body,
        };
        let text = call.text(&shard_stub(&self.env, room, index)?).await?;
        Ok(serde_json::from_str(&text)?)
    }

    fn take_report(&self, index: u32, report: &ShardReport, batch: bool) {
        if let Ok(mut fanout) = self.fanout() {
            if batch {
                fanout.delivered(index, report);
            } else {
                fanout.reported(index, report);
            }
        }
        self.counters.with(|s| s.absorb(&report.stats));
    }

    /// Sends every shard what it has not had, each on its own.
    pub(super) async fn fan_out(&self) {
        let Ok(count) = self.fanout().map(|f| f.shards().len() as u32) else {
            return;
        };
        let Some(room) = self.history().ok().and_then(|h| h.name()) else {
            return;
        };
        if count == 0 {
            return;
        }
        join_all((0..count).map(|i| self.fan_out_to(&room, i))).await;
    }

    async fn fan_out_to(&self, room: &str, index: u32) {
        let mut failures = 0;
        loop {
            let Ok(head) = self.history().map(|h| h.head()) else {
                return;
            };
            let Some(batch) = self
                .fanout()
                .ok()
                .and_then(|mut f| f.next_batch(index, head))
            else {
                return;
            };
            let body = batch.encode();
            match self.ask_shard(room, index, Op::Deliver, Some(body)).await {
                Ok(report) => {
                    failures = 0;
                    self.take_report(index, &report, true);
                }
                Err(e) => {
                    if let Ok(mut fanout) = self.fanout() {
                        fanout.failed(index);
                    }
                    failures += 1;
                    console_warn!(
                        "room {room}: delivering to shard {index} failed ({failures}): {e}"
                    );
                    if failures >= DELIVERY_ATTEMPTS {
                        return;
                    }
                    Delay::from(Duration::from_millis(100 << failures)).await;
                }
            }
        }
    }

    /// A shard's join: the same admission, resume and welcome as a join
    /// here; the reply carries the welcome and replay for the shard to send.
    pub(super) async fn join_from_shard(
        &self,
        mut req: Request,
        ctx: &Ctx,
        identity: Identity,
    ) -> Result<Response> {
        let request: JoinRequest = serde_json::from_str(&req.text().await?)?;
        // Admitted when it was placed; a client that took longer than the
        // grace to get here is admitted again, if it still may be.
        let placed = self
            .fanout()?
            .connections()
            .holds(&request.conn_id, request.shard);
        if !placed {
            if let Some(refusal) = self.connection_limit(ctx, &identity.sub).await {
                return refusal;
            }
            let head = self.history()?.head();
            self.fanout()?.admit(
                &request.conn_id,
                request.shard,
                &identity.sub,
                head,
                now_ms(),
            );
        }
        if let Some(refusal) = self.replay_budget(ctx, &identity.sub, request.since) {
            self.fanout()?.left(&request.conn_id);
            return refusal;
        }
        let session = roomcast_protocol::session::Session::new(request.conn_id, identity, ctx.now);
        let greeting = self.greet(ctx, &session, request.since, request.epoch.as_deref())?;
        let mut replay = Vec::new();
        if let Some(after) = greeting.replay_after {
            self.replay(ctx, after, greeting.welcome.head, |seq, frame| {
                replay.push((seq, frame.to_owned()));
                Ok(())
            })?;
        }
        let welcome = ServerFrame::Welcome(Cow::Borrowed(&greeting.welcome)).to_json();
        let body = encode_join_reply(&welcome, replay.iter().map(|(seq, f)| (*seq, f.as_str())));
        let headers = Headers::new();
        let sent = self
            .fanout()?
            .shards()
            .get(request.shard as usize)
            .and_then(|s| s.sent);
        if let Some(sent) = sent {
            headers.set(SENT_HEADER, &sent.to_string())?;
        }
        Ok(Response::ok(body)?.with_headers(headers))
    }

    /// Publishes from a shard's clients, one by one as if sent here, and
    /// the shard's closed connections.
    pub(super) async fn forward_from_shard(&self, mut req: Request, ctx: &Ctx) -> Result<Response> {
        let forward: Forward = serde_json::from_str(&req.text().await?)?;
        {
            let mut fanout = self.fanout()?;
            for conn_id in &forward.joins {
                fanout.confirmed(conn_id);
            }
            for conn_id in &forward.leaves {
                fanout.left(conn_id);
            }
        }
        let mut outcomes = Vec::with_capacity(forward.publishes.len());
        for forwarded in forward.publishes {
            let sub = forwarded.sub.clone();
            let publisher = Publisher {
                sub: &sub,
                bridge: forwarded.bridge,
                origin: Origin::Ws,
            };
            outcomes.push(
                match self.publish(ctx, vec![forwarded.into_draft()], &publisher)? {
                    Ok(mut receipts) => Outcome::Stored(receipts.remove(0)),
                    Err(refusal) => {
                        let (code, message) = refusal.code_and_message();
                        self.counters.with(|s| s.reject(code));
                        let (retry_after_ms, close) = refusal.limited();
                        Outcome::Refused {
                            code,
                            message,
                            retry_after_ms,
                            close,
                        }
                    }
                },
            );
        }
        reply::json(200, &outcomes)
    }

    /// Stored messages after `after` up to `until` for a shard that missed
    /// them; as many as one turn carries (the shard asks again for more).
    pub(super) fn gap_for_shard(
        &self,
        ctx: &Ctx,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let bound = |name: &str| parse_u64(name, query.get(name).map(String::as_str), 0);
        let (Ok(after), Ok(until)) = (bound("after"), bound("until")) else {
            return reply::error(ErrorCode::BadRequest, "a gap is ?after=<seq>&until=<seq>");
        };
        let page = self.history()?.after(
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
}
