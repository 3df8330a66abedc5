//! The room's alarm: closes idle and expired connections, warns of expiring
//! tokens, drives the bridge link's deadlines, trims aged history, retires
//! the room when it has gone quiet, and sets the alarm for the next deadline
//! (or clears it when there is none).

use roomcast_protocol::lifecycle::{may_retire, retire_at, Quiet};
use roomcast_protocol::session::{Due, Session};
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::CloseCode;
use worker::Result;

use super::{Room, CLIENT_TAG};
use crate::attachment::Attachment;
use crate::hibernation::last_auto_response_ms;

impl Room {
    pub(super) async fn sweep(&self) -> Result<()> {
        let history = self.history()?;
        if !history.exists() {
            // An alarm left over from before the storage was deleted.
            return self.set_alarm(None).await;
        }
        let ctx = self.named_ctx()?;
        let timing = ctx.timing();
        let mut next: Option<u64> = None;
        let mut earliest = |at: u64| next = Some(next.map_or(at, |n: u64| n.min(at)));
        for ws in self.state.get_websockets_with_tag(CLIENT_TAG) {
            let Some(mut session) = Session::load(&ws)? else {
                continue;
            };
            if session.closed {
                continue;
            }
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
                session.save(&ws)?;
            }
            earliest(session.next_deadline(heard, &timing));
        }
        if let Some(at) = self.link_tick(&ctx)? {
            earliest(at);
        }
        history.trim_age(&ctx.limits, ctx.now, true)?;
        if !history.registered() && history.head() > 0 {
            self.register.set(true);
        }
        let quiet = Quiet {
            clients: self.clients() as usize,
            pending: history.pending()?,
            last_message_ms: history.last_message_ms()?,
        };
        if may_retire(quiet, ctx.limits.room_retire_ms, ctx.now) {
            return self.retire(&ctx).await;
        }
        if quiet.clients == 0 && quiet.pending == 0 {
            earliest(retire_at(quiet.last_message_ms, ctx.limits.room_retire_ms));
        }
        self.set_alarm(next).await
    }
}
