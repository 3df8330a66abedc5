//! Child processes of the benchmark (wrangler dev, the Kafka broker, the
//! bridge), each in its own process group with its output in a log file.
//!
//! A group, because wrangler starts workerd children that outlive a killed
//! parent; killing the group on drop means an aborted benchmark leaves
//! nothing running.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::{sleep, Instant};

/// Where the child with `role` writes its output: one file per benchmark
/// process and role, so concurrent benchmarks do not mix logs.
pub fn log_path(role: &str) -> PathBuf {
    std::env::temp_dir().join(format!("roomcast-bench-{}-{role}.log", std::process::id()))
}

pub struct Group {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Once reaped, the id may be reused: never signal it again.
    killed: bool,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group, output to `log`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Group> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Group {
            name,
            child,
            log: log.to_owned(),
            killed: false,
        })
    }

    /// The process group id (the leader's pid).
    pub fn pgid(&self) -> u32 {
        self.child.id()
    }

    /// An error naming the exit status if the leader has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => {
                anyhow::bail!("{} exited with {status}\n{}", self.name, self.log_tail())
            }
            None => Ok(()),
        }
    }

    /// Polls `ready` every `every` until it is true. Fails at once if the
    /// leader exits, and with the log's tail if `within` passes first.
    pub async fn wait_ready<F>(
        &mut self,
        what: &str,
        within: Duration,
        every: Duration,
        mut ready: impl FnMut() -> F,
    ) -> Result<()>
    where
        F: Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            self.check_running()?;
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{what} within {within:?}\n{}", self.log_tail());
            }
            sleep(every).await;
        }
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- last lines of {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Kills the whole group and reaps the leader.
    pub fn kill(&mut self) {
        if std::mem::replace(&mut self.killed, true) {
            return;
        }
        // SAFETY: kill(2) on the negative pid of a group this process created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}
