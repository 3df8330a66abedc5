//! A measurement window: counters (server and benchmark CPU, receiver
//! bytes, deliveries, requests) read at its start and end, turned into one
//! run's [`Sample`].
//!
//! Connection setup happens before the window opens, so handshakes are not
//! billed to delivery; the drain after the last publish is inside it,
//! because delivering is the cost being measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::client::net::Traffic;
use crate::client::recorder::Recorder;
use crate::measure::cpu::CpuTimes;
use crate::measure::stats::{percentile_ms, Sample};
use crate::server::Server;

pub struct Probe {
    started: Instant,
    cpu: CpuTimes,
    bytes: u64,
    delivered: u64,
    requests: u64,
}

impl Probe {
    pub fn start(server: &Server, traffic: &Traffic, recorders: &[Arc<Recorder>]) -> Result<Probe> {
        Ok(Probe {
            started: Instant::now(),
            cpu: server.cpu()?,
            bytes: traffic.total(),
            delivered: recorders.iter().map(|r| r.delivered()).sum(),
            requests: recorders.iter().map(|r| r.requests()).sum(),
        })
    }

    /// Time since the window opened.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The run's figures; deliveries per second are over `per`, latencies
    /// are every one the recorders hold.
    pub fn finish(
        self,
        server: &Server,
        traffic: &Traffic,
        recorders: &[Arc<Recorder>],
        per: Duration,
    ) -> Result<Sample> {
        let cpu = server.cpu()? - self.cpu;
        let delivered = recorders.iter().map(|r| r.delivered()).sum::<u64>() - self.delivered;
        let requests = recorders.iter().map(|r| r.requests()).sum::<u64>() - self.requests;
        let bytes = traffic.total() - self.bytes;
        let mut latencies: Vec<u32> = recorders.iter().flat_map(|r| r.latencies_us()).collect();
        latencies.sort_unstable();
        let per_delivery = |x: f64| x / delivered as f64;
        Ok(Sample {
            p50_ms: percentile_ms(&latencies, 0.50),
            p95_ms: percentile_ms(&latencies, 0.95),
            p99_ms: percentile_ms(&latencies, 0.99),
            delivered_per_sec: delivered as f64 / per.as_secs_f64(),
            requests_per_delivery: per_delivery(requests as f64),
            bytes_per_delivery: per_delivery(bytes as f64),
            cpu_per_1k: cpu.scaled(per_delivery(1000.0)),
            rejected: 0,
        })
    }
}
