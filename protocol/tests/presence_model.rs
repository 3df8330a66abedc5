//! Presence against a plain model: random joins (shown or not, subjects
//! reused so takeovers happen), clean leaves, drops, time passing and
//! flushes. After every step the occupancy matches a recount of the open
//! connections, and a client that took the state at the start and applied
//! every diff since (or the state again when the room came back from counts
//! only) sees exactly the members the room lists.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use roomcast_protocol::presence::{Joined, Member, Occupancy, Presence, Settings, MAX_PAGE};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

#[derive(Debug, Clone)]
enum Step {
    Join { sub: u8, shown: bool },
    Leave(usize),
    Drop(usize),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..6, any::<bool>()).prop_map(|(sub, shown)| Step::Join { sub, shown }),
        1 => (0usize..64).prop_map(Step::Leave),
        1 => (0usize..64).prop_map(Step::Drop),
        2 => (0u64..3000).prop_map(Step::Wait),
    ]
}

/// A client's view: member → its connections.
type View = BTreeMap<String, BTreeSet<String>>;

fn listed(p: &Presence) -> View {
    let (members, next) = p.page(None, MAX_PAGE);
    assert!(next.is_none());
    view_of(&members)
}

fn view_of(members: &[Member]) -> View {
    members
        .iter()
        .map(|m| {
            (
                m.sub.clone(),
                m.metas.iter().map(|x| x.conn_id.clone()).collect(),
            )
        })
        .collect()
}

fn apply(view: &mut View, leaves: &[Member], joins: &[Member]) {
    for m in leaves {
        if let Some(set) = view.get_mut(&m.sub) {
            for meta in &m.metas {
                set.remove(&meta.conn_id);
            }
            if set.is_empty() {
                view.remove(&m.sub);
            }
        }
    }
    for m in joins {
        let set = view.entry(m.sub.clone()).or_default();
        set.extend(m.metas.iter().map(|x| x.conn_id.clone()));
    }
}

proptest! {
    #[test]
    fn a_client_view_follows_the_room(steps in prop::collection::vec(step(), 1..120)) {
        let settings = Settings { interval_ms: 1000, grace_ms: 2000, members_limit: 4 };
        let mut p = Presence::new(settings);
        // conn_id → (sub, shown); the connections opened, in order.
        let mut open: BTreeMap<String, (String, bool)> = BTreeMap::new();
        let mut opened: Vec<String> = Vec::new();
        let mut view = View::new();
        let mut counts_only = false;
        let mut now = 0u64;
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                Step::Join { sub, shown } => {
                    let conn_id = format!("c{i}");
                    let sub = format!("u{sub}");
                    p.joined(Joined { conn_id: conn_id.clone(), sub: sub.clone(), shown, info: None });
                    opened.push(conn_id.clone());
                    open.insert(conn_id, (sub, shown));
                }
                Step::Leave(k) | Step::Drop(k) if opened.is_empty() => { let _ = k; }
                Step::Leave(k) => { let c = &opened[k % opened.len()]; p.left(c); }
                Step::Drop(k) => { let c = &opened[k % opened.len()]; p.dropped(c, now); }
                Step::Wait(ms) => now += ms,
            }
            // What the room holds is what the model says is still open.
            open.retain(|c, _| p.holds(c));
            let subs: BTreeSet<&String> = open.values().map(|(s, _)| s).collect();
            let members: BTreeSet<&String> = open.values().filter(|(_, sh)| *sh).map(|(s, _)| s).collect();
            prop_assert_eq!(p.occupancy(), Occupancy {
                connections: open.len() as u64,
                users: subs.len() as u64,
                members: members.len() as u64,
            });
            if let Some(flush) = p.flush(now) {
                match flush.counts_only {
                    Some(true) => counts_only = true,
                    Some(false) => { counts_only = false; view = listed(&p); }
                    None => {}
                }
                if let Some(diff) = &flush.diff {
                    prop_assert!(!counts_only);
                    apply(&mut view, &diff.leaves, &diff.joins);
                }
                if let Some(o) = flush.occupancy { prop_assert_eq!(o, p.occupancy()); }
            }
            open.retain(|c, _| p.holds(c));
            // Once nothing is waiting to be said, the client is up to date.
            if !counts_only && p.due_ms().is_none() {
                prop_assert_eq!(&view, &listed(&p));
            }
        }
    }
}
