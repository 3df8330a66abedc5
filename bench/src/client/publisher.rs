//! The WebSocket publisher of a room: an [`Outlet`] for [`crate::client::load`].
//!
//! The server answers every publish with an ack and echoes the message to
//! the publisher too; a reader task drains both so they never back up into
//! the room, and counts error frames, since a refused publish would
//! otherwise look like a slow delivery.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::client::load::Outlet;
use crate::client::net::Traffic;
use crate::client::recorder::Stamp;
use crate::client::ws::{self, Incoming, Socket};
use crate::server::Server;

/// How long one send may block before the run fails.
const SEND: Duration = Duration::from_secs(30);

pub struct Publisher {
    sink: SplitSink<Socket, Message>,
    reader: JoinHandle<()>,
    /// Error frames received (rejected publishes) not yet taken.
    rejected: Arc<AtomicU64>,
}

impl Publisher {
    pub async fn connect(server: &Server, room: &str) -> Result<Publisher> {
        let socket = ws::connect(server.addr(), &server.ws_path(room), Traffic::new())
            .await
            .with_context(|| format!("publisher of {room}"))?;
        let (sink, mut stream) = socket.split();
        let rejected = Arc::new(AtomicU64::new(0));
        let seen = rejected.clone();
        let name = room.to_owned();
        let reader = tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                if let Message::Text(text) = frame {
                    if let Ok(Incoming::Error(code)) = ws::parse(&text) {
                        if seen.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("publisher of {name}: first rejection: {code}");
                        }
                    }
                }
            }
        });
        Ok(Publisher {
            sink,
            reader,
            rejected,
        })
    }

    /// Publishes refused since the last call.
    pub fn take_rejected(&self) -> u64 {
        self.rejected.swap(0, Ordering::Relaxed)
    }

    /// Closes normally, waiting a bounded time for the server's answer.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "bench done".into(),
        };
        let _ = timeout(ws::CLOSE, self.sink.send(Message::Close(Some(frame)))).await;
        if timeout(ws::CLOSE, &mut self.reader).await.is_err() {
            self.reader.abort();
        }
    }
}

impl Outlet for Publisher {
    async fn send(&mut self, stamps: &[Stamp]) -> Result<()> {
        let sink = &mut self.sink;
        let publish = async {
            for stamp in stamps {
                sink.feed(ws::publish_frame(*stamp)).await?;
            }
            sink.flush().await
        };
        timeout(SEND, publish)
            .await
            .context("publishing timed out")?
            .context("publishing")
    }
}
