//! Requests between the objects of one room: its sequencer (the room's own
//! object, [`crate::room`]) and the objects holding its sockets, its shards
//! ([`crate::shard`], docs/internals.md, "Sharding") and the hubs holding
//! multiplexed connections, and the names that reach them. A hub is fed and
//! asked exactly as a shard is; only its name and header differ
//! ([`Holder`]), since one hub serves many rooms.
//!
//! They are plain `fetch`es between Durable Objects, never sockets: only a
//! socket an object accepted can hibernate, and both sides here hold
//! thousands of accepted client sockets that must. The operation rides in
//! [`OP_HEADER`], which the router strips from every client request (with
//! every other `x-roomcast-` header), so no client can send one.

use roomcast_protocol::auth::Identity;
use roomcast_protocol::mux::hub_name;
use roomcast_protocol::shard::shard_name;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result, Stub};

use crate::headers::{HUB_HEADER, IDENTITY_HEADER, OP_HEADER, ROOM_HEADER, SHARD_HEADER};

/// The Durable Object namespace of rooms' own objects (see `wrangler.toml`).
pub const ROOMS_BINDING: &str = "ROOMS";
/// The namespace of their shards.
pub const SHARDS_BINDING: &str = "SHARDS";
/// The namespace of hubs, shared by every room.
pub const HUBS_BINDING: &str = "HUBS";

/// What one object of a room asks another (a hub asks and is asked as a
/// shard is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Shard → sequencer: admit and welcome a connection.
    Join,
    /// Shard → sequencer: its clients' publishes and closed connections.
    Forward,
    /// Shard → sequencer: stored messages it missed.
    Gap,
    /// Sequencer → shard: a batch of new messages.
    Deliver,
    /// Sequencer → shard: its connections and counters.
    Count,
    /// Sequencer → shard: what a presence flush tells its clients.
    Presence,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Join => "join",
            Op::Forward => "forward",
            Op::Gap => "gap",
            Op::Deliver => "deliver",
            Op::Count => "count",
            Op::Presence => "presence",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        [
            Op::Join,
            Op::Forward,
            Op::Gap,
            Op::Deliver,
            Op::Count,
            Op::Presence,
        ]
        .into_iter()
        .find(|op| op.as_str() == name)
    }
}

/// The object of `room` itself (its sequencer).
pub fn room_stub(env: &Env, room: &str) -> Result<Stub> {
    env.durable_object(ROOMS_BINDING)?
        .id_from_name(room)?
        .get_stub()
}

/// Shard `index` of `room`.
pub fn shard_stub(env: &Env, room: &str, index: u32) -> Result<Stub> {
    env.durable_object(SHARDS_BINDING)?
        .id_from_name(&shard_name(room, index))?
        .get_stub()
}

/// Hub `index` (of every room it serves).
pub fn hub_stub(env: &Env, index: u32) -> Result<Stub> {
    env.durable_object(HUBS_BINDING)?
        .id_from_name(&hub_name(index))?
        .get_stub()
}

/// An object holding sockets of a room for it, by number: the room's
/// shard, or a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Shard(u32),
    Hub(u32),
}

impl Holder {
    pub fn index(self) -> u32 {
        match self {
            Holder::Shard(index) | Holder::Hub(index) => index,
        }
    }

    /// The header naming it on a request to or from it.
    pub fn header(self) -> &'static str {
        match self {
            Holder::Shard(_) => SHARD_HEADER,
            Holder::Hub(_) => HUB_HEADER,
        }
    }

    /// The holder a request names, if any (a hub's header wins: a hub
    /// never sends a shard's).
    pub fn of(headers: &Headers) -> Result<Option<Holder>> {
        let index = |name| -> Result<Option<u32>> {
            Ok(headers.get(name)?.and_then(|value| value.parse().ok()))
        };
        Ok(match (index(HUB_HEADER)?, index(SHARD_HEADER)?) {
            (Some(hub), _) => Some(Holder::Hub(hub)),
            (None, Some(shard)) => Some(Holder::Shard(shard)),
            (None, None) => None,
        })
    }

    /// The object itself, serving `room`.
    pub fn stub(self, env: &Env, room: &str) -> Result<Stub> {
        match self {
            Holder::Shard(index) => shard_stub(env, room, index),
            Holder::Hub(index) => hub_stub(env, index),
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Shard(index) => write!(f, "shard {index}"),
            Holder::Hub(index) => write!(f, "hub {index}"),
        }
    }
}

/// One internal request, between a room and one of its holders.
pub struct Call<'a> {
    pub op: Op,
    pub room: &'a str,
    pub holder: Holder,
    pub identity: Option<&'a Identity>,
    pub query: &'a str,
    pub body: Option<String>,
}

impl Call<'_> {
    pub async fn send(self, stub: &Stub) -> Result<Response> {
        let headers = Headers::new();
        headers.set(OP_HEADER, self.op.as_str())?;
        headers.set(ROOM_HEADER, self.room)?;
        headers.set(self.holder.header(), &self.holder.index().to_string())?;
        if let Some(identity) = self.identity {
            headers.set(IDENTITY_HEADER, &identity.to_header())?;
        }
        let mut init = RequestInit::new();
        init.with_headers(headers);
        match self.body {
            Some(body) => init.with_method(Method::Post).with_body(Some(body.into())),
            None => init.with_method(Method::Get),
        };
        let url = format!("https://room/{}{}", self.op.as_str(), self.query);
        stub.fetch_with_request(Request::new_with_init(&url, &init)?)
            .await
    }

    /// Sends the call and reads a successful answer's body.
    pub async fn text(self, stub: &Stub) -> Result<String> {
        let op = self.op;
        let mut response = self.send(stub).await?;
        let body = response.text().await?;
        match response.status_code() {
            200..=299 => Ok(body),
            status => Err(worker::Error::RustError(format!(
                "{} answered {status}: {body:.200}",
                op.as_str()
            ))),
        }
    }
}
