//! The `Registry` Durable Object: the one place that knows every room that
//! needs relaying, and which bridge instance relays it (docs/internals.md,
//! "The registry").
//!
//! Rooms register once per lifecycle event: on their first message (and the
//! first after they retired) and when they retire; never per message.
//! Bridge instances hold a registry link and are told the rooms they own.
//! Ownership is rendezvous hashing over the instances connected right now,
//! so a membership change re-announces every room to its owner and only the
//! rooms of the instance that came or went change hands. That pass runs in
//! pages of [`PAGE`] rooms, one page per turn, continued by the alarm: the
//! registry's turns stay small however many rooms there are.
//!
//! A link lives as long as the bridge keeps its token fresh (`auth`, see
//! [`crate::bridge_token`]): the alarm, set for the earliest member expiry,
//! closes an expired link (4001) and hands its rooms to the others.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use roomcast_protocol::admission;
use roomcast_protocol::assign::owner;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame, Registration, ServerFrame};
use roomcast_protocol::{CloseCode, ErrorCode};
use serde::{Deserialize, Serialize};
use worker::{
    console_error, durable_object, DurableObject, Env, Method, Request, RequestInit, Response,
    Result, State, Stub, WebSocket, WebSocketIncomingMessage, WebSocketPair,
    WebSocketRequestResponsePair,
};

use crate::alarm;
use crate::attachment::Attachment;
use crate::bridge_token;
use crate::headers::IDENTITY_HEADER;
use crate::reply;
use crate::settings::{self, Settings};
use crate::storage::Db;

/// The Durable Object namespace of the registry (see `wrangler.toml`).
const REGISTRY_BINDING: &str = "REGISTRY";
/// The registry's one instance.
const REGISTRY_NAME: &str = "registry";
/// Internal paths rooms call.
const REGISTER_PATH: &str = "/register";
const RETIRE_PATH: &str = "/retire";
/// Tag of bridge instances' links.
const LINK_TAG: &str = "instance";
/// Rooms announced per turn of a rebalancing pass.
pub const PAGE: u64 = 500;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS rooms (room TEXT PRIMARY KEY, pending INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
];

/// The registry's stub.
pub fn stub(env: &Env) -> Result<Stub> {
    env.durable_object(REGISTRY_BINDING)?
        .id_from_name(REGISTRY_NAME)?
        .get_stub()
}

/// Tells the registry that `registration.room` needs relaying.
pub async fn register(env: &Env, registration: &Registration) -> Result<()> {
    call(env, REGISTER_PATH, &serde_json::to_string(registration)?).await
}

/// Tells the registry that `room` retired.
pub async fn retire(env: &Env, room: &str) -> Result<()> {
    call(
        env,
        RETIRE_PATH,
        &serde_json::json!({ "room": room }).to_string(),
    )
    .await
}

async fn call(env: &Env, path: &str, body: &str) -> Result<()> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(body.to_owned().into()));
    let request = Request::new_with_init(&format!("https://registry{path}"), &init)?;
    let response = stub(env)?.fetch_with_request(request).await?;
    match response.status_code() {
        200..=299 => Ok(()),
        status => Err(worker::Error::RustError(format!(
            "the registry answered {status} to {path}"
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

#[derive(Deserialize)]
struct Retirement {
    room: String,
}

#[durable_object]
pub struct Registry {
    state: State,
    env: Env,
    db: Db,
    schema_ready: Cell<bool>,
}

impl DurableObject for Registry {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        let db = Db::new(state.storage().sql());
        Registry {
            state,
            env,
            db,
            schema_ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result = match (req.path().as_str(), req.method()) {
            (REGISTER_PATH, Method::Post) => match req.json::<Registration>().await {
                Ok(registration) => self.register(&registration).await,
                Err(e) => reply::error(ErrorCode::BadFormat, &e.to_string()),
            },
            (RETIRE_PATH, Method::Post) => match req.json::<Retirement>().await {
                Ok(retirement) => self.retire(&retirement.room),
                Err(e) => reply::error(ErrorCode::BadFormat, &e.to_string()),
            },
            ("/v1/bridge", Method::Get) => self.join(&req).await,
            ("/v1/registry", Method::Get) => self.report(&req),
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
            Some(BridgeFrame::BridgeAck { .. } | BridgeFrame::PresenceAck { .. }) | None => {
                let error = ServerFrame::Error {
                    room: None,
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
        self.leave(&ws).await;
        let _ = ws.close(Some(CloseCode::Normal.code()), Some("closing"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        console_error!("registry: link error: {error}");
        self.leave(&ws).await;
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

#[derive(Deserialize)]
struct MetaRow {
    value: String,
}

#[derive(Deserialize)]
struct Count {
    n: u64,
}

/// Where a rebalancing pass stands.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pass {
    /// The last room announced (rooms go in name order).
    after: String,
    rooms: u64,
    turns: u64,
    done: bool,
}

impl Registry {
    fn settings(&self) -> Result<Rc<Settings>> {
        settings::load(&self.env).map_err(worker::Error::RustError)
    }

    fn db(&self) -> Result<&Db> {
        if !self.schema_ready.replace(true) {
            for statement in SCHEMA {
                self.db.run(statement, vec![])?;
            }
        }
        Ok(&self.db)
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

    async fn register(&self, registration: &Registration) -> Result<Response> {
        self.db()?.run(
            "INSERT INTO rooms (room, pending) VALUES (?, ?) ON CONFLICT(room) DO UPDATE SET pending = excluded.pending",
            vec![registration.room.as_str().into(), (registration.pending as i64).into()],
        )?;
        announce(&self.members(), registration);
        reply::json(200, &serde_json::json!({"registered": registration.room}))
    }

    fn retire(&self, room: &str) -> Result<Response> {
        self.db()?
            .run("DELETE FROM rooms WHERE room = ?", vec![room.into()])?;
        reply::json(200, &serde_json::json!({"retired": room}))
    }

    /// `GET /v1/registry[?room=R]`: what the registry holds (and whether it
    /// holds room R and which instance it assigns R to), for operators,
    /// tests, and a bridge whose room link was superseded: it comes back
    /// only if it is still the owner.
    fn report(&self, req: &Request) -> Result<Response> {
        let count = |query: &str, bindings| -> Result<u64> {
            Ok(self
                .db()?
                .rows::<Count>(query, bindings)?
                .first()
                .map_or(0, |c| c.n))
        };
        let rooms = count("SELECT COUNT(*) AS n FROM rooms", vec![])?;
        let members: Vec<String> = self
            .members()
            .into_iter()
            .map(|(_, m)| m.instance)
            .collect();
        let mut report = serde_json::json!({
            "rooms": rooms,
            "members": &members,
            "rebalance": self.pass()?,
            "page": PAGE,
        });
        if let Some((_, room)) = admission::query(&req.inner().url()).find(|(k, _)| k == "room") {
            let held = count(
                "SELECT COUNT(*) AS n FROM rooms WHERE room = ?",
                vec![room.as_ref().into()],
            )?;
            report["registered"] = (held > 0).into();
            report["owner"] = owner(&room, &members).into();
        }
        reply::json(200, &report)
    }

    /// Accepts an instance's link, superseding an older link of the same instance.
    async fn join(&self, req: &Request) -> Result<Response> {
        let Some(identity) = req
            .headers()
            .get(IDENTITY_HEADER)?
            .as_deref()
            .and_then(Identity::from_header)
        else {
            return reply::error(ErrorCode::Unauthorized, "no identity");
        };
        let Some(instance) = admission::query(&req.inner().url())
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
        let response = Response::from_websocket(pair.client)?;
        self.rebalance().await?;
        Ok(response)
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

    /// Closes the links whose token expired, continues a rebalancing pass,
    /// and sets the alarm for whichever comes next.
    async fn sweep(&self) -> Result<()> {
        let settings = self.settings()?;
        let now = now_ms();
        let mut expired = false;
        for (ws, mut member) in self.members() {
            if now >= bridge_token::close_at_ms(member.exp, &settings) {
                member.closed = true;
                member.save(&ws)?;
                bridge_token::close_expired(&ws);
                expired = true;
            }
        }
        if expired {
            self.start_pass()?;
        }
        self.step()?;
        self.schedule().await
    }

    async fn leave(&self, ws: &WebSocket) {
        if let Some(mut member) = Member::load(ws).ok().flatten().filter(|m| !m.closed) {
            member.closed = true;
            let _ = member.save(ws);
            if let Err(e) = self.rebalance().await {
                console_error!(
                    "registry: rebalancing after {} left failed: {e}",
                    member.instance
                );
            }
        }
    }

    /// Starts announcing every room to its owner among the instances
    /// connected now: one page in this turn, the rest from the alarm.
    async fn rebalance(&self) -> Result<()> {
        self.start_pass()?;
        self.step()?;
        self.schedule().await
    }

    fn start_pass(&self) -> Result<()> {
        self.save_pass(&Pass::default())
    }

    /// Announces the next page of the current pass, if one is running.
    fn step(&self) -> Result<()> {
        let mut pass = self.pass()?;
        if pass.done {
            return Ok(());
        }
        let members = self.members();
        if members.is_empty() {
            pass.done = true;
            return self.save_pass(&pass);
        }
        let rooms: Vec<RoomRow> = self.db()?.rows(
            "SELECT room, pending FROM rooms WHERE room > ? ORDER BY room LIMIT ?",
            vec![pass.after.as_str().into(), (PAGE as i64).into()],
        )?;
        for row in &rooms {
            announce(
                &members,
                &Registration {
                    room: row.room.clone(),
                    pending: row.pending,
                },
            );
        }
        pass.turns += 1;
        pass.rooms += rooms.len() as u64;
        pass.done = (rooms.len() as u64) < PAGE;
        if let Some(last) = rooms.last() {
            pass.after = last.room.clone();
        }
        self.save_pass(&pass)
    }

    fn pass(&self) -> Result<Pass> {
        let rows: Vec<MetaRow> = self
            .db()?
            .rows("SELECT value FROM meta WHERE key = 'pass'", vec![])?;
        Ok(rows
            .first()
            .and_then(|r| serde_json::from_str(&r.value).ok())
            .unwrap_or(Pass {
                done: true,
                ..Pass::default()
            }))
    }

    fn save_pass(&self, pass: &Pass) -> Result<()> {
        self.db()?.run(
            "INSERT INTO meta (key, value) VALUES ('pass', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![serde_json::to_string(pass)?.into()],
        )?;
        Ok(())
    }

    /// The alarm: soon while a pass runs, else at the earliest member expiry.
    async fn schedule(&self) -> Result<()> {
        let settings = self.settings()?;
        let expiry = self
            .members()
            .iter()
            .map(|(_, m)| bridge_token::close_at_ms(m.exp, &settings))
            .min();
        let next = if self.pass()?.done {
            expiry
        } else {
            Some(now_ms())
        };
        match next {
            Some(at) => alarm::set(&self.state.storage(), at).await,
            None => self.state.storage().delete_alarm().await,
        }
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
