//! The room's `/stats` (docs/protocol.md, "Stats"): its counters with its
//! state, for operators and for the bridge link's `stats` frames.

use roomcast_protocol::stats::StatsReport;
use worker::{Response, Result};

use super::Room;
use crate::context::Ctx;
use crate::reply;

impl Room {
    /// The counters with the room's current state. Reads nothing from
    /// storage but what was loaded on wake: `/stats` costs the same however
    /// big the room is.
    pub(super) fn stats_report(&self, ctx: &Ctx) -> Result<StatsReport> {
        let store = self.store()?;
        let (_, shards) = self.shards.clients(store);
        let occupancy = self.presence(ctx).occupancy();
        Ok(StatsReport {
            room: ctx.room.to_string(),
            epoch: store.facts().epoch().unwrap_or_default(),
            head: store.head(),
            connections: self.clients.count() + self.held(store),
            users: occupancy.users,
            members: occupancy.members,
            shards,
            cursor: store.cursor(),
            pending: store.pending(),
            counters: self.counters.snapshot(store),
        })
    }

    pub(super) async fn report_stats(&self, ctx: &Ctx) -> Result<Response> {
        self.count_held(self.store()?, ctx).await;
        let mut report = serde_json::to_value(self.stats_report(ctx)?)?;
        report["alarm"] = self.alarm.next().await?.into();
        reply::json(200, &report)
    }
}
