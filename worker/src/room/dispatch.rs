//! What a request to a room's object asks for: a client's, admitted by the
//! router (room name and identity in internal headers), or one from another
//! object of the same room (an internal operation, docs/scaling.md).

use std::collections::HashMap;

use roomcast_protocol::admission;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::ErrorCode;
use worker::{Method, Request, Response, Result};

use super::{Ctx, Room, IDENTITY_HEADER, ROOM_HEADER};
use crate::internal::{Op, OP_HEADER, SHARD_HEADER};
use crate::reply;

impl Room {
    pub(super) async fn serve(&self, req: Request) -> Result<Response> {
        let room = req
            .headers()
            .get(ROOM_HEADER)?
            .ok_or_else(|| worker::Error::RustError("request without room header".into()))?;
        let ctx = self.ctx(&room)?;
        let query: HashMap<String, String> =
            admission::query(&req.inner().url()).into_owned().collect();
        let shard = req
            .headers()
            .get(SHARD_HEADER)?
            .and_then(|s| s.parse::<u32>().ok());
        let op = req.headers().get(OP_HEADER)?.as_deref().and_then(Op::parse);
        let identity = req
            .headers()
            .get(IDENTITY_HEADER)?
            .as_deref()
            .and_then(Identity::from_header);
        if let (Some(Op::Deliver | Op::Count), Some(index)) = (op, shard) {
            self.become_shard(&room, index);
        }
        match (op, identity) {
            (Some(Op::Join), Some(identity)) => self.join_from_shard(req, &ctx, identity).await,
            (Some(Op::Forward), _) => self.forward_from_shard(req, &ctx).await,
            (Some(Op::Gap), _) => self.gap_for_shard(&ctx, &query),
            (Some(Op::Deliver), _) => self.shard_deliver(req, &ctx).await,
            (Some(Op::Count), _) => self.shard_report(true),
            (Some(Op::Join), None) => reply::error(ErrorCode::Unauthorized, "no identity"),
            (None, Some(identity)) => self.serve_client(req, &ctx, identity, &query, shard).await,
            (None, None) => reply::error(ErrorCode::Unauthorized, "no identity"),
        }
    }

    /// A request the router admitted.
    async fn serve_client(
        &self,
        req: Request,
        ctx: &Ctx,
        identity: Identity,
        query: &HashMap<String, String>,
        shard: Option<u32>,
    ) -> Result<Response> {
        let path = req.path();
        let op = path.rsplit('/').next().unwrap_or_default();
        match (op, req.method(), shard) {
            ("ws", Method::Get, Some(index)) => {
                self.shard_join(&req, ctx, identity, query, index).await
            }
            ("ws", Method::Get, None) => self.join(&req, ctx, identity, query).await,
            ("messages", Method::Post, None) => self.publish_http(req, ctx, &identity).await,
            ("messages", Method::Get, None) => self.read_history(ctx, &identity, query),
            ("bridge", Method::Get, None) => self.link(ctx, identity, query).await,
            ("stats", Method::Get, None) => self.report_stats(ctx).await,
            _ => reply::error(ErrorCode::NotFound, "no such room operation"),
        }
    }
}
