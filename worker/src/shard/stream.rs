//! A shard's stream of messages: the batches the room pushes, delivered
//! once each and in order by [`Stream`], and what a batch skipped over,
//! fetched from the room before anything newer. What the room no longer
//! stores cannot be fetched: the shard then closes its clients (1011) and
//! they resume, told of the gap like any client that fell behind. Acks of
//! the shard's own publishers are released here, once their message is out.
//!
//! [`Stream`]: roomcast_protocol::shard::Stream

use roomcast_protocol::shard::{parse_batch, ShardReport, Step};
use roomcast_protocol::CloseCode;
use worker::{console_warn, Request, Response, Result};

use super::Shard;
use crate::clients::CLIENT_TAG;
use crate::context::Ctx;
use crate::internal::{room_stub, Call, Holder, Op};
use crate::reply;
use crate::sends::Frames;

impl Shard {
    /// A batch from the room.
    pub(super) async fn deliver(&self, mut req: Request, ctx: &Ctx) -> Result<Response> {
        let text = req.text().await?;
        let batch = parse_batch(&text).map_err(worker::Error::RustError)?;
        let mut frames = batch.frames.iter().peekable();
        // What the stream takes, sent in one call before a gap is filled
        // and at the end.
        let mut out = Frames::default();
        while let Some((seq, frame)) = frames.peek() {
            match self.step(*seq, batch.prev) {
                Step::Deliver => {
                    out.push(frame);
                    frames.next();
                }
                Step::Skip => {
                    frames.next();
                }
                Step::Gap { .. } => {
                    self.clients.broadcast(&std::mem::take(&mut out), None);
                    self.fill(ctx, seq - 1).await?;
                }
            }
        }
        self.clients.broadcast(&out, None);
        self.release_acks();
        self.report(false)
    }

    fn step(&self, seq: u64, prev: Option<u64>) -> Step {
        self.with_subscription(|s| s.stream.step(seq, prev))
            .unwrap_or(Step::Skip)
    }

    /// Stored messages after `after` up to `until`, from the room (as many
    /// as it sends at once).
    pub(super) async fn fetch_gap(
        &self,
        ctx: &Ctx,
        after: u64,
        until: u64,
    ) -> Result<Vec<(u64, String)>> {
        let index = self.with_subscription(|s| s.index).unwrap_or(0);
        let query = format!("?after={after}&until={until}");
        let call = Call {
            op: Op::Gap,
            room: &ctx.room,
            holder: Holder::Shard(index),
            identity: None,
            query: &query,
            body: None,
        };
        let text = call.text(&room_stub(&self.env, &ctx.room)?).await?;
        let batch = parse_batch(&text).map_err(worker::Error::RustError)?;
        Ok(batch
            .frames
            .into_iter()
            .map(|(seq, frame)| (seq, frame.to_owned()))
            .collect())
    }

    /// Delivers what the stream misses up to `until`, fetched from the
    /// room; closes every client if the room no longer has it.
    pub(super) async fn fill(&self, ctx: &Ctx, until: u64) -> Result<()> {
        while let Some(delivered) = self.position().filter(|d| *d < until) {
            let frames = self.fetch_gap(ctx, delivered, until).await?;
            // Nothing at all after the position (every message aged out) is
            // lost as surely as a later first one; asking again would loop.
            let first = frames.first().map(|(seq, _)| *seq);
            if first.is_none_or(|first| first > self.position().unwrap_or(0) + 1) {
                self.lost(ctx, until);
                return Ok(());
            }
            let mut out = Frames::default();
            for (seq, frame) in &frames {
                if self.step(*seq, None) == Step::Deliver {
                    out.push(frame);
                }
            }
            self.clients.broadcast(&out, None);
        }
        Ok(())
    }

    /// The room no longer stores messages this shard's clients missed:
    /// they resume, and are told of the gap there.
    fn lost(&self, ctx: &Ctx, until: u64) {
        console_warn!(
            "room {}: a shard missed messages the room no longer stores; closing its clients so they resume",
            ctx.room
        );
        for (ws, mut session) in self.clients.open(CLIENT_TAG) {
            if let Ok(true) = self
                .clients
                .close(&ws, &mut session, CloseCode::Internal, ctx.now)
            {
                self.left(session.conn_id);
            }
        }
        self.with_subscription(|s| s.stream.start_at(until));
    }

    /// Where the shard stands, with its counters since the last report;
    /// with `list`, every connection it holds (for a room that woke), and
    /// which of them are members, with what they show.
    pub(super) fn report(&self, list: bool) -> Result<Response> {
        let sessions = if list {
            self.clients.open(CLIENT_TAG)
        } else {
            Vec::new()
        };
        let room = self.room().unwrap_or_default();
        let members = sessions
            .iter()
            .map(|(_, s)| s.joined(&room))
            .filter(|j| j.shown)
            .collect();
        let connections = list.then(|| {
            sessions
                .into_iter()
                .map(|(_, s)| (s.conn_id, s.sub))
                .collect()
        });
        let report = ShardReport {
            delivered: self.position(),
            stats: self.counters.take(),
            connections,
            members,
        };
        reply::json(200, &report)
    }

    /// Sends the acks whose messages the shard's clients now have.
    pub(super) fn release_acks(&self) {
        let Some(delivered) = self.position() else {
            return;
        };
        for ack in self
            .with_subscription(|s| s.waiting.due(delivered))
            .unwrap_or_default()
        {
            // A client gone meanwhile resumes from history.
            let _ = ack.ws.send_with_str(&ack.frame);
        }
    }
}
