//! roomcast-bench: drives the real worker under `wrangler dev` and a
//! ladder of JavaScript Durable Object rooms (bare, durable, partyserver)
//! through the same load, and the Kafka bridge against plain rdkafka, then
//! prints the markdown tables of `BENCHMARKS.md`; `roomcast-bench profile`
//! records a CPU profile of one roomcast room under load.
//!
//! `roomcast-bench` runs the quick set (several minutes); `--full` runs
//! every rate, interval and fan-out with longer runs, the bridge, the join
//! storm and the multiplexed client. All
//! servers are up at once (an idle one costs no CPU) and every scenario
//! alternates its runs between them, so background load on a shared
//! machine falls on all alike; the client shares the machine too, which
//! the CPU tables show.

mod client;
mod context;
mod measure;
mod plan;
mod profiler;
mod report;
mod scenario;
mod server;
mod table;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use roomcast_tests::broker::tansu_binary;
use roomcast_tests::rabbitmq::rabbitmq_binary;
use roomcast_tests::repo_root;

use crate::client::fleet::Shape;
use crate::plan::{Part, Plan};
use crate::report::{Measured, Results};
use crate::scenario::{
    bridge, bridge_amqp, fanout, footprint, multiplex, presence, profile, push_poll, shards,
};
use crate::server::{Flavor, Server};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks roomcast under wrangler dev against a ladder of JavaScript rooms")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Every rate, poll interval and fan-out, longer runs, the bridge, the
    /// join storm and the multiplexed client.
    #[arg(long)]
    full: bool,
    /// Runs behind every figure (reported as median [min–max]).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..))]
    runs: u32,
    /// Only these parts (default: every part of the chosen set).
    #[arg(long, value_enum, value_delimiter = ',')]
    parts: Vec<Part>,
    /// Only these servers (default: every rung).
    #[arg(long, value_enum, value_delimiter = ',')]
    servers: Vec<Flavor>,
    /// Where the servers keep their Durable Object state [default: /dev/shm
    /// when it exists, else the temp dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Also write the markdown to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// roomcast's wrangler configuration; another checkout's measures its
    /// worker against this one's JavaScript rooms (before and after).
    #[arg(long, default_value = Flavor::Ours.config())]
    roomcast_config: PathBuf,
    /// Subscriber counts of the sharded rooms part [default: 1000, 2500, 5000].
    #[arg(long, value_delimiter = ',')]
    shard_subscribers: Vec<usize>,
    /// `ROOM_SHARD_SIZE` of the sharded rooms part [default: 1000].
    #[arg(long)]
    shard_size: Option<u64>,
    /// Clients of the join storm [default: 5000].
    #[arg(long)]
    presence_clients: Option<usize>,
    /// `PRESENCE_MEMBERS_LIMIT` of the join storm's servers [default: 1000;
    /// with --full also 10000].
    #[arg(long, value_delimiter = ',')]
    presence_limits: Vec<u64>,
    /// Rooms of the multiplexed client [default: 100].
    #[arg(long)]
    multiplex_rooms: Option<usize>,
    /// Messages each room's publisher sends per run of the multiplexed
    /// client part [default: 20].
    #[arg(long)]
    multiplex_messages: Option<u64>,
    /// Messages/s of each room's publisher in the multiplexed client part
    /// [default: 2].
    #[arg(long)]
    multiplex_rate: Option<f64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A CPU profile of one roomcast room under publish load (`make profile`).
    Profile(profile::Args),
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Profile(args)) = &cli.command {
        return profile::run(args).await;
    }
    let state_root = cli
        .state_dir
        .clone()
        .unwrap_or_else(server::default_state_root);
    let mut plan = Plan::new(
        cli.full,
        cli.runs as usize,
        state_root,
        cli.roomcast_config.clone(),
    )
    .only(&cli.parts);
    if !cli.shard_subscribers.is_empty() {
        plan.shards.subscribers = cli.shard_subscribers.clone();
        plan.shards.subscribers.sort_unstable();
    }
    if let Some(size) = cli.shard_size {
        plan.shards.shard_size = size;
    }
    if let Some(clients) = cli.presence_clients {
        plan.presence.clients = clients;
    }
    if !cli.presence_limits.is_empty() {
        plan.presence.members_limits = cli.presence_limits.clone();
    }
    if let Some(rooms) = cli.multiplex_rooms {
        plan.multiplex.rooms = rooms;
    }
    if let Some(messages) = cli.multiplex_messages {
        plan.multiplex.messages = messages;
    }
    if let Some(rate) = cli.multiplex_rate {
        plan.multiplex.rate = rate;
    }
    let started = Instant::now();
    let load_before = context::load_average();
    let mut notes = Vec::new();

    let flavors: Vec<Flavor> = Flavor::LADDER
        .into_iter()
        .filter(|f| cli.servers.is_empty() || cli.servers.contains(f))
        .collect();
    let servers = measure(&flavors, &plan).await?;
    let script = shards::script(&plan.shards.config);
    let shards = if !plan.has(Part::Shards) || !flavors.contains(&Flavor::Ours) {
        None
    } else if !repo_root().join(&script).exists() {
        notes.push(format!(
            "Sharded rooms skipped: {} is missing (`make build/profile/worker/shim.mjs`).",
            script.display()
        ));
        None
    } else {
        Some(
            shards::run(&plan.shards)
                .await
                .context("benchmarking sharded rooms")?,
        )
    };
    let presence = if plan.has(Part::Presence) && flavors.contains(&Flavor::Ours) {
        Some(
            presence::run(&plan.presence)
                .await
                .context("benchmarking the join storm")?,
        )
    } else {
        None
    };
    let multiplex = if plan.has(Part::Multiplex) && flavors.contains(&Flavor::Ours) {
        Some(
            multiplex::run(&plan.multiplex)
                .await
                .context("benchmarking the multiplexed client")?,
        )
    } else {
        None
    };
    let bridge = if plan.has(Part::Bridge)
        && installed(&tansu_binary(), "Bridge", "make bootstrap", &mut notes)
    {
        Some(
            bridge::run(&plan.bridge)
                .await
                .context("benchmarking the bridge")?,
        )
    } else {
        None
    };
    let bridge_amqp = if plan.has(Part::BridgeAmqp)
        && installed(
            &rabbitmq_binary(),
            "RabbitMQ bridge",
            "make bootstrap-test",
            &mut notes,
        ) {
        Some(
            bridge_amqp::run(&plan.bridge)
                .await
                .context("benchmarking the bridge with RabbitMQ")?,
        )
    } else {
        None
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
        servers,
        bridge,
        bridge_amqp,
        shards,
        presence,
        multiplex,
        notes,
    };
    let markdown = report::render(&results);
    print!("{markdown}");
    if let Some(path) = cli.out {
        std::fs::write(&path, &markdown).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Whether the broker a part needs is installed at `path`; if not, a note
/// says the part was skipped and what installs it.
fn installed(path: &std::path::Path, part: &str, install: &str, notes: &mut Vec<String>) -> bool {
    let found = path.exists();
    if !found {
        notes.push(format!(
            "{part} part skipped: {} is not installed (`{install}`).",
            path.display()
        ));
    }
    found
}

/// Every server part of `plan` against every server in `flavors`, all
/// servers up at once so that runs can alternate between them.
async fn measure(flavors: &[Flavor], plan: &Plan) -> Result<Vec<(Flavor, Measured)>> {
    let mut measured = Vec::new();
    for &flavor in flavors {
        let mut m = Measured::default();
        if plan.has(Part::Footprint) {
            m.bundle = footprint::bundle(flavor, &plan.config(flavor))?;
        }
        measured.push((flavor, m));
    }
    if !plan.parts.iter().any(|p| p.needs_servers()) {
        return Ok(measured);
    }
    let mut servers = Vec::new();
    for &flavor in flavors {
        let started = Instant::now();
        let server = Server::start(flavor, &plan.config(flavor), &plan.state_root)
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
