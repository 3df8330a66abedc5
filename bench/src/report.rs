//! The markdown the benchmark prints: the ladder first (every rung's
//! medians side by side, and roomcast over each rung), then one table per
//! part and server, the CPU split, the ratios roomcast / each rung, and the
//! context a reader needs to trust the figures (machine, load, mode).
//! Cells are `median [min–max]` over runs.

use std::fmt::Write;

use crate::measure::stats::{Spread, Summary};
use crate::scenario::bridge::BridgeResults;
use crate::scenario::fanout::Capacity;
use crate::scenario::footprint::{Asset, ColdStart};
use crate::scenario::push_poll::{Case, Mode};
use crate::scenario::shards::ShardResults;
use crate::server::Flavor;

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
        self.push_poll
            .iter()
            .find(|c| c.rate == rate && c.mode == mode)
            .map(|c| &c.summary)
    }

    fn capacity(&self, like: &Capacity) -> Option<&Capacity> {
        self.fanout
            .iter()
            .chain(&self.rooms)
            .find(|c| c.shape == like.shape)
    }
}

pub struct Results {
    pub context: Vec<(String, String)>,
    /// Every server that ran, in [`Flavor::LADDER`] order.
    pub servers: Vec<(Flavor, Measured)>,
    pub bridge: Option<BridgeResults>,
    pub shards: Option<ShardResults>,
    pub notes: Vec<String>,
}

impl Results {
    fn ours(&self) -> Option<&Measured> {
        self.servers
            .iter()
            .find(|(f, _)| *f == Flavor::Ours)
            .map(|(_, m)| m)
    }

    /// The rungs roomcast is compared with, in the order the ratios are
    /// read: the equivalent durable room first, the bare room last.
    fn rungs(&self) -> Vec<(Flavor, &Measured)> {
        [Flavor::Durable, Flavor::Partyserver, Flavor::Bare]
            .into_iter()
            .filter_map(|rung| {
                let (_, m) = self.servers.iter().find(|(f, _)| *f == rung)?;
                Some((rung, m))
            })
            .collect()
    }

    fn any(&self, has: impl Fn(&Measured) -> bool) -> bool {
        self.servers.iter().any(|(_, m)| has(m))
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
        push_poll(&mut out, results);
    }
    if results.any(|m| !m.fanout.is_empty()) {
        section(&mut out, "2. Fan-out: one room, N subscribers");
        capacity(&mut out, results, |m| m.fanout.iter().collect());
    }
    if results.any(|m| m.rooms.is_some()) {
        section(&mut out, "3. Many rooms: 100 rooms × 10 subscribers");
        capacity(&mut out, results, |m| m.rooms.iter().collect());
    }
    if let Some(bridge) = &results.bridge {
        section(&mut out, "4. Bridge: rooms ⇄ Kafka against plain rdkafka");
        crate::scenario::bridge::render(&mut out, bridge);
    }
    if results.any(|m| m.cold.is_some() || !m.bundle.is_empty()) {
        footprint(&mut out, results);
    }
    if let Some(shards) = &results.shards {
        section(
            &mut out,
            "6. Sharded rooms: one room × N subscribers, roomcast unsharded and sharded",
        );
        crate::scenario::shards::render(&mut out, shards);
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

/// The summary the issue asks for: every rung's median of each headline
/// figure, and roomcast's over each rung's. CPU is the runtime's (the
/// workerd that runs the Durable Objects, what production would run) at
/// the highest rate: per publish (× the subscribers of a room) and per
/// delivery.
fn ladder(out: &mut String, results: &Results) {
    let Some(ours) = results.ours() else {
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
    let rungs = results.rungs();
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

fn push_poll(out: &mut String, results: &Results) {
    section(
        out,
        "1. Push against poll: one publisher, 10 subscribers, one room",
    );
    for (flavor, measured) in &results.servers {
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
        for case in &measured.push_poll {
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
    for (flavor, measured) in &results.servers {
        for case in &measured.push_poll {
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
    let Some(ours) = results.ours() else {
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
    for (rung, measured) in results.rungs() {
        for case in &ours.push_poll {
            let Some(b) = measured.push(case.rate, case.mode) else {
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

fn capacity(out: &mut String, results: &Results, pick: fn(&Measured) -> Vec<&Capacity>) {
    for (flavor, measured) in &results.servers {
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
        for c in pick(measured) {
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
    for (flavor, measured) in &results.servers {
        for c in pick(measured) {
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
    let Some(ours) = results.ours() else {
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
    for (rung, measured) in results.rungs() {
        for o in pick(ours) {
            let Some(b) = measured.capacity(o) else {
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

fn footprint(out: &mut String, results: &Results) {
    section(out, "5. Footprint");
    let mut table = Table::new(&["server", "file", "bytes", "gzip -9 bytes"]);
    for (flavor, measured) in &results.servers {
        let mut total = (0, 0);
        for asset in &measured.bundle {
            table.row(vec![
                flavor.label().into(),
                asset.path.display().to_string(),
                asset.bytes.to_string(),
                asset.gzipped.to_string(),
            ]);
            total = (total.0 + asset.bytes, total.1 + asset.gzipped);
        }
        table.row(vec![
            flavor.label().into(),
            "**total**".into(),
            total.0.to_string(),
            total.1.to_string(),
        ]);
    }
    table.render_into(out);
    let mut table = Table::new(&[
        "server",
        "first connect, fresh room (ms)",
        "second connect, running room (ms)",
    ]);
    for (flavor, measured) in &results.servers {
        if let Some(cold) = &measured.cold {
            table.row(vec![
                flavor.label().into(),
                cell(&cold.cold_ms),
                cell(&cold.warm_ms),
            ]);
        }
    }
    table.render_into(out);
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "### {title}\n");
}

/// `median [min–max]`.
pub fn cell(spread: &Spread) -> String {
    if spread.median.is_nan() {
        return "–".into();
    }
    format!(
        "{} [{}–{}]",
        number(spread.median),
        number(spread.min),
        number(spread.max)
    )
}

/// The ratio of medians, e.g. `1.23×`.
pub fn ratio(ours: &Spread, rung: &Spread) -> String {
    times(ours.ratio(rung))
}

/// `1.23×`, or `–` when there is no ratio.
fn times(r: f64) -> String {
    if r.is_finite() {
        format!("{}×", number(r))
    } else {
        "–".into()
    }
}

/// About three significant digits, no exponent.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let magnitude = x.abs();
    let decimals = if magnitude >= 100.0 || magnitude == 0.0 {
        0
    } else {
        (2.0 - magnitude.log10().floor()).max(0.0) as usize
    };
    format!("{x:.decimals$}")
}

/// A markdown table.
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render_into(&self, out: &mut String) {
        let line = |cells: &[String]| format!("| {} |", cells.join(" | "));
        let _ = writeln!(out, "{}", line(&self.headers));
        let rule: Vec<String> = self.headers.iter().map(|_| "---".into()).collect();
        let _ = writeln!(out, "{}", line(&rule));
        for row in &self.rows {
            let _ = writeln!(out, "{}", line(row));
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::fanout::Shape;

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "–");
    }

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
            shards: None,
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
