//! The registry link (SPEC section 5): learns which rooms this instance owns
//! and keeps one room link task per owned room.
//!
//! A room that moves to another instance is taken over by that instance's
//! newer link, which supersedes ours (4009); that is how a room task ends.
//! Its state is whether the worker is reachable, for `/healthz`.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use roomcast_protocol::wire::Registration;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as Frame;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::outbound;
use crate::relay::Bridge;

pub async fn run(bridge: Arc<Bridge>, mut stop: watch::Receiver<bool>) {
    let mut rooms: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut backoff = Backoff::network();
    loop {
        let url = bridge.urls.registry_link(&bridge.instance);
        match bridge.connect(&url).await {
            Ok(mut ws) => {
                backoff.reset();
                bridge.metrics.set_worker_up(true);
                info!(instance = bridge.instance, "registry link up");
                let stopped = loop {
                    tokio::select! {
                        frame = ws.next() => match frame {
                            Some(Ok(Frame::Text(text))) => assign(&bridge, &text, &mut rooms, &stop),
                            Some(Ok(Frame::Close(close))) => { warn!("registry closed the link: {close:?}"); break false; }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => { warn!("registry link error: {e}"); break false; }
                            None => break false,
                        },
                        _ = stop.changed() => {
                            let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "bridge shutting down".into() })).await;
                            break true;
                        }
                    }
                };
                bridge.metrics.set_worker_up(false);
                if stopped {
                    break;
                }
            }
            Err(e) => {
                bridge.metrics.set_worker_up(false);
                warn!("registry link: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.changed() => break,
        }
    }
    for (room, task) in rooms {
        if let Err(e) = task.await {
            warn!(room, "room link task failed: {e}");
        }
    }
}

/// Starts a room link for an announced room unless one is running.
fn assign(
    bridge: &Arc<Bridge>,
    text: &str,
    rooms: &mut HashMap<String, JoinHandle<()>>,
    stop: &watch::Receiver<bool>,
) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        warn!("registry sent non-JSON: {text}");
        return;
    };
    if frame["type"] != "room" {
        return;
    }
    let Ok(registration) = serde_json::from_value::<Registration>(frame) else {
        warn!("registry sent an unreadable room: {text}");
        return;
    };
    let running = rooms
        .get(&registration.room)
        .is_some_and(|task| !task.is_finished());
    if !running {
        info!(
            room = registration.room,
            pending = registration.pending,
            "relaying room"
        );
        let task = tokio::spawn(outbound::run(
            bridge.clone(),
            registration.room.clone(),
            stop.clone(),
        ));
        rooms.insert(registration.room, task);
    }
}
