//! Which object of a sharded room a CPU sample worked for: the sequencer
//! (the room's own object) or one of its shards.
//!
//! Under `wrangler dev` every object of the worker runs in one isolate of
//! one workerd process, so process CPU cannot tell them apart; a CPU profile
//! of that isolate can, by the stack of each sample:
//!
//! 1. *shard* if a frame is one of the shard's own functions ([`SHARD`]);
//! 2. else *sequencer* if a frame is on the sequencer's publish and fan-out
//!    path ([`SEQUENCER`]);
//! 3. else *shard* if a frame is `send_to_clients`: the sequencer sends to
//!    its clients only from `publish`, so a send outside it is a shard
//!    delivering a batch (the build inlines `shard_deliver` into the task
//!    that polls it, so that send has no shard frame above it);
//! 4. else *other*: busy in neither (wasm-bindgen's scheduling between
//!    polls, JavaScript glue on the way in, V8's `(program)` and collector,
//!    the router, sweeps, and whatever inlining left without a named
//!    frame); `(idle)` is not work.
//!
//! Frames are matched on the function's own name, the last segment of its
//! Rust path without `{{closure}}` (an `async fn` runs as its closure),
//! among the room's functions (`roomcast_worker::room::`) only. An async
//! function's callers are on the stack whenever it is polled, so work
//! resumed after an `await` is caught too, as long as one of them kept its
//! frame.

use std::ops::Div;

use crate::profiler::cpuprofile::Profile;

/// Where the room's functions live.
const ROOM: &str = "roomcast_worker::room::";

/// The shard's entry points (a batch from the sequencer, a client joining
/// the shard, its clients' publishes on their way to the sequencer) and the
/// functions only a shard runs that keep their frame in the build.
pub const SHARD: &[&str] = &[
    "shard_deliver",
    "shard_join",
    "pump_forward",
    "forward_publish",
    "shard_report",
    "release_acks",
    "fill",
    "fetch_gap",
    "align",
    "step",
    "position",
];

/// The sequencer's publish and fan-out path: a publish from a client or
/// over HTTP, the broadcast to its own clients, the batches to its shards,
/// and what it answers its shards.
pub const SEQUENCER: &[&str] = &[
    "publish_http",
    "on_frame",
    "publish",
    "broadcast",
    "feed_shards",
    "feed_shard",
    "forward_from_shard",
    "gap_for_shard",
    "join_from_shard",
];

/// Sending a frame to an object's own clients.
const SEND: &str = "send_to_clients";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Sequencer,
    Shard,
    Other,
    Idle,
}

/// The side of a sample whose stack is `names`, top first.
pub fn side(names: &[&str]) -> Side {
    let functions: Vec<&str> = names.iter().filter_map(|name| function(name)).collect();
    let on = |markers: &[&str]| functions.iter().any(|f| markers.contains(f));
    if names.first() == Some(&"(idle)") {
        Side::Idle
    } else if on(SHARD) {
        Side::Shard
    } else if on(SEQUENCER) {
        Side::Sequencer
    } else if on(&[SEND]) {
        Side::Shard
    } else {
        Side::Other
    }
}

/// A room function's own name: `publish` of
/// `roomcast_worker::room::publish::<impl roomcast_worker::room::Room>::publish::{{closure}}`.
fn function(name: &str) -> Option<&str> {
    let mut name = name.strip_prefix(ROOM)?;
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name.rsplit("::").next()
}

/// CPU time by side, ms: each side's samples × the profile's sampling
/// period ([`Profile::sampling_period_us`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Split {
    pub sequencer: f64,
    pub shards: f64,
    /// Busy, but neither side's.
    pub other: f64,
}

impl Split {
    pub fn of(profile: &Profile) -> Split {
        let counts = profile.samples_by(side);
        let period_ms = profile.sampling_period_us() / 1000.0;
        let ms = |side| counts.get(&side).copied().unwrap_or(0) as f64 * period_ms;
        Split {
            sequencer: ms(Side::Sequencer),
            shards: ms(Side::Shard),
            other: ms(Side::Other),
        }
    }
}

impl Div<f64> for Split {
    type Output = Split;

    fn div(self, n: f64) -> Split {
        Split {
            sequencer: self.sequencer / n,
            shards: self.shards / n,
            other: self.other / n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const IMPL: &str = "roomcast_worker::room::<impl roomcast_worker::room::Room>";

    fn frame(id: u64, name: &str, children: &[u64]) -> serde_json::Value {
        json!({"id": id, "callFrame": {"functionName": name, "url": "wasm://wasm/x",
               "scriptId": "1", "lineNumber": 0, "columnNumber": 0}, "children": children})
    }

    #[test]
    fn a_send_is_the_sequencers_under_a_publish_and_else_a_shards() {
        let f = |name: &str| format!("{IMPL}::{name}::h0123456789abcdef");
        let task = "js_sys::futures::future_to_promise::{{closure}}::{{closure}}";
        let profile = Profile::parse(json!({
            "nodes": [
                frame(1, "(root)", &[2, 6, 9, 10]),
                frame(2, task, &[3, 7, 8]),
                frame(3, &f("publish"), &[4]),
                frame(4, &f("send_to_clients"), &[5]),
                frame(5, "__wbg_send", &[]),
                // A shard's delivery, inlined into the task.
                frame(7, &f("send_to_clients"), &[]),
                frame(8, &format!("{IMPL}::shard_deliver::{{{{closure}}}}"), &[]),
                frame(6, "(garbage collector)", &[]),
                frame(9, "(idle)", &[]),
                frame(10, "roomcast_worker::registry::Registry::step", &[]),
            ],
            // Samples 10 µs apart, but for a wait of 5 ms the profiler took
            // no sample in: each stands for 10 µs.
            "samples": [5, 5, 4, 7, 8, 6, 10, 9, 9],
            "timeDeltas": [0, 10, 10, 10, 5000, 10, 10, 10, 10],
        }))
        .unwrap();
        let split = Split::of(&profile);
        assert_eq!(
            split,
            Split {
                sequencer: 0.03,
                shards: 0.02,
                other: 0.02
            }
        );
        assert_eq!((split / 2.0).sequencer, 0.015);
    }

    #[test]
    fn only_the_workers_own_functions_count() {
        assert_eq!(
            function("roomcast_worker::room::feed::<impl roomcast_worker::room::Room>::pump"),
            Some("pump")
        );
        assert_eq!(function("js_sys::futures::publish"), None);
        assert_eq!(function("roomcast_worker::registry::Registry::step"), None);
        assert_eq!(side(&["__wbg_send", "js_sys::publish"]), Side::Other);
        assert_eq!(side(&["(idle)"]), Side::Idle);
    }
}
