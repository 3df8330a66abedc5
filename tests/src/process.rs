//! Child processes of the harness (wrangler dev, the broker and its TLS
//! terminator, the bridge), each in its own process group with its output
//! in a log file.
//!
//! A group, because wrangler starts workerd children that outlive a killed
//! parent: killing the group on drop means a panicking test or an aborted
//! benchmark leaves nothing running, and the group is also what the
//! benchmarks read CPU time from.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};

use crate::tls;

/// A child process in its own process group, with its output in a log file;
/// dropping it kills the whole group.
pub struct Service {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Service {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: PathBuf) -> Service {
        let out = File::create(&log).expect("create a service log");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        Service { child, log, name }
    }

    /// The leader's pid, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (as `kill -s` names it) to the whole group, if it is
    /// still there.
    pub fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-s", signal, "--", &group])
            .stderr(Stdio::null())
            .status();
    }

    /// The process's status code if it has exited (-1 for a signal).
    pub fn exited(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// Waits up to `wait` for the process to exit; its status code.
    pub async fn exited_within(&mut self, wait: Duration) -> Option<i32> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Where the process writes its output.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process has printed `needle`, within `within`
    /// (failing with the log's tail). A log line is the only word some
    /// processes give of a state, so this polls the file.
    pub async fn wait_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} within {within:?}\n{}",
                self.name,
                self.log_tail()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the process printed, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        format!(
            "--- {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Kills the process group.
    pub fn stop(&mut self) {
        self.signal("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a broker (tansu, socat, RabbitMQ, epmd) may take to accept
/// connections once it runs.
const LISTEN: Duration = Duration::from_secs(30);

/// Waits until `address` accepts TCP connections, or panics with `service`'s log.
pub async fn wait_listening(address: &str, service: &Service) {
    let deadline = Instant::now() + LISTEN;
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "{address} did not listen within {LISTEN:?}\n{}",
            service.log_tail()
        );
        sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `url` (HTTP, or HTTPS with the test CA) until it answers 200, or
/// panics with `service`'s log, at once if `service` exits (a refused flag
/// fails the test in milliseconds, not after `within`).
pub async fn wait_http_ok(url: &str, service: &mut Service, within: Duration) {
    let deadline = Instant::now() + within;
    // Plain HTTP needs no test CA, so a benchmark never generates one.
    let builder = if url.starts_with("https:") {
        tls::http_client()
    } else {
        reqwest::Client::builder()
    };
    let client = builder.build().expect("an HTTP client");
    while Instant::now() < deadline {
        if let Some(code) = service.exited() {
            panic!(
                "{} exited with {code} before {url} answered 200\n{}",
                service.name,
                service.log_tail()
            );
        }
        if let Ok(Ok(r)) = timeout(Duration::from_secs(2), client.get(url).send()).await {
            if r.status() == 200 {
                return;
            }
        }
        sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{url} did not answer 200 within {within:?}\n{}",
        service.log_tail()
    );
}
