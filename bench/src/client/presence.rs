//! One client's view of a room's presence, built from the frames it
//! receives as a client library would: `presence_state` pages replace the
//! members, `presence` diffs apply leaves then joins keyed by `conn_id`, a
//! counts-only notice empties the list, and the last `occupancy` gives the
//! counts.
//!
//! A join storm of N clients leaves N views of up to N members each, so the
//! view keeps 64-bit hashes of `sub` and `conn_id` rather than the strings:
//! 5000 views of 5000 members fit in about a gigabyte instead of several.

use std::borrow::Cow;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use anyhow::{Context, Result};
use serde::Deserialize;

/// A member as frames carry it: its `sub` and the metas that joined or left.
#[derive(Deserialize)]
struct Member<'a> {
    #[serde(borrow)]
    sub: Cow<'a, str>,
    #[serde(default, borrow)]
    metas: Vec<Meta<'a>>,
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    conn_id: Id<'a>,
}

/// A `conn_id`, whichever JSON type the room gives it.
#[derive(Deserialize, Hash)]
#[serde(untagged)]
enum Id<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(u64),
}

/// A frame's type, read first: `members` is a list in `presence_state`
/// and a count in `occupancy`.
#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// `presence_state` and `presence`, as far as the view reads them.
#[derive(Deserialize)]
struct Presence<'a> {
    #[serde(default, borrow)]
    members: Vec<Member<'a>>,
    #[serde(default, borrow)]
    joins: Vec<Member<'a>>,
    #[serde(default, borrow)]
    leaves: Vec<Member<'a>>,
    #[serde(default)]
    counts_only: bool,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct Occupancy {
    connections: u64,
}

#[derive(Default)]
pub struct View {
    /// Each known meta's `conn_id` → its member's `sub` (hashes).
    metas: HashMap<u64, u64>,
    /// Each present member (hash of `sub`) → how many metas it has.
    members: HashMap<u64, u32>,
    counts_only: bool,
    /// The last `presence_state` said more pages follow.
    paging: bool,
    connections: Option<u64>,
}

impl View {
    /// Applies one text frame from the room.
    pub fn apply(&mut self, text: &str) -> Result<()> {
        if text == "pong" {
            return Ok(());
        }
        let parse = || format!("frame is not JSON of its type: {text}");
        let kind: Kind = serde_json::from_str(text).with_context(parse)?;
        match kind.kind.as_ref() {
            "presence_state" => {
                let frame: Presence = serde_json::from_str(text).with_context(parse)?;
                // A first page replaces what the view knew; later pages add.
                if !self.paging {
                    self.metas.clear();
                    self.members.clear();
                }
                self.paging = frame.more;
                self.counts_only = frame.counts_only;
                self.join(&frame.members);
            }
            "presence" => {
                let frame: Presence = serde_json::from_str(text).with_context(parse)?;
                if frame.counts_only {
                    self.metas.clear();
                    self.members.clear();
                    self.counts_only = true;
                }
                self.leave(&frame.leaves);
                self.join(&frame.joins);
            }
            "occupancy" => {
                let frame: Occupancy = serde_json::from_str(text).with_context(parse)?;
                self.connections = Some(frame.connections);
            }
            _ => {}
        }
        Ok(())
    }

    /// Members present: those with at least one meta.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Whether the room said it lists no members (past its limit).
    pub fn counts_only(&self) -> bool {
        self.counts_only
    }

    /// `connections` of the last `occupancy` frame.
    pub fn connections(&self) -> Option<u64> {
        self.connections
    }

    fn join(&mut self, members: &[Member]) {
        for member in members {
            let sub = hash(&member.sub);
            for meta in &member.metas {
                // A known meta is replaced: it may even move to another sub.
                if let Some(was) = self.metas.insert(hash(&meta.conn_id), sub) {
                    self.forget(was);
                }
                *self.members.entry(sub).or_default() += 1;
            }
        }
    }

    fn leave(&mut self, members: &[Member]) {
        for meta in members.iter().flat_map(|m| &m.metas) {
            // An unknown meta's leave is ignored.
            if let Some(sub) = self.metas.remove(&hash(&meta.conn_id)) {
                self.forget(sub);
            }
        }
    }

    /// One meta fewer for `sub`; gone at none.
    fn forget(&mut self, sub: u64) {
        if let Entry::Occupied(mut metas) = self.members.entry(sub) {
            *metas.get_mut() -= 1;
            if *metas.get() == 0 {
                metas.remove();
            }
        }
    }
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The view after `frames`, for tests.
#[cfg(test)]
pub fn view(frames: &[&str]) -> View {
    let mut view = View::default();
    for frame in frames {
        view.apply(frame).unwrap();
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_pages_add_up_and_a_new_state_replaces_them() {
        let v = view(&[
            r#"{"type":"presence_state","room":"r","members":[{"sub":"a","metas":[{"conn_id":"1"}]}],"counts_only":false,"more":true}"#,
            r#"{"type":"presence_state","room":"r","members":[{"sub":"b","metas":[{"conn_id":"2"}]}],"counts_only":false,"more":false}"#,
        ]);
        assert_eq!(v.members(), 2);
        let mut v = v;
        v.apply(r#"{"type":"presence_state","room":"r","members":[{"sub":"c","metas":[{"conn_id":"3"}]}],"counts_only":false,"more":false}"#).unwrap();
        assert_eq!(v.members(), 1);
    }

    #[test]
    fn diffs_apply_leaves_then_joins_by_conn_id() {
        let v = view(&[
            r#"{"type":"presence_state","room":"r","members":[{"sub":"a","metas":[{"conn_id":1},{"conn_id":2}]}],"counts_only":false,"more":false}"#,
            // The same meta leaves and joins again: still there.
            r#"{"type":"presence","room":"r","joins":[{"sub":"a","metas":[{"conn_id":1}]}],"leaves":[{"sub":"a","metas":[{"conn_id":1}]}]}"#,
            // One of two metas leaves: a stays; an unknown leave is ignored.
            r#"{"type":"presence","room":"r","joins":[],"leaves":[{"sub":"a","metas":[{"conn_id":2}]},{"sub":"x","metas":[{"conn_id":9}]}]}"#,
            // A repeated join replaces, it does not count twice.
            r#"{"type":"presence","room":"r","joins":[{"sub":"b","metas":[{"conn_id":"3"}]},{"sub":"b","metas":[{"conn_id":"3"}]}],"leaves":[]}"#,
        ]);
        assert_eq!(v.members(), 2);
        let mut v = v;
        v.apply(r#"{"type":"presence","room":"r","joins":[],"leaves":[{"sub":"a","metas":[{"conn_id":1}]}]}"#).unwrap();
        assert_eq!(v.members(), 1);
    }

    #[test]
    fn the_counts_only_notice_empties_the_list_and_occupancy_keeps_the_last_count() {
        let v = view(&[
            r#"{"type":"welcome","room":"r"}"#,
            r#"{"type":"presence_state","room":"r","members":[{"sub":"a","metas":[{"conn_id":"1"}]}],"counts_only":false,"more":false}"#,
            r#"{"type":"occupancy","room":"r","connections":1,"users":1,"members":1}"#,
            r#"{"type":"presence","room":"r","counts_only":true,"joins":[],"leaves":[]}"#,
            r#"{"type":"occupancy","room":"r","connections":1001,"users":1001,"members":1001}"#,
        ]);
        assert!(v.counts_only());
        assert_eq!(v.members(), 0);
        assert_eq!(v.connections(), Some(1001));
    }
}
