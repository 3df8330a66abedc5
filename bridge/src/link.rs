//! A WebSocket link to the worker (a room link or the registry link), with
//! the two chores every link has besides its own frames: keeping the token
//! fresh (an `auth` frame whenever the bridge's token changes, so a link
//! outlives the token it opened with) and a keepalive `ping` so idle links
//! survive proxies. Callers see only the frames that matter to them.
//!
//! A redirect is never followed (tokio-tungstenite does not, and the link
//! must not carry the bridge's token to wherever a 3xx points): it is an
//! outage, reported with its status and `Location`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast_protocol::wire::{parse_server_frame, BridgeFrame, ServerFrame};
use roomcast_protocol::ErrorCode;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::token::{Token, Tokens};

/// How long a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The read chunk of every link. A bridge holds one link per room, so the
/// per-socket buffer is what its memory scales with: tungstenite's default
/// 128 KiB made 1000 links cost 150 MiB. A larger message still arrives
/// whole (this is the read chunk, not a message limit).
const READ_BUFFER: usize = 8 * 1024;
/// How often an idle link is pinged.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a close handshake may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a link could not be opened or went down.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error(
        "connecting to {url}: the worker answered {status} redirecting to {location:?}; \
         the bridge does not follow redirects (is --worker-url the worker's own address?)"
    )]
    Redirected {
        url: String,
        status: u16,
        location: String,
    },
    #[error("{0}")]
    Socket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("the worker closed the link ({code:?}: {reason})")]
    Closed { code: Option<u16>, reason: String },
    #[error("the link ended")]
    Ended,
}

impl LinkError {
    /// The close code, when the worker closed the link.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            LinkError::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

/// An open link.
pub struct Link {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    tokens: watch::Receiver<Token>,
    /// False once the token can no longer change (a fixed token, or the
    /// bridge is stopping), so the branch that waits for it is switched off.
    refreshing: bool,
    ping: Interval,
    url: String,
}

impl Link {
    /// Opens `url` with the current token.
    pub async fn open(
        url: &str,
        tokens: &Tokens,
        tls: &Arc<rustls::ClientConfig>,
    ) -> Result<Link, LinkError> {
        let connect_error = |e| LinkError::Connect {
            url: url.to_owned(),
            source: Box::new(e),
        };
        let mut request = url.into_client_request().map_err(connect_error)?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", tokens.current()))
            .map_err(|e| connect_error(e.into()))?;
        request.headers_mut().insert("authorization", bearer);
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            false,
            Some(Connector::Rustls(tls.clone())),
        );
        let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| LinkError::Timeout(url.to_owned()))?
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(response)
                    if response.status().is_redirection() =>
                {
                    LinkError::Redirected {
                        url: url.to_owned(),
                        status: response.status().as_u16(),
                        location: response
                            .headers()
                            .get("location")
                            .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                            .unwrap_or_default(),
                    }
                }
                other => connect_error(other),
            })?;
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ping.reset();
        Ok(Link {
            ws,
            tokens: tokens.changes(),
            refreshing: true,
            ping,
            url: url.to_owned(),
        })
    }

    /// The next frame from the worker. Meanwhile it sends fresh tokens and
    /// keepalive pings, and swallows their answers.
    pub async fn next(&mut self) -> Result<ServerFrame<'static>, LinkError> {
        self.next_unless_paused(false).await
    }

    /// Like [`Link::next`], but while `paused` nothing is read: frames stay
    /// in the socket (the worker's send window holds the rest) and only the
    /// token refresh and the keepalive run, so a paused link stays valid.
    pub async fn next_unless_paused(
        &mut self,
        paused: bool,
    ) -> Result<ServerFrame<'static>, LinkError> {
        loop {
            tokio::select! {
                frame = self.ws.next(), if !paused => match frame {
                    Some(Ok(Frame::Text(text))) => {
                        if let Some(frame) = self.read(&text) {
                            return Ok(frame);
                        }
                    }
                    Some(Ok(Frame::Close(close))) => {
                        return Err(LinkError::Closed {
                            code: close.as_ref().map(|c| u16::from(c.code)),
                            reason: close.map(|c| c.reason.to_string()).unwrap_or_default(),
                        })
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(Box::new(e).into()),
                    None => return Err(LinkError::Ended),
                },
                changed = self.tokens.changed(), if self.refreshing => match changed {
                    Ok(()) => {
                        let token = self.tokens.borrow_and_update().jwt.to_string();
                        self.send(&BridgeFrame::Auth { token }).await?;
                    }
                    Err(_) => self.refreshing = false,
                },
                _ = self.ping.tick() => self.send_text("ping").await?,
            }
        }
    }

    /// Parses a text frame; `None` for the ones handled here.
    fn read(&self, text: &str) -> Option<ServerFrame<'static>> {
        if text == "pong" {
            return None;
        }
        match parse_server_frame(text) {
            Ok(ServerFrame::AuthOk { exp }) => {
                debug!(url = self.url, exp, "the worker took the fresh token");
                None
            }
            Ok(ServerFrame::Error {
                code: ErrorCode::BadToken,
                message,
                ..
            }) => {
                warn!(
                    url = self.url,
                    "the worker refused the fresh token: {message}"
                );
                None
            }
            Ok(frame) => Some(frame),
            Err(e) => {
                warn!(
                    url = self.url,
                    "unreadable frame from the worker ({e}): {text:.200}"
                );
                None
            }
        }
    }

    pub async fn send(&mut self, frame: &BridgeFrame) -> Result<(), LinkError> {
        self.send_text(&frame.to_json()).await
    }

    async fn send_text(&mut self, text: &str) -> Result<(), LinkError> {
        self.ws
            .send(Frame::text(text))
            .await
            .map_err(|e| Box::new(e).into())
    }

    /// Closes with 1001 (the bridge is going away).
    pub async fn close(mut self, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(Some(frame))).await;
    }

    /// Closes with 1000 and reads what the worker sent before it saw the
    /// close, up to its answer. `true` when a room message was among it:
    /// the room was not idle after all, and the message is unconfirmed.
    pub async fn close_idle(mut self, reason: &str) -> bool {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        };
        let drain = async {
            if self.ws.close(Some(frame)).await.is_err() {
                return false;
            }
            while let Some(frame) = self.ws.next().await {
                match frame {
                    Ok(Frame::Text(text)) => {
                        if let Some(ServerFrame::Message(_)) = self.read(&text) {
                            return true;
                        }
                    }
                    Ok(Frame::Close(_)) | Err(_) => return false,
                    Ok(_) => {}
                }
            }
            false
        };
        tokio::time::timeout(CLOSE_TIMEOUT, drain)
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::fake_worker::{self, FakeWorker, FromBridge};
    use crate::stop::Stop;
    use crate::token::TokenSource;

    async fn open(url: &str) -> Result<Link, LinkError> {
        let (_trigger, stop) = Stop::new();
        let tokens = TokenSource::Fixed("t".into()).start(stop).unwrap();
        let tls = crate::tls::client_config(None).unwrap();
        Link::open(url, &tokens, &tls).await
    }

    async fn linked(worker: &mut FakeWorker) -> (Link, fake_worker::FakeLink) {
        let url = format!("ws://{}/v1/rooms/r/bridge?instance=me", worker.addr);
        let (link, fake) = tokio::join!(open(&url), worker.link());
        (link.expect("the link opens"), fake)
    }

    #[tokio::test]
    async fn an_idle_close_reports_a_message_the_room_sent_before_it_saw_the_close() {
        let mut worker = FakeWorker::start().await;
        let (link, mut fake) = linked(&mut worker).await;
        fake.message("r", 1, "late").await;
        let room = tokio::spawn(async move { fake.next().await });
        assert!(link.close_idle("idle").await, "the late message was missed");
        assert_eq!(
            room.await.unwrap(),
            FromBridge::Closed(Some(1000), "idle".into())
        );
    }

    #[tokio::test]
    async fn an_idle_close_with_nothing_sent_is_clean() {
        let mut worker = FakeWorker::start().await;
        let (link, mut fake) = linked(&mut worker).await;
        let room = tokio::spawn(async move { fake.next().await });
        assert!(!link.close_idle("idle").await);
        assert_eq!(
            room.await.unwrap(),
            FromBridge::Closed(Some(1000), "idle".into())
        );
    }

    #[tokio::test]
    async fn a_redirect_is_reported_and_never_followed() {
        let (target, visits) = fake_worker::counting().await;
        let elsewhere = format!("ws://{target}/v1/rooms/r/bridge");
        let redirecting = fake_worker::redirecting(elsewhere.clone()).await;
        let error = open(&format!("ws://{redirecting}/v1/rooms/r/bridge?instance=me"))
            .await
            .err()
            .expect("a redirect is no link");
        match &error {
            LinkError::Redirected {
                status, location, ..
            } => assert_eq!((*status, location.as_str()), (307, elsewhere.as_str())),
            other => panic!("not reported as a redirect: {other}"),
        }
        assert!(
            error.to_string().contains("does not follow redirects"),
            "{error}"
        );
        assert_eq!(
            visits.load(Ordering::SeqCst),
            0,
            "the redirect was followed"
        );
    }
}
