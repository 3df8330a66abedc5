//! The room's shards ([`crate::shard`], docs/internals.md, "Sharding") as the room sees
//! them: where a connection goes once the room holds `ROOM_SHARD_SIZE`, how
//! many connections each holds, and the fan-out that sends every shard the
//! room's new messages.
//!
//! The room's work per message is one batch per shard holding connections,
//! whatever the number of subscribers: each shard delivers to its own. A
//! shard's batch waits while the one before is in flight, so under load a
//! batch carries many messages. The fan-out runs after each event, so an
//! HTTP publish is answered once the shards have its message: a publisher
//! gets backpressure, not an unbounded queue in the room.
//!
//! [`ShardFanout`] is one value with the room's [`Fanout`] (the rules, in
//! `roomcast_protocol::shard`); it reads the room's history for the head
//! and the number of shards the room has used, and nothing else of it.

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
use crate::internal::{shard_stub, Call, Holder, Op};
use crate::store::Store;

/// Attempts at a batch a shard keeps failing before the room stops trying
/// until its next message (the shard fills the gap from history then).
const DELIVERY_ATTEMPTS: u32 = 5;

pub(super) struct ShardFanout {
    env: Env,
    counters: Rc<Counters>,
    fanout: RefCell<Option<Fanout>>,
    /// Connections the shards listed since the room's presence last took
    /// them ([`ShardFanout::take_listed`]).
    listed: RefCell<Vec<Joined>>,
}

impl ShardFanout {
    pub fn new(env: &Env, counters: Rc<Counters>) -> ShardFanout {
        ShardFanout {
            env: env.clone(),
            counters,
            fanout: RefCell::new(None),
            listed: RefCell::new(Vec::new()),
        }
    }

    /// The fan-out, set up on first use after a wake with every shard the
    /// room has used, each presumed to have had everything up to the head
    /// the room woke with (not what this wake stored since: its first
    /// publish may come before anything asks for the fan-out).
    pub fn get<'a>(&'a self, store: &Store) -> RefMut<'a, Fanout> {
        let (count, head) = (store.facts().shard_count(), store.woke_at());
        RefMut::map(self.fanout.borrow_mut(), |slot| {
            slot.get_or_insert_with(|| Fanout::woken(count, head))
        })
    }

    /// Forgets every shard (the room's storage was deleted).
    pub fn forget(&self) {
        *self.fanout.borrow_mut() = None;
    }

    /// Keeps a new message's frame for the shards, if the room has any.
    pub fn remember(&self, store: &Store, seq: u64, frame: String) {
        let mut fanout = self.get(store);
        if !fanout.shards().is_empty() {
            fanout.remember(seq, Rc::from(frame));
        }
    }

    /// Connections and shards in use, for `/stats` and for retiring.
    pub fn clients(&self, store: &Store) -> (u64, u64) {
        let fanout = self.get(store);
        (fanout.clients(), fanout.in_use())
    }

    /// Where a joining connection of `sub` goes, the room holding `own`
    /// connections: `None` for the room itself, else the shard and the
    /// `conn_id` it is admitted under there (it counts from now on, see
    /// [`roomcast_protocol::shard::Connections`]). A room that woke asks its
    /// shards how full they are first; a shard that did not answer is not
    /// placed on.
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
        self.get(store)
            .admit(&conn_id, index, sub, store.head(), now);
        store
            .facts()
            .set_shard_count(store.facts().shard_count().max(index + 1))?;
        Ok(Some((index, conn_id)))
    }

    /// Whether the room knows how many connections each shard holds.
    pub fn counted(&self, store: &Store) -> bool {
        self.get(store).counted()
    }

    /// Connections the subject holds on shards: what they accepted, and
    /// what the room admitted there in the last moments. A room that woke
    /// asks its shards first.
    pub async fn open_of(&self, store: &Store, ctx: &Ctx, sub: &str) -> usize {
        if !self.counted(store) {
            self.count(store, ctx).await;
        }
        self.get(store).subject(sub, now_ms()) as usize
    }

    /// Asks every shard whose connections this wake does not know.
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
                Err(e) => console_warn!("room {}: shard {index} did not answer: {e}", ctx.room),
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
        let call = Call {
            op,
            room,
            holder: Holder::Shard(index),
            identity: None,
            query: "",
            body,
        };
        let text = call.text(&shard_stub(&self.env, room, index)?).await?;
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

    /// The connections shards listed since the last call, for the room's
    /// presence to count without telling anyone.
    pub fn take_listed(&self) -> Vec<Joined> {
        std::mem::take(&mut *self.listed.borrow_mut())
    }

    /// Hands a presence flush to every shard holding connections, each on
    /// its own; a shard that misses one is behind until the next (its
    /// clients' counts and members are state, which the next flush or a
    /// reconnect brings back).
    pub async fn tell(&self, store: &Store, room: &str, news: &News) {
        let shards: Vec<u32> = {
            let fanout = self.get(store);
            (0..fanout.shards().len() as u32)
                .filter(|i| fanout.connections().on(*i) > 0)
                .collect()
        };
        if shards.is_empty() {
            return;
        }
        let Ok(body) = serde_json::to_string(news) else {
            return;
        };
        let calls = shards
            .iter()
            .map(|i| self.ask(room, *i, Op::Presence, Some(body.clone())));
        let answers = join_all(calls).await;
        for (index, answer) in shards.iter().copied().zip(answers) {
            match answer {
                Ok(report) => self.take_report(store, index, &report, false),
                Err(e) => {
                    console_warn!("room {room}: telling shard {index} of presence failed: {e}")
                }
            }
        }
    }

    /// Sends every shard what it has not had, each on its own.
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
            match self.ask(room, index, Op::Deliver, Some(body)).await {
                Ok(report) => {
                    failures = 0;
                    self.take_report(store, index, &report, true);
                }
                Err(e) => {
                    self.get(store).failed(index);
                    failures += 1;
                    console_warn!(
                        "room {room}: delivering to shard {index} failed ({failures}): {e}"
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

/// A shard's list of connections as presence counts them: members with what
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
