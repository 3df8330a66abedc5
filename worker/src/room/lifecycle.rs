//! A room's life with the registry (docs/protocol.md, "Bridge links"): it
//! registers on its first message (and on the first after it retired), and
//! retires when it has gone quiet ([`roomcast_protocol::lifecycle`]):
//! bridge link closed (4010), out of the registry, alarm stopped, and once
//! its history has aged out, its storage deleted.
//!
//! The registry hears of a room once per lifecycle event, never per
//! message, so one registry serves any number of rooms.

use roomcast_protocol::clock::now_ms;
use roomcast_protocol::lifecycle::{may_retire, Quiet};
use roomcast_protocol::wire::Registration;
use worker::{console_error, Result};

use super::feed::LinkCache;
use super::{Ctx, Room};
use crate::registry;

/// How soon a failed registration is tried again.
const REGISTER_RETRY_MS: u64 = 5_000;

impl Room {
    /// Tells the registry about this room; on failure the alarm retries.
    pub(super) async fn register_now(&self) {
        let result = async {
            let history = self.history()?;
            let Some(room) = history.name().filter(|_| !history.registered()) else {
                return Ok(());
            };
            let registration = Registration {
                room,
                pending: history.pending()?,
            };
            registry::register(&self.env, &registration).await?;
            history.set_registered(true)
        }
        .await;
        if let Err(e) = result {
            console_error!(
                "room {}: could not register with the registry: {e}",
                self.name_or_unknown()
            );
            if let Err(e) = self.alarm_no_later_than(now_ms() + REGISTER_RETRY_MS).await {
                console_error!(
                    "room {}: could not schedule a retry: {e}",
                    self.name_or_unknown()
                );
            }
        }
    }

    /// Retires the room; deletes its storage when its history has aged out.
    pub(super) async fn retire(&self, ctx: &Ctx) -> Result<()> {
        self.retire_links()?;
        let history = self.history()?;
        if history.registered() {
            // Marked first: a message that arrives while the registry is
            // being told registers the room again after its own turn.
            history.set_registered(false)?;
            registry::retire(&self.env, &ctx.room).await?;
        }
        // The await above let other events in: retire only if it still may.
        let quiet = Quiet {
            clients: (self.clients() + self.shard_clients().0) as usize,
            pending: history.pending()?,
            last_message_ms: history.last_message_ms()?,
        };
        let now = now_ms();
        if !may_retire(quiet, ctx.limits.room_retire_ms, now) {
            return Ok(());
        }
        history.trim_age(&ctx.limits, now, true)?;
        match history.oldest_ts()? {
            Some(oldest) => {
                // The history outlives the room's activity: one last alarm,
                // when it has aged out, deletes it.
                self.counters.flush(history, now);
                let gone_at =
                    oldest.saturating_add(ctx.limits.history_ttl_secs.saturating_mul(1000));
                self.set_alarm(Some(gone_at)).await
            }
            None => self.delete_storage().await,
        }
    }

    /// Deletes everything the room stored; the next message starts it
    /// afresh under a new epoch.
    async fn delete_storage(&self) -> Result<()> {
        let storage = self.state.storage();
        storage.delete_alarm().await?;
        storage.delete_all().await?;
        self.alarm_at.set(Some(None));
        self.history()?.forget();
        *self.keys.borrow_mut() = None;
        *self.link.borrow_mut() = LinkCache::None;
        *self.fanout.borrow_mut() = None;
        self.on_shards.borrow_mut().clear();
        self.counters.reset();
        Ok(())
    }
}
