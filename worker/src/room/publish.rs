//! The one path every message takes, from a WebSocket `publish`, an HTTP
//! publish or the bridge's batch of Kafka records: the publisher's rights
//! over ids and its rate budget, then idempotency, then one write, then the
//! broadcast and the bridge link, then the counters and trims.
//!
//! A batch is all or nothing: every check runs before anything is written,
//! and the writes of one call happen in one synchronous turn, which the
//! runtime commits together.

use std::borrow::Cow;

use roomcast_protocol::draft::{Draft, KafkaPosition, Origin};
use roomcast_protocol::ids::{self, reserved_for_bridge};
use roomcast_protocol::rate::Admission;
use roomcast_protocol::ring::Lost;
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::{Message, Receipt, ServerFrame};
use roomcast_protocol::{ErrorCode, Refusal};
use worker::{console_warn, Result, WebSocket};

use super::idempotency::BRIDGE_OWNER;
use super::Room;
use crate::clients::frames::{forgive, Outcome};
use crate::context::Ctx;
use crate::counters::Counters;
use crate::sends::{self, Frames};

/// Who publishes.
pub(super) struct Publisher<'a> {
    pub sub: &'a str,
    /// The bridge's token: no rate budget of its own, and the only one that
    /// may use the ids the bridge gives Kafka records.
    pub bridge: bool,
    pub origin: Origin,
    /// Where the receipts go as `ack` frames (a WebSocket publisher's
    /// socket), sent after the messages in the same call.
    pub ack_to: Option<AckTo<'a>>,
}

/// A WebSocket publisher's socket and the `ref` of its frame.
pub(super) struct AckTo<'a> {
    pub ws: &'a WebSocket,
    pub reference: Option<&'a str>,
}

impl AckTo<'_> {
    /// The `ack` frame of each receipt.
    fn frames(&self, receipts: &[Receipt]) -> Frames {
        let mut frames = Frames::default();
        for receipt in receipts {
            let ack = ServerFrame::Ack {
                room: None,
                reference: self.reference.map(Cow::Borrowed),
                receipt: Cow::Borrowed(receipt),
            };
            frames.push(&ack.to_json());
        }
        frames
    }
}

impl Publisher<'_> {
    /// Whom the ids this publisher names belong to.
    fn owner(&self) -> &str {
        if self.bridge {
            BRIDGE_OWNER
        } else {
            self.sub
        }
    }
}

impl Room {
    /// A client's `publish` frame: refused with its `ref`, or acked once
    /// the message is out ([`Publisher::ack_to`]).
    pub(super) fn publish_frame(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        draft: Draft,
        reference: Option<String>,
    ) -> Result<Outcome> {
        let publisher = Publisher {
            sub: &session.sub,
            bridge: session.rights.bridge,
            origin: Origin::Ws,
            ack_to: Some(AckTo {
                ws,
                reference: reference.as_deref(),
            }),
        };
        if let Err(refusal) = self.publish(ctx, vec![draft], &publisher)? {
            return self
                .clients
                .refused(ws, session, &refusal.with_ref(reference));
        }
        Ok(forgive(&mut session.strikes))
    }

    /// Stores `drafts` in order and sends the new ones; a receipt for each.
    ///
    /// The budget is drawn first, before anything else is looked at: a
    /// publish the room refuses for its id costs its publisher as much as
    /// one it stores, so refusals are no free work for anyone.
    pub(super) fn publish(
        &self,
        ctx: &Ctx,
        drafts: Vec<Draft>,
        publisher: &Publisher<'_>,
    ) -> Result<std::result::Result<Vec<Receipt>, Refusal>> {
        if !publisher.bridge {
            if let Err(refusal) = self.admit(ctx, publisher.sub, drafts.len() as u32) {
                return Ok(Err(refusal));
            }
            if let Some(id) = drafts
                .iter()
                .filter_map(|d| d.id.as_deref())
                .find(|id| reserved_for_bridge(id))
            {
                return Ok(Err(Refusal::new(
                    ErrorCode::Forbidden,
                    format!(
                        "id {id:?}: ids starting with {:?} are the bridge's",
                        ids::BRIDGE_ID_PREFIX
                    ),
                )));
            }
        }
        let store = self.store()?;
        let duplicates = match self.idempotency.duplicates(
            store,
            &drafts,
            publisher.owner(),
            publisher.bridge,
        )? {
            Ok(duplicates) => duplicates,
            Err(id) => {
                return Ok(Err(Refusal::new(
                    ErrorCode::IdConflict,
                    format!("id {id:?} is already another publisher's in this room"),
                )))
            }
        };
        if publisher.bridge {
            let fresh = duplicates.iter().filter(|d| d.is_none()).count() as u32;
            self.limiter
                .borrow_mut()
                .count_unlimited(fresh, &ctx.limits, ctx.now);
        }
        store.create(&ctx.room, &ctx.limits, ctx.settings.config.bridge)?;
        let mut receipts = Vec::with_capacity(drafts.len());
        let mut messages: Vec<Message> = Vec::with_capacity(drafts.len());
        let mut offsets: Vec<KafkaPosition> = Vec::new();
        for (mut draft, duplicate) in drafts.into_iter().zip(duplicates) {
            offsets.extend(draft.kafka.take());
            // A repeated id within one batch is a duplicate of its first copy.
            let earlier = draft
                .id
                .as_deref()
                .and_then(|id| messages.iter().find(|m| m.id == id).map(|m| m.seq));
            if let Some(seq) = duplicate.or(earlier) {
                receipts.push(Receipt {
                    id: draft.id.unwrap_or_default(),
                    seq,
                    duplicate: true,
                });
                continue;
            }
            let seq = store.next_seq() + messages.len() as u64;
            let message = message(ctx, draft, seq, publisher);
            receipts.push(Receipt {
                id: message.id.clone(),
                seq,
                duplicate: false,
            });
            messages.push(message);
        }
        let lost = store.append(&messages, &ctx.limits)?;
        // Once the window is loaded; until then the stored rows are the record.
        self.idempotency.record(&messages, publisher.owner());
        for position in &offsets {
            store
                .facts()
                .set_inbound_offset(&position.partition_key(), position.offset)?;
        }
        let acks = publisher
            .ack_to
            .as_ref()
            .map(|to| (to.ws, to.frames(&receipts)));
        let ack = acks.as_ref().map(|(ws, frames)| (*ws, &**frames));
        match ack {
            Some((ws, frames)) if messages.is_empty() => sends::send_each(ws, frames)?,
            _ => self.broadcast(ctx, &messages, ack),
        }
        self.after_publish(ctx, &messages, publisher.origin, lost)?;
        Ok(Ok(receipts))
    }

    /// `n` tokens of the subject's budget (the bridge's publishes are
    /// counted in the room's load but not limited, see [`Room::publish`]).
    pub(super) fn admit(&self, ctx: &Ctx, sub: &str, n: u32) -> std::result::Result<(), Refusal> {
        match self
            .limiter
            .borrow_mut()
            .admit(sub, n, &ctx.limits, ctx.now)
        {
            Admission::Accepted => Ok(()),
            Admission::Limited { retry_after_ms } => {
                Err(Refusal::rate_limited(retry_after_ms, false))
            }
            Admission::Close { retry_after_ms } => Err(Refusal::rate_limited(retry_after_ms, true)),
        }
    }

    /// Sends stored messages to every client (then `ack` to its socket), to
    /// the bridge link and to the room's shards and hubs. Each frame is serialised
    /// once for all of them.
    fn broadcast(&self, ctx: &Ctx, messages: &[Message], ack: Option<(&WebSocket, &str)>) {
        let frames: Vec<String> = messages
            .iter()
            .map(|m| ServerFrame::Message(Cow::Borrowed(m)).to_json())
            .collect();
        match frames.as_slice() {
            [frame] => self.clients.broadcast(frame, ack),
            _ => {
                let mut all = Frames::default();
                frames.iter().for_each(|frame| all.push(frame));
                self.clients.broadcast(&all, ack);
            }
        }
        if let Ok(store) = self.store() {
            for (message, frame) in messages.iter().zip(frames) {
                self.link.relay(store, ctx, message, &frame);
                self.remember(store, message.seq, frame);
            }
        }
    }

    /// Counters, trims and registration after new messages.
    fn after_publish(
        &self,
        ctx: &Ctx,
        messages: &[Message],
        origin: Origin,
        dropped: Lost,
    ) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        self.counters.with(|s| {
            for _ in messages {
                s.message(origin);
            }
        });
        let store = self.store()?;
        let mut lost = dropped;
        if lost.run.is_none() {
            lost = store.trim_age(&ctx.limits, ctx.now, false)?;
        }
        count_lost(&self.counters, ctx, lost);
        if !store.facts().registered() {
            self.register.set(true);
        } else if origin != Origin::Kafka && store.bridged() && !self.link.is_open() {
            self.reannounce(ctx.now);
        }
        self.retire_check
            .set(Some(ctx.now.saturating_add(ctx.limits.room_retire_ms)));
        Ok(())
    }
}

/// Counts and logs messages the bridge never had that storage let go.
pub(super) fn count_lost(counters: &Counters, ctx: &Ctx, lost: Lost) {
    let Some(run) = lost.run else {
        return;
    };
    counters.with(|s| s.outbox_dropped_total += lost.relayable);
    console_warn!(
        "room {}: dropped {} messages the bridge never confirmed (seq {}..={}): the outbox is over OUTBOX_LIMIT",
        ctx.room,
        lost.relayable,
        run.lo,
        run.hi
    );
}

/// A new message from `draft` as message `seq`.
fn message(ctx: &Ctx, draft: Draft, seq: u64, publisher: &Publisher<'_>) -> Message {
    Message {
        room: ctx.room.to_string(),
        id: draft.id.unwrap_or_else(|| ids::message_id(ctx.now)),
        seq,
        ts: ctx.now,
        sender: publisher.sub.to_owned(),
        origin: publisher.origin,
        data: draft.data,
        trace: draft.trace,
    }
}
