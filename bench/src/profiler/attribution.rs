//! Which object of a sharded room a CPU sample worked for: the sequencer
//! (the room's own object) or one of its shards.
//!
//! Under `wrangler dev` every object of the worker runs in one isolate of
//! one workerd process, so process CPU cannot tell them apart; a CPU profile
//! of that isolate can, by the stack of each sample. The room's object and
//! a shard are types of their own, in modules of their own
//! (`roomcast_worker::room`, `roomcast_worker::shard`), so the innermost
//! frame of either module says whose work a sample is: code they share
//! (the client sockets, storage, the sends) is called from one of them.
//! A sample with neither is *other*: busy in neither (JavaScript glue on the
//! way in, V8's `(program)` and collector, the router, the registry, and
//! whatever inlining left without a named frame); `(idle)` is not work.
//!
//! Frames are matched on the function's Rust path, with the object's type
//! first in a trait method's (`<roomcast_worker::room::Room as …>::fetch`).
//! An async function's callers are on the stack whenever it is polled, so
//! work resumed after an `await` is caught too.

use std::ops::Div;

use crate::profiler::cpuprofile::Profile;

/// Where the room's own object's code lives.
const SEQUENCER: &str = "roomcast_worker::room::";
/// Where a shard's code lives.
const SHARD: &str = "roomcast_worker::shard::";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Sequencer,
    Shard,
    Other,
    Idle,
}

/// The side of a sample whose stack is `names`, top first.
pub fn side(names: &[&str]) -> Side {
    if names.first() == Some(&"(idle)") {
        return Side::Idle;
    }
    names
        .iter()
        .find_map(|name| {
            let path = name.strip_prefix('<').unwrap_or(name);
            if path.starts_with(SHARD) {
                Some(Side::Shard)
            } else if path.starts_with(SEQUENCER) {
                Some(Side::Sequencer)
            } else {
                None
            }
        })
        .unwrap_or(Side::Other)
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

    fn frame(id: u64, name: &str, children: &[u64]) -> serde_json::Value {
        json!({"id": id, "callFrame": {"functionName": name, "url": "wasm://wasm/x",
               "scriptId": "1", "lineNumber": 0, "columnNumber": 0}, "children": children})
    }

    #[test]
    fn shared_code_is_the_objects_that_called_it() {
        let broadcast =
            "roomcast_worker::clients::<impl roomcast_worker::clients::Clients>::broadcast";
        let task = "js_sys::futures::future_to_promise::{{closure}}::{{closure}}";
        let profile = Profile::parse(json!({
            "nodes": [
                frame(1, "(root)", &[2, 6, 9, 10]),
                frame(2, task, &[3, 7]),
                frame(3, "roomcast_worker::room::publish::<impl roomcast_worker::room::Room>::publish", &[4]),
                frame(4, broadcast, &[5]),
                frame(5, "__wbg_broadcast", &[]),
                frame(7, "<roomcast_worker::shard::Shard as roomcast_worker::event::Handlers>::fetch::{{closure}}", &[8]),
                frame(8, broadcast, &[]),
                frame(6, "(garbage collector)", &[]),
                frame(9, "(idle)", &[]),
                frame(10, "roomcast_worker::registry::Registry::step", &[]),
            ],
            // Samples 10 µs apart, but for a wait of 5 ms the profiler took
            // no sample in: each stands for 10 µs.
            "samples": [5, 5, 4, 8, 7, 6, 10, 9, 9],
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
    fn only_the_objects_own_modules_decide() {
        assert_eq!(side(&["__wbg_send", "js_sys::publish"]), Side::Other);
        assert_eq!(
            side(&[
                "roomcast_worker::store::Store::append",
                "roomcast_worker::event::settle"
            ]),
            Side::Other
        );
        assert_eq!(
            side(&[
                "roomcast_worker::store::Store::append",
                "roomcast_worker::room::RoomObject::websocket_message",
            ]),
            Side::Sequencer
        );
        assert_eq!(side(&["(idle)"]), Side::Idle);
    }
}
