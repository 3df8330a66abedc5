//! Which of a hub's sockets is subscribed to which room. A connection may
//! be in up to `MAX_ROOMS_PER_CONNECTION` rooms, whose names do not fit a
//! socket's attachment (16 KiB), so the pairs live in the hub's SQLite
//! storage (`subscriptions(conn_id, room)`), written as they change; in
//! memory the hub keeps them both ways (a room's sockets for its
//! deliveries, a connection's rooms for its frames), rebuilt from storage
//! on the first event of a wake that needs them.
//!
//! Per room it also keeps the room's [`Subscription`], as a shard keeps its
//! one room's, and the frames delivered there since the room last asked.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use roomcast_protocol::mux::Rooms;
use roomcast_protocol::rights::Rights;
use roomcast_protocol::Refusal;
use serde::Deserialize;
use worker::{Result, WebSocket};

use crate::clients::{Clients, CLIENT_TAG};
use crate::internal::Holder;
use crate::outlet::Subscription;
use crate::storage::Db;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS subscriptions (conn_id TEXT NOT NULL, room TEXT NOT NULL, PRIMARY KEY (conn_id, room)) WITHOUT ROWID";
const SELECT_ALL: &str = "SELECT conn_id, room FROM subscriptions";
const INSERT: &str = "INSERT OR IGNORE INTO subscriptions (conn_id, room) VALUES (?, ?)";
const DELETE: &str = "DELETE FROM subscriptions WHERE conn_id = ? AND room = ?";
const DELETE_CONN: &str = "DELETE FROM subscriptions WHERE conn_id = ?";

/// One room as the hub serves it.
struct Feed {
    subscription: Subscription,
    /// Its subscribers' sockets, by `conn_id`.
    sockets: HashMap<String, WebSocket>,
    /// Frames delivered since the room last took the count.
    deliveries: u64,
    /// Joins under way, waiting for the room: the feed stays for them.
    joining: u32,
}

impl Feed {
    fn new(room: &str, holder: Holder) -> Feed {
        Feed {
            subscription: Subscription::new(room, holder),
            sockets: HashMap::new(),
            deliveries: 0,
            joining: 0,
        }
    }

    /// Nothing here for the room: no subscriber, nothing for it to hear,
    /// no ack waiting for its stream.
    fn idle(&self) -> bool {
        let s = &self.subscription;
        self.sockets.is_empty()
            && self.joining == 0
            && !s.forwarding
            && !s.has_news()
            && s.waiting.highest().is_none()
    }
}

/// One connection: its socket and the rooms it is in (or joining).
struct Conn {
    ws: WebSocket,
    rooms: Rooms,
}

#[derive(Deserialize)]
struct Row {
    conn_id: String,
    room: String,
}

pub struct Index {
    db: Db,
    loaded: Cell<bool>,
    feeds: RefCell<HashMap<String, Feed>>,
    conns: RefCell<HashMap<String, Conn>>,
}

impl Index {
    pub fn new(db: Db) -> Index {
        Index {
            db,
            loaded: Cell::new(false),
            feeds: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
        }
    }

    /// Rebuilds the index from storage and the open sockets, once per wake.
    /// A stored pair whose socket is gone (the hub was evicted before it
    /// heard of the close) is forgotten, and its room told.
    pub fn load(&self, clients: &Clients, holder: Holder, limit: usize) -> Result<()> {
        if self.loaded.get() {
            return Ok(());
        }
        self.db.run(CREATE, Vec::new())?;
        let rows: Vec<Row> = self.db.rows(SELECT_ALL, Vec::new())?;
        let mut conns = self.conns.borrow_mut();
        for (ws, session) in clients.open(CLIENT_TAG) {
            conns.entry(session.conn_id).or_insert_with(|| Conn {
                ws,
                rooms: Rooms::new(limit),
            });
        }
        let mut feeds = self.feeds.borrow_mut();
        for Row { conn_id, room } in rows {
            let feed = feeds
                .entry(room.clone())
                .or_insert_with(|| Feed::new(&room, holder));
            match conns.get_mut(&conn_id) {
                Some(conn) => {
                    conn.rooms.insert(&room);
                    feed.sockets.insert(conn_id, conn.ws.clone());
                }
                None => {
                    self.db.run(DELETE_CONN, vec![conn_id.as_str().into()])?;
                    feed.subscription.leaves.push(conn_id);
                }
            }
        }
        self.loaded.set(true);
        Ok(())
    }

    /// Serves `room` from now on (a request of the room's).
    pub fn serve(&self, room: &str, holder: Holder) {
        self.feed(room, holder, |_| ());
    }

    /// A join of `room` starts (`true`) or ends: the room is served while
    /// one is under way, though no socket is in it yet.
    pub fn joining(&self, room: &str, holder: Holder, starts: bool) {
        self.feed(room, holder, |f| {
            if starts {
                f.joining += 1;
            } else {
                f.joining = f.joining.saturating_sub(1);
            }
        });
    }

    fn feed(&self, room: &str, holder: Holder, f: impl FnOnce(&mut Feed)) {
        let mut feeds = self.feeds.borrow_mut();
        f(feeds
            .entry(room.to_owned())
            .or_insert_with(|| Feed::new(room, holder)));
    }

    /// A new connection, in no room yet.
    pub fn open(&self, conn_id: &str, ws: &WebSocket, limit: usize) {
        self.conns.borrow_mut().insert(
            conn_id.to_owned(),
            Conn {
                ws: ws.clone(),
                rooms: Rooms::new(limit),
            },
        );
    }

    /// Holds a place in `room` for a connection about to join it (`true`:
    /// it held one already, and joins again from another `since`), or
    /// says why it may not.
    pub fn reserve(
        &self,
        conn_id: &str,
        rights: &Rights,
        room: &str,
    ) -> std::result::Result<bool, Refusal> {
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(conn_id) else {
            return Err(Refusal::new(
                roomcast_protocol::ErrorCode::Internal,
                "the connection is not known here",
            ));
        };
        conn.rooms.admit(rights, room)?;
        let held = conn.rooms.contains(room);
        conn.rooms.insert(room);
        Ok(held)
    }

    /// Stops sending `room` to a connection that joins it again, until the
    /// join is done: what it gets next starts with its new `subscribed`.
    pub fn pause(&self, room: &str, conn_id: &str) {
        if let Some(feed) = self.feeds.borrow_mut().get_mut(room) {
            feed.sockets.remove(conn_id);
        }
    }

    /// A connection that was in `room` failed to join it again: it is out
    /// of it, and the room, which still counts it, hears so.
    pub fn abandon(&self, conn_id: &str, room: &str) -> Result<()> {
        self.release(conn_id, room);
        if let Some(feed) = self.feeds.borrow_mut().get_mut(room) {
            feed.subscription.leaves.push(conn_id.to_owned());
        }
        self.db.run(DELETE, vec![conn_id.into(), room.into()])?;
        Ok(())
    }

    /// Gives up a place a join did not take.
    pub fn release(&self, conn_id: &str, room: &str) {
        if let Some(conn) = self.conns.borrow_mut().get_mut(conn_id) {
            conn.rooms.remove(room);
        }
    }

    /// Whether the connection is in `room` (or joining it).
    pub fn holds(&self, conn_id: &str, room: &str) -> bool {
        self.conns
            .borrow()
            .get(conn_id)
            .is_some_and(|c| c.rooms.contains(room))
    }

    /// A connection's socket joined `room`.
    pub fn add(&self, room: &str, holder: Holder, conn_id: &str, ws: &WebSocket) -> Result<()> {
        self.feed(room, holder, |f| {
            f.sockets.insert(conn_id.to_owned(), ws.clone());
        });
        self.db.run(INSERT, vec![conn_id.into(), room.into()])?;
        Ok(())
    }

    /// A connection leaves `room`; `false` when it was not in it.
    pub fn leave(&self, conn_id: &str, room: &str) -> Result<bool> {
        let was_in = self
            .conns
            .borrow_mut()
            .get_mut(conn_id)
            .is_some_and(|c| c.rooms.remove(room));
        if was_in {
            self.drop_socket(room, conn_id, false);
            self.db.run(DELETE, vec![conn_id.into(), room.into()])?;
        }
        Ok(was_in)
    }

    /// The rooms `rights` no longer allow the connection, which it leaves.
    pub fn revoke(&self, conn_id: &str, rights: &Rights) -> Result<Vec<String>> {
        let revoked = self
            .conns
            .borrow_mut()
            .get_mut(conn_id)
            .map(|c| c.rooms.revoke(rights))
            .unwrap_or_default();
        for room in &revoked {
            self.drop_socket(room, conn_id, false);
            self.db
                .run(DELETE, vec![conn_id.into(), room.as_str().into()])?;
        }
        Ok(revoked)
    }

    /// A connection ended (`dropped`: without a close): it leaves every
    /// room it was in.
    pub fn close(&self, conn_id: &str, dropped: bool) -> Result<()> {
        let Some(conn) = self.conns.borrow_mut().remove(conn_id) else {
            return Ok(());
        };
        for room in conn.rooms.iter() {
            self.drop_socket(room, conn_id, dropped);
        }
        self.db.run(DELETE_CONN, vec![conn_id.into()])?;
        Ok(())
    }

    /// Takes a socket out of `room`; the room hears of it with the next
    /// forward. A place still joining has no socket there yet: its join
    /// tells the room when it finds the connection gone.
    fn drop_socket(&self, room: &str, conn_id: &str, dropped: bool) {
        if let Some(feed) = self.feeds.borrow_mut().get_mut(room) {
            if feed.sockets.remove(conn_id).is_some() {
                let s = &mut feed.subscription;
                if dropped {
                    s.dropped.push(conn_id.to_owned());
                }
                s.leaves.push(conn_id.to_owned());
            }
        }
    }

    /// Rooms with publishes, joins or leaves for the room to hear of.
    pub fn busy(&self) -> Vec<String> {
        self.feeds
            .borrow()
            .iter()
            .filter(|(_, f)| !f.subscription.forwarding && f.subscription.has_news())
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// Forgets the rooms that have nothing left here.
    pub fn prune(&self) {
        self.feeds.borrow_mut().retain(|_, f| !f.idle());
    }

    pub fn with_subscription<T>(
        &self,
        room: &str,
        f: impl FnOnce(&mut Subscription) -> T,
    ) -> Option<T> {
        self.feeds
            .borrow_mut()
            .get_mut(room)
            .map(|feed| f(&mut feed.subscription))
    }

    /// The sockets subscribed to `room`.
    pub fn sockets(&self, room: &str) -> Vec<WebSocket> {
        self.feeds
            .borrow()
            .get(room)
            .map(|f| f.sockets.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn delivered(&self, room: &str, n: u64) {
        if let Some(feed) = self.feeds.borrow_mut().get_mut(room) {
            feed.deliveries += n;
        }
    }

    pub fn take_deliveries(&self, room: &str) -> u64 {
        self.feeds
            .borrow_mut()
            .get_mut(room)
            .map_or(0, |f| std::mem::take(&mut f.deliveries))
    }
}
