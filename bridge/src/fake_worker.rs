//! A stand-in for the worker on a loopback socket, for unit tests of the
//! room link task: room links the test drives frame by frame, the registry
//! report's `owner`, or a redirect for every request. The end-to-end
//! tests (`tests/`) run the real worker; this is for what is hard to make
//! it do on cue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_protocol::wire::{parse_bridge_frame, BridgeFrame};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use crate::broker::Sink;
use crate::context::Bridge;
use crate::kafka::{Kafka, KafkaConfig};
use crate::limits::{InFlightBytes, Opens};
use crate::metrics::Metrics;
use crate::stop::Stop;
use crate::token::TokenSource;
use crate::worker_api::{WorkerApi, WorkerUrls};

/// How long a test waits for anything from the bridge.
pub const STEP: Duration = Duration::from_secs(10);

/// What the registry report says about owners.
#[derive(Clone)]
pub enum Owner {
    Is(Option<String>),
    /// The report fails (500).
    Fails,
}

pub struct FakeWorker {
    pub addr: SocketAddr,
    links: mpsc::UnboundedReceiver<FakeLink>,
    owner: Arc<Mutex<Owner>>,
    /// Registry reports served.
    pub reports: Arc<AtomicUsize>,
}

impl FakeWorker {
    pub async fn start() -> FakeWorker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, links) = mpsc::unbounded_channel();
        let owner = Arc::new(Mutex::new(Owner::Is(None)));
        let reports = Arc::new(AtomicUsize::new(0));
        let (serving, counted) = (owner.clone(), reports.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, owner, reports) = (tx.clone(), serving.clone(), counted.clone());
                tokio::spawn(async move {
                    if request_line(&stream).await.contains(" /v1/registry") {
                        reports.fetch_add(1, Ordering::SeqCst);
                        let owner = owner.lock().unwrap().clone();
                        report(stream, owner).await;
                    } else if let Some(link) = FakeLink::accept(stream).await {
                        let _ = tx.send(link);
                    }
                });
            }
        });
        FakeWorker {
            addr,
            links,
            owner,
            reports,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_owner(&self, owner: Owner) {
        *self.owner.lock().unwrap() = owner;
    }

    /// The next room link the bridge opens.
    pub async fn link(&mut self) -> FakeLink {
        tokio::time::timeout(STEP, self.links.recv())
            .await
            .expect("the bridge opened a link in time")
            .expect("the fake worker runs")
    }
}

/// The request line of what `stream` is sending, left unread.
async fn request_line(stream: &TcpStream) -> String {
    let mut buf = [0u8; 512];
    loop {
        let n = stream.peek(&mut buf).await.unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if n == 0 || text.contains("\r\n") || n == buf.len() {
            return text;
        }
        // The bridge sends its request head in one write; a partial line
        // is the rare split segment.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn report(mut stream: TcpStream, owner: Owner) {
    let (status, body) = match owner {
        Owner::Is(owner) => ("200 OK", json!({ "owner": owner }).to_string()),
        Owner::Fails => ("500 Internal Server Error", "{}".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// What the bridge sent on a room link.
#[derive(Debug, PartialEq, Eq)]
pub enum FromBridge {
    Ack(u64),
    PresenceAck(u64),
    Closed(Option<u16>, String),
}

/// One room link, as the room's side of it.
pub struct FakeLink {
    ws: WebSocketStream<TcpStream>,
    pub path: String,
}

impl FakeLink {
    async fn accept(stream: TcpStream) -> Option<FakeLink> {
        let path = Arc::new(Mutex::new(String::new()));
        let seen = path.clone();
        // tungstenite's callback type fixes the size of its error.
        #[allow(clippy::result_large_err)]
        let callback = move |request: &Request, response: Response| {
            *seen.lock().unwrap() = request.uri().to_string();
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .ok()?;
        let path = path.lock().unwrap().clone();
        Some(FakeLink { ws, path })
    }

    pub async fn send(&mut self, frame: serde_json::Value) {
        self.ws.send(Frame::text(frame.to_string())).await.unwrap();
    }

    pub async fn welcome(&mut self, room: &str, cursor: u64) {
        self.send(json!({
            "type": "welcome", "room": room, "conn_id": "c_0", "epoch": "e_0",
            "head": cursor, "recovered": true, "heartbeat_ms": 30000,
            "max_message_bytes": 65536, "rate": {"per_sec": 20, "burst": 40},
            "exp": 0, "cursor": cursor
        }))
        .await;
    }

    pub async fn message(&mut self, room: &str, seq: u64, data: &str) {
        self.send(json!({
            "type": "message", "room": room, "id": format!("m{seq}"), "seq": seq,
            "ts": roomcast_protocol::clock::now_ms(), "sender": "s", "origin": "ws",
            "data": data
        }))
        .await;
    }

    /// A presence event in which `sub` joined, written out by hand (not by
    /// `json!`, which sorts keys) so the bridge's copy can be compared.
    pub async fn presence(&mut self, room: &str, pseq: u64, sub: &str) {
        let text = format!(
            r#"{{"type":"presence","room":"{room}","pseq":{pseq},"at":1700000000000,"joins":[{{"sub":"{sub}","metas":[{{"conn_id":"c_{pseq}"}}]}}],"leaves":[],"occupancy":{{"connections":{pseq},"users":{pseq},"members":{pseq}}}}}"#
        );
        self.ws.send(Frame::text(text)).await.unwrap();
    }

    /// The next ack or close from the bridge (pings and tokens skipped).
    pub async fn next(&mut self) -> FromBridge {
        self.next_within(STEP).await
    }

    /// Like [`FakeLink::next`], waiting up to `wait` for it.
    pub async fn next_within(&mut self, wait: Duration) -> FromBridge {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the bridge sent something in time");
            match frame {
                Some(Ok(Frame::Text(text))) if text.as_str() == "ping" => {}
                Some(Ok(Frame::Text(text))) => match parse_bridge_frame(&text) {
                    Ok(BridgeFrame::BridgeAck { seq }) => return FromBridge::Ack(seq),
                    Ok(BridgeFrame::PresenceAck { pseq }) => return FromBridge::PresenceAck(pseq),
                    Ok(BridgeFrame::Auth { .. }) => {}
                    Err(e) => panic!("the bridge sent {text:?}: {e:?}"),
                },
                Some(Ok(Frame::Close(close))) => {
                    // Answers the close, as the worker does.
                    let _ = self.ws.flush().await;
                    return FromBridge::Closed(
                        close.as_ref().map(|c| u16::from(c.code)),
                        close.map(|c| c.reason.to_string()).unwrap_or_default(),
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return FromBridge::Closed(None, String::new()),
            }
        }
    }

    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let _ = self.ws.close(Some(frame)).await;
        // Reads up to the bridge's answer, which completes the close.
        let _ = tokio::time::timeout(STEP, async { while self.ws.next().await.is_some() {} }).await;
    }
}

/// A listener that answers every request with a 307 to `location`.
pub async fn redirecting(location: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let _ = request_line(&stream).await;
                let response = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// A listener that only counts the connections it gets.
pub async fn counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, count)
}

/// How a test bridge is bounded.
pub struct Spec {
    pub link_idle: Duration,
    pub in_flight: u32,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            link_idle: Duration::from_secs(3600),
            in_flight: 64 << 20,
        }
    }
}

/// A bridge context named `me` for `worker_url`, relaying into `sink`.
pub fn bridge(worker_url: &str, sink: Arc<dyn Sink>, spec: Spec, stop: Stop) -> Arc<Bridge> {
    let urls = WorkerUrls::parse(worker_url).unwrap();
    let tls = crate::tls::client_config(None).unwrap();
    let tokens = TokenSource::Fixed("test-token".into()).start(stop).unwrap();
    let worker = Arc::new(WorkerApi::new(urls.clone(), tls.clone(), tokens.clone()));
    Arc::new(Bridge {
        instance: "me".into(),
        urls,
        tls,
        tokens,
        worker,
        sources: Arc::new(kafka(&[])),
        sink,
        metrics: Arc::new(Metrics::default()),
        max_links: 10,
        link_idle: spec.link_idle,
        opens: Opens::per_sec(1000),
        in_flight: InFlightBytes::new(spec.in_flight),
    })
}

/// A Kafka client configuration for a broker that is nowhere, with the
/// client properties `config`.
pub fn kafka(config: &[&str]) -> Kafka {
    let config: Vec<String> = config.iter().map(|p| p.to_string()).collect();
    Kafka {
        brokers: "127.0.0.1:9".into(),
        config: KafkaConfig::load(None, &config).unwrap(),
        events_topic: "events".into(),
        inbound_topic: "inbound".into(),
        dlq_topic: "dlq".into(),
        presence_topic: Some("presence".into()),
        group_id: "group".into(),
        instance: "me".into(),
    }
}
