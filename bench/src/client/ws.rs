//! WebSocket connections into a room, and the frames the benchmark reads
//! and writes.
//!
//! A connection counts as open once the room's `welcome` arrived: that is
//! when it is in the broadcast set, so a scenario that awaited every
//! connection knows no message can miss a subscriber. A multiplexed
//! connection (`/v1/ws`) is open at its `connected`, and in a room only at
//! that room's `subscribed`, which its scenario awaits. Frames are parsed
//! only as far as the benchmark needs (type, room, stamp, error code), because
//! the client shares the machine with the server and every cycle it spends
//! is one the server does not get.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::net::{Counted, Traffic};
use crate::client::recorder::Stamp;

pub type Socket = WebSocketStream<Counted<TcpStream>>;

/// How long a connect (TCP, upgrade, welcome) may take; generous, because
/// a thousand of them may queue at the dev server at once.
const CONNECT: Duration = Duration::from_secs(60);
/// How long a close handshake may take before the socket is just dropped.
pub const CLOSE: Duration = Duration::from_secs(5);

/// What the benchmark cares about in a server frame.
pub enum Incoming {
    Message(Stamp),
    Error(String),
    Other,
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    room: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<Stamp>,
    #[serde(default, borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct Publish {
    #[serde(rename = "type")]
    kind: &'static str,
    data: Stamp,
}

/// Opens a WebSocket to `path` and waits for the room's `welcome`.
pub async fn connect(addr: SocketAddr, path: &str, traffic: Arc<Traffic>) -> Result<Socket> {
    connect_until(addr, path, traffic, "welcome").await
}

/// Opens a WebSocket to `path` and waits for its first frame, which must be
/// of type `first`.
pub async fn connect_until(
    addr: SocketAddr,
    path: &str,
    traffic: Arc<Traffic>,
    first: &str,
) -> Result<Socket> {
    let open = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let url = format!("ws://{addr}{path}");
        let (mut socket, _) =
            tokio_tungstenite::client_async(url.as_str(), Counted::new(stream, traffic))
                .await
                .context("WebSocket upgrade")?;
        await_first(&mut socket, first).await?;
        Ok(socket)
    };
    timeout(CONNECT, open)
        .await
        .with_context(|| format!("no {first} from {addr} within {CONNECT:?}"))?
}

async fn await_first(socket: &mut Socket, first: &str) -> Result<()> {
    while let Some(frame) = socket.next().await {
        match frame.with_context(|| format!("reading the {first}"))? {
            Message::Text(text) => {
                let frame: Frame = serde_json::from_str(&text)
                    .with_context(|| format!("first frame is not JSON: {text}"))?;
                if frame.kind == first {
                    return Ok(());
                }
                bail!("expected {first}, got {text}");
            }
            Message::Close(close) => bail!("closed before {first}: {close:?}"),
            _ => continue,
        }
    }
    bail!("connection ended before {first}")
}

/// Reads a text frame.
pub fn parse(text: &str) -> Result<Incoming> {
    parse_in_room(text).map(|(incoming, _)| incoming)
}

/// Reads a text frame and the room it names: on a multiplexed connection,
/// which room a message is from.
pub fn parse_in_room(text: &str) -> Result<(Incoming, Option<Cow<'_, str>>)> {
    if text == "pong" {
        return Ok((Incoming::Other, None));
    }
    let frame: Frame =
        serde_json::from_str(text).with_context(|| format!("frame is not JSON: {text}"))?;
    let incoming = match (frame.kind.as_ref(), frame.data, frame.code) {
        ("message", Some(stamp), _) => Incoming::Message(stamp),
        ("error", _, code) => Incoming::Error(code.unwrap_or_default().into_owned()),
        _ => Incoming::Other,
    };
    Ok((incoming, frame.room))
}

/// The `publish` frame carrying `stamp`.
pub fn publish_frame(stamp: Stamp) -> Message {
    let frame = Publish {
        kind: "publish",
        data: stamp,
    };
    Message::text(serde_json::to_string(&frame).expect("a plain struct serializes"))
}

/// Closes normally, waiting a bounded time for the server's answer.
pub async fn close(mut socket: Socket) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "bench done".into(),
    };
    let _ = timeout(CLOSE, async {
        socket.close(Some(frame)).await?;
        while socket.next().await.is_some() {}
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_names_its_room_and_carries_its_stamp() {
        let text = r#"{"type":"message","room":"a.b","seq":3,"data":{"r":1,"i":2,"t":5}}"#;
        let (incoming, room) = parse_in_room(text).expect("a frame");
        let Incoming::Message(stamp) = incoming else {
            panic!("not a message");
        };
        assert_eq!((stamp.r, stamp.i, stamp.t), (1, 2, 5));
        assert_eq!(room.as_deref(), Some("a.b"));
        let (incoming, room) = parse_in_room(r#"{"type":"error","code":"forbidden"}"#).unwrap();
        assert!(matches!(incoming, Incoming::Error(code) if code == "forbidden"));
        assert_eq!(room, None);
    }
}
