//! The bridge's room link (docs/internals.md, "Bridge links"): the room as a
//! durable outbox.
//!
//! One link per room; a newer one supersedes the older (4009), so a bridge
//! instance taking over a room never races the previous one. The link is fed
//! every message after the bridge's cursor that did not come from Kafka, in
//! order, through a window ([`Feed`]). `bridge_ack` moves the cursor
//! (which is what lets the room trim) and opens the window again. A link's
//! token is held to its expiry like a client's: the bridge refreshes it with
//! `auth` ([`crate::bridge_token`]), or the alarm closes the link (4001).
//! Counters go out when they changed, at most every [`STATS_INTERVAL_MS`].
//! A room that retires closes its link with 4010.
//!
//! [`BridgeLink`] is the room's link as one value: it reads the room's
//! history and is handed the room's `stats` report when it needs one, and
//! knows nothing else of the room.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use roomcast_protocol::draft::Origin;
use roomcast_protocol::history::TURN_BYTES;
use roomcast_protocol::presence::{Flush, LinkEvents, Occupancy};
use roomcast_protocol::stats::StatsReport;
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame, Message, ServerFrame};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{Result, State, WebSocket, WebSocketIncomingMessage};

use crate::attachment::Attachment;
use crate::bridge_token;
use crate::clients::frames::send_error;
use crate::context::Ctx;
use crate::counters::Counters;
use crate::hibernation;
use crate::store::Store;

/// Tag of bridge links among the room's sockets.
const LINK_TAG: &str = "bridge";
/// How often changed counters go to the bridge at most.
const STATS_INTERVAL_MS: u64 = 10_000;

/// A link's state, in its socket attachment.
#[derive(Debug, Serialize, Deserialize)]
struct Link {
    instance: String,
    /// Expiry of the last token the bridge presented, seconds since the epoch.
    exp: u64,
    last_stats_ms: u64,
    /// Superseded, expired or retired: no more frames go to it.
    closed: bool,
}

impl Attachment for Link {}

/// The room's bridge link.
pub(super) struct BridgeLink {
    /// The room's own handle on its sockets.
    state: State,
    counters: Rc<Counters>,
    cache: RefCell<LinkCache>,
    /// The room's presence events the bridge has not acknowledged.
    presence: RefCell<LinkEvents>,
}

impl BridgeLink {
    pub fn new(state: &State, counters: Rc<Counters>) -> BridgeLink {
        BridgeLink {
            state: hibernation::handle(state),
            counters,
            cache: RefCell::new(LinkCache::Unknown),
            presence: RefCell::new(LinkEvents::default()),
        }
    }

    pub fn is_link(&self, ws: &WebSocket) -> bool {
        hibernation::has_tag(&self.state, ws, LINK_TAG)
    }

    /// Whether a link is open, as far as this wake resolved it.
    pub fn is_open(&self) -> bool {
        matches!(*self.cache.borrow(), LinkCache::Open(_))
    }

    /// Forgets the link (the room's storage was deleted).
    pub fn forget(&self) {
        *self.cache.borrow_mut() = LinkCache::None;
    }

    /// Open links with their state (at most one, unless one is being superseded).
    fn links(&self) -> Vec<(WebSocket, Link)> {
        self.state
            .get_websockets_with_tag(LINK_TAG)
            .into_iter()
            .filter_map(|ws| {
                Link::load(&ws)
                    .ok()
                    .flatten()
                    .filter(|l| !l.closed)
                    .map(|l| (ws, l))
            })
            .collect()
    }

    /// Finds the open link after a wake, once.
    pub fn resolve(&self, store: &Store) {
        if !matches!(*self.cache.borrow(), LinkCache::Unknown) {
            return;
        }
        let found = self
            .links()
            .into_iter()
            .next()
            .map(|(ws, _)| Feed::at(ws, store.cursor()));
        *self.cache.borrow_mut() = found.map_or(LinkCache::None, LinkCache::Open);
    }

    /// Takes a new link of bridge `instance` in, superseding any older
    /// one, with its token's expiry `exp`; returns when the alarm must
    /// first look at it.
    pub fn accept(
        &self,
        ws: &WebSocket,
        instance: String,
        exp: u64,
        store: &Store,
        ctx: &Ctx,
    ) -> Result<u64> {
        for (old_ws, old) in self.links() {
            self.close(&old_ws, old, CloseCode::Superseded)?;
        }
        let link = Link {
            instance,
            exp,
            last_stats_ms: ctx.now,
            closed: false,
        };
        self.state.accept_websocket_with_tags(ws, &[LINK_TAG]);
        self.counters.save(ws, &link)?;
        *self.cache.borrow_mut() = LinkCache::Open(Feed::at(ws.clone(), store.cursor()));
        for frame in self.presence.borrow().unacked() {
            ws.send_with_str(frame)?;
        }
        let close_at = bridge_token::close_at_ms(exp, &ctx.settings);
        Ok(close_at.min(ctx.now + STATS_INTERVAL_MS))
    }

    /// A frame from the bridge.
    pub fn on_frame(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        store: &Store,
        ctx: &Ctx,
    ) -> Result<()> {
        let text = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                return ws.send_with_str("pong")
            }
            WebSocketIncomingMessage::String(text) => text,
            WebSocketIncomingMessage::Binary(_) => {
                return send_error(
                    ws,
                    ErrorCode::BadFormat,
                    "bridge frames are JSON text",
                    None,
                    None,
                )
            }
        };
        match parse_bridge_frame(&text) {
            Ok(BridgeFrame::BridgeAck { seq }) => {
                store.confirm(seq)?;
                self.skip_confirmed(store)?;
                self.pump(store, ctx)
            }
            Ok(BridgeFrame::Auth { token }) => self.refresh(ws, &token, ctx),
            Ok(BridgeFrame::PresenceAck { pseq }) => {
                self.presence.borrow_mut().acked(pseq);
                Ok(())
            }
            Err(rejection) => send_error(ws, rejection.code, &rejection.message, None, None),
        }
    }

    /// Moves the link's expiry to that of a fresh bridge token. No alarm is
    /// needed for the later deadline: the one already set for the old
    /// deadline comes first, and its sweep reads the new expiry.
    fn refresh(&self, ws: &WebSocket, token: &str, ctx: &Ctx) -> Result<()> {
        let Some(mut link) = Link::load(ws)?.filter(|l| !l.closed) else {
            return Ok(());
        };
        bridge_token::refresh(ws, token, &ctx.settings, ctx.now, |exp| {
            link.exp = exp;
            self.counters.save(ws, &link)
        })
    }

    /// A presence flush, for the bridge: sent now when a link is open, and
    /// kept until acknowledged when a link is open or a bridge relays this
    /// deployment; otherwise nobody will ask for it. `true` when it is kept
    /// with no link to take it: the registry must announce the room.
    pub fn presence(&self, store: &Store, ctx: &Ctx, flush: &Flush, occupancy: Occupancy) -> bool {
        self.resolve(store);
        let open = self.is_open();
        if !open && !ctx.settings.config.bridge {
            return false;
        }
        let mut events = self.presence.borrow_mut();
        let frame = events.push(&ctx.room, ctx.now, flush, occupancy);
        if let LinkCache::Open(feed) = &*self.cache.borrow() {
            // A link that cannot take it is closing: the next one gets it.
            let _ = feed.ws.send_with_str(frame);
        }
        !open
    }

    /// Sends the counters to the link if they changed since the last time.
    pub fn send_stats(
        &self,
        store: &Store,
        report: &dyn Fn() -> Result<StatsReport>,
    ) -> Result<()> {
        if !self.stats_stale(store) {
            return Ok(());
        }
        self.skip_confirmed(store)?;
        let version = self.stats_version(store);
        let frame = ServerFrame::Stats(Cow::Owned(report()?)).to_json();
        if let LinkCache::Open(feed) = &mut *self.cache.borrow_mut() {
            feed.ws.send_with_str(&frame)?;
            feed.stats_version = Some(version);
        }
        Ok(())
    }

    /// What a `stats` frame reports changes with: the counters, and the
    /// cursor (a `bridge_ack` moves the cursor and `pending`, no counter).
    fn stats_version(&self, store: &Store) -> (u64, u64) {
        (self.counters.version(), store.cursor())
    }

    /// The alarm's part for links: closes those whose token expired, sends
    /// changed counters to the open one; returns when the next link
    /// deadline is.
    pub fn tick(
        &self,
        store: &Store,
        ctx: &Ctx,
        report: &dyn Fn() -> Result<StatsReport>,
    ) -> Result<Option<u64>> {
        self.resolve(store);
        let mut next = None;
        for (ws, mut link) in self.links() {
            let close_at = bridge_token::close_at_ms(link.exp, &ctx.settings);
            if ctx.now >= close_at {
                self.close(&ws, link, CloseCode::TokenExpired)?;
                continue;
            }
            let stats_due = link.last_stats_ms + STATS_INTERVAL_MS;
            if ctx.now >= stats_due && self.stats_stale(store) {
                self.send_stats(store, report)?;
                link.last_stats_ms = ctx.now;
                self.counters.save(&ws, &link)?;
            }
            self.pump(store, ctx)?;
            // An idle linked room sleeps until its link's token needs
            // checking; new counters bring the next stats tick forward.
            let due = if self.stats_stale(store) {
                close_at.min(link.last_stats_ms + STATS_INTERVAL_MS)
            } else {
                close_at
            };
            next = Some(next.map_or(due, |n: u64| n.min(due)));
        }
        Ok(next)
    }

    /// When new counters should reach the link, if they should.
    pub fn stats_due(&self, store: &Store, now_ms: u64) -> Option<u64> {
        self.stats_stale(store)
            .then_some(now_ms + STATS_INTERVAL_MS)
    }

    /// Whether the open link's last `stats` frame is out of date.
    fn stats_stale(&self, store: &Store) -> bool {
        let version = self.stats_version(store);
        matches!(&*self.cache.borrow(), LinkCache::Open(feed) if feed.stats_version != Some(version))
    }

    /// Closes the link because the room retires.
    pub fn retire(&self) -> Result<()> {
        for (ws, link) in self.links() {
            self.close(&ws, link, CloseCode::Retired)?;
        }
        Ok(())
    }

    fn close(&self, ws: &WebSocket, mut link: Link, code: CloseCode) -> Result<()> {
        link.closed = true;
        self.counters.save(ws, &link)?;
        self.gone(ws);
        // The socket may already be closing from the other side.
        let _ = ws.close(Some(code.code()), Some(code.reason()));
        Ok(())
    }

    /// The link is gone (closed by the room or by the bridge).
    pub fn gone(&self, ws: &WebSocket) {
        let mut cache = self.cache.borrow_mut();
        let gone = match &*cache {
            LinkCache::Open(feed) => feed.ws.as_ref() == ws.as_ref(),
            _ => false,
        };
        if gone {
            *cache = LinkCache::None;
        } else if matches!(*cache, LinkCache::Open(_)) {
            // Another link is open: nothing to forget.
        } else {
            *cache = LinkCache::Unknown;
        }
    }
}

impl BridgeLink {
    /// Hands a just-stored message to the open link's feed, which pumps
    /// from the store when it is behind.
    pub fn relay(&self, store: &Store, ctx: &Ctx, message: &Message, frame: &str) {
        self.resolve(store);
        let mut cache = self.cache.borrow_mut();
        let LinkCache::Open(feed) = &mut *cache else {
            return;
        };
        if !feed.relay(store, ctx, message, frame) {
            if let Err(e) = feed.pump(store, ctx) {
                worker::console_warn!("room {}: feeding the bridge link: {e}", ctx.room);
            }
        }
    }

    /// Sends the open link what its window allows.
    pub fn pump(&self, store: &Store, ctx: &Ctx) -> Result<()> {
        self.resolve(store);
        match &mut *self.cache.borrow_mut() {
            LinkCache::Open(feed) => feed.pump(store, ctx),
            _ => Ok(()),
        }
    }

    fn skip_confirmed(&self, store: &Store) -> Result<()> {
        match &*self.cache.borrow() {
            LinkCache::Open(feed) => feed.skip_confirmed(store),
            _ => Ok(()),
        }
    }
}

/// The most messages beyond the bridge's cursor the link carries at once.
const WINDOW: u64 = 1000;

/// The open link as this wake of the room knows it.
enum LinkCache {
    /// Not looked up since the room woke.
    Unknown,
    None,
    Open(Feed),
}

/// The open link's feed: every message after the bridge's cursor that did
/// not come from Kafka, in order, through a window of at most [`WINDOW`]
/// messages beyond the cursor and no more than one turn's byte budget per
/// step, so a long outbox never makes one turn huge and a slow bridge is
/// not flooded. A caught-up feed sends each new message as it is stored,
/// with the frame the clients got; one that is behind pages from the
/// history.
///
/// It is memory only: after a wake the feed restarts from the cursor, so
/// what was in flight may be sent again, which at-least-once delivery
/// allows.
struct Feed {
    ws: WebSocket,
    /// Every message up to this seq has been sent or skipped (Kafka's).
    sent: u64,
    /// The highest seq actually sent.
    relayed: u64,
    /// What the last `stats` frame reported (the counters' version and the cursor).
    stats_version: Option<(u64, u64)>,
}

impl Feed {
    /// A feed starting at the bridge's cursor.
    fn at(ws: WebSocket, cursor: u64) -> Feed {
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
    fn relay(&mut self, store: &Store, ctx: &Ctx, message: &Message, frame: &str) -> bool {
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
    fn pump(&mut self, store: &Store, ctx: &Ctx) -> Result<()> {
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
    fn skip_confirmed(&self, store: &Store) -> Result<()> {
        if self.relayed <= store.cursor() && self.sent > store.cursor() {
            store.confirm(self.sent)?;
        }
        Ok(())
    }
}
