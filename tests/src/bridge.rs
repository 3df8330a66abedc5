//! The bridge as the suites and the benchmarks run it: the real
//! `roomcast-bridge` binary against a [`Worker`] and a broker (a Kafka
//! [`Broker`] or a [`crate::RabbitMq`], each saying its own flags through
//! [`BridgeBroker`]), with its `/metrics` and `/healthz` on a loopback
//! port of its own.
//!
//! The tests run the debug build with debug logs ([`BridgeProcess::start`]);
//! the benchmarks run the release build with warnings only, which is all a
//! [`BridgeCommand`] changes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::{wait_http_ok, Service};
use crate::{ca_file, free_port, fresh_dir, repo_root, Broker, Worker, SECRET, STEP};

/// How long the bridge may take to answer `/healthz`.
const STARTUP: Duration = Duration::from_secs(60);

/// Whether [`BridgeProcess::spawn`] tells the bridge to trust the test CA.
pub enum CaFile {
    /// `--ca-file` with [`ca_file`]: the bridge can reach the TLS worker.
    TestCa,
    /// No `--ca-file`, for tests of what the bridge does without one.
    Omitted,
}

/// A broker the bridge can run against: the flags that point it there.
pub trait BridgeBroker {
    /// The broker's flags, leaving out those `extra` names itself.
    fn bridge_args(&self, extra: &[&str]) -> Vec<String>;
}

impl BridgeBroker for Broker {
    /// `--brokers`, and the broker's client properties as `--kafka-config`
    /// unless `extra` gives a `--kafka-config-file`.
    fn bridge_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = vec!["--brokers".to_owned(), self.address.clone()];
        if !extra.contains(&"--kafka-config-file") {
            for (name, value) in self.kafka_config() {
                args.push("--kafka-config".into());
                args.push(format!("{name}={value}"));
            }
        }
        args
    }
}

/// A running `roomcast-bridge`.
pub struct BridgeProcess {
    pub service: Service,
    pub metrics: String,
}

impl BridgeProcess {
    /// Starts the bridge against `worker` and `broker`, trusting the test CA,
    /// with `extra` flags, and waits until its `/healthz` answers 200.
    pub async fn start(
        worker: &Worker,
        broker: &dyn BridgeBroker,
        instance: &str,
        extra: &[&str],
    ) -> BridgeProcess {
        BridgeCommand::default()
            .start(worker, broker, instance, extra)
            .await
    }

    /// Starts the bridge binary (built by `make test`; `ROOMCAST_BRIDGE_BIN`
    /// overrides) with `--worker-url worker_url` and what `broker` needs
    /// ([`BridgeBroker::bridge_args`]), and returns at once, so a test can also
    /// watch it fail ([`Service::exited_within`],
    /// [`Service::log_tail`]). Credentials default to `--jwt-secret` and
    /// broker settings to the broker's; `extra` replaces either by naming
    /// its own (`--jwt-key-file`, `--token-file`, ...; `--kafka-config-file`,
    /// `--amqp-url`).
    pub fn spawn(
        worker_url: &str,
        broker: &dyn BridgeBroker,
        instance: &str,
        ca: CaFile,
        extra: &[&str],
    ) -> BridgeProcess {
        BridgeCommand::default().spawn(worker_url, broker, instance, ca, extra)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// What `/metrics` says now; panics with the bridge's log when the
    /// answer has not arrived within [`STEP`], so a hung bridge fails its
    /// test instead of hanging the suite.
    pub async fn metrics_text(&self) -> String {
        let client = reqwest::Client::builder()
            .timeout(STEP)
            .build()
            .expect("an HTTP client");
        let read = async { client.get(self.url("/metrics")).send().await?.text().await };
        read.await.unwrap_or_else(|e| {
            let why = if e.is_timeout() {
                format!("no answer within {STEP:?}")
            } else {
                format!("{e:?}")
            };
            panic!("GET /metrics: {why}\n{}", self.service.log_tail())
        })
    }
}

/// Which bridge binary runs, and how much it logs.
pub struct BridgeCommand {
    pub binary: PathBuf,
    /// `RUST_LOG`.
    pub log_filter: &'static str,
}

impl Default for BridgeCommand {
    /// The tests' bridge: [`bridge_binary`], with the bridge's debug lines
    /// in the log a failing test prints.
    fn default() -> Self {
        BridgeCommand {
            binary: bridge_binary(),
            log_filter: "info,roomcast_bridge=debug",
        }
    }
}

impl BridgeCommand {
    /// Like [`BridgeProcess::start`]: trusts the test CA when `worker`
    /// serves TLS, and waits until `/healthz` answers 200.
    pub async fn start(
        &self,
        worker: &Worker,
        broker: &dyn BridgeBroker,
        instance: &str,
        extra: &[&str],
    ) -> BridgeProcess {
        let ca = if worker.is_tls() {
            CaFile::TestCa
        } else {
            CaFile::Omitted
        };
        let mut bridge = self.spawn(&worker.url(""), broker, instance, ca, extra);
        let health = bridge.url("/healthz");
        wait_http_ok(&health, &mut bridge.service, STARTUP).await;
        bridge
    }

    /// Like [`BridgeProcess::spawn`].
    pub fn spawn(
        &self,
        worker_url: &str,
        broker: &dyn BridgeBroker,
        instance: &str,
        ca: CaFile,
        extra: &[&str],
    ) -> BridgeProcess {
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--worker-url", worker_url])
            .args(broker.bridge_args(extra))
            .args(["--metrics-addr", &metrics])
            .args(["--instance-id", instance]);
        let names = |flags: &[&str]| extra.iter().any(|arg| flags.contains(arg));
        if !names(&["--jwt-secret", "--jwt-key-file", "--token-file", "--token"]) {
            cmd.args(["--jwt-secret", SECRET]);
        }
        if let CaFile::TestCa = ca {
            cmd.arg("--ca-file").arg(ca_file());
        }
        cmd.args(extra).env("RUST_LOG", self.log_filter);
        let log = fresh_dir("bridge").join(format!("{instance}.log"));
        BridgeProcess {
            service: Service::spawn("roomcast-bridge", cmd, log),
            metrics,
        }
    }
}

/// The bridge binary the suites run (built by `make test`;
/// `ROOMCAST_BRIDGE_BIN` overrides).
pub fn bridge_binary() -> PathBuf {
    std::env::var("ROOMCAST_BRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/debug/roomcast-bridge"))
}
