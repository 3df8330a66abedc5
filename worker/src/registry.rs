//! The `Registry` Durable Object: the one place that knows every room that
//! needs relaying, and which bridge instance relays it (SPEC section 5).
//!
//! Rooms register themselves (on their first message, and whenever their
//! outbox goes from empty to not); bridge instances hold a registry link and
//! are told the rooms they own. Ownership is rendezvous hashing over the
//! instances connected right now, so any membership change re-announces
//! every room to its owner and only the rooms of the instance that came or
//! went change hands. There is a single registry; it handles one small
//! write per room transition, far below what one object sustains.
//!
//! A link lives as long as the bridge keeps its token fresh (`auth`, see
//! [`crate::bridge_token`]): the alarm, set for the earliest member expiry,
//! closes an expired link (4001) and hands its rooms to the others.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use roomcast_protocol::assign::owner;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame, Registration, ServerFrame};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{
    console_error, durable_object, DurableObject, Env, Method, Request, RequestInit, Response,
    Result, SqlStorage, State, Stub, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebSocketRequestResponsePair,
};

use crate::alarm;
use crate::attachment::Attachment;
use crate::bridge_token;
use crate::reply;
use crate::room::IDENTITY_HEADER;
use crate::settings::{self, Settings};

/// The Durable Object namespace of the registry (see `wrangler.toml`).
const REGISTRY_BINDING: &str = "REGISTRY";
/// The registry's one instance.
const REGISTRY_NAME: &str = "registry";
/// Internal path rooms register on.
const REGISTER_PATH: &str = "/register";
/// Tag of bridge instances' links.
const LINK_TAG: &str = "instance";

/// The registry's stub.
pub fn stub(env: &Env) -> Result<Stub> {
    env.durable_object(REGISTRY_BINDING)?
        .id_from_name(REGISTRY_NAME)?
        .get_stub()
}

/// Tells the registry that `registration.room` needs relaying.
pub async fn register(env: &Env, registration: &Registration) -> Result<()> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(registration)?.into()));
    let request = Request::new_with_init(&format!("https://registry{REGISTER_PATH}"), &init)?;
    let response = stub(env)?.fetch_with_request(request).await?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => Err(worker::Error::RustError(format!(
            "the registry answered {status}"
        ))),
    }
}

/// A bridge instance's link, in its socket attachment.
#[derive(Serialize, Deserialize)]
struct Member {
    instance: String,
    /// Expiry of the last token the instance presented, seconds since the epoch.
    exp: u64,
    /// Superseded, expired or closing: no longer owns rooms.
    closed: bool,
}

impl Attachment for Member {}

#[durable_object]
pub struct Registry {
    state: State,
    env: Env,
    schema_ready: Cell<bool>,
}

impl DurableObject for Registry {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        Registry {
            state,
            env,
            schema_ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result = match (req.path().as_str(), req.method()) {
            (REGISTER_PATH, Method::Post) => match req.json::<Registration>().await {
                Ok(registration) => self.register(&registration),
                Err(e) => reply::error(ErrorCode::BadFormat, &e.to_string()),
            },
            ("/v1/bridge", Method::Get) => self.join(&req).await,
            _ => reply::error(ErrorCode::NotFound, "no such registry operation"),
        };
        result.or_else(|e| {
            console_error!("registry: request failed: {e}");
            reply::error(
                ErrorCode::Internal,
                "the registry failed to handle the request",
            )
        })
    }

    async fn connect(&self, _socket: worker::Socket) -> Result<()> {
        Err(worker::Error::RustError(
            "the registry speaks HTTP and WebSocket, not raw TCP".into(),
        ))
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        // `ping` is normally answered by the runtime without waking the registry.
        let frame = match message {
            WebSocketIncomingMessage::String(text) if text == "ping" => {
                return ws.send_with_str("pong")
            }
            WebSocketIncomingMessage::String(text) => parse_bridge_frame(&text).ok(),
            WebSocketIncomingMessage::Binary(_) => None,
        };
        match frame {
            Some(BridgeFrame::Auth { token }) => self.refresh(&ws, &token),
            Some(BridgeFrame::BridgeAck { .. }) | None => {
                let error = ServerFrame::Error {
                    code: ErrorCode::BadFormat,
                    message: "the registry link accepts only auth and ping".into(),
                    reference: None,
                };
                ws.send_with_str(error.to_json())
            }
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.leave(&ws);
        let _ = ws.close(Some(CloseCode::Normal.code()), Some("closing"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_error!("registry: link error: {error}");
        self.leave(&ws);
        Ok(())
    }

    async fn alarm(&self) -> Result<Response> {
        let result = self.sweep().await;
        if let Err(e) = &result {
            console_error!("registry: sweep failed: {e}");
        }
        result.and_then(|_| Response::ok("swept"))
    }
}

#[derive(Deserialize)]
struct RoomRow {
    room: String,
    pending: u64,
}

impl Registry {
    fn settings(&self) -> Result<Rc<Settings>> {
        settings::load(&self.env).map_err(worker::Error::RustError)
    }

    fn sql(&self) -> Result<SqlStorage> {
        let sql = self.state.storage().sql();
        if !self.schema_ready.replace(true) {
            sql.exec(
                "CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, pending INTEGER NOT NULL)",
                None,
            )?;
        }
        Ok(sql)
    }

    /// Connected instances and their sockets.
    fn members(&self) -> Vec<(WebSocket, Member)> {
        self.state
            .get_websockets_with_tag(LINK_TAG)
            .into_iter()
            .filter_map(|ws| {
                let member = Member::load(&ws).ok().flatten().filter(|m| !m.closed)?;
                Some((ws, member))
            })
            .collect()
    }

    fn register(&self, registration: &Registration) -> Result<Response> {
        self.sql()?.exec(
            "INSERT INTO rooms (room, pending) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET pending = excluded.pending",
            vec![registration.room.as_str().into(), (registration.pending as i64).into()],
        )?;
        let members = self.members();
        announce(&members, registration);
        reply::json(200, &serde_json::json!({"registered": registration.room}))
    }

    /// Accepts an instance's link, superseding an older link of the same instance.
    async fn join(&self, req: &Request) -> Result<Response> {
        let identity: Identity = match req.headers().get(IDENTITY_HEADER)? {
            Some(json) => serde_json::from_str(&json)?,
            None => return reply::error(ErrorCode::Unauthorized, "no identity"),
        };
        let url = req.url()?;
        let Some(instance) = url
            .query_pairs()
            .find(|(k, _)| k == "instance")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
        else {
            return reply::error(
                ErrorCode::BadRequest,
                "the registry link needs ?instance=<id>",
            );
        };
        for (ws, mut existing) in self.members() {
            if existing.instance == instance {
                existing.closed = true;
                existing.save(&ws)?;
                let _ = ws.close(
                    Some(CloseCode::Superseded.code()),
                    Some(CloseCode::Superseded.reason()),
                );
            }
        }
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[LINK_TAG]);
        Member {
            instance,
            exp: identity.exp,
            closed: false,
        }
        .save(&pair.server)?;
        self.rebalance()?;
        let close_at = bridge_token::close_at_ms(identity.exp, &*self.settings()?);
        alarm::no_later_than(&self.state.storage(), close_at).await?;
        Response::from_websocket(pair.client)
    }

    /// Moves a member's expiry to that of a fresh bridge token. The alarm
    /// set for the old expiry comes first; its sweep reads the new one.
    fn refresh(&self, ws: &WebSocket, token: &str) -> Result<()> {
        let Some(mut member) = Member::load(ws)?.filter(|m| !m.closed) else {
            return Ok(());
        };
        bridge_token::refresh(ws, token, &*self.settings()?, now_ms(), |exp| {
            member.exp = exp;
            member.save(ws)
        })
    }

    /// Closes the links whose token expired, hands their rooms to the other
    /// instances, and sets the alarm for the next expiry.
    async fn sweep(&self) -> Result<()> {
        let settings = self.settings()?;
        let now = now_ms();
        let mut next: Option<u64> = None;
        let mut expired = false;
        for (ws, mut member) in self.members() {
            let close_at = bridge_token::close_at_ms(member.exp, &settings);
            if now >= close_at {
                member.closed = true;
                member.save(&ws)?;
                bridge_token::close_expired(&ws);
                expired = true;
            } else {
                next = Some(next.map_or(close_at, |n| n.min(close_at)));
            }
        }
        if expired {
            self.rebalance()?;
        }
        match next {
            Some(at) => alarm::set(&self.state.storage(), at).await,
            None => Ok(()),
        }
    }

    fn leave(&self, ws: &WebSocket) {
        if let Some(mut member) = Member::load(ws).ok().flatten().filter(|m| !m.closed) {
            member.closed = true;
            let _ = member.save(ws);
            if let Err(e) = self.rebalance() {
                console_error!(
                    "registry: rebalancing after {} left failed: {e}",
                    member.instance
                );
            }
        }
    }

    /// Announces every room to its owner among the instances connected now.
    fn rebalance(&self) -> Result<()> {
        let members = self.members();
        if members.is_empty() {
            return Ok(());
        }
        let rooms: Vec<RoomRow> = self
            .sql()?
            .exec("SELECT room, pending FROM rooms ORDER BY room", None)?
            .to_array()?;
        for row in rooms {
            announce(
                &members,
                &Registration {
                    room: row.room,
                    pending: row.pending,
                },
            );
        }
        Ok(())
    }
}

/// Sends `registration` to the instance that owns its room.
fn announce(members: &[(WebSocket, Member)], registration: &Registration) {
    let instances: Vec<&str> = members.iter().map(|(_, m)| m.instance.as_str()).collect();
    let Some(owner) = owner(&registration.room, &instances) else {
        return;
    };
    let frame = ServerFrame::Room(Cow::Borrowed(registration)).to_json();
    for (ws, member) in members {
        if member.instance == owner {
            // A link that cannot take the frame is closing; the rebalance
            // when it is gone re-announces its rooms.
            let _ = ws.send_with_str(&frame);
        }
    }
}
