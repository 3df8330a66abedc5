//! The room's alarm: closes idle and expired connections, warns of expiring
//! tokens ([`crate::clients`]), drives the bridge link's deadlines, trims
//! aged history, retires the room when it has gone quiet, and sets the alarm
//! for the next deadline (or clears it when there is none).

use roomcast_protocol::lifecycle::{may_retire, retire_at, Quiet};
use worker::Result;

use super::publish::count_lost;
use super::Room;

impl Room {
    pub(super) async fn sweep(&self) -> Result<()> {
        let store = self.store()?;
        if !store.exists() {
            // An alarm left over from before the storage was deleted.
            return self.alarm.set(None).await;
        }
        let ctx = self.named_ctx()?;
        let mut next = self.clients.sweep(&ctx)?;
        let mut earliest = |at: u64| next = Some(next.map_or(at, |n: u64| n.min(at)));
        if let Some(at) = self.link.tick(store, &ctx, &|| self.stats_report(&ctx))? {
            earliest(at);
        }
        let lost = store.trim_age(&ctx.limits, ctx.now, true)?;
        count_lost(&self.counters, &ctx, lost);
        if !store.facts().registered() && store.head() > 0 {
            self.register.set(true);
        }
        self.count_held(store, &ctx).await;
        let quiet = Quiet {
            clients: (self.clients.count() + self.held(store)) as usize,
            pending: store.pending(),
            last_message_ms: store.last_message_ms()?,
        };
        if may_retire(quiet, ctx.limits.room_retire_ms, ctx.now) && self.held_counted(store) {
            return self.retire(&ctx).await;
        }
        if quiet.clients == 0 && quiet.pending == 0 {
            earliest(retire_at(quiet.last_message_ms, ctx.limits.room_retire_ms));
        }
        self.alarm.set(next).await
    }
}
