//! Admission (docs/protocol.md, "HTTP"): which route a request asks for,
//! what its token must allow there, and where the token comes from.
//!
//! The worker's router only reads the request's method, path and headers
//! and hands them here, so every decision that refuses a request before a
//! Durable Object is woken is plain code with unit tests (and a fuzz
//! target), the same on the edge and natively.

use crate::error::ErrorCode;
use crate::rights::Rights;
use crate::room::RoomName;

/// The subprotocol a client speaks roomcast with.
pub const SUBPROTOCOL: &str = "roomcast.v1";
/// The prefix of the subprotocol that carries a token (browsers cannot set
/// headers on a WebSocket).
pub const BEARER_PROTOCOL: &str = "bearer.";

/// A refusal: the code and a message for the caller.
pub type Refusal = (ErrorCode, String);

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Room {
        room: RoomName,
        op: RoomOp,
    },
    /// The bridge's registry link (a WebSocket).
    RegistryLink,
    /// What the registry holds, for the bridge's token.
    RegistryReport,
    /// Anything outside `/v1`: the static demo page.
    Assets,
}

/// What a request does in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomOp {
    Join,
    Publish,
    History,
    Stats,
    BridgeLink,
}

/// What a token must allow for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Subscribe,
    Publish,
    Bridge,
}

impl Route {
    /// Whether the route is a WebSocket upgrade (`426` otherwise).
    pub fn upgrade(&self) -> bool {
        matches!(
            self,
            Route::RegistryLink
                | Route::Room {
                    op: RoomOp::Join | RoomOp::BridgeLink,
                    ..
                }
        )
    }

    /// What the token must allow, for routes that need one.
    pub fn need(&self) -> Option<Need> {
        match self {
            Route::Health | Route::Assets => None,
            Route::RegistryLink | Route::RegistryReport => Some(Need::Bridge),
            Route::Room { op, .. } => Some(match op {
                RoomOp::Join | RoomOp::History | RoomOp::Stats => Need::Subscribe,
                RoomOp::Publish => Need::Publish,
                RoomOp::BridgeLink => Need::Bridge,
            }),
        }
    }

    /// Whether `rights` allow this route.
    pub fn allowed(&self, rights: &Rights) -> bool {
        let room = match self {
            Route::Room { room, .. } => Some(room.as_str()),
            _ => None,
        };
        match self.need() {
            None => true,
            Some(Need::Bridge) => rights.bridge,
            Some(Need::Subscribe) => room.is_some_and(|r| rights.can_subscribe(r)),
            Some(Need::Publish) => room.is_some_and(|r| rights.can_publish(r)),
        }
    }
}

/// The query of a request URL as `application/x-www-form-urlencoded`
/// pairs, decoded, in order (what `url::Url::query_pairs` yields). The
/// worker reads queries through this rather than `Request::url`, whose URL
/// parser (host parsing, IDNA tables) was 68 KB of the 351 KB gzipped bundle.
pub fn query(url: &str) -> form_urlencoded::Parse<'_> {
    let before_fragment = url.split_once('#').map_or(url, |(head, _)| head);
    let query = before_fragment.split_once('?').map_or("", |(_, q)| q);
    form_urlencoded::parse(query.as_bytes())
}

/// The route of `method` on `path` (the path without the query).
pub fn route(method: &str, path: &str) -> Result<Route, Refusal> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get_only = |route: Route| {
        if method == "GET" {
            Ok(route)
        } else {
            Err(refusal(
                ErrorCode::MethodNotAllowed,
                "method not allowed here",
            ))
        }
    };
    match segments.as_slice() {
        ["healthz"] => get_only(Route::Health),
        ["v1", "rooms", room, op] => room_route(method, room, op),
        ["v1", "bridge"] => get_only(Route::RegistryLink),
        ["v1", "registry"] => get_only(Route::RegistryReport),
        ["v1", ..] => Err(refusal(ErrorCode::NotFound, "no such API path")),
        _ => Ok(Route::Assets),
    }
}

fn room_route(method: &str, room: &str, op: &str) -> Result<Route, Refusal> {
    let room = RoomName::parse(room).ok_or_else(|| {
        refusal(
            ErrorCode::BadRoom,
            "room names match ^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
        )
    })?;
    let op = match (op, method) {
        ("ws", "GET") => RoomOp::Join,
        ("messages", "POST") => RoomOp::Publish,
        ("messages", "GET") => RoomOp::History,
        ("stats", "GET") => RoomOp::Stats,
        ("bridge", "GET") => RoomOp::BridgeLink,
        ("ws" | "stats" | "messages" | "bridge", _) => {
            return Err(refusal(
                ErrorCode::MethodNotAllowed,
                "method not allowed here",
            ))
        }
        _ => return Err(refusal(ErrorCode::NotFound, "no such room operation")),
    };
    Ok(Route::Room { room, op })
}

/// The token from, in order, `Authorization: Bearer`, the `bearer.<jwt>`
/// subprotocol, or `?token=`. A token offered as a subprotocol needs
/// [`SUBPROTOCOL`] offered too: the handshake must answer with one of the
/// offers, and the only other one would be the token itself, echoed in a
/// response header.
pub fn token(
    authorization: Option<&str>,
    protocols: Option<&str>,
    query: Option<&str>,
) -> Result<Option<String>, Refusal> {
    if let Some(token) = authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) {
        return Ok(Some(token.trim().to_owned()));
    }
    if let Some(offers) = protocols {
        let offers: Vec<&str> = offers.split(',').map(str::trim).collect();
        if let Some(token) = offers.iter().find_map(|p| p.strip_prefix(BEARER_PROTOCOL)) {
            if !offers.contains(&SUBPROTOCOL) {
                return Err(refusal(
                    ErrorCode::BadRequest,
                    "offer the roomcast.v1 subprotocol with bearer.<jwt>",
                ));
            }
            return Ok(Some(token.to_owned()));
        }
    }
    Ok(query.map(str::to_owned))
}

/// The subprotocol to answer a WebSocket handshake with: [`SUBPROTOCOL`]
/// when offered, else the first offer that carries no token.
pub fn answer_subprotocol(protocols: Option<&str>) -> Option<String> {
    let offers: Vec<&str> = protocols?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with(BEARER_PROTOCOL))
        .collect();
    offers
        .iter()
        .find(|p| **p == SUBPROTOCOL)
        .or(offers.first())
        .map(|p| p.to_string())
}

fn refusal(code: ErrorCode, message: &str) -> Refusal {
    (code, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn query_pairs_decoded_without_fragment() {
        let pairs: Vec<(String, String)> =
            query("https://h.example/v1/rooms/a/ws?since=4&token=a%2Bb+c&x#f?token=no")
                .into_owned()
                .collect();
        assert_eq!(
            pairs,
            [
                ("since".to_owned(), "4".to_owned()),
                ("token".to_owned(), "a+b c".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(query("https://h.example/healthz").count(), 0);
        assert_eq!(query("https://h.example/?#").count(), 0);
    }

    fn room(name: &str, op: RoomOp) -> Route {
        Route::Room {
            room: RoomName::parse(name).unwrap(),
            op,
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/healthz"), Ok(Route::Health));
        assert_eq!(route("GET", "/v1/rooms/a/ws"), Ok(room("a", RoomOp::Join)));
        assert_eq!(
            route("POST", "/v1/rooms/a/messages"),
            Ok(room("a", RoomOp::Publish))
        );
        assert_eq!(route("GET", "/v1/bridge"), Ok(Route::RegistryLink));
        assert_eq!(route("GET", "/index.html"), Ok(Route::Assets));
        let code = |m, p| route(m, p).unwrap_err().0;
        assert_eq!(code("GET", "/v1/rooms/.a/ws"), ErrorCode::BadRoom);
        assert_eq!(code("PUT", "/v1/rooms/a/ws"), ErrorCode::MethodNotAllowed);
        assert_eq!(code("GET", "/v1/rooms/a/nope"), ErrorCode::NotFound);
        assert_eq!(code("GET", "/v1/nope"), ErrorCode::NotFound);
        assert_eq!(code("POST", "/v1/registry"), ErrorCode::MethodNotAllowed);
    }

    #[test]
    fn rights_per_route() {
        let user = Rights {
            rooms: vec!["a.*".into()],
            publish: vec![],
            bridge: false,
        };
        assert!(room("a.b", RoomOp::Join).allowed(&user));
        assert!(!room("a.b", RoomOp::Publish).allowed(&user));
        assert!(!room("a.b", RoomOp::BridgeLink).allowed(&user));
        assert!(!Route::RegistryReport.allowed(&user));
        assert!(room("a.b", RoomOp::BridgeLink).upgrade());
        assert!(!room("a.b", RoomOp::Stats).upgrade());
    }

    #[test]
    fn token_sources_in_order() {
        assert_eq!(
            token(Some("Bearer h"), Some("roomcast.v1, bearer.p"), Some("q")),
            Ok(Some("h".into()))
        );
        assert_eq!(
            token(None, Some("roomcast.v1, bearer.p"), Some("q")),
            Ok(Some("p".into()))
        );
        assert_eq!(token(None, None, Some("q")), Ok(Some("q".into())));
        assert_eq!(token(None, Some("chat"), None), Ok(None));
        assert_eq!(
            token(None, Some("bearer.p"), None).unwrap_err().0,
            ErrorCode::BadRequest,
            "a lone bearer offer would have its token echoed"
        );
    }

    #[test]
    fn the_answer_never_names_a_token() {
        assert_eq!(
            answer_subprotocol(Some("bearer.x, roomcast.v1")).as_deref(),
            Some("roomcast.v1")
        );
        assert_eq!(
            answer_subprotocol(Some("chat, v2")).as_deref(),
            Some("chat")
        );
        assert_eq!(answer_subprotocol(Some("bearer.x")), None);
        assert_eq!(answer_subprotocol(None), None);
    }
}
