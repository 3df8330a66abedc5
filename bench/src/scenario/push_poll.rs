//! Part 1, push against poll: one publisher at a fixed rate into a fresh
//! room with a few subscribers that receive either by WebSocket push or by
//! polling `GET /messages?since=` at a fixed interval.
//!
//! Each run is a fresh room and fresh connections, so runs are independent.
//! The window runs from the first publish until every subscriber has every
//! message (or the drain limit passed): delivered/s is deliveries of the
//! messages published in the window per second of publishing, so it equals
//! rate × subscribers exactly when nothing was lost or stuck.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::client::http::HttpConn;
use crate::client::load;
use crate::client::net::Traffic;
use crate::client::publisher::Publisher;
use crate::client::receiver::{Poll, Receivers};
use crate::client::recorder::Recorder;
use crate::client::ws;
use crate::measure::probe::Probe;
use crate::measure::stats::{Sample, Summary};
use crate::server::{self, Flavor, Server};
use crate::table::{cell, number, ratio, Table};

/// The run id of every push/poll run (each has a room of its own).
const RUN: u32 = 1;
/// How long after the last publish stragglers may still arrive; a poller
/// gets one more interval on top.
const DRAIN: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Push,
    Poll(Duration),
}

impl Mode {
    pub fn label(&self) -> String {
        match self {
            Mode::Push => "push (WebSocket)".into(),
            Mode::Poll(every) => format!("poll every {} ms", every.as_millis()),
        }
    }
}

pub struct Plan {
    pub rates: Vec<u32>,
    pub modes: Vec<Mode>,
    pub subscribers: usize,
    pub duration: Duration,
    pub runs: usize,
}

pub struct Case {
    pub rate: u32,
    pub mode: Mode,
    pub summary: Summary,
}

/// The summary of the case at `rate` in `mode`, if `cases` has it.
pub fn find(cases: &[Case], rate: u32, mode: Mode) -> Option<&Summary> {
    cases
        .iter()
        .find(|c| c.rate == rate && c.mode == mode)
        .map(|c| &c.summary)
}

/// Every case against every server; the result has one list of cases per
/// server, in the order of `servers`. Runs alternate between the servers,
/// so that each sees the same background load.
pub async fn run(servers: &[Server], plan: &Plan) -> Result<Vec<Vec<Case>>> {
    let mut cases: Vec<Vec<Case>> = servers.iter().map(|_| Vec::new()).collect();
    for &rate in &plan.rates {
        for &mode in &plan.modes {
            let mut samples: Vec<Vec<Sample>> = servers.iter().map(|_| Vec::new()).collect();
            for run in 1..=plan.runs {
                for (server, samples) in servers.iter().zip(&mut samples) {
                    let what = format!("push/poll {rate}/s {} run {run}", mode.label());
                    let sample = one_run(server, plan, rate, mode)
                        .await
                        .with_context(|| format!("{}: {what}", server.flavor.label()))?;
                    crate::scenario::progress(server, &what, &sample);
                    samples.push(sample);
                }
            }
            for (cases, samples) in cases.iter_mut().zip(&samples) {
                cases.push(Case {
                    rate,
                    mode,
                    summary: Summary::of(samples),
                });
            }
        }
    }
    Ok(cases)
}

async fn one_run(server: &Server, plan: &Plan, rate: u32, mode: Mode) -> Result<Sample> {
    let room = server.fresh_room("pushpoll");
    let recorder = Recorder::new();
    let traffic = Traffic::new();
    let mut receivers = Receivers::default();
    for k in 0..plan.subscribers {
        match mode {
            Mode::Push => {
                let socket = ws::connect(server.addr(), &server.ws_path(&room), traffic.clone())
                    .await
                    .context("subscriber")?;
                receivers.push(socket, recorder.clone());
            }
            Mode::Poll(every) => {
                let conn = HttpConn::connect(server.addr(), traffic.clone()).await?;
                let poll = Poll {
                    messages_path: server.messages_path(&room),
                    token: server.token().to_owned(),
                    every,
                    phase: every.mul_f64(k as f64 / plan.subscribers as f64),
                };
                receivers.poll(conn, poll, recorder.clone());
            }
        }
    }
    let mut publisher = Publisher::connect(server, &room).await?;

    recorder.begin(RUN);
    let recorders = [recorder.clone()];
    let probe = Probe::start(server, &traffic, &recorders)?;
    let published = load::paced(
        &mut publisher,
        RUN,
        f64::from(rate),
        plan.duration,
        Duration::ZERO,
    )
    .await?;
    let drain = match mode {
        Mode::Push => DRAIN,
        Mode::Poll(every) => DRAIN + every,
    };
    recorder
        .wait_for(published * plan.subscribers as u64, Instant::now() + drain)
        .await;
    let mut sample = probe.finish(server, &traffic, &recorders, plan.duration)?;
    sample.rejected = publisher.take_rejected();

    publisher.close().await;
    receivers.stop().await?;
    Ok(sample)
}

/// The part's tables: each server's cases, the CPU split, and roomcast
/// over each rung; `servers` in [`Flavor::LADDER`] order.
pub fn render(out: &mut String, servers: &[(Flavor, &[Case])]) {
    for (flavor, cases) in servers {
        let _ = writeln!(out, "**{}**\n", flavor.label());
        let mut table = Table::new(&[
            "rate msg/s",
            "receive by",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "delivered/s",
            "HTTP req / delivery",
            "bytes / delivery",
            "workerd CPU s / 1k deliveries",
        ]);
        for case in cases.iter() {
            let s = &case.summary;
            table.row(vec![
                case.rate.to_string(),
                case.mode.label(),
                cell(&s.p50_ms),
                cell(&s.p95_ms),
                cell(&s.p99_ms),
                cell(&s.delivered_per_sec),
                cell(&s.requests_per_delivery),
                cell(&s.bytes_per_delivery),
                cell(&s.cpu_workerd),
            ]);
        }
        table.render_into(out);
    }
    let _ = writeln!(out, "**CPU split, s per 1000 deliveries (medians)**\n");
    let mut table = Table::new(&[
        "server",
        "rate msg/s",
        "receive by",
        "workerd runtime",
        "workerd proxy",
        "wrangler (node)",
        "benchmark client",
    ]);
    for (flavor, cases) in servers {
        for case in cases.iter() {
            let s = &case.summary;
            table.row(vec![
                flavor.label().into(),
                case.rate.to_string(),
                case.mode.label(),
                number(s.cpu_runtime.median),
                number(s.cpu_workerd.median - s.cpu_runtime.median),
                number(s.cpu_tooling.median),
                number(s.cpu_bench.median),
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
        "rate msg/s",
        "receive by",
        "p50",
        "p99",
        "delivered/s",
        "bytes / delivery",
        "runtime CPU / delivery",
        "workerd CPU / delivery",
    ]);
    for (rung, cases) in server::rungs(servers) {
        for case in ours.iter() {
            let Some(b) = find(cases, case.rate, case.mode) else {
                continue;
            };
            let o = &case.summary;
            table.row(vec![
                rung.label().into(),
                case.rate.to_string(),
                case.mode.label(),
                ratio(&o.p50_ms, &b.p50_ms),
                ratio(&o.p99_ms, &b.p99_ms),
                ratio(&o.delivered_per_sec, &b.delivered_per_sec),
                ratio(&o.bytes_per_delivery, &b.bytes_per_delivery),
                ratio(&o.cpu_runtime, &b.cpu_runtime),
                ratio(&o.cpu_workerd, &b.cpu_workerd),
            ]);
        }
    }
    table.render_into(out);
}
