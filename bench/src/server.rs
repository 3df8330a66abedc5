//! Starts and stops the servers under test: roomcast (the repository's
//! `wrangler.toml`, the real worker bundle) and the JavaScript baseline
//! (`bench/baseline/wrangler.toml`), both under the same `wrangler dev`.
//!
//! Started like the end-to-end harness starts the worker (own process
//! group, own port and state directory) so that the whole group, workerd
//! children included, is killed afterwards and its CPU can be read. Rate
//! limits are raised far above the offered load: the benchmarks measure
//! delivery, not the limiter.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use roomcast_protocol::clock::now_ms;
use roomcast_protocol::signing::{mint_hs256, TokenSpec};

use crate::cpu::{self, CpuTimes};
use crate::http;
use crate::process::{log_path, Group};

/// The HS256 secret roomcast is started with.
pub const SECRET: &str = "roomcast-bench-secret-not-for-production";

/// How long `wrangler dev` may take to answer `/healthz`; for roomcast this
/// includes its build command, a no-op when the bundle is up to date.
const STARTUP: Duration = Duration::from_secs(300);

/// Variables that take the rate limiters out of the measurement.
const OURS_VARS: &[(&str, &str)] = &[
    ("RATE_PER_SEC", "100000"),
    ("RATE_BURST", "100000"),
    ("ROOM_RATE_PER_SEC", "1000000"),
    ("MAX_MESSAGE_BYTES", "65536"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    #[value(name = "roomcast")]
    Ours,
    Baseline,
}

impl Flavor {
    pub fn label(self) -> &'static str {
        match self {
            Flavor::Ours => "roomcast",
            Flavor::Baseline => "baseline",
        }
    }
}

/// A running `wrangler dev`; dropping it kills its process group and
/// removes its state.
pub struct Server {
    pub flavor: Flavor,
    process: Group,
    port: u16,
    state: PathBuf,
    token: String,
}

impl Server {
    /// Starts `flavor` with its Durable Object state under `state_root`.
    pub async fn start(flavor: Flavor, state_root: &Path) -> Result<Server> {
        let port = free_port()?;
        let state = state_root.join(format!(
            "roomcast-bench-{}-{}",
            std::process::id(),
            flavor.label()
        ));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        let log = log_path(flavor.label());
        let process = Group::spawn("wrangler dev", wrangler_dev(flavor, port, &state)?, &log)?;
        let mut server = Server {
            flavor,
            process,
            port,
            state,
            token: token(),
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The base URL, for the bridge.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The WebSocket path of `room`, token included (the baseline ignores it).
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
        cpu::sample(self.process.pgid(), self.port)
    }

    /// A room name no earlier scenario used.
    pub fn fresh_room(&self, label: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!("bench.{label}.{}", COUNTER.fetch_add(1, Ordering::SeqCst))
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let addr = self.addr();
        let what = format!(
            "wrangler dev for {} did not answer /healthz",
            self.flavor.label()
        );
        self.process
            .wait_ready(&what, STARTUP, Duration::from_millis(250), || async {
                http::get_ok(addr, "/healthz", None).await.is_ok()
            })
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.process.kill();
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

/// The repository root (the benchmark runs from any directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ lives in the repository")
}

fn wrangler_dev(flavor: Flavor, port: u16, state: &Path) -> Result<Command> {
    let root = repo_root();
    let mut cmd = Command::new(root.join("node_modules/.bin/wrangler"));
    cmd.current_dir(root)
        .arg("dev")
        .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
        .args(["--inspector-port", &free_port()?.to_string()])
        .arg("--persist-to")
        .arg(state)
        // Per-request log lines would cost node CPU inside the measurement.
        .args(["--log-level", "warn"])
        .env("WRANGLER_SEND_METRICS", "false")
        .env("CI", "true");
    match flavor {
        Flavor::Ours => {
            cmd.args(["--var", &format!("JWT_SECRET:{SECRET}")]);
            for (name, value) in OURS_VARS {
                cmd.args(["--var", &format!("{name}:{value}")]);
            }
        }
        Flavor::Baseline => {
            cmd.args(["--config", "bench/baseline/wrangler.toml"]);
        }
    }
    Ok(cmd)
}

/// A loopback port free right now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A token that may subscribe and publish everywhere for longer than any run.
fn token() -> String {
    let spec = TokenSpec {
        sub: "bench".into(),
        rooms: vec!["*".into()],
        publish: vec!["*".into()],
        ttl_secs: 4 * 3600,
        ..TokenSpec::default()
    };
    mint_hs256(SECRET, &spec, now_ms())
}
