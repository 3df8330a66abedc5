//! Prometheus metrics (docs/bridge.md, "Metrics") and the health flags behind `/healthz`.
//!
//! The bridge's own series live in a `prometheus` registry. The rooms' series
//! are the rooms' cumulative counters as they arrive on the links (`stats`
//! frames), so they are kept as the last report per room and written out in
//! the text format directly: re-counting them into client-side counters
//! would double them after every bridge restart.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use roomcast_protocol::stats::StatsReport;

use crate::broker::BrokerKind;

/// Every series name the bridge exports, which dashboards and alerts may
/// query (docs/bridge.md, "Metrics").
pub const METRIC_NAMES: [&str; 23] = [
    "roomcast_room_connections",
    "roomcast_room_users",
    "roomcast_room_members",
    "roomcast_room_shards",
    "roomcast_room_messages_total",
    "roomcast_room_deliveries_total",
    "roomcast_room_rejects_total",
    "roomcast_room_reconnects_total",
    "roomcast_room_connection_seconds",
    "roomcast_bridge_link_up",
    "roomcast_bridge_link_reconnects_total",
    "roomcast_bridge_outbox_pending",
    "roomcast_bridge_relayed_total",
    "roomcast_bridge_relay_seconds",
    "roomcast_bridge_dlq_total",
    "roomcast_room_outbox_dropped_total",
    "roomcast_room_storage_rows_written_total",
    "roomcast_room_storage_rows_read_total",
    "roomcast_bridge_links",
    "roomcast_bridge_links_max",
    "roomcast_bridge_links_waiting",
    "roomcast_bridge_broker",
    "roomcast_bridge_presence_events_total",
];

/// The relay direction into rooms, the `direction` label (the other way
/// is `to_<broker>`: [`BrokerKind::direction`]).
pub const TO_ROOM: &str = "to_room";

/// The broker's part of `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerHealth {
    Down = 0,
    Up = 1,
    /// Connected, but the broker stopped taking publishes (RabbitMQ's
    /// connection.blocked: a memory or disk alarm).
    Blocked = 2,
}

impl BrokerHealth {
    fn as_str(self) -> &'static str {
        match self {
            BrokerHealth::Down => "down",
            BrokerHealth::Up => "up",
            BrokerHealth::Blocked => "blocked",
        }
    }

    fn from_u8(value: u8) -> BrokerHealth {
        match value {
            1 => BrokerHealth::Up,
            2 => BrokerHealth::Blocked,
            _ => BrokerHealth::Down,
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// The broker relayed to: the `broker` label and `/healthz`'s name for it.
    broker: BrokerKind,
    pub link_up: IntGaugeVec,
    pub link_reconnects: IntCounterVec,
    pub outbox_pending: IntGaugeVec,
    pub relayed: IntCounterVec,
    pub relay_seconds: HistogramVec,
    pub dlq: IntCounterVec,
    /// Presence events the broker stored (dead letters excluded), by
    /// `broker`; count them with [`Metrics::presence_stored`].
    presence_events: IntCounterVec,
    /// Room links held or being opened (one per room task).
    pub links: IntGauge,
    /// `--max-links`.
    pub links_max: IntGauge,
    /// Rooms announced to this instance that wait for a link.
    pub links_waiting: IntGauge,
    rooms: Mutex<BTreeMap<String, StatsReport>>,
    health: Health,
}

/// What `/healthz` is made of; every part must be up.
#[derive(Default)]
struct Health {
    /// The broker answers (Kafka: a metadata request; RabbitMQ: the
    /// publishing connection is open), as a [`BrokerHealth`].
    broker: AtomicU8,
    /// The registry link to the worker is open.
    worker: AtomicBool,
    /// The inbound consumer is running (false while it is rebuilt).
    consumer: AtomicBool,
    /// Publishing into rooms is not in an outage (a wrong route, a refused
    /// token, an unreachable worker); it starts healthy.
    publish_outage: AtomicBool,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique and valid");
    metric
}

impl Default for Metrics {
    /// A Kafka bridge's metrics.
    fn default() -> Self {
        Metrics::new(BrokerKind::Kafka)
    }
}

impl Metrics {
    pub fn new(broker: BrokerKind) -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"),
            )
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let single = |name: &str, help: &str| {
            register(
                &registry,
                IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge"),
            )
        };
        let relay_buckets = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let metrics = Metrics {
            link_up: gauge(
                "roomcast_bridge_link_up",
                "1 while the room link is open",
                &["room"],
            ),
            link_reconnects: counter(
                "roomcast_bridge_link_reconnects_total",
                "Room link re-establishments",
                &["room"],
            ),
            outbox_pending: gauge(
                "roomcast_bridge_outbox_pending",
                "Messages in the room not yet confirmed to Kafka",
                &["room"],
            ),
            relayed: counter(
                "roomcast_bridge_relayed_total",
                "Messages relayed, by direction",
                &["direction"],
            ),
            relay_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "roomcast_bridge_relay_seconds",
                        "From message ts to Kafka ack / to room ack",
                    )
                    .buckets(relay_buckets),
                    &["direction"],
                )
                .expect("valid histogram"),
            ),
            dlq: counter(
                "roomcast_bridge_dlq_total",
                "Records sent to the dead-letter topic, by reason",
                &["reason"],
            ),
            presence_events: counter(
                "roomcast_bridge_presence_events_total",
                "Room presence events stored in the broker",
                &["broker"],
            ),
            links: single("roomcast_bridge_links", "Room links held or being opened"),
            links_max: single(
                "roomcast_bridge_links_max",
                "The most room links this instance holds at once (--max-links)",
            ),
            links_waiting: single(
                "roomcast_bridge_links_waiting",
                "Rooms announced to this instance that wait for a link",
            ),
            registry,
            broker,
            rooms: Mutex::new(BTreeMap::new()),
            health: Health::default(),
        };
        for direction in [broker.direction(), TO_ROOM] {
            metrics.relayed.with_label_values(&[direction]);
            metrics.relay_seconds.with_label_values(&[direction]);
        }
        metrics
            .presence_events
            .with_label_values(&[broker.as_str()]);
        // An info series: which broker this instance relays to, joinable
        // with every other series of the instance.
        register(
            &metrics.registry,
            IntGaugeVec::new(
                Opts::new(
                    "roomcast_bridge_broker",
                    "1, labelled with the broker this instance relays to (--broker)",
                ),
                &["broker"],
            )
            .expect("valid gauge"),
        )
        .with_label_values(&[broker.as_str()])
        .set(1);
        metrics
    }

    /// The `direction` label of what is stored in the broker.
    pub fn to_broker(&self) -> &'static str {
        self.broker.direction()
    }

    /// One more presence event stored in the broker.
    pub fn presence_stored(&self) {
        self.presence_events
            .with_label_values(&[self.broker.as_str()])
            .inc();
    }

    /// Drops every series of a room whose link this instance no longer
    /// holds (retired, idle, or relayed by another instance).
    pub fn forget_room(&self, room: &str) {
        let _ = self.link_up.remove_label_values(&[room]);
        let _ = self.link_reconnects.remove_label_values(&[room]);
        let _ = self.outbox_pending.remove_label_values(&[room]);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.remove(room);
    }

    /// Records a room's latest counters.
    pub fn room_stats(&self, report: StatsReport) {
        self.outbox_pending
            .with_label_values(&[report.room.as_str()])
            .set(report.pending as i64);
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.insert(report.room.clone(), report);
    }

    pub fn set_broker(&self, health: BrokerHealth) {
        self.health.broker.store(health as u8, Ordering::Relaxed);
    }

    pub fn set_worker_up(&self, up: bool) {
        self.health.worker.store(up, Ordering::Relaxed);
    }

    pub fn set_consumer_up(&self, up: bool) {
        self.health.consumer.store(up, Ordering::Relaxed);
    }

    /// Whether the last publish into a room got through (or failed for a
    /// reason that is not an outage).
    pub fn set_publish_ok(&self, ok: bool) {
        self.health.publish_outage.store(!ok, Ordering::Relaxed);
    }

    /// `(healthy, detail)` for `/healthz`: the broker's part is named
    /// after it (`kafka` or `amqp`), and `broker` says which it is.
    pub fn health(&self) -> (bool, String) {
        let h = &self.health;
        let broker = BrokerHealth::from_u8(h.broker.load(Ordering::Relaxed));
        let up = |up: bool| if up { "up" } else { "down" };
        let parts = [
            (self.broker.as_str(), broker.as_str()),
            ("worker", up(h.worker.load(Ordering::Relaxed))),
            ("consumer", up(h.consumer.load(Ordering::Relaxed))),
            ("publish", up(!h.publish_outage.load(Ordering::Relaxed))),
        ];
        let healthy = parts.iter().all(|(_, state)| *state == "up");
        let mut body = serde_json::Map::new();
        body.insert(
            "status".into(),
            (if healthy { "ok" } else { "degraded" }).into(),
        );
        body.insert("broker".into(), self.broker.as_str().into());
        for (name, state) in parts {
            body.insert(name.into(), state.into());
        }
        (healthy, serde_json::Value::Object(body).to_string())
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        render_rooms(&mut text, &rooms);
        text
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The room series of docs/bridge.md, "Metrics", from the rooms' own counters.
fn render_rooms(text: &mut String, rooms: &BTreeMap<String, StatsReport>) {
    family(
        text,
        "roomcast_room_connections",
        "gauge",
        "Open client connections",
    );
    for (room, r) in rooms {
        let _ = writeln!(
            text,
            "roomcast_room_connections{{room=\"{}\"}} {}",
            escape(room),
            r.connections
        );
    }
    for (name, help, value) in [
        (
            "roomcast_room_users",
            "Distinct subjects holding the open connections",
            (|r: &StatsReport| r.users) as fn(&StatsReport) -> u64,
        ),
        (
            "roomcast_room_members",
            "Subjects shown as members (docs/protocol.md, Presence)",
            |r: &StatsReport| r.members,
        ),
    ] {
        family(text, name, "gauge", help);
        for (room, r) in rooms {
            let _ = writeln!(text, "{name}{{room=\"{}\"}} {}", escape(room), value(r));
        }
    }
    family(
        text,
        "roomcast_room_shards",
        "gauge",
        "Shard objects holding the room's connections",
    );
    for (room, r) in rooms {
        let _ = writeln!(
            text,
            "roomcast_room_shards{{room=\"{}\"}} {}",
            escape(room),
            r.shards
        );
    }
    family(
        text,
        "roomcast_room_messages_total",
        "counter",
        "Accepted messages",
    );
    for (room, r) in rooms {
        for (origin, n) in &r.counters.messages_total {
            let _ = writeln!(
                text,
                "roomcast_room_messages_total{{room=\"{}\",origin=\"{}\"}} {n}",
                escape(room),
                escape(origin)
            );
        }
    }
    family(
        text,
        "roomcast_room_deliveries_total",
        "counter",
        "Frames delivered to clients",
    );
    for (room, r) in rooms {
        let _ = writeln!(
            text,
            "roomcast_room_deliveries_total{{room=\"{}\"}} {}",
            escape(room),
            r.counters.deliveries_total
        );
    }
    family(
        text,
        "roomcast_room_rejects_total",
        "counter",
        "Rejected frames by error code",
    );
    for (room, r) in rooms {
        for (reason, n) in &r.counters.rejects_total {
            let _ = writeln!(
                text,
                "roomcast_room_rejects_total{{room=\"{}\",reason=\"{}\"}} {n}",
                escape(room),
                escape(reason)
            );
        }
    }
    family(
        text,
        "roomcast_room_reconnects_total",
        "counter",
        "Connects that asked to resume",
    );
    for (room, r) in rooms {
        let _ = writeln!(
            text,
            "roomcast_room_reconnects_total{{room=\"{}\"}} {}",
            escape(room),
            r.counters.reconnects_total
        );
    }
    let mut per_room = |name: &str, help: &str, value: fn(&StatsReport) -> u64| {
        family(text, name, "counter", help);
        for (room, r) in rooms {
            let _ = writeln!(text, "{name}{{room=\"{}\"}} {}", escape(room), value(r));
        }
    };
    per_room(
        "roomcast_room_outbox_dropped_total",
        "Messages trimmed before the bridge confirmed them (outbox over OUTBOX_LIMIT)",
        |r| r.counters.outbox_dropped_total,
    );
    per_room(
        "roomcast_room_storage_rows_written_total",
        "SQLite rows the room wrote",
        |r| r.counters.storage.rows_written,
    );
    per_room(
        "roomcast_room_storage_rows_read_total",
        "SQLite rows the room read",
        |r| r.counters.storage.rows_read,
    );
    family(
        text,
        "roomcast_room_connection_seconds",
        "histogram",
        "Lifetime of closed connections",
    );
    for (room, r) in rooms {
        let h = &r.counters.connection_seconds;
        let room = escape(room);
        for (bound, count) in h.bounds.iter().zip(&h.counts) {
            let _ = writeln!(
                text,
                "roomcast_room_connection_seconds_bucket{{room=\"{room}\",le=\"{bound}\"}} {count}"
            );
        }
        let _ = writeln!(
            text,
            "roomcast_room_connection_seconds_bucket{{room=\"{room}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            text,
            "roomcast_room_connection_seconds_sum{{room=\"{room}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            text,
            "roomcast_room_connection_seconds_count{{room=\"{room}\"}} {}",
            h.count
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast_protocol::draft::Origin;
    use roomcast_protocol::stats::RoomStats;

    #[test]
    fn renders_every_spec_name() {
        let metrics = Metrics::default();
        let mut counters = RoomStats::default();
        counters.message(Origin::Ws);
        counters.connection_seconds.observe(2.0);
        metrics.room_stats(StatsReport {
            room: "a\"b".into(),
            epoch: "e".into(),
            head: 1,
            connections: 3,
            users: 2,
            members: 1,
            shards: 2,
            cursor: 0,
            pending: 1,
            counters,
        });
        metrics.link_up.with_label_values(&["a"]).set(1);
        metrics.link_reconnects.with_label_values(&["a"]).inc();
        metrics.dlq.with_label_values(&["bad_room"]).inc();
        let text = metrics.render();
        for name in METRIC_NAMES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
        assert!(
            text.contains(r#"roomcast_room_messages_total{room="a\"b",origin="ws"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"roomcast_room_connection_seconds_bucket{room="a\"b",le="5"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"roomcast_bridge_outbox_pending{room="a\"b"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn health_needs_every_part() {
        let m = Metrics::default();
        assert!(!m.health().0);
        m.set_broker(BrokerHealth::Up);
        m.set_worker_up(true);
        m.set_consumer_up(true);
        assert!(m.health().0);
        m.set_publish_ok(false);
        let (healthy, body) = m.health();
        assert!(!healthy);
        assert!(body.contains(r#""publish":"down""#), "{body}");
    }

    #[test]
    fn an_amqp_bridge_names_its_broker_in_health_and_series() {
        let m = Metrics::new(BrokerKind::Amqp);
        m.set_worker_up(true);
        m.set_consumer_up(true);
        m.set_broker(BrokerHealth::Blocked);
        let (healthy, body) = m.health();
        assert!(!healthy, "a blocked connection is not healthy: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (body["broker"].as_str(), body["amqp"].as_str()),
            (Some("amqp"), Some("blocked"))
        );
        assert!(body.get("kafka").is_none(), "{body}");
        m.set_broker(BrokerHealth::Up);
        assert!(m.health().0);
        let text = m.render();
        assert!(
            text.contains(r#"roomcast_bridge_broker{broker="amqp"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"roomcast_bridge_relayed_total{direction="to_amqp"} 0"#),
            "{text}"
        );
        assert!(!text.contains("to_kafka"), "{text}");
        m.presence_stored();
        assert!(
            m.render()
                .contains(r#"roomcast_bridge_presence_events_total{broker="amqp"} 1"#),
            "{text}"
        );
    }
}
