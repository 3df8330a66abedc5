//! The room's HTTP surface (docs/protocol.md, "HTTP"): publishing one
//! message or a batch, and reading history. Reads never write: a history
//! page costs its own rows, and reading a room that was never written
//! leaves nothing behind.

use std::collections::HashMap;

use roomcast_protocol::auth::Identity;
use roomcast_protocol::draft::Origin;
use roomcast_protocol::history::Page;
use roomcast_protocol::trace::inherit;
use roomcast_protocol::wire::{parse_publish_body, HistoryPage};
use roomcast_protocol::{ErrorCode, Refusal};
use worker::{Request, Response, Result};

use super::publish::Publisher;
use super::Room;
use crate::context::Ctx;
use crate::reply;

impl Room {
    pub(super) async fn publish_http(
        &self,
        mut req: Request,
        ctx: &Ctx,
        identity: &Identity,
    ) -> Result<Response> {
        let trace = req.headers().get("traceparent")?;
        let body = req.text().await?;
        let (mut drafts, batch) = match parse_publish_body(&body, ctx.limits.max_message_bytes) {
            Ok(parsed) => parsed,
            Err(rejection) => {
                self.counters.with(|s| s.reject(rejection.code));
                return reply::error(rejection.code, &rejection.message);
            }
        };
        inherit(&mut drafts, trace.as_deref());
        let burst = ctx.limits.rate_burst;
        if !identity.rights.bridge && drafts.len() > burst as usize {
            self.counters.with(|s| s.reject(ErrorCode::TooLarge));
            return reply::error(
                ErrorCode::TooLarge,
                &format!(
                    "a batch of {} is over this room's rate burst of {burst}: send at most {burst} messages per request",
                    drafts.len()
                ),
            );
        }
        if drafts.iter().any(|d| d.kafka.is_some()) && !identity.rights.bridge {
            self.counters.with(|s| s.reject(ErrorCode::Forbidden));
            return reply::error(
                ErrorCode::Forbidden,
                "only the bridge's token names where a message came from in Kafka",
            );
        }
        if let Some(refusal) = self.creation_refused(ctx, identity).await? {
            return Ok(refusal);
        }
        // The bridge publishes what it consumed from Kafka.
        let origin = if identity.rights.bridge {
            Origin::Kafka
        } else {
            Origin::Http
        };
        let publisher = Publisher {
            sub: &identity.sub,
            bridge: identity.rights.bridge,
            origin,
            ack_to: None,
        };
        let receipts = match self.publish(ctx, drafts, &publisher)? {
            Ok(receipts) => receipts,
            Err(refusal) => return self.http_refusal(&refusal),
        };
        if batch {
            reply::json(201, &serde_json::json!({ "results": receipts }))
        } else {
            reply::json(201, &receipts[0])
        }
    }

    /// Answers a refused request, counted.
    pub(super) fn http_refusal(&self, refusal: &Refusal) -> Result<Response> {
        self.counters.with(|s| s.reject(refusal.code));
        reply::refusal(refusal)
    }

    /// A page of history. It costs its reader a token of its budget, as a
    /// publish does, and reads only the rows it returns.
    pub(super) fn read_history(
        &self,
        ctx: &Ctx,
        identity: &Identity,
        query: &HashMap<String, String>,
    ) -> Result<Response> {
        let page = match Page::parse(
            query.get("since").map(String::as_str),
            query.get("limit").map(String::as_str),
        ) {
            Ok(page) => page,
            Err(refusal) => return reply::refusal(&refusal),
        };
        if !identity.rights.bridge {
            if let Err(refusal) = self.admit(ctx, &identity.sub, 1) {
                return self.http_refusal(&refusal);
            }
        }
        let store = self.store()?;
        let retained = store.retained(&ctx.limits, ctx.now)?;
        let floor = retained.oldest.map_or(retained.head, |oldest| oldest - 1);
        let read = store.after(&ctx.room, page.since.max(floor), page.limit, false)?;
        let body = HistoryPage {
            room: ctx.room.to_string(),
            epoch: store.facts().epoch().unwrap_or_default(),
            head: retained.head,
            truncated: !read.messages.is_empty() && read.through < retained.head,
            messages: read.messages,
            oldest: retained.oldest,
        };
        reply::json(200, &body)
    }
}
