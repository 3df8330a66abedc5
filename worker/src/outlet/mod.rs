//! What an object that holds client sockets of a room it does not sequence
//! does for that room: a room's shard ([`crate::shard`], whose sockets are
//! all in its one room) and a hub ([`crate::hub`], whose every socket may be
//! in many rooms). Per room it keeps a [`Subscription`]; the steps over it
//! are written once, here, for both:
//!
//! - a join asks the room (admission, resume, welcome, replay) and brings
//!   the object's stream of that room up to the welcome's head, so the
//!   object can accept the connection and send it everything without an
//!   `await` in between ([`join`]);
//! - the room pushes batches; the stream delivers every message once, in
//!   order, and fetches what it missed before anything newer ([`stream`]);
//! - publishes go to the room in arrival order, one request at a time with
//!   whatever queued meanwhile, each acked once its message is out
//!   ([`forward`]).
//!
//! What differs between the two objects is only where a room's
//! subscriptions live and which sockets are a room's, which each says
//! through [`Outlet`].

pub mod forward;
pub mod join;
pub mod stream;
mod subscription;

use roomcast_protocol::session::Session;
use roomcast_protocol::stats::RoomStats;
use roomcast_protocol::wire::ServerFrame;
use roomcast_protocol::ErrorCode;
use worker::{Env, Result, WebSocket};

use crate::clients::Clients;
use crate::counters::Counters;

pub use subscription::Subscription;

/// An object that holds client sockets of rooms it does not sequence.
pub trait Outlet {
    fn env(&self) -> &Env;
    fn clients(&self) -> &Clients;
    /// The object's own counters (rejected frames, closed connections).
    fn counters(&self) -> &Counters;
    /// Runs `f` on what the object keeps of `room`, if it serves it.
    fn with_subscription<T>(&self, room: &str, f: impl FnOnce(&mut Subscription) -> T)
        -> Option<T>;
    /// Whether any open socket here is subscribed to `room`.
    fn serves(&self, room: &str) -> bool;
    /// Sends `frames` (one frame, or [`Frames`](crate::sends::Frames)) to
    /// every socket subscribed to `room`, counting the deliveries.
    fn broadcast(&self, room: &str, frames: &str);
    /// Counts `n` frames delivered to `room`'s subscribers.
    fn delivered(&self, room: &str, n: u64);
    /// The open sockets subscribed to `room`, with their sessions.
    fn subscribers(&self, room: &str) -> Vec<(WebSocket, Session)>;
    /// The counters `room` has not been told of, taken.
    fn take_stats(&self, room: &str) -> RoomStats;
    /// The room acks and errors about `room` name: none on a shard, whose
    /// sockets are all in that one room.
    fn frame_room<'a>(&self, room: &'a str) -> Option<&'a str>;
}

/// The last seq delivered to `room`'s subscribers here, once known.
pub fn position(o: &impl Outlet, room: &str) -> Option<u64> {
    o.with_subscription(room, |s| s.stream.delivered())
        .flatten()
}

/// Tells a client of an error about `room`, with its `ref`.
pub fn send_error(
    o: &impl Outlet,
    ws: &WebSocket,
    room: &str,
    code: ErrorCode,
    message: &str,
    reference: Option<&str>,
) -> Result<()> {
    crate::clients::frames::send_error(ws, code, message, reference, o.frame_room(room))
}

/// An `ack` frame for a publish to `room`.
pub fn ack_frame(
    o: &impl Outlet,
    room: &str,
    reference: Option<&str>,
    receipt: &roomcast_protocol::wire::Receipt,
) -> String {
    ServerFrame::Ack {
        reference: reference.map(Into::into),
        receipt: std::borrow::Cow::Borrowed(receipt),
        room: o.frame_room(room).map(Into::into),
    }
    .to_json()
}
