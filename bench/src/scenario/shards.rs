//! Part 6, sharded rooms: one room × N subscribers (up to 5000), unsharded
//! and sharded, on roomcast alone (the JavaScript rungs have no shards).
//!
//! Two roomcast servers run side by side from the build that keeps
//! function names (`make profile`'s, `build/profile/` beside the wrangler
//! configuration; the same optimisations as the deploy bundle): one whose
//! rooms never shard (`ROOM_SHARD_SIZE` far above N) and one with
//! `ROOM_SHARD_SIZE` = [`Plan::shard_size`], where the room's own object,
//! the sequencer, holds that many clients and shards of the same class hold
//! the rest. Clients connect to the runtime directly, past wrangler's proxy
//! ([`crate::server::direct`]: the proxy cannot hold 5000 WebSockets here), and the
//! runtime's `Network` inspector domain is turned off
//! ([`Inspector::disable_network`]: every request between the room's
//! objects would cost wrangler a request of its own). Each server gets a
//! fleet (part 2's: a publisher, connected first so that it is the
//! sequencer's client in both layouts, and N subscribers), grown from the
//! smallest N to the largest rather than reconnected; at each N the runs
//! alternate between the servers, as in the other parts:
//!
//! - closed loop, as part 2: the highest deliveries/s;
//! - open loop at one rate for every N and layout: latency, deliveries and
//!   the runtime's CPU per publish;
//! - the same open loop with the isolate's CPU profiler on: the sequencer's
//!   and the shards' CPU per publish ([`crate::profiler::attribution`]), which
//!   process CPU cannot separate, every object running in one isolate.
//!
//! That one isolate is also why sharding cannot raise deliveries/s under
//! `wrangler dev`: the shards share the sequencer's thread. What the part
//! shows is the sequencer's cost per publish, which is what bounds a room
//! in production, where shards run elsewhere.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use roomcast_tests::{repo_root, WorkerSpec};
use serde::Deserialize;

use crate::client::fleet::{Fleet, Shape, Timing};
use crate::client::http::HttpConn;
use crate::client::load;
use crate::client::net::Traffic;
use crate::measure::stats::{Sample, Spread, Summary};
use crate::profiler::attribution::Split;
use crate::profiler::cpuprofile::Profile;
use crate::profiler::inspector::Inspector;
use crate::server::{Flavor, Server};
use crate::table::{cell, number, ratio, Table};

/// The build that keeps function names, relative to a wrangler
/// configuration's directory (`make build/profile/worker/shim.mjs`).
const PROFILE_SCRIPT: &str = "build/profile/worker/shim.mjs";
/// `ROOM_SHARD_SIZE` of the unsharded layout: more clients than any run holds.
const UNSHARDED: u64 = 1_000_000;
/// Log lines quoted per server in the report.
const QUOTED: usize = 3;

pub struct Plan {
    /// Subscriber counts, smallest first.
    pub subscribers: Vec<usize>,
    /// `ROOM_SHARD_SIZE` of the sharded layout.
    pub shard_size: u64,
    /// Messages/s of the open-loop runs, the same for every N and layout.
    pub rate: f64,
    /// How long each profiled run publishes.
    pub profiled: Duration,
    /// V8's sampling interval, µs.
    pub interval_us: u32,
    pub timing: Timing,
    pub state_root: PathBuf,
    /// roomcast's wrangler configuration.
    pub config: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Unsharded,
    Sharded,
}

impl Layout {
    const BOTH: [Layout; 2] = [Layout::Unsharded, Layout::Sharded];

    pub fn label(self) -> &'static str {
        match self {
            Layout::Unsharded => "unsharded",
            Layout::Sharded => "sharded",
        }
    }

    fn shard_size(self, plan: &Plan) -> u64 {
        match self {
            Layout::Unsharded => UNSHARDED,
            Layout::Sharded => plan.shard_size,
        }
    }
}

/// One layout at one N.
pub struct Point {
    pub subscribers: usize,
    /// From the room's `/stats`: shards holding connections, and the
    /// connections of all its objects (the publisher's included).
    pub shards: u64,
    pub connections: u64,
    /// Closed loop.
    pub max: Summary,
    /// Open loop at the plan's rate.
    pub paced: Summary,
    /// CPU per publish, ms, by side, from the profiled runs.
    pub sequencer_ms: Spread,
    pub shards_ms: Spread,
    pub other_ms: Spread,
}

pub struct ShardResults {
    pub shard_size: u64,
    pub rate: f64,
    pub interval_us: u32,
    pub layouts: Vec<(Layout, Vec<Point>)>,
    /// What each server logged about the benchmark's rooms: the count, and
    /// the first lines.
    pub logged: Vec<(Layout, usize, Vec<String>)>,
}

/// The entry `config`'s part runs: the build that keeps function names,
/// beside it (this checkout's unless `--roomcast-config` names another).
pub fn script(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or(Path::new(""))
        .join(PROFILE_SCRIPT)
}

pub async fn run(plan: &Plan) -> Result<ShardResults> {
    let mut trials = Vec::new();
    for layout in Layout::BOTH {
        trials.push(Trial::start(layout, plan).await?);
    }
    for &subscribers in &plan.subscribers {
        for trial in &mut trials {
            trial.fleet.grow(&trial.server, subscribers).await?;
        }
        for kind in [Kind::Max, Kind::Paced, Kind::Profiled] {
            for run in 1..=plan.timing.runs {
                for trial in &mut trials {
                    let what = format!("1 room × {subscribers} {} run {run}", kind.label());
                    trial
                        .run(kind, plan, &what)
                        .await
                        .with_context(|| format!("{}: {what}", trial.layout.label()))?;
                }
            }
        }
        for trial in &mut trials {
            trial.finish(subscribers).await?;
        }
    }
    let mut results = ShardResults {
        shard_size: plan.shard_size,
        rate: plan.rate,
        interval_us: plan.interval_us,
        layouts: Vec::new(),
        logged: Vec::new(),
    };
    for trial in trials {
        let (count, first) = trial.logged();
        results.logged.push((trial.layout, count, first));
        results.layouts.push((trial.layout, trial.points));
        trial.fleet.close().await?;
    }
    Ok(results)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Max,
    Paced,
    Profiled,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Max => "max",
            Kind::Paced => "paced",
            Kind::Profiled => "profiled",
        }
    }
}

/// One layout's server and fleet, and its runs at the current N.
struct Trial {
    layout: Layout,
    server: Server,
    fleet: Fleet,
    max: Vec<Sample>,
    paced: Vec<Sample>,
    splits: Vec<Split>,
    points: Vec<Point>,
}

/// What the part reads from `GET /v1/rooms/{room}/stats`.
#[derive(Deserialize)]
struct Objects {
    shards: u64,
    connections: u64,
}

impl Trial {
    async fn start(layout: Layout, plan: &Plan) -> Result<Trial> {
        let size = layout.shard_size(plan).to_string();
        let spec = WorkerSpec::default().script(script(&plan.config));
        let vars = [("ROOM_SHARD_SIZE", size.as_str())];
        let mut server =
            Server::start_with(Flavor::Ours, &plan.config, spec, &plan.state_root, &vars)
                .await
                .with_context(|| format!("starting roomcast, {}", layout.label()))?;
        server.bypass_proxy().await?;
        eprintln!(
            "[roomcast, {}] wrangler dev up, clients to its runtime on {}, ROOM_SHARD_SIZE {size}",
            layout.label(),
            server.addr()
        );
        Inspector::connect(server.worker().inspector_port())
            .await
            .context("the inspector port")?
            .disable_network()
            .await?;
        let shape = Shape {
            rooms: 1,
            subscribers: plan.subscribers.first().copied().unwrap_or(1),
        };
        let fleet = Fleet::connect(&server, shape).await?;
        Ok(Trial {
            layout,
            server,
            fleet,
            max: Vec::new(),
            paced: Vec::new(),
            splits: Vec::new(),
            points: Vec::new(),
        })
    }

    async fn run(&mut self, kind: Kind, plan: &Plan, what: &str) -> Result<()> {
        let what = format!("{}, {what}", self.layout.label());
        match kind {
            Kind::Max => {
                let sample = self.fleet.saturate(&self.server, &plan.timing).await?;
                crate::scenario::progress(&self.server, &what, &sample);
                self.max.push(sample);
            }
            Kind::Paced => {
                let duration = plan.timing.duration;
                let sample = self.fleet.paced(&self.server, plan.rate, duration).await?;
                crate::scenario::progress(&self.server, &what, &sample);
                self.paced.push(sample);
            }
            Kind::Profiled => {
                let (split, sample) = self.profiled(plan).await?;
                let runtime = sample.cpu_per_1k.runtime * self.fleet.subscribers() as f64;
                eprintln!(
                    "[roomcast] {what}: CPU ms / publish: sequencer {}, shards {}, other {}; \
                     runtime (process) {}",
                    number(split.sequencer),
                    number(split.shards),
                    number(split.other),
                    number(runtime),
                );
                self.splits.push(split);
            }
        }
        Ok(())
    }

    /// One open-loop run at the plan's rate with the isolate's profiler on;
    /// its CPU per publish by side, and the run's figures. The raw profile is kept for DevTools
    /// (`target/shards-<layout>-<N>.cpuprofile`, the last run's), to check
    /// the attribution by eye. The inspector is attached only for the run.
    async fn profiled(&mut self, plan: &Plan) -> Result<(Split, Sample)> {
        let mut inspector = Inspector::connect(self.server.worker().inspector_port())
            .await
            .context("the inspector port")?;
        inspector.start_profiler(plan.interval_us).await?;
        let sample = self
            .fleet
            .paced(&self.server, plan.rate, plan.profiled)
            .await;
        let raw = inspector.stop_profiler().await?;
        let sample = sample?;
        let out = repo_root().join(format!(
            "target/shards-{}-{}.cpuprofile",
            self.layout.label(),
            self.fleet.subscribers()
        ));
        std::fs::write(&out, raw.to_string())
            .with_context(|| format!("writing {}", out.display()))?;
        let publishes = load::messages(plan.rate, plan.profiled) as f64;
        Ok((Split::of(&Profile::parse(raw)?) / publishes, sample))
    }

    /// Ends the runs at `subscribers` with what the room says of itself.
    async fn finish(&mut self, subscribers: usize) -> Result<()> {
        let objects = self.objects().await?;
        let splits = std::mem::take(&mut self.splits);
        let spread = |f: fn(&Split) -> f64| Spread::of(splits.iter().map(f));
        self.points.push(Point {
            subscribers,
            shards: objects.shards,
            connections: objects.connections,
            max: Summary::of(&std::mem::take(&mut self.max)),
            paced: Summary::of(&std::mem::take(&mut self.paced)),
            sequencer_ms: spread(|s| s.sequencer),
            shards_ms: spread(|s| s.shards),
            other_ms: spread(|s| s.other),
        });
        Ok(())
    }

    async fn objects(&self) -> Result<Objects> {
        let room = &self.fleet.rooms()[0];
        let path = format!("/v1/rooms/{room}/stats");
        let mut http = HttpConn::connect(self.server.addr(), Traffic::new()).await?;
        let (status, body) = http.get(&path, Some(self.server.token())).await?;
        ensure!(
            status.is_success(),
            "GET {path}: {status}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not a room's stats"))
    }

    /// The lines the server logged about the benchmark's rooms (the
    /// worker's warnings and errors name their room; the part's are
    /// `bench.…`): how many, and the first few.
    fn logged(&self) -> (usize, Vec<String>) {
        let log = self.server.worker().service.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("bench.")).collect();
        let first = lines.iter().take(QUOTED).map(|l| l.to_string()).collect();
        (lines.len(), first)
    }
}

/// The part's tables: each layout's figures, then sharded over unsharded.
pub fn render(out: &mut String, results: &ShardResults) {
    let rate = number(results.rate);
    let _ = writeln!(
        out,
        "Sharded: `ROOM_SHARD_SIZE` {}; unsharded: {UNSHARDED}; the publisher is the \
         sequencer's client in both. Latency and CPU at {rate} msg/s for every N. *runtime*: \
         the workerd process that runs every object (/proc, profiler off). *sequencer*, \
         *shards*, *other*: the isolate's time by the stack of each CPU profile sample \
         (sampling asked every {} µs, profiler on; each sample counts as the profile's median \
         gap between samples): the room's own object, its shard objects, neither. Native work \
         outside the isolate (socket writes, requests between objects) is in runtime only.\n",
        results.shard_size, results.interval_us
    );
    let mut table = Table::new(&[
        "layout",
        "subscribers",
        "connections",
        "shards",
        "max deliveries/s",
        &format!("p50 ms at {rate}/s"),
        &format!("p99 ms at {rate}/s"),
        &format!("delivered/s at {rate}/s"),
        "runtime CPU ms / publish",
        "sequencer ms / publish",
        "shards ms / publish",
        "other ms / publish",
    ]);
    for (layout, points) in &results.layouts {
        for p in points {
            table.row(vec![
                layout.label().into(),
                p.subscribers.to_string(),
                p.connections.to_string(),
                p.shards.to_string(),
                cell(&p.max.delivered_per_sec),
                cell(&p.paced.p50_ms),
                cell(&p.paced.p99_ms),
                cell(&p.paced.delivered_per_sec),
                cell(&per_publish(&p.paced.cpu_runtime, p.subscribers)),
                cell(&p.sequencer_ms),
                cell(&p.shards_ms),
                cell(&p.other_ms),
            ]);
        }
    }
    table.render_into(out);
    ratios(out, results);
    for (layout, count, first) in &results.logged {
        if *count > 0 {
            let _ = writeln!(
                out,
                "The {} server logged {count} lines about the room, first: {}\n",
                layout.label(),
                first
                    .iter()
                    .map(|l| format!("`{}`", l.trim()))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }
    for (layout, points) in &results.layouts {
        for p in points {
            let rejected = p.max.rejected + p.paced.rejected;
            if rejected > 0 {
                let _ = writeln!(
                    out,
                    "{}, 1 × {}: {rejected} publishes rejected.\n",
                    layout.label(),
                    p.subscribers
                );
            }
        }
    }
}

/// Sharded over unsharded at each N, and each layout's sequencer CPU per
/// publish over its own at the smallest N (flat is 1×).
fn ratios(out: &mut String, results: &ShardResults) {
    let find = |layout| {
        results
            .layouts
            .iter()
            .find(|(l, _)| *l == layout)
            .map(|(_, points)| points.as_slice())
            .unwrap_or_default()
    };
    let (unsharded, sharded) = (find(Layout::Unsharded), find(Layout::Sharded));
    let _ = writeln!(out, "**sharded / unsharded (ratio of medians)**\n");
    let mut table = Table::new(&[
        "subscribers",
        "max deliveries/s",
        "p50",
        "p99",
        "runtime CPU / publish",
        "sequencer / publish",
        "unsharded: sequencer / publish over smallest N's",
        "sharded: sequencer / publish over smallest N's",
    ]);
    let growth = |points: &[Point], p: &Point| {
        points.first().map_or("–".into(), |first| {
            ratio(&p.sequencer_ms, &first.sequencer_ms)
        })
    };
    for (u, s) in unsharded.iter().zip(sharded) {
        table.row(vec![
            s.subscribers.to_string(),
            ratio(&s.max.delivered_per_sec, &u.max.delivered_per_sec),
            ratio(&s.paced.p50_ms, &u.paced.p50_ms),
            ratio(&s.paced.p99_ms, &u.paced.p99_ms),
            ratio(&s.paced.cpu_runtime, &u.paced.cpu_runtime),
            ratio(&s.sequencer_ms, &u.sequencer_ms),
            growth(unsharded, u),
            growth(sharded, s),
        ]);
    }
    table.render_into(out);
}

/// CPU s per 1000 deliveries as ms per publish to `subscribers`.
fn per_publish(per_1k: &Spread, subscribers: usize) -> Spread {
    let n = subscribers as f64;
    Spread {
        median: per_1k.median * n,
        min: per_1k.min * n,
        max: per_1k.max * n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_named_build_sits_beside_its_configuration() {
        assert_eq!(
            script(Path::new("wrangler.toml")),
            Path::new("build/profile/worker/shim.mjs")
        );
        assert_eq!(
            script(Path::new("/tmp/before/wrangler.toml")),
            Path::new("/tmp/before/build/profile/worker/shim.mjs")
        );
    }
}
