//! What a client sends on its WebSocket (docs/protocol.md, "Client
//! frames"): `auth`, the text `ping`, and everything that is not a valid
//! frame, which is refused with a code; a `publish` is handed back to the
//! object that holds the socket ([`Step::Publish`]), which knows where it
//! goes.
//!
//! A frame starts from the connection's [`Session`] as its object last read
//! or wrote it, and writes it to the socket's attachment only when
//! something that must survive hibernation changed (its token, its strikes,
//! a last-seen time a quarter of the idle timeout old): a steady stream of
//! publishes writes no attachment at all.

use std::borrow::Cow;
use std::cell::RefCell;

use roomcast_protocol::draft::Draft;
use roomcast_protocol::policy::Strikes;
use roomcast_protocol::rate::{Admission, Limiter};
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::{parse_client_frame, ClientFrame, ServerFrame};
use roomcast_protocol::{CloseCode, ErrorCode, Refusal};
use worker::{Result, WebSocket, WebSocketIncomingMessage};

use super::Clients;
use crate::alarm::Alarm;
use crate::context::Ctx;

/// What a handled frame asks of the connection.
pub enum Outcome {
    /// Nothing to remember.
    Keep,
    /// The session changed: save it.
    Save,
    Close(CloseCode),
}

/// Where a client's frame stands once read.
pub enum Step {
    /// Handled here.
    Done(Outcome),
    /// A `publish` the client may make, for the holder of the socket.
    Publish {
        draft: Draft,
        reference: Option<String>,
    },
}

impl Clients {
    /// The open session of `ws`; a socket whose state is lost is closed.
    pub fn session(&self, ws: &WebSocket) -> Result<Option<Session>> {
        let Some(session) = self.load(ws)? else {
            let _ = ws.close(
                Some(CloseCode::Internal.code()),
                Some("connection state lost"),
            );
            return Ok(None);
        };
        Ok(Some(session).filter(|s| !s.closed))
    }

    /// Records a sign of life; `true` when the attachment's copy has grown
    /// stale enough to be saved.
    pub fn heard(&self, session: &mut Session, ctx: &Ctx) -> bool {
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

    /// Reads one frame of `session`'s client. `limiter` and `alarm` are the
    /// object's: a token refresh draws on the budget and moves deadlines.
    pub async fn read(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        session: &mut Session,
        ctx: &Ctx,
        limiter: &RefCell<Limiter>,
        alarm: &Alarm,
    ) -> Result<Step> {
        let text = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                // Only reached when the auto-response is not installed.
                ws.send_with_str("pong")?;
                return Ok(Step::Done(Outcome::Keep));
            }
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                let refusal = Refusal::new(
                    ErrorCode::BadFormat,
                    "binary frames are not supported; send JSON text",
                );
                return self.reject(ws, session, &refusal).map(Step::Done);
            }
        };
        let outcome = match parse_client_frame(&text, ctx.limits.max_message_bytes) {
            Ok(ClientFrame::Publish { draft, reference }) => {
                if !session.rights.can_publish(&ctx.room) {
                    let refusal = Refusal::new(
                        ErrorCode::Forbidden,
                        "this token may not publish to this room",
                    )
                    .with_ref(reference);
                    self.reject(ws, session, &refusal)?
                } else {
                    return Ok(Step::Publish { draft, reference });
                }
            }
            Ok(ClientFrame::Auth { token }) => {
                self.refresh(ws, session, ctx, &token, limiter, alarm)
                    .await?
            }
            Err(refusal) => self.reject(ws, session, &refusal)?,
        };
        Ok(Step::Done(outcome))
    }

    /// Does what a handled frame asked of its connection; `seen_stale`
    /// saves the session even when nothing else changed.
    pub fn settle(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        outcome: Outcome,
        now: u64,
        seen_stale: bool,
    ) -> Result<()> {
        match outcome {
            Outcome::Close(code) => self.close(ws, session, code, now).map(|_| ()),
            Outcome::Save => self.keep(ws, session),
            Outcome::Keep if seen_stale => self.keep(ws, session),
            Outcome::Keep => Ok(()),
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
        limiter: &RefCell<Limiter>,
        alarm: &Alarm,
    ) -> Result<Outcome> {
        let admission = limiter
            .borrow_mut()
            .admit(&session.sub, 1, &ctx.limits, ctx.now);
        if admission != Admission::Accepted {
            let close = matches!(admission, Admission::Close { .. });
            let retry_after_ms = admission.retry_after_ms().unwrap_or(0);
            return self.refused(ws, session, &Refusal::rate_limited(retry_after_ms, close));
        }
        let identity = match ctx.settings.verifier.verify(token, ctx.now) {
            Ok(identity) => identity,
            Err(e) => {
                return self.reject(
                    ws,
                    session,
                    &Refusal::new(ErrorCode::BadToken, e.to_string()),
                )
            }
        };
        if identity.sub != session.sub {
            return self.reject(
                ws,
                session,
                &Refusal::new(ErrorCode::BadToken, "token is for another subject"),
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
        alarm
            .no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        Ok(Outcome::Save)
    }

    /// Answers a publish (or refresh) the room refused. Over the rate
    /// budget is no strike: the client is told when to try again, and
    /// closed (`close`) when it kept sending over it.
    pub fn refused(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        refusal: &Refusal,
    ) -> Result<Outcome> {
        if refusal.code != ErrorCode::RateLimited {
            return self.reject(ws, session, refusal);
        }
        self.counters.with(|s| s.reject(refusal.code));
        if let Some(close) = refusal.close {
            return Ok(Outcome::Close(close));
        }
        send_refusal(ws, refusal)?;
        Ok(Outcome::Keep)
    }

    /// Refuses a frame: a strike, and the close when the client has used
    /// up its strikes (or at once for a frame too large to read).
    pub fn reject(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        refusal: &Refusal,
    ) -> Result<Outcome> {
        self.counters.with(|s| s.reject(refusal.code));
        send_refusal(ws, refusal)?;
        if let Some(close) = refusal.close {
            return Ok(Outcome::Close(close));
        }
        Ok(if session.strikes.violation() {
            Outcome::Close(CloseCode::PolicyViolation)
        } else {
            Outcome::Save
        })
    }
}

/// An accepted frame forgives earlier mistakes; the session needs saving
/// only if there were any.
pub fn forgive(strikes: &mut Strikes) -> Outcome {
    if strikes.0 == 0 {
        Outcome::Keep
    } else {
        strikes.clear();
        Outcome::Save
    }
}

/// Tells the client of a refusal, with its `ref`.
fn send_refusal(ws: &WebSocket, refusal: &Refusal) -> Result<()> {
    send_error(
        ws,
        refusal.code,
        &refusal.message,
        refusal.reference.as_deref(),
    )
}

pub fn send_error(
    ws: &WebSocket,
    code: ErrorCode,
    message: &str,
    reference: Option<&str>,
) -> Result<()> {
    ws.send_with_str(
        ServerFrame::Error {
            room: None,
            code,
            message: message.into(),
            reference: reference.map(Cow::Borrowed),
        }
        .to_json(),
    )
}
