//! The registry link (docs/internals.md, "Bridge links"): learns which rooms this instance owns
//! and hands them to [`room_tasks`], which keeps a room link task for each
//! (up to `--max-links`).
//!
//! A room that moves to another instance is taken over by that instance's
//! newer link, which supersedes ours (4009); that, retirement and an idle
//! link are how a room task ends. Whether this link is up is what
//! `/healthz` reports as the worker's state.

use std::sync::Arc;

use roomcast_protocol::wire::ServerFrame;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::context::Bridge;
use crate::link::Link;
use crate::room_tasks;
use crate::stop::Stop;

/// Announcements on their way to the room tasks; a full queue holds the
/// registry link's reading back rather than buffering without bound.
const ANNOUNCED_QUEUE: usize = 1024;

pub async fn run(bridge: Arc<Bridge>, mut stop: Stop) {
    let (announce, announced) = mpsc::channel(ANNOUNCED_QUEUE);
    let rooms = tokio::spawn(room_tasks::run(bridge.clone(), announced, stop.clone()));
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
                            Ok(ServerFrame::Room(registration)) => {
                                if announce.send(registration.into_owned()).await.is_err() {
                                    break;
                                }
                            }
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
    drop(announce);
    if let Err(e) = rooms.await {
        warn!("the room link tasks failed: {e}");
    }
}
