//! An outlet's publishes to one room: its clients' `publish` frames go to
//! the room in arrival order, one request at a time with whatever queued
//! meanwhile, together with the connections that opened and closed there.
//! Each publisher gets the room's answer as the room itself would give it:
//! the ack after its message, or the refusal with the same strikes and
//! closes.

use roomcast_protocol::draft::Draft;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::{forward_has_room, Forward, Forwarded, Outcome as Sequenced};
use roomcast_protocol::ErrorCode;
use worker::{console_warn, Result, WebSocket};

use super::subscription::{Ack, Pending};
use super::{ack_frame, position, send_error, stream, Outlet};
use crate::clients::frames::forgive;
use crate::context::Ctx;
use crate::internal::{room_stub, Call, Holder, Op};

/// A client's publish, for the room; answered when it answers.
pub async fn publish(
    o: &impl Outlet,
    ws: &WebSocket,
    session: &Session,
    ctx: &Ctx,
    draft: Draft,
    reference: Option<String>,
) {
    let bytes = draft.data.get().len();
    let room = o
        .with_subscription(&ctx.room, |s| {
            forward_has_room(s.queue.len(), s.queued_bytes, bytes)
        })
        .unwrap_or(false);
    if !room {
        o.counters().with(|s| s.reject(ErrorCode::RateLimited));
        let _ = send_error(
            o,
            ws,
            &ctx.room,
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
    o.with_subscription(&ctx.room, |s| {
        s.queue.push((forwarded, pending));
        s.queued_bytes += bytes;
    });
    pump(o, ctx).await;
}

/// Sends what queued for the room, one request at a time, until nothing is
/// left or the room fails: the joins and leaves it did not take wait for
/// the object's next event rather than being sent again at once, which
/// would spin for as long as the room keeps failing.
pub async fn pump(o: &impl Outlet, ctx: &Ctx) {
    let room = &ctx.room;
    if o.with_subscription(room, |s| std::mem::replace(&mut s.forwarding, true)) != Some(false) {
        return;
    }
    while let Some((holder, forward, pendings)) = next_forward(o, room) {
        let (joins, leaves, dropped) = (
            forward.joins.clone(),
            forward.leaves.clone(),
            forward.dropped.clone(),
        );
        match send_forward(o, ctx, holder, forward).await {
            Ok(outcomes) if outcomes.len() == pendings.len() => {
                for (outcome, pending) in outcomes.into_iter().zip(pendings) {
                    if let Err(e) = answer(o, ctx, outcome, pending) {
                        console_warn!("room {room}: answering a publish: {e}");
                    }
                }
            }
            other => {
                let error = other.err().map(|e| e.to_string()).unwrap_or_default();
                console_warn!("room {room}: the room did not take forwarded publishes: {error}");
                o.with_subscription(room, |s| {
                    s.joins.extend(joins);
                    s.leaves.extend(leaves);
                    s.dropped.extend(dropped);
                });
                for pending in pendings {
                    let _ = send_error(
                        o,
                        &pending.ws,
                        room,
                        ErrorCode::Internal,
                        "the room did not take this message: publish it again",
                        pending.reference.as_deref(),
                    );
                }
                break;
            }
        }
        catch_up_acks(o, ctx).await;
    }
    o.with_subscription(room, |s| s.forwarding = false);
}

fn next_forward(o: &impl Outlet, room: &str) -> Option<(Holder, Forward, Vec<Pending>)> {
    o.with_subscription(room, |s| {
        if !s.has_news() {
            return None;
        }
        let (publishes, pendings) = std::mem::take(&mut s.queue).into_iter().unzip();
        s.queued_bytes = 0;
        let forward = Forward {
            shard: s.holder.index(),
            publishes,
            joins: std::mem::take(&mut s.joins),
            leaves: std::mem::take(&mut s.leaves),
            dropped: std::mem::take(&mut s.dropped),
        };
        Some((s.holder, forward, pendings))
    })
    .flatten()
}

async fn send_forward(
    o: &impl Outlet,
    ctx: &Ctx,
    holder: Holder,
    forward: Forward,
) -> Result<Vec<Sequenced>> {
    let call = Call {
        op: Op::Forward,
        room: &ctx.room,
        holder,
        identity: None,
        query: "",
        body: Some(serde_json::to_string(&forward)?),
    };
    let text = call.text(&room_stub(o.env(), &ctx.room)?).await?;
    Ok(serde_json::from_str(&text)?)
}

/// Acks waiting for messages no batch has brought yet: fetch those now
/// rather than wait for the push.
async fn catch_up_acks(o: &impl Outlet, ctx: &Ctx) {
    let highest = o
        .with_subscription(&ctx.room, |s| s.waiting.highest())
        .flatten();
    if let Some(highest) = highest.filter(|h| position(o, &ctx.room).is_some_and(|d| d < *h)) {
        if let Err(e) = stream::fill(o, ctx, highest).await {
            console_warn!("room {}: fetching acked messages: {e}", ctx.room);
        }
    }
    stream::release_acks(o, &ctx.room);
}

/// Tells a publisher what the room did with its message.
fn answer(o: &impl Outlet, ctx: &Ctx, outcome: Sequenced, pending: Pending) -> Result<()> {
    let Pending { ws, reference } = pending;
    let clients = o.clients();
    let receipt = match outcome {
        Sequenced::Stored(receipt) => receipt,
        Sequenced::Refused(refusal) => {
            let Some(mut session) = clients.session(&ws)? else {
                return Ok(());
            };
            let refusal = refusal.with_ref(reference);
            let outcome = clients.refused(&ws, &mut session, &refusal, o.frame_room(&ctx.room))?;
            return clients.settle(&ws, &mut session, outcome, ctx.now, false);
        }
    };
    if let Some(mut session) = clients.session(&ws)? {
        let outcome = forgive(&mut session.strikes);
        clients.settle(&ws, &mut session, outcome, ctx.now, false)?;
    }
    let frame = ack_frame(o, &ctx.room, reference.as_deref(), &receipt);
    if receipt.duplicate || position(o, &ctx.room).is_some_and(|d| d >= receipt.seq) {
        return ws.send_with_str(&frame);
    }
    o.with_subscription(&ctx.room, |s| {
        s.waiting.push(receipt.seq, Ack { ws, frame })
    });
    Ok(())
}
