//! The room's presence ([`Presence`], docs/protocol.md, "Presence") as its
//! object keeps it: who is connected to the room, on this object, on its
//! shards and on hubs, and what its subscribers have been told.
//!
//! Nothing of it is stored, so it adds no row per join: after a wake it is
//! rebuilt, on first use, from the sessions of the sockets this object holds
//! (and of those that ended in the event that woke it) and from the lists
//! its shards and hubs send when asked ([`HolderFanout::take_listed`]), all
//! told to nobody, since nothing changed for anyone. Joins and ends mark
//! changes; the flush after an event, or the alarm when the interval is not
//! over, tells the room's own clients, its shards' and hubs' (one request
//! per object) and the bridge.
//!
//! [`HolderFanout::take_listed`]: super::fanout::HolderFanout::take_listed

use std::cell::RefMut;
use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::history::parse_u64;
use roomcast_protocol::presence::{News, Presence, Settings, DEFAULT_PAGE};
use roomcast_protocol::session::Session;
use worker::{Response, Result};

use super::Room;
use crate::clients::{Ended, CLIENT_TAG};
use crate::context::Ctx;
use crate::reply;
use crate::store::Store;

/// The settings presence runs with in this room.
fn settings(ctx: &Ctx) -> Settings {
    Settings {
        interval_ms: ctx.limits.presence_interval_ms,
        grace_ms: ctx.limits.presence_grace_ms,
        members_limit: ctx.limits.presence_members_limit,
    }
}

impl Room {
    /// The presence, built on first use after a wake, with whatever the
    /// shards and hubs listed since it was last asked and every connection that
    /// ended since (which must be known to it before they leave).
    pub(super) fn presence(&self, ctx: &Ctx) -> RefMut<'_, Presence> {
        let ended = self.clients.take_ended();
        RefMut::map(self.presence.borrow_mut(), |slot| {
            let presence = slot.get_or_insert_with(|| {
                let mut presence = Presence::new(settings(ctx));
                for (_, session) in self.clients.open(CLIENT_TAG) {
                    presence.restored(session.joined(&ctx.room));
                }
                for Ended { session, .. } in &ended {
                    presence.restored(session.joined(&ctx.room));
                }
                presence
            });
            for joined in self.take_listed() {
                presence.restored(joined);
            }
            for Ended { session, dropped } in ended {
                if dropped {
                    presence.dropped(&session.conn_id, ctx.now);
                } else {
                    presence.left(&session.conn_id);
                }
            }
            presence
        })
    }

    /// A connection opened, here, on a shard or on a hub.
    pub(super) fn presence_joined(&self, ctx: &Ctx, session: &Session) {
        self.presence(ctx).joined(session.joined(&ctx.room));
    }

    /// Who is here, for a connection that just joined.
    pub(super) fn presence_greeting(&self, ctx: &Ctx, session: &Session) -> Vec<String> {
        let sees = session.rights.can_see_presence(&ctx.room);
        self.presence(ctx).greeting(&ctx.room, sees)
    }

    /// Tells everyone what changed, when the interval allows; otherwise
    /// when the alarm must come back to.
    pub(super) async fn flush_presence(&self, ctx: &Ctx) -> Option<u64> {
        if self.presence.borrow().is_none() && !self.clients.any_ended() {
            return None;
        }
        let (news, due) = {
            let mut presence = self.presence(ctx);
            let news = presence.flush(ctx.now).map(|flush| {
                if let Ok(store) = self.store() {
                    if self.link.presence(store, ctx, &flush, presence.occupancy()) {
                        self.announce_for_presence(store, ctx.now);
                    }
                }
                presence.news(&ctx.room, &flush)
            });
            (news, presence.due_ms())
        };
        if let Some(news) = &news {
            self.tell_presence(ctx, news).await;
        }
        due.filter(|_| self.presence_heard(ctx))
    }

    /// Whether a flush would reach anyone: the room's clients, its shards'
    /// and hubs', or a bridge. A room nobody hears is not woken to flush;
    /// its next event does.
    fn presence_heard(&self, ctx: &Ctx) -> bool {
        let Ok(store) = self.store() else {
            return false;
        };
        self.link.resolve(store);
        self.clients.count() > 0
            || self.held(store) > 0
            || self.link.is_open()
            || ctx.settings.config.bridge
    }

    /// Presence events wait for a bridge that has no link to this room:
    /// a room that never stored a message registers now, one that did is
    /// announced again (paced as for its messages).
    fn announce_for_presence(&self, store: &Store, now: u64) {
        if store.facts().registered() {
            self.reannounce(now);
        } else {
            self.register.set(true);
        }
    }

    async fn tell_presence(&self, ctx: &Ctx, news: &News) {
        if news.is_empty() {
            return;
        }
        self.clients.tell(&ctx.room, news);
        if let Ok(store) = self.store() {
            self.tell_held(store, &ctx.room, news).await;
        }
    }

    /// `GET /v1/rooms/{room}/presence`: a page of members (for a token that
    /// may see them) and the counts, over every object of the room. A page
    /// costs its reader a token of its budget, as a history page does.
    pub(super) async fn read_presence(
        &self,
        ctx: &Ctx,
        identity: &Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let limit = match parse_u64("limit", query.get("limit").map(String::as_str), 0) {
            Ok(0) => DEFAULT_PAGE,
            Ok(n) => n.min(u32::MAX.into()) as usize,
            Err(refusal) => return reply::refusal(&refusal),
        };
        if !identity.rights.bridge {
            if let Err(refusal) = self.admit(ctx, &identity.sub, 1) {
                return self.http_refusal(&refusal);
            }
        }
        self.count_held(self.store()?, ctx).await;
        let page = self.presence(ctx).member_page(
            &ctx.room,
            query.get("after").map(String::as_str),
            limit,
            identity.rights.can_see_presence(&ctx.room),
        );
        reply::json(200, &page)
    }
}
