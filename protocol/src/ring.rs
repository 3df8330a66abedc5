//! A room's stored history (docs/internals.md, "The ring"): a
//! ring of `HISTORY_LIMIT` slots, and an outbox for what the bridge has not
//! confirmed when the ring moves past it.
//!
//! This is the bookkeeping, over any [`Tables`]: which rows move to the
//! outbox before their slot is overwritten, what a batch larger than the
//! ring does, what the outbox drops past `OUTBOX_LIMIT`, what a resize or an
//! age trim removes, and what a reader is given. The room's object runs it
//! over SQLite; the tests run it over maps against a plain list of every
//! message (`tests/ring_model.rs`).
//!
//! The invariant everything here keeps: the stored messages are one
//! contiguous run of seqs, `oldest..=head`, split at one seq between the
//! outbox (the older part) and the ring (the newer). Everything is removed
//! from the bottom of that run, never from its middle, so a reader never
//! meets a hole, and the run's shape is two ranges of numbers that need no
//! read to keep up to date: a publish costs its own rows and nothing else.

use crate::draft::Origin;
use crate::wire::Message;

/// The storage a [`Ring`] runs over: two tables of messages keyed by seq,
/// the ring addressed by slot (`seq % capacity`).
pub trait Tables {
    type Error;

    /// Copies the ring's rows with `lo <= seq <= hi` into the outbox, before
    /// their slots are overwritten.
    fn spill(&mut self, lo: u64, hi: u64) -> Result<(), Self::Error>;
    /// Stores `messages` in the outbox.
    fn outbox_insert(&mut self, messages: &[Message]) -> Result<(), Self::Error>;
    /// Stores each message in slot `seq % capacity` of the ring, replacing
    /// what the slot held.
    fn ring_write(&mut self, messages: &[Message], capacity: u64) -> Result<(), Self::Error>;
    /// Deletes every stored row with `seq <= upto` from the outbox, or from
    /// both tables with `ring`.
    fn delete_through(&mut self, upto: u64, ring: bool) -> Result<(), Self::Error>;
    /// Rebuilds the ring with `capacity` slots from its rows with
    /// `seq > floor` (the others were spilled or are not needed).
    fn resize(&mut self, capacity: u64, floor: u64) -> Result<(), Self::Error>;
    /// How many stored rows with `lo <= seq <= hi` the bridge relays (did
    /// not come from Kafka).
    fn count_relayable(&mut self, lo: u64, hi: u64) -> Result<u64, Self::Error>;
}

/// An inclusive run of seqs, `lo..=hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub lo: u64,
    pub hi: u64,
}

impl Run {
    /// `lo..=hi`, or nothing when empty.
    pub fn of(lo: u64, hi: u64) -> Option<Run> {
        (lo <= hi).then_some(Run { lo, hi })
    }

    /// How many seqs it holds (at least one).
    pub fn count(self) -> u64 {
        self.hi - self.lo + 1
    }

    /// What is left above `upto`.
    fn above(self, upto: u64) -> Option<Run> {
        Run::of(self.lo.max(upto.saturating_add(1)), self.hi)
    }

    /// What of it lies within `lo..=hi`.
    fn within(self, lo: u64, hi: u64) -> Option<Run> {
        Run::of(self.lo.max(lo), self.hi.min(hi))
    }
}

/// Messages the bridge needed that storage let go: the outbox was over
/// `OUTBOX_LIMIT`, or they aged out before the bridge confirmed them. Only
/// messages the bridge relays count; `run` spans what was removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    pub relayable: u64,
    pub run: Option<Run>,
}

/// Where a room's history stands, as read when it wakes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub capacity: u64,
    pub head: u64,
    pub cursor: u64,
    pub bridged: bool,
    pub outbox: Option<Run>,
    pub ring: Option<Run>,
    /// Stored messages above the cursor that the bridge relays.
    pub pending: u64,
}

/// What to read for the stored messages after a seq: a range of each
/// table, together at most one page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub outbox: Option<Run>,
    pub ring: Option<Run>,
    /// The last seq the reading covers: a reader that is given every row
    /// continues after it.
    pub through: u64,
}

impl Reading {
    /// The same reading, stopping after `seq`.
    pub fn through_at_most(self, seq: u64) -> Reading {
        let lo = self.outbox.or(self.ring).map_or(0, |run| run.lo);
        Reading {
            outbox: self.outbox.and_then(|o| o.within(lo, seq)),
            ring: self.ring.and_then(|r| r.within(lo, seq)),
            through: self.through.min(seq),
        }
    }
}

/// The ring slots holding `run`, in the order of its seqs: one range of
/// slots, or two when it wraps (the first holds the older seqs), so rows
/// read range by range in slot order come in seq order without a sort.
pub fn slots(run: Run, capacity: u64) -> [Option<(u64, u64)>; 2] {
    let capacity = capacity.max(1);
    let first = run.lo % capacity;
    let last = (run.lo + run.count().min(capacity) - 1) % capacity;
    if first <= last {
        [Some((first, last)), None]
    } else {
        [Some((first, capacity - 1)), Some((0, last))]
    }
}

/// A room's history: its shape, kept up to date by every change it makes
/// through the [`Tables`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    shape: Shape,
}

impl Default for Ring {
    fn default() -> Ring {
        Ring::empty(1, false)
    }
}

impl Ring {
    /// The history of a room that has stored nothing yet.
    pub fn empty(capacity: u64, bridged: bool) -> Ring {
        Ring::from_shape(Shape {
            capacity,
            bridged,
            ..Shape::default()
        })
    }

    /// The history as measured when the room woke.
    pub fn from_shape(mut shape: Shape) -> Ring {
        shape.capacity = shape.capacity.max(1);
        if let Some(hi) = [shape.outbox, shape.ring]
            .iter()
            .flatten()
            .map(|r| r.hi)
            .max()
        {
            shape.head = shape.head.max(hi);
        }
        if !shape.bridged {
            shape.pending = 0;
        }
        Ring { shape }
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn head(&self) -> u64 {
        self.shape.head
    }

    pub fn cursor(&self) -> u64 {
        self.shape.cursor
    }

    pub fn capacity(&self) -> u64 {
        self.shape.capacity
    }

    pub fn bridged(&self) -> bool {
        self.shape.bridged
    }

    /// Messages the bridge has yet to confirm (none unless the room is an
    /// outbox), without a read.
    pub fn pending(&self) -> u64 {
        self.shape.pending
    }

    /// The stored run, `oldest..=head`, if anything is stored.
    pub fn stored(&self) -> Option<Run> {
        match (self.shape.outbox, self.shape.ring) {
            (Some(outbox), Some(ring)) => Run::of(outbox.lo, ring.hi),
            (one, other) => one.or(other),
        }
    }

    pub fn oldest(&self) -> Option<u64> {
        self.stored().map(|run| run.lo)
    }

    /// Rows in the outbox.
    pub fn outboxed(&self) -> u64 {
        self.shape.outbox.map_or(0, Run::count)
    }

    /// Stores `messages`, whose seqs follow the head in order: the ring's
    /// rows they overwrite that the bridge has not confirmed move to the
    /// outbox first, and so do messages of the batch itself that a later
    /// one of it would overwrite (nothing unconfirmed is overwritten, even
    /// within one batch). Past `outbox_limit` the outbox's oldest are
    /// dropped, and returned.
    pub fn append<T: Tables>(
        &mut self,
        tables: &mut T,
        messages: &[Message],
        history_limit: u64,
        outbox_limit: u64,
    ) -> Result<Lost, T::Error> {
        let (Some(first), Some(last)) = (messages.first(), messages.last()) else {
            return Ok(Lost::default());
        };
        let (first, last) = (first.seq, last.seq);
        self.resize(tables, history_limit)?;
        let capacity = self.shape.capacity;
        // Everything up to here leaves the ring (or never enters it).
        let leaving = last.saturating_sub(capacity);
        if let Some(ring) = self.shape.ring {
            if let Some(spill) = ring.within(ring.lo, leaving) {
                self.keep_for_bridge(tables, spill)?;
            }
            self.shape.ring = ring.above(leaving);
        }
        let overflow = (leaving.saturating_sub(first) + 1).min(messages.len() as u64) as usize;
        let (early, late) = messages.split_at(if leaving >= first { overflow } else { 0 });
        if self.shape.bridged && !early.is_empty() {
            tables.outbox_insert(early)?;
            self.grow_outbox(Run::of(first, first + early.len() as u64 - 1));
        }
        tables.ring_write(late, capacity)?;
        let written = Run::of(last + 1 - late.len() as u64, last);
        self.shape.ring = match (self.shape.ring, written) {
            (Some(ring), Some(new)) => Run::of(ring.lo, new.hi),
            (ring, new) => new.or(ring),
        };
        self.shape.head = last;
        if self.shape.bridged {
            self.shape.pending += relayable(messages);
        }
        self.cap_outbox(tables, outbox_limit)
    }

    /// The bridge confirmed everything up to `seq`: the cursor moves there
    /// (never back, never past the head) and the outbox lets go of it.
    pub fn confirm<T: Tables>(&mut self, tables: &mut T, seq: u64) -> Result<bool, T::Error> {
        let seq = seq.min(self.shape.head);
        if seq <= self.shape.cursor {
            return Ok(false);
        }
        if self.shape.bridged {
            let confirmed = tables.count_relayable(self.shape.cursor + 1, seq)?;
            self.shape.pending = self.shape.pending.saturating_sub(confirmed);
        }
        if let Some(outbox) = self.shape.outbox.filter(|o| o.lo <= seq) {
            tables.delete_through(seq, false)?;
            self.shape.outbox = outbox.above(seq);
        }
        self.shape.cursor = seq;
        Ok(true)
    }

    /// Makes the room an outbox from now on: what it stores above the
    /// cursor is kept for the bridge.
    pub fn mark_bridged<T: Tables>(&mut self, tables: &mut T) -> Result<bool, T::Error> {
        if self.shape.bridged {
            return Ok(false);
        }
        self.shape.bridged = true;
        self.shape.pending = match self.stored().and_then(|s| s.above(self.shape.cursor)) {
            Some(run) => tables.count_relayable(run.lo, run.hi)?,
            None => 0,
        };
        Ok(true)
    }

    /// Makes the ring `history_limit` slots when it is another size (the
    /// limit changed since the room last wrote): what no longer fits goes to
    /// the outbox if the bridge needs it.
    pub fn resize<T: Tables>(
        &mut self,
        tables: &mut T,
        history_limit: u64,
    ) -> Result<(), T::Error> {
        let wanted = history_limit.max(1);
        if wanted == self.shape.capacity {
            return Ok(());
        }
        let floor = self.shape.head.saturating_sub(wanted);
        if let Some(ring) = self.shape.ring {
            if let Some(spill) = ring.within(ring.lo, floor) {
                self.keep_for_bridge(tables, spill)?;
            }
            self.shape.ring = ring.above(floor);
        }
        tables.resize(wanted, floor)?;
        self.shape.capacity = wanted;
        Ok(())
    }

    /// Removes every stored message up to `upto` (an age trim; the caller
    /// holds back what the bridge still needs, see
    /// [`crate::history::trim_ceiling`]), and says what of it the bridge
    /// never confirmed.
    pub fn trim_through<T: Tables>(&mut self, tables: &mut T, upto: u64) -> Result<Lost, T::Error> {
        let Some(gone) = self.stored().and_then(|s| s.within(s.lo, upto)) else {
            return Ok(Lost::default());
        };
        let lost = self.lost_of(tables, gone)?;
        tables.delete_through(gone.hi, true)?;
        self.shape.outbox = self.shape.outbox.and_then(|o| o.above(gone.hi));
        self.shape.ring = self.shape.ring.and_then(|r| r.above(gone.hi));
        Ok(lost)
    }

    /// What to read for the stored messages after `since`: at most `limit`
    /// of them, from the contiguous run, each table by its key.
    pub fn reading(&self, since: u64, limit: u64) -> Option<Reading> {
        let stored = self.stored()?;
        let lo = since.saturating_add(1).max(stored.lo);
        let wanted = Run::of(lo, stored.hi.min(lo.saturating_add(limit.max(1) - 1)))?;
        Some(Reading {
            outbox: self
                .shape
                .outbox
                .and_then(|o| o.within(wanted.lo, wanted.hi)),
            ring: self.shape.ring.and_then(|r| r.within(wanted.lo, wanted.hi)),
            through: wanted.hi,
        })
    }

    /// Moves `run` of the ring to the outbox if the bridge needs it: the
    /// part above the cursor, in a room that is an outbox.
    fn keep_for_bridge<T: Tables>(&mut self, tables: &mut T, run: Run) -> Result<(), T::Error> {
        if !self.shape.bridged {
            return Ok(());
        }
        if let Some(needed) = run.above(self.shape.cursor) {
            tables.spill(needed.lo, needed.hi)?;
            self.grow_outbox(Some(needed));
        }
        Ok(())
    }

    fn grow_outbox(&mut self, added: Option<Run>) {
        self.shape.outbox = match (self.shape.outbox, added) {
            (Some(outbox), Some(added)) => Run::of(outbox.lo, added.hi),
            (outbox, added) => added.or(outbox),
        };
    }

    /// Keeps the outbox within `outbox_limit` messages, the ring counting
    /// toward it ([`crate::history::outbox_room`]), dropping its oldest.
    fn cap_outbox<T: Tables>(
        &mut self,
        tables: &mut T,
        outbox_limit: u64,
    ) -> Result<Lost, T::Error> {
        let room = crate::history::outbox_room(outbox_limit, self.shape.capacity);
        let Some(outbox) = self.shape.outbox.filter(|o| o.count() > room) else {
            return Ok(Lost::default());
        };
        let dropped = Run {
            lo: outbox.lo,
            hi: outbox.hi - room,
        };
        let lost = self.lost_of(tables, dropped)?;
        tables.delete_through(dropped.hi, false)?;
        self.shape.outbox = outbox.above(dropped.hi);
        Ok(lost)
    }

    /// What removing `run` loses that the bridge still needed.
    fn lost_of<T: Tables>(&mut self, tables: &mut T, run: Run) -> Result<Lost, T::Error> {
        let Some(needed) = run.above(self.shape.cursor).filter(|_| self.shape.bridged) else {
            return Ok(Lost::default());
        };
        let relayable = tables.count_relayable(needed.lo, needed.hi)?;
        self.shape.pending = self.shape.pending.saturating_sub(relayable);
        Ok(Lost {
            relayable,
            run: (relayable > 0).then_some(needed),
        })
    }
}

/// How many of `messages` the bridge relays.
fn relayable(messages: &[Message]) -> u64 {
    messages
        .iter()
        .filter(|m| m.origin != Origin::Kafka)
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn slots_of_a_run() {
        let run = |lo, hi| Run { lo, hi };
        assert_eq!(slots(run(3, 5), 10), [Some((3, 5)), None]);
        assert_eq!(slots(run(8, 12), 10), [Some((8, 9)), Some((0, 2))]);
        assert_eq!(
            slots(run(1, 10), 10),
            [Some((1, 9)), Some((0, 0))],
            "a whole ring, from its oldest seq"
        );
        assert_eq!(slots(run(10, 19), 10), [Some((0, 9)), None]);
        assert_eq!(slots(run(1, 30), 10), [Some((1, 9)), Some((0, 0))]);
        assert_eq!(slots(run(7, 7), 1), [Some((0, 0)), None]);
    }

    #[test]
    fn a_reading_cut_short() {
        let reading = Reading {
            outbox: Run::of(3, 6),
            ring: Run::of(7, 9),
            through: 9,
        };
        assert_eq!(
            reading.through_at_most(5),
            Reading {
                outbox: Run::of(3, 5),
                ring: None,
                through: 5
            }
        );
        assert_eq!(reading.through_at_most(8).ring, Run::of(7, 8));
        assert_eq!(reading.through_at_most(20), reading);
    }

    #[test]
    fn runs() {
        assert_eq!(Run::of(3, 2), None);
        let run = Run { lo: 3, hi: 9 };
        assert_eq!(run.count(), 7);
        assert_eq!(run.above(5), Run::of(6, 9));
        assert_eq!(run.above(9), None);
        assert_eq!(run.above(0), Some(run));
        assert_eq!(run.within(1, 4), Run::of(3, 4));
    }
}
