//! The bridge's HTTP endpoint: `GET /metrics` (Prometheus text) and
//! `GET /healthz` (200 when Kafka and the worker are reachable, else 503).
//!
//! Two fixed routes for a scraper and a health checker do not need a web
//! framework. What a client can hold is bounded ([`Bounds`]): the whole
//! request head must arrive within one deadline however it trickles in,
//! writing the answer has a timeout, and only so many connections are
//! served at once; the ones beyond are closed at once, so a stuck or
//! hostile client can neither pin a task for long nor pile them up.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::stop::Stop;

const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// What one client may take of the endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// For the whole request head, from the connection's accept.
    pub head: Duration,
    /// For writing the answer.
    pub write: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            head: Duration::from_secs(5),
            write: Duration::from_secs(5),
            connections: 32,
        }
    }
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, bounds: Bounds, mut stop: Stop) {
    let slots = Arc::new(Semaphore::new(bounds.connections));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let metrics = metrics.clone();
                        tokio::spawn(async move {
                            if let Err(e) = answer(stream, &metrics, bounds).await {
                                debug!("metrics endpoint: {e}");
                            }
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        debug!(%peer, "metrics endpoint: {} connections open; closing this one", bounds.connections);
                        drop(stream);
                    }
                },
                Err(e) => warn!("metrics endpoint: accept failed: {e}"),
            },
            _ = stop.stopping() => return,
        }
    }
}

fn timed_out(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timed out"))
}

async fn answer(mut stream: TcpStream, metrics: &Metrics, bounds: Bounds) -> std::io::Result<()> {
    let head = tokio::time::timeout(bounds.head, read_head(&mut stream))
        .await
        .map_err(|_| timed_out("request head"))??;
    let request_line = String::from_utf8_lossy(&head);
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") => match metrics.health() {
            (true, body) => ("200 OK", "application/json", body),
            (false, body) => ("503 Service Unavailable", "application/json", body),
        },
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(bounds.write, write)
        .await
        .map_err(|_| timed_out("writing the answer"))?
}

/// Reads up to the end of the request head (or [`MAX_REQUEST_HEAD`], or
/// the client's end of the stream).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    async fn endpoint(bounds: Bounds) -> (std::net::SocketAddr, crate::stop::Trigger) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, stop) = Stop::new();
        tokio::spawn(serve(listener, Arc::new(Metrics::default()), bounds, stop));
        (addr, trigger)
    }

    /// Reads until the server closes; what it sent.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
        let mut got = Vec::new();
        let read = tokio::time::timeout(within, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        read.await
            .expect("the server closed the connection in time");
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_trickling_request_head_is_cut_off_at_the_deadline() {
        let head = Duration::from_millis(400);
        let (addr, _trigger) = endpoint(Bounds {
            head,
            ..Bounds::default()
        })
        .await;
        let (mut reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
        let started = Instant::now();
        let closed = async {
            let mut buf = [0u8; 64];
            while let Ok(1..) = reader.read(&mut buf).await {}
        };
        // A byte every 100 ms: each read is quick, the head never ends.
        let trickle = async {
            for byte in b"GET /metrics HTTP/1.1\r\nx-slow: ".iter().cycle() {
                if writer.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                _ = closed => {},
                _ = trickle => {},
            }
        })
        .await
        .expect("the server closed the connection");
        let held = started.elapsed();
        assert!(
            held >= head && held < head + Duration::from_secs(2),
            "the connection was held {held:?}"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        let (addr, _trigger) = endpoint(Bounds {
            head: Duration::from_secs(30),
            connections: 2,
            ..Bounds::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n")
                .await
                .unwrap();
            held.push(stream);
        }
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
        let answer = until_closed(&mut extra, Duration::from_secs(2)).await;
        assert_eq!(answer, "", "the third connection got an answer");
        // The two held connections were served all along.
        for stream in &mut held {
            stream.write_all(b"\r\n").await.unwrap();
            let answer = until_closed(stream, Duration::from_secs(5)).await;
            assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        }
    }
}
