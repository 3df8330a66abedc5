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

use std::collections::{BTreeMap, VecDeque};
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
/// a first line `prev <seq>` (or `prev -`), then one `<seq> <frame>` line
/// per message. Frames are compact JSON, which never holds a raw newline,
/// so the shard reads the seqs without parsing a frame.
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
    encode_frames(&mut out, frames);
    out
}

fn encode_frames<'a>(out: &mut String, frames: impl IntoIterator<Item = (u64, &'a str)>) {
    for (seq, frame) in frames {
        out.push_str(&seq.to_string());
        out.push(' ');
        out.push_str(frame);
        out.push('\n');
    }
}

pub fn parse_batch(text: &str) -> Result<Batch<'_>, String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let prev = match first.strip_prefix("prev ") {
        Some("-") => None,
        Some(n) => Some(n.parse().map_err(|_| format!("bad prev line {first:?}"))?),
        None => return Err(format!("a batch starts with a prev line, not {first:?}")),
    };
    Ok(Batch {
        prev,
        frames: parse_frames(rest)?,
    })
}

fn parse_frames(text: &str) -> Result<Vec<(u64, &str)>, String> {
    let mut frames = Vec::new();
    let mut last = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (seq, frame) = line
            .split_once(' ')
            .ok_or_else(|| format!("a frame line is `<seq> <frame>`, not {line:.40?}"))?;
        let seq: u64 = seq.parse().map_err(|_| format!("bad seq {seq:?}"))?;
        if seq <= last {
            return Err(format!("seq {seq} after {last}: frames go in seq order"));
        }
        last = seq;
        frames.push((seq, frame));
    }
    Ok(frames)
}

/// The sequencer's answer to a shard's join: the `welcome` frame to send as
/// it is, then the messages to replay, as batch lines.
pub fn encode_join_reply<'a>(
    welcome: &str,
    replay: impl IntoIterator<Item = (u64, &'a str)>,
) -> String {
    let mut out = format!("{welcome}\n");
    encode_frames(&mut out, replay);
    out
}

/// A join reply as the shard reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply<'a> {
    pub welcome: &'a str,
    pub replay: Vec<(u64, &'a str)>,
}

pub fn parse_join_reply(text: &str) -> Result<JoinReply<'_>, String> {
    let (welcome, rest) = text.split_once('\n').unwrap_or((text, ""));
    if !welcome.starts_with('{') {
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
        }
    }
}

/// What a shard sends the sequencer: its clients' publishes, in the order
/// they arrived, and the subjects whose connections closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Forward {
    pub shard: u32,
    pub publishes: Vec<Forwarded>,
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

    fn report(delivered: u64, clients: u64) -> ShardReport {
        ShardReport {
            delivered: Some(delivered),
            clients,
            stats: RoomStats::default(),
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
        assert_eq!(text, "prev 3\n4 {\"a\":1}\n5 {}\n");
        let batch = parse_batch(&text).unwrap();
        assert_eq!(batch.prev, Some(3));
        assert_eq!(batch.frames, vec![(4, r#"{"a":1}"#), (5, "{}")]);
        assert_eq!(parse_batch("prev -\n").unwrap().prev, None);
        assert!(parse_batch("prev -\n5 {}\n4 {}\n").is_err());
        assert!(parse_batch("prev x\n").is_err());
        assert!(parse_batch("4 {}\n").is_err());
        assert!(parse_batch("prev 1\nnope\n").is_err());

        let reply = encode_join_reply(r#"{"type":"welcome"}"#, [(7, "{}")]);
        let reply = parse_join_reply(&reply).unwrap();
        assert_eq!(reply.welcome, r#"{"type":"welcome"}"#);
        assert_eq!(reply.replay, vec![(7, "{}")]);
        assert!(parse_join_reply("7 {}\n").is_err());
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
        assert_eq!(batch.encode(), "prev 10\n11 m11\n12 m12\n13 m13\n");
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
        };
        let json = serde_json::to_string(&Forward {
            shard: 2,
            publishes: vec![Forwarded::new("alice", false, draft)],
            leaves: vec!["bob".into()],
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
