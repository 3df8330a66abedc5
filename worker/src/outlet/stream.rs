//! An outlet's stream of one room's messages: the batches the room pushes,
//! delivered once each and in order by [`Stream`], and what a batch skipped
//! over, fetched from the room before anything newer. What the room no
//! longer stores cannot be fetched: the outlet then closes that room's
//! subscribers (1011) and they resume, told of the gap like any client that
//! fell behind. Acks of the outlet's own publishers are released here, once
//! their message is out.
//!
//! [`Stream`]: roomcast_protocol::shard::Stream

use roomcast_protocol::shard::{parse_batch, ShardReport, Step};
use roomcast_protocol::CloseCode;
use worker::{console_warn, Request, Response, Result};

use super::{position, Outlet};
use crate::context::Ctx;
use crate::internal::{room_stub, Call, Op};
use crate::reply;
use crate::sends::Frames;

/// A batch from the room.
pub async fn deliver(o: &impl Outlet, mut req: Request, ctx: &Ctx) -> Result<Response> {
    let text = req.text().await?;
    let batch = parse_batch(&text).map_err(worker::Error::RustError)?;
    let mut frames = batch.frames.iter().peekable();
    // What the stream takes, sent in one call before a gap is filled and
    // at the end.
    let mut out = Frames::default();
    while let Some((seq, frame)) = frames.peek() {
        match step(o, &ctx.room, *seq, batch.prev) {
            Step::Deliver => {
                out.push(frame);
                frames.next();
            }
            Step::Skip => {
                frames.next();
            }
            Step::Gap { .. } => {
                o.broadcast(&ctx.room, &std::mem::take(&mut out));
                fill(o, ctx, seq - 1).await?;
            }
        }
    }
    o.broadcast(&ctx.room, &out);
    release_acks(o, &ctx.room);
    report(o, &ctx.room, false)
}

fn step(o: &impl Outlet, room: &str, seq: u64, prev: Option<u64>) -> Step {
    o.with_subscription(room, |s| s.stream.step(seq, prev))
        .unwrap_or(Step::Skip)
}

/// Stored messages after `after` up to `until`, from the room (as many as
/// it sends at once).
pub async fn fetch_gap(
    o: &impl Outlet,
    ctx: &Ctx,
    after: u64,
    until: u64,
) -> Result<Vec<(u64, String)>> {
    let Some(holder) = o.with_subscription(&ctx.room, |s| s.holder) else {
        return Err(worker::Error::RustError(format!(
            "room {} is not served here",
            ctx.room
        )));
    };
    let query = format!("?after={after}&until={until}");
    let call = Call {
        op: Op::Gap,
        room: &ctx.room,
        holder,
        identity: None,
        query: &query,
        body: None,
    };
    let text = call.text(&room_stub(o.env(), &ctx.room)?).await?;
    let batch = parse_batch(&text).map_err(worker::Error::RustError)?;
    Ok(batch
        .frames
        .into_iter()
        .map(|(seq, frame)| (seq, frame.to_owned()))
        .collect())
}

/// Delivers what the stream misses up to `until`, fetched from the room;
/// closes the room's subscribers if the room no longer has it.
pub async fn fill(o: &impl Outlet, ctx: &Ctx, until: u64) -> Result<()> {
    while let Some(delivered) = position(o, &ctx.room).filter(|d| *d < until) {
        let frames = fetch_gap(o, ctx, delivered, until).await?;
        // Nothing at all after the position (every message aged out) is
        // lost as surely as a later first one; asking again would loop.
        let first = frames.first().map(|(seq, _)| *seq);
        if first.is_none_or(|first| first > position(o, &ctx.room).unwrap_or(0) + 1) {
            lost(o, ctx, until);
            return Ok(());
        }
        let mut out = Frames::default();
        for (seq, frame) in &frames {
            if step(o, &ctx.room, *seq, None) == Step::Deliver {
                out.push(frame);
            }
        }
        o.broadcast(&ctx.room, &out);
    }
    Ok(())
}

/// The room no longer stores messages its subscribers here missed: they
/// resume, and are told of the gap there. Their ends reach the room with
/// the object's next forward, as every end does.
fn lost(o: &impl Outlet, ctx: &Ctx, until: u64) {
    console_warn!(
        "room {}: an outlet missed messages the room no longer stores; closing its subscribers so they resume",
        ctx.room
    );
    for (ws, mut session) in o.subscribers(&ctx.room) {
        let _ = o
            .clients()
            .close(&ws, &mut session, CloseCode::Internal, ctx.now);
    }
    o.with_subscription(&ctx.room, |s| s.stream.start_at(until));
}

/// Where the outlet stands in `room`, with its counters since the last
/// report; with `list`, every connection it holds there (for a room that
/// woke), and which of them are members, with what they show.
pub fn report(o: &impl Outlet, room: &str, list: bool) -> Result<Response> {
    let sessions = if list {
        o.subscribers(room)
    } else {
        Vec::new()
    };
    let members = sessions
        .iter()
        .map(|(_, s)| s.joined(room))
        .filter(|j| j.shown)
        .collect();
    let connections = list.then(|| {
        sessions
            .into_iter()
            .map(|(_, s)| (s.conn_id, s.sub))
            .collect()
    });
    let report = ShardReport {
        delivered: position(o, room),
        stats: o.take_stats(room),
        connections,
        members,
    };
    reply::json(200, &report)
}

/// Sends the acks whose messages the room's subscribers here now have.
pub fn release_acks(o: &impl Outlet, room: &str) {
    let Some(delivered) = position(o, room) else {
        return;
    };
    for ack in o
        .with_subscription(room, |s| s.waiting.due(delivered))
        .unwrap_or_default()
    {
        // A client gone meanwhile resumes from history.
        let _ = ack.ws.send_with_str(&ack.frame);
    }
}
