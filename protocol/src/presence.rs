//! Who is in a room (docs/protocol.md, "Presence"): members, their
//! connections, the room's occupancy, and what subscribers are told of
//! them and when.
//!
//! One [`Presence`] lives in the room's own object, which sees every
//! connection of the room (its own, and those its shards report), so its
//! counts are exact at any size. It is built for storms: a join or a leave
//! is O(1) and only marks what changed; [`Presence::flush`], at most once
//! per interval, turns the marks into one diff for every subscriber, so N
//! joins cost O(N) work and O(subscribers × intervals) frames, never a
//! frame per join per subscriber. A connection that drops without a close
//! lingers for the grace period and is taken over by the next connection of
//! the same subject, so a reconnect is neither a leave nor a join.
//!
//! Nothing here is stored: after an eviction the room rebuilds the set from
//! its sockets' sessions and its shards' lists ([`Presence::restored`]),
//! without telling anyone, because nothing changed for them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::TURN_BYTES;
use crate::wire::{PresenceEvent, ServerFrame};

/// Most presence events a room keeps for a bridge that has not
/// acknowledged them (and at most [`TURN_BYTES`] of them).
pub const LINK_EVENTS: usize = 1000;

/// Default of `PRESENCE_INTERVAL_MS`: at most one diff and one occupancy
/// frame per this long.
pub const DEFAULT_INTERVAL_MS: u64 = 1000;
/// Default of `PRESENCE_GRACE_MS`.
pub const DEFAULT_GRACE_MS: u64 = 5000;
/// Default of `PRESENCE_MEMBERS_LIMIT`.
pub const DEFAULT_MEMBERS_LIMIT: u64 = 1000;
/// Largest `presence_state` frame: well under the runtime's 1 MiB message,
/// so a client's parser never holds a huge list at once.
pub const STATE_FRAME_BYTES: usize = 256 * 1024;
/// Most members one HTTP page holds.
pub const MAX_PAGE: usize = 1000;
/// Members an HTTP page holds unless asked for another number.
pub const DEFAULT_PAGE: usize = 100;

/// The timing and size a room's presence runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub interval_ms: u64,
    pub grace_ms: u64,
    pub members_limit: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval_ms: DEFAULT_INTERVAL_MS,
            grace_ms: DEFAULT_GRACE_MS,
            members_limit: DEFAULT_MEMBERS_LIMIT,
        }
    }
}

/// A connection that opened: who, whether it is shown (its token carries
/// the presence right for the room) and what it shows (the token's `info`).
/// Shards send these to the room when their clients join.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub conn_id: String,
    pub sub: String,
    pub shown: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

/// One connection of a member, as subscribers see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub conn_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

impl PartialEq for Joined {
    fn eq(&self, other: &Joined) -> bool {
        (&self.conn_id, &self.sub, self.shown) == (&other.conn_id, &other.sub, other.shown)
            && self.info.as_ref().map(|i| i.get()) == other.info.as_ref().map(|i| i.get())
    }
}

impl PartialEq for Meta {
    fn eq(&self, other: &Meta) -> bool {
        self.conn_id == other.conn_id
            && self.info.as_ref().map(|i| i.get()) == other.info.as_ref().map(|i| i.get())
    }
}

/// A subject and some of its connections: all of them in a state, the
/// ones that joined or left in a diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub sub: String,
    pub metas: Vec<Meta>,
}

/// How many are in the room: every open client connection, the distinct
/// subjects holding them, and those of them shown as members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Occupancy {
    pub connections: u64,
    pub users: u64,
    pub members: u64,
}

/// What changed among the members since the last flush.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub joins: Vec<Member>,
    pub leaves: Vec<Member>,
}

/// What one flush has to say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flush {
    /// For connections that see members; `None` when no member changed,
    /// and while the room is counts-only.
    pub diff: Option<Diff>,
    /// For every connection, when it changed since last said.
    pub occupancy: Option<Occupancy>,
    /// The room switched: `Some(true)` to counts only (diffs stop),
    /// `Some(false)` back to members (members are sent their state again).
    pub counts_only: Option<bool>,
}

/// `GET /v1/rooms/{room}/presence`: the counts, and a page of members for
/// a token that may see them.
#[derive(Debug, Clone, Serialize)]
pub struct MemberPage {
    pub room: String,
    pub occupancy: Occupancy,
    pub counts_only: bool,
    pub members: Vec<Member>,
    pub next: Option<String>,
}

/// What one flush tells the client sockets of one object (the room's own,
/// or a shard's, which gets it from the room): `state` and `diff` go to
/// connections that see members, `occupancy` to every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct News {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupancy: Option<String>,
}

impl News {
    pub fn is_empty(&self) -> bool {
        self.state.is_empty() && self.diff.is_none() && self.occupancy.is_none()
    }
}

struct Conn {
    sub: String,
    shown: bool,
    info: Option<Box<RawValue>>,
    /// Dropped without a close: leaves at this time unless taken over.
    lingering: Option<u64>,
}

impl Conn {
    fn meta(&self, conn_id: &str) -> Meta {
        Meta {
            conn_id: conn_id.to_owned(),
            info: self.info.clone(),
        }
    }
}

/// A room's members and connections, and what its subscribers have not
/// been told yet.
pub struct Presence {
    settings: Settings,
    conns: HashMap<String, Conn>,
    /// Connections per subject, shown or not.
    users: HashMap<String, u64>,
    /// Shown connections per member, sorted so pages are stable.
    members: BTreeMap<String, BTreeSet<String>>,
    lingering: BTreeSet<(u64, String)>,
    /// Metas that joined or left since the last flush, by `conn_id`: a
    /// connection that came and went within one interval is in neither.
    joins: HashMap<String, (String, Meta)>,
    leaves: HashMap<String, (String, Meta)>,
    told: Occupancy,
    counts_only: bool,
    /// When the last flush spoke; `None` before the first.
    flushed_ms: Option<u64>,
}

impl Presence {
    pub fn new(settings: Settings) -> Presence {
        Presence {
            settings,
            conns: HashMap::new(),
            users: HashMap::new(),
            members: BTreeMap::new(),
            lingering: BTreeSet::new(),
            joins: HashMap::new(),
            leaves: HashMap::new(),
            told: Occupancy::default(),
            counts_only: false,
            flushed_ms: None,
        }
    }

    /// New settings (a policy change); they apply from the next flush.
    pub fn configure(&mut self, settings: Settings) {
        self.settings = settings;
    }

    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            connections: self.conns.len() as u64,
            users: self.users.len() as u64,
            members: self.members.len() as u64,
        }
    }

    /// Whether the room is past its members limit: counts flow, diffs not.
    pub fn counts_only(&self) -> bool {
        self.counts_only
    }

    pub fn holds(&self, conn_id: &str) -> bool {
        self.conns.contains_key(conn_id)
    }

    /// A connection opened. If its subject has a connection lingering, the
    /// newest of them is taken over: its meta leaves in the same diff that
    /// this one joins, so the member never leaves.
    pub fn joined(&mut self, joined: Joined) {
        if self.conns.contains_key(&joined.conn_id) {
            return;
        }
        let taken_over = self
            .lingering
            .iter()
            .rev()
            .find(|(_, c)| self.conns.get(c).is_some_and(|conn| conn.sub == joined.sub))
            .cloned();
        if let Some((_, conn_id)) = taken_over {
            self.left(&conn_id);
        }
        if joined.shown {
            let meta = Meta {
                conn_id: joined.conn_id.clone(),
                info: joined.info.clone(),
            };
            self.joins
                .insert(joined.conn_id.clone(), (joined.sub.clone(), meta));
        }
        self.insert(joined);
    }

    /// A connection known before the object woke: counted and listed,
    /// told to nobody.
    pub fn restored(&mut self, joined: Joined) {
        if self.conns.contains_key(&joined.conn_id) {
            return;
        }
        let before = self.occupancy();
        self.insert(joined);
        let after = self.occupancy();
        let told = &mut self.told;
        told.connections += after.connections - before.connections;
        told.users += after.users - before.users;
        told.members += after.members - before.members;
    }

    fn insert(&mut self, joined: Joined) {
        *self.users.entry(joined.sub.clone()).or_default() += 1;
        if joined.shown {
            self.members
                .entry(joined.sub.clone())
                .or_default()
                .insert(joined.conn_id.clone());
        }
        let conn = Conn {
            sub: joined.sub,
            shown: joined.shown,
            info: joined.info,
            lingering: None,
        };
        self.conns.insert(joined.conn_id, conn);
    }

    /// A connection closed cleanly (by either side): it leaves at the next
    /// flush.
    pub fn left(&mut self, conn_id: &str) {
        let Some(conn) = self.conns.remove(conn_id) else {
            return;
        };
        if let Some(until) = conn.lingering {
            self.lingering.remove(&(until, conn_id.to_owned()));
        }
        if let Some(n) = self.users.get_mut(&conn.sub) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(&conn.sub);
            }
        }
        if !conn.shown {
            return;
        }
        if let Some(set) = self.members.get_mut(&conn.sub) {
            set.remove(conn_id);
            if set.is_empty() {
                self.members.remove(&conn.sub);
            }
        }
        if self.joins.remove(conn_id).is_none() {
            let meta = conn.meta(conn_id);
            self.leaves.insert(conn_id.to_owned(), (conn.sub, meta));
        }
    }

    /// A connection dropped without a close: it stays for the grace period
    /// unless its subject comes back (see [`Presence::joined`]).
    pub fn dropped(&mut self, conn_id: &str, now_ms: u64) {
        if self.settings.grace_ms == 0 {
            return self.left(conn_id);
        }
        let until = now_ms.saturating_add(self.settings.grace_ms);
        let Some(conn) = self.conns.get_mut(conn_id) else {
            return;
        };
        if conn.lingering.is_none() {
            conn.lingering = Some(until);
            self.lingering.insert((until, conn_id.to_owned()));
        }
    }

    fn changed(&self) -> bool {
        !self.joins.is_empty()
            || !self.leaves.is_empty()
            || self.occupancy() != self.told
            || self.switch().is_some()
    }

    /// Whether the members limit is crossed: over it the room goes counts
    /// only, and it comes back at nine tenths of it, so a room hovering at
    /// the limit does not resend its whole state every interval.
    fn switch(&self) -> Option<bool> {
        let members = self.members.len() as u64;
        let limit = self.settings.members_limit;
        if !self.counts_only && members > limit {
            Some(true)
        } else if self.counts_only && members <= limit - limit / 10 {
            Some(false)
        } else {
            None
        }
    }

    /// When [`Presence::flush`] has something to say next, if anything.
    pub fn due_ms(&self) -> Option<u64> {
        let linger = self.lingering.first().map(|(until, _)| *until);
        let speak = self.changed().then(|| {
            self.flushed_ms
                .map_or(0, |at| at.saturating_add(self.settings.interval_ms))
        });
        match (linger, speak) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What subscribers are to be told at `now_ms`: the lingering
    /// connections whose grace ran out leave, and once per interval what
    /// changed goes out. `None` when there is nothing to say yet.
    pub fn flush(&mut self, now_ms: u64) -> Option<Flush> {
        while let Some((until, conn_id)) = self.lingering.first().cloned() {
            if until > now_ms {
                break;
            }
            self.left(&conn_id);
        }
        let next = self
            .flushed_ms
            .map_or(0, |at| at.saturating_add(self.settings.interval_ms));
        if now_ms < next || !self.changed() {
            return None;
        }
        self.flushed_ms = Some(now_ms);
        let counts_only = self.switch();
        if let Some(on) = counts_only {
            self.counts_only = on;
        }
        let joins = std::mem::take(&mut self.joins);
        let leaves = std::mem::take(&mut self.leaves);
        let diff = (!self.counts_only && counts_only.is_none())
            .then(|| Diff {
                joins: grouped(joins),
                leaves: grouped(leaves),
            })
            .filter(|d| !d.joins.is_empty() || !d.leaves.is_empty());
        let occupancy = self.occupancy();
        let occupancy = (occupancy != self.told).then_some(occupancy);
        self.told = self.occupancy();
        Some(Flush {
            diff,
            occupancy,
            counts_only,
        })
    }

    /// The HTTP page of members after `after`; none for a token that may
    /// not see them (`sees_members`), whose page still has the counts.
    pub fn member_page(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
        sees_members: bool,
    ) -> MemberPage {
        let (members, next) = if sees_members {
            self.page(after, limit.clamp(1, MAX_PAGE))
        } else {
            (Vec::new(), None)
        };
        MemberPage {
            room: room.to_owned(),
            occupancy: self.occupancy(),
            counts_only: self.counts_only,
            members,
            next,
        }
    }

    /// What a connection that just joined gets after its welcome and
    /// replay: the members, when it may see them, and the counts.
    pub fn greeting(&self, room: &str, sees_members: bool) -> Vec<String> {
        let mut frames = if sees_members {
            self.state_frames(room)
        } else {
            Vec::new()
        };
        frames.push(occupancy_frame(room, self.occupancy()));
        frames
    }

    /// The frames of `flush` for `room`: the state again when the room
    /// came back from counts only, the notice when it went.
    pub fn news(&self, room: &str, flush: &Flush) -> News {
        let diff = match flush.counts_only {
            Some(true) => Some(counts_only_frame(room)),
            _ => flush.diff.as_ref().map(|d| diff_frame(room, d)),
        };
        News {
            state: match flush.counts_only {
                Some(false) => self.state_frames(room),
                _ => Vec::new(),
            },
            diff,
            occupancy: flush.occupancy.map(|o| occupancy_frame(room, o)),
        }
    }

    /// Members after `after` (by `sub`), at most `limit`, and the `sub` to
    /// ask after for the next page when there are more.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Member>, Option<String>) {
        use std::ops::Bound;
        let start = match after {
            Some(sub) => Bound::Excluded(sub.to_owned()),
            None => Bound::Unbounded,
        };
        let mut range = self.members.range((start, Bound::Unbounded));
        let page: Vec<Member> = range
            .by_ref()
            .take(limit)
            .map(|(sub, conns)| self.member(sub, conns))
            .collect();
        let next = match range.next() {
            Some(_) => page.last().map(|m| m.sub.clone()),
            None => None,
        };
        (page, next)
    }

    fn member(&self, sub: &str, conns: &BTreeSet<String>) -> Member {
        Member {
            sub: sub.to_owned(),
            metas: conns
                .iter()
                .filter_map(|c| self.conns.get(c).map(|conn| conn.meta(c)))
                .collect(),
        }
    }

    /// The `presence_state` frames a connection that sees members gets on
    /// joining: every member, in frames of at most [`STATE_FRAME_BYTES`]
    /// (one member more when a single member is larger), `more` on all but
    /// the last; one empty frame in a counts-only room.
    pub fn state_frames(&self, room: &str) -> Vec<String> {
        let mut frames = Vec::new();
        let mut members: Vec<String> = Vec::new();
        let mut bytes = 0;
        if !self.counts_only {
            for (sub, conns) in &self.members {
                let member = json(&self.member(sub, conns));
                if bytes + member.len() > STATE_FRAME_BYTES && !members.is_empty() {
                    frames.push(state_frame(room, &members, false, true));
                    members.clear();
                    bytes = 0;
                }
                bytes += member.len() + 1;
                members.push(member);
            }
        }
        frames.push(state_frame(room, &members, self.counts_only, false));
        frames
    }
}

fn state_frame(room: &str, members: &[String], counts_only: bool, more: bool) -> String {
    format!(
        r#"{{"type":"presence_state","room":{},"members":[{}],"counts_only":{counts_only},"more":{more}}}"#,
        json(room),
        members.join(",")
    )
}

/// The `presence` frame of a diff.
pub fn diff_frame(room: &str, diff: &Diff) -> String {
    format!(
        r#"{{"type":"presence","room":{},"joins":{},"leaves":{}}}"#,
        json(room),
        json(&diff.joins),
        json(&diff.leaves)
    )
}

/// The `presence` frame that says diffs stop: the room is past its limit.
pub fn counts_only_frame(room: &str) -> String {
    format!(
        r#"{{"type":"presence","room":{},"counts_only":true,"joins":[],"leaves":[]}}"#,
        json(room)
    )
}

/// The `occupancy` frame.
pub fn occupancy_frame(room: &str, occupancy: Occupancy) -> String {
    let Occupancy {
        connections,
        users,
        members,
    } = occupancy;
    format!(
        r#"{{"type":"occupancy","room":{},"connections":{connections},"users":{users},"members":{members}}}"#,
        json(room)
    )
}

/// The room's presence events for its bridge link, kept until the bridge
/// acknowledges them (`presence_ack`) and sent again on the next link, so a
/// bridge that fails over loses none. They live in memory, bounded: a room
/// whose bridge stays away drops the oldest, and the next event says so
/// (`gap`); its `occupancy` is the whole count, so a backend that missed
/// diffs is still right about the numbers.
#[derive(Debug, Default)]
pub struct LinkEvents {
    /// The `pseq` of the last event made.
    last: u64,
    kept: VecDeque<(u64, String)>,
    bytes: usize,
    gap: bool,
}

impl LinkEvents {
    /// The event of one flush, kept; its frame.
    pub fn push(&mut self, room: &str, at: u64, flush: &Flush, occupancy: Occupancy) -> &str {
        let (joins, leaves) = match &flush.diff {
            Some(diff) => (json(&diff.joins), json(&diff.leaves)),
            None => ("[]".to_owned(), "[]".to_owned()),
        };
        let raw = |text: String| RawValue::from_string(text).unwrap_or_default();
        self.last = next_pseq(self.last, at);
        let event = PresenceEvent {
            room: room.to_owned(),
            pseq: self.last,
            at,
            joins: raw(joins),
            leaves: raw(leaves),
            occupancy: raw(json(&occupancy)),
            gap: std::mem::take(&mut self.gap),
        };
        let frame = ServerFrame::Presence(Cow::Owned(event)).to_json();
        self.bytes += frame.len();
        self.kept.push_back((self.last, frame));
        while self.kept.len() > LINK_EVENTS || self.bytes > TURN_BYTES as usize {
            let Some((_, old)) = self.kept.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.gap = true;
        }
        self.kept.back().map_or("", |(_, f)| f.as_str())
    }

    /// The bridge stored every event up to `pseq`.
    pub fn acked(&mut self, pseq: u64) {
        while self.kept.front().is_some_and(|(n, _)| *n <= pseq) {
            if let Some((_, old)) = self.kept.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    /// The frames not acknowledged yet, oldest first.
    pub fn unacked(&self) -> impl Iterator<Item = &str> {
        self.kept.iter().map(|(_, f)| f.as_str())
    }
}

/// The `pseq` after `last` for an event made at `at` (ms). A room's bridge
/// link outlives the room's eviction, while the events kept for it do not:
/// numbering from the time as well, a woken room's events follow those of
/// its previous wake on the same link, whose acknowledgements only move
/// forward.
fn next_pseq(last: u64, at: u64) -> u64 {
    (last + 1).max(at.saturating_mul(1024))
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    // Strings, numbers and already-parsed JSON always serialize.
    serde_json::to_string(value).unwrap_or_default()
}

fn grouped(metas: HashMap<String, (String, Meta)>) -> Vec<Member> {
    let mut by_sub: BTreeMap<String, Vec<Meta>> = BTreeMap::new();
    for (_, (sub, meta)) in metas {
        by_sub.entry(sub).or_default().push(meta);
    }
    by_sub
        .into_iter()
        .map(|(sub, mut metas)| {
            metas.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
            Member { sub, metas }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn settings() -> Settings {
        Settings {
            interval_ms: 1000,
            grace_ms: 5000,
            members_limit: 10,
        }
    }

    fn join(p: &mut Presence, conn: &str, sub: &str, shown: bool) {
        p.joined(Joined {
            conn_id: conn.into(),
            sub: sub.into(),
            shown,
            info: None,
        });
    }

    fn subs(members: &[Member]) -> Vec<(&str, Vec<&str>)> {
        members
            .iter()
            .map(|m| {
                let conns = m.metas.iter().map(|x| x.conn_id.as_str()).collect();
                (m.sub.as_str(), conns)
            })
            .collect()
    }

    #[test]
    fn three_users_one_on_two_devices() {
        let mut p = Presence::new(settings());
        join(&mut p, "c1", "ann", true);
        join(&mut p, "c2", "ann", true);
        join(&mut p, "c3", "bob", true);
        join(&mut p, "c4", "cy", false);
        let occupancy = Occupancy {
            connections: 4,
            users: 3,
            members: 2,
        };
        assert_eq!(p.occupancy(), occupancy);
        let flush = p.flush(0).expect("a first flush");
        let diff = flush.diff.expect("joins");
        assert_eq!(
            subs(&diff.joins),
            vec![("ann", vec!["c1", "c2"]), ("bob", vec!["c3"])]
        );
        assert!(diff.leaves.is_empty());
        assert_eq!(flush.occupancy, Some(occupancy));
        assert_eq!(p.flush(5000), None, "nothing changed");
        p.left("c2");
        let flush = p.flush(5000).expect("a leave");
        assert_eq!(subs(&flush.diff.unwrap().leaves), vec![("ann", vec!["c2"])]);
        assert_eq!(flush.occupancy.unwrap().members, 2, "ann stays");
    }

    #[test]
    fn one_diff_per_interval() {
        let mut p = Presence::new(settings());
        join(&mut p, "c1", "ann", true);
        assert!(p.flush(100).is_some());
        join(&mut p, "c2", "bob", true);
        assert_eq!(p.due_ms(), Some(1100));
        assert_eq!(p.flush(600), None, "within the interval");
        join(&mut p, "c3", "cy", true);
        let diff = p.flush(1100).unwrap().diff.unwrap();
        assert_eq!(diff.joins.len(), 2, "batched");
    }

    #[test]
    fn a_visit_within_one_interval_is_not_told() {
        let mut p = Presence::new(settings());
        assert!(p.flush(0).is_none());
        join(&mut p, "c1", "ann", true);
        p.left("c1");
        assert_eq!(p.flush(2000), None);
    }

    #[test]
    fn a_reconnect_within_the_grace_takes_over() {
        let mut p = Presence::new(settings());
        join(&mut p, "c1", "ann", true);
        p.flush(0);
        p.dropped("c1", 1000);
        assert_eq!(p.occupancy().members, 1, "lingering");
        assert_eq!(p.due_ms(), Some(6000));
        join(&mut p, "c2", "ann", true);
        let flush = p.flush(2000).unwrap();
        let diff = flush.diff.unwrap();
        assert_eq!(subs(&diff.leaves), vec![("ann", vec!["c1"])]);
        assert_eq!(subs(&diff.joins), vec![("ann", vec!["c2"])]);
        assert_eq!(flush.occupancy, None, "the same counts");
        assert_eq!(p.due_ms(), None);
    }

    #[test]
    fn a_drop_leaves_after_the_grace() {
        let mut p = Presence::new(settings());
        join(&mut p, "c1", "ann", true);
        p.flush(0);
        p.dropped("c1", 1000);
        assert_eq!(p.flush(5999), None);
        let flush = p.flush(6000).unwrap();
        assert_eq!(subs(&flush.diff.unwrap().leaves), vec![("ann", vec!["c1"])]);
        assert_eq!(p.occupancy(), Occupancy::default());
    }

    #[test]
    fn past_the_limit_counts_only_then_back() {
        let mut p = Presence::new(settings());
        for i in 0..11 {
            join(&mut p, &format!("c{i}"), &format!("u{i:02}"), true);
        }
        let flush = p.flush(0).unwrap();
        assert_eq!(flush.counts_only, Some(true));
        assert_eq!(flush.diff, None);
        assert_eq!(flush.occupancy.unwrap().members, 11);
        assert_eq!(p.state_frames("r").len(), 1);
        assert!(p.state_frames("r")[0].contains(r#""members":[],"counts_only":true"#));
        let (page, next) = p.page(None, 5);
        assert_eq!(page.len(), 5, "the list stays readable");
        assert_eq!(next.as_deref(), Some("u04"));
        p.left("c0");
        let flush = p.flush(1000).unwrap();
        assert_eq!(flush.counts_only, None, "10 is not under nine tenths");
        assert_eq!(flush.diff, None);
        p.left("c1");
        let flush = p.flush(2000).unwrap();
        assert_eq!(flush.counts_only, Some(false));
        assert_eq!(flush.diff, None, "the state is sent again instead");
        join(&mut p, "cx", "ux", true);
        assert!(p.flush(3000).unwrap().diff.is_some(), "diffs resume");
    }

    #[test]
    fn pages_walk_every_member_once() {
        let mut p = Presence::new(settings());
        for i in 0..7 {
            join(&mut p, &format!("c{i}"), &format!("u{i}"), true);
        }
        join(&mut p, "h", "hidden", false);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = p.page(after.as_deref(), 3);
            seen.extend(page.into_iter().map(|m| m.sub));
            match next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (0..7).map(|i| format!("u{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn state_frames_are_bounded_and_parse() {
        let mut p = Presence::new(Settings {
            members_limit: 10_000,
            ..settings()
        });
        let info = RawValue::from_string(format!("\"{}\"", "x".repeat(1000))).unwrap();
        for i in 0..600 {
            p.joined(Joined {
                conn_id: format!("c{i}"),
                sub: format!("u{i:04}"),
                shown: true,
                info: Some(info.clone()),
            });
        }
        let frames = p.state_frames("room");
        assert!(frames.len() >= 3);
        let mut total = 0;
        for (i, frame) in frames.iter().enumerate() {
            assert!(frame.len() <= STATE_FRAME_BYTES + 100, "{}", frame.len());
            let v: serde_json::Value = serde_json::from_str(frame).unwrap();
            assert_eq!(v["more"], i + 1 < frames.len());
            total += v["members"].as_array().unwrap().len();
        }
        assert_eq!(total, 600);
    }

    #[test]
    fn frames_are_json() {
        let diff = Diff {
            joins: vec![Member {
                sub: "a\"b".into(),
                metas: vec![Meta {
                    conn_id: "c".into(),
                    info: Some(RawValue::from_string("{\"n\":1}".into()).unwrap()),
                }],
            }],
            leaves: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&diff_frame("r", &diff)).unwrap();
        assert_eq!(v["joins"][0]["metas"][0]["info"]["n"], 1);
        let o = Occupancy {
            connections: 3,
            users: 2,
            members: 1,
        };
        let v: serde_json::Value = serde_json::from_str(&occupancy_frame("r", o)).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["users"].as_u64()),
            (Some("occupancy"), Some(2))
        );
        let v: serde_json::Value = serde_json::from_str(&counts_only_frame("r")).unwrap();
        assert_eq!(v["counts_only"], true);
    }

    #[test]
    fn link_events_wait_for_their_ack() {
        let mut events = LinkEvents::default();
        let flush = Flush {
            diff: Some(Diff {
                joins: vec![Member {
                    sub: "ann".into(),
                    metas: vec![],
                }],
                leaves: vec![],
            }),
            ..Flush::default()
        };
        let first = events.push("r", 0, &flush, Occupancy::default()).to_owned();
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["pseq"].as_u64()),
            (Some("presence"), Some(1))
        );
        assert_eq!(v["joins"][0]["sub"], "ann");
        events.push("r", 0, &Flush::default(), Occupancy::default());
        assert_eq!(events.unacked().count(), 2);
        events.acked(1);
        let left: Vec<&str> = events.unacked().collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].contains(r#""pseq":2"#) && left[0].contains(r#""joins":[]"#));
        for _ in 0..LINK_EVENTS + 5 {
            events.push("r", 7, &Flush::default(), Occupancy::default());
        }
        assert_eq!(events.unacked().count(), LINK_EVENTS, "bounded");
        let next = events.push("r", 8, &Flush::default(), Occupancy::default());
        assert!(next.contains(r#""gap":true"#), "{next}");
    }

    #[test]
    fn a_woken_room_numbers_its_link_events_after_the_last_wake() {
        let mut before = LinkEvents::default();
        before.push("r", 1_000, &Flush::default(), Occupancy::default());
        let last = before.push("r", 1_000, &Flush::default(), Occupancy::default());
        let last: serde_json::Value = serde_json::from_str(last).unwrap();
        // Evicted: the events kept for the link are gone, the link is not.
        let mut after = LinkEvents::default();
        let first = after.push("r", 1_001, &Flush::default(), Occupancy::default());
        let first: serde_json::Value = serde_json::from_str(first).unwrap();
        assert!(
            first["pseq"].as_u64() > last["pseq"].as_u64(),
            "{first} after {last}"
        );
    }

    #[test]
    fn restored_connections_are_told_to_nobody() {
        let mut p = Presence::new(settings());
        p.restored(Joined {
            conn_id: "c1".into(),
            sub: "ann".into(),
            shown: true,
            info: None,
        });
        assert_eq!(p.occupancy().members, 1);
        assert_eq!(p.flush(0), None);
        p.left("c1");
        let diff = p.flush(0).unwrap().diff.unwrap();
        assert_eq!(subs(&diff.leaves), vec![("ann", vec!["c1"])]);
    }
}
