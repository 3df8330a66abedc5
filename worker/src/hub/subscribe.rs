//! A connection joining and leaving rooms. A `subscribe` is answered room
//! by room: each room is charged to the subject's budget and checked
//! against the connection's rooms ([`Rooms::admit`]), then all of them join
//! at once. A join is the room's, as a shard's is ([`outlet::join`]); once
//! the stream is aligned the socket enters the room and is sent
//! `subscribed`, the replay and the presence state with no `await` in
//! between. A room the connection is in already may be subscribed again
//! from another `since` (how a room of the token's `channels` resumes): its
//! messages stop reaching the socket until its new `subscribed`. Leaving
//! tells the room with the next forward.
//!
//! [`Rooms::admit`]: roomcast_protocol::mux::Rooms::admit

use roomcast_protocol::auth::Identity;
use roomcast_protocol::config::Limits;
use roomcast_protocol::mux::{subscribed_frame, unsubscribed_frame, Reason, Resume};
use roomcast_protocol::rate::Admission;
use roomcast_protocol::session::Session;
use roomcast_protocol::shard::JoinRequest;
use roomcast_protocol::{ErrorCode, Refusal};
use serde::Deserialize;
use worker::{console_warn, Response, Result, WebSocket};

use super::Hub;
use crate::clients::frames::{send_error, Outcome};
use crate::context::Ctx;
use crate::internal::Holder;
use crate::outlet::{self, Outlet};
use crate::sends;

/// A room a connection may join, with the `ref` of the frame that asked.
pub(super) struct Join {
    resume: Resume,
    reference: Option<String>,
    /// The connection is in the room already and starts it again.
    again: bool,
}

/// How a refusal reads in a room's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: Refusal,
}

impl Hub {
    /// Checks each room of a `subscribe` (the frame drawing a token per
    /// room of the subject's subscription budget when `charge`, all or
    /// none) and holds a place for those
    /// that may join; refused rooms are answered at once, every room of a
    /// frame over the budget among them. Returns what the refusals ask of
    /// the connection and the joins to make.
    pub(super) fn admit(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        rooms: Vec<Resume>,
        reference: Option<String>,
        charge: bool,
    ) -> Result<(Outcome, Vec<Join>)> {
        let mut joins = Vec::new();
        if charge {
            if let Some((first, rest)) = rooms.split_first() {
                let cost = rooms.len();
                let refused =
                    self.charge(ws, session, ctx, &first.room, cost, reference.as_deref())?;
                if let Some((outcome, refusal)) = refused {
                    for resume in rest {
                        send_error(
                            ws,
                            refusal.code,
                            &refusal.message,
                            reference.as_deref(),
                            Some(&resume.room),
                        )?;
                    }
                    return Ok((outcome, joins));
                }
            }
        }
        for resume in rooms {
            match self
                .index
                .reserve(&session.conn_id, &session.rights, &resume.room)
            {
                Ok(again) => joins.push(Join {
                    resume,
                    reference: reference.clone(),
                    again,
                }),
                Err(refusal) => {
                    self.counters.with(|s| s.reject(refusal.code));
                    send_error(
                        ws,
                        refusal.code,
                        &refusal.message,
                        reference.as_deref(),
                        Some(&resume.room),
                    )?;
                }
            }
        }
        Ok((Outcome::Keep, joins))
    }

    /// Makes `joins`, all at once.
    pub(super) async fn join_all(&self, ws: &WebSocket, session: &Session, joins: Vec<Join>) {
        let joins = joins.into_iter().map(|join| self.join(ws, session, join));
        futures_util::future::join_all(joins).await;
    }

    /// One room's join; a failure gives up the place and tells the client.
    async fn join(&self, ws: &WebSocket, session: &Session, join: Join) {
        let room = join.resume.room.clone();
        let (reference, again) = (join.reference.clone(), join.again);
        if let Err(e) = self.try_join(ws, session, join).await {
            console_warn!("hub {}: joining {room}: {e}", self.label());
            self.give_up(&session.conn_id, &room, again);
            let _ = send_error(
                ws,
                ErrorCode::Internal,
                "the room did not answer: subscribe again",
                reference.as_deref(),
                Some(&room),
            );
        }
    }

    async fn try_join(&self, ws: &WebSocket, session: &Session, join: Join) -> Result<()> {
        let Join {
            resume,
            reference,
            again,
        } = join;
        let room = resume.room.as_str();
        let Some(number) = self.number() else {
            return Err(worker::Error::RustError("a hub without a number".into()));
        };
        let holder = Holder::Hub(number);
        let ctx = Ctx::of(&self.env, room)?;
        let request = JoinRequest {
            shard: number,
            conn_id: session.conn_id.clone(),
            since: resume.since,
            epoch: resume.epoch.clone(),
        };
        let identity = Identity {
            sub: session.sub.clone(),
            exp: session.exp,
            rights: session.rights.clone(),
            info: session.info.clone(),
        };
        self.index.joining(room, holder, true);
        if again {
            self.index.pause(room, &session.conn_id);
        }
        let asked = outlet::join::ask(self, &ctx, holder, &identity, &request).await;
        self.index.joining(room, holder, false);
        let admitted = match asked? {
            Ok(admitted) => admitted,
            Err(answer) => {
                self.give_up(&session.conn_id, room, again);
                let refusal = read_refusal(answer).await;
                self.counters.with(|s| s.reject(refusal.code));
                return send_error(
                    ws,
                    refusal.code,
                    &refusal.message,
                    reference.as_deref(),
                    Some(room),
                );
            }
        };
        // No `await` from here until the socket is in the room: the stream
        // cannot move between what it is sent and what it gets next.
        let conn_id = &session.conn_id;
        if !self.index.holds(conn_id, room) || self.clients.session(ws)?.is_none() {
            // Unsubscribed or gone meanwhile; the room counted it.
            self.with_subscription(room, |s| s.leaves.push(conn_id.clone()));
            return Ok(());
        }
        let subscribed = subscribed_frame(&admitted.welcome);
        let (frames, messages) = admitted.frames(Some(&subscribed))?;
        let first = !self.serves(room);
        self.index.add(room, holder, conn_id, ws)?;
        sends::send_each(ws, &frames)?;
        self.delivered(room, messages);
        outlet::join::joined(self, room, first, admitted.welcome.head, conn_id);
        Ok(())
    }

    /// A join that failed: the place it held goes, and a connection that
    /// was in the room before (which the room counts) leaves it.
    fn give_up(&self, conn_id: &str, room: &str, again: bool) {
        if !again {
            self.index.release(conn_id, room);
        } else if let Err(e) = self.index.abandon(conn_id, room) {
            console_warn!("hub {}: leaving {room}: {e}", self.label());
        }
    }

    /// An `unsubscribe`: the connection leaves `room`, or is told it was
    /// not in it.
    pub(super) fn unsubscribe(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        room: &str,
        reference: Option<String>,
    ) -> Result<Outcome> {
        if let Some((outcome, _)) = self.charge(ws, session, ctx, room, 1, reference.as_deref())? {
            return Ok(outcome);
        }
        if !self.index.leave(&session.conn_id, room)? {
            let refusal = Refusal::new(
                ErrorCode::NotSubscribed,
                "this connection is not subscribed to this room",
            )
            .with_ref(reference);
            return self.clients.reject(ws, session, &refusal, Some(room));
        }
        ws.send_with_str(unsubscribed_frame(room, Reason::Client))?;
        Ok(Outcome::Keep)
    }

    /// Draws `cost` tokens (one per room) of the subject's subscription
    /// budget for a subscribe or an unsubscribe (naming `room` first):
    /// `None` when there were, or the refusal, answered for `room`, and
    /// what it asks of the connection.
    ///
    /// Every room joined is a request to that room, so the budget counts
    /// rooms, not frames: a frame of 128 rooms must not cost what one does.
    /// It holds a whole connection's rooms (`MAX_ROOMS_PER_CONNECTION`, or
    /// `RATE_BURST` if larger), so a reconnect resumes them all at once,
    /// and refills at `RATE_PER_SEC`, which bounds churn.
    fn charge(
        &self,
        ws: &WebSocket,
        session: &mut Session,
        ctx: &Ctx,
        room: &str,
        cost: usize,
        reference: Option<&str>,
    ) -> Result<Option<(Outcome, Refusal)>> {
        let max_rooms = ctx.settings.config.max_rooms_per_connection;
        let whole_connection = u32::try_from(max_rooms).unwrap_or(u32::MAX);
        let limits = Limits {
            rate_burst: ctx.limits.rate_burst.max(whole_connection),
            ..(*ctx.limits).clone()
        };
        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
        let admission = self
            .subscriptions
            .borrow_mut()
            .admit(&session.sub, cost, &limits, ctx.now);
        if admission == Admission::Accepted {
            return Ok(None);
        }
        let close = matches!(admission, Admission::Close { .. });
        let refusal = Refusal::rate_limited(admission.retry_after_ms().unwrap_or(0), close)
            .with_ref(reference.map(str::to_owned));
        let outcome = self.clients.refused(ws, session, &refusal, Some(room))?;
        Ok(Some((outcome, refusal)))
    }
}

/// The refusal a room answered a join with.
async fn read_refusal(mut answer: Response) -> Refusal {
    let status = answer.status_code();
    let body = answer.text().await.unwrap_or_default();
    serde_json::from_str::<ErrorBody>(&body)
        .map(|b| b.error)
        .unwrap_or_else(|_| {
            Refusal::new(ErrorCode::Internal, format!("the room answered {status}"))
        })
}
