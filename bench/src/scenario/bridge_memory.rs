//! Part 5, the bridge's footprint: its resident memory idle and with a
//! thousand room links, so an operator can size the sidecar.
//!
//! Rooms are made the way production makes them (a first message), which
//! registers them with the registry; the registry assigns them to the one
//! bridge instance, which opens a link per room. The measurement waits until
//! the bridge's own `/metrics` reports the links up, then reads `VmRSS` from
//! `/proc`, so the figure is the bridge holding every link, not racing them.

use std::time::Duration;

use anyhow::{bail, Result};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use roomcast_tests::BridgeProcess;
use tokio::time::{sleep, Instant};

use crate::client::clock;
use crate::client::load::Outlet;
use crate::client::publisher::Publisher;
use crate::client::recorder::Stamp;
use crate::measure::memory::resident_kib;
use crate::server::Server;

/// Rooms created at once: enough to go fast, few enough for one room each turn.
const CONCURRENCY: usize = 16;
/// How long the bridge may take to link every room.
const LINKING: Duration = Duration::from_secs(180);

pub struct Memory {
    /// Room links up when the loaded figure was read.
    pub links: usize,
    pub idle_kib: u64,
    pub loaded_kib: u64,
}

impl Memory {
    /// Resident memory per link beyond the idle bridge.
    pub fn per_link_kib(&self) -> f64 {
        (self.loaded_kib.saturating_sub(self.idle_kib)) as f64 / self.links.max(1) as f64
    }
}

/// Creates `rooms` rooms on `server` and measures `bridge` once it links
/// them all.
pub async fn measure(
    server: &Server,
    bridge: &BridgeProcess,
    idle_kib: u64,
    rooms: usize,
) -> Result<Memory> {
    let before = links_up(bridge).await;
    stream::iter(0..rooms)
        .map(|_| create_room(server))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<()>()
        .await?;
    let target = before + rooms;
    let deadline = Instant::now() + LINKING;
    loop {
        let links = links_up(bridge).await;
        if links >= target {
            let loaded_kib = resident_kib(bridge.service.pid())?;
            return Ok(Memory {
                links,
                idle_kib,
                loaded_kib,
            });
        }
        if Instant::now() >= deadline {
            bail!("the bridge linked {links} of {target} rooms within {LINKING:?}");
        }
        sleep(Duration::from_millis(500)).await;
    }
}

async fn create_room(server: &Server) -> Result<()> {
    let room = server.fresh_room("bridge.memory");
    let mut publisher = Publisher::connect(server, &room).await?;
    let stamp = Stamp {
        r: 0,
        i: 0,
        t: clock::now_us(),
    };
    publisher.send(&[stamp]).await?;
    publisher.close().await;
    Ok(())
}

/// Room links the bridge reports up.
async fn links_up(bridge: &BridgeProcess) -> usize {
    bridge
        .metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("roomcast_bridge_link_up{") && l.ends_with(" 1"))
        .count()
}
