//! A room's life with the registry (docs/internals.md, "Retirement"): it
//! registers on its first message (and on the first after it retired), and
//! retires when it has gone quiet ([`roomcast_protocol::lifecycle`]):
//! bridge link closed (4010), out of the registry, alarm stopped, and once
//! its history has aged out, its storage deleted.
//!
//! The registry hears of a room once per lifecycle event, never per
//! message, so one registry serves any number of rooms: its first message,
//! and the first message for the bridge after its link went (the bridge
//! closes links that go idle), paced by [`Reannounce`] while no link comes.

use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::lifecycle::{may_retire, Quiet, Reannounce};
use roomcast_protocol::wire::Registration;
use roomcast_protocol::{ErrorCode, Refusal};
use worker::{console_error, Response, Result};

use super::Room;
use crate::context::Ctx;
use crate::{quota, registry, reply};

/// How soon a failed registration is tried again.
const REGISTER_RETRY_MS: u64 = 5_000;

impl Room {
    /// Tells the registry about this room (its first registration, or an
    /// announcement again, see [`Room::reannounce`]); on failure the alarm
    /// retries.
    pub(super) async fn register_now(&self) {
        let result = async {
            let store = self.store()?;
            let Some(room) = store.facts().name() else {
                return Ok(());
            };
            let registration = Registration {
                room,
                pending: store.pending(),
            };
            registry::register(&self.env, &registration).await?;
            store.facts().set_registered(true)
        }
        .await;
        if let Err(e) = result {
            console_error!(
                "room {}: could not register with the registry: {e}",
                self.name_or_unknown()
            );
            if let Err(e) = self.alarm.no_later_than(now_ms() + REGISTER_RETRY_MS).await {
                console_error!(
                    "room {}: could not schedule a retry: {e}",
                    self.name_or_unknown()
                );
            }
        }
    }

    /// Refuses a request that would create this room when its subject
    /// creates rooms faster than `ROOM_CREATE_PER_MIN` (the subject's
    /// [`quota`]); a room that exists asks nothing. The bridge's token is
    /// not limited: what Kafka brings into rooms is the operator's.
    pub(super) async fn creation_refused(
        &self,
        ctx: &Ctx,
        identity: &Identity,
    ) -> Result<Option<Response>> {
        if identity.rights.bridge || self.store()?.exists() {
            return Ok(None);
        }
        let Some(retry_after_ms) = quota::create_room(&self.env, &identity.sub).await? else {
            return Ok(None);
        };
        self.counters.with(|s| s.reject(ErrorCode::RateLimited));
        let per_min = ctx.settings.config.room_create_per_min;
        reply::refusal(&Refusal {
            retry_after_ms: Some(retry_after_ms),
            ..Refusal::new(
                ErrorCode::RateLimited,
                format!(
                    "this subject creates rooms faster than {per_min} a minute (ROOM_CREATE_PER_MIN)"
                ),
            )
        })
        .map(Some)
    }

    /// A registered room has a message for the bridge and no link: the
    /// registry announces it to its bridge again, at once the first time
    /// and less often while no link comes.
    pub(super) fn reannounce(&self, now_ms: u64) {
        let mut announce = self.announce.get();
        if announce.due(now_ms) {
            self.register.set(true);
        }
        self.announce.set(announce);
    }

    /// Retires the room; deletes its storage when its history has aged out.
    pub(super) async fn retire(&self, ctx: &Ctx) -> Result<()> {
        self.link.retire()?;
        let store = self.store()?;
        if store.facts().registered() {
            // Marked first: a message that arrives while the registry is
            // being told registers the room again after its own turn.
            store.facts().set_registered(false)?;
            registry::retire(&self.env, &ctx.room).await?;
        }
        // The await above let other events in: retire only if it still may.
        let quiet = Quiet {
            clients: (self.clients.count() + self.held(store)) as usize,
            pending: store.pending(),
            last_message_ms: store.last_message_ms()?,
        };
        let now = now_ms();
        if !may_retire(quiet, ctx.limits.room_retire_ms, now) {
            return Ok(());
        }
        store.trim_age(&ctx.limits, now, true)?;
        match store.oldest_ts()? {
            Some(oldest) => {
                // The history outlives the room's activity: one last alarm,
                // when it has aged out, deletes it.
                self.counters.flush(store, now);
                let gone_at =
                    oldest.saturating_add(ctx.limits.history_ttl_secs.saturating_mul(1000));
                self.alarm.set(Some(gone_at)).await
            }
            None => self.delete_storage().await,
        }
    }

    /// Deletes everything the room stored; the next message starts it
    /// afresh under a new epoch.
    async fn delete_storage(&self) -> Result<()> {
        self.alarm.set(None).await?;
        self.state.storage().delete_all().await?;
        self.store()?.forget();
        self.idempotency.forget();
        self.link.forget();
        self.shards.forget();
        self.hubs.forget();
        self.announce.set(Reannounce::default());
        self.counters.reset();
        Ok(())
    }
}
