//! The worker's front door (docs/protocol.md, "HTTP"): reads a request's
//! method, path and headers, asks [`roomcast_protocol::admission`] where it
//! goes and whether its token allows it, reads a bounded body, and forwards
//! it to its Durable Object.
//!
//! Everything that can be refused is refused here, before a Durable Object
//! is woken; the objects receive only admitted requests, with the verified
//! identity attached. CORS preflights are answered here too, and every
//! answer of the API leaves with the CORS headers admission chose.

use std::rc::Rc;

use futures_util::StreamExt;
use roomcast_protocol::admission::{self, Asked, Route};
use roomcast_protocol::auth::Identity;
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::ids;
use roomcast_protocol::mux::hub_index;
use roomcast_protocol::{ErrorCode, Refusal};
use worker::{Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::headers::{
    CONN_HEADER, HUB_HEADER, IDENTITY_HEADER, INTERNAL_PREFIX, ROOM_HEADER, SHARD_HEADER,
};
use crate::internal;
use crate::registry;
use crate::reply;
use crate::settings::{self, Settings};

/// The static-assets binding serving `public/`.
const ASSETS_BINDING: &str = "ASSETS";

/// Why the router did not forward a request: a refusal for the caller, or
/// a failure of the runtime.
enum Failure {
    Refused(Refusal),
    Runtime(worker::Error),
}

impl From<worker::Error> for Failure {
    fn from(e: worker::Error) -> Failure {
        Failure::Runtime(e)
    }
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Failure {
        Failure::Refused(refusal)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(e: serde_json::Error) -> Failure {
        Failure::Runtime(e.into())
    }
}

fn refused(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure::Refused(Refusal::new(code, message))
}

pub async fn handle(req: Request, env: Env) -> worker::Result<Response> {
    let origin = req.headers().get("origin")?;
    let asked = admission::ask(
        req.method().as_ref(),
        &req.path(),
        origin.as_deref(),
        req.headers()
            .get("access-control-request-method")?
            .as_deref(),
    );
    // The assets are the demo page itself, outside the API and its CORS.
    let api = !matches!(asked, Ok(Asked::Request(Route::Assets)));
    let response = match dispatch(req, &env, asked).await {
        Ok(response) => response,
        Err(Failure::Refused(refusal)) => reply::refusal(&refusal)?,
        Err(Failure::Runtime(e)) => return Err(e),
    };
    // A WebSocket handshake's answer is not read by a page (and cannot be
    // rebuilt without losing its socket); a broken configuration admits
    // no origin.
    if !api || response.status_code() == 101 {
        return Ok(response);
    }
    match settings::load(&env) {
        Ok(settings) => reply::with_headers(
            response,
            &admission::cors_headers(origin.as_deref(), &settings.config),
        ),
        Err(_) => Ok(response),
    }
}

async fn dispatch(
    req: Request,
    env: &Env,
    asked: Result<Asked, Refusal>,
) -> Result<Response, Failure> {
    let route = match asked? {
        Asked::Preflight(route) => {
            let settings = load_settings(env)?;
            admission::check_origin(req.headers().get("origin")?.as_deref(), &settings.config)?;
            return Ok(reply::no_content(&admission::preflight_headers(&route))?);
        }
        Asked::Request(route) => route,
    };
    match &route {
        Route::Health => Ok(reply::json(
            200,
            &serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
        )?),
        Route::Assets => Ok(env.assets(ASSETS_BINDING)?.fetch_request(req).await?),
        Route::Room { room, .. } => {
            let stub = internal::room_stub(env, room.as_str())?;
            admit_and_forward(req, env, &route, stub).await
        }
        Route::Multiplexed => connect(req, env, &route).await,
        Route::RegistryLink | Route::RegistryReport => {
            admit_and_forward(req, env, &route, registry::stub(env)?).await
        }
    }
}

/// The isolate's settings; while the configuration does not parse, every
/// request that needs it is refused (docs/protocol.md, "Configuration").
fn load_settings(env: &Env) -> Result<Rc<Settings>, Failure> {
    settings::load(env).map_err(|message| {
        worker::console_error!("configuration error: {message}");
        refused(
            ErrorCode::Internal,
            "the worker is misconfigured; see its logs",
        )
    })
}

async fn admit_and_forward(
    req: Request,
    env: &Env,
    route: &Route,
    stub: Stub,
) -> Result<Response, Failure> {
    if route.upgrade() && !is_upgrade(&req)? {
        return Err(refused(
            ErrorCode::UpgradeRequired,
            "this endpoint needs a WebSocket upgrade",
        ));
    }
    let settings = load_settings(env)?;
    let identity = admit(&req, &settings, route)?;
    let inner = Inner::new(req, route, &identity, settings.config.max_body_bytes).await?;
    let response = inner.send(&stub).await?;
    // A room that holds all the connections it may places a join on one of
    // its shards (docs/internals.md, "Sharding"); the client sees only the shard's answer.
    let shard = response.headers().get(SHARD_HEADER)?;
    match (route, shard) {
        (Route::Room { room, .. }, Some(index)) if route.upgrade() => {
            let index: u32 = index.parse().map_err(|_| {
                Failure::Runtime(worker::Error::RustError(format!("bad shard {index:?}")))
            })?;
            inner.headers.set(SHARD_HEADER, &index.to_string())?;
            if let Some(conn_id) = response.headers().get(CONN_HEADER)? {
                inner.headers.set(CONN_HEADER, &conn_id)?;
            }
            let stub = internal::shard_stub(env, room.as_str(), index)?;
            Ok(inner.send(&stub).await?)
        }
        _ => Ok(response),
    }
}

/// A multiplexed connection: admitted as a room's join is (origin, token),
/// given its `conn_id` here, and placed on its subject's hub of the pool.
async fn connect(req: Request, env: &Env, route: &Route) -> Result<Response, Failure> {
    if !is_upgrade(&req)? {
        return Err(refused(
            ErrorCode::UpgradeRequired,
            "this endpoint needs a WebSocket upgrade",
        ));
    }
    let settings = load_settings(env)?;
    let identity = admit(&req, &settings, route)?;
    let inner = Inner::new(req, route, &identity, settings.config.max_body_bytes).await?;
    let conn_id = ids::conn_id();
    let index = hub_index(&identity.sub, settings.config.hub_objects);
    inner.headers.set(CONN_HEADER, &conn_id)?;
    inner.headers.set(HUB_HEADER, &index.to_string())?;
    Ok(inner.send(&internal::hub_stub(env, index)?).await?)
}

/// Checks origin, token and rights.
fn admit(req: &Request, settings: &Settings, route: &Route) -> Result<Identity, Failure> {
    let headers = req.headers();
    admission::check_origin(headers.get("origin")?.as_deref(), &settings.config)?;
    let query_token = admission::query(&req.inner().url())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let token = admission::token(
        headers.get("authorization")?.as_deref(),
        headers.get("sec-websocket-protocol")?.as_deref(),
        query_token.as_deref(),
        settings.config.query_tokens,
    )?;
    let identity = settings
        .verifier
        .verify(&token, now_ms())
        .map_err(|e| refused(ErrorCode::Unauthorized, e.to_string()))?;
    if !route.allowed(&identity.rights) {
        return Err(refused(
            ErrorCode::Forbidden,
            "this token does not grant that here",
        ));
    }
    Ok(identity)
}

fn is_upgrade(req: &Request) -> worker::Result<bool> {
    Ok(req
        .headers()
        .get("upgrade")?
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket")))
}

/// An admitted request as its Durable Object gets it: the room name and
/// identity in internal headers (the objects are reachable only through
/// this worker), the body read within its limit.
struct Inner {
    url: String,
    method: Method,
    headers: Headers,
    body: Option<String>,
}

impl Inner {
    async fn new(
        mut req: Request,
        route: &Route,
        identity: &Identity,
        max_body_bytes: u64,
    ) -> Result<Inner, Failure> {
        let headers = Headers::new();
        for (name, value) in req.headers().entries() {
            if !name.starts_with(INTERNAL_PREFIX) {
                headers.append(&name, &value)?;
            }
        }
        if let Route::Room { room, .. } = route {
            headers.set(ROOM_HEADER, room.as_str())?;
        }
        headers.set(IDENTITY_HEADER, &identity.to_header())?;
        let body = match req.method() {
            Method::Post => Some(read_body(&mut req, max_body_bytes).await?),
            _ => None,
        };
        Ok(Inner {
            url: req.inner().url(),
            method: req.method(),
            headers,
            body,
        })
    }

    async fn send(&self, stub: &Stub) -> worker::Result<Response> {
        let mut init = RequestInit::new();
        init.with_method(self.method.clone())
            .with_headers(self.headers.clone());
        if let Some(body) = &self.body {
            init.with_body(Some(body.clone().into()));
        }
        stub.fetch_with_request(Request::new_with_init(&self.url, &init)?)
            .await
    }
}

/// The request body as text, refused when it is over `max` bytes: on its
/// declared length before anything is read, and while reading when it comes
/// chunked (or lies about its length).
async fn read_body(req: &mut Request, max: u64) -> Result<String, Failure> {
    let too_large = || {
        refused(
            ErrorCode::TooLarge,
            format!("the request body is over MAX_BODY_BYTES ({max} bytes)"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    if declared == Some(0) {
        return Ok(String::new());
    }
    let Ok(mut stream) = req.stream() else {
        // No body at all.
        return Ok(String::new());
    };
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (body.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body)
        .map_err(|_| refused(ErrorCode::BadFormat, "the request body is not UTF-8 text"))
}
