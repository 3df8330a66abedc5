//! `roomcast-bench profile`: where one roomcast room spends its CPU under
//! publish load, from the worker build that keeps function names
//! (`make profile` builds it into `build/profile`; the deploy bundle strips
//! them).
//!
//! It starts roomcast with that build (the repository's `wrangler.toml`,
//! only the entry replaced), connects one room with N subscribers and a
//! publisher, warms the room up, then records the isolate's CPU profile
//! over wrangler's inspector port for `--seconds` while the publisher runs
//! closed loop, as the fan-out benchmark's capacity runs do. It prints the
//! load the profile was taken under and the top functions by self time
//! (wasm-bindgen's anonymous JavaScript glue named from the bundle's
//! source), and writes the raw profile for DevTools (Performance panel,
//! "Load profile").

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use roomcast_tests::{repo_root, WorkerSpec};
use serde_json::{json, Value};

use crate::client::fleet::{Fleet, Shape, Timing};
use crate::profiler::cpuprofile::Profile;
use crate::profiler::inspector::Inspector;
use crate::server::{self, Flavor, Server};
use crate::table::number;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to record, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Subscribers in the room, besides the publisher.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Functions to print.
    #[arg(long, default_value_t = 25)]
    top: usize,
    /// V8's sampling interval, µs.
    #[arg(long, default_value_t = 100)]
    interval_us: u32,
    /// The entry of the build that keeps function names.
    #[arg(long, default_value = "build/profile/worker/shim.mjs")]
    script: PathBuf,
    /// The wrangler configuration it runs under (bindings, migrations, vars).
    #[arg(long, default_value = Flavor::Ours.config())]
    config: PathBuf,
    /// Where to write the raw profile (`.cpuprofile`, for DevTools).
    #[arg(long, default_value = "target/profile.cpuprofile")]
    out: PathBuf,
    /// Where the server keeps its Durable Object state [default: /dev/shm
    /// when it exists, else the temp dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

pub async fn run(args: &Args) -> Result<()> {
    let script = repo_root().join(&args.script);
    if !script.exists() {
        bail!("{} is missing: `make profile` builds it", script.display());
    }
    let state_root = args
        .state_dir
        .clone()
        .unwrap_or_else(server::default_state_root);
    let spec = WorkerSpec::default().script(script);
    let server = Server::start_with(Flavor::Ours, &args.config, spec, &state_root, &[]).await?;
    let shape = Shape {
        rooms: 1,
        subscribers: args.subscribers,
    };
    let mut fleet = Fleet::connect(&server, shape).await?;
    // The first publishes create the room and its schema and warm the JIT;
    // none of that is the steady state being profiled.
    let warm_up = Timing {
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(1),
        runs: 1,
    };
    fleet.saturate(&server, &warm_up).await?;

    let mut inspector = Inspector::connect(server.worker().inspector_port())
        .await
        .context("the inspector port")?;
    inspector.start_profiler(args.interval_us).await?;
    let window = Timing {
        warmup: Duration::ZERO,
        duration: Duration::from_secs_f64(args.seconds),
        runs: 1,
    };
    let sample = fleet.saturate(&server, &window).await;
    let raw = inspector.stop_profiler().await?;
    let sample = sample?;
    fleet.close().await?;

    let out = repo_root().join(&args.out);
    std::fs::write(&out, raw.to_string()).with_context(|| format!("writing {}", out.display()))?;
    let mut profile = Profile::parse(raw)?;
    // Only now: the debugger would cost the isolate time while recording.
    inspector.call("Debugger.enable", json!({})).await?;
    let mut sources = HashMap::new();
    for id in profile.anonymous_scripts() {
        let mut script = inspector
            .call("Debugger.getScriptSource", json!({ "scriptId": id }))
            .await?;
        if let Value::String(text) = script["scriptSource"].take() {
            sources.insert(id, text);
        }
    }
    profile.name_anonymous(&sources);
    let summary = profile.summary();
    let publishes = sample.delivered_per_sec / args.subscribers as f64;
    println!(
        "### CPU profile: one room, {} subscriber(s), closed loop, {} s\n",
        args.subscribers,
        number(args.seconds)
    );
    println!(
        "Load while recording: {} publishes/s ({} deliveries/s); runtime CPU {} ms per publish \
         (profiler on, sampling every {} µs). Raw profile: {}.\n",
        number(publishes),
        number(sample.delivered_per_sec),
        number(sample.cpu_per_1k.runtime * args.subscribers as f64),
        args.interval_us,
        args.out.display(),
    );
    print!("{}", summary.render(args.top));
    Ok(())
}
