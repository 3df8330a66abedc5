//! What a client sends on a multiplexed connection
//! ([`parse_mux_frame`]): every frame names its room, and what the shard's
//! client frames do for one room ([`crate::clients::frames`]) is done here
//! for the room named, with the same strikes and closes. A `publish` goes
//! to the room's forward, as a shard's does.

use roomcast_protocol::mux::{parse_mux_frame, MuxFrame, MuxRefusal};
use roomcast_protocol::session::Session;
use roomcast_protocol::{ErrorCode, Refusal};
use worker::{Result, WebSocket, WebSocketIncomingMessage};

use super::Hub;
use crate::clients::frames::Outcome;
use crate::context::Ctx;
use crate::outlet::forward;

impl Hub {
    /// A client's frame.
    pub(super) async fn on_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let Some(ctx) = self.ctx()? else {
            return Ok(());
        };
        self.ensure_index()?;
        let Some(mut session) = self.clients.session(ws)? else {
            return Ok(());
        };
        let seen_stale = self.clients.heard(&mut session, &ctx);
        let text = match self.clients.text(ws, message, &mut session)? {
            Ok(text) => text,
            Err(outcome) => {
                return self
                    .clients
                    .settle(ws, &mut session, outcome, ctx.now, seen_stale)
            }
        };
        let parsed = parse_mux_frame(&text, ctx.limits.max_message_bytes, self.max_rooms()?);
        let outcome = match parsed {
            Err(MuxRefusal { refusal, room }) => {
                self.clients
                    .reject(ws, &mut session, &refusal, room.as_deref())?
            }
            Ok(MuxFrame::Subscribe { rooms, reference }) => {
                let (outcome, joins) =
                    self.admit(ws, &mut session, &ctx, rooms, reference, true)?;
                self.clients
                    .settle(ws, &mut session, outcome, ctx.now, seen_stale)?;
                self.join_all(ws, &session, joins).await;
                return Ok(());
            }
            Ok(MuxFrame::Unsubscribe { room, reference }) => {
                self.unsubscribe(ws, &mut session, &ctx, &room, reference)?
            }
            Ok(MuxFrame::Publish {
                room,
                draft,
                reference,
            }) => {
                let room_ctx = Ctx::of(&self.env, &room)?;
                match self.may_publish(&session, &room_ctx, text.len()) {
                    Err(refusal) => self.clients.reject(
                        ws,
                        &mut session,
                        &refusal.with_ref(reference),
                        Some(&room),
                    )?,
                    Ok(()) => {
                        self.clients.settle(
                            ws,
                            &mut session,
                            Outcome::Keep,
                            ctx.now,
                            seen_stale,
                        )?;
                        // The room answers, and its answer strikes or
                        // forgives as the room's own object would.
                        forward::publish(self, ws, &session, &room_ctx, draft, reference).await;
                        return Ok(());
                    }
                }
            }
            Ok(MuxFrame::Auth { token }) => self.refresh(ws, &mut session, &ctx, &token).await?,
        };
        self.clients
            .settle(ws, &mut session, outcome, ctx.now, seen_stale)
    }

    /// Whether the connection may publish a frame of `bytes` to the room of
    /// `room_ctx`: it must be in it, its token must allow it, and the frame
    /// must fit the room's own `max_message_bytes` (a room policy may set
    /// it below the connection's, which is all the frame was read against).
    fn may_publish(
        &self,
        session: &Session,
        room_ctx: &Ctx,
        bytes: usize,
    ) -> std::result::Result<(), Refusal> {
        let room: &str = &room_ctx.room;
        if !self.index.holds(&session.conn_id, room) {
            return Err(Refusal::new(
                ErrorCode::NotSubscribed,
                "subscribe to this room before publishing to it",
            ));
        }
        if !session.rights.can_publish(room) {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "this token may not publish to this room",
            ));
        }
        let limit = room_ctx.limits.max_message_bytes;
        if bytes > limit {
            return Err(Refusal::new(
                ErrorCode::TooLarge,
                format!("{bytes} bytes is over this room's limit of {limit}"),
            ));
        }
        Ok(())
    }
}
