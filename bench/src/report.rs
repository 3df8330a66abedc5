//! The markdown the benchmark prints: one table per part and flavor, the
//! ratio roomcast / baseline, and the context a reader needs to trust the
//! figures (machine, load, mode). Cells are `median [min–max]` over runs.

use std::fmt::Write;

use crate::bridge::BridgeResults;
use crate::fanout::Capacity;
use crate::footprint::{Asset, ColdStart};
use crate::push_poll::Case;
use crate::stats::Spread;

/// What one server produced.
#[derive(Default)]
pub struct Measured {
    pub push_poll: Vec<Case>,
    pub fanout: Vec<Capacity>,
    pub rooms: Option<Capacity>,
    pub cold: Option<ColdStart>,
    pub bundle: Vec<Asset>,
}

pub struct Results {
    pub context: Vec<(String, String)>,
    pub ours: Measured,
    pub baseline: Measured,
    pub bridge: Option<BridgeResults>,
    pub notes: Vec<String>,
}

pub fn render(results: &Results) -> String {
    let mut out = String::new();
    section(&mut out, "Context");
    let mut table = Table::new(&["", ""]);
    for (key, value) in &results.context {
        table.row(vec![key.clone(), value.clone()]);
    }
    table.render_into(&mut out);
    if !results.ours.push_poll.is_empty() {
        push_poll(&mut out, results);
    }
    if !results.ours.fanout.is_empty() {
        section(&mut out, "2. Fan-out: one room, N subscribers");
        capacity(&mut out, results, |m| m.fanout.iter().collect());
    }
    if results.ours.rooms.is_some() {
        section(&mut out, "3. Many rooms: 100 rooms × 10 subscribers");
        capacity(&mut out, results, |m| m.rooms.iter().collect());
    }
    if let Some(bridge) = &results.bridge {
        section(&mut out, "4. Bridge: rooms ⇄ Kafka against plain rdkafka");
        crate::bridge::render(&mut out, bridge);
    }
    if results.ours.cold.is_some() || !results.ours.bundle.is_empty() {
        footprint(&mut out, results);
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

/// A note for every figure some of whose publishes the server refused:
/// such a figure is not a measurement of delivery.
fn rejections(results: &Results) -> Vec<String> {
    let mut notes = Vec::new();
    for (flavor, measured) in flavors(results) {
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
                    "{flavor}, {} × {}: {rejected} publishes rejected",
                    c.shape.rooms, c.shape.subscribers
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
    for (flavor, measured) in flavors(results) {
        let _ = writeln!(out, "**{flavor}**\n");
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
    for (flavor, measured) in flavors(results) {
        for case in &measured.push_poll {
            let s = &case.summary;
            table.row(vec![
                flavor.into(),
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
    let _ = writeln!(out, "**roomcast / baseline (ratio of medians)**\n");
    let mut table = Table::new(&[
        "rate msg/s",
        "receive by",
        "p50",
        "p99",
        "delivered/s",
        "bytes / delivery",
        "workerd CPU / delivery",
    ]);
    for (ours, base) in results
        .ours
        .push_poll
        .iter()
        .zip(&results.baseline.push_poll)
    {
        let (o, b) = (&ours.summary, &base.summary);
        table.row(vec![
            ours.rate.to_string(),
            ours.mode.label(),
            ratio(&o.p50_ms, &b.p50_ms),
            ratio(&o.p99_ms, &b.p99_ms),
            ratio(&o.delivered_per_sec, &b.delivered_per_sec),
            ratio(&o.bytes_per_delivery, &b.bytes_per_delivery),
            ratio(&o.cpu_workerd, &b.cpu_workerd),
        ]);
    }
    table.render_into(out);
}

fn capacity(out: &mut String, results: &Results, pick: fn(&Measured) -> Vec<&Capacity>) {
    for (flavor, measured) in flavors(results) {
        let _ = writeln!(out, "**{flavor}**\n");
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
                format!("{} × {}", c.shape.rooms, c.shape.subscribers),
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
    for (flavor, measured) in flavors(results) {
        for c in pick(measured) {
            table.row(vec![
                flavor.into(),
                format!("{} × {}", c.shape.rooms, c.shape.subscribers),
                number(c.max.cpu_runtime.median),
                number(c.max.cpu_workerd.median - c.max.cpu_runtime.median),
                number(c.max.cpu_tooling.median),
                number(c.max.cpu_bench.median),
            ]);
        }
    }
    table.render_into(out);
    let _ = writeln!(out, "**roomcast / baseline (ratio of medians)**\n");
    let mut table = Table::new(&[
        "rooms × subscribers",
        "max deliveries/s",
        "CPU / delivery at max",
        "p50 at half rate",
        "p99 at half rate",
    ]);
    for (o, b) in pick(&results.ours).into_iter().zip(pick(&results.baseline)) {
        table.row(vec![
            format!("{} × {}", o.shape.rooms, o.shape.subscribers),
            ratio(&o.max.delivered_per_sec, &b.max.delivered_per_sec),
            ratio(&o.max.cpu_workerd, &b.max.cpu_workerd),
            ratio(&o.half.p50_ms, &b.half.p50_ms),
            ratio(&o.half.p99_ms, &b.half.p99_ms),
        ]);
    }
    table.render_into(out);
}

fn footprint(out: &mut String, results: &Results) {
    section(out, "5. Footprint");
    let mut table = Table::new(&["server", "file", "bytes", "gzip -9 bytes"]);
    for (flavor, measured) in flavors(results) {
        let mut total = (0, 0);
        for asset in &measured.bundle {
            table.row(vec![
                flavor.into(),
                asset.path.display().to_string(),
                asset.bytes.to_string(),
                asset.gzipped.to_string(),
            ]);
            total = (total.0 + asset.bytes, total.1 + asset.gzipped);
        }
        table.row(vec![
            flavor.into(),
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
    for (flavor, measured) in flavors(results) {
        if let Some(cold) = &measured.cold {
            table.row(vec![
                flavor.into(),
                cell(&cold.cold_ms),
                cell(&cold.warm_ms),
            ]);
        }
    }
    table.render_into(out);
}

fn flavors(results: &Results) -> [(&'static str, &Measured); 2] {
    [("roomcast", &results.ours), ("baseline", &results.baseline)]
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
pub fn ratio(ours: &Spread, baseline: &Spread) -> String {
    let r = ours.ratio(baseline);
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

    #[test]
    fn numbers_keep_three_significant_digits() {
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.012345), "0.0123");
        assert_eq!(number(0.0), "0");
        assert_eq!(number(f64::NAN), "–");
    }
}
