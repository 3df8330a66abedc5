//! CPU time spent by the dev server and by the benchmark itself, from
//! `/proc/<pid>/stat` (utime + stime), read before and after a measurement.
//!
//! `wrangler dev` runs, in its process group, two `workerd` processes: the
//! proxy in front (wrangler's ProxyWorker, which owns the port clients use)
//! and the runtime that runs the worker and its Durable Objects; plus node
//! (wrangler itself) and esbuild. They are reported apart because only the
//! runtime's share would exist in production; the proxy is a dev-server
//! cost. The benchmark shares the machine, so its own CPU is read too.

use std::fs;
use std::ops::Sub;

use anyhow::{Context, Result};

#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    /// The workerd that runs the worker (seconds).
    pub runtime: f64,
    /// The workerd that proxies the dev port (seconds).
    pub proxy: f64,
    /// Everything else in the group: node (wrangler), esbuild (seconds).
    pub tooling: f64,
    /// This benchmark process (seconds).
    pub bench: f64,
}

impl CpuTimes {
    /// Both workerd processes: the tables' "workerd CPU".
    pub fn workerd(&self) -> f64 {
        self.runtime + self.proxy
    }

    pub fn scaled(&self, factor: f64) -> CpuTimes {
        CpuTimes {
            runtime: self.runtime * factor,
            proxy: self.proxy * factor,
            tooling: self.tooling * factor,
            bench: self.bench * factor,
        }
    }
}

impl Sub for CpuTimes {
    type Output = CpuTimes;

    fn sub(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            runtime: self.runtime - earlier.runtime,
            proxy: self.proxy - earlier.proxy,
            tooling: self.tooling - earlier.tooling,
            bench: self.bench - earlier.bench,
        }
    }
}

/// What a process of the dev server's group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The workerd that runs the worker.
    Runtime,
    /// The workerd in front, listening on the port clients use.
    Proxy,
    /// node (wrangler), esbuild.
    Tooling,
}

/// The CPU times now of process group `pgid`, whose proxy is the workerd
/// listening on `port`.
pub fn sample(pgid: u32, port: u16) -> Result<CpuTimes> {
    let mut times = CpuTimes {
        bench: process_seconds("self")?.1,
        ..CpuTimes::default()
    };
    for (_, role, seconds) in group(pgid, port)? {
        match role {
            Role::Runtime => times.runtime += seconds,
            Role::Proxy => times.proxy += seconds,
            Role::Tooling => times.tooling += seconds,
        }
    }
    Ok(times)
}

/// The processes of group `pgid` (whose proxy listens on `port`): pid,
/// role and CPU seconds so far.
pub fn group(pgid: u32, port: u16) -> Result<Vec<(u32, Role, f64)>> {
    let proxy_flag = format!("--socket-addr=entry=127.0.0.1:{port}");
    let mut processes = Vec::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let name = entry?.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok((group, seconds)) = process_seconds(&pid.to_string()) else {
            continue;
        };
        if group != pgid {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let role = if !cmdline.contains("workerd") {
            Role::Tooling
        } else if cmdline.split('\0').any(|arg| arg == proxy_flag) {
            Role::Proxy
        } else {
            Role::Runtime
        };
        processes.push((pid, role, seconds));
    }
    Ok(processes)
}

/// The pid of the runtime workerd of group `pgid` (whose proxy listens on
/// `port`).
pub fn runtime_pid(pgid: u32, port: u16) -> Result<u32> {
    group(pgid, port)?
        .into_iter()
        .find(|(_, role, _)| *role == Role::Runtime)
        .map(|(pid, _, _)| pid)
        .context("no runtime workerd in the dev server's process group")
}

/// The process group and utime + stime (seconds) of `/proc/<pid>`.
fn process_seconds(pid: &str) -> Result<(u32, f64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {i} of /proc/{pid}/stat"))
    };
    // After the name: state, ppid, pgrp (2), ..., utime (11), stime (12).
    let group = field(2)? as u32;
    let ticks = field(11)? + field(12)?;
    Ok((group, ticks as f64 / ticks_per_second()))
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant and has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
