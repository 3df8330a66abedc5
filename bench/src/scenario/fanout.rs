//! Parts 2 and 3, capacity: K rooms with N subscribers each (fan-out is one
//! room; "many rooms" is 100 rooms of 10), one publisher per room.
//!
//! First the highest sustained deliveries/s: each publisher runs closed
//! loop, keeping a bounded number of messages not yet delivered to all of
//! its room, so the server runs flat out without an unbounded backlog; the
//! rate is read over a window after a warm-up. Then latency at half that
//! rate, open loop, where a healthy system should show its unloaded
//! latency. Each server's connections are a [`Fleet`], opened once per
//! shape and reused by every run.

use std::fmt::Write;

use anyhow::{Context, Result};

use crate::client::fleet::{Fleet, Shape, Timing};
use crate::measure::stats::{Sample, Summary};
use crate::server::{self, Flavor, Server};
use crate::table::{cell, number, ratio, Table};

pub struct Capacity {
    pub shape: Shape,
    /// Closed loop: the highest sustained deliveries/s.
    pub max: Summary,
    /// Messages/s per room of the half-rate runs.
    pub half_rate: f64,
    /// Open loop at half the median highest rate.
    pub half: Summary,
}

/// The capacity of `like`'s shape among `capacities`.
pub fn find<'a>(
    capacities: impl IntoIterator<Item = &'a Capacity>,
    like: &Capacity,
) -> Option<&'a Capacity> {
    capacities.into_iter().find(|c| c.shape == like.shape)
}

/// `shape` on every server; one [`Capacity`] per server, in the order of
/// `servers`. Every server's fleet is connected first and the runs then
/// alternate between servers, so that each sees the same background load.
pub async fn measure(servers: &[Server], shape: Shape, timing: &Timing) -> Result<Vec<Capacity>> {
    let mut fleets = Vec::new();
    for server in servers {
        fleets.push(Fleet::connect(server, shape).await?);
    }
    let measured = measure_fleets(servers, &mut fleets, timing).await;
    for fleet in fleets {
        fleet.close().await?;
    }
    measured
}

async fn measure_fleets(
    servers: &[Server],
    fleets: &mut [Fleet],
    timing: &Timing,
) -> Result<Vec<Capacity>> {
    let shape = fleets.first().map(Fleet::shape).context("no servers")?;
    let label = format!("{} rooms × {}", shape.rooms, shape.subscribers);
    let mut saturated: Vec<Vec<Sample>> = fleets.iter().map(|_| Vec::new()).collect();
    for run in 1..=timing.runs {
        for ((server, fleet), samples) in servers.iter().zip(fleets.iter_mut()).zip(&mut saturated)
        {
            let what = format!("{label} max run {run}");
            let sample = fleet
                .saturate(server, timing)
                .await
                .with_context(|| format!("{}: {what}", server.flavor.label()))?;
            crate::scenario::progress(server, &what, &sample);
            samples.push(sample);
        }
    }
    let max: Vec<Summary> = saturated.iter().map(|s| Summary::of(s)).collect();
    let half_rates: Vec<f64> = max
        .iter()
        .map(|m| m.delivered_per_sec.median / shape.receivers() as f64 / 2.0)
        .collect();
    let mut half: Vec<Vec<Sample>> = fleets.iter().map(|_| Vec::new()).collect();
    for run in 1..=timing.runs {
        for (((server, fleet), samples), &rate) in servers
            .iter()
            .zip(fleets.iter_mut())
            .zip(&mut half)
            .zip(&half_rates)
        {
            let what = format!("{label} half rate run {run}");
            let sample = fleet
                .paced(server, rate, timing.duration)
                .await
                .with_context(|| format!("{}: {what}", server.flavor.label()))?;
            crate::scenario::progress(server, &what, &sample);
            samples.push(sample);
        }
    }
    Ok(max
        .into_iter()
        .zip(half_rates)
        .zip(&half)
        .map(|((max, half_rate), half)| Capacity {
            shape,
            max,
            half_rate,
            half: Summary::of(half),
        })
        .collect())
}

/// The part's tables for one kind of shape (fan-out, or many rooms): each
/// server's capacities, the CPU split at max, and roomcast over each rung;
/// `servers` in [`Flavor::LADDER`] order.
pub fn render(out: &mut String, servers: &[(Flavor, Vec<&Capacity>)]) {
    for (flavor, capacities) in servers {
        let _ = writeln!(out, "**{}**\n", flavor.label());
        let mut table = Table::new(&[
            "rooms × subscribers",
            "max deliveries/s",
            "workerd CPU s / 1k at max",
            "half rate, msg/s per room",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "delivered/s at half rate",
        ]);
        for c in capacities {
            table.row(vec![
                c.shape.to_string(),
                cell(&c.max.delivered_per_sec),
                cell(&c.max.cpu_workerd),
                number(c.half_rate),
                cell(&c.half.p50_ms),
                cell(&c.half.p95_ms),
                cell(&c.half.p99_ms),
                cell(&c.half.delivered_per_sec),
            ]);
        }
        table.render_into(out);
    }
    let _ = writeln!(
        out,
        "**CPU split at max, s per 1000 deliveries (medians)**\n"
    );
    let mut table = Table::new(&[
        "server",
        "rooms × subscribers",
        "workerd runtime",
        "workerd proxy",
        "wrangler (node)",
        "benchmark client",
    ]);
    for (flavor, capacities) in servers {
        for c in capacities {
            table.row(vec![
                flavor.label().into(),
                c.shape.to_string(),
                number(c.max.cpu_runtime.median),
                number(c.max.cpu_workerd.median - c.max.cpu_runtime.median),
                number(c.max.cpu_tooling.median),
                number(c.max.cpu_bench.median),
            ]);
        }
    }
    table.render_into(out);
    let Some(ours) = server::ours(servers) else {
        return;
    };
    let _ = writeln!(out, "**roomcast / each rung (ratio of medians)**\n");
    let mut table = Table::new(&[
        "against",
        "rooms × subscribers",
        "max deliveries/s",
        "runtime CPU / delivery at max",
        "workerd CPU / delivery at max",
        "p50 at half rate",
        "p99 at half rate",
    ]);
    for (rung, capacities) in server::rungs(servers) {
        for o in ours {
            let Some(b) = find(capacities.iter().copied(), o) else {
                continue;
            };
            table.row(vec![
                rung.label().into(),
                o.shape.to_string(),
                ratio(&o.max.delivered_per_sec, &b.max.delivered_per_sec),
                ratio(&o.max.cpu_runtime, &b.max.cpu_runtime),
                ratio(&o.max.cpu_workerd, &b.max.cpu_workerd),
                ratio(&o.half.p50_ms, &b.half.p50_ms),
                ratio(&o.half.p99_ms, &b.half.p99_ms),
            ]);
        }
    }
    table.render_into(out);
}
