//! The feed of the bridge's room link: every message after the bridge's
//! cursor that did not come from Kafka, in order, through a window of at
//! most [`WINDOW`] messages beyond the cursor and no more than one turn's
//! byte budget per step, so a long outbox never makes one turn huge and a
//! slow bridge is not flooded. A caught-up feed sends each new message as it
//! is stored, with the frame the clients got; one that is behind pages from
//! the history.

use std::borrow::Cow;

use roomcast_protocol::draft::Origin;
use roomcast_protocol::history::TURN_BYTES;
use roomcast_protocol::wire::{Message, ServerFrame};
use worker::{Result, WebSocket};

use crate::context::Ctx;
use crate::store::Store;

/// The most messages beyond the bridge's cursor the link carries at once.
const WINDOW: u64 = 1000;

/// The open link as this wake of the room knows it.
pub(super) enum LinkCache {
    /// Not looked up since the room woke.
    Unknown,
    None,
    Open(Feed),
}

/// Where the feed of the open link stands (memory only: after a wake the
/// feed restarts from the cursor, so what was in flight may be sent again,
/// which at-least-once delivery allows).
pub(super) struct Feed {
    pub(super) ws: WebSocket,
    /// Every message up to this seq has been sent or skipped (Kafka's).
    sent: u64,
    /// The highest seq actually sent.
    relayed: u64,
    /// What the last `stats` frame reported (the counters' version and the cursor).
    pub(super) stats_version: Option<(u64, u64)>,
}

impl Feed {
    /// A feed starting at the bridge's cursor.
    pub(super) fn at(ws: WebSocket, cursor: u64) -> Feed {
        Feed {
            ws,
            sent: cursor,
            relayed: cursor,
            stats_version: None,
        }
    }
}

impl Feed {
    /// Hands a just-stored message to the link: sent at once when the feed
    /// is caught up and the window open; `false` when the feed is behind,
    /// for [`Feed::pump`].
    pub(super) fn relay(
        &mut self,
        store: &Store,
        ctx: &Ctx,
        message: &Message,
        frame: &str,
    ) -> bool {
        let open = message.seq.saturating_sub(store.cursor()) <= WINDOW;
        if self.sent + 1 != message.seq || !open {
            return false;
        }
        if message.origin != Origin::Kafka {
            // A failed send leaves the message above the cursor: the next
            // link replays it, so nothing is lost.
            if let Err(e) = self.ws.send_with_str(frame) {
                worker::console_warn!("room {}: the bridge link refused a frame: {e}", ctx.room);
            }
            self.relayed = message.seq;
        }
        self.sent = message.seq;
        true
    }

    /// Sends what the window allows of the messages the feed has not sent
    /// yet, within one turn's byte budget.
    pub(super) fn pump(&mut self, store: &Store, ctx: &Ctx) -> Result<()> {
        let mut bytes = 0u64;
        while self.sent < store.head() && bytes < TURN_BYTES {
            let room_in_window = (store.cursor() + WINDOW).saturating_sub(self.sent);
            if room_in_window == 0 {
                break;
            }
            let page = store.after(&ctx.room, self.sent, room_in_window, true)?;
            for message in &page.messages {
                let frame = ServerFrame::Message(Cow::Borrowed(message)).to_json();
                bytes += frame.len() as u64;
                self.ws.send_with_str(&frame)?;
                self.relayed = message.seq;
            }
            // Kafka's messages in the page were passed over, not sent.
            self.sent = page.through;
        }
        Ok(())
    }

    /// Moves the cursor over what the link only skipped (messages from
    /// Kafka) once everything it sent is confirmed: otherwise a room whose
    /// last messages came from Kafka would look pending forever.
    pub(super) fn skip_confirmed(&self, store: &Store) -> Result<()> {
        if self.relayed <= store.cursor() && self.sent > store.cursor() {
            store.confirm(self.sent)?;
        }
        Ok(())
    }
}
