//! The markdown the benchmark prints, assembled from what each scenario
//! measured: the context a reader needs to trust the figures (machine,
//! load, mode), the ladder (every rung's medians of the headline figures
//! side by side, and roomcast over each rung), then each part's section as
//! the scenario renders it, and notes. Cells are `median [min–max]` over
//! runs.

use std::fmt::Write;

use crate::measure::stats::Summary;
use crate::scenario::bridge::{self, BridgeResults};
use crate::scenario::bridge_amqp::{self, AmqpResults};
use crate::scenario::fanout::{self, Capacity};
use crate::scenario::footprint::{self, Asset, ColdStart};
use crate::scenario::multiplex::{self, MultiplexResults};
use crate::scenario::presence::{self, PresenceResults};
use crate::scenario::push_poll::{self, Case, Mode};
use crate::scenario::shards::{self, ShardResults};
use crate::server::{self, Flavor};
use crate::table::{number, section, times, Table};

/// What one server produced.
#[derive(Default)]
pub struct Measured {
    pub push_poll: Vec<Case>,
    pub fanout: Vec<Capacity>,
    pub rooms: Option<Capacity>,
    pub cold: Option<ColdStart>,
    pub bundle: Vec<Asset>,
}

impl Measured {
    fn push(&self, rate: u32, mode: Mode) -> Option<&Summary> {
        push_poll::find(&self.push_poll, rate, mode)
    }

    fn capacity(&self, like: &Capacity) -> Option<&Capacity> {
        fanout::find(self.fanout.iter().chain(&self.rooms), like)
    }
}

pub struct Results {
    pub context: Vec<(String, String)>,
    /// Every server that ran, in [`Flavor::LADDER`] order.
    pub servers: Vec<(Flavor, Measured)>,
    pub bridge: Option<BridgeResults>,
    /// The bridge with RabbitMQ (part 4 too), when RabbitMQ is installed.
    pub bridge_amqp: Option<AmqpResults>,
    pub shards: Option<ShardResults>,
    pub presence: Option<PresenceResults>,
    pub multiplex: Option<MultiplexResults>,
    pub notes: Vec<String>,
}

impl Results {
    fn any(&self, has: impl Fn(&Measured) -> bool) -> bool {
        self.servers.iter().any(|(_, m)| has(m))
    }

    /// What `pick` reads from each server, in [`Flavor::LADDER`] order.
    fn each<'a, T>(&'a self, pick: impl Fn(&'a Measured) -> T) -> Vec<(Flavor, T)> {
        self.servers.iter().map(|(f, m)| (*f, pick(m))).collect()
    }
}

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    section(&mut out, "Context");
    let mut table = Table::new(&["", ""]);
    for (key, value) in &results.context {
        table.row(vec![key.clone(), value.clone()]);
    }
    table.render_into(&mut out);
    ladder(&mut out, results);
    if results.any(|m| !m.push_poll.is_empty()) {
        section(
            &mut out,
            "1. Push against poll: one publisher, 10 subscribers, one room",
        );
        push_poll::render(&mut out, &results.each(|m| m.push_poll.as_slice()));
    }
    if results.any(|m| !m.fanout.is_empty()) {
        section(&mut out, "2. Fan-out: one room, N subscribers");
        fanout::render(&mut out, &results.each(|m| m.fanout.iter().collect()));
    }
    if results.any(|m| m.rooms.is_some()) {
        section(&mut out, "3. Many rooms: 100 rooms × 10 subscribers");
        fanout::render(&mut out, &results.each(|m| m.rooms.iter().collect()));
    }
    if let Some(results) = &results.bridge {
        section(&mut out, "4. Bridge: rooms ⇄ Kafka against plain rdkafka");
        bridge::render(&mut out, results);
    }
    if let Some(results) = &results.bridge_amqp {
        section(&mut out, "4b. Bridge: room → RabbitMQ against plain lapin");
        bridge_amqp::render(&mut out, results);
    }
    if results.any(|m| m.cold.is_some() || !m.bundle.is_empty()) {
        section(&mut out, "5. Footprint");
        let cold: Vec<(Flavor, &ColdStart)> = results
            .servers
            .iter()
            .filter_map(|(f, m)| Some((*f, m.cold.as_ref()?)))
            .collect();
        footprint::render(&mut out, &results.each(|m| m.bundle.as_slice()), &cold);
    }
    if let Some(results) = &results.shards {
        section(
            &mut out,
            "6. Sharded rooms: one room × N subscribers, roomcast unsharded and sharded",
        );
        shards::render(&mut out, results);
    }
    if let Some(results) = &results.presence {
        section(&mut out, "7. Presence: a join storm");
        presence::render(&mut out, results);
    }
    if let Some(results) = &results.multiplex {
        let rooms = results.rooms;
        section(
            &mut out,
            &format!("8. Several rooms on one connection: one client in {rooms} rooms against {rooms} sockets"),
        );
        multiplex::render(&mut out, results);
    }
    let notes: Vec<String> = results
        .notes
        .iter()
        .cloned()
        .chain(rejections(results))
        .collect();
    if !notes.is_empty() {
        section(&mut out, "Notes");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// One figure of the ladder: a row label and how to read it from a server.
type Figure<'a> = (String, Box<dyn Fn(&Measured) -> Option<f64> + 'a>);

/// The headline figures: every rung's median of each headline
/// figure, and roomcast's over each rung's. CPU is the runtime's (the
/// workerd that runs the Durable Objects, what production would run) at
/// the highest rate: per publish (× the subscribers of a room) and per
/// delivery.
fn ladder(out: &mut String, results: &Results) {
    let Some(ours) = server::ours(&results.servers) else {
        return;
    };
    let mut figures: Vec<Figure> = Vec::new();
    for case in ours.push_poll.iter().filter(|c| c.mode == Mode::Push) {
        let rate = case.rate;
        let at = format!("{rate} msg/s to 10 subscribers");
        figures.push((
            format!("push p50 ms, {at}"),
            Box::new(move |m| Some(m.push(rate, Mode::Push)?.p50_ms.median)),
        ));
        figures.push((
            format!("push p99 ms, {at}"),
            Box::new(move |m| Some(m.push(rate, Mode::Push)?.p99_ms.median)),
        ));
    }
    for like in ours.fanout.iter().chain(&ours.rooms) {
        let shape = like.shape;
        figures.push((
            format!("{shape}: max deliveries/s"),
            Box::new(move |m| Some(m.capacity(like)?.max.delivered_per_sec.median)),
        ));
        figures.push((
            format!("{shape}: runtime CPU ms / publish"),
            Box::new(move |m| {
                let c = m.capacity(like)?;
                Some(c.max.cpu_runtime.median * shape.subscribers as f64)
            }),
        ));
        figures.push((
            format!("{shape}: runtime CPU µs / delivery"),
            Box::new(move |m| Some(m.capacity(like)?.max.cpu_runtime.median * 1000.0)),
        ));
    }
    if figures.is_empty() {
        return;
    }
    section(out, "Ladder");
    let rungs = server::rungs(&results.servers);
    let mut headers = vec!["figure".to_owned()];
    headers.extend(results.servers.iter().map(|(f, _)| f.label().to_owned()));
    headers.extend(
        rungs
            .iter()
            .map(|(f, _)| format!("roomcast / {}", f.label())),
    );
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(&headers);
    for (label, read) in &figures {
        let value = |m: &Measured| read(m).unwrap_or(f64::NAN);
        let mut row = vec![label.clone()];
        row.extend(results.servers.iter().map(|(_, m)| number(value(m))));
        row.extend(rungs.iter().map(|(_, m)| times(value(ours) / value(m))));
        table.row(row);
    }
    table.render_into(out);
    let _ = writeln!(
        out,
        "Medians of the tables below. Ratios above 1 mean roomcast is slower or dearer, \
         except for deliveries/s, where above 1 means it delivers more.\n"
    );
}

/// A note for every figure some of whose publishes the server refused:
/// such a figure is not a measurement of delivery.
fn rejections(results: &Results) -> Vec<String> {
    let mut notes = Vec::new();
    for (flavor, measured) in &results.servers {
        let flavor = flavor.label();
        for case in &measured.push_poll {
            if case.summary.rejected > 0 {
                notes.push(format!(
                    "{flavor}, {}/s {}: {} publishes rejected",
                    case.rate,
                    case.mode.label(),
                    case.summary.rejected
                ));
            }
        }
        for c in measured.fanout.iter().chain(&measured.rooms) {
            let rejected = c.max.rejected + c.half.rejected;
            if rejected > 0 {
                notes.push(format!(
                    "{flavor}, {}: {rejected} publishes rejected",
                    c.shape
                ));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fleet::Shape;

    fn capacity(subscribers: usize, deliveries: f64, cpu_s_per_1k: f64) -> Capacity {
        let sample = crate::measure::stats::Sample {
            p50_ms: 1.0,
            p95_ms: 2.0,
            p99_ms: 3.0,
            delivered_per_sec: deliveries,
            requests_per_delivery: 0.0,
            bytes_per_delivery: 100.0,
            cpu_per_1k: crate::measure::cpu::CpuTimes {
                runtime: cpu_s_per_1k,
                ..Default::default()
            },
            rejected: 0,
        };
        Capacity {
            shape: Shape {
                rooms: 1,
                subscribers,
            },
            max: Summary::of(&[sample]),
            half_rate: deliveries / 2.0,
            half: Summary::of(&[sample]),
        }
    }

    #[test]
    fn ladder_reads_cpu_per_publish_and_per_delivery_and_ratios_each_rung() {
        let with = |deliveries, cpu| Measured {
            fanout: vec![capacity(10, deliveries, cpu)],
            ..Measured::default()
        };
        let results = Results {
            context: Vec::new(),
            servers: vec![
                (Flavor::Bare, with(40000.0, 0.02)),
                (Flavor::Durable, with(20000.0, 0.04)),
                (Flavor::Ours, with(10000.0, 0.08)),
            ],
            bridge: None,
            bridge_amqp: None,
            shards: None,
            presence: None,
            multiplex: None,
            notes: Vec::new(),
        };
        let mut out = String::new();
        ladder(&mut out, &results);
        assert!(out.contains(
            "| figure | bare JS | durable JS | roomcast | roomcast / durable JS | roomcast / bare JS |"
        ));
        // 0.08 s per 1000 deliveries: 80 µs per delivery, 0.8 ms per
        // publish to 10 subscribers.
        assert!(
            out.contains("| 1 × 10: max deliveries/s | 40000 | 20000 | 10000 | 0.500× | 0.250× |")
        );
        assert!(out.contains(
            "| 1 × 10: runtime CPU ms / publish | 0.200 | 0.400 | 0.800 | 2.00× | 4.00× |"
        ));
        assert!(out.contains(
            "| 1 × 10: runtime CPU µs / delivery | 20.0 | 40.0 | 80.0 | 2.00× | 4.00× |"
        ));
    }
}
