//! The observability pack in `deploy/` as data: which metric names the
//! Grafana dashboard and the alert rules query, and which a `/metrics`
//! scrape exports, so a test can hold one against the other.
//!
//! Names are found by scanning for the `roomcast_` prefix rather than by
//! parsing PromQL: any mention (expression, variable query, description)
//! must name a series that exists.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::repo_root;

/// The files whose queries must match what the bridge exports.
pub const FILES: [&str; 2] = ["deploy/grafana/roomcast.json", "deploy/alerts.yml"];

pub fn read(file: &str) -> String {
    let path: PathBuf = repo_root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `roomcast_*` name mentioned in `text`.
pub fn mentioned(text: &str) -> BTreeSet<String> {
    text.match_indices("roomcast_")
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every metric name the dashboard and the alert rules query.
pub fn queried() -> BTreeSet<String> {
    FILES.iter().flat_map(|f| mentioned(&read(f))).collect()
}

/// The sample names in a Prometheus text exposition (`_bucket`, `_sum` and
/// `_count` included, as queries spell them).
pub fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}
