//! Admission (docs/protocol.md, "HTTP"): which route a request asks for,
//! what its token must allow there, where the token comes from, and what
//! a page on another origin may read (CORS).
//!
//! The worker's router only reads the request's method, path and headers
//! and hands them here, so every decision that refuses a request before a
//! Durable Object is woken is plain code with unit tests (and a fuzz
//! target), the same on the edge and natively.

use crate::config::{Config, QueryTokens};
use crate::error::{ErrorCode, Refusal};
use crate::rights::Rights;
use crate::room::RoomName;
use crate::wire::ERROR_HEADER;

/// The subprotocol a client speaks roomcast with.
pub const SUBPROTOCOL: &str = "roomcast.v1";
/// The prefix of the subprotocol that carries a token (browsers cannot set
/// headers on a WebSocket).
pub const BEARER_PROTOCOL: &str = "bearer.";

/// Response headers as (name, value) pairs.
pub type HeaderList = Vec<(&'static str, String)>;

/// Request headers a page may send cross-origin: its token, a publish
/// body, and the trace context of [`crate::trace`].
pub const CORS_ALLOW_HEADERS: &str = "authorization, content-type, traceparent";
/// How long a browser may reuse a preflight answer. Chromium caps it at two
/// hours; a cached preflight only skips the preflight, the origin of every
/// request is still checked, so a narrowed `ALLOWED_ORIGINS` applies at once.
pub const CORS_MAX_AGE_SECS: u32 = 7200;

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

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// A CORS preflight for a route pages may call: answered by the router
    /// alone, before a token is needed (a browser sends none with it).
    Preflight(Route),
    /// Anything else: the route itself.
    Request(Route),
}

/// What a request does in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomOp {
    Join,
    Publish,
    History,
    Stats,
    /// The members and counts (docs/protocol.md, "Presence").
    Presence,
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

    /// Whether a page on another origin may call the route with `fetch`
    /// (CORS): every HTTP route of the API. WebSocket handshakes are not
    /// governed by CORS (the `Origin` check is their protection), and the
    /// assets are the page itself.
    pub fn cross_origin(&self) -> bool {
        !self.upgrade() && !matches!(self, Route::Assets)
    }

    /// The methods the route's path takes, as a preflight answers them.
    pub fn methods(&self) -> &'static str {
        match self {
            Route::Room {
                op: RoomOp::Publish | RoomOp::History,
                ..
            } => "GET, POST",
            _ => "GET",
        }
    }

    /// What the token must allow, for routes that need one.
    pub fn need(&self) -> Option<Need> {
        match self {
            Route::Health | Route::Assets => None,
            Route::RegistryLink | Route::RegistryReport => Some(Need::Bridge),
            Route::Room { op, .. } => Some(match op {
                RoomOp::Join | RoomOp::History | RoomOp::Stats | RoomOp::Presence => {
                    Need::Subscribe
                }
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

/// What a request asks for. `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method` (`request_method`) is a CORS preflight
/// when the method it asks about routes to a [`Route::cross_origin`] route;
/// any other `OPTIONS` is routed like every request (and refused `405`).
pub fn ask(
    method: &str,
    path: &str,
    origin: Option<&str>,
    request_method: Option<&str>,
) -> Result<Asked, Refusal> {
    if let (true, Some(_), Some(asked)) = (method == "OPTIONS", origin, request_method) {
        let route = route(asked, path)?;
        if route.cross_origin() {
            return Ok(Asked::Preflight(route));
        }
    }
    route(method, path).map(Asked::Request)
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
        ("presence", "GET") => RoomOp::Presence,
        ("bridge", "GET") => RoomOp::BridgeLink,
        ("ws" | "stats" | "presence" | "messages" | "bridge", _) => {
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
/// subprotocol, or `?token=` (`query`). A token offered as a subprotocol
/// needs [`SUBPROTOCOL`] offered too: the handshake must answer with one of
/// the offers, and the only other one would be the token itself, echoed in
/// a response header. With [`QueryTokens::Off`] a request that carries
/// `?token=` is refused even when it also sends a header: the token is
/// already in the URL, and refusing it is what makes its sender notice.
pub fn token(
    authorization: Option<&str>,
    protocols: Option<&str>,
    query: Option<&str>,
    query_tokens: QueryTokens,
) -> Result<String, Refusal> {
    if query.is_some() && query_tokens == QueryTokens::Off {
        return Err(refusal(
            ErrorCode::Unauthorized,
            "tokens in URLs are turned off (QUERY_TOKENS=off): send Authorization: Bearer <jwt>, \
             or offer the WebSocket subprotocols roomcast.v1 and bearer.<jwt>",
        ));
    }
    if let Some(token) = authorization.and_then(|a| {
        a.strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
    }) {
        return Ok(token.trim().to_owned());
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
            return Ok(token.to_owned());
        }
    }
    match (query, query_tokens) {
        (Some(token), _) => Ok(token.to_owned()),
        (None, QueryTokens::On) => Err(refusal(
            ErrorCode::Unauthorized,
            "a token is required (Authorization: Bearer, bearer.<jwt> subprotocol or ?token=)",
        )),
        (None, QueryTokens::Off) => Err(refusal(
            ErrorCode::Unauthorized,
            "a token is required (Authorization: Bearer or bearer.<jwt> subprotocol)",
        )),
    }
}

/// `403 bad_origin` for an `Origin` that `ALLOWED_ORIGINS` refuses.
pub fn check_origin(origin: Option<&str>, config: &Config) -> Result<(), Refusal> {
    if config.origin_allowed(origin) {
        Ok(())
    } else {
        Err(refusal(ErrorCode::BadOrigin, "this origin is not allowed"))
    }
}

/// The CORS headers of every answer of the API but WebSocket handshakes
/// (refusals included, so a page can read why; preflights add
/// [`preflight_headers`]): the request's `Origin` echoed when the
/// configuration admits it, with the response headers a page may read.
/// `Vary: Origin` is always there, so a cache never hands one origin's
/// answer to another.
pub fn cors_headers(origin: Option<&str>, config: &Config) -> HeaderList {
    let mut headers = vec![("vary", "Origin".to_owned())];
    if let Some(origin) = origin.filter(|o| config.origin_allowed(Some(o))) {
        headers.push(("access-control-allow-origin", origin.to_owned()));
        headers.push((
            "access-control-expose-headers",
            format!("{ERROR_HEADER}, retry-after"),
        ));
    }
    headers
}

/// The headers of a `204` preflight answer for `route`, besides
/// [`cors_headers`]. No `Access-Control-Allow-Credentials`: tokens travel
/// in `Authorization`, never in cookies.
pub fn preflight_headers(route: &Route) -> HeaderList {
    vec![
        ("access-control-allow-methods", route.methods().to_owned()),
        (
            "access-control-allow-headers",
            CORS_ALLOW_HEADERS.to_owned(),
        ),
        ("access-control-max-age", CORS_MAX_AGE_SECS.to_string()),
    ]
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
    Refusal::new(code, message)
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
        assert_eq!(
            route("GET", "/v1/rooms/a/presence"),
            Ok(room("a", RoomOp::Presence))
        );
        assert_eq!(route("GET", "/index.html"), Ok(Route::Assets));
        let code = |m, p| route(m, p).unwrap_err().code;
        assert_eq!(code("GET", "/v1/rooms/.a/ws"), ErrorCode::BadRoom);
        assert_eq!(code("PUT", "/v1/rooms/a/ws"), ErrorCode::MethodNotAllowed);
        assert_eq!(code("GET", "/v1/rooms/a/nope"), ErrorCode::NotFound);
        assert_eq!(code("GET", "/v1/nope"), ErrorCode::NotFound);
        assert_eq!(code("POST", "/v1/registry"), ErrorCode::MethodNotAllowed);
        assert_eq!(
            code("POST", "/v1/rooms/a/presence"),
            ErrorCode::MethodNotAllowed
        );
    }

    #[test]
    fn rights_per_route() {
        let user = Rights {
            rooms: vec!["a.*".into()],
            publish: vec![],
            bridge: false,
            presence: vec![],
            channels: vec![],
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
        let on = QueryTokens::On;
        assert_eq!(
            token(
                Some("Bearer h"),
                Some("roomcast.v1, bearer.p"),
                Some("q"),
                on
            ),
            Ok("h".into())
        );
        assert_eq!(
            token(None, Some("roomcast.v1, bearer.p"), Some("q"), on),
            Ok("p".into())
        );
        assert_eq!(token(None, None, Some("q"), on), Ok("q".into()));
        let Refusal { code, message, .. } = token(None, Some("chat"), None, on).unwrap_err();
        assert_eq!(code, ErrorCode::Unauthorized);
        assert!(message.contains("?token="), "{message}");
        assert_eq!(
            token(None, Some("bearer.p"), None, on).unwrap_err().code,
            ErrorCode::BadRequest,
            "a lone bearer offer would have its token echoed"
        );
    }

    #[test]
    fn query_tokens_off_refuses_any_url_token() {
        let off = QueryTokens::Off;
        for with_header in [None, Some("Bearer h")] {
            let Refusal { code, message, .. } =
                token(with_header, None, Some("q"), off).unwrap_err();
            assert_eq!(code, ErrorCode::Unauthorized);
            for hint in ["QUERY_TOKENS", "Authorization: Bearer", "bearer.<jwt>"] {
                assert!(message.contains(hint), "{hint} in {message}");
            }
        }
        assert_eq!(
            token(None, None, Some(""), off).unwrap_err().code,
            ErrorCode::Unauthorized
        );
        assert_eq!(token(Some("Bearer h"), None, None, off), Ok("h".into()));
        assert_eq!(
            token(None, Some("roomcast.v1, bearer.p"), None, off),
            Ok("p".into())
        );
        let Refusal {
            message: missing, ..
        } = token(None, None, None, off).unwrap_err();
        assert!(!missing.contains("?token="), "{missing}");
    }

    fn origins(allowed: &str) -> Config {
        Config::from_lookup(|name| (name == "ALLOWED_ORIGINS").then(|| allowed.to_owned())).unwrap()
    }

    fn header<'a>(headers: &'a HeaderList, name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflights_are_asked_only_for_http_routes() {
        let page = Some("https://app.example");
        let preflight = |path, asked| ask("OPTIONS", path, page, Some(asked));
        assert_eq!(
            preflight("/v1/rooms/a/messages", "POST"),
            Ok(Asked::Preflight(room("a", RoomOp::Publish)))
        );
        assert_eq!(
            preflight("/v1/rooms/a/messages", "GET"),
            Ok(Asked::Preflight(room("a", RoomOp::History)))
        );
        assert_eq!(
            preflight("/v1/rooms/a/stats", "GET"),
            Ok(Asked::Preflight(room("a", RoomOp::Stats)))
        );
        assert_eq!(
            preflight("/healthz", "GET"),
            Ok(Asked::Preflight(Route::Health))
        );
        assert_eq!(
            preflight("/v1/registry", "GET"),
            Ok(Asked::Preflight(Route::RegistryReport))
        );
        // The route's own refusals answer a preflight for what it cannot do.
        assert_eq!(
            preflight("/v1/rooms/a/stats", "POST").unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            preflight("/v1/rooms/.a/messages", "GET").unwrap_err().code,
            ErrorCode::BadRoom
        );
        // WebSocket routes and the assets take no preflight: a plain OPTIONS.
        assert_eq!(
            preflight("/v1/rooms/a/ws", "GET").unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            preflight("/index.html", "GET"),
            Ok(Asked::Request(Route::Assets))
        );
        // Without Origin or Access-Control-Request-Method it is no preflight.
        let plain = |origin, asked| ask("OPTIONS", "/v1/rooms/a/messages", origin, asked);
        assert_eq!(
            plain(None, Some("GET")).unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            plain(page, None).unwrap_err().code,
            ErrorCode::MethodNotAllowed
        );
        assert_eq!(
            ask("GET", "/v1/rooms/a/messages", page, Some("POST")),
            Ok(Asked::Request(room("a", RoomOp::History))),
            "only OPTIONS is a preflight"
        );
    }

    #[test]
    fn preflight_answers_methods_headers_and_max_age() {
        let messages = preflight_headers(&room("a", RoomOp::History));
        assert_eq!(
            header(&messages, "access-control-allow-methods"),
            Some("GET, POST")
        );
        let allowed = header(&messages, "access-control-allow-headers").unwrap();
        for name in ["authorization", "content-type", "traceparent"] {
            assert!(allowed.contains(name), "{name} in {allowed}");
        }
        assert_eq!(header(&messages, "access-control-max-age"), Some("7200"));
        assert_eq!(
            header(
                &preflight_headers(&room("a", RoomOp::Stats)),
                "access-control-allow-methods"
            ),
            Some("GET")
        );
        assert!(header(&messages, "access-control-allow-credentials").is_none());
    }

    #[test]
    fn cors_echoes_admitted_origins_only() {
        let page = "https://app.example";
        for config in [origins(""), origins("*"), origins("https://app.example/")] {
            let headers = cors_headers(Some(page), &config);
            assert_eq!(header(&headers, "access-control-allow-origin"), Some(page));
            assert_eq!(header(&headers, "vary"), Some("Origin"));
            let exposed = header(&headers, "access-control-expose-headers").unwrap();
            assert!(
                exposed.contains("x-roomcast-error") && exposed.contains("retry-after"),
                "{exposed}"
            );
            assert_eq!(check_origin(Some(page), &config), Ok(()));
        }
        let narrow = origins("https://other.example");
        let refused = cors_headers(Some(page), &narrow);
        assert_eq!(refused, vec![("vary", "Origin".to_owned())]);
        assert_eq!(
            check_origin(Some(page), &narrow).unwrap_err().code,
            ErrorCode::BadOrigin
        );
        assert_eq!(
            cors_headers(None, &narrow),
            vec![("vary", "Origin".to_owned())]
        );
        assert_eq!(check_origin(None, &narrow), Ok(()));
    }

    #[test]
    fn only_http_routes_are_cross_origin() {
        assert!(room("a", RoomOp::History).cross_origin());
        assert!(room("a", RoomOp::Publish).cross_origin());
        assert!(room("a", RoomOp::Stats).cross_origin());
        assert!(room("a", RoomOp::Presence).cross_origin());
        assert!(Route::Health.cross_origin());
        assert!(Route::RegistryReport.cross_origin());
        assert!(!room("a", RoomOp::Join).cross_origin());
        assert!(!room("a", RoomOp::BridgeLink).cross_origin());
        assert!(!Route::RegistryLink.cross_origin());
        assert!(!Route::Assets.cross_origin());
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
