//! Rooms bigger than one Durable Object (docs/internals.md, "Sharding"): the room's own
//! object stays its single sequencer (seq, epoch, history, idempotency,
//! budgets, the Kafka outbox), and shard objects of the same room hold the
//! client sockets it has no room for. This is the part of that which needs
//! no runtime: where a connection goes, how the sequencer feeds each shard
//! in batches, how a shard keeps its stream gapless and free of duplicates,
//! and what the two say to each other.
//!
//! The sequencer and its shards talk in plain requests, each side calling
//! the other: no socket between them, so both keep the Hibernation API
//! (only accepted sockets hibernate; a socket an object opened would pin it
//! in memory). One request per shard is in flight at a time and whatever
//! accumulates meanwhile goes in the next, so the number of requests
//! follows the number of shards, not of messages, once traffic is heavy.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::draft::Draft;
use crate::error::Refusal;
use crate::history::TURN_BYTES;
use crate::presence::Joined;
use crate::stats::RoomStats;
use crate::wire::Receipt;

/// Default of `ROOM_SHARD_SIZE`: client sockets per object.
pub const DEFAULT_SHARD_SIZE: u64 = 5000;

/// Most messages the sequencer keeps ready for shards (and puts in one
/// batch); a shard further behind fills the rest from history.
pub const FEED_WINDOW: usize = 1000;

/// How long a client placed on a shard may take to reach it. A join is one
/// round trip from the router, so one that has not arrived by then never
/// will (its client went away), and stops holding a place: otherwise a
/// client that kept aborting its upgrades could fill shards with nobody.
pub const PLACEMENT_GRACE_MS: u64 = 10_000;

/// Most publishes a shard holds for the sequencer at once (and at most
/// [`TURN_BYTES`] of them): past it, its clients are told to publish again
/// shortly, so a sequencer that cannot keep up never makes a shard's memory
/// grow without bound.
pub const FORWARD_QUEUE: usize = 1000;

/// Whether a shard holding `queued` publishes of `queued_bytes` in all has
/// room for one more of `bytes`.
pub fn forward_has_room(queued: usize, queued_bytes: usize, bytes: usize) -> bool {
    queued < FORWARD_QUEUE && queued_bytes.saturating_add(bytes) <= TURN_BYTES as usize
}

/// The Durable Object name of shard `index` of `room`. Room names never
/// contain `/`, so a shard's name is never a room's.
pub fn shard_name(room: &str, index: u32) -> String {
    format!("{room}/shard/{index}")
}

/// Where a new connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the sequencer itself.
    Here,
    Shard(u32),
}

/// The sequencer holds the first `size` connections, then each shard in
/// index order up to `size`; `shards` are the shards' open connections.
/// Filling the lowest first keeps the number of shards, and so the
/// sequencer's work per message, as small as the load allows.
pub fn place(own: u64, shards: &[u64], size: u64) -> Placement {
    let size = size.max(1);
    if own < size {
        return Placement::Here;
    }
    let index = shards
        .iter()
        .position(|n| *n < size)
        .unwrap_or(shards.len());
    Placement::Shard(index as u32)
}

/// What a shard does with the next message of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next one: send it to the shard's clients.
    Deliver,
    /// Already delivered (a retried batch, or a gap fill that raced it).
    Skip,
    /// Messages after `after` are missing before this one: fetch them from
    /// the sequencer first.
    Gap { after: u64 },
}

/// The position of a shard's stream: the last seq its clients were sent.
/// Unknown in a fresh shard and after an eviction, when the sequencer's
/// word (`prev`) or the first message sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stream {
    delivered: Option<u64>,
}

impl Stream {
    pub fn delivered(&self) -> Option<u64> {
        self.delivered
    }

    /// Puts the stream at `seq`: a shard whose clients are all new starts
    /// where the sequencer's head was when they joined.
    pub fn start_at(&mut self, seq: u64) {
        self.delivered = Some(seq);
    }

    /// Decides about message `seq`; `prev` is the last seq the sequencer
    /// believes this shard delivered (`None` when it does not know).
    pub fn step(&mut self, seq: u64, prev: Option<u64>) -> Step {
        let delivered = *self
            .delivered
            .get_or_insert_with(|| prev.unwrap_or(seq.saturating_sub(1)));
        if seq <= delivered {
            Step::Skip
        } else if seq == delivered + 1 {
            self.delivered = Some(seq);
            Step::Deliver
        } else {
            Step::Gap { after: delivered }
        }
    }
}

/// A run of `message` frames in seq order, as the sequencer sends them:
/// a first line `prev <seq>` (or `prev -`), then per message a line
/// `<seq> <length>` and that many bytes of frame, then a newline.
///
/// Each frame is counted out by its length and never scanned, so nothing a
/// frame contains (a newline in a stored message, a line that looks like a
/// seq) can be read as framing; the shard reads the seqs without parsing a
/// frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<'a> {
    pub prev: Option<u64>,
    pub frames: Vec<(u64, &'a str)>,
}

pub fn encode_batch<'a>(
    prev: Option<u64>,
    frames: impl IntoIterator<Item = (u64, &'a str)>,
) -> String {
    let mut out = match prev {
        Some(prev) => format!("prev {prev}\n"),
        None => "prev -\n".to_owned(),
    };
    for (seq, frame) in frames {
        push_record(&mut out, &seq.to_string(), frame);
    }
    out
}

/// Appends `<label> <length>\n<text>\n`.
fn push_record(out: &mut String, label: &str, text: &str) {
    out.push_str(label);
    out.push(' ');
    out.push_str(&text.len().to_string());
    out.push('\n');
    out.push_str(text);
    out.push('\n');
}

/// Reads one `<label> <length>\n<text>\n` record off the front of `input`:
/// the label, the text and what follows.
fn next_record(input: &str) -> Result<(&str, &str, &str), String> {
    let (head, rest) = input
        .split_once('\n')
        .ok_or_else(|| format!("a record starts with `<label> <length>`, not {input:.40?}"))?;
    let (label, length) = head
        .split_once(' ')
        .ok_or_else(|| format!("a record starts with `<label> <length>`, not {head:.40?}"))?;
    let length: usize =
        decimal(length).ok_or_else(|| format!("bad record length {length:.20?}"))?;
    let text = rest
        .get(..length)
        .ok_or_else(|| format!("a record of {length} bytes is cut short"))?;
    let rest = rest[length..]
        .strip_prefix('\n')
        .ok_or_else(|| format!("a record of {length} bytes does not end its line"))?;
    Ok((label, text, rest))
}

/// A number as the encoder writes it: decimal digits, without a sign or a
/// leading zero. Taking `+7` or `007` as well would give one batch several
/// texts, and the same frames could then be framed two ways.
fn decimal<T: std::str::FromStr>(text: &str) -> Option<T> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

pub fn parse_batch(text: &str) -> Result<Batch<'_>, String> {
    let (first, rest) = text
        .split_once('\n')
        .ok_or_else(|| "a batch starts with a prev line".to_owned())?;
    let prev = match first.strip_prefix("prev ") {
        Some("-") => None,
        Some(n) => Some(decimal(n).ok_or_else(|| format!("bad prev line {first:.40?}"))?),
        None => return Err(format!("a batch starts with a prev line, not {first:.40?}")),
    };
    Ok(Batch {
        prev,
        frames: parse_frames(rest)?,
    })
}

fn parse_frames(mut text: &str) -> Result<Vec<(u64, &str)>, String> {
    let mut frames = Vec::new();
    let mut last = 0;
    while !text.is_empty() {
        let (seq, frame, rest) = next_record(text)?;
        let seq: u64 = decimal(seq).ok_or_else(|| format!("bad seq {seq:.20?}"))?;
        if seq <= last {
            return Err(format!("seq {seq} after {last}: frames go in seq order"));
        }
        last = seq;
        frames.push((seq, frame));
        text = rest;
    }
    Ok(frames)
}

/// The sequencer's answer to a shard's join: the `welcome` frame to send as
/// it is, the presence frames the client gets after its replay, then the
/// messages to replay, framed as in a [`Batch`].
pub fn encode_join_reply<'a>(
    welcome: &str,
    presence: &[String],
    replay: impl IntoIterator<Item = (u64, &'a str)>,
) -> String {
    let mut out = String::new();
    push_record(&mut out, "welcome", welcome);
    for frame in presence {
        push_record(&mut out, "presence", frame);
    }
    for (seq, frame) in replay {
        push_record(&mut out, &seq.to_string(), frame);
    }
    out
}

/// A join reply as the shard reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply<'a> {
    pub welcome: &'a str,
    pub presence: Vec<&'a str>,
    pub replay: Vec<(u64, &'a str)>,
}

pub fn parse_join_reply(text: &str) -> Result<JoinReply<'_>, String> {
    let (label, welcome, mut rest) = next_record(text)?;
    if label != "welcome" {
        return Err("a join reply starts with the welcome frame".into());
    }
    let mut presence = Vec::new();
    while rest.starts_with("presence ") {
        let (_, frame, after) = next_record(rest)?;
        presence.push(frame);
        rest = after;
    }
    Ok(JoinReply {
        welcome,
        presence,
        replay: parse_frames(rest)?,
    })
}

/// A shard's join request: the resume it was asked for; the identity rides
/// in the same header as the router's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub shard: u32,
    /// The connection the sequencer placed here (and counts already).
    pub conn_id: String,
    pub since: Option<u64>,
    pub epoch: Option<String>,
}

/// What a shard tells the sequencer after each batch: how far its stream
/// is, and its counters since the last report; when asked, every
/// connection it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub delivered: Option<u64>,
    pub stats: RoomStats,
    /// Every connection it holds, when the sequencer asked (after it woke
    /// without knowing them): `(conn_id, sub)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<(String, String)>>,
    /// With `connections`: those of them that are members, and what they
    /// show, so a room that woke counts its presence without a diff.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<Joined>,
}

/// One publish from a shard's client, sequenced by the room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forwarded {
    pub sub: String,
    /// The publisher holds the bridge's token.
    pub bridge: bool,
    pub data: Box<RawValue>,
    pub id: Option<String>,
    pub trace: Option<String>,
}

impl Forwarded {
    pub fn new(sub: &str, bridge: bool, draft: Draft) -> Forwarded {
        Forwarded {
            sub: sub.to_owned(),
            bridge,
            data: draft.data,
            id: draft.id,
            trace: draft.trace,
        }
    }

    pub fn into_draft(self) -> Draft {
        Draft {
            data: self.data,
            id: self.id,
            trace: self.trace,
            kafka: None,
        }
    }
}

/// What a shard sends the sequencer: its clients' publishes, in the order
/// they arrived, the connections it accepted and those that closed (by
/// `conn_id`), so the sequencer counts what the shard holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Forward {
    pub shard: u32,
    pub publishes: Vec<Forwarded>,
    #[serde(default)]
    pub joins: Vec<String>,
    pub leaves: Vec<String>,
    /// Those of `leaves` that dropped without a close: they linger in the
    /// room's presence for its grace period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
}

/// The sequencer's answer for one forwarded publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Stored(Receipt),
    Refused(Refusal),
}

/// The sequencer's view of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLink {
    /// The last seq the shard confirmed delivered. After a wake the
    /// sequencer presumes the head it woke with: it fed its shards before
    /// it slept, and a shard that knows better says so (its answer wins),
    /// while one that forgot too fills what it lacks from history instead
    /// of starting wherever the next batch starts.
    pub sent: Option<u64>,
    /// A batch is in flight.
    pub busy: bool,
    /// The shard listed its connections since the sequencer woke (until
    /// then its count below is not known, and it is fed anyway).
    pub listed: bool,
}

/// A batch for one shard: what the sequencer believes it has, and the
/// frames after that.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub prev: Option<u64>,
    pub frames: Vec<(u64, Rc<str>)>,
}

impl Outgoing {
    pub fn encode(&self) -> String {
        encode_batch(self.prev, self.frames.iter().map(|(seq, f)| (*seq, &**f)))
    }
}

/// The sequencer's side of the fan-out: the shards, the connections they
/// hold ([`Connections`]), and the newest frames kept ready for them, so
/// feeding a shard costs no storage read unless it fell more than
/// [`FEED_WINDOW`] messages behind.
#[derive(Debug, Default)]
pub struct Fanout {
    shards: Vec<ShardLink>,
    connections: Connections,
    recent: VecDeque<(u64, Rc<str>)>,
    recent_bytes: usize,
}

impl Fanout {
    /// A fan-out over `count` shards after a wake at `head`: their
    /// connections are not known until they list them, and each is
    /// presumed to have everything up to `head` (see [`ShardLink::sent`]).
    pub fn woken(count: u32, head: u64) -> Fanout {
        let shard = ShardLink {
            sent: Some(head),
            ..ShardLink::default()
        };
        Fanout {
            shards: vec![shard; count as usize],
            ..Fanout::default()
        }
    }

    pub fn shards(&self) -> &[ShardLink] {
        &self.shards
    }

    /// The connections on the shards.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Shards holding connections (or that may, not having listed them).
    pub fn in_use(&self) -> u64 {
        (0..self.shards.len() as u32)
            .filter(|i| !self.shards[*i as usize].listed || self.connections.on(*i) > 0)
            .count() as u64
    }

    /// Connections on shards, as far as known.
    pub fn clients(&self) -> u64 {
        self.connections.total()
    }

    /// Whether every shard listed its connections.
    pub fn counted(&self) -> bool {
        self.shards.iter().all(|s| s.listed)
    }

    /// Shards whose connections are not known yet.
    pub fn unlisted(&self) -> Vec<u32> {
        (0..self.shards.len() as u32)
            .filter(|i| !self.shards[*i as usize].listed)
            .collect()
    }

    /// Where a new connection goes when the sequencer itself holds `own` of
    /// at most `size`, each shard counted by what it holds and what was
    /// admitted there (a shard not listed yet counts as full).
    pub fn place(&mut self, own: u64, size: u64, now_ms: u64) -> Placement {
        self.connections.expire(now_ms);
        let counts: Vec<u64> = (0..self.shards.len() as u32)
            .map(|i| {
                if self.shards[i as usize].listed {
                    self.connections.on(i)
                } else {
                    u64::MAX
                }
            })
            .collect();
        place(own, &counts, size)
    }

    /// The sequencer admitted `conn_id` of `sub` onto shard `index` at
    /// `now_ms`, while its head is `head`: it counts from now on (see
    /// [`Connections`]), and a shard that held nothing needs nothing older
    /// than `head`.
    pub fn admit(&mut self, conn_id: &str, index: u32, sub: &str, head: u64, now_ms: u64) {
        let len = index as usize + 1;
        if self.shards.len() < len {
            let fresh = ShardLink {
                listed: true,
                ..ShardLink::default()
            };
            self.shards.resize(len, fresh);
        }
        if self.connections.on(index) == 0 && self.shards[index as usize].listed {
            self.shards[index as usize].sent = Some(head);
        }
        self.connections.admitted(conn_id, index, sub, now_ms);
    }

    /// Shard `index` accepted `conn_id`.
    pub fn confirmed(&mut self, conn_id: &str) {
        self.connections.confirmed(conn_id);
    }

    /// `conn_id` closed (or its shard gave up on it).
    pub fn left(&mut self, conn_id: &str) {
        self.connections.left(conn_id);
    }

    /// Connections `sub` holds on shards.
    pub fn subject(&mut self, sub: &str, now_ms: u64) -> u32 {
        self.connections.expire(now_ms);
        self.connections.of(sub)
    }

    /// Keeps a stored message's frame for the shards.
    pub fn remember(&mut self, seq: u64, frame: Rc<str>) {
        if self.shards.is_empty() {
            return;
        }
        self.recent_bytes += frame.len();
        self.recent.push_back((seq, frame));
        while self.recent.len() > FEED_WINDOW || self.recent_bytes > TURN_BYTES as usize {
            if let Some((_, old)) = self.recent.pop_front() {
                self.recent_bytes -= old.len();
            }
        }
    }

    /// Forgets the kept frames (the room's history started over).
    pub fn forget_frames(&mut self) {
        self.recent.clear();
        self.recent_bytes = 0;
    }

    /// The next batch for shard `index` up to `head`, marking it in flight:
    /// its `prev` and frames (the kept ones after what the shard has; a
    /// shard behind the kept ones fills the gap from history). `None` when
    /// the shard is busy, holds no connections or has everything.
    pub fn next_batch(&mut self, index: u32, head: u64) -> Option<Outgoing> {
        let empty = self.connections.on(index) == 0;
        let shard = self.shards.get_mut(index as usize)?;
        if shard.busy || (shard.listed && empty) || shard.sent.is_some_and(|s| s >= head) {
            return None;
        }
        let after = shard.sent.unwrap_or(0);
        let frames: Vec<(u64, Rc<str>)> = self
            .recent
            .iter()
            .filter(|(seq, _)| *seq > after && *seq <= head)
            .cloned()
            .collect();
        if frames.is_empty() && shard.sent.is_none() {
            // Nothing kept to send a shard whose position is unknown: it
            // learns the head with the next message.
            return None;
        }
        shard.busy = true;
        Some(Outgoing {
            prev: shard.sent,
            frames,
        })
    }

    /// Shard `index` answered a batch with `report`.
    pub fn delivered(&mut self, index: u32, report: &ShardReport) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.busy = false;
        }
        self.reported(index, report);
    }

    /// Shard `index` said where it stands (after a batch, or when asked,
    /// with its connections). A shard that knows its position is right
    /// about it, even below what the sequencer presumed.
    pub fn reported(&mut self, index: u32, report: &ShardReport) {
        let Some(shard) = self.shards.get_mut(index as usize) else {
            return;
        };
        shard.sent = report.delivered.or(shard.sent);
        if let Some(connections) = &report.connections {
            shard.listed = true;
            self.connections.listed(index, connections);
        }
    }

    /// A batch to shard `index` failed: the next one starts where this did.
    pub fn failed(&mut self, index: u32) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.busy = false;
        }
    }
}

/// The connections a room's shards hold, by `conn_id`, as the sequencer
/// counts them: per shard (where to place the next, which to feed) and per
/// subject (`MAX_CONNECTIONS_PER_SUBJECT`).
///
/// A connection counts from the moment the sequencer places it on a shard
/// (its `conn_id` travels with the join), so racing joins cannot overfill
/// a shard or a subject's limit; it stays provisional until the shard says
/// it accepted it, and one the shard never accepted (a client that went
/// away between the redirect and the shard, a shard that failed) stops
/// counting after [`PLACEMENT_GRACE_MS`]. Nothing else changes a count:
/// no report can zero a shard that holds clients. After the sequencer
/// woke, each shard lists what it holds once; keyed by `conn_id`, a list,
/// a confirmation and a close count the same in any order.
#[derive(Debug, Default)]
pub struct Connections {
    conns: HashMap<String, Tenancy>,
    per_subject: HashMap<String, u32>,
    per_shard: HashMap<u32, u64>,
}

#[derive(Debug, Clone)]
struct Tenancy {
    shard: u32,
    sub: String,
    /// When the sequencer admitted it, until its shard confirms it.
    admitted_ms: Option<u64>,
}

impl Connections {
    /// Connections `sub` holds on shards, admitted ones included.
    pub fn of(&self, sub: &str) -> u32 {
        self.per_subject.get(sub).copied().unwrap_or(0)
    }

    /// Connections on shard `index`, admitted ones included.
    pub fn on(&self, index: u32) -> u64 {
        self.per_shard.get(&index).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.per_shard.values().sum()
    }

    /// Whether `conn_id` was admitted onto `index` and not given up.
    pub fn holds(&self, conn_id: &str, index: u32) -> bool {
        self.conns.get(conn_id).is_some_and(|t| t.shard == index)
    }

    fn admitted(&mut self, conn_id: &str, shard: u32, sub: &str, now_ms: u64) {
        self.insert(conn_id, shard, sub, Some(now_ms));
    }

    fn confirmed(&mut self, conn_id: &str) {
        if let Some(tenancy) = self.conns.get_mut(conn_id) {
            tenancy.admitted_ms = None;
        }
    }

    fn left(&mut self, conn_id: &str) {
        if let Some(tenancy) = self.conns.remove(conn_id) {
            self.uncount(&tenancy);
        }
    }

    /// Forgets admissions their shard has not confirmed within
    /// [`PLACEMENT_GRACE_MS`].
    fn expire(&mut self, now_ms: u64) {
        let stale: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, t)| {
                t.admitted_ms
                    .is_some_and(|at| now_ms >= at.saturating_add(PLACEMENT_GRACE_MS))
            })
            .map(|(conn_id, _)| conn_id.clone())
            .collect();
        for conn_id in stale {
            self.left(&conn_id);
        }
    }

    /// What shard `index` listed it holds: each one counts (and is
    /// confirmed), once.
    fn listed(&mut self, shard: u32, connections: &[(String, String)]) {
        for (conn_id, sub) in connections {
            match self.conns.get_mut(conn_id) {
                Some(tenancy) => tenancy.admitted_ms = None,
                None => self.insert(conn_id, shard, sub, None),
            }
        }
    }

    fn insert(&mut self, conn_id: &str, shard: u32, sub: &str, admitted_ms: Option<u64>) {
        let tenancy = Tenancy {
            shard,
            sub: sub.to_owned(),
            admitted_ms,
        };
        if let Some(old) = self.conns.insert(conn_id.to_owned(), tenancy) {
            self.uncount(&old);
        }
        *self.per_subject.entry(sub.to_owned()).or_default() += 1;
        *self.per_shard.entry(shard).or_default() += 1;
    }

    fn uncount(&mut self, tenancy: &Tenancy) {
        if let Some(n) = self.per_subject.get_mut(&tenancy.sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_subject.remove(&tenancy.sub);
            }
        }
        if let Some(n) = self.per_shard.get_mut(&tenancy.shard) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_shard.remove(&tenancy.shard);
            }
        }
    }
}

/// Acks a shard holds until its stream has delivered the acked message:
/// the publisher sees its own message before the ack, as on the sequencer.
#[derive(Debug)]
pub struct Waiting<T> {
    by_seq: BTreeMap<u64, Vec<T>>,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Waiting {
            by_seq: BTreeMap::new(),
        }
    }
}

impl<T> Waiting<T> {
    pub fn push(&mut self, seq: u64, item: T) {
        self.by_seq.entry(seq).or_default().push(item);
    }

    /// Everything waiting for a seq up to `delivered`, in seq order.
    pub fn due(&mut self, delivered: u64) -> Vec<T> {
        let later = self.by_seq.split_off(&(delivered + 1));
        std::mem::replace(&mut self.by_seq, later)
            .into_values()
            .flatten()
            .collect()
    }

    /// The highest seq anything waits for.
    pub fn highest(&self) -> Option<u64> {
        self.by_seq.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn report(delivered: u64) -> ShardReport {
        ShardReport {
            delivered: Some(delivered),
            stats: RoomStats::default(),
            connections: None,
            members: Vec::new(),
        }
    }

    #[test]
    fn the_sequencer_fills_first_then_the_lowest_shard() {
        assert_eq!(place(4, &[], 5), Placement::Here);
        assert_eq!(place(5, &[], 5), Placement::Shard(0));
        assert_eq!(place(5, &[5, 2], 5), Placement::Shard(1));
        assert_eq!(place(5, &[3, 5], 5), Placement::Shard(0));
        assert_eq!(place(5, &[5, 5], 5), Placement::Shard(2));
        assert_eq!(place(0, &[], 0), Placement::Here, "a size of 0 is 1");
        assert_eq!(place(1, &[], 0), Placement::Shard(0));
    }

    #[test]
    fn a_shards_forward_queue_is_bounded_by_count_and_bytes() {
        assert!(forward_has_room(0, 0, 10));
        assert!(forward_has_room(FORWARD_QUEUE - 1, 0, 10));
        assert!(!forward_has_room(FORWARD_QUEUE, 0, 10));
        let turn = TURN_BYTES as usize;
        assert!(forward_has_room(3, turn - 10, 10));
        assert!(!forward_has_room(3, turn - 10, 11));
        assert!(
            forward_has_room(0, 0, turn),
            "one publish always fits an empty queue"
        );
    }

    #[test]
    fn shard_names_are_never_room_names() {
        let name = shard_name("chat.lobby", 3);
        assert_eq!(name, "chat.lobby/shard/3");
        assert!(crate::room::RoomName::parse(&name).is_none());
    }

    #[test]
    fn a_stream_delivers_in_order_skips_repeats_and_finds_gaps() {
        let mut stream = Stream::default();
        assert_eq!(stream.step(5, Some(4)), Step::Deliver);
        assert_eq!(stream.step(5, Some(4)), Step::Skip);
        assert_eq!(stream.step(6, None), Step::Deliver);
        assert_eq!(stream.step(9, Some(6)), Step::Gap { after: 6 });
        assert_eq!(stream.delivered(), Some(6), "a gap does not move it");
        assert_eq!(stream.step(7, None), Step::Deliver);

        let mut woken = Stream::default();
        assert_eq!(
            woken.step(10, Some(7)),
            Step::Gap { after: 7 },
            "after an eviction the sequencer's word is the position"
        );
        let mut fresh = Stream::default();
        assert_eq!(
            fresh.step(10, None),
            Step::Deliver,
            "nothing known: start here"
        );
        let mut joined = Stream::default();
        joined.start_at(20);
        assert_eq!(joined.step(20, Some(3)), Step::Skip);
        assert_eq!(joined.step(21, Some(3)), Step::Deliver);
    }

    #[test]
    fn batches_round_trip_and_refuse_disorder() {
        let text = encode_batch(Some(3), [(4, r#"{"a":1}"#), (5, "{}")]);
        assert_eq!(text, "prev 3\n4 7\n{\"a\":1}\n5 2\n{}\n");
        let batch = parse_batch(&text).unwrap();
        assert_eq!(batch.prev, Some(3));
        assert_eq!(batch.frames, vec![(4, r#"{"a":1}"#), (5, "{}")]);
        assert_eq!(parse_batch("prev -\n").unwrap().prev, None);
        assert!(parse_batch("prev -\n5 2\n{}\n4 2\n{}\n").is_err());
        assert!(parse_batch("prev x\n").is_err());
        assert!(parse_batch("4 2\n{}\n").is_err());
        assert!(parse_batch("prev 1\nnope\n").is_err());
        assert!(parse_batch("prev 1\n4 9\n{}\n").is_err(), "cut short");
        assert!(
            parse_batch("prev 1\n4 1\n{}\n").is_err(),
            "the length is exact"
        );
        assert!(
            parse_batch("prev 1\n4 1\né\n").is_err(),
            "never inside a character"
        );

        let presence = [r#"{"type":"occupancy"}"#.to_owned()];
        let reply = encode_join_reply(r#"{"type":"welcome"}"#, &presence, [(7, "{}")]);
        let reply = parse_join_reply(&reply).unwrap();
        assert_eq!(reply.welcome, r#"{"type":"welcome"}"#);
        assert_eq!(reply.presence, vec![r#"{"type":"occupancy"}"#]);
        assert_eq!(reply.replay, vec![(7, "{}")]);
        assert!(parse_join_reply("7 2\n{}\n").is_err());
    }

    #[test]
    fn numbers_are_read_only_as_the_encoder_writes_them() {
        assert_eq!(parse_batch("prev 0\n").unwrap().prev, Some(0));
        assert_eq!(
            parse_batch("prev 1\n10 0\n\n").unwrap().frames,
            vec![(10, "")]
        );
        for other in [
            "prev 03\n",
            "prev +3\n",
            "prev 1\n04 2\n{}\n",
            "prev 1\n+4 2\n{}\n",
            "prev 1\n4 02\n{}\n",
            "prev 1\n4 +2\n{}\n",
            "prev 1\n4 \n\n",
        ] {
            assert!(parse_batch(other).is_err(), "{other:?}");
        }
        assert!(parse_join_reply("welcome 02\n{}\n").is_err());
        assert!(parse_join_reply("welcome 2\n{}\n8 02\n{}\n").is_err());
    }

    #[test]
    fn no_frame_content_is_read_as_framing() {
        // What a pretty-printed message stored before data was kept compact
        // looks like: lines that read as seqs and frames on their own.
        let hostile = "{\"data\":[\n99999999999 ]\n,\"x\":\"prev 1\"}\n\n";
        let frames = [(8, hostile), (9, "\n"), (10, "é\n1 1\n{")];
        let batch = encode_batch(None, frames);
        assert_eq!(parse_batch(&batch).unwrap().frames, frames);
        let reply = encode_join_reply("welcome 3\nabc", &[], frames);
        let reply = parse_join_reply(&reply).unwrap();
        assert_eq!(
            (reply.welcome, reply.replay),
            ("welcome 3\nabc", frames.to_vec())
        );
    }

    #[test]
    fn the_fanout_batches_what_accumulated_while_a_shard_was_busy() {
        let mut fanout = Fanout::default();
        fanout.admit("a", 0, "alice", 10, 0);
        fanout.admit("b", 1, "bob", 10, 0);
        for seq in 11..=13 {
            fanout.remember(seq, Rc::from(format!("m{seq}")));
        }
        let batch = fanout.next_batch(0, 13).unwrap();
        assert_eq!(batch.prev, Some(10));
        assert_eq!(
            batch.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            [11, 12, 13]
        );
        assert_eq!(batch.encode(), "prev 10\n11 3\nm11\n12 3\nm12\n13 3\nm13\n");
        assert!(fanout.next_batch(0, 13).is_none(), "one batch in flight");
        fanout.remember(14, Rc::from("m14"));
        fanout.delivered(0, &report(13));
        let batch = fanout.next_batch(0, 14).unwrap();
        assert_eq!((batch.prev, batch.frames.len()), (Some(13), 1));
        fanout.failed(0);
        let batch = fanout.next_batch(0, 14).unwrap();
        assert_eq!(batch.prev, Some(13), "a failed batch is sent again");

        fanout.delivered(1, &report(14));
        fanout.left("b");
        fanout.remember(15, Rc::from("m15"));
        assert!(
            fanout.next_batch(1, 15).is_none(),
            "no connections, nothing sent"
        );
        fanout.admit("c", 1, "carol", 15, 0);
        assert!(
            fanout.next_batch(1, 15).is_none(),
            "a shard admitted at the head has it all"
        );
        assert_eq!((fanout.clients(), fanout.in_use()), (2, 2));
    }

    #[test]
    fn a_client_joining_a_shard_in_use_leaves_its_position_alone() {
        // The shard's other clients still need 1..=3: only a shard that
        // held nobody may start at the head.
        let mut fanout = Fanout::default();
        fanout.admit("a", 0, "alice", 0, 0);
        for seq in 1..=3 {
            fanout.remember(seq, Rc::from(format!("m{seq}")));
        }
        fanout.admit("b", 0, "bob", 3, 0);
        let batch = fanout.next_batch(0, 3).expect("shard 0 is behind");
        assert_eq!((batch.prev, batch.frames.len()), (Some(0), 3));
    }

    #[test]
    fn a_shard_is_in_use_until_it_lists_no_connections() {
        let listing = |conns: &[&str]| ShardReport {
            delivered: None,
            stats: RoomStats::default(),
            connections: Some(conns.iter().map(|c| (c.to_string(), "s".into())).collect()),
            members: Vec::new(),
        };
        let mut fanout = Fanout::woken(3, 0);
        assert_eq!(fanout.in_use(), 3, "unlisted shards may hold clients");
        fanout.reported(0, &listing(&[]));
        fanout.reported(1, &listing(&["c"]));
        assert_eq!(fanout.in_use(), 2, "shard 0 holds none, 2 is unlisted");
        assert!(!fanout.counted());
        fanout.reported(2, &listing(&[]));
        assert!(fanout.counted());
        assert_eq!((fanout.in_use(), fanout.clients()), (1, 1));
    }

    #[test]
    fn a_report_never_empties_a_shard_its_connections_are_on() {
        // A batch answer taken before the shard accepted its new client
        // says nothing about connections: the shard keeps being fed.
        let mut fanout = Fanout::default();
        fanout.admit("x", 0, "alice", 0, 0);
        fanout.remember(1, Rc::from("m1"));
        assert!(fanout.next_batch(0, 1).is_some());
        fanout.delivered(0, &report(1));
        fanout.remember(2, Rc::from("m2"));
        assert!(fanout.next_batch(0, 2).is_some(), "still one connection");
        assert_eq!(fanout.clients(), 1);
    }

    #[test]
    fn a_client_that_never_reached_its_shard_stops_holding_its_place() {
        let mut fanout = Fanout::default();
        for n in 0..3 {
            fanout.admit(&format!("c{n}"), 0, "alice", 0, 1_000);
        }
        fanout.confirmed("c0");
        assert_eq!(
            fanout.place(3, 3, 1_000 + PLACEMENT_GRACE_MS - 1),
            Placement::Shard(1),
            "shard 0 holds its 3, one of them arrived"
        );
        assert_eq!(
            fanout.place(3, 3, 1_000 + PLACEMENT_GRACE_MS),
            Placement::Shard(0),
            "two placed clients never came: shard 0 has room again"
        );
        assert_eq!(fanout.clients(), 1);
        assert_eq!(fanout.subject("alice", 1_000 + PLACEMENT_GRACE_MS), 1);
    }

    #[test]
    fn the_fanout_keeps_a_bounded_window() {
        let mut fanout = Fanout::default();
        fanout.admit("a", 0, "alice", 0, 0);
        for seq in 1..=(FEED_WINDOW as u64 + 10) {
            fanout.remember(seq, Rc::from("x"));
        }
        let batch = fanout.next_batch(0, FEED_WINDOW as u64 + 10).unwrap();
        assert_eq!(batch.prev, Some(0));
        assert_eq!(
            batch.frames.first().map(|f| f.0),
            Some(11),
            "the shard fills 1..=10 from history"
        );
        assert_eq!(batch.frames.len(), FEED_WINDOW);
    }

    #[test]
    fn the_fanout_keeps_at_most_a_turn_of_frame_bytes() {
        let mut fanout = Fanout::default();
        fanout.admit("a", 0, "alice", 0, 0);
        let mib: Rc<str> = Rc::from("x".repeat(1024 * 1024));
        for seq in 1..=6 {
            fanout.remember(seq, mib.clone());
        }
        let batch = fanout.next_batch(0, 6).unwrap();
        assert_eq!(
            batch.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            [3, 4, 5, 6],
            "4 MiB kept, the shard fills 1 and 2 from history"
        );
        fanout.failed(0);
        fanout.forget_frames();
        let batch = fanout.next_batch(0, 6).unwrap();
        assert!(batch.frames.is_empty(), "the history started over");
        fanout.failed(0);
        for seq in 7..=10 {
            fanout.remember(seq, mib.clone());
        }
        assert_eq!(fanout.next_batch(0, 10).unwrap().frames.len(), 4);
    }

    #[test]
    fn a_woken_sequencer_presumes_its_shards_had_what_it_had() {
        let mut fanout = Fanout::woken(2, 5);
        assert!(!fanout.counted());
        assert_eq!(fanout.unlisted(), [0, 1]);
        assert!(fanout.next_batch(0, 5).is_none(), "nothing new");
        // What it keeps ready may start later than the head it woke with:
        // the batch says where the shard should be, so a shard that forgot
        // too fills the rest from history.
        fanout.remember(40, Rc::from("m40"));
        let batch = fanout.next_batch(0, 40).unwrap();
        assert_eq!((batch.prev, batch.frames.len()), (Some(5), 1));
        let mut forgot = Stream::default();
        assert_eq!(forgot.step(40, batch.prev), Step::Gap { after: 5 });
        // A shard that remembers is believed, below the presumption too.
        fanout.delivered(0, &report(3));
        assert_eq!(fanout.shards()[0].sent, Some(3));
        fanout.reported(
            1,
            &ShardReport {
                delivered: None,
                stats: RoomStats::default(),
                connections: Some(vec![("c".into(), "alice".into())]),
                members: Vec::new(),
            },
        );
        assert_eq!(
            fanout.shards()[1].sent,
            Some(5),
            "a shard that forgot says nothing"
        );
        assert_eq!((fanout.unlisted(), fanout.clients()), (vec![0], 1));
    }

    #[test]
    fn a_subject_is_counted_by_what_its_shards_accepted() {
        let mut fanout = Fanout::default();
        fanout.admit("c1", 0, "alice", 0, 0);
        fanout.admit("c2", 1, "alice", 0, 0);
        fanout.admit("c3", 1, "bob", 0, 0);
        let counts = |f: &mut Fanout, now| (f.subject("alice", now), f.subject("bob", now));
        assert_eq!(counts(&mut fanout, 0), (2, 1), "admitted counts at once");
        fanout.confirmed("c1");
        assert_eq!(counts(&mut fanout, PLACEMENT_GRACE_MS - 1), (2, 1));
        assert_eq!(
            counts(&mut fanout, PLACEMENT_GRACE_MS),
            (1, 0),
            "a shard that never accepted does not hold the place"
        );
        assert!(fanout.connections().holds("c1", 0));
        assert!(!fanout.connections().holds("c2", 1));
        fanout.left("c1");
        fanout.left("c1");
        assert_eq!(
            counts(&mut fanout, PLACEMENT_GRACE_MS),
            (0, 0),
            "a close counts once"
        );
        assert_eq!(fanout.clients(), 0);
    }

    #[test]
    fn a_woken_sequencer_learns_its_shards_connections_in_any_order() {
        let mut fanout = Fanout::woken(1, 0);
        fanout.admit("new", 0, "alice", 0, 100);
        let listing = |conns: &[(&str, &str)]| ShardReport {
            delivered: None,
            stats: RoomStats::default(),
            connections: Some(
                conns
                    .iter()
                    .map(|(c, s)| (c.to_string(), s.to_string()))
                    .collect(),
            ),
            members: Vec::new(),
        };
        // The list, then a confirmation of a connection in it.
        fanout.reported(0, &listing(&[("a", "alice"), ("b", "bob")]));
        fanout.confirmed("a");
        assert_eq!(
            (fanout.subject("alice", 100), fanout.subject("bob", 100)),
            (2, 1)
        );
        // A close the list already left out, and one it still had.
        fanout.left("gone-before");
        fanout.left("b");
        assert_eq!(fanout.subject("bob", 100), 0);
        // A list that names an admission confirms it, once.
        fanout.reported(0, &listing(&[("a", "alice"), ("new", "alice")]));
        assert_eq!(fanout.subject("alice", 100 + PLACEMENT_GRACE_MS), 2);
        assert_eq!(fanout.connections().on(0), 2);
    }

    #[test]
    fn acks_wait_for_their_message() {
        let mut waiting = Waiting::default();
        waiting.push(7, "a");
        waiting.push(5, "b");
        waiting.push(7, "c");
        assert_eq!(waiting.highest(), Some(7));
        assert_eq!(waiting.due(4), Vec::<&str>::new());
        assert_eq!(waiting.due(6), vec!["b"]);
        assert_eq!(waiting.due(9), vec!["a", "c"]);
        assert_eq!(waiting.highest(), None);
        waiting.push(12, "d");
        assert_eq!(waiting.due(12), vec!["d"], "due once delivered");
    }

    #[test]
    fn forwarded_publishes_keep_their_draft() {
        let draft = Draft {
            data: RawValue::from_string("{\"x\":[1]}".into()).unwrap(),
            id: Some("k".into()),
            trace: None,
            kafka: None,
        };
        let json = serde_json::to_string(&Forward {
            shard: 2,
            publishes: vec![Forwarded::new("alice", false, draft)],
            joins: vec!["c_1".into()],
            leaves: vec!["c_2".into()],
            dropped: vec![],
        })
        .unwrap();
        let back: Forward = serde_json::from_str(&json).unwrap();
        let draft = back.publishes.into_iter().next().unwrap().into_draft();
        assert_eq!(draft.data.get(), "{\"x\":[1]}");
        assert_eq!(draft.id.as_deref(), Some("k"));
        let outcome = Outcome::Refused(Refusal::rate_limited(10, true));
        let json = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }
}
