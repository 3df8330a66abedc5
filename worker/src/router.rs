//! The HTTP surface of SPEC section 2: admission (room name, origin, token,
//! rights) and dispatch to the room's Durable Object.
//!
//! Everything that can be refused is refused here, before a Durable Object is
//! woken; the room receives only authenticated requests, with the verified
//! identity attached.

use futures_util::StreamExt;
use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::{ErrorCode, RoomName};
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result, Stub};

use crate::registry;
use crate::reply;
use crate::room::{IDENTITY_HEADER, ROOM_HEADER};
use crate::settings::{self, Settings};

/// The Durable Object namespace of rooms (see `wrangler.toml`).
const ROOMS_BINDING: &str = "ROOMS";
/// The static-assets binding serving `public/`.
const ASSETS_BINDING: &str = "ASSETS";

/// Largest identity (JSON) a token may carry. It rides in the WebSocket
/// attachment, which the runtime caps at 16 KiB together with the rest of
/// the session.
const MAX_IDENTITY_BYTES: usize = 8 * 1024;

/// What a room request needs the token to allow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Subscribe,
    Publish,
    Bridge,
}

pub async fn handle(req: Request, env: Env) -> Result<Response> {
    let path = req.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => reply::json(
            200,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        ),
        ["v1", "rooms", room, op] => room_request(req, env, room, op).await,
        ["v1", "bridge"] => registry_request(req, env, true).await,
        ["v1", "registry"] => registry_request(req, env, false).await,
        ["v1", ..] => reply::error(ErrorCode::NotFound, "no such API path"),
        _ => env.assets(ASSETS_BINDING)?.fetch_request(req).await,
    }
}

async fn room_request(req: Request, env: Env, room: &str, op: &str) -> Result<Response> {
    let Some(room) = RoomName::parse(room) else {
        return reply::error(
            ErrorCode::BadRoom,
            "room names match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        );
    };
    let need = match (op, req.method()) {
        ("ws" | "stats", Method::Get) | ("messages", Method::Get) => Need::Subscribe,
        ("messages", Method::Post) => Need::Publish,
        ("bridge", Method::Get) => Need::Bridge,
        ("ws" | "stats" | "messages" | "bridge", _) => {
            return reply::error(ErrorCode::MethodNotAllowed, "method not allowed here")
        }
        _ => return reply::error(ErrorCode::NotFound, "no such room operation"),
    };
    if matches!(op, "ws" | "bridge") && !is_upgrade(&req)? {
        return reply::error(
            ErrorCode::UpgradeRequired,
            "this endpoint needs a WebSocket upgrade",
        );
    }
    let stub = env
        .durable_object(ROOMS_BINDING)?
        .id_from_name(room.as_str())?
        .get_stub()?;
    admit_and_forward(req, &env, Some(&room), need, stub).await
}

/// The registry link (`/v1/bridge`, a WebSocket) and the registry's report
/// (`/v1/registry`), for the bridge's token only.
async fn registry_request(req: Request, env: Env, link: bool) -> Result<Response> {
    if req.method() != Method::Get {
        return reply::error(ErrorCode::MethodNotAllowed, "method not allowed here");
    }
    if link && !is_upgrade(&req)? {
        return reply::error(
            ErrorCode::UpgradeRequired,
            "this endpoint needs a WebSocket upgrade",
        );
    }
    let stub = registry::stub(&env)?;
    admit_and_forward(req, &env, None, Need::Bridge, stub).await
}

async fn admit_and_forward(
    req: Request,
    env: &Env,
    room: Option<&RoomName>,
    need: Need,
    stub: Stub,
) -> Result<Response> {
    let settings = match settings::load(env) {
        Ok(settings) => settings,
        Err(message) => {
            worker::console_error!("configuration error: {message}");
            return reply::error(
                ErrorCode::Internal,
                "the worker is misconfigured; see its logs",
            );
        }
    };
    let identity = match admit(&req, &settings, room, need)? {
        Ok(identity) => identity,
        Err((code, message)) => return reply::error(code, &message),
    };
    forward(req, stub, room, &identity, settings.config.max_body_bytes).await
}

/// Checks origin, token and rights; the error is the code and message to send.
fn admit(
    req: &Request,
    settings: &Settings,
    room: Option<&RoomName>,
    need: Need,
) -> Result<std::result::Result<Identity, (ErrorCode, String)>> {
    let origin = req.headers().get("origin")?;
    if !settings.config.origin_allowed(origin.as_deref()) {
        return Ok(Err((
            ErrorCode::BadOrigin,
            "this origin is not allowed".into(),
        )));
    }
    let Some(token) = token(req)? else {
        return Ok(Err((
            ErrorCode::Unauthorized,
            "a token is required (Authorization: Bearer, bearer.<jwt> subprotocol or ?token=)"
                .into(),
        )));
    };
    let identity = match settings.verifier.verify(&token, now_ms()) {
        Ok(identity) => identity,
        Err(e) => return Ok(Err((ErrorCode::Unauthorized, e.to_string()))),
    };
    if serde_json::to_string(&identity)?.len() > MAX_IDENTITY_BYTES {
        return Ok(Err((
            ErrorCode::Unauthorized,
            "the token carries too many room patterns".into(),
        )));
    }
    let allowed = match need {
        Need::Subscribe => room.is_some_and(|r| identity.rights.can_subscribe(r.as_str())),
        Need::Publish => room.is_some_and(|r| identity.rights.can_publish(r.as_str())),
        Need::Bridge => identity.rights.bridge,
    };
    if !allowed {
        return Ok(Err((
            ErrorCode::Forbidden,
            "this token does not grant that here".into(),
        )));
    }
    Ok(Ok(identity))
}

fn is_upgrade(req: &Request) -> Result<bool> {
    Ok(req
        .headers()
        .get("upgrade")?
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket")))
}

/// The token from, in order, `Authorization: Bearer`, the `bearer.<jwt>`
/// subprotocol, or `?token=` (SPEC section 2).
fn token(req: &Request) -> Result<Option<String>> {
    let headers = req.headers();
    if let Some(auth) = headers.get("authorization")? {
        if let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            return Ok(Some(token.trim().to_owned()));
        }
    }
    if let Some(protocols) = headers.get("sec-websocket-protocol")? {
        if let Some(token) = protocols
            .split(',')
            .map(str::trim)
            .find_map(|p| p.strip_prefix("bearer."))
        {
            return Ok(Some(token.to_owned()));
        }
    }
    let url = req.url()?;
    Ok(url
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned()))
}

/// Sends the admitted request to its Durable Object, with the room name and
/// identity in internal headers (the objects are reachable only through
/// this worker).
async fn forward(
    mut req: Request,
    stub: Stub,
    room: Option<&RoomName>,
    identity: &Identity,
    max_body_bytes: u64,
) -> Result<Response> {
    let headers = Headers::new();
    for (name, value) in req.headers().entries() {
        if name != ROOM_HEADER && name != IDENTITY_HEADER {
            headers.append(&name, &value)?;
        }
    }
    if let Some(room) = room {
        headers.set(ROOM_HEADER, room.as_str())?;
    }
    headers.set(IDENTITY_HEADER, &identity.to_header())?;
    let mut init = RequestInit::new();
    init.with_method(req.method()).with_headers(headers);
    if req.method() == Method::Post {
        match read_body(&mut req, max_body_bytes).await? {
            Body::Text(body) => init.with_body(Some(body.into())),
            Body::TooLarge => {
                return reply::error(
                    ErrorCode::TooLarge,
                    &format!("the request body is over MAX_BODY_BYTES ({max_body_bytes} bytes)"),
                )
            }
            Body::NotText => {
                return reply::error(ErrorCode::BadFormat, "the request body is not UTF-8 text")
            }
        };
    }
    let inner = Request::new_with_init(req.url()?.as_str(), &init)?;
    stub.fetch_with_request(inner).await
}

/// A request body as the router reads it.
enum Body {
    Text(String),
    TooLarge,
    NotText,
}

/// The request body, refused when it is over `max` bytes: on its declared
/// length before anything is read, and while reading when it comes chunked
/// (or lies about its length).
async fn read_body(req: &mut Request, max: u64) -> Result<Body> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Ok(Body::TooLarge);
    }
    if declared == Some(0) {
        return Ok(Body::Text(String::new()));
    }
    let mut stream = match req.stream() {
        Ok(stream) => stream,
        // No body at all.
        Err(_) => return Ok(Body::Text(String::new())),
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (body.len() + chunk.len()) as u64 > max {
            return Ok(Body::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8(body).map_or(Body::NotText, Body::Text))
}
