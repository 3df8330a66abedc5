//! What a client sends on its WebSocket (docs/protocol.md, "Client
//! frames"): `publish`, `auth`, the text `ping`, and everything else, which
//! is refused with a code.
//!
//! A frame reads the connection's [`Session`] from its attachment and writes
//! it back only when something that must survive hibernation changed (its
//! token, its strikes, a last-seen time a quarter of the idle timeout old):
//! a steady stream of publishes writes no attachment at all.

use std::borrow::Cow;

use roomcast_protocol::policy::Strikes;
use roomcast_protocol::rate::Admission;
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::{
    parse_client_frame, ClientFrame, Draft, Origin, Rejection, ServerFrame,
};
use roomcast_protocol::{CloseCode, ErrorCode};
use worker::{Result, WebSocket, WebSocketIncomingMessage};

use super::publish::{Publisher, Refusal};
use super::{Ctx, Room};
use crate::attachment::Attachment;

/// What a handled frame asks of the connection.
pub(super) enum Outcome {
    /// Nothing to remember.
    Keep,
    /// The session changed: save it.
    Save,
    Close(CloseCode),
}

impl Room {
    pub(super) async fn on_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        ctx: &Ctx,
    ) -> Result<()> {
        let Some(mut session) = Session::load(ws)? else {
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some("connection state lost"),
            );
            return Ok(());
        };
        if session.closed {
            return Ok(());
        }
        let seen_stale = self.heard(&mut session, ctx);
        let outcome = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                // Only reached when the auto-response is not installed.
                ws.send_with_str("pong")?;
                Outcome::Keep
            }
            WebSocketIncomingMessage::String(text) => {
                match parse_client_frame(&text, ctx.limits.max_message_bytes) {
                    Ok(ClientFrame::Publish { draft, reference }) => {
                        self.publish_frame(ws, &mut session, ctx, draft, reference)
                            .await?
                    }
                    Ok(ClientFrame::Auth { token }) => {
                        self.refresh(ws, &mut session, ctx, &token).await?
                    }
                    Err(rejection) => self.reject(ws, &mut session, &rejection)?,
                }
            }
            WebSocketIncomingMessage::Binary(_) => {
                let rejection = Rejection::new(
                    ErrorCode::BadFormat,
                    "binary frames are not supported; send JSON text",
                );
                self.reject(ws, &mut session, &rejection)?
            }
        };
        self.settle(ws, &mut session, outcome, ctx.now, seen_stale)
    }

    /// Does what a handled frame asked of its connection; `seen_stale`
    /// saves the session even when nothing else changed.
    pub(super) fn settle(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        outcome: Outcome,
        now: u64,
        seen_stale: bool,
    ) -> Result<()> {
        match outcome {
            Outcome::Close(code) => self.close(ws, session, code, now),
            Outcome::Save => self.keep(ws, session),
            Outcome::Keep if seen_stale => self.keep(ws, session),
            Outcome::Keep => Ok(()),
        }
    }

    /// Records a sign of life; `true` when the attachment's copy has grown
    /// stale enough to be saved.
    fn heard(&self, session: &mut Session, ctx: &Ctx) -> bool {
        self.seen
            .borrow_mut()
            .insert(session.conn_id.clone(), ctx.now);
        if session.seen_needs_saving(ctx.now, &ctx.timing()) {
            session.last_seen_ms = ctx.now;
            true
        } else {
            false
        }
    }

    async fn publish_frame(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        draft: Draft,
        reference: Option<String>,
    ) -> Result<Outcome> {
        if !session.rights.can_publish(&ctx.room) {
            let rejection = Rejection::new(
                ErrorCode::Forbidden,
                "this token may not publish to this room",
            )
            .with_ref(reference);
            return self.reject(ws, session, &rejection);
        }
        if self.is_shard() {
            // The sequencer answers, and its answer strikes or forgives as
            // the room's own object would (see `forward`).
            self.forward_publish(ws, session, ctx, draft, reference)
                .await;
            return Ok(Outcome::Keep);
        }
        let publisher = Publisher {
            sub: &session.sub,
            bridge: session.rights.bridge,
            origin: Origin::Ws,
        };
        let receipts = match self.publish(ctx, vec![draft], &publisher)? {
            Ok(receipts) => receipts,
            Err(refusal) => return self.refused(ws, session, refusal, reference),
        };
        for receipt in &receipts {
            ws.send_with_str(
                ServerFrame::Ack {
                    reference: reference.as_deref().map(Cow::Borrowed),
                    receipt: Cow::Borrowed(receipt),
                }
                .to_json(),
            )?;
        }
        Ok(forgive(&mut session.strikes))
    }

    /// Answers a publish the room refused.
    fn refused(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        refusal: Refusal,
        reference: Option<String>,
    ) -> Result<Outcome> {
        match refusal {
            Refusal::Limited { close, .. } => {
                self.counters.with(|s| s.reject(ErrorCode::RateLimited));
                if close {
                    return Ok(Outcome::Close(CloseCode::RateLimited));
                }
                send_error(
                    ws,
                    ErrorCode::RateLimited,
                    "slow down: over the rate limit",
                    reference.as_deref(),
                )?;
                Ok(Outcome::Keep)
            }
            other => {
                let (code, message) = other.code_and_message();
                self.reject(
                    ws,
                    session,
                    &Rejection::new(code, message).with_ref(reference),
                )
            }
        }
    }

    /// A fresh token on an open connection. It costs a token of the rate
    /// budget like a publish: refreshing in a loop is limited like
    /// publishing in a loop.
    async fn refresh(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        token: &str,
    ) -> Result<Outcome> {
        let admission = self
            .limiter
            .borrow_mut()
            .admit(&session.sub, 1, &ctx.limits, ctx.now);
        if admission != Admission::Accepted {
            let close = matches!(admission, Admission::Close { .. });
            let refusal = Refusal::Limited {
                retry_after_ms: admission.retry_after_ms().unwrap_or(0),
                close,
            };
            return self.refused(ws, session, refusal, None);
        }
        let identity = match ctx.settings.verifier.verify(token, ctx.now) {
            Ok(identity) => identity,
            Err(e) => {
                return self.reject(
                    ws,
                    session,
                    &Rejection::new(ErrorCode::BadToken, e.to_string()),
                )
            }
        };
        if identity.sub != session.sub {
            return self.reject(
                ws,
                session,
                &Rejection::new(ErrorCode::BadToken, "token is for another subject"),
            );
        }
        if !identity.rights.can_subscribe(&ctx.room) {
            return Ok(Outcome::Close(CloseCode::RightsRevoked));
        }
        // A fresh token does not forgive earlier bad frames: otherwise
        // alternating them with `auth` would never reach the strike limit.
        session.exp = identity.exp;
        session.rights = identity.rights;
        session.warned = false;
        ws.send_with_str(ServerFrame::AuthOk { exp: session.exp }.to_json())?;
        self.alarm_no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        Ok(Outcome::Save)
    }

    pub(super) fn reject(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        rejection: &Rejection,
    ) -> Result<Outcome> {
        self.counters.with(|s| s.reject(rejection.code));
        send_error(
            ws,
            rejection.code,
            &rejection.message,
            rejection.reference.as_deref(),
        )?;
        if rejection.fatal {
            return Ok(Outcome::Close(CloseCode::TooBig));
        }
        Ok(if session.strikes.violation() {
            Outcome::Close(CloseCode::PolicyViolation)
        } else {
            Outcome::Save
        })
    }

    /// Closes a client connection on the room's initiative, counting its
    /// lifetime once.
    pub(super) fn close(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        code: CloseCode,
        now: u64,
    ) -> Result<()> {
        if !session.closed {
            session.closed = true;
            self.counters
                .with(|s| s.connection_seconds.observe(session.lifetime_secs(now)));
            self.count_client(-1);
            self.seen.borrow_mut().remove(&session.conn_id);
            self.shard_left(ws, &session.conn_id);
        }
        self.keep(ws, &*session)?;
        // The socket may already be closing from the other side.
        let _ = ws.close(Some(code.code()), Some(code.reason()));
        Ok(())
    }
}

/// An accepted frame forgives earlier mistakes; the session needs saving
/// only if there were any.
pub(super) fn forgive(strikes: &mut Strikes) -> Outcome {
    if strikes.0 == 0 {
        Outcome::Keep
    } else {
        strikes.clear();
        Outcome::Save
    }
}

pub(super) fn send_error(
    ws: &WebSocket,
    code: ErrorCode,
    message: &str,
    reference: Option<&str>,
) -> Result<()> {
    ws.send_with_str(
        ServerFrame::Error {
            code,
            message: message.into(),
            reference: reference.map(Cow::Borrowed),
        }
        .to_json(),
    )
}
