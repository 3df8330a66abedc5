//! What a request to a room's object asks for: a client's, admitted by the
//! router (room name and identity in internal headers), or one from one of
//! its shards or from a hub (an internal operation, docs/internals.md,
//! "Sharding"; the holder named in its header, [`Holder`]).

use std::collections::HashMap;

use roomcast_protocol::admission;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::ErrorCode;
use worker::{Method, Request, Response, Result};

use super::{shard_requests, Room};
use crate::context::Ctx;
use crate::headers::{IDENTITY_HEADER, OP_HEADER, ROOM_HEADER};
use crate::internal::{Holder, Op};
use crate::reply;

impl Room {
    pub(super) async fn serve(&self, req: Request) -> Result<Response> {
        let room = req
            .headers()
            .get(ROOM_HEADER)?
            .ok_or_else(|| worker::Error::RustError("request without room header".into()))?;
        let ctx = self.wake.of(&self.env, &room)?;
        let query: HashMap<String, String> =
            admission::query(&req.inner().url()).into_owned().collect();
        let op = req.headers().get(OP_HEADER)?.as_deref().and_then(Op::parse);
        let holder = Holder::of(req.headers())?;
        if op.is_none() && matches!(holder, Some(Holder::Shard(_))) {
            return misplaced_join();
        }
        let identity = req
            .headers()
            .get(IDENTITY_HEADER)?
            .as_deref()
            .and_then(Identity::from_header);
        match (op, identity, holder) {
            (Some(Op::Join | Op::Forward), _, None) => {
                reply::error(ErrorCode::BadRequest, "no shard or hub named")
            }
            (Some(Op::Join), Some(identity), Some(holder)) => {
                self.join_from_holder(req, &ctx, identity, holder).await
            }
            (Some(Op::Forward), _, Some(holder)) => {
                self.forward_from_holder(req, &ctx, holder).await
            }
            (Some(Op::Gap), _, _) => shard_requests::gap(self.store()?, &ctx, &query),
            (Some(Op::Deliver | Op::Count | Op::Presence), _, _) => {
                reply::error(ErrorCode::NotFound, "a room is not a shard")
            }
            (Some(Op::Join), None, _) => reply::error(ErrorCode::Unauthorized, "no identity"),
            (None, Some(identity), _) => self.serve_client(req, &ctx, identity, &query).await,
            (None, None, _) => reply::error(ErrorCode::Unauthorized, "no identity"),
        }
    }

    /// A request the router admitted.
    async fn serve_client(
        &self,
        req: Request,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let path = req.path();
        let op = path.rsplit('/').next().unwrap_or_default();
        match (op, req.method()) {
            ("ws", Method::Get) => self.join(&req, ctx, identity, query).await,
            ("messages", Method::Post) => self.publish_http(req, ctx, &identity).await,
            ("messages", Method::Get) => self.read_history(ctx, &identity, query),
            ("bridge", Method::Get) => self.accept_link(ctx, identity, query).await,
            ("stats", Method::Get) => self.report_stats(ctx).await,
            ("presence", Method::Get) => self.read_presence(ctx, &identity, query).await,
            _ => reply::error(ErrorCode::NotFound, "no such room operation"),
        }
    }
}

/// A join placed on a shard that reached a room's own object. Only a router
/// of the release before shards were a class of their own sends one (it
/// named shards in the rooms' namespace), and only while a deploy rolls
/// out: served, it would start a second room under the room's name, with
/// its own sequence. Refused, the client reconnects through a current
/// router.
fn misplaced_join() -> Result<Response> {
    reply::error(
        ErrorCode::Internal,
        "the worker is being updated; connect again",
    )
}
