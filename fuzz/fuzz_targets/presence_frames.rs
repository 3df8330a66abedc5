//! Presence as a room runs it, driven by arbitrary steps: joins (of reused
//! subjects, shown or not, with any `info` JSON), clean leaves, drops, time
//! passing, flushes, pages. After every step the occupancy is a recount of
//! what is open; every frame the room would send (state pages, diffs, the
//! counts-only notice, occupancy, the bridge's events) is JSON of its
//! documented type, a state page stays within its bound, and a client that
//! applies what it is sent holds the room's member list once nothing is
//! left to say.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use roomcast_fuzz::json::{self, Gen};
use roomcast_protocol::presence::{
    Joined, LinkEvents, Presence, Settings, MAX_PAGE, STATE_FRAME_BYTES,
};
use serde_json::value::RawValue;
use serde_json::Value;

type View = BTreeMap<String, BTreeSet<String>>;

fuzz_target!(|bytes: &[u8]| {
    let mut g = Gen::new(bytes);
    let settings = Settings {
        interval_ms: g.range(1, 2000),
        grace_ms: g.range(0, 5000),
        members_limit: g.range(0, 8),
    };
    let room = "fuzz.room";
    let mut presence = Presence::new(settings);
    let mut events = LinkEvents::default();
    let mut open: Vec<String> = Vec::new();
    let mut view: Option<View> = Some(listed(&presence));
    let mut now = 0u64;
    for step in 0..g.range(1, 200) {
        match g.below(6) {
            0 | 1 => {
                let conn_id = format!("c{step}");
                let info = g.chance(2).then(|| json::data(&mut g).compact());
                presence.joined(Joined {
                    conn_id: conn_id.clone(),
                    sub: format!("u{}", g.below(5)),
                    shown: g.chance(2),
                    info: info.map(|i| RawValue::from_string(i).expect("generated JSON")),
                });
                open.push(conn_id);
            }
            2 if !open.is_empty() => presence.left(&open[g.below(open.len())]),
            3 if !open.is_empty() => presence.dropped(&open[g.below(open.len())], now),
            4 => now += g.range(0, 3000),
            _ => {
                let (page, _) = presence.page(None, g.below(MAX_PAGE) + 1);
                for member in &page {
                    assert!(!member.metas.is_empty(), "a member without a connection");
                }
            }
        }
        open.retain(|c| presence.holds(c));
        let Some(flush) = presence.flush(now) else {
            continue;
        };
        let news = presence.news(room, &flush);
        for frame in &news.state {
            assert!(frame.len() <= STATE_FRAME_BYTES + 2048, "{}", frame.len());
        }
        let frames = news.state.iter().chain(&news.diff).chain(&news.occupancy);
        for frame in frames {
            let value: Value = serde_json::from_str(frame).expect("a frame is JSON");
            let kind = value["type"].as_str().expect("a frame has a type");
            assert!(
                ["presence_state", "presence", "occupancy"].contains(&kind),
                "{frame}"
            );
            assert_eq!(value["room"], room);
        }
        if flush.counts_only == Some(true) {
            view = None;
        }
        if !news.state.is_empty() {
            view = Some(listed(&presence));
        }
        if let (Some(v), Some(diff)) = (view.as_mut(), &news.diff) {
            let diff: Value = serde_json::from_str(diff).expect("JSON");
            apply(v, &diff);
        }
        let event = events.push(room, now, &flush, presence.occupancy());
        let event: Value = serde_json::from_str(event).expect("a link event is JSON");
        assert_eq!(
            event["occupancy"]["connections"],
            presence.occupancy().connections
        );
        if let Some(v) = &view {
            if presence.due_ms().is_none() && !presence.counts_only() {
                assert_eq!(v, &listed(&presence));
            }
        }
    }
});

fn listed(presence: &Presence) -> View {
    let (members, _) = presence.page(None, usize::MAX);
    members
        .into_iter()
        .map(|m| (m.sub, m.metas.into_iter().map(|x| x.conn_id).collect()))
        .collect()
}

fn apply(view: &mut View, diff: &Value) {
    let members = |key: &str| diff[key].as_array().cloned().unwrap_or_default();
    for member in members("leaves") {
        let sub = member["sub"].as_str().unwrap_or_default().to_owned();
        if let Some(conns) = view.get_mut(&sub) {
            for meta in member["metas"].as_array().into_iter().flatten() {
                conns.remove(meta["conn_id"].as_str().unwrap_or_default());
            }
            if conns.is_empty() {
                view.remove(&sub);
            }
        }
    }
    for member in members("joins") {
        let sub = member["sub"].as_str().unwrap_or_default().to_owned();
        for meta in member["metas"].as_array().into_iter().flatten() {
            let conn = meta["conn_id"].as_str().unwrap_or_default().to_owned();
            view.entry(sub.clone()).or_default().insert(conn);
        }
    }
}
