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

use std::cell::Cell;

use roomcast_protocol::assign::owner;
use roomcast_protocol::wire::{Registration, ServerFrame};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{
    console_error, durable_object, DurableObject, Env, Method, Request, RequestInit, Response,
    Result, SqlStorage, State, Stub, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebSocketRequestResponsePair,
};

use crate::attachment::Attachment;
use crate::reply;

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
    /// Superseded or closing: no longer owns rooms.
    closed: bool,
}

impl Attachment for Member {}

#[durable_object]
pub struct Registry {
    state: State,
    schema_ready: Cell<bool>,
}

impl DurableObject for Registry {
    fn new(state: State, _env: Env) -> Self {
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        Registry {
            state,
            schema_ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result = match (req.path().as_str(), req.method()) {
            (REGISTER_PATH, Method::Post) => match req.json::<Registration>().await {
                Ok(registration) => self.register(&registration),
                Err(e) => reply::error(ErrorCode::BadFormat, &e.to_string()),
            },
            ("/v1/bridge", Method::Get) => self.join(&req),
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
        // Links only listen; `ping` is answered by the runtime.
        if let WebSocketIncomingMessage::String(text) = message {
            if text == "ping" {
                return ws.send_with_str("pong");
            }
        }
        let error = ServerFrame::Error {
            code: ErrorCode::BadFormat,
            message: "the registry link accepts only ping",
            reference: None,
        };
        ws.send_with_str(error.to_json())
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
        Response::ok("the registry sets no alarms")
    }
}

#[derive(Deserialize)]
struct RoomRow {
    room: String,
    pending: u64,
}

impl Registry {
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
    fn members(&self) -> Vec<(WebSocket, String)> {
        self.state
            .get_websockets_with_tag(LINK_TAG)
            .into_iter()
            .filter_map(|ws| {
                let member = Member::load(&ws).ok().flatten().filter(|m| !m.closed)?;
                Some((ws, member.instance))
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
    fn join(&self, req: &Request) -> Result<Response> {
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
        for (ws, existing) in self.members() {
            if existing == instance {
                Member {
                    instance: existing,
                    closed: true,
                }
                .save(&ws)?;
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
            closed: false,
        }
        .save(&pair.server)?;
        self.rebalance()?;
        Response::from_websocket(pair.client)
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
fn announce(members: &[(WebSocket, String)], registration: &Registration) {
    let instances: Vec<&str> = members.iter().map(|(_, i)| i.as_str()).collect();
    let Some(owner) = owner(&registration.room, &instances) else {
        return;
    };
    let frame = ServerFrame::Room(registration).to_json();
    for (ws, instance) in members {
        if instance == owner {
            // A link that cannot take the frame is closing; the rebalance
            // when it is gone re-announces its rooms.
            let _ = ws.send_with_str(&frame);
        }
    }
}
