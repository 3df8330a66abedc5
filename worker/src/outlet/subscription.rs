//! What an outlet keeps of one room it serves: where its stream of the
//! room's messages stands, the publishes and the opened and closed
//! connections the room has yet to hear of, and the acks held until their
//! message is out. Kept apart from what the object keeps for all its rooms
//! (its sockets, alarm and counters), so that a hub keeps one per room.

use roomcast_protocol::shard::{Forwarded, Stream, Waiting};
use worker::WebSocket;

use crate::internal::Holder;

/// Who to answer about a forwarded publish.
pub struct Pending {
    pub ws: WebSocket,
    pub reference: Option<String>,
}

/// An ack held until its message is delivered.
pub struct Ack {
    pub ws: WebSocket,
    pub frame: String,
}

/// What an outlet keeps of one room.
pub struct Subscription {
    pub room: String,
    /// The object, as the room addresses it.
    pub holder: Holder,
    pub stream: Stream,
    /// Publishes waiting for the request in flight to finish, and their
    /// bytes of data ([`roomcast_protocol::shard::forward_has_room`]).
    pub queue: Vec<(Forwarded, Pending)>,
    pub queued_bytes: usize,
    /// Connections accepted and closed since the room last heard (by
    /// `conn_id`), for its per-subject counts.
    pub joins: Vec<String>,
    pub leaves: Vec<String>,
    /// Those of `leaves` that dropped without a close.
    pub dropped: Vec<String>,
    pub forwarding: bool,
    pub waiting: Waiting<Ack>,
}

impl Subscription {
    pub fn new(room: &str, holder: Holder) -> Subscription {
        Subscription {
            room: room.to_owned(),
            holder,
            stream: Stream::default(),
            queue: Vec::new(),
            queued_bytes: 0,
            joins: Vec::new(),
            leaves: Vec::new(),
            dropped: Vec::new(),
            forwarding: false,
            waiting: Waiting::default(),
        }
    }

    /// Whether the room has something to hear from here: publishes,
    /// joins, leaves.
    pub fn has_news(&self) -> bool {
        !(self.queue.is_empty() && self.joins.is_empty() && self.leaves.is_empty())
    }
}
