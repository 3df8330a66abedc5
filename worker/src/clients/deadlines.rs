//! What client connections owe in time: the alarm closes those idle past
//! the timeout or past their token's expiry, and warns of expiring tokens.

use roomcast_protocol::session::Due;
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::CloseCode;
use worker::Result;

use super::{Clients, CLIENT_TAG};
use crate::context::Ctx;
use crate::hibernation::last_auto_response_ms;

impl Clients {
    /// Closes idle and expired client connections (they are among
    /// [`Clients::take_ended`]'s) and warns of expiring tokens; returns the
    /// earliest deadline of the connections left open.
    pub fn sweep(&self, ctx: &Ctx) -> Result<Option<u64>> {
        let timing = ctx.timing();
        let mut next: Option<u64> = None;
        for (ws, mut session) in self.open(CLIENT_TAG) {
            let heard = last_auto_response_ms(&self.state, &ws).unwrap_or(0).max(
                self.seen
                    .borrow()
                    .get(&session.conn_id)
                    .copied()
                    .unwrap_or(0),
            );
            if let Some(due) = session.due(heard, &timing, ctx.now) {
                let code = match due {
                    Due::Idle => CloseCode::IdleTimeout,
                    Due::TokenExpired => CloseCode::TokenExpired,
                };
                self.close(&ws, &mut session, code, ctx.now)?;
                continue;
            }
            if session.notice_due_ms().is_some_and(|due| ctx.now >= due) {
                ws.send_with_str(ServerFrame::TokenExpiring { exp: session.exp }.to_json())?;
                session.warned = true;
                self.keep(&ws, &session)?;
            }
            let at = session.next_deadline(heard, &timing);
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        Ok(next)
    }
}
