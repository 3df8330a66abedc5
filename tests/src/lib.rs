//! Harness for the end-to-end tests and the benchmarks: the real worker
//! under `wrangler dev` (workerd), a real Kafka-protocol broker or a real
//! RabbitMQ node, the bridge
//! binary, and real HTTP and WebSocket clients on loopback sockets. One
//! crate starts them for both, so the benchmarks measure the worker the
//! tests check, started the same way.
//!
//! Each [`Worker`] is a `wrangler dev` process in its own process group with
//! its own port and `--persist-to` directory; dropping it kills the whole
//! group (wrangler starts workerd children), also when a test panics. Every
//! wait is bounded, so a hang fails the test instead of stalling CI.
//!
//! The tests' worker serves HTTPS only, with a certificate from the test CA
//! ([`tls`]), and every client here trusts that CA: the suite runs the way
//! production does, where the bridge reaches the worker over TLS.

pub mod bridge;
pub mod broker;
pub mod dashboards;
pub mod deliveries;
pub mod fault_proxy;
pub mod process;
pub mod rabbitmq;
pub mod records;
pub mod rooms;
pub mod tls;
pub mod worker;

pub use bridge::{bridge_binary, BridgeBroker, BridgeCommand, BridgeProcess, CaFile};
pub use broker::{Broker, SASL_PASSWORD, SASL_USER};
pub use fault_proxy::FaultProxy;
pub use process::{wait_http_ok, Service};
pub use rabbitmq::RabbitMq;
pub use tls::ca_file;
pub use worker::{Worker, WorkerSpec};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// The HS256 secret every test worker is started with.
pub const SECRET: &str = "e2e-test-secret-not-for-production";

/// How long a single frame or response may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A fresh directory for one worker's persisted state, removed by [`Worker`]'s owner.
pub fn fresh_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("roomcast-e2e-{}-{label}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// A fresh directory holding a copy of the persisted state under `from`
/// (e.g. a fixture in the repository), for a worker to start on without
/// changing the original.
pub fn fresh_copy(label: &str, from: &Path) -> PathBuf {
    fn copy_tree(from: &Path, to: &Path) {
        let entries =
            std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
        for entry in entries.flatten() {
            let (path, target) = (entry.path(), to.join(entry.file_name()));
            if path.is_dir() {
                std::fs::create_dir_all(&target).expect("create a directory");
                copy_tree(&path, &target);
            } else {
                std::fs::copy(&path, &target)
                    .unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
            }
        }
    }
    let dir = fresh_dir(label);
    copy_tree(from, &dir);
    dir
}

/// The value of one series (`name{labels}`, exactly as exported) in a
/// Prometheus text exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// An HS256 token for `sub` with these room and publish patterns, valid `ttl_secs`.
pub fn token(sub: &str, rooms: &[&str], publish: &[&str], ttl_secs: u64) -> String {
    let spec = TokenSpec {
        sub: sub.into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        publish: publish.iter().map(|r| r.to_string()).collect(),
        ttl_secs,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, now_ms())
}

/// An HS256 token for `sub` that may subscribe, publish and appear in
/// presence in the rooms of `room_pattern`, showing `info`, valid `ttl_secs`.
pub fn presence_token(
    sub: &str,
    room_pattern: &str,
    info: Option<serde_json::Value>,
    ttl_secs: u64,
) -> String {
    let spec = TokenSpec {
        sub: sub.into(),
        rooms: vec![room_pattern.into()],
        publish: vec![room_pattern.into()],
        presence: vec![room_pattern.into()],
        info,
        ttl_secs,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, now_ms())
}

/// A token that may subscribe and publish everywhere for an hour.
pub fn full_token(sub: &str) -> String {
    token(sub, &["*"], &["*"], 3600)
}

/// The bridge's service token (`role: "bridge"`).
pub fn bridge_token() -> String {
    let spec = TokenSpec {
        sub: "bridge".into(),
        role: Some("bridge".into()),
        ttl_secs: 3600,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, now_ms())
}

/// A unique room name per call, so scenarios sharing a worker never meet.
pub fn room(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{label}.{}", COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// What arrived on a WebSocket.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Closed(u16),
}

/// A WebSocket client with bounded waits.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server answered with.
    pub protocol: Option<String>,
    /// Whether the test reads presence frames (`presence_state`,
    /// `presence`, `occupancy`). Other tests skip them, as a client that
    /// does not show presence would: every connection gets `occupancy`.
    pub reads_presence: bool,
}

/// Whether `text` is a presence frame (docs/protocol.md, "Presence"); the
/// worker writes `type` first.
fn is_presence(text: &str) -> bool {
    text.starts_with(r#"{"type":"occupancy""#) || text.starts_with(r#"{"type":"presence"#)
}

impl Client {
    /// Connects with the token in `?token=` (or none when the URL carries it).
    pub async fn connect(url: &str) -> Client {
        Client::connect_with(url, &[])
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Connects with extra request headers; errors are returned so tests can
    /// assert on refused handshakes.
    pub async fn connect_with(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                name.parse().expect("header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        let tls = Connector::Rustls(Arc::new(tls::client_config()));
        let handshake =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(tls));
        let (ws, response) = timeout(STEP, handshake)
            .await
            .expect("handshake timed out")?;
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Client {
            ws,
            protocol,
            reads_presence: false,
        })
    }

    /// The HTTP status of a refused handshake; panics if it was accepted.
    pub async fn refused(url: &str) -> u16 {
        Client::refused_with(url, &[]).await
    }

    /// Like [`Client::refused`], with extra request headers.
    pub async fn refused_with(url: &str, headers: &[(&str, &str)]) -> u16 {
        match Client::connect_with(url, headers).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                response.status().as_u16()
            }
            Err(other) => panic!("handshake failed without an HTTP answer: {other}"),
            Ok(_) => panic!("handshake to {url} was accepted"),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        timeout(STEP, self.ws.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send");
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends `text`; `false` when the connection is gone (for a client
    /// that outlives the server it talks to).
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        matches!(
            timeout(STEP, self.ws.send(Message::text(text))).await,
            Ok(Ok(()))
        )
    }

    /// The next text frame; panics on close, timeout or a binary frame.
    pub async fn next_text(&mut self) -> String {
        self.next_text_within(STEP).await.expect("no frame in time")
    }

    /// The next text frame within `wait`, or `None` when none came; panics
    /// on a close.
    pub async fn next_text_within(&mut self, wait: Duration) -> Option<String> {
        match self.next_frame_within(wait).await? {
            Frame::Text(text) => Some(text),
            Frame::Closed(code) => panic!("expected a text frame, the server closed with {code}"),
        }
    }

    /// The next text or close frame within `wait` (control frames are
    /// skipped, and presence frames unless [`Client::reads_presence`]); a
    /// dropped connection is a close with 1006.
    pub async fn next_frame_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            let frame = timeout(
                deadline.saturating_duration_since(Instant::now()),
                self.ws.next(),
            )
            .await
            .ok()?;
            match frame {
                Some(Ok(Message::Text(text))) if self.reads_presence || !is_presence(&text) => {
                    return Some(Frame::Text(text.to_string()))
                }
                Some(Ok(Message::Text(_))) => continue,
                Some(Ok(Message::Close(close))) => {
                    return Some(Frame::Closed(close.map_or(1005, |f| u16::from(f.code))))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                // The connection dropped without a close frame (the server
                // process died): 1006, as a browser reports it.
                Some(Err(_)) | None => return Some(Frame::Closed(1006)),
                other => panic!("expected a text or close frame, got {other:?}"),
            }
        }
    }

    pub async fn next_json(&mut self) -> Value {
        let text = self.next_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"))
    }

    /// The next frame, which must be JSON of `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Waits up to `wait` for the server's close frame (skipping other
    /// frames) and returns its code.
    pub async fn expect_close(&mut self, wait: Duration) -> u16 {
        let deadline = Instant::now() + wait;
        loop {
            match self
                .next_frame_within(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                Some(Frame::Closed(code)) => return code,
                Some(Frame::Text(_)) => continue,
                None => panic!("no close within {wait:?}"),
            }
        }
    }

    /// Closes from the client side and waits for the server's answering
    /// close: the server has handled the end by then (a place the
    /// connection held is free).
    pub async fn close_answered(mut self) -> u16 {
        self.send_close()
            .await
            .expect("close timed out")
            .expect("close");
        self.expect_close(STEP).await
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = self.send_close().await;
    }

    async fn send_close(
        &mut self,
    ) -> Result<Result<(), tokio_tungstenite::tungstenite::Error>, tokio::time::error::Elapsed>
    {
        let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        };
        timeout(STEP, self.ws.close(Some(normal))).await
    }

    /// On a bridge room link: the text frames that arrive before the room
    /// answers an unreadable frame sent now (its `error`, not included).
    /// The room handles a link's frames in order, so whatever the frames
    /// sent earlier (acks) made it send has arrived by then: "nothing more
    /// came" is observed, not waited out.
    pub async fn until_link_settled(&mut self) -> Vec<String> {
        self.send_text("settle").await;
        let mut frames = Vec::new();
        loop {
            let text = self.next_text().await;
            let frame: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"));
            if frame["type"] == "error" {
                assert_eq!(frame["code"], "bad_format", "{frame}");
                return frames;
            }
            frames.push(text);
        }
    }
}

/// The bridge's room link to `room`, opened with the bridge's token the
/// way the bridge opens it, with its `welcome`.
pub async fn bridge_link(worker: &Worker, room: &str, instance: &str) -> (Client, Value) {
    let mut link = Client::connect(&worker.ws_url(&format!(
        "/v1/rooms/{room}/bridge?instance={instance}&token={}",
        bridge_token()
    )))
    .await;
    let welcome = link.expect("welcome").await;
    (link, welcome)
}

/// HTTP helpers that assert on the shapes of docs/protocol.md, "HTTP".
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: tls::http_client()
                .timeout(STEP)
                .build()
                .expect("an HTTP client"),
        }
    }
}

impl Http {
    pub async fn get(&self, url: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        Http::read(request.send().await.expect("GET")).await
    }

    pub async fn post(&self, url: &str, token: &str, body: &str) -> (u16, Value) {
        let request = self
            .client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned());
        Http::read(request.send().await.expect("POST")).await
    }

    pub fn raw(&self) -> &reqwest::Client {
        &self.client
    }

    async fn read(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// Asserts `(status, body)` is the JSON error `code` with HTTP `status`.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "status of {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error needs a message: {}",
        got.1
    );
}
