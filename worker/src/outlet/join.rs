//! A connection joining a room through an outlet: the room admits it and
//! builds its welcome and replay; the outlet brings its stream of the room
//! up to the welcome's head ([`ask`]). The object then takes the socket
//! in and sends it everything ([`Admitted::frames`]) without an `await` in
//! between, so no message slips past it or reaches it twice, and records
//! the join ([`joined`]).

use roomcast_protocol::auth::Identity;
use roomcast_protocol::shard::{parse_join_reply, JoinRequest};
use roomcast_protocol::wire::Welcome;
use worker::{Response, Result};

use super::{position, stream, Outlet};
use crate::context::Ctx;
use crate::headers::SENT_HEADER;
use crate::internal::{room_stub, Call, Holder, Op};
use crate::sends::Frames;

/// A join the room admitted.
pub struct Admitted {
    /// The room's join reply ([`parse_join_reply`]).
    reply: String,
    pub welcome: Welcome,
    /// What the stream delivered beyond the welcome's head.
    extra: Vec<(u64, String)>,
}

impl Admitted {
    /// What the connection is sent: `first` (the welcome as the object
    /// words it; by default as the room did), the room's replay, what the
    /// stream has since, then the presence state; and how many of them are
    /// messages.
    pub fn frames(&self, first: Option<&str>) -> Result<(Frames, u64)> {
        let reply = parse_join_reply(&self.reply).map_err(worker::Error::RustError)?;
        let mut frames = Frames::default();
        frames.push(first.unwrap_or(reply.welcome));
        for (_, frame) in &reply.replay {
            frames.push(frame);
        }
        for (_, frame) in &self.extra {
            frames.push(frame);
        }
        for frame in &reply.presence {
            frames.push(frame);
        }
        Ok((frames, (reply.replay.len() + self.extra.len()) as u64))
    }
}

/// Asks the room to admit `request` for `identity`, and aligns the stream:
/// the room's refusal as it answered it, or the admitted join.
pub async fn ask(
    o: &impl Outlet,
    ctx: &Ctx,
    holder: Holder,
    identity: &Identity,
    request: &JoinRequest,
) -> Result<std::result::Result<Admitted, Response>> {
    let call = Call {
        op: Op::Join,
        room: &ctx.room,
        holder,
        identity: Some(identity),
        query: "",
        body: Some(serde_json::to_string(request)?),
    };
    let mut answer = call.send(&room_stub(o.env(), &ctx.room)?).await?;
    if answer.status_code() != 200 {
        return Ok(Err(answer));
    }
    let sent = answer
        .headers()
        .get(SENT_HEADER)?
        .and_then(|v| v.parse().ok());
    let reply = answer.text().await?;
    let welcome: Welcome = {
        let parsed = parse_join_reply(&reply).map_err(worker::Error::RustError)?;
        serde_json::from_str(parsed.welcome)?
    };
    match align(o, ctx, welcome.head, sent).await {
        Ok(extra) => Ok(Ok(Admitted {
            reply,
            welcome,
            extra,
        })),
        Err(e) => {
            // The room counted this connection: it never opened.
            o.with_subscription(&ctx.room, |s| s.leaves.push(request.conn_id.clone()));
            Err(e)
        }
    }
}

/// Records a connection that joined `room` here at the welcome's `head`;
/// `first` when no other socket here was subscribed to it, so the stream
/// starts there.
pub fn joined(o: &impl Outlet, room: &str, first: bool, head: u64, conn_id: &str) {
    o.with_subscription(room, |s| {
        if first {
            s.stream.start_at(head);
        }
        s.joins.push(conn_id.to_owned());
    });
}

/// Brings the stream to `head` for the subscribers already here, and
/// returns what a client joining at `head` needs beyond it (the stream may
/// be ahead of the welcome it got). `sent` is where the room last knew the
/// stream, for an object that woke without knowing.
async fn align(
    o: &impl Outlet,
    ctx: &Ctx,
    head: u64,
    sent: Option<u64>,
) -> Result<Vec<(u64, String)>> {
    let mut extra: Vec<(u64, String)> = Vec::new();
    loop {
        if !o.serves(&ctx.room) {
            return Ok(Vec::new());
        }
        let Some(delivered) = position(o, &ctx.room) else {
            // Served but never placed: a wake lost the position.
            let start = sent.unwrap_or(head);
            if o.with_subscription(&ctx.room, |s| s.stream.start_at(start))
                .is_none()
            {
                return Ok(Vec::new());
            }
            continue;
        };
        let have = extra.last().map_or(head, |(seq, _)| *seq);
        if delivered < head {
            stream::fill(o, ctx, head).await?;
            if position(o, &ctx.room) == Some(delivered) {
                return Err(worker::Error::RustError(
                    "the outlet could not catch up".into(),
                ));
            }
        } else if delivered > have {
            let more = stream::fetch_gap(o, ctx, have, delivered).await?;
            if more.first().is_none_or(|(seq, _)| *seq != have + 1) {
                return Err(worker::Error::RustError(
                    "the room no longer has what the outlet delivered".into(),
                ));
            }
            extra.extend(more);
        } else {
            return Ok(extra);
        }
    }
}
