//! Rooms bigger than one Durable Object (docs/scaling.md): the room's own
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

use crate::error::ErrorCode;
use crate::history::TURN_BYTES;
use crate::stats::RoomStats;
use crate::wire::{Draft, Receipt};

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
/// it is, then the messages to replay, framed as in a [`Batch`].
pub fn encode_join_reply<'a>(
    welcome: &str,
    replay: impl IntoIterator<Item = (u64, &'a str)>,
) -> String {
    let mut out = String::new();
    push_record(&mut out, "welcome", welcome);
    for (seq, frame) in replay {
        push_record(&mut out, &seq.to_string(), frame);
    }
    out
}

/// A join reply as the shard reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply<'a> {
    pub welcome: &'a str,
    pub replay: Vec<(u64, &'a str)>,
}

pub fn parse_join_reply(text: &str) -> Result<JoinReply<'_>, String> {
    let (label, welcome, rest) = next_record(text)?;
    if label != "welcome" {
        return Err("a join reply starts with the welcome frame".into());
    }
    Ok(JoinReply {
        welcome,
        replay: parse_frames(rest)?,
    })
}

/// A shard's join request: the resume it was asked for; the identity rides
/// in the same header as the router's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub shard: u32,
    pub since: Option<u64>,
    pub epoch: Option<String>,
}

/// What a shard tells the sequencer after each batch: how far its stream
/// is, its open connections, and its counters since the last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    pub delivered: Option<u64>,
    pub clients: u64,
    pub stats: RoomStats,
    /// Every connection it holds, when the sequencer asked (after it woke
    /// without knowing them): `(conn_id, sub)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<Vec<(String, String)>>,
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
}

/// The sequencer's answer for one forwarded publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Stored(Receipt),
    Refused {
        code: ErrorCode,
        message: String,
        /// Over the rate budget: when to try again, and whether the
        /// connection has earned its close.
        retry_after_ms: Option<u64>,
        close: bool,
    },
}

/// The sequencer's view of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLink {
    /// Open connections, as last reported or counted since; `None` after
    /// the sequencer woke, until the shard says.
    pub clients: Option<u64>,
    /// Connections placed here whose client has not reached the shard yet
    /// (between the redirect and its join there): counted in `clients`,
    /// but not in the shard's own reports, so a report is topped up with
    /// them. Without it, a report that arrives while many clients connect
    /// at once undercounts, and the shard ends over `ROOM_SHARD_SIZE`.
    pub placed: u64,
    /// When the latest of them was placed.
    pub placed_ms: u64,
    /// The last seq the shard confirmed; `None` when unknown.
    pub sent: Option<u64>,
    /// A batch is in flight.
    pub busy: bool,
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

/// The sequencer's side of the fan-out: the shards, and the newest frames
/// kept ready for them, so feeding a shard costs no storage read unless it
/// fell more than [`FEED_WINDOW`] messages behind.
#[derive(Debug, Default)]
pub struct Fanout {
    shards: Vec<ShardLink>,
    recent: VecDeque<(u64, Rc<str>)>,
    recent_bytes: usize,
}

impl Fanout {
    /// A fan-out over `count` shards whose state is unknown (after a wake).
    pub fn with_shards(count: u32) -> Fanout {
        Fanout {
            shards: vec![ShardLink::default(); count as usize],
            ..Fanout::default()
        }
    }

    pub fn shards(&self) -> &[ShardLink] {
        &self.shards
    }

    /// Shards holding connections (or that may, not having said).
    pub fn in_use(&self) -> u64 {
        self.shards.iter().filter(|s| s.clients != Some(0)).count() as u64
    }

    /// Connections on shards, as far as known.
    pub fn clients(&self) -> u64 {
        self.shards.iter().filter_map(|s| s.clients).sum()
    }

    /// Whether every shard's connection count is known.
    pub fn counted(&self) -> bool {
        self.shards.iter().all(|s| s.clients.is_some())
    }

    /// Makes room for shard `index`.
    pub fn ensure(&mut self, index: u32) {
        let len = index as usize + 1;
        if self.shards.len() < len {
            self.shards.resize(len, ShardLink::default());
        }
    }

    /// A connection placed on shard `index` at `now_ms` while the
    /// sequencer's head is `head`: a shard that had none needs nothing
    /// older than that.
    pub fn joined(&mut self, index: u32, head: u64, now_ms: u64) {
        self.ensure(index);
        let shard = &mut self.shards[index as usize];
        if shard.clients.unwrap_or(0) == 0 {
            shard.sent = Some(head);
        }
        shard.clients = Some(shard.clients.unwrap_or(0) + 1);
        shard.placed += 1;
        shard.placed_ms = now_ms;
    }

    /// A client placed on shard `index` reached it: the shard counts it
    /// from now on.
    pub fn arrived(&mut self, index: u32) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.placed = shard.placed.saturating_sub(1);
        }
    }

    /// Stops counting clients placed more than [`PLACEMENT_GRACE_MS`] ago
    /// that never reached their shard. A report does it too, but a quiet
    /// room sends no batches, so placing a join does it first.
    pub fn expire_placements(&mut self, now_ms: u64) {
        for shard in &mut self.shards {
            if shard.placed > 0 && now_ms >= shard.placed_ms.saturating_add(PLACEMENT_GRACE_MS) {
                shard.clients = shard.clients.map(|n| n.saturating_sub(shard.placed));
                shard.placed = 0;
            }
        }
    }

    /// Connections on shard `index` closed.
    pub fn left(&mut self, index: u32, count: u64) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.clients = shard.clients.map(|n| n.saturating_sub(count));
        }
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
        let shard = self.shards.get_mut(index as usize)?;
        if shard.busy || shard.clients == Some(0) || shard.sent.is_some_and(|s| s >= head) {
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

    /// Shard `index` answered a batch with `report` at `now_ms`.
    pub fn delivered(&mut self, index: u32, report: &ShardReport, now_ms: u64) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.busy = false;
        }
        self.reported(index, report, now_ms);
    }

    /// Shard `index` said where it stands at `now_ms` (after a batch, or
    /// when asked).
    pub fn reported(&mut self, index: u32, report: &ShardReport, now_ms: u64) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            if now_ms >= shard.placed_ms.saturating_add(PLACEMENT_GRACE_MS) {
                shard.placed = 0;
            }
            shard.clients = Some(report.clients + shard.placed);
            shard.sent = report.delivered.max(shard.sent);
        }
    }

    /// A batch to shard `index` failed: the next one starts where this did.
    pub fn failed(&mut self, index: u32) {
        if let Some(shard) = self.shards.get_mut(index as usize) {
            shard.busy = false;
        }
    }
}

/// The connections a room's shards hold, per subject, as the sequencer
/// counts them for `MAX_CONNECTIONS_PER_SUBJECT`.
///
/// A connection counts from the moment the sequencer admits its join, but
/// only provisionally until its shard says it accepted it; a shard that
/// failed to (or a client that never arrived) stops holding the subject's
/// place after [`PLACEMENT_GRACE_MS`], so a failure cannot leak a count.
/// Everything is keyed by `conn_id`, which makes every report idempotent:
/// a shard's full list after the sequencer woke, a confirmation or a close
/// arriving in any order leave the same count.
#[derive(Debug, Default)]
pub struct OnShards {
    conns: HashMap<String, Tenancy>,
    per_subject: HashMap<String, u32>,
}

#[derive(Debug, Clone)]
struct Tenancy {
    shard: u32,
    sub: String,
    /// When the sequencer admitted it, until its shard confirms it.
    admitted_ms: Option<u64>,
}

impl OnShards {
    /// Connections `sub` holds on shards, counting those admitted and not
    /// yet confirmed.
    pub fn of(&self, sub: &str) -> u32 {
        self.per_subject.get(sub).copied().unwrap_or(0)
    }

    /// The sequencer admitted `conn_id` of `sub` onto `shard` at `now_ms`.
    pub fn admitted(&mut self, conn_id: &str, shard: u32, sub: &str, now_ms: u64) {
        self.insert(conn_id, shard, sub, Some(now_ms));
    }

    /// `shard` accepted `conn_id`.
    pub fn confirmed(&mut self, conn_id: &str) {
        if let Some(tenancy) = self.conns.get_mut(conn_id) {
            tenancy.admitted_ms = None;
        }
    }

    /// `conn_id` closed (or its shard gave up on it).
    pub fn left(&mut self, conn_id: &str) {
        if let Some(tenancy) = self.conns.remove(conn_id) {
            self.uncount(&tenancy.sub);
        }
    }

    /// Forgets admissions their shard has not confirmed within
    /// [`PLACEMENT_GRACE_MS`].
    pub fn expire(&mut self, now_ms: u64) {
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

    /// Everything `shard` holds, as it listed it: its confirmed connections
    /// are exactly these (admissions it has not confirmed yet stay).
    pub fn listed(&mut self, shard: u32, connections: &[(String, String)]) {
        let gone: Vec<String> = self
            .conns
            .iter()
            .filter(|(_, t)| t.shard == shard && t.admitted_ms.is_none())
            .map(|(conn_id, _)| conn_id.clone())
            .collect();
        for conn_id in gone {
            self.left(&conn_id);
        }
        for (conn_id, sub) in connections {
            self.insert(conn_id, shard, sub, None);
        }
    }

    fn insert(&mut self, conn_id: &str, shard: u32, sub: &str, admitted_ms: Option<u64>) {
        let tenancy = Tenancy {
            shard,
            sub: sub.to_owned(),
            admitted_ms,
        };
        match self.conns.insert(conn_id.to_owned(), tenancy) {
            Some(old) if old.sub == sub => {}
            Some(old) => {
                self.uncount(&old.sub);
                *self.per_subject.entry(sub.to_owned()).or_default() += 1;
            }
            None => *self.per_subject.entry(sub.to_owned()).or_default() += 1,
        }
    }

    fn uncount(&mut self, sub: &str) {
        if let Some(n) = self.per_subject.get_mut(sub) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_subject.remove(sub);
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

    fn report(delivered: u64, clients: u64) -> ShardReport {
        ShardReport {
            delivered: Some(delivered),
            clients,
            stats: RoomStats::default(),
            connections: None,
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

        let reply = encode_join_reply(r#"{"type":"welcome"}"#, [(7, "{}")]);
        let reply = parse_join_reply(&reply).unwrap();
        assert_eq!(reply.welcome, r#"{"type":"welcome"}"#);
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
        let reply = encode_join_reply("welcome 3\nabc", frames);
        let reply = parse_join_reply(&reply).unwrap();
        assert_eq!(
            (reply.welcome, reply.replay),
            ("welcome 3\nabc", frames.to_vec())
        );
    }

    #[test]
    fn the_fanout_batches_what_accumulated_while_a_shard_was_busy() {
        let mut fanout = Fanout::default();
        fanout.joined(0, 10, 0);
        fanout.joined(1, 10, 0);
        fanout.arrived(0);
        fanout.arrived(1);
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
        fanout.delivered(0, &report(13, 1), 0);
        let batch = fanout.next_batch(0, 14).unwrap();
        assert_eq!((batch.prev, batch.frames.len()), (Some(13), 1));
        fanout.failed(0);
        let batch = fanout.next_batch(0, 14).unwrap();
        assert_eq!(batch.prev, Some(13), "a failed batch is sent again");

        fanout.delivered(1, &report(14, 0), 0);
        fanout.remember(15, Rc::from("m15"));
        assert!(
            fanout.next_batch(1, 15).is_none(),
            "no connections, nothing sent"
        );
        fanout.joined(1, 15, 0);
        assert!(
            fanout.next_batch(1, 15).is_none(),
            "a shard joined at the head has it all"
        );
        assert_eq!((fanout.clients(), fanout.in_use()), (2, 2));
    }

    #[test]
    fn a_report_keeps_the_clients_still_on_their_way() {
        let mut fanout = Fanout::default();
        for _ in 0..3 {
            fanout.joined(0, 0, 0);
        }
        fanout.arrived(0);
        fanout.reported(0, &report(0, 1), 0);
        assert_eq!(
            fanout.clients(),
            3,
            "two placed clients are not in the report yet"
        );
        fanout.arrived(0);
        fanout.arrived(0);
        fanout.reported(0, &report(0, 3), 0);
        assert_eq!(fanout.clients(), 3);
        fanout.arrived(0);
        fanout.reported(0, &report(0, 2), 0);
        assert_eq!(
            fanout.clients(),
            2,
            "an unexpected arrival never counts below zero"
        );
        fanout.joined(0, 0, 1_000);
        fanout.reported(0, &report(0, 2), 1_000 + PLACEMENT_GRACE_MS - 1);
        assert_eq!(fanout.clients(), 3, "still on its way");
        fanout.reported(0, &report(0, 2), 1_000 + PLACEMENT_GRACE_MS);
        assert_eq!(
            fanout.clients(),
            2,
            "a client that never came holds no place"
        );
        fanout.joined(0, 0, 50_000);
        fanout.joined(0, 0, 50_000);
        fanout.expire_placements(50_000 + PLACEMENT_GRACE_MS - 1);
        assert_eq!(fanout.clients(), 4);
        fanout.expire_placements(50_000 + PLACEMENT_GRACE_MS);
        assert_eq!(
            fanout.clients(),
            2,
            "without any report, in a quiet room, too"
        );
    }

    #[test]
    fn the_fanout_keeps_a_bounded_window() {
        let mut fanout = Fanout::default();
        fanout.joined(0, 0, 0);
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
    fn a_woken_sequencer_feeds_shards_it_knows_nothing_about() {
        let mut fanout = Fanout::with_shards(2);
        assert!(!fanout.counted());
        assert!(fanout.next_batch(0, 5).is_none(), "no frame kept yet");
        fanout.remember(6, Rc::from("m6"));
        let batch = fanout.next_batch(0, 6).unwrap();
        assert_eq!((batch.prev, batch.frames.len()), (None, 1));
        fanout.delivered(0, &report(6, 3), 0);
        assert_eq!(fanout.clients(), 3);
    }

    #[test]
    fn a_subject_is_counted_by_what_its_shards_accepted() {
        let mut on = OnShards::default();
        on.admitted("c1", 0, "alice", 0);
        on.admitted("c2", 1, "alice", 0);
        on.admitted("c3", 1, "bob", 0);
        assert_eq!(
            (on.of("alice"), on.of("bob")),
            (2, 1),
            "admitted counts at once"
        );
        on.confirmed("c1");
        on.expire(PLACEMENT_GRACE_MS - 1);
        assert_eq!(on.of("alice"), 2);
        on.expire(PLACEMENT_GRACE_MS);
        assert_eq!(
            (on.of("alice"), on.of("bob")),
            (1, 0),
            "a shard that never accepted does not hold the place"
        );
        on.confirmed("c2");
        on.left("c1");
        on.left("c1");
        assert_eq!(on.of("alice"), 0, "a close counts once");
    }

    #[test]
    fn a_woken_sequencer_learns_its_shards_connections_in_any_order() {
        let mut on = OnShards::default();
        on.admitted("new", 0, "alice", 100);
        // The shard's list, then its confirmation of a connection in it.
        on.listed(
            0,
            &[("a".into(), "alice".into()), ("b".into(), "bob".into())],
        );
        on.confirmed("a");
        assert_eq!((on.of("alice"), on.of("bob")), (2, 1));
        // A close that the list already left out, and one it still had.
        on.left("gone-before");
        on.left("b");
        assert_eq!(on.of("bob"), 0);
        on.listed(
            0,
            &[("a".into(), "alice".into()), ("new".into(), "alice".into())],
        );
        assert_eq!(on.of("alice"), 2, "a listed admission is not counted twice");
        on.listed(1, &[]);
        on.listed(0, &[]);
        assert_eq!(on.of("alice"), 0);
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
        })
        .unwrap();
        let back: Forward = serde_json::from_str(&json).unwrap();
        let draft = back.publishes.into_iter().next().unwrap().into_draft();
        assert_eq!(draft.data.get(), "{\"x\":[1]}");
        assert_eq!(draft.id.as_deref(), Some("k"));
        let outcome = Outcome::Refused {
            code: ErrorCode::RateLimited,
            message: "slow".into(),
            retry_after_ms: Some(10),
            close: false,
        };
        let json = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }
}
