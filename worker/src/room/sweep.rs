//! The room's alarm: closes idle and expired connections, warns of expiring
//! tokens, drives the bridge link's deadlines, trims aged history, retires
//! the room when it has gone quiet, and sets the alarm for the next deadline
//! (or clears it when there is none). The alarm's time is cached, so an
//! event that only needs it no later than some deadline costs no storage
//! call when it already is.

use roomcast_protocol::lifecycle::{may_retire, retire_at, Quiet};
use roomcast_protocol::session::{Due, Session};
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::CloseCode;
use worker::Result;

use super::{Ctx, Room, CLIENT_TAG};
use crate::attachment::Attachment;
use crate::hibernation::last_auto_response_ms;

impl Room {
    pub(super) async fn sweep(&self) -> Result<()> {
        let history = self.history()?;
        if !history.exists() {
            if self.shard_of().is_some() {
                let ctx = self.named_ctx()?;
                let next = self.sweep_clients(&ctx)?;
                return self.set_alarm(next).await;
            }
            // An alarm left over from before the storage was deleted.
            return self.set_alarm(None).await;
        }
        let ctx = self.named_ctx()?;
        let mut next = self.sweep_clients(&ctx)?;
        let mut earliest = |at: u64| next = Some(next.map_or(at, |n: u64| n.min(at)));
        if let Some(at) = self.link_tick(&ctx)? {
            earliest(at);
        }
        let lost = history.trim_age(&ctx.limits, ctx.now, true)?;
        self.count_lost(&ctx, lost);
        if !history.registered() && history.head() > 0 {
            self.register.set(true);
        }
        self.count_shards(&ctx).await;
        let quiet = Quiet {
            clients: (self.clients() + self.shard_clients().0) as usize,
            pending: history.pending(),
            last_message_ms: history.last_message_ms()?,
        };
        if may_retire(quiet, ctx.limits.room_retire_ms, ctx.now) && self.shards_counted() {
            return self.retire(&ctx).await;
        }
        if quiet.clients == 0 && quiet.pending == 0 {
            earliest(retire_at(quiet.last_message_ms, ctx.limits.room_retire_ms));
        }
        self.set_alarm(next).await
    }

    /// Closes idle and expired client connections and warns of expiring
    /// tokens; returns the next of their deadlines.
    fn sweep_clients(&self, ctx: &Ctx) -> Result<Option<u64>> {
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
                self.keep(&ws, &session)?;
            }
            earliest(session.next_deadline(heard, &timing));
        }
        Ok(next)
    }

    /// Makes sure the alarm fires no later than `at_ms`.
    pub(super) async fn alarm_no_later_than(&self, at_ms: u64) -> Result<()> {
        let known = match self.alarm_at.get() {
            Some(known) => known,
            None => {
                let current = self.state.storage().get_alarm().await?;
                let current = current.filter(|t| *t >= 0).map(|t| t as u64);
                self.alarm_at.set(Some(current));
                current
            }
        };
        if known.is_some_and(|current| current <= at_ms) {
            return Ok(());
        }
        crate::alarm::set(&self.state.storage(), at_ms).await?;
        self.alarm_at.set(Some(Some(at_ms)));
        Ok(())
    }

    /// Sets the alarm to exactly `at` (none: no alarm).
    pub(super) async fn set_alarm(&self, at: Option<u64>) -> Result<()> {
        let storage = self.state.storage();
        match at {
            Some(at_ms) => crate::alarm::set(&storage, at_ms).await?,
            None => storage.delete_alarm().await?,
        }
        self.alarm_at.set(Some(at));
        Ok(())
    }
}
