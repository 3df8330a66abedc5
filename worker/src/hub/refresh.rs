//! A fresh token on a multiplexed connection: checked and taken as on a
//! room ([`Clients::refresh`]), except that rights which no longer allow a
//! room do not close the connection: it leaves that room
//! (`unsubscribed`, reason `forbidden`) and stays in the others.
//!
//! [`Clients::refresh`]: crate::clients::Clients::refresh

use roomcast_protocol::mux::{unsubscribed_frame, Reason};
use roomcast_protocol::session::Session;
use worker::{Result, WebSocket};

use super::Hub;
use crate::clients::frames::Outcome;
use crate::context::Ctx;

impl Hub {
    pub(super) async fn refresh(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        token: &str,
    ) -> Result<Outcome> {
        let outcome = self
            .clients
            .refresh(ws, session, ctx, token, &self.limiter, &self.alarm, |_| {
                true
            })
            .await?;
        // A refused token left the rights as they were, which allow every
        // room the connection is in.
        for room in self.index.revoke(&session.conn_id, &session.rights)? {
            ws.send_with_str(unsubscribed_frame(&room, Reason::Forbidden))?;
        }
        Ok(outcome)
    }
}
