//! A client joining a shard: the room admits it and builds its welcome and
//! replay; the shard brings its stream up to the welcome's head, then
//! accepts the socket and sends it everything without an `await` in
//! between, so no message slips past it or reaches it twice.

use roomcast_protocol::auth::Identity;
use roomcast_protocol::ids::subject_tag;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::{parse_join_reply, JoinRequest};
use serde::Deserialize;
use worker::{Request, Response, Result, WebSocketPair};

use super::{Shard, SHARD_TAG};
use crate::clients;
use crate::context::Ctx;
use crate::headers::{CONN_HEADER, SENT_HEADER};
use crate::internal::{room_stub, Call, Holder, Op};
use crate::reply;
use crate::sends::{self, Frames};

/// What a shard reads from the room's `welcome`.
#[derive(Deserialize)]
struct WelcomeFacts {
    conn_id: String,
    head: u64,
}

impl Shard {
    pub(super) async fn join(
        &self,
        req: &Request,
        ctx: &Ctx,
        identity: Identity,
        index: u32,
    ) -> Result<Response> {
        let query = roomcast_protocol::admission::query(&req.inner().url())
            .into_owned()
            .collect();
        let since = match clients::since(&query) {
            Ok(since) => since,
            Err(refusal) => return reply::refusal(&refusal),
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
            holder: Holder::Shard(index),
            identity: Some(&identity),
            query: "",
            body: Some(serde_json::to_string(&request)?),
        };
        let mut answer = call.send(&room_stub(&self.env, &ctx.room)?).await?;
        if answer.status_code() != 200 {
            // The room's refusal (a limit, a bad `since`), as it is.
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
                // The room counted this connection: it never opened.
                self.left(facts.conn_id);
                return Err(e);
            }
        };
        // No `await` from here until the socket is in: the stream cannot
        // move between what this client is sent and what it gets next.
        let ctx = &ctx.refreshed();
        let first = self.clients.count() == 0;
        let session = Session::new(facts.conn_id, identity, ctx.now);
        let pair = WebSocketPair::new()?;
        self.clients.accept(
            &pair.server,
            &session,
            &[
                &subject_tag(&session.sub),
                &format!("{SHARD_TAG}{index}:{}", ctx.room),
            ],
            ctx.now,
        )?;
        // The welcome, the room's replay and what the stream has since go
        // out in one call.
        let mut frames = Frames::default();
        frames.push(reply.welcome);
        for (_, frame) in &reply.replay {
            frames.push(frame);
        }
        for (_, frame) in &extra {
            frames.push(frame);
        }
        for frame in &reply.presence {
            frames.push(frame);
        }
        sends::send_each(&pair.server, &frames)?;
        self.counters
            .with(|s| s.deliveries_total += (reply.replay.len() + extra.len()) as u64);
        self.with_subscription(|s| {
            if first {
                s.stream.start_at(facts.head);
            }
            s.joins.push(session.conn_id.clone());
        });
        self.alarm
            .no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        clients::upgraded(req, pair.client)
    }

    /// Brings the stream to `head` for the clients already here, and
    /// returns what a client joining at `head` needs beyond it (the stream
    /// may be ahead of the welcome it got). `sent` is where the room last
    /// knew the stream, for a shard that woke without knowing.
    async fn align(&self, ctx: &Ctx, head: u64, sent: Option<u64>) -> Result<Vec<(u64, String)>> {
        let mut extra: Vec<(u64, String)> = Vec::new();
        loop {
            if self.clients.count() == 0 {
                return Ok(Vec::new());
            }
            let Some(delivered) = self.position() else {
                self.with_subscription(|s| s.stream.start_at(sent.unwrap_or(head)));
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
