//! The observability pack in `deploy/`, checked without running anything:
//! the dashboard is valid Grafana JSON whose every panel queries something,
//! it charts every series of docs/bridge.md, "Metrics", and the dashboard and alert
//! rules name only those series. (`kafka.rs` holds the same names against a
//! running bridge's `/metrics`.)

use std::collections::BTreeSet;

use roomcast_bridge::metrics::METRIC_NAMES;
use roomcast_tests::dashboards;
use serde_json::Value;

/// The sample names a family exports (histograms as `_bucket`/`_sum`/`_count`).
fn samples_of(family: &str) -> Vec<String> {
    if family.ends_with("_seconds") {
        ["_bucket", "_sum", "_count"]
            .iter()
            .map(|suffix| format!("{family}{suffix}"))
            .collect()
    } else {
        vec![family.to_owned()]
    }
}

#[test]
fn dashboard_is_grafana_json_with_a_query_in_every_panel() {
    let dashboard: Value =
        serde_json::from_str(&dashboards::read("deploy/grafana/roomcast.json")).expect("JSON");
    assert_eq!(dashboard["uid"], "roomcast");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "ids are unique"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(expr.contains("roomcast_"), "{}: {expr:?}", panel["title"]);
        }
    }
}

#[test]
fn dashboard_charts_every_spec_series_and_queries_no_other() {
    let known: BTreeSet<String> = METRIC_NAMES.iter().flat_map(|f| samples_of(f)).collect();
    let queried = dashboards::queried();
    let unknown: Vec<_> = queried.difference(&known).collect();
    assert!(unknown.is_empty(), "queries of unknown series: {unknown:?}");
    let dashboard = dashboards::mentioned(&dashboards::read("deploy/grafana/roomcast.json"));
    for family in METRIC_NAMES {
        assert!(
            samples_of(family).iter().any(|s| dashboard.contains(s)),
            "the dashboard does not chart {family}"
        );
    }
}

#[test]
fn prometheus_scrapes_the_bridge_and_loads_the_alerts() {
    let config = dashboards::read("deploy/prometheus.yml");
    assert!(config.contains("127.0.0.1:9464"), "{config}");
    assert!(config.contains("- alerts.yml"), "{config}");
    let alerts = dashboards::read("deploy/alerts.yml");
    assert!(alerts.matches("- alert: ").count() >= 5, "{alerts}");
}

#[test]
fn names_are_found_whole() {
    let found = dashboards::mentioned(
        r#"sum(rate(roomcast_room_messages_total{room=~"$room"}[1m])) / x_roomcast_not_this + roomcast_a_b_bucket"#,
    );
    let expected: BTreeSet<String> = ["roomcast_room_messages_total", "roomcast_a_b_bucket"]
        .map(String::from)
        .into();
    assert_eq!(found, expected);
    let exported = dashboards::exported("# TYPE a counter\na_total{x=\"1\"} 2\nb 3\n");
    assert_eq!(exported, ["a_total", "b"].map(String::from).into());
}
