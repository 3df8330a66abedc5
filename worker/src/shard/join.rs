//! A client joining a shard: the room admits it and the shard aligns its
//! stream ([`outlet::join`]); then the shard accepts the socket and sends it
//! the welcome, replay and presence without an `await` in between.

use roomcast_protocol::auth::Identity;
use roomcast_protocol::ids::subject_tag;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::JoinRequest;
use worker::{Request, Response, Result, WebSocketPair};

use super::{Shard, SHARD_TAG};
use crate::clients;
use crate::context::Ctx;
use crate::headers::CONN_HEADER;
use crate::internal::Holder;
use crate::outlet::{self, Outlet};
use crate::reply;
use crate::sends;

impl Shard {
    pub(super) async fn join(
        &self,
        req: &Request,
        ctx: &Ctx,
        identity: Identity,
        index: u32,
    ) -> Result<Response> {
        let query = roomcast_protocol::admission::query(&req.inner().url())
            .into_owned()
            .collect();
        let since = match clients::since(&query) {
            Ok(since) => since,
            Err(refusal) => return reply::refusal(&refusal),
        };
        let Some(conn_id) = req.headers().get(CONN_HEADER)? else {
            return Err(worker::Error::RustError(
                "a join placed on a shard comes with its connection".into(),
            ));
        };
        let request = JoinRequest {
            shard: index,
            conn_id,
            since,
            epoch: query.get("epoch").cloned(),
        };
        let admitted =
            match outlet::join::ask(self, ctx, Holder::Shard(index), &identity, &request).await? {
                Ok(admitted) => admitted,
                // The room's refusal (a limit, a bad `since`), as it is.
                Err(refusal) => return Ok(refusal),
            };
        let welcome = &admitted.welcome;
        let (frames, messages) = admitted.frames(None)?;
        // No `await` from here until the socket is in: the stream cannot
        // move between what this client is sent and what it gets next.
        let ctx = &ctx.refreshed();
        let first = !self.serves(&ctx.room);
        let session = Session::new(welcome.conn_id.clone(), identity, ctx.now);
        let pair = WebSocketPair::new()?;
        self.clients.accept(
            &pair.server,
            &session,
            &[
                &subject_tag(&session.sub),
                &format!("{SHARD_TAG}{index}:{}", ctx.room),
            ],
            ctx.now,
        )?;
        sends::send_each(&pair.server, &frames)?;
        self.delivered(&ctx.room, messages);
        outlet::join::joined(self, &ctx.room, first, welcome.head, &session.conn_id);
        self.alarm
            .no_later_than(session.next_deadline(0, &ctx.timing()))
            .await?;
        clients::upgraded(req, pair.client)
    }
}
