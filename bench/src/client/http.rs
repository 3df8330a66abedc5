//! A keep-alive HTTP/1.1 connection on a counted socket.
//!
//! Pollers use hyper's connection-level client directly (rather than a
//! pooled client) so that one poller is exactly one TCP connection whose
//! every byte lands in a [`Traffic`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::client::net::{Counted, Traffic};

/// How long connecting or one request may take.
const STEP: Duration = Duration::from_secs(10);

pub struct HttpConn {
    sender: SendRequest<Empty<Bytes>>,
    authority: String,
}

impl HttpConn {
    pub async fn connect(addr: SocketAddr, traffic: Arc<Traffic>) -> Result<HttpConn> {
        let stream = timeout(STEP, TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to {addr} timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let io = TokioIo::new(Counted::new(stream, traffic));
        let (sender, connection) = http1::handshake(io).await.context("HTTP/1.1 handshake")?;
        // Ends when the sender is dropped or the server closes.
        tokio::spawn(connection);
        Ok(HttpConn {
            sender,
            authority: addr.to_string(),
        })
    }

    /// GETs `path` with an optional bearer token; the status and the body.
    pub async fn get(&mut self, path: &str, token: Option<&str>) -> Result<(StatusCode, Bytes)> {
        let mut request = Request::get(path).header("host", &self.authority);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Empty::new()).context("building a request")?;
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        timeout(STEP, exchange)
            .await
            .with_context(|| format!("GET {path} timed out"))?
            .with_context(|| format!("GET {path}"))
    }
}
