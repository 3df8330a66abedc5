//! The room as one of its shards (docs/scaling.md): an object of the same
//! class, named after the room and an index ([`shard_name`]), that holds
//! client sockets the room's own object has no room for. Clients see no
//! difference: the shard runs their sessions with the room's own code
//! (heartbeats, tokens, strikes, timers), and the room, the sequencer,
//! decides everything about messages.
//!
//! - A join asks the sequencer (admission, resume, welcome, replay), brings
//!   the shard's stream up to the welcome's head, then accepts the socket
//!   and sends it everything without an `await` in between, so no message
//!   slips past it or reaches it twice.
//! - Publishes go to the sequencer in arrival order, one request at a time
//!   with whatever queued meanwhile; each is acked once the shard has
//!   delivered the acked message, as on the room.
//! - The sequencer pushes batches; the shard's [`Stream`] delivers every
//!   message once, in order, and fetches what it missed from the sequencer
//!   before anything newer. What the room no longer stores cannot be
//!   fetched: the shard then closes its clients (1011) and they resume,
//!   told of the gap like any client that fell behind.
//!
//! A shard stores nothing: it knows its room and index from the requests
//! that reach it, and after a wake from its sockets' tags.
//!
//! [`shard_name`]: roomcast_protocol::shard::shard_name

use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::ids::subject_tag;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::{parse_join_reply, Forwarded, JoinRequest, Step, Stream, Waiting};
use serde::Deserialize;
use worker::{Request, Response, Result, WebSocketPair};

use super::forward::{Ack, Pending};
use super::join::since;
use super::{Ctx, Room, CLIENT_TAG};
use crate::internal::{room_stub, Call, Op, CONN_HEADER, SENT_HEADER};

/// Tag prefix naming a shard socket's room and shard: `shard:<index>:<room>`.
const SHARD_TAG: &str = "shard:";

/// This object's life as a shard.
pub(super) struct ShardSide {
    pub room: String,
    pub index: u32,
    pub stream: Stream,
    /// Publishes waiting for the request in flight to finish, and their
    /// bytes of data ([`roomcast_protocol::shard::forward_has_room`]).
    pub queue: Vec<(Forwarded, Pending)>,
    pub queued_bytes: usize,
    /// Connections accepted and closed since the sequencer last heard (by
    /// `conn_id`), for its per-subject counts.
    pub joins: Vec<String>,
    pub leaves: Vec<String>,
    pub forwarding: bool,
    pub waiting: Waiting<Ack>,
}

/// What a shard reads from the sequencer's `welcome`.
#[derive(Deserialize)]
struct WelcomeFacts {
    conn_id: String,
    head: u64,
}

impl Room {
    /// This object's room and shard index, when it is a shard.
    pub(super) fn shard_of(&self) -> Option<(String, u32)> {
        if let Some(side) = self.shard.borrow().as_ref() {
            return Some((side.room.clone(), side.index));
        }
        let (index, room) = self
            .state
            .get_websockets_with_tag(CLIENT_TAG)
            .iter()
            .find_map(|ws| self.state.get_tags(ws).iter().find_map(|t| parse_tag(t)))?;
        self.become_shard(&room, index);
        Some((room, index))
    }

    pub(super) fn is_shard(&self) -> bool {
        self.shard.borrow().is_some()
    }

    pub(super) fn become_shard(&self, room: &str, index: u32) {
        let mut side = self.shard.borrow_mut();
        if side.is_none() {
            *side = Some(ShardSide {
                room: room.to_owned(),
                index,
                stream: Stream::default(),
                queue: Vec::new(),
                queued_bytes: 0,
                joins: Vec::new(),
                leaves: Vec::new(),
                forwarding: false,
                waiting: Waiting::default(),
            });
        }
    }

    pub(super) fn with_side<T>(&self, f: impl FnOnce(&mut ShardSide) -> T) -> Option<T> {
        self.shard.borrow_mut().as_mut().map(f)
    }

    pub(super) fn position(&self) -> Option<u64> {
        self.with_side(|s| s.stream.delivered()).flatten()
    }

    pub(super) fn step(&self, seq: u64, prev: Option<u64>) -> Step {
        self.with_side(|s| s.stream.step(seq, prev))
            .unwrap_or(Step::Skip)
    }

    /// A client joining this shard: see the module's doc.
    pub(super) async fn shard_join(
        &self,
        req: &Request,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
        index: u32,
    ) -> Result<Response> {
        self.become_shard(&ctx.room, index);
        let since = match since(query) {
            Ok(since) => since,
            Err(refusal) => return refusal,
        };
        let Some(conn_id) = req.headers().get(CONN_HEADER)? else {
            return Err(worker::Error::RustError(
                "a join placed on a shard comes with its connection".into(),
            ));
        };
        let request = JoinRequest {
            shard: index,
            conn_id,
            since,
            epoch: query.get("epoch").cloned(),
        };
        let call = Call {
            op: Op::Join,
            room: &ctx.room,
            shard: index,
            identity: Some(&identity),
            query: "",
            body: Some(serde_json::to_string(&request)?),
        };
        let mut answer = call.send(&room_stub(&self.env, &ctx.room)?).await?;
        if answer.status_code() != 200 {
            // The sequencer's refusal (a limit, a bad `since`), as it is.
            return Ok(answer);
        }
        let sent = answer
            .headers()
            .get(SENT_HEADER)?
            .and_then(|v| v.parse().ok());
        let text = answer.text().await?;
        let reply = parse_join_reply(&text).map_err(worker::Error::RustError)?;
        let facts: WelcomeFacts = serde_json::from_str(reply.welcome)?;
        let extra = match self.align(ctx, facts.head, sent).await {
            Ok(extra) => extra,
            Err(e) => {
                // The sequencer counted this connection: it never opened.
                self.with_side(|s| s.leaves.push(facts.conn_id.clone()));
                return Err(e);
            }
        };
        // No `await` from here until the socket is in: the stream cannot
        // move between what this client is sent and what it gets next.
        let ctx = &ctx.refreshed();
        let session = Session::new(facts.conn_id, identity, ctx.now);
        let pair = WebSocketPair::new()?;
        self.state.accept_websocket_with_tags(
            &pair.server,
            &[
                CLIENT_TAG,
                &subject_tag(&session.sub),
                &format!("{SHARD_TAG}{index}:{}", ctx.room),
            ],
        );
        self.keep(&pair.server, &session)?;
        pair.server.send_with_str(reply.welcome)?;
        for (_, frame) in &reply.replay {
            pair.server.send_with_str(frame)?;
        }
        for (_, frame) in &extra {
            pair.server.send_with_str(frame)?;
        }
        self.counters
            .with(|s| s.deliveries_total += (reply.replay.len() + extra.len()) as u64);
        if self.clients() == 0 {
            self.with_side(|s| s.stream.start_at(facts.head));
        }
        self.with_side(|s| s.joins.push(session.conn_id.clone()));
        self.opened(req, ctx, &session, pair.client).await
    }

    /// Brings the stream to `head` for the clients already here, and
    /// returns what a client joining at `head` needs beyond it (the stream
    /// may be ahead of the welcome it got). `sent` is where the sequencer
    /// last knew the stream, for a shard that woke without knowing.
    async fn align(&self, ctx: &Ctx, head: u64, sent: Option<u64>) -> Result<Vec<(u64, String)>> {
        let mut extra: Vec<(u64, String)> = Vec::new();
        loop {
            if self.clients() == 0 {
                return Ok(Vec::new());
            }
            let Some(delivered) = self.position() else {
                self.with_side(|s| s.stream.start_at(sent.unwrap_or(head)));
                continue;
            };
            let have = extra.last().map_or(head, |(seq, _)| *seq);
            if delivered < head {
                self.fill(ctx, head).await?;
                if self.position() == Some(delivered) {
                    return Err(worker::Error::RustError(
                        "the shard could not catch up".into(),
                    ));
                }
            } else if delivered > have {
                let more = self.fetch_gap(ctx, have, delivered).await?;
                if more.first().is_none_or(|(seq, _)| *seq != have + 1) {
                    return Err(worker::Error::RustError(
                        "the room no longer has what the shard delivered".into(),
                    ));
                }
                extra.extend(more);
            } else {
                return Ok(extra);
            }
        }
    }
}

/// The shard and room a socket's tag names.
pub(super) fn parse_tag(tag: &str) -> Option<(u32, String)> {
    let (index, room) = tag.strip_prefix(SHARD_TAG)?.split_once(':')?;
    Some((index.parse().ok()?, room.to_owned()))
}
