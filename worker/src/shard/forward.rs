//! A shard's publishes: its clients' `publish` frames go to the room in
//! arrival order, one request at a time with whatever queued meanwhile,
//! together with the connections that opened and closed. Each publisher
//! gets the room's answer as the room itself would give it: the ack after
//! its message, or the refusal with the same strikes and closes.

use std::borrow::Cow;

use roomcast_protocol::draft::Draft;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::{forward_has_room, Forward, Forwarded, Outcome as Sequenced};
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::ErrorCode;
use worker::{console_warn, Result, WebSocket};

use super::subscription::{Ack, Pending};
use super::Shard;
use crate::clients::frames::{forgive, send_error};
use crate::context::Ctx;
use crate::internal::{room_stub, Call, Holder, Op};

impl Shard {
    /// A client's publish, for the room; answered when it answers.
    pub(super) async fn forward_publish(
        &self,
        ws: &WebSocket,
        session: &Session,
        ctx: &Ctx,
        draft: Draft,
        reference: Option<String>,
    ) {
        let bytes = draft.data.get().len();
        let room = self
            .with_subscription(|s| forward_has_room(s.queue.len(), s.queued_bytes, bytes))
            .unwrap_or(false);
        if !room {
            self.counters.with(|s| s.reject(ErrorCode::RateLimited));
            let _ = send_error(
                ws,
                ErrorCode::RateLimited,
                "the room is busy: publish again shortly",
                reference.as_deref(),
            );
            return;
        }
        let forwarded = Forwarded::new(&session.sub, session.rights.bridge, draft);
        let pending = Pending {
            ws: ws.clone(),
            reference,
        };
        self.with_subscription(|s| {
            s.queue.push((forwarded, pending));
            s.queued_bytes += bytes;
        });
        self.pump_forward(ctx).await;
    }

    /// Sends what queued for the room, one request at a time, until
    /// nothing is left or the room fails: the joins and leaves it did not
    /// take wait for the shard's next event rather than being sent again at
    /// once, which would spin for as long as the room keeps failing.
    pub(super) async fn pump_forward(&self, ctx: &Ctx) {
        if self.with_subscription(|s| std::mem::replace(&mut s.forwarding, true)) != Some(false) {
            return;
        }
        while let Some((forward, pendings)) = self.next_forward() {
            let (joins, leaves, dropped) = (
                forward.joins.clone(),
                forward.leaves.clone(),
                forward.dropped.clone(),
            );
            match self.send_forward(ctx, forward).await {
                Ok(outcomes) if outcomes.len() == pendings.len() => {
                    for (outcome, pending) in outcomes.into_iter().zip(pendings) {
                        if let Err(e) = self.answer(ctx, outcome, pending) {
                            console_warn!("room {}: answering a publish: {e}", ctx.room);
                        }
                    }
                }
                other => {
                    let error = other.err().map(|e| e.to_string()).unwrap_or_default();
                    console_warn!(
                        "room {}: the room did not take a shard's publishes: {error}",
                        ctx.room
                    );
                    self.with_subscription(|s| {
                        s.joins.extend(joins);
                        s.leaves.extend(leaves);
                        s.dropped.extend(dropped);
                    });
                    for pending in pendings {
                        let _ = send_error(
                            &pending.ws,
                            ErrorCode::Internal,
                            "the room did not take this message: publish it again",
                            pending.reference.as_deref(),
                        );
                    }
                    break;
                }
            }
            self.catch_up_acks(ctx).await;
        }
        self.with_subscription(|s| s.forwarding = false);
    }

    fn next_forward(&self) -> Option<(Forward, Vec<Pending>)> {
        self.with_subscription(|s| {
            if s.queue.is_empty() && s.joins.is_empty() && s.leaves.is_empty() {
                return None;
            }
            let (publishes, pendings) = std::mem::take(&mut s.queue).into_iter().unzip();
            s.queued_bytes = 0;
            let forward = Forward {
                shard: s.index,
                publishes,
                joins: std::mem::take(&mut s.joins),
                leaves: std::mem::take(&mut s.leaves),
                dropped: std::mem::take(&mut s.dropped),
            };
            Some((forward, pendings))
        })
        .flatten()
    }

    async fn send_forward(&self, ctx: &Ctx, forward: Forward) -> Result<Vec<Sequenced>> {
        let call = Call {
            op: Op::Forward,
            room: &ctx.room,
            holder: Holder::Shard(forward.shard),
            identity: None,
            query: "",
            body: Some(serde_json::to_string(&forward)?),
        };
        let text = call.text(&room_stub(&self.env, &ctx.room)?).await?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Acks waiting for messages no batch has brought yet: fetch those now
    /// rather than wait for the push.
    async fn catch_up_acks(&self, ctx: &Ctx) {
        let highest = self.with_subscription(|s| s.waiting.highest()).flatten();
        if let Some(highest) = highest.filter(|h| self.position().is_some_and(|d| d < *h)) {
            if let Err(e) = self.fill(ctx, highest).await {
                console_warn!("room {}: fetching acked messages: {e}", ctx.room);
            }
        }
        self.release_acks();
    }

    /// Tells a publisher what the room did with its message.
    fn answer(&self, ctx: &Ctx, outcome: Sequenced, pending: Pending) -> Result<()> {
        let Pending { ws, reference } = pending;
        let receipt = match outcome {
            Sequenced::Stored(receipt) => receipt,
            Sequenced::Refused(refusal) => {
                let Some(mut session) = self.clients.session(&ws)? else {
                    return Ok(());
                };
                let refusal = refusal.with_ref(reference);
                let outcome = self.clients.refused(&ws, &mut session, &refusal)?;
                return self
                    .clients
                    .settle(&ws, &mut session, outcome, ctx.now, false);
            }
        };
        if let Some(mut session) = self.clients.session(&ws)? {
            let outcome = forgive(&mut session.strikes);
            self.clients
                .settle(&ws, &mut session, outcome, ctx.now, false)?;
        }
        let frame = ServerFrame::Ack {
            room: None,
            reference: reference.as_deref().map(Cow::Borrowed),
            receipt: Cow::Borrowed(&receipt),
        }
        .to_json();
        if receipt.duplicate || self.position().is_some_and(|d| d >= receipt.seq) {
            return ws.send_with_str(&frame);
        }
        self.with_subscription(|s| s.waiting.push(receipt.seq, Ack { ws, frame }));
        Ok(())
    }
}
