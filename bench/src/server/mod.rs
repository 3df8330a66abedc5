//! The servers under test, one per rung of the ladder: the bare JS room
//! (`bench/baseline`), the durable JS room (`bench/durable`), the same room
//! on partyserver (`bench/partyserver`) and roomcast (the repository's
//! `wrangler.toml` and worker bundle), all under the same `wrangler dev`.
//!
//! They are started by the end-to-end harness (`roomcast-tests`), so the
//! benchmark measures the worker the tests check, started the same way
//! (own process group, port and state directory), with what a measurement
//! needs changed: plain HTTP, warnings-only logs (per-request log lines
//! would cost node CPU inside the measurement) and state in memory. Rate
//! limits are raised far above the offered load: the benchmarks measure
//! delivery, not the limiter.

pub mod direct;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use roomcast_tests::{Worker, WorkerSpec};

use crate::measure::cpu::{self, CpuTimes};
use crate::measure::memory;

/// How long `wrangler dev` may take to answer `/healthz`; for roomcast this
/// includes its build command, a no-op when the bundle is up to date.
pub const STARTUP: Duration = Duration::from_secs(300);

/// Variables that take roomcast's limiters out of the measurement: the rate
/// budgets, the sockets one subject may hold in a room and the rooms it
/// may create (every benchmark socket carries the same token).
pub const OURS_VARS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
    ("MAX_MESSAGE_BYTES", "65536"),
    ("MAX_CONNECTIONS_PER_SUBJECT", "100000"),
    ("ROOM_CREATE_PER_MIN", "1000000"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// The bare JS room: broadcast from memory, no auth, no storage.
    Bare,
    /// The durable JS room: a checked token, one SQLite INSERT per publish.
    Durable,
    /// The durable JS room's work on partyserver.
    Partyserver,
    /// The repository's worker.
    #[value(name = "roomcast")]
    Ours,
}

impl Flavor {
    /// Every rung, cheapest first: the order of every table.
    pub const LADDER: [Flavor; 4] = [
        Flavor::Bare,
        Flavor::Durable,
        Flavor::Partyserver,
        Flavor::Ours,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Flavor::Bare => "bare JS",
            Flavor::Durable => "durable JS",
            Flavor::Partyserver => "partyserver",
            Flavor::Ours => "roomcast",
        }
    }

    /// Its wrangler configuration, relative to the repository (roomcast's
    /// is the repository's own `wrangler.toml` unless told otherwise).
    pub fn config(self) -> &'static str {
        match self {
            Flavor::Bare => "bench/baseline/wrangler.toml",
            Flavor::Durable => "bench/durable/wrangler.toml",
            Flavor::Partyserver => "bench/partyserver/wrangler.toml",
            Flavor::Ours => "wrangler.toml",
        }
    }

    /// The rungs roomcast is compared with, in the order the ratios are
    /// read: the equivalent durable room first, the bare room last.
    pub const RUNGS: [Flavor; 3] = [Flavor::Durable, Flavor::Partyserver, Flavor::Bare];

    /// A name without spaces, for files and directories.
    pub fn slug(self) -> &'static str {
        match self {
            Flavor::Bare => "bare",
            Flavor::Durable => "durable",
            Flavor::Partyserver => "partyserver",
            Flavor::Ours => "roomcast",
        }
    }
}

/// roomcast's entry of a list with one entry per server.
pub fn ours<T>(servers: &[(Flavor, T)]) -> Option<&T> {
    servers
        .iter()
        .find(|(f, _)| *f == Flavor::Ours)
        .map(|(_, t)| t)
}

/// The entries of the rungs roomcast is compared with, in [`Flavor::RUNGS`]
/// order.
pub fn rungs<T>(servers: &[(Flavor, T)]) -> Vec<(Flavor, &T)> {
    Flavor::RUNGS
        .into_iter()
        .filter_map(|rung| {
            let (_, t) = servers.iter().find(|(f, _)| *f == rung)?;
            Some((rung, t))
        })
        .collect()
}

/// A running `wrangler dev`; dropping it kills its process group and
/// removes its state and log.
pub struct Server {
    pub flavor: Flavor,
    worker: Worker,
    /// Where clients connect: wrangler's proxy, unless bypassed.
    entry: SocketAddr,
    state: PathBuf,
    token: String,
}

impl Server {
    /// Starts `flavor` from the wrangler configuration `config`, with its
    /// Durable Object state under `state_root`.
    pub async fn start(flavor: Flavor, config: &Path, state_root: &Path) -> Result<Server> {
        Server::start_with(flavor, config, WorkerSpec::default(), state_root, &[]).await
    }

    /// Starts `flavor` as `spec` says, with `vars` besides what every
    /// benchmark server gets (plain HTTP, warnings only, [`STARTUP`],
    /// [`OURS_VARS`] for roomcast).
    pub async fn start_with(
        flavor: Flavor,
        config: &Path,
        spec: WorkerSpec,
        state_root: &Path,
        vars: &[(&str, &str)],
    ) -> Result<Server> {
        // Numbered: a part may run two servers of one flavor at once.
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let state = state_root.join(format!(
            "roomcast-bench-{}-{}-{}",
            std::process::id(),
            flavor.slug(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let ours = if flavor == Flavor::Ours {
            OURS_VARS
        } else {
            &[]
        };
        let vars: Vec<(&str, &str)> = ours.iter().chain(vars).copied().collect();
        let worker = spec
            .config(config)
            .plain_http()
            .log_level("warn")
            .startup(STARTUP)
            .start_in(state.clone(), &vars)
            .await;
        Ok(Server {
            flavor,
            entry: worker.addr(),
            worker,
            state,
            token: roomcast_tests::token("bench", &["*"], &["*"], 4 * 3600),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.entry
    }

    /// Sends clients to the runtime directly from now on, past wrangler's
    /// proxy ([`direct`]).
    pub async fn bypass_proxy(&mut self) -> Result<()> {
        let (pgid, proxy) = (self.worker.service.pid(), self.worker.addr().port());
        self.entry = direct::runtime_addr(pgid, proxy).await?;
        Ok(())
    }

    /// The harness's handle, for the bridge and the profiler.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// The WebSocket path of `room`, token included (the bare room ignores it).
    pub fn ws_path(&self, room: &str) -> String {
        format!("/v1/rooms/{room}/ws?token={}", self.token)
    }

    pub fn messages_path(&self, room: &str) -> String {
        format!("/v1/rooms/{room}/messages")
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// CPU seconds so far of the server's processes and of this benchmark.
    pub fn cpu(&self) -> Result<CpuTimes> {
        cpu::sample(self.worker.service.pid(), self.worker.addr().port())
    }

    /// Resident memory of the runtime workerd, KiB.
    pub fn runtime_resident_kib(&self) -> Result<u64> {
        let (pgid, proxy) = (self.worker.service.pid(), self.worker.addr().port());
        memory::resident_kib(cpu::runtime_pid(pgid, proxy)?)
    }

    /// A room name no earlier scenario used.
    pub fn fresh_room(&self, label: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!("bench.{label}.{}", COUNTER.fetch_add(1, Ordering::SeqCst))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.worker.stop();
        let _ = std::fs::remove_file(self.worker.service.log_path());
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Where servers keep their state unless told otherwise: memory when the
/// machine has a tmpfs, because otherwise every room's SQLite commit waits
/// for this machine's disk (and for whatever else is writing to it), and
/// the figures measure the disk rather than the worker.
pub fn default_state_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}
