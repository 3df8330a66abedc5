//! A fault-injecting proxy in front of the worker: the batch API fails for
//! chosen rooms while everything else (other rooms, room and registry
//! links, history) keeps working, until the test lets a room recover. That
//! is how a bridge meets a partial outage in production, and what a test
//! cannot get from the worker itself. It can also hold the batch API of
//! chosen rooms until the test releases it, so that a test knows the bridge
//! has those publishes in flight.
//!
//! It serves plain HTTP on loopback and forwards each request to the worker
//! over HTTPS, trusting the test CA. A WebSocket upgrade is forwarded like
//! any request; on `101` the two upgraded connections are spliced byte for
//! byte. Dropping the proxy ends every connection it holds.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;

use crate::{tls, Worker, STEP};

/// What a failing room's `POST .../messages` gets instead of the worker.
pub const INJECTED: &str = "fault injected by the test proxy";

/// A running proxy; see the module documentation.
pub struct FaultProxy {
    address: SocketAddr,
    forward: Arc<Forward>,
    /// Dropped with the proxy, which stops every task it spawned.
    _stop: watch::Sender<()>,
    /// How many publishes into held rooms have arrived.
    held: watch::Receiver<usize>,
    /// Set once the held publishes may go on to the worker.
    release: watch::Sender<bool>,
}

impl FaultProxy {
    /// Proxies to `worker`, failing `POST /v1/rooms/{room}/messages` with
    /// `503` for every room in `failing_rooms` until it recovers.
    pub async fn start(worker: &Worker, failing_rooms: &[&str]) -> FaultProxy {
        FaultProxy::with_rooms(worker, failing_rooms, &[]).await
    }

    /// Proxies to `worker`, holding every `POST /v1/rooms/{room}/messages`
    /// into `held_rooms` until [`FaultProxy::release`] (then forwarding it).
    pub async fn holding(worker: &Worker, held_rooms: &[&str]) -> FaultProxy {
        FaultProxy::with_rooms(worker, &[], held_rooms).await
    }

    async fn with_rooms(
        worker: &Worker,
        failing_rooms: &[&str],
        held_rooms: &[&str],
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let (stop, stopped) = watch::channel(());
        let (arrived, held) = watch::channel(0);
        let (release, released) = watch::channel(false);
        let forward = Arc::new(Forward {
            worker: worker.url(""),
            failing: Mutex::new(failing_rooms.iter().map(|r| r.to_string()).collect()),
            holding: held_rooms.iter().map(|r| r.to_string()).collect(),
            arrived,
            released,
            client: tls::http_client()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("the proxy's HTTP client"),
            stopped,
        });
        let accepting = accept(listener, forward.clone());
        forward.spawn(accepting);
        FaultProxy {
            address,
            forward,
            _stop: stop,
            held,
            release,
        }
    }

    /// Lets `room`'s batches through from now on.
    pub fn recover(&self, room: &str) {
        self.forward
            .failing
            .lock()
            .expect("the failing rooms")
            .remove(room);
    }

    /// Waits until `count` publishes into held rooms have arrived (and
    /// wait there), or panics after `wait`.
    pub async fn wait_held(&self, count: usize, wait: std::time::Duration) {
        let mut held = self.held.clone();
        let arrived = timeout(wait, held.wait_for(|n| *n >= count)).await;
        assert!(
            matches!(arrived, Ok(Ok(_))),
            "{} of {count} held publishes arrived within {wait:?}",
            *self.held.borrow()
        );
    }

    /// Lets the held publishes, and every later one, through.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// What a bridge gets as `--worker-url` (with `path` empty).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.address)
    }
}

/// Everything a connection needs to forward its requests.
struct Forward {
    /// The worker's base URL (`https://127.0.0.1:PORT`).
    worker: String,
    /// Rooms whose batches fail, until [`FaultProxy::recover`].
    failing: Mutex<HashSet<String>>,
    /// Rooms whose batches wait for [`FaultProxy::release`].
    holding: HashSet<String>,
    /// Counts the publishes into `holding` rooms that arrived.
    arrived: watch::Sender<usize>,
    /// True once held publishes may go on.
    released: watch::Receiver<bool>,
    /// No redirects: the caller sees the worker's answers as they are.
    client: reqwest::Client,
    /// Changes (with an error) when the [`FaultProxy`] is dropped.
    stopped: watch::Receiver<()>,
}

impl Forward {
    /// Runs `task` until it ends or the proxy is dropped.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                _ = stopped.changed() => {}
            }
        });
    }

    /// The room `request` is a batch POST into, if it is one.
    fn batch_room(request: &Request<Incoming>) -> Option<&str> {
        if request.method() != Method::POST {
            return None;
        }
        request
            .uri()
            .path()
            .strip_prefix("/v1/rooms/")
            .and_then(|rest| rest.strip_suffix("/messages"))
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let room = Forward::batch_room(&request).map(str::to_owned);
        let failing = room
            .as_ref()
            .is_some_and(|r| self.failing.lock().expect("the failing rooms").contains(r));
        if failing {
            return Ok(plain(StatusCode::SERVICE_UNAVAILABLE, INJECTED.into()));
        }
        if room.as_ref().is_some_and(|r| self.holding.contains(r)) {
            self.arrived.send_modify(|n| *n += 1);
            // Ends with the proxy too (the sender is in it).
            let _ = self.released.clone().wait_for(|released| *released).await;
        }
        Ok(self
            .forward(request)
            .await
            .unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, format!("test proxy: {e}"))))
    }

    /// Sends `request` to the worker and returns its answer; on `101` also
    /// splices the two upgraded connections.
    async fn forward(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, String> {
        let downstream = hyper::upgrade::on(&mut request);
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut headers = parts.headers;
        // The client sets these for the worker's connection, not ours.
        for name in [HOST, CONTENT_LENGTH, TRANSFER_ENCODING] {
            headers.remove(name);
        }
        let upstream = self
            .client
            .request(parts.method, format!("{}{target}", self.worker))
            .headers(headers)
            .body(body);
        let upstream = timeout(STEP, upstream.send())
            .await
            .map_err(|_| format!("no answer from the worker within {STEP:?}"))?
            .map_err(|e| e.to_string())?;
        let status = upstream.status();
        let headers = end_to_end(upstream.headers());
        let body = if status == StatusCode::SWITCHING_PROTOCOLS {
            self.spawn(splice(downstream, upstream));
            Bytes::new()
        } else {
            timeout(STEP, upstream.bytes())
                .await
                .map_err(|_| format!("no body from the worker within {STEP:?}"))?
                .map_err(|e| e.to_string())?
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// Serves each connection on `listener` with `forward`.
async fn accept(listener: TcpListener, forward: Arc<Forward>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // A connection reset before it was accepted; the next one is fine.
            continue;
        };
        let handler = forward.clone();
        let service = service_fn(move |request| handler.clone().handle(request));
        forward.spawn(async move {
            // A client that goes away mid-request is its own business.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Copies bytes both ways between the client's and the worker's upgraded
/// connections until both sides are done.
async fn splice(downstream: OnUpgrade, upstream: reqwest::Response) {
    if let (Ok(downstream), Ok(mut upstream)) = tokio::join!(downstream, upstream.upgrade()) {
        let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(downstream), &mut upstream).await;
    }
}

/// The worker's response headers without the framing ones, which hyper sets
/// for the body it sends.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(CONTENT_LENGTH);
    headers.remove(TRANSFER_ENCODING);
    headers
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, "text/plain".parse().expect("a header value"));
    response
}
