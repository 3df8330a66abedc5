//! What an invocation measures. The quick set (`make bench`) keeps every
//! server part but offers fewer rates, one poll interval and three
//! fan-outs (1, 10, 100) in 2 s runs, so that four servers finish in about
//! six minutes on two cores, plus sharded rooms (roomcast alone) at 1000,
//! 2500 and 5000 subscribers in a few more; the full set (`make bench
//! FULL=1`) has every rate, interval and fan-out (1 to 1000) in 5 s runs,
//! longer profiles of the sharded rooms, the bridge, and a join storm of
//! 5000 clients with and without presence (counts only at the default
//! members limit, and full member lists under a limit of 10 000), and one
//! client in 100 rooms on one multiplexed connection against 100 sockets.
//! `--parts` narrows either.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::client::fleet::{Shape, Timing};
use crate::scenario::bridge;
use crate::scenario::multiplex;
use crate::scenario::presence;
use crate::scenario::push_poll::{self, Mode};
use crate::scenario::shards;
use crate::server::Flavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    PushPoll,
    Fanout,
    Rooms,
    Bridge,
    /// The bridge with RabbitMQ (part 4b), apart from Kafka's part 4.
    BridgeAmqp,
    Footprint,
    Shards,
    /// A join storm with and without presence (part 7).
    Presence,
    /// One client in 100 rooms: one multiplexed connection against a
    /// socket per room (part 8).
    Multiplex,
}

impl Part {
    /// Whether the part needs the servers under test (the bridge, the
    /// sharded rooms, the join storm and the multiplexed client start their
    /// own).
    pub fn needs_servers(self) -> bool {
        !matches!(
            self,
            Part::Bridge | Part::BridgeAmqp | Part::Shards | Part::Presence | Part::Multiplex
        )
    }
}

pub struct Plan {
    pub name: &'static str,
    pub parts: Vec<Part>,
    pub push_poll: push_poll::Plan,
    pub fanouts: Vec<usize>,
    pub rooms: Shape,
    pub timing: Timing,
    pub cold_samples: usize,
    pub state_root: PathBuf,
    /// roomcast's wrangler configuration.
    pub roomcast_config: PathBuf,
    pub bridge: bridge::Plan,
    pub shards: shards::Plan,
    pub presence: presence::Plan,
    pub multiplex: multiplex::Plan,
}

impl Plan {
    pub fn new(full: bool, runs: usize, state_root: PathBuf, roomcast_config: PathBuf) -> Plan {
        let seconds = Duration::from_secs_f64;
        let timing = Timing {
            warmup: seconds(if full { 1.0 } else { 0.5 }),
            duration: seconds(if full { 5.0 } else { 2.0 }),
            runs,
        };
        let poll = |ms| Mode::Poll(Duration::from_millis(ms));
        let mut plan = Plan {
            name: "quick",
            parts: vec![
                Part::Footprint,
                Part::PushPoll,
                Part::Fanout,
                Part::Rooms,
                Part::Shards,
            ],
            push_poll: push_poll::Plan {
                rates: vec![100, 1000],
                modes: vec![Mode::Push, poll(250)],
                subscribers: 10,
                duration: timing.duration,
                runs,
            },
            fanouts: vec![1, 10, 100],
            rooms: Shape {
                rooms: 100,
                subscribers: 10,
            },
            cold_samples: runs.max(5),
            bridge: bridge::Plan {
                rate: 200.0,
                links: 1000,
                timing: timing.clone(),
                state_root: state_root.clone(),
                config: roomcast_config.clone(),
            },
            shards: shards::Plan {
                subscribers: vec![1000, 2500, 5000],
                shard_size: 1000,
                // 10 k deliveries/s at 5000 subscribers: about half what one
                // room sustains on this machine.
                rate: 2.0,
                profiled: seconds(4.0),
                interval_us: 100,
                timing: timing.clone(),
                state_root: state_root.clone(),
                config: roomcast_config.clone(),
            },
            presence: presence::Plan {
                clients: 5000,
                // The default limit: 5000 clients make the room counts-only.
                members_limits: vec![1000],
                runs,
                timeout: seconds(60.0),
                state_root: state_root.clone(),
                config: roomcast_config.clone(),
            },
            multiplex: multiplex::Plan {
                rooms: 100,
                // 200 msg/s in all: far below what the runtime delivers to
                // 100 rooms, so CPU per message is not inflated by queues.
                messages: 20,
                rate: 2.0,
                runs,
                state_root: state_root.clone(),
                config: roomcast_config.clone(),
            },
            timing,
            state_root,
            roomcast_config,
        };
        if full {
            plan.name = "full";
            plan.parts.push(Part::Bridge);
            plan.parts.push(Part::BridgeAmqp);
            plan.parts.push(Part::Presence);
            plan.parts.push(Part::Multiplex);
            // And full member lists and diffs for every client.
            plan.presence.members_limits.push(10_000);
            plan.push_poll.rates = vec![10, 100, 1000];
            plan.push_poll.modes = vec![Mode::Push, poll(50), poll(250), poll(1000)];
            plan.fanouts = vec![1, 10, 100, 1000];
            plan.shards.profiled = seconds(10.0);
        }
        plan
    }

    /// Only `parts`, when any are given.
    pub fn only(mut self, parts: &[Part]) -> Plan {
        if !parts.is_empty() {
            self.parts = parts.to_vec();
        }
        self
    }

    /// The wrangler configuration `flavor` runs from.
    pub fn config(&self, flavor: Flavor) -> PathBuf {
        match flavor {
            Flavor::Ours => self.roomcast_config.clone(),
            rung => PathBuf::from(rung.config()),
        }
    }

    pub fn has(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    pub fn describe(&self) -> String {
        let p = &self.push_poll;
        let modes: Vec<String> = p.modes.iter().map(Mode::label).collect();
        format!(
            "{}: {} runs per figure; {:.1} s per run ({:.1} s warm-up before capacity windows); \
             push/poll rates {:?} msg/s with {} subscribers, receive by {}; fan-out N = {:?}; \
             sharded rooms N = {:?} ({:.0} s profiles); join storm of {} clients, members limits \
             {:?}; multiplexed client in {} rooms, {} messages per room at {} msg/s; parts {:?}; \
             server state in {}",
            self.name,
            self.timing.runs,
            self.timing.duration.as_secs_f64(),
            self.timing.warmup.as_secs_f64(),
            p.rates,
            p.subscribers,
            modes.join(", "),
            self.fanouts,
            self.shards.subscribers,
            self.shards.profiled.as_secs_f64(),
            self.presence.clients,
            self.presence.members_limits,
            self.multiplex.rooms,
            self.multiplex.messages,
            self.multiplex.rate,
            self.parts,
            self.state_root.display(),
        )
    }
}
