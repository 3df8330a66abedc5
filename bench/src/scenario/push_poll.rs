//! Part 1, push against poll: one publisher at a fixed rate into a fresh
//! room with a few subscribers that receive either by WebSocket push or by
//! polling `GET /messages?since=` at a fixed interval.
//!
//! Each run is a fresh room and fresh connections, so runs are independent.
//! The window runs from the first publish until every subscriber has every
//! message (or the drain limit passed): delivered/s is deliveries of the
//! messages published in the window per second of publishing, so it equals
//! rate × subscribers exactly when nothing was lost or stuck.

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
use crate::server::Server;

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
                    crate::progress(server, &what, &sample);
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
