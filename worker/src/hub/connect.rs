//! A multiplexed connection arriving from the router: the hub accepts the
//! socket with its session (one heartbeat, idle timeout and token expiry
//! for every room it joins), says `connected`, and subscribes it to the
//! rooms its token names in `channels` as a `subscribe` of each would,
//! without drawing on the subject's budget: the token asked, not the
//! client. A subject's connections all come to its hub, so the hub holds
//! their number to `MAX_CONNECTIONS_PER_SUBJECT`: a socket in no room
//! costs a hub as much as any.

use roomcast_protocol::auth::Identity;
use roomcast_protocol::ids::subject_tag;
use roomcast_protocol::mux::{Connected, Resume};
use roomcast_protocol::session::Session;
use roomcast_protocol::ErrorCode;
use worker::{Request, Response, Result, WebSocketPair};

use super::{Hub, HUB_TAG};
use crate::clients;
use crate::context::Ctx;
use crate::reply;

impl Hub {
    pub(super) async fn connect(
        &self,
        req: &Request,
        identity: Identity,
        conn_id: String,
    ) -> Result<Response> {
        let (Some(number), Some(ctx)) = (self.number(), self.ctx()?) else {
            return Err(worker::Error::RustError("a hub without a number".into()));
        };
        self.ensure_index()?;
        if let Some(refusal) = self.connection_limit(&ctx, &identity.sub) {
            return refusal;
        }
        let max_rooms = self.max_rooms()?;
        let mut session = Session::new(conn_id, identity, ctx.now);
        let pair = WebSocketPair::new()?;
        let ws = &pair.server;
        self.clients.accept(
            ws,
            &session,
            &[&subject_tag(&session.sub), &format!("{HUB_TAG}{number}")],
            ctx.now,
        )?;
        self.index.open(&session.conn_id, ws, max_rooms);
        let connected = Connected {
            conn_id: &session.conn_id,
            heartbeat_ms: ctx.limits.heartbeat_ms,
            max_message_bytes: ctx.limits.max_message_bytes,
            max_rooms,
            exp: session.exp,
            channels: &session.rights.channels,
        };
        ws.send_with_str(connected.to_json())?;
        self.alarm
            .no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        let channels: Vec<Resume> = session
            .rights
            .channels
            .iter()
            .map(|room| Resume {
                room: room.clone(),
                since: None,
                epoch: None,
            })
            .collect();
        let (outcome, joins) = self.admit(ws, &mut session, &ctx, channels, None, false)?;
        self.clients
            .settle(ws, &mut session, outcome, ctx.now, false)?;
        self.join_all(ws, &session, joins).await;
        clients::upgraded(req, pair.client)
    }

    /// The refusal of a subject that holds its limit of multiplexed
    /// connections (all on this hub).
    fn connection_limit(&self, ctx: &Ctx, sub: &str) -> Option<Result<Response>> {
        let limit = ctx.limits.max_connections_per_subject;
        if self.clients.open(&subject_tag(sub)).len() < limit as usize {
            return None;
        }
        self.counters
            .with(|s| s.reject(ErrorCode::TooManyConnections));
        Some(reply::error(
            ErrorCode::TooManyConnections,
            &format!("this subject already holds {limit} multiplexed connections"),
        ))
    }
}
