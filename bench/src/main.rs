//! roomcast-bench: drives the real worker under `wrangler dev` and a
//! minimal JavaScript Durable Object room (`bench/baseline/`) through the
//! same load, and the Kafka bridge against plain rdkafka, then prints the
//! markdown tables of `BENCHMARKS.md`.
//!
//! `roomcast-bench` runs the quick set (a few minutes); `--full` runs
//! every rate, interval and fan-out with longer runs, and the bridge. Both
//! servers are up at once (an idle one costs no CPU) and every scenario
//! alternates its runs between them, so background load on a shared
//! machine falls on both alike; the client shares the machine too, which
//! the CPU tables show.

mod bridge;
mod bridge_memory;
mod clock;
mod context;
mod cpu;
mod fanout;
mod footprint;
mod http;
mod load;
mod net;
mod plan;
mod probe;
mod process;
mod publisher;
mod push_poll;
mod receiver;
mod recorder;
mod report;
mod server;
mod stats;
mod ws;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::fanout::Shape;
use crate::plan::{Part, Plan};
use crate::report::{number, Measured, Results};
use crate::server::{Flavor, Server};
use crate::stats::Sample;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks roomcast under wrangler dev against a minimal JavaScript room")]
struct Cli {
    /// Every rate, poll interval and fan-out, longer runs, and the bridge.
    #[arg(long)]
    full: bool,
    /// Runs behind every figure (reported as median [min–max]).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..))]
    runs: u32,
    /// Only these parts (default: every part of the chosen set).
    #[arg(long, value_enum, value_delimiter = ',')]
    parts: Vec<Part>,
    /// Only these servers (default: both).
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<Flavor>,
    /// Where the servers keep their Durable Object state [default: /dev/shm
    /// when it exists, else the temp dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Also write the markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let state_root = cli
        .state_dir
        .clone()
        .unwrap_or_else(server::default_state_root);
    let plan = Plan::new(cli.full, cli.runs as usize, state_root).only(&cli.parts);
    let started = Instant::now();
    let load_before = context::load_average();
    let mut notes = Vec::new();

    let flavors: Vec<Flavor> = [Flavor::Baseline, Flavor::Ours]
        .into_iter()
        .filter(|f| cli.servers.is_empty() || cli.servers.contains(f))
        .collect();
    let mut measured = measure(&flavors, &plan).await?;
    let ours = take(&mut measured, Flavor::Ours);
    let baseline = take(&mut measured, Flavor::Baseline);
    let bridge = if !plan.has(Part::Bridge) {
        None
    } else if !bridge::tansu().exists() {
        notes.push(format!(
            "Bridge part skipped: {} is not installed (`make bootstrap`).",
            bridge::tansu().display()
        ));
        None
    } else {
        Some(
            bridge::run(&plan.bridge)
                .await
                .context("benchmarking the bridge")?,
        )
    };

    let mut context = context::machine();
    context.push(("set".into(), plan.describe()));
    context.push((
        "load average (1/5/15 min) before → after".into(),
        format!("{load_before} → {}", context::load_average()),
    ));
    context.push((
        "wall time".into(),
        format!("{:.0} s", started.elapsed().as_secs_f64()),
    ));
    let results = Results {
        context,
        ours,
        baseline,
        bridge,
        notes,
    };
    let markdown = report::render(&results);
    print!("{markdown}");
    if let Some(path) = cli.out {
        std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Every server part of `plan` against every server in `flavors`, all
/// servers up at once so that runs can alternate between them.
async fn measure(flavors: &[Flavor], plan: &Plan) -> Result<Vec<(Flavor, Measured)>> {
    let mut measured = Vec::new();
    for &flavor in flavors {
        let mut m = Measured::default();
        if plan.has(Part::Footprint) {
            m.bundle = footprint::bundle(flavor)?;
        }
        measured.push((flavor, m));
    }
    if !plan.parts.iter().any(|p| p.needs_servers()) {
        return Ok(measured);
    }
    let mut servers = Vec::new();
    for &flavor in flavors {
        let started = Instant::now();
        let server = Server::start(flavor, &plan.state_root)
            .await
            .with_context(|| format!("starting {}", flavor.label()))?;
        eprintln!(
            "[{}] wrangler dev up on {} in {:.1} s",
            flavor.label(),
            server.addr(),
            started.elapsed().as_secs_f64()
        );
        servers.push(server);
    }
    if plan.has(Part::Footprint) {
        let cold = footprint::cold_start(&servers, plan.cold_samples).await?;
        for ((_, m), cold) in measured.iter_mut().zip(cold) {
            m.cold = Some(cold);
        }
    }
    if plan.has(Part::PushPoll) {
        let cases = push_poll::run(&servers, &plan.push_poll).await?;
        for ((_, m), cases) in measured.iter_mut().zip(cases) {
            m.push_poll = cases;
        }
    }
    if plan.has(Part::Fanout) {
        for &subscribers in &plan.fanouts {
            let shape = Shape {
                rooms: 1,
                subscribers,
            };
            let capacities = fanout::measure(&servers, shape, &plan.timing).await?;
            for ((_, m), capacity) in measured.iter_mut().zip(capacities) {
                m.fanout.push(capacity);
            }
        }
    }
    if plan.has(Part::Rooms) {
        let capacities = fanout::measure(&servers, plan.rooms, &plan.timing).await?;
        for ((_, m), capacity) in measured.iter_mut().zip(capacities) {
            m.rooms = Some(capacity);
        }
    }
    Ok(measured)
}

/// The figures of `flavor`, or none if it was not run.
fn take(measured: &mut Vec<(Flavor, Measured)>, flavor: Flavor) -> Measured {
    match measured.iter().position(|(f, _)| *f == flavor) {
        Some(i) => measured.remove(i).1,
        None => Measured::default(),
    }
}

/// One line per run on stderr, so a long benchmark shows it is alive.
pub fn progress(server: &Server, what: &str, sample: &Sample) {
    let rejected = if sample.rejected > 0 {
        format!(", {} REJECTED", sample.rejected)
    } else {
        String::new()
    };
    eprintln!(
        "[{}] {what}: p50 {} ms, p99 {} ms, {} deliveries/s, CPU s/1k: workerd {}, bench {}{rejected}",
        server.flavor.label(),
        number(sample.p50_ms),
        number(sample.p99_ms),
        number(sample.delivered_per_sec),
        number(sample.cpu_per_1k.workerd()),
        number(sample.cpu_per_1k.bench),
    );
}
