//! The objects holding the room's sockets for it, as the room sees them:
//! its shards ([`crate::shard`], docs/internals.md, "Sharding"), where a
//! connection goes once the room holds `ROOM_SHARD_SIZE`, and the hubs that
//! hold multiplexed connections subscribed to it; how many connections each
//! holds, and the fan-out that sends each of them the room's new messages.
//!
//! The room's work per message is one batch per object holding connections,
//! whatever the number of subscribers: each delivers to its own. A batch
//! waits while the one before to the same object is in flight, so under load
//! a batch carries many messages. The fan-out runs after each event, so an
//! HTTP publish is answered once the holders have its message: a publisher
//! gets backpressure, not an unbounded queue in the room.
//!
//! A hub is fed, counted and told presence exactly as a shard is, by the
//! same requests; so one type, [`HolderFanout`], serves both, twice over
//! ([`Kind`]): they differ only in how an object is reached and where the
//! room keeps how many it used, and the room places connections on its
//! shards only (a connection chooses its hub before it reaches the room).
//! Each is one value with its own [`Fanout`] (the rules, in
//! `roomcast_protocol::shard`); it reads the room's history for the head
//! and the number of objects the room has used, and nothing else of it.

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::ids;
use roomcast_protocol::presence::{Joined, News};
use roomcast_protocol::shard::{Fanout, Placement, ShardReport};
use worker::{console_warn, Delay, Env, Result};

use crate::context::Ctx;
use crate::counters::Counters;
use crate::internal::{Call, Holder, Op};
use crate::store::Store;

/// Attempts at a batch a holder keeps failing before the room stops trying
/// until its next message (the holder fills the gap from history then).
const DELIVERY_ATTEMPTS: u32 = 5;

/// Which objects a [`HolderFanout`] feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Shards,
    Hubs,
}

impl Kind {
    fn holder(self, index: u32) -> Holder {
        match self {
            Kind::Shards => Holder::Shard(index),
            Kind::Hubs => Holder::Hub(index),
        }
    }

    /// How many of them the room has used.
    fn used(self, store: &Store) -> u32 {
        match self {
            Kind::Shards => store.facts().shard_count(),
            Kind::Hubs => store.facts().hub_count(),
        }
    }

    fn set_used(self, store: &Store, count: u32) -> Result<()> {
        match self {
            Kind::Shards => store.facts().set_shard_count(count),
            Kind::Hubs => store.facts().set_hub_count(count),
        }
    }
}

pub(super) struct HolderFanout {
    kind: Kind,
    env: Env,
    counters: Rc<Counters>,
    fanout: RefCell<Option<Fanout>>,
    /// Connections the holders listed since the room's presence last took
    /// them ([`HolderFanout::take_listed`]).
    listed: RefCell<Vec<Joined>>,
}

impl HolderFanout {
    pub fn new(kind: Kind, env: &Env, counters: Rc<Counters>) -> HolderFanout {
        HolderFanout {
            kind,
            env: env.clone(),
            counters,
            fanout: RefCell::new(None),
            listed: RefCell::new(Vec::new()),
        }
    }

    /// The fan-out, set up on first use after a wake with every holder the
    /// room has used, each presumed to have had everything up to the head
    /// the room woke with (not what this wake stored since: its first
    /// publish may come before anything asks for the fan-out).
    pub fn get<'a>(&'a self, store: &Store) -> RefMut<'a, Fanout> {
        let (count, head) = (self.kind.used(store), store.woke_at());
        RefMut::map(self.fanout.borrow_mut(), |slot| {
            slot.get_or_insert_with(|| Fanout::woken(count, head))
        })
    }

    /// Forgets every holder (the room's storage was deleted).
    pub fn forget(&self) {
        *self.fanout.borrow_mut() = None;
    }

    /// Whether the room has used any of these holders (each is fed until it
    /// says it holds nothing).
    pub fn feeds(&self, store: &Store) -> bool {
        !self.get(store).shards().is_empty()
    }

    /// Connections and holders in use, for `/stats` and for retiring.
    pub fn clients(&self, store: &Store) -> (u64, u64) {
        let fanout = self.get(store);
        (fanout.clients(), fanout.in_use())
    }

    /// Where a joining connection of `sub` goes, the room holding `own`
    /// connections: `None` for the room itself, else the shard and the
    /// `conn_id` it is admitted under there (it counts from now on, see
    /// [`roomcast_protocol::shard::Connections`]). A room that woke asks its
    /// shards how full they are first; a shard that did not answer is not
    /// placed on. Only the shards' fan-out places.
    pub async fn place(
        &self,
        store: &Store,
        ctx: &Ctx,
        own: u64,
        sub: &str,
    ) -> Result<Option<(u32, String)>> {
        let size = ctx.limits.room_shard_size;
        if own < size.max(1) {
            return Ok(None);
        }
        store.create(&ctx.room, &ctx.limits, ctx.settings.config.bridge)?;
        self.count(store, ctx).await;
        let now = now_ms();
        let Placement::Shard(index) = self.get(store).place(own, size, now) else {
            return Ok(None);
        };
        let conn_id = ids::conn_id();
        self.admit(store, &conn_id, index, sub, now)?;
        Ok(Some((index, conn_id)))
    }

    /// The room admitted `conn_id` of `sub` onto holder `index`: it counts
    /// from now on, and the holder is fed after the room's next wake (the
    /// room must exist for that to be stored).
    pub fn admit(
        &self,
        store: &Store,
        conn_id: &str,
        index: u32,
        sub: &str,
        now: u64,
    ) -> Result<()> {
        self.get(store)
            .admit(conn_id, index, sub, store.head(), now);
        self.kind
            .set_used(store, self.kind.used(store).max(index + 1))
    }

    /// Whether the room knows how many connections each holder holds.
    pub fn counted(&self, store: &Store) -> bool {
        self.get(store).counted()
    }

    /// Connections the subject holds on these holders: what they accepted,
    /// and what the room admitted there in the last moments. A room that
    /// woke asks them first.
    pub async fn open_of(&self, store: &Store, ctx: &Ctx, sub: &str) -> usize {
        if !self.counted(store) {
            self.count(store, ctx).await;
        }
        self.get(store).subject(sub, now_ms()) as usize
    }

    /// Asks every holder whose connections this wake does not know.
    pub async fn count(&self, store: &Store, ctx: &Ctx) {
        let unknown = self.get(store).unlisted();
        let answers = join_all(
            unknown
                .iter()
                .map(|i| self.ask(&ctx.room, *i, Op::Count, None)),
        )
        .await;
        for (index, answer) in unknown.into_iter().zip(answers) {
            match answer {
                Ok(report) => self.take_report(store, index, &report, false),
                Err(e) => console_warn!(
                    "room {}: {} did not answer: {e}",
                    ctx.room,
                    self.kind.holder(index)
                ),
            }
        }
    }

    async fn ask(
        &self,
        room: &str,
        index: u32,
        op: Op,
        body: Option<String>,
    ) -> Result<ShardReport> {
        let holder = self.kind.holder(index);
        let call = Call {
            op,
            room,
            holder,
            identity: None,
            query: "",
            body,
        };
        let text = call.text(&holder.stub(&self.env, room)?).await?;
        Ok(serde_json::from_str(&text)?)
    }

    fn take_report(&self, store: &Store, index: u32, report: &ShardReport, batch: bool) {
        if let Some(connections) = &report.connections {
            self.listed
                .borrow_mut()
                .extend(listed_joined(connections, &report.members));
        }
        let mut fanout = self.get(store);
        if batch {
            fanout.delivered(index, report);
        } else {
            fanout.reported(index, report);
        }
        self.counters.with(|s| s.absorb(&report.stats));
    }

    /// The connections holders listed since the last call, for the room's
    /// presence to count without telling anyone.
    pub fn take_listed(&self) -> Vec<Joined> {
        std::mem::take(&mut *self.listed.borrow_mut())
    }

    /// Hands a presence flush to every holder holding connections, each on
    /// its own; one that misses it is behind until the next (its clients'
    /// counts and members are state, which the next flush or a reconnect
    /// brings back).
    pub async fn tell(&self, store: &Store, room: &str, news: &News) {
        let holders: Vec<u32> = {
            let fanout = self.get(store);
            (0..fanout.shards().len() as u32)
                .filter(|i| fanout.connections().on(*i) > 0)
                .collect()
        };
        if holders.is_empty() {
            return;
        }
        let Ok(body) = serde_json::to_string(news) else {
            return;
        };
        let calls = holders
            .iter()
            .map(|i| self.ask(room, *i, Op::Presence, Some(body.clone())));
        let answers = join_all(calls).await;
        for (index, answer) in holders.iter().copied().zip(answers) {
            match answer {
                Ok(report) => self.take_report(store, index, &report, false),
                Err(e) => {
                    console_warn!(
                        "room {room}: telling {} of presence failed: {e}",
                        self.kind.holder(index)
                    )
                }
            }
        }
    }

    /// Sends every holder what it has not had, each on its own.
    pub async fn fan_out(&self, store: &Store) {
        let count = self.get(store).shards().len() as u32;
        if count == 0 {
            return;
        }
        let Some(room) = store.facts().name() else {
            return;
        };
        join_all((0..count).map(|i| self.fan_out_to(store, &room, i))).await;
    }

    async fn fan_out_to(&self, store: &Store, room: &str, index: u32) {
        let mut failures = 0;
        loop {
            let Some(batch) = self.get(store).next_batch(index, store.head()) else {
                return;
            };
            let body = batch.encode();
            if self.kind == Kind::Hubs {
                self.counters.with(|s| s.hub_batches += 1);
            }
            match self.ask(room, index, Op::Deliver, Some(body)).await {
                Ok(report) => {
                    failures = 0;
                    self.take_report(store, index, &report, true);
                }
                Err(e) => {
                    self.get(store).failed(index);
                    failures += 1;
                    console_warn!(
                        "room {room}: delivering to {} failed ({failures}): {e}",
                        self.kind.holder(index)
                    );
                    if failures >= DELIVERY_ATTEMPTS {
                        return;
                    }
                    Delay::from(Duration::from_millis(100 << failures)).await;
                }
            }
        }
    }
}

/// A holder's list of connections as presence counts them: members with what
/// they show, the others as connections only.
fn listed_joined(connections: &[(String, String)], members: &[Joined]) -> Vec<Joined> {
    let members: HashMap<&str, &Joined> = members.iter().map(|m| (m.conn_id.as_str(), m)).collect();
    connections
        .iter()
        .map(|(conn_id, sub)| match members.get(conn_id.as_str()) {
            Some(member) => (*member).clone(),
            None => Joined {
                conn_id: conn_id.clone(),
                sub: sub.clone(),
                shown: false,
                info: None,
            },
        })
        .collect()
}
