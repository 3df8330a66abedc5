//! The room's shards and hubs together: what the room asks of all of them
//! at once (keep a frame, count, fan out, tell presence), each kind through
//! its own [`HolderFanout`].

use std::rc::Rc;

use futures_util::future::join;
use roomcast_protocol::presence::{Joined, News};

use super::fanout::HolderFanout;
use super::Room;
use crate::context::Ctx;
use crate::internal::Holder;
use crate::store::Store;

impl Room {
    /// Shards and hubs, each with its own fan-out.
    fn holders(&self) -> [&HolderFanout; 2] {
        [&self.shards, &self.hubs]
    }

    /// The fan-out of `holder`'s kind.
    pub(super) fn fanout_of(&self, holder: Holder) -> &HolderFanout {
        match holder {
            Holder::Shard(_) => &self.shards,
            Holder::Hub(_) => &self.hubs,
        }
    }

    /// Keeps a new message's frame for the shards and hubs, if the room has
    /// used any.
    pub(super) fn remember(&self, store: &Store, seq: u64, frame: String) {
        if !self.holders().iter().any(|h| h.feeds(store)) {
            return;
        }
        let frame: Rc<str> = Rc::from(frame);
        for holder in self.holders() {
            holder.get(store).remember(seq, Rc::clone(&frame));
        }
    }

    /// Connections on shards and hubs, as far as known.
    pub(super) fn held(&self, store: &Store) -> u64 {
        self.holders().iter().map(|h| h.clients(store).0).sum()
    }

    /// Asks every shard and hub whose connections this wake does not know.
    pub(super) async fn count_held(&self, store: &Store, ctx: &Ctx) {
        join(self.shards.count(store, ctx), self.hubs.count(store, ctx)).await;
    }

    /// Whether every shard and hub listed its connections.
    pub(super) fn held_counted(&self, store: &Store) -> bool {
        self.holders().iter().all(|h| h.counted(store))
    }

    /// Connections `sub` holds on shards and hubs (see
    /// [`HolderFanout::open_of`]).
    pub(super) async fn held_by(&self, store: &Store, ctx: &Ctx, sub: &str) -> usize {
        let (shards, hubs) = join(
            self.shards.open_of(store, ctx, sub),
            self.hubs.open_of(store, ctx, sub),
        )
        .await;
        shards + hubs
    }

    /// The connections shards and hubs listed since the last call.
    pub(super) fn take_listed(&self) -> Vec<Joined> {
        let mut listed = self.shards.take_listed();
        listed.extend(self.hubs.take_listed());
        listed
    }

    /// Hands a presence flush to every shard and hub holding connections.
    pub(super) async fn tell_held(&self, store: &Store, room: &str, news: &News) {
        join(
            self.shards.tell(store, room, news),
            self.hubs.tell(store, room, news),
        )
        .await;
    }

    /// Sends every shard and hub what it has not had.
    pub(super) async fn fan_out(&self, store: &Store) {
        join(self.shards.fan_out(store), self.hubs.fan_out(store)).await;
    }
}
