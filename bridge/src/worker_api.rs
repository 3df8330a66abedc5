//! The worker's HTTP surface as the bridge uses it: the link URLs, the
//! batch publish that carries broker records into rooms, and the startup
//! check that the configured URL reaches a roomcast worker at all.
//!
//! The publish answer is sorted into what the relay can act on. Only a
//! refusal that roomcast itself made about the content (it marks its errors
//! with the `x-roomcast-error` header) dead-letters records; a 4xx from
//! anything else (a proxy, a wrong path prefix, a misrouted domain) is an
//! outage, because the same request would succeed once the route is fixed.
//! So is a redirect: following one would turn a publish into a `GET` and
//! hand the bridge's token to wherever it points, so none is followed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::redirect;
use reqwest::Url;
use roomcast_protocol::draft::KafkaPosition;
use roomcast_protocol::wire::ERROR_HEADER;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::token::Tokens;

/// roomcast's codes that are about the records themselves: the content,
/// or an id another publisher holds in the room.
const RECORD_CODES: [&str; 3] = ["bad_format", "too_large", "id_conflict"];
/// How long one publish may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The worker's base URLs, from `--worker-url` in either scheme.
#[derive(Debug, Clone)]
pub struct WorkerUrls {
    http: String,
    ws: String,
}

impl WorkerUrls {
    pub fn parse(url: &str) -> Result<WorkerUrls, String> {
        let url = url.trim_end_matches('/');
        let (http, ws) = match url.split_once("://") {
            Some(("http", rest)) | Some(("ws", rest)) => {
                (format!("http://{rest}"), format!("ws://{rest}"))
            }
            Some(("https", rest)) | Some(("wss", rest)) => {
                (format!("https://{rest}"), format!("wss://{rest}"))
            }
            _ => return Err("it must start with http://, https://, ws:// or wss://".into()),
        };
        Ok(WorkerUrls { http, ws })
    }

    pub fn base(&self) -> &str {
        &self.http
    }

    /// Whether requests would cross the network in cleartext: `http://` or
    /// `ws://` to a host that is not loopback (127.0.0.0/8, ::1,
    /// `localhost`). The host is read by the parsers that the HTTP and the
    /// WebSocket clients use, and must be loopback to both.
    pub fn is_cleartext_to_remote(&self) -> bool {
        if self.http.starts_with("https://") {
            return false;
        }
        let http_loopback = Url::parse(&self.http)
            .ok()
            .and_then(|url| url.host_str().map(is_loopback))
            .unwrap_or(false);
        let ws_loopback = self
            .ws
            .parse::<tokio_tungstenite::tungstenite::http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(is_loopback))
            .unwrap_or(false);
        !(http_loopback && ws_loopback)
    }

    pub fn room_link(&self, room: &str, instance: &str) -> String {
        format!(
            "{}/v1/rooms/{room}/bridge?instance={}",
            self.ws,
            encode(instance)
        )
    }

    pub fn registry_link(&self, instance: &str) -> String {
        format!("{}/v1/bridge?instance={}", self.ws, encode(instance))
    }

    pub fn messages(&self, room: &str) -> String {
        format!("{}/v1/rooms/{room}/messages", self.http)
    }

    pub fn health(&self) -> String {
        format!("{}/healthz", self.http)
    }

    pub fn registry(&self, room: &str) -> String {
        format!("{}/v1/registry?room={}", self.http, encode(room))
    }
}

/// A host as a URL spells it (IPv6 in brackets) that is this machine.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One message of a batch publish; `data` is the record value, verbatim.
/// `kafka` is where it was consumed, for a record of a log: the room keeps
/// the highest offset it stored per topic-partition, so a record consumed
/// again after a crash is a duplicate there however long ago it was
/// stored. A queue's delivery names no record for good, so its records go
/// without one (the room knows them again by `id` alone).
#[derive(Debug, Serialize)]
pub struct Outgoing<'a> {
    pub data: &'a RawValue,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaPosition>,
}

#[derive(Serialize)]
struct Batch<'a> {
    messages: &'a [Outgoing<'a>],
}

/// Why a batch did not go into its room.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// roomcast refused the content: dead-letter it (after splitting the
    /// batch down to the record that is refused).
    #[error("refused by the room ({code}): {message}")]
    Refused { code: String, message: String },
    /// Try again later: a 5xx, a timeout, or the room's rate limit.
    #[error("{why}")]
    Retry {
        why: String,
        after: Option<Duration>,
    },
    /// Nothing will get through until someone fixes something (the route,
    /// the token, the worker's reachability): retried, and `/healthz` says so.
    #[error("{0}")]
    Outage(String),
}

/// Rooms as the inbound relay sees them: somewhere to publish batches.
pub trait Rooms: Send + Sync {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishError>>;
}

/// The worker's HTTP API with the bridge's current token.
pub struct WorkerApi {
    pub urls: WorkerUrls,
    http: reqwest::Client,
    tokens: Tokens,
}

impl WorkerApi {
    pub fn new(urls: WorkerUrls, tls: Arc<rustls::ClientConfig>, tokens: Tokens) -> WorkerApi {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(PUBLISH_TIMEOUT)
            .redirect(redirect::Policy::none())
            .build()
            .expect("a client over a ready TLS configuration builds");
        WorkerApi { urls, http, tokens }
    }

    /// `GET /healthz` of the worker, as a reqwest result so the caller can
    /// tell a certificate problem from an unreachable host.
    pub async fn health(&self) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .get(self.urls.health())
            .timeout(Duration::from_secs(10))
            .send()
            .await
    }

    /// The instance the registry assigns `room` to among the connected
    /// bridges (docs/protocol.md, "Registry report"), `None` when none is.
    pub async fn owner(&self, room: &str) -> Result<Option<String>, String> {
        let response = self
            .http
            .get(self.urls.registry(room))
            .bearer_auth(self.tokens.current())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("the registry is unreachable: {e}"))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(match classify(status, response.headers(), "") {
                PublishError::Outage(why) => why,
                _ => format!("the registry answered {status}"),
            });
        }
        let report: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("an unreadable registry report: {e}"))?;
        match &report["owner"] {
            serde_json::Value::String(owner) => Ok(Some(owner.clone())),
            serde_json::Value::Null => Ok(None),
            other => Err(format!("the registry report has no owner: {other}")),
        }
    }

    async fn post(&self, room: &str, batch: &[Outgoing<'_>]) -> Result<(), PublishError> {
        let body = serde_json::to_string(&Batch { messages: batch })
            .map_err(|e| PublishError::Outage(format!("encoding a batch: {e}")))?;
        let response = self
            .http
            .post(self.urls.messages(room))
            .bearer_auth(self.tokens.current())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| classify_failure(&e))?;
        let status = response.status().as_u16();
        if status == 201 {
            return Ok(());
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Err(classify(status, &headers, &text))
    }
}

impl Rooms for WorkerApi {
    fn publish<'a>(
        &'a self,
        room: &'a str,
        batch: &'a [Outgoing<'a>],
    ) -> BoxFuture<'a, Result<(), PublishError>> {
        Box::pin(self.post(room, batch))
    }
}

/// A request that got no answer.
fn classify_failure(e: &reqwest::Error) -> PublishError {
    if e.is_timeout() {
        PublishError::Retry {
            why: format!("no answer within {PUBLISH_TIMEOUT:?}"),
            after: None,
        }
    } else {
        PublishError::Outage(format!("the worker is unreachable: {e}"))
    }
}

/// Sorts a non-201 answer.
fn classify(status: u16, headers: &HeaderMap, body: &str) -> PublishError {
    let code = headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok());
    let message = || {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    match (status, code) {
        (300..=399, _) => PublishError::Outage(format!(
            "the worker answered {status} redirecting to {:?}; the bridge does not follow redirects \
             (is --worker-url the worker's own address?)",
            headers
                .get(LOCATION)
                .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                .unwrap_or_default()
        )),
        (429, _) => PublishError::Retry {
            why: format!("rate limited ({})", message()),
            after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs),
        },
        (400..=499, Some(code)) if RECORD_CODES.contains(&code) => PublishError::Refused {
            code: code.to_owned(),
            message: message(),
        },
        (400..=499, Some(code)) => {
            PublishError::Outage(format!("the worker answered {status} {code}: {}", message()))
        }
        (400..=499, None) => PublishError::Outage(format!(
            "HTTP {status} that did not come from roomcast (a proxy, or a wrong path in --worker-url?)"
        )),
        _ => PublishError::Retry {
            why: format!("the worker answered {status}"),
            after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_batch_names_where_each_record_was_consumed() {
        let data = RawValue::from_string(r#"{"x":1}"#.into()).unwrap();
        let messages = [Outgoing {
            data: &data,
            id: "kafka:in:2:7",
            trace: None,
            kafka: Some(KafkaPosition {
                topic: "in".into(),
                partition: 2,
                offset: 7,
            }),
        }];
        let body = serde_json::to_value(Batch {
            messages: &messages,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"messages": [{
                "data": {"x": 1},
                "id": "kafka:in:2:7",
                "kafka": {"topic": "in", "partition": 2, "offset": 7}
            }]})
        );
    }

    #[test]
    fn urls_in_both_schemes() {
        let u = WorkerUrls::parse("ws://127.0.0.1:8787/").unwrap();
        assert_eq!(u.messages("a"), "http://127.0.0.1:8787/v1/rooms/a/messages");
        assert_eq!(
            u.room_link("a", "x y"),
            "ws://127.0.0.1:8787/v1/rooms/a/bridge?instance=x%20y"
        );
        let s = WorkerUrls::parse("https://rooms.example/prefix").unwrap();
        assert_eq!(
            s.registry_link("i"),
            "wss://rooms.example/prefix/v1/bridge?instance=i"
        );
        assert_eq!(s.health(), "https://rooms.example/prefix/healthz");
        assert!(WorkerUrls::parse("rooms.example").is_err());
    }

    #[test]
    fn cleartext_only_to_loopback() {
        let cleartext_to_remote =
            |url: &str| WorkerUrls::parse(url).unwrap().is_cleartext_to_remote();
        for url in [
            "http://127.0.0.1:8787",
            "ws://127.9.9.9/prefix",
            "http://localhost:8787",
            "ws://LOCALHOST./",
            "http://[::1]:8787",
            "https://rooms.example",
            "wss://10.0.0.1",
        ] {
            assert!(!cleartext_to_remote(url), "{url} was refused");
        }
        for url in [
            "http://rooms.example",
            "ws://10.0.0.1:8787",
            "http://0.0.0.0:8787",
            "http://127.0.0.1.nip.io",
            "http://localhost.rooms.example",
            "http://127.0.0.1@rooms.example",
            "http://localhost:8787@rooms.example",
            "http://rooms.example\\@127.0.0.1",
            "http://rooms.example#@127.0.0.1",
            "http://[::ffff:10.0.0.1]",
        ] {
            assert!(cleartext_to_remote(url), "{url} was allowed");
        }
    }

    #[tokio::test]
    async fn a_redirected_publish_is_an_outage_and_never_followed() {
        use std::sync::atomic::Ordering;

        let (target, visits) = crate::fake_worker::counting().await;
        let elsewhere = format!("http://{target}/v1/rooms/r/messages");
        let redirecting = crate::fake_worker::redirecting(elsewhere.clone()).await;
        let (_trigger, stop) = crate::stop::Stop::new();
        let tokens = crate::token::TokenSource::Fixed("t".into())
            .start(stop)
            .unwrap();
        let api = WorkerApi::new(
            WorkerUrls::parse(&format!("http://{redirecting}")).unwrap(),
            crate::tls::client_config(None).unwrap(),
            tokens,
        );
        let data = RawValue::from_string("1".into()).unwrap();
        let batch = [Outgoing {
            data: &data,
            id: "a",
            trace: None,
            kafka: Some(KafkaPosition {
                topic: "in".into(),
                partition: 0,
                offset: 1,
            }),
        }];
        match api.publish("r", &batch).await {
            Err(PublishError::Outage(why)) => assert!(
                why.contains("307") && why.contains(&elsewhere),
                "the status and Location are named: {why}"
            ),
            other => panic!("a redirect is an outage, not {other:?}"),
        }
        assert_eq!(
            visits.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn only_roomcast_refusals_of_content_dead_letter() {
        let body = r#"{"error":{"code":"too_large","message":"big"}}"#;
        assert_eq!(
            classify(413, &headers(&[(ERROR_HEADER, "too_large")]), body),
            PublishError::Refused {
                code: "too_large".into(),
                message: "big".into()
            }
        );
        assert!(matches!(
            classify(404, &HeaderMap::new(), "<html>not found</html>"),
            PublishError::Outage(_)
        ));
        assert!(matches!(
            classify(400, &HeaderMap::new(), body),
            PublishError::Outage(_)
        ));
        assert!(matches!(
            classify(401, &headers(&[(ERROR_HEADER, "unauthorized")]), ""),
            PublishError::Outage(_)
        ));
        assert!(matches!(
            classify(503, &HeaderMap::new(), ""),
            PublishError::Retry { after: None, .. }
        ));
        assert!(matches!(
            classify(301, &headers(&[("location", "https://elsewhere/")]), ""),
            PublishError::Outage(why) if why.contains("301") && why.contains("https://elsewhere/")
        ));
        assert_eq!(
            classify(
                429,
                &headers(&[(ERROR_HEADER, "rate_limited"), ("retry-after", "3")]),
                ""
            ),
            PublishError::Retry {
                why: "rate limited ()".into(),
                after: Some(Duration::from_secs(3))
            }
        );
    }
}
