//! What a shard keeps of one room it serves: where its stream of the
//! room's messages stands, the publishes and the opened and closed
//! connections the room has yet to hear of, and the acks held until their
//! message is out. Kept apart from what a shard keeps per object (its
//! sockets, alarm and counters), so that one object could serve several
//! rooms.

use roomcast_protocol::shard::{Forwarded, Stream, Waiting};
use worker::WebSocket;

/// Who to answer about a forwarded publish.
pub(super) struct Pending {
    pub ws: WebSocket,
    pub reference: Option<String>,
}

/// An ack held until its message is delivered.
pub(super) struct Ack {
    pub ws: WebSocket,
    pub frame: String,
}

/// What a shard keeps of one room.
pub(super) struct Subscription {
    pub room: String,
    pub index: u32,
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
    pub fn new(room: &str, index: u32) -> Subscription {
        Subscription {
            room: room.to_owned(),
            index,
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
}
