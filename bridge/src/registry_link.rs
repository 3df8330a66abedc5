//! The registry link (docs/protocol.md, "Bridge links"): learns which rooms this instance owns
//! and keeps one room link task per owned room.
//!
//! A room that moves to another instance is taken over by that instance's
//! newer link, which supersedes ours (4009); that is how a room task ends.
//! Whether this link is up is what `/healthz` reports as the worker's state.

use std::collections::HashMap;
use std::sync::Arc;

use roomcast_protocol::wire::{Registration, ServerFrame};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::context::Bridge;
use crate::link::Link;
use crate::outbound;
use crate::stop::Stop;

pub async fn run(bridge: Arc<Bridge>, mut stop: Stop) {
    let mut rooms: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut backoff = Backoff::network();
    let url = bridge.urls.registry_link(&bridge.instance);
    while !stop.is_stopping() {
        match Link::open(&url, &bridge.tokens, &bridge.tls).await {
            Ok(mut link) => {
                backoff.reset();
                bridge.metrics.set_worker_up(true);
                info!(instance = bridge.instance, "registry link up");
                loop {
                    tokio::select! {
                        frame = link.next() => match frame {
                            Ok(ServerFrame::Room(registration)) => assign(&bridge, &registration, &mut rooms, &stop),
                            Ok(other) => debug!("registry sent {other:?}"),
                            Err(e) => {
                                warn!("registry link: {e}");
                                break;
                            }
                        },
                        _ = stop.stopping() => {
                            link.close("bridge shutting down").await;
                            break;
                        }
                    }
                }
                bridge.metrics.set_worker_up(false);
            }
            Err(e) => {
                bridge.metrics.set_worker_up(false);
                warn!("registry link: {e}");
            }
        }
        if !stop.pause(&mut backoff).await {
            break;
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
    registration: &Registration,
    rooms: &mut HashMap<String, JoinHandle<()>>,
    stop: &Stop,
) {
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
        rooms.insert(registration.room.clone(), task);
    }
}
