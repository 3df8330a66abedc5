//! A Chrome DevTools protocol client for `wrangler dev`'s inspector port,
//! enough to drive the `Profiler` domain of the worker's isolate.
//!
//! wrangler serves one target (`/json`) for the user worker's isolate,
//! which under `wrangler dev` also runs every Durable Object, so a profile
//! of it is a profile of the rooms. The port also streams events nobody
//! asked for (`Network.*` for the worker's subrequests); a reader task
//! drains them while a profile runs, so they never back up into wrangler,
//! and hands on only the answers to calls.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Duration};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::http::HttpConn;
use crate::client::net::Traffic;

/// How long one call may take; `Profiler.stop` serialises the whole profile.
const CALL: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Inspector {
    sink: SplitSink<Socket, Message>,
    answers: mpsc::UnboundedReceiver<Value>,
    reader: JoinHandle<()>,
    next_id: u64,
}

impl Inspector {
    /// Connects to the first target the inspector on `port` lists.
    pub async fn connect(port: u16) -> Result<Inspector> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut http = HttpConn::connect(addr, Traffic::new()).await?;
        let (status, body) = http.get("/json", None).await?;
        if !status.is_success() {
            bail!("GET {addr}/json: {status}");
        }
        let targets: Vec<Value> =
            serde_json::from_slice(&body).context("the inspector's /json is not a list")?;
        let url = targets
            .first()
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .with_context(|| format!("no debuggable target at {addr}/json"))?;
        let (socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let (sink, mut stream) = socket.split();
        let (tx, answers) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                // Events have no id; nobody waits for them.
                if value.get("id").is_some() && tx.send(value).is_err() {
                    break;
                }
            }
        });
        Ok(Inspector {
            sink,
            answers,
            reader,
            next_id: 0,
        })
    }

    /// Calls `method` with `params`; its `result`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.sink
            .send(Message::text(request.to_string()))
            .await
            .with_context(|| format!("sending {method}"))?;
        let answer = async {
            while let Some(answer) = self.answers.recv().await {
                if answer["id"] == id {
                    return Some(answer);
                }
            }
            None
        };
        let mut answer = timeout(CALL, answer)
            .await
            .with_context(|| format!("{method}: no answer within {CALL:?}"))?
            .with_context(|| format!("{method}: the inspector closed the connection"))?;
        if let Some(error) = answer.get("error") {
            bail!("{method}: {error}");
        }
        Ok(answer["result"].take())
    }

    /// Turns off the runtime's `Network` domain. wrangler's inspector proxy
    /// turns it on when it starts, then posts every event to wrangler and
    /// keeps it until a client attaches, which gets them all at once: each
    /// request the worker sends to a Durable Object is a few events, so a
    /// sharded room's requests between its objects would cost the dev
    /// server a request each, and the first client to attach would set off
    /// tens of thousands of them (enough to run workerd out of file
    /// descriptors). Until wrangler reloads the worker.
    pub async fn disable_network(&mut self) -> Result<()> {
        self.call("Network.disable", json!({})).await?;
        Ok(())
    }

    /// Starts V8's sampling profiler, one sample every `interval_us`.
    pub async fn start_profiler(&mut self, interval_us: u32) -> Result<()> {
        self.call("Profiler.enable", json!({})).await?;
        let interval = json!({ "interval": interval_us });
        self.call("Profiler.setSamplingInterval", interval).await?;
        self.call("Profiler.start", json!({})).await?;
        Ok(())
    }

    /// Stops the profiler; the profile (a `.cpuprofile`'s JSON).
    pub async fn stop_profiler(&mut self) -> Result<Value> {
        let mut stopped = self.call("Profiler.stop", json!({})).await?;
        Ok(stopped["profile"].take())
    }
}

impl Drop for Inspector {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
