//! CORS on the HTTP routes (docs/protocol.md, "HTTP", "CORS"), against the
//! real worker: preflights answered before any token, the `Origin` echoed
//! on every answer a page may read (refusals from the router and from the
//! rooms alike), nothing for an origin `ALLOWED_ORIGINS` refuses, and
//! WebSocket handshakes left as they were.

use reqwest::header::HeaderMap;
use reqwest::Method;
use roomcast_tests::{full_token, room, token, Client, Http, Worker};
use serde_json::Value;

const PAGE: &str = "https://app.example";
const OTHER: &str = "https://evil.example";

/// One request with `headers`, its status, headers and JSON body.
async fn send(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, HeaderMap, Value) {
    let mut request = http.raw().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A preflight from `origin` for `method` on `url`.
async fn preflight(http: &Http, url: &str, method: &str, origin: &str) -> (u16, HeaderMap, Value) {
    let headers = [
        ("origin", origin),
        ("access-control-request-method", method),
        (
            "access-control-request-headers",
            "authorization, content-type, traceparent",
        ),
    ];
    send(http, Method::OPTIONS, url, &headers, None).await
}

/// A publish from a page on [`PAGE`].
async fn publish(http: &Http, url: &str, token: &str, body: &str) -> (u16, HeaderMap, Value) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("origin", PAGE),
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    send(http, Method::POST, url, &headers, Some(body)).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Asserts the answer lets a page on `origin` read it, its error header included.
fn readable_by(answer: &(u16, HeaderMap, Value), origin: &str) {
    let (status, headers, body) = answer;
    assert_eq!(
        header(headers, "access-control-allow-origin"),
        Some(origin),
        "{status} {body}"
    );
    assert_eq!(header(headers, "vary"), Some("Origin"));
    let exposed = header(headers, "access-control-expose-headers").unwrap_or_default();
    assert!(
        exposed.contains("x-roomcast-error") && exposed.contains("retry-after"),
        "exposed: {exposed}"
    );
    assert!(
        header(headers, "access-control-allow-credentials").is_none(),
        "tokens are no cookies"
    );
}

#[tokio::test]
async fn cors_for_the_listed_origins() {
    let worker = Worker::start(&[("ALLOWED_ORIGINS", PAGE)]).await;
    let http = Http::default();
    let r = room("cors");
    let messages = worker.url(&format!("/v1/rooms/{r}/messages"));
    let t = full_token("page");
    let bearer = format!("Bearer {t}");

    // Preflights: no token, the methods of the path, the headers a page sends.
    let (status, headers, _) = preflight(&http, &messages, "POST", PAGE).await;
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(PAGE));
    assert_eq!(header(&headers, "vary"), Some("Origin"));
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("GET, POST")
    );
    let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
    for name in ["authorization", "content-type", "traceparent"] {
        assert!(allowed.contains(name), "{name} in {allowed}");
    }
    assert_eq!(header(&headers, "access-control-max-age"), Some("7200"));
    let stats = worker.url(&format!("/v1/rooms/{r}/stats"));
    let (status, headers, _) = preflight(&http, &stats, "GET", PAGE).await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("GET")
    );
    assert_eq!(
        preflight(&http, &worker.url("/healthz"), "GET", PAGE)
            .await
            .0,
        204,
        "a page may check the worker's health"
    );

    // A refused origin's preflight: 403 bad_origin, nothing a page may read.
    let (status, headers, body) = preflight(&http, &messages, "GET", OTHER).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &"bad_origin".into())
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    // A preflight for a method the path does not take, and an OPTIONS that
    // is no preflight, are refused like any wrong method.
    assert_eq!(preflight(&http, &stats, "POST", PAGE).await.0, 405);
    let plain = send(&http, Method::OPTIONS, &messages, &[("origin", PAGE)], None).await;
    assert_eq!(plain.0, 405);

    // Answers a page reads: success and refusals, from the router and the room.
    let origin = [("origin", PAGE), ("authorization", bearer.as_str())];
    let published = publish(&http, &messages, &t, r#"{"data":{"n":1}}"#).await;
    assert_eq!(published.0, 201, "{}", published.2);
    readable_by(&published, PAGE);
    let page = send(
        &http,
        Method::GET,
        &format!("{messages}?since=0"),
        &origin,
        None,
    )
    .await;
    assert_eq!(page.0, 200);
    assert_eq!(page.2["messages"][0]["data"]["n"], 1);
    readable_by(&page, PAGE);
    let counters = send(&http, Method::GET, &stats, &origin, None).await;
    assert_eq!(counters.0, 200);
    readable_by(&counters, PAGE);
    let health = send(&http, Method::GET, &worker.url("/healthz"), &origin, None).await;
    assert_eq!(health.0, 200);
    readable_by(&health, PAGE);

    let no_token = send(&http, Method::GET, &messages, &[("origin", PAGE)], None).await;
    assert_eq!(no_token.0, 401);
    assert_eq!(
        header(&no_token.1, "x-roomcast-error"),
        Some("unauthorized")
    );
    readable_by(&no_token, PAGE);
    let bad_room = send(
        &http,
        Method::GET,
        &worker.url("/v1/rooms/.bad/messages"),
        &origin,
        None,
    )
    .await;
    assert_eq!(bad_room.0, 400);
    readable_by(&bad_room, PAGE);
    let reader = token("reader", &["*"], &[], 3600);
    let forbidden = publish(&http, &messages, &reader, r#"{"data":1}"#).await;
    assert_eq!(forbidden.0, 403);
    readable_by(&forbidden, PAGE);
    // A room's own refusal: a fresh subject spends its whole budget
    // (RATE_BURST, 40) in one batch, so a second one, refilled at 20/s, is
    // 429 with a Retry-After the page can read.
    let spender = full_token("spender");
    let batch = format!(
        r#"{{"messages":[{}]}}"#,
        vec![r#"{"data":0}"#; 40].join(",")
    );
    let spent = publish(&http, &messages, &spender, &batch).await;
    assert_eq!(spent.0, 201, "{}", spent.2);
    let limited = publish(&http, &messages, &spender, &batch).await;
    assert_eq!(limited.0, 429, "{}", limited.2);
    assert!(header(&limited.1, "retry-after").is_some());
    readable_by(&limited, PAGE);

    // A refused origin's requests are refused, and say so to no page.
    let refused = send(
        &http,
        Method::GET,
        &messages,
        &[("origin", OTHER), ("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(refused.0, 403);
    assert_eq!(header(&refused.1, "access-control-allow-origin"), None);
    assert_eq!(header(&refused.1, "vary"), Some("Origin"));
    // Without an Origin (not a page): no CORS, but caches still keep the
    // answers of different origins apart.
    let direct = send(
        &http,
        Method::GET,
        &messages,
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(direct.0, 200);
    assert_eq!(header(&direct.1, "access-control-allow-origin"), None);
    assert_eq!(header(&direct.1, "vary"), Some("Origin"));

    // WebSocket handshakes are not CORS: an admitted page still joins.
    let mut socket = Client::connect_with(
        &worker.ws_url(&format!("/v1/rooms/{r}/ws")),
        &[
            ("origin", PAGE),
            (
                "sec-websocket-protocol",
                &format!("roomcast.v1, bearer.{t}"),
            ),
        ],
    )
    .await
    .expect("an allowed page joins");
    assert_eq!(socket.protocol.as_deref(), Some("roomcast.v1"));
    assert_eq!(socket.expect("welcome").await["head"], 41);
}

#[tokio::test]
async fn cors_for_any_origin_when_none_are_listed() {
    let worker = Worker::start(&[]).await;
    let http = Http::default();
    let r = room("cors.any");
    let messages = worker.url(&format!("/v1/rooms/{r}/messages"));
    let (status, headers, _) = send(
        &http,
        Method::OPTIONS,
        &messages,
        &[("origin", OTHER), ("access-control-request-method", "GET")],
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(OTHER));
    let bearer = format!("Bearer {}", full_token("page"));
    let page = send(
        &http,
        Method::GET,
        &messages,
        &[("origin", OTHER), ("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(page.0, 200);
    readable_by(&page, OTHER);
}
