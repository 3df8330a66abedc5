//! The worker under test: `wrangler dev` (workerd, real Durable Objects,
//! SQLite and hibernatable WebSockets) in its own process group, port and
//! `--persist-to` directory.
//!
//! The tests run the repository's worker over HTTPS with the test CA's
//! certificate, the way production reaches it ([`Worker::start`]). The
//! benchmarks run the same way with what they change spelled out in a
//! [`WorkerSpec`]: another wrangler configuration (the JavaScript rooms they
//! compare against), another entry (the profiling build), plain HTTP (so
//! that TLS is not what they measure), quieter logs and a longer start-up
//! (wrangler's build command may rebuild the bundle).
//!
//! The tests' configuration is `build/wrangler.toml`, the repository's
//! without its build step (the Makefile writes it; [`build_once`] runs that
//! rule): wrangler with a build command restarts workerd once after start,
//! and the restart can lose its ports to a worker starting beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use crate::process::{wait_http_ok, Service};
use crate::{free_port, fresh_dir, repo_root, tls, SECRET};

/// How long `wrangler dev` may take to answer `/healthz` unless told otherwise.
const STARTUP: Duration = Duration::from_secs(120);

/// A running `wrangler dev`.
pub struct Worker {
    pub service: Service,
    port: u16,
    inspector_port: u16,
    tls: bool,
    pub persist: PathBuf,
}

impl Worker {
    /// Starts the worker with `vars` (besides `JWT_SECRET`) on a fresh state directory.
    pub async fn start(vars: &[(&str, &str)]) -> Worker {
        Worker::start_in(fresh_dir("state"), vars).await
    }

    /// Starts the worker on an existing state directory (a restart).
    pub async fn start_in(persist: PathBuf, vars: &[(&str, &str)]) -> Worker {
        WorkerSpec::default().start_in(persist, vars).await
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}{path}", self.port)
    }

    /// The address clients connect to (wrangler's proxy).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The Chrome DevTools protocol port of the worker's isolate.
    pub fn inspector_port(&self) -> u16 {
        self.inspector_port
    }

    /// Whether clients must speak TLS (and trust the test CA).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Kills wrangler and its workerd children.
    pub fn stop(&mut self) {
        self.service.stop();
    }

    /// `GET /v1/rooms/{room}/stats`, which must answer 200.
    pub async fn stats(&self, room: &str) -> serde_json::Value {
        let (status, stats) = crate::Http::default()
            .get(
                &self.url(&format!("/v1/rooms/{room}/stats")),
                Some(&crate::full_token("reader")),
            )
            .await;
        assert_eq!(status, 200, "{stats}");
        stats
    }
}

/// The tests' wrangler configuration, relative to the repository.
const TEST_CONFIG: &str = "build/wrangler.toml";

/// Brings the worker bundle and [`TEST_CONFIG`] up to date, once per test
/// process (a no-op under `make test`, which has just built both), so that a
/// test run straight from cargo never runs a stale bundle.
fn build_once() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("make")
            .current_dir(repo_root())
            .args(["-s", "worker", TEST_CONFIG])
            .status()
            .expect("make runs");
        assert!(
            status.success(),
            "make worker {TEST_CONFIG} failed: {status}"
        );
    });
}

/// How to start a [`Worker`]; the default is the tests' worker.
pub struct WorkerSpec {
    /// `--config`, relative to the repository; [`TEST_CONFIG`] when `None`.
    config: Option<PathBuf>,
    /// The entry module instead of the configuration's `main`.
    script: Option<PathBuf>,
    tls: bool,
    /// `--log-level`; per-request log lines cost node CPU in a benchmark.
    log_level: Option<&'static str>,
    startup: Duration,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        WorkerSpec {
            config: None,
            script: None,
            tls: true,
            log_level: None,
            startup: STARTUP,
        }
    }
}

impl WorkerSpec {
    /// Another wrangler configuration (relative paths are from the repository).
    pub fn config(mut self, path: impl Into<PathBuf>) -> WorkerSpec {
        self.config = Some(path.into());
        self
    }

    /// Another entry module (relative paths are from the repository).
    pub fn script(mut self, path: impl Into<PathBuf>) -> WorkerSpec {
        self.script = Some(path.into());
        self
    }

    /// Plain HTTP instead of HTTPS.
    pub fn plain_http(mut self) -> WorkerSpec {
        self.tls = false;
        self
    }

    pub fn log_level(mut self, level: &'static str) -> WorkerSpec {
        self.log_level = Some(level);
        self
    }

    /// How long the worker may take to answer `/healthz`.
    pub fn startup(mut self, within: Duration) -> WorkerSpec {
        self.startup = within;
        self
    }

    /// Starts the worker on `persist` with `vars` (besides `JWT_SECRET`) and
    /// waits until it answers `/healthz`.
    pub async fn start_in(self, persist: PathBuf, vars: &[(&str, &str)]) -> Worker {
        let port = free_port();
        let inspector_port = free_port();
        let mut cmd = Command::new(repo_root().join("node_modules/.bin/wrangler"));
        cmd.current_dir(repo_root()).arg("dev");
        if let Some(script) = &self.script {
            cmd.arg(script);
        }
        match &self.config {
            Some(config) => cmd.arg("--config").arg(config),
            None => {
                build_once();
                cmd.args(["--config", TEST_CONFIG])
            }
        };
        cmd.args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &inspector_port.to_string()])
            .arg("--persist-to")
            .arg(&persist)
            .args(["--var", &format!("JWT_SECRET:{SECRET}")])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CI", "true");
        if self.tls {
            let cert = tls::server_cert();
            cmd.args(["--local-protocol", "https"])
                .arg("--https-key-path")
                .arg(&cert.key)
                .arg("--https-cert-path")
                .arg(&cert.cert);
        }
        if let Some(level) = self.log_level {
            cmd.args(["--log-level", level]);
        }
        for (name, value) in vars {
            cmd.args(["--var", &format!("{name}:{value}")]);
        }
        let log = persist.with_extension(format!("{port}.log"));
        let mut worker = Worker {
            service: Service::spawn("wrangler dev", cmd, log),
            port,
            inspector_port,
            tls: self.tls,
            persist,
        };
        let health = worker.url("/healthz");
        wait_http_ok(&health, &mut worker.service, self.startup).await;
        worker
    }
}
