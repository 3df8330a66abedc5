//! What a client of the room's own object sends: everything but `publish`
//! is the same on a shard ([`crate::clients`]); a `publish` here takes the
//! one path every message takes ([`super::publish`]) and is acked at once.

use std::borrow::Cow;

use roomcast_protocol::draft::{Draft, Origin};
use roomcast_protocol::session::Session;
use roomcast_protocol::wire::ServerFrame;
use worker::{Result, WebSocket, WebSocketIncomingMessage};

use super::publish::Publisher;
use super::Room;
use crate::clients::frames::{forgive, Outcome, Step};
use crate::context::Ctx;

impl Room {
    pub(super) async fn on_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        ctx: &Ctx,
    ) -> Result<()> {
        let Some(mut session) = self.clients.session(ws)? else {
            return Ok(());
        };
        let seen_stale = self.clients.heard(&mut session, ctx);
        let read = self
            .clients
            .read(ws, message, &mut session, ctx, &self.limiter, &self.alarm)
            .await?;
        let outcome = match read {
            Step::Done(outcome) => outcome,
            Step::Publish { draft, reference } => {
                self.publish_frame(ws, &mut session, ctx, draft, reference)?
            }
        };
        self.clients
            .settle(ws, &mut session, outcome, ctx.now, seen_stale)
    }

    fn publish_frame(
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
        };
        let receipts = match self.publish(ctx, vec![draft], &publisher)? {
            Ok(receipts) => receipts,
            Err(refusal) => {
                return self
                    .clients
                    .refused(ws, session, &refusal.with_ref(reference))
            }
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
}
